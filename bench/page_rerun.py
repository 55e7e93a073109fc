"""Page reruns: how long each dashboard page takes to open and to re-run in Streamlit's AppTest
with 20 runs on disk (one really trained, 19 copies of its JSON files), each page in a fresh
process so TensorFlow's import and Streamlit's caches are paid per page, as on a cold server.

Per page: the entry's first run (dashboard.py renders Home), the page's first render after
`switch_page`, then N timed reruns (`at.run()`), whether TensorFlow was imported (and from where)
and the process's peak RSS. Predict: a 512x512 noise PNG is uploaded after the first render
("action s" is that run; the reruns keep it). Browse: also clicks that change the "Show" filter
(wrong <-> all), reported as the row "browse (filter click)". "script s" is the time inside
Streamlit's script thread, so `rerun - script` is AppTest's own overhead (parsing the deltas).
`--profile PAGE ...` prints the top cumulative entries of one more rerun (script thread only).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

PAGES = ("home", "train", "evaluate", "browse", "predict", "runs")
DEFAULT_ARTIFACTS = Path("/tmp/page-bench-artifacts")  # persistent: its cache/ keeps the decoded .npy
RUN_JSON_FILES = ("config.json", "status.json", "history.json", "history.csv", "metrics.json")
UPLOAD_PIXELS = 512
PROJECT_DIRS = ("cifar_core", "cifar_ui", "pages", "dashboard.py")


# --- workers ------------------------------------------------------------------------------

def make_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Train the one real run (1 epoch) through the public API, as the Train page would."""
    from cifar_core import training
    from cifar_core.config import TrainConfig

    config = TrainConfig(epochs=1, data=spec["data"], train_subset=spec["train_subset"], test_subset=None,
                         batch_size=64)
    t = time.perf_counter()
    job = training.new_job(config).run()  # the trainer itself, in this process: the page's server trains nothing
    snap = job.snapshot()
    assert snap.status == "completed", f"training the benchmark's run ended {snap.status}: {snap.error}"
    return {"run_id": job.run_id, "job_s": time.perf_counter() - t,
            "num_test": (snap.metrics or {}).get("num_test_images"),
            "test_accuracy": (snap.metrics or {}).get("test_accuracy")}


class _TFImportWatch:
    """A meta-path finder that only records the stack of the first `import tensorflow`."""

    def __init__(self) -> None:
        self.stack: Optional[list[str]] = None

    def find_spec(self, name, path=None, target=None):  # noqa: D401 - importlib API
        if name == "tensorflow" and self.stack is None:
            frames = traceback.extract_stack()[:-1]
            repo = str(C.REPO_ROOT)
            ours = [f for f in frames if f.filename.startswith(repo) and "/bench/" not in f.filename]
            first_outside = next((f for f in frames[frames.index(ours[-1]) + 1:]
                                  if not f.filename.startswith("<")), None) if ours else None
            shown = ours[-4:] + ([first_outside] if first_outside else [])
            self.stack = [f"{_short(f.filename)}:{f.lineno} {f.name}" for f in shown]
        return None


def _short(filename: str) -> str:
    if filename.startswith(str(C.REPO_ROOT)):
        return os.path.relpath(filename, C.REPO_ROOT)
    return "/".join(Path(filename).parts[-2:])


def page_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One page in this fresh process: open it, rerun it, and (predict, browse) interact."""
    watch = _TFImportWatch()
    sys.meta_path.insert(0, watch)
    import cProfile
    import pstats

    from streamlit.testing.v1 import AppTest
    from streamlit.testing.v1 import local_script_runner as lsr

    hook: dict[str, Any] = {"profiler": None, "script_s": []}
    original = lsr.LocalScriptRunner._run_script_thread

    def timed_script_thread(self) -> None:  # each at.run() starts one script thread
        prof = hook["profiler"]
        t = time.perf_counter()
        if prof is not None:
            prof.enable()
        try:
            original(self)
        finally:
            if prof is not None:
                prof.disable()
            hook["script_s"].append(time.perf_counter() - t)

    lsr.LocalScriptRunner._run_script_thread = timed_script_thread

    page, n, timeout = spec["page"], spec["reruns"], spec["timeout"]
    path = f"pages/{page}.py"
    problems: list[str] = []

    def timed(step) -> tuple[float, float]:
        """(at.run() seconds, script-thread seconds) of one step; page exceptions are recorded."""
        hook["script_s"].clear()
        t = time.perf_counter()
        step()
        wall = time.perf_counter() - t
        for e in at.exception:
            text = f"{e.proto.type}: {e.proto.message}" + "".join(f"\n    {line}" for line in e.proto.stack_trace[-6:])
            if text not in problems:
                problems.append(text)
        return wall, sum(hook["script_s"])

    at = AppTest.from_file(str(C.REPO_ROOT / "dashboard.py"), default_timeout=timeout)
    entry_s, entry_script_s = timed(at.run)
    tf_after_entry = "tensorflow" in sys.modules
    if page == "home":
        first_s, first_script_s = entry_s, entry_script_s
    else:
        first_s, first_script_s = timed(lambda: at.switch_page(path).run())
    tf_after_first = "tensorflow" in sys.modules
    row: dict[str, Any] = {"page": page, "entry_s": entry_s if page != "home" else None, "first_s": first_s,
                           "first_script_s": first_script_s, "shown_first": _shown(at)}

    if page == "predict":
        import numpy as np
        from PIL import Image

        side = spec.get("upload_pixels", UPLOAD_PIXELS)
        files = []
        for k in range(spec.get("uploads", 1)):
            noise = np.random.default_rng(k).integers(0, 256, (side, side, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(noise).save(buf, format="PNG")
            files.append((f"photo{k}.png", buf.getvalue(), "image/png"))
        if not at.file_uploader:
            problems.append(f"{path}: no file uploader on the page (an empty state?)")
        else:
            at.file_uploader[0].set_value(files)
            row["action_s"], row["action_script_s"] = timed(at.run)
            total = sum(len(f[1]) for f in files)
            row["action"] = (f"upload {len(files)} {side}x{side} noise PNG(s) ({total / 2**20:.1f} MiB in all)")
            row["charts_after_upload"] = len(at.get("plotly_chart"))
            row["errors_after_upload"] = [e.value for e in at.error]

    walls, scripts = [], []
    for _ in range(n):
        w, s = timed(at.run)
        walls.append(w)
        scripts.append(s)
    row.update(reruns=n, rerun_median_s=C.median(walls), rerun_min_s=min(walls) if walls else None,
               script_median_s=C.median(scripts), rerun_s=walls)

    row["shown"] = _shown(at)
    rows = [row]
    if page == "browse":
        rows.append(_browse_clicks(at, timed, n, problems))

    if spec.get("profile"):
        prof = cProfile.Profile()
        hook["profiler"] = prof
        w, s = timed(at.run)
        hook["profiler"] = None
        stats = pstats.Stats(prof)
        row["profile"] = {"rerun_s": w, "script_s": s, "top_cumulative": _top_cumulative(stats, spec.get("profile_top", 10))}

    tf_at_end = "tensorflow" in sys.modules
    for r in rows:
        r.update(tf_after_entry=tf_after_entry, tf_after_first=tf_after_first, tf_at_end=tf_at_end,
                 tf_imported_by=watch.stack, peak_rss_mb=C.peak_rss_mb(), exceptions=problems,
                 errors_shown=[e.value for e in at.error], warnings_shown=[w.value for w in at.warning])
    return {"rows": rows}


def _shown(at) -> str:
    """What the last run put on the page, to check it rendered what it should."""
    counts = {"img": len(at.image), "chart": len(at.get("plotly_chart")), "table": len(at.dataframe),
              "widget": sum(len(at.get(k)) for k in ("selectbox", "radio", "button", "slider", "file_uploader",
                                                      "number_input", "multiselect", "checkbox"))}
    return ", ".join(f"{v} {k}" for k, v in counts.items() if v)


def _browse_clicks(at, timed, n: int, problems: list[str]) -> dict[str, Any]:
    """Set the 'Show' radio to 'wrong', then back and forth (all, wrong, ...): n + 1 clicks."""
    radios = [r for r in at.radio if r.label == "Show"]
    if len(radios) != 1:
        problems.append(f"pages/browse.py: expected one 'Show' radio, found {[r.label for r in at.radio]}")
        return {"page": "browse (filter click)"}
    values = ["wrong" if i % 2 == 0 else "all" for i in range(n + 1)]
    walls, scripts = [], []
    for value in values:
        w, s = timed(lambda: [r for r in at.radio if r.label == "Show"][0].set_value(value).run())
        walls.append(w)
        scripts.append(s)
    if values[-1] != "all":  # leave the default filter for a later profile
        [r for r in at.radio if r.label == "Show"][0].set_value("all").run()
    rest = walls[1:]
    return {"shown": _shown(at), "page": "browse (filter click)", "first_s": walls[0], "first_script_s": scripts[0],
            "action": "Show: All -> Wrong only (first); then Wrong <-> All", "reruns": len(rest),
            "rerun_median_s": C.median(rest), "rerun_min_s": min(rest) if rest else None,
            "script_median_s": C.median(scripts[1:]), "rerun_s": rest}


# Streamlit's frames around every script run: they only repeat the total.
_WRAPPERS = ("streamlit/testing/", "streamlit/runtime/scriptrunner/", "streamlit/navigation/page.py",
             "streamlit/runtime/metrics_util.py", "<built-in method builtins.exec>")


def _top_cumulative(stats, top: int) -> str:
    """pstats' cumulative table, Streamlit's script-runner wrappers left out, paths shortened."""
    entries = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():
        where = f"{{{func}}}" if filename == "~" else f"{filename}:{line}({func})"
        where = re.sub(r"^/\S*?/(site|dist)-packages/", "", where.replace(str(C.REPO_ROOT) + "/", ""))
        if any(w in where for w in _WRAPPERS) or (filename == "~" and "builtins.exec" in func):
            continue
        entries.append((ct, tt, nc, where))
    entries.sort(reverse=True)
    lines = [f"{'cumtime s':>10} {'tottime s':>10} {'ncalls':>8}  function"]
    lines += [f"{ct:>10.3f} {tt:>10.3f} {nc:>8}  {where}" for ct, tt, nc, where in entries[:top]]
    total = max((e[0] for e in entries), default=0.0)
    return "\n".join(lines) + f"\n(script-runner wrappers left out; largest remaining cumulative {total:.3f} s)"


# --- setup in the parent --------------------------------------------------------------------

def seed_cache(artifacts: Path, source: Path) -> int:
    """Hard-link (else copy) decoded-dataset folders from another artifacts folder's cache."""
    src = source / "cache" if (source / "cache").is_dir() else source
    dest = artifacts / "cache"
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        target = dest / folder.name
        if target.exists():
            continue
        target.mkdir()
        for f in folder.glob("*.npy"):
            try:
                os.link(f, target / f.name)
            except OSError:
                shutil.copy2(f, target / f.name)
        n += 1
    return n


def clear_runs(artifacts: Path) -> None:
    shutil.rmtree(artifacts / "runs", ignore_errors=True)


def make_copies(real: Path, count: int) -> list[str]:
    """`count` run folders holding only the real run's JSON files, each started i minutes earlier,
    under ids of new_run_id's format for that earlier time, so the real run stays the newest."""
    status = json.loads((real / "status.json").read_text())
    started = float(status["started_at"])
    ids = []
    for i in range(1, count + 1):
        shift = 60.0 * i
        run_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(started - shift)) + f"-{i:06x}"
        folder = real.parent / run_id
        folder.mkdir()
        for name in RUN_JSON_FILES:
            if (real / name).is_file():
                shutil.copy2(real / name, folder / name)
        moved = dict(status, started_at=started - shift)
        if isinstance(status.get("finished_at"), (int, float)):
            moved["finished_at"] = status["finished_at"] - shift
        (folder / "status.json").write_text(json.dumps(moved, indent=2, sort_keys=True))
        ids.append(run_id)
    return ids


# --- report ---------------------------------------------------------------------------------

COLUMNS = [
    ("page", "page"), ("entry_s", "entry s"), ("first_s", "first s"), ("action_s", "upload s"),
    ("rerun_median_s", "median rerun s"), ("rerun_min_s", "min rerun s"), ("script_median_s", "script s (median)"),
    ("tf_after_first", "TF after first"), ("tf_at_end", "TF imported"), ("peak_rss_mb", "peak RSS MB", 0),
    ("process_wall_s", "process s", 1), ("shown", "on the page after the reruns"),
]


def main(argv: Optional[list[str]] = None) -> None:
    worker = C.worker_args(argv)
    if worker is not None:
        spec, out = worker
        result = make_run(spec) if spec["kind"] == "make_run" else page_worker(spec)
        C.write_worker_result(out, result)
        return

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help=f"data source: 'synthetic' or a path; default ${C.DATA_ENV}, else synthetic")
    parser.add_argument("--artifacts", default=str(DEFAULT_ARTIFACTS),
                        help="CIFAR_ARTIFACTS_DIR to use (its runs/ is cleared before and after; cache/ is kept)")
    parser.add_argument("--cache-from", help="an artifacts (or cache) folder whose decoded .npy datasets to reuse")
    parser.add_argument("--pages", nargs="+", choices=PAGES, default=list(PAGES))
    parser.add_argument("--runs", type=int, default=20, help="run folders on disk (1 trained + copies)")
    parser.add_argument("--reruns", type=int, default=5, help="timed reruns per page")
    parser.add_argument("--train-subset", type=int, default=512)
    parser.add_argument("--uploads", type=int, default=1, help="pictures uploaded on Predict")
    parser.add_argument("--upload-pixels", type=int, default=UPLOAD_PIXELS, help="side of each noise PNG")
    parser.add_argument("--timeout", type=float, default=300.0, help="AppTest seconds per script run")
    parser.add_argument("--profile", nargs="*", choices=PAGES, default=[],
                        help="pages whose one extra rerun is cProfiled (script thread), top entries printed")
    parser.add_argument("--profile-top", type=int, default=10)
    parser.add_argument("--keep-runs", action="store_true", help="leave the run folders behind")
    parser.add_argument("--json", help="also write the rows (and the header) to this JSON file")
    parser.add_argument("--out", help="results file stem under bench/results/")
    args = parser.parse_args(argv)

    source = (args.data or os.environ.get(C.DATA_ENV) or "synthetic").strip()
    if source not in ("synthetic", "keras"):
        source = C.resolve_data(source, "page_rerun")
    os.environ[C.DATA_ENV] = source  # set before anything imports cifar_core; children inherit
    artifacts = C.use_artifacts_dir(args.artifacts)
    seeded = seed_cache(artifacts, Path(args.cache_from)) if args.cache_from else 0
    head = C.evidence("page_rerun", f"{source} (1 run trained on {args.train_subset:,} training images, 1 epoch, "
                                    f"full test set; {args.runs - 1} JSON-only copies)", {
        "setup": f"{args.runs} runs in {artifacts}/runs; each page in a fresh process: AppTest.from_file(dashboard.py)"
                 f".run(), switch_page(pages/<page>.py).run(), then {args.reruns} timed at.run()",
    })
    if args.cache_from:
        print(f"cache   : {seeded} decoded dataset folder(s) linked from {args.cache_from}", flush=True)

    clear_runs(artifacts)
    script = Path(__file__).resolve()
    t = time.perf_counter()
    made = C.run_worker(script, {"kind": "make_run", "data": source, "train_subset": args.train_subset})
    real = artifacts / "runs" / made["run_id"]
    copies = make_copies(real, args.runs - 1)
    print(f"run     : {made['run_id']} trained in {made['job_s']:.1f} s (worker {time.perf_counter() - t:.1f} s, "
          f"test images {made['num_test']}, test accuracy {C.fmt(made['test_accuracy'], 3)}); "
          f"{len(copies)} copies {copies[-1]} .. {copies[0]}", flush=True)
    on_disk = sorted(p.name for p in (artifacts / "runs").iterdir() if p.is_dir())
    print(f"runs    : {len(on_disk)} on disk, newest by id {on_disk[-1]}\n", flush=True)

    rows: list[dict[str, Any]] = []
    try:
        for page in args.pages:
            spec = {"kind": "page", "page": page, "reruns": args.reruns, "timeout": args.timeout,
                    "profile": page in args.profile, "profile_top": args.profile_top,
                    "uploads": args.uploads, "upload_pixels": args.upload_pixels}
            try:
                result = C.run_worker(script, spec, timeout=args.timeout * (args.reruns + 6))
            except Exception as exc:  # a crashed page is reported, the rest still run
                rows.append({"page": page, "exceptions": [f"worker failed: {exc}"]})
                print(f"{page}: FAILED\n{exc}\n", flush=True)
                continue
            for r in result["rows"]:
                r["process_wall_s"] = result["process_wall_s"]
                rows.append(r)
                print(f"{r['page']}: first {C.fmt(r.get('first_s'))} s, median rerun {C.fmt(r.get('rerun_median_s'))} s"
                      f"{', upload ' + C.fmt(r['action_s']) + ' s' if r.get('action_s') is not None else ''}, "
                      f"TF {C.fmt(r.get('tf_at_end'))}, peak RSS {C.fmt(r.get('peak_rss_mb'), 0)} MB", flush=True)
    finally:
        if not args.keep_runs:
            clear_runs(artifacts)
    print()
    C.print_table(rows, COLUMNS, title=f"Page runs and reruns ({args.runs} runs on disk, {args.reruns} reruns)")
    print("entry s: dashboard.py's first run (renders Home); first s: the page's first render after switch_page; "
          "upload s: the run after setting the upload; script s: time inside Streamlit's script thread "
          "(the rest of a rerun is AppTest parsing the output); TF after first: TensorFlow imported by the "
          "page's first render; process s: the whole worker process.\n")
    for r in rows:
        if r.get("tf_imported_by") and r["page"] != "browse (filter click)":
            print(f"TensorFlow first imported on {r['page']}: " + " <- ".join(reversed(r["tf_imported_by"])))
    problems = [(r["page"], e) for r in rows for e in r.get("exceptions") or []]
    problems += [(r["page"], f"st.error: {t}") for r in rows for t in r.get("errors_shown") or []
                 if r["page"] != "browse (filter click)"]
    print()
    for r in rows:
        for text in r.get("warnings_shown") or []:
            if r["page"] != "browse (filter click)":
                print(f"note    : {r['page']} shows st.warning: {text}")
    if problems:
        print("## Problems\n")
        for page, text in problems:
            print(f"- {page}: {text}")
        print()
    else:
        print("No page raised an exception or showed an error.\n")
    for r in rows:
        if r.get("profile"):
            p = r["profile"]
            print(f"## cProfile of one more rerun of {r['page']} (script thread {p['script_s']:.2f} s, "
                  f"at.run() {p['rerun_s']:.2f} s), top {args.profile_top} cumulative\n")
            print(p["top_cumulative"] + "\n")
    payload = {**head, "args": vars(args), "run": made, "runs_on_disk": len(on_disk), "rows": rows}
    C.save_results("page_rerun", payload, rows=rows, stem=args.out)
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str))
        print(f"json    : {args.json}")


if __name__ == "__main__":
    main()
