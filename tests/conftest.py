"""Shared fixtures: paths, and running the installed CLI as a user would (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
MILAB_0152 = DATASETS / "milab_stacks" / "0152"


def run_cli(*args: str, timeout: float = 300, cwd: Path | None = None, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=timeout,
        cwd=cwd or REPO, env=env, **popen,
    )


@pytest.fixture
def cli():
    return run_cli


needs_0152 = pytest.mark.skipif(not MILAB_0152.is_dir(), reason="../shared/datasets/milab_stacks/0152 not present")
