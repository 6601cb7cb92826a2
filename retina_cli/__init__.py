"""The ``retina`` command: the top floor, above the library.

It lives outside ``retina_core`` (as timm keeps ``train.py`` outside ``timm/``) because it
composes Prefect flows, which the library never imports.
"""

from retina_cli.app import app

__all__ = ["app"]
