"""`syncbridge bench` (filled in below)."""

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    return 0
