"""Write a synthetic data set in the exact on-disk layouts of APTOS 2019 and Kermany 2018.

Real data cannot be downloaded here, so every stage downstream (ingestion, training, Grad-CAM,
reports) runs on this output; writing the real layouts byte-for-byte in structure means the
ingestion code needs no synthetic special case::

    OUT/aptos/train.csv                                   id_code,diagnosis
    OUT/aptos/train_images/{id_code}.png
    OUT/aptos/train_masks/{id_code}.png                   grade > 0 only
    OUT/kermany/OCT2017/{train,test}/{CLASS}/{CLASS}-{patient}-{n}.jpeg
    OUT/kermany/masks/{CLASS}-{patient}-{n}.png           diseased classes only
    OUT/pairs.csv                                         patient_id,eye,fundus_path,oct_path,dr_grade,oct_class
    OUT/pairs/{fundus,oct}/{patient}_{eye}.{png,jpeg}
    OUT/pairs/masks/{fundus,oct}/{patient}_{eye}.png      diseased modality only

How hard the images are is set in ``difficulty.py``. Output is deterministic: one seed gives
the same bytes on every run.
"""

from __future__ import annotations

import csv
import logging
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from retina_core.data.synthetic.fundus import render_fundus
from retina_core.data.synthetic.oct import OctPatient, render_oct
from retina_core.data.synthetic.plan import FundusItem, OctItem, PairItem, plan_fundus, plan_oct, plan_pairs
from retina_core.data.synthetic.shift import CameraShift, Shift, apply_camera
from retina_core.domain import OctClass

logger = logging.getLogger(__name__)

PNG_PARAMS = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_RLE,
    cv2.IMWRITE_PNG_FILTER,
    cv2.IMWRITE_PNG_FILTER_AVG,
]
"""Fast and still compact: full-size photos are megapixels, and PNG encoding dominates their cost."""
JPEG_QUALITY = 90
OUTPUTS = ("aptos", "kermany", "pairs", "pairs.csv")


class SynthSpec(BaseModel):
    """What to generate. Counts are images (pairs: eyes); ``size=None`` varies sizes like the real sets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fundus: int = Field(400, ge=0, description="APTOS-style fundus photos (grades in APTOS proportions).")
    oct: int = Field(400, ge=0, description="Kermany-style OCT B-scans (classes in Kermany proportions).")
    pairs: int = Field(0, ge=0, description="Same-eye fundus+OCT pairs, written with pairs.csv.")
    size: int | None = Field(
        None, ge=16, description="Fundus and OCT width in px; None varies them like the real data sets."
    )
    seed: int = Field(0, ge=0)
    oct_scans_per_patient: tuple[int, int] = Field((1, 4), description="Range of B-scans per OCT patient.")
    complementary_fraction: float = Field(
        0.35, ge=0.0, le=1.0, description="Share of diseased pairs that show disease in one modality only."
    )
    shift: Shift = Field(
        default_factory=Shift,
        description="Another camera or case mix for the APTOS and Kermany sets (drift tests); none by default.",
    )

    @model_validator(mode="after")
    def _check_range(self) -> SynthSpec:
        lo, hi = self.oct_scans_per_patient
        if not 1 <= lo <= hi:
            raise ValueError(
                f"oct_scans_per_patient must satisfy 1 <= lo <= hi, not {self.oct_scans_per_patient}"
            )
        return self


class SynthSummary(BaseModel):
    """What was written, for the CLI's report and for tests."""

    out: Path
    fundus_by_grade: dict[int, int] = Field(default_factory=dict)
    oct_by_class: dict[str, int] = Field(default_factory=dict)
    oct_by_split: dict[str, int] = Field(default_factory=dict)
    oct_patients: int = 0
    leaked_patients: list[str] = Field(
        default_factory=list, description="Kermany patient numbers with scans in both train/ and test/."
    )
    pairs: int = 0
    complementary: list[str] = Field(
        default_factory=list, description="Pair stems diseased in one modality only."
    )
    masks: dict[str, int] = Field(default_factory=dict, description="Lesion masks written per source.")
    files: list[Path] = Field(
        default_factory=list, description="Every file written, images and masks included."
    )

    @property
    def images(self) -> int:
        return sum(self.fundus_by_grade.values()) + sum(self.oct_by_class.values()) + 2 * self.pairs


def write_synthetic(out: Path, spec: SynthSpec, *, overwrite: bool = False) -> SynthSummary:
    """Render and write the data set described by ``spec`` under ``out``.

    Existing outputs are never mixed with new ones (stale files would be ingested as data):
    without ``overwrite`` an existing ``aptos/``, ``kermany/``, ``pairs/`` or ``pairs.csv``
    is an error; with it they are removed first. Nothing else under ``out`` is touched.
    """
    out = Path(out)
    _clear(out, overwrite)
    summary = SynthSummary(out=out)
    shift = spec.shift
    if spec.fundus:
        items = plan_fundus(spec.seed, spec.fundus, spec.size, shift.fundus_grade_weights)
        _write_aptos(out, items, summary, shift.camera)
    if spec.oct:
        plan = plan_oct(spec.seed, spec.oct, spec.size, spec.oct_scans_per_patient, shift.oct_class_weights)
        _write_kermany(out, plan, summary, shift.camera)
    if spec.pairs:
        _write_pairs(out, plan_pairs(spec.seed, spec.pairs, spec.size, spec.complementary_fraction), summary)
    logger.info(
        "wrote %d synthetic images to %s (fundus %s, oct %s, pairs %d)",
        summary.images,
        out,
        summary.fundus_by_grade,
        summary.oct_by_class,
        summary.pairs,
    )
    return summary


def _clear(out: Path, overwrite: bool) -> None:
    existing = [out / name for name in OUTPUTS if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"synthetic outputs already exist under {out}: {[p.name for p in existing]}")
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _write(path: Path, image: np.ndarray, summary: SynthSummary) -> None:
    """Encode by extension: PNG (RGB arrays converted to OpenCV's BGR) or JPEG at Kermany-like quality."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if path.suffix == ".png":
        ok, data = cv2.imencode(".png", image, PNG_PARAMS)
    else:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(data.tobytes())
    summary.files.append(path)


def _write_aptos(out: Path, items: list[FundusItem], summary: SynthSummary, camera: CameraShift) -> None:
    root = out / "aptos"
    masks = 0
    for item in items:
        image, mask = render_fundus(item.grade, np.random.default_rng(item.seed), item.width)
        image, mask = apply_camera(image, mask, camera)
        _write(root / "train_images" / f"{item.id_code}.png", image, summary)
        if item.grade > 0:
            _write(root / "train_masks" / f"{item.id_code}.png", mask, summary)
            masks += 1
    rows = [(item.id_code, int(item.grade)) for item in items]
    _write_csv(root / "train.csv", ("id_code", "diagnosis"), rows, summary)
    summary.fundus_by_grade = dict(sorted(Counter(int(item.grade) for item in items).items()))
    summary.masks["aptos"] = masks


def _write_kermany(out: Path, items: list[OctItem], summary: SynthSummary, camera: CameraShift) -> None:
    root = out / "kermany"
    patients: dict[str, OctPatient] = {}
    masks = 0
    for item in items:
        if item.patient not in patients:
            patients[item.patient] = OctPatient.draw(np.random.default_rng(item.patient_seed))
        rng = np.random.default_rng(item.seed)
        image, mask = render_oct(item.oct_class, rng, item.width, item.height, patients[item.patient])
        image, mask = apply_camera(image, mask, camera)
        folder = root / "OCT2017" / str(item.split) / item.oct_class.name
        _write(folder / f"{item.stem}.jpeg", image, summary)
        if item.oct_class is not OctClass.NORMAL:
            _write(root / "masks" / f"{item.stem}.png", mask, summary)
            masks += 1
    splits: dict[str, set[str]] = {}
    for item in items:
        splits.setdefault(item.patient, set()).add(str(item.split))
    summary.oct_by_class = {c.name: sum(1 for i in items if i.oct_class is c) for c in OctClass}
    summary.oct_by_split = dict(sorted(Counter(str(item.split) for item in items).items()))
    summary.oct_patients = len(patients)
    summary.leaked_patients = sorted(p for p, s in splits.items() if len(s) > 1)
    summary.masks["kermany"] = masks


def _write_pairs(out: Path, items: list[PairItem], summary: SynthSummary) -> None:
    root = out / "pairs"
    masks = 0
    rows = []
    for item in items:
        rng = np.random.default_rng(item.seed)
        fundus, fundus_mask = render_fundus(item.dr_grade, rng, item.fundus_width)
        scan, scan_mask = render_oct(
            item.oct_class, rng, item.oct_width, item.oct_height, severity=item.oct_severity
        )
        fundus_path = root / "fundus" / f"{item.stem}.png"
        oct_path = root / "oct" / f"{item.stem}.jpeg"
        _write(fundus_path, fundus, summary)
        _write(oct_path, scan, summary)
        if item.dr_grade > 0:
            _write(root / "masks" / "fundus" / f"{item.stem}.png", fundus_mask, summary)
            masks += 1
        if item.oct_class is not OctClass.NORMAL:
            _write(root / "masks" / "oct" / f"{item.stem}.png", scan_mask, summary)
            masks += 1
        rows.append(
            (
                item.patient_id,
                item.eye,
                fundus_path.relative_to(out).as_posix(),
                oct_path.relative_to(out).as_posix(),
                int(item.dr_grade),
                item.oct_class.name,
            )
        )
    header = ("patient_id", "eye", "fundus_path", "oct_path", "dr_grade", "oct_class")
    _write_csv(out / "pairs.csv", header, rows, summary)
    summary.pairs = len(items)
    summary.complementary = [item.stem for item in items if item.complementary]
    summary.masks["pairs"] = masks


def _write_csv(
    path: Path, header: tuple[str, ...], rows: list[tuple[object, ...]], summary: SynthSummary
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    summary.files.append(path)
