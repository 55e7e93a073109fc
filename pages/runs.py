"""Runs: every run in a table (broken ones with their reason), curves of several runs overlaid,
downloads of a run's model and history, exports for deployment, and deleting a run after confirmation."""
import functools

import pandas as pd
import streamlit as st

from cifar_core import charts, export, runs
from cifar_core.insight import evaluation
from cifar_core.planning.records import predicted_against_actual
from cifar_ui import access, cache, fmt, nav, network, widgets

nav.require_entry(nav.RUNS)

COMPARE_DEFAULT = 3  # runs overlaid by default
FLASH_KEY = "runs_flash"  # a message that survives the rerun after a delete
EXPORT_TITLES = {"keras": "Keras (.keras)", "savedmodel": "TensorFlow SavedModel", "tflite": "TensorFlow Lite"}

st.title("Runs")
if FLASH_KEY in st.session_state:
    st.success(st.session_state.pop(FLASH_KEY), icon=":material/check_circle:")

all_runs = runs.list_runs()
if not all_runs:
    widgets.empty_state("No runs yet. Train one to see it here: every run is saved with its config, curves and model.")
    st.stop()

f1, f2 = st.columns([2, 1])
query = f1.text_input("Filter", placeholder="words in a run's id, name, tags or notes", key="runs_filter")
all_tags = sorted({t for r in all_runs for t in r.tags})
wanted_tags = f2.multiselect("Tags", all_tags, key="runs_filter_tags", disabled=not all_tags,
                             placeholder="any tag" if all_tags else "no run is tagged yet")
listed = fmt.filter_runs(all_runs, query, wanted_tags)
if len(listed) < len(all_runs):
    st.caption(f"{len(listed)} of {len(all_runs)} runs match.")
internals = access.sees_internals()  # cifar_ui/access.py: only the owner on this machine sees paths
runs_table = fmt.runs_frame(listed, public=not internals)
st.dataframe(
    runs_table, hide_index=True, placeholder=fmt.DASH,  # a dash, not "None", where a value does not exist
    column_order=fmt.shown_columns(runs_table), row_height=fmt.WRAPPED_ROW_HEIGHT,  # the config wraps in its cell
    column_config={
        "run": st.column_config.TextColumn(pinned=True),
        "started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        "test accuracy": st.column_config.NumberColumn(format="percent"),
        "with TTA": st.column_config.NumberColumn(format="percent"),
        "config": st.column_config.TextColumn(width=fmt.CONFIG_WIDTH),
        "problem": st.column_config.TextColumn(width="large"),
    },
)

budgeted = [r for r in listed if r.plan]
if budgeted:
    st.subheader("Time budgets: planned against actual")
    st.caption("Runs trained for a time budget: the plan made from this machine's probe and the accuracy "
               "table, and what happened. Over budget: actual training time against the budget "
               "(+5% is 5% over; an over- or under-run is shown as it was).")
    st.dataframe(pd.DataFrame([{"run": fmt.run_label(r), **predicted_against_actual(r.plan)} for r in budgeted]),
                 hide_index=True, placeholder=fmt.DASH, column_config={
                     "budget s": st.column_config.NumberColumn(format="%.0f s"),
                     "predicted s": st.column_config.NumberColumn(format="%.0f s"),
                     "actual s": st.column_config.NumberColumn(format="%.0f s"),
                     "over budget": st.column_config.NumberColumn(format="percent"),
                     "predicted acc (TTA)": st.column_config.NumberColumn(format="percent"),
                     "actual acc (TTA)": st.column_config.NumberColumn(format="percent")})

st.subheader("Compare curves")
with_history = [r for r in listed if not r.broken and r.history]
if not with_history:
    st.caption("No run has a completed epoch yet.")
else:
    labels = fmt.compare_labels(with_history)  # one per run id, even where names and presets repeat
    chosen = st.multiselect("Runs", [r.run_id for r in with_history],
                            default=[r.run_id for r in with_history[:COMPARE_DEFAULT]], format_func=labels.get)
    histories = {labels[r.run_id]: r.history for r in with_history if r.run_id in chosen}
    x_axis = st.segmented_control("Curves against", charts.X_AXES, default="epoch", key="runs_x",
                                  format_func={"epoch": "Epochs", "minutes": "Training minutes"}.get) or "epoch"
    c1, c2 = st.columns(2)
    c1.plotly_chart(charts.overlay_curves(histories, "loss", x=x_axis))
    c2.plotly_chart(charts.overlay_curves(histories, "accuracy", x=x_axis))

    st.subheader("Time to accuracy")
    table = evaluation.time_to_accuracy_table(histories)
    if not table:
        st.caption("None of the chosen runs recorded its training time (runs from before this was measured).")
    else:
        st.caption("Training minutes (validation and saving excluded) until the test accuracy after an epoch "
                   "first reached each mark; a dash where it never did.")
        marks = {f"{t:.0%}": st.column_config.NumberColumn(f"to {t:.0%}", format="%.1f min")
                 for t in evaluation.ACCURACY_MILESTONES}
        st.dataframe(pd.DataFrame(table), hide_index=True, placeholder=fmt.DASH, column_config={
            **marks, "best accuracy": st.column_config.NumberColumn(format="percent"),
            "training minutes": st.column_config.NumberColumn(format="%.1f min")})
        st.plotly_chart(charts.time_to_accuracy_bars(table, evaluation.ACCURACY_MILESTONES))

st.subheader("Files and deletion")
run = widgets.pick_run(all_runs, label="Run", state_key="runs_page_run")
if run.broken:
    st.warning(f"Run {run.run_id} is broken: {run.broken if internals else fmt.public_text(run.broken)}",
               icon=":material/warning:")
network.run_section(run)  # cifar_ui/network.py: its saved model as a table, loaded only when opened
allowed, viewer = access.can_act(), access.read_only()  # the rules live in cifar_ui/access.py
locked = access.locked_reason() or None


def edit_meta() -> None:
    with st.form(f"meta-{run.run_id}", border=True):
        st.markdown("**Name, tags and notes** (the id stays the folder's name; editable while it trains)")
        m1, m2 = st.columns(2)
        new_name = m1.text_input("Name", value=run.name, max_chars=runs.MAX_NAME)
        new_tags = m2.text_input("Tags", value=" ".join(run.tags), help="Separated by spaces or commas.")
        new_notes = st.text_area("Notes", value=run.notes, max_chars=runs.MAX_NOTES, height=80)
        if st.form_submit_button("Save", icon=":material/save:", disabled=not allowed, help=locked) and allowed:
            try:
                runs.update_meta(run.run_id, name=new_name, notes=new_notes, tags=new_tags)
            except (ValueError, runs.RunError) as exc:
                st.error(str(exc), icon=":material/error:")
            else:
                st.session_state[FLASH_KEY] = f"Saved the name, tags and notes of {run.run_id}."
                st.rerun()


def build_export() -> None:
    with st.container(border=True):
        st.markdown("**Export for deployment**: TensorFlow Lite comes as float32 and as a smaller "
                    "dynamic-range quantised copy, each checked against Keras on the run's test images.")
        fmt_choice = st.segmented_control("Export format", export.FORMATS, default="keras",
                                          key="runs_export_format", format_func=EXPORT_TITLES.get) or "keras"
        usable = run.model_path is not None and not run.broken
        if st.button("Build export", icon=":material/deployed_code:", disabled=not usable or not allowed,
                     help=locked) and allowed:
            with st.spinner(f"Exporting {run.run_id} as {EXPORT_TITLES[fmt_choice]}..."):
                try:
                    export.export_run(run.run_id, fmt_choice)
                except (runs.RunError, ValueError) as exc:
                    st.error(str(exc) if internals else fmt.public_text(str(exc)), icon=":material/error:")
        built = export.current_export(run.run_id, fmt_choice) if allowed else None
        if built is not None:
            agreement = ", ".join(f"{name} {share:.1%}" for name, share in built.agreement.items())
            st.caption(f"Built in {built.seconds:.1f} s from the run's current model."
                       + (f" Top-1 agreement with Keras on {built.agreement_images} test images: {agreement}."
                          if agreement else "")
                       + (f" {built.note}." if built.note else ""))
            for col, path, size in zip(st.columns(len(built.paths)), built.paths, built.sizes_bytes):
                folder = path.is_dir()
                col.download_button(f"{path.name}{'.zip' if folder else ''} ({size / 2**20:.1f} MB)",
                                    data=functools.partial(export.folder_zip, path) if folder else path.read_bytes,
                                    file_name=f"{run.run_id}-{path.name}{'.zip' if folder else ''}",
                                    mime="application/octet-stream" if path.suffix == ".tflite" else "application/zip",
                                    icon=":material/download:", on_click="ignore")


def delete_section() -> None:
    with st.container(border=True):
        st.markdown(f"**Delete run `{run.run_id}`**: its folder, model and history are removed for good.")
        confirmed = st.checkbox(f"Yes, delete {run.run_id}", key=f"confirm-delete-{run.run_id}", disabled=not allowed)
        if st.button("Delete run", type="primary", icon=":material/delete:", disabled=not (confirmed and allowed),
                     help=locked) and allowed:
            try:
                runs.delete_run(run.run_id)
            except runs.RunError as exc:
                st.error(str(exc), icon=":material/error:")
            else:
                st.session_state[FLASH_KEY] = f"Deleted run {run.run_id}."
                st.rerun()


if viewer:
    meta = " · ".join(p for p in (run.name, ", ".join(run.tags), run.notes) if p)
    st.caption(meta or "This run has no name, tags or notes.")
else:
    edit_meta()
# Model files leave the lab only for those who may act; curves and configs are for every viewer.
downloads = [d for d in widgets.run_downloads(run) if allowed or not d[1].name.endswith(".keras")]
if downloads:
    cols = st.columns(len(downloads) + (run.model_path is not None))
    for col, (label, path, mime) in zip(cols, downloads):
        col.download_button(label, data=path.read_bytes, file_name=f"{run.run_id}-{path.name}", mime=mime,
                            icon=":material/download:", on_click="ignore")
    if run.model_path is not None and not run.broken:  # made when pressed, from the cached predictions
        cols[-1].download_button("Report (HTML)", data=functools.partial(cache.report_html, run),
                                 file_name=f"{run.run_id}-report.html", mime="text/html",
                                 icon=":material/summarize:", on_click="ignore",
                                 help="Curves, observations, test accuracy, the first four test images, confusion, "
                                      "calibration and the worst mistakes in one file that opens offline.")
else:
    st.caption("This run has no files to download yet.")
if not viewer:
    build_export()
    delete_section()
