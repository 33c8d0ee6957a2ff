"""Simulated hosts for bench/scale_bench.py: hundreds of lightweight agents in one process.

Each simulated host does to ZooKeeper what an agent does, and nothing with packets:
- its own ZooKeeper session, alive as an ephemeral entry of the live-hosts table (the agent's owner session),
  and its host object (written once per host, through the store, as `register_host` does);
- it follows the change log exactly as an agent's follower does (kumo/topology/store/zklog.py): read the
  next entry together with an `exists` watch on the one after, wait for the watch, read on; it folds every
  change into a TopologyCache, the agent's copy of the topology;
- it watches which hosts are alive (one children watch, as `state_watch_keys`).
It does not read the whole topology at start (the real agents do; the bench measures that) and does not
compile snapshots. The sessions are aiozk's (asyncio: one thread for all), not kazoo's (three threads per
session): with kazoo, 1,000 sessions on this machine's 2 vCPUs spent ~2.4 ms of CPU per host and change in
thread hand-offs alone, which would have measured the simulation rather than Kumo.

Protocol: `--first N --count M`; prints `{"ready": M}` once every host is registered and following, then one
line `{"host": ID, "name": "probe-K", "at": WALL_TIME}` per host when it has folded in a change of a rule to
tp_dst 20000+K; stops when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from aiozk import ZKClient, exc
from aiozk.protocol import WatchEvent

from kumo.agent.topology import TopologyCache
from kumo.topology.state import HOSTS_ALIVE
from kumo.topology.store.base import Change, Create
from kumo.topology.store.zklog import SAFETY_POLL, entry_name
from kumo.topology.store.zookeeper import ZookeeperStore

PROBE_PORTS = 20000  # a rule changed to tp_dst 20000+K is the bench's change K


def say(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class SimulatedHost:
    def __init__(self, zk_hosts: str, chroot: str, host_id: str, alive_path: str) -> None:
        self.host_id = host_id
        self.client = ZKClient(zk_hosts, chroot=chroot, session_timeout=10)
        self.alive_path = alive_path
        self.cache = TopologyCache()
        self.alive: set[str] = set()
        self.errors = 0
        self.seq = 0  # the next change-log entry to read

    async def start(self) -> int:
        await self.client.start()
        await self.client.create(self.alive_path, json.dumps({"since": time.time()}).encode(), ephemeral=True)
        names = await self.client.get_children("log")
        return max(int(n[2:]) for n in names) + 1 if names else 0

    async def follow(self, seq: int) -> None:
        """kumo/topology/store/zklog.py's LogFollower, on asyncio: up to date, read the new entry with an
        `exists` watch on the next; behind, read batches without watches; watch where the reads ended.
        Like the agent's, it rides through errors (a request that timed out on an overloaded machine)."""
        self.seq = seq
        while True:
            try:
                await self._follow_from(self.seq)
            except (exc.ZKError, TimeoutError, ConnectionError) as error:
                self.errors += 1
                print(f"{self.host_id}: {error!r}; following again from {self.seq}", file=sys.stderr)
                await asyncio.sleep(0.5)

    async def _follow_from(self, seq: int) -> None:
        batch = 2
        while True:
            paths = [f"log/{entry_name(seq + i)}" for i in range(batch)]
            after = f"log/{entry_name(seq + 1)}"
            created = self.client.wait_for_events([WatchEvent.CREATED], after) if batch == 1 else None
            asks: list[Any] = [self.client.get_data(p) for p in paths]
            if batch == 1:
                asks.append(self.client.exists(after, watch=True))
            answers = await asyncio.gather(*asks, return_exceptions=True)
            got = 0
            for answer in answers[:batch]:
                if isinstance(answer, exc.NoNode):
                    break
                if isinstance(answer, BaseException):
                    raise answer
                self._apply(seq + got, answer)
                got += 1
            seq += got
            self.seq = seq
            next_exists = batch == 1 and answers[-1] is True
            if got == batch and (batch > 1 or next_exists):
                batch = min(64, batch * 2)
                continue
            if got == batch and created is not None:
                batch = 1
                await self._wait(created)
                continue
            batch = 1
            missing = f"log/{entry_name(seq)}"
            created = self.client.wait_for_events([WatchEvent.CREATED], missing)
            if not await self.client.exists(missing, watch=True):
                await self._wait(created)

    async def _wait(self, created: asyncio.Future[None]) -> None:
        with contextlib.suppress(TimeoutError):  # a watch lost with a connection: look again
            await asyncio.wait_for(created, SAFETY_POLL)

    def _apply(self, seq: int, data: bytes) -> None:
        for c in json.loads(data.decode())["changes"]:
            change = Change(c["op"], c["kind"], c["id"], c["old"], c["new"], seq)
            self.cache.apply(change)
            tp_dst = (change.new or {}).get("tp_dst") or {}
            if change.kind == "rules" and tp_dst.get("start", 0) >= PROBE_PORTS:
                say({"host": self.host_id, "name": f"probe-{tp_dst['start'] - PROBE_PORTS}", "at": time.time()})

    async def watch_alive(self, table_path: str) -> None:
        while True:
            changed = self.client.wait_for_events([WatchEvent.CHILDREN_CHANGED], table_path)
            try:
                self.alive = set(await self.client.get_children(table_path, watch=True))
            except (exc.ZKError, TimeoutError, ConnectionError) as error:
                self.errors += 1
                print(f"{self.host_id}: {error!r}; watching the live hosts again", file=sys.stderr)
                await asyncio.sleep(0.5)
                continue
            await self._wait(changed)


async def run(args: argparse.Namespace) -> None:
    store = ZookeeperStore(args.zookeeper, args.chroot)  # writes the host objects, as agents register
    hosts: list[SimulatedHost] = []
    try:
        ids = [f"sim-{n:04d}" for n in range(args.first, args.first + args.count)]
        store.transaction(
            [
                Create("hosts", h, {"id": h, "name": None, "addresses": [], "interfaces": [], "alive": False})
                for h in ids
            ]
        )
        table = store.state_path(HOSTS_ALIVE).removeprefix(store.root)
        store.io.ensure_path(store.state_path(HOSTS_ALIVE))
        hosts = [
            SimulatedHost(args.zookeeper, args.chroot, h, store.state_path(HOSTS_ALIVE, h).removeprefix(store.root))
            for h in ids
        ]
        tasks = []
        for chunk in range(0, len(hosts), 50):
            starts = await asyncio.gather(*(h.start() for h in hosts[chunk : chunk + 50]))
            for host, seq in zip(hosts[chunk : chunk + 50], starts, strict=True):
                tasks += [asyncio.create_task(host.follow(seq)), asyncio.create_task(host.watch_alive(table))]
        say({"ready": len(hosts)})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes it
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        print(f"errors ridden through: {sum(h.errors for h in hosts)}", file=sys.stderr)
    finally:
        for host in hosts:
            try:
                await host.client.close()
            except Exception as error:  # a bench that stops must stop every host it can
                print(f"closing {host.host_id}: {error}", file=sys.stderr)
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zookeeper", required=True)
    parser.add_argument("--chroot", required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
