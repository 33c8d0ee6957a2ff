"""Health monitoring on one host: which routers' pools this agent checks, and what it writes.

For each router with a monitored pool (an admin-up pool with an admin-up health monitor, on an admin-up load
balancer), exactly one agent checks the members: the one whose store session holds the router's claim in
the `lb_checkers` table (kumo.topology.lbstatus). Every agent tries to claim every such router on each tick;
the store gives it to one (ZooKeeper: an ephemeral node, the same guarantee as kazoo's election recipe,
without its queue). When that agent dies, the claim goes with its session (ZooKeeper: after the session
timeout), and another agent's next try takes it.

The holder plugs the router's checker port (`lb-health-checker`, ROUTER_ADDRESS on NETWORK: created if
missing, like any port, and bound to this host) into a namespace of its own (kumo.lb.namespace), checks from
there (kumo.lb.checker), and writes a member's status and detail to `member_status` when they change (and
logs it). Agents follow that table: a member found down leaves its pool's choice, and its pool's flows are
removed (kumo.agent.changes).

It all runs on a thread of its own ("kumo-lb"): store round trips never sit on the packet path. (The pools'
statistics are published by kumo.agent.publish.)
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kumo.lb import namespace
from kumo.lb.checker import RouterChecker, Target
from kumo.lb.checks import Monitor
from kumo.lb.health import MemberHealth
from kumo.topology.errors import KumoError
from kumo.topology.lbstatus import LB_CHECKERS, MEMBER_STATUS, monitors_of
from kumo.topology.models import expected_codes
from kumo.topology.service import Topology
from kumo.topology.store.base import Obj, Session, Store

log = logging.getLogger("kumo.lb")

TICK_S = 0.5
VERIFY_CLAIMS_EVERY_S = 2.0  # how often a holder checks that its claims are still its own
RETRY_PLUG_AFTER_S = 5.0
PORT_NAME = "lb-health-checker"
KINDS = ("routers", "ports", "load_balancers", "pools", "pool_members", "health_monitors")


def targets_by_router(objects: dict[str, list[Obj]]) -> dict[str, dict[str, Target]]:
    """router id -> {member id: what to check}, for every monitored pool's admin-up members."""
    lbs = {lb["id"]: lb for lb in objects["load_balancers"] if lb.get("admin_state_up", True)}
    pools = {p["id"]: p for p in objects["pools"] if p["load_balancer_id"] in lbs}
    monitored = monitors_of(pools.values(), {m["id"]: m for m in objects["health_monitors"]})
    out: dict[str, dict[str, Target]] = {}
    for member in objects["pool_members"]:
        monitor = monitored.get(member["pool_id"])
        if monitor is None or not member.get("admin_state_up", True):
            continue
        router_id = lbs[pools[member["pool_id"]]["load_balancer_id"]]["router_id"]
        target = Target(member["id"], member["pool_id"], member["address"], member["protocol_port"], _monitor(monitor))
        out.setdefault(router_id, {})[member["id"]] = target
    return out


def _monitor(obj: Obj) -> Monitor:
    return Monitor(
        obj.get("type", "tcp"),
        float(obj.get("delay", 5)),
        float(obj.get("timeout", 3)),
        int(obj.get("max_retries", 3)),
        int(obj.get("max_retries_down", 3)),
        obj.get("url_path", "/"),
        obj.get("http_method", "GET"),
        expected_codes(obj.get("expected_codes", "200")),
    )


class HealthManager:
    def __init__(
        self,
        store: Store,
        host_id: str,
        session: Callable[[], Session | None],
        counters: collections.Counter[str],
        run_dir: Path,
    ) -> None:
        self.store = store
        self.host_id = host_id
        self._session = session
        self.counters = counters
        self.run_dir = run_dir
        self.checkers: dict[str, RouterChecker] = {}  # router id -> its running checker (we hold its claim)
        self.health: dict[str, MemberHealth] = {}  # member id -> what its checks found
        self._objects: dict[str, list[Obj]] | None = None
        self._objects_lock = threading.Lock()
        self._results: queue.Queue[tuple[Target, bool, str]] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._claims_verified = 0.0
        self._session_seen: tuple[int, int] | None = None  # (id of the session object, its expiries)
        self._plug_failed: dict[str, float] = {}  # router id -> when plugging it last failed

    # --- life cycle (the agent's) ----------------------------------------------------------------------------
    def start(self) -> None:
        namespace.remove_leftovers(self.run_dir)
        self._thread = threading.Thread(target=self._run, name="kumo-lb", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop checking and give the claims back at once, so that another agent takes over without waiting
        for this agent's session to time out."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def update(self, objects: dict[str, dict[str, Obj]]) -> None:
        """(Packet thread, after a topology change) The objects health monitoring reads."""
        with self._objects_lock:
            self._objects = {kind: list(objects[kind].values()) for kind in KINDS}
        self._wake.set()

    def report(self) -> dict[str, Any]:
        """For `kumo agent stats`: the routers this agent checks, and its members' status."""
        return {
            "checking_routers": sorted(self.checkers),
            "members": {m: {"status": h.status, "detail": h.detail} for m, h in sorted(self.health.items())},
        }

    # --- the thread --------------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._reconcile()
                    self._take_results()
                except Exception:  # a bug (or the store) must not end health monitoring: say so, go on
                    self.counters["lb_checker_failures"] += 1
                    log.exception("health monitoring failed; it goes on in %.0f s", RETRY_PLUG_AFTER_S)
                    self._stop.wait(RETRY_PLUG_AFTER_S)
                self._wake.wait(TICK_S)
                self._wake.clear()
        finally:
            for router_id in list(self.checkers):
                self._unplug(router_id, release=True)

    def _reconcile(self) -> None:
        with self._objects_lock:
            objects = self._objects
        if objects is None:
            return
        wanted = targets_by_router(objects)
        session = self._session()
        seen = None if session is None else (id(session), session.expiries)
        if seen != self._session_seen:  # no session, or a new one: the claims we held are gone with the old
            for router_id in list(self.checkers):
                self._unplug(router_id, release=False)
            self._session_seen = seen
        if session is None:
            return
        for router_id in list(self.checkers):
            if router_id not in wanted:
                self._retire(router_id, objects)
        self._verify_claims()
        for router_id, targets in wanted.items():
            if router_id not in self.checkers and not self._plug(router_id, objects, session):
                continue
            self.checkers[router_id].configure(targets)
        for member_id in set(self.health) - {m for t in wanted.values() for m in t}:
            self.health.pop(member_id)

    def _plug(self, router_id: str, objects: dict[str, list[Obj]], session: Session) -> bool:
        """Claim the router and start checking its members from its namespace; False if another agent holds
        it (or plugging failed: retried later)."""
        if time.monotonic() - self._plug_failed.get(router_id, -RETRY_PLUG_AFTER_S) < RETRY_PLUG_AFTER_S:
            return False
        if not self.store.state_claim(LB_CHECKERS, router_id, {"host_id": self.host_id}, session):
            return False
        try:
            outer = namespace.create(router_id)
            namespace.record(self.run_dir, [namespace.namespace_name(r) for r in [*self.checkers, router_id]])
            self._bind_port(router_id, objects, outer)
            checker = RouterChecker(router_id, namespace.namespace_name(router_id), self._on_result)
            checker.start()
        except (KumoError, OSError) as exc:
            self._plug_failed[router_id] = time.monotonic()
            self.counters["lb_checker_plug_errors"] += 1
            log.error("router %s: cannot check its pools' members from here: %s", router_id, exc)
            namespace.remove(namespace.namespace_name(router_id))
            self.store.state_delete(LB_CHECKERS, router_id)
            return False
        self.checkers[router_id] = checker
        self.counters["lb_checkers_started"] += 1
        log.info("router %s: this host checks its pools' members (from %s)", router_id, PORT_NAME)
        return True

    def _bind_port(self, router_id: str, objects: dict[str, list[Obj]], interface: str) -> None:
        topology = Topology(self.store)
        port = next((p for p in objects["ports"] if p["device_id"] == router_id and p.get("name") == PORT_NAME), None)
        if port is None:
            port = topology.create(
                "ports",
                {
                    "device_id": router_id,
                    "name": PORT_NAME,
                    "port_address": namespace.ROUTER_ADDRESS,
                    "network_cidr": namespace.NETWORK,
                },
            )
        if (port.get("host_id"), port.get("interface_name")) != (self.host_id, interface):
            topology.bind(port["id"], self.host_id, interface)

    def _retire(self, router_id: str, objects: dict[str, list[Obj]]) -> None:
        """Its pools are monitored no more: the checker goes, and its port with it."""
        self._unplug(router_id, release=False)
        for port in objects["ports"]:
            if port["device_id"] == router_id and port.get("name") == PORT_NAME:
                try:
                    Topology(self.store).delete("ports", port["id"])
                except KumoError as exc:
                    log.warning("router %s: could not remove %s: %s", router_id, PORT_NAME, exc)
        self.store.state_delete(LB_CHECKERS, router_id)

    def _unplug(self, router_id: str, release: bool) -> None:
        checker = self.checkers.pop(router_id, None)
        if checker is not None:
            checker.stop()
        namespace.remove(namespace.namespace_name(router_id))
        namespace.record(self.run_dir, [namespace.namespace_name(r) for r in self.checkers])
        if release:
            try:
                self.store.state_delete(LB_CHECKERS, router_id)
            except Exception as exc:  # (stopping: the session's end takes the claim anyway)
                log.debug("releasing the claim on router %s: %s", router_id, exc)

    def _verify_claims(self) -> None:
        """A claim can be lost without our session changing (an operator removed it): stop checking then."""
        now = time.monotonic()
        if now - self._claims_verified < VERIFY_CLAIMS_EVERY_S:
            return
        self._claims_verified = now
        for router_id in list(self.checkers):
            row = self.store.state_get(LB_CHECKERS, router_id)
            if row is None or row.get("host_id") != self.host_id:
                log.warning("router %s: its health checks moved to another host", router_id)
                self._unplug(router_id, release=False)

    # --- results ---------------------------------------------------------------------------------------------
    def _on_result(self, target: Target, healthy: bool, detail: str) -> None:  # (a checker's thread)
        self._results.put((target, healthy, detail))
        self._wake.set()

    def _take_results(self) -> None:
        while True:
            try:
                target, healthy, detail = self._results.get_nowait()
            except queue.Empty:
                return
            self.counters["lb_checks"] += 1
            if not healthy:
                self.counters["lb_checks_failed"] += 1
            health = self.health.get(target.member_id)
            if health is None:  # the first result here: go on from what the store says (a takeover)
                row = self.store.state_get(MEMBER_STATUS, target.member_id) or {}
                health = self.health[target.member_id] = MemberHealth(row.get("status", "up"), row.get("detail"))
            was = health.status
            if health.observe(healthy, detail, target.monitor):
                self._write(target, health, was)

    def _write(self, target: Target, health: MemberHealth, was: str) -> None:
        row = {
            "status": health.status,
            "detail": health.detail,
            "pool_id": target.pool_id,
            "host_id": self.host_id,
            "at": time.time(),
        }
        self.store.state_put(MEMBER_STATUS, target.member_id, row)
        if health.status != was:
            self.counters[f"lb_members_{health.status}"] += 1
            level = logging.WARNING if health.status == "down" else logging.INFO
            log.log(
                level,
                "pool %s member %s (%s:%d) is %s: %s",
                target.pool_id,
                target.member_id,
                target.address,
                target.port,
                health.status,
                health.detail,
            )
