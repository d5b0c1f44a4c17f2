"""Benchmarks that measure and keep their numbers in docs/data/; run from the repository root
as ``python -m benchmarks.<name>``. ``benchmarks.render`` turns those numbers into the docs."""
