"""Data: the dataset as the network sees it. Images per class, a few of each class, one batch as a
recipe's augmentation delivers it in training, per-channel statistics, and the test images that
have a near-copy in the training set (with what that does to a run's test accuracy)."""
import numpy as np
import pandas as pd
import streamlit as st

from cifar_core import data, runs
from cifar_core.charts.data import class_counts as class_counts_figure
from cifar_core.data import CLASS_NAMES, DataError, duplicates, summary
from cifar_core.paths import cache_dir
from cifar_core.recipes.presets import PRESETS, preset_config
from cifar_ui import access, cache, fmt, nav, widgets

nav.require_entry(nav.DATA)

PREVIEW_IMAGES = 12  # one batch's first images, original above augmented
PAIRS_SHOWN = 24
GAP = 2  # pixels between the images of a strip


def strip(images: np.ndarray, scale: int = 3) -> np.ndarray:
    """Images side by side on a white ground, each pixel a scale x scale square."""
    images = np.asarray(images, np.uint8)
    n, h, w = len(images), images.shape[1], images.shape[2]
    out = np.full((h, n * (w + GAP) - GAP, 3), 255, np.uint8)
    for i, image in enumerate(images):
        out[:, i * (w + GAP):i * (w + GAP) + w] = image
    return out.repeat(scale, axis=0).repeat(scale, axis=1)


@st.cache_resource(max_entries=3, show_spinner="Building the recipe's network…")
def recipe_network(preset: str, source: str):
    """The preset's network as Train builds it (its augmentation layers included)."""
    from cifar_core.models import build_network

    return build_network(preset_config(preset), data.get_dataset(source).x_train[:512])


@st.cache_data(max_entries=4, show_spinner=False)
def stats_of(source: str) -> dict:
    d = data.get_dataset(source)
    return {"train": summary.class_counts(d.y_train), "test": summary.class_counts(d.y_test),
            "channels": summary.channel_stats(d.x_train) if len(d.x_train) else None}


@st.cache_data(max_entries=4, show_spinner=False)
def duplicates_key(source: str) -> str:
    """The near-duplicate cache's key for this source (hashing 180 MB of images: once, not every rerun)."""
    d = data.get_dataset(source)
    return duplicates.content_key(d.x_train, d.x_test)


st.title("Data")
source = widgets.data_source_picker()  # a viewer picks only the lab's own sources (checked there)
described = data.describe_source(source)
st.caption(described if access.sees_internals() else fmt.public_text(described))
if source == "keras" and not access.can_act() and data.keras_download_folder() is None:
    st.info("The official CIFAR-10 is not downloaded on this server yet: it is, once someone who may act "
            "uses it.", icon=":material/info:")  # a viewer never starts the 170 MB download
    st.stop()
try:
    dataset = data.get_dataset(source)
    stats = stats_of(source)
except DataError as exc:
    st.error(f"Cannot read this data source: {exc if access.sees_internals() else fmt.public_text(str(exc))}",
             icon=":material/error:")
    st.stop()

# --- classes and channels --------------------------------------------------------------------
st.header("Classes")
c1, c2 = st.columns([3, 2])
c1.plotly_chart(class_counts_figure(stats["train"], stats["test"]), width="stretch")
with c2:
    st.dataframe(pd.DataFrame({"class": CLASS_NAMES, "train": stats["train"], "test": stats["test"]}),
                 hide_index=True, width="stretch")
    st.caption(f"{len(dataset.y_train):,} training and {len(dataset.y_test):,} test images.")
if stats["channels"] is not None:
    ch = stats["channels"]
    st.markdown("**Per-channel statistics of the training images** (0-255; divide by 255 for the 0-1 scale "
                "the networks rescale to)")
    st.dataframe(pd.DataFrame({"channel": ["red", "green", "blue"],
                               "mean": [round(v, 2) for v in ch["mean"]],
                               "standard deviation": [round(v, 2) for v in ch["std"]]}),
                 hide_index=True)

# --- samples ---------------------------------------------------------------------------------
st.header("Samples")
s1, s2, s3 = st.columns([1, 1, 2])
split = s1.radio("Split", ["train", "test"], horizontal=True)
per_class = s2.slider("Images per class", 1, 16, 8)
if s3.button("Other samples", icon=":material/shuffle:"):
    st.session_state["data_sample_seed"] = st.session_state.get("data_sample_seed", 0) + 1
x, y = (dataset.x_train, dataset.y_train) if split == "train" else (dataset.x_test, dataset.y_test)
picked = summary.samples_per_class(y, per_class, seed=st.session_state.get("data_sample_seed", 0))
for name, indices in picked.items():
    if indices:
        st.image(strip(x[indices]), caption=f"{name}: {len(indices)} of {int((y == CLASS_NAMES.index(name)).sum()):,}")

# --- augmentation ----------------------------------------------------------------------------
st.header("As the network sees it in training")
model_runs = widgets.model_runs(runs.list_runs())
choices = [f"recipe:{name}" for name in PRESETS] + [f"run:{r.run_id}" for r in model_runs]
labels = {**{f"recipe:{n}": f"Recipe: {p.title}" for n, p in PRESETS.items()},
          **{f"run:{r.run_id}": f"Run: {fmt.run_label(r)}" for r in model_runs}}
a1, a2 = st.columns([3, 1], vertical_alignment="bottom")
chosen = a1.selectbox("Augmentation of", choices, format_func=labels.get,
                      help="The model's own augmentation layers, run in training mode on one batch of "
                           "training images: what the network is shown in each step.")
if a2.button("Another batch", icon=":material/casino:"):
    st.session_state["data_batch_seed"] = st.session_state.get("data_batch_seed", 0) + 1
seed = st.session_state.get("data_batch_seed", 0)
if len(dataset.x_train) == 0:
    st.info("This source has no training images.", icon=":material/info:")
else:
    try:
        if chosen.startswith("recipe:") and preset_config(chosen.split(":", 1)[1]).augment == "none":
            model = None  # nothing to run (and no TensorFlow to load) for a recipe without augmentation
        elif chosen.startswith("recipe:"):
            model = recipe_network(chosen.split(":", 1)[1], source)
        else:
            model = cache.model_for(next(r for r in model_runs if r.run_id == chosen.split(":", 1)[1]))
        from cifar_core.models.augment import augment_like_training, model_augmentation

        layers = model_augmentation(model) if model is not None else []
        batch = np.random.default_rng(seed).choice(len(dataset.x_train), PREVIEW_IMAGES, replace=False)
        original = dataset.x_train[np.sort(batch)]
        if not layers:
            st.info("This network has no augmentation layers: it trains on the images as they are.",
                    icon=":material/info:")
            st.image(strip(original), caption="one batch, as it is")
        else:
            st.caption("Layers, in order: " + ", ".join(f"`{layer.name}` ({type(layer).__name__})" for layer in layers))
            st.image(strip(original), caption="one batch, as it is")
            st.image(strip(augment_like_training(model, original, seed=seed)),
                     caption="the same batch as the augmentation layers deliver it (training mode)")
    except cache.LOAD_ERRORS as exc:
        st.error(f"Cannot load that model: {exc if access.sees_internals() else fmt.public_text(str(exc))}",
                 icon=":material/error:")

# --- near-duplicates -------------------------------------------------------------------------
st.header("Near-duplicates between train and test")
st.caption("For every test image, its nearest training image: both shrunk to 16x16 and compared by "
           "correlation (brightness and contrast do not matter; a mirrored copy counts). Distance 0 is "
           "the same picture. Crops and recolourings of one photo are not found this way.")
if len(dataset.x_train) == 0 or len(dataset.x_test) == 0:
    st.info("Both splits are needed.", icon=":material/info:")
    st.stop()
key = duplicates_key(source)
found = duplicates.read_cached(dataset.x_train, dataset.x_test, cache_dir(), key)
if found is None:
    reason = access.locked_reason()
    if access.read_only():  # a public viewer is shown no action at all
        st.caption("Nobody has searched this data for near-duplicates yet.")
        st.stop()
    if st.button("Find near-duplicates", icon=":material/search:", disabled=bool(reason), help=reason or
                 f"Compares all {len(dataset.x_test):,} x {len(dataset.x_train):,} pairs (about a minute for the "
                 "full set on a 2-core CPU); the result is kept for this data.") and access.can_act():
        # checked again: the button's state is only what the browser saw
        with st.spinner("Comparing every test image with every training image…"):
            found = duplicates.cached_nearest_train(dataset.x_train, dataset.x_test, cache_dir(), key)
    else:
        st.stop()
threshold = st.slider("Threshold (distance)", 0.0, 0.2, duplicates.DEFAULT_THRESHOLD, 0.005, format="%.3f",
                      help=f"Pairs at or under this distance count as near-duplicates; "
                           f"{duplicates.DEFAULT_THRESHOLD} is the recommendation (BENCHMARKS.md: the pairs under it "
                           "on CIFAR-10 are copies of the same photo).")
has_duplicate = found.below(threshold)
m1, m2 = st.columns(2)
m1.metric("Test images with a near-duplicate", f"{int(has_duplicate.sum()):,}")
m2.metric("Share of the test set", fmt.pct(float(has_duplicate.mean()), 2))
closest = found.closest(PAIRS_SHOWN)
closest = closest[found.distance[closest] <= max(threshold, float(found.distance[closest[0]]))]
st.markdown(f"**The closest pairs** (test, then its nearest training image), up to {PAIRS_SHOWN}:")
for start in range(0, len(closest), 6):
    for col, i in zip(st.columns(6), closest[start:start + 6]):
        j = int(found.index[i])
        pair = strip(np.stack([dataset.x_test[i], dataset.x_train[j][:, ::-1] if found.flipped[i] else dataset.x_train[j]]))
        col.image(pair, caption=f"test #{i} ↔ train #{j}{' (mirrored)' if found.flipped[i] else ''} · "
                                f"{CLASS_NAMES[dataset.y_test[i]]}/{CLASS_NAMES[dataset.y_train[j]]} · "
                                f"d={found.distance[i]:.3f}")

st.markdown("**A run's test accuracy with and without them**")
matching = [r for r in model_runs if r.config is not None and data.resolve_source(r.config.data) == source
            and r.config.test_subset is None]
if not matching:
    st.caption("No run with a saved model was tested on the whole test split of this source.")
    st.stop()
run = widgets.pick_run(matching, label="Run", state_key="data_duplicates_run")
try:
    preds, _ = cache.predictions_for(run)
except cache.LOAD_ERRORS as exc:
    if isinstance(exc, cache.NotComputedForViewers):
        st.info(f"Run {run.run_id}'s test-set predictions are not computed yet for viewers.", icon=":material/info:")
    else:
        st.error(f"Cannot load the predictions of run {run.run_id}: "
                 f"{exc if access.sees_internals() else fmt.public_text(str(exc))}", icon=":material/error:")
    st.stop()
if len(preds.labels) != len(dataset.y_test) or not np.array_equal(preds.labels, dataset.y_test):
    st.error(f"Run {run.run_id}'s predictions are not for this source's test split.", icon=":material/error:")
    st.stop()
split_acc = duplicates.accuracy_split(preds.probabilities.argmax(axis=1) == preds.labels, has_duplicate)
r1, r2, r3 = st.columns(3)
r1.metric("All test images", fmt.pct(split_acc["all"]))
r2.metric(f"With a near-duplicate ({split_acc['with_count']:,})",
          "–" if split_acc["with"] is None else fmt.pct(split_acc["with"]))
r3.metric(f"Without ({split_acc['without_count']:,})",
          "–" if split_acc["without"] is None else fmt.pct(split_acc["without"]))
