"""Reusable network-namespace lab (lab tests, benchmarks, demo): see ``lab.topology``."""
