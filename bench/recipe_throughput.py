"""Raw training speed of the airbench-style network, ours (Keras/TensorFlow) vs the peer (PyTorch),
at several widths, on random data: alternating fresh processes, ratio per round.

    python bench/recipe_throughput.py --widths 16,64,64 32,128,128 64,256,256 --rounds 2 \
        --peer-python /tmp/peer/bin/python

Ours is cifar_core's model exactly as the presets build it (augmentation layers included) fed by
cifar_core.training.make_tf_dataset; the peer is bench/peer_airbench_torch.py --throughput-only.
Both time 10 steps of batch --batch-size after 2 warm-up steps (ours: after a warm-up fit).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import _common as C

STEPS = 10


def ours_worker(spec: dict, out: str) -> None:
    C.configure_tensorflow()
    import numpy as np

    from cifar_core.models import build_model
    from cifar_core.recipes.presets import preset_config
    from cifar_core.training import make_tf_dataset

    bs = spec["batch_size"]
    config = preset_config("fast", widths=tuple(spec["widths"]), batch_size=bs)
    n = bs * STEPS
    x = np.random.randint(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    y = np.random.randint(0, 10, n)
    model = build_model(config, x_train=x, steps_per_epoch=STEPS)
    ds = make_tf_dataset(x, y, bs, shuffle_seed=0)
    model.fit(ds.take(2), verbose=0)
    t0 = time.perf_counter()
    model.fit(ds, verbose=0)
    C.write_worker_result(out, {"images_per_second": n / (time.perf_counter() - t0)})


def peer(python: str, widths: list[int], batch_size: int) -> float:
    cmd = [python, str(C.BENCH_DIR / "peer_airbench_torch.py"), "--data", "-", "--throughput-only",
           "--widths", ",".join(map(str, widths)), "--batch-size", str(batch_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peer_images_per_second"]


def main() -> None:
    worker = C.worker_args()
    if worker:
        ours_worker(*worker)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", nargs="+", default=["16,64,64", "32,128,128", "64,256,256"])
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--peer-python", default="/tmp/peer/bin/python")
    ap.add_argument("--out")
    args = ap.parse_args()
    head = C.evidence("recipe_throughput: airbench-style training speed, ours vs peer", "random images",
                      {"batch": args.batch_size, "rounds": args.rounds})
    rows = []
    for w in args.widths:
        widths = [int(v) for v in w.split(",")]
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(C.run_worker(C.BENCH_DIR / "recipe_throughput.py",
                                     {"widths": widths, "batch_size": args.batch_size})["images_per_second"])
            theirs.append(peer(args.peer_python, widths, args.batch_size))
            print(f"  {w}: ours {ours[-1]:.0f} img/s, peer {theirs[-1]:.0f} img/s", flush=True)
        rows.append({"widths": w, "ours": C.median(ours), "peer": C.median(theirs),
                     "ratio": C.median([o / t for o, t in zip(ours, theirs)]), "ours_all": ours, "peer_all": theirs})
    C.print_table(rows, [("widths", "widths"), ("ours", "ours img/s", 0), ("peer", "peer img/s", 0),
                         ("ratio", "ours / peer (median of rounds)", 2)], title="Training speed, random data")
    C.save_results("recipe_throughput", {**head, "rows": rows}, rows, stem=args.out)


if __name__ == "__main__":
    sys.exit(main())
