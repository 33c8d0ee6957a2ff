"""Helpers that start real servers for tests and benchmarks: on loopback, unique, bounded, always stopped."""
