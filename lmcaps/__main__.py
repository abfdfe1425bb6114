"""``python -m lmcaps``: the lmcaps command line."""

import sys

from lmcaps.cmd.main import main

sys.exit(main())
