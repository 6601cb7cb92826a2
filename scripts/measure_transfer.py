"""Measure what ImageNet initialisation buys on small synthetic data: scratch vs ImageNet
``efficientnet_lite0`` for fundus QWK and OCT macro-F1, same data, epochs and seed.

Needs the ``imagenet-lite0`` extra (see ``scripts/lite0_imagenet.py``). CPU-heavy: run it
with ``nice -n 10``. Writes ``transfer.json`` and ``transfer.md`` (the README table) in OUT.

    nice -n 10 python scripts/measure_transfer.py OUT [--fundus 400] [--oct 400] [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lite0_imagenet import main as write_lite0

from retina_core import verbs
from retina_core.config import Settings
from retina_core.data.synthetic import SynthSpec, write_synthetic
from retina_core.domain import Modality, Source
from retina_core.training.run import train_modality


def settings_for(home: Path, epochs: int, size: int, seed: int) -> Settings:
    recipe = {"architecture": "efficientnet_lite0", "image_size": size, "epochs": epochs, "seed": seed}
    return Settings.model_validate(
        {
            "home": home,
            "train": {"fundus": recipe, "oct": recipe, "device": "cpu", "num_workers": 0},
            "evaluation": {"bootstrap": 1000},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--fundus", type=int, default=400)
    parser.add_argument("--oct", type=int, default=400)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    weights = write_lite0(str(out / "efficientnet_lite0_imagenet.safetensors"))
    if not (out / "synth").exists():  # a re-run reuses the data, the catalog and the caches
        write_synthetic(
            out / "synth", SynthSpec(fundus=args.fundus, oct=args.oct, size=args.size, seed=args.seed)
        )
    settings = settings_for(out / "home", args.epochs, args.size, args.seed)
    verbs.ingest(settings, Source.APTOS, str(out / "synth" / "aptos"))
    verbs.ingest(settings, Source.KERMANY, str(out / "synth" / "kermany"))
    engine, store = verbs.catalog_engine(settings), verbs.curated_store(settings)
    rows = []
    for modality in (Modality.FUNDUS, Modality.OCT):  # one modality's pair of runs complete first
        for init, pretrained in (("scratch", None), ("ImageNet", str(weights))):
            ms = settings.train_for(modality)
            ms.pretrained = pretrained
            started = time.perf_counter()
            report = train_modality(settings, modality, engine=engine, store=store)
            ev = report.evaluation
            rows.append(
                {
                    "modality": modality.value,
                    "init": init,
                    "metric": ev.primary_metric,
                    "value": ev.primary.value,
                    "low": ev.primary.low,
                    "high": ev.primary.high,
                    "disease_auc": ev.image_level.disease_auc.value,
                    "test_images": ev.image_level.n,
                    "best_epoch": report.best_epoch,
                    "seconds": round(time.perf_counter() - started, 1),
                    "starting_weights": report.extras.get("starting_weights"),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    (out / "transfer.json").write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2)
    )
    lines = [
        "| Modality | Metric (test) | Scratch | ImageNet init |",
        "|---|---|---|---|",
    ]
    for modality in ("fundus", "oct"):
        pair = {r["init"]: r for r in rows if r["modality"] == modality}
        cell = {k: f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]" for k, r in pair.items()}
        lines.append(f"| {modality} | {pair['scratch']['metric']} | {cell['scratch']} | {cell['ImageNet']} |")
    (out / "transfer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
