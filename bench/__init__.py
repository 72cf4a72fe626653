"""The course's benchmarks: `bench/run.py` runs the files in `bench/suite/` (see bench/README.md)."""
