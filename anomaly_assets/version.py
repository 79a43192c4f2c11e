"""The code's version, as Dagster's ``code_version`` and the model's ``code_version`` tag show it:
the package version, plus the git commit when the code runs from a checkout (or when the image
was built with ``ANOMALY_ASSETS_GIT_COMMIT``), so a deployment of new code marks what it changes
as stale and a model says exactly which code trained it."""

from __future__ import annotations

import functools
import os
import subprocess
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def code_version() -> str:
    try:
        version = metadata.version("anomaly-assets")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    commit = os.environ.get("ANOMALY_ASSETS_GIT_COMMIT") or _git_commit()
    return f"{version}+g{commit}" if commit else version


def _git_commit() -> str | None:
    if not (REPO / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
