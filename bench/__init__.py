"""Benchmarks side by side with raw PostGIS in the same run: `make bench` = `python -m bench`."""
