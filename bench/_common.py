"""Shared benchmark plumbing: the evidence header (command, data, machine, date), data lookup,
child-process workers, fit timing, statistics, tables and result files.

Nothing here imports TensorFlow: parents stay light and every measured side runs in a fresh
child process, so its peak memory is its own.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"  # git-ignored
DEFAULT_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
UNPACK_ROOT = Path(tempfile.gettempdir()) / "cifar10-bench-data"
DEFAULT_ARTIFACTS = Path(tempfile.gettempdir()) / "bench-art"  # keeps the decoded .npy cache between runs
DATA_ENV = "CIFAR10_DATA"
ARTIFACTS_ENV = "CIFAR_ARTIFACTS_DIR"
SKIP_EXIT = 0  # a skipped benchmark is not a failure; its SKIP line says why

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `python bench/x.py` from anywhere imports cifar_core

# TensorFlow's C++ start-up chatter would bury the tables.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --- evidence: command, machine, date -----------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gb() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{head}{' (+uncommitted changes)' if dirty else ''}" if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on, read without importing TensorFlow."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "mem_total_gb": _mem_total_gb(),
        "load_avg_1_5_15": [round(v, 2) for v in os.getloadavg()],  # others share this machine
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "streamlit": _version("streamlit"),
        "python": platform.python_version(),
        "os": platform.platform(),
        "hostname": socket.gethostname(),
        "git_commit": _git_commit(),
    }


def machine_line(info: dict[str, Any]) -> str:
    return (f"{info['cpu_model']}, {info['cpu_cores']} cores ({info['cpu_cores_usable']} usable), "
            f"{info['mem_total_gb']} GB RAM, TensorFlow {info['tensorflow']} / Keras {info['keras']}, "
            f"Python {info['python']}, {info['os']}, load avg {info['load_avg_1_5_15']}")


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def command_line() -> str:
    return shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv])


def evidence(title: str, data: str, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Print and return the header every benchmark starts with."""
    info = machine_info()
    head = {"benchmark": title, "command": command_line(), "cwd": os.getcwd(), "data": data,
            "machine": info, "date": now_iso(), **(extra or {})}
    print(f"# {title}")
    print(f"command : {head['command']}")
    print(f"data    : {data}")
    print(f"machine : {machine_line(info)}")
    print(f"code    : git {info['git_commit']}")
    print(f"date    : {head['date']}")
    for k, v in (extra or {}).items():
        print(f"{k:<8}: {v}")
    print(flush=True)
    return head


# --- data and artifacts -------------------------------------------------------------------

def skip(name: str, reason: str) -> None:
    print(f"SKIP {name}: {reason}", flush=True)
    sys.exit(SKIP_EXIT)


def _image_root(folder: Path) -> Optional[Path]:
    """The folder holding train/ and test/, searching one level down."""
    for candidate in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


def resolve_data(arg: Optional[str], bench: str, allow_synthetic: bool = True) -> str:
    """The data source for a benchmark: --data, else $CIFAR10_DATA, else the shared archive.

    An archive of an image folder is unpacked once under the temp dir (cifar_core reads only
    the official python-batch archive directly). Missing data ends the benchmark with SKIP.
    """
    chosen = (arg or os.environ.get(DATA_ENV) or str(DEFAULT_ARCHIVE)).strip()
    if chosen in ("synthetic", "keras"):
        if chosen == "synthetic" and not allow_synthetic:
            skip(bench, "needs real images; synthetic data would measure nothing useful")
        return chosen
    path = Path(chosen).expanduser()
    if not path.is_absolute():
        path = (Path.cwd() / path) if (Path.cwd() / path).exists() else (REPO_ROOT / path)
    if not path.exists():
        skip(bench, f"no CIFAR-10 data at {path}. Pass --data PATH (an image folder train/|test/<class>/*.jpg, "
                    f"or its .tar.gz) or set {DATA_ENV}; the shared copy is {DEFAULT_ARCHIVE}")
    if path.is_dir():
        return str(_image_root(path) or path)
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as tar:
            names = [m.name for m in tar.getmembers()[:200]]
        if any(Path(n).name == "data_batch_1" for n in names):
            return str(path)  # the official python batches: cifar_core reads the archive itself
        target = UNPACK_ROOT / path.name.split(".")[0]
        marker = target / ".unpacked"
        if not marker.is_file():
            print(f"unpacking {path} to {target} (once) ...", flush=True)
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(path) as tar:
                tar.extractall(target, filter="data")
            marker.write_text(now_iso())
        root = _image_root(target)
        if root is None:
            skip(bench, f"{path} holds no train/ and test/ image folders")
        return str(root)
    return str(path)


def describe_data(source: str, train_subset: Optional[int], test_subset: Optional[int]) -> str:
    def n(v):
        return "all" if v is None else f"{v:,}"
    return f"{source} (train subset {n(train_subset)}, test subset {n(test_subset)})"


def use_artifacts_dir(path: Optional[str]) -> Path:
    """Point cifar_core at a scratch artifacts folder (inherited by child processes)."""
    folder = Path(path or os.environ.get("BENCH_ARTIFACTS_DIR") or DEFAULT_ARTIFACTS).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[ARTIFACTS_ENV] = str(folder)
    return folder


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help=f"image folder or its .tar.gz; default ${DATA_ENV}, else {DEFAULT_ARCHIVE}")
    parser.add_argument("--artifacts", help=f"scratch CIFAR_ARTIFACTS_DIR (default {DEFAULT_ARTIFACTS}; "
                                            f"keeps the decoded .npy cache)")
    parser.add_argument("--out", help="results file stem under bench/results/ (default: benchmark-date)")


# --- child-process workers ----------------------------------------------------------------

def run_worker(script: Path, spec: dict[str, Any], env: Optional[dict[str, str]] = None,
               timeout: Optional[float] = None) -> dict[str, Any]:
    """Run `script --worker JSON` in a fresh interpreter and return the JSON it writes."""
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, str(script), "--worker", json.dumps(spec), "--worker-out", str(out)]
    child_env = {**os.environ, **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=child_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    try:
        result = json.loads(out.read_text()) if out.stat().st_size else None
    finally:
        out.unlink(missing_ok=True)
    if proc.returncode != 0 or result is None:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"worker {spec} failed (exit {proc.returncode}):\n{tail}")
    result["process_wall_s"] = wall
    return result


def write_worker_result(path: str, result: dict[str, Any]) -> None:
    result.setdefault("peak_rss_mb", peak_rss_mb())
    Path(path).write_text(json.dumps(result, default=_jsonable))


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb(pid: Optional[int] = None) -> Optional[float]:
    """Current resident memory of a process (default: this one) from /proc."""
    try:
        for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# Fit timing and what-if patches live in _fit.py; re-exported for the scripts that use C.<name>.
from _fit import (  # noqa: E402,F401
    configure_tensorflow, cpu_seconds, instrument_fit, patch_build_model, patch_tf_dataset_autotune_off, make_fit_timer,
)


# --- statistics and tables ----------------------------------------------------------------

def median(values: Iterable[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """Linear-interpolated percentile, q in 0..100."""
    vals = sorted(values)
    if not vals:
        return None
    k = (len(vals) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple], title: str = "",
                digits: int = 2) -> str:
    """A Markdown table (pastes into BENCHMARKS.md); columns are (key, header[, digits])."""
    cols = [(c[0], c[1], c[2] if len(c) > 2 else digits) for c in columns]
    cells = [[fmt(r.get(k), d) for k, _, d in cols] for r in rows]
    heads = [h for _, h, _ in cols]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(heads)]
    lines = []
    if title:
        lines += [f"## {title}", ""]
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        lines.append("| " + " | ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(c, widths)) + " |")
    text = "\n".join(lines)
    print(text + "\n", flush=True)
    return text


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "").replace("-", "").replace("+", "").replace("%", "").replace("x", "").isdigit()


def save_results(name: str, payload: dict[str, Any], rows: Optional[Sequence[dict[str, Any]]] = None,
                 stem: Optional[str] = None) -> Path:
    """bench/results/<stem>.json (everything) and .csv (the flat rows), never committed."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = stem or f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = RESULTS_DIR / f"{stem}.json"
    path.write_text(json.dumps(payload, indent=2, default=_jsonable))
    if rows:
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys and not isinstance(r[k], (dict, list))]
        with open(RESULTS_DIR / f"{stem}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    print(f"results : {path}" + (f" (+ {path.with_suffix('.csv').name})" if rows else ""), flush=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_args(argv: Optional[Sequence[str]] = None) -> Optional[tuple[dict[str, Any], str]]:
    """(spec, out path) when this process was started by `run_worker`, else None."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--worker" not in argv:
        return None
    spec = json.loads(argv[argv.index("--worker") + 1])
    out = argv[argv.index("--worker-out") + 1]
    return spec, out
