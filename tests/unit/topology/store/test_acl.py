"""ZooKeeper digest ACLs (zookeeper://user:password@host/chroot): Kumo's znodes are readable and writable with
those credentials only, against a real ZooKeeper."""

from __future__ import annotations

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from kumo.testing.zookeeper import ZooKeeperServer
from kumo.topology.errors import StoreForbidden
from kumo.topology.service import Topology
from kumo.topology.store import open_store
from kumo.topology.store.zookeeper import new_chroot


def test_kumos_znodes_answer_only_to_its_credentials(zookeeper: ZooKeeperServer) -> None:
    chroot = new_chroot()
    with open_store(f"zookeeper://kumo:s3cret@{zookeeper.hosts}{chroot}") as store:
        bridge = Topology(store).create("bridges", {"name": "b"})
        store.state_put("mac_table", "k", {"port_id": "p"})
        with open_store(f"zookeeper://kumo:s3cret@{zookeeper.hosts}{chroot}") as again:  # the same credentials
            assert Topology(again).get("bridges", bridge["id"])["name"] == "b"
        for auth in ([], [("digest", "kumo:wrong")], [("digest", "other:s3cret")]):
            refused_everything(KazooClient(hosts=zookeeper.hosts, auth_data=auth), chroot, bridge["id"])
        wrong_url = f"zookeeper://kumo:wrong@{zookeeper.hosts}{chroot}"
        with pytest.raises(StoreForbidden, match="user and password"), open_store(wrong_url) as wrong:
            wrong.list("bridges")


def refused_everything(client: KazooClient, chroot: str, bridge_id: str) -> None:
    client.start(timeout=10)
    try:
        with pytest.raises(NoAuthError):
            client.get(f"{chroot}/objects/bridges/{bridge_id}")
        with pytest.raises(NoAuthError):
            client.get_children(f"{chroot}/objects")
        with pytest.raises(NoAuthError):
            client.create(f"{chroot}/objects/planted", b"x")
        with pytest.raises(NoAuthError):
            client.delete(f"{chroot}/objects/bridges/{bridge_id}")
    finally:
        client.stop()
        client.close()
