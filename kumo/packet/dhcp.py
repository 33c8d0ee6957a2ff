"""DHCP (RFC 2131) over BOOTP (RFC 951), options as in RFC 2132; classless routes (option 121) per RFC 3442."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from kumo.packet import PacketError, bytes_to_mac, mac_to_bytes

HEADER = struct.Struct("!BBBBIHHIIII16s64s128s")  # op .. file (RFC 2131 §2, figure 1)
MAGIC = b"\x63\x82\x53\x63"  # RFC 2131 §3
SERVER_PORT, CLIENT_PORT = 67, 68
BOOTREQUEST, BOOTREPLY = 1, 2
# message types (option 53)
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
OPT_PAD, OPT_END = 0, 255
OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS, OPT_HOSTNAME, OPT_MTU, OPT_BROADCAST = 1, 3, 6, 12, 26, 28
OPT_REQUESTED_IP, OPT_LEASE_TIME, OPT_MESSAGE_TYPE, OPT_SERVER_ID = 50, 51, 53, 54
OPT_CLASSLESS_ROUTES = 121
FLAG_BROADCAST = 0x8000


@dataclass(slots=True)
class Dhcp:
    op: int
    xid: int
    chaddr: str
    ciaddr: int = 0
    yiaddr: int = 0
    siaddr: int = 0
    giaddr: int = 0
    flags: int = 0
    secs: int = 0
    hops: int = 0
    options: list[tuple[int, bytes]] = field(default_factory=list)

    def option(self, code: int) -> bytes | None:
        return next((value for c, value in self.options if c == code), None)

    @property
    def message_type(self) -> int | None:
        value = self.option(OPT_MESSAGE_TYPE)
        return value[0] if value else None

    @classmethod
    def parse(cls, data: bytes) -> Dhcp:
        if len(data) < HEADER.size + len(MAGIC):
            raise PacketError("dhcp_truncated", f"{len(data)} bytes")
        (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, _sname, _file) = (
            HEADER.unpack_from(data)
        )
        if htype != 1 or hlen != 6:
            raise PacketError("dhcp_not_ethernet")
        if data[HEADER.size : HEADER.size + 4] != MAGIC:
            raise PacketError("dhcp_no_magic_cookie")
        options: list[tuple[int, bytes]] = []
        i = HEADER.size + 4
        while i < len(data):
            code = data[i]
            if code == OPT_END:
                break
            if code == OPT_PAD:
                i += 1
                continue
            if i + 1 >= len(data) or i + 2 + data[i + 1] > len(data):
                raise PacketError("dhcp_bad_option", f"option {code} runs past the end")
            length = data[i + 1]
            options.append((code, bytes(data[i + 2 : i + 2 + length])))
            i += 2 + length
        return cls(op, xid, bytes_to_mac(chaddr[:6]), ciaddr, yiaddr, siaddr, giaddr, flags, secs, hops, options)

    def build(self) -> bytes:
        head = HEADER.pack(
            self.op,
            1,
            6,
            self.hops,
            self.xid,
            self.secs,
            self.flags,
            self.ciaddr,
            self.yiaddr,
            self.siaddr,
            self.giaddr,
            mac_to_bytes(self.chaddr) + bytes(10),
            bytes(64),
            bytes(128),
        )
        body = bytearray(MAGIC)
        for code, value in self.options:
            for start in range(0, max(len(value), 1), 255):  # RFC 3396: long options are split
                chunk = value[start : start + 255]
                body += bytes([code, len(chunk)]) + chunk
        body.append(OPT_END)
        raw = head + bytes(body)
        return raw + bytes(max(0, 300 - len(raw)))  # RFC 951 minimum BOOTP message


def classless_routes(routes: list[tuple[int, int, int]]) -> bytes:
    """Option 121 (RFC 3442 §3): each (network, prefix length, gateway) as width, significant octets, router."""
    out = bytearray()
    for network, prefix, gateway in routes:
        octets = (prefix + 7) // 8
        out.append(prefix)
        out += network.to_bytes(4, "big")[:octets]
        out += gateway.to_bytes(4, "big")
    return bytes(out)
