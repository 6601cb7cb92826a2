"""The local deployment stack behind ``make serve``: a Prefect server, work pools, deployments, a worker.

Everything runs as child processes of this one so that a single Ctrl-C (or SIGTERM)
stops it all, in order: the worker first (so it starts no new run against a server that
is going away), then the server. Prefect's own CLI starts the server and the worker and
deploys; Prefect's own client checks health and creates the work pools.

- ``config``: what a stack needs and the environment its children get;
- ``selection``: which deployments of prefect.yaml to deploy;
- ``processes``: starting and stopping child process trees;
- ``local``: :class:`LocalStack`, the steps in order;
- ``cli``: ``python -m deployments.stack [--port N] [--all-deployments] [--deployment NAME ...]
  [--gpu-pool] [--no-deploy] [--no-worker]``.
"""

from deployments.stack.cli import main, parse_args
from deployments.stack.config import (
    GPU_POOL,
    LOCAL_POOL,
    PREFECT_FILE,
    PROJECT_DIR,
    StackConfig,
    StackError,
    free_port,
    stack_environment,
)
from deployments.stack.local import LocalStack
from deployments.stack.processes import descendants, log_tail, pid_alive
from deployments.stack.selection import (
    DeploymentSpec,
    landing_folders,
    read_deployments,
    select_deployments,
    split_deployable,
)

__all__ = [
    "GPU_POOL",
    "LOCAL_POOL",
    "PREFECT_FILE",
    "PROJECT_DIR",
    "DeploymentSpec",
    "LocalStack",
    "StackConfig",
    "StackError",
    "descendants",
    "free_port",
    "landing_folders",
    "log_tail",
    "main",
    "parse_args",
    "pid_alive",
    "read_deployments",
    "select_deployments",
    "split_deployable",
    "stack_environment",
]
