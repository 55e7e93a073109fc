"""Who may change the lab: the one place the dashboard's access rules live.

- Neither setting: a local lab; everyone who reaches it may act (the server listens on
  127.0.0.1 unless started with `--server.address`).
- `CIFAR_LAB_PASSWORD` (environment, or `.streamlit/secrets.toml`): every page stays viewable;
  actions that change state or start heavy work (Start, Stop, Resume, Delete, editing a run's
  name, tags and notes, evaluating with TTA, building or downloading a model export) ask for the
  password once per browser session; a session that may not act writes nothing into a run folder.
  Wrong tries slow down further tries from the same client (its IP address), are forgotten
  after a quiet while, and are cleared by the right password.
- `CIFAR_LAB_READONLY=1`: a public viewer; no action is shown at all, password or not.

The CLI is unaffected: it runs as the user. Pages ask `can_act()` and show `locked_reason()`.
"""
from __future__ import annotations

import hmac
import math
import os
import threading
import time
from collections import OrderedDict
from typing import Optional

import streamlit as st

PASSWORD_ENV = "CIFAR_LAB_PASSWORD"
READONLY_ENV = "CIFAR_LAB_READONLY"
UNLOCKED_KEY = "cifar_lab_unlocked"
FREE_TRIES = 3  # wrong passwords before each further try must wait
MAX_WAIT_SECONDS = 60.0
FORGET_SECONDS = 15 * 60.0  # a client's wrong tries are forgotten this long after its last one
MAX_CLIENTS = 10_000  # clients remembered at once (the longest quiet forgotten first): bounded memory
LOCAL_CLIENT = "local"  # connections from this machine, for which Streamlit reports no address

# Keyed by client, not by session: a new browser session must not start afresh, but one client's
# wrong guesses must not make another wait. client -> (wrong tries, time.monotonic() of the last),
# ordered from the longest quiet to the latest.
_failures: "OrderedDict[str, tuple[int, float]]" = OrderedDict()
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
        return "Locked: enter the lab password in the sidebar to train, stop, evaluate, delete or edit runs."
    return ""


def client_key() -> str:
    """Who is trying a password, for the back-off: the connection's IP address
    (`st.context.ip_address`). Streamlit reports none for a connection from this machine: that is
    the owner, or a reverse proxy on it, whose X-Forwarded-For then names the client in its last
    entry (the one the proxy appended; a client can only prepend to it)."""
    try:
        ip = st.context.ip_address
        forwarded = None if isinstance(ip, str) and ip else st.context.headers.get("X-Forwarded-For")
    except Exception:  # noqa: BLE001 - outside a served page (a script, a test) there is no connection
        ip = forwarded = None
    if isinstance(ip, str) and ip:
        return ip
    if isinstance(forwarded, str) and forwarded.strip():
        return f"{LOCAL_CLIENT} for {forwarded.split(',')[-1].strip()}"
    return LOCAL_CLIENT


def _recent_failures(client: str, now: float) -> tuple[int, float]:
    """(wrong tries, time of the last) of `client`, forgetting every client quiet for FORGET_SECONDS.
    Call with the lock held."""
    while _failures:
        oldest, (_, last) = next(iter(_failures.items()))
        if now - last < FORGET_SECONDS and len(_failures) <= MAX_CLIENTS:
            break
        del _failures[oldest]
    return _failures.get(client, (0, 0.0))


def wait_before_next_try(client: str, now: Optional[float] = None) -> float:
    """Seconds `client`'s next password try must still wait: none until FREE_TRIES wrong ones, then
    1 s after the last wrong one, doubling with each further wrong try, at most MAX_WAIT_SECONDS."""
    now = time.monotonic() if now is None else now
    with _failures_lock:
        return _wait_locked(client, now)


def _wait_locked(client: str, now: float) -> float:
    """wait_before_next_try with the lock held."""
    count, last = _recent_failures(client, now)
    extra = count - FREE_TRIES
    if extra < 0:
        return 0.0
    return max(0.0, last + min(MAX_WAIT_SECONDS, 2.0 ** extra) - now)


def try_password(attempt: str, now: Optional[float] = None, client: Optional[str] = None) -> tuple[bool, str]:
    """Check `attempt` (constant-time) from `client` (`client_key()` when None); unlock this
    session and forget the client's wrong tries when it is right.

    Returns (unlocked, message for people)."""
    password = lab_password()
    if password is None:
        return True, "No password is set: everyone may act."
    now = time.monotonic() if now is None else now
    client = client_key() if client is None else client
    with _failures_lock:  # one try at a time: many sessions of one client cannot try in parallel
        wait = _wait_locked(client, now)
        if wait > 0:
            return False, f"Too many wrong passwords: try again in {math.ceil(wait)} s."
        count, _ = _failures.pop(client, (0, 0.0))
        right = hmac.compare_digest(attempt.encode("utf-8"), password.encode("utf-8"))
        if not right:
            _failures[client] = (count + 1, now)  # now the latest: the last to be forgotten
    if not right:
        return False, "Wrong password."
    st.session_state[UNLOCKED_KEY] = True
    return True, "Unlocked for this browser session."


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
