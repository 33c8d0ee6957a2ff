"""The edge on one host: the BGP sessions of the uplinks bound here, their learned routes in the store, and
the router's networks advertised to each peer.

It runs on a thread of its own ("kumo-edge"), so that neither ExaBGP nor the store's round trips ever sit
on the packet path. It is told the topology after every change the agent applies (`update`), and the
speakers' events; it reconciles what runs with what the topology asks for, then brings the store in line
with its sessions: learned routes (one state entry per prefix, owned by the agent's store session, so that
they vanish with the agent) and one state row per peer. Store writes that fail are retried on the next tick:
the written state is a diff against what the sessions hold, never a log of events.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kumo.datapath.datapath import Datapath
from kumo.edge import exabgp, namespace
from kumo.edge.exabgp import PeerConfig, SpeakerUnavailable
from kumo.edge.messages import Event, Notification, Open, State, Unreadable, Update
from kumo.edge.mirror import StoreMirror
from kumo.edge.networks import advertised
from kumo.edge.session import DEFAULT_MAX_PREFIXES, PeerSession
from kumo.edge.speaker import Speaker
from kumo.topology.bgp import BGP_PEER_STATE, uplink_for
from kumo.topology.errors import KumoError
from kumo.topology.state import LEARNED_ROUTES, learned_route_key
from kumo.topology.store.base import Obj, Session, Store

log = logging.getLogger("kumo.edge")

TICK_S = 0.5  # how often speakers' exits and failed store writes are looked at
FAILURE_PAUSE_S = 5.0
CEASE_MAX_PREFIXES = 1
RESTART_AFTER_S = 5.0  # a speaker that failed (ExaBGP exited, or could not start) is started again after


@dataclass(frozen=True)
class Uplink:
    port_id: str
    router_id: str
    address: str
    network_cidr: str
    mac: str
    interface: str


@dataclass
class Plumbed:
    uplink: Uplink
    uplink_ifindex: int
    speaker_ifindex: int


class EdgeManager:
    def __init__(
        self,
        store: Store,
        host_id: str,
        session: Callable[[], Session | None],
        datapath: Datapath,
        lock: threading.RLock,
        counters: collections.Counter[str],
        run_dir: Path,
    ) -> None:
        self.store = store
        self.host_id = host_id
        self._session = session
        self.datapath = datapath
        self.lock = lock  # the agent's: the datapath's maps are the packet thread's too
        self.counters = counters
        self.run_dir = run_dir
        self._events: queue.Queue[tuple[PeerConfig, Event] | None] = queue.Queue()
        self._objects: dict[str, list[Obj]] | None = None  # the latest topology, and whether it is new
        self._fresh = False
        self._retry_at: dict[str, float] = {}  # held peer id -> when its speaker may start again
        self._objects_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sessions: dict[str, PeerSession] = {}
        self.speakers: dict[str, Speaker] = {}
        self.plumbed: dict[str, Plumbed] = {}  # uplink port id -> its namespace and interfaces
        self.uplink_of: dict[str, Uplink] = {}  # peer id -> the uplink its running speaker uses
        self.held: dict[str, PeerConfig] = {}  # peers stopped by the agent, until their configuration changes
        self.unplugged: dict[str, str] = {}  # peer id -> why its session cannot start here
        self.networks: dict[str, set[str]] = {}  # router id -> the cidrs it advertises
        self.mirror = StoreMirror(store)

    # --- life cycle (the agent's) --------------------------------------------------------------------------
    def start(self) -> None:
        namespace.remove_leftovers(self.run_dir)
        self._thread = threading.Thread(target=self._run, name="kumo-edge", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop every session (ExaBGP closes them with a Cease) and withdraw their routes from the store."""
        self._stop.set()
        self._events.put(None)
        if self._thread is not None:
            self._thread.join(timeout=15)

    def update(self, objects: dict[str, dict[str, Obj]]) -> None:
        """(Packet thread, after a topology change) The objects the edge reads; reconciled on its thread."""
        kinds = ("routers", "ports", "bgp_peers", "bgp_networks", "chains", "rules")
        wanted = {kind: list(objects[kind].values()) for kind in kinds}
        with self._objects_lock:
            self._objects, self._fresh = wanted, True
        self._events.put(None)

    def _on_event(self, peer: PeerConfig, event: Event) -> None:  # (a speaker's reader thread)
        self._events.put((peer, event))

    # --- the edge thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._step()
                except Exception:  # a bug must not take the agent down, nor BGP for good: say so, go on
                    log.exception("the edge thread failed; it goes on in %.0f s", FAILURE_PAUSE_S)
                    self.counters["bgp_edge_failures"] += 1
                    self._stop.wait(FAILURE_PAUSE_S)
        finally:
            self._shutdown()

    def _step(self) -> None:
        """Handle what the speakers said, then bring sessions and the store in line with the topology."""
        try:
            item = self._events.get(timeout=TICK_S)
        except queue.Empty:
            item = None
        while item is not None:
            self._handle(*item)
            item = self._drain()
        if self._stop.is_set():
            return
        self._check_uplinks()
        self._reconcile()
        self._watch_speakers()
        self._sync_store()

    def _drain(self) -> tuple[PeerConfig, Event] | None:
        try:
            return self._events.get_nowait()
        except queue.Empty:
            return None

    def _shutdown(self) -> None:
        for peer_id in list(self.speakers):
            self._stop_session(peer_id)
        for port_id in list(self.plumbed):
            self._unplumb(port_id)
        self.sessions.clear()
        self.unplugged.clear()
        try:
            self._sync_store()
        except KumoError as exc:
            log.warning("withdrawing BGP-learned routes on stop: %s (they go with the store session)", exc)

    # --- what should run here ------------------------------------------------------------------------------
    def _desired(self, objects: dict[str, list[Obj]]) -> tuple[dict[str, tuple[PeerConfig, Uplink]], dict[str, str]]:
        routers = {r["id"]: r for r in objects["routers"]}
        ports_of: dict[str, list[Obj]] = collections.defaultdict(list)
        for port in objects["ports"]:
            ports_of[port["device_id"]].append(port)
        chains = {c["id"]: c for c in objects["chains"]}
        rules = {r["id"]: r for r in objects["rules"]}
        self.networks = {rid: advertised(r, objects["bgp_networks"], chains, rules) for rid, r in routers.items()}
        desired: dict[str, tuple[PeerConfig, Uplink]] = {}
        down: dict[str, str] = {}
        for peer in objects["bgp_peers"]:
            router = routers.get(peer["router_id"])
            found = uplink_for(peer["address"], ports_of.get(peer["router_id"], []))
            if router is None or not router.get("asn") or found is None or found.get("host_id") != self.host_id:
                continue
            if not found.get("interface_name") or not found.get("port_mac"):
                continue
            uplink = Uplink(
                found["id"], router["id"], found["port_address"], found["network_cidr"], found["port_mac"],
                found["interface_name"],
            )  # fmt: skip
            config = PeerConfig(
                peer["id"], router["id"], peer["address"], int(peer["asn"]), int(router["asn"]),
                uplink.address, int(peer.get("hold_time", 180)), int(peer.get("keepalive") or 60), peer.get("password"),
                int(peer.get("max_prefixes", DEFAULT_MAX_PREFIXES)),
            )  # fmt: skip
            if router.get("admin_state_up", True) and found.get("admin_state_up", True):
                desired[peer["id"]] = (config, uplink)
            else:
                down[peer["id"]] = "admin_down"  # the router or its uplink port
        return desired, down

    def _reconcile(self) -> None:
        with self._objects_lock:
            objects, fresh = self._objects, self._fresh
            self._fresh = False
        now = time.monotonic()
        due = [p for p, at in self._retry_at.items() if at <= now]
        waiting = "uplink_not_attached" in self.unplugged.values()  # its interface may have appeared
        if objects is None or not (fresh or due or waiting):
            return
        for peer_id in due:  # a failed speaker's turn to start again
            del self._retry_at[peer_id]
            self.held.pop(peer_id, None)
            self.sessions.pop(peer_id, None)
        desired, down = self._desired(objects)
        self.unplugged = dict(down)
        uplinks = {uplink.port_id: uplink for _, uplink in desired.values()}
        for peer_id, speaker in list(self.speakers.items()):
            wanted = desired.get(peer_id)
            if wanted is None or wanted != (speaker.peer, self.uplink_of[peer_id]):
                self._stop_session(peer_id)
        for peer_id in [p for p, config in self.held.items() if desired.get(p, (None,))[0] != config]:
            del self.held[peer_id]  # changed (or gone): an operator's change clears the hold
            self._retry_at.pop(peer_id, None)
            self.sessions.pop(peer_id, None)
        for port_id in [p for p, plumbed in self.plumbed.items() if uplinks.get(p) != plumbed.uplink]:
            self._unplumb(port_id)
        for peer_id, (config, uplink) in desired.items():
            if peer_id in self.speakers or peer_id in self.held:
                continue
            if uplink.port_id not in self.plumbed and not self._plumb(uplink, peer_id):
                continue
            self._start_session(config, uplink)
        for peer_id in [p for p in self.sessions if p not in desired and p not in self.speakers]:
            del self.sessions[peer_id]
        for session in self.sessions.values():
            if session.state == "established":
                self._advertise(session)

    def _check_uplinks(self) -> None:
        """An uplink's interface that went away or came back as a new one (a VM or a veth recreated) takes
        its speakers down; the reconcile that follows plumbs it again if it exists."""
        for port_id, plumbed in list(self.plumbed.items()):
            if self.datapath.ifindex(plumbed.uplink.interface) == plumbed.uplink_ifindex:
                continue
            log.warning("BGP uplink %s: interface %s changed; its sessions restart", port_id, plumbed.uplink.interface)
            for peer_id in [p for p in self.speakers if self.uplink_of[p].port_id == port_id]:
                self._stop_session(peer_id)
            self._unplumb(port_id)
            with self._objects_lock:
                self._fresh = True

    def _plumb(self, uplink: Uplink, peer_id: str) -> bool:
        index = self.datapath.ifindex(uplink.interface)
        if index is None:
            self.unplugged[peer_id] = "uplink_not_attached"  # the binding's interface does not exist (yet)
            return False
        try:
            speaker_index = namespace.create(uplink.port_id, uplink.address, uplink.network_cidr, uplink.mac)
            with self.lock:
                self.datapath.set_speaker(index, speaker_index, uplink.address)
        except (KumoError, OSError) as exc:
            log.error("BGP uplink %s (%s): cannot make its speaker namespace: %s", uplink.port_id, uplink.address, exc)
            self.unplugged[peer_id] = "speaker_failed"
            self.counters["bgp_speaker_failures"] += 1
            return False
        self.plumbed[uplink.port_id] = Plumbed(uplink, index, speaker_index)
        namespace.record(self.run_dir, [namespace.namespace_name(p) for p in self.plumbed])
        return True

    def _unplumb(self, port_id: str) -> None:
        plumbed = self.plumbed.pop(port_id)
        with self.lock:
            self.datapath.clear_speaker(plumbed.uplink_ifindex, plumbed.speaker_ifindex)
        namespace.remove(namespace.namespace_name(port_id))
        namespace.record(self.run_dir, [namespace.namespace_name(p) for p in self.plumbed])

    def _start_session(self, config: PeerConfig, uplink: Uplink) -> None:
        session = PeerSession(config.peer_id, config.router_id, self.host_id, config.local_asn, config.max_prefixes)
        speaker = Speaker(config, namespace.namespace_name(uplink.port_id), self.run_dir, self._on_event)
        try:
            speaker.start()
        except (SpeakerUnavailable, OSError) as exc:
            log.error("BGP peer %s: cannot start ExaBGP: %s", config.address, exc)
            session.stop("speaker_failed", str(exc))
            self.counters["bgp_speaker_failures"] += 1
            self.sessions[config.peer_id] = session
            self._hold(config, retry_in=RESTART_AFTER_S)
            return
        self.sessions[config.peer_id] = session
        self.speakers[config.peer_id] = speaker
        self.uplink_of[config.peer_id] = uplink
        log.info("BGP peer %s (AS %d): session started from %s", config.address, config.peer_asn, uplink.address)

    def _stop_session(self, peer_id: str) -> None:
        speaker = self.speakers.pop(peer_id)
        del self.uplink_of[peer_id]
        speaker.stop()
        session = self.sessions.pop(peer_id, None)
        if session is not None and session.learned:
            self.counters["bgp_routes_withdrawn"] += len(session.learned)

    # --- events from the speakers --------------------------------------------------------------------------
    def _handle(self, peer: PeerConfig, event: Event) -> None:
        session = self.sessions.get(peer.peer_id)
        if session is None or self.speakers.get(peer.peer_id) is None or self.speakers[peer.peer_id].peer != peer:
            return  # a stopped speaker's last words
        if isinstance(event, State):
            if session.on_state(event):
                lost = len(session.learned)
                session.learned.clear()
                self.counters["bgp_session_flaps"] += 1
                self.counters["bgp_routes_withdrawn"] += lost
                log.warning("BGP peer %s: session down (%s); %d learned routes withdrawn", peer.address,
                            session.last_error or "no reason given", lost)  # fmt: skip
            elif event.state == "down":
                self.counters["bgp_connect_failures"] += 1
                log.debug("BGP peer %s: no session (%s)", peer.address, event.reason)
            elif event.state == "up":
                self.counters["bgp_sessions_established"] += 1
                log.info("BGP peer %s: session established", peer.address)
                self._advertise(session)
        elif isinstance(event, Open):
            session.on_open(event)
        elif isinstance(event, Notification):
            session.on_notification(event)
            self.counters["bgp_notifications"] += 1
            log.warning("BGP peer %s: %s", peer.address, session.last_error)
        elif isinstance(event, Update):
            self.counters["bgp_updates"] += 1
            looped = session.looped
            _, gone = session.on_update(event)
            self.counters["bgp_routes_withdrawn"] += len(gone)
            self.counters["bgp_routes_looped"] += session.looped - looped  # (the session's loop check decides)
            if session.over_limit():
                self._max_prefix(peer, session)
        elif isinstance(event, Unreadable):
            self.counters["bgp_messages_unreadable"] += 1
            log.warning("BGP peer %s: unreadable message from ExaBGP (%s): %.200s", peer.address, event.why, event.line)

    def _max_prefix(self, peer: PeerConfig, session: PeerSession) -> None:
        count = len(session.learned)
        speaker = self.speakers[peer.peer_id]
        speaker.send(exabgp.teardown(peer.address, CEASE_MAX_PREFIXES))
        self._stop_session(peer.peer_id)
        session.stop(
            "max_prefix",
            f"the peer sent {count} prefixes, more than the limit of {session.max_prefixes}: session stopped "
            "until the peer's configuration changes (PATCH it) or the agent restarts",
        )
        self.sessions[peer.peer_id] = session
        self._hold(peer)
        self.counters["bgp_max_prefix_stops"] += 1
        log.error("BGP peer %s: %s", peer.address, session.last_error)

    def _watch_speakers(self) -> None:
        for peer_id, speaker in list(self.speakers.items()):
            code = speaker.exit_code()
            if code is None:
                self.sessions[peer_id].check_stalled(time.time(), speaker.peer.address, speaker.peer.local_address)
                continue
            session = self.sessions[peer_id]
            self._stop_session(peer_id)
            session.stop("speaker_failed", f"ExaBGP exited with status {code}: {speaker.log_tail()}")
            self.sessions[peer_id] = session
            self.counters["bgp_speaker_failures"] += 1
            self._hold(speaker.peer, retry_in=RESTART_AFTER_S)
            log.error("BGP peer %s: %s (started again in %.0f s)", speaker.peer.address, session.last_error,
                      RESTART_AFTER_S)  # fmt: skip

    def _hold(self, peer: PeerConfig, retry_in: float | None = None) -> None:
        """Keep `peer`'s session stopped until its configuration changes, or for `retry_in` seconds."""
        self.held[peer.peer_id] = peer
        if retry_in is not None:
            self._retry_at[peer.peer_id] = time.monotonic() + retry_in

    # --- advertising ---------------------------------------------------------------------------------------
    def _advertise(self, session: PeerSession) -> None:
        speaker = self.speakers.get(session.peer_id)
        if speaker is None:
            return
        wanted = self.networks.get(session.router_id, set())
        for cidr in sorted(wanted - session.advertised):
            speaker.send(exabgp.announce(speaker.peer.address, cidr, speaker.peer.local_address))
        for cidr in sorted(session.advertised - wanted):
            speaker.send(exabgp.withdraw(speaker.peer.address, cidr, speaker.peer.local_address))
        session.advertised = set(wanted)

    # --- the store -----------------------------------------------------------------------------------------
    def _sync_store(self) -> None:
        """Learned routes and peer rows to the store (kumo.edge.mirror), owned by the agent's store session."""
        session = self._session()
        if session is None:
            return
        rows = {peer_id: s.status() for peer_id, s in self.sessions.items()}
        rows |= {peer_id: self._unplugged_row(why) for peer_id, why in self.unplugged.items() if peer_id not in rows}
        try:
            self.mirror.sync(session, {LEARNED_ROUTES: self._routes(), BGP_PEER_STATE: rows})
        except KumoError as exc:
            self.counters["bgp_store_write_failures"] += 1
            log.warning("BGP state not written to the store (retried in %.1f s): %s", TICK_S, exc)

    def _unplugged_row(self, why: str) -> dict[str, Any]:
        return {**PeerSession("", "", self.host_id, 0).status(), "state": why}

    def _routes(self) -> dict[str, Obj]:
        out: dict[str, Obj] = {}
        for peer_id, session in self.sessions.items():
            speaker = self.speakers.get(peer_id)
            if speaker is None:
                continue
            uplink = self.uplink_of[peer_id]
            network = ipaddress.IPv4Network(uplink.network_cidr)
            for prefix, next_hop in session.learned.items():
                gateway = next_hop if ipaddress.IPv4Address(next_hop) in network else speaker.peer.address
                route_id = f"bgp-{peer_id[:8]}-{prefix.replace('/', '-')}"
                out[learned_route_key(session.router_id, route_id)] = {
                    "id": route_id,
                    "router_id": session.router_id,
                    "dst_cidr": prefix,
                    "src_cidr": "0.0.0.0/0",
                    "next_hop_port_id": uplink.port_id,
                    "next_hop_gateway": gateway,
                    "weight": 100,
                    "type": "normal",
                    "bgp_peer_id": peer_id,
                }
        return out

    # --- `kumo agent stats` --------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        return {
            peer_id: {"state": s.state, "prefixes_received": len(s.learned), "flaps": s.flaps}
            for peer_id, s in list(self.sessions.items())
        }
