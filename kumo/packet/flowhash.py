"""A flow's hash for spreading flows (ECMP, NAT port choice, load balancing), and the consistent choice of one
path among equal ones.

Flow tuples hold only ints, whose hashes CPython computes the same in every process (PYTHONHASHSEED only
salts str and bytes), so every agent picks the same path, port or member for the same flow. A path's own
key comes from its name through CRC-32, for the same reason.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence


def flow_hash(flow: tuple[int, ...]) -> int:
    return hash(flow) & 0xFFFFFFFF


def path_key(name: str) -> int:
    """A stable number for a path (e.g. a next hop), the same in every process."""
    return zlib.crc32(name.encode())


def rendezvous(flow: tuple[int, ...], keys: Sequence[int]) -> int:
    """The index of the path a flow takes among paths with these keys: the one whose (flow, key) hashes
    highest (rendezvous hashing, Thaler and Ravishankar 1998). Removing a path moves only the flows that were
    on it; adding one takes about 1/N of the flows, each from wherever it was, and moves no other flow
    ("hash mod N" moves most flows on every change). Ties go to the first path (equal keys: the same path)."""
    spread = flow_hash(flow) << 32
    best, best_score = 0, -1
    for index, key in enumerate(keys):
        score = _mix64(spread | key)
        if score > best_score:
            best, best_score = index, score
    return best


def weighted_rendezvous(flow: tuple[int, ...], keys: Sequence[int], weights: Sequence[int]) -> int:
    """rendezvous() with weights (weighted rendezvous hashing, Schindelhauer and Schomaker 2005): each path
    scores weight / -ln(u), u its (flow, key) hash as a number in (0, 1), so that a path takes a share of the
    flows proportional to its weight, and adding, removing or re-weighting one path moves only flows to or
    from it. A weight of 0 takes no flow. Returns -1 if no path has a weight."""
    spread = flow_hash(flow) << 32
    best, best_score = -1, 0.0
    for index, key in enumerate(keys):
        weight = weights[index]
        if weight <= 0:
            continue
        u = (_mix64(spread | key) + 0.5) / _SPAN64
        score = weight / -math.log(u)
        if score > best_score:
            best, best_score = index, score
    return best


def _mix64(k: int) -> int:
    """MurmurHash3's 64-bit finalizer: every input bit flips each output bit with probability ~1/2. (CPython's
    tuple hash does not: (flow, key) hashed together favoured some keys 2.5:1.)"""
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _MASK64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _MASK64
    return k ^ (k >> 33)


_MASK64 = (1 << 64) - 1
_SPAN64 = float(1 << 64)
