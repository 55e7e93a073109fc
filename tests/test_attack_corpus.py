"""The attack corpus: a read-only viewer and a locked session against every page and every action.

Each test plays someone who may not act (cifar_ui/access.py) and asserts that nothing was computed
(no job process: the trainer lock is free; no new run folder; no predictions, calibration or cache
file), written (the artifacts folder's file tree is the same before and after) or revealed (no
absolute path of the artifacts or data folder, no host name, in anything the session receives).

Clicks are forged beneath the browser: Streamlit 1.67 itself drops a value a browser sends for a
disabled widget, so `forged_clicks` makes the page's own buttons report a press whatever they are
drawn as, as a Streamlit without that check, or a hand-made websocket message, would. What a page
then does is its own check (`access.can_act()` on the server), the one this corpus holds it to.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import pytest
import streamlit
from streamlit.delta_generator import DeltaGenerator
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

from cifar_core import runs, trainer_lock
from cifar_core.config import TrainConfig
from cifar_core.insight import calibration, evaluation, report
from cifar_core.sweeps import studies
from cifar_ui import access, cache, fmt, widgets
from test_pages import QUICK, RUN_TIMEOUT, open_page, raised, texts, widget

ROOT = Path(__file__).resolve().parent.parent
ALL_PAGES = sorted(f"pages/{p.name}" for p in (ROOT / "pages").glob("*.py"))
PASSWORD = "s3cret lab"
ROLES = {"read-only": {access.READONLY_ENV: "1"}, "locked": {access.PASSWORD_ENV: PASSWORD}}
HOST = "gpu-node-7.lab.internal"  # the host the corpus's runs say they trained on
# Every button that changes the lab or starts work, as the pages label them.
ACTIONS = {"Start training", "Add to queue", "Resume", "Stop", "Find a learning rate", "Use this rate",
           "Measure this machine", "Evaluate with TTA", "Save", "Build export", "Delete run",
           "Find near-duplicates", "Create sweep", "Remove from queue", "Start on this server", "Stop sweep"}


# --- the lab under attack ------------------------------------------------------------------

@pytest.fixture
def lab(with_run, artifacts, tmp_path, monkeypatch):
    """The session's run, an older run trained on a folder of the server's, a queued run and a
    sweep; Streamlit's in-process caches emptied, so nothing is served from a previous test's owner."""
    data_dir = tmp_path / "server-data" / "cifar10-jpeg"
    data_dir.mkdir(parents=True)
    source = artifacts / "runs" / with_run
    _set_host(source)
    elsewhere = _copy_run(source, "20000101-000000-elsewhere")
    config = json.loads((elsewhere / "config.json").read_text())
    (elsewhere / "config.json").write_text(json.dumps({**config, "data": str(data_dir)}))
    studies.enqueue(TrainConfig(epochs=1, **QUICK), name="queued by the owner")
    studies.create(studies.define("owners", ["dropout=0,0.1"], TrainConfig(epochs=1, **QUICK), trials=2,
                                  sampler="grid"))
    streamlit.cache_data.clear()
    streamlit.cache_resource.clear()
    secrets = [str(artifacts), str(artifacts.resolve()), str(tmp_path), str(data_dir), HOST]
    if len(socket.gethostname()) >= 4:  # a name that short is in ordinary words: the recorded HOST stands in
        secrets.append(socket.gethostname())
    return {"run": with_run, "elsewhere": elsewhere.name, "data": data_dir, "artifacts": artifacts,
            "secrets": secrets}


@pytest.fixture
def failed(lab, monkeypatch) -> str:
    """A failed run, the newest (Train shows its result), whose error names a file of the server's
    data folder and the host."""
    folder = _copy_run(lab["artifacts"] / "runs" / lab["run"], "29990101-000000-failed")
    status = json.loads((folder / "status.json").read_text())
    status.update(status="failed", error=f"cannot read {lab['data']}/test/cat/0001.png on {HOST}")
    (folder / "status.json").write_text(json.dumps(status))
    monkeypatch.setattr(socket, "gethostname", lambda: HOST)  # the failure happened on this server
    return folder.name


def _copy_run(source: Path, run_id: str) -> Path:
    target = source.parent / run_id
    shutil.copytree(source, target)
    return target


def _set_host(folder: Path) -> None:
    status = json.loads((folder / "status.json").read_text())
    (folder / "status.json").write_text(json.dumps({**status, "host": HOST}))


@pytest.fixture(params=list(ROLES))
def role(request, monkeypatch) -> str:
    monkeypatch.delenv(access.READONLY_ENV, raising=False)
    monkeypatch.delenv(access.PASSWORD_ENV, raising=False)
    for name, value in ROLES[request.param].items():
        monkeypatch.setenv(name, value)
    return request.param


@pytest.fixture
def forged_clicks(monkeypatch) -> set[str]:
    """Labels whose buttons report a press on every run (their on_click runs too), however the page
    draws them; the test fills the set."""
    pressed: set[str] = set()
    real_button, real_submit = DeltaGenerator.button, DeltaGenerator.form_submit_button

    def button(self, label, *args, **kwargs):
        real_button(self, label, *args, **kwargs)
        return _press(label, kwargs)

    def submit(self, label="Submit", *args, **kwargs):
        real_submit(self, label, *args, **kwargs)
        return _press(label, kwargs)

    def _press(label, kwargs) -> bool:
        if label not in pressed:
            return False
        if callable(kwargs.get("on_click")):
            kwargs["on_click"](*(kwargs.get("args") or ()), **(kwargs.get("kwargs") or {}))
        return True

    monkeypatch.setattr(DeltaGenerator, "button", button)
    monkeypatch.setattr(DeltaGenerator, "form_submit_button", submit)
    monkeypatch.setattr(streamlit, "button", lambda *a, **k: button(streamlit._main, *a, **k))
    monkeypatch.setattr(streamlit, "form_submit_button", lambda *a, **k: submit(streamlit._main, *a, **k))
    return pressed


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` and a digest of its bytes (not its time: Optuna's journal reader
    touches the journal without writing to it)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def received(at: AppTest) -> str:
    """Everything the session was sent: every element's message (labels, values, help, captions,
    tables' bytes), as text."""
    parts: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(parts)


def assert_nothing_revealed(at: AppTest, lab: dict, where: str) -> None:
    sent = received(at)
    leaked = [sent[max(0, sent.index(s) - 120):sent.index(s) + len(s)] for s in lab["secrets"] if s in sent]
    assert not leaked, f"{where}: the session received {leaked}"


def assert_nothing_done(lab: dict, before: dict, where: str) -> None:
    assert trainer_lock.holder() is None, f"{where}: {trainer_lock.holder()}"
    after = tree(lab["artifacts"])
    assert after == before, (f"{where}: written {sorted(set(after) - set(before))}, "
                             f"changed {sorted(k for k in set(after) & set(before) if after[k] != before[k])}, "
                             f"removed {sorted(set(before) - set(after))}")


# --- every page, every action ---------------------------------------------------------------

@pytest.mark.parametrize("page", ALL_PAGES)
def test_a_viewer_visiting_and_pressing_everything_computes_writes_and_sees_nothing(lab, role, page, forged_clicks):
    before = tree(lab["artifacts"])
    at = open_page(page)
    assert_nothing_revealed(at, lab, f"{role} visiting {page}")
    drawn = {b.label for b in at.button} & ACTIONS
    forged_clicks.update(ACTIONS)  # every action of the page, pressed at once, on every rerun
    for checkbox in [c for c in at.checkbox if c.label.startswith("Yes, delete") and not c.disabled]:
        checkbox.check()
    at.run()
    assert not at.exception, raised(at)
    assert_nothing_done(lab, before, f"{role} pressing {sorted(drawn)} on {page}")
    assert_nothing_revealed(at, lab, f"{role} after pressing on {page}")
    assert [r.run_id for r in runs.list_runs()] == [lab["run"], lab["elsewhere"]]
    assert len(studies.trial_rows(*studies.load(studies.QUEUE))) == 1  # the queued run is still there
    if role == "read-only":
        assert not drawn, f"a read-only lab draws {drawn} on {page}"


def test_every_page_is_in_the_corpus():
    assert len(ALL_PAGES) >= 8 and "pages/data.py" in ALL_PAGES and "pages/sweeps.py" in ALL_PAGES


@pytest.mark.parametrize("page", ["pages/data.py", "pages/train.py"])
def test_a_viewer_cannot_make_the_server_read_or_probe_a_path(lab, role, page, tmp_path):
    """A typed path (one that exists and holds CIFAR-shaped images, one that does not) or keras, sent
    as the source box's value: refused with the same line, the lab's own source shown, nothing read."""
    from test_pages_data import write_folder

    if role == "read-only" and page == "pages/train.py":
        pytest.skip("a read-only Train page has no form, so no source box")
    real = write_folder(tmp_path / "probe" / "real-images", per_class_train=2, per_class_test=1, plant=False)
    before = tree(lab["artifacts"])
    seen = []
    for typed in (str(real), str(tmp_path / "probe" / "nowhere"), "keras"):
        at = open_page(page)
        box = widget(at.selectbox, "Data source")
        assert box.options == ["synthetic"]  # the lab's own (CIFAR10_DATA=synthetic); nothing to type
        _send(at, box, typed)
        assert not at.exception, raised(at)
        assert widgets.SOURCE_REFUSED in texts(at.caption), typed
        seen.append(sorted(texts(at.caption).splitlines()) + sorted(texts(at.error).splitlines()))
        assert typed not in received(at)
    assert seen[0] == seen[1] == seen[2], "the page told a real folder, a missing one and keras apart"
    assert_nothing_done(lab, before, f"{role} typing paths on {page}")


def test_a_viewer_is_offered_the_labs_own_folder_by_its_name(lab, role, monkeypatch):
    monkeypatch.setenv("CIFAR10_DATA", str(lab["data"]))
    at = open_page("pages/data.py")
    box = widget(at.selectbox, "Data source")
    assert box.options == ["this lab's data: cifar10-jpeg", "synthetic"]
    assert str(lab["data"]) not in received(at)


@pytest.mark.parametrize("page", ["pages/home.py", "pages/sweeps.py", "pages/train.py"])
def test_the_labs_own_data_folder_reaches_a_viewer_by_its_name_on_every_page(lab, role, page, monkeypatch):
    monkeypatch.setenv("CIFAR10_DATA", str(lab["data"]))  # the lab serves a folder of its machine
    at = open_page(page)
    assert_nothing_revealed(at, lab, f"{role} on {page} with the lab's data in a server folder")
    assert str(lab["data"]) not in received(at)


def test_the_owner_still_types_a_path(lab, tmp_path):
    from test_pages_data import write_folder

    real = write_folder(tmp_path / "owner-images", per_class_train=2, per_class_test=1, plant=False)
    at = open_page("pages/data.py")
    assert widget(at.selectbox, "Data source").accept_new_options
    _send(at, widget(at.selectbox, "Data source"), str(real))  # typed in, as the browser sends it
    assert not at.exception and not at.error, texts(at.error)
    assert f"local copy at {real}" in texts(at.caption)  # the owner, on this machine, sees the path


def test_a_path_typed_before_the_session_locked_is_refused(lab, monkeypatch, tmp_path):
    at = open_page("pages/data.py")
    _send(at, widget(at.selectbox, "Data source"), str(tmp_path / "nowhere"))
    assert "Cannot read this data source" in texts(at.error)  # the owner is told
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)  # now the same session may not act
    _send(at, widget(at.selectbox, "Data source"), str(tmp_path / "nowhere"))  # its browser still holds the path
    assert not at.exception and not at.error, texts(at.error)
    assert widgets.SOURCE_REFUSED in texts(at.caption)


def test_a_viewer_never_starts_the_keras_download(lab, role, monkeypatch):
    """The lab's own source is keras and not downloaded here: the Data page says so and stops."""
    from cifar_core import data

    monkeypatch.delenv("CIFAR10_DATA")
    monkeypatch.setattr(data, "keras_download_folder", lambda: None)
    monkeypatch.setattr(data, "load_keras", lambda: pytest.fail("a viewer started the keras download"))
    at = open_page("pages/data.py")
    assert "not downloaded on this server yet" in texts(at.info)


def _send(at: AppTest, element, value: str) -> None:
    """Send `value` as the widget's state, as a hand-made websocket message would (AppTest, like a
    browser, sends only the options it was offered)."""
    state = WidgetState(id=element.id, string_value=value)

    class Forged(type(element)):
        @property
        def _widget_state(self):
            return state

    element.__class__ = Forged
    at.run()


# --- heavy work -------------------------------------------------------------------------------

def test_a_forged_near_duplicate_search_computes_and_writes_nothing(lab, role, forged_clicks, monkeypatch):
    from cifar_core.data import duplicates

    searched = []  # recorded, not raised: a page swallows pytest's own outcome exceptions
    real = duplicates.nearest_train
    monkeypatch.setattr(duplicates, "nearest_train", lambda *a, **k: searched.append(1) or real(*a, **k))
    before = tree(lab["artifacts"])
    at = open_page("pages/data.py")
    find = [b for b in at.button if b.label == "Find near-duplicates"]
    assert role == "read-only" or find[0].disabled
    forged_clicks.add("Find near-duplicates")
    at.run()
    assert not at.exception, raised(at)
    assert not searched and not [m for m in at.metric if m.label == "Test images with a near-duplicate"]
    assert_nothing_done(lab, before, "a forged near-duplicate search")


@pytest.mark.parametrize("page", ["pages/evaluate.py", "pages/browse.py", "pages/data.py"])
def test_a_viewer_does_not_predict_the_test_set(lab, role, page, monkeypatch):
    for run_id in (lab["run"], lab["elsewhere"]):
        for name in (evaluation.PREDICTIONS_FILE, calibration.CALIBRATION_FILE):
            (lab["artifacts"] / "runs" / run_id / name).unlink(missing_ok=True)
    predicted = []
    real = evaluation.test_predictions
    monkeypatch.setattr(evaluation, "test_predictions", lambda *a, **k: predicted.append(1) or real(*a, **k))
    before = tree(lab["artifacts"])
    at = open_page(page)
    assert not at.exception, raised(at)
    shown = texts(at.info) + texts(at.error)
    if page != "pages/data.py":  # Data reaches its run's predictions only after the search
        assert "not computed yet" in shown, shown
    assert not predicted, f"{role} had the test set predicted on {page}"
    assert_nothing_done(lab, before, f"{role} visiting {page}")


# --- internals --------------------------------------------------------------------------------

def _report_as_seen(run_id: str) -> str:
    def script(run_id: str) -> None:
        import streamlit as st

        from cifar_core import runs
        from cifar_ui import cache

        st.session_state["report"] = cache.report_html(runs.load_run(run_id)).decode("utf-8")

    at = AppTest.from_function(script, args=(run_id,), default_timeout=RUN_TIMEOUT).run()
    assert not at.exception, raised(at)
    return at.session_state["report"]


def test_a_viewers_report_names_no_server_folder_nor_host(lab, role, monkeypatch):
    for run_id in (lab["run"], lab["elsewhere"]):
        _set_host(lab["artifacts"] / "runs" / run_id)
    page = _report_as_seen(lab["run"])
    assert "<h2>Result</h2>" in page and "host" not in page
    assert not [s for s in lab["secrets"] if s in page]
    monkeypatch.setattr(evaluation, "load_cached_predictions", lambda run: None)
    fallback = _report_as_seen(lab["elsewhere"])  # nothing cached for a viewer: the one-line page
    assert fallback.startswith("<!DOCTYPE html>") and "No report for run" in fallback
    assert not [s for s in lab["secrets"] if s in fallback]


def test_the_owners_report_keeps_the_host_and_the_folder(lab):
    page = _report_as_seen(lab["run"])
    assert HOST in page  # the owner, on this machine, sees everything


def test_the_fallback_report_escapes_the_error(lab, monkeypatch):
    def fail(*args, **kwargs):
        raise report.ReportError("<script>alert('x')</script>")

    monkeypatch.setattr(report, "build_report", fail)
    page = _report_as_seen(lab["run"])
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_the_runs_table_shows_a_viewer_the_data_folders_name_only(lab, role):
    at = open_page("pages/runs.py")
    frame = at.dataframe[0].value
    config = frame.loc[frame["run"] == lab["elsewhere"], "config"].item()
    assert "· …/cifar10-jpeg ·" in config and str(lab["data"]) not in config


def test_a_failure_on_train_names_no_server_folder_for_a_viewer(lab, failed, role):
    at = open_page("pages/train.py")
    shown = texts(at.error)
    assert f"Training failed: cannot read …/0001.png on {fmt.MACHINE}" in shown, shown
    assert not [s for s in lab["secrets"] if s in shown]


def test_a_failures_status_line_names_no_server_folder_for_a_viewer(lab, failed, monkeypatch):
    monkeypatch.setenv(access.READONLY_ENV, "1")
    assert_nothing_revealed(open_page("pages/home.py"), lab, "a viewer on Home with a failed run")


def test_the_owner_on_this_machine_sees_the_failure_whole(lab, failed):
    at = open_page("pages/train.py")
    assert f"{lab['data']}/test/cat/0001.png on {HOST}" in texts(at.error)


def test_public_text_keeps_names_inside_the_artifacts_and_data_folders(lab, monkeypatch):
    monkeypatch.setenv("CIFAR10_DATA", str(lab["data"]))
    artifacts = lab["artifacts"]
    assert fmt.public_text(f"no file {artifacts}/runs/x/model.keras.") == "no file runs/x/model.keras."
    assert fmt.public_text(f"local copy at {lab['data']}") == "local copy at cifar10-jpeg"
    assert fmt.public_text("read /etc/passwd, then ~/secret") == "read …/passwd, then …/secret"
    assert fmt.public_text("airbench 64/256/256 · subset 600/200 · http://a.b/c") == \
        "airbench 64/256/256 · subset 600/200 · http://a.b/c"


def test_a_page_exception_shows_its_type_only_through_the_real_config(monkeypatch):
    """Streamlit's own config parser on the repo's .streamlit/config.toml, then its own marshalling
    of an uncaught exception whose message and traceback name a server folder."""
    from streamlit import config
    from streamlit.elements.exception import marshall
    from streamlit.proto.Exception_pb2 import Exception as ExceptionProto

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(config, "_config_options", None)
    monkeypatch.setattr(config, "_config_file_watcher", None, raising=False)
    try:
        assert config.get_config_options(force_reparse=True)["client.showErrorDetails"].value == "type"
        try:
            raise OSError(f"cannot read {ROOT}/artifacts/runs/x/model.keras")
        except OSError as exc:
            proto = ExceptionProto()
            marshall(proto, exc, apply_show_error_details=True)
    finally:
        config.get_config_options(force_reparse=True)
    assert proto.type == "OSError"
    assert str(ROOT) not in proto.message and not list(proto.stack_trace)


def test_a_viewers_upload_to_predict_writes_and_reveals_nothing(lab, role):
    from test_pages_explain import png_bytes
    from cifar_core.data import make_synthetic

    before = tree(lab["artifacts"])
    at = open_page("pages/predict.py")
    at.file_uploader[0].set_value([("cat.png", png_bytes(make_synthetic(10, 10, seed=3).x_test[0]), "image/png")]).run()
    assert not at.exception, raised(at)
    assert_nothing_done(lab, before, f"{role} uploading to Predict")
    assert_nothing_revealed(at, lab, f"{role} uploading to Predict")
