"""Several bridges of one configuration share its links (issue 16, scale-out).

Each link has its own advisory lock on the hub (engine/hub/lease.py link_key);
a bridge drains only the links whose lock its hub session holds. The lock of
the configuration's link set (lease.lock_key, every set a reload ran: see
bridge/reload.py) makes its holder the coordinator, the one bridge that runs the
hub-wide jobs (webhook events, scheduled checks and resyncs, retention).

Every heartbeat (engine/hub/lease.py Beat: the same one statement an idle
bridge sends anyway) says which wanted locks are free and how many bridges of
this link set are alive; `_share` then takes free links up to the bridge's fair
share, ceil(links / live bridges), or gives back what is over it (and one more
while another bridge holds fewer than floor(links / live bridges), which that
one then takes: four links on three bridges run as 2, 1, 1, not 2, 2, 0). A change ends
the term the way a SIGHUP reload does (batches in flight finish) and the next
term runs the new set; a link given back is released only after the term's
drains stopped (`_give_back`), so no two bridges ever drain a link at once. A
SIGKILLed bridge's session ends, so its locks are free at the survivors' next
beat; a stopped one (SIGSTOP) is fenced after two missed beats.

A bridge that is not the coordinator takes new links only while a coordinator
of its own link set is alive: a bridge reloaded to a new set before the others
(bridge/reload.py) does not start draining beside bridges of the old set.
`Sharing` is a part of bridge.daemon.Bridge.
"""

from __future__ import annotations

import logging
import math

from syncbridge.engine.hub.lease import Beat, Lease, link_key, lock_key

from .reload import Reloading

log = logging.getLogger("syncbridge.bridge")


class Sharing(Reloading):
    """Which links this bridge holds, and whether it coordinates (see the module docstring)."""

    role: str
    links: set[str]  # the links whose lock this hub session holds (drained this term)
    give_back: set[str]  # links to release once this term's drains stopped

    @property
    def coordinating(self) -> bool:
        """Holding every coordinator lock: this bridge runs the hub-wide jobs."""
        return bool(self.lock_keys) and self.held.issuperset(self.lock_keys)

    def _link_set(self) -> str:
        return lock_key(list(self.config.links))

    def _wanted(self) -> list[str]:
        """The locks this bridge would take if free: the coordinator's, its free links'."""
        keys = [] if self.coordinating else [k for k in self.lock_keys if k not in self.held]
        return keys + [link_key(n) for n in self.config.links if n not in self.links]

    async def _beat(self, lease: Lease, quiet: list[tuple[str, str]] | None = None) -> Beat:
        """The heartbeat, saying what this bridge holds; stale holders are fenced."""
        lease.link_set = self._link_set()
        beat = await lease.beat(self.role, quiet, sorted(self.links), self._wanted())
        if beat.stale:
            await lease.fence(beat.stale)
        return beat

    async def _share(self, lease: Lease, beat: Beat) -> bool:
        """Take free locks up to the fair share, or mark what is over it to give back;
        True when what this bridge runs changed (the term must end for the next set)."""
        changed = False
        missing = [k for k in self.lock_keys if k not in self.held]
        if missing and beat.free.issuperset(missing) and await self._take_all(lease):
            log.info("event=coordinating links_in_set=%d", len(self.config.links))
            changed = True
        n = len(self.config.links)
        share, floor = math.ceil(n / beat.live), n // beat.live
        starving = beat.least is not None and beat.least < floor  # another holds too few
        mine = sorted(self.links)
        keep = share - 1 if starving and len(mine) == share > floor else share
        if len(mine) > keep:
            back = set(mine[keep:])
            self.links -= back
            self.give_back |= back
            log.info("event=links_given_back links=%s live_bridges=%d share=%d",
                     ",".join(sorted(back)), beat.live, share)
            return True
        # below its share a bridge takes free links, unless another holds fewer than
        # the floor and this one has that many (the free ones are the other's to take)
        if len(mine) < share and not (starving and len(mine) >= floor) and (
                self.coordinating or self._link_set() not in beat.free):
            took = []
            for name in sorted(self.config.links):
                if len(self.links) >= share:
                    break
                key = link_key(name)
                if name not in self.links and key in beat.free and await lease.try_take(key):
                    self.links.add(name)
                    took.append(name)
            if took:
                log.info("event=links_taken links=%s live_bridges=%d share=%d",
                         ",".join(took), beat.live, share)
                changed = True
        return changed

    async def _give_back(self, lease: Lease) -> None:
        """Between terms: release the links given back or removed by a reload (their
        drains have stopped, so the next holder never drains beside this bridge)."""
        gone = self.give_back | (self.links - set(self.config.links))
        self.links -= gone
        self.give_back = set()
        for name in sorted(gone):
            await lease.release(link_key(name))
