"""The image-statistics half of the check over many draws: false flags at most at the nominal rate,
a shifted camera flagged nearly always.

Cheap on purpose: a few hundred tiny images are written once by the real generator (its shift
knob included) and measured once; each draw then re-samples which of them form the reference
and the new batch and runs the check's own tests and Holm correction (both modalities, as a
check does), not the pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from retina_core.data.synthetic import SynthSpec, write_synthetic
from retina_core.domain import Modality
from retina_core.drift.check import apply_holm, feature_tests
from retina_core.drift.features import image_features
from retina_core.drift.result import ModalityDrift
from tests.drift.world import ANOTHER_CAMERA

ALPHA, MIN_EFFECT = 0.05, 0.2
DRAWS = 300
REFERENCE, NEW = 60, 30


def measure(root: Path, seed: int, *, shifted: bool = False, n: int = 60) -> dict[Modality, np.ndarray]:
    spec = SynthSpec(
        fundus=n, oct=n, size=32, seed=seed, shift=ANOTHER_CAMERA if shifted else SynthSpec().shift
    )
    out = root / f"seed{seed}{'-shifted' if shifted else ''}"
    write_synthetic(out, spec)

    def features(paths: list[Path]) -> np.ndarray:
        rows = []
        for path in sorted(paths):
            data = path.read_bytes()
            from PIL import Image

            with Image.open(path) as image:
                width, height = image.size
            rows.append(image_features(data, width, height))
        return np.vstack(rows)

    return {
        Modality.FUNDUS: features(list((out / "aptos" / "train_images").glob("*.png"))),
        Modality.OCT: features(list((out / "kermany").rglob("*.jpeg"))),
    }


@pytest.fixture(scope="module")
def pools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[Modality, np.ndarray]]:
    root = tmp_path_factory.mktemp("null-rate")
    reference = measure(root, 0, n=100)
    others = [measure(root, seed, n=30) for seed in (1, 2, 3)]
    unshifted = {m: np.vstack([o[m] for o in others]) for m in Modality}
    return {"reference": reference, "unshifted": unshifted, "shifted": measure(root, 9, shifted=True)}


def flag_rate(pools: dict[str, dict[Modality, np.ndarray]], batch: str) -> float:
    rng = np.random.default_rng(0)
    flagged = 0
    for _ in range(DRAWS):
        modalities = []
        for m in Modality:
            ref = pools["reference"][m]
            new = pools[batch][m]
            picked_ref = ref[rng.choice(len(ref), REFERENCE, replace=False)]
            picked_new = new[rng.choice(len(new), NEW, replace=False)]
            modalities.append(ModalityDrift(modality=m, features=feature_tests(picked_ref, picked_new)))
        adjusted, n_tests = apply_holm(modalities, ALPHA, MIN_EFFECT)
        assert n_tests == 10
        flagged += any(m.drifting for m in adjusted)
    return flagged / DRAWS


def test_unshifted_batches_from_other_seeds_are_flagged_at_most_at_the_nominal_rate(pools) -> None:
    rate = flag_rate(pools, "unshifted")
    # A calibrated check stays under this 999 times in 1000 (binomial over the draws).
    ceiling = stats.binom.ppf(0.999, DRAWS, ALPHA) / DRAWS
    assert rate <= ceiling, f"{rate:.3f} of unshifted batches flagged (alpha {ALPHA})"


def test_a_batch_from_another_camera_is_flagged(pools) -> None:
    assert flag_rate(pools, "shifted") >= 0.95
