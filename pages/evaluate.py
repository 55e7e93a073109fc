"""Evaluate: a run's test loss and accuracy, confusion matrix, per-class scores, most confused
pairs, and the first four test images with their predictions (the assignment's step 4)."""
import functools

import pandas as pd
import streamlit as st

from cifar_core import charts, jobs, runs, trainer_lock
from cifar_core.charts import explain as charts_explain
from cifar_core.insight import evaluation
from cifar_core.config import TTA_LEVELS
from cifar_ui import access, browse_link, cache, fmt, gallery, nav, widgets
from cifar_ui.calibration import render_calibration
from cifar_ui.evolution import render_evolution

nav.require_entry(nav.EVALUATE)

TOP_CONFUSED = 5  # class pairs listed
FIRST_N = 4  # the assignment's step 4 shows the first four test images

st.title("Evaluate")
all_runs, candidates = widgets.model_run_candidates(
    "No run has a saved model yet. Train one, then come back here to evaluate it.")

run = widgets.pick_run(candidates)
widgets.report_broken(all_runs)
if run.is_active:
    st.caption("This run is still training: these results are from its latest checkpoint.")
try:
    preds, data = cache.predictions_for(run)
except cache.LOAD_ERRORS as exc:
    widgets.load_error(f"Cannot evaluate run {run.run_id}", exc)
    st.stop()

score = gallery.scores(preds, run.config.label_smoothing)
recorded = run.metrics or {}
tta = "test_accuracy_tta" in recorded
cols = iter(st.columns(5 if tta else 4))
next(cols).metric("Test accuracy", fmt.pct(score["test_accuracy"]), help="Plain: one view per test image.")
next(cols).metric("Test loss", fmt.number(score["test_loss"]),
                  help=f"Mean cross-entropy {evaluation.loss_note(run.config.label_smoothing)}".rstrip() + ".")
if tta:
    next(cols).metric(f"With TTA ({recorded['tta']})", fmt.pct(recorded["test_accuracy_tta"]),
                      help="Recorded at the end of training: the mean prediction over augmented copies of "
                           "each image.")
next(cols).metric("Test images", f"{score['num_test_images']:,}")
next(cols).metric("Epochs trained", fmt.epochs_text(run))
st.download_button("Download the report (HTML)", data=functools.partial(cache.report_html, run),
                   file_name=f"{run.run_id}-report.html", mime="text/html", icon=":material/summarize:",
                   on_click="ignore", help="Everything on this page and the curves, in one file that opens offline.")
def tta_panel(level: str, allowed: bool) -> None:
    """The run's TTA result for this model file, or the button that starts its evaluation in a job
    process of its own (cifar_core/jobs), watched here until its result lands in the run folder."""
    stamp = runs.current_model_stamp(run.path)
    result = evaluation.recorded_tta(run.path, level, stamp)
    holder = trainer_lock.holder() or {}
    evaluating = holder.get("run_id") == run.run_id and holder.get("tta") == level
    if result and "accuracy" in result:
        acc = result["accuracy"]
        st.metric(f"Test accuracy with TTA ({level})", fmt.pct(acc),
                  delta=f"{(acc - score['test_accuracy']) * 100:+.1f} points vs plain")
        return
    if result and "error" in result and not evaluating:
        st.error(f"The TTA evaluation failed: {result['error']}", icon=":material/error:")
    if evaluating:
        @st.fragment(run_every=1.0)
        def wait() -> None:
            if evaluation.recorded_tta(run.path, level, stamp) or (trainer_lock.holder() or {}).get("tta") != level:
                st.rerun(scope="app")
            st.caption(f"Evaluating with {level} in a job process of its own…")

        wait()
        return
    if st.button("Evaluate with TTA", icon=":material/play_arrow:", disabled=not allowed,
                 help=access.locked_reason() or "Predicts the test set 2 or 6 times in a job process of its own; "
                                                "the machine's trainer is held meanwhile.") and allowed:
        try:
            jobs.evaluate_tta(run.run_id, level)
        except (jobs.JobBusyError, runs.RunError) as exc:
            st.error(str(exc), icon=":material/error:")
        else:
            st.rerun()


with st.expander("Test-time augmentation", icon=":material/flip:"):
    st.caption("Averages the model's predictions over mirrored (flip) and also one-pixel-shifted (flip_shift) "
               "copies of each test image. Costs 2 or 6 predictions per image; the model is unchanged.")
    # Predicting the test set 2 or 6 times is work only those who may act start (cifar_ui/access.py).
    allowed = access.can_act()
    if access.read_only():
        st.caption(access.locked_reason())
    else:
        level = st.selectbox("Views", [t for t in TTA_LEVELS if t != "none"], key="evaluate_tta_level")
        tta_panel(level, allowed)

st.subheader(f"First {FIRST_N} test images")
tiles = st.columns(FIRST_N)
for col, t in zip(tiles, gallery.first_tiles(preds, data, FIRST_N)):
    with col:
        st.image(widgets.upscale(t["image"]), caption=f"test image #{t['index']}")
        verdict = ":green[**right**]" if t["correct"] else ":red[**wrong**]"
        st.markdown(f"Predicted **{t['predicted_name']}** ({fmt.pct(t['confidence'])})  \n"
                    f"True **{t['true_name']}** — {verdict}")

cm = evaluation.confusion_matrix(preds.labels, preds.predicted)
grid, right = st.container(), st.container()  # one above the other: in half a column the grid's names overlapped
with grid:
    # Square markers, not a go.Heatmap: Streamlit's on_select returns nothing for heatmaps (streamlit#8760).
    clicked = st.plotly_chart(charts_explain.confusion_grid(cm), on_select="rerun", selection_mode="points",
                              key="evaluate_confusion")
    st.caption("Colour: the share of the true class. Click a cell to browse its test images.")
    pair = charts_explain.selected_pair(clicked.selection.points)
    if pair is not None:
        browse_link.open_browse(run.run_id, true_label=pair[0], predicted_label=pair[1])
with right:
    st.subheader("Per class")
    scores = ("precision", "recall", "f1", "accuracy")
    report = pd.DataFrame(evaluation.per_class_report(cm))
    report[list(scores)] *= 100  # shown as percentages with one decimal, like every other page
    picked = st.dataframe(report, hide_index=True, on_select="rerun", selection_mode="single-row",
                          key="evaluate_per_class", placeholder=fmt.DASH,  # a class never predicted has no precision
                          column_config={k: st.column_config.NumberColumn(format="%.1f%%") for k in scores})
    st.caption("Accuracy of a class is its recall: the share of its test images classified correctly. "
               "Select a class's row to browse its mistakes.")
    if picked.selection.rows:
        browse_link.open_browse(run.run_id, true_label=int(picked.selection.rows[0]), outcome="wrong")
    st.subheader("Most confused")
    confused = evaluation.most_confused(cm, TOP_CONFUSED)
    if confused:
        confused = pd.DataFrame(confused)
        confused["share_of_true"] *= 100  # one decimal, as in the per-class table ("percent" gave 72.22% and 15%)
        st.dataframe(confused, hide_index=True, placeholder=fmt.DASH,
                     column_config={"share_of_true": st.column_config.NumberColumn("share of true class",
                                                                                   format="%.1f%%")})
        st.page_link(nav.BROWSE.path, label="See the mistakes", icon=nav.BROWSE.icon)
    else:
        st.caption("No test image was misclassified.")

st.subheader("Training curves")
if run.history:
    c1, c2 = st.columns(2)
    c1.plotly_chart(charts.epoch_curves(run.history, "loss"))
    c2.plotly_chart(charts.epoch_curves(run.history, "accuracy"))
    st.markdown("\n".join(f"- {line}" for line in
                          evaluation.describe_summary(evaluation.summarize_history(run.history))))
else:
    st.caption("This run has no recorded epochs.")

st.subheader("How each class evolved")
render_evolution(run, key="evaluate_evolution")

st.subheader("Calibration")
render_calibration(run, preds)
