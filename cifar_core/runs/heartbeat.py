"""Is a run's trainer on another machine still alive? Its live.json is its heartbeat."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

LIVE_FILE = "live.json"  # written by cifar_core.training.publisher every couple of seconds while a run trains
STALE_SECONDS = 60.0  # a trainer silent this long is taken for gone (validation and saving included)


def age(run_dir: Path) -> Optional[float]:
    """Seconds since the trainer last published, by the file's time; None without live.json."""
    try:
        return max(0.0, time.time() - (run_dir / LIVE_FILE).stat().st_mtime)
    except OSError:
        return None


def fresh(run_dir: Path) -> bool:
    """True while a trainer we cannot see (another host) keeps publishing. The clocks of the two
    machines and the shared storage must roughly agree (within STALE_SECONDS)."""
    seconds = age(run_dir)
    return seconds is not None and seconds < STALE_SECONDS
