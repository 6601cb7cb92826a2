"""What flows and tasks accept and keep: a UI form's worth of parameters, one retry rule, nothing cached.

Prefect stores every flow run's parameters in its database and shows them in the UI, which
has no login; so no flow may take the settings object or a connection setting. Tasks do get
the settings (in memory, within the run), so none may cache or persist its inputs.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import get_type_hints

import pytest

import flows
import tasks
from flows.common import RunConfig
from retina_core.config import Settings, with_overrides

CONNECTION_WORDS = ("settings", "database", "storage_url", "endpoint", "password", "secret", "aws")


def _members(package: object, kind: str) -> list[tuple[str, object]]:
    found = []
    for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):  # type: ignore[attr-defined]
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if type(obj).__name__ == kind and getattr(obj, "fn", None) and obj.fn.__module__ == info.name:
                found.append((f"{info.name}.{name}", obj))
    return found


FLOWS = _members(flows, "Flow")
TASKS = _members(tasks, "Task")


def test_every_flow_and_task_was_found() -> None:
    assert {name.rsplit(".", 1)[1] for name, _ in FLOWS} >= {
        "ingest_flow",
        "train_modality_flow",
        "embed_flow",
        "train_fusion_flow",
        "report_flow",
        "retrain_pipeline_flow",
    }
    assert len(TASKS) >= 12


@pytest.mark.parametrize(("name", "flow"), FLOWS, ids=[n for n, _ in FLOWS])
def test_flows_take_one_form_and_no_connection_setting(name: str, flow: object) -> None:
    from prefect.utilities.callables import parameter_schema

    [param] = inspect.signature(flow.fn).parameters  # type: ignore[attr-defined]
    assert issubclass(get_type_hints(flow.fn)[param], RunConfig)  # type: ignore[attr-defined]
    fields = _field_names(parameter_schema(flow.fn).model_dump())  # type: ignore[attr-defined]
    assert "config_file" in fields
    assert not [f for f in fields for w in CONNECTION_WORDS if w in f.lower()], sorted(fields)


def _field_names(schema: object) -> set[str]:
    """Every property name anywhere in a JSON schema (nested models included)."""
    names: set[str] = set()
    if isinstance(schema, dict):
        names |= set(schema.get("properties", {}) or {})
        for value in schema.values():
            names |= _field_names(value)
    elif isinstance(schema, list):
        for value in schema:
            names |= _field_names(value)
    return names


@pytest.mark.parametrize(("name", "task"), TASKS, ids=[n for n, _ in TASKS])
def test_tasks_share_one_retry_rule_and_persist_nothing(name: str, task: object) -> None:
    from prefect.cache_policies import NONE

    from tasks.retries import IO_RETRIES, io_failure

    assert task.cache_policy is NONE, name  # type: ignore[attr-defined]
    assert not task.persist_result, name  # type: ignore[attr-defined]
    if task.retries:  # type: ignore[attr-defined]
        assert task.retry_condition_fn is io_failure, name  # type: ignore[attr-defined]
        assert task.retries == IO_RETRIES["retries"], name  # type: ignore[attr-defined]


def test_with_overrides_sets_what_was_typed_and_keeps_the_rest() -> None:
    base = Settings(home="/tmp/retina-apply")
    assert with_overrides(base, {"fusion": {"epochs": None}, "embed": {}}) is base
    changed = with_overrides(base, {"fusion": {"epochs": 5, "seed": None}, "train": {"oct": {"epochs": 3}}})
    assert (changed.fusion.epochs, changed.fusion.seed, changed.train.oct.epochs) == (5, base.fusion.seed, 3)
    assert changed.train.fundus == base.train.fundus and base.fusion.epochs != 5
    with pytest.raises(ValueError):
        with_overrides(base, {"fusion": {"epochs": 0}})  # validated like any other source


def test_a_run_reads_connection_settings_from_the_worker_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from flows.train import TrainParams

    monkeypatch.setenv("RETINA_DATABASE_URL", "sqlite:////worker/catalog.db")
    params = TrainParams(modality="oct", epochs=3, quick=True)
    settings = params.settings()
    assert settings.database_url == "sqlite:////worker/catalog.db"
    assert (settings.train.oct.epochs, settings.train.oct.image_size) == (3, 64)
    assert "sqlite" not in params.model_dump_json()
