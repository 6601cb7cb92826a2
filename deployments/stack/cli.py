"""``python -m deployments.stack``: flags onto a :class:`StackConfig`, then the stack until a signal."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from deployments.stack.config import GPU_POOL, LOCAL_POOL, PROJECT_DIR, StackConfig, StackError
from deployments.stack.local import LocalStack

logger = logging.getLogger(__name__)
DESCRIPTION = (
    "The local deployment stack behind ``make serve``: a Prefect server, work pools, deployments, a worker."
)


def parse_args(argv: Sequence[str] | None) -> StackConfig:
    parser = argparse.ArgumentParser(prog="python -m deployments.stack", description=DESCRIPTION)
    port = os.environ.get("PREFECT_SERVER_API_PORT")
    parser.add_argument(
        "--port",
        type=int,
        default=int(port) if port else None,
        help="API/UI port (default: $PREFECT_SERVER_API_PORT, else a free one).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Bind address (default: loopback only).")
    parser.add_argument(
        "--prefect-home",
        type=Path,
        default=None,
        help="Server database and logs (default: $PREFECT_HOME, else .retina/prefect-server).",
    )
    parser.add_argument(
        "--all-deployments", action="store_true", help="Deploy every deployment, GPU pool included."
    )
    parser.add_argument(
        "--deployment", action="append", dest="names", metavar="NAME", help="Deploy only NAME (repeatable)."
    )
    parser.add_argument(
        "--gpu-pool",
        action="store_true",
        help=f"Create the {GPU_POOL} Kubernetes pool (needs prefect-kubernetes).",
    )
    parser.add_argument(
        "--gpu-worker",
        action="store_true",
        help=f"Create {GPU_POOL} as a process pool and start a process worker for it "
        "(this host's GPU, as infra/compose.yaml's worker-gpu).",
    )
    parser.add_argument(
        "--no-deploy", action="store_true", help="Keep the deployments already on the server."
    )
    parser.add_argument("--no-worker", action="store_true", help="Do not start the process worker.")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="Seconds to wait for the API.")
    args = parser.parse_args(argv)
    home = args.prefect_home or Path(
        os.environ.get("PREFECT_HOME") or PROJECT_DIR / ".retina" / "prefect-server"
    )
    return StackConfig(
        prefect_home=home.expanduser().absolute(),
        host=args.host,
        port=args.port,
        deployment_names=tuple(args.names) if args.names else None,
        deploy_pools=None if args.all_deployments or args.gpu_worker else (LOCAL_POOL,),
        gpu_pool=args.gpu_pool or args.gpu_worker or args.all_deployments,
        gpu_worker=args.gpu_worker,
        deploy=not args.no_deploy,
        worker=not args.no_worker,
        startup_timeout_s=args.startup_timeout,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    os.environ.setdefault("DO_NOT_TRACK", "1")  # before anything imports prefect: no telemetry banner
    stack = LocalStack(parse_args(argv))
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also where a non-interactive parent left it ignored
    code = 0
    try:
        stack.start()
        print(f"Prefect UI:  {stack.ui_url}", flush=True)
        print(f"Prefect API: {stack.api_url}  (export PREFECT_API_URL={stack.api_url})", flush=True)
        print(f"Logs:        {stack.log_dir}", flush=True)
        print("Ctrl-C stops the worker, then the server.", flush=True)
        code = stack.wait()
    except KeyboardInterrupt:
        logger.info("stopping")
    except StackError as exc:
        logger.error("%s", exc)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
    return code
