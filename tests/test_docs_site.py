"""The documentation site builds with ``mkdocs build --strict``: a broken link or anchor, a page
missing from the nav, an API reference that names nothing or a setting without a description
fails it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.docs_examples import ROOT


def test_site_builds_strict(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    settings = (tmp_path / "settings" / "index.html").read_text()
    assert "MAX_BATCH_SIZE" in settings and "REQUEST_TIMEOUT_S" in settings
    reference = (tmp_path / "reference" / "index.html").read_text()
    assert "batch_key" in reference and "Defaults" in reference


def test_a_setting_without_description_fails_the_build(tmp_path: Path) -> None:
    """The generated settings page refuses a hole rather than printing an empty cell."""
    probe = (
        "import sys; sys.path.insert(0, 'tools/docs'); import hooks;"
        "from pydantic import Field;"
        "from inference.settings import engine;"
        "engine.EngineSettings.model_fields['max_batch_size'].description = None;"
        "hooks.settings_table()"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "setting max_batch_size has no description" in done.stderr
