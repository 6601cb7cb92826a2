"""Benchmark results as data (``latest.json``: raw repetitions and the machine) and as markdown.

The JSON keeps every repetition, not just medians, so a reader can judge the noise; the
environment says on what the numbers were taken, because a ratio from a loaded 2-core
machine and one from an idle workstation are different facts.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchmarkResult, Samples, Target

COLUMNS = ("what", "baseline", "ours", "ratio", "target", "met")


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def environment() -> dict[str, Any]:
    """The machine, the libraries and how loaded the machine was when the run started."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda_available": cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "prefect": _version("prefect"),
        "timm": _version("timm"),
        "git_commit": _git_commit(),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def result_dict(result: BenchmarkResult) -> dict[str, Any]:
    return {
        "name": result.name,
        "status": result.status,
        "reason": result.reason,
        "baseline": result.baseline.to_dict() if result.baseline else None,
        "ours": result.ours.to_dict() if result.ours else None,
        "target": result.target.to_dict() if result.target else None,
        "ratio": result.ratio,
        "paired_ratios": result.paired_ratios,
        "met": result.met,
        "summary": result.summary,
        "warmup_per_side": result.warmup,
        "figures": result.figures,
        "notes": result.notes,
        "seconds": result.seconds,
    }


def run_document(
    results: Sequence[BenchmarkResult],
    env: dict[str, Any],
    *,
    quick: bool,
    started: datetime,
    seconds: float,
) -> dict[str, Any]:
    return {
        "created": started.astimezone(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "seconds": seconds,
        "environment": env,
        "benchmarks": [result_dict(r) for r in results],
    }


def write_json(document: dict[str, Any], path: Path) -> Path:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def fmt_seconds(seconds: float) -> str:
    if seconds >= 100:
        return f"{seconds:.0f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"


def fmt_side(samples: Samples | None) -> str:
    if samples is None:
        return "—"
    text = fmt_seconds(samples.median)
    if samples.images:
        text += f" ({samples.work_per_second:.1f} img/s)"
    return text


def fmt_ratio(ratio: float | None, target: Target | None) -> str:
    if ratio is None:
        return "—"
    if target is not None and target.kind == "cost" and ratio < 1:
        return f"{ratio:.2f}× ({ratio:.0%})"
    return f"{ratio:.2f}×"


def fmt_target(result: BenchmarkResult) -> str:
    if result.target is None:
        return result.target_text or "—"
    sign = "≥" if result.target.kind == "speedup" else "≤"
    return f"{sign} {result.target.bound:g}×"


def fmt_met(result: BenchmarkResult) -> str:
    if result.status == "not run":
        return "not run"
    if result.status == "error":
        return "error"
    met = result.met
    return "—" if met is None else ("yes" if met else "no")


def table_row(result: BenchmarkResult) -> tuple[str, ...]:
    if result.status != "ok":
        return (
            result.name,
            "—",
            f"{result.status}: {result.reason}",
            "—",
            fmt_target(result),
            fmt_met(result),
        )
    ours = result.summary if result.summary is not None else fmt_side(result.ours)
    return (
        result.name,
        fmt_side(result.baseline),
        ours,
        fmt_ratio(result.ratio, result.target),
        fmt_target(result),
        fmt_met(result),
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(results: Sequence[BenchmarkResult]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(c) for c in table_row(r)) + " |" for r in results]
    return "\n".join(lines)


def notes_section(results: Sequence[BenchmarkResult], env: dict[str, Any], *, quick: bool) -> str:
    """What each side measured, how often, and the figures that don't fit a cell."""
    lines = [
        "Notes",
        "",
        f"- Machine: {env.get('usable_cpus')} usable CPUs (of {env.get('cpu_count')}), device "
        f"{env.get('device')}, torch {env.get('torch')} with {env.get('torch_threads')} threads, "
        f"load average at start {_load(env)}. Medians of interleaved repetitions (baseline, ours, "
        "baseline, ours, …); per-pair ratios and every repetition are in the JSON file.",
    ]
    if quick:
        lines.append(
            "- Quick mode (--quick): smaller data and fewer repetitions; treat ratios as rough. The "
            "embedding rows' catalogues are tiny here, so fixed per-call costs dominate their ratios."
        )
    for r in results:
        lines.append(f"- **{r.name}**: " + _describe(r))
    return "\n".join(lines)


def _load(env: dict[str, Any]) -> str:
    load = env.get("load_average")
    return "n/a" if not load else " / ".join(f"{x:.1f}" for x in load)


def _describe(r: BenchmarkResult) -> str:
    parts: list[str] = []
    if r.status != "ok":
        parts.append(f"{r.status}: {r.reason}.")
    if r.baseline is not None:
        parts.append(f"baseline = {r.baseline.label};")
    if r.ours is not None:
        parts.append(f"ours = {r.ours.label};")
    timed = r.ours or r.baseline
    if timed is not None:
        reps = len(timed.seconds)
        warm = f", {r.warmup} untimed warm-up run(s) per side first" if r.warmup else ", no warm-up"
        parts.append(f"{reps} repetition(s) per side{warm}.")
    parts += r.notes
    return " ".join(parts)


def render(results: Sequence[BenchmarkResult], env: dict[str, Any], *, quick: bool) -> str:
    return markdown_table(results) + "\n\n" + notes_section(results, env, quick=quick) + "\n"
