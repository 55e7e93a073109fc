"""Near-duplicates between CIFAR-10's training and test images (cifar_core/data/duplicates.py):
the search's time on the full set, how many test images have a near-copy at each threshold, a
contact sheet of sampled pairs per distance band (written outside the repository, to look at),
and, for runs given by --run, test accuracy with and without the near-duplicates.

  python bench/near_duplicates.py --data /tmp/cifar/cifar10-jpeg --artifacts /tmp/budget-art \
      --run RUN_ID --sheet /tmp/near-duplicates.png
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

THRESHOLDS = (0.01, 0.02, 0.03, 0.05, 0.08, 0.1)
BANDS = ((0.0, 0.02), (0.02, 0.03), (0.03, 0.05), (0.05, 0.08), (0.08, 0.12))
PAIRS_PER_BAND = 12


def contact_sheet(path: Path, x_train, x_test, found) -> None:
    from PIL import Image, ImageDraw

    side, gap = 64, 8
    sheet = Image.new("RGB", (PAIRS_PER_BAND * (2 * side + gap), len(BANDS) * (side + 16)), "white")
    draw = ImageDraw.Draw(sheet)
    rng = np.random.default_rng(0)
    for row, (lo, hi) in enumerate(BANDS):
        band = np.flatnonzero((found.distance > lo) & (found.distance <= hi) if lo else found.distance <= hi)
        picked = rng.choice(band, size=min(PAIRS_PER_BAND, len(band)), replace=False)
        y = row * (side + 16)
        draw.text((2, y), f"distance {lo}-{hi}: {len(band)} pairs", fill="black")
        for k, i in enumerate(picked):
            train = x_train[found.index[i]]
            sheet.paste(Image.fromarray(x_test[i]).resize((side, side)), (k * (2 * side + gap), y + 12))
            sheet.paste(Image.fromarray(train[:, ::-1] if found.flipped[i] else train).resize((side, side)),
                        (k * (2 * side + gap) + side, y + 12))
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(parser)
    parser.add_argument("--run", action="append", default=[], help="a run id whose accuracy to split (repeatable)")
    parser.add_argument("--sheet", help="write a contact sheet of sampled pairs here (a PNG outside the repo)")
    args = parser.parse_args()
    source = C.resolve_data(args.data, "near_duplicates", allow_synthetic=False)
    C.use_artifacts_dir(args.artifacts)
    head = C.evidence("near-duplicates between train and test", C.describe_data(source, None, None))

    from cifar_core.data import get_dataset
    from cifar_core.data.duplicates import DEFAULT_THRESHOLD, accuracy_split, nearest_train

    d = get_dataset(source)
    t0 = time.perf_counter()
    found = nearest_train(d.x_train, d.x_test)
    seconds = time.perf_counter() - t0
    print(f"search: {len(d.x_test):,} test x {len(d.x_train):,} training images in {seconds:.1f} s\n")
    rows = []
    for threshold in THRESHOLDS:
        below = found.below(threshold)
        rows.append({"threshold": threshold, "test images": int(below.sum()), "share": float(below.mean()),
                     "same label": int((below & (d.y_train[found.index] == d.y_test)).sum()),
                     "mirrored": int((below & found.flipped).sum())})
    C.print_table(rows, [("threshold", "threshold", 3), ("test images", "test images"), ("share", "share", 4),
                         ("same label", "same label"), ("mirrored", "mirrored")],
                  title=f"test images with a near-duplicate (recommended threshold {DEFAULT_THRESHOLD})")
    for run_id in args.run:
        from cifar_core import runs

        run = runs.load_run(run_id)
        with np.load(run.path / "predictions.npz", allow_pickle=False) as f:
            probabilities, labels = f["probabilities"], f["labels"]
        if not np.array_equal(labels, d.y_test):
            print(f"run {run_id}: its predictions are not for this test split; skipped")
            continue
        split = accuracy_split(probabilities.argmax(axis=1) == labels, found.below(DEFAULT_THRESHOLD))
        print(f"run {run_id} at {DEFAULT_THRESHOLD}: all {split['all']:.4f}; with a near-duplicate "
              f"{split['with']} ({split['with_count']}); without {split['without']:.4f} ({split['without_count']})")
    if args.sheet:
        contact_sheet(Path(args.sheet), d.x_train, d.x_test, found)
        print(f"contact sheet: {args.sheet}")
    C.save_results("near-duplicates", {**head, "seconds": seconds, "rows": rows}, rows, stem=args.out)


if __name__ == "__main__":
    main()
