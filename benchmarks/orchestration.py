"""Orchestration overhead: the quick pipeline as plain ``retina_core`` calls vs as the Prefect flow.

Each repetition of either side is a fresh Python process on a fresh RETINA_HOME (cold:
ingest, train both encoders, embed, fusion, explain, report), so both sides pay the
same interpreter start, imports and data work; the Prefect side additionally imports
Prefect and runs every stage as flows and tasks against a long-lived Prefect server
(started once, before timing, as a deployment's worker finds it), which is the overhead
being measured.

The ephemeral API (what ``retina pipeline`` starts when no server is configured) is not
part of the ratio: PREFECT_HOME is one temporary folder, migrated before timing by a
trivial flow in its own process, and the per-process start of the ephemeral API on the
migrated database is reported as a figure of its own.

Run as ``python -m benchmarks.orchestration SIDE SETTINGS_JSON DATA`` for one side.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from benchmarks.fixtures import BenchContext, bench_settings
from benchmarks.harness import BenchmarkResult, Budget, Side, Target, interleave, not_run
from retina_core.config import Settings, write_settings_file
from retina_core.data.synthetic import SynthSpec, write_synthetic
from retina_core.domain import Source

NAME = "orchestration overhead"
TARGET = Target("cost", 1.15)
REPO_ROOT = Path(__file__).resolve().parents[1]
FLOW_MODULES = ("prefect", "flows.pipeline", "flows.embed", "flows.fusion")
PIPELINE_DATA = SynthSpec(fundus=40, oct=40, pairs=40, size=64, seed=5)
"""Tiny, but with real pairs in every split (virtual pairs at this size can miss a label)."""
SUBPROCESS_TIMEOUT_S = 900
EXPLAIN_IMAGES = 2
EVAL_BOOTSTRAP = 50


def missing_modules() -> list[str]:
    missing = []
    for name in FLOW_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ModuleNotFoundError:
            missing.append(name)
    return missing


def pipeline_settings(home: Path) -> Settings:
    """The quick preset, one epoch, fewer bootstrap resamples and explanations on a handful of images."""
    data = bench_settings(home, image_size=64).model_dump()
    data["explain"].update(examples_per_class=1, max_images=EXPLAIN_IMAGES)
    data["evaluation"].update(bootstrap=EVAL_BOOTSTRAP)
    return Settings.model_validate(data)


def sources(data: Path) -> list[dict[str, str]]:
    return [
        {"source": Source.APTOS.value, "location": str(data / "aptos")},
        {"source": Source.KERMANY.value, "location": str(data / "kermany")},
        {"source": Source.PAIRS.value, "location": str(data / "pairs.csv")},
    ]


def worker_env(prefect_home: Path) -> dict[str, str]:
    """The caller's environment with one PREFECT_HOME, no API URL (so: the ephemeral API), and
    the caller's torch thread count, so both sides compute as the rest of the run does."""
    import torch

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(prefect_home)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_worker(args: Sequence[str], env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.orchestration", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{args[0]} side exited {done.returncode}: {tail[0][:300]}")


def run(ctx: BenchContext) -> BenchmarkResult:
    missing = missing_modules()
    if missing:
        return not_run(NAME, f"{', '.join(missing)} missing")
    data = ctx.root / "pipeline-data"
    write_synthetic(data, PIPELINE_DATA)
    env = worker_env(ctx.new_dir("prefect-home"))

    first_start = _seconds(lambda: run_worker(["trivial"], env))
    migrated_start = None if ctx.quick else _seconds(lambda: run_worker(["trivial"], env))

    def side(kind: str, label: str) -> Side:
        def setup() -> Path:
            home = ctx.new_dir(f"pipeline-{kind}")
            path = home / "settings.json"
            path.write_text(pipeline_settings(home / "home").model_dump_json(), encoding="utf-8")
            return path

        return Side(label, lambda path: run_worker([kind, str(path), str(data)], env), setup=setup)

    budget = ctx.pick(Budget(2, 2, 0), Budget(1, 1, 0))
    with long_lived_server(ctx.new_dir("prefect-server")) as api_url:
        server_env = env | {"PREFECT_API_URL": api_url}
        plain = side("plain", "python process running retina_core.pipeline.run_pipeline on a fresh home")
        flow_side = Side(
            "python process running the retrain-pipeline flow against a long-lived Prefect server, fresh home",
            lambda path: run_worker(["prefect", str(path), str(data)], server_env),
            setup=plain.setup,
        )
        baseline, ours = interleave(plain, flow_side, budget)
    reps = len(ours.seconds)
    return BenchmarkResult(
        name=NAME,
        baseline=baseline,
        ours=ours,
        target=TARGET,
        figures={
            "prefect_first_start_seconds": first_start,
            "prefect_start_migrated_seconds": migrated_start,
            "prefect_migration_seconds": None if migrated_start is None else first_start - migrated_start,
            "data": PIPELINE_DATA.model_dump(),
        },
        notes=[
            "Both sides cold (new RETINA_HOME and new process each repetition): quick preset, 1 epoch, "
            f"64 px, {PIPELINE_DATA.fundus}+{PIPELINE_DATA.oct} images and {PIPELINE_DATA.pairs} pairs, "
            f"bootstrap {EVAL_BOOTSTRAP}, explanations on {EXPLAIN_IMAGES} images. The flow submits the two "
            "explain stages (and ingest files, embedding shards) to Prefect's thread task runner, the plain "
            "pipeline runs them in sequence, so the ratio is overhead net of that concurrency. "
            + _prefect_start_note(first_start, migrated_start)
            + (" Quick mode: 1 repetition per side." if ctx.quick else f" {reps} repetitions per side."),
        ],
    )


@contextlib.contextmanager
def long_lived_server(home: Path) -> Iterator[str]:
    """A Prefect server on a free port (no deployments, no worker), stopped on exit; yields its API URL."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from deployments.stack import LocalStack, StackConfig

    config = StackConfig(prefect_home=home, deploy=False, worker=False, create_landing=False)
    with LocalStack(config) as stack:
        yield stack.api_url


def _seconds(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _prefect_start_note(first_start: float, migrated_start: float | None) -> str:
    if migrated_start is None:
        return (
            f"A trivial flow on the fresh PREFECT_HOME (migration + first ephemeral start) took "
            f"{first_start:.1f} s: the ephemeral API's start-up, not part of the ratio (the flow side "
            "talks to a long-lived server)."
        )
    return (
        f"One-time migration of the fresh PREFECT_HOME ≈ {first_start - migrated_start:.1f} s (first "
        f"trivial flow {first_start:.1f} s), excluded from both sides; a new process starting the "
        f"ephemeral API on the migrated database and running a trivial flow takes {migrated_start:.1f} s: "
        "what `retina pipeline` without a server pays on top, not part of the ratio (the flow side talks "
        "to a long-lived server, as a deployment's run does)."
    )


def _trivial() -> None:
    from prefect import flow

    from flows.runtime import fast_flows

    @flow(name="bench-trivial")
    def trivial() -> int:
        return 1

    with fast_flows():
        trivial()


def main(argv: Sequence[str]) -> int:
    """One side in this process: ``plain``/``prefect`` SETTINGS_JSON DATA, or ``trivial``."""
    from flows.runtime import prefect_environment

    side = argv[0]
    if side == "trivial":
        prefect_environment(Path(os.environ["PREFECT_HOME"]).parent)
        _trivial()
        return 0
    settings = Settings.model_validate_json(Path(argv[1]).read_text(encoding="utf-8"))
    data = Path(argv[2])
    from retina_core.results import SourceSpec

    specs = [SourceSpec.model_validate(s) for s in sources(data)]
    if side == "plain":
        from retina_core.pipeline import run_pipeline

        run_pipeline(settings, specs, synthetic=True)
        return 0
    prefect_environment(settings.home)  # defaults only: PREFECT_API_URL (the server) is kept
    from flows.pipeline import PipelineParams, retrain_pipeline_flow
    from flows.runtime import fast_flows

    with fast_flows():
        config = write_settings_file(settings, Path(argv[1]).with_suffix(".yaml"))
        retrain_pipeline_flow(PipelineParams(sources=specs, synthetic=True, config_file=str(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
