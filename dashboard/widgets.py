"""Sidebar model picker, guidance when nothing is there yet, and error display."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from cxr_core.artifacts.catalog import CheckpointEntry, check_folder
from cxr_core.errors import CXRError
from dashboard import state
from dashboard.tables import fmt  # noqa: F401 - pages import it from here

PAGE_ICON = Path(__file__).resolve().parent / "assets" / "page_icon.png"
"""Bundled, so the browser tab's icon needs no font CDN (the dashboard must work offline)."""

TRAIN_HELP = """
**No checkpoint found.** The dashboard needs a trained model to work with. Either

* train one: `cxr train --config configs/<config>.yaml` (writes `checkpoints/<name>/model.safetensors`),
  then `cxr evaluate` to get the validation predictions the Performance, Thresholds and Review pages use; or
* point the dashboard at a folder that holds checkpoints: type it under **Add a checkpoint folder**
  in the sidebar, or start it with `CXR_CHECKPOINT_DIRS=/path/to/checkpoints streamlit run streamlit_app.py`.
"""


@contextmanager
def cxr_errors() -> Iterator[None]:
    """Show any library error as a message instead of a traceback; the page keeps running."""
    try:
        yield
    except CXRError as exc:
        st.error(str(exc), icon=":material/error:")


def _label(entry: CheckpointEntry) -> str:
    if not entry.ok:
        return f"⚠ {entry.name} (unreadable)"
    auroc = entry.summary()["val_macro_auroc"]
    return f"{entry.name} · {entry.card.architecture}" + (
        f" · AUROC {auroc:.3f}" if auroc is not None else ""
    )


def reader_box() -> str:
    """Sidebar: the reader's name, asked once per browser session and kept in the URL across reloads."""
    state.restore_reader()
    st.sidebar.text_input(
        "Reader",
        key=state.READER,
        placeholder="your name or initials",
        help="Stored with every review verdict and threshold change you make. "
        "Kept in the page address (?reader=…), so a reload keeps it.",
    )
    state.keep_reader_in_url()
    name = state.reader()
    if name:
        st.sidebar.caption(f"Reading as **{name}**")
    return name


def model_picker() -> CheckpointEntry | None:
    """Sidebar: choose a checkpoint, add a folder, see the chosen card's summary."""
    st.sidebar.subheader("Model")
    entries = state.entries()
    if entries:
        keys = [e.key for e in entries]
        if st.session_state.get(state.SELECTED) not in keys:
            st.session_state[state.SELECTED] = state.selected_entry().key
        labels = {e.key: _label(e) for e in entries}
        st.sidebar.selectbox("Checkpoint", keys, key=state.SELECTED, format_func=labels.__getitem__)
    else:
        st.sidebar.info("No checkpoint found yet.")
    with st.sidebar.expander("Add a checkpoint folder"):
        folder = st.text_input(
            "Folder path",
            key="cxr_new_folder",
            placeholder="/path/to/checkpoints",
            help="A checkpoint folder or a folder of them",
        )
        if st.button("Add folder", key="cxr_add_folder") and folder.strip():
            with cxr_errors():
                path = str(check_folder(folder.strip()))
                st.session_state[state.EXTRA_DIRS] = [
                    *st.session_state.get(state.EXTRA_DIRS, []),
                    path,
                ]
                state.rescan()
                st.rerun()
        if st.button("Rescan folders", key="cxr_rescan"):
            state.rescan()
            st.rerun()
    entry = state.selected_entry()
    if entry is not None:
        _card_summary(entry)
    return entry


def _card_summary(entry: CheckpointEntry) -> None:
    if not entry.ok:
        st.sidebar.error(entry.error)
        return
    s = entry.summary()
    st.sidebar.caption(
        f"**{s['architecture']}** · {s['task']} · {s['num_classes']} classes"
        + (
            f" · val macro AUROC **{s['val_macro_auroc']:.3f}**"
            if s["val_macro_auroc"] is not None
            else ""
        )
    )
    st.sidebar.caption(", ".join(s["classes"]))
    if not entry.card.get_label_space().multilabel:
        return  # a multiclass model calls its most probable class: no threshold set to pick
    with cxr_errors():
        store = entry.threshold_store()
        names, default = store.names(), store.active_name()
        key = f"cxr_view_set@{entry.key}"
        current = st.session_state.get(state.VIEW_SET, {}).get(entry.key)
        options = ["", *names]
        st.session_state[key] = (
            current if current in names else ""
        )  # follows changes made on other pages
        st.sidebar.selectbox(
            "Threshold set (this browser)",
            options,
            key=key,
            format_func=lambda n: f"model default ({default})" if n == "" else n,
            on_change=lambda: state.view_set(entry, st.session_state[key] or None),
            help="Which set Predict, Performance and Review use for you. Making a set the model's default "
            "for everyone is done on the Thresholds page, and is logged.",
        )
        in_force = state.active_thresholds(entry).name
        st.sidebar.caption(
            f"Thresholds in force: **{in_force}** · "
            + ("your choice" if state.viewing_own_set(entry) else "model default")
        )


def require_entry(*, need_eval: bool = False) -> CheckpointEntry:
    """The selected, readable checkpoint; otherwise explain what to do and stop the page."""
    entry = state.selected_entry()
    if entry is None:
        st.info(TRAIN_HELP)
        st.stop()
    if not entry.ok:
        st.error(f"Checkpoint **{entry.name}** cannot be used: {entry.error}")
        st.stop()
    if need_eval and not entry.has_eval:
        st.info(
            f"Checkpoint **{entry.name}** has no evaluation run yet. Create one with "
            f"`cxr evaluate --checkpoint {entry.model_path} --split val` (writes `{entry.dir / 'eval' / 'val'}`)."
        )
        st.stop()
    return entry


def split_picker(entry: CheckpointEntry, key: str) -> str:
    splits = list(entry.eval_splits)
    default = splits.index("val") if "val" in splits else 0
    return st.selectbox("Evaluation split", splits, index=default, key=key)
