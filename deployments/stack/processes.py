"""Child process trees (Linux/macOS): start them stoppable, stop them completely.

A process started in the background from a non-interactive shell inherits an ignored
SIGINT, and a Prefect worker in that state ignores SIGTERM too (it keeps starting runs
until a second signal kills it hard). Children are therefore started with SIGINT and
SIGTERM reset to their defaults, in their own session, so that a terminal's Ctrl-C
reaches only the parent and the ordered shutdown is the parent's to run.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def child_setup() -> None:
    """Runs in the child before exec: default SIGINT/SIGTERM, and die with this process on Linux."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat from field 3 (state) on; the command name before it may hold spaces."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            children.setdefault(int(_stat_fields(int(stat.parent.name))[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _start_time(pid: int) -> str | None:
    """Clock ticks since boot when ``pid`` started: tells our process from a later one with its pid."""
    with contextlib.suppress(OSError, IndexError):
        return _stat_fields(pid)[19]
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):  # a zombie has exited; its parent has yet to reap it
        return _stat_fields(pid)[0] != "Z"
    return True


def stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the child's session, then SIGKILL whatever of its tree is left after ``timeout_s``.

    The tree is snapshotted with start times before the first signal, so the SIGKILL
    round never reaches an unrelated process that inherited a freed pid.
    """
    if process.poll() is not None:
        return
    tree = {pid: _start_time(pid) for pid in descendants(process.pid)}
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        logger.warning("pid %d did not stop within %.0f s: killing it", process.pid, timeout_s)
        process.kill()
        process.wait()
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, started in tree.items():
        if pid_alive(pid) and _start_time(pid) == started:
            logger.warning("killing pid %d, left behind by pid %d", pid, process.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def log_tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def spawn(command: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A long-running child in its own session, output appended to ``log``, stoppable by SIGTERM."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=child_setup,  # no threads here; the only way to reset an ignored SIGINT
        )


def run_logged(command: list[str], *, cwd: Path, env: dict[str, str], log: Path, timeout_s: float) -> int:
    """Run a command to completion like :func:`spawn`; its exit status.

    Past ``timeout_s`` (``subprocess.TimeoutExpired``), or when this process is interrupted
    meanwhile, the command's tree is stopped rather than left running.
    """
    process = spawn(command, cwd=cwd, env=env, log=log)
    try:
        return process.wait(timeout=timeout_s)
    finally:
        stop_process(process, timeout_s=10.0)  # returns at once when it has exited
