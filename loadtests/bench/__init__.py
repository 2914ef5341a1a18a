"""Benchmarks: each prints its tables and writes one JSON result through ``common.Result``;
``python -m loadtests.reports.render`` draws docs/benchmarks from the results."""
