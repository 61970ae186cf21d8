"""Benchmarks (`make bench`): each writes a markdown table under bench/results/."""
