"""What deleting an object does to everything that refers to it, as one transaction: references that
cascade delete their objects too (recursively), `restrict` refuses the delete (409), `nullify` clears them.

Referrers are found through the store's index (kumo/topology/indexes.py), so a delete costs the same at
20,000 ports as at 20: it reads the objects that refer to what goes, never every object of a kind.
"""

from __future__ import annotations

from kumo.topology.errors import Conflict
from kumo.topology.resources import SPECS, Ref, Spec, incoming_refs
from kumo.topology.store.base import Delete, Store, Versioned
from kumo.topology.transaction import Tx


def deletion(store: Store, spec: Spec, root: Versioned) -> Tx:
    """The transaction that deletes `root` (of `spec`'s kind) and applies every reference's on_delete."""
    # The closure of what goes: the object and everything that cascades from it.
    doomed: dict[tuple[str, str], Versioned] = {(spec.kind, root.value["id"]): root}
    queue = [(spec.kind, str(root.value["id"]))]
    while queue:
        kind, oid = queue.pop()
        for ref_spec, ref in incoming_refs(kind):
            if ref.on_delete != "cascade":
                continue
            for other_id, other in referrers(store, ref_spec, ref, oid).items():
                key = (ref_spec.kind, other_id)
                if key not in doomed:
                    doomed[key] = other
                    queue.append(key)

    tx = Tx(store)
    for kind, oid in doomed:
        for ref_spec, ref in incoming_refs(kind):
            if ref.on_delete == "cascade":
                continue
            for other_id in referrers(store, ref_spec, ref, oid):
                if (ref_spec.kind, other_id) in doomed:
                    continue
                if ref.on_delete == "restrict":
                    raise Conflict(
                        f"{SPECS[kind].singular} {oid} is still used as {ref.field} of "
                        f"{ref_spec.singular} {other_id}; remove that reference first",
                        code="in_use",
                    )
                _clear_ref(tx, ref_spec, other_id, ref, oid)
    for (kind, oid), versioned in doomed.items():
        tx.deletes.append(Delete(kind, oid, versioned.version))
        tx.release(SPECS[kind].claims(versioned.value))
        if kind == "rules" and ("chains", versioned.value["chain_id"]) not in doomed:
            chain = tx.modify("chains", versioned.value["chain_id"])
            chain["rule_ids"] = [r for r in chain["rule_ids"] if r != oid]
    return tx


def referrers(store: Store, spec: Spec, ref: Ref, target: str) -> dict[str, Versioned]:
    """The objects of a kind whose reference field holds `target` (a scan only on a store whose index is not
    built yet; the index is a hint, so each object's field is checked)."""
    ids = store.index_ids(spec.kind, ref.field, target)
    found = store.list_versioned(spec.kind) if ids is None else store.get_many(spec.kind, ids)
    return {i: v for i, v in found.items() if target in ref.values(v.value)}


def _clear_ref(tx: Tx, spec: Spec, obj_id: str, ref: Ref, target: str) -> None:
    obj = tx.modify(spec.kind, obj_id)
    obj[ref.field] = [v for v in obj[ref.field] if v != target] if ref.many else None
