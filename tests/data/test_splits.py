from __future__ import annotations

from collections import Counter

from retina_core.config import SplitSettings
from retina_core.data.splits import assign_split, split_balance, stratification_warnings
from retina_core.domain import Split

SETTINGS = SplitSettings()


def test_split_is_a_pure_function_of_the_patient() -> None:
    patients = [f"patient-{i}" for i in range(2000)]
    first = {p: assign_split(p, SETTINGS) for p in patients}
    # 20% more patients arrive: nobody who was there before moves.
    grown = patients + [f"new-{i}" for i in range(400)]
    second = {p: assign_split(p, SETTINGS) for p in grown}
    assert all(second[p] == first[p] for p in patients)
    shares = Counter(second.values())
    assert abs(shares[Split.TEST] / len(grown) - SETTINGS.test_fraction) < 0.03
    assert abs(shares[Split.VAL] / len(grown) - SETTINGS.val_fraction) < 0.03


def test_the_key_decides_the_assignment() -> None:
    other = SplitSettings(key="another-key")
    changed = sum(assign_split(f"p{i}", SETTINGS) != assign_split(f"p{i}", other) for i in range(500))
    assert changed > 100


def test_balance_and_stratification_warnings() -> None:
    rows = (
        [("train", 0)] * 50 + [("train", 1)] * 50 + [("val", 0)] * 10 + [("test", 0)] * 9 + [("test", 1)] * 1
    )
    balance = split_balance(rows)
    assert balance["val"] == {0: 10} and balance["test"] == {0: 9, 1: 1}
    warnings = stratification_warnings(balance, [0, 1])
    assert any("class 1 is absent from split 'val'" in w for w in warnings)
    assert any("split 'test'" in w and "class 1" in w for w in warnings)
