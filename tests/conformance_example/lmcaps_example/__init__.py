"""Example out-of-tree lmcaps drivers (see README.rst)."""
