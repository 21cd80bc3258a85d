"""Benchmarks for letta-stream: ``python -m bench [--quick]``."""
