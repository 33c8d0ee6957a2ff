"""From the simulation to the kernel: a packet's exact flow key, and a result's actions as the datapath's
action struct; and back, readable, for `kumo flows`."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from kumo.datapath.layout import (
    CT_ESTABLISHED,
    CT_NEW,
    FRAGMENT_CODES,
    LINK_PORT,
    MAX_LINKS,
    MAX_OUT,
    VLAN_TAGGED,
    Action,
    FlowActions,
    FlowKey,
    FlowValue,
    Output,
)
from kumo.packet import int_to_ip
from kumo.packet.flowmatch import INDEX, FlowMatch
from kumo.simulation.result import SimulationResult, Verdict

_FRAGMENT_NAMES = {code: name for name, code in FRAGMENT_CODES.items()}


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _mac_text(raw: Any) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))


def _net(ip: int | None) -> int:
    """An IPv4 address as the kernel stores it (network order) in a native u32."""
    return int(struct.unpack("=I", struct.pack("!I", ip or 0))[0])


def _host(value: int) -> int:
    return int(struct.unpack("!I", struct.pack("=I", value))[0])


class Out(NamedTuple):
    """Where a flow sends its packets: a local interface, or (remote != 0) the VXLAN device with the egress
    port's tunnel key as VNI and the egress host's tunnel IP (an int) as the remote end."""

    ifindex: int
    tunnel_key: int = 0
    remote: int = 0


_KEY = struct.Struct("=I6s6sHH4s4sBBBxHHHxx")  # struct kumo_flow_key, packed in one call
_NO_IP = bytes(4)


def flow_key(match: FlowMatch, in_port: int) -> FlowKey:
    """The exact kernel key of the packet `match` was parsed from (its original fields), as the BPF parser
    builds it. (Packed with one struct call: it is made for every first packet.)"""
    o = match.original_values()
    eth_type = o[INDEX["eth_type"]] or 0
    vlan = o[INDEX["vlan"]]
    src = dst = _NO_IP
    proto = tos = fragment = tp_src = tp_dst = icmp_id = 0
    if eth_type == 0x0806:
        tp_src = o[INDEX["arp_op"]] or 0
        src, dst = _ip_bytes(o[INDEX["arp_spa"]]), _ip_bytes(o[INDEX["arp_tpa"]])
    elif eth_type == 0x0800:
        src, dst = _ip_bytes(o[INDEX["ip_src"]]), _ip_bytes(o[INDEX["ip_dst"]])
        proto, tos = o[INDEX["ip_proto"]] or 0, o[INDEX["ip_tos"]] or 0
        fragment = FRAGMENT_CODES.get(o[INDEX["fragment"]] or "none", 0)
        if o[INDEX["icmp_type"]] is not None:
            tp_src, tp_dst, icmp_id = o[INDEX["icmp_type"]], o[INDEX["icmp_code"]] or 0, o[INDEX["icmp_id"]] or 0
        else:
            tp_src, tp_dst = o[INDEX["tp_src"]] or 0, o[INDEX["tp_dst"]] or 0
    raw = _KEY.pack(
        in_port,
        _mac_bytes(o[INDEX["eth_src"]]),
        _mac_bytes(o[INDEX["eth_dst"]]),
        eth_type,
        VLAN_TAGGED | vlan if vlan is not None else 0,
        src,
        dst,
        proto,
        tos,
        fragment,
        tp_src,
        tp_dst,
        icmp_id,
    )
    return FlowKey.from_buffer_copy(raw)


def _ip_bytes(ip: int | None) -> bytes:
    return (ip or 0).to_bytes(4, "big")  # network order, as the kernel stores it


PER_LINK = MAX_OUT - 1  # outputs of a value whose flood goes on (its last slot names the next link)
MAX_FLOOD = PER_LINK * (MAX_LINKS - 1) + MAX_OUT  # outputs of the longest chain (bpf/lib/kumo.h)


def flood_chunks(outputs: Sequence[Out]) -> list[list[Out]]:
    """`outputs` cut as a chain's values hold them: PER_LINK in each value that goes on, the rest (at most
    MAX_OUT) in the last. One chunk when they fit in one value."""
    chunks, rest = [], list(outputs)
    while len(rest) > MAX_OUT:
        chunks.append(rest[:PER_LINK])
        rest = rest[PER_LINK:]
    return [*chunks, rest]


def link_key(link_set: int, index: int) -> bytes:
    """The kernel key of link `index` (1, 2, ...) of a flood chain's set `link_set`."""
    return bytes(FlowKey(in_port=LINK_PORT, ip_src=link_set, ip_dst=index))


def link_value(outputs: Sequence[Out], next_link: tuple[int, int] | None) -> bytes:
    """A link of a flood chain: its outputs, and the next link (set, index) if the flood goes on."""
    value = FlowValue()
    value.act.flags = _set_outputs(value.act, outputs, next_link)
    return bytes(value)


def flood_links(link_set: int, tail: Sequence[Sequence[Out]]) -> list[tuple[bytes, bytes]]:
    """The links of set `link_set` holding a flood's chunks after its first (flood_chunks), as (key, value)
    bytes: link 1 holds tail[0] and names link 2, ..., the last names none."""
    return [
        (link_key(link_set, index), link_value(chunk, (link_set, index + 1) if index < len(tail) else None))
        for index, chunk in enumerate(tail, start=1)
    ]


def _set_outputs(act: FlowActions, outputs: Sequence[Out], next_link: tuple[int, int] | None) -> Action:
    room = PER_LINK if next_link else MAX_OUT
    if len(outputs) > room:
        raise ValueError(f"{len(outputs)} outputs in one kernel value, which holds {room}: cut them (flood_chunks)")
    flags = Action.OUTPUT
    act.n_out = len(outputs)
    for i, out in enumerate(outputs):
        act.out[i].ifindex, act.out[i].tunnel_key, act.out[i].remote = out
        if out.remote:
            flags |= Action.TUNNEL
    if next_link is not None:
        pointer = act.out[MAX_OUT - 1]
        pointer.ifindex, (pointer.tunnel_key, pointer.remote) = 0, next_link
        flags |= Action.MORE_OUT
    return flags


def flow_value(result: SimulationResult, outputs: Sequence[Out], next_link: tuple[int, int] | None = None) -> FlowValue:
    """The kernel actions of a result; `outputs` are where its egress ports are reached (none: drop), at most
    MAX_OUT, or PER_LINK when the flood goes on in link `next_link` (set, index) with the rest."""
    value = FlowValue()
    act = value.act
    flags = Action(0)
    if result.verdict is Verdict.DROP or not outputs:
        act.flags = Action.DROP
        return value
    rw = result.rewrites
    if "eth_src" in rw:
        flags |= Action.SET_ETH_SRC
        act.eth_src[:] = _mac_bytes(rw["eth_src"])
    if "eth_dst" in rw:
        flags |= Action.SET_ETH_DST
        act.eth_dst[:] = _mac_bytes(rw["eth_dst"])
    if "ip_src" in rw:
        flags |= Action.SET_IP_SRC
        act.ip_src = _net(rw["ip_src"])
    if "ip_dst" in rw:
        flags |= Action.SET_IP_DST
        act.ip_dst = _net(rw["ip_dst"])
    if "tp_src" in rw:
        flags |= Action.SET_TP_SRC
        act.tp_src = rw["tp_src"]
    if "tp_dst" in rw:
        flags |= Action.SET_TP_DST
        act.tp_dst = rw["tp_dst"]
    if "icmp_id" in rw:
        flags |= Action.SET_ICMP_ID
        act.icmp_id = rw["icmp_id"]
    if "vlan" in rw:
        if rw["vlan"] is None:
            flags |= Action.VLAN_POP
        else:
            flags |= Action.VLAN_PUSH
            act.vlan = rw["vlan"]
    if result.ttl_decrement:
        flags |= Action.DEC_TTL
        act.ttl_dec = result.ttl_decrement
    act.mtu = result.path_mtu or 0
    act.flags = flags | _set_outputs(act, outputs, next_link)
    return value


_FLAGS = struct.Struct("=I")  # FlowActions.flags, at the value's start
_ZONE = struct.Struct("=Q")
_TAG = struct.Struct("=H")


def ct_query_value(zone: int) -> bytes:
    """A first-stage megaflow's value: query conntrack zone `zone`, then look up again (bpf/lib/conntrack.h)."""
    value = FlowValue()
    value.act.flags = Action.CT_QUERY
    value.act.ct_zone = zone
    return bytes(value)


def with_ct_record(value: bytes, zone: int, tag: int = 0) -> bytes:
    """`value` that also records its packets' connection in conntrack zone `zone`, and has the hosts its
    tunnelled packets go to record it too when `tag` (the zone's tag) is given."""
    out = bytearray(value)
    flags = _FLAGS.unpack_from(out, FlowActions.flags.offset)[0]
    _FLAGS.pack_into(out, FlowActions.flags.offset, flags | Action.CT_RECORD)
    _ZONE.pack_into(out, FlowActions.ct_zone.offset, zone)
    _TAG.pack_into(out, FlowActions.ct_tag.offset, tag)
    return bytes(out)


def describe_key(key: FlowKey) -> dict[str, Any]:
    out: dict[str, Any] = {
        "in_port": key.in_port,
        "eth_src": _mac_text(key.eth_src),
        "eth_dst": _mac_text(key.eth_dst),
        "eth_type": f"{key.eth_type:#06x}",
    }
    if key.vlan:
        out["vlan"] = key.vlan & 0xFFF
    if key.ct:
        out["ct"] = {CT_ESTABLISHED: "established", CT_NEW: "new"}.get(key.ct, key.ct)
    if key.eth_type == 0x0806:
        out.update(arp_op=key.tp_src, arp_spa=_ip(key.ip_src), arp_tpa=_ip(key.ip_dst))
    elif key.eth_type == 0x0800:
        out.update(ip_src=_ip(key.ip_src), ip_dst=_ip(key.ip_dst), ip_proto=key.ip_proto)
        if key.ip_tos:
            out["ip_tos"] = key.ip_tos
        if key.fragment:
            out["fragment"] = _FRAGMENT_NAMES.get(key.fragment, key.fragment)
        if key.ip_proto == 1:
            out.update(icmp_type=key.tp_src, icmp_code=key.tp_dst, icmp_id=key.icmp_id)
        elif key.ip_proto in (6, 17):
            out.update(tp_src=key.tp_src, tp_dst=key.tp_dst)
    return out


_SHOWN: tuple[tuple[Action, Callable[[FlowActions], str]], ...] = (  # in the order the program applies them
    (Action.SET_IP_SRC, lambda a: f"set ip_src={_ip(a.ip_src)}"),
    (Action.SET_IP_DST, lambda a: f"set ip_dst={_ip(a.ip_dst)}"),
    (Action.SET_TP_SRC, lambda a: f"set tp_src={a.tp_src}"),
    (Action.SET_TP_DST, lambda a: f"set tp_dst={a.tp_dst}"),
    (Action.SET_ICMP_ID, lambda a: f"set icmp_id={a.icmp_id}"),
    (Action.DEC_TTL, lambda a: f"dec_ttl {a.ttl_dec}"),
    (Action.VLAN_POP, lambda a: "pop_vlan"),
    (Action.VLAN_PUSH, lambda a: f"push_vlan {a.vlan}"),
    (Action.SET_ETH_SRC, lambda a: f"set eth_src={_mac_text(a.eth_src)}"),
    (Action.SET_ETH_DST, lambda a: f"set eth_dst={_mac_text(a.eth_dst)}"),
)


def describe_actions(
    act: FlowActions,
    names: dict[int, str] | None = None,
    links: dict[tuple[int, int], FlowActions] | None = None,
) -> list[str]:
    """Readable actions; `names` maps ifindexes to interface names, `links` a flood chain's links (their
    (set, index)) to their actions, so that a long flood shows all its outputs."""
    names = names or {}
    flags = Action(act.flags)
    if Action.DROP in flags:
        return ["drop"]
    if Action.CT_QUERY in flags:
        return [f"ct_query zone={act.ct_zone:#x}, look up again with its answer"]
    out = [show(act) for flag, show in _SHOWN if flag in flags]
    if Action.CT_RECORD in flags:
        out.insert(0, f"ct_record zone={act.ct_zone:#x}")
    if act.mtu:
        out.append(f"mtu {act.mtu}")
    targets = [_target(act.out[i], names) for i in range(act.n_out)]
    link: FlowActions | None = act
    for _ in range(MAX_LINKS - 1):
        if link is None or Action.MORE_OUT not in Action(link.flags):
            break
        pointer = link.out[MAX_OUT - 1]
        link = (links or {}).get((pointer.tunnel_key, pointer.remote))
        if link is None:
            targets.append(f"(link {pointer.remote} of set {pointer.tunnel_key} missing)")
        else:
            targets += [_target(link.out[i], names) for i in range(link.n_out)]
    out.append(("flood " if len(targets) > 1 else "output ") + ",".join(targets))
    return out


def _target(out: Output, names: dict[int, str]) -> str:
    if out.remote:
        return f"tunnel(vni={out.tunnel_key},remote={int_to_ip(out.remote)})"
    return names.get(out.ifindex, str(out.ifindex))


def match_fields(key: FlowKey) -> dict[str, Any]:
    """The FlowMatch fields of a kernel key (the inverse of flow_key; ARP hardware addresses other than the
    frame's source are not in the key)."""
    fields: dict[str, Any] = {
        "eth_src": _mac_text(key.eth_src),
        "eth_dst": _mac_text(key.eth_dst),
        "eth_type": key.eth_type,
        "vlan": key.vlan & 0xFFF if key.vlan else None,
    }
    if key.eth_type == 0x0806:
        fields.update(
            arp_op=key.tp_src, arp_sha=fields["eth_src"], arp_spa=_host(key.ip_src), arp_tpa=_host(key.ip_dst)
        )
    elif key.eth_type == 0x0800:
        fields.update(
            ip_src=_host(key.ip_src),
            ip_dst=_host(key.ip_dst),
            ip_proto=key.ip_proto,
            ip_tos=key.ip_tos,
            fragment=_FRAGMENT_NAMES.get(key.fragment, "none"),
        )
        if key.fragment != FRAGMENT_CODES["later"]:
            if key.ip_proto in (6, 17):
                fields.update(tp_src=key.tp_src, tp_dst=key.tp_dst)
            elif key.ip_proto == 1:
                fields.update(icmp_type=key.tp_src, icmp_code=key.tp_dst)
                if key.tp_src in (0, 8):
                    fields["icmp_id"] = key.icmp_id
    return fields


def _ip(value: int) -> str:
    return int_to_ip(_host(value))
