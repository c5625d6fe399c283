"""The comparison's results as a table (terminal and Markdown), JSON and a chart."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from logq.bench.compare.workloads import LATENCY_WORKLOADS, Result

SYSTEMS = ("logq", "postgresql", "redis", "nats", "rabbitmq")


@dataclass(slots=True)
class Report:
    machine: dict[str, Any]
    results: list[Result] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # system -> why

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "skipped": self.skipped,
            "results": [asdict(r) for r in self.results],
            "ratios": ratios(self.results),
        }

    def workloads(self) -> list[str]:
        return list(dict.fromkeys(r.workload for r in self.results))

    def systems(self) -> list[str]:
        present = {r.system for r in self.results}
        return [s for s in SYSTEMS if s in present]

    def find(self, system: str, workload: str) -> Result | None:
        for result in self.results:
            if result.system == system and result.workload == workload:
                return result
        return None


def _is_latency(workload: str) -> bool:
    return workload in LATENCY_WORKLOADS


def ratio(logq: Result | None, peer: Result | None) -> float | None:
    """How many times logq is ahead: msg/s over msg/s, or for latency
    workloads the peer's p99 over logq's (above 1: logq is ahead)."""
    if logq is None or peer is None:
        return None
    if _is_latency(logq.workload):
        if logq.p99_ms and peer.p99_ms:
            return peer.p99_ms / logq.p99_ms
        return None
    if logq.msgs_per_s and peer.msgs_per_s:
        return logq.msgs_per_s / peer.msgs_per_s
    return None


def ratios(results: list[Result]) -> list[dict[str, Any]]:
    found = []
    by_key = {(r.system, r.workload): r for r in results}
    for (system, workload), peer in by_key.items():
        if system == "logq":
            continue
        value = ratio(by_key.get(("logq", workload)), peer)
        if value is not None:
            basis = "p99 latency" if _is_latency(workload) else "msg/s"
            found.append(
                {"workload": workload, "peer": system, "logq_ahead_by": value, "basis": basis}
            )
    return found


def cell(result: Result | None) -> str:
    if result is None:
        return "-"
    if result.msgs_per_s is None:
        return result.note or "failed"
    text = f"{result.msgs_per_s:,.0f}/s"
    if result.p99_ms is not None:
        text += f" p50 {result.p50_ms:.2f} p99 {result.p99_ms:.2f} ms"
    return text


def ratio_text(report: Report, system: str, workload: str) -> str:
    if system == "logq":
        return ""
    value = ratio(report.find("logq", workload), report.find(system, workload))
    return "" if value is None else f"{value:.1f}x"


def rows(report: Report) -> list[list[str]]:
    """One row per workload: the workload, then each system's cell with its ratio."""
    table = []
    for workload in report.workloads():
        row = [workload]
        for system in report.systems():
            text = cell(report.find(system, workload))
            ahead = ratio_text(report, system, workload)
            row.append(f"{text} ({ahead})" if ahead else text)
        table.append(row)
    return table


def machine_line(machine: dict[str, Any]) -> str:
    disk = machine["disk"]["fdatasync_4k_ms"]
    return (
        f"{machine['date']}, {machine['cores']} cores ({machine['cpu']}), "
        f"{machine['memory_gib']} GiB, {machine['os']}, Python {machine['python']}; "
        f"disk: 4 KiB write + fdatasync p50 {disk['p50']} ms, p99 {disk['p99']} ms"
    )


def markdown(report: Report) -> str:
    systems = report.systems()
    lines = [
        "| workload | " + " | ".join(systems) + " |",
        "|---|" + "---:|" * len(systems),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows(report)]
    lines.append("")
    lines.append(f"Machine: {machine_line(report.machine)}.")
    lines.append("")
    lines += [f"- {r.system}: {r.settings}" for r in _settings(report)]
    lines += [f"- {system}: skipped ({why})" for system, why in report.skipped.items()]
    lines += [f"- {r.system}, {r.workload}: {r.note}" for r in report.results if r.note]
    return "\n".join(lines) + "\n"


def _settings(report: Report) -> list[Result]:
    first: dict[str, Result] = {}
    for result in report.results:
        first.setdefault(result.system, result)
    return [first[s] for s in report.systems()]


COLORS = {
    "logq": "#2563eb",
    "postgresql": "#64748b",
    "redis": "#dc2626",
    "nats": "#16a34a",
    "rabbitmq": "#f59e0b",
}


def chart(report: Report, path: Path) -> None:
    """Two panels of grouped bars: msg/s per throughput workload, and p99
    latency per latency workload; log scales, one colour per system."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    systems = report.systems()
    throughput = [w for w in report.workloads() if not _is_latency(w)]
    latency = [w for w in report.workloads() if _is_latency(w)]
    panels = [(throughput, "msg/s (higher is better)", False)]
    if latency:
        panels.append((latency, "p99 latency, ms (lower is better)", True))
    figure, axes = plt.subplots(
        len(panels), 1, figsize=(13, 4.2 * len(panels)), squeeze=False, layout="constrained"
    )
    width = 0.8 / max(1, len(systems))
    for axis, (workloads, label, is_latency) in zip(axes[:, 0], panels, strict=True):
        for index, system in enumerate(systems):
            heights = []
            for workload in workloads:
                found = report.find(system, workload)
                value = None
                if found is not None:
                    value = found.p99_ms if is_latency else found.msgs_per_s
                heights.append(value or 0)
            positions = [
                x + (index - (len(systems) - 1) / 2) * width for x in range(len(workloads))
            ]
            axis.bar(positions, heights, width, label=system, color=COLORS.get(system))
        axis.set_yscale("log")
        axis.set_ylabel(label)
        axis.set_xticks(range(len(workloads)), workloads, rotation=20, ha="right")
        axis.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(ncols=len(systems), loc="upper right")
    axes[0, 0].set_title(f"logq bench compare: {machine_line(report.machine)}", fontsize=9)
    figure.savefig(path, dpi=110)
    plt.close(figure)
