"""Helpers shared by the test suite and the benchmarks: real redis-server processes, receivers,
event fixtures, ground truth."""
