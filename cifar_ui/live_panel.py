"""The Train page's live panel: progress and the three curves, drawn in the browser from the
files `cifar_ui/live_feed.py` keeps fresh, so that a tab watching a run costs the server a file
read per second instead of a script run (see live_feed for why).

The panel polls the run's progress file every second (not while its tab is hidden), fetches the
charts only when their version changes and redraws them with Plotly.js (the copy that ships with
the plotly package, served from `static/vendor/`). It tells the page to rerun when an epoch
ends (the per-class evolution below it changes) and when the run ends (the result replaces it).
If the files cannot be fetched it says so and asks the page to fall back to refreshing itself.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

import plotly
import streamlit as st
from streamlit import config

from cifar_core.files import replace_atomically

from . import live_feed

POLL_MS = 1000
STALE_SECONDS = 15  # no new feed for this long: the panel says the server stopped updating it
VENDOR_DIR = live_feed.STATIC_DIR / "vendor"

_HTML = """
<div class="cl-panel">
  <div class="cl-status"></div>
  <div class="cl-progress">
    <div class="cl-bar" role="progressbar" aria-valuemin="0" aria-valuemax="100"><div class="cl-fill"></div></div>
    <div class="cl-text"></div>
  </div>
  <div class="cl-note"></div>
  <div class="cl-chart" data-chart="batch"></div>
  <div class="cl-row"><div class="cl-chart" data-chart="loss"></div><div class="cl-chart" data-chart="accuracy"></div></div>
</div>
"""

_CSS = """
.cl-panel { font-family: var(--st-font, sans-serif); color: var(--st-text-color, inherit); }
.cl-status { margin: 0 0 0.4rem 0; }
.cl-status code { font-family: var(--st-code-font, monospace); font-size: 0.9em; }
.cl-badge { font-weight: 600; color: var(--st-primary-color, #ff4b4b); }
.cl-bar { height: 0.5rem; border-radius: 0.25rem; background: var(--st-secondary-background-color, #f0f2f6); overflow: hidden; }
.cl-fill { height: 100%; width: 0; background: var(--st-primary-color, #ff4b4b); transition: width 0.4s ease; }
.cl-text { font-size: 0.875rem; margin: 0.25rem 0 0.5rem 0; }
.cl-note { font-size: 0.8rem; opacity: 0.7; min-height: 1em; }
.cl-row { display: flex; gap: 1rem; }
.cl-row > .cl-chart { flex: 1 1 0; min-width: 0; }
.cl-chart { min-height: 1px; }
.cl-compact .cl-chart, .cl-compact .cl-row { display: none; }
"""

_JS = """
const PLOTLY_TAG = "cifar-lab-plotly";
const panels = new WeakMap();

function loadPlotly(src) {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  let tag = document.getElementById(PLOTLY_TAG);
  if (!tag) {
    tag = document.createElement("script");
    tag.id = PLOTLY_TAG;
    tag.src = src;
    document.head.appendChild(tag);
  }
  return new Promise((resolve, reject) => {
    tag.addEventListener("load", () => resolve(window.Plotly));
    tag.addEventListener("error", () => reject(new Error("Plotly.js did not load from " + src)));
    if (window.Plotly) resolve(window.Plotly);
  });
}

class Panel {
  constructor(root) {
    this.root = root;
    this.el = (name) => root.querySelector(".cl-" + name);
    this.timer = null;
    this.drawnVersion = null;
    this.epochs = null;
    this.misses = 0;
    this.fedAt = null;
    this.freshSince = Date.now();
  }

  update(data, trigger) {
    const first = !this.data;
    this.data = data;
    this.trigger = trigger;
    if (first || data.figures_url !== this.figuresUrl) {
      this.figuresUrl = data.figures_url;
      this.drawnVersion = null;
    }
    this.root.classList.toggle("cl-compact", !data.figures_url);  // progress only (Home)
    this.plotly = data.figures_url ? (this.plotly || loadPlotly(data.plotly_url)) : null;
    this.showProgress(data.progress);
    if (this.drawnVersion === null && this.figuresUrl) this.refreshCharts();  // mounted, or a new setting
    if (this.epochs === null) this.epochs = data.progress.epochs_done;
    // (Re)start polling: after the page reran for an ending, a job may still say "completed"
    // while its thread finishes; the next look asks again.
    if (!this.timer) this.timer = setInterval(() => this.tick(), data.poll_ms);
  }

  stop() { clearInterval(this.timer); this.timer = null; }

  showProgress(doc) {
    const status = this.el("status");
    status.textContent = "";
    const code = document.createElement("code");
    code.textContent = doc.run_id;
    const badge = document.createElement("span");
    badge.className = "cl-badge";
    badge.textContent = doc.status;
    status.append("Run ", code, " ", badge, " \\u2014 " + (doc.message || ""));
    const pct = Math.round(100 * (doc.progress || 0));
    this.el("fill").style.width = pct + "%";
    this.el("bar").setAttribute("aria-valuenow", String(pct));
    this.el("text").textContent = doc.text || "";
    if (doc.fed_at !== this.fedAt) { this.fedAt = doc.fed_at; this.freshSince = Date.now(); }
  }

  async drawFigures(figures) {
    if (!this.plotly || !figures || figures.version === undefined) return;
    if (this.drawnVersion !== null && figures.version <= this.drawnVersion) return;  // never an older one over a newer
    const Plotly = await this.plotly;
    for (const name of ["batch", "loss", "accuracy"]) {
      const fig = figures[name];
      const div = this.root.querySelector('[data-chart="' + name + '"]');
      if (!fig || !div) continue;
      // What Streamlit's own chart element adds: the page's font, room for tick labels.
      const layout = Object.assign({}, fig.layout, {paper_bgcolor: "rgba(0,0,0,0)", autosize: true});
      layout.font = Object.assign({family: getComputedStyle(this.root).fontFamily}, fig.layout.font || {});
      // Titles on the left, as Streamlit's theme draws the page's other charts (and clear of the legend).
      const title = typeof fig.layout.title === "string" ? {text: fig.layout.title} : (fig.layout.title || {});
      layout.title = Object.assign({x: 0, xanchor: "left", xref: "paper"}, title);
      for (const key of Object.keys(layout)) {
        if (/^[xy]axis\d*$/.test(key)) layout[key] = Object.assign({automargin: true}, layout[key]);
      }
      await Plotly.react(div, fig.data, layout, {responsive: true, displaylogo: false});
    }
    this.drawnVersion = figures.version;
  }

  async fetchJson(url) {
    const response = await fetch(url, {cache: "no-store"});
    if (!response.ok) throw new Error(url + ": HTTP " + response.status);
    return response.json();
  }

  async refreshCharts() {
    if (this.drawing) return;
    this.drawing = true;
    try {
      await this.drawFigures(await this.fetchJson(this.figuresUrl));
    } catch (err) {
      this.el("note").textContent = "Charts not updated (" + err.message + ")";
    } finally {
      this.drawing = false;
    }
  }

  async tick() {
    if (document.hidden || this.busy) return;  // a background tab costs the server nothing
    this.busy = true;
    try {
      const doc = await this.fetchJson(this.data.progress_url);
      this.misses = 0;
      this.showProgress(doc);
      if (this.figuresUrl && doc.charts > (this.drawnVersion === null ? -1 : this.drawnVersion)) {  // newer curves
        this.refreshCharts();  // not awaited: a slow redraw must not hold up the next progress poll
      }
      const stale = (Date.now() - this.freshSince) / 1000;
      this.el("note").textContent = stale > this.data.stale_seconds
        ? "No update from the server for " + Math.round(stale) + " s: is it still running?" : "";
      if (!doc.active) {
        this.stop();
        this.trigger("ended", doc.status);
      } else if (doc.epochs_done !== this.epochs && this.data.report_epochs) {
        this.epochs = doc.epochs_done;
        this.trigger("epoch", doc.epochs_done);
      }
    } catch (err) {
      this.misses += 1;
      this.el("note").textContent = "Live feed unavailable (" + err.message + ")";
      if (this.misses === 5) { this.stop(); this.trigger("unavailable", String(err.message)); }
    } finally {
      this.busy = false;
    }
  }
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const root = parentElement.querySelector(".cl-panel");
  let panel = panels.get(root);
  if (!panel) { panel = new Panel(root); panels.set(root, panel); }
  panel.update(data, setTriggerValue);
  return () => { panel.stop(); panels.delete(root); };
}
"""

# Not in a shadow root: Plotly.js styles its charts (modebar, hover layers) from the document head.
_component = st.components.v2.component("cifar_lab.live_panel", html=_HTML, css=_CSS, js=_JS, isolate_styles=False)


def plotly_js() -> Path:
    """The Plotly.js that ships with the installed plotly package, copied once into the folder
    Streamlit serves (the lab never fetches it from a CDN: it must work offline). OSError when the
    folder cannot be written."""
    target = VENDOR_DIR / f"plotly-{plotly.__version__}.min.js"
    if not target.exists():
        source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        VENDOR_DIR.mkdir(parents=True, exist_ok=True)
        replace_atomically(target, lambda tmp: shutil.copyfile(source, tmp))  # two sessions may copy at once
    return target


def available() -> bool:
    """Whether the browser can draw the panel here: this server serves static/ (the project's
    .streamlit/config.toml turns it on; a server started from another folder does not) and
    Plotly.js is in it."""
    if not config.get_option("server.enableStaticServing"):
        return False
    try:
        plotly_js()
    except OSError:
        return False
    return True


def _url(relative: str) -> str:
    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    return "/" + (f"{base}/" if base else "") + relative


def render(run_id: str, view, key: str, smoothing: Optional[float] = None, x_axis: str = "epoch") -> Optional[str]:
    """Mount the panel for a run: progress and charts, or the progress alone when `smoothing` is
    None (Home). Returns what the browser reported on this rerun ("epoch", with charts only;
    "ended" or "unavailable"), or None."""
    links = live_feed.feed().watch(run_id, view, smoothing, x_axis)
    vendor = plotly_js()
    data: dict[str, Any] = {
        "progress_url": _url(links.progress_url),
        "figures_url": None if links.figures_url is None else _url(links.figures_url),
        "plotly_url": _url(f"app/static/vendor/{vendor.name}"), "poll_ms": POLL_MS,
        "stale_seconds": STALE_SECONDS, "progress": links.progress,
        "report_epochs": links.figures_url is not None}
    result = _component(key=key, data=data, on_epoch_change=lambda: None, on_ended_change=lambda: None,
                        on_unavailable_change=lambda: None)
    for event in ("ended", "unavailable", "epoch"):
        if getattr(result, event, None) is not None:
            return event
    return None
