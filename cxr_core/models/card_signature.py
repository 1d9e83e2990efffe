"""One checksum over a checkpoint's weights, its input-gate statistics and its whole model card.

The weights checksum alone let a card be edited: reversing ``label_space.classes`` of the
pneumonia model loaded fine and silently swapped Normal and Pneumonia. Every card field can
change an output (classes, thresholds, preprocessing, temperature, gate statistics, and
whatever fields come later), so the signature covers the whole card as stored, in a canonical
form (keys sorted, no whitespace), together with the weights and gate checksums. Per-field
digests travel with it so that an edited card is refused naming what changed
(``label_space.classes``), not just "checksum mismatch".

It is a checksum, not a cryptographic signature: anyone who can run cxr can re-sign a card
(``cxr card sign``), which is the point of stamping (training, ``cxr card refresh``,
``cxr gate fit`` re-sign); what it stops is a card changed by hand, by another tool or by
damage being used as if cxr had written it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

SIGNATURE_VERSION = 1


def canonical_json(value: Any) -> str:
    """``value`` as JSON with sorted keys and no whitespace: the same data, the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def field_digests(card: dict[str, Any]) -> dict[str, str]:
    """A digest per card field, and per sub-field of fields that are JSON objects
    (``label_space.classes``), so a change is named as precisely as a reader needs."""
    digests = {}
    for key, value in card.items():
        digests[key] = _digest(canonical_json(value))
        if isinstance(value, dict):
            for sub, item in value.items():
                digests[f"{key}.{sub}"] = _digest(canonical_json(item))
    return digests


def card_signature(card: dict[str, Any], weights_sha256: str, gate_sha256: str = "") -> dict:
    """The signature stored beside a card: the overall checksum plus the per-field digests."""
    whole = canonical_json({"card": card, "gate": gate_sha256, "weights": weights_sha256})
    return {
        "version": SIGNATURE_VERSION,
        "sha256": _digest(whole),
        "fields": field_digests(card),
    }


def changed_fields(signature: dict, card: dict[str, Any]) -> list[str]:
    """Card fields whose digest differs from the signed one, as precisely as they can be named:
    ``label_space.classes`` rather than ``label_space`` as well, but a field added or removed
    as a whole by its own name."""
    signed = signature.get("fields") if isinstance(signature.get("fields"), dict) else {}
    now = field_digests(card)
    changed = sorted(k for k in set(signed) | set(now) if signed.get(k) != now.get(k))
    whole = {k for k in changed if "." not in k and (k not in signed or k not in now)}
    return [
        k
        for k in changed
        if k.split(".")[0] not in whole - {k}
        and (k in whole or not any(other.startswith(k + ".") for other in changed))
    ]
