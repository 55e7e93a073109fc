"""The live feed's files served by Streamlit's own static route while the feed rewrites them
(issue 26): every response is whole, and the server logs no h11 LocalProtocolError."""
from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time

import pytest

from cifar_core.config import TrainConfig
from cifar_core.training.state import JobState
from cifar_ui import browser_feed

RUN = "20260101-000000-abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Errors(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record):
        self.records.append(record.getMessage() + (f" {record.exc_info[1]!r}" if record.exc_info else ""))


@pytest.fixture
def static_server(tmp_path):
    """Streamlit's `app/static/` route (server.enableStaticServing) under uvicorn with h11, as
    `streamlit run` serves it; yields (port, the static folder, the errors uvicorn logged)."""
    import uvicorn
    from starlette.applications import Starlette
    from streamlit.web.server.starlette.starlette_routes import create_app_static_serving_routes

    (tmp_path / "app.py").write_text("")
    app = Starlette(routes=create_app_static_serving_routes(str(tmp_path / "app.py"), ""))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http="h11", log_level="error",
                                           lifespan="off"))
    errors = _Errors()
    logging.getLogger("uvicorn.error").addHandler(errors)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port, tmp_path / "static", errors.records
    finally:
        server.should_exit = True
        thread.join(10)
        logging.getLogger("uvicorn.error").removeHandler(errors)


def _get(port: int, path: str) -> bytes:
    """One GET on a fresh connection; raises when the body is shorter or longer than declared."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/app/static/" + path)
        response = conn.getresponse()
        assert response.status == 200, (path, response.status)
        return response.read()  # IncompleteRead when the server sent less than its Content-Length
    finally:
        conn.close()


def test_polled_files_are_served_whole_while_the_feed_rewrites_them(static_server, monkeypatch, artifacts):
    port, static, errors = static_server
    monkeypatch.setattr(browser_feed, "FIGURES_SECONDS", 0.0)
    state = JobState(RUN, TrainConfig(epochs=3, data="synthetic"), {}, 0)
    state.start_running(batches_per_epoch=10, epoch=1)
    feed = browser_feed.Feed(root=static / "live", period=0.002, alive=lambda s: True)
    links = feed.serve(RUN, state.view, 0.6, "epoch")
    progress_path = links.progress_url.split("app/static/", 1)[1]

    stop = threading.Event()

    def train():  # a run whose progress text and curves change as fast as the feed rewrites them
        i = 0
        while not stop.is_set():
            i += 1
            state.add_batch(i / 10, 2.0 / i, 0.1)
            state.update(batch=i % 10, message="Training" + "." * (i % 37))
            state.publish()
            time.sleep(0.001)

    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    failures, polls, figures = [], 0, 0
    deadline = time.monotonic() + 6
    try:
        while time.monotonic() < deadline:
            try:
                doc = json.loads(_get(port, progress_path))
                polls += 1
                named = doc.get("figures", {}).get("s60-epoch")
                path = (progress_path.rsplit("/", 1)[0] + "/" + named) if named else \
                    links.figures_url.split("app/static/", 1)[1]
                json.loads(_get(port, path))
                figures += 1
            except (http.client.HTTPException, ConnectionError, json.JSONDecodeError) as exc:
                failures.append(repr(exc))
    finally:
        stop.set()
        trainer.join(5)
        state.update(status="completed", message="Finished")
    assert polls > 50 and figures > 50, (polls, figures)
    assert not failures, f"{len(failures)} of {polls} polls came back broken: {failures[:3]}"
    assert not [e for e in errors if "Content-Length" in e or "LocalProtocolError" in e], errors[:3]


def test_every_progress_doc_has_one_length_and_figures_files_are_never_rewritten(tmp_path, monkeypatch, artifacts):
    monkeypatch.setattr(browser_feed, "FIGURES_SECONDS", 0.0)
    monkeypatch.setattr(browser_feed, "FIGURES_KEEP_SECONDS", 0.3)
    state = JobState(RUN, TrainConfig(epochs=3, data="synthetic"), {}, 0)
    state.start_running(batches_per_epoch=10, epoch=1)
    feed = browser_feed.Feed(root=tmp_path / "feed", period=0.02)
    links = feed.serve(RUN, state.view, 0.6, "epoch")
    folder = feed.root / browser_feed.scope()
    progress = folder / f"{RUN}.json"
    first_figures = folder / links.figures_url.rsplit("/", 1)[1]
    written: dict[str, int] = {}
    sizes = set()
    for i in range(30):
        state.add_batch(i / 10, 2.0 / (i + 1), 0.1)
        state.update(batch=i % 10, message="x" * (i * 200))  # a long failure's text is cut, not lengthening the file
        state.publish()
        time.sleep(0.03)
        sizes.add(progress.stat().st_size)
        for path in folder.glob(f"{RUN}.s60-epoch.*.json"):
            try:
                mtime = path.stat().st_mtime_ns
            except FileNotFoundError:  # retired (0.3 s here) between the listing and the look
                continue
            written.setdefault(path.name, mtime)
            assert mtime == written[path.name], f"{path.name} was rewritten"
    assert sizes == {browser_feed.PROGRESS_BYTES}, sizes
    doc = json.loads(progress.read_text())
    assert doc["figures"]["s60-epoch"] in written and len(written) > 3
    assert doc["message"].endswith("…")
    deadline = time.monotonic() + 5
    while first_figures.exists():  # replaced long ago: removed after its grace period
        assert time.monotonic() < deadline, "a replaced figures file was never removed"
        time.sleep(0.05)
    assert (folder / doc["figures"]["s60-epoch"]).is_file()
    state.update(status="completed", message="Finished")
