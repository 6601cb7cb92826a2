from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from retina_core.config import Settings, load_settings, quick_preset


def test_defaults_derive_from_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETINA_HOME", str(tmp_path))
    s = load_settings()
    assert s.storage_url == (tmp_path / "store").as_uri()
    assert s.database_url == f"sqlite:///{tmp_path / 'catalog.db'}"
    assert s.train.fundus.architecture == "efficientnet_b0" and s.train.oct.architecture == "resnet18"


def test_environment_nested_and_file_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETINA_TRAIN__OCT__EPOCHS", "11")
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("train:\n  fundus:\n    image_size: 96\nregistry:\n  margin: 0.01\n")
    s = load_settings(yaml_file)
    assert (s.train.oct.epochs, s.train.fundus.image_size, s.registry.margin) == (11, 96, 0.01)
    toml_file = tmp_path / "c.toml"
    toml_file.write_text('storage_url = "s3://bucket/prefix"\n[evaluation]\nbootstrap = 300\n')
    s = load_settings(toml_file)
    assert s.storage_url == "s3://bucket/prefix" and s.evaluation.bootstrap == 300


@pytest.mark.parametrize("text", ["trian: {}\n", "train:\n  oct:\n    epoch: 3\n", "fusion:\n  hiden: 3\n"])
def test_unknown_keys_are_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        load_settings(path)


def test_missing_or_unsupported_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "nope.yaml")
    (tmp_path / "c.ini").write_text("")
    with pytest.raises(ValueError, match="yaml"):
        load_settings(tmp_path / "c.ini")


def test_quick_preset_shrinks_without_touching_the_original() -> None:
    s = Settings()
    q = quick_preset(s)
    assert q.train.oct.image_size == 64 and s.train.oct.image_size == 128


def test_quick_preset_caps_and_never_enlarges() -> None:
    s = Settings.model_validate(
        {"train": {"oct": {"image_size": 32, "epochs": 1}}, "evaluation": {"bootstrap": 100}}
    )
    q = quick_preset(s)
    assert (q.train.oct.image_size, q.train.oct.epochs, q.evaluation.bootstrap) == (32, 1, 100)
    assert (q.train.fundus.image_size, q.train.fundus.epochs, q.train.fundus.batch_size) == (64, 2, 16)
