"""The paired cohort's training images are held out of encoder training, so fusion sees honest embeddings."""

from __future__ import annotations

from pathlib import Path

from retina_core.catalog.repository import image_records, pair_rows
from retina_core.data.records import ImageRecord
from retina_core.data.synthetic import SynthSpec
from retina_core.domain import Modality, Split
from retina_core.training.data import hold_out_paired
from retina_core.training.run import train_modality
from tests.fusion.world import build_world


def _record(sha: str, split: Split) -> ImageRecord:
    return ImageRecord(
        sha256=sha, modality=Modality.OCT, label=0, patient_id=sha, split=split, object_key=f"k/{sha}"
    )


def test_only_training_images_of_the_cohort_are_dropped() -> None:
    records = [
        _record("a", Split.TRAIN),
        _record("b", Split.TRAIN),
        _record("c", Split.VAL),
        _record("d", Split.TEST),
    ]
    kept = hold_out_paired(records, {"b", "c", "d", "zz"})
    assert [r.sha256 for r in kept] == ["a", "c", "d"]
    assert hold_out_paired(records, set()) == records


def test_encoder_training_leaves_the_paired_cohort_out(tmp_path: Path) -> None:
    world = build_world(tmp_path, SynthSpec(fundus=30, oct=30, pairs=30, size=64, seed=5), train=False)
    world.settings.train.oct.epochs = 1
    world.settings.train.oct.hold_out_pairs = True
    records = {r.sha256: r for r in image_records(world.engine, Modality.OCT)}
    paired_train = {p["oct"] for p in pair_rows(world.engine)} & {
        sha for sha, r in records.items() if r.split is Split.TRAIN
    }
    assert paired_train  # the cohort does have training-split images

    report = train_modality(world.settings, Modality.OCT, engine=world.engine, store=world.store)
    all_train = sum(r.split is Split.TRAIN for r in records.values())
    assert report.extras["held_out_paired"] == len(paired_train)
    assert report.counts["train"] == all_train - len(paired_train)
    assert report.counts["test"] == sum(r.split is Split.TEST for r in records.values())

    world.settings.train.oct.hold_out_pairs = False  # the default; a new setting is a new run, not a reuse
    everything = train_modality(world.settings, Modality.OCT, engine=world.engine, store=world.store)
    assert not everything.reused
    assert everything.extras["held_out_paired"] == 0 and everything.counts["train"] == all_train
