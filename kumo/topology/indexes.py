"""Which fields of each kind the stores index, so that no write has to read every object of a kind.

Indexed: every reference (a delete finds what refers to its object by looking its id up, whatever the number
of objects) and the common filters of the API's collections (`device_id`, `host_id`, `tenant_id`, `name`).
The stores keep the index in the same transaction as the objects. It is a hint that is always verified:
readers re-check the field's value on the object they read, so an entry left behind can never mislead.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kumo.topology.resources import SPECS

FILTER_FIELDS = ("device_id", "host_id", "tenant_id", "name")


def _indexed_fields(kind: str) -> tuple[str, ...]:
    spec = SPECS[kind]
    fields = [r.field for r in spec.refs] + [f for f in FILTER_FIELDS if f in spec.model.model_fields]
    return tuple(dict.fromkeys(fields))


INDEXED: dict[str, tuple[str, ...]] = {kind: _indexed_fields(kind) for kind in SPECS}

# Changes whenever the indexed fields do: a store whose index was built for other fields rebuilds it.
INDEX_VERSION = hashlib.sha256(json.dumps(INDEXED, sort_keys=True).encode()).hexdigest()[:16]


def index_entries(kind: str, value: dict[str, Any] | None) -> set[tuple[str, str]]:
    """The (field, value) pairs under which an object is indexed; a list field gives one pair per element."""
    if value is None:
        return set()
    out: set[tuple[str, str]] = set()
    for fname in INDEXED.get(kind, ()):
        field_value = value.get(fname)
        items = field_value if isinstance(field_value, list) else [field_value]
        out.update((fname, str(item)) for item in items if isinstance(item, str | int) and not isinstance(item, bool))
    return out


def indexed(kind: str, fname: str) -> bool:
    return fname in INDEXED.get(kind, ())


def matches(value: dict[str, Any], equal: dict[str, Any]) -> bool:
    """Whether an object has every given field value (for a list field: contains it)."""
    for fname, want in equal.items():
        have = value.get(fname)
        if have != want and not (isinstance(have, list) and want in have):
            return False
    return True
