"""``python -m deployments.stack`` (what ``make serve`` runs)."""

import sys

from deployments.stack.cli import main

sys.exit(main())
