"""One service call's writes, gathered and applied as one store transaction: creates, updates with a version
check (optimistic concurrency), deletes, existence checks of referenced objects, and claims (uniqueness of
tunnel keys, MACs, bindings: a claim is an object whose id is the claimed value, so two writers claiming the
same value cannot both commit)."""

from __future__ import annotations

from kumo.topology.errors import AlreadyExists, Conflict, NotFound
from kumo.topology.resources import CLAIMS_KIND
from kumo.topology.store.base import Check, Create, Delete, Obj, Op, Store, Update


class Tx:
    """Operations of one service call, applied in one store transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.creates: list[Create] = []
        self.updates: dict[tuple[str, str], tuple[Obj, int]] = {}
        self.deletes: list[Delete] = []
        self.checks: dict[tuple[str, str], Check] = {}
        self.claim_messages: dict[str, str] = {}

    def modify(self, kind: str, obj_id: str) -> Obj:
        """A working copy to change in place; written back with a version check."""
        if (kind, obj_id) not in self.updates:
            current = self.store.get_versioned(kind, obj_id)
            self.updates[(kind, obj_id)] = (dict(current.value), current.version)
        return self.updates[(kind, obj_id)][0]

    def check(self, kind: str, obj_id: str) -> None:
        self.checks.setdefault((kind, obj_id), Check(kind, obj_id))

    def claim(self, claims: dict[str, str]) -> None:
        for claim_id, message in claims.items():
            self.claim_messages[claim_id] = message
            self.creates.append(Create(CLAIMS_KIND, claim_id, {}))

    def release(self, claims: dict[str, str]) -> None:
        self.deletes.extend(Delete(CLAIMS_KIND, c) for c in claims)

    def commit(self) -> None:
        ops: list[Op] = [*self.creates]
        ops += [Update(k, i, v, ver) for (k, i), (v, ver) in self.updates.items()]
        ops += self.deletes
        ops += [c for key, c in self.checks.items() if key not in self.updates]
        try:
            self.store.transaction(ops)
        except AlreadyExists as exc:
            if exc.kind == CLAIMS_KIND and exc.obj_id in self.claim_messages:
                raise Conflict(self.claim_messages[exc.obj_id], code="in_use") from None
            raise
        except NotFound as exc:
            raise Conflict(f"a referenced object was deleted concurrently ({exc.message}); retry") from None
