"""Eight clients at once against a real uvicorn: no error, and no answer meant for another request."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.fusion.world import World
from tests.serving.conftest import eyes

CLIENTS = 8
REQUESTS_PER_CLIENT = 3
VOLATILE = ("id", "seconds")


def _stable(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer without what differs per request (its id, timing, overlay URLs)."""
    kept = {k: v for k, v in answer.items() if k not in VOLATILE}
    for key in ("fundus", "oct"):
        if kept.get(key):
            kept[key] = {k: v for k, v in kept[key].items() if k != "gradcam"}
    if kept.get("fusion"):
        kept["fusion"] = {k: v for k, v in kept["fusion"].items() if k != "gradcam"}
    return kept


def _overlays(client: httpx.Client, answer: dict[str, Any]) -> dict[str, bytes]:
    """Every Grad-CAM overlay of an answer, by name (e.g. ``fundus``, ``fusion/oct``)."""
    urls = {k: answer[k]["gradcam"] for k in ("fundus", "oct") if answer.get(k) and answer[k]["gradcam"]}
    if answer.get("fusion") and answer["fusion"]["gradcam"]:
        urls |= {f"fusion/{k}": u for k, u in answer["fusion"]["gradcam"].items()}
    assert urls, "every answer here has overlays"
    pngs = {name: client.get(url).content for name, url in urls.items()}
    assert all(png.startswith(b"\x89PNG") for png in pngs.values())
    return pngs


def test_eight_concurrent_clients_get_their_own_answers(serve_world: World, live_url: str) -> None:
    pairs = eyes(serve_world, 3)
    inputs: list[dict[str, tuple[str, bytes]]] = [
        {"fundus": ("f", pairs[0].fundus), "oct": ("o", pairs[0].oct)},
        {"fundus": ("f", pairs[1].fundus)},
        {"oct": ("o", pairs[2].oct)},
        {"fundus": ("f", pairs[2].fundus), "oct": ("o", pairs[1].oct)},
    ]
    with httpx.Client(base_url=live_url, timeout=120) as client:
        alone = [client.post("/v1/predict", files=f).json() for f in inputs]
        single = [_stable(a) for a in alone]
        single_overlays = [_overlays(client, a) for a in alone]

    def one_client(index: int) -> list[tuple[int, int, dict[str, Any], dict[str, bytes]]]:
        out = []
        with httpx.Client(base_url=live_url, timeout=120) as client:
            for step in range(REQUESTS_PER_CLIENT):
                which = (index + step) % len(inputs)
                response = client.post("/v1/predict", files=inputs[which])
                body = response.json()
                pngs = _overlays(client, body) if response.status_code == 200 else {}
                out.append((which, response.status_code, body, pngs))
        return out

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [r for batch in pool.map(one_client, range(CLIENTS)) for r in batch]

    assert len(results) == CLIENTS * REQUESTS_PER_CLIENT
    assert len({body["id"] for _, _, body, _ in results}) == len(results)
    for which, status, body, pngs in results:
        assert status == 200
        assert _stable(body) == single[which]
        assert pngs == single_overlays[which]  # where the models looked, for this input and no other
