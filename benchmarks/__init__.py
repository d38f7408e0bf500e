"""Benchmarks of the collaboration engine (run each as ``python -m benchmarks.<name>``)."""
