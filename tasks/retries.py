"""The one retry rule of every task: retry when the object store or the database was away, nothing else.

A retry can fix an endpoint that was briefly unreachable; a bug, bad data or an unusable
landing location fails the same way again and only burns the time (and, for the
expensive stages, hides the real error behind minutes of waiting). The training,
embedding and fusion stages make a retry cheap: it resumes rather than restarts (epoch
checkpoints, the preprocessed and embedding caches, registration keyed by run key).
"""

from __future__ import annotations

from typing import Any

from prefect.states import State
from sqlalchemy.exc import InterfaceError, OperationalError

from retina_core.storage import StorageUnavailable

TRANSIENT = (StorageUnavailable, OperationalError, InterfaceError, ConnectionError, TimeoutError)
"""S3 unreachable after the client's own retries; the database unreachable, restarting or locked."""


def io_failure(task: Any, task_run: Any, state: State) -> bool:
    """A Prefect ``retry_condition_fn``: retry when the failure was one of :data:`TRANSIENT`."""
    try:
        state.result()
    except TRANSIENT:
        return True
    except Exception:
        return False
    return False


IO_RETRIES: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [10, 60],  # past botocore's own ~30 s of backoff, then a longer wait
    "retry_condition_fn": io_failure,
}
