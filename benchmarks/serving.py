"""Serving: the HTTP service against the in-process ``Predictor`` on the same pairs, and its throughput.

Target (issue 16): HTTP predict costs at most 1.2x the bare ``Predictor.predict`` for a
fundus+OCT pair. Both sides run on the same trained home (inference's setup: 224 px
encoders, a fusion head in full mode) and the same full-size inputs; the service runs
under a real uvicorn on loopback in this process and is called with httpx, so its side
includes multipart upload, the ingestion checks, the quality gate, temperature scaling
and JSON. Plain and Grad-CAM pairs are timed in alternation; then 4 clients send
requests at once for requests per second (plain, one inference at a time by design).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from benchmarks.fixtures import BenchContext
from benchmarks.harness import BenchmarkResult, Budget, Side, Target, interleave, not_run
from benchmarks.inference import inputs, percentile, trained_home
from retina_core import verbs

NAME = "serving"
TARGET = Target("cost", 1.2)
CLIENTS = 4


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """The app under a real uvicorn on a free loopback port, in a thread; yields its base URL.

    As `retina serve` runs it; the tests of the service use it too.
    """
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def run(ctx: BenchContext) -> BenchmarkResult:
    try:
        import httpx

        from retina_core.predict import Predictor
        from retina_core.serving import create_app
    except ImportError as exc:
        return not_run(NAME, f"{exc.name} missing")
    started = time.perf_counter()
    settings = trained_home(ctx, fusion=not ctx.quick)
    engine, store = verbs.catalog_engine(settings), verbs.curated_store(settings)
    predictor = Predictor(settings, engine, store)
    pairs = inputs(ctx, ctx.pick(8, 4))
    app = create_app(settings, engine, store)
    cam_dir = ctx.new_dir("serving-gradcam")
    turn = {"local": 0, "http": 0}

    def pair(side: str) -> tuple[bytes, bytes]:
        fundus, scan = pairs[turn[side] % len(pairs)]
        turn[side] += 1
        return fundus, scan

    def local(gradcam: bool) -> Side:
        def work(_: object) -> None:
            fundus, scan = pair("local")
            predictor.predict(fundus, scan, gradcam_dir=cam_dir if gradcam else None)

        return Side(f"Predictor.predict(pair{', gradcam' if gradcam else ''})", work)

    def http(client: httpx.Client, gradcam: bool) -> Side:
        def work(_: object) -> None:
            fundus, scan = pair("http")
            response = client.post(
                f"/v1/predict?gradcam={'true' if gradcam else 'false'}",
                files={"fundus": ("f.png", fundus), "oct": ("o.jpeg", scan)},
            )
            response.raise_for_status()

        return Side(f"POST /v1/predict (pair{', gradcam' if gradcam else ''})", work)

    with live_server(app) as url, httpx.Client(base_url=url, timeout=300) as client:
        setup_seconds = time.perf_counter() - started
        budget = ctx.pick(Budget(6, 12, 40, warmup=1), Budget(3, 4, 15, warmup=1))
        base_plain, http_plain = interleave(local(False), http(client, False), budget)
        base_cam, http_cam = interleave(local(True), http(client, True), budget)
        rps, concurrent_n = _throughput(url, pairs, ctx.pick(24, 8))

    def p50_p95(values: list[float]) -> list[float]:
        return [percentile(values, 50), percentile(values, 95)]

    cam_ratio = percentile(http_cam.seconds, 50) / percentile(base_cam.seconds, 50)
    figures = {
        "p50_p95": {
            "predictor_plain": p50_p95(base_plain.seconds),
            "http_plain": p50_p95(http_plain.seconds),
            "predictor_gradcam": p50_p95(base_cam.seconds),
            "http_gradcam": p50_p95(http_cam.seconds),
        },
        "gradcam_cost_ratio_p50": cam_ratio,
        "requests_per_second_4_clients": rps,
        "concurrent_requests": concurrent_n,
        "fusion_head": predictor.fusion_version is not None,
        "setup_seconds": setup_seconds,
    }
    p = figures["p50_p95"]
    ms = [
        f"{v * 1000:.0f}"
        for v in (*p["http_plain"], *p["predictor_plain"], *p["http_gradcam"], *p["predictor_gradcam"])
    ]
    return BenchmarkResult(
        name=NAME,
        baseline=base_plain,
        ours=http_plain,
        target=TARGET,
        warmup=budget.warmup,
        figures=figures,
        notes=[
            f"pair p50/p95: HTTP {ms[0]}/{ms[1]} ms vs Predictor {ms[2]}/{ms[3]} ms; with Grad-CAM "
            f"HTTP {ms[4]}/{ms[5]} ms vs Predictor {ms[6]}/{ms[7]} ms (cost x{cam_ratio:.2f} at p50).",
            f"{rps:.2f} requests/s with {CLIENTS} concurrent clients ({concurrent_n} plain pair requests).",
            "Same process, loopback, full-size fundus PNGs and Kermany-size OCT JPEGs; "
            f"setup (training the home, starting uvicorn) {setup_seconds:.0f} s, untimed.",
        ],
    )


def _throughput(url: str, pairs: list[tuple[bytes, bytes]], count: int) -> tuple[float, int]:
    import httpx

    def one(index: int) -> None:
        fundus, scan = pairs[index % len(pairs)]
        with httpx.Client(base_url=url, timeout=300) as c:
            c.post(
                "/v1/predict?gradcam=false", files={"fundus": ("f", fundus), "oct": ("o", scan)}
            ).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(count)))
    return count / (time.perf_counter() - started), count
