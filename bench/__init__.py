"""Benchmarks: side-by-side runs that print tables of ratios against a baseline."""
