"""Pool members' health: what the checking agent found (kumo.lb), as the API and the simulation read it.

Two state tables:
- `member_status/<member id>` = {"status": "up"|"down", "detail", "pool_id", "host_id", "at"}: written by the
  agent that checks the member's pool. Not owned by its store session, so that an agent taking over starts
  from it and a member found down stays down while no agent checks it.
- `lb_checkers/<router id>` = {"host_id"}: the claim of the one agent that checks that router's pools. Owned
  by its session: it vanishes with the agent (ZooKeeper: its session timeout), and another agent claims it.

A member's `status`: `no_monitor` when its pool has no admin-up health monitor; else the checker's verdict,
and `up` until the first one (a member is assumed up until its checks fail, as HAProxy does: adding a
monitor never cuts traffic by itself).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kumo.topology.store.base import Obj, Store

MEMBER_STATUS = "member_status"
LB_CHECKERS = "lb_checkers"
NOT_CHECKED = "not checked yet"


def monitors_of(pools: Iterable[Obj], monitors: dict[str, Obj]) -> dict[str, Obj]:
    """pool id -> its admin-up health monitor, for the admin-up pools that have one."""
    out = {}
    for pool in pools:
        monitor = monitors.get(pool.get("health_monitor_id") or "")
        if monitor is not None and monitor.get("admin_state_up", True) and pool.get("admin_state_up", True):
            out[pool["id"]] = monitor
    return out


def status_of(monitored: bool, row: dict[str, Any] | None) -> tuple[str, str | None]:
    """(status, detail) of a member whose pool is `monitored` or not, from its status row."""
    if not monitored:
        return "no_monitor", None
    if row is None:
        return "up", NOT_CHECKED
    return str(row.get("status", "up")), row.get("detail")


def member_view(store: Store, member: Obj) -> Obj:
    pool = store.find("pools", member["pool_id"])
    monitor = store.find("health_monitors", pool.get("health_monitor_id") or "") if pool is not None else None
    monitored = bool(pool and monitor and monitors_of([pool], {monitor["id"]: monitor}))
    status, detail = status_of(monitored, store.state_get(MEMBER_STATUS, member["id"]) if monitored else None)
    return {**member, "status": status, "status_detail": detail}


POOL_STATS = "pool_stats"  # <host id> = {"at", "pools": {pool id: {member id: STATS_FIELDS}}}, owned by its session
STATS_FIELDS = ("active_connections", "total_connections", "bytes_in", "bytes_out")


def pool_stats(store: Store, pool_id: str) -> Obj:
    """A pool's statistics: each member's counts added up over the hosts that published some (each agent every
    few seconds, kumo.lb.manager; a host's go with its agent), and how old the oldest figures are."""
    members = store.list("pool_members", pool_id=pool_id)
    rows = store.state_list(POOL_STATS)
    summed = {m["id"]: dict.fromkeys(STATS_FIELDS, 0) for m in members}
    reporting, oldest = [], None
    for host_id, row in sorted(rows.items()):
        counts = row.get("pools", {}).get(pool_id)
        if counts is None:
            continue
        reporting.append(host_id)
        oldest = row["at"] if oldest is None else min(oldest, row["at"])
        for member_id, fields in counts.items():
            if member_id in summed:
                for name in STATS_FIELDS:
                    summed[member_id][name] += int(fields.get(name, 0))
    return {
        "pool_id": pool_id,
        "members": [
            {
                "member_id": m["id"],
                "address": m["address"],
                "protocol_port": m["protocol_port"],
                **{k: v for k, v in member_view(store, m).items() if k in ("status", "status_detail")},
                **summed[m["id"]],
            }
            for m in members
        ],
        "hosts": reporting,
        "age_s": None if oldest is None else round(max(0.0, time.time() - oldest), 1),
    }
