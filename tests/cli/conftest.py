from __future__ import annotations

import tests.support.prefect  # noqa: F401  (sets the Prefect environment before prefect is imported)
