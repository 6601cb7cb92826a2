"""deployments.stack: selection logic on the real prefect.yaml, then the real stack on loopback.

The two integration tests share one PREFECT_HOME: the first starts on a fresh SQLite
database (the migrations are most of its time), the second is the warm restart a user
gets from a second `make serve`, driven through the command line and SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import deployments.stack.local as stack_module  # where LocalStack.stop calls stop_process
from deployments.stack import (
    GPU_POOL,
    LOCAL_POOL,
    PREFECT_FILE,
    LocalStack,
    StackConfig,
    StackError,
    descendants,
    free_port,
    landing_folders,
    parse_args,
    pid_alive,
    read_deployments,
    select_deployments,
    split_deployable,
    stack_environment,
)

INGEST = ("ingest-aptos", "ingest-kermany")


# --- pure parts ---------------------------------------------------------------------------------


def test_default_selection_is_every_local_pool_deployment() -> None:
    deployments = read_deployments(PREFECT_FILE)
    selected = select_deployments(deployments)
    assert {d.work_pool for d in selected} == {LOCAL_POOL}
    assert {"ingest-aptos", "ingest-kermany", "retrain-pipeline"} <= {d.name for d in selected}
    everything = select_deployments(deployments, pools=None)
    assert {d.work_pool for d in everything} == {LOCAL_POOL, GPU_POOL}


def test_readme_lists_the_deployments_make_serve_creates(repo_root: Path) -> None:
    """README's "From the Prefect UI" table names exactly the default selection, nothing stale."""
    readme = (repo_root / "README.md").read_text()
    section = readme.split("## From the Prefect UI", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    listed = {name.strip(" `") for row in rows for name in row.split(",")}
    assert listed == {d.name for d in select_deployments(read_deployments(PREFECT_FILE))}


def test_selection_by_name_keeps_order_and_rejects_unknown_names() -> None:
    deployments = read_deployments(PREFECT_FILE)
    assert [d.name for d in select_deployments(deployments, names=["report", "ingest-aptos"])] == [
        "report",
        "ingest-aptos",
    ]
    with pytest.raises(StackError, match="no-such-deployment"):
        select_deployments(deployments, names=["no-such-deployment"])


def test_flows_not_written_yet_are_set_aside(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "ingest.py").write_text("")
    deployable, missing = split_deployable(read_deployments(PREFECT_FILE), tmp_path)
    assert {d.name for d in deployable} == set(INGEST)
    assert "retrain-pipeline" in {d.name for d in missing}


def test_landing_folders_are_the_local_ingest_locations(tmp_path: Path) -> None:
    assert sorted(landing_folders(PREFECT_FILE, tmp_path)) == [
        tmp_path / ".retina" / "landing" / "aptos",
        tmp_path / ".retina" / "landing" / "kermany",
    ]


def test_environment_points_children_at_this_server_and_keeps_user_choices(tmp_path: Path) -> None:
    config = StackConfig(prefect_home=tmp_path, host="127.0.0.1")
    env = stack_environment(
        config,
        4321,
        {"PREFECT_API_URL": "http://elsewhere/api", "PREFECT_WORKER_QUERY_SECONDS": "7", "PATH": "/bin"},
    )
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4321/api"
    assert (env["PREFECT_SERVER_API_HOST"], env["PREFECT_SERVER_API_PORT"]) == ("127.0.0.1", "4321")
    assert env["PREFECT_HOME"] == str(tmp_path)
    assert env["PREFECT_WORKER_QUERY_SECONDS"] == "7"
    assert env["RETINA_PROJECT_DIR"] == str(config.project_dir)
    assert env["PATH"] == "/bin"


def test_command_line_flags_map_onto_the_config(tmp_path: Path) -> None:
    config = parse_args(
        ["--port", "4300", "--prefect-home", str(tmp_path), "--no-worker", "--all-deployments"]
    )
    assert (config.port, config.worker, config.deploy_pools, config.gpu_pool) == (4300, False, None, True)
    config = parse_args(["--deployment", "ingest-aptos", "--prefect-home", str(tmp_path), "--no-deploy"])
    assert config.deployment_names == ("ingest-aptos",) and not config.deploy
    assert config.deploy_pools == (LOCAL_POOL,) and not config.gpu_pool


def test_the_client_answers_for_this_stack_only() -> None:
    """Bound to the stack's own URL: nothing listens there, so it must not find some other API
    (the ephemeral one ``get_client()`` starts where PREFECT_API_URL is unset)."""
    stack = LocalStack()
    stack.api_url = f"http://127.0.0.1:{free_port()}/api"
    with stack.client() as client:
        assert str(client.api_url).rstrip("/") == stack.api_url
    assert not stack.healthy()


# --- the real stack -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prefect-server")


def stack_config(prefect_home: Path) -> StackConfig:
    return StackConfig(
        prefect_home=prefect_home,
        deployment_names=INGEST,  # the flows that exist today; the others are written elsewhere
        create_landing=False,
        startup_timeout_s=150,
        stop_timeout_s=10,
    )


@pytest.fixture
def stack(prefect_home: Path) -> Iterator[LocalStack]:
    """Started for real; stopped on every exit, a failing assertion included."""
    local_stack = LocalStack(stack_config(prefect_home))
    try:
        yield local_stack.start()
    finally:
        local_stack.stop()


def wait_until_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (alive := [pid for pid in pids if pid_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


@pytest.mark.slow
def test_local_stack_serves_deploys_polls_and_stops_completely(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stack.healthy()
    pool = stack.work_pool(LOCAL_POOL)
    assert pool is not None and pool.type == "process"
    assert "working_dir" in pool.base_job_template["variables"]["properties"]
    with stack.client() as client:
        deployments = client.read_deployments()
    assert {d.name for d in deployments} == set(INGEST)
    assert all(d.work_pool_name == LOCAL_POOL for d in deployments)
    stack.wait_for(lambda: bool(stack.workers(LOCAL_POOL)), "the worker to register", timeout_s=90)

    processes = dict(stack.processes)
    assert set(processes) == {"server", "worker"}
    trees = {name: [p.pid, *descendants(p.pid)] for name, p in processes.items()}
    names = {p.pid: name for name, p in processes.items()}
    seen: list[tuple[str, bool, list[int]]] = []  # (stopping, server answers, worker tree pids alive)
    real_stop = stack_module.stop_process

    def recording_stop(process: subprocess.Popen[bytes], timeout_s: float) -> None:
        alive = [pid for pid in trees["worker"] if pid_alive(pid)]
        seen.append((names[process.pid], stack.healthy(), alive))
        real_stop(process, timeout_s)

    monkeypatch.setattr(stack_module, "stop_process", recording_stop)
    stack.stop()

    # The worker stops first, while the server still answers (it can report its runs' states),
    # and is gone, children included, before the server is asked to stop.
    assert [(name, answering) for name, answering, _ in seen] == [("worker", True), ("server", True)]
    assert seen[1][2] == [], "the worker's process tree outlived its stop"
    assert all(process.poll() is not None for process in processes.values())
    assert wait_until_gone(trees["server"] + trees["worker"], 30) == []
    assert not stack.healthy()


@pytest.mark.slow
def test_command_line_stops_on_sigterm_and_exits_zero(prefect_home: Path, repo_root: Path) -> None:
    """`make serve` as a user runs it; a restart on an existing home finds the pool (deploying is covered above)."""
    command = [sys.executable, "-m", "deployments.stack", "--prefect-home", str(prefect_home)]
    command += ["--no-deploy", "--startup-timeout", "150"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    tree: list[int] = []
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops"):
                break
        output = "".join(lines)
        assert "Prefect UI:  http://127.0.0.1:" in output, output
        assert f"work pool {LOCAL_POOL} exists" in output or f"created work pool {LOCAL_POOL}" in output
        tree = descendants(process.pid)
        assert len(tree) >= 2, "server and worker run as children"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert wait_until_gone(tree, 5) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in tree:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
