"""The dashboard's pages through Streamlit's AppTest, on the real core: synthetic data, one run
really trained per session, real jobs started and stopped from the Train page. No mocks."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from cifar_core import jobs, runs, trainer_lock
from cifar_core.config import TrainConfig
from cifar_core.data import CLASS_NAMES, make_synthetic
from cifar_ui import fmt
from job_helpers import WatchedRun, newest_run, start_job
from live_helpers import feed_file, live_panel_data, read_feed

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboard.py"
PAGES = ["pages/home.py", "pages/train.py", "pages/evaluate.py", "pages/predict.py", "pages/browse.py",
         "pages/runs.py"]
MODEL_PAGES = ["pages/evaluate.py", "pages/predict.py", "pages/browse.py"]
RUN_TIMEOUT = 60  # seconds per script run; pages that load a model import TensorFlow once
QUICK = dict(data="synthetic", train_subset=600, test_subset=200, batch_size=32)


# --- fixtures and helpers -----------------------------------------------------------------

@pytest.fixture
def broken_run(with_run, artifacts):
    """A run folder beside the good one whose status.json is garbled."""
    folder = artifacts / "runs" / "20000101-000000-broken"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TrainConfig(epochs=1, **QUICK).to_dict()))
    (folder / "status.json").write_text('{"status": "compl')
    return folder.name


def open_page(page: str) -> AppTest:
    """Run the real entry (page config, navigation), then the page, as a browser would."""
    at = AppTest.from_file(str(DASHBOARD), default_timeout=RUN_TIMEOUT).run()
    if page != PAGES[0]:
        at.switch_page(page).run()
    assert not at.exception, raised(at)
    return at


def raised(at: AppTest) -> list[str]:
    """The page's exceptions with their last stack lines (AppTest 1.67's Exception.value raises:
    it never sets `message`, so read the proto)."""
    return [e.proto.message + "\n" + "\n".join(e.proto.stack_trace[-3:]) for e in at.exception]


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def widget(elements, label: str):
    found = [e for e in elements if e.label == label]
    assert len(found) == 1, f"expected one widget labelled {label!r}, got {[e.label for e in elements]}"
    return found[0]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def chart_titles(at: AppTest) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).resize((96, 96), Image.Resampling.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


# --- every page, empty and with a run -----------------------------------------------------

@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_no_runs(artifacts, page):
    at = open_page(page)
    assert not at.error
    if page in MODEL_PAGES + ["pages/runs.py"]:
        assert "Train" in texts(at.info)  # says what to do next ...
        assert "Go to Train" in [link.value for link in at.page_link]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_a_finished_run(with_run, page):
    at = open_page(page)
    assert not at.error, texts(at.error)
    assert not at.warning, texts(at.warning)


def test_home_lists_the_run_links_every_page_and_names_the_data_source(with_run):
    at = open_page("pages/home.py")
    body = texts(at.markdown)
    assert "synthetic" in body and "CIFAR10_DATA" in body
    assert with_run in at.dataframe[0].value["run"].tolist()
    labels = {link.value for link in at.page_link}
    assert {"Train", "Evaluate", "Predict", "Browse", "Runs"} <= labels


def last_line_in_fresh_process(code: str, artifacts) -> str:
    """Run `code` in a new interpreter (nothing imported yet) and return its last printed line."""
    env = dict(os.environ, CIFAR_ARTIFACTS_DIR=str(artifacts), CIFAR10_DATA="synthetic")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_pages_import_no_tensorflow_until_a_model_is_needed(with_run, artifacts):
    """Home, Runs and an idle Train never need TensorFlow; Evaluate and Browse need it only when
    a run has no cached predictions of its current model (the trainer caches them)."""
    code = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(DASHBOARD)!r}, default_timeout=30).run()
assert not at.exception, at.exception
assert {with_run!r} in at.dataframe[0].value["run"].tolist()
for page in ("pages/runs.py", "pages/train.py", "pages/evaluate.py", "pages/browse.py"):
    at.switch_page(page).run()
    assert not at.exception, at.exception
assert at.title[0].value == "Browse" and any("matching" in c.value for c in at.caption), "the grid showed"
print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
"""
    assert last_line_in_fresh_process(code, artifacts) == "[]"


def test_a_deep_link_into_a_fresh_server_goes_through_the_entry(artifacts):
    # Until the entry has run once, Streamlit treats pages/ as a legacy multipage folder and
    # would run the page alone, without page config or our navigation.
    code = f"""
from streamlit.testing.v1 import AppTest
from cifar_ui import nav
at = AppTest.from_file({str(DASHBOARD)!r}, default_timeout=30)
at.switch_page("pages/runs.py").run()
assert not at.exception, at.exception
print(nav._entry_ran, [t.value for t in at.title], dict(at.query_params))
"""
    assert last_line_in_fresh_process(code, artifacts) == "True ['Runs'] {}"


def test_a_bookmarked_browse_view_keeps_its_filters_on_a_fresh_server(with_run, artifacts):
    # The detour through the entry (above) must carry the link's own parameters along.
    code = f"""
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(DASHBOARD)!r}, default_timeout=60)
at.query_params.update(true="cat", show="wrong")
at.switch_page("pages/browse.py").run()
assert not at.exception, at.exception
print([t.value for t in at.title], sorted((k, v) for k, v in at.query_params.items() if k not in ("page", "run")))
"""
    assert last_line_in_fresh_process(code, artifacts) == "['Browse'] [('show', 'wrong'), ('true', 'cat')]"


def test_page_runs_leave_the_training_threads_keras_state_alone(artifacts):
    # Streamlit calls keras.backend.clear_session() after every script run; during a job's
    # build_model that renamed layers ("All layers ... should have unique names") in the browser.
    import keras

    keras.layers.Dense(1)
    open_page("pages/train.py").run()
    assert keras.layers.Dense(1).name != "dense"  # the name counter was not reset


# --- Train --------------------------------------------------------------------------------

def fill_quick_run(at: AppTest, epochs: int) -> None:
    widget(at.number_input, "Epochs").set_value(epochs)
    widget(at.number_input, "Batch size").set_value(QUICK["batch_size"])
    widget(at.number_input, "Train images").set_value(QUICK["train_subset"])
    widget(at.number_input, "Test images").set_value(QUICK["test_subset"])
    widget(at.selectbox, "Data source").set_value("synthetic")


def test_train_starts_a_real_job_from_the_form_and_stops_it(artifacts):
    at = open_page("pages/train.py")
    start = widget(at.button, "Start training")
    assert not start.disabled
    fill_quick_run(at, epochs=50)
    widget(at.text_input, "Run name").input("from the form")
    widget(at.text_input, "Tags").input("smoke")
    start.click().run()
    assert not at.exception and not at.error, texts(at.error)
    job = newest_run()  # trained by a job process of its own, watched through its folder
    assert job is not None and job.run_dir.parent == artifacts / "runs"
    assert job.snapshot().owner.split("pid ")[-1] != str(os.getpid()), "trained in the server's own process"
    assert job.config.epochs == 50 and job.config.train_subset == QUICK["train_subset"]
    named = runs.load_run(job.run_id)
    assert (named.name, named.tags) == ("from the form", ("smoke",))

    # While it runs: Start is disabled with the reason; progress and Stop are shown.
    wait_for(lambda: job.snapshot().batch > 0, 90, "the first batch")
    at.run()
    assert widget(at.button, "Start training").disabled
    assert "Start is disabled" in texts(at.info)
    # The browser draws the live panel from the feed's files; the page hands it the first frame.
    panel = live_panel_data(at)
    assert panel is not None and not at.progress, "an active run's progress is drawn by the browser"
    assert "Epoch 1/50" in panel["progress"]["text"] and panel["progress"]["active"]
    assert "figures" not in panel, "the charts are fetched by the browser, not carried by every rerun"
    assert widget(at.slider, "Smoothing").value == pytest.approx(0.6)  # TensorBoard's default
    assert re.search(r"\.s60-epoch\.[0-9a-f]+\.json$", panel["figures_url"])  # each version its own file
    charts = read_feed(panel["figures_url"])  # there before the page returned: the tab fetches it at once
    titles = {charts[name]["layout"]["title"]["text"] for name in ("batch", "loss", "accuracy")}
    assert titles == {"Loss over Epochs", "Accuracy over Epochs", "Loss and accuracy per batch"}
    first = read_feed(panel["progress_url"])["text"]  # the feed moves on with no script run
    wait_for(lambda: read_feed(panel["progress_url"])["text"] != first, 60, "the feed's progress to move")
    assert read_feed(panel["figures_url"])["batch"]["layout"]["title"]["text"] == "Loss and accuracy per batch"
    widget(at.slider, "Smoothing").set_value(0.0).run()  # another setting: its own figures file
    assert re.search(r"\.s00-epoch\.[0-9a-f]+\.json$", live_panel_data(at)["figures_url"])
    assert feed_file(live_panel_data(at)["figures_url"]).is_file()

    widget(at.button, "Stop").click().run()
    assert job.join(60), "the job did not stop within 60 s"
    snap = job.snapshot()
    assert snap.status == "stopped", snap.error
    assert (job.run_dir / "model.keras").is_file()
    assert runs.load_run(job.run_id).status == "stopped"

    at.run()
    assert not at.exception
    assert not widget(at.button, "Start training").disabled
    assert "stopped" in texts(at.markdown)
    assert [m.label for m in at.metric][:2] == ["Test accuracy", "Test loss"]


def test_a_stale_tab_cannot_start_a_second_job_and_an_unwritable_folder_is_an_error(artifacts, monkeypatch):
    stale = open_page("pages/train.py")  # a tab opened before another tab started a job
    fill_quick_run(stale, epochs=50)
    first = jobs.start(TrainConfig(epochs=50, **QUICK))
    widget(stale.button, "Start training").click().run()  # Streamlit drops clicks on now-disabled widgets
    assert not stale.exception
    assert [r.run_id for r in runs.list_runs()] == [first.run_id]
    assert widget(stale.button, "Start training").disabled
    assert f"training run {first.run_id}" in texts(stale.info)
    first.stop()
    assert first.wait(60)

    blocker = artifacts.parent / "not-a-folder"
    blocker.write_text("a file where the artifacts folder should be")
    monkeypatch.setenv("CIFAR_ARTIFACTS_DIR", str(blocker / "artifacts"))
    at = open_page("pages/train.py")
    fill_quick_run(at, epochs=1)
    widget(at.button, "Start training").click().run()
    assert not at.exception
    assert "cannot write to the artifacts folder" in texts(at.error)


def test_a_data_source_that_does_not_exist_is_refused_at_start(artifacts, monkeypatch):
    missing = str(artifacts / "no-such-data")
    monkeypatch.setenv("CIFAR10_DATA", missing)  # the app was started with a wrong data path
    at = open_page("pages/train.py")
    assert widget(at.selectbox, "Data source").value == missing
    widget(at.number_input, "Epochs").set_value(1)
    widget(at.button, "Start training").click().run()
    assert not at.exception
    assert "does not exist" in texts(at.error)
    assert runs.list_runs() == [] and trainer_lock.holder() is None  # no job, no run folder, the machine free


def test_a_failed_job_shows_its_error(artifacts, monkeypatch):
    source = artifacts / "half-a-dataset"
    (source / "train").mkdir(parents=True)  # the layout of an image folder, without class folders:
    (source / "test").mkdir()  # accepted at Start, fails while loading
    monkeypatch.setenv("CIFAR10_DATA", str(source))
    at = open_page("pages/train.py")
    widget(at.number_input, "Epochs").set_value(1)
    widget(at.button, "Start training").click().run()
    job = newest_run()
    assert job.join(60)
    at.run()
    assert not at.exception
    errors = texts(at.error)
    assert "Training failed" in errors and "has no train/airplane/ folder" in errors
    assert runs.load_run(job.run_id).status == "failed"


def test_resume_extends_a_finished_run(with_run):
    at = open_page("pages/train.py")
    assert widget(at.selectbox, "Run to continue").value == with_run
    widget(at.number_input, "Train up to epoch").set_value(2)
    widget(at.button, "Resume").click().run()
    assert not at.exception and not at.error, texts(at.error)
    job = WatchedRun(with_run)
    assert "resuming run" in (trainer_lock.holder() or {}).get("what", "") or job.snapshot().is_active
    assert job.join(120)
    assert job.snapshot().status == "completed", job.snapshot().error
    assert runs.load_run(with_run).epochs_done == 2


# --- Evaluate, Predict, Browse ------------------------------------------------------------

def test_evaluate_shows_scores_confusion_classes_and_the_first_four(with_run):
    at = open_page("pages/evaluate.py")
    assert [m.label for m in at.metric][:2] == ["Test accuracy", "Test loss"]
    assert len(at.image) == 4
    assert all(re.search(r"Predicted \*\*\w+\*\*.*True \*\*\w+\*\*", m.value, re.S)
               for m in at.markdown if m.value.startswith("Predicted"))
    per_class = at.dataframe[0].value
    assert list(per_class["class"]) == list(CLASS_NAMES)
    assert {"precision", "recall", "f1", "accuracy"} <= set(per_class.columns)
    assert "Confusion matrix" in chart_titles(at)


def test_predict_one_upload_with_a_good_a_corrupt_and_a_non_image_file(with_run):
    good = png_bytes(make_synthetic(10, 10, seed=3).x_test[0])
    at = open_page("pages/predict.py")
    at.file_uploader[0].set_value([
        ("good.png", good, "image/png"),
        ("corrupt.png", good[: len(good) // 2], "image/png"),
        ("notes.jpg", b"these are my shopping notes, not a picture", "image/jpeg"),
    ]).run()
    assert not at.exception, raised(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 2, errors
    assert any("corrupt.png" in e for e in errors) and any("notes.jpg" in e for e in errors)
    assert len(at.get("plotly_chart")) == 1  # the top-k chart of the one good file
    assert len(at.image) == 3  # its original, the 32x32 input and the occlusion overlay
    assert len(at.success) + len(at.warning) == 1  # the answer, or "unsure" below LOW_CONFIDENCE


def matching(at: AppTest) -> int:
    caption = next(c.value for c in at.caption if "matching" in c.value)
    return int(re.search(r"of ([\d,]+) matching", caption).group(1).replace(",", ""))


def test_browse_filters_sorts_pages_and_inspects(with_run):
    at = open_page("pages/browse.py")
    total = matching(at)
    assert total == QUICK["test_subset"]
    assert len(at.image) == 24 + 1  # a full page of tiles, and the selected image

    widget(at.selectbox, "True class").set_value(0).run()
    airplanes = matching(at)
    assert 0 < airplanes < total
    assert len(at.image) == airplanes + 1
    assert all(m.value.startswith("airplane →") for m in at.markdown if "→" in m.value)

    widget(at.selectbox, "True class").set_value(None).run()
    widget(at.radio, "Show").set_value("wrong").run()
    wrong = matching(at)
    assert wrong < total
    assert all(":red[" in m.value for m in at.markdown if "→" in m.value)

    widget(at.radio, "Show").set_value("all").run()
    at.button(key="inspect-5").click().run()
    assert "Test image #5" in texts(at.subheader)


# --- Runs ---------------------------------------------------------------------------------

def test_runs_lists_offers_downloads_and_deletes_after_confirmation(with_run, artifacts):
    at = open_page("pages/runs.py")
    table = at.dataframe[0].value
    assert table["run"].tolist() == [with_run]
    assert table["status"].tolist() == ["completed"]
    assert {b.label for b in at.download_button} >= {"Model (.keras)", "History (CSV)", "History (JSON)"}

    delete = widget(at.button, "Delete run")
    assert delete.disabled  # nothing happens without the confirmation
    at.checkbox[0].check().run()
    widget(at.button, "Delete run").click().run()
    assert not at.exception
    assert not (artifacts / "runs" / with_run).exists()
    assert f"Deleted run {with_run}" in texts(at.success)
    assert "No runs yet" in texts(at.info)


def test_runs_names_tags_and_annotates_a_run_and_filters_by_them(with_run, artifacts):
    at = open_page("pages/runs.py")
    widget(at.text_input, "Name").input("augmented baseline")
    widget(at.text_input, "Tags").input("baseline, flip")
    widget(at.text_area, "Notes").input("first try with flips")
    next(b for b in at.button if b.label == "Save").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert f"Saved the name, tags and notes of {with_run}" in texts(at.success)
    run = runs.load_run(with_run)
    assert (run.name, run.tags, run.notes) == ("augmented baseline", ("baseline", "flip"), "first try with flips")
    table = at.dataframe[0].value
    assert table["name"].tolist() == ["augmented baseline"] and table["tags"].tolist() == ["baseline, flip"]
    picker = widget(at.selectbox, "Run")
    assert picker.options[0].startswith(f"augmented baseline · {with_run} · completed")  # pickers show the name

    other = artifacts / "runs" / "20000101-000000-other"
    shutil.copytree(artifacts / "runs" / with_run, other)
    runs.update_meta(other.name, name="unrelated", notes="", tags=["sweep"])
    at.run()
    assert len(at.dataframe[0].value) == 2
    widget(at.text_input, "Filter").input("flips").run()  # a word of the notes
    assert at.dataframe[0].value["run"].tolist() == [with_run] and "1 of 2 runs match" in texts(at.caption)
    widget(at.text_input, "Filter").input("").run()
    widget(at.multiselect, "Tags").select("sweep").run()
    assert at.dataframe[0].value["run"].tolist() == [other.name]


def test_runs_refuses_to_delete_the_run_in_training(artifacts):
    job = start_job(TrainConfig(epochs=50, **QUICK))
    at = open_page("pages/runs.py")
    assert widget(at.selectbox, "Run").value == job.run_id
    at.checkbox[0].check().run()
    widget(at.button, "Delete run").click().run()
    assert not at.exception
    assert "still training" in texts(at.error)
    assert job.run_dir.is_dir()


def test_runs_tables_show_a_dash_for_missing_values_and_give_the_config_room(with_run):
    """Issue 26's screenshots: "None" in with-TTA and "to 80%", and the config cut off at 1280 px."""
    at = open_page("pages/runs.py")
    frames = at.dataframe
    assert len(frames) >= 2  # the runs and the time to accuracy
    assert all(f.proto.placeholder == fmt.DASH for f in frames), [f.proto.placeholder for f in frames]
    table = frames[0]
    assert table.value["with TTA"].isna().all() and not table.value.isin(["None", "nan"]).any().any()
    order = list(table.proto.column_order)
    assert order.index("config") < order.index("started")  # in view at 1280 px, not after the times
    assert "problem" not in order and "name" not in order  # empty in every row: left out of view
    assert "problem" in table.value.columns  # the frame keeps them (a broken run's reason shows)
    assert json.loads(table.proto.columns)["config"]["width"] == fmt.CONFIG_WIDTH
    assert table.proto.row_height > 64  # Streamlit wraps a cell's text only in rows over 4rem
    marks = frames[-1].value
    assert marks["90%"].isna().all()  # a one-epoch run on 200 images never got there: a dash


def test_the_runs_tables_columns_in_view():
    frame = pd.DataFrame({"run": ["a", "b"], "name": ["", None], "tags": ["x", ""], "problem": ["", ""]})
    assert fmt.shown_columns(frame) == ["run", "tags"]


def test_a_runs_config_line_names_its_preset_and_network_once_each():
    """Issue 26's screenshots: "assignment (edited) · assignment" said the network twice."""
    edited = fmt.config_summary(TrainConfig(epochs=3))
    assert edited.startswith("assignment (edited) · 3 epochs") and edited.count("assignment") == 1
    fast = fmt.config_summary(TrainConfig(preset="fast", architecture="airbench", widths=(16, 64, 64), epochs=4))
    assert fast.startswith("fast (edited) · airbench 16/64/64 · 4 epochs") or fast.startswith("fast · airbench 16/64/64")


def test_evaluate_tables_show_a_dash_for_a_class_never_predicted(with_run):
    at = open_page("pages/evaluate.py")
    assert all(f.proto.placeholder == fmt.DASH for f in at.dataframe), [f.proto.placeholder for f in at.dataframe]
    per_class = at.dataframe[0].value
    never = per_class[per_class["precision"].isna()]
    assert never["f1"].isna().all()  # shown as a dash, not "None"
    if len(at.dataframe) > 1:  # most confused: percentages with one decimal, like the per-class table
        share = json.loads(at.dataframe[1].proto.columns)["share_of_true"]
        assert share["type_config"]["format"] == "%.1f%%", share
        assert (at.dataframe[1].value["share_of_true"] > 1).any()


def test_a_finished_runs_links_wrap_in_one_row_rather_than_cut(with_run):
    """At 1280 px three equal columns cut "Browse its predictions" in half a page."""
    at = open_page("pages/train.py")
    labels = [link.value for link in at.page_link]
    assert labels[-3:] == ["Evaluate", "Browse predictions", "Try your pictures"], labels
    assert all(link.proto.help for link in at.page_link[-3:])  # the full sentence on hover

    def parents(node, found):
        for child in getattr(node, "children", {}).values():
            if getattr(child, "type", "") == "page_link" and child.value in labels[-3:]:
                found.append(node.proto.flex_container)
            parents(child, found)
        return found

    rows = parents(at._tree, [])
    assert len(rows) == 3 and all(r.direction == r.HORIZONTAL and r.wrap for r in rows), rows


@pytest.mark.parametrize("page", PAGES)
def test_a_broken_run_is_reported_and_breaks_nothing(broken_run, with_run, page):
    at = open_page(page)
    assert not at.error, texts(at.error)
    if page == "pages/runs.py":
        table = at.dataframe[0].value.set_index("run")
        assert table.loc[broken_run, "status"] == "broken"
        assert "status.json" in table.loc[broken_run, "problem"]
    if page in MODEL_PAGES:
        options = widget(at.selectbox, "Run").options
        assert len(options) == 1 and options[0].startswith(with_run)  # never offered for loading
        assert any("could not be read" in e.label for e in at.expander)


def test_predict_every_odd_upload_works_or_gets_its_own_message(with_run):
    """Issue 5's upload list, in one upload: odd-but-valid pictures get predictions, bad ones
    a message naming the file, and the page never shows a traceback."""
    from test_predict import encode, handmade_png, with_declared_size

    red = Image.new("RGB", (40, 30), (220, 30, 30))
    good_png = encode(red, "PNG")
    good_jpg = encode(red, "JPEG", quality=90)
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    valid = {
        "animated.gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100),
        "deep.png": handmade_png(8, 8, 16, 2, b"\xff\xff\x00\x00\x00\x00" * 8),
        "print.jpg": encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"),
        "palette.png": encode(palette, "PNG", transparency=1),
        "phone.jpg": encode(red, "JPEG", exif=exif.tobytes()),
    }
    bad = {
        "empty.png": b"",
        "notes.png": b"just some text",
        "cut.png": good_png[: len(good_png) // 2],
        "cut.jpg": good_jpg[: len(good_jpg) // 2],
        "bomb.png": with_declared_size(good_png, 100_000, 100_000),
        "huge.png": good_png + b"\x00" * (10 * 1024 * 1024),
    }
    at = open_page("pages/predict.py")
    at.file_uploader[0].set_value([(n, b, "image/png") for n, b in {**valid, **bad}.items()]).run(timeout=120)
    assert not at.exception, raised(at)
    errors = [e.value for e in at.error]
    assert len(errors) == len(bad), errors
    for name in bad:
        assert sum(name in e for e in errors) == 1, (name, errors)
    assert len(at.get("plotly_chart")) == len(valid)  # one top-k chart per usable picture
    assert not any("Traceback" in m.value for m in at.markdown)


# --- recipes: the preset control, TTA, time to accuracy ---------------------------------

def test_train_preset_control_fills_the_form_and_the_run_records_the_preset(artifacts):
    at = open_page("pages/train.py")
    assert widget(at.selectbox, "Recipe").value == "assignment"
    assert widget(at.number_input, "Batch size").value == 64
    widget(at.selectbox, "Recipe").set_value("fast").run()
    assert not at.exception
    assert "airbench-style" in texts(at.caption) and "Expected here" in texts(at.caption)
    widget(at.number_input, "Time budget (minutes of training)").set_value(0).run()  # fixed epochs instead
    assert widget(at.number_input, "Batch size").value == 512  # the form was refilled
    assert widget(at.number_input, "Learning rate (peak)").value == pytest.approx(0.75)
    assert widget(at.selectbox, "Network").value == "airbench"
    fill_quick_run(at, epochs=1)
    for i, width in enumerate((8, 16, 16), start=1):  # every field stays editable
        widget(at.number_input, f"Width {i}").set_value(width)
    widget(at.button, "Start training").click().run()
    assert not at.exception and not at.error, texts(at.error)
    job = newest_run()
    assert job.join(120) and job.snapshot().status == "completed", job.snapshot().error
    saved = json.loads((job.run_dir / "config.json").read_text())
    assert saved["preset"] == "fast" and saved["architecture"] == "airbench" and saved["widths"] == [8, 16, 16]
    assert saved["batch_size"] == QUICK["batch_size"] and saved["tta"] == "flip_shift"
    at.run()
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert "With TTA (flip_shift)" in labels and "Training time" in labels
    widget(at.button_group, "Curves against").set_value("minutes").run()
    assert "Accuracy over training time" in chart_titles(at)


def test_evaluate_computes_tta_on_demand_in_a_job_process(with_run, artifacts):
    at = open_page("pages/evaluate.py")
    widget(at.selectbox, "Views").set_value("flip")
    widget(at.button, "Evaluate with TTA").click().run()
    assert not at.exception and not at.error, texts(at.error)
    holder = trainer_lock.holder()  # not computed in the server: a job process holds the machine for it
    assert holder is None or (holder["tta"] == "flip" and holder["pid"] != os.getpid())
    wait_for(lambda: (artifacts / "runs" / with_run / "tta.json").is_file() and trainer_lock.holder() is None,
             180, "the TTA job process to record its result")
    at.run()
    assert not at.exception and not at.error, texts(at.error)
    tta = [m for m in at.metric if m.label == "Test accuracy with TTA (flip)"]
    assert len(tta) == 1 and re.fullmatch(r"\d{1,3}\.\d%", tta[0].value)
    assert "points vs plain" in tta[0].delta


def test_runs_page_compares_time_to_accuracy(with_run, artifacts):
    history = json.loads((artifacts / "runs" / with_run / "history.json").read_text())
    assert history["train_seconds"][0] > 0
    at = open_page("pages/runs.py")
    assert "Time to accuracy" in [h.value for h in at.subheader]
    assert "Training minutes to reach a test accuracy" in chart_titles(at)
    table = at.dataframe[-1].value
    assert list(table.columns)[:4] == ["run", "70%", "80%", "90%"] and len(table) == 1


def test_runs_page_compares_two_runs_of_the_same_name_and_preset(with_run, artifacts):
    twin = artifacts / "runs" / "20000101-000000-c0ffee"
    shutil.copytree(artifacts / "runs" / with_run, twin)
    for run_id in (with_run, twin.name):
        runs.update_meta(run_id, name="baseline", notes="", tags=[])
    at = open_page("pages/runs.py")
    assert not at.exception, raised(at)
    loss = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if json.loads(c.proto.spec)["layout"]["title"]["text"] == "Loss over Epochs")
    groups = {t["legendgroup"] for t in loss["data"]}
    short = with_run.rsplit("-", 1)[-1]
    assert groups == {f"baseline · {short} (assignment)", "baseline · c0ffee (assignment)"}, groups
    table = at.dataframe[-1].value  # time to accuracy: one row each
    assert sorted(table["run"]) == sorted(groups)
