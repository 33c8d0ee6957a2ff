"""Field types shared by the models: ids, IPv4 addresses and prefixes, MACs, port ranges.

Values are kept as the strings the REST API shows (API.md: "IPs and CIDRs are strings"), normalised
once here so that every later comparison is a string comparison. Error messages say how to fix the input.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

# Ids are UUIDs when the server assigns them; operators and agents may choose readable ones
# (`kumo agent --host-id host-1`), so any short token of safe characters is accepted.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Name = Annotated[str, StringConstraints(max_length=255)]

_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address (for example 10.0.1.5)") from None


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except ipaddress.NetmaskValueError:
        raise ValueError(f"{value!r} has an invalid prefix length (0-32)") from None
    except ValueError as exc:
        if "host bits set" in str(exc):
            net = ipaddress.IPv4Network(value, strict=False)
            raise ValueError(f"{value!r} has host bits set; did you mean {net}?") from None
        raise ValueError(f"{value!r} is not an IPv4 CIDR (for example 10.0.1.0/24)") from None


def _mac(value: str) -> str:
    lowered = value.lower()
    if not _MAC_RE.match(lowered):
        raise ValueError(f"{value!r} is not a MAC address (for example aa:bb:cc:dd:ee:ff)")
    return lowered.replace("-", ":")


IPv4 = Annotated[str, AfterValidator(_ipv4)]
CIDR = Annotated[str, AfterValidator(_cidr)]
MAC = Annotated[str, AfterValidator(_mac)]
L4Port = Annotated[int, Field(ge=0, le=65535)]
VlanId = Annotated[int, Field(ge=1, le=4094)]
TunnelKey = Annotated[int, Field(ge=1, le=(1 << 24) - 1)]  # VXLAN VNI is 24 bits (RFC 7348 §5)
Asn = Annotated[int, Field(ge=1, le=4294967295)]  # 4-octet AS numbers (RFC 6793)
# Linux IFNAMSIZ is 16 including the NUL; '/' and whitespace are not allowed in interface names.
InterfaceName = Annotated[str, StringConstraints(pattern=r"^[^/\s:]{1,15}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PortRange(Strict):
    """An inclusive L4 port range; for ICMP conditions, type/code."""

    start: L4Port
    end: L4Port

    @model_validator(mode="after")
    def _ordered(self) -> PortRange:
        if self.start > self.end:
            raise ValueError(f"start {self.start} is above end {self.end}")
        return self


def ip_in(address: str, cidr: str) -> bool:
    return ipaddress.IPv4Address(address) in ipaddress.IPv4Network(cidr)


def is_multicast_mac(mac: str) -> bool:
    return bool(int(mac[:2], 16) & 1)
