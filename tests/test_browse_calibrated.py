"""Browse shows the probability Predict shows (issue 26): the calibrated one where the run has a
temperature, and it says which."""
from __future__ import annotations

import base64
import json
import re

import numpy as np

from cifar_core import runs
from cifar_core.insight import calibration, evaluation
from test_pages import open_page, raised


def _values(encoded) -> np.ndarray:
    """A trace's numbers from Plotly's JSON (a list, or its typed-array encoding)."""
    if isinstance(encoded, dict):
        return np.frombuffer(base64.b64decode(encoded["bdata"]), dtype=encoded["dtype"])
    return np.asarray(encoded, np.float64)


def _detail_chart(at) -> dict:
    (chart,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if "Probabilities" in json.loads(c.proto.spec)["layout"]["title"]["text"]]
    return chart


def test_browse_shows_the_calibrated_probability_and_says_so(with_run, artifacts):
    folder = artifacts / "runs" / with_run
    fitted = calibration.calibration_for(runs.load_run(with_run))
    runs.write_json(folder / calibration.CALIBRATION_FILE, {**fitted, "temperature": 3.0})  # far from 1
    at = open_page("pages/browse.py")
    assert not at.exception, raised(at)
    preds = evaluation.load_cached_predictions(runs.load_run(with_run))
    shown = calibration.apply_temperature(preds.probabilities, 3.0)

    chart = _detail_chart(at)
    assert "calibrated probability" in chart["layout"]["title"]["text"].replace("<br>", " ")  # a long title wraps
    index = int(re.search(r"#(\d+)", next(s.value for s in at.subheader if s.value.startswith("Test image"))).group(1))
    bars = _values(chart["data"][0]["x"])
    np.testing.assert_allclose(bars, shown[index], rtol=1e-6)  # every class, calibrated
    assert not np.allclose(bars, preds.probabilities[index], atol=1e-3)
    detail = next(m.value for m in at.markdown if m.value.startswith("True **"))
    assert "calibrated with temperature 3.00" in detail
    assert f"{shown[index].max():.1%}" in detail
    # the grid's tiles: "true → predicted  NN%" with the calibrated confidence of the shown image
    tiles = [m.value for m in at.markdown if "→" in m.value]
    captions = [i.proto.imgs[0].caption for i in at.get("image") if i.proto.imgs[0].caption.startswith("#")]
    assert len(tiles) == len(captions) > 0, (tiles, captions)
    for caption, tile in zip(captions, tiles):
        i = int(caption.lstrip("#"))
        assert tile.endswith(f" {shown[i].max():.0%}"), (caption, tile, shown[i].max())
    assert any("calibrated" in c.value for c in at.caption), [c.value for c in at.caption]


def test_browse_says_when_the_run_has_no_calibration(with_run, artifacts, monkeypatch):
    import cifar_ui.calibration as page_calibration

    monkeypatch.setattr(page_calibration.calibration, "calibration_for", lambda *a, **k: None)
    at = open_page("pages/browse.py")
    assert not at.exception, raised(at)
    chart = _detail_chart(at)
    assert "model's own probability" in chart["layout"]["title"]["text"].replace("<br>", " ")
    detail = next(m.value for m in at.markdown if m.value.startswith("True **"))
    assert "the model's own probability" in detail
