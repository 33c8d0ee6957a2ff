"""The edge's state tables follow what the sessions hold, by differences (kumo.edge.mirror)."""

from __future__ import annotations

from pathlib import Path

from kumo.edge.mirror import StoreMirror
from kumo.topology.store.sqlite import SqliteStore


class Counting(SqliteStore):
    writes = 0

    def state_put(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.writes += 1
        super().state_put(*args, **kwargs)


def test_only_differences_are_written_and_a_new_session_gets_everything(tmp_path: Path) -> None:
    store = Counting(tmp_path / "kumo.db")
    try:
        mirror = StoreMirror(store)
        session = store.open_session()
        mirror.sync(session, {"t": {"a": {"v": 1}, "b": {"v": 2}}})
        mirror.sync(session, {"t": {"a": {"v": 1}, "b": {"v": 3}}})  # one changed
        assert store.writes == 3 and store.state_list("t") == {"a": {"v": 1}, "b": {"v": 3}}
        mirror.sync(session, {"t": {"b": {"v": 3}}})
        assert store.state_list("t") == {"b": {"v": 3}} and store.writes == 3
        session.close()  # its entries go with it
        assert store.state_list("t") == {}
        again = store.open_session()
        mirror.sync(again, {"t": {"b": {"v": 3}}})
        assert store.state_list("t") == {"b": {"v": 3}}
        again.close()
    finally:
        store.close()
