"""Benchmark scripts: they print tables (and write docs/benchmarks.md); they are never timed tests."""
