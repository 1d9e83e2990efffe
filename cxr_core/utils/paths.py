"""Where an install keeps its state: the review database, the pseudonym key, the sign-in settings.

One folder, ``$CXR_REVIEW_DIR`` when set, else ``~/.cxr``, so a deployment moves or backs up one
place (see the README's "Deploy for a team").
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """``$CXR_REVIEW_DIR`` when set, else ``~/.cxr`` (not created here)."""
    env = os.environ.get("CXR_REVIEW_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cxr"
