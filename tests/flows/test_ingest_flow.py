"""The ingest flow under Prefect's real ephemeral API, with its event checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from retina_core.config import Settings, write_settings_file
from retina_core.domain import Source
from tests.flows.conftest import assert_form
from tests.support.files import aptos_folder, image_bytes


def test_ingest_flow_maps_chunks_and_emits_dataset_updated(
    prefect_api: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.ingest as ingest_module
    from flows.ingest import DATASET_UPDATED, IngestParams, ingest_flow

    emitted: list[dict] = []
    real_emit = ingest_module.emit_event

    def spy(**kwargs):  # record, then really emit to the API
        emitted.append(kwargs)
        return real_emit(**kwargs)

    monkeypatch.setattr(ingest_module, "emit_event", spy)
    settings = Settings(home=tmp_path / "home")
    root = aptos_folder(
        tmp_path / "aptos",
        [(f"i{i}", str(i % 5)) for i in range(7)] + [("bad", "9")],
        {**{f"i{i}": image_bytes(seed=i) for i in range(7)}, "bad": image_bytes(seed=99)},
    )
    config = write_settings_file(settings, tmp_path / "settings.yaml")
    params = IngestParams(source=Source.APTOS, location=str(root), chunk_size=3, config_file=str(config))
    state = ingest_flow(params, return_state=True)
    summary = state.result()
    assert state.is_completed()
    assert (summary.accepted, len(summary.quarantined)) == (7, 1)
    assert len(emitted) == 1
    event = emitted[0]
    assert event["event"] == DATASET_UPDATED
    assert event["payload"]["new_images"] == 7
    assert event["payload"]["new_by_modality"] == {"fundus": 7}
    assert event["payload"]["dataset_version"] == summary.dataset_version
    assert event["resource"]["prefect.resource.id"] == f"retina.dataset.{summary.dataset_version}"

    # A re-run accepts nothing new and therefore emits nothing (no retrain storm).
    again = ingest_flow(params)
    assert again.accepted == 0 and len(emitted) == 1


def test_flow_parameters_render_a_form_schema() -> None:
    from flows.ingest import IngestParams, ingest_flow

    assert_form(
        ingest_flow,
        IngestParams,
        {
            "config_file": "string | null",
            "quick": "boolean",
            "source": "enum(aptos,kermany,pairs,dicom)",
            "location": "string",
            "labels": "string | null",
            "chunk_size": "integer",
            "emit": "boolean",
        },
    )
