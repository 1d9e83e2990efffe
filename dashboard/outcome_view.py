"""The input gate's outcome on the Predict page: the banner, the "Score anyway" choice, the headline.

The outcome itself comes from the library (:mod:`cxr_core.inference.outcome`, the Predictor);
this module only shows it. "Score anyway" is a choice of one browser session about one image
on one model: it is kept in that session's state (another user's view never changes), logged,
and passed back to the Predictor, which records it in the prediction and so in the CSV export.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import streamlit as st

from cxr_core.inference.findings import FindingsSummary
from cxr_core.inference.outcome import OUT_OF_DOMAIN, REFUSED
from cxr_core.inference.predictor import Prediction
from dashboard import reading

logger = logging.getLogger(__name__)

SCORED_ANYWAY = "cxr_scored_anyway"
"""Session-state key: the set of ``model_key|digest`` the user chose to score anyway."""

WITHHELD_NOTE = (
    "Calls withheld: the probabilities are shown in gray for reference only, because this film is "
    "out of the model's domain."
)


def _key(model_key: str, digest: str) -> str:
    return f"{model_key}|{digest}"


def score_anyway_choices(model_key: str, digests: Sequence[str]) -> list[bool]:
    """Per upload, whether this session chose to score it anyway on this model."""
    chosen = st.session_state.get(SCORED_ANYWAY, set())
    return [_key(model_key, d) in chosen for d in digests]


def _choose(model_key: str, digest: str, name: str, anyway: bool) -> None:
    chosen = set(st.session_state.get(SCORED_ANYWAY, set()))
    (chosen.add if anyway else chosen.discard)(_key(model_key, digest))
    st.session_state[SCORED_ANYWAY] = chosen
    logger.info(
        "%s: %s on %s (out of domain)",
        "score anyway" if anyway else "calls withheld again",
        name,
        model_key,
    )


def outcome_banner(prediction: Prediction, *, model_key: str, digest: str, ident: str) -> None:
    """The outcome of the image being read: why it was refused, or why its calls are withheld
    and the button that scores it anyway (and the one that undoes it)."""
    if prediction.outcome == REFUSED:
        st.error(f"**Refused: not scored.** {prediction.reason}", icon=":material/block:")
        return
    if prediction.outcome != OUT_OF_DOMAIN:
        for warning in prediction.warnings:
            st.warning(warning, icon=":material/warning:")
        return
    others = [w for w in prediction.warnings if w != prediction.reason]
    text = f"**Out of domain.** {prediction.reason}" + "".join(f"  \n· {w}" for w in others)
    if prediction.scored_anyway:
        st.warning(
            text + "  \n**Scored anyway at your request**: the calls below are shown and recorded "
            "as scored anyway in the CSV.",
            icon=":material/warning:",
        )
        st.button(
            "Withhold the calls again",
            key=f"withhold_{ident}",
            on_click=_choose,
            args=(model_key, digest, prediction.name, False),
        )
        return
    st.warning(text, icon=":material/warning:")
    st.button(
        "Score anyway",
        key=f"score_anyway_{ident}",
        type="primary",
        on_click=_choose,
        args=(model_key, digest, prediction.name, True),
        help="Show this film's calls although it is unlike the training films; the choice is recorded "
        "with the result and in the CSV export.",
    )


def headline(summary: FindingsSummary) -> str:
    """The reading's first lines: the usual headline, or what stands in its place when the calls
    are withheld."""
    if summary.calls_withheld:
        return f"**No calls** · {WITHHELD_NOTE}"
    return reading.headline(summary)
