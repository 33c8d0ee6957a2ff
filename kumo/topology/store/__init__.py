"""Where the topology lives: one Store interface, an embedded SQLite backend and a ZooKeeper backend."""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from kumo.topology.errors import InvalidInput
from kumo.topology.store.base import Change, Session, StateChange, Store, Watch

__all__ = ["Change", "Session", "StateChange", "Store", "Watch", "open_store"]


def open_store(url: str, call_timeout: float | None = None) -> Store:
    """`sqlite:///path/kumo.db` or `zookeeper://host:port[,host:port...]/chroot`; `call_timeout` bounds each
    call to ZooKeeper (default: its session timeout, 10 s)."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        from kumo.topology.store.sqlite import SqliteStore

        path = url[len("sqlite://") :]
        if not path or path == "/":
            raise InvalidInput(f"store URL {url!r} names no file; use sqlite:///var/lib/kumo/kumo.db")
        return SqliteStore(path)
    if parsed.scheme == "zookeeper":
        from kumo.topology.store.zookeeper import ZookeeperStore

        userinfo, _, hosts = parsed.netloc.rpartition("@")
        if not hosts:
            raise InvalidInput("the store URL names no server; use zookeeper://[user:password@]127.0.0.1:2181/kumo")
        credentials = None
        if userinfo:
            user, sep, password = userinfo.partition(":")
            if not (user and sep and password):
                raise InvalidInput("the store URL's credentials: use zookeeper://user:password@host:port/chroot")
            credentials = (unquote(user), unquote(password))
        return ZookeeperStore(hosts, parsed.path or "/kumo", call_timeout=call_timeout, credentials=credentials)
    raise InvalidInput(
        f"unknown store URL scheme {parsed.scheme!r}: use sqlite:///path/kumo.db or "
        "zookeeper://[user:password@]host:port[,host:port]/chroot"
    )
