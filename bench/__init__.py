"""Benchmarks: commands that print measured numbers, each next to a baseline measured in the
same run (these machines are shared and noisy, so only same-run ratios are comparable)."""
