"""Where artifacts live: `artifacts/` beside the package, or $CIFAR_ARTIFACTS_DIR."""
from __future__ import annotations

import os
from pathlib import Path

ARTIFACTS_ENV = "CIFAR_ARTIFACTS_DIR"
_DEFAULT_ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def artifacts_dir() -> Path:
    """The artifacts root, read from the environment on every call so tests can move it."""
    return Path(os.environ.get(ARTIFACTS_ENV) or _DEFAULT_ARTIFACTS).expanduser().resolve()


def runs_dir() -> Path:
    return artifacts_dir() / "runs"


def cache_dir() -> Path:
    """Decoded datasets as .npy, keyed by source path, size and modification time."""
    return artifacts_dir() / "cache"
