"""Kumo: a distributed L2-L4 network virtualization overlay with an eBPF fast path."""

__version__ = "0.1.0"
