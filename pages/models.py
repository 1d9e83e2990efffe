"""Models: the model card of each checkpoint and a per-class AUROC comparison of two of them."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from cxr_core.artifacts.catalog import (
    CheckpointEntry,
    class_counts,
    ensemble_members,
    per_class_auroc,
)
from dashboard import charts, state
from dashboard.widgets import TRAIN_HELP, cxr_errors, fmt

st.title("Models")
entries = state.entries()
if not entries:
    st.info(TRAIN_HELP)
    st.stop()

OVERVIEW_COLUMNS = ("name", "architecture", "task", "num_classes", "val_macro_auroc", "eval_splits", "created", "folder", "error")
overview = pd.DataFrame([e.summary() | {"folder": str(e.dir), "error": e.error} for e in entries],
                        columns=list(OVERVIEW_COLUMNS))
st.subheader("Checkpoints")
st.dataframe(overview, hide_index=True, key="models_overview",
             column_config={"val_macro_auroc": st.column_config.NumberColumn("val macro AUROC", format="%.3f")})


def _card(entry: CheckpointEntry) -> None:
    if not entry.ok:
        st.error(f"{entry.name}: {entry.error}")
        return
    card = entry.card
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Architecture", card.architecture)
    c2.metric("Classes", card.num_classes)
    c3.metric("Task", card.label_space.get("task", ""))
    c4.metric("Val macro AUROC", fmt(entry.summary()["val_macro_auroc"]))
    st.markdown(f"**Intended use.** {card.intended_use}")
    if card.provenance:
        st.markdown(f"**Provenance.** {card.provenance}")
    st.markdown(f"**Classes.** {', '.join(card.classes)}")
    if card.tta != "none":
        st.markdown(f"**Test-time augmentation.** `{card.tta}`: every prediction, and the validation numbers, "
                    "average the image with its mirror image.")
    members = ensemble_members(card)
    if not members.empty:
        st.markdown(f"**Ensemble of {len(members)} models**, their logits averaged; each member alone on the same validation split:")
        st.dataframe(members, hide_index=True, key=f"card_members_{entry.key}",
                     column_config={"val macro AUROC alone": st.column_config.NumberColumn(format="%.3f")})
    if card.thresholds:
        st.markdown("**Decision thresholds** (" + (card.threshold_method or "method not recorded") + ")")
        st.dataframe(pd.DataFrame({"class": list(card.thresholds), "threshold": list(card.thresholds.values())}),
                     hide_index=True, key=f"card_thr_{entry.key}")
    st.markdown("**Images per class** (⚑ too few validation positives or negatives for a meaningful metric)")
    st.dataframe(class_counts(card), hide_index=True, key=f"card_counts_{entry.key}",
                 column_config={"val AUROC": st.column_config.NumberColumn(format="%.3f"),
                                "low_count": st.column_config.CheckboxColumn("⚑ low count")})
    tabs = st.tabs(["Data", "Training", "Validation", "Preprocessing", "Versions", "Full card (JSON)"])
    with tabs[0]:
        st.json(card.data or {}, expanded=2)
    with tabs[1]:
        st.json(card.training or {}, expanded=1)
    with tabs[2]:
        st.json(card.validation or {}, expanded=1)
    with tabs[3]:
        st.json(card.preprocess, expanded=True)
    with tabs[4]:
        st.json(card.versions | {"created": card.created, "weights_dtype": card.weights_dtype}, expanded=True)
    with tabs[5]:
        st.download_button("Download model card (JSON)", card.to_json(), file_name=f"{entry.name}_model_card.json",
                           mime="application/json", key=f"card_json_{entry.key}", icon=":material/download:")
        st.code(json.dumps(card.to_dict(), indent=2, default=str), language="json")


st.subheader("Model card")
names = [e.name for e in entries]
selected = state.selected_entry()
chosen = st.selectbox("Checkpoint", names, index=names.index(selected.name) if selected else 0, key="models_card_pick")
_card(entries[names.index(chosen)])

st.subheader("Compare two checkpoints")
usable = [e for e in entries if e.ok]
if len(usable) < 2:
    st.info("Add a second checkpoint to compare per-class AUROC side by side.")
    st.stop()
labels = [e.name for e in usable]
c1, c2 = st.columns(2)
first = usable[labels.index(c1.selectbox("First", labels, index=0, key="models_cmp_a"))]
second = usable[labels.index(c2.selectbox("Second", labels, index=1, key="models_cmp_b"))]
with cxr_errors():
    a, b = per_class_auroc(first), per_class_auroc(second)
    shared = [c for c in a if c in b]
    if not shared:
        st.warning(f"{first.name} and {second.name} share no classes with a validation AUROC; nothing to compare.")
        st.stop()
    only = sorted(set(a) ^ set(b))
    if only:
        st.caption("Classes only one of them predicts (not shown): " + ", ".join(only))
    name_a, name_b = first.name, second.name if second.name != first.name else f"{second.name} (2)"
    series = {name_a: [a[c][0] for c in shared], name_b: [b[c][0] for c in shared]}
    errors = {name_a: ([a[c][1] for c in shared], [a[c][2] for c in shared]),
              name_b: ([b[c][1] for c in shared], [b[c][2] for c in shared])}
    st.plotly_chart(charts.auroc_comparison(shared, series, errors), key="models_cmp_chart")
    table = pd.DataFrame({"class": shared, **series})
    table["difference"] = table[name_b] - table[name_a]
    st.dataframe(table, hide_index=True, key="models_cmp_table",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in (name_a, name_b, "difference")})
