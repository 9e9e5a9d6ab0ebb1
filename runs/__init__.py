"""Experiment drivers, benchmarks and their results."""
