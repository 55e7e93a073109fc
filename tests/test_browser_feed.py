"""The live feed (cifar_ui/browser_feed.py): the files a Train tab's browser polls instead of
rerunning the page, kept fresh by one server thread; and the page's own refresh where the
browser cannot fetch them."""
from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from cifar_core import runs
from cifar_core.config import TrainConfig
from cifar_core.training import publisher
from cifar_core.training.state import JobState
from cifar_ui import browser_feed
from job_helpers import ThreadedJob, start_job
from live_helpers import live_panel_data, plotted

ROOT = Path(__file__).resolve().parent.parent
RUN = "20260101-000000-abcdef"


def wait_for(predicate, timeout: float, what: str) -> None:
    """Until `predicate()` holds; a feed file not there yet, or a progress doc that does not yet
    name the setting's figures, counts as "not yet" (the feed's thread writes them in turn)."""
    deadline = time.monotonic() + timeout

    def holds() -> bool:
        try:
            return bool(predicate())
        except (FileNotFoundError, KeyError, json.JSONDecodeError):
            return False

    while not holds():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def state(artifacts) -> JobState:
    s = JobState(RUN, TrainConfig(epochs=3, data="synthetic"), {}, 0)
    s.start_running(batches_per_epoch=10, epoch=1)
    return s


@pytest.fixture
def feed(tmp_path, monkeypatch) -> browser_feed.Feed:
    monkeypatch.setattr(browser_feed, "GRACE_SECONDS", 0.3)
    monkeypatch.setattr(browser_feed, "FIGURES_SECONDS", 0.0)
    return browser_feed.Feed(root=tmp_path / "feed", period=0.05)


def read(feed: browser_feed.Feed, url: str) -> dict:
    return json.loads((feed.root / url.split(f"{browser_feed.URL_PREFIX}/", 1)[1]).read_text())


def current_figures(feed: browser_feed.Feed, links: browser_feed.Links) -> dict:
    """The figures a tab polling `links` fetches now: the file its progress doc names (each version
    of the figures is a file of its own)."""
    key = links.figures_url.rsplit("/", 1)[1].split(".")[1]
    named = read(feed, links.progress_url)["figures"][key]
    return read(feed, links.progress_url.rsplit("/", 1)[0] + "/" + named)


def fed_since(feed: browser_feed.Feed, url: str, moment: float, iterations: int = 2) -> None:
    """Wait until the feed's thread has run `iterations` whole iterations of its loop that began
    after `moment` (a time.time()), each proven by its rewrite of the progress file, the last thing
    an iteration does (after deciding to draw, or to stop feeding the run). The first rewrite
    stamped after `moment` may come from an iteration begun before it; the next ones cannot. What a
    test then finds not done was not done by a thread that ran, rather than by one not yet run."""
    stamps: set[float] = set()

    def newer() -> bool:
        stamp = read(feed, url)["fed_at"]
        if stamp > moment:
            stamps.add(stamp)
        return len(stamps) > iterations

    wait_for(newer, 5, f"{iterations} iterations of the feed's thread")


def test_progress_is_rewritten_every_period_and_charts_only_for_a_new_version(feed, state):
    links = feed.serve(RUN, state.view, 0.6, "epoch")
    assert links.progress_url == f"{browser_feed.URL_PREFIX}/{browser_feed.scope()}/{RUN}.json"
    assert re.fullmatch(rf".*/{RUN}\.s60-epoch\.[0-9a-f]{{16}}\.json", links.figures_url), links.figures_url
    assert links.progress["text"] == "Epoch 1/3 · batch 0/10" and links.progress["active"]
    assert not hasattr(links, "figures"), "the charts are fetched by the tab, not carried by every rerun"
    assert current_figures(feed, links)["batch"]["layout"]["title"]["text"] == "Loss and accuracy per batch"

    drawn = read(feed, links.progress_url)["figures"]
    fed = read(feed, links.progress_url)["fed_at"]
    wait_for(lambda: read(feed, links.progress_url)["fed_at"] > fed, 5, "the progress file to be rewritten")

    for i in range(5):  # batches arrive: the progress moves at once, the curves when published
        state.add_batch(i / 10, 2.0 - i / 10, 0.1 * i)
    state.update(batch=5)
    wait_for(lambda: "batch 5/10" in read(feed, links.progress_url)["text"], 5, "the new batch")
    fed_since(feed, links.progress_url, time.time())  # it saw the batch, then looked again, twice
    assert read(feed, links.progress_url)["figures"] == drawn, "charts redrawn without a new version of the curves"
    version = state.publish().version
    wait_for(lambda: current_figures(feed, links)["version"] == version, 5, "the published curves")
    batch = current_figures(feed, links)["batch"]
    assert plotted(batch["data"][0]["x"]) == [0.0, 0.1, 0.2, 0.3, 0.4]
    wait_for(lambda: read(feed, links.progress_url)["charts"] == version, 5, "the progress to name them")


def test_an_ended_run_gets_its_final_state_then_the_thread_stops(feed, state):
    links = feed.serve(RUN, state.view, 0.6, "epoch")
    state.update(status="completed", message="Finished")
    wait_for(lambda: not read(feed, links.progress_url)["active"], 5, "the final state")
    assert read(feed, links.progress_url)["status"] == "completed"
    wait_for(lambda: feed.serving() == [] and feed._thread is None, 5, "the feed to stop")


def drawn_then_throttled(feed, state, monkeypatch) -> tuple[browser_feed.Links, int]:
    """A watched run whose published curves are drawn; from then on the batch-curve throttle
    is an hour. Returns its links and the drawn version."""
    links = feed.serve(RUN, state.view, 0.6, "epoch")
    first = state.publish().version
    wait_for(lambda: current_figures(feed, links)["version"] == first, 5, "the first redraw")
    monkeypatch.setattr(browser_feed, "FIGURES_SECONDS", 3600.0)
    return links, first


def test_charts_are_redrawn_at_most_every_few_seconds_but_the_last_at_once(feed, state, monkeypatch):
    links, first = drawn_then_throttled(feed, state, monkeypatch)
    state.add_batch(0.1, 1.5, 0.3)
    newer = state.publish().version
    wait_for(lambda: read(feed, links.progress_url)["version"] == newer, 5, "the progress to name it")
    fed_since(feed, links.progress_url, time.time())  # the new version seen, and passed over again
    assert current_figures(feed, links)["version"] == first, "redrawn sooner than FIGURES_SECONDS"
    state.update(status="completed", message="Finished")
    final = state.view().version  # an ended job publishes its last curves at once
    assert final > newer
    wait_for(lambda: current_figures(feed, links)["version"] == final, 5, "the final curves")


def test_a_finished_epoch_is_drawn_at_once_despite_the_throttle(feed, state, monkeypatch):
    links, _ = drawn_then_throttled(feed, state, monkeypatch)
    state.add_batch(0.1, 1.5, 0.3)
    state.add_epoch({"loss": 1.5, "accuracy": 0.3, "val_loss": 1.6, "val_accuracy": 0.28})
    epoch = state.publish().version
    wait_for(lambda: current_figures(feed, links)["version"] == epoch, 5, "the epoch's curves")
    # the progress file is rewritten after the figures in the same iteration: wait for it to say so
    wait_for(lambda: read(feed, links.progress_url)["charts"] == epoch, 5, "the progress to name the curves")
    assert len(current_figures(feed, links)["loss"]["data"][0]["x"]) == 1
    state.add_batch(0.2, 1.4, 0.35)  # a batch after it waits for the throttle again
    batch = state.publish().version
    wait_for(lambda: read(feed, links.progress_url)["version"] == batch, 5, "the progress to name it")
    fed_since(feed, links.progress_url, time.time())
    assert current_figures(feed, links)["version"] == epoch, "a batch redrawn sooner than FIGURES_SECONDS"


def test_the_epoch_charts_are_built_once_per_epoch_and_between_epochs_only_the_batch_curves(state, monkeypatch):
    built = []
    epoch_curves = browser_feed.charts.epoch_curves
    here = threading.get_ident()  # a feed thread another test left running may build its own charts

    def counted(history, metric, x):
        if threading.get_ident() == here:
            built.append((metric, x))
        return epoch_curves(history, metric, x=x)

    monkeypatch.setattr(browser_feed.charts, "epoch_curves", counted)
    monkeypatch.setattr(browser_feed, "_EPOCH_CHARTS", type(browser_feed._EPOCH_CHARTS)())

    state.add_batch(0.1, 1.5, 0.3)
    first = json.loads(browser_feed.figures_json(state.publish(), 0.6, "epoch"))
    state.add_batch(0.2, 1.4, 0.35)
    second = json.loads(browser_feed.figures_json(state.publish(), 0.6, "epoch"))
    assert second["batch"] != first["batch"] and second["version"] > first["version"]
    assert (second["loss"], second["accuracy"]) == (first["loss"], first["accuracy"])
    assert built == [("loss", "epoch"), ("accuracy", "epoch")]

    state.add_epoch({"loss": 1.5, "accuracy": 0.3, "val_loss": 1.6, "val_accuracy": 0.28})
    third = json.loads(browser_feed.figures_json(state.publish(), 0.6, "epoch"))
    assert len(plotted(third["loss"]["data"][0]["x"])) == 1  # an epoch's end: drawn again
    browser_feed.figures_json(state.publish(), 0.0, "minutes")  # another setting: its own charts
    assert built[2:] == [("loss", "epoch"), ("accuracy", "epoch"), ("loss", "minutes"), ("accuracy", "minutes")]


def test_a_run_nobody_watches_any_more_stops_being_fed(tmp_path, state, monkeypatch):
    """Every browser session that showed the run has closed: the feed stops drawing for it (the
    run trains without that cost); a page that shows it again starts it again."""
    open_sessions = {"tab-1", "tab-2"}
    monkeypatch.setattr(browser_feed, "UNWATCHED_SECONDS", 0.2)
    feed = browser_feed.Feed(root=tmp_path / "feed", period=0.05, alive=open_sessions.__contains__)
    for tab in ("tab-1", "tab-2"):
        monkeypatch.setattr(browser_feed, "current_session", lambda tab=tab: tab)
        links = feed.serve(RUN, state.view, 0.6, "epoch")
    open_sessions.discard("tab-1")
    # iterations that began once a run unwatched since the close would have been dropped
    fed_since(feed, links.progress_url, time.time() + browser_feed.UNWATCHED_SECONDS)
    assert feed.serving() == [RUN], "one tab is still open"
    thread = feed._thread
    open_sessions.clear()
    wait_for(lambda: feed.serving() == [] and feed._thread is None, 5, "the feed to stop")
    thread.join(5)  # the thread that fed it has ended: nothing is left that could write its files
    assert not thread.is_alive(), "the feed's thread did not end"
    state.update(batch=7)
    assert "batch 7/10" not in read(feed, links.progress_url)["text"], "fed with nobody watching"
    open_sessions.add("tab-3")
    monkeypatch.setattr(browser_feed, "current_session", lambda: "tab-3")
    feed.serve(RUN, state.view, 0.6, "epoch")
    assert feed.serving() == [RUN]
    state.update(batch=8)
    wait_for(lambda: "batch 8/10" in read(feed, links.progress_url)["text"], 5, "the feed to start again")


def test_a_run_that_disappears_says_so(feed):
    links = feed.serve(RUN, lambda: None, 0.6, "epoch")
    assert links.progress["status"] == "gone" and not links.progress["active"]
    wait_for(lambda: feed.serving() == [], 5, "the feed to drop it")


def test_each_chart_setting_has_its_file_and_their_number_is_bounded(feed, state):
    for i in range(browser_feed.MAX_VARIANTS + 3):
        links = feed.serve(RUN, state.view, i / 100, "minutes")
        assert re.search(rf"\.s{i:02d}-minutes\.[0-9a-f]{{16}}\.json$", links.figures_url), links.figures_url
    (watched,) = feed._watched.values()
    assert len(watched.variants) == browser_feed.MAX_VARIANTS
    assert list(watched.variants)[-1] == f"s{browser_feed.MAX_VARIANTS + 2:02d}-minutes"  # the newest kept


@pytest.mark.parametrize("run_id", ["../../etc", "a/b", ".hidden", ""])
def test_a_run_id_cannot_name_a_path(feed, state, run_id):
    with pytest.raises(ValueError):
        feed.serve(run_id, state.view, 0.6, "epoch")
    with pytest.raises(ValueError):
        browser_feed.variant_key(0.6, "../x")


def test_a_failed_jobs_message_reaches_the_public_files_without_its_paths(feed, artifacts):
    source = artifacts.parent / "my data" / "half-a-dataset"  # a folder with a space in its path
    (source / "train").mkdir(parents=True)  # an image folder's layout without class folders:
    (source / "test").mkdir()  # accepted at start, fails while loading
    job = start_job(TrainConfig(epochs=1, data=str(source)))
    assert job.join(60)
    snap = job.snapshot()
    assert snap.status == "failed" and str(source) in snap.message  # the trainer names the folder ...
    links = feed.serve(job.run_id, job.state.view, 0.6, "epoch")
    files = sorted((feed.root / browser_feed.scope()).glob(f"{job.run_id}*.json"))
    assert len(files) == 2, files  # the progress and the charts, as a tab fetches them
    doc = read(feed, links.progress_url)
    assert doc["status"] == "failed"
    assert doc["message"].startswith("Failed: ") and "<path> has no train/airplane/ folder" in doc["message"]
    for path in files:  # ... and no file a browser can fetch does
        text = path.read_text()
        for secret in (str(source), "my data", str(artifacts), str(Path.home()), tempfile.gettempdir()):
            assert secret not in text, (path.name, secret)
    assert links.progress["message"] == doc["message"]  # the first frame the page hands the panel too


@pytest.mark.parametrize("text, public", [
    ("Failed: OSError: [Errno 28] No space left on device: '/srv/my lab/runs/r1/model.keras'; free space",
     "Failed: OSError: [Errno 28] No space left on device: '<path>'; free space"),
    ("the disk holding /srv/lab/runs/r1 is full (ENOSPC) while saving.", "the disk holding <path> is full (ENOSPC) while saving."),
    ("PosixPath('/var/lib/x') from ~/data/cifar, C:\\Users\\me\\cifar or \\\\server\\share\\cifar.",
     "PosixPath('<path>') from <path>, <path> or <path>."),
    ("Epoch 1/50 · batch 3/19 · 1,234 images/s · ETA 1 min", "Epoch 1/50 · batch 3/19 · 1,234 images/s · ETA 1 min"),
    ("see https://www.cs.toronto.edu/~kriz/cifar.html and/or train/airplane/", "see https://www.cs.toronto.edu/~kriz/cifar.html and/or train/airplane/"),
])
def test_paths_are_scrubbed_from_what_the_feed_publishes(text, public):
    assert browser_feed.scrub_paths(text) == public


def test_a_folder_it_cannot_write_costs_the_feed_not_the_page(tmp_path, state):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    feed = browser_feed.Feed(root=blocker / "feed", period=0.05)
    links = feed.serve(RUN, state.view, 0.6, "epoch")  # no exception: the browser falls back instead
    assert links.progress["active"] and feed.failures >= 1


def test_files_no_server_has_written_for_an_hour_are_swept(feed, state):
    old = feed.root / "0123456789ab" / "20000101-000000-old.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    stale = time.time() - browser_feed.KEEP_SECONDS - 60
    os.utime(old, (stale, stale))
    links = feed.serve(RUN, state.view, 0.6, "epoch")
    wait_for(lambda: not old.exists(), 5, "the sweep")
    assert read(feed, links.progress_url)["run_id"] == RUN


# --- the Train page: the browser's panel, or the page's own refresh ------------------------------

def start_long_job(artifacts) -> ThreadedJob:
    job = start_job(TrainConfig(epochs=50, data="synthetic", train_subset=600, test_subset=200, batch_size=32))
    # the pages read the run's folder: wait until its live.json reports a batch
    wait_for(lambda: publisher.read(runs.load_run(job.run_id)).batch > 0, 90, "the first batch")
    return job


def train_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).run()
    at.switch_page("pages/train.py").run()
    assert not at.exception
    return at


def test_pages_draw_an_active_run_in_the_browser_or_refresh_themselves_where_it_cannot_poll(artifacts, monkeypatch):
    """One job for the four views (a TensorFlow job takes seconds to start): Home's panel has
    progress only; Train falls back to its own refresh with static serving off, and after its
    panel reported the feed unavailable."""
    job = start_long_job(artifacts)
    try:
        home = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).run()
        assert not home.exception
        panel = live_panel_data(home)
        assert panel is not None and panel["figures_url"] is None and not panel["report_epochs"]
        assert "Epoch 1/50" in panel["progress"]["text"] and not home.progress
        assert browser_feed.feed().serving() == [job.run_id]

        at = train_page()
        assert live_panel_data(at)["figures_url"] is not None
        at.session_state["cifar_live_fallback"] = True  # what the panel's "unavailable" report sets
        at.run()
        assert_refreshes_itself(at)

        # A server started without the project's .streamlit/config.toml serves no static/.
        monkeypatch.setattr(config, "get_option", lambda name, _get=config.get_option: (
            False if name == "server.enableStaticServing" else _get(name)))
        assert_refreshes_itself(train_page())
    finally:
        job.stop()
        assert job.join(60)


def assert_refreshes_itself(at: AppTest) -> None:
    assert not at.exception and live_panel_data(at) is None
    assert "Epoch 1/50" in at.progress[0].text  # the fragment that refreshes every second
    titles = {json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")}
    assert {"Loss over Epochs", "Loss and accuracy per batch"} <= titles


def test_plotly_js_is_the_plotly_packages_own_copy_and_an_unwritable_folder_means_no_panel(tmp_path, monkeypatch):
    import plotly

    from cifar_ui import progress_panel

    monkeypatch.setattr(progress_panel, "VENDOR_DIR", tmp_path / "vendor")
    copied = progress_panel.plotly_js()
    assert copied.read_bytes() == (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    assert progress_panel.available()  # the project's config serves static/
    assert list(copied.parent.iterdir()) == [copied]  # no temporary file left

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(progress_panel, "VENDOR_DIR", blocker / "vendor")
    assert not progress_panel.available()  # the Train page then refreshes itself instead
