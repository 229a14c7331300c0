import sys

from syncbridge.bridge.cli import main

sys.exit(main())
