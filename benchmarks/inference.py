"""Inference: `retina predict` latency per fundus+OCT pair, with and without Grad-CAM, and model load time.

No baseline: reference figures. A small home is trained at 224 px (both encoders and the
fusion head, one epoch: the weights' quality does not change the latency; in quick mode
the encoders see 16 images each and no fusion head is trained), then
``Predictor`` (what `retina predict` runs) is timed on realistic inputs: full-size
fundus PNGs and OCT JPEGs of Kermany's sizes, decoded, validated and preprocessed as
part of each prediction. Plain and Grad-CAM predictions alternate pair by pair, after
one untimed warm-up of each; model loading is timed separately, after one untimed load.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.fixtures import BenchContext, bench_settings, ingest_synthetic
from benchmarks.harness import BenchmarkResult, Budget, Side, interleave, not_run
from retina_core import verbs
from retina_core.config import Settings
from retina_core.data.synthetic import SynthSpec, write_synthetic
from retina_core.domain import Modality

NAME = "inference"
IMAGE_SIZE = 224
TRAIN_DATA = SynthSpec(fundus=0, oct=0, pairs=40, size=256, seed=9)
"""Pairs only: enough for every split of both encoders and of the fusion head."""
QUICK_TRAIN_IMAGES = 16


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def trained_home(ctx: BenchContext, *, fusion: bool) -> Settings:
    """Both encoders (and the fusion head, if asked) registered at 224 px (untimed setup)."""

    data = ctx.new_dir("inference-data")
    write_synthetic(data, TRAIN_DATA)
    settings = bench_settings(ctx.new_dir("inference-home"), image_size=IMAGE_SIZE)
    if ctx.quick:
        settings = settings.model_copy(deep=True)
        for ms in (settings.train.fundus, settings.train.oct):
            ms.max_train_images = QUICK_TRAIN_IMAGES
    ingest_synthetic(settings, data)
    for modality in (Modality.FUNDUS, Modality.OCT):
        verbs.train(settings, modality)
    if fusion:
        verbs.embed(settings)
        verbs.train_fusion(settings)
    return settings


def inputs(ctx: BenchContext, count: int) -> list[tuple[bytes, bytes]]:
    """(fundus, oct) file bytes: full-size fundus photos, OCT scans at Kermany's sizes."""
    octs = ctx.new_dir("inference-oct")
    write_synthetic(octs, SynthSpec(fundus=0, oct=count, size=None, seed=13))
    fundus = sorted((ctx.full_size / "train_images").glob("*.png"))
    scans = sorted((octs / "kermany").rglob("*.jpeg"))
    return [(fundus[i % len(fundus)].read_bytes(), scans[i % len(scans)].read_bytes()) for i in range(count)]


def run(ctx: BenchContext) -> BenchmarkResult:
    try:
        from retina_core.predict import Predictor
    except ImportError as exc:
        return not_run(NAME, f"{exc.name or 'retina_core.predict'} missing")
    started = time.perf_counter()
    settings = trained_home(ctx, fusion=not ctx.quick)
    setup_seconds = time.perf_counter() - started
    engine, store = verbs.catalog_engine(settings), verbs.curated_store(settings)

    def load(_: object) -> Any:
        return Predictor(settings, engine, store)

    predictor = load(None)  # untimed first load: imports and first-touch allocations
    load_times = [_timed(load) for _ in range(ctx.pick(3, 2))]
    pairs = inputs(ctx, ctx.pick(8, 4))
    cam_dir = ctx.new_dir("inference-gradcam")
    index = {"plain": 0, "gradcam": 0}

    def predict(kind: str, gradcam_dir: Path | None) -> Side:
        def work(_: object) -> None:
            fundus, scan = pairs[index[kind] % len(pairs)]
            index[kind] += 1
            predictor.predict(fundus=fundus, oct=scan, gradcam_dir=gradcam_dir)

        return Side(f"Predictor.predict(fundus, oct{', gradcam_dir' if gradcam_dir else ''})", work)

    budget = ctx.pick(Budget(6, 12, 30, warmup=1), Budget(2, 3, 10, warmup=1))
    plain, cam = interleave(predict("plain", None), predict("gradcam", cam_dir), budget)
    figures = {
        "image_size": IMAGE_SIZE,
        "fusion_head": predictor.fusion_version is not None,
        "load_seconds": load_times,
        "plain_seconds": plain.seconds,
        "gradcam_seconds": cam.seconds,
        "p50_p95": {
            "plain": [percentile(plain.seconds, 50), percentile(plain.seconds, 95)],
            "gradcam": [percentile(cam.seconds, 50), percentile(cam.seconds, 95)],
        },
        "setup_seconds": setup_seconds,
    }
    p = figures["p50_p95"]
    summary = (
        f"per pair p50 {p['plain'][0] * 1000:.0f} ms / p95 {p['plain'][1] * 1000:.0f} ms; "
        f"with Grad-CAM p50 {p['gradcam'][0] * 1000:.0f} ms / p95 {p['gradcam'][1] * 1000:.0f} ms; "
        f"model load {statistics.median(load_times):.2f} s"
    )
    return BenchmarkResult(
        name=NAME,
        summary=summary,
        target_text="report (no target)",
        warmup=budget.warmup,
        figures=figures,
        notes=[
            f"Predictor at {IMAGE_SIZE} px (fundus + OCT encoders"
            f"{' + fusion head' if predictor.fusion_version is not None else ', no fusion head'}), "
            f"{len(plain.seconds)} pairs per variant, alternating plain / Grad-CAM after 1 untimed warm-up "
            f"each; inputs are full-size fundus PNGs and Kermany-size OCT JPEGs (bytes already read). "
            f"Load = median of {len(load_times)} Predictor constructions after 1 untimed one. "
            f"Training this home took {setup_seconds:.0f} s (setup, untimed).",
        ],
    )


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn(None)
    return time.perf_counter() - started
