"""``python -m harness.chaos``: the chaos runner's command line (``harness.chaos.command``)."""

import sys

from harness.chaos.command import main

if __name__ == "__main__":
    sys.exit(main())
