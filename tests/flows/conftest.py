from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

import tests.support.prefect  # noqa: F401  (sets the Prefect environment first)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """Prefect's ephemeral API with the per-flow heartbeat off (it costs ~1 s per flow)."""
    from flows.runtime import fast_flows

    with fast_flows():
        yield


def flow_run_artifacts(flow_run_id: object) -> dict[str, Any]:
    """The artifacts one flow run published, by key, read back through the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def form_fields(flow: Any, model: str) -> dict[str, tuple[str, str | None]]:
    """What Prefect's UI form shows for a flow's parameter model: field -> (type, description).

    Read from the JSON schema Prefect stores on a deployment (``parameter_schema``), with
    references resolved: an enum reads ``enum(a,b)``, an optional field ``T | null``.
    """
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(flow.fn).model_dump()
    # the form is the one parameter model: no settings object, URLs or credentials beside it
    assert set(schema["properties"]) == {"params"}, (
        f"{flow.name} takes more than its form: {schema['properties']}"
    )
    definitions = schema["definitions"]

    def kind(prop: dict[str, Any]) -> str:
        if "$ref" in prop:
            return kind(definitions[prop["$ref"].rsplit("/", 1)[-1]])
        if "anyOf" in prop:
            return " | ".join(kind(option) for option in prop["anyOf"])
        if "enum" in prop:
            return f"enum({','.join(map(str, prop['enum']))})"
        return str(prop["type"])

    properties = definitions[model]["properties"]
    return {name: (kind(prop), prop.get("description")) for name, prop in properties.items()}


def assert_form(flow: Any, model: type[BaseModel], kinds: dict[str, str]) -> None:
    """The UI form of ``flow`` has exactly these fields and types, each with its model's description."""
    form = form_fields(flow, model.__name__)
    assert {name: kind for name, (kind, _) in form.items()} == kinds
    described = {name: field.description for name, field in model.model_fields.items()}
    assert {name: text for name, (_, text) in form.items()} == described
    assert all(described.values()), f"{model.__name__} has fields without a description: {described}"
