"""`logq bench chaos --archive`, short: the broker archives the topic, keeps
32 KiB of each partition on disk and is SIGKILLed at random moments under
idempotent producers and an acking consumer; the read from offset 0 goes
through the archive and finds nothing lost, duplicated or reordered."""

from __future__ import annotations

from pathlib import Path

from logq.bench.chaos import ChaosSettings, run_chaos


def test_kills_of_an_archiving_broker_lose_nothing(tmp_path: Path) -> None:
    report = run_chaos(
        ChaosSettings(
            cycles=3, up_s=(0.8, 1.6), archive="file", data_dir=tmp_path / "chaos", seed=7
        )
    )
    assert report.ok, report.examples
    assert report.cycles == 3
    assert report.publishes_acknowledged > 1000
    assert report.lost == report.duplicates == report.out_of_order == 0
    assert report.trimmed_offsets > 0 and report.archive_remote_reads > 0
    assert any((tmp_path / "chaos" / "archive" / "topics" / "chaos").rglob("*.seg"))
