"""The kernel fast path of one host: the BPF program on every bound VM interface and on the re-injection
interface, its maps (flows, upcall ring, config, counters), the host's VXLAN device (collect_md) with the
program that hands tunnelled packets to their port by VNI, and the sockets that put packets back.

Restart-safe: TC filters and their maps outlive the agent, so that kernel flows keep forwarding while it is
down. A new agent finds the program still attached to the re-injection interface, reuses its maps (the
flows with them) and attaches the new program in its place.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import socket
import struct
import subprocess
from collections.abc import Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from kumo.datapath import build, libbpf
from kumo.datapath.flowmaps import FlowMaps
from kumo.datapath.layout import (
    DEFAULT_STORM_UPCALL_RATE,
    DEFAULT_UPCALL_BURST,
    DEFAULT_UPCALL_RATE,
    INJECT_MARK,
    STATS,
    STORM_ENTER_MS,
    STORM_LEAVE_MS,
    ArpAnswer,
    ArpKey,
    Config,
    FlowKey,
    FlowValue,
    PortLimit,
    Speaker,
    TunnelCount,
)
from kumo.datapath.ringbuf import UpcallRing, open_ring
from kumo.packet import int_to_ip, mac_to_bytes
from kumo.packet.vxlan import UDP_PORT as VXLAN_PORT
from kumo.packet.vxlan import Vxlan

log = logging.getLogger("kumo.datapath")


PROGRAM = "kumo_port_ingress"
# a restart keeps these (the megaflows' masks and order with them)
ADOPTED_MAPS = (
    "kumo_flows",
    "kumo_megaflows",
    "kumo_masks",
    "kumo_mask_list",
    "kumo_mask_hits",
    "kumo_conntrack",
    "kumo_upcalls",
    "kumo_config",
    "kumo_rates",
    "kumo_stats",
    "kumo_tunnel_traffic",
)
# storm control starts afresh with the agent that watches it; so do BGP speakers (kumo.edge) and ARP answers
# (kumo.agent.arpanswers: rebuilt from the adopted flows)
MAPS = (*ADOPTED_MAPS, "kumo_port_limits", "kumo_ring_lazy", "kumo_speakers", "kumo_arp_answers")
INJECT_PAIR = ("kumo-inj0", "kumo-inj1")  # the agent writes into inj0; the program on inj1 reads the mark
VXLAN_DEVICE = "kumo-vxlan"
TUNNEL_MAPS = ("kumo_vnis", "kumo_tunnel_peers", "kumo_tunnel_filter")  # (adopted from an earlier agent)
VXLAN_PROGRAM = "kumo_vxlan_ingress"
TC_INGRESS = 0xFFFFFFF2  # clsact's ingress parent
FILTER_PRIO = 1
FILTER_HANDLE = 1


def _close(fds: dict[str, int]) -> None:
    """Close the fds of an earlier program's maps once the new object has taken them over: libbpf keeps
    duplicates of its own (bpf_map__reuse_fd)."""
    for fd in fds.values():
        os.close(fd)


def _has_gbp(interface: str) -> bool:
    shown = subprocess.run(["ip", "-d", "-j", "link", "show", interface], capture_output=True, text=True)
    try:
        return bool(json.loads(shown.stdout)[0]["linkinfo"]["info_data"].get("gbp"))
    except (ValueError, LookupError):
        return False


def _no_ipv6(interface: str) -> None:
    try:
        with open(f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass  # IPv6 compiled out or unavailable: nothing would be sent anyway


class Datapath:
    def __init__(
        self,
        upcall_rate: int = DEFAULT_UPCALL_RATE,
        upcall_burst: int = DEFAULT_UPCALL_BURST,
        storm_rate: int = DEFAULT_STORM_UPCALL_RATE,
    ) -> None:
        self.upcall_rate = upcall_rate
        self.upcall_burst = upcall_burst
        self.storm_rate = storm_rate  # upcalls/s of an interface that storms; 0: storm control off
        self.ct_timeout_s = 60  # a connection recorded in the kernel and idle this long is gone
        self.ipr = IPRoute()
        self.obj: libbpf.BpfObject | None = None
        self.fds: dict[str, int] = {}
        self.maps: FlowMaps  # (set by start)
        self.prog_fd = -1
        self.adopted = False  # the maps (and flows) of an earlier agent were taken over
        self.inject_ifindex = 0
        self._inject_sock: socket.socket | None = None
        self._inject_mark_port = -1
        self._send_sock: socket.socket | None = None
        self._ring: UpcallRing | None = None
        self.vxlan_ifindex = 0  # 0: no VXLAN device (tunnels unavailable; tunnel_error says why)
        self.tunnel_error = ""
        self._vxlan_obj: libbpf.BpfObject | None = None
        self._vnis: dict[int, int] = {}  # VNI -> ifindex, as in the kumo_vnis map
        self._ct_tags: dict[int, int] = {}  # as in the kumo_ct_tags map
        self._tunnel_peers: set[int] | None = None  # as in the kumo_tunnel_peers map, once this agent set it
        self._tunnel_sock: socket.socket | None = None

    # --- life cycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        self.inject_ifindex = self._inject_pair()
        reuse = self._earlier_maps(INJECT_PAIR[1], PROGRAM, ADOPTED_MAPS)
        try:
            self.obj = libbpf.BpfObject(str(build.object_path("port_ingress")), reuse_maps=reuse)
        finally:
            _close(reuse)
        self.adopted = "kumo_flows" in self.obj.reused
        self.fds = {name: self.obj.map_fd(name) for name in MAPS}
        self.prog_fd = self.obj.program_fd(PROGRAM)
        self.maps = FlowMaps(self.fds)
        self.configure()
        self.attach_index(self.inject_ifindex)
        self._inject_sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self._inject_sock.bind((INJECT_PAIR[0], 0))
        self._send_sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self._start_tunnels()

    def _start_tunnels(self) -> None:
        """The VXLAN device and its program. Without them this host still serves its own ports; flows towards
        ports on other hosts drop with a counted reason (`no_tunnel`) and the log says why."""
        try:
            self.vxlan_ifindex = self._vxlan_device()
        except (NetlinkError, OSError) as exc:
            self.tunnel_error = f"cannot create VXLAN device {VXLAN_DEVICE} (UDP {VXLAN_PORT}): {exc}"
            log.error("%s; tunnels to other hosts are disabled", self.tunnel_error)
            return
        earlier = self._earlier_maps(VXLAN_DEVICE, VXLAN_PROGRAM, TUNNEL_MAPS)
        # one set of counters and one connection table for both programs
        shared = ("kumo_stats", "kumo_conntrack", "kumo_tunnel_traffic")
        reuse = {**{name: self.fds[name] for name in shared}, **earlier}
        try:
            self._vxlan_obj = libbpf.BpfObject(str(build.object_path("vxlan_ingress")), reuse_maps=reuse)
        finally:
            _close(earlier)
        self.fds["kumo_vnis"] = self._vxlan_obj.map_fd("kumo_vnis")
        self.fds["kumo_ct_tags"] = self._vxlan_obj.map_fd("kumo_ct_tags")
        for name in ("kumo_tunnel_peers", "kumo_tunnel_filter"):
            self.fds[name] = self._vxlan_obj.map_fd(name)
        self._vnis = {k.value: v.value for k, v in self._vni_entries()}
        self.attach_index(self.vxlan_ifindex, self._vxlan_obj.program_fd(VXLAN_PROGRAM), VXLAN_PROGRAM)
        self._tunnel_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def _earlier_maps(self, interface: str, program: str, names: tuple[str, ...]) -> dict[str, int]:
        """The maps named `names` of the `program` an earlier agent left on `interface` (its flows, its VNIs),
        to be reused by the program loaded now; none if there is no such program."""
        earlier = self._attached_program(interface, program)
        if earlier is None:
            return {}
        try:
            found = libbpf.maps_of_program(earlier)
        except libbpf.DatapathError as exc:
            log.warning("could not adopt the maps of program %s on %s: %s; starting empty", earlier, interface, exc)
            return {}
        _close({n: fd for n, fd in found.items() if n not in names})
        return {n: fd for n, fd in found.items() if n in names}

    def _vxlan_device(self) -> int:
        """kumo-vxlan: external (collect_md), GBP (a recorded connection's zone tag travels in it: an earlier
        device without it is made again)."""
        found = self.ipr.link_lookup(ifname=VXLAN_DEVICE)
        if found and not _has_gbp(VXLAN_DEVICE):
            self.ipr.link("del", index=found[0])
            found = []
        if not found:
            try:
                self.ipr.link(
                    "add",
                    ifname=VXLAN_DEVICE,
                    kind="vxlan",
                    vxlan_collect_metadata=1,
                    vxlan_port=VXLAN_PORT,
                    vxlan_learning=0,
                    vxlan_gbp=True,
                )
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
            found = self.ipr.link_lookup(ifname=VXLAN_DEVICE)
        _no_ipv6(VXLAN_DEVICE)
        self.ipr.link("set", index=found[0], state="up")
        return int(found[0])

    def configure(self) -> None:
        cfg = Config(
            inject_ifindex=self.inject_ifindex,
            upcall_rate=self.upcall_rate,
            upcall_burst=self.upcall_burst,
            storm_rate=self.storm_rate,
            storm_enter_ms=STORM_ENTER_MS,
            storm_leave_ms=STORM_LEAVE_MS,
            ct_timeout_s=self.ct_timeout_s,
        )
        libbpf.update(self.fds["kumo_config"], ctypes.c_uint32(0), cfg)

    def close(self) -> None:
        """Stop using the datapath. Filters and maps stay (flows keep forwarding; a new agent adopts them);
        deleting the namespace, or the interfaces, removes them."""
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        for sock in (self._inject_sock, self._send_sock, self._tunnel_sock):
            if sock is not None:
                sock.close()
        for obj in (self._vxlan_obj, self.obj):
            if obj is not None:
                obj.close()
        self.obj = self._vxlan_obj = None
        self.ipr.close()

    def _inject_pair(self) -> int:
        found = self.ipr.link_lookup(ifname=INJECT_PAIR[1])
        if not found:
            try:
                self.ipr.link("add", ifname=INJECT_PAIR[0], kind="veth", peer=INJECT_PAIR[1])
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
            found = self.ipr.link_lookup(ifname=INJECT_PAIR[1])
        for name in INJECT_PAIR:
            _no_ipv6(name)  # no router solicitations or MLD reports into the program
            self.ipr.link("set", index=self.ipr.link_lookup(ifname=name)[0], state="up")
        return int(found[0])

    # --- interfaces -----------------------------------------------------------------------------------
    def ifindex(self, name: str) -> int | None:
        """The interface's index, or None. (if_nametoindex is one ioctl; a netlink dump of every link, as
        pyroute2's link_lookup does, would stall the packet thread for milliseconds on a busy host.)"""
        try:
            return socket.if_nametoindex(name)
        except OSError:
            return None

    def attach(self, name: str) -> int | None:
        """Attach the program to interface `name` (its ifindex), or None if there is no such interface. The
        program watches its misses from then on (storm control)."""
        index = self.ifindex(name)
        if index is None:
            return None
        libbpf.update(self.fds["kumo_port_limits"], ctypes.c_uint32(index), PortLimit())
        self.attach_index(index)
        return index

    def attach_index(self, index: int, prog_fd: int | None = None, name: str = PROGRAM) -> None:
        try:
            self.ipr.tc("add", "clsact", index)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        self.ipr.tc(
            "replace-filter",
            "bpf",
            index,
            FILTER_HANDLE,
            fd=self.prog_fd if prog_fd is None else prog_fd,
            name=name,
            parent=TC_INGRESS,
            prio=FILTER_PRIO,
            classid=1,
            direct_action=True,
        )

    def detach(self, name: str) -> None:
        index = self.ifindex(name)
        if index is None:
            return
        try:
            self.ipr.tc("del", "clsact", index)
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.EINVAL):
                raise

    # --- storm control (kumo.agent.storms) ------------------------------------------------------------
    def port_limits(self, ifindexes: list[int]) -> dict[int, PortLimit]:
        """The program's storm control state of each attached interface."""
        out = {}
        for index in ifindexes:
            entry = PortLimit()
            if libbpf.lookup(self.fds["kumo_port_limits"], ctypes.c_uint32(index), entry):
                out[index] = entry
        return out

    def forget_port(self, ifindex: int) -> None:
        libbpf.delete(self.fds["kumo_port_limits"], ctypes.c_uint32(ifindex))

    def _attached_program(self, name: str, program: str = PROGRAM) -> int | None:
        """The id of the BPF program attached to `name`'s TC ingress, if any. (iproute2's JSON: pyroute2 0.9
        does not decode TCA_BPF_ID.)"""
        done = subprocess.run(["tc", "-j", "filter", "show", "dev", name, "ingress"], capture_output=True, text=True)
        if done.returncode != 0:
            return None
        for entry in json.loads(done.stdout or "[]"):
            prog = entry.get("options", {}).get("prog", {})
            if entry.get("options", {}).get("bpf_name") == program and prog.get("id"):
                return int(prog["id"])
        return None

    # --- flows (kumo.datapath.flowmaps: a key's length says which table) --------------------------------
    def install(self, key: FlowKey | bytes, value: FlowValue | bytes) -> None:
        self.maps.install(key, value)

    def install_many(self, flows: list[tuple[bytes, bytes]]) -> None:
        self.maps.install_many(flows)

    def remove(self, key: FlowKey | bytes) -> bool:
        return self.maps.remove(key)

    def lookup(self, key: FlowKey | bytes) -> FlowValue | None:
        return self.maps.lookup(bytes(key))

    def flows(self) -> Iterator[tuple[FlowKey, FlowValue]]:
        """The exact flows (and flood links); megaflows: self.maps.megaflows()."""
        return self.maps.exact()

    def last_used(self) -> dict[bytes, int]:
        return self.maps.last_used()

    def last_used_of(self, raw_key: bytes) -> int | None:
        return self.maps.last_used_of(raw_key)

    def stats(self) -> dict[str, int]:
        """The BPF counters, summed over CPUs."""
        cpus = libbpf.possible_cpus()
        out = {}
        for index, name in enumerate(STATS):
            values = (ctypes.c_uint64 * cpus)()
            libbpf.lookup(self.fds["kumo_stats"], ctypes.c_uint32(index), values)
            out[name] = sum(values)
        return out

    def tunnel_traffic(self) -> dict[int, dict[str, int]]:
        """Per tunnel peer (underlay address): packets and inner bytes sent and received, summed over CPUs."""
        fd, cpus, out = self.fds["kumo_tunnel_traffic"], libbpf.possible_cpus(), {}
        for key in libbpf.keys(fd, ctypes.c_uint32):
            values = (TunnelCount * cpus)()
            if libbpf.lookup(fd, key, values):
                out[key.value] = {name: sum(getattr(v, name) for v in values) for name in TunnelCount.FIELDS}
        return out

    # --- tunnels: VNI -> local interface -----------------------------------------------------------------
    def set_vni(self, vni: int, ifindex: int) -> None:
        if "kumo_vnis" in self.fds and self._vnis.get(vni) != ifindex:
            libbpf.update(self.fds["kumo_vnis"], ctypes.c_uint32(vni), ctypes.c_uint32(ifindex))
            self._vnis[vni] = ifindex

    def forget_vnis_of(self, ifindex: int) -> None:
        for vni in [v for v, i in self._vnis.items() if i == ifindex]:
            libbpf.delete(self.fds["kumo_vnis"], ctypes.c_uint32(vni))
            del self._vnis[vni]

    def keep_vnis(self, wanted: dict[int, int]) -> None:
        """Make the VNI map exactly `wanted` (an adopted map may name ports that left this host)."""
        for vni in [v for v in self._vnis if v not in wanted]:
            libbpf.delete(self.fds["kumo_vnis"], ctypes.c_uint32(vni))
            del self._vnis[vni]
        for vni, ifindex in wanted.items():
            self.set_vni(vni, ifindex)

    def set_ct_tags(self, tags: dict[int, int]) -> None:
        """Make kumo_ct_tags exactly `tags` (zone tag -> zone): the tunnelled forward packets this host records."""
        fd = self.fds.get("kumo_ct_tags")
        if fd is None or tags == self._ct_tags:
            return
        for tag in [t for t in self._ct_tags if t not in tags]:
            libbpf.delete(fd, ctypes.c_uint32(tag))
        for tag, zone in tags.items():
            if self._ct_tags.get(tag) != zone:
                libbpf.update(fd, ctypes.c_uint32(tag), ctypes.c_uint64(zone))
        self._ct_tags = dict(tags)

    def set_tunnel_peers(self, addresses: set[int]) -> None:
        """Make kumo_tunnel_peers exactly `addresses` (this host's tunnel peers' underlay addresses), and turn
        the VXLAN program's source filter on: a tunnelled packet from anyone else is dropped."""
        fd = self.fds.get("kumo_tunnel_peers")
        if fd is None or addresses == self._tunnel_peers:
            return
        known = {key.value for key in libbpf.keys(fd, ctypes.c_uint32)}  # (an earlier agent's, adopted)
        for address in known - addresses:
            libbpf.delete(fd, ctypes.c_uint32(address))
        for address in addresses - known:
            libbpf.update(fd, ctypes.c_uint32(address), ctypes.c_uint8(1))
        libbpf.update(self.fds["kumo_tunnel_filter"], ctypes.c_uint32(0), ctypes.c_uint32(1))
        self._tunnel_peers = set(addresses)

    def vnis(self) -> dict[int, int]:
        return dict(self._vnis)

    def _vni_entries(self) -> Iterator[tuple[ctypes.c_uint32, ctypes.c_uint32]]:
        for key in libbpf.keys(self.fds["kumo_vnis"], ctypes.c_uint32):
            value = ctypes.c_uint32()
            if libbpf.lookup(self.fds["kumo_vnis"], key, value):
                yield key, value  # type: ignore[misc]

    def send_tunnel(self, vni: int, remote: int, frame: bytes) -> None:
        """A generated frame to a port on another host: VXLAN-encapsulated by hand, sent as UDP to the remote
        host's VXLAN device, whose program delivers it by VNI like any tunnelled packet."""
        if self._tunnel_sock is None:
            raise OSError(errno.ENETUNREACH, self.tunnel_error or "tunnels are not available")
        self._tunnel_sock.sendto(Vxlan(vni, frame).build(), (int_to_ip(remote), VXLAN_PORT))

    # --- BGP speakers (kumo.edge): the uplink's BGP to the speaker's veth, and back -----------------------
    def set_speaker(self, uplink_ifindex: int, speaker_ifindex: int, address: str) -> None:
        """Hand `uplink_ifindex`'s BGP and ARP for `address` to the speaker behind `speaker_ifindex`, and send
        what the speaker sends out of the uplink (lib/speakers.h). The speaker's veth gets the program."""
        addr = struct.unpack("=I", socket.inet_aton(address))[0]
        libbpf.update(self.fds["kumo_speakers"], ctypes.c_uint32(speaker_ifindex), Speaker(uplink_ifindex, addr, 0))
        libbpf.update(self.fds["kumo_speakers"], ctypes.c_uint32(uplink_ifindex), Speaker(speaker_ifindex, addr, 1))
        self.attach_index(speaker_ifindex)

    def clear_speaker(self, uplink_ifindex: int, speaker_ifindex: int) -> None:
        for index in (uplink_ifindex, speaker_ifindex):
            libbpf.delete(self.fds["kumo_speakers"], ctypes.c_uint32(index))

    # --- ARP answered in the kernel (kumo.agent.arpanswers, lib/arp.h) ----------------------------------
    def set_arp_answer(self, ifindex: int, ip: int, mac: str) -> None:
        """Requests for `ip` (host order) arriving on `ifindex` are answered with `mac`."""
        key = ArpKey(ifindex, socket.htonl(ip))
        libbpf.update(self.fds["kumo_arp_answers"], key, ArpAnswer((ctypes.c_uint8 * 6)(*mac_to_bytes(mac)), 0))

    def clear_arp_answer(self, ifindex: int, ip: int) -> None:
        libbpf.delete(self.fds["kumo_arp_answers"], ArpKey(ifindex, socket.htonl(ip)))

    # --- packets --------------------------------------------------------------------------------------
    def upcalls(self) -> UpcallRing:
        fd = self.fds["kumo_upcalls"]
        self._ring = open_ring(fd, libbpf.map_info(fd).max_entries)
        return self._ring

    def upcalls_most_waiting(self) -> int:
        """Bytes: the most upcalls found waiting in the ring at once (they fill it at its size)."""
        return self._ring.most_waiting if self._ring is not None else 0

    def inject(self, frame: bytes, in_port: int) -> None:
        """Execute `frame` through the installed flow of `in_port`: the program on the re-injection interface
        takes the mark as the input port."""
        assert self._inject_sock is not None
        if in_port != self._inject_mark_port:  # (one system call saved while a burst comes from one port)
            self._inject_sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, struct.pack("I", INJECT_MARK | in_port))
            self._inject_mark_port = in_port
        self._inject_sock.send(frame)

    def send(self, interface: str, frame: bytes) -> None:
        """Write `frame` to a local VM's interface (generated packets: ARP/DHCP replies, ICMP errors)."""
        assert self._send_sock is not None
        self._send_sock.sendto(frame, (interface, 0))
