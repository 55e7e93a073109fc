"""Sharing the lab safely: it listens on localhost, a password guards every action while every
page stays viewable (and a locked viewer writes nothing into a run), wrong passwords slow down that
client's further tries, and read-only shows no action."""
from __future__ import annotations

import re
import time
import tomllib
from collections import OrderedDict, deque
from pathlib import Path
from types import SimpleNamespace

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from cifar_core import jobs, runs, trainer_lock
from job_helpers import WatchedRun
from cifar_core.config import TrainConfig
from cifar_core.insight import calibration, evaluation
from cifar_ui import access

from test_pages import DASHBOARD, PAGES, QUICK, open_page, texts, wait_for, widget

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret lab"
ACTIONS = {"Start training", "Resume", "Stop", "Delete run", "Save", "Build export", "Unlock", "Evaluate with TTA"}


@pytest.fixture(autouse=True)
def _fresh_failures(monkeypatch):
    """No wrong tries remembered from another test (a server restart does the same)."""
    monkeypatch.setattr(access, "_failures", OrderedDict())
    monkeypatch.setattr(access, "_recent_wrong", deque(maxlen=access.GLOBAL_TRIES_PER_MINUTE))
    monkeypatch.delenv(access.TRUSTED_PROXY_ENV, raising=False)


@pytest.fixture
def client_ip(monkeypatch) -> dict:
    """The address the next script run's connection comes from. AppTest cannot seed
    st.context.ip_address (it reads the session's client, which AppTest mocks): set the one thing a
    real connection carries, and change `client_ip["ip"]` between runs to be another client."""
    from streamlit.runtime import context

    client = {"ip": None, "headers": []}
    monkeypatch.setattr(context, "_get_client_context", lambda: SimpleNamespace(
        remote_ip=client["ip"], headers=client["headers"], cookies={}))
    return client


def labels(at: AppTest) -> set[str]:
    return {b.label for b in at.button}


def test_the_server_listens_on_localhost_with_xsrf_protection():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["enableXsrfProtection"] is True


def test_with_a_password_pages_are_viewable_and_actions_wait_for_it(with_run, artifacts, monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)
    at = open_page("pages/train.py")
    assert widget(at.button, "Start training").disabled  # AppTest, like a browser, cannot press it
    assert "Locked: enter the lab password" in widget(at.button, "Start training").help
    assert [r.run_id for r in runs.list_runs()] == [with_run]

    widget(at.text_input, "Lab password").input("not it")
    widget(at.button, "Unlock").click().run()
    assert "Wrong password" in texts(at.error) and widget(at.button, "Start training").disabled

    widget(at.text_input, "Lab password").input(PASSWORD)
    widget(at.button, "Unlock").click().run()
    assert not at.exception
    assert not widget(at.button, "Start training").disabled  # unlocked for this session
    assert "Lock" in labels(at)

    at.switch_page("pages/runs.py").run()  # the unlock holds on every page of the session
    assert not widget(at.button, "Save").disabled
    at.checkbox[0].check().run()
    assert not widget(at.button, "Delete run").disabled


def test_a_locked_runs_page_refuses_delete_rename_and_model_downloads(with_run, artifacts, monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)
    at = open_page("pages/runs.py")
    assert widget(at.button, "Save").disabled and widget(at.button, "Build export").disabled
    assert widget(at.button, "Delete run").disabled and at.checkbox[0].disabled
    assert "Model (.keras)" not in {b.label for b in at.download_button}
    assert "History (CSV)" in {b.label for b in at.download_button}  # curves stay viewable
    assert (artifacts / "runs" / with_run).is_dir()


def test_the_password_can_come_from_streamlit_secrets(with_run, monkeypatch):
    monkeypatch.delenv(access.PASSWORD_ENV, raising=False)
    at = AppTest.from_file(str(DASHBOARD), default_timeout=60)
    at.secrets[access.PASSWORD_ENV] = PASSWORD
    at.run()
    at.switch_page("pages/train.py").run()
    assert widget(at.button, "Start training").disabled
    widget(at.text_input, "Lab password").input(PASSWORD)
    widget(at.button, "Unlock").click().run()
    assert not widget(at.button, "Start training").disabled


def test_wrong_passwords_slow_down_further_tries_from_the_same_client(monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)
    now = 1000.0
    for _ in range(access.FREE_TRIES):
        assert access.wait_before_next_try("203.0.113.7", now) == 0
        ok, message = _try(PASSWORD + "?", now)
        assert not ok and message == "Wrong password."
    ok, message = _try(PASSWORD, now + 0.5)  # even the right password waits 1 s after the third wrong one
    assert not ok and message == "Too many wrong passwords: try again in 1 s."
    ok, message = _try(PASSWORD + "?", now + 1.5)  # a fourth wrong one: the next waits 2 s
    assert not ok and message == "Wrong password."
    ok, message = _try(PASSWORD, now + 2.0)
    assert not ok and message == "Too many wrong passwords: try again in 2 s."
    ok, message = _try(PASSWORD, now + 3.6)
    assert ok and message.startswith("Unlocked")


def test_the_right_password_clears_the_clients_wrong_tries(monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)
    now = 1000.0
    for i in range(access.FREE_TRIES + 2):
        assert _try(PASSWORD + "?", now + 10 * i) == (False, "Wrong password.")
    assert access.wait_before_next_try("203.0.113.7", now + 40.5) > 0
    ok, _ = _try(PASSWORD, now + 60)  # after the wait: unlocked, and the count starts again
    assert ok and access.wait_before_next_try("203.0.113.7", now + 60) == 0
    assert _try(PASSWORD + "?", now + 61) == (False, "Wrong password.")
    assert access.wait_before_next_try("203.0.113.7", now + 61) == 0  # one wrong try, not six


def test_wrong_tries_are_forgotten_after_a_quiet_while(monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)
    now = 1000.0
    for i in range(access.FREE_TRIES + 5):  # waits up to 32 s by now
        assert _try(PASSWORD + "?", now + 100 * i) == (False, "Wrong password.")
    last = now + 100 * (access.FREE_TRIES + 4)
    assert access.wait_before_next_try("203.0.113.7", last + 1) > 0
    quiet = last + access.FORGET_SECONDS
    assert access.wait_before_next_try("203.0.113.7", quiet) == 0
    assert _try(PASSWORD + "?", quiet) == (False, "Wrong password.")
    assert access.wait_before_next_try("203.0.113.7", quiet) == 0  # counting from one again


def test_one_clients_wrong_passwords_do_not_make_another_wait(with_run, client_ip, monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)
    guesser = "198.51.100.23"
    now = time.monotonic()
    for i in range(access.FREE_TRIES + 6):  # a viewer guessing for the last quarter hour, the last just now
        assert access.try_password("guess", now - 100 * (access.FREE_TRIES + 5 - i), client=guesser)[0] is False
    client_ip["ip"] = guesser  # its own page: held back, the right password too
    at = open_page("pages/train.py")
    widget(at.text_input, "Lab password").input(PASSWORD)
    widget(at.button, "Unlock").click().run()
    assert re.search(r"Too many wrong passwords: try again in (5\d|60) s", texts(at.error))  # the clock ran on
    assert widget(at.button, "Start training").disabled

    client_ip["ip"] = "192.0.2.80"  # the owner, from elsewhere: no wait
    owner = open_page("pages/train.py")
    widget(owner.text_input, "Lab password").input(PASSWORD)
    widget(owner.button, "Unlock").click().run()
    assert not owner.exception and not owner.error, texts(owner.error)
    assert not widget(owner.button, "Start training").disabled

    client_ip["ip"] = None  # on the server's own machine (Streamlit reports no address): no wait either
    local = open_page("pages/train.py")
    widget(local.text_input, "Lab password").input(PASSWORD)
    widget(local.button, "Unlock").click().run()
    assert not local.error, texts(local.error)
    assert not widget(local.button, "Start training").disabled
    assert access.wait_before_next_try(guesser) > 50  # the guesser still waits


def _try(attempt: str, now: float, client: str = "203.0.113.7") -> tuple[bool, str]:
    """access.try_password outside a page: its session_state write needs a script context, so
    use a plain dict in its place."""
    import streamlit as st

    state = {}
    original = st.session_state
    try:
        st.session_state = state  # type: ignore[assignment]
        return access.try_password(attempt, now, client=client)
    finally:
        st.session_state = original  # type: ignore[assignment]


def test_read_only_shows_no_action_on_any_page(with_run, artifacts, monkeypatch):
    monkeypatch.setenv(access.READONLY_ENV, "1")
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)  # read-only wins over a password
    for page in PAGES:
        at = open_page(page)
        assert not (labels(at) & ACTIONS), (page, labels(at) & ACTIONS)
        assert not [t for t in at.text_input if t.label == "Lab password"]
        assert "Model (.keras)" not in {b.label for b in at.download_button}
    at = open_page("pages/train.py")
    assert "read-only" in texts(at.info)


def unlock(at: AppTest) -> None:
    widget(at.text_input, "Lab password").input(PASSWORD)
    widget(at.button, "Unlock").click().run()
    assert not at.exception and "Lock" in labels(at)


def test_a_locked_evaluate_page_starts_no_tta_and_writes_nothing_into_the_run(with_run, artifacts, monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)
    folder = artifacts / "runs" / with_run
    for name in (evaluation.PREDICTIONS_FILE, calibration.CALIBRATION_FILE):
        (folder / name).unlink(missing_ok=True)  # a run whose predictions nobody has cached yet
    st.cache_data.clear()  # ... nor this process: another test may have predicted the same model file
    before = sorted(p.name for p in folder.iterdir())

    at = open_page("pages/evaluate.py")
    assert "not computed yet" in texts(at.error) + texts(at.info)  # a viewer never predicts the test set
    assert not {"Test accuracy", "ECE", "Temperature"} & {m.label for m in at.metric}
    tta = [b for b in at.button if b.label == "Evaluate with TTA"]
    if not tta:  # the page stops before its TTA panel without predictions
        assert sorted(p.name for p in folder.iterdir()) == before
        unlock(at)
        assert (folder / evaluation.PREDICTIONS_FILE).is_file() and (folder / calibration.CALIBRATION_FILE).is_file()
        return
    tta = tta[0]
    assert tta.disabled and "Locked" in tta.help  # AppTest, like a browser, cannot press it
    assert sorted(p.name for p in folder.iterdir()) == before  # no predictions.npz, no calibration.json

    unlock(at)  # the same session, unlocked: its predictions and calibration are stored, TTA starts
    assert (folder / evaluation.PREDICTIONS_FILE).is_file() and (folder / calibration.CALIBRATION_FILE).is_file()
    widget(at.button, "Evaluate with TTA").click().run()
    wait_for(lambda: (folder / evaluation.TTA_FILE).is_file() and trainer_lock.holder() is None, 180,
             "the TTA job process to record its result")
    at.run()
    assert [m for m in at.metric if m.label.startswith("Test accuracy with TTA")]


def test_a_locked_lab_cannot_stop_a_running_job_until_unlocked(artifacts, monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)
    job = WatchedRun(jobs.start(TrainConfig(epochs=50, **QUICK)).run_id)  # a job process, as from the page
    wait_for(lambda: job.snapshot().batch > 0, 90, "the first batch")
    at = open_page("pages/train.py")
    stop = widget(at.button, "Stop")
    assert stop.disabled and "Locked" in stop.help  # AppTest, like a browser, cannot press it
    assert job.snapshot().status == "running"  # a stop request would have made it "stopping" at once
    step = (job.snapshot().epoch, job.snapshot().batch)
    wait_for(lambda: (job.snapshot().epoch, job.snapshot().batch) > step, 60, "training to go on")
    assert job.snapshot().status == "running"

    monkeypatch.setenv(access.READONLY_ENV, "1")  # a read-only lab shows no Stop at all
    viewer = open_page("pages/train.py")
    assert "Stop" not in labels(viewer) and job.snapshot().status == "running"
    monkeypatch.delenv(access.READONLY_ENV)

    unlock(at)
    widget(at.button, "Stop").click().run()
    assert job.join(60), "the job did not stop within 60 s of an unlocked Stop"
    assert job.snapshot().status == "stopped"


def test_a_locked_lab_cannot_resume_a_run_until_unlocked(with_run, monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)
    at = open_page("pages/train.py")
    resume = widget(at.button, "Resume")
    assert resume.disabled and "Locked" in resume.help  # AppTest, like a browser, cannot press it
    assert trainer_lock.holder() is None and runs.load_run(with_run).epochs_done == 1

    unlock(at)
    widget(at.number_input, "Train up to epoch").set_value(2)
    widget(at.button, "Resume").click().run()
    assert not at.exception and not at.error, texts(at.error)
    job = WatchedRun(with_run)
    assert job.join(120) and job.snapshot().status == "completed", job.snapshot().error
    assert runs.load_run(with_run).epochs_done == 2


def test_rotating_addresses_meets_a_global_ceiling_the_owner_here_does_not(monkeypatch):
    """Each new address starts with a clean back-off; all of them together get
    GLOBAL_TRIES_PER_MINUTE wrong tries a minute, after which no try is checked, the right one
    included. The server's own machine keeps its own back-off only."""
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)
    now = 1000.0
    for i in range(access.GLOBAL_TRIES_PER_MINUTE):
        assert _try(PASSWORD + "?", now + i, client=f"198.51.100.{i}") == (False, "Wrong password.")
    ok, message = _try(PASSWORD, now + 31, client="203.0.113.99")  # a fresh address, the right password
    assert not ok and message == "Too many wrong passwords on this lab: try again in 29 s."
    assert access.wait_before_next_try("203.0.113.99", now + 31) == pytest.approx(29)
    assert _try(PASSWORD, now + 31, client=access.LOCAL_CLIENT)[0]  # the owner on the server's machine
    assert _try(PASSWORD, now + 60, client="203.0.113.99")[0]  # the first wrong try is a minute old


def test_x_forwarded_for_is_believed_only_from_the_named_proxy(client_ip, monkeypatch):
    client_ip["headers"] = [("X-Forwarded-For", "6.6.6.6, 198.51.100.7")]  # as Tornado gives them
    client_ip["ip"] = None  # this machine: without the setting, one client whatever the header says
    assert access.client_key() == access.LOCAL_CLIENT
    client_ip["ip"] = "203.0.113.5"  # anyone elsewhere: the header is theirs to write
    assert access.client_key() == "203.0.113.5"
    monkeypatch.setenv(access.TRUSTED_PROXY_ENV, "127.0.0.1")  # a proxy on this machine
    assert access.client_key() == "203.0.113.5"
    client_ip["ip"] = None
    assert access.client_key() == "local for 198.51.100.7"  # the entry the proxy appended
    assert not access.on_server_machine()
    monkeypatch.setenv(access.TRUSTED_PROXY_ENV, "10.0.0.5")  # a proxy on another machine
    client_ip["ip"] = "10.0.0.5"
    assert access.client_key() == "10.0.0.5 for 198.51.100.7"
    client_ip["ip"] = None  # this machine is not that proxy
    assert access.client_key() == access.LOCAL_CLIENT
