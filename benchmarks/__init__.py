"""The benchmark suite of parallelize: `python benchmarks/run.py` (see README.md here)."""
