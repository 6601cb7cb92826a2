"""The terminal progress display: what a person sees on stderr while a long command works."""

from __future__ import annotations

import io
import re

from rich.console import Console

from retina_cli.display import LiveDisplay, PlainLines, clock, showing_progress
from retina_core import progress
from retina_core.progress import EpochDone, ShardDone, StageFinished, StageStarted

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def epoch(n: int, of: int = 4, seconds: float = 30.0) -> EpochDone:
    return EpochDone("train fundus", n, of, 1.0 / n, 0.2 * n, "QWK", 250.0, seconds)


def run(sink: progress.Progress) -> None:
    sink.emit(StageStarted("ingest aptos"))
    sink.emit(StageFinished("ingest aptos"))
    sink.emit(StageStarted("train fundus"))
    sink.emit(epoch(1))
    sink.emit(epoch(2))
    sink.emit(StageFinished("train fundus"))  # early stopping: 2 of 4 epochs
    sink.emit(StageStarted("embed oct"))
    sink.emit(ShardDone("embed oct", items=64, total=100, seconds=0.5))


def test_plain_lines_say_stage_epoch_metric_speed_and_eta() -> None:
    out = io.StringIO()
    run(PlainLines(out))
    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines[:3] == ["ingest aptos: started", "ingest aptos: done in 0:00", "train fundus: started"]
    assert lines[3] == "train fundus: epoch 1/4: train loss 1.000, val QWK 0.200, 250 img/s, ETA 1:30"
    assert lines[4].endswith("ETA 1:00")
    assert lines[-1].startswith("embed oct: 64/100 images, ") and " images/s, ETA " in lines[-1]


def test_plain_lines_for_many_shards_stay_ten_at_most() -> None:
    """Kermany's 84k files arrive in chunks of 64: a CI log gets a line per tenth, not per chunk."""
    out = io.StringIO()
    lines = PlainLines(out)
    lines.emit(StageStarted("ingest kermany"))
    lines.emit(ShardDone("ingest kermany", items=0, total=1000, seconds=0.0, unit="files"))
    for _ in range(100):
        lines.emit(ShardDone("ingest kermany", items=10, total=None, seconds=0.1, unit="files"))
    text = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert text[1] == "ingest kermany: 1000 files to process"
    counts = [line.split(": ", 1)[1].split(" ", 1)[0] for line in text[2:]]
    assert counts == [f"{n}/1000" for n in range(100, 1001, 100)]


def test_live_display_keeps_one_row_per_stage_with_its_figures() -> None:
    out = io.StringIO()
    display = LiveDisplay(Console(file=out, force_terminal=True, width=120))
    display.start()
    run(display)
    display.close()
    ingest, train, embed = ANSI.sub("", out.getvalue()).replace("\r", "\n").splitlines()[-3:]
    assert ingest.startswith("✓ ingest aptos")
    assert train.startswith("✓ train fundus") and "2/4" in train  # early stopping shows in the count
    assert "loss 0.500 · QWK 0.400 · 250 img/s" in train
    assert "embed oct" in embed and not embed.startswith("✓")  # closed mid-stage: no tick
    assert "64/100" in embed and "stopped" in embed


def test_off_a_terminal_the_display_is_plain_and_is_removed_afterwards() -> None:
    out = io.StringIO()
    with showing_progress(out):
        progress.emit(StageStarted("report"))
    assert out.getvalue().endswith("report: started\n")
    assert progress.current() is progress.NO_PROGRESS


def test_keep_limits_the_display_to_chosen_stages() -> None:
    out = io.StringIO()
    with showing_progress(out, keep=lambda stage: stage.startswith("bench ")):
        progress.emit(StageStarted("bench ingestion"))
        progress.emit(StageStarted("train oct"))
    assert "bench ingestion: started" in out.getvalue() and "train oct" not in out.getvalue()


def test_clock_reads_like_an_eta() -> None:
    assert (clock(59.6), clock(61), clock(3725)) == ("1:00", "1:01", "1:02:05")
