"""Parsing CLI option values into API field values, driven by the model's field types.

Short forms for the structured fields: a port range is `80` or `80-90`; a NAT target is
`ADDR[-ADDR][:PORT[-PORT]]`; a DHCP route is `DEST,GATEWAY`; a DHCP option is `CODE=VALUE`.
JSON is accepted for any structured field.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

import click
from pydantic import BaseModel

from kumo.topology.fields import PortRange
from kumo.topology.models import DhcpOption, DhcpRoute, NatTarget

NONE_WORDS = ("none", "null")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the bare type, whether None is allowed)."""
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            nullable = nullable or len(args) < len(typing.get_args(annotation))
            annotation = args[0]
        else:
            return annotation, nullable


def field_shape(annotation: Any) -> tuple[str, Any, bool]:
    """(shape, item type, nullable); shape is bool|int|str|choice|list|model|json."""
    bare, nullable = _unwrap(annotation)
    origin = typing.get_origin(bare)
    if bare is bool:
        return "bool", bool, nullable
    if bare is int:
        return "int", int, nullable
    if origin is Literal:
        return "choice", typing.get_args(bare), nullable
    if origin is list:
        item, _ = _unwrap(typing.get_args(bare)[0])
        return "list", item, nullable
    if isinstance(bare, type) and issubclass(bare, BaseModel):
        return "model", bare, nullable
    if bare is str:
        return "str", str, nullable
    return "json", bare, nullable


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise click.BadParameter(f"{text!r} is not a boolean; use true or false")


def _range(text: str) -> dict[str, int]:
    start, _, end = text.partition("-")
    try:
        return {"start": int(start), "end": int(end or start)}
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a port range; use 80 or 80-90") from None


def _nat_target(text: str) -> dict[str, Any]:
    addresses, _, ports = text.partition(":")
    first, _, last = addresses.partition("-")
    target: dict[str, Any] = {
        "address_from": first,
        "address_to": last or first,
        "port_from": 0,
        "port_to": 0,
    }
    if ports:
        port_range = _range(ports)
        target["port_from"], target["port_to"] = port_range["start"], port_range["end"]
    return target


def _dhcp_route(text: str) -> dict[str, str]:
    destination, sep, gateway = text.partition(",")
    if not sep:
        raise click.BadParameter(f"{text!r}: use DESTINATION,GATEWAY (for example 10.9.0.0/16,10.0.1.1)")
    return {"destination": destination, "gateway": gateway}


def _dhcp_option(text: str) -> dict[str, Any]:
    code, sep, value = text.partition("=")
    if not sep or not code.isdigit():
        raise click.BadParameter(f"{text!r}: use CODE=VALUE (for example 42=10.0.0.1)")
    return {"code": int(code), "value": value}


_SHORT_FORMS: dict[type, Callable[[str], dict[str, Any]]] = {
    PortRange: _range,
    NatTarget: _nat_target,
    DhcpRoute: _dhcp_route,
    DhcpOption: _dhcp_option,
}


def parse_structured(model: type, text: str) -> Any:
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"invalid JSON: {exc}") from None
    short = _SHORT_FORMS.get(model)
    if short is None:
        raise click.BadParameter("give this value as JSON")
    return short(text)


def parse_scalar(shape: str, item: Any, text: str) -> Any:
    if shape == "bool":
        return parse_bool(text)
    if shape == "int":
        try:
            return int(text, 0)
        except ValueError:
            raise click.BadParameter(f"{text!r} is not an integer") from None
    if shape == "choice" and text not in item:
        raise click.BadParameter(f"{text!r} is not one of {', '.join(map(str, item))}")
    if shape == "model":
        return parse_structured(item, text)
    if shape == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"invalid JSON: {exc}") from None
    return text
