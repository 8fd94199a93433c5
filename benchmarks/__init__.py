"""Benchmarks (``make bench``): throughput and latency, printed, never asserted."""
