"""`python bench/_thread_names.py run dashboard.py ...` is `python -m streamlit run dashboard.py ...`
plus one daemon thread that writes the server's live Python threads as {native thread id:
name} to the file named by $BENCH_THREAD_NAMES, every 0.25 s when they changed (atomically). A
benchmark then splits the server's CPU (/proc/<pid>/task/<tid>/stat) into the training
thread, page-script threads, the event loop, other Python threads and native threads
(TensorFlow's pools), which Python never names. The app itself is untouched; the cost is a
thread listing four times a second and a small file write when the threads changed."""
from __future__ import annotations

import json
import os
import runpy
import sys
import threading
import time


def _dump(path: str, every: float = 0.25) -> None:
    written = None
    while True:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        if names != written:
            tmp = f"{path}.tmp"
            try:
                with open(tmp, "w") as f:
                    json.dump(names, f)
                os.replace(tmp, path)
                written = names
            except OSError:
                pass
        time.sleep(every)


if __name__ == "__main__":
    target = os.environ.get("BENCH_THREAD_NAMES")
    if target:
        threading.Thread(target=_dump, args=(target,), name="bench-thread-names", daemon=True).start()
    sys.argv = ["streamlit", *sys.argv[1:]]
    runpy.run_module("streamlit", run_name="__main__", alter_sys=True)
