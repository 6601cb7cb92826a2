"""The synthetic generator writes the real APTOS/Kermany/pairs layouts, deterministically."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from retina_core.data.synthetic import SynthSpec, SynthSummary, render_fundus, render_oct, write_synthetic
from retina_core.data.synthetic.plan import (
    APTOS_GRADE_COUNTS,
    KERMANY_CLASS_COUNTS,
    MIN_OCT_PATIENTS_PER_CLASS,
    OCT_WIDTHS,
    allocate,
    plan_fundus,
    plan_oct,
)
from retina_core.domain import DRGrade, OctClass

SPEC = SynthSpec(fundus=12, oct=24, pairs=8, size=48, seed=5)
KERMANY_NAME = re.compile(r"^(CNV|DME|DRUSEN|NORMAL)-(\d{7})-(\d+)\.jpeg$")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    out = tmp_path_factory.mktemp("synth")
    return out, write_synthetic(out, SPEC)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _field(image: np.ndarray) -> np.ndarray:
    """The visible fundus: the convex hull of non-black pixels."""
    points = cv2.findNonZero((image.max(axis=2) > 12).astype(np.uint8))
    field = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(field, [cv2.convexHull(points)], 255)
    return field > 0


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_aptos_layout_and_masks(written: tuple[Path, SynthSummary]) -> None:
    out, _ = written
    header, rows = _read_csv(out / "aptos" / "train.csv")
    assert header == ["id_code", "diagnosis"]
    assert (out / "aptos" / "train.csv").read_text().splitlines()[0] == "id_code,diagnosis"
    ids = [r["id_code"] for r in rows]
    assert len(set(ids)) == len(ids) == SPEC.fundus
    assert all(re.fullmatch(r"[0-9a-f]{12}", i) for i in ids)
    assert {p.stem for p in (out / "aptos" / "train_images").glob("*.png")} == set(ids)
    diseased = {r["id_code"] for r in rows if int(r["diagnosis"]) > 0}
    assert {p.stem for p in (out / "aptos" / "train_masks").glob("*.png")} == diseased
    for row in rows:
        with Image.open(out / "aptos" / "train_images" / f"{row['id_code']}.png") as img:
            assert img.mode == "RGB"
            assert img.width == SPEC.size
            assert 0.74 * img.width <= img.height <= img.width
            pixels = np.asarray(img)
        if row["id_code"] in diseased:
            mask = np.asarray(Image.open(out / "aptos" / "train_masks" / f"{row['id_code']}.png"))
            assert mask.shape == pixels.shape[:2]
            assert set(np.unique(mask)) <= {0, 255}
            assert mask.any()
            assert not (mask > 0)[~_field(pixels)].any(), "lesion mask outside the fundus field"


def test_grade_counts_follow_aptos(written: tuple[Path, SynthSummary]) -> None:
    out, summary = written
    _, rows = _read_csv(out / "aptos" / "train.csv")
    counts = np.bincount([int(r["diagnosis"]) for r in rows], minlength=5)
    assert counts.tolist() == allocate(SPEC.fundus, APTOS_GRADE_COUNTS, 2)
    assert counts.min() >= 2
    assert summary.fundus_by_grade == {g: int(n) for g, n in enumerate(counts)}
    planned = np.bincount([int(i.grade) for i in plan_fundus(0, 400, 64)], minlength=5)
    expected = np.array(APTOS_GRADE_COUNTS) / sum(APTOS_GRADE_COUNTS) * 400
    assert np.all(np.abs(planned - expected) <= 1)


def test_kermany_layout_patients_and_leak(written: tuple[Path, SynthSummary]) -> None:
    out, summary = written
    root = out / "kermany" / "OCT2017"
    splits_of: dict[str, set[str]] = defaultdict(set)
    patients_of: dict[str, set[str]] = defaultdict(set)
    files = sorted(root.glob("*/*/*"))
    assert len(files) == SPEC.oct
    for path in files:
        match = KERMANY_NAME.match(path.name)
        assert match, path.name
        assert path.parent.name == match.group(1)
        assert path.parent.parent.name in {"train", "test"}
        splits_of[match.group(2)].add(path.parent.parent.name)
        patients_of[match.group(1)].add(match.group(2))
        with Image.open(path) as img:
            assert img.mode == "L"
            assert img.size == (SPEC.size, round(SPEC.size * 496 / 512))
        mask_path = out / "kermany" / "masks" / f"{path.stem}.png"
        assert mask_path.exists() == (match.group(1) != "NORMAL")
        if mask_path.exists():
            assert np.asarray(Image.open(mask_path)).any()
    leaked = sorted(p for p, s in splits_of.items() if s == {"train", "test"})
    assert leaked, "real Kermany has patients in both folders; the synthetic set must too"
    assert leaked == summary.leaked_patients
    assert any(s == {"test"} for s in splits_of.values())
    assert all(len(patients_of[c.name]) >= MIN_OCT_PATIENTS_PER_CLASS for c in OctClass)
    assert sum(summary.oct_by_class.values()) == SPEC.oct
    assert list(summary.oct_by_class.values()) == allocate(SPEC.oct, KERMANY_CLASS_COUNTS, 4)


def test_pairs_manifest_is_consistent(written: tuple[Path, SynthSummary]) -> None:
    out, summary = written
    header, rows = _read_csv(out / "pairs.csv")
    assert header == ["patient_id", "eye", "fundus_path", "oct_path", "dr_grade", "oct_class"]
    assert len(rows) == SPEC.pairs == summary.pairs
    _, aptos = _read_csv(out / "aptos" / "train.csv")
    taken = {r["id_code"] for r in aptos} | {
        KERMANY_NAME.match(p.name).group(2) for p in out.rglob("*.jpeg") if KERMANY_NAME.match(p.name)
    }
    one_normal = set()
    diseased = 0
    for row in rows:
        stem = f"{row['patient_id']}_{row['eye']}"
        assert re.fullmatch(r"P\d{4,}", row["patient_id"]) and row["patient_id"] not in taken
        assert row["eye"] in {"OD", "OS"}
        assert row["fundus_path"] == f"pairs/fundus/{stem}.png"
        assert row["oct_path"] == f"pairs/oct/{stem}.jpeg"
        assert Image.open(out / row["fundus_path"]).mode == "RGB"
        assert Image.open(out / row["oct_path"]).mode == "L"
        grade, oct_class = DRGrade(int(row["dr_grade"])), OctClass.from_folder(row["oct_class"])
        fundus_sick, oct_sick = grade > 0, oct_class is not OctClass.NORMAL
        assert (out / "pairs" / "masks" / "fundus" / f"{stem}.png").exists() == fundus_sick
        assert (out / "pairs" / "masks" / "oct" / f"{stem}.png").exists() == oct_sick
        diseased += fundus_sick or oct_sick
        if fundus_sick != oct_sick:
            one_normal.add(stem)
            assert grade <= DRGrade.MODERATE, "single-modality disease is early disease"
    assert one_normal == set(summary.complementary)
    assert diseased == round(SPEC.pairs * 0.5)
    assert len(one_normal) == round(diseased * SPEC.complementary_fraction)


def test_same_seed_same_bytes_other_seed_differs(written: tuple[Path, SynthSummary], tmp_path: Path) -> None:
    out, _ = written
    write_synthetic(tmp_path / "again", SPEC)
    first, second = _tree(out), _tree(tmp_path / "again")
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first)
    write_synthetic(tmp_path / "other", SPEC.model_copy(update={"seed": SPEC.seed + 1}))
    other = _tree(tmp_path / "other")
    shared = first.keys() & other.keys()
    assert first["aptos/train.csv"] != other["aptos/train.csv"]
    assert all(first[k] != other[k] for k in shared if k.startswith("pairs/fundus/"))


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    spec = SynthSpec(fundus=1, oct=0, size=32)
    write_synthetic(tmp_path, spec)
    with pytest.raises(FileExistsError):
        write_synthetic(tmp_path, spec)
    summary = write_synthetic(tmp_path, spec, overwrite=True)
    assert summary.fundus_by_grade == {0: 1}
    assert len(list((tmp_path / "aptos" / "train_images").glob("*.png"))) == 1


def test_full_size_varies_like_real_photos(tmp_path: Path) -> None:
    write_synthetic(tmp_path, SynthSpec(fundus=3, oct=0, size=None, seed=2))
    sizes = [Image.open(p).size for p in (tmp_path / "aptos" / "train_images").glob("*.png")]
    widths = [w for w, _ in sizes]
    assert len(set(widths)) > 1
    assert all(600 <= w <= 2400 for w in widths)
    assert all(0.74 * w <= h <= w for w, h in sizes)
    planned = plan_oct(2, 40, None, (1, 4))
    assert {(i.width, i.height) for i in planned} <= {(w, 496) for w in OCT_WIDTHS}
    assert len({i.width for i in planned}) > 1
    assert all(len({i.width for i in planned if i.patient == p.patient}) == 1 for p in planned)


def test_lesion_load_grows_with_grade() -> None:
    def lesion_area(grade: int) -> float:
        return float(
            np.mean([render_fundus(grade, np.random.default_rng(s), 64)[1].mean() for s in range(4)])
        )

    image, mask = render_fundus(0, np.random.default_rng(0), 64)
    assert image.dtype == np.uint8 and image.shape[2] == 3 and image.shape[1] == 64
    assert not mask.any()
    assert 0 < lesion_area(1) < lesion_area(3)


def test_render_oct_classes() -> None:
    for oct_class in OctClass:
        image, mask = render_oct(oct_class, np.random.default_rng(1), 64, 62)
        assert image.shape == mask.shape == (62, 64)
        assert image.dtype == mask.dtype == np.uint8
        assert mask.any() == (oct_class is not OctClass.NORMAL)
    mild = render_oct(OctClass.DRUSEN, np.random.default_rng(2), 128, 124, severity=0.0)[1]
    severe = render_oct(OctClass.DRUSEN, np.random.default_rng(2), 128, 124, severity=1.0)[1]
    assert 0 < np.count_nonzero(mild) < np.count_nonzero(severe)


def test_spec_validation() -> None:
    with pytest.raises(ValidationError):
        SynthSpec(oct_scans_per_patient=(3, 1))
    with pytest.raises(ValidationError):
        SynthSpec(fundus=-1)
    with pytest.raises(ValidationError):
        SynthSpec(complementary_fraction=1.5)
    assert allocate(7, APTOS_GRADE_COUNTS, 2) == [3, 1, 1, 1, 1]
