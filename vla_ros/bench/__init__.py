"""Benchmarks behind `vla-ros bench ...`: each prints JSON figures."""
