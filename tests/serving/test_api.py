"""The prediction API through FastAPI's test client: every field, every refusal code."""

from __future__ import annotations

import io
import json
import logging
import math
import struct
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from retina_core.catalog.registry import champion
from retina_core.evaluation import EvaluationResult
from retina_core.models.persist import read_json
from retina_core.predict import Predictor
from retina_core.results import FusionEvaluation
from retina_core.serving import create_app
from tests.fusion.world import World
from tests.serving.conftest import eyes, serve_settings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _pixel_bomb(side: int = 100_000) -> bytes:
    """A few hundred bytes whose header claims side x side pixels (never decodable in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        PNG_MAGIC + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _stored_temperature(world: World, name: str) -> float:
    version = champion(world.engine, name)
    assert version is not None
    metrics = read_json(world.store, version.object_prefix, "metrics.json")
    return EvaluationResult.model_validate(metrics["evaluation"]).calibration.temperature


def _fusion_evaluation(world: World) -> FusionEvaluation:
    version = champion(world.engine, "fusion_head")
    assert version is not None
    return FusionEvaluation.model_validate(read_json(world.store, version.object_prefix, "metrics.json"))


def _tempered(probabilities: list[float], temperature: float) -> np.ndarray:
    z = np.log(np.asarray(probabilities)) / temperature
    return np.exp(z - z.max()) / np.exp(z - z.max()).sum()


def test_a_pair_gets_every_field(client: TestClient, serve_world: World) -> None:
    eye = eyes(serve_world, 1)[0]
    response = client.post("/v1/predict", files={"fundus": ("f.png", eye.fundus), "oct": ("o.jpeg", eye.oct)})
    assert response.status_code == 200
    body = response.json()
    assert len(body["id"]) == 32 and int(body["id"], 16) >= 0
    registered = {
        n: champion(serve_world.engine, n).version  # type: ignore[union-attr]
        for n in ("fundus_cnn", "oct_cnn", "fusion_head", "fusion_multitask")
    }
    assert body["models"] == registered
    assert "Research use only" in body["research_use_only"]

    expected = Predictor(serve_world.settings, serve_world.engine, serve_world.store).predict(
        eye.fundus, eye.oct
    )
    for key, raw, names, referable in (
        ("fundus", expected.fundus, ["No DR", "Mild", "Moderate", "Severe", "Proliferative"], {2, 3, 4}),
        ("oct", expected.oct, ["CNV", "DME", "DRUSEN", "NORMAL"], {0, 1}),
    ):
        part = body[key]
        assert part["status"] == "predicted" and part["quality"] == []
        assert part["version"] == registered[f"{key}_cnn"] and list(part["probabilities"]) == names
        assert part["probabilities"] == pytest.approx(raw.probabilities)  # the same model, same answer
        temperature = _stored_temperature(serve_world, f"{key}_cnn")
        assert part["temperature"] == pytest.approx(temperature)
        calibrated = _tempered(list(raw.probabilities.values()), temperature)
        assert list(part["calibrated_probabilities"].values()) == pytest.approx(calibrated.tolist())
        assert part["referral_probability"] == pytest.approx(sum(calibrated[i] for i in referable))
        png = client.get(part["gradcam"])
        assert png.status_code == 200 and png.content.startswith(PNG_MAGIC)
        assert png.headers["content-type"] == "image/png"
    assert body["fundus"]["referral_kind"] == "referable DR"
    assert body["oct"]["referral_kind"] == "urgent OCT referral"

    fusion = body["fusion"]
    evaluation = _fusion_evaluation(serve_world)
    assert fusion["fusion"] == "both" and fusion["version"] == registered["fusion_head"]
    assert fusion["disease_probability"] == pytest.approx(expected.fusion.disease_probability)  # type: ignore[union-attr]
    t = evaluation.temperatures["fusion"]
    p = fusion["disease_probability"]
    assert fusion["temperature"] == pytest.approx(t)
    assert fusion["calibrated_disease_probability"] == pytest.approx(
        1 / (1 + math.exp(-math.log(p / (1 - p)) / t))
    )
    assert fusion["operating_threshold"] == pytest.approx(evaluation.row("fusion").result.youden_threshold)
    assert fusion["above_threshold"] == (
        fusion["calibrated_disease_probability"] >= fusion["operating_threshold"]
    )
    for side in ("fundus", "oct"):
        assert client.get(fusion["gradcam"][side]).content.startswith(PNG_MAGIC)
    # the share of the fused decision per modality, as predict measures it (IG over the two embeddings)
    assert expected.fusion is not None and expected.fusion.modality_share is not None
    assert fusion["modality_share"] == pytest.approx(expected.fusion.modality_share)
    assert fusion["modality_share"]["fundus"] + fusion["modality_share"]["oct"] == pytest.approx(1.0)
    # the champion multi-task head's three outputs, as predict gives them
    multitask, own = body["multitask"], expected.multitask
    assert own is not None and multitask["version"] == registered["fusion_multitask"]
    assert multitask["inputs"] == "both" and list(multitask["grade_probabilities"]) == [
        "No DR",
        "Mild",
        "Moderate",
        "Severe",
        "Proliferative",
    ]
    assert multitask["grade_probabilities"] == pytest.approx(own.grade_probabilities)
    assert multitask["oct_probabilities"] == pytest.approx(own.oct_probabilities)
    assert (multitask["grade"], multitask["oct_class"]) == (own.grade, own.oct_class)
    assert multitask["disease_probability"] == pytest.approx(own.disease_probability)
    assert body["referral"]["decision"] in {"refer", "urgent", "routine"} and body["referral"]["advice"]


@pytest.mark.parametrize(("given", "fusion"), [("fundus", "fundus-only"), ("oct", "oct-only")])
def test_one_image_uses_the_fusion_head_with_one_input(
    client: TestClient, serve_world: World, given: str, fusion: str
) -> None:
    eye = eyes(serve_world, 1)[0]
    data = eye.fundus if given == "fundus" else eye.oct
    body = client.post("/v1/predict?gradcam=false", files={given: ("x", data)}).json()
    other = "oct" if given == "fundus" else "fundus"
    assert body[other] is None and body[given]["status"] == "predicted"
    assert body[given]["gradcam"] is None  # asked for none
    assert body["fusion"]["fusion"] == fusion and body["fusion"]["gradcam"] is None
    evaluation = _fusion_evaluation(serve_world)
    row = {"fundus-only": "fusion_fundus_only", "oct-only": "fusion_oct_only"}[fusion]
    assert body["fusion"]["operating_threshold"] == pytest.approx(evaluation.row(row).result.youden_threshold)
    assert set(body["models"]) == {f"{given}_cnn", "fusion_head", "fusion_multitask"}
    assert body["fusion"]["modality_share"] is None  # one image: no share to split
    assert body["multitask"]["inputs"] == fusion


def test_unusable_images_are_withheld_not_guessed(client: TestClient, serve_world: World) -> None:
    eye = eyes(serve_world, 1)[0]
    black = _png(np.zeros((64, 64, 3), np.uint8))
    body = client.post("/v1/predict", files={"fundus": ("f.png", black), "oct": ("o.jpeg", eye.oct)}).json()
    assert body["fundus"]["status"] == "withheld"
    assert set(body["fundus"]["quality"]) == {"no_fundus_field", "too_dark"}
    assert body["fundus"]["probabilities"] is None and body["fundus"]["model"] is None
    assert body["oct"]["status"] == "predicted"
    assert body["fusion"]["fusion"] == "oct-only"  # the withheld photo never reaches the head
    assert "fundus image was not graded" in body["referral"]["advice"]

    small = np.asarray(Image.open(io.BytesIO(eye.oct)).resize((24, 24)))
    body = client.post("/v1/predict", files={"oct": ("o.png", _png(small))}).json()
    assert body["oct"]["quality"] == ["too_small"] and body["fusion"] is None
    assert body["referral"]["decision"] == "no prediction" and body["models"] == {}


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"%PDF-1.4 definitely not a fundus photo", "not_an_image"),
        (b"", "empty"),
        (PNG_MAGIC + b"\x00\x00\x00\rIHDR truncated", "corrupt"),
        (
            _png(np.full((10, 10), 128, np.uint8)),
            "too_small",
        ),  # below the ingestion's 16 px, not just withheld
    ],
)
def test_non_images_get_415_with_the_ingestion_reason_code(
    client: TestClient, data: bytes, code: str
) -> None:
    response = client.post("/v1/predict", files={"oct": ("scan.jpeg", data)})
    assert response.status_code == 415
    assert response.json()["code"] == code and response.json()["field"] == "oct"


def test_pixel_bombs_are_refused_before_decoding(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: object, **__: object) -> None:
        raise AssertionError("decoded a pixel bomb")

    monkeypatch.setattr(Image.Image, "load", never)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", never)
    response = client.post("/v1/predict", files={"fundus": ("bomb.png", _pixel_bomb())})
    assert response.status_code == 415 and response.json()["code"] == "too_many_pixels"


def test_uploads_over_the_limit_get_413(serve_world: World) -> None:
    app = create_app(
        serve_settings(serve_world, max_upload_bytes=2048), serve_world.engine, serve_world.store
    )
    with TestClient(app) as client:
        one = client.post("/v1/predict", files={"fundus": ("f.png", b"\x89PNG" + b"\0" * 4000)})
        assert one.status_code == 413 and one.json() == {
            "code": "too_large",
            "message": "fundus exceeds 2048 bytes",
            "field": "fundus",
        }
        huge = client.post("/v1/predict", files={"fundus": ("f.png", b"\0" * (3 * 1024 * 1024))})
        assert huge.status_code == 413  # declared too long: refused before anything reads the body
        assert huge.json()["message"].startswith("the request exceeds")

        def endless() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'--b\r\nContent-Disposition: form-data; name="fundus"; filename="f"\r\n\r\n'
            for _ in range(64):
                yield b"\0" * 65536

        streamed = client.post(
            "/v1/predict", content=endless(), headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert streamed.status_code == 413 and streamed.json()["message"].startswith("the request exceeds")
        nothing = client.post("/v1/predict")
        assert nothing.status_code == 422 and nothing.json()["code"] == "no_image"
        wrong = client.post("/v1/predict?gradcam=maybe", files={"oct": ("o", b"x")})
        assert wrong.status_code == 422 and wrong.json() == {
            "code": "invalid_request",
            "message": wrong.json()["message"],
            "field": "gradcam",
        }


def test_bearer_token_guards_every_v1_route(serve_world: World) -> None:
    eye = eyes(serve_world, 1)[0]
    app = create_app(serve_settings(serve_world, token="s3cret-token"), serve_world.engine, serve_world.store)
    with TestClient(app) as client:
        for method, url in (
            ("post", "/v1/predict"),
            ("get", "/v1/models"),
            ("get", f"/v1/predictions/{'0' * 32}/oct-gradcam.png"),
        ):
            refused = client.request(method, url, files={"oct": ("o", eye.oct)} if method == "post" else None)
            assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
            assert refused.headers["www-authenticate"] == "Bearer"
            wrong = client.request(method, url, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        ok = client.post(
            "/v1/predict", files={"oct": ("o", eye.oct)}, headers={"Authorization": "Bearer s3cret-token"}
        )
        assert ok.status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
        assert "s3cret-token" not in client.get("/openapi.json").text


def test_without_a_token_v1_is_open(client: TestClient) -> None:
    assert client.get("/v1/models").status_code == 200


def test_cors_is_off_unless_configured(client: TestClient, serve_world: World) -> None:
    origin = {"Origin": "https://viewer.example"}
    assert "access-control-allow-origin" not in client.get("/v1/models", headers=origin).headers
    app = create_app(
        serve_settings(serve_world, cors_origins=["https://viewer.example"]),
        serve_world.engine,
        serve_world.store,
    )
    with TestClient(app) as allowed:
        assert (
            allowed.get("/v1/models", headers=origin).headers["access-control-allow-origin"]
            == origin["Origin"]
        )


def test_models_lists_champions_with_metrics_and_cards(client: TestClient, serve_world: World) -> None:
    body = client.get("/v1/models").json()
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == {"fundus_cnn", "oct_cnn", "fusion_head", "fusion_multitask"}
    fundus = by_name["fundus_cnn"]
    version = champion(serve_world.engine, "fundus_cnn")
    assert version is not None and fundus["version"] == version.version and fundus["status"] == "champion"
    assert fundus["primary_metric"] == "qwk" and fundus["primary"]["value"] == pytest.approx(
        version.primary_value
    )
    assert fundus["temperature"] == pytest.approx(_stored_temperature(serve_world, "fundus_cnn"))
    qwk = next(m for m in fundus["metrics"] if m["name"] == "qwk" and m["level"] == "image")
    assert qwk["low"] <= qwk["value"] <= qwk["high"]
    assert by_name["fusion_head"]["operating_threshold"] == pytest.approx(
        _fusion_evaluation(serve_world).row("fusion").result.youden_threshold
    )
    card = client.get(fundus["card_url"])
    assert card.status_code == 200 and card.text.startswith(f"# Model card: fundus_cnn v{version.version}")
    assert "Not for diagnosis" in card.text
    assert client.get("/v1/models/fundus_cnn/999/card").status_code == 404


def test_health_ready_docs_and_page(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and set(ready["models"]) == {
        "fundus_cnn",
        "oct_cnn",
        "fusion_head",
        "fusion_multitask",
    }
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "https://" not in docs.text  # Swagger UI from the app itself: /docs works offline
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "Research use only" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from a CDN
    assert client.get("/static/page.js").status_code == 200


def test_readyz_fails_with_the_reason(tmp_path, serve_world: World) -> None:
    from retina_core import verbs
    from retina_core.config import Settings

    empty = Settings.model_validate({"home": tmp_path / "empty"})
    with TestClient(create_app(empty, verbs.catalog_engine(empty), verbs.curated_store(empty))) as client:
        refused = client.get("/readyz")
        assert refused.status_code == 503 and "no model is registered" in refused.json()["message"]
        assert (
            client.post("/v1/predict", files={"oct": ("o", eyes(serve_world, 1)[0].oct)}).status_code == 503
        )

    head = champion(serve_world.engine, "fusion_head")
    assert head is not None
    path = serve_world.store.local_path(f"{head.object_prefix}/weights.safetensors")  # type: ignore[attr-defined]
    genuine = path.read_bytes()
    try:
        path.write_bytes(genuine[:-4] + b"\0\0\0\0")
        app = create_app(serve_settings(serve_world), serve_world.engine, serve_world.store)
        with TestClient(app) as client:
            refused = client.get("/readyz")
            assert refused.status_code == 503 and "DamagedWeights" in refused.json()["message"]
    finally:
        path.write_bytes(genuine)


def test_overlays_stay_in_a_bounded_memory_cache_and_names_never_become_paths(
    serve_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    eye = eyes(serve_world, 1)[0]
    settings = serve_settings(serve_world, overlay_cache=1)
    before = {o.key for o in serve_world.store.list("serve")}
    name = "../../Jane Doe 1961-04-02.png"
    with (
        caplog.at_level(logging.DEBUG),
        TestClient(create_app(settings, serve_world.engine, serve_world.store)) as c,
    ):
        first = c.post("/v1/predict", files={"oct": (name, eye.oct)}).json()
        assert c.get(first["oct"]["gradcam"]).status_code == 200
        second = c.post("/v1/predict", files={"oct": (name, eye.oct)}).json()
        assert c.get(second["oct"]["gradcam"]).status_code == 200
        assert c.get(first["oct"]["gradcam"]).status_code == 404  # dropped: the cache holds one prediction
        assert c.get(f"/v1/predictions/{second['id']}/..%2F..%2Fcatalog.db").status_code == 404
    assert {o.key for o in serve_world.store.list("serve")} == before  # nothing of the images was kept
    assert "Jane Doe" not in caplog.text and second["id"] in caplog.text
    assert repr(eye.oct[:16])[2:-1] not in caplog.text


def test_keep_uploads_stores_them_under_the_prediction_id(serve_world: World) -> None:
    eye = eyes(serve_world, 1)[0]
    settings = serve_settings(serve_world, keep_uploads=True, overlay_cache=1)
    with TestClient(create_app(settings, serve_world.engine, serve_world.store)) as c:
        first = c.post("/v1/predict", files={"fundus": ("../../evil.png", eye.fundus)}).json()
        c.post("/v1/predict", files={"fundus": ("x.png", eye.fundus)})
        assert (
            c.get(first["fundus"]["gradcam"]).status_code == 200
        )  # evicted from memory, read from the store
    keys = {o.key for o in serve_world.store.list(f"serve/uploads/{first['id']}")}
    assert keys == {f"serve/uploads/{first['id']}/{n}" for n in ("fundus.png", "fundus-gradcam.png")}
    assert serve_world.store.get_bytes(f"serve/uploads/{first['id']}/fundus.png") == eye.fundus
    assert not any("evil" in k for k in keys)
    json.dumps(first)  # the answer is plain JSON
