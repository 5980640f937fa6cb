"""The pipeline benchmark (issue 8): ``python benchmarks/benchmark.py --help``. Not part of the installed package."""
