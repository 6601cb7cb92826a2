"""Tests for retina_core.explain (a package, so test module names need not be unique across tests/)."""
