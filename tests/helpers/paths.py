"""Where things are: the repository, the `temporal` CLI that setup installs, the installed console
scripts, the namespace where only a test's own worker processes poll, the browser the UI tests drive."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPORAL_CLI = ROOT / ".bin" / "temporal"
# The console scripts of the package under test, installed beside this interpreter (`make setup`).
DA = Path(sys.executable).with_name("da")
DA_WORKER = Path(sys.executable).with_name("da-worker")
CHAOS_NAMESPACE = "chaos"
# Debian's Chromium (`make setup`), as the browser tests launch it through Playwright.
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
