"""Reading the Train page's browser-drawn live panel (cifar_ui/progress_panel.py) in AppTest, which
runs no JavaScript: what the page handed the panel, and the feed files the browser would fetch."""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Optional

import numpy as np

from cifar_ui import browser_feed


def live_panel_data(at) -> Optional[dict]:
    """The panel's data (feed URLs, first frame of progress and figures); None when the page drew none."""
    for element in at.get("bidi_component"):
        if element.proto.component_name == "cifar_lab.progress_panel":
            return json.loads(element.proto.json)
    return None


def feed_file(url: str) -> Path:
    """The file behind a live-feed URL, in the current feed's folder."""
    return browser_feed.feed().root / url.split(f"{browser_feed.URL_PREFIX}/", 1)[1]


def read_feed(url: str) -> dict:
    return json.loads(feed_file(url).read_text())


def plotted(values) -> list:
    """A trace's x or y as Plotly.js reads it: a list, or a typed array (`{"dtype", "bdata"}`,
    how plotly writes numpy arrays)."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)
