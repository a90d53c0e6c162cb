"""``python -m harness.fake_llama``: the same as the ``fake-llama-server`` command."""

import sys

from harness.fake_llama.cli import main

sys.exit(main())
