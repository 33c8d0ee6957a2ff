"""TCP forwarding from this machine's loopback into a network namespace (`kumo demo --keep`): a browser on the
machine reaches the demo's API and metrics, which listen on the loopback of the demo's host namespace.

Sockets belong to the namespace of the thread that creates them: the listening socket is made in the caller's
namespace, and each connection onward by a thread started inside the target namespace (a thread starts in its
creator's namespace)."""

from __future__ import annotations

import contextlib
import socket
import threading

from kumo.testing.netns import inside


def listen(port: int, address: str = "127.0.0.1") -> socket.socket:
    """A listening socket in the calling thread's namespace; OSError says why not (e.g. the port is taken)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind((address, port))
    except OSError:
        server.close()
        raise
    server.listen(16)
    return server


def forward(server: socket.socket, netns: str, port: int) -> None:
    """Serve `server`'s connections, each joined to 127.0.0.1:`port` inside `netns`, until `server` closes."""

    def accept_forever() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # (closed)
            try:
                onward = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                client.close()
                continue
            onward.settimeout(None)
            for a, b in ((client, onward), (onward, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def start_inside() -> None:
        with inside(netns):
            threading.Thread(target=accept_forever, name=f"kumo-forward-{port}", daemon=True).start()

    starter = threading.Thread(target=start_inside)
    starter.start()
    starter.join()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    source.close()
