"""Who may change the lab: the one place the dashboard's access rules live.

- Neither setting: a local lab; everyone who reaches it may act (the server listens on
  127.0.0.1 unless started with `--server.address`).
- `CIFAR_LAB_PASSWORD` (environment, or `.streamlit/secrets.toml`): every page stays viewable;
  actions that change state or start heavy work (Start, Stop, Resume, Delete, editing a run's
  name, tags and notes, evaluating with TTA, building or downloading a model export) ask for the
  password once per browser session; a session that may not act writes nothing into a run folder.
  Wrong tries slow down further tries from the same client (its IP address), are forgotten
  after a quiet while, and are cleared by the right password; all clients together get at most
  GLOBAL_TRIES_PER_MINUTE wrong tries a minute (the server's own machine is exempt).
- `CIFAR_LAB_READONLY=1`: a public viewer; no action is shown at all, password or not.
- `CIFAR_LAB_TRUSTED_PROXY`: the address(es) of a reverse proxy; only a connection from one of
  them has its `X-Forwarded-For` believed.

Whoever may not act is a viewer: it picks only the lab's own data sources, starts no heavy work,
and sees no server internals (absolute paths, the host name): only the owner, able to act on the
server's own machine, does (`sees_internals()`). The CLI is unaffected: it runs as the user. Pages
ask `can_act()` and show `locked_reason()`.
"""
from __future__ import annotations

import hmac
import math
import os
import threading
import time
from collections import OrderedDict, deque
from typing import Optional

import streamlit as st

PASSWORD_ENV = "CIFAR_LAB_PASSWORD"
READONLY_ENV = "CIFAR_LAB_READONLY"
TRUSTED_PROXY_ENV = "CIFAR_LAB_TRUSTED_PROXY"  # comma-separated addresses whose X-Forwarded-For is believed
UNLOCKED_KEY = "cifar_lab_unlocked"
FREE_TRIES = 3  # wrong passwords before each further try must wait
MAX_WAIT_SECONDS = 60.0
FORGET_SECONDS = 15 * 60.0  # a client's wrong tries are forgotten this long after its last one
MAX_CLIENTS = 10_000  # clients remembered at once (the longest quiet forgotten first): bounded memory
LOCAL_CLIENT = "local"  # connections from this machine, for which Streamlit reports no address
LOOPBACK = ("127.0.0.1", "::1", "localhost")  # how a proxy on this machine is named in TRUSTED_PROXY_ENV
# Wrong tries a minute from all clients together: rotating addresses resets each one's back-off,
# not this. The server's own machine is exempt, so guessers elsewhere cannot lock the owner out there.
GLOBAL_TRIES_PER_MINUTE = 30
GLOBAL_WINDOW_SECONDS = 60.0

# Keyed by client, not by session: a new browser session must not start afresh, but one client's
# wrong guesses must not make another wait. client -> (wrong tries, time.monotonic() of the last),
# ordered from the longest quiet to the latest.
_failures: "OrderedDict[str, tuple[int, float]]" = OrderedDict()
_failures_lock = threading.Lock()
# time.monotonic() of the latest wrong tries of every client (bounded: only the ceiling's worth matter).
_recent_wrong: "deque[float]" = deque(maxlen=GLOBAL_TRIES_PER_MINUTE)


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


def trusted_proxies() -> frozenset[str]:
    """The addresses named in CIFAR_LAB_TRUSTED_PROXY (empty: X-Forwarded-For is never believed)."""
    return frozenset(a.strip() for a in os.environ.get(TRUSTED_PROXY_ENV, "").split(",") if a.strip())


def client_key() -> str:
    """Who is trying a password, for the back-off: the connection's IP address
    (`st.context.ip_address`; Streamlit reports none for a connection from this machine, the owner's).
    Only a connection from a proxy named in CIFAR_LAB_TRUSTED_PROXY is taken to speak for another
    client: the last X-Forwarded-For entry names it (the one the proxy appended; a client can only
    prepend). Anyone else can write that header, so it is ignored otherwise."""
    try:
        ip = st.context.ip_address
    except Exception:  # noqa: BLE001 - outside a served page (a script, a test) there is no connection
        ip = None
    ip = ip if isinstance(ip, str) and ip else None
    proxies = trusted_proxies()
    from_proxy = ip in proxies if ip else bool(proxies & set(LOOPBACK))
    try:
        forwarded = st.context.headers.get("X-Forwarded-For") if from_proxy else None
    except Exception:  # noqa: BLE001 - no request headers outside a served page
        forwarded = None
    if from_proxy and isinstance(forwarded, str) and forwarded.split(",")[-1].strip():
        return f"{ip or LOCAL_CLIENT} for {forwarded.split(',')[-1].strip()}"
    return ip or LOCAL_CLIENT


def on_server_machine() -> bool:
    """Does this session's connection come from the server's own machine (not through a trusted proxy)?"""
    return client_key() == LOCAL_CLIENT


def sees_internals() -> bool:
    """May this session see the server's internals (absolute paths, the host name)? Only the owner:
    able to act, on the server's own machine. Everyone else sees names inside the artifacts or
    data folder, or nothing."""
    return can_act() and on_server_machine()


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
    1 s after the last wrong one, doubling with each further wrong try, at most MAX_WAIT_SECONDS;
    or, from elsewhere than the server's machine, until the lab is under its global ceiling again."""
    now = time.monotonic() if now is None else now
    with _failures_lock:
        return max(_wait_locked(client, now), _global_wait_locked(client, now))


def _wait_locked(client: str, now: float) -> float:
    """The client's own back-off, with the lock held."""
    count, last = _recent_failures(client, now)
    extra = count - FREE_TRIES
    if extra < 0:
        return 0.0
    return max(0.0, last + min(MAX_WAIT_SECONDS, 2.0 ** extra) - now)


def _global_wait_locked(client: str, now: float) -> float:
    """Seconds until the lab's wrong tries of the last minute are under GLOBAL_TRIES_PER_MINUTE
    (0 for the server's own machine), with the lock held."""
    if client == LOCAL_CLIENT or len(_recent_wrong) < GLOBAL_TRIES_PER_MINUTE:
        return 0.0
    return max(0.0, _recent_wrong[0] + GLOBAL_WINDOW_SECONDS - now)


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
        wait = _global_wait_locked(client, now)
        if wait > 0:  # many clients guessing: nobody's try is checked (a check is a guess)
            return False, f"Too many wrong passwords on this lab: try again in {math.ceil(wait)} s."
        count, _ = _failures.pop(client, (0, 0.0))
        right = hmac.compare_digest(attempt.encode("utf-8"), password.encode("utf-8"))
        if not right:
            _failures[client] = (count + 1, now)  # now the latest: the last to be forgotten
            _recent_wrong.append(now)
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
