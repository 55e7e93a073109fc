"""The run report: one self-contained HTML file with what the assignment's write-up holds.

Name, config and where it trained; loss and accuracy over epochs; the observations the
assignment's author wrote by hand, computed (best epoch, where validation loss turns up, the
train/validation gap, plateau); test accuracy and loss; the first four test images with predicted
and true names; the confusion matrix and per-class scores; calibration; the worst mistakes as
thumbnails. Charts are inline SVG and images inline PNG (data: URIs): it opens offline, with no
script, stylesheet or font fetched from anywhere.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from cifar_core import runs
from cifar_core.data import CLASS_NAMES
from cifar_core.files import replace_atomically
from cifar_core.insight import calibration, evaluation

WORST_MISTAKES = 16
FIRST_IMAGES = 4
REPORT_FILE = "report.html"


class ReportError(RuntimeError):
    """The report cannot be made or written; the message says why in one line."""


# --- the pieces ----------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: Optional[float], digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}%}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def png_data_uri(image: np.ndarray, scale: int = 3) -> str:
    """A uint8 (H, W, 3) image as an inline PNG, each pixel a scale x scale square."""
    from PIL import Image

    big = np.asarray(image, np.uint8).repeat(scale, axis=0).repeat(scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def svg_lines(title: str, series: Sequence[tuple[str, Sequence[float], str]], x_label: str = "epoch",
              y_range: Optional[tuple[float, float]] = None, width: int = 460, height: int = 260) -> str:
    """A small line chart: (name, values by epoch 1..n, colour) per series, NaN as gaps."""
    left, right, top, bottom = 48, 12, 28, 36
    values = [v for _, ys, _ in series for v in ys if v is not None and math.isfinite(v)]
    n = max((len(ys) for _, ys, _ in series), default=0)
    if not values or n == 0:
        return f'<svg width="{width}" height="{height}" role="img"><text x="10" y="20">{_e(title)}: no data</text></svg>'
    lo, hi = y_range or (min(values), max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    w, h = width - left - right, height - top - bottom

    def x(i: int) -> float:
        return left + (w * (i / (n - 1)) if n > 1 else w / 2)

    def y(v: float) -> float:
        return top + h * (1 - (v - lo) / (hi - lo))

    parts = [f'<svg width="{width}" height="{height}" role="img" '
             f'aria-label="{_e(title)}">',
             f'<text x="{left}" y="16" font-size="13" font-weight="bold">{_e(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        parts.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">{v:.3g}</text>')
    for i in sorted({0, n - 1, *range(0, n, max(1, n // 8))}):
        parts.append(f'<text x="{x(i):.1f}" y="{top + h + 14}" font-size="10" text-anchor="middle">{i + 1}</text>')
    parts.append(f'<text x="{left + w / 2}" y="{height - 4}" font-size="11" text-anchor="middle">{_e(x_label)}</text>')
    for k, (name, ys, colour) in enumerate(series):
        runs_of_points, current = [], []
        for i, v in enumerate(ys):
            if v is None or not math.isfinite(v):
                if current:
                    runs_of_points.append(current)
                current = []
            else:
                current.append(f"{x(i):.1f},{y(v):.1f}")
        if current:
            runs_of_points.append(current)
        for points in runs_of_points:
            if len(points) == 1:
                cx, cy = points[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
            else:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(points)}"/>')
        parts.append(f'<text x="{left + w - 4}" y="{top + 14 + 13 * k}" font-size="11" text-anchor="end" '
                     f'fill="{colour}">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_reliability(bins: Sequence[dict[str, Any]], title: str, size: int = 260) -> str:
    """Confidence against accuracy per bin; the diagonal is perfect calibration."""
    pad = 36
    s = size - 2 * pad
    parts = [f'<svg width="{size}" height="{size}" role="img" aria-label="{_e(title)}">',
             f'<text x="{pad}" y="16" font-size="13" font-weight="bold">{_e(title)}</text>',
             f'<rect x="{pad}" y="{pad}" width="{s}" height="{s}" fill="none" stroke="#ccc"/>',
             f'<line x1="{pad}" y1="{pad + s}" x2="{pad + s}" y2="{pad}" stroke="#999" stroke-dasharray="4 3"/>']
    for b in bins:
        if not b.get("count"):
            continue
        lo, hi, acc = float(b["lower"]), float(b["upper"]), float(b["accuracy"])
        parts.append(f'<rect x="{pad + lo * s:.1f}" y="{pad + (1 - acc) * s:.1f}" width="{(hi - lo) * s:.1f}" '
                     f'height="{acc * s:.1f}" fill="#1f77b4" fill-opacity="0.6" stroke="white"/>')
    parts.append(f'<text x="{pad + s / 2}" y="{size - 6}" font-size="11" text-anchor="middle">confidence</text>')
    parts.append(f'<text x="10" y="{pad + s / 2}" font-size="11" transform="rotate(-90 10 {pad + s / 2})" '
                 f'text-anchor="middle">accuracy</text></svg>')
    return "".join(parts)


def confusion_table(cm: np.ndarray) -> str:
    """Rows are true classes, columns predicted; each cell shaded by its share of the row."""
    head = "".join(f"<th>{_e(n[:5])}</th>" for n in CLASS_NAMES)
    rows = []
    for t, name in enumerate(CLASS_NAMES):
        total = max(1, int(cm[t].sum()))
        cells = []
        for p in range(len(CLASS_NAMES)):
            share = cm[t, p] / total
            colour = f"rgba(31,119,180,{share:.2f})" if t == p else f"rgba(214,39,40,{min(1.0, 3 * share):.2f})"
            cells.append(f'<td style="background:{colour}">{int(cm[t, p])}</td>')
        rows.append(f"<tr><th>{_e(name)}</th>{''.join(cells)}</tr>")
    return f'<table class="cm"><tr><th>true \\ predicted</th>{head}</tr>{"".join(rows)}</table>'


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """columns: (key, header, format: 'pct' | 'int' | 'text' | 'num')."""
    def cell(value: Any, kind: str) -> str:
        if kind == "pct":
            return _pct(value)
        if kind == "int":
            return f"{int(value):,}"
        if kind == "num":
            return "–" if value is None else f"{value:.4g}"
        return _e(value)
    head = "".join(f"<th>{_e(h)}</th>" for _, h, _ in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(k), kind)}</td>" for k, _, kind in columns) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(image: np.ndarray, caption: str, good: Optional[bool] = None) -> str:
    colour = "" if good is None else (' style="color:#2ca02c"' if good else ' style="color:#d62728"')
    return (f'<figure><img src="{png_data_uri(image)}" width="96" height="96" alt="{_e(caption)}">'
            f"<figcaption{colour}>{caption}</figcaption></figure>")


def _key_values(values: dict[str, Any], redact: Callable[[str], str] = str) -> str:
    cells = [f"<tr><th>{_e(k)}</th><td>{_e(redact(str(v if not isinstance(v, (list, tuple)) else '/'.join(map(str, v)))))}"
             f"</td></tr>" for k, v in values.items()]
    half = (len(cells) + 1) // 2
    return (f"<div class='figures'><table class='kv'>{''.join(cells[:half])}</table>"
            f"<table class='kv'>{''.join(cells[half:])}</table></div>")


def _where_trained(run: runs.Run) -> dict[str, Any]:
    """Host, precision, distribution and a time budget's plan and outcome, as recorded."""
    try:
        status = runs.read_status(run.path) or {}
    except (OSError, ValueError, runs.RunError):
        status = {}
    out: dict[str, Any] = {}
    if status.get("host"):
        out["host"] = status["host"]
    precision = status.get("precision")
    if isinstance(precision, dict) and precision.get("used"):
        out["precision used"] = f"{precision['used']} ({precision.get('why', '')})"
    dist = run.distribution or {}
    if dist:
        out["strategy"] = f"{dist.get('strategy')} ({dist.get('replicas')} replica(s), {dist.get('workers')} worker(s))"
    if run.duration_seconds is not None:
        out["wall time"] = f"{run.duration_seconds / 60:.1f} min"
    seconds = run.history.get("train_seconds") or []
    if seconds:
        out["training time"] = f"{seconds[-1] / 60:.1f} min"
    plan = run.plan or {}
    if plan.get("budget_seconds"):
        chosen, outcome = plan.get("chosen") or {}, plan.get("outcome") or {}
        out["time budget"] = f"{plan['budget_seconds'] / 60:g} min: {chosen.get('label', '?')}, {chosen.get('epochs', '?')} epochs"
        if outcome.get("train_seconds") is not None:
            over = outcome.get("over_budget")
            out["budget outcome"] = (f"{outcome['train_seconds']:.0f} s of training"
                                     + (f" ({over:+.1%} against the budget)" if over is not None else ""))
    return out


# --- the report ----------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 980px;
       color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th { background: #f6f6f6; }
table.cm td { min-width: 2.6em; text-align: center; }
table.kv th { text-align: left; } table.kv td { text-align: left; max-width: 26em; overflow-wrap: anywhere; }
.figures { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; text-align: center; font-size: 0.85em; width: 120px; }
img { image-rendering: pixelated; }
.metrics span { display: inline-block; margin-right: 2em; font-size: 1.3em; }
.muted { color: #666; font-size: 0.9em; }
"""


def build_report(run_id: str, preds: Optional[evaluation.TestPredictions] = None,
                 redact: Optional[Callable[[str], str]] = None) -> str:
    """The HTML report of a run. `preds`: its test predictions when the caller has them; else the
    run's cached ones, or made once with its saved model (kept beside the run like any evaluation).
    `redact`: for a copy a viewer gets; every config value passes through it (the dashboard's
    turns absolute paths into names inside the artifacts or data folder) and the host is left out.

    Raises:
      ReportError: the run cannot be read, has no model and no predictions, or its test images
        cannot be read.
    """
    try:
        run = runs.load_run(run_id)
    except runs.RunError as exc:
        raise ReportError(str(exc)) from None
    if run.broken or run.config is None:
        raise ReportError(f"run {run_id} is broken ({run.broken}); no report")
    try:
        preds = preds if preds is not None else evaluation.test_predictions(run)
        data = evaluation.run_test_data(run)
    except (runs.RunError, OSError, ValueError) as exc:
        raise ReportError(f"run {run_id}: {exc}") from None
    if len(preds.labels) != len(data.y_test) or not np.array_equal(preds.labels, data.y_test):
        raise ReportError(f"run {run_id}: its cached predictions do not match its test images")
    cfg = run.config
    probs, labels = preds.probabilities, preds.labels
    predicted = probs.argmax(axis=1)
    correct = predicted == labels
    loss = float(evaluation.cross_entropy(probs, labels, cfg.label_smoothing).mean())
    metrics = run.metrics or {}
    cm = evaluation.confusion_matrix(labels, predicted)
    summary = evaluation.summarize_history(run.history)
    hist = run.history

    sections = [f"<h1>{_e(run.title)}</h1>",
                f'<p class="muted">Run <code>{_e(run.run_id)}</code> · {_e(run.status)} · '
                f"{run.epochs_done} of {cfg.epochs} epochs · report made "
                f"{dt.datetime.now().astimezone().isoformat(timespec='seconds')}</p>"]
    if run.notes:
        sections.append(f"<p>{_e(run.notes)}</p>")

    sections.append("<h2>Result</h2>")
    tta = metrics.get("test_accuracy_tta")
    sections.append('<p class="metrics">'
                    f"<span>test accuracy <b>{_pct(float(correct.mean()))}</b></span>"
                    + (f"<span>with TTA <b>{_pct(tta)}</b></span>" if tta is not None else "")
                    + f"<span>test loss <b>{loss:.4f}</b></span></p>"
                    f'<p class="muted">{len(labels):,} test images. '
                    f"{_e(_sentence(evaluation.loss_note(cfg.label_smoothing)))}</p>")

    sections.append("<h2>Loss and accuracy over epochs</h2><div class='figures'>")
    sections.append(svg_lines("Loss over epochs", [("training", hist.get("loss", []), "#1f77b4"),
                                                   ("validation", hist.get("val_loss", []), "#ff7f0e")]))
    sections.append(svg_lines("Accuracy over epochs", [("training", hist.get("accuracy", []), "#1f77b4"),
                                                       ("validation", hist.get("val_accuracy", []), "#ff7f0e")]))
    sections.append("</div>")

    sections.append("<h2>Observations</h2><ul>")
    sections += [f"<li>{_e(line)}</li>" for line in evaluation.describe_summary(summary)]
    sections.append("</ul>")

    sections.append(f"<h2>The first {FIRST_IMAGES} test images</h2><div class='figures'>")
    for i in range(min(FIRST_IMAGES, len(labels))):
        sections.append(_figure(data.x_test[i], f"predicted <b>{_e(CLASS_NAMES[predicted[i]])}</b> "
                                                f"({probs[i, predicted[i]]:.0%})<br>true {_e(CLASS_NAMES[labels[i]])}",
                                good=bool(correct[i])))
    sections.append("</div>")

    sections.append("<h2>Confusion matrix and per-class scores</h2>")
    sections.append(confusion_table(cm))
    sections.append(_table(evaluation.per_class_report(cm),
                           [("class", "class", "text"), ("precision", "precision", "pct"), ("recall", "recall", "pct"),
                            ("f1", "F1", "pct"), ("support", "images", "int")]))
    confused = evaluation.most_confused(cm, top=5)
    if confused:
        sections.append("<p>Most confused: " + "; ".join(
            f"{_e(c['true'])} taken for {_e(c['predicted'])} {c['count']} times ({_pct(c['share_of_true'], 1)})"
            for c in confused) + ".</p>")

    sections.append("<h2>Calibration</h2>")
    try:
        cal = calibration.calibrate(preds, seed=cfg.seed)
        rep = cal["report"]
        sections.append(f"<p>A temperature of {cal['temperature']:.2f} fitted on half of the test images "
                        f"({cal['split']['fit_images']:,}) and checked on the other half: expected calibration "
                        f"error {_pct(rep['ece_before'])} before, {_pct(rep['ece_after'])} after.</p><div class='figures'>"
                        + svg_reliability(rep["bins_before"], "Before")
                        + svg_reliability(rep["bins_after"], f"After (T = {cal['temperature']:.2f})") + "</div>")
    except ValueError as exc:
        sections.append(f"<p class='muted'>Not computed: {_e(exc)}.</p>")

    wrong = np.flatnonzero(~correct)
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:WORST_MISTAKES]
    sections.append(f"<h2>The worst mistakes</h2><p class='muted'>The {len(worst)} wrong answers given with "
                    f"the most confidence, of {len(wrong):,} wrong in all.</p><div class='figures'>")
    for i in worst:
        sections.append(_figure(data.x_test[i], f"#{int(i)}: <b>{_e(CLASS_NAMES[predicted[i]])}</b> "
                                                f"{probs[i, predicted[i]]:.0%}<br>true {_e(CLASS_NAMES[labels[i]])}",
                                good=False))
    sections.append("</div>")

    sections.append("<h2>Configuration and where it trained</h2>")
    sections.append(_key_values(cfg.to_dict(), redact or str))
    trained = _where_trained(run)
    if redact is not None:
        trained.pop("host", None)
    if trained:
        sections.append(_key_values(trained, redact or str))
    title = f"{run.title}: CIFAR-10 Lab report"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>")


def write_report(run_id: str, out: Optional[Path] = None) -> Path:
    """Write the report (default: report.html in the run folder) whole or not at all.

    Raises:
      ReportError: as build_report, or the file cannot be written (the message names it).
    """
    text = build_report(run_id)
    path = Path(out) if out is not None else runs.run_path(run_id) / REPORT_FILE
    if path.is_dir():
        path = path / f"{run_id}-{REPORT_FILE}"
    try:
        replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as exc:
        raise ReportError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    return path
