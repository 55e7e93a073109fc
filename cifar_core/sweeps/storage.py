"""Where sweeps live: Optuna's journal file under `artifacts/sweeps/` (nothing to install, safe for
several worker processes, and for several machines sharing the folder), or a database URL
(`--storage`, or $CIFAR_LAB_SWEEPS) such as postgresql://user:pass@host/db for many machines."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

from cifar_core.paths import artifacts_dir

STORAGE_ENV = "CIFAR_LAB_SWEEPS"
JOURNAL_FILE = "journal.log"
DATABASE_URL = re.compile(r"^[a-z][a-z0-9+]*://", re.IGNORECASE)


class SweepError(RuntimeError):
    """A sweep that cannot be made, found or run, said in one line."""


def default_journal() -> Path:
    return artifacts_dir() / "sweeps" / JOURNAL_FILE


def describe(url: Optional[str]) -> str:
    """The storage for people, with any password masked."""
    chosen = url or os.environ.get(STORAGE_ENV) or str(default_journal())
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", chosen)


def open_storage(url: Optional[str] = None) -> Any:
    """The Optuna storage for `url` (default: $CIFAR_LAB_SWEEPS, else the journal file).

    Raises:
      SweepError: the database cannot be reached, or was written by another Optuna version.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the lab says what happens, in its own words
    chosen = url or os.environ.get(STORAGE_ENV) or ""
    if not DATABASE_URL.match(chosen):
        path = Path(chosen).expanduser() if chosen else default_journal()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
        except OSError as exc:
            raise SweepError(f"cannot use the sweep journal {path}: {exc.strerror or exc}") from None
        except Exception as exc:  # noqa: BLE001 - a journal Optuna cannot replay
            raise SweepError(f"cannot read the sweep journal {path} (written by another Optuna version?): "
                             f"{type(exc).__name__}: {exc}") from None
    try:
        return optuna.storages.RDBStorage(chosen, engine_kwargs={"pool_pre_ping": True})
    except RuntimeError as exc:  # Optuna's schema check
        raise SweepError(f"the database {describe(chosen)} was written by another Optuna version "
                         f"(this is {optuna.__version__}): {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's errors: unreachable, refused, no driver
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SweepError(f"cannot reach the sweep storage {describe(chosen)}: {reason[:300]}") from None
