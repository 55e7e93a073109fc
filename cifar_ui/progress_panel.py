"""The Train page's live panel: progress and the three curves, drawn in the browser from the
files `cifar_ui/browser_feed.py` keeps fresh, so that a tab watching a run costs the server a file
read per second instead of a script run (see browser_feed for why).

The panel polls the run's progress file every second (not while its tab is hidden), fetches the
charts only when the progress names a new file for its chart setting (each version its own file:
see browser_feed for why) and redraws with Plotly.js (the copy that ships with the
plotly package, served from `static/vendor/`) only the charts whose figure changed, when they are on
screen (one that scrolls into view is brought up to date at once). It tells the page to rerun when
an epoch ends, for the per-class evolution below it (only while that is on screen: otherwise when it
scrolls into view), and when the run ends (the result replaces it). If the files cannot be fetched
it says so and asks the page to fall back to refreshing itself.

What a watching tab costs matters because the browser often shares the machine that trains: a
progress poll touches the page only where its text changed and nothing animates between polls
(BENCHMARKS.md section 8, "One local tab").
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Optional

import plotly
import streamlit as st
from streamlit import config

from cifar_core.files import replace_atomically

from . import browser_feed

POLL_MS = 1000
STALE_SECONDS = 15  # no new feed for this long: the panel says the server stopped updating it
VENDOR_DIR = browser_feed.STATIC_DIR / "vendor"

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
.cl-fill { height: 100%; width: 0; background: var(--st-primary-color, #ff4b4b); }  /* no transition: a moving bar would be laid out and painted ~24 times a second */
.cl-text { font-size: 0.875rem; margin: 0.25rem 0 0.5rem 0; }
.cl-note { font-size: 0.8rem; opacity: 0.7; min-height: 1em; }
.cl-row { display: flex; gap: 1rem; }
.cl-row > .cl-chart { flex: 1 1 0; min-width: 0; }
.cl-chart { min-height: 1px; }
.cl-compact .cl-chart, .cl-compact .cl-row { display: none; }
"""

_JS = """
const PLOTLY_TAG = "cifar-lab-plotly";
const CHARTS = ["batch", "loss", "accuracy"];
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
    this.shown = {};  // what the progress part shows: the page is touched only where it changes
    this.figures = null;  // the newest figures fetched
    this.drawn = {};  // chart name -> JSON of the figure it shows
    this.offScreen = new Set();  // charts and the epoch target known to be out of view
    this.pendingEpochs = null;  // an epoch end not yet reported: its target is off screen
    this.target = null;
    this.observer = new IntersectionObserver((entries) => this.onView(entries));
  }

  update(data, trigger) {
    const first = !this.data;
    this.data = data;
    this.trigger = trigger;
    if (first || data.figures_key !== this.figuresKey) {  // another chart setting: draw its figures whatever their version
      this.figuresKey = data.figures_key;
      this.drawnVersion = null;
      this.fetchedUrl = null;
    }
    this.root.classList.toggle("cl-compact", !data.figures_url);  // progress only (Home)
    this.plotly = data.figures_url ? (this.plotly || loadPlotly(data.plotly_url)) : null;
    this.showProgress(data.progress);
    for (const div of this.root.querySelectorAll(".cl-chart")) this.observer.observe(div);  // reported back in onView
    this.wantFigures(data.figures_url);  // mounted, a new setting, or newer figures than the last fetched
    if (this.epochs === null) this.epochs = data.progress.epochs_done;
    // (Re)start polling: after the page reran for an ending, a job may still say "completed"
    // while its thread finishes; the next look asks again.
    if (!this.timer) this.timer = setInterval(() => this.tick(), data.poll_ms);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.observer.disconnect();  // update() observes again
    this.target = null;
  }

  // Each change below costs the tab a style, layout and paint pass: made only when the value changed.
  set(part, value, apply) {
    if (this.shown[part] === value) return;
    this.shown[part] = value;
    apply(value);
  }

  showProgress(doc) {
    this.set("status", JSON.stringify([doc.run_id, doc.status, doc.message || ""]), () => {
      const status = this.el("status");
      status.textContent = "";
      const code = document.createElement("code");
      code.textContent = doc.run_id;
      const badge = document.createElement("span");
      badge.className = "cl-badge";
      badge.textContent = doc.status;
      status.append("Run ", code, " ", badge, " \\u2014 " + (doc.message || ""));
    });
    this.set("pct", Math.round(100 * (doc.progress || 0)), (pct) => {
      this.el("fill").style.width = pct + "%";
      this.el("bar").setAttribute("aria-valuenow", String(pct));
    });
    this.set("text", doc.text || "", (text) => { this.el("text").textContent = text; });
    if (doc.fed_at !== this.fedAt) { this.fedAt = doc.fed_at; this.freshSince = Date.now(); }
  }

  note(text) { this.set("note", text, (t) => { this.el("note").textContent = t; }); }

  onView(entries) {
    for (const entry of entries) {
      if (entry.isIntersecting) this.offScreen.delete(entry.target); else this.offScreen.add(entry.target);
    }
    if (this.figures) this.redraw().catch((err) => this.note("Charts not updated (" + err.message + ")"));
    if (this.pendingEpochs !== null) this.reportEpoch(this.pendingEpochs);
  }

  async drawFigures(figures) {
    if (!this.plotly || !figures || figures.version === undefined) return;
    if (this.drawnVersion !== null && figures.version <= this.drawnVersion) return;  // never an older one over a newer
    this.figures = figures;
    await this.redraw();
    this.drawnVersion = figures.version;
  }

  // One redraw at a time (a chart scrolling into view can ask while the feed's is under way).
  redraw() {
    this.redrawing = (this.redrawing || Promise.resolve()).catch(() => {}).then(() => this.redrawNow());
    return this.redrawing;
  }

  // Plotly.react costs 20-35 ms of CPU a chart: only a chart whose figure changed (the epoch charts
  // change once an epoch, the batch curves every few seconds), and not while it is out of view
  // (it catches up when it scrolls in; its first drawing is made anyway, so the page keeps its height).
  async redrawNow() {
    const Plotly = await this.plotly;
    const figures = this.figures;
    for (const name of CHARTS) {
      const fig = figures[name];
      const div = this.root.querySelector('[data-chart="' + name + '"]');
      if (!fig || !div) continue;
      const json = JSON.stringify(fig);
      if (json === this.drawn[name] || (this.offScreen.has(div) && this.drawn[name] !== undefined)) continue;
      this.drawn[name] = json;
      // What Streamlit's own chart element adds: the page's font, room for tick labels.
      const layout = Object.assign({}, fig.layout, {paper_bgcolor: "rgba(0,0,0,0)", autosize: true});
      this.fontFamily = this.fontFamily || getComputedStyle(this.root).fontFamily;
      layout.font = Object.assign({family: this.fontFamily}, fig.layout.font || {});
      // Titles on the left, as Streamlit's theme draws the page's other charts (and clear of the legend).
      const title = typeof fig.layout.title === "string" ? {text: fig.layout.title} : (fig.layout.title || {});
      layout.title = Object.assign({x: 0, xanchor: "left", xref: "paper"}, title);
      for (const key of Object.keys(layout)) {
        if (/^[xy]axis\d*$/.test(key)) layout[key] = Object.assign({automargin: true}, layout[key]);
      }
      await Plotly.react(div, fig.data, layout, {responsive: true, displaylogo: false});
    }
  }

  // The part of the page an epoch's rerun is for (data.epoch_target: the per-class evolution,
  // drawn after the panel), watched from the first poll so its place is known when an epoch ends.
  watchTarget() {
    const selector = this.data.epoch_target;
    if (!selector || (this.target && this.target.isConnected)) return;
    this.target = document.querySelector(selector);
    if (this.target) this.observer.observe(this.target);  // reported back in onView
  }

  // The epoch's rerun is asked for while its target is on screen or not known to be off it (not
  // found: at once, as before), else once the target scrolls into view.
  reportEpoch(epochs) {
    this.watchTarget();
    if (this.target && this.offScreen.has(this.target)) { this.pendingEpochs = epochs; return; }
    this.pendingEpochs = null;
    this.epochs = epochs;
    this.trigger("epoch", epochs);
  }

  async fetchJson(url) {
    const response = await fetch(url, {cache: "no-store"});
    if (!response.ok) throw new Error(url + ": HTTP " + response.status);
    return response.json();
  }

  // Each version of the figures is a file of its own, named by the progress doc (browser_feed).
  wantFigures(url) {
    if (!url || url === this.fetchedUrl) return;
    this.figuresUrl = url;
    this.refreshCharts();
  }

  async refreshCharts() {
    if (this.drawing) return;  // the fetch under way ends by looking at figuresUrl again
    this.drawing = true;
    const url = this.figuresUrl;
    try {
      await this.drawFigures(await this.fetchJson(url));
      this.fetchedUrl = url;
    } catch (err) {
      this.note("Charts not updated (" + err.message + ")");
    } finally {
      this.drawing = false;
    }
    if (this.figuresUrl !== url && this.fetchedUrl === url) this.refreshCharts();  // a newer one was named meanwhile
  }

  async tick() {
    if (document.hidden || this.busy) return;  // a background tab costs the server nothing
    this.busy = true;
    try {
      const doc = await this.fetchJson(this.data.progress_url);
      this.misses = 0;
      this.showProgress(doc);
      this.watchTarget();
      const named = this.figuresKey && doc.figures && doc.figures[this.figuresKey];
      if (named) this.wantFigures(this.data.feed_base + named);  // not awaited: a slow redraw must not hold up the next poll
      const stale = (Date.now() - this.freshSince) / 1000;
      this.note(stale > this.data.stale_seconds
        ? "No update from the server for " + Math.round(stale) + " s: is it still running?" : "");
      if (!doc.active) {
        this.stop();
        this.trigger("ended", doc.status);
      } else if (doc.epochs_done !== this.epochs && doc.epochs_done !== this.pendingEpochs && this.data.report_epochs) {
        this.reportEpoch(doc.epochs_done);
      }
    } catch (err) {
      this.misses += 1;
      this.note("Live feed unavailable (" + err.message + ")");
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
  // Called before each rerun's new data as well as on unmount: the panel stays with its element, so
  // a rerun (an epoch's end) neither refetches nor redraws charts that did not change.
  return () => panel.stop();
}
"""

# Not in a shadow root: Plotly.js styles its charts (modebar, hover layers) from the document head.
_component = st.components.v2.component("cifar_lab.progress_panel", html=_HTML, css=_CSS, js=_JS, isolate_styles=False)


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


def container_selector(key: str) -> str:
    """The CSS selector of `st.container(key=key)` (Streamlit gives a keyed container the class
    st-key-<key>, other characters than letters, digits, _ and - made -)."""
    return ".st-key-" + re.sub(r"[^a-zA-Z0-9_-]", "-", key.strip())


def render(run_id: str, view, key: str, smoothing: Optional[float] = None, x_axis: str = "epoch",
           epoch_key: Optional[str] = None) -> Optional[str]:
    """Mount the panel for a run: progress and charts, or the progress alone when `smoothing` is
    None (Home). Returns what the browser reported on this rerun ("epoch", with charts only;
    "ended" or "unavailable"), or None. `epoch_key`: the key of the `st.container` an epoch's
    rerun is for; the browser asks for it only while that container is on screen (else once it
    scrolls into view), so a tab scrolled elsewhere costs no rerun per epoch."""
    links = browser_feed.feed().serve(run_id, view, smoothing, x_axis)
    vendor = plotly_js()
    data: dict[str, Any] = {
        "progress_url": _url(links.progress_url),
        "feed_base": _url(links.progress_url.rsplit("/", 1)[0] + "/"),  # the figures files' folder
        "figures_key": None if smoothing is None else browser_feed.variant_key(smoothing, x_axis),
        "figures_url": None if links.figures_url is None else _url(links.figures_url),
        "plotly_url": _url(f"app/static/vendor/{vendor.name}"), "poll_ms": POLL_MS,
        "stale_seconds": STALE_SECONDS, "progress": links.progress,
        "report_epochs": links.figures_url is not None,
        "epoch_target": None if epoch_key is None else container_selector(epoch_key)}
    result = _component(key=key, data=data, on_epoch_change=lambda: None, on_ended_change=lambda: None,
                        on_unavailable_change=lambda: None)
    for event in ("ended", "unavailable", "epoch"):
        if getattr(result, event, None) is not None:
            return event
    return None
