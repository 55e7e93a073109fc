"""Who may change the lab: the one place the dashboard's access rules live.

- Neither setting: a local lab; everyone who reaches it may act (the server listens on
  127.0.0.1 unless started with `--server.address`).
- `CIFAR_LAB_PASSWORD` (environment, or `.streamlit/secrets.toml`): every page stays viewable;
  actions that change state (Start, Stop, Resume, Delete, editing a run's name, tags and notes,
  building or downloading a model export) ask for the password once per browser session.
  Wrong tries slow down further tries, for every session of the server.
- `CIFAR_LAB_READONLY=1`: a public viewer; no action is shown at all, password or not.

The CLI is unaffected: it runs as the user. Pages ask `can_act()` and show `locked_reason()`.
"""
from __future__ import annotations

import hmac
import math
import os
import threading
import time
from typing import Optional

import streamlit as st

PASSWORD_ENV = "CIFAR_LAB_PASSWORD"
READONLY_ENV = "CIFAR_LAB_READONLY"
UNLOCKED_KEY = "cifar_lab_unlocked"
FREE_TRIES = 3  # wrong passwords before each further try must wait
MAX_WAIT_SECONDS = 60.0

_failures = {"count": 0, "last": 0.0}  # server-wide: a new browser session does not reset it
_failures_lock = threading.Lock()


def read_only() -> bool:
    return os.environ.get(READONLY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def lab_password() -> Optional[str]:
    """The password from the environment, else from Streamlit's secrets; None when unset."""
    value = os.environ.get(PASSWORD_ENV)
    if not value:
        try:
            value = st.secrets.get(PASSWORD_ENV)
        except Exception:  # noqa: BLE001 - no secrets.toml at all raises; a garbled one too
            value = None
    return str(value) if value else None


def can_act() -> bool:
    """May this browser session change the lab's state?"""
    if read_only():
        return False
    return lab_password() is None or bool(st.session_state.get(UNLOCKED_KEY))


def locked_reason() -> str:
    """Why actions are unavailable, for a help text or caption ('' when they are available)."""
    if read_only():
        return "This lab is read-only."
    if not can_act():
        return "Locked: enter the lab password in the sidebar to train, stop, delete or edit runs."
    return ""


def wait_before_next_try(now: Optional[float] = None) -> float:
    """Seconds a password try must still wait: none until FREE_TRIES wrong ones, then 1 s after
    the last wrong one, doubling with each further wrong try, at most MAX_WAIT_SECONDS."""
    now = time.monotonic() if now is None else now
    with _failures_lock:
        extra = _failures["count"] - FREE_TRIES
        if extra < 0:
            return 0.0
        wait = min(MAX_WAIT_SECONDS, 2.0 ** extra)
        return max(0.0, _failures["last"] + wait - now)


def try_password(attempt: str, now: Optional[float] = None) -> tuple[bool, str]:
    """Check `attempt` (constant-time); unlock this session when it is right.

    Returns (unlocked, message for people)."""
    password = lab_password()
    if password is None:
        return True, "No password is set: everyone may act."
    now = time.monotonic() if now is None else now
    wait = wait_before_next_try(now)
    if wait > 0:
        return False, f"Too many wrong passwords: try again in {math.ceil(wait)} s."
    if hmac.compare_digest(attempt.encode("utf-8"), password.encode("utf-8")):
        st.session_state[UNLOCKED_KEY] = True
        return True, "Unlocked for this browser session."
    with _failures_lock:
        _failures["count"] += 1
        _failures["last"] = now
    return False, "Wrong password."


def reset_failures() -> None:
    """Forget wrong tries (tests; a server restart does the same)."""
    with _failures_lock:
        _failures.update(count=0, last=0.0)


def sidebar() -> None:
    """The lock in the sidebar: the password form while locked, a Lock button once unlocked."""
    if read_only():
        st.sidebar.caption(":material/visibility: Read-only lab: viewing only.")
        return
    if lab_password() is None:
        return
    if st.session_state.get(UNLOCKED_KEY):
        st.sidebar.caption(":material/lock_open: Actions unlocked for this session.")
        if st.sidebar.button("Lock", icon=":material/lock:"):
            st.session_state.pop(UNLOCKED_KEY, None)
            st.rerun()
        return
    with st.sidebar.form("cifar-lab-unlock", border=False):
        st.caption(":material/lock: Viewing is open; training, stopping, deleting and editing need the password.")
        attempt = st.text_input("Lab password", type="password")
        if st.form_submit_button("Unlock"):
            ok, message = try_password(attempt)
            if ok:
                st.rerun()
            st.error(message, icon=":material/error:")
