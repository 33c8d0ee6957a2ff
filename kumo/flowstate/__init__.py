"""Flow state: conntrack keys and NAT bindings with TTLs; local.py now, redis.py (shared) later."""
