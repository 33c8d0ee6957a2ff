"""Frame generators run inside a VM namespace (AF_PACKET on eth0), bounded in count and time.

`python -m kumo.testing.frames fuzz SRC_MAC DST_MAC COUNT SEED`: random and mutated frames (truncated
headers, bad IHL, bogus lengths, odd fragments).
`python -m kumo.testing.frames storm SRC_MAC DST_MAC SRC_IP DST_IP SECONDS COUNT RATE INTERFACE`: UDP
packets, each a new 5-tuple, as fast as one process can send them (or paced at RATE per second; 0: unpaced),
at most COUNT, out of INTERFACE (eth0; the bench's control sends the same frames where they are dropped at once).
`storm_command` writes it."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import sys
import time

from kumo.packet import ip_to_int
from kumo.packet.arp import REQUEST, Arp
from kumo.packet.ethernet import ETH_P_ARP, ETH_P_IP, Ethernet
from kumo.packet.icmp import Icmp
from kumo.packet.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, IPv4
from kumo.packet.tcp import Tcp
from kumo.packet.udp import Udp


def valid_frames(src_mac: str, dst_mac: str) -> list[bytes]:
    s, d = ip_to_int("10.0.1.11"), ip_to_int("10.0.1.12")
    return [
        Ethernet(dst_mac, src_mac, ETH_P_IP, IPv4(s, d, PROTO_TCP, Tcp(1000, 80).build(s, d)).build()).build(),
        Ethernet(
            dst_mac, src_mac, ETH_P_IP, IPv4(s, d, PROTO_UDP, Udp(1000, 53, b"q" * 20).build(s, d)).build()
        ).build(),
        Ethernet(
            dst_mac, src_mac, ETH_P_IP, IPv4(s, d, PROTO_ICMP, Icmp.echo(True, 9, 1, b"x").build()).build()
        ).build(),
        Ethernet(
            "ff:ff:ff:ff:ff:ff", src_mac, ETH_P_ARP, Arp(REQUEST, src_mac, s, "00:00:00:00:00:00", d).build()
        ).build(),
    ]


def mutate(frame: bytes, rng: random.Random) -> bytes:
    data = bytearray(frame)
    how = rng.randrange(6)
    if how == 0:  # truncated anywhere
        return bytes(data[: rng.randrange(1, len(data))])
    if how == 1 and len(data) > 14:  # bad IHL (and version)
        data[14] = rng.randrange(256)
    elif how == 2 and len(data) > 17:  # bogus total length
        data[16:18] = struct.pack("!H", rng.randrange(65536))
    elif how == 3 and len(data) > 21:  # odd fragments: MF and offsets
        data[20:22] = struct.pack("!H", rng.randrange(65536))
    elif how == 4:  # flipped bytes
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    else:  # garbage appended, or an odd ethertype
        data += bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        if len(data) > 13 and rng.random() < 0.3:
            data[12:14] = struct.pack("!H", rng.choice([0x8100, 0x86DD, 0x0000, 0xFFFF, 0x0806]))
    return bytes(data)


def fuzz(src_mac: str, dst_mac: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    base = valid_frames(src_mac, dst_mac)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind(("eth0", 0))
        for n in range(count):
            if n % 5 == 0:
                frame = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
            else:
                frame = mutate(rng.choice(base), rng)
            if len(frame) < 14:
                frame = frame + bytes(14 - len(frame))  # AF_PACKET wants a link-layer header
            with contextlib.suppress(OSError):  # the kernel refused this one (e.g. over the MTU)
                sock.send(frame)


def storm_command(
    src_mac: str,
    dst_mac: str,
    src: str,
    dst: str,
    seconds: float,
    count: int = 10**9,
    rate: int = 0,
    interface: str = "eth0",
) -> list[str]:
    """The command that runs `storm` (in a VM's namespace, through `Vm.popen`); rate 0: unpaced."""
    args = [src_mac, dst_mac, src, dst, str(seconds), str(count), str(rate), interface]
    return [sys.executable, "-m", "kumo.testing.frames", "storm", *args]


def storm(
    src_mac: str,
    dst_mac: str,
    src: str,
    dst: str,
    seconds: float,
    count: int = 10**9,
    rate: float = 0,
    interface: str = "eth0",
) -> None:
    s, d = ip_to_int(src), ip_to_int(dst)
    start = time.monotonic()
    deadline = start + seconds
    sent = 0
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((interface, 0))
        while time.monotonic() < deadline and sent < count:
            if rate:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
            for _ in range(min(100, count - sent)):
                sport = 1024 + sent % 60000
                dport = 1 + (sent // 60000) % 65000
                udp = Udp(sport, dport, b"s").build(s, d)
                sock.send(Ethernet(dst_mac, src_mac, ETH_P_IP, IPv4(s, d, PROTO_UDP, udp).build()).build())
                sent += 1
    print(sent)


if __name__ == "__main__":
    if sys.argv[1] == "fuzz":
        fuzz(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        count, rate = (int(a) for a in sys.argv[7:9])
        storm(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6]), count, rate, sys.argv[9])
