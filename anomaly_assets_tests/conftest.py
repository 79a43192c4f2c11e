"""Shared fixtures: a throw-away embedded home per test module, and service availability."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from anomaly_assets.settings import Settings

# Importing anomaly_assets.definitions builds the default resources: keep them out of the checkout.
os.environ.setdefault("ANOMALY_ASSETS_HOME", tempfile.mkdtemp(prefix="anomaly_assets_tests_"))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(available: bool, reason: str) -> None:
    """Skip on a laptop without the service; fail in CI, where every service must be there."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: services are required)")
    pytest.skip(reason)


@pytest.fixture
def restore_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def small_settings(home: Path, devices: int = 30) -> Settings:
    return Settings(home=home, fleet_devices=devices, fleet_seed=11)
