"""The README's snippet must load the committed bundle: its SRI hash is checked,
since a stale one makes browsers refuse the script."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_integrity_hash_is_the_committed_bundles():
    bundle = (ROOT / "frontend_sdk" / "static" / "llmrum" / "llmrum.min.js").read_bytes()
    sri = "sha384-" + base64.b64encode(hashlib.sha384(bundle).digest()).decode()
    assert f'integrity="{sri}"' in (ROOT / "README.md").read_text(), (
        "update the README's integrity attribute: " + sri
    )
