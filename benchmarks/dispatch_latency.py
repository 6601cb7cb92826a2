"""Dispatch latency: from a parent flow's ``run_deployment`` call to its child's first task.

What ``RETINA_ORCHESTRATION__STAGES=deployments`` adds before a stage starts working: the
server creates the child run, a worker polls it up, spawns a process, runs the pull step,
imports the flow and starts its first task. Measured on the stack ``make serve`` runs (a
long-lived server, the ``retina-local`` process pool, a worker polling every second),
with a one-task probe flow so that the figure is the orchestration's, not the stage's.

The parent runs in its own process against the server and starts one child at a time
(waiting for each), so the runs do not queue behind each other; the latency is the
child's first task run's start time (from the API) minus the moment the parent called
``run_deployment``, both on this machine's clock.

Run as ``python -m benchmarks.dispatch_latency parent N`` for the parent side.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, task

from benchmarks.fixtures import BenchContext
from benchmarks.harness import BenchmarkResult

NAME = "dispatch latency"
REPO_ROOT = Path(__file__).resolve().parents[1]
PROBE = "dispatch-probe/dispatch-probe"
TIMEOUT_S = 600


@task(name="probe-task")
def probe_task() -> float:
    return time.time()


@flow(name="dispatch-probe")
def dispatch_probe() -> float:
    """The child: one task, nothing else, so its start is the dispatch's end."""
    return probe_task()


@flow(name="dispatch-latency-parent")
def dispatch_parent(children: int) -> list[float]:
    from prefect.deployments import run_deployment

    latencies = []
    for _ in range(children):
        called = time.time()
        child = run_deployment(PROBE, timeout=TIMEOUT_S, poll_interval=0.5, as_subflow=True)
        if not child.state or not child.state.is_completed():
            raise RuntimeError(f"probe run {child.id} ended {child.state and child.state.name}")
        latencies.append(first_task_start(child.id) - called)
    return latencies


def first_task_start(run_id: Any) -> float:
    """When the run's first task started; task runs reach the API as events, so allow them a moment."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    only = FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            starts = [t.start_time for t in client.read_task_runs(flow_run_filter=only) if t.start_time]
            if starts:
                return min(starts).timestamp()
            time.sleep(0.2)
    raise RuntimeError(f"probe run {run_id} completed but no task run of it reached the API within 30 s")


def deploy_probe() -> None:
    """The probe as a deployment on retina-local, its code read from this checkout by the worker."""
    dispatch_probe.from_source(
        source=str(REPO_ROOT), entrypoint="benchmarks/dispatch_latency.py:dispatch_probe"
    ).deploy(name="dispatch-probe", work_pool_name="retina-local", print_next_steps=False)


def run(ctx: BenchContext) -> BenchmarkResult:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from deployments.stack import LocalStack, StackConfig

    children = 3 if ctx.quick else 7
    config = StackConfig(prefect_home=ctx.new_dir("prefect-server"), deploy=False, create_landing=False)
    with LocalStack(config) as stack:
        env = os.environ | {"PREFECT_API_URL": stack.api_url}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.dispatch_latency", "parent", str(children)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S * children,
        )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"parent exited {done.returncode}: {tail[0][:300]}")
    latencies = json.loads(done.stdout.strip().splitlines()[-1])
    p50 = statistics.median(latencies)
    return BenchmarkResult(
        name=NAME,
        summary=f"p50 {p50:.1f} s (min {min(latencies):.1f}, max {max(latencies):.1f}; {len(latencies)} children)",
        target_text="report (no target)",
        figures={"latencies_seconds": latencies, "p50_seconds": p50, "worker_query_seconds": 1},
        notes=[
            "From the parent's run_deployment call to the child's first task start: server round trip, "
            "the process worker's poll (every 1 s, as make serve sets it), process spawn, the pull step "
            "and the flow's import. One child at a time, so none waits behind another. A Kubernetes "
            "pool adds pod scheduling and image pull on top."
        ],
    )


def main(argv: Sequence[str]) -> int:
    if argv[:1] != ["parent"]:
        raise SystemExit("usage: python -m benchmarks.dispatch_latency parent N")
    from flows.runtime import fast_flows

    deploy_probe()
    with fast_flows():
        latencies = dispatch_parent(int(argv[1]))
    print(json.dumps(latencies))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
