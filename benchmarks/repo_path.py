"""Puts the checkout's root on `sys.path`, so `python benchmarks/<script>.py` finds `infimm_hd` from a plain checkout.

Run as a file, a benchmark has only `benchmarks/` on its path; every benchmark imports this module (for its side
effect) before it imports `infimm_hd`. The root is appended, so PYTHONPATH or an installed package still wins; with
either this is a no-op.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if REPO_ROOT not in sys.path:
    sys.path.append(REPO_ROOT)
