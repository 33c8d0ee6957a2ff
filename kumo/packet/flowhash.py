"""A flow's hash for spreading flows (ECMP, NAT port choice, load balancing).

Flow tuples hold only ints, whose hashes CPython computes the same in every process (PYTHONHASHSEED only
salts str and bytes), so every agent picks the same path, port or member for the same flow.
"""

from __future__ import annotations


def flow_hash(flow: tuple[int, ...]) -> int:
    return hash(flow) & 0xFFFFFFFF
