"""The whole retrain-pipeline flow, quick preset, under Prefect's ephemeral API."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from retina_core.config import Settings, write_settings_file
from retina_core.domain import Source
from retina_core.results import SourceSpec

SECTIONS = ["summary", "data", "models", "fusion", "explanations", "model-cards", "notes"]


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = dict(attrs)
        if d.get("id"):
            self.ids.add(d["id"])
        if tag == "img" and d.get("src"):
            self.images.append(d["src"])


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory, prefect_api: None):
    from flows.pipeline import PipelineParams, retrain_pipeline_flow
    from retina_core.data.synthetic import SynthSpec, write_synthetic

    root = tmp_path_factory.mktemp("pipeline")
    data = root / "data"
    write_synthetic(data, SynthSpec(fundus=70, oct=90, pairs=60, size=96, seed=3))
    base = Settings(home=root / "home")
    d = base.model_dump()
    for m in ("fundus", "oct"):
        d["train"][m].update(image_size=32, epochs=1, batch_size=16)
    d["evaluation"]["bootstrap"] = 100
    d["explain"].update(examples_per_class=1, max_images=8)
    d["fusion"]["epochs"] = 10
    settings = Settings.model_validate(d)
    params = PipelineParams(
        config_file=str(write_settings_file(settings, root / "settings.yaml")),
        sources=[
            SourceSpec(source=Source.APTOS, location=str(data / "aptos")),
            SourceSpec(source=Source.KERMANY, location=str(data / "kermany")),
            SourceSpec(source=Source.PAIRS, location=str(data / "pairs.csv")),
        ],
        synthetic=True,
    )
    result = retrain_pipeline_flow(params)
    return settings, result


def test_pipeline_writes_a_complete_report(pipeline_run) -> None:
    _, result = pipeline_run
    path = Path(result.report_path)
    assert path.is_file() and path.name == "index.html"
    html = path.read_text()
    parser = _Ids()
    parser.feed(html)
    missing = [s for s in SECTIONS if s not in parser.ids]
    assert not missing, f"report sections missing: {missing}"
    for model in ("fundus_cnn", "oct_cnn", "fusion_head"):
        assert f"model-{model}" in parser.ids
    assert all(src.startswith("data:image/png;base64,") for src in parser.images) and parser.images
    assert "http://" not in html and "https://" not in html
    # Real numbers with CIs, not placeholders, for every trained model's primary metric.
    for model in ("fundus_cnn", "oct_cnn"):
        primary = re.search(rf'id="model-{model}-primary">([^<]+)<', html)
        assert primary and re.fullmatch(r"-?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\]", primary.group(1).strip())
    assert "shuffled" in html.lower() and ("virtual" in html.lower() or "real" in html.lower())
    # Started by hand: the retrain policy's decision (rule "manual") is in the report.
    assert re.search(r'id="retrain-reason">Retrain ran: rule\(s\) fired: <strong>manual</strong>', html)
    # Every gallery image the report refers to was written beside it.
    import json

    data = json.loads((path.parent / "report.json").read_text())
    gallery = [g["path"] for e in data["explanations"] or [] for g in e["gallery"]]
    assert gallery and all((path.parent / g).is_file() for g in gallery)
    # The fusion decision is explained too: both modalities' maps of test pairs, in the page.
    [fusion] = [e for e in data["explanations"] if e["model"] == "fusion_head"]
    assert fusion["gallery"] and fusion["note"] and "explain-fusion_head-gallery" in parser.ids
    assert {g["true_label"] for g in fusion["gallery"]} <= {"normal", "disease"}


def test_pipeline_registered_models_and_kept_a_copy_in_the_store(pipeline_run) -> None:
    from retina_core import verbs
    from retina_core.catalog.registry import list_versions

    settings, result = pipeline_run
    names = {v.name for v in list_versions(verbs.catalog_engine(settings))}
    assert {"fundus_cnn", "oct_cnn", "fusion_head"} <= names
    assert verbs.curated_store(settings).exists(f"reports/{result.run_id}/index.html")
    assert {m["model"] for m in result.contract()["models"]} == {"fundus_cnn", "oct_cnn"}


def test_the_run_is_named_for_what_started_it(pipeline_run) -> None:
    """No ``retrain-None`` in the UI: a chosen run id names the run, else how it was started."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        [newest] = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["retrain-pipeline"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
    assert newest.name == "retrain-manual"
