"""``python -m retina_cli``: the same as the ``retina`` script."""

from retina_cli.app import app

app()
