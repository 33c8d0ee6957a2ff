"""The checks of one router's pool members: a thread of its own, moved into the router's checker namespace
(kumo.lb.namespace), running an asyncio loop with one task per member. A task checks its member every
`delay` seconds (the first check at a random point of the first delay, so that members are not all checked
at once) and reports each result; a check never outlasts its `timeout`, so a member's checks never pile up.
`configure` replaces the set of members checked: tasks of members gone or changed are cancelled."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kumo.lb import namespace
from kumo.lb.checks import Monitor, check

log = logging.getLogger("kumo.lb")


@dataclass(frozen=True)
class Target:
    member_id: str
    pool_id: str
    address: str
    port: int
    monitor: Monitor


Report = Callable[[Target, bool, str], None]


class RouterChecker:
    def __init__(self, router_id: str, namespace_name: str, report: Report) -> None:
        self.router_id = router_id
        self.namespace_name = namespace_name
        self.report = report
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._tasks: dict[str, tuple[Target, asyncio.Task[None]]] = {}
        self._thread = threading.Thread(target=self._run, name=f"kumo-lb-{router_id[:8]}", daemon=True)
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(timeout=10)
        if self.error is not None:
            raise namespace.NamespaceError(self.error)

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=5)

    def configure(self, targets: dict[str, Target]) -> None:
        """(Any thread) Check exactly these members from now on."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._apply, targets)

    def _run(self) -> None:
        try:
            namespace.enter(self.namespace_name)
            self._loop = asyncio.new_event_loop()
        except Exception as exc:  # said by start()
            self.error = str(exc)
            return
        finally:
            self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            for _, task in self._tasks.values():
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*(t for _, t in self._tasks.values()), return_exceptions=True))
            self._loop.close()

    def _apply(self, targets: dict[str, Target]) -> None:
        assert self._loop is not None
        for member_id, (target, task) in list(self._tasks.items()):
            if targets.get(member_id) != target:
                task.cancel()
                del self._tasks[member_id]
        for member_id, target in targets.items():
            if member_id not in self._tasks:
                self._tasks[member_id] = (target, self._loop.create_task(self._checks(target)))

    async def _checks(self, target: Target) -> None:
        delay = target.monitor.delay
        await asyncio.sleep(random.uniform(0, delay))
        while True:
            started = time.monotonic()
            healthy, detail = await check(target.monitor, target.address, target.port)
            try:
                self.report(target, healthy, detail)
            except Exception:  # (the manager's bug must not end this member's checks)
                log.exception("reporting a check of member %s", target.member_id)
            await asyncio.sleep(max(0.0, delay - (time.monotonic() - started)))
