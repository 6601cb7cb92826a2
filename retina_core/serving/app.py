"""The HTTP face of the prediction service (FastAPI): routes translate, the service decides.

``/v1`` is the API (bearer token when ``RETINA_SERVE__TOKEN`` is set), ``/healthz`` says the
process is up, ``/readyz`` that the models are loaded (or why not), ``/`` is the page and
``/docs`` the OpenAPI UI. Every refusal has a body ``{"code", "message", "field"}`` whose
``code`` is stable: the ingestion's reason codes for rejected images.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from retina_core.catalog.registry import get_version
from retina_core.config import Settings
from retina_core.domain import Modality
from retina_core.predict import Predictor
from retina_core.reporting.format import metric_label
from retina_core.serving.cards import ServedModel, describe
from retina_core.serving.limits import BodyLimit
from retina_core.serving.models import PredictorFactory, ServingModels
from retina_core.serving.schemas import (
    CardMetricAnswer,
    Interval,
    ModelEntry,
    ModelsAnswer,
    PredictAnswer,
    Problem,
)
from retina_core.serving.service import PredictionService, ServiceError
from retina_core.storage import ObjectStore

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
PREDICTION_ID = re.compile(r"[0-9a-f]{32}")
MULTIPART_OVERHEAD = 1024 * 1024
"""Room for the multipart framing and form fields beside two images at the per-file limit."""


def _swagger_assets() -> Path | None:
    """Swagger UI's own files as swagger-ui-py ships them (found without importing its package)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _number(value: float | None) -> float | None:
    return value if value is not None and value == value and abs(value) != float("inf") else None


def _entry(served: ServedModel) -> ModelEntry:
    card = served.card
    default = served.operating.get("default") or served.operating.get("both")
    return ModelEntry(
        name=served.name,
        version=served.version,
        status=served.status,
        primary_metric=served.primary_metric,
        primary=Interval(
            value=_number(served.primary_value),
            low=_number(served.primary_low),
            high=_number(served.primary_high),
        )
        if served.primary_value is not None
        else None,
        temperature=default.temperature if default else None,
        operating_threshold=default.threshold if default else None,
        metrics=[
            CardMetricAnswer(
                name=m.name,
                label=metric_label(m.name),
                level=m.level,
                value=_number(m.estimate.value),
                low=_number(m.estimate.low),
                high=_number(m.estimate.high),
            )
            for m in (card.metrics if card else [])
        ],
        card_url=f"/v1/models/{served.name}/{served.version}/card" if card else None,
    )


_bearer = HTTPBearer(auto_error=False)


def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 unless the app has no token or the request carries it (compared in constant time)."""
    token = request.app.state.settings.serve.token
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise ServiceError(401, "unauthorized", "a valid bearer token is required")


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    store: ObjectStore | None = None,
    *,
    factory: PredictorFactory = Predictor,
) -> FastAPI:
    """The app for one settings object; the catalog and store default to the settings' own."""
    from retina_core.verbs import catalog_engine, curated_store

    engine = engine if engine is not None else catalog_engine(settings)
    store = store if store is not None else curated_store(settings)
    models = ServingModels(settings, engine, store, factory)
    service = PredictionService(settings, models, store)
    serve = settings.serve

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state = await run_in_threadpool(models.current)  # load once, before the first request
        if not state.ready:
            log.error("not ready: %s", state.error)
        yield

    app = FastAPI(
        title="retina-fusion prediction service",
        summary="DR grade, OCT class and fused disease probability for one eye. Research use only.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service, app.state.settings = service, settings

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        body = Problem(code="invalid_request", message=str(first.get("msg", "invalid request")), field=where)
        return JSONResponse(body.model_dump(), status_code=422)

    @app.exception_handler(ServiceError)
    async def _refused(_: Request, exc: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        body = Problem(code=exc.code, message=exc.message, field=exc.field).model_dump()
        return JSONResponse(body, status_code=exc.status, headers=headers)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])
    errors = {code: {"model": Problem} for code in (401, 413, 415, 422, 503)}

    @v1.post("/predict", response_model=PredictAnswer, responses=errors)
    async def predict(
        fundus: Annotated[
            UploadFile | None, File(description="Colour fundus photo: PNG, JPEG, TIFF, BMP.")
        ] = None,
        oct: Annotated[UploadFile | None, File(description="OCT B-scan: PNG, JPEG, TIFF, BMP.")] = None,
        gradcam: Annotated[bool, Query(description="Compute Grad-CAM overlays (about 2x the time).")] = True,
    ) -> PredictAnswer:
        uploads: dict[Modality, bytes] = {}
        for modality, upload in ((Modality.FUNDUS, fundus), (Modality.OCT, oct)):
            if upload is None:
                continue
            too_large = ServiceError(
                413, "too_large", f"{modality.value} exceeds {serve.max_upload_bytes} bytes", modality.value
            )
            if upload.size is not None and upload.size > serve.max_upload_bytes:
                raise too_large
            uploads[modality] = await upload.read(serve.max_upload_bytes + 1)  # bounded, whatever size said
            if len(uploads[modality]) > serve.max_upload_bytes:
                raise too_large
        return await run_in_threadpool(service.predict, uploads, gradcam=gradcam)

    @v1.get("/predictions/{prediction_id}/{name}", responses={404: {"model": Problem}})
    def overlay(prediction_id: str, name: str) -> Response:
        png = service.overlay(prediction_id, name) if PREDICTION_ID.fullmatch(prediction_id) else None
        if png is None:
            raise ServiceError(404, "not_found", "no such overlay (expired from memory or never made)")
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @v1.get("/models", response_model=ModelsAnswer, responses=errors)
    def list_models() -> ModelsAnswer:
        state = models.current()
        if not state.ready:
            raise ServiceError(503, "not_ready", state.error or "models are not loaded")
        return ModelsAnswer(models=[_entry(s) for s in state.served.values()])

    @v1.get(
        "/models/{name}/{version}/card", response_class=PlainTextResponse, responses={404: {"model": Problem}}
    )
    def model_card(name: str, version: int) -> PlainTextResponse:
        try:
            card = describe(store, get_version(engine, name, version)).card
        except KeyError:
            card = None
        if card is None:
            raise ServiceError(404, "not_found", f"no model card for {name} v{version}")
        return PlainTextResponse(card.to_markdown(), media_type="text/markdown; charset=utf-8")

    app.include_router(v1)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": Problem}})
    def readyz() -> dict[str, object]:
        state = models.current()
        if not state.ready:
            raise ServiceError(503, "not_ready", state.error or "models are not loaded")
        return {"ready": True, "models": {name: s.version for name, s in state.served.items()}}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    swagger = _swagger_assets()

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """Swagger UI from files the app serves itself when swagger-ui-py is installed (offline), else a CDN."""
        local = {
            "swagger_js_url": "/docs-assets/swagger-ui-bundle.js",
            "swagger_css_url": "/docs-assets/swagger-ui.css",
            "swagger_favicon_url": "/docs-assets/favicon-32x32.png",
        }
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            **(local if swagger is not None else {}),
        )

    if swagger is not None:
        app.mount("/docs-assets", StaticFiles(directory=swagger), name="docs-assets")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if serve.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=serve.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization"],
        )
    app.add_middleware(BodyLimit, max_bytes=2 * serve.max_upload_bytes + MULTIPART_OVERHEAD)
    return app
