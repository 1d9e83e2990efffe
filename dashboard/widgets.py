"""Sidebar model picker, guidance when nothing is there yet, and error display."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from cxr_core.artifacts.catalog import CheckpointEntry, check_folder
from cxr_core.artifacts.thresholds_store import ThresholdStore
from cxr_core.errors import CXRError
from dashboard import auth, state
from dashboard.tables import fmt, human_date  # noqa: F401 - pages import fmt from here

PAGE_ICON = Path(__file__).resolve().parent / "assets" / "page_icon.png"
"""Bundled, so the browser tab's icon needs no font CDN (the dashboard must work offline)."""

TRAIN_HELP = """
**No checkpoint found.** The dashboard needs a trained model to work with. Either

* train one: `cxr train --config configs/<config>.yaml` (writes `checkpoints/<name>/model.safetensors`),
  then `cxr evaluate` to get the validation predictions the Performance, Thresholds and Review pages use; or
* point the dashboard at a folder that holds checkpoints: type it under **Add a checkpoint folder**
  in the sidebar, or start it with `CXR_CHECKPOINT_DIRS=/path/to/checkpoints streamlit run streamlit_app.py`.
"""


LAYOUT_CSS = """
<style>
/* Pages start right under the header: Streamlit's default leaves ~6rem above the title. */
[data-testid="stMainBlockContainer"] {
  padding-top: 3.25rem; padding-left: 2rem; padding-right: 2rem; padding-bottom: 3rem;
}
[data-testid="stMainBlockContainer"] h1 { font-size: 2rem; padding: 0.25rem 0 0.5rem 0; }
/* A number is never cut to "0.…": metric values shrink with the column and wrap if they must. */
[data-testid="stMetricValue"] { font-size: clamp(1.05rem, 1.9vw, 2rem); }
[data-testid="stMetricValue"] > div {
  white-space: normal; overflow: visible; text-overflow: clip; overflow-wrap: anywhere;
}
[data-testid="stMetricLabel"] p { white-space: normal; }
/* A button's label wraps onto a second line rather than being cut ("Ap…"). */
[data-testid^="stBaseButton"] p { white-space: normal; overflow: visible; text-overflow: clip; }
</style>
"""


def compact_layout() -> None:
    """Page-wide CSS: less empty space above each page, and no truncated numbers or button labels
    in narrow columns (1,024 px screens with the sidebar open)."""
    st.html(LAYOUT_CSS)


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


def reader_box_key(name: str) -> str:
    """The Reader box's widget key while ``name`` is this browser's reader (see :func:`reader_box`)."""
    return f"cxr_reader_box@{name}"


def reader_box() -> str:
    """Sidebar: who is reading. Signed in: the user, their role and the sign-out button (a
    ``?reader=`` in the URL is dropped; no box). A local install: the name, asked once per browser
    session and kept in the URL across reloads, and a note that only this computer can open it.

    A local install's name lives in ``state.READER``, written only when the reader edits the box,
    never by whatever the browser reports: a text box the browser mounts without a value from the
    server comes back empty, which silently made a reader nobody mid-session (their calls refused).
    Keyed by the name, the box is a new widget whenever the name changes, with the name as its value.
    """
    config = state.auth_config()
    if config.signs_in:
        if state.READER_PARAM in st.query_params:
            del st.query_params[state.READER_PARAM]
        auth.user_box(config, state.actor())
        return state.reader()
    st.sidebar.caption(
        ":material/computer: Single-user local install: no sign-in, so only this computer "
        "(127.0.0.1) can open it."
    )
    state.restore_reader()
    box = reader_box_key(state.typed_reader())
    st.sidebar.text_input(
        "Reader",
        value=state.typed_reader(),
        key=box,
        placeholder="your name or initials",
        help="Stored with every review verdict and threshold change you make. "
        "Kept in the page address (?reader=…), so a reload keeps it.",
        on_change=lambda: st.session_state.update({state.READER: st.session_state[box]}),
    )
    state.keep_reader_in_url()
    name = state.reader()
    if name:
        st.sidebar.caption(f"Reading as **{name}**")
    return name


def picker_key(chosen: str) -> str:
    """The sidebar picker's widget key while ``chosen`` is this browser's checkpoint.

    The choice itself lives in ``state.SELECTED``, written only by this browser's own pick (or
    Review's explicit switch), never by whatever value the browser reports for the widget: a
    widget the browser mounts without a value from the server takes its ``index``, and with
    Streamlit's default (the first option, which may be an unreadable checkpoint) a page switch or
    an interrupted run could hand a new session that option. Keyed by the choice, the widget is a
    new one whenever the choice changes elsewhere, and its default is always the choice.
    """
    return f"cxr_checkpoint_pick@{chosen}"


def model_picker() -> CheckpointEntry | None:
    """Sidebar: choose a checkpoint, add a folder, see the chosen card's summary."""
    st.sidebar.subheader("Model")
    entries = state.entries()
    if entries:
        keys = [e.key for e in entries]
        chosen = state.selected_entry().key
        st.session_state[state.SELECTED] = chosen
        labels = {e.key: _label(e) for e in entries}
        pick = picker_key(chosen)
        st.sidebar.selectbox(
            "Checkpoint",
            keys,
            index=keys.index(chosen),
            key=pick,
            format_func=labels.__getitem__,
            on_change=lambda: st.session_state.update({state.SELECTED: st.session_state[pick]}),
        )
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
        current = state.chosen_set(entry)
        options = ["", *names]
        st.session_state[key] = (
            current if current in names else ""
        )  # follows changes made on other pages
        whose = "yours" if state.reader() else "this browser"
        st.sidebar.selectbox(
            f"Threshold set ({whose})",
            options,
            key=key,
            format_func=lambda n: f"model default ({default})" if n == "" else n,
            on_change=lambda: state.view_set(entry, st.session_state.get(key) or None),
            help="Which set Predict, Performance and Review use for you; kept under your reader name "
            "(without a name, for this browser session only). Making a set the model's default for "
            "everyone is done on the Thresholds page, and is logged.",
        )
        in_force = state.active_thresholds(entry).name
        st.sidebar.caption(
            f"Thresholds in force: **{in_force}** · "
            + ("your choice" if state.viewing_own_set(entry) else "model default")
        )


def _change_text(store: ThresholdStore, change: Mapping[str, str]) -> str:
    """One default change as a reader reads it: who, when, from which set to which, and the
    thresholds that moved (at most ``SHOWN_CHANGES`` classes named)."""
    text = (
        f"**{change['by'] or 'someone (name not recorded)'}** made **{change['to']}** the default on "
        f"{human_date(change['when'])} (was **{change['from']}**)"
    )
    try:
        frame = store.compare(change["from"], change["to"])
    except CXRError:
        return text + "; one of the two sets is gone, so the values cannot be compared."
    moved = frame[frame["difference"].abs() > 1e-9]
    if moved.empty:
        return text + "; no threshold differs between the two sets."
    shown = [
        f"{row[0]} {row[1]:.3f} → {row[2]:.3f}"
        for row in moved.iloc[:SHOWN_CHANGES].itertuples(index=False)
    ]
    more = len(moved) - len(shown)
    return text + ": " + ", ".join(shown) + (f" and {more} more" if more > 0 else "") + "."


SHOWN_CHANGES = 4


def default_change_notice(entry: CheckpointEntry | None) -> None:
    """Above every page: the changes of the model's default threshold set this reader has not
    acknowledged (who, when, what), until they press "Understood"."""
    if entry is None or not entry.ok:
        return
    with cxr_errors():
        changes = state.unseen_default_changes(entry)
        if not changes:
            return
        store = entry.threshold_store()
        own = state.chosen_set(entry)
        effect = (
            f"You read with your own set **{own}**, which is unchanged."
            if state.viewing_own_set(entry)
            else f"You follow the model default, so your calls now use **{store.active_name()}**."
        )
        with st.container(border=True, key="cxr_default_notice"):
            st.warning(
                f"**The default threshold set of {entry.name} changed** since you last saw it.  \n"
                + "  \n".join(_change_text(store, c) for c in changes)
                + f"  \n{effect}",
                icon=":material/info:",
            )
            st.button(
                "Understood",
                key="cxr_default_ack",
                on_click=state.acknowledge_default_changes,
                args=(entry,),
                help="Stop showing these changes (a later change is shown again).",
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
