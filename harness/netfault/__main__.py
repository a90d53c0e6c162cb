"""``python -m harness.netfault``: the same as the ``netfault`` console script."""

import sys

from harness.netfault._cli import main

sys.exit(main())
