"""The embedded server settings a fresh clone runs with: this computer only, XSRF and CORS protection
on, uploads bounded by the same limit the image reader enforces."""

from __future__ import annotations

from pathlib import Path

import tomllib

from cxr_core.data.imaging import ImageLimits

CONFIG = Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml"


def test_a_fresh_clone_serves_this_computer_only_with_protections_on() -> None:
    server = tomllib.loads(CONFIG.read_text())["server"]
    assert server["address"] == "127.0.0.1"
    assert server["enableXsrfProtection"] is True and server["enableCORS"] is True
    assert server["maxUploadSize"] * 1024 * 1024 == ImageLimits().max_bytes
