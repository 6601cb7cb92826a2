"""Which deployments of prefect.yaml to deploy: read, select, set aside what cannot be deployed yet."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from deployments.stack.config import LOCAL_POOL, PREFECT_FILE, StackError


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str
    work_pool: str

    @property
    def entrypoint_file(self) -> str:
        return self.entrypoint.rsplit(":", 1)[0]


def read_deployments(prefect_file: Path = PREFECT_FILE) -> list[DeploymentSpec]:
    spec = yaml.safe_load(prefect_file.read_text())
    return [
        DeploymentSpec(d["name"], d["entrypoint"], (d.get("work_pool") or {}).get("name", ""))
        for d in spec.get("deployments") or []
    ]


def select_deployments(
    deployments: Sequence[DeploymentSpec],
    *,
    names: Sequence[str] | None = None,
    pools: Iterable[str] | None = (LOCAL_POOL,),
) -> list[DeploymentSpec]:
    """By explicit names (an unknown name is an error), else by work pool (None: every pool)."""
    if names is not None:
        by_name = {d.name: d for d in deployments}
        unknown = sorted(set(names) - by_name.keys())
        if unknown:
            raise StackError(f"no deployment named {', '.join(unknown)} in prefect.yaml")
        return [by_name[name] for name in names]
    wanted = None if pools is None else set(pools)
    return [d for d in deployments if wanted is None or d.work_pool in wanted]


def split_deployable(
    deployments: Sequence[DeploymentSpec], project_dir: Path
) -> tuple[list[DeploymentSpec], list[DeploymentSpec]]:
    """``(deployable, missing)``: a flow whose file does not exist yet is skipped, not fatal."""
    present = [d for d in deployments if (project_dir / d.entrypoint_file).is_file()]
    return present, [d for d in deployments if d not in present]


def landing_folders(prefect_file: Path, project_dir: Path) -> list[Path]:
    """Local ``location`` parameters of the deployments: a scheduled ingest fails on a missing folder."""
    spec = yaml.safe_load(prefect_file.read_text())
    folders = []
    for deployment in spec.get("deployments") or []:
        location = ((deployment.get("parameters") or {}).get("params") or {}).get("location")
        if isinstance(location, str) and "://" not in location and "{{" not in location:
            folders.append(project_dir / location)
    return folders
