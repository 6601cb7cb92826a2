"""The modality share of the paired world's fusion run: reported, checked on complementary cases, predicted."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from retina_core.fusion.report import FusionReport
from retina_core.predict import Predictor
from tests.fusion.world import World

pytestmark = pytest.mark.slow  # uses the paired world


def test_the_diseased_modality_carries_the_larger_share_on_complementary_cases(
    paired_report: FusionReport,
) -> None:
    share = paired_report.evaluation.modality_share
    assert share is not None and share.n_test == paired_report.evaluation.row("fusion").result.n
    print(share.model_dump_json(indent=2))  # the numbers, for whoever reads the test log
    # IG's completeness on the real head: attributions sum to F(x) - F(baseline)
    assert share.max_completeness_error < 1e-2
    check = next(c for c in share.checks if c.source == "recombined")
    assert check.n_fundus_diseased > 0 and check.n_oct_diseased > 0
    assert check.diseased_larger["value"] >= 0.7 and check.diseased_larger["low"] > 0.5, check
    # occluding the diseased embedding by the normal-eye mean costs more than occluding the normal one
    assert check.baseline_occlusion_diseased_larger >= 0.7, check
    assert 0.0 <= share.mean_fundus_share <= 1.0 and 0.0 <= share.occlusion_agreement <= 1.0


def test_predict_returns_the_share_when_both_images_are_given(
    paired_world: World, paired_report: FusionReport
) -> None:
    with (paired_world.out / "pairs.csv").open() as fh:
        row = next(csv.DictReader(fh))
    fundus = (paired_world.out / row["fundus_path"]).read_bytes()
    oct = (paired_world.out / row["oct_path"]).read_bytes()
    predictor = Predictor(paired_world.settings, paired_world.engine, paired_world.store)
    both = predictor.predict(fundus, oct)
    assert both.fusion is not None and both.fusion.modality_share is not None
    assert set(both.fusion.modality_share) == {"fundus", "oct"}
    assert np.isclose(sum(both.fusion.modality_share.values()), 1.0)
    assert all(0.0 <= v <= 1.0 for v in both.fusion.modality_share.values())
    one = predictor.predict(fundus)
    assert one.fusion is not None and one.fusion.modality_share is None  # nothing to split with one view
