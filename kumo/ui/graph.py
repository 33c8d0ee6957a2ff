"""The virtual topology as a picture: a Graphviz graph, laid out and drawn as SVG by Graphviz's `dot`.

Why Graphviz on the server: one drawing serves the web page (/ui, which inlines the SVG) and reports
(`kumo topology --svg FILE`); the layout is Graphviz's, a maintained engine that lays networks out well, and
the browser needs no JavaScript graph library, no build step and nothing from the npm registry.

What is drawn (every SVG node has an `id` and `class` the page's script uses):
- devices: bridges (`device-<id>`, class `kumo-device kumo-bridge`) and routers (`kumo-device kumo-router`);
- ports (`port-<id>`, class `kumo-port`): their name, address, and traffic from the agents (rx/tx packets,
  drops) when their host reports them; a line to their device, a bold line to their peer (interior link), a
  dashed line to the host they are bound to (exterior), labelled with the interface;
- hosts (`host-<id>`, class `kumo-host`): alive or not;
- BGP peers (`bgp-<id>`, class `kumo-bgp`) by their router, with the session's state;
- pools (`pool-<id>`, class `kumo-pool`) by their router, with their VIPs and each member's health.
"""

from __future__ import annotations

from typing import Any

import graphviz

from kumo.topology.errors import KumoError
from kumo.topology.store.base import Obj

KINDS = ("bridges", "routers", "ports", "hosts", "bgp_peers", "load_balancers", "pools", "pool_members", "vips")
HEALTH_COLORS = {"up": "#2e7d32", "down": "#c62828", "no_monitor": "#616161"}


class GraphvizMissing(KumoError):
    status = 503
    code = "graphviz_missing"


def svg(objects: dict[str, list[Obj]], stats: dict[str, dict[str, Any]]) -> bytes:
    """The picture of `objects` (kind -> objects; KINDS, any missing) with per-port `stats`, as SVG."""
    try:
        return topology_graph(objects, stats).pipe(format="svg")
    except graphviz.ExecutableNotFound:
        raise GraphvizMissing(
            "drawing the topology needs Graphviz's `dot` on the API's host: apt-get install graphviz"
        ) from None


def topology_graph(objects: dict[str, list[Obj]], stats: dict[str, dict[str, Any]]) -> graphviz.Graph:
    graph = graphviz.Graph("kumo", engine="dot")
    graph.attr(rankdir="LR", bgcolor="transparent", fontname="Helvetica", nodesep="0.25", ranksep="0.6")
    graph.attr("node", fontname="Helvetica", fontsize="10", style="filled", fillcolor="white")
    graph.attr("edge", color="#78909c", fontname="Helvetica")
    get = objects.get
    for host in get("hosts", []):
        _host(graph, host)
    for bridge in get("bridges", []):
        label = _text(bridge.get("name") or bridge["id"][:8])
        _node(graph, f"device-{bridge['id']}", label, "kumo-device kumo-bridge", shape="ellipse", fillcolor="#bbdefb")
    for router in get("routers", []):
        label = _text(router.get("name") or router["id"][:8]) + (f"\\nAS {router['asn']}" if router.get("asn") else "")
        _node(graph, f"device-{router['id']}", label, "kumo-device kumo-router", shape="hexagon", fillcolor="#ffe0b2")
    hosts = {h["id"] for h in get("hosts", [])}
    linked: set[frozenset[str]] = set()
    for port in get("ports", []):
        _port(graph, port, stats.get(port["id"]), hosts, linked)
    for peer in get("bgp_peers", []):
        _bgp_peer(graph, peer)
    _pools(graph, objects)
    return graph


def _host(graph: graphviz.Graph, host: Obj) -> None:
    alive = bool(host.get("alive"))
    label = f"host {_text(host.get('name') or host['id'][:8])}\\n{'alive' if alive else 'DOWN'}"
    _node(
        graph,
        f"host-{host['id']}",
        label,
        "kumo-host",
        shape="box3d",
        fillcolor="#c8e6c9" if alive else "#ffcdd2",
        tooltip=host["id"],
    )


def _port(
    graph: graphviz.Graph, port: Obj, stats: dict[str, Any] | None, hosts: set[str], linked: set[frozenset[str]]
) -> None:
    lines = [_text(port.get("name") or port["id"][:8])]
    if port.get("port_address"):
        lines.append(f"{port['port_address']} ({port.get('network_cidr', '')})")
    if stats is not None:
        lines.append(f"rx {_count(stats.get('rx_packets', 0))} tx {_count(stats.get('tx_packets', 0))}")
        if stats.get("dropped"):
            lines.append(f"dropped {_count(stats['dropped'])}")
    down = not port.get("admin_state_up", True)
    dropping = bool(stats and stats.get("dropped"))
    node = f"port-{port['id']}"
    _node(
        graph,
        node,
        "\\n".join(lines),
        "kumo-port",
        shape="box",
        style="rounded,filled" + (",dashed" if down else ""),
        fillcolor="#eeeeee" if down else "#fff9c4" if dropping else "white",
        fontsize="9",
        tooltip=port["id"],
    )
    graph.edge(f"device-{port['device_id']}", node, weight="4")
    peer = port.get("peer_id")
    if peer and frozenset((port["id"], peer)) not in linked:
        linked.add(frozenset((port["id"], peer)))
        graph.edge(node, f"port-{peer}", penwidth="2.5", color="#37474f")
    if port.get("host_id") in hosts:
        interface = _text(port.get("interface_name") or "")
        graph.edge(node, f"host-{port['host_id']}", style="dashed", label=interface, fontsize="8", weight="0.5")


def _bgp_peer(graph: graphviz.Graph, peer: Obj) -> None:
    state = str(peer.get("state") or "idle")
    node = f"bgp-{peer['id']}"
    _node(
        graph,
        node,
        f"BGP AS {peer.get('asn')}\\n{peer.get('address')}\\n{_text(state)}",
        "kumo-bgp",
        shape="cds",
        fillcolor="#c8e6c9" if state == "established" else "#ffcdd2",
        tooltip=peer["id"],
    )
    graph.edge(f"device-{peer['router_id']}", node, style="dotted")


def _pools(graph: graphviz.Graph, objects: dict[str, list[Obj]]) -> None:
    routers = {lb["id"]: lb.get("router_id") for lb in objects.get("load_balancers", [])}
    members: dict[str, list[Obj]] = {}
    for member in objects.get("pool_members", []):
        members.setdefault(member["pool_id"], []).append(member)
    vips: dict[str, list[Obj]] = {}
    for vip in objects.get("vips", []):
        vips.setdefault(vip["pool_id"], []).append(vip)
    for pool in objects.get("pools", []):
        router = routers.get(pool.get("load_balancer_id", ""))
        rows = [
            f"<tr><td><b>pool {_html(pool.get('name') or pool['id'][:8])}</b> ({_html(pool['protocol'])})</td></tr>"
        ]
        rows += [f"<tr><td>VIP {_html(v['address'])}:{v['protocol_port']}</td></tr>" for v in vips.get(pool["id"], [])]
        for member in sorted(members.get(pool["id"], []), key=lambda m: (m["address"], m["protocol_port"])):
            status = str(member.get("status") or "no_monitor")
            color = HEALTH_COLORS.get(status, "#616161")
            rows.append(
                f'<tr><td align="left"><font color="{color}">{_html(member["address"])}:{member["protocol_port"]} '
                f"w{member.get('weight', 1)} {_html(status)}</font></td></tr>"
            )
        node = f"pool-{pool['id']}"
        label = f'<<table border="0" cellborder="0" cellspacing="0">{"".join(rows)}</table>>'
        _node(graph, node, label, "kumo-pool", shape="note", fillcolor="#f3e5f5", tooltip=pool["id"])
        if router:
            graph.edge(f"device-{router}", node, style="dotted")


def _node(graph: graphviz.Graph, name: str, label: str, css_class: str, **attrs: str) -> None:
    """A node whose SVG group has `name` as its id and `css_class` as its class (the page finds it by them)."""
    graph.node(name, label, _attributes={"id": name, "class": css_class}, **attrs)


def _count(n: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _text(value: str) -> str:
    """A user's text in a plain label: Graphviz's escapes (\\n, \\l...) taken literally."""
    return graphviz.escape(str(value))


def _html(value: str) -> str:
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
