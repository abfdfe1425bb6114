"""``python -m lmcaps``: the lmcaps command line."""

import sys

from lmcaps.cmd.entry import main

sys.exit(main())
