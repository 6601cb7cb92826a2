"""Subprocess body (under torchrun) for the verb-level data-parallel test.

Rank 0 leads with the real training verb on the catalog the test ingested; the other
rank takes the real follower path of ``retina_cli.torchrun`` (settings from its own
environment, the job announced by rank 0). Rank 0 writes the report to OUT.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from retina_cli import torchrun
from retina_core import verbs
from retina_core.config import load_settings
from retina_core.domain import Modality
from retina_core.training.run import train_modality

out = Path(sys.argv[1])
torch.set_num_threads(1)


def lead() -> None:
    settings = load_settings()
    report = train_modality(
        settings, Modality.OCT, engine=verbs.catalog_engine(settings), store=verbs.curated_store(settings)
    )
    out.write_text(report.model_dump_json())


torchrun.main(lead)
