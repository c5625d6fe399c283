"""Run the comparison: open each system (skipping, with the reason, any that
is missing), then each workload against every system in turn, so that all
systems see the machine in the same state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from logq.bench.broker_bench import running_server
from logq.bench.compare.machine import machine
from logq.bench.compare.report import SYSTEMS, Report
from logq.bench.compare.system import PeerUnavailableError, System
from logq.bench.compare.systems.logq_system import LogqSystem
from logq.bench.compare.systems.nats_system import DEFAULT_URL as NATS_URL
from logq.bench.compare.systems.nats_system import NatsSystem
from logq.bench.compare.systems.postgresql_system import DEFAULT_DSN, PostgresSystem
from logq.bench.compare.systems.rabbitmq_system import DEFAULT_URL as RABBITMQ_URL
from logq.bench.compare.systems.rabbitmq_system import RabbitSystem
from logq.bench.compare.systems.redis_system import DEFAULT_URL as REDIS_URL
from logq.bench.compare.systems.redis_system import RedisSystem
from logq.bench.compare.workloads import WORKLOADS, CompareSettings, Result


@dataclass(frozen=True, slots=True)
class PeerAddresses:
    postgresql: str = DEFAULT_DSN
    redis: str = REDIS_URL
    nats: str = NATS_URL
    rabbitmq: str = RABBITMQ_URL


def _peer(name: str, addresses: PeerAddresses) -> System:
    if name == "postgresql":
        return PostgresSystem(addresses.postgresql)
    if name == "redis":
        return RedisSystem(addresses.redis)
    if name == "nats":
        return NatsSystem(addresses.nats)
    return RabbitSystem(addresses.rabbitmq)


async def _open(system: System) -> str | None:
    """None when open, else why it is skipped."""
    try:
        await asyncio.wait_for(system.open(), 60)
    except PeerUnavailableError as error:
        return str(error)
    except TimeoutError:
        return "no answer within 60 s"
    return None


async def compare(
    systems: Sequence[System],
    workloads: Sequence[str],
    settings: CompareSettings,
    report: Report,
    progress: Callable[[str], None],
) -> None:
    available = []
    for system in systems:
        why = await _open(system)
        if why is None:
            available.append(system)
        else:
            report.skipped[system.name] = why
            progress(f"skipping {system.name}: {why} (bench/peers.sh starts the peers)")
    limit = settings.seconds * 8 + 120
    try:
        for workload in workloads:
            for system in available:
                progress(f"{workload}: {system.name}")
                try:
                    found = await asyncio.wait_for(
                        WORKLOADS[workload](system, settings, workload), limit
                    )
                except Exception as error:  # one failure must not hide the others' figures
                    note = f"failed: {type(error).__name__}: {error}"[:300]
                    progress(f"{workload}: {system.name} {note}")
                    found = [
                        Result(system.name, workload, None, settings=system.settings, note=note)
                    ]
                report.results += found
    finally:
        for system in available:
            with contextlib.suppress(Exception):
                await system.close()


def run_compare(
    names: Sequence[str],
    workloads: Sequence[str],
    settings: CompareSettings,
    *,
    server: str | None = None,
    addresses: PeerAddresses | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> Report:
    """Compare `names` (of SYSTEMS) on `workloads`; logq is started here on
    free ports (fsync always) unless `server` gives a running one."""
    report = Report(machine=machine())
    peers = [_peer(n, addresses or PeerAddresses()) for n in names if n != "logq" and n in SYSTEMS]
    with contextlib.ExitStack() as stack:
        systems: list[System] = []
        if "logq" in names:
            running = stack.enter_context(running_server(server))
            systems.append(LogqSystem(running.address, running.http))
        systems += peers

        _run(compare(systems, workloads, settings, report, progress))
    return report


def _run(main: Coroutine[Any, Any, None]) -> None:
    """On uvloop where it exists, as `logq serve` runs."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
