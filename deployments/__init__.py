"""Prefect deployments and the local stack behind ``make serve`` (not part of the installed package)."""
