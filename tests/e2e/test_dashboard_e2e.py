"""The live dashboard in headless Chromium: train and watch it learn, a second tab that sees and
stops the same job, evaluate, predict uploads (good and bad), browse wrong predictions.

One server and its one training job serve every test; tests wait on what a person would see
(Playwright's retrying `expect`, or a condition evaluated in the page), never on sleeps."""
from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from cifar_core.data import CLASS_NAMES
from cifar_core.runs.heartbeat import LIVE_FILE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # every test trains a run, or reuses one trained here

# Tiny runs: this is a shared 2-core CPU. 256 images = 8 batches of 32 per epoch.
QUICK = dict(epochs=3, batch_size=32, train_images=256, test_images=100)
# long enough (64 batches an epoch) for a tab polling once a second to see the bar move on the
# fastest machine seen (an AMX Xeon trains QUICK's 24 batches in about a second)
WATCHED = dict(epochs=3, batch_size=32, train_images=2048, test_images=100)
LONG_EPOCHS = 200  # a run that would take many minutes: it must be stopped
PAGE_MS = 60_000  # a page's first render (imports pandas, plotly; a model page loads TensorFlow)
TRAIN_MS = 90_000  # a quick run from Start to its test accuracy, TensorFlow import included
STOP_MS = 60_000  # Stop to "stopped": the current batch, saving the model, evaluating 100 images
# (about 5 s on an idle machine, 20 s when colleagues load it; a missed stop never finishes)
RUN_ID = r"\d{8}-\d{6}-[0-9a-f]+"
NAME = "|".join(CLASS_NAMES)
LIVE = '[data-testid="stElementContainer"]:not([data-stale="true"])'  # not a leftover of a rerun


# --- helpers: find what a person sees ------------------------------------------------------

def live(page: Page, testid: str):
    """Elements with this data-testid that belong to the latest run of the script."""
    return page.locator(f'{LIVE} [data-testid="{testid}"]')


def field(page: Page, label: str):
    """The input labelled `label` in the latest run of the script (a rerun that rebuilds a form
    shows the old input, stale, beside the new one until it ends)."""
    return page.locator(f'{LIVE} input[aria-label="{label}"]')


def markdown(page: Page, pattern: str):
    return live(page, "stMarkdownContainer").filter(has_text=re.compile(pattern))


def status_line(page: Page, run_id: str = RUN_ID, status: str = r"\w+"):
    """The job panel's 'Run <id> <status> — <message>' line: drawn by the browser's live panel
    (.cl-status, cifar_ui/progress_panel.py) while the run trains, by the page once it has ended."""
    return page.locator(f'{LIVE} [data-testid="stMarkdownContainer"], {LIVE} .cl-status').filter(
        has_text=re.compile(rf"^Run {run_id} {status} —")).first


def progress_bar(page: Page):
    """The live progress bar with its "Epoch E/N · batch B/P" text: the live panel's, or the
    page's own where the browser cannot poll the feed."""
    return page.locator(f'{LIVE} .cl-progress, {LIVE} [data-testid="stProgress"]').first


def metric(page: Page, label: str):
    return live(page, "stMetric").filter(has_text=label).first.get_by_test_id("stMetricValue")


def start_button(page: Page):
    return page.locator(LIVE).get_by_role("button", name="Start training")


def stop_button(page: Page):
    return page.locator(LIVE).get_by_role("button", name="Stop", exact=True)


def open_page(page: Page, base_url: str, path: str, title: str) -> None:
    page.goto(base_url + path)
    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible(timeout=PAGE_MS)
    expect(page.get_by_test_id("stException")).to_have_count(0)


def fill_train_form(page: Page, epochs: int, batch_size: int, train_images: int, test_images: int) -> None:
    # the server's CIFAR10_DATA; never 'keras', which would download CIFAR-10
    expect(page.get_by_role("combobox", name="Data source")).to_have_value("synthetic", timeout=PAGE_MS)
    # the data first: it sits above the form (a time budget's plan depends on it) and reruns the page
    for label, value in (("Train images", train_images), ("Test images", test_images),
                         ("Epochs", epochs), ("Batch size", batch_size)):
        box = field(page, label)
        box.fill(str(value))
        box.press("Tab")  # commit; Enter would submit the form
        expect(box).to_have_value(str(value))


def start_training(page: Page, **form) -> str:
    """Fill the Train form, press Start, return the new run's id once its job is active."""
    expect(start_button(page)).to_be_enabled(timeout=TRAIN_MS)  # no job from an earlier test
    fill_train_form(page, **form)
    start_button(page).click()
    line = status_line(page, status="(preparing|running)")
    expect(line).to_be_visible(timeout=PAGE_MS)
    return re.search(rf"Run ({RUN_ID})", line.inner_text()).group(1)


def choose(page: Page, label: str, option: str) -> None:
    """Pick the option containing `option` in the selectbox labelled `label`."""
    box = page.get_by_role("combobox", name=label, exact=True)
    expect(box).to_be_visible(timeout=PAGE_MS)
    wanted = page.get_by_role("option", name=re.compile(re.escape(option)))
    for _ in range(3):  # a late rerun of the page can close the open list under the click
        if option in box.input_value():
            break
        box.click()
        try:
            wanted.click(timeout=10_000)
        except PlaywrightTimeoutError:
            page.keyboard.press("Escape")
    expect(box).to_have_value(re.compile(re.escape(option)))


def choose_run(page: Page, run_id: str) -> None:
    """Run pickers list the newest run first; tests say which run they mean."""
    choose(page, "Run", run_id)


def grid_captions(page: Page, count: int) -> list[str]:
    """The Browse grid's image captions ('#<test index>'), once it shows `count` images."""
    captions = live(page, "stImageCaption").filter(has_text=re.compile(r"^#\d+$"))
    expect(captions).to_have_count(count, timeout=PAGE_MS)
    return captions.all_inner_texts()


def epoch_points_js() -> str:
    """JS: points of the training curve in the live 'Loss over Epochs' chart (0 when none)."""
    return f"""() => {{
        const plots = Array.from(document.querySelectorAll('{LIVE} .js-plotly-plot'));
        const p = plots.find(d => /Loss over Epochs/.test((d.layout && d.layout.title && d.layout.title.text) || ''));
        return p && p.data && p.data.length ? (p.data[0].x || []).length : 0;
    }}"""


def record_job_panel(page: Page) -> None:
    """Sample the live progress bar and epoch chart 10x a second into window.__e2eTimeline, so
    the test can show afterwards that both moved while the job ran, however fast it was."""
    page.evaluate(f"""() => {{
        window.__e2eTimeline = [];
        const points = {epoch_points_js()};
        window.__e2eTimer = setInterval(() => {{
            const bar = document.querySelector('{LIVE} .cl-progress, {LIVE} [data-testid="stProgress"]');
            const value = bar && bar.querySelector('[role="progressbar"]');
            window.__e2eTimeline.push({{
                progress: value ? Number(value.getAttribute('aria-valuenow')) : null,
                text: bar ? bar.innerText.trim() : null,
                points: points(),
            }});
        }}, 100);
    }}""")


def stop_recording(page: Page) -> list[dict]:
    return page.evaluate("() => { clearInterval(window.__e2eTimer); return window.__e2eTimeline; }")


def no_traceback(page: Page) -> None:
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_text("Traceback")).to_have_count(0)


def train_quick_run(page: Page, base_url: str) -> str:
    """A finished run made through the UI, for tests that need one."""
    open_page(page, base_url, "/train", "Train")
    run_id = start_training(page, **QUICK)
    expect(status_line(page, run_id, "completed")).to_be_visible(timeout=TRAIN_MS)
    return run_id


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def made_runs() -> dict[str, str]:
    """Runs that tests made through the UI this session, by kind; later tests reuse them."""
    return {}


@pytest.fixture
def finished_run(made_runs, tabs, server) -> str:
    """A completed quick run: the Train test's, or one trained here when that did not run."""
    if "completed" not in made_runs:
        made_runs["completed"] = train_quick_run(tabs.open(), server.url)
    return made_runs["completed"]


# --- tests -------------------------------------------------------------------------------------

def test_train_shows_live_progress_and_final_accuracy(page, server):
    open_page(page, server.url, "/train", "Train")
    feed = []  # the live panel's polls of the files the server keeps fresh (app/static/live/...)
    page.on("response", lambda r: feed.append(r.status) if "/app/static/live/" in r.url else None)
    record_job_panel(page)
    run_id = start_training(page, **WATCHED)
    expect(stop_button(page)).to_be_visible()
    expect(start_button(page)).to_be_disabled()
    expect(progress_bar(page)).to_contain_text(re.compile(r"Epoch \d/3 · batch \d+/64"),
                                                           timeout=TRAIN_MS)
    # as a person who pressed Start at the foot of the form scrolls up to watch: the panel redraws
    # only charts on screen (a finished run shown before Start can make the page that long)
    page.evaluate(f"""() => {{
        const p = Array.from(document.querySelectorAll('{LIVE} .js-plotly-plot'))
            .find(d => /Loss over Epochs/.test((d.layout && d.layout.title && d.layout.title.text) || ''));
        if (p) p.scrollIntoView({{block: 'center'}});
    }}""")

    expect(metric(page, "Test accuracy")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"), timeout=TRAIN_MS)
    timeline = stop_recording(page)
    expect(status_line(page, run_id, "completed")).to_be_visible()
    expect(metric(page, "Epochs")).to_have_text("3/3")
    expect(start_button(page)).to_be_enabled()
    expect(stop_button(page)).to_have_count(0)
    assert page.evaluate(epoch_points_js()) == 3, "the finished run's epoch chart should show 3 epochs"

    running = [t for t in timeline if t["progress"] is not None]
    progress = [t["progress"] for t in running]
    assert len(set(progress)) >= 3, f"the progress bar hardly moved: {sorted(set(progress))}"
    assert progress == sorted(progress), f"the progress bar went backwards: {progress}"
    texts = {t["text"] for t in running}
    assert any(re.search(r"Epoch 1/3 · batch \d+/64", t) for t in texts), texts
    assert any(re.search(r"Epoch 3/3 · batch \d+/64", t) for t in texts), texts
    assert feed.count(200) >= 3 and set(feed) == {200}, f"the panel's polls of the live feed: {feed}"
    points = [t["points"] for t in running]
    # each epoch is drawn as it ends, but the tab polls once a second: a tiny run's epochs can end
    # closer together than that, so one count in between may be skipped, never all of them
    assert set(points) & {1, 2}, f"the epoch chart should gain points while the job runs; saw {points}"
    assert points == sorted(points), f"the epoch chart lost points while the job ran: {points}"
    # not shared as the session's finished run: on 2,048 synthetic images it may make no mistake,
    # and Browse's test needs some (finished_run trains QUICK's 256 images instead)


def test_second_tab_sees_the_job_and_stops_it(tabs, server):
    first = tabs.open()
    open_page(first, server.url, "/train", "Train")
    run_id = start_training(first, **{**QUICK, "epochs": LONG_EPOCHS})
    expect(status_line(first, run_id, "running")).to_be_visible(timeout=TRAIN_MS)

    second = tabs.open()
    open_page(second, server.url, "/train", "Train")
    expect(status_line(second, run_id, "running")).to_be_visible()
    expect(start_button(second)).to_be_disabled()
    # the machine's trainer lock says what holds it: the job process training this run
    expect(live(second, "stAlertContainer").filter(has_text=f"busy: training run {run_id}")).to_be_visible()
    stop_button(second).click()

    expect(status_line(second, run_id, "stopped")).to_be_visible(timeout=STOP_MS)
    expect(status_line(first, run_id, "stopped")).to_be_visible(timeout=STOP_MS)
    for tab in (first, second):
        expect(start_button(tab)).to_be_enabled()
        expect(stop_button(tab)).to_have_count(0)

    open_page(second, server.url, "/runs", "Runs")
    # the newest run is the picker's default: read its value rather than opening the list,
    # which a late rerun of the page (charts still drawing) can close under the click
    expect(second.locator(LIVE).get_by_role("button", name="Delete run")).to_be_visible(timeout=PAGE_MS)
    picker = second.get_by_role("combobox", name="Run", exact=True)
    expect(picker).to_have_value(re.compile(rf"^{run_id} · stopped"), timeout=PAGE_MS)
    no_traceback(second)


def feed_doc(url: str) -> dict:
    """The progress file, as the panel fetches it. Streamlit's static route sends the length of the
    file it found, then reads it: when the feed replaces the file in between (every second), the
    body can come up short. The panel skips such a poll; so does this reader, and asks again."""
    import http.client

    for attempt in range(5):
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # the panel's own request, from here
                return json.loads(response.read())
        except (http.client.IncompleteRead, json.JSONDecodeError):
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def feed_moves(url: str, seconds: float = 3.0) -> bool:
    """Whether the server rewrites the progress file within `seconds` (it does every second while
    the run is watched)."""
    before = feed_doc(url)["fed_at"]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if feed_doc(url)["fed_at"] != before:
            return True
        time.sleep(0.2)  # polling the server's file, not waiting on a page
    return False


def feed_stands_still(url: str, live_file: Path, publishes: int = 3) -> bool:
    """Whether the server left the progress file alone while the run's trainer (its job process)
    wrote its live.json `publishes` more times (every 2 s; the feed writes every second): the
    trainer's writes prove time passed with the machine working, so a file left alone means the
    feed stopped, not that it was starved."""
    def published() -> float:
        return json.loads(live_file.read_text())["updated_at"]

    before, seen = feed_doc(url)["fed_at"], {published()}
    deadline = time.monotonic() + 60
    while len(seen) <= publishes:
        assert time.monotonic() < deadline, f"the trainer stopped writing {live_file.name}"
        if feed_doc(url)["fed_at"] != before:
            return False
        seen.add(published())
        time.sleep(0.2)  # polling the server's files, not waiting on a page
    return feed_doc(url)["fed_at"] == before


@pytest.mark.heavy  # waits out the feed's idle period twice: CI runs it
def test_a_run_nobody_watches_stops_being_fed_until_a_tab_shows_it_again(tabs, server):
    first = tabs.open()
    polled = []
    first.on("request", lambda r: polled.append(r.url) if re.search(rf"/app/static/live/\w+/{RUN_ID}\.json$", r.url) else None)
    open_page(first, server.url, "/train", "Train")
    run_id = start_training(first, **{**QUICK, "epochs": LONG_EPOCHS})
    expect(status_line(first, run_id, "running")).to_be_visible(timeout=TRAIN_MS)
    expect(progress_bar(first)).to_contain_text(re.compile(r"Epoch \d+/200 · batch \d+/8"), timeout=TRAIN_MS)
    url = next(u for u in polled if u.endswith(f"/{run_id}.json"))
    assert feed_moves(url), "the watched run's progress file is not rewritten every second"

    first.context.close()  # the only tab showing the run: its session ends
    deadline = time.monotonic() + 30
    while not feed_stands_still(url, server.artifacts_dir / "runs" / run_id / LIVE_FILE):
        assert time.monotonic() < deadline, "the feed kept writing 30 s after its last tab closed"
    assert feed_doc(url)["active"], "the run must still be training, only unwatched"

    second = tabs.open()
    open_page(second, server.url, "/train", "Train")
    expect(status_line(second, run_id, "running")).to_be_visible()
    assert feed_moves(url, seconds=10), "a tab showing the run again did not restart its feed"
    stop_button(second).click()
    expect(status_line(second, run_id, "stopped")).to_be_visible(timeout=STOP_MS)


@pytest.mark.heavy  # slow in the default run (durations, 2026-12-07): CI runs it
def test_an_epochs_rerun_waits_until_the_class_evolution_is_on_screen(tabs, server):
    """At an epoch's end the live panel reruns the page for the per-class evolution below it, but
    only while that is on screen: a tab at the page's top (the evolution below the fold at 1400x1000)
    asks for no rerun while the charts above move on, and one that scrolls down gets the evolution
    brought up to date at once (cifar_ui/progress_panel.py; BENCHMARKS.md section 8, "One local tab")."""
    page = tabs.open()
    page.add_init_script("""(() => {  // counts the page's websocket messages: its rerun requests
        window.__wsSent = 0;
        const Base = window.WebSocket;
        window.WebSocket = class extends Base { send(d) { window.__wsSent++; return super.send(d); } };
    })();""")
    open_page(page, server.url, "/train", "Train")
    run_id = start_training(page, **{**QUICK, "epochs": LONG_EPOCHS})
    expect(status_line(page, run_id, "running")).to_be_visible(timeout=TRAIN_MS)
    page.get_by_role("heading", name="Train", exact=True).scroll_into_view_if_needed()  # Start's click scrolled down
    evolution = page.locator(".st-key-cifar_train_evolution")  # pages/train.py's EVOLUTION_KEY
    expect(evolution).to_contain_text("How each class evolves")
    assert evolution.bounding_box()["y"] > page.viewport_size["height"], "the evolution should be below the fold"

    def shown_epoch() -> int:  # the epoch of the evolution's confusion matrix (0: none yet)
        found = re.search(r"Confusion matrix at epoch (\d+) \(", evolution.text_content())  # the chart's title
        return int(found.group(1)) if found else 0

    # a rerun asked for before the scroll (the evolution was on screen) has ended one epoch later
    page.wait_for_function(f"() => ({epoch_points_js()})() > {page.evaluate(epoch_points_js())}", timeout=TRAIN_MS)
    expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning")
    sent, shown = page.evaluate("() => window.__wsSent"), shown_epoch()
    points = page.evaluate(epoch_points_js())
    page.wait_for_function(f"() => ({epoch_points_js()})() >= {points + 2}", timeout=TRAIN_MS)
    assert page.evaluate("() => window.__wsSent") == sent, "a rerun was asked for while the evolution was off screen"
    assert shown_epoch() == shown, "the evolution moved on while off screen"

    evolution.scroll_into_view_if_needed()
    expect(evolution).to_contain_text(re.compile(rf"Confusion matrix at epoch (?!{shown} )\d+ \("), timeout=PAGE_MS)
    assert shown_epoch() >= points + 2, "scrolled into view, the evolution should catch up with the epochs drawn"
    stop_button(page).click()
    expect(status_line(page, run_id, "stopped")).to_be_visible(timeout=STOP_MS)


def test_evaluate_shows_first_four_test_images(page, server, finished_run):
    open_page(page, server.url, "/evaluate", "Evaluate")
    choose_run(page, finished_run)
    expect(metric(page, "Test accuracy")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"), timeout=PAGE_MS)
    expect(page.get_by_role("heading", name="First 4 test images")).to_be_visible()
    for i in range(4):
        expect(live(page, "stImage").filter(has_text=f"test image #{i}")).to_have_count(1)
    tiles = markdown(page, rf"^Predicted ({NAME}) \(\d+\.\d%\)\s*True ({NAME}) — (right|wrong)$")
    expect(tiles).to_have_count(4)
    for text in tiles.all_inner_texts():
        predicted, true, verdict = re.search(rf"Predicted ({NAME}).*True ({NAME}) — (\w+)", text, re.S).groups()
        assert (verdict == "right") == (predicted == true), text
    no_traceback(page)


def test_predict_uploads_a_picture_and_refuses_a_text_file(page, server, finished_run, tmp_path):
    picture = tmp_path / "red-square.png"
    Image.new("RGB", (48, 40), (200, 30, 30)).save(picture)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("shopping list: not a picture\n")
    disguised = tmp_path / "not-really.png"
    disguised.write_text("a text file with an image's name\n")

    open_page(page, server.url, "/predict", "Predict")
    choose_run(page, finished_run)
    uploader = page.get_by_test_id("stFileUploader")
    files = uploader.locator('input[type="file"]')

    files.set_input_files(picture)
    chart = live(page, "stPlotlyChart").first
    expect(chart).to_be_visible(timeout=PAGE_MS)
    expect(chart).to_contain_text("Top 3")
    bars = chart.evaluate("el => { const p = el.querySelector('.js-plotly-plot'); "
                          "return p.data.map(t => ({x: Array.from(t.x), y: Array.from(t.y)})); }")
    names = bars[0]["y"]
    assert len(names) == 3 and set(names) <= set(CLASS_NAMES), bars
    for name in names:
        expect(chart).to_contain_text(name)
    verdict = live(page, "stAlertContainer").filter(has_text=re.compile(NAME)).first
    expect(verdict).to_contain_text(max(zip(bars[0]["x"], names))[1])

    files.set_input_files(text_file)  # the browser's uploader refuses the type itself
    expect(uploader).to_contain_text(re.compile(r"text/plain files are not allowed", re.I))

    files.set_input_files(disguised)  # passes the uploader; the app must say why it is unusable
    expect(live(page, "stAlertContainer").filter(has_text="Cannot use this file")).to_contain_text(
        "not-really.png", timeout=PAGE_MS)
    expect(live(page, "stPlotlyChart")).to_have_count(1)  # the good picture's result is still there
    no_traceback(page)


def test_browse_filters_to_wrong_predictions(page, server, finished_run):
    open_page(page, server.url, "/browse", "Browse")
    choose_run(page, finished_run)
    choose(page, "Order", "Test-set order")  # worst-first would put the wrong ones first anyway
    count = live(page, "stCaptionContainer").filter(has_text=re.compile(r"Images \d+–\d+ of [\d,]+ matching")).first
    expect(count).to_be_visible(timeout=PAGE_MS)
    total = int(re.search(r"of ([\d,]+) matching", count.inner_text()).group(1).replace(",", ""))
    all_shown = grid_captions(page, min(24, total))
    assert all_shown == [f"#{i}" for i in range(min(24, total))], all_shown

    live(page, "stRadioOption").filter(has_text="Wrong only").click()
    no_match = live(page, "stAlertContainer").filter(has_text="No test image matches these filters")
    changed = re.compile(rf"of (?!{re.escape(f'{total:,}')} )[\d,]+ matching|No test image matches")
    expect(count.or_(no_match).first).to_have_text(changed, timeout=PAGE_MS)
    if no_match.count():
        pytest.fail(f"the run {finished_run} made no mistake on {total} test images: nothing to browse")
    wrong = int(re.search(r"of ([\d,]+) matching", count.inner_text()).group(1).replace(",", ""))
    assert 0 < wrong < total, (wrong, total)
    wrong_shown = grid_captions(page, min(24, wrong))
    assert wrong_shown != all_shown, "the grid did not change under 'Wrong only'"
    tiles = markdown(page, rf"^({NAME}) →\s*({NAME}) \d+%$")  # under each image: "true → predicted  conf%"
    expect(tiles).to_have_count(len(wrong_shown))
    for text in tiles.all_inner_texts():
        true, predicted = re.search(rf"^({NAME}) →\s*({NAME})", text).groups()
        assert true != predicted, f"a tile under 'Wrong only' shows a right prediction: {text}"
    no_traceback(page)


@pytest.mark.heavy  # slow in the default run (durations, 2026-12-07): CI runs it
def test_train_with_the_fast_preset_records_it(page, server):
    """Pick the Fast recipe, start, and the run's folder records preset fast and its recipe."""
    import json

    open_page(page, server.url, "/train", "Train")
    expect(start_button(page)).to_be_enabled(timeout=TRAIN_MS)
    choose(page, "Recipe", "Fast")
    expect(live(page, "stCaptionContainer").filter(has_text="airbench-style").first).to_be_visible()
    # Fast is a 5-minute budget; this machine was never probed here, so train fixed epochs instead
    budget = page.get_by_label("Time budget (minutes of training)", exact=True)
    expect(budget).to_have_value("5.00", timeout=PAGE_MS)
    budget.fill("0")
    budget.press("Tab")
    expect(budget).to_have_value("0.00")
    # the form was refilled from the preset: the Fast recipe's batch size, not the assignment's 64
    batch = field(page, "Batch size")
    expect(batch).to_have_count(1, timeout=PAGE_MS)  # the assignment's form is gone
    expect(batch).to_have_value("512")
    run_id = start_training(page, epochs=1, batch_size=32, train_images=256, test_images=100)
    expect(status_line(page, run_id, "completed")).to_be_visible(timeout=TRAIN_MS)
    expect(metric(page, "With TTA")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
    config = json.loads((server.artifacts_dir / "runs" / run_id / "config.json").read_text())
    assert config["preset"] == "fast" and config["architecture"] == "airbench", config
    assert config["batch_size"] == 32 and config["tta"] == "flip_shift"
    no_traceback(page)


def test_a_lab_with_a_password_lets_everyone_watch_and_only_the_unlocked_act(browser, locked_server):
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    try:
        first, second = (c.new_page() for c in contexts)
        open_page(first, locked_server.url, "/train", "Train")
        expect(start_button(first)).to_be_disabled()  # viewing is open, acting is not
        password = first.get_by_label("Lab password")
        password.fill("guess")
        first.get_by_role("button", name="Unlock").click()
        expect(live(first, "stAlertContainer").filter(has_text="Wrong password")).to_be_visible()
        expect(start_button(first)).to_be_disabled()
        first.get_by_label("Lab password").fill(locked_server.password)
        first.get_by_role("button", name="Unlock").click()
        expect(first.get_by_text("Actions unlocked for this session")).to_be_visible(timeout=PAGE_MS)
        expect(start_button(first)).to_be_enabled()

        open_page(second, locked_server.url, "/train", "Train")  # another browser: still locked
        expect(start_button(second)).to_be_disabled()
        expect(second.get_by_label("Lab password")).to_be_visible()
        no_traceback(first)
        no_traceback(second)
    finally:
        for c in contexts:
            c.close()
