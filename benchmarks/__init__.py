"""Benchmarks of lmcaps; each module has a main() printing its figures."""
