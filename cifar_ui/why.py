"""The "why" panel for one 32x32 image (an upload on Predict, a test image on Browse): Grad-CAM for
the predicted class or any other, the occlusion map, and the first convolutions' feature maps.

Everything heavy is cached per (run, model file, image, class or layer): moving the opacity slider
or switching tabs reruns the page without touching the model.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import streamlit as st

from cifar_core.insight import explain, predict
from cifar_core.data import images
from cifar_core import runs
from cifar_core.data import CLASS_NAMES

from . import cache, fmt

PICTURE_PIXELS = 256  # side of each overlay
GRID_COLUMNS = 8  # feature-map tiles per row
TILE_PIXELS = 72


@st.cache_data(max_entries=64, show_spinner="Computing Grad-CAM…")
def _grad_cams(run_id: str, stamp: str, image: np.ndarray, _run: runs.Run) -> explain.GradCam:
    return explain.grad_cams(cache.model_for(_run), image)


@st.cache_data(max_entries=64, show_spinner="Hiding each region in turn…")
def _occlusion(run_id: str, stamp: str, image: np.ndarray, label: int, _run: runs.Run) -> np.ndarray:
    return predict.occlusion_map(cache.model_for(_run), image, label)


@st.cache_data(max_entries=8, show_spinner=False)
def _conv_layers(run_id: str, stamp: str, _run: runs.Run) -> list[str]:
    return explain.conv_layers(cache.model_for(_run))


@st.cache_data(max_entries=32, show_spinner="Reading the feature maps…")
def _features(run_id: str, stamp: str, image: np.ndarray, conv: str, _run: runs.Run) -> tuple[str, np.ndarray]:
    return explain.feature_maps(cache.model_for(_run), image, conv)


def why_panel(run: runs.Run, image: np.ndarray, probabilities: np.ndarray, key: str,
              true_label: Optional[int] = None) -> None:
    """Tabs Grad-CAM, Occlusion and Feature maps for `image` (32x32x3 uint8) as run's model sees it.
    `key` is unique per image on the page; `true_label` (a test image's) is marked in the class list."""
    stamp = cache.model_stamp(run)
    image = np.ascontiguousarray(image, dtype=np.uint8)
    cams = _grad_cams(run.run_id, stamp, image, run)
    predicted = cams.predicted

    def class_label(k: int) -> str:
        marks = [m for m, on in (("predicted", k == predicted), ("true", k == true_label)) if on]
        return f"{CLASS_NAMES[k]} ({fmt.pct(float(probabilities[k]))})" + (f" · {', '.join(marks)}" if marks else "")

    left, right = st.columns(2)
    label = left.selectbox("Explain class", range(len(CLASS_NAMES)), index=predicted, format_func=class_label,
                           key=f"{key}-class", help="Why this class: compare the predicted class with any other.")
    opacity = right.slider("Map opacity", 0.0, 1.0, 0.5, 0.05, key=f"{key}-opacity",
                           help="0 shows only the picture, 1 only the map.")
    gradcam_tab, occlusion_tab, features_tab = st.tabs(["Grad-CAM", "Occlusion", "Feature maps"])

    with gradcam_tab:
        shown = [predicted] if label == predicted else [predicted, label]
        for col, k in zip(st.columns(2), shown):
            col.image(images.heat_overlay(image, cams.maps[k], opacity, PICTURE_PIXELS),
                      caption=f"Grad-CAM for {CLASS_NAMES[k]}" + (" (predicted)" if k == predicted else ""))
            if cams.empty[k]:
                col.caption(f"All zero: nothing in the last feature map raises the score of {CLASS_NAMES[k]}.")
        h, w = cams.cells
        st.caption(f"**Grad-CAM** shows where the features the network computed speak *for* a class: the "
                   f"last convolution's output (`{cams.layer}`, {h}×{w} cells), each channel weighted by how "
                   f"much it raises the class's {cams.score} (its gradient), positive part only, scaled up to "
                   f"32×32. Red: strongest evidence. Coarse: one cell covers {32 // max(h, 1)}×{32 // max(w, 1)} "
                   f"pixels.")

    with occlusion_tab:
        heat = _occlusion(run.run_id, stamp, image, int(label), run)
        st.image(images.heat_overlay(image, heat, opacity, PICTURE_PIXELS),
                 caption=f"Occlusion for {CLASS_NAMES[label]}")
        st.caption(f"**Occlusion** hides each small patch of the image with gray, one at a time, and measures "
                   f"how much the probability of {CLASS_NAMES[label]} drops. Red: hiding it hurts most. It "
                   f"uses only the model's answers, so it works for any model (no gradients, no layers), at "
                   f"the cost of one prediction per patch position; it sees only what a patch can hide.")

    with features_tab:
        convs = _conv_layers(run.run_id, stamp, run)[:explain.FEATURE_LAYERS]
        conv = st.selectbox("Layer", convs, key=f"{key}-layer",
                            help="The first convolution layers, input side first.")
        name, maps = _features(run.run_id, stamp, image, conv, run)
        st.image(images.feature_grid(maps, GRID_COLUMNS, TILE_PIXELS),
                 caption=f"{len(maps)} channels of {name}, {maps.shape[1]}×{maps.shape[2]}, most active first")
        st.caption("**Feature maps**: what one convolution layer outputs for this image (after its BatchNorm "
                   "and activation, where the network has them). Each tile is one channel, bright where it "
                   "responds strongly; the first layers pick out edges, colours and textures.")
