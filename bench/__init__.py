"""Benchmarks that print figures (``python -m bench.NAME``); results under ``bench/results``.

They import the product and the lab, never the tests (``.importlinter``).
"""
