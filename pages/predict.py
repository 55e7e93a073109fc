"""Predict: classify uploaded pictures with a run's model, show what the model sees, its top
classes, and an occlusion heatmap of where it looked. A bad file gets its own error."""
import streamlit as st

from cifar_core import charts
from cifar_core.insight import predict
from cifar_ui import cache, fmt, nav, why, widgets
from cifar_ui.calibration import calibration_for, probability_kind, shown_probabilities, verdict

nav.require_entry(nav.PREDICT)

UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif"]
SHOW_PIXELS = 256  # side of every picture in a result row

st.title("Predict")
all_runs, candidates = widgets.model_run_candidates(
    "No run has a saved model yet. Train one, then upload pictures here.")

left, right = st.columns([2, 1])
with left:
    run = widgets.pick_run(candidates)
with right:
    k = st.slider("Classes shown", min_value=1, max_value=10, value=3)
widgets.report_broken(all_runs)
files = st.file_uploader(
    f"Pictures ({predict.ACCEPTED_FORMATS_TEXT}, up to {predict.MAX_UPLOAD_BYTES // 2**20} MB each)",
    type=UPLOAD_TYPES, accept_multiple_files=True,
)
if not files:
    st.info("Upload one or more pictures. The model was trained on 32×32 images of "
            "airplanes, cars, birds, cats, deer, dogs, frogs, horses, ships and trucks; "
            "a picture of anything else still gets one of these ten answers.", icon=":material/upload:")
    st.stop()

calibrated = calibration_for(run)  # the run's temperature, when its test predictions are known
for upload in files:
    with st.container(border=True):
        st.markdown(f"**{upload.name}**")
        try:
            result = cache.explain_upload(run, upload)
        except predict.ImageError as exc:
            st.error(f"Cannot use this file: {exc}", icon=":material/broken_image:")
            continue
        except cache.LOAD_ERRORS as exc:
            widgets.load_error(f"Cannot load the model of run {run.run_id}", exc)
            st.stop()
        probabilities = shown_probabilities(result["probabilities"], calibrated)  # one number per class per card
        pairs = predict.top_k(probabilities, k)
        name = pairs[0][0]
        unsure, sentence = verdict(result["probabilities"], calibrated)  # same class, same probability
        if unsure:
            st.warning(sentence, icon=":material/help:")
        else:
            st.success(sentence)
        cols = st.columns(4)
        cols[0].image(widgets.fit(result["original"], SHOW_PIXELS), caption="Your picture")
        cols[1].image(widgets.upscale(result["small"], SHOW_PIXELS), caption="What the model sees (32×32)")
        cols[2].plotly_chart(charts.top_k_bars(pairs, title=f"Top {k} ({probability_kind(calibrated)})"),
                             key=f"topk-{upload.file_id}")
        cols[3].image(predict.overlay_heatmap(result["small"], result["heat"], size=SHOW_PIXELS),
                      caption=f"Why: red regions, when hidden, lower '{name}' most")
        # Off by default: a page of uploads should not pay a backward pass per picture nobody asked about.
        if st.toggle("Why? Grad-CAM, occlusion and feature maps", key=f"why-on-{upload.file_id}"):
            try:
                why.why_panel(run, result["small"], probabilities, key=f"why-{upload.file_id}")
            except cache.LOAD_ERRORS as exc:
                widgets.load_error(f"Cannot load the model of run {run.run_id}", exc)
