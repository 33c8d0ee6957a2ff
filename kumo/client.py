"""Python client of the REST API, used by the CLI and the tests.

Every resource of API.md is a typed attribute (`client.bridges`, `client.routes`, ...) with list, get,
create, update and delete; links, bindings and tunnel-zone members have methods of their own. Every
error the API reports raises ApiError, carrying its code and message.
"""

from __future__ import annotations

import itertools
import os
import ssl
from typing import Any
from urllib.parse import urlencode

import httpx

from kumo.topology.resources import SPECS, path_params

DEFAULT_API = "http://127.0.0.1:8181"
PAGE_SIZE = 500
Obj = dict[str, Any]


class ApiError(Exception):
    """An error answer of the API (or no answer at all: status 0, code "unreachable")."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.status = status
        self.code = code
        self.message = message


class Collection:
    """One resource kind of the API."""

    def __init__(self, client: Client, kind: str) -> None:
        self.client = client
        self.spec = SPECS[kind]

    def collection_path(self, parents: dict[str, str]) -> str:
        spec_chain = [*[p for _, p in path_params(self.spec)], self.spec]
        names = [n for n, _ in path_params(self.spec)]
        path = f"/v1/{spec_chain[0].kind}"
        for name, spec in zip(names, spec_chain[1:], strict=True):
            if name not in parents:
                raise ApiError(400, "missing_parent", f"{name} is required to reach {self.spec.kind}")
            path += f"/{parents[name]}/{spec.path_segment}"
        return path

    def _parents(self, fields: dict[str, Any]) -> dict[str, str]:
        """The path parameters of a nested kind, looking up outer parents the caller did not name."""
        params: dict[str, str] = {k: v for k, v in fields.items() if isinstance(v, str)}
        names = [n for n, _ in path_params(self.spec)]
        for outer, inner in reversed(list(itertools.pairwise(names))):
            if outer not in params and inner in params:
                inner_spec = dict(path_params(self.spec))[inner]
                params[outer] = self.client.request("GET", f"/v1/{inner_spec.kind}/{params[inner]}")[outer]
        return params

    def item_path(self, obj_id: str) -> str:
        return f"/v1/{self.spec.kind}/{obj_id}"

    def list(self, **fields: str) -> list[Obj]:
        """The whole collection, a page of PAGE_SIZE at a time; fields that are not path parameters filter on
        the server (device_id, host_id, tenant_id, name)."""
        names = {n for n, _ in path_params(self.spec)}
        path = self.collection_path(self._parents({k: v for k, v in fields.items() if k in names}))
        query = {k: v for k, v in fields.items() if k not in names}
        out: list[Obj] = []
        url: str | None = f"{path}?{urlencode({**query, 'limit': PAGE_SIZE})}"
        while url is not None:
            response = self.client.send("GET", url)
            out += self.client.answer(response)
            url = response.links.get("next", {}).get("url")
        if self.spec.kind == "rules":  # pages come in id order; a chain's rules read in their order
            out.sort(key=lambda r: (r["chain_id"], r.get("position") or 0))
        return out

    def get(self, obj_id: str) -> Obj:
        result: Obj = self.client.request("GET", self.item_path(obj_id))
        return result

    def create(self, **fields: Any) -> Obj:
        names = {n for n, _ in path_params(self.spec)}
        path = self.collection_path(self._parents(fields))
        body = {k: v for k, v in fields.items() if k not in names}
        result: Obj = self.client.request("POST", path, body)
        return result

    def update(self, obj_id: str, **fields: Any) -> Obj:
        result: Obj = self.client.request("PATCH", self.item_path(obj_id), fields)
        return result

    def delete(self, obj_id: str) -> None:
        self.client.request("DELETE", self.item_path(obj_id))


def _verification(ca_file: str | None) -> ssl.SSLContext | bool:
    """How an https:// API's certificate is checked: against the system's CAs, or the bundle in `ca_file`."""
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ApiError(0, "ca_file", f"KUMO_CA_FILE {ca_file}: {exc}") from None


def _token_from_file(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return open(path).read().strip() or None
    except OSError as exc:
        raise ApiError(0, "token_file", f"KUMO_TOKEN_FILE {path}: {exc.strerror}") from None


class Client:
    bridges: Collection
    routers: Collection
    ports: Collection
    routes: Collection
    chains: Collection
    rules: Collection
    port_groups: Collection
    ip_addr_groups: Collection
    hosts: Collection
    tunnel_zones: Collection
    dhcp_subnets: Collection
    dhcp_hosts: Collection
    load_balancers: Collection
    health_monitors: Collection
    pools: Collection
    pool_members: Collection
    vips: Collection
    bgp_peers: Collection
    bgp_networks: Collection

    def __init__(self, base_url: str | None = None, timeout: float = 30.0, token: str | None = None) -> None:
        """`token`: the API token (default: KUMO_TOKEN, else the file KUMO_TOKEN_FILE names). An https:// API
        is verified against the system's CAs, or against the PEM bundle KUMO_CA_FILE names."""
        self.base_url = (base_url or os.environ.get("KUMO_API") or DEFAULT_API).rstrip("/")
        token = token or os.environ.get("KUMO_TOKEN") or _token_from_file(os.environ.get("KUMO_TOKEN_FILE"))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify = _verification(os.environ.get("KUMO_CA_FILE"))
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers, verify=verify)
        for kind, spec in SPECS.items():
            if spec.generic_api:
                setattr(self, kind, Collection(self, kind))

    def collection(self, kind: str) -> Collection:
        coll = getattr(self, kind, None)
        if not isinstance(coll, Collection):
            raise ApiError(400, "unknown_kind", f"no resource kind {kind!r}")
        return coll

    def request(self, method: str, path: str, body: Any = None) -> Any:
        return self.answer(self.send(method, path, body))

    def send(self, method: str, path: str, body: Any = None) -> httpx.Response:
        try:
            return self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ApiError(
                0,
                "unreachable",
                f"cannot reach the Kumo API at {self.base_url}: {exc}; is `kumo up` running? "
                "(choose the server with --api or KUMO_API)",
            ) from None

    @staticmethod
    def answer(response: httpx.Response) -> Any:
        """The body of an answer, or ApiError for an error answer."""
        if response.status_code == 204:
            return None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            if isinstance(data, dict) and "error" in data:
                raise ApiError(response.status_code, str(data["error"]), str(data.get("message", "")))
            raise ApiError(response.status_code, "http_error", response.text[:200])
        return data

    # --- links, bindings, members, learned state ---------------------------------------------------------
    def link_ports(self, port_id: str, peer_id: str) -> Obj:
        result: Obj = self.request("POST", f"/v1/ports/{port_id}/link", {"peer_id": peer_id})
        return result

    def unlink_port(self, port_id: str) -> Obj:
        result: Obj = self.request("DELETE", f"/v1/ports/{port_id}/link")
        return result

    def bind_port(self, port_id: str, host_id: str, interface_name: str) -> Obj:
        body = {"host_id": host_id, "interface_name": interface_name}
        result: Obj = self.request("PUT", f"/v1/ports/{port_id}/binding", body)
        return result

    def unbind_port(self, port_id: str) -> Obj:
        result: Obj = self.request("DELETE", f"/v1/ports/{port_id}/binding")
        return result

    def put_tunnel_zone_member(self, zone_id: str, host_id: str, ip_address: str) -> Obj:
        body = {"ip_address": ip_address}
        result: Obj = self.request("PUT", f"/v1/tunnel_zones/{zone_id}/members/{host_id}", body)
        return result

    def tunnel_zone_members(self, zone_id: str) -> list[Obj]:
        result: list[Obj] = self.request("GET", f"/v1/tunnel_zones/{zone_id}/members")
        return result

    def delete_tunnel_zone_member(self, zone_id: str, host_id: str) -> None:
        self.request("DELETE", f"/v1/tunnel_zones/{zone_id}/members/{host_id}")

    def pool_stats(self, pool_id: str) -> Obj:
        result: Obj = self.request("GET", f"/v1/pools/{pool_id}/stats")
        return result

    def mac_table(self, bridge_id: str) -> list[Obj]:
        result: list[Obj] = self.request("GET", f"/v1/bridges/{bridge_id}/mac_table")
        return result

    def arp_table(self, router_id: str) -> list[Obj]:
        result: list[Obj] = self.request("GET", f"/v1/routers/{router_id}/arp_table")
        return result

    def trace(self, ingress_port_id: str, packet: Obj) -> Obj:
        body = {"ingress_port_id": ingress_port_id, "packet": packet}
        result: Obj = self.request("POST", "/v1/traces", body)
        return result

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
