"""Sharing the lab safely: it listens on localhost, a password guards every action while every
page stays viewable, wrong passwords slow down further tries, and read-only shows no action."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cifar_core import runs
from cifar_ui import access

from test_pages import DASHBOARD, PAGES, open_page, texts, widget

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret lab"
ACTIONS = {"Start training", "Resume", "Stop", "Delete run", "Save", "Build export", "Unlock"}


@pytest.fixture(autouse=True)
def _fresh_failures():
    access.reset_failures()
    yield
    access.reset_failures()


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


def test_wrong_passwords_slow_down_further_tries_for_every_session(monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)
    now = 1000.0
    for _ in range(access.FREE_TRIES):
        assert access.wait_before_next_try(now) == 0
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


def _try(attempt: str, now: float) -> tuple[bool, str]:
    """access.try_password outside a page: its session_state write needs a script context, so
    use a plain dict in its place."""
    import streamlit as st

    state = {}
    original = st.session_state
    try:
        st.session_state = state  # type: ignore[assignment]
        return access.try_password(attempt, now)
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
