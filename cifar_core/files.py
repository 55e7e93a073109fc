"""Writing a file or a folder so that a reader sees the old one or the new one, never half of one.

Every writer in the lab (run folders, the data cache, cached predictions, exports, the live feed
the browser polls) goes through `replace_atomically`: it writes under a temporary name unique to
this process, thread and call in the same folder, then renames over the target. Any number of
writers may race; the last rename wins whole. On any failure the temporary file or folder is
removed, so a full disk leaves neither half a file nor a stray temporary one.
"""
from __future__ import annotations

import os
import secrets
import shutil
import threading
from pathlib import Path
from typing import Callable


def temporary_name(path: Path) -> Path:
    """A hidden sibling of `path` no other writer uses, ending like `path` (np.save and friends
    add their suffix when it is missing)."""
    path = Path(path)
    tag = f"{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(3)}"
    return path.with_name(f".{path.stem}.{tag}.tmp{path.suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass  # the folder itself is gone; the caller's error says what went wrong first


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` (it creates a file or a folder at `tmp`), then put it in place of `path`.

    A file replaces the old one in one rename. A folder cannot be renamed over a folder that has
    files, so the old one is first renamed aside and removed after: a reader between the two
    renames finds no folder (and retries), never a mixed one.
    """
    path = Path(path)
    tmp = temporary_name(path)
    aside = None
    try:
        write(tmp)
        if tmp.is_dir() and path.is_dir():
            aside = temporary_name(path.with_name(path.name + ".old"))
            os.rename(path, aside)
        os.replace(tmp, path)
    finally:
        _remove(tmp)
        if aside is not None:
            _remove(aside)
