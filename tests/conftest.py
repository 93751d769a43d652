"""Shared pytest setup: the library is importable from include/ (also when not installed)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "include") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "include"))
