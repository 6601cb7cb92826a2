"""The prediction service: an HTTP API over :class:`~retina_core.predict.Predictor` and its page.

FastAPI lives here and nowhere else in the library; ``retina serve`` runs
:func:`create_app` under uvicorn.
"""

from retina_core.serving.app import create_app

__all__ = ["create_app"]
