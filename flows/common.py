"""What every flow shares: turning its parameters into the one Settings object."""

from __future__ import annotations

from pydantic import BaseModel, Field

from retina_core.config import Settings, load_settings


class RunConfig(BaseModel):
    config_file: str | None = Field(
        None, description="YAML/TOML settings file; RETINA_* environment variables apply on top."
    )

    def settings(self) -> Settings:
        return load_settings(self.config_file)
