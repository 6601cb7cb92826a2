"""The one settings object (env prefix ``RETINA_``), built at the entry point and passed down.

Nothing below ``retina_core`` reads the environment: the CLI and the flows call
:func:`load_settings` once and hand the result (or one of its sub-models) to the
library. Every sub-model forbids unknown keys so that a typo in a config file is an
error rather than a silently ignored default.
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)
from sqlalchemy.engine import URL

_CONFIG_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("retina_config_file", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class IngestSettings(_Section):
    max_pixels: int = Field(
        60_000_000, description="Larger images are quarantined: a guard against decompression bombs."
    )
    max_fundus_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description="Larger fundus photographs (and lesion masks beside them) are quarantined unread.",
    )
    max_oct_bytes: int = Field(
        32 * 1024 * 1024, ge=1, description="Larger OCT scans (and masks) are quarantined unread."
    )
    min_side: int = Field(16, description="Images with a smaller side are too small to grade.")
    max_manifest_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1,
        description="A train.csv or pairs manifest larger than this is refused (exit 2) before it is read.",
    )
    max_manifest_rows: int = Field(
        2_000_000, ge=1, description="A manifest with more data rows is refused (exit 2), naming the limit."
    )
    max_field_chars: int = Field(
        4096,
        ge=16,
        description="A manifest field longer than this (paths, ids) is refused naming its line, instead of "
        "being held in memory.",
    )

    def max_bytes(self, modality: str) -> int:
        """The file-size limit for one modality's images."""
        return self.max_fundus_bytes if str(modality) == "fundus" else self.max_oct_bytes


class SplitSettings(_Section):
    key: str = Field(
        "retina-fusion/splits/v1",
        description="HMAC key of the patient-id hash. Changing it reshuffles every split: don't.",
    )
    val_fraction: float = Field(0.15, ge=0.0, lt=0.5)
    test_fraction: float = Field(0.20, gt=0.0, lt=0.5)


class ModalityTrainSettings(_Section):
    architecture: str = Field(description="Any timm model name.")
    image_size: int = Field(128, ge=16, description="Square input side in pixels.")
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0, description="Linear warm-up before the cosine decay.")
    grad_clip: float | None = Field(
        5.0, gt=0, description="Largest gradient L2 norm; keeps early from-scratch steps from diverging."
    )
    loss: Literal["ce", "regression"] = Field(
        "ce", description="'regression' trains one output with optimised thresholds (fundus only)."
    )
    imbalance: Literal["weighted_sampler", "class_weighted_loss", "none"] = "weighted_sampler"
    patience: int = Field(4, ge=1, description="Epochs without validation improvement before stopping.")
    pretrained: str | None = Field(
        None,
        description="Starting weights: none (from scratch), imagenet (timm's pretrained weights for the "
        "architecture through the Hugging Face cache: HF_HOME, HF_HUB_OFFLINE; an offline machine without "
        "them stops before training), or a local weights file (safetensors or state dict).",
    )
    ben_graham: bool = Field(False, description="Fundus only: Ben Graham local-average colour normalisation.")
    max_train_images: int | None = Field(None, description="Cap for quick runs; None uses everything.")
    hold_out_pairs: bool = Field(
        False,
        description="Leave the paired cohort's images out of this encoder's training split, so the fusion "
        "heads learn from embeddings the encoder never fitted (as in stacking) rather than memorised ones. "
        "Off by default: it pays when the single-modality sets dwarf the cohort. On the demo data (pairs "
        "are a quarter of each modality) the concat-MLP head rose from AUC 0.831 to 0.861, level with late "
        "fusion (0.863); the OCT encoder fell from macro-F1 0.982 to 0.934, fundus QWK went 0.720 to 0.756.",
    )
    seed: int = 0
    distributed: bool = Field(
        False,
        description="Data-parallel training (DistributedDataParallel) over the processes torchrun "
        "started, one per GPU; batch_size stays the global batch. Off: one process.",
    )


class FundusTrainSettings(ModalityTrainSettings):
    """Defaults for the DR-grading model; a partial override keeps the rest."""

    architecture: str = Field(
        "efficientnet_b0",
        description="Any timm model name. EfficientNet-B0 in timm's PyTorch-native variant: the tf_ port's "
        "BatchNorm momentum (0.01) leaves eval statistics far behind in short from-scratch runs.",
    )
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=1, description="Small batches: twice the optimiser steps per CPU minute.")
    lr: float = Field(2e-3, gt=0)
    ben_graham: bool = Field(
        True,
        description="Ben Graham local-average colour normalisation: removes exposure and colour cast so "
        "lesions stand out (measured on the demo data: QWK 0.77 with it, no learning in 10 epochs without).",
    )


class OctTrainSettings(ModalityTrainSettings):
    """Defaults for the OCT model; a partial override keeps the rest."""

    architecture: str = Field("resnet18", description="Any timm model name.")
    epochs: int = Field(12, ge=1, description="About 3 CPU minutes at 128 px on the demo data.")
    lr: float = Field(2e-3, gt=0)


class TrainSettings(_Section):
    fundus: FundusTrainSettings = Field(default_factory=FundusTrainSettings)
    oct: OctTrainSettings = Field(default_factory=OctTrainSettings)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' uses CUDA when present.")
    num_workers: int | None = Field(None, description="DataLoader workers; None sizes them to the machine.")
    amp: bool = Field(True, description="Mixed precision on CUDA (bf16 where supported). Ignored on CPU.")
    data_version: int | None = Field(
        None,
        ge=1,
        description="Train on the images of this dataset version and earlier; None: the latest. "
        "A dispatching pipeline pins it so both encoders see the same data.",
    )


class FusionSettings(_Section):
    head: Literal["concat_mlp", "gated"] = "concat_mlp"
    hidden: int = Field(128, ge=4)
    epochs: int = Field(60, ge=1)
    lr: float = Field(2e-3, gt=0)
    pairs_per_image: int = Field(2, ge=1, description="Virtual pairs drawn per image (seeded).")
    modality_dropout: float = Field(0.2, ge=0, lt=1, description="Chance to blank one modality in training.")
    pairing: Literal["auto", "virtual", "real"] = Field(
        "auto", description="'auto' uses real pairs when a pairs manifest was ingested."
    )
    multitask: bool = Field(
        False,
        description="Also train and register the multi-task head (fusion_multitask: DR grade, OCT class, disease).",
    )
    seed: int = 0


class OrchestrationSettings(_Section):
    task_runner: Literal["thread", "dask"] = Field(
        "thread",
        description="Where the mapped chunks of ingest and embed run: Prefect's thread pool in the flow's "
        "process, or Dask workers (prefect-dask), which spread them over processes and machines.",
    )
    dask_address: str | None = Field(
        None,
        description="Scheduler of an existing Dask cluster (tcp://host:8786); None starts a local cluster "
        "of dask_workers processes for the run.",
    )
    dask_workers: int = Field(2, ge=1, description="Worker processes of the local Dask cluster.")
    stages: Literal["inline", "deployments"] = Field(
        "inline",
        description="How retrain-pipeline runs its heavy stages: in its own process, or as child runs "
        "of the train and embed deployments (the GPU work pool), both modalities at once.",
    )
    train_deployment: str = Field(
        "train-modality/train-modality", description="The 'flow/deployment' that trains one encoder."
    )
    embed_deployment: str = Field(
        "embed/embed", description="The 'flow/deployment' that fills one modality's embedding cache."
    )
    dispatch_poll_seconds: float = Field(
        5.0, gt=0, le=300, description="How often a dispatching pipeline checks on its child runs."
    )
    dispatch_timeout_seconds: float | None = Field(
        None,
        gt=0,
        description="Cancel a stage's child runs still not finished after this long and fail the "
        "pipeline naming them (no GPU worker, a stuck node); None waits as long as they take.",
    )


class EmbedSettings(_Section):
    batch_size: int = Field(64, ge=1)
    shard_size: int = Field(256, ge=1, description="Embeddings per object-store shard.")


class ExplainSettings(_Section):
    method: Literal["gradcam", "gradcam++", "eigencam", "scorecam"] = "gradcam"
    examples_per_class: int = Field(4, ge=1)
    max_images: int = Field(64, ge=1, description="Images scored for the pointing game per model.")
    integrated_gradients: bool = Field(
        True, description="Also score Integrated Gradients maps (pointing game, ROAD) beside the CAM method."
    )
    gallery_method: Literal["cam", "integrated_gradients"] = Field(
        "cam", description="Which maps the galleries draw: the CAM method above, or Integrated Gradients."
    )


class EvalSettings(_Section):
    bootstrap: int = Field(1000, ge=50, description="Bootstrap resamples (patients) for 95% CIs.")
    patient_aggregation: Literal["mean", "max"] = "mean"
    ece_bins: int = 15
    seed: int = 0


class RegistrySettings(_Section):
    margin: float = Field(
        0.0, ge=0.0, description="A candidate must beat the champion's primary metric by more than this."
    )


class DriftSettings(_Section):
    """How the drift check (``check-drift``) tests new images and when its verdict asks for a retrain."""

    alpha: float = Field(
        0.05,
        gt=0.0,
        lt=1.0,
        description="Family-wise error rate of one check: Holm's step-down over every test of every "
        "modality, so an unshifted batch is flagged at most this often.",
    )
    min_effect: float = Field(
        0.2,
        ge=0.0,
        description="Smallest effect counted as drift (image statistics: shift in reference standard "
        "deviations; labels: Cramer's V). A large batch makes a trivial shift significant; this keeps it "
        "from costing a retrain.",
    )
    permutations: int = Field(
        999,
        ge=99,
        description="Permutations of the embedding MMD test; the smallest p-value is 1/(n+1), which must "
        "stay below alpha / tests for Holm to be able to reject it.",
    )
    max_samples: int = Field(
        500,
        ge=20,
        description="Images per side in the embedding test (seeded sample): its cost grows with the "
        "square of this, its power is bounded by the smaller side anyway.",
    )
    min_images_to_test: int = Field(
        10,
        ge=2,
        description="Fewer new images of a modality than this are reported, not tested: a handful of "
        "images has little power, and 'enough new images' is the retrain policy's own rule.",
    )
    champion_margin: float = Field(
        0.05,
        ge=0.0,
        description="The champion counts as degraded when its primary metric on the new labelled images "
        "is below its registered figure by more than this and the CI of the difference excludes 0.",
    )
    seed: int = 0


class ServeSettings(_Section):
    """``retina serve``: the prediction service and its page."""

    token: SecretStr | None = Field(
        None, description="Bearer token every /v1 call must carry; None leaves /v1 open (a trusted network)."
    )
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Larger uploads get 413 before they are read in full."
    )
    keep_uploads: bool = Field(
        False,
        description="Keep uploaded images under serve/uploads/{prediction id}/ in the store. Off: nothing "
        "of an image outlives its request except the Grad-CAM overlays in a bounded in-memory cache.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed to call the API from a browser; none by default."
    )
    min_side: int = Field(
        224,
        ge=16,
        description="Images whose shorter side is below this are flagged too small and not graded: "
        "upscaling invents detail (APTOS photos are 640 px and up, Kermany scans 384 px and up).",
    )
    overlay_cache: int = Field(
        256, ge=1, description="Predictions whose Grad-CAM overlays stay in memory (least recent dropped)."
    )


class Settings(BaseSettings):
    """Everything a run needs. ``RETINA_*`` variables, then an optional YAML/TOML file."""

    model_config = SettingsConfigDict(
        env_prefix="RETINA_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    home: Path = Field(Path(".retina"), description="Working directory for the local defaults.")
    storage_url: str | None = Field(None, description="file:///… or s3://bucket/prefix")
    s3_endpoint_url: str | None = Field(None, description="For MinIO or any S3-compatible store.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; SQLite under home by default.")

    ingest: IngestSettings = Field(default_factory=IngestSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)
    fusion: FusionSettings = Field(default_factory=FusionSettings)
    explain: ExplainSettings = Field(default_factory=ExplainSettings)
    evaluation: EvalSettings = Field(default_factory=EvalSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)

    @model_validator(mode="after")
    def _derive_locations(self) -> Settings:
        self.home = Path(self.home).expanduser().absolute()
        if self.storage_url is None:
            self.storage_url = (self.home / "store").as_uri()
        if self.database_url is None:
            # URL.create escapes what a path may hold and a URL may not (%, #, ?), so a
            # RETINA_HOME like "/data/50% done #2" still names the right file.
            self.database_url = URL.create(
                "sqlite", database=str(self.home / "catalog.db")
            ).render_as_string()
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _CONFIG_FILE.get()
        if path is not None:
            if path.suffix.lower() in {".yaml", ".yml"}:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            elif path.suffix.lower() == ".toml":
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            else:
                raise ValueError(f"config file must be .yaml, .yml or .toml, not {path.name!r}")
        return tuple(sources)

    def train_for(self, modality: str) -> ModalityTrainSettings:
        return getattr(self.train, str(modality))


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings: explicit overrides, then ``RETINA_*`` variables, then the file."""
    path = Path(config_file) if config_file is not None else None
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    token = _CONFIG_FILE.set(path)
    try:
        return Settings(**overrides)
    finally:
        _CONFIG_FILE.reset(token)


def quick_preset(settings: Settings) -> Settings:
    """A shrunken copy for `retina demo --quick` and the tests: small images, few epochs.

    Each value is a ceiling, never a floor: settings that are already smaller (a CI worker
    at 32 px and one epoch) stay as they are.
    """
    data = settings.model_dump()
    caps = {
        "fusion": {"epochs": 20},
        "evaluation": {"bootstrap": 200},
        "explain": {"examples_per_class": 2, "max_images": 16},
    }
    for modality in ("fundus", "oct"):
        _cap(data["train"][modality], {"image_size": 64, "epochs": 2, "batch_size": 16, "patience": 2})
    for section, limits in caps.items():
        _cap(data[section], limits)
    return Settings.model_validate(data)


def _cap(section: dict[str, Any], limits: dict[str, int]) -> None:
    for key, limit in limits.items():
        section[key] = min(section[key], limit)


def write_settings_file(settings: Settings, path: Path) -> Path:
    """``settings`` as a YAML file that :func:`load_settings` reads back (``RETINA_*`` variables still win).

    How a run that starts in another place (a flow run, a benchmark's subprocess) gets
    settings built in code: flows take a config file path as a parameter, never the object.
    """
    import yaml

    path.write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return path


def with_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """``settings`` with every non-None value of ``overrides`` set (sections nest), validated again.

    A flow's form leaves fields it does not override as None, so None means "keep the
    configured value"; the result is validated like any other source of settings."""
    data = settings.model_dump()
    changed = _merge(data, overrides)
    return Settings.model_validate(data) if changed else settings


def _merge(target: dict[str, Any], updates: dict[str, Any]) -> bool:
    changed = False
    for key, value in updates.items():
        if isinstance(value, dict):
            changed |= _merge(target[key], value)
        elif value is not None:
            target[key] = value
            changed = True
    return changed
