"""Benchmarks behind `logq bench`: workloads that print figures, never tests."""
