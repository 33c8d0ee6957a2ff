"""Calls to ZooKeeper that never hang: kazoo's synchronous calls wait forever while ZooKeeper is away."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient, TransactionRequest
from kazoo.exceptions import ConnectionClosedError, ConnectionLoss, NoAuthError, NodeExistsError, SessionExpiredError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry
from kazoo.security import make_digest_acl

from kumo.topology.errors import StoreForbidden, StoreUnavailable

# kazoo's default reconnect backoff grows to a minute; a store must be back within a second of ZooKeeper.
_RECONNECT = {"max_tries": -1, "delay": 0.1, "backoff": 1.5, "max_delay": 1.0}
_UNAVAILABLE = (KazooTimeoutError, ConnectionLoss, SessionExpiredError, ConnectionClosedError)


def new_client(hosts: str, timeout: float, credentials: tuple[str, str] | None = None) -> KazooClient:
    """A client; with (user, password) `credentials`, authenticated by ZooKeeper's digest scheme, and every znode
    it creates readable and writable by that user only (a digest ACL)."""
    if credentials is None:
        return KazooClient(hosts=hosts, timeout=timeout, connection_retry=KazooRetry(**_RECONNECT))
    user, password = credentials
    return KazooClient(
        hosts=hosts,
        timeout=timeout,
        connection_retry=KazooRetry(**_RECONNECT),
        auth_data=[("digest", f"{user}:{password}")],
        default_acl=[make_digest_acl(user, password, all=True)],
    )


class Bounded:
    """kazoo's synchronous calls wait forever while ZooKeeper is away; these fail fast instead
    (StoreUnavailable, a 503 at the API), so that no caller hangs on an outage."""

    def __init__(self, client: KazooClient, hosts: str, timeout: float) -> None:
        self.client = client
        self.hosts = hosts
        self.timeout = timeout

    def call(self, start: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Issue one request and wait for it, boundedly. Refused before sending while disconnected (so a
        refused write is never applied later); a request that goes unanswered has an unknown outcome."""
        if self.client.state != KazooState.CONNECTED:
            raise StoreUnavailable(f"ZooKeeper at {self.hosts} is unreachable; retry when it is back")
        return self.wait(start(*args, **kwargs))

    def wait(self, result: Any) -> Any:
        try:
            return result.get(timeout=self.timeout)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"ZooKeeper at {self.hosts} did not answer ({type(exc).__name__}); a write may or may not "
                "have been applied: re-read before retrying"
            ) from None
        except NoAuthError:
            raise StoreForbidden(
                f"ZooKeeper at {self.hosts} refused access to Kumo's znodes: give the user and password they were "
                "made with (zookeeper://user:password@host:port/chroot, or KUMO_STORE)"
            ) from None

    def get(self, path: str, watch: Any = None) -> Any:
        return self.call(self.client.get_async, path, watch=watch)

    def get_children(self, path: str, watch: Any = None) -> list[str]:
        return list(self.call(self.client.get_children_async, path, watch=watch))

    def create(self, path: str, value: bytes = b"", ephemeral: bool = False) -> str:
        return str(self.call(self.client.create_async, path, value, ephemeral=ephemeral))

    def set(self, path: str, value: bytes, version: int = -1) -> Any:
        return self.call(self.client.set_async, path, value, version=version)

    def put(self, path: str, value: bytes) -> None:
        """Create the node with this value, or set it if it exists."""
        try:
            self.create(path, value)
        except NodeExistsError:
            self.set(path, value)

    def delete(self, path: str) -> None:
        self.call(self.client.delete_async, path)

    def ensure_path(self, path: str) -> None:
        self.call(self.client.ensure_path_async, path)

    def commit(self, txn: TransactionRequest) -> list[Any]:
        return list(self.call(txn.commit_async))
