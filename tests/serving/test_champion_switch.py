"""A promotion in the registry changes the answering version on the next request, no restart."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from retina_core.catalog.registry import champion, promote
from retina_core.fusion.train import train_fusion
from retina_core.serving import create_app
from tests.serving.conftest import eyes, make_world, serve_settings


def test_promoting_a_new_fusion_head_switches_the_running_service(tmp_path: Path) -> None:
    world = make_world(tmp_path / "own-world")  # its own registry: promotions here touch no other test
    first = champion(world.engine, "fusion_head")
    assert first is not None
    eye = eyes(world, 1)[0]
    app = create_app(serve_settings(world), world.engine, world.store)
    with TestClient(app) as client:
        before = client.post(
            "/v1/predict?gradcam=false", files={"fundus": ("f", eye.fundus), "oct": ("o", eye.oct)}
        )
        assert before.json()["models"]["fusion_head"] == first.version

        retrained = world.settings.model_copy(deep=True)
        retrained.fusion.seed = 1  # other inputs: a new version
        report = train_fusion(retrained, world.engine, world.store)
        assert report.version != first.version
        promote(world.engine, "fusion_head", report.version, actor="test", reason="switch without restart")

        after = client.post(
            "/v1/predict?gradcam=false", files={"fundus": ("f", eye.fundus), "oct": ("o", eye.oct)}
        )
        assert after.json()["models"]["fusion_head"] == report.version
        assert after.json()["fusion"]["version"] == report.version
        assert after.json()["fusion"]["disease_probability"] != before.json()["fusion"]["disease_probability"]
        listed = {m["name"]: m["version"] for m in client.get("/v1/models").json()["models"]}
        assert listed["fusion_head"] == report.version
        assert client.get("/readyz").json()["models"]["fusion_head"] == report.version

        promote(world.engine, "fusion_head", first.version, actor="test", reason="and back")
        back = client.post("/v1/predict?gradcam=false", files={"oct": ("o", eye.oct)})
        assert back.json()["models"]["fusion_head"] == first.version
