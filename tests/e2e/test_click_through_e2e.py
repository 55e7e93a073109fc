"""From a chart to the images behind it, in headless Chromium: click a cell of Evaluate's confusion
matrix and land on Browse showing exactly that (true, predicted) pair, with the filters in the URL.

Reuses the session's server (tests/e2e/conftest.py); the run is trained into the server's artifacts
folder by the core directly (the Train page has its own browser tests), so this test waits on clicks,
not on a training form."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from job_helpers import start_job
from cifar_core.config import TrainConfig
from cifar_core.data import CLASS_NAMES
from test_dashboard_e2e import LIVE, NAME, PAGE_MS, choose_run, grid_captions, live, markdown, no_traceback, open_page

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # trains a run

TEST_IMAGES = 100


@pytest.fixture(scope="module")
def trained_run(server) -> str:
    """A quick synthetic run (1 epoch, 100 test images) in the server's artifacts folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIFAR_ARTIFACTS_DIR", str(server.artifacts_dir))
        job = start_job(TrainConfig(epochs=1, data="synthetic", train_subset=256, test_subset=TEST_IMAGES,
                                    batch_size=32))
        assert job.join(240), "training the click-through run took over 240 s"
    assert job.snapshot().status == "completed", job.snapshot().error
    return job.run_id


# Streamlit's theme wraps titles in <b>…</b>, even twice; Evaluate has other "Confusion matrix at epoch …" charts
CELLS_JS = f"""() => {{
    const plots = Array.from(document.querySelectorAll('{LIVE} .js-plotly-plot'));
    const title = d => (d.layout && d.layout.title && d.layout.title.text) || '';
    const gd = plots.find(d => /^(<b>)*Confusion matrix(<\\/b>)*$/.test(title(d)));
    if (!gd || !gd.data || !gd.data.length || !gd.data[0].customdata) return null;
    return Array.from(gd.data[0].customdata).map(c => Array.from(c).map(Number));
}}"""


def cell_centre(page, index: int) -> tuple[float, float]:
    """Where on the screen the confusion grid's square number `index` (true * 10 + predicted) is."""
    box = page.evaluate(f"""(i) => {{
        const plots = Array.from(document.querySelectorAll('{LIVE} .js-plotly-plot'));
        const gd = plots.find(d => /^(<b>)*Confusion matrix(<\\/b>)*$/.test(d.layout.title.text || ''));
        const r = gd.querySelectorAll('.scatterlayer .trace .points path')[i].getBoundingClientRect();
        return [r.left + r.width / 2, r.top + r.height / 2];
    }}""", index)
    return box[0], box[1]


def hover_cell(page, chart, true: int, predicted: int, tries: int = 5) -> None:
    """Put the mouse on the cell, as a person does, until its tooltip names it: the page can still
    grow or scroll under the cursor (charts further down render late), so measure again if not."""
    hover = page.locator(".hoverlayer .hovertext").first
    for attempt in range(tries):
        chart.scroll_into_view_if_needed()
        page.mouse.move(*cell_centre(page, true * 10 + predicted))
        try:
            expect(hover).to_contain_text(f"true {CLASS_NAMES[true]}", timeout=5_000)
            expect(hover).to_contain_text(f"predicted {CLASS_NAMES[predicted]}", timeout=1_000)
            return
        except AssertionError:
            if attempt == tries - 1:
                raise
            page.mouse.move(0, 0)  # leave, so the next move is a fresh hover


def test_clicking_a_confusion_cell_opens_browse_on_that_pair(page, server, trained_run):
    open_page(page, server.url, "/evaluate", "Evaluate")
    choose_run(page, trained_run)
    chart = live(page, "stPlotlyChart").filter(has_text="Confusion matrix").first
    expect(chart).to_be_visible(timeout=PAGE_MS)
    chart.scroll_into_view_if_needed()
    page.wait_for_function(f"({CELLS_JS})() !== null", timeout=PAGE_MS)
    cells = page.evaluate(CELLS_JS)  # [true, predicted, count] per square
    assert len(cells) == 100 and sum(c[2] for c in cells) == TEST_IMAGES, cells
    mistakes = [c for c in cells if c[0] != c[1] and c[2] > 0]
    true, predicted, count = max(mistakes or cells, key=lambda c: c[2])

    hover_cell(page, chart, true, predicted)
    page.mouse.down()
    page.mouse.up()

    expect(page.get_by_role("heading", name="Browse", exact=True)).to_be_visible(timeout=PAGE_MS)
    expect(page).to_have_url(re.compile(r"/browse\?"), timeout=PAGE_MS)
    query = parse_qs(urlparse(page.url).query)
    assert query["true"] == [CLASS_NAMES[true]] and query["predicted"] == [CLASS_NAMES[predicted]], page.url
    assert query["run"] == [trained_run], page.url
    expect(page.get_by_role("combobox", name="True class", exact=True)).to_have_value(CLASS_NAMES[true])
    expect(page.get_by_role("combobox", name="Predicted class", exact=True)).to_have_value(CLASS_NAMES[predicted])

    counter = live(page, "stCaptionContainer").filter(has_text=re.compile(r"Images \d+–\d+ of [\d,]+ matching")).first
    expect(counter).to_contain_text(f"of {count} matching", timeout=PAGE_MS)
    grid_captions(page, min(count, 24))
    tiles = markdown(page, rf"^({NAME}) →\s*({NAME}) \d+%$")
    expect(tiles).to_have_count(min(count, 24))
    for text in tiles.all_inner_texts():
        assert re.match(rf"^{CLASS_NAMES[true]} →\s*{CLASS_NAMES[predicted]} ", text), text

    page.get_by_role("link", name="Evaluate").click()  # back: the old click must not send us on again
    expect(live(page, "stPlotlyChart").filter(has_text="Confusion matrix").first).to_be_visible(timeout=PAGE_MS)
    expect(page).to_have_url(re.compile(r"/evaluate$"))
    page.go_back()  # the browser's Back button: Browse again, with the URL's filters
    expect(page).to_have_url(re.compile(r"/browse\?"))
    expect(page.get_by_role("combobox", name="True class", exact=True)).to_have_value(CLASS_NAMES[true],
                                                                                      timeout=PAGE_MS)

    page.reload()  # the URL alone (a bookmark, a shared link) shows the same view
    expect(page.get_by_role("combobox", name="Predicted class", exact=True)).to_have_value(
        CLASS_NAMES[predicted], timeout=PAGE_MS)
    expect(live(page, "stCaptionContainer").filter(has_text=f"of {count} matching").first).to_be_visible(
        timeout=PAGE_MS)
    no_traceback(page)


ROW_PIXELS = 35  # Streamlit's data grid: the header and every row are 35 px high


def test_selecting_a_class_in_the_per_class_table_opens_its_mistakes(page, server, trained_run):
    open_page(page, server.url, "/evaluate", "Evaluate")
    choose_run(page, trained_run)
    page.wait_for_function(f"({CELLS_JS})() !== null", timeout=PAGE_MS)
    cells = page.evaluate(CELLS_JS)
    wrong = [sum(c[2] for c in cells if c[0] == k and c[1] != k) for k in range(len(CLASS_NAMES))]
    k = max(range(len(CLASS_NAMES)), key=wrong.__getitem__)
    assert wrong[k] > 0, f"the run made no mistake: {cells}"

    table = live(page, "stDataFrame").first  # "Per class" comes before "Most confused"
    expect(table).to_be_visible(timeout=PAGE_MS)
    table.scroll_into_view_if_needed()
    box = table.bounding_box()
    # the grid is a canvas: click row k's selection box, in the row-marker column at the left
    page.mouse.click(box["x"] + 15, box["y"] + ROW_PIXELS * (k + 1) + ROW_PIXELS / 2)

    expect(page).to_have_url(re.compile(r"/browse\?"), timeout=PAGE_MS)
    query = parse_qs(urlparse(page.url).query)
    assert query["true"] == [CLASS_NAMES[k]] and query["show"] == ["wrong"] and "predicted" not in query, page.url
    expect(live(page, "stCaptionContainer").filter(has_text=f"of {wrong[k]} matching").first).to_be_visible(
        timeout=PAGE_MS)
    tiles = markdown(page, rf"^({NAME}) →\s*({NAME}) \d+%$")
    expect(tiles).to_have_count(min(wrong[k], 24))
    for text in tiles.all_inner_texts():
        assert text.startswith(f"{CLASS_NAMES[k]} →") and not re.match(r"^(\w+) →\s*\1 ", text), text
    no_traceback(page)
