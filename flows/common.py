"""What every flow shares: building the one Settings object inside the run, from the worker's side.

A flow's parameters hold only what a person would type in the Prefect UI's form (a config
file path, a preset, a few overrides); Prefect stores them in its database and shows them
to anyone who can open the UI. Connection settings (database URL, storage URL, S3
endpoint, credentials) therefore never travel as parameters: each run reads them from the
worker's own ``RETINA_*`` environment (and the optional config file) in :meth:`settings`.
The ``retina`` command and the ephemeral API run flows in the command's own process, so
they see the same environment the command does.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from retina_core.config import Settings, load_settings, quick_preset, with_overrides


class RunConfig(BaseModel):
    config_file: str | None = Field(
        None, description="YAML/TOML settings file; RETINA_* environment variables apply on top."
    )
    quick: bool = Field(False, description="Shrunken preset: 64 px, 2 epochs (demo --quick, tests).")

    def overrides(self) -> dict[str, Any]:
        """This run's overrides, nested by settings section; ``None`` values keep the configured ones."""
        return {}

    def settings(self) -> Settings:
        """The worker's settings (environment, then the config file), the preset, then :meth:`overrides`."""
        settings = load_settings(self.config_file)
        if self.quick:
            settings = quick_preset(settings)
        return with_overrides(settings, self.overrides())
