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


def test_a_long_manifest_streams_through_the_flow_in_bounded_memory(
    prefect_api: None, tmp_path: Path
) -> None:
    """Issue 14, item 5, on the flow the CLI runs: while chunks are processed, the flow holds
    a window of chunks, not the manifest. Before, it listed every candidate, mapped every
    chunk at once and gathered every outcome (Prefect walking and remembering each): memory
    during the chunks was more than the whole listing. Measured at each finished chunk
    (after a collection, so garbage not yet freed does not count), against what listing all
    the candidates takes in this process."""
    import gc
    import tracemalloc

    from flows.ingest import IngestParams, ingest_flow
    from retina_core import progress, verbs

    rows = 10_000
    manifest = tmp_path / "pairs" / "pairs.csv"
    manifest.parent.mkdir()
    with manifest.open("w") as fh:  # every row names missing files: cheap to process
        fh.write("patient_id,eye,fundus_path,oct_path,dr_grade,oct_class\n")
        fh.writelines(f"P{i},OD,f/missing-{i}.png,o/missing-{i}.jpeg,1,DME\n" for i in range(rows))
    settings = Settings(home=tmp_path / "home")
    config = write_settings_file(settings, tmp_path / "settings.yaml")
    params = IngestParams(
        source=Source.PAIRS, location=str(manifest), chunk_size=256, emit=False, config_file=str(config)
    )
    # the API server and Prefect's lazy imports start with the first flow: not the ingest's memory
    (tmp_path / "one.csv").write_text(
        "patient_id,eye,fundus_path,oct_path,dr_grade,oct_class\nP,OD,f,o,1,DME\n"
    )
    ingest_flow(params.model_copy(update={"location": str(tmp_path / "one.csv")}))

    during: list[int] = []

    class AtEachChunk:
        def emit(self, event: progress.ProgressEvent) -> None:
            if isinstance(event, progress.ShardDone) and event.items and len(during) % 4 == 0:
                gc.collect()
            if isinstance(event, progress.ShardDone) and event.items:
                during.append(tracemalloc.get_traced_memory()[0] - base)

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        listing = list(verbs.scan_candidates(settings, Source.PAIRS, str(manifest)))
        listed = tracemalloc.get_traced_memory()[0] - base
        del listing
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        with progress.installed(AtEachChunk()):
            summary = ingest_flow(params)
    finally:
        tracemalloc.stop()
    assert summary.scanned == 2 * rows and len(summary.quarantined) == 2 * rows
    assert len(during) == 2 * rows // 256 + 1
    collected = during[::4]  # the measures taken right after a collection
    # Alone it holds ~3 MB; on a loaded machine Prefect's log and event queues back up and
    # add a few MB. Listing everything (what the flow did before: ~70 MB here) stays far above.
    assert max(collected) < listed, (
        f"{max(collected) / 1e6:.1f} MB held while mapping; listing all takes {listed / 1e6:.1f} MB"
    )
