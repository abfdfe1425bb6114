"""The ``lmcaps`` command line (cliff); commands in ``lmcaps.cli``."""
