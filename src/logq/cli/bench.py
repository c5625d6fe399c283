"""`logq bench ...`: run a benchmark and print a table, or one JSON object."""

from __future__ import annotations

import json
from collections.abc import Callable

import click
from rich.console import Console
from rich.table import Table

from logq.bench.abuse_bench import AbuseBenchSettings, run_abuse_bench
from logq.bench.archive_bench import ArchiveBenchResult, ArchiveBenchSettings, run_archive_bench
from logq.bench.broker_bench import BrokerBenchSettings, run_broker_bench
from logq.bench.delay_bench import DelayBenchSettings, run_delay_bench
from logq.bench.delay_distinct import DistinctResult, DistinctSettings, run_distinct_bench
from logq.bench.log_bench import LogBenchResult, LogBenchSettings, run_log_bench
from logq.bench.priority_bench import PriorityBenchSettings, run_priority_bench
from logq.bench.rebalance_bench import RebalanceBenchSettings, run_rebalance_bench
from logq.cli.bench_chaos import bench_chaos
from logq.cli.bench_compare import bench_compare
from logq.cli.bench_corrupt import bench_corrupt
from logq.cli.bench_dedup import bench_dedup_restart
from logq.cli.bench_fuzz import bench_fuzz
from logq.cli.bench_partitions import bench_partitions
from logq.cli.bench_powercut import bench_powercut
from logq.cli.common import at_least_one
from logq.log.config import FsyncPolicy

_MB = 1_000_000


@click.group()
def bench() -> None:
    """Measure logq on this machine."""


bench.add_command(bench_compare)
bench.add_command(bench_dedup_restart)
bench.add_command(bench_chaos)
bench.add_command(bench_corrupt)
bench.add_command(bench_fuzz)
bench.add_command(bench_partitions)
bench.add_command(bench_powercut)


@bench.command("archive")
@click.option("--messages", default=200_000, show_default=True, help="Messages per run.")
@click.option("--message-bytes", default=100, show_default=True, help="Size of each message.")
@click.option("--rounds", default=5, show_default=True, help="Alternations of archiving on/off.")
@click.option(
    "--local-bytes",
    default=1 << 20,
    show_default=True,
    help="What the archived partition keeps on its disk.",
)
@click.option("--segment-bytes", default=1 << 20, show_default=True, help="broker.segmentBytes.")
@click.option("--store", help="Archive to this store (s3://bucket/prefix, file:///dir), not moto.")
@click.option("--endpoint", help="--store s3://...: an S3-compatible server's address.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_archive(
    messages: int,
    message_bytes: int,
    rounds: int,
    local_bytes: int,
    segment_bytes: int,
    store: str | None,
    endpoint: str | None,
    as_json: bool,
) -> None:
    """Tiered storage: upload throughput, publishing with the archive on
    against off, a cold replay from the archive against one from local disk,
    the first message of a cold read, the cache's hit rate on a second pass."""
    at_least_one(
        ("--messages", messages),
        ("--rounds", rounds),
        ("--local-bytes", local_bytes),
    )
    if not 16 <= message_bytes <= 1 << 20:
        raise click.BadParameter("must be within 16..1048576", param_hint="--message-bytes")
    if not 16 << 10 <= segment_bytes <= 1 << 30:
        raise click.BadParameter("must be within 16 KiB..1 GiB", param_hint="--segment-bytes")
    settings = ArchiveBenchSettings(
        messages=messages,
        message_bytes=message_bytes,
        rounds=rounds,
        local_bytes=local_bytes,
        segment_bytes=segment_bytes,
        store=store,
        endpoint=endpoint,
    )
    console = Console(stderr=True)
    result = run_archive_bench(settings, lambda text: console.print(f"[dim]… {text}[/dim]"))
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        Console().print(_archive_table(result))


def _archive_table(result: ArchiveBenchResult) -> Table:
    table = Table(
        title=(
            f"logq bench archive: {result.messages:,} messages of {result.message_bytes} B,"
            f" {result.rounds} rounds, {result.store}"
        )
    )
    table.add_column("measure")
    table.add_column("figure", justify="right")
    table.add_row("publish, archive on", f"{result.publish_on_per_s:,.0f} msg/s")
    table.add_row("publish, archive off", f"{result.publish_off_per_s:,.0f} msg/s")
    table.add_row("publish ratio (on ÷ off)", f"{result.publish_ratio:.3f}")
    table.add_row("upload", f"{result.upload_mb_per_s:,.2f} MB/s")
    table.add_row("replay, local disk", f"{result.local_replay_s:.3f} s")
    table.add_row("replay, cold from the archive", f"{result.cold_replay_s:.3f} s")
    table.add_row("cold replay ratio (archive ÷ local)", f"{result.cold_replay_ratio:.3f}")
    table.add_row("first message of a cold read", f"{result.first_read_ms:.1f} ms")
    table.add_row("cache hit rate, second pass", f"{result.cache_hit_rate:.1%}")
    table.add_row("lost", f"{result.lost:,}")
    return table


@bench.command("log")
@click.option("--records", default=2_000_000, show_default=True, help="Records to append.")
@click.option("--batch-records", default=1000, show_default=True, help="Records per batch.")
@click.option("--record-bytes", default=100, show_default=True, help="Value size of each record.")
@click.option("--writers", default=8, show_default=True, help="Appending threads (group commit).")
@click.option(
    "--large-total-mb", default=512, show_default=True, help="MiB appended in ~1 MiB batches."
)
@click.option(
    "--raw-total-mb", default=256, show_default=True, help="MiB written for the raw disk figure."
)
@click.option(
    "--fsync",
    type=click.Choice([policy.value for policy in FsyncPolicy]),
    default=FsyncPolicy.ALWAYS.value,
    show_default=True,
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to write (default: a temporary folder under ./data).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_log(
    records: int,
    batch_records: int,
    record_bytes: int,
    writers: int,
    large_total_mb: int,
    raw_total_mb: int,
    fsync: str,
    directory: str | None,
    as_json: bool,
) -> None:
    """Append and read throughput of the storage engine, next to the raw disk."""
    at_least_one(
        ("--records", records),
        ("--batch-records", batch_records),
        ("--writers", writers),
        ("--large-total-mb", large_total_mb),
        ("--raw-total-mb", raw_total_mb),
    )
    if record_bytes < 0:
        raise click.BadParameter("must not be negative", param_hint="--record-bytes")
    settings = LogBenchSettings(
        records=records,
        batch_records=batch_records,
        record_bytes=record_bytes,
        writers=writers,
        large_total_bytes=large_total_mb * 1024 * 1024,
        raw_total_bytes=raw_total_mb * 1024 * 1024,
        fsync=fsync,
        directory=directory,
    )
    console = Console(stderr=True)
    result = run_log_bench(settings, progress=lambda text: console.print(f"[dim]… {text}[/dim]"))
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        Console().print(_log_table(result))


def _log_table(result: LogBenchResult) -> Table:
    table = Table(
        title=(
            f"logq bench log: {result.record_bytes} B records, batches of "
            f"{result.batch_records}, fsync {result.fsync}, {result.writers} writers"
        )
    )
    table.add_column("measure")
    table.add_column("figure", justify="right")
    table.add_row("append", f"{result.append_records_per_s:,.0f} records/s")
    table.add_row("append bandwidth", f"{result.append_bytes_per_s / _MB:,.1f} MB/s")
    table.add_row("fsyncs (group commit)", f"{result.append_fsyncs:,}")
    table.add_row("read (page cache)", f"{result.read_records_per_s:,.0f} records/s")
    table.add_row("decode (client side)", f"{result.decode_records_per_s:,.0f} records/s")
    table.add_row(
        f"append, {result.large_batch_bytes // 1024} KiB batches",
        f"{result.append_durable_bytes_per_s / _MB:,.1f} MB/s",
    )
    table.add_row(
        "raw write + fdatasync, 1 MiB", f"{result.raw_durable_bytes_per_s / _MB:,.1f} MB/s"
    )
    table.add_row("durable append / raw", f"{result.durable_ratio:.0%}")
    return table


def _broker_scenario(scenario: str, summary: str) -> click.Command:
    @click.command(scenario, help=summary)
    @click.option("--messages", default=1_000_000, show_default=True, help="Messages to move.")
    @click.option("--message-bytes", default=100, show_default=True)
    @click.option("--batch", default=1000, show_default=True, help="Messages per batch.")
    @click.option("--partitions", default=6, show_default=True)
    @click.option("--publishers", default=8, show_default=True, help="Concurrent producers.")
    @click.option("--consumers", default=8, show_default=True, help="shared: competing workers.")
    @click.option("--server", help="Use this running server (host:port) instead of starting one.")
    @click.option(
        "--trace/--no-trace", default=True, show_default=True, help="Trace message lifecycles."
    )
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @click.option(
        "--sync",
        is_flag=True,
        hidden=scenario != "consume",
        help="Through the blocking Client's plain `for msg in client.consume(...)` loop.",
    )
    def command(
        messages: int,
        message_bytes: int,
        batch: int,
        partitions: int,
        publishers: int,
        consumers: int,
        server: str | None,
        trace: bool,
        as_json: bool,
        sync: bool,
    ) -> None:
        if sync and scenario != "consume":
            raise click.UsageError("--sync is for `logq bench consume` only")
        at_least_one(
            ("--messages", messages),
            ("--batch", batch),
            ("--partitions", partitions),
            ("--publishers", publishers),
            ("--consumers", consumers),
        )
        settings = BrokerBenchSettings(
            messages=messages,
            message_bytes=message_bytes,
            batch=batch,
            partitions=partitions,
            publishers=publishers,
            consumers=consumers,
            server=server,
            trace=trace,
            sync=sync,
        )
        console = Console(stderr=True)
        result = run_broker_bench(
            scenario, settings, lambda text: console.print(f"[dim]… {text}[/dim]")
        )
        if as_json:
            click.echo(json.dumps(result.as_dict()))
            return
        table = Table(
            title=f"logq bench {scenario}: {result.message_bytes} B messages, batches of {result.batch}, "
            f"{result.partitions} partitions, fsync always, tracing {'on' if trace else 'off'}"
            + (", blocking Client" if sync else "")
        )
        table.add_column("measure")
        table.add_column("figure", justify="right")
        table.add_row("messages", f"{result.messages:,}")
        table.add_row("seconds", f"{result.seconds:,.2f}")
        table.add_row("throughput", f"{result.msgs_per_s:,.0f} msg/s")
        table.add_row("bandwidth", f"{result.mb_per_s:,.1f} MB/s")
        Console().print(table)

    return command


bench.add_command(
    _broker_scenario("produce", "Publish through the native protocol (durable acks).")
)
bench.add_command(
    _broker_scenario("consume", "Consume an ordered group by pushed deliveries, ack each.")
)
bench.add_command(_broker_scenario("shared", "Shared group: receive batches and ack each message."))


@bench.command("delay")
@click.option(
    "--messages", default=1_000_000, show_default=True, help="Delayed messages to schedule."
)
@click.option(
    "--batch", default=1000, show_default=True, help="Messages per batch (one due time each)."
)
@click.option("--partitions", default=6, show_default=True)
@click.option(
    "--spread",
    "spread_s",
    default=60.0,
    show_default=True,
    help="Seconds the due times spread over.",
)
@click.option(
    "--lead", "lead_s", default=10.0, show_default=True, help="Seconds before the first is due."
)
@click.option(
    "--distinct",
    is_flag=True,
    help="Every message its own due time, from 1 s to 7 days ahead, held by a shared group "
    "while a plain stream passes through it: throughput, RSS, restart after kill -9, "
    "lateness, for each count of --pending.",
)
@click.option(
    "--pending",
    default="10000,100000,1000000",
    show_default=True,
    help="With --distinct: comma-separated counts of delayed messages to hold pending.",
)
@click.option("--plain", default=2000, show_default=True, help="With --distinct: plain messages.")
@click.option("--server", help="Use this running server (host:port) instead of starting one.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_delay(
    messages: int,
    batch: int,
    partitions: int,
    spread_s: float,
    lead_s: float,
    distinct: bool,
    pending: str,
    plain: int,
    server: str | None,
    as_json: bool,
) -> None:
    """Schedule delayed messages: broker memory while they wait, lateness when due."""
    if distinct:
        _bench_distinct_pending(pending, plain, as_json)
        return
    at_least_one(("--messages", messages), ("--batch", batch), ("--partitions", partitions))
    if spread_s < 0 or lead_s < 0:
        raise click.BadParameter("must not be negative", param_hint="--spread/--lead")
    settings = DelayBenchSettings(
        messages=messages,
        batch=batch,
        partitions=partitions,
        spread_s=spread_s,
        lead_s=lead_s,
        server=server,
    )
    console = Console(stderr=True)
    result = run_delay_bench(settings, lambda text: console.print(f"[dim]… {text}[/dim]"))
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    table = Table(title=f"logq bench delay: {result.messages:,} messages due over {spread_s:.0f} s")
    table.add_column("measure")
    table.add_column("figure", justify="right")
    table.add_row("held back (pending delayed)", f"{result.pending_delayed:,}")
    rss = (
        "n/a (server not started here)"
        if result.rss_bytes is None
        else f"{result.rss_bytes / _MB:,.1f} MB"
    )
    table.add_row("broker RSS while they wait", rss)
    table.add_row("lateness p50", f"{result.lateness_ms_p50:,.1f} ms")
    table.add_row("lateness p99", f"{result.lateness_ms_p99:,.1f} ms")
    table.add_row("lateness max", f"{result.lateness_ms_max:,.1f} ms")
    table.add_row("delivered early", f"{result.early:,}")
    Console().print(table)


def _bench_distinct_pending(pending: str, plain: int, as_json: bool) -> None:
    try:
        sizes = tuple(int(part) for part in pending.split(","))
    except ValueError:
        raise click.BadParameter("comma-separated counts", param_hint="--pending") from None
    at_least_one(("--plain", plain), *(("--pending", size) for size in sizes))
    console = Console(stderr=True)
    settings = DistinctSettings(pendings=sizes, plain=plain)
    results = run_distinct_bench(settings, lambda text: console.print(f"[dim]… {text}[/dim]"))
    if as_json:
        click.echo(json.dumps({"results": [result.as_dict() for result in results]}))
        return
    table = Table(title="logq bench delay --distinct: delayed messages pending, each its own time")
    table.add_column("measure")
    for result in results:
        table.add_column(f"{result.pending:,} pending", justify="right")

    def mb(value: int | None) -> str:
        return "n/a" if value is None else f"{value / _MB:,.1f} MB"

    def us(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.1f} µs/msg"

    def seconds(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.2f} s"

    rows: list[tuple[str, Callable[[DistinctResult], str]]] = [
        ("held back once passed", lambda r: f"{r.held_back:,}"),
        ("group passes them in", lambda r: f"{r.pass_s:,.2f} s"),
        ("plain receive+ack, no delays", lambda r: f"{r.plain_msgs_per_s_no_delays:,.0f} msg/s"),
        ("plain receive+ack, delays pending", lambda r: f"{r.plain_msgs_per_s:,.0f} msg/s"),
        ("broker RSS before the delays", lambda r: mb(r.rss_bytes_before)),
        ("broker RSS holding them", lambda r: mb(r.rss_bytes_after)),
        ("plain, broker CPU, no delays", lambda r: us(r.plain_cpu_us_per_msg_no_delays)),
        ("plain, broker CPU, delays pending", lambda r: us(r.plain_cpu_us_per_msg)),
        ("restart after kill -9", lambda r: f"{r.restart_s:,.2f} s"),
        ("restart, broker CPU", lambda r: seconds(r.restart_cpu_s)),
        ("broker RSS after the restart", lambda r: mb(r.rss_bytes_after_restart)),
        ("held back after restart", lambda r: f"{r.held_back_after_restart:,}"),
        ("lateness p50 (due in the run)", lambda r: f"{r.lateness_ms_p50:,.1f} ms"),
        ("lateness p99 (due in the run)", lambda r: f"{r.lateness_ms_p99:,.1f} ms"),
        ("due in the run, delivered", lambda r: f"{r.near_delivered:,}"),
        ("delivered early", lambda r: f"{r.early:,}"),
    ]
    for name, cell in rows:
        table.add_row(name, *(cell(result) for result in results))
    Console().print(table)


@bench.command("priority")
@click.option("--backlog", default=200_000, show_default=True, help="Low messages waiting first.")
@click.option("--high", default=200, show_default=True, help="High messages published meanwhile.")
@click.option("--interval-ms", default=10.0, show_default=True, help="Between two high batches.")
@click.option("--high-batch", default=1, show_default=True, help="High messages per publish.")
@click.option(
    "--batch", default=100, show_default=True, help="Messages the consumer takes at a time."
)
@click.option(
    "--max",
    "receive_max",
    type=int,
    help="Receive this many at a time (1: a single-message worker) instead of pushes.",
)
@click.option("--server", help="Use this running server (host:port) instead of starting one.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_priority(
    backlog: int,
    high: int,
    interval_ms: float,
    high_batch: int,
    batch: int,
    receive_max: int | None,
    server: str | None,
    as_json: bool,
) -> None:
    """A high message's wait, publish to delivery, behind a backlog of low ones."""
    at_least_one(
        ("--backlog", backlog), ("--high", high), ("--batch", batch), ("--high-batch", high_batch)
    )
    if receive_max is not None:
        at_least_one(("--max", receive_max))
    settings = PriorityBenchSettings(
        backlog=backlog,
        high=high,
        interval_ms=max(interval_ms, 0.0),
        batch=batch,
        high_batch=high_batch,
        receive_max=receive_max,
        server=server,
    )
    console = Console(stderr=True)
    result = run_priority_bench(settings, lambda text: console.print(f"[dim]… {text}[/dim]"))
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    taking = f"pushed {batch} at a time" if receive_max is None else f"receives of {receive_max}"
    table = Table(
        title=f"logq bench priority: {result.low_backlog:,} low messages waiting, {taking}"
    )
    table.add_column("measure")
    table.add_column("figure", justify="right")
    table.add_row("high messages", f"{result.high_messages:,}")
    table.add_row("high wait p50", f"{result.high_wait_ms_p50:,.1f} ms")
    table.add_row("high wait p99", f"{result.high_wait_ms_p99:,.1f} ms")
    table.add_row("high wait max", f"{result.high_wait_ms_max:,.1f} ms")
    table.add_row("low delivered meanwhile", f"{result.low_delivered_meanwhile:,}")
    if result.low_served_while_high_waited is not None:
        table.add_row("low served while high waited", f"{result.low_served_while_high_waited:,}")
        fewest = result.high_run_before_low_min
        table.add_row(
            "fewest high ahead of such a low", "none" if fewest is None else f"{fewest:,}"
        )
    Console().print(table)


@bench.command("rebalance")
@click.option("--partitions", default=12, show_default=True)
@click.option("--consumers", default=3, show_default=True, help="Consumers before one joins.")
@click.option("--rate", default=10_000, show_default=True, help="Messages a second, published.")
@click.option(
    "--warmup", "warmup_s", default=2.0, show_default=True, help="Seconds before the join."
)
@click.option(
    "--phase",
    "phase_s",
    default=3.0,
    show_default=True,
    help="Seconds after the join, and the kill.",
)
@click.option(
    "--lease", "lease_s", default=2.0, show_default=True, help="Visibility timeout, seconds."
)
@click.option("--server", help="Use this running server (host:port) instead of starting one.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_rebalance(
    partitions: int,
    consumers: int,
    rate: int,
    warmup_s: float,
    phase_s: float,
    lease_s: float,
    server: str | None,
    as_json: bool,
) -> None:
    """An ordered group under load: one consumer joins, then one is killed."""
    at_least_one(("--partitions", partitions), ("--consumers", consumers), ("--rate", rate))
    if min(warmup_s, phase_s) < 0 or lease_s <= 0:
        raise click.BadParameter("must be positive", param_hint="--warmup/--phase/--lease")
    settings = RebalanceBenchSettings(
        partitions=partitions,
        consumers=consumers,
        rate=rate,
        warmup_s=warmup_s,
        phase_s=phase_s,
        lease_s=lease_s,
        server=server,
    )
    console = Console(stderr=True)
    result = run_rebalance_bench(settings, lambda text: console.print(f"[dim]… {text}[/dim]"))
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    table = Table(
        title=f"logq bench rebalance: {consumers} consumers on {partitions} partitions, "
        f"{rate:,} msg/s; one joins, then one is killed"
    )
    table.add_column("measure")
    table.add_column("figure", justify="right")
    table.add_row("published", f"{result.published:,}")
    table.add_row("processed", f"{result.processed:,}")
    table.add_row("lost", f"{result.lost:,}")
    table.add_row("processed twice concurrently", f"{result.processed_twice_concurrently:,}")
    table.add_row("redelivered (killed consumer's unacked)", f"{result.redelivered:,}")
    table.add_row("unmoved partitions: longest gap", f"{result.unmoved_gap_ms_max:,.1f} ms")
    table.add_row("same gap with no rebalance", f"{result.baseline_gap_ms_max:,.1f} ms")
    table.add_row("moved partitions: resumed within", f"{result.moved_resume_ms_max:,.1f} ms")
    table.add_row("partitions moved", f"{result.moved_partitions}")
    for record in result.rebalances:
        table.add_row(f"rebalance: {record['reason']}", f"{record['duration_ms']} ms")
    Console().print(table)


@bench.command("abuse")
@click.option("--sockets", default=1000, show_default=True, help="Hostile anonymous sockets.")
@click.option("--seconds", default=60.0, show_default=True, help="How long they attack.")
@click.option(
    "--server", help="Attack this running server (host:port, auth on) instead of starting one."
)
@click.option("--http", help="With --server: its HTTP listener (host:port).")
@click.option("--token", envvar="LOGQ_TOKEN", help="With --server: signs the client in.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_abuse(
    sockets: int,
    seconds: float,
    server: str | None,
    http: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Hostile sockets (slow handshakes, slow HTTP headers, huge unfinished
    frames) against a broker with auth on, while a signed-in client works."""
    at_least_one(("--sockets", sockets))
    if seconds <= 0:
        raise click.BadParameter("must be positive", param_hint="--seconds")
    settings = AbuseBenchSettings(
        sockets=sockets, seconds=seconds, server=server, http=http, token=token
    )
    console = Console(stderr=True)
    result = run_abuse_bench(settings, lambda text: console.print(f"[dim]… {text}[/dim]"))
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    table = Table(title=f"logq bench abuse: {sockets:,} hostile sockets for {seconds:g} s")
    table.add_column("measure")
    table.add_column("figure", justify="right")
    table.add_row("client round trips (publish, receive, ack)", f"{result.round_trips:,}")
    table.add_row("round trip p50", f"{result.round_trip_ms_p50:,.2f} ms")
    table.add_row("round trip p99", f"{result.round_trip_ms_p99:,.2f} ms")
    table.add_row("round trip max", f"{result.round_trip_ms_max:,.2f} ms")
    for name, value in (
        ("server RSS before", result.rss_bytes_before),
        ("server RSS peak", result.rss_bytes_peak),
        ("server RSS after", result.rss_bytes_after),
        ("server RSS growth (peak)", result.rss_growth_bytes),
    ):
        table.add_row(name, "?" if value is None else f"{value / _MB:,.1f} MB")
    table.add_row("attacker connects", f"{result.attacker_connects:,}")
    table.add_row("attacker bytes written", f"{result.attacker_bytes_sent / _MB:,.1f} MB")
    table.add_row("closed: sign-in timeout", f"{result.closed_handshake_timeout:,}")
    table.add_row("closed: idle timeout", f"{result.closed_idle_timeout:,}")
    table.add_row("closed: HTTP header timeout", f"{result.closed_http_header_timeout:,}")
    table.add_row("closed: HTTP body timeout", f"{result.closed_http_body_timeout:,}")
    table.add_row("closed: over handshakeBytes", f"{result.closed_oversize:,}")
    table.add_row("closed to make room", f"{result.closed_to_make_room:,}")
    table.add_row("refused", f"{result.refused:,}")
    Console().print(table)
