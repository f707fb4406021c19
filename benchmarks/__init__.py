"""What the observability of a generated service costs: `python3 -m benchmarks.run`.

Not part of the test suite: see "Benchmark" in README.md. It serves its services with the
template's shared harness (`harness/`); `log_throughput.py` and `apps/` are not imported
here, but run in the benchmark's virtual environment.
"""
