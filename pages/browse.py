"""Browse: a run's test-set predictions as an image grid with filters, ordering and pages;
pick an image to see every class's probability. Worst mistakes come first by default."""
import streamlit as st

from cifar_core import charts
from cifar_core.data import CLASS_NAMES
from cifar_ui import browse_link, cache, fmt, gallery, nav, why, widgets
from cifar_ui.calibration import calibration_for, probability_kind, shown_probabilities

nav.require_entry(nav.BROWSE)

GRID_COLUMNS = 6
TILE_PIXELS = 128  # grid thumbnails; the selected image is shown larger
SELECTED_KEY = browse_link.SELECTED_KEY

st.title("Browse")
all_runs, candidates = widgets.model_run_candidates(
    "No run has a saved model yet. Train one, then browse its test-set predictions here.")

ignored = browse_link.read_filters([r.run_id for r in candidates])  # a link or bookmark sets the filters
run = widgets.pick_run(candidates)
widgets.report_broken(all_runs)
if ignored:
    st.warning(f"Parts of this page's address were ignored: {'; '.join(ignored)}.", icon=":material/link_off:")
try:
    preds, data = cache.predictions_for(run)
except cache.LOAD_ERRORS as exc:
    widgets.load_error(f"Cannot load the predictions of run {run.run_id}", exc)
    st.stop()
calibrated = calibration_for(run, preds)  # the run's temperature: Browse shows the probability Predict shows


def shown_confidence(t: dict) -> float:
    """The predicted class's probability as every page shows it (calibrated where the run has a temperature)."""
    return float(shown_probabilities(t["probabilities"], calibrated)[t["predicted_label"]])


def class_option(i):
    return "All" if i is None else CLASS_NAMES[i]


classes = [None, *range(len(CLASS_NAMES))]
f1, f2, f3, f4 = st.columns([1, 1, 1.4, 1.4])
true_label = f1.selectbox("True class", classes, format_func=class_option, key=browse_link.TRUE_KEY)
predicted_label = f2.selectbox("Predicted class", classes, format_func=class_option, key=browse_link.PREDICTED_KEY)
outcome = f3.radio("Show", list(gallery.OUTCOMES), format_func=gallery.OUTCOMES.get, horizontal=True,
                   key=browse_link.SHOW_KEY)
order = f4.selectbox("Order", list(gallery.SORTS), format_func=gallery.SORTS.get, key=browse_link.ORDER_KEY,
                     help=gallery.SORTS_HELP)
browse_link.write_filters(run.run_id, true_label, predicted_label, outcome, order, st.session_state.get(SELECTED_KEY))

indices = gallery.select(preds, true_label, predicted_label, outcome, order)
if len(indices) == 0:
    st.info("No test image matches these filters.", icon=":material/filter_alt_off:")
    st.stop()

p1, p2 = st.columns([2, 3], vertical_alignment="center")
with p1:
    page = st.pagination(gallery.num_pages(len(indices)))  # back to page 1 when the filters change the count
first, last = gallery.page_span(len(indices), page)
p2.caption(f"Images {first}–{last} of {len(indices):,} matching ({len(preds.labels):,} test images). "
           f"Percentages: the {probability_kind(calibrated)} of the predicted class"
           + (f" (temperature {calibrated['temperature']:.2f})." if calibrated else "."))
shown = gallery.page_of(indices, page)


def select_image(index: int) -> None:
    st.session_state[SELECTED_KEY] = index


grid_col, detail_col = st.columns([3, 1], gap="large")
with grid_col:
    for start in range(0, len(shown), GRID_COLUMNS):
        for col, i in zip(st.columns(GRID_COLUMNS), shown[start:start + GRID_COLUMNS]):
            t = gallery.tile(preds, data, int(i))
            with col:
                st.image(widgets.upscale(t["image"], TILE_PIXELS), caption=f"#{t['index']}")
                # The button right under the image keeps a row's buttons aligned however the text wraps.
                st.button("Inspect", key=f"inspect-{t['index']}", on_click=select_image, args=(t["index"],),
                          width="stretch")
                colour = "green" if t["correct"] else "red"
                st.markdown(f"{t['true_name']} → :{colour}[**{t['predicted_name']}**] {fmt.pct(shown_confidence(t), 0)}")

with detail_col:
    selected = st.session_state.get(SELECTED_KEY)
    if selected is None or not 0 <= selected < len(preds.labels):
        selected = int(shown[0])
    t = gallery.tile(preds, data, selected)
    st.subheader(f"Test image #{t['index']}")
    st.image(widgets.upscale(t["image"], 224))
    outcome_word = ":green[**right**]" if t["correct"] else ":red[**wrong**]"
    how = (f"calibrated with temperature {calibrated['temperature']:.2f}" if calibrated  # Predict's words
           else "the model's own probability; this run has no calibration")
    st.markdown(f"True **{t['true_name']}**, predicted **{t['predicted_name']}** "
                f"({fmt.pct(shown_confidence(t))}, {how}) — {outcome_word}  \nLoss {t['loss']:.3f}")
    st.plotly_chart(charts.probability_bars(shown_probabilities(t["probabilities"], calibrated),
                                            true_label=t["true_label"],
                                            title=f"Probabilities, {probability_kind(calibrated)} (true class in red)"))
    explain = st.toggle("Why?", key="browse_why_on", help="Grad-CAM, occlusion and feature maps of this image")

if explain:  # full width below the grid: the feature-map grid needs the room
    st.subheader(f"Why test image #{t['index']} is {t['predicted_name']}")
    try:
        why.why_panel(run, t["image"], t["probabilities"], key=f"why-test-{t['index']}", true_label=t["true_label"])
    except cache.LOAD_ERRORS as exc:
        widgets.load_error(f"Cannot load the model of run {run.run_id}", exc)
