"""The ``retina`` command (a contract users script against).

A thin shell: each command checks its settings once (a bad config file is exit 2), then
calls a flow with parameters only (``--config`` travels as ``config_file``; the flow reads
the same ``RETINA_*`` environment in this process, so no connection setting is ever a
Prefect parameter), or a library verb for read-only commands. Each result type prints its
own JSON (``contract()``) and summary. With ``--json`` stdout carries exactly one JSON object
and nothing else; logs and progress go to stderr. Flows are imported lazily, inside the
commands, so the library itself never imports Prefect and ``retina --help`` is fast.
"""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from typer.core import TyperGroup

from retina_cli.display import showing_progress
from retina_cli.errors import actionable
from retina_core import progress
from retina_core.config import Settings, load_settings
from retina_core.domain import Source

if TYPE_CHECKING:
    from flows.pipeline import PipelineParams
    from retina_core.results import PipelineResult

_VERBOSE = False
"""Set by ``--verbose``: keep tracebacks instead of the one-line errors."""
_DATABASE_URL: str | None = None
"""The database URL in use, so that an error line can scrub its password."""


class GuardedGroup(TyperGroup):
    """Every command's failures a person can act on (disk full or read-only, home unusable,
    database unreachable) end as one ``error:`` line and exit 2; bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            line = actionable(exc, _DATABASE_URL)
            if line is None or _VERBOSE:
                raise
            typer.echo(f"error: {line}", err=True)
            raise typer.Exit(EXIT_UNUSABLE_INPUT) from None


app = typer.Typer(
    cls=GuardedGroup,
    add_completion=False,
    no_args_is_help=True,
    help="retina-fusion: fundus + OCT training service.",
)
catalog_app = typer.Typer(no_args_is_help=True, help="Inspect the image catalog.")
app.add_typer(catalog_app, name="catalog")
models_app = typer.Typer(no_args_is_help=True, help="The model registry: versions, champions, history.")
app.add_typer(models_app, name="models")

EXIT_UNUSABLE_INPUT = 2
DEMO_FULL = {"fundus": 900, "oct": 900, "pairs": 300, "size": 512, "seed": 0}
"""The default demo: sized so `make demo` stays within 15 minutes on 2 CPU cores."""
DEMO_QUICK = {"fundus": 160, "oct": 200, "pairs": 120, "size": 256, "seed": 0}
DEMO_QUICK_EPOCHS = 10
"""The quick preset's two epochs leave both models at chance (measured: QWK 0.00, macro-F1
0.13, 80 s in all). Ten to twelve epochs use the rest of the 3-minute budget (12 measured:
OCT macro-F1 0.70, 2 min 14 s); 64-px fundus photos of 100 eyes stay near chance anyway."""

NEXT_STEP = (
    "next: `make serve`, then open the Prefect UI it prints and start the retrain-pipeline "
    "deployment from its form (Deployments > retrain-pipeline > Run > Custom run)."
)
"""The demo's last line: where a first-time user goes from here (README: From the Prefect UI)."""

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="YAML or TOML settings file (RETINA_* variables win).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")]


def _settings(config: Path | None) -> Settings:
    """The settings, with RETINA_HOME checked: every command writes below it."""
    global _DATABASE_URL
    from retina_core.home import prepare_home

    try:
        settings = load_settings(config)
    except Exception as exc:  # pydantic's message already names the offending key
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(EXIT_UNUSABLE_INPUT) from exc
    _DATABASE_URL = settings.database_url
    prepare_home(settings.home)
    _prefect(settings)  # before any command imports a flow: Prefect reads its settings at import
    return settings


def _path(config: Path | None) -> str | None:
    """The config file as a flow parameter: flows read their settings from it and the environment."""
    return None if config is None else str(config)


class FailureReportedByCommand(logging.Filter):
    """Keep Prefect's failed-run reports off the terminal: the command reports the failure itself.

    A task that fails is logged by Prefect's run loggers at ERROR with its traceback, then
    again for the flow; the command then prints one ``error:`` line (a failure a person can
    act on) or raises with the traceback (a bug). Without ``-v`` the terminal shows that
    report only once; the run's logs in the Prefect API keep everything.
    """

    RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name.startswith(self.RUN_LOGGERS))


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, FailureReportedByCommand) for f in handler.filters):
                handler.addFilter(FailureReportedByCommand())


def _emit(data: dict[str, Any], as_json: bool, human: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
    else:
        typer.echo(human)


def _prefect(settings: Settings) -> None:
    from flows.runtime import prefect_environment

    prefect_environment(settings.home)


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress to stderr; keep tracebacks on errors.")
    ] = False,
) -> None:
    global _VERBOSE
    _VERBOSE = verbose
    _setup_logging(verbose)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the APTOS / Kermany layouts into.")],
    fundus: Annotated[int, typer.Option(help="Fundus photographs to write.")] = 400,
    oct: Annotated[int, typer.Option(help="OCT B-scans to write.")] = 400,
    pairs: Annotated[int, typer.Option(help="Same-eye fundus+OCT pairs (pairs.csv) to write.")] = 0,
    size: Annotated[
        int | None, typer.Option(help="Fixed image width in px; default varies like the real sets.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same bytes.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Write synthetic data in the real APTOS 2019 and Kermany 2018 layouts, with lesion masks."""
    from retina_core.data.synthetic import SynthSpec, write_synthetic

    summary = write_synthetic(out, SynthSpec(fundus=fundus, oct=oct, pairs=pairs, size=size, seed=seed))
    data = summary.model_dump(mode="json") if hasattr(summary, "model_dump") else dict(summary.__dict__)
    _emit(data, as_json, f"wrote synthetic data to {out}")


@app.command()
def ingest(
    source: Annotated[Source, typer.Argument(help="Layout of PATH: aptos, kermany, pairs or dicom.")],
    path: Annotated[str, typer.Argument(help="Local folder, pairs.csv, or s3://bucket/prefix.")],
    config: ConfigOption = None,
    chunk_size: Annotated[int, typer.Option(help="Files per mapped ingestion task.")] = 512,
    labels: Annotated[
        str | None,
        typer.Option(
            help="dicom: labels CSV keyed by sop_instance_uid or patient_id+eye (default PATH/labels.csv)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Validate, de-duplicate and catalogue a landing location; bad files are quarantined.

    Exit 0 when the run completed (even with quarantined files), 2 when PATH is unusable.
    """
    from retina_core.data.rejections import SourceError
    from retina_core.landing import open_landing

    settings = _settings(config)
    try:
        open_landing(path, source, settings)  # fail fast, before starting any orchestration
    except SourceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_UNUSABLE_INPUT) from exc
    from flows.ingest import IngestParams, ingest_flow
    from flows.runtime import fast_flows

    try:
        with showing_progress(), fast_flows():
            summary = ingest_flow(
                IngestParams(
                    source=source,
                    location=path,
                    chunk_size=chunk_size,
                    labels=labels,
                    config_file=_path(config),
                )
            )
    except SourceError as exc:
        typer.echo(f"error: {path}: {exc}", err=True)
        raise typer.Exit(EXIT_UNUSABLE_INPUT) from exc
    _emit(summary.contract(), as_json, summary.summary_text())


class TrainTarget(StrEnum):
    FUNDUS = "fundus"
    OCT = "oct"
    FUSION = "fusion"


@app.command()
def train(
    target: Annotated[
        TrainTarget, typer.Argument(help="fundus, oct, or fusion (on the two frozen encoders).")
    ],
    config: ConfigOption = None,
    architecture: Annotated[str | None, typer.Option(help="Any timm model name.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Square input side in pixels.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    loss: Annotated[str | None, typer.Option(help="Fundus: ce or regression.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Train, evaluate on the fixed test split and register a model version."""
    _settings(config)
    from flows.runtime import fast_flows

    with showing_progress(), fast_flows():
        if target is TrainTarget.FUSION:
            from flows.fusion import FusionParams, train_fusion_flow

            report = train_fusion_flow(FusionParams(config_file=_path(config)))
            _emit(report.contract(), as_json, report.summary_text())
            return
        from flows.train import TrainParams, train_modality_flow

        params = TrainParams(
            config_file=_path(config),
            modality=target.value,
            architecture=architecture,
            image_size=image_size,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            loss=loss,
        )
        report = train_modality_flow(params)
    _emit(report.contract(), as_json, report.summary_text())


def _run_pipeline(settings: Settings, params: PipelineParams) -> PipelineResult:
    from flows.pipeline import retrain_pipeline_flow
    from flows.runtime import fast_flows

    with fast_flows(), progress.stage("pipeline"):
        return retrain_pipeline_flow(params)


@app.command()
def pipeline(
    config: ConfigOption = None,
    aptos: Annotated[str | None, typer.Option(help="APTOS folder (or s3:// prefix) to ingest first.")] = None,
    kermany: Annotated[
        str | None, typer.Option(help="Kermany folder (or s3:// prefix) to ingest first.")
    ] = None,
    pairs: Annotated[str | None, typer.Option(help="pairs.csv to ingest first.")] = None,
    quick: Annotated[bool, typer.Option(help="Shrunken preset (64 px, 2 epochs).")] = False,
    as_json: JsonOption = False,
) -> None:
    """The whole flow: ingest -> train both -> embed -> fusion -> explain -> report -> register."""
    from flows.pipeline import PipelineParams
    from retina_core.results import SourceSpec
    from retina_core.verbs import new_run_id

    settings = _settings(config)
    sources = [
        SourceSpec(source=src, location=loc)
        for src, loc in ((Source.APTOS, aptos), (Source.KERMANY, kermany), (Source.PAIRS, pairs))
        if loc
    ]
    params = PipelineParams(sources=sources, quick=quick, config_file=_path(config), run_id=new_run_id())
    with showing_progress():
        result = _run_pipeline(settings, params)
    _emit(result.contract(), as_json, result.summary_text())


def demo_params(data: Path, *, quick: bool, config: Path | None) -> PipelineParams:
    """The demo's pipeline form; ``quick`` is the quick preset (64 px, small batches, fewer
    resamples) with both encoders trained for DEMO_QUICK_EPOCHS, early stopping off."""
    from flows.pipeline import PipelineParams
    from retina_core.results import SourceSpec
    from retina_core.verbs import new_run_id

    sources = [
        SourceSpec(source=Source.APTOS, location=str(data / "aptos")),
        SourceSpec(source=Source.KERMANY, location=str(data / "kermany")),
        SourceSpec(source=Source.PAIRS, location=str(data / "pairs.csv")),
    ]
    epochs = DEMO_QUICK_EPOCHS if quick else None
    return PipelineParams(
        sources=sources,
        quick=quick,
        train_epochs=epochs,
        train_patience=epochs,
        synthetic=True,
        config_file=_path(config),
        run_id=new_run_id(),
    )


@app.command()
def demo(
    quick: Annotated[bool, typer.Option("--quick", help="A ~3-minute run on tiny data.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Synthetic data + the whole pipeline on the embedded defaults; prints the report path."""
    from retina_core.data.synthetic import SynthSpec, write_synthetic

    settings = _settings(config)
    spec = SynthSpec(**DEMO_QUICK if quick else DEMO_FULL)
    data = settings.home / "demo-data" / ("quick" if quick else "full")
    with showing_progress():
        if not (data / "pairs.csv").exists():
            with progress.stage("synthetic data"):
                write_synthetic(data, spec)
        result = _run_pipeline(settings, demo_params(data, quick=quick, config=config))
    _emit(result.contract(), as_json, result.summary_text() + "\n" + NEXT_STEP)


@app.command()
def embed(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Fill the embedding cache for the current encoders; says how many were computed and reused."""
    _settings(config)
    from flows.embed import EmbedParams, embed_flow
    from flows.runtime import fast_flows

    with showing_progress(), fast_flows():
        report = embed_flow(EmbedParams(config_file=_path(config)))
    _emit(report.contract(), as_json, report.summary_text())


@app.command()
def drift(
    dataset_version: Annotated[
        int | None,
        typer.Option("--dataset-version", help="Check images up to this version; newest by default."),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check the images that landed since the champions trained for drift; prints the verdict.

    Emits no event (a check by hand must not start a retrain); the check-drift deployment does.
    """
    _settings(config)
    from flows.drift import DriftParams, check_drift_flow
    from flows.runtime import fast_flows

    config_file = None if config is None else str(config)
    params = DriftParams(config_file=config_file, dataset_version=dataset_version, emit=False)
    with fast_flows():
        result = check_drift_flow(params)
    _emit(result.payload(), as_json, result.summary())


@app.command()
def report(
    run: Annotated[str | None, typer.Option("--run", help="Run id; the newest run by default.")] = None,
    config: ConfigOption = None,
) -> None:
    """Write (again) the self-contained HTML report of a pipeline run and print its path."""
    from retina_core.verbs import NoReport, rerender_report

    try:
        path = rerender_report(_settings(config), run)
    except (NoReport, ValueError) as exc:  # ValueError: not a plain run id
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_UNUSABLE_INPUT) from exc
    typer.echo(str(path))


@app.command()
def predict(
    fundus: Annotated[Path | None, typer.Option("--fundus", help="A colour fundus photograph.")] = None,
    oct: Annotated[Path | None, typer.Option("--oct", help="An OCT B-scan.")] = None,
    gradcam: Annotated[
        Path | None, typer.Option("--gradcam", help="Write Grad-CAM overlays (PNG) here.")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Predict DR grade, OCT class and fused disease probability for one eye (either image may be missing)."""
    from retina_core.domain import Modality
    from retina_core.predict import InvalidImage, Predictor, read_input
    from retina_core.verbs import catalog_engine, curated_store

    if fundus is None and oct is None:
        typer.echo("error: give --fundus, --oct, or both", err=True)
        raise typer.Exit(EXIT_UNUSABLE_INPUT)
    for path in (fundus, oct):
        if path is not None and not path.is_file():
            typer.echo(f"error: {path} is not a file", err=True)
            raise typer.Exit(EXIT_UNUSABLE_INPUT)
    settings = _settings(config)
    try:
        images = {
            m: read_input(p, m, settings) if p else None
            for m, p in ((Modality.FUNDUS, fundus), (Modality.OCT, oct))
        }
        predictor = Predictor(settings, catalog_engine(settings), curated_store(settings))
        result = predictor.predict(images[Modality.FUNDUS], images[Modality.OCT], gradcam_dir=gradcam)
    except (InvalidImage, LookupError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_UNUSABLE_INPUT) from exc
    data = result.model_dump(mode="json") | {"model_load_seconds": round(predictor.load_seconds, 3)}
    lines = []
    for part in (result.fundus, result.oct):
        if part is not None:
            lines.append(
                f"{part.model} v{part.version}: {part.predicted} "
                f"(P(disease) {part.disease_probability:.2f}, P(referable) {part.referable_probability:.2f})"
            )
    if result.fusion is not None:
        share = result.fusion.modality_share
        lines.append(
            f"fusion_head v{result.fusion.version} ({result.fusion.inputs}): "
            f"P(disease) {result.fusion.disease_probability:.2f}"
            + (
                f"; fundus {share['fundus']:.0%} · OCT {share['oct']:.0%} of the fused decision"
                if share
                else ""
            )
        )
    if (mt := result.multitask) is not None:
        lines.append(
            f"{mt.model} v{mt.version} ({mt.inputs}): grade {mt.grade}, OCT {mt.oct_class}, "
            f"P(disease) {mt.disease_probability:.2f}"
        )
    lines.append("research use only; not a diagnosis")
    _emit(data, as_json, "\n".join(lines))


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    config: ConfigOption = None,
) -> None:
    """HTTP API (/v1/predict, /v1/models, /healthz, /readyz, /docs) and the page at /. Research use only."""
    import uvicorn

    from retina_core.serving import create_app

    uvicorn.run(create_app(_settings(config)), host=host, port=port, log_level="info")


@models_app.command("list")
def models_list(
    name: Annotated[
        str | None, typer.Argument(help="fundus_cnn, oct_cnn or fusion_head; all by default.")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every registered version with its primary metric (95% CI) and status."""
    from retina_core.catalog.registry import list_versions
    from retina_core.verbs import catalog_engine

    versions = list_versions(catalog_engine(_settings(config)), name)
    rows = [v.model_dump(mode="json") for v in versions]
    human = (
        "\n".join(
            f"{v.name} v{v.version}  {v.status:9}  {v.primary_metric} "
            + (
                f"{v.primary_value:.3f} [{v.primary_low:.3f}, {v.primary_high:.3f}]"
                if v.primary_value is not None
                else "n/a"
            )
            + f"  data v{v.data_version}  {v.created_at:%Y-%m-%d %H:%M}"
            for v in versions
        )
        or "no model registered yet"
    )
    _emit({"versions": rows}, as_json, human)


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the registry history).")],
    actor: Annotated[str, typer.Option(help="Who (recorded).")] = "",
    config: ConfigOption = None,
) -> None:
    """Manual override: make a version champion, recording who and why."""
    import getpass

    from retina_core.catalog.registry import promote
    from retina_core.verbs import catalog_engine

    try:
        promote(
            catalog_engine(_settings(config)), name, version, actor=actor or getpass.getuser(), reason=reason
        )
    except KeyError as exc:
        typer.echo(f"error: {exc.args[0]}", err=True)
        raise typer.Exit(EXIT_UNUSABLE_INPUT) from exc
    typer.echo(f"{name} v{version} is champion")


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the registry history).")],
    actor: Annotated[str, typer.Option(help="Who (recorded).")] = "",
    config: ConfigOption = None,
) -> None:
    """Return to the previous champion, recording who and why."""
    import getpass

    from retina_core.catalog.registry import rollback
    from retina_core.verbs import catalog_engine

    try:
        version = rollback(
            catalog_engine(_settings(config)), name, actor=actor or getpass.getuser(), reason=reason
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_UNUSABLE_INPUT) from exc
    typer.echo(f"{name} v{version} is champion again")


@catalog_app.command("export")
def catalog_export(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Every image: sha256, modality, source, patient_id, label, split."""
    from retina_core.catalog.repository import export_images
    from retina_core.verbs import catalog_engine

    rows = export_images(catalog_engine(_settings(config)))
    if as_json:
        _emit({"images": rows, "count": len(rows)}, True, "")
        return
    from retina_cli.tsv import write_tsv

    columns = ("sha256", "modality", "source", "patient_id", "label", "split")
    write_tsv(sys.stdout, columns, ([r[c] for c in columns] for r in rows))


if __name__ == "__main__":
    app()
