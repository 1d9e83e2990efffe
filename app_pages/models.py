"""Models: the model card of each checkpoint and a per-class AUROC comparison of two of them."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from cxr_core.artifacts.catalog import (
    CheckpointEntry,
    class_counts,
    ensemble_members,
    evaluation_data,
    per_class_auroc,
    same_evaluation_data,
)
from cxr_core.evaluation.compare import comparison_table
from cxr_core.utils.csv_safe import frame_csv_text
from dashboard import charts, comparison_views, evaluation_cache, state
from dashboard.tables import (
    CLASS_COUNT_TITLES,
    MEMBER_TITLES,
    OVERVIEW_TITLES,
    fmt,
    human_date,
    key_values,
    table_height,
    titled,
)
from dashboard.widgets import TRAIN_HELP, cxr_errors

st.title("Models")
entries = state.entries()
if not entries:
    st.info(TRAIN_HELP)
    st.stop()

OVERVIEW_COLUMNS = (
    "name",
    "architecture",
    "task",
    "num_classes",
    "val_macro_auroc",
    "eval_splits",
    "created",
    "folder",
    "error",
)
overview = pd.DataFrame(
    [e.summary() | {"folder": str(e.dir), "error": e.error} for e in entries],
    columns=list(OVERVIEW_COLUMNS),
)
overview["created"] = overview["created"].map(human_date)
overview["eval_splits"] = overview["eval_splits"].map(
    lambda v: ", ".join(v) if isinstance(v, list) else ""
)
if not overview["error"].astype(bool).any():
    overview = overview.drop(columns="error")
st.subheader("Checkpoints")
st.dataframe(
    titled(overview, OVERVIEW_TITLES),
    hide_index=True,
    key="models_overview",
    height=table_height(len(overview)),
    column_config={
        "val macro AUROC": st.column_config.NumberColumn(format="%.3f"),
        "folder": st.column_config.TextColumn(width="medium"),
    },
)


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
        st.markdown(
            f"**Test-time augmentation.** `{card.tta}`: every prediction, and the validation numbers, "
            "average the image with its mirror image."
        )
    members = ensemble_members(card)
    if not members.empty:
        st.markdown(
            f"**Ensemble of {len(members)} models**, their logits averaged; each member alone on "
            "the same validation split:"
        )
        st.dataframe(
            titled(members, MEMBER_TITLES),
            hide_index=True,
            key=f"card_members_{entry.key}",
            height=table_height(len(members)),
            column_config={"val macro AUROC alone": st.column_config.NumberColumn(format="%.3f")},
        )
    if card.thresholds:
        st.markdown(
            "**Decision thresholds** (" + (card.threshold_method or "method not recorded") + ")"
        )
        st.dataframe(
            pd.DataFrame(
                {"class": list(card.thresholds), "threshold": list(card.thresholds.values())}
            ),
            hide_index=True,
            key=f"card_thr_{entry.key}",
            height=table_height(len(card.thresholds)),
            column_config={"threshold": st.column_config.NumberColumn(format="%.3f")},
        )
    st.markdown(
        "**Images per class** (⚑ too few validation positives or negatives for a meaningful metric)"
    )
    counts = class_counts(card)
    st.dataframe(
        titled(comparison_views.class_counts_display(counts), CLASS_COUNT_TITLES),
        hide_index=True,
        key=f"card_counts_{entry.key}",
        height=table_height(len(counts)),
    )
    tabs = st.tabs(
        ["Data", "Training", "Validation", "Preprocessing", "Versions", "Full card (JSON)"]
    )
    for tab, block, name in (
        (tabs[0], card.data, "data"),
        (tabs[1], card.training, "training"),
        (tabs[2], card.validation, "validation"),
    ):
        with tab:
            facts = key_values(
                {k: v for k, v in (block or {}).items() if k not in ("per_class", "members")}
            )
            st.dataframe(
                facts,
                hide_index=True,
                key=f"card_{name}_{entry.key}",
                height=table_height(len(facts)),
                column_config={"field": st.column_config.TextColumn(width=260)},
            )
            with st.expander(f"All of the {name} block (JSON)"):
                st.json(block or {}, expanded=1)
    with tabs[3]:
        st.json(card.preprocess, expanded=True)
    with tabs[4]:
        st.json(
            card.versions
            | {"created": human_date(card.created), "weights_dtype": card.weights_dtype},
            expanded=True,
        )
    with tabs[5]:
        st.download_button(
            "Download model card (JSON)",
            card.to_json(),
            file_name=f"{entry.name}_model_card.json",
            mime="application/json",
            key=f"card_json_{entry.key}",
            icon=":material/download:",
        )
        st.json(json.loads(json.dumps(card.to_dict(), default=str)), expanded=1)


st.subheader("Model card")
names = [e.name for e in entries]
selected = state.selected_entry()
chosen = st.selectbox(
    "Checkpoint", names, index=names.index(selected.name) if selected else 0, key="models_card_pick"
)
_card(entries[names.index(chosen)])

st.subheader("Compare two checkpoints")
usable = [e for e in entries if e.ok]
if len(usable) < 2:
    st.info("Add a second checkpoint to compare per-class AUROC side by side.")
    st.stop()
labels = [e.name for e in usable]
c1, c2, c3 = st.columns([2, 2, 1])
first = usable[labels.index(c1.selectbox("First", labels, index=0, key="models_cmp_a"))]
second = usable[labels.index(c2.selectbox("Second", labels, index=1, key="models_cmp_b"))]
shared_splits = [s for s in first.eval_splits if s in second.eval_splits]
split = c3.selectbox("Split", shared_splits or ["–"], key="models_cmp_split")
name_a, name_b = first.name, second.name if second.name != first.name else f"{second.name} (2)"
paired = None
if shared_splits:
    with cxr_errors():
        runs = (state.eval_run(first, split), state.eval_run(second, split))
        if all(r.predictions is not None for r in runs):
            paired = evaluation_cache.comparison(
                (name_a, name_b),
                runs,
                tuple(e.card.get_label_space().multilabel for e in (first, second)),
            )
if paired is not None:
    st.caption(comparison_views.comparison_note(paired, split))
    st.plotly_chart(
        charts.delta_figure(
            comparison_views.forest(paired), "ΔAUROC per finding", f"AUROC {name_a} − {name_b}"
        ),
        key="models_cmp_forest",
    )
    for title, table, key in (
        ("Discrimination", comparison_views.discrimination_table(paired), "models_cmp_table"),
        (
            "At each model's operating point",
            comparison_views.operating_table(paired),
            "models_cmp_operating",
        ),
    ):
        st.markdown(f"**{title}**")
        st.dataframe(
            table,
            hide_index=True,
            key=key,
            height=table_height(len(table)),
            # the finding stays in view while a 1024 px screen scrolls to the other columns
            column_config={"Finding": st.column_config.TextColumn(pinned=True)},
        )
    left, right = st.columns(2)
    left.download_button(
        "Download the comparison (JSON)",
        paired.to_json(),
        file_name=f"{name_a}_vs_{name_b}_{split}.json",
        mime="application/json",
        key="models_cmp_json",
        icon=":material/download:",
    )
    right.download_button(
        "Download the table (CSV)",
        frame_csv_text(comparison_table(paired)),
        file_name=f"{name_a}_vs_{name_b}_{split}.csv",
        mime="text/csv",
        key="models_cmp_csv",
        icon=":material/download:",
    )
    st.stop()

st.warning(
    "**No paired comparison.** "
    + (
        f"{first.name} and {second.name} have no evaluation on a common split."
        if not shared_splits
        else "The two evaluations are not of the same images with the same labels (see above)."
    )
    + " Evaluate both on one split of one dataset to compare them case by case: "
    "`cxr compare --checkpoint A --checkpoint B --split val --out DIR`, or `cxr evaluate --data …` for each. "
    "Below: each model's own validation AUROC, side by side but not paired.",
    icon=":material/warning:",
)
if not same_evaluation_data(first, second):
    st.warning(
        f"**Not a like-for-like comparison.** {first.name} was validated on {evaluation_data(first)[0]}, "
        f"{second.name} on {evaluation_data(second)[0]}: different patients, prevalence and image sources, so a "
        "difference in AUROC says nothing about which model is better.",
        icon=":material/warning:",
    )
with cxr_errors():
    a, b = per_class_auroc(first), per_class_auroc(second)
    shared = [c for c in a if c in b]
    if not shared:
        st.warning(
            f"{first.name} and {second.name} share no classes with a validation AUROC; nothing to compare."
        )
        st.stop()
    only = sorted(set(a) ^ set(b))
    if only:
        st.caption("Classes only one of them predicts (not shown): " + ", ".join(only))
    series = {name_a: [a[c][0] for c in shared], name_b: [b[c][0] for c in shared]}
    errors = {
        name_a: ([a[c][1] for c in shared], [a[c][2] for c in shared]),
        name_b: ([b[c][1] for c in shared], [b[c][2] for c in shared]),
    }
    st.plotly_chart(charts.auroc_comparison(shared, series, errors), key="models_cmp_chart")
    table = pd.DataFrame({"class": shared, **series})
    table["difference"] = table[name_b] - table[name_a]
    st.dataframe(
        table,
        hide_index=True,
        key="models_cmp_unpaired",
        height=table_height(len(table)),
        column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in (name_a, name_b, "difference")
        },
    )
