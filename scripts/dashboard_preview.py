#!/usr/bin/env python
"""A preview of the chart's Grafana dashboard, drawn from live data (``make dashboard``).

Grafana itself is not used (nor imitated): this draws the dashboard's own definition,
``charts/unilingo/dashboards/unilingo.json`` (each panel at its ``gridPos`` on the 24-column
grid, with its title, queries, legend format, unit, min/max, value mappings and thresholds),
with matplotlib, from data that a real Prometheus scraped from the local stack under load.

The stack is the one ``tests/integration/test_observability.py`` proves the dashboard
against, started by the same code (``run_stack`` in ``tests/support/observability.py``):
Redis, the provider sandbox, the API, two prefork workers, the kube-state-metrics stand-in and
``.tools/bin/prometheus`` scraping them every second. After the test's burst of mixed jobs
(``drive_load``) a steady mix goes on for ``--minutes``; then every target's query runs through
``/api/v1/query_range`` over that period, the dashboard's variables filled in as the test fills
them.

Writes the image (``docs/dashboard.png`` by default) and exits 1, naming them, if any panel
got no data at all. Everything it started is stopped on exit, Ctrl-C and SIGTERM included.

    .venv/bin/python scripts/dashboard_preview.py [--minutes 4] [--out docs/dashboard.png]

It runs as a script, not a module: ``scripts/`` is not a package, and this tool belongs with
the repository's other developer scripts rather than in ``devstack`` (an installed package
that the tests build on, which must not import the tests or a plotting library).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the repo's packages, the test-support package included (not installed)

import argparse
import contextlib
import datetime as dt
import io
import json
import math
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator
from PIL import Image  # matplotlib's own dependency

from devstack.redis import RedisServer
from sandbox.images import png_with_text
from tests.samples import pdf_with_text, speech_like, wav_bytes
from tests.support.api import auth
from tests.support.observability import (
    DASHBOARD,
    PROMETHEUS,
    Stack,
    dashboard_variables,
    drive_load,
    fill,
    run_stack,
)
from tests.support.sandbox import start_sandbox
from unilingo.policy import BreakerPolicy, PolicyStore, ProviderPolicy, RetryPolicy

TOOL = "scripts/dashboard_preview.py"
DASHBOARD_NAME = DASHBOARD.relative_to(ROOT).as_posix()


# ---------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------


@dataclass
class LoadCounts:
    accepted: int = 0
    refused: int = 0  # 429 from the client quota, as intended for the "greedy" user
    errors: dict[str, int] = field(default_factory=dict)


def steady_load(stack: Stack, http: httpx.Client, sandbox_url: str, seconds: float, tick: float = 1.0) -> LoadCounts:
    """A steady mix, one tick a second: flashcards and lessons (AI), PDFs, OCR (Azure Vision
    keeps answering 500 for the test's five minutes: failures, an open breaker, deferrals),
    pronunciation, TTS that no worker takes, cached repeats, a user over the AI quota, and a
    short OpenAI 429 storm every minute."""
    counts = LoadCounts()
    pdf = pdf_with_text(["Steady load page"])
    audio = wav_bytes(speech_like(1.0))

    def submit(path: str, user: str, **kwargs) -> None:
        try:
            response = http.post(path, headers=auth(user), **kwargs)
        except httpx.HTTPError as exc:
            counts.errors[type(exc).__name__] = counts.errors.get(type(exc).__name__, 0) + 1
            return
        if response.status_code == 202:
            counts.accepted += 1
        elif response.status_code == 429:
            counts.refused += 1
        else:
            key = f"{path} {response.status_code}"
            counts.errors[key] = counts.errors.get(key, 0) + 1

    deadline = time.monotonic() + seconds
    i = 0
    with httpx.Client(base_url=sandbox_url, timeout=10) as sandbox:
        while time.monotonic() < deadline:
            started = time.monotonic()
            if i % 60 == 30:
                sandbox.post(
                    "/_sandbox/faults", json={"provider": "openai", "mode": "429", "duration_s": 8, "rate": 0.8}
                )
            if i % 4 == 0:  # the AI quota is 5 per user and hour: a new learner every 4 jobs
                submit(
                    "/api/ai/generate-flashcards",
                    f"learner{i // 16}",
                    json={"content": f"Steady topic {i}", "count": 3},
                )
            if i % 15 == 7:
                submit("/api/ai/generate-lesson", f"teacher{i}", json={"topic": f"Steady lesson {i}"})
            if i % 20 == 11 and i >= 30:  # an earlier request again: answered from the cache
                j = 4 * ((i - 30) // 4)
                submit("/api/ai/generate-flashcards", f"reviewer{i}", json={"content": f"Steady topic {j}", "count": 3})
            if i % 5 == 1:
                submit("/api/process-pdf", "carol", files={"file": (f"s{i}.pdf", pdf, "application/pdf")})
            if i % 6 == 2:
                submit(
                    "/api/process-image",
                    "dave",
                    data={"language": "en"},
                    files={"image": (f"s{i}.png", png_with_text(240, 80, f"Steady {i}"), "image/png")},
                )
            if i % 10 == 4:
                submit(
                    "/api/pronunciation-assess",
                    f"speaker{i // 100}",
                    files={"audio": ("a.wav", audio, "audio/wav")},
                    data={"reference_text": "hello world", "language": "en-US"},
                )
            if i % 8 == 5:
                submit("/api/audio/generate", "frank", json={"text": f"Steady sentence {i}"})
            if i % 7 == 6:
                submit("/api/ai/generate-flashcards", "greedy", json={"content": f"More {i}", "count": 1})
            if i % 2 == 0:
                http.get("/api/health")
            i += 1
            time.sleep(max(0.0, tick - (time.monotonic() - started)))
    return counts


# ---------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------


@dataclass
class Series:
    label: str
    times: list[float]
    values: list[float]  # NaN where Prometheus had no value at that step

    def finite(self) -> list[float]:
        return [v for v in self.values if math.isfinite(v)]


def flat_panels(panels: list[dict]) -> list[dict]:
    """Every panel, those inside (collapsed) rows included, in order."""
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(flat_panels(panel.get("panels", [])))
    return out


def legend(fmt: str | None, metric: dict) -> str:
    if not fmt or fmt == "__auto":
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
        return f"{metric.get('__name__', '')}{{{inner}}}" if inner or "__name__" in metric else "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt).strip()


def query_range(prometheus_url: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    response = httpx.get(
        f"{prometheus_url}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": step},
        timeout=30,
    )
    body = response.json()
    if response.status_code != 200 or body.get("status") != "success":
        raise RuntimeError(f"query failed: {expr}: {body}")
    return body["data"]["result"]


def panel_series(
    prometheus_url: str, panel: dict, variables: dict[str, str], start: float, end: float, step: float
) -> tuple[list[Series], list[str]]:
    """The panel's series over the range, and its targets that returned nothing."""
    grid = [start + k * step for k in range(int((end - start) // step) + 1)]
    series, empty = [], []
    for target in panel.get("targets", []):
        if target.get("hide") or "expr" not in target:
            continue
        expr = fill(target["expr"], variables)
        got = 0
        for result in query_range(prometheus_url, expr, start, end, step):
            points = {round(float(t), 3): float(v) for t, v in result["values"]}
            values = [points.get(round(t, 3), math.nan) for t in grid]
            s = Series(legend(target.get("legendFormat"), result["metric"]), grid, values)
            if s.finite():
                got += 1
                series.append(s)
        if not got:
            empty.append(f"[{target.get('refId', '?')}] {expr}")
    return series, empty


# ---------------------------------------------------------------------------------------------
# Units and colours
# ---------------------------------------------------------------------------------------------

COLOURS = {
    "green": "#2e7d32",
    "dark-green": "#1b5e20",
    "semi-dark-green": "#2e7d32",
    "light-green": "#66bb6a",
    "red": "#c62828",
    "dark-red": "#8e0000",
    "semi-dark-red": "#b71c1c",
    "light-red": "#e57373",
    "orange": "#e65100",
    "dark-orange": "#bf360c",
    "light-orange": "#ffa726",
    "yellow": "#f9a825",
    "dark-yellow": "#f57f17",
    "blue": "#1565c0",
    "purple": "#6a1b9a",
    "text": "#222222",
    "transparent": "#ffffff",
}
INK = "#222222"
MUTED = "#666666"
PALETTE = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
    "#393b79",
    "#ad494a",
    "#637939",
    "#8c6d31",
    "#7b4173",
    "#3182bd",
]


def colour(name: str | None) -> str:
    if not name:
        return INK
    return COLOURS.get(name, name if name.startswith("#") else INK)


def number(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= limit:
            return f"{v / limit:.3g}{suffix}"
    if a < 0.001:
        return f"{v:.1e}"
    return f"{v:.3g}"


def with_unit(v: float, unit: str | None) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    if unit == "percentunit":
        return f"{v * 100:.3g}%" if v else "0%"
    if unit == "percent":
        return f"{v:.3g}%" if v else "0%"
    if unit == "s":
        a = abs(v)
        if a == 0:
            return "0 s"
        if a < 1e-3:
            return f"{v * 1e6:.3g} µs"
        if a < 1:
            return f"{v * 1e3:.3g} ms"
        if a < 120:
            return f"{v:.3g} s"
        if a < 7200:
            return f"{v / 60:.3g} min"
        return f"{v / 3600:.3g} h"
    if unit == "ms":
        return with_unit(v / 1000, "s")
    if unit == "reqps":
        return f"{number(v)} req/s"
    if unit == "ops":
        return f"{number(v)} ops/s"
    if unit == "currencyUSD":
        return f"${v:,.2f}" if abs(v) >= 0.995 or v == 0 else f"${v:.2g}"
    if unit == "bytes":
        for limit, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(v) >= limit:
                return f"{v / limit:.3g} {suffix}"
        return f"{v:.0f} B"
    if unit in (None, "", "short", "none"):
        return number(v)
    return f"{number(v)} {unit}"


def threshold_colour(defaults: dict, value: float | None) -> str:
    steps = (defaults.get("thresholds") or {}).get("steps") or []
    chosen = None
    for step in steps:
        if step.get("value") is None or (value is not None and value >= step["value"]):
            chosen = step.get("color")
    return colour(chosen) if chosen else INK


def value_text(defaults: dict, value: float | None) -> tuple[str, str | None]:
    """The value as Grafana would print it: a value mapping's text and colour, or value and unit."""
    for mapping in defaults.get("mappings") or []:
        if mapping.get("type") == "value" and value is not None and math.isfinite(value):
            for key, result in (mapping.get("options") or {}).items():
                try:
                    if float(key) == value:
                        return result.get("text", key), result.get("color")
                except ValueError:
                    pass
    return with_unit(value, defaults.get("unit")), None


def last_not_null(values: list[float]) -> float | None:
    for v in reversed(values):
        if math.isfinite(v):
            return v
    return None


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------


@dataclass
class Canvas:
    fig: plt.Figure
    width_in: float
    height_in: float
    col_in: float
    row_in: float
    top_in: float  # space above the grid

    def rect(self, pos: dict, inset: float = 0.04) -> tuple[float, float, float, float]:
        """Figure coordinates (left, bottom, width, height) of a gridPos, with a gap around."""
        x = pos.get("x", 0) * self.col_in + inset
        w = pos.get("w", 12) * self.col_in - 2 * inset
        y = self.top_in + pos.get("y", 0) * self.row_in + inset
        h = pos.get("h", 8) * self.row_in - 2 * inset
        return x / self.width_in, 1 - (y + h) / self.height_in, w / self.width_in, h / self.height_in

    def sub(self, rect, left_in=0.0, right_in=0.0, top_in=0.0, bottom_in=0.0):
        """A rectangle inside ``rect``, with margins in inches."""
        x, y, w, h = rect
        return (
            x + left_in / self.width_in,
            y + bottom_in / self.height_in,
            w - (left_in + right_in) / self.width_in,
            h - (top_in + bottom_in) / self.height_in,
        )


def fit_text(text_artist, width_px: float, min_size: float = 7.0) -> None:
    """Shrink a text to ``width_px``, then shorten it with an ellipsis if it still does not fit."""
    renderer = text_artist.figure.canvas.get_renderer()
    while text_artist.get_window_extent(renderer).width > width_px and text_artist.get_fontsize() > min_size:
        text_artist.set_fontsize(text_artist.get_fontsize() - 0.5)
    full = text_artist.get_text()
    cut = len(full)
    while text_artist.get_window_extent(renderer).width > width_px and cut > 1:
        cut -= 1
        text_artist.set_text(full[:cut].rstrip() + "…")


def frame(canvas: Canvas, rect, title: str) -> None:
    narrow = rect[2] * canvas.width_in < 2.0
    ax = canvas.fig.add_axes(rect)
    ax.set_axis_off()
    ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, facecolor="white", edgecolor="#c8c8c8", lw=0.8))
    text = ax.text(
        0.08 / (rect[2] * canvas.width_in),
        1 - 0.07 / (rect[3] * canvas.height_in),
        title,
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize=8.5 if narrow else 9.5,
        fontweight="bold",
        color=INK,
    )
    fit_text(text, (rect[2] * canvas.width_in - 0.14) * canvas.fig.dpi)


def no_data(canvas: Canvas, rect) -> None:
    ax = canvas.fig.add_axes(rect)
    ax.set_axis_off()
    ax.text(0.5, 0.45, "No data", ha="center", va="center", fontsize=12, color=COLOURS["red"], fontweight="bold")


def draw_row(canvas: Canvas, panel: dict) -> None:
    rect = canvas.rect(panel["gridPos"], inset=0.02)
    ax = canvas.fig.add_axes(rect)
    ax.set_axis_off()
    ax.text(
        0.004,
        0.25,
        panel.get("title", ""),
        transform=ax.transAxes,
        ha="left",
        va="bottom",
        fontsize=12,
        fontweight="bold",
        color=INK,
    )
    ax.plot([0, 1], [0.12, 0.12], transform=ax.transAxes, color="#999999", lw=0.8)


def draw_timeseries(canvas: Canvas, panel: dict, series: list[Series]) -> None:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    custom = defaults.get("custom", {})
    unit = defaults.get("unit")
    rect = canvas.rect(panel["gridPos"])
    frame(canvas, rect, panel.get("title", ""))
    body = canvas.sub(rect, top_in=0.32, bottom_in=0.06, left_in=0.08, right_in=0.1)
    if not series:
        no_data(canvas, body)
        return
    # Legend (placement bottom, Grafana's table of the panel's calcs): rows that fit below.
    calcs = [
        c
        for c in panel.get("options", {}).get("legend", {}).get("calcs", [])
        if c in ("lastNotNull", "last", "max", "min", "mean")
    ]
    line_in = 0.145
    max_rows = max(2, int(body[3] * canvas.height_in * 0.36 / line_in) - 1)
    ordered = sorted(range(len(series)), key=lambda k: -(max(series[k].finite()) if series[k].finite() else 0))
    shown = sorted(ordered[:max_rows] if len(series) > max_rows else ordered)
    legend_rows = len(shown) + (1 if len(series) > len(shown) else 0) + (1 if calcs else 0)
    legend_in = legend_rows * line_in + 0.05
    plot = canvas.sub(body, left_in=0.62, bottom_in=legend_in + 0.22)
    ax = canvas.fig.add_axes(plot)
    times = [dt.datetime.fromtimestamp(t) for t in series[0].times]
    colours = [PALETTE[k % len(PALETTE)] for k in range(len(series))]
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    width = custom.get("lineWidth", 1) + 0.4
    fill_alpha = min(0.3, custom.get("fillOpacity", 0) / 100)
    if stacked:
        base = [0.0] * len(times)
        for s, c in zip(series, colours, strict=False):
            top = [b + (v if math.isfinite(v) else 0.0) for b, v in zip(base, s.values, strict=True)]
            ax.fill_between(times, base, top, color=c, alpha=max(fill_alpha, 0.25), lw=0)
            ax.plot(times, top, color=c, lw=width)
            base = top
        data = base
    else:
        data = []
        for s, c in zip(series, colours, strict=False):
            ax.plot(times, s.values, color=c, lw=width)
            if fill_alpha and len(series) <= 3:  # more fills than that only muddy the lines
                ax.fill_between(
                    times,
                    0,
                    [v if math.isfinite(v) else math.nan for v in s.values],
                    color=c,
                    alpha=fill_alpha * 0.6,
                    lw=0,
                )
            data.extend(s.finite())
    lo, hi = min(data + [0.0]), max(data + [0.0])
    ymin = defaults.get("min", 0.0 if lo >= 0 else None)
    ymax = defaults.get("max")
    if ymax is None:
        ymax = hi * 1.08 if hi > 0 else (1.0 if lo >= 0 else 0.0)
    if ymin is None:
        ymin = lo * 1.08
    if ymax <= ymin:
        ymax = ymin + 1
    ax.set_ylim(ymin, ymax)
    ax.set_xlim(times[0], times[-1])
    if custom.get("thresholdsStyle", {}).get("mode", "off") != "off":
        for step in (defaults.get("thresholds") or {}).get("steps", []):
            if step.get("value") is not None and ymin <= step["value"] <= ymax:
                ax.axhline(step["value"], color=colour(step.get("color")), lw=1, ls="--", alpha=0.8)
    mapped = {}
    for mapping in defaults.get("mappings") or []:
        if mapping.get("type") == "value":
            mapped.update({float(k): v.get("text", k) for k, v in mapping.get("options", {}).items()})
    if mapped:
        ax.set_yticks(sorted(mapped))
        ax.set_yticklabels([mapped[k] for k in sorted(mapped)])
    else:
        durations = [s for s in (30, 60, 120, 300, 600, 900, 1800, 3600, 7200) if ymax / s <= 5]
        if unit == "s" and ymax > 90 and durations:
            ax.yaxis.set_major_locator(MultipleLocator(durations[0]))  # whole minutes, not 80 s
        else:
            counts = unit in (None, "", "short", "none") and all(float(v).is_integer() for v in data)
            ax.yaxis.set_major_locator(MaxNLocator(nbins=4, min_n_ticks=2, integer=counts))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: with_unit(v, unit)))
    ax.xaxis.set_major_locator(mdates.MinuteLocator())
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    ax.tick_params(labelsize=7.5, colors=MUTED, length=2)
    ax.grid(True, color="#e6e6e6", lw=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#bbbbbb")

    # the legend, as a table: swatch, name, then the calcs right-aligned
    lax = canvas.fig.add_axes(canvas.sub(body, left_in=0.05, top_in=body[3] * canvas.height_in - legend_in))
    lax.set_axis_off()
    lax.set_xlim(0, body[2] * canvas.width_in - 0.05)
    lax.set_ylim(legend_in, 0)
    right = body[2] * canvas.width_in - 0.1
    names = {"lastNotNull": "last", "last": "last", "max": "max", "min": "min", "mean": "mean"}
    col_w = 0.85
    y = 0.02
    if calcs:
        for n, calc in enumerate(reversed(calcs)):
            lax.text(
                right - n * col_w, y, names[calc], ha="right", va="top", fontsize=7, color=MUTED, fontweight="bold"
            )
        y += line_in
    for k in shown:
        s = series[k]
        lax.add_line(Line2D([0.02, 0.22], [y + 0.065, y + 0.065], color=colours[k], lw=2.2))
        lax.text(0.3, y, s.label or "value", ha="left", va="top", fontsize=7.5, color=INK)
        values = s.finite()
        for n, calc in enumerate(reversed(calcs)):
            v = {
                "lastNotNull": last_not_null(s.values),
                "last": s.values[-1],
                "max": max(values),
                "min": min(values),
                "mean": sum(values) / len(values),
            }[calc]
            lax.text(right - n * col_w, y, value_text(defaults, v)[0], ha="right", va="top", fontsize=7.5, color=INK)
        y += line_in
    if len(series) > len(shown):
        lax.text(
            0.3,
            y,
            f"+ {len(series) - len(shown)} smaller series drawn, not listed",
            ha="left",
            va="top",
            fontsize=7,
            color=MUTED,
            style="italic",
        )


def draw_stat(canvas: Canvas, panel: dict, series: list[Series]) -> None:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    options = panel.get("options", {})
    rect = canvas.rect(panel["gridPos"])
    frame(canvas, rect, panel.get("title", ""))
    body = canvas.sub(rect, top_in=0.3, bottom_in=0.06, left_in=0.06, right_in=0.06)
    if not series:
        no_data(canvas, body)
        return
    calc = (options.get("reduceOptions", {}).get("calcs") or ["lastNotNull"])[0]
    shown = series[:4]
    ax = canvas.fig.add_axes(body)
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    width_in, height_in = body[2] * canvas.width_in, body[3] * canvas.height_in
    for n, s in enumerate(shown):
        values = s.finite()
        v = {"max": max(values), "min": min(values), "mean": sum(values) / len(values), "last": s.values[-1]}.get(
            calc, last_not_null(s.values)
        )
        text, mapped_colour = value_text(defaults, v)
        c = colour(mapped_colour) if mapped_colour else threshold_colour(defaults, v)
        x0, x1 = n / len(shown), (n + 1) / len(shown)
        if options.get("colorMode", "value") == "background":
            ax.add_patch(Rectangle((x0 + 0.01, 0), x1 - x0 - 0.02, 1, facecolor=c, alpha=0.1, lw=0))
        if options.get("graphMode", "none") == "area" and len(values) > 1:
            lo, hi = min(values), max(values)
            span = (hi - lo) or 1.0
            xs = [x0 + (x1 - x0) * k / (len(s.values) - 1) for k in range(len(s.values))]
            ys = [0.02 + 0.3 * ((v - lo) / span) if math.isfinite(v) else math.nan for v in s.values]
            ax.plot(xs, ys, color=c, lw=1, alpha=0.6)
            ax.fill_between(xs, 0.02, ys, color=c, alpha=0.12, lw=0)
        size = min(24, height_in * 72 * 0.42, (x1 - x0) * width_in * 72 / (0.62 * max(len(text), 3)))
        ax.text((x0 + x1) / 2, 0.58, text, ha="center", va="center", fontsize=size, fontweight="bold", color=c)
        if len(shown) > 1:
            ax.text((x0 + x1) / 2, 0.93, s.label, ha="center", va="top", fontsize=7, color=MUTED)


def draw_gauge(canvas: Canvas, panel: dict, series: list[Series]) -> None:
    """gauge and bargauge: the latest value of each series as a bar between min and max."""
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    rect = canvas.rect(panel["gridPos"])
    frame(canvas, rect, panel.get("title", ""))
    body = canvas.sub(rect, top_in=0.32, bottom_in=0.1, left_in=0.1, right_in=0.1)
    if not series:
        no_data(canvas, body)
        return
    latest = [(s.label, last_not_null(s.values)) for s in series]
    vmin = defaults.get("min", 0.0)
    vmax = defaults.get(
        "max",
        1.0
        if defaults.get("unit") == "percentunit"
        else 100.0
        if defaults.get("unit") == "percent"
        else max(v for _, v in latest) or 1.0,
    )
    ax = canvas.fig.add_axes(body)
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(len(latest), 0)
    for n, (label, v) in enumerate(latest):
        c = threshold_colour(defaults, v) if (defaults.get("thresholds") or {}).get("steps") else PALETTE[0]
        frac = min(1.0, max(0.0, (v - vmin) / ((vmax - vmin) or 1)))
        ax.add_patch(Rectangle((0, n + 0.45), 1, 0.4, facecolor="#eeeeee", lw=0))
        ax.add_patch(Rectangle((0, n + 0.45), frac, 0.4, facecolor=c, lw=0))
        ax.text(0, n + 0.4, label if len(latest) > 1 else "", ha="left", va="bottom", fontsize=7.5, color=INK)
        ax.text(1, n + 0.4, value_text(defaults, v)[0], ha="right", va="bottom", fontsize=9, fontweight="bold", color=c)


def draw_table(canvas: Canvas, panel: dict, series: list[Series]) -> None:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    rect = canvas.rect(panel["gridPos"])
    frame(canvas, rect, panel.get("title", ""))
    body = canvas.sub(rect, top_in=0.32, bottom_in=0.06, left_in=0.1, right_in=0.1)
    if not series:
        no_data(canvas, body)
        return
    ax = canvas.fig.add_axes(body)
    ax.set_axis_off()
    rows = int(body[3] * canvas.height_in / 0.16)
    ax.set_xlim(0, 1)
    ax.set_ylim(rows, 0)
    ax.text(0, 0.2, "series", fontsize=7, color=MUTED, fontweight="bold", va="top")
    ax.text(1, 0.2, "latest", fontsize=7, color=MUTED, fontweight="bold", va="top", ha="right")
    for n, s in enumerate(series[: rows - 1], start=1):
        v = last_not_null(s.values)
        ax.text(0, n + 0.2, s.label, fontsize=7.5, color=INK, va="top")
        ax.text(
            1,
            n + 0.2,
            value_text(defaults, v)[0],
            fontsize=7.5,
            color=threshold_colour(defaults, v),
            va="top",
            ha="right",
        )


DRAW = {
    "timeseries": draw_timeseries,
    "graph": draw_timeseries,
    "stat": draw_stat,
    "singlestat": draw_stat,
    "gauge": draw_gauge,
    "bargauge": draw_gauge,
    "table": draw_table,
}


def render(
    dashboard: dict,
    data: dict[int, list[Series]],
    out: Path,
    start: float,
    end: float,
    rate_interval: str,
    width_in: float,
    dpi: int,
) -> None:
    panels = flat_panels(dashboard["panels"])
    col_in = width_in / 24
    row_in = col_in * 0.76  # Grafana's grid: 30 px rows + 8 px gaps against ~50 px columns
    top_in, caption_in = 0.55, 0.55
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels if "gridPos" in p)
    height_in = top_in + rows * row_in + caption_in
    plt.rcParams.update({"font.family": "DejaVu Sans", "axes.linewidth": 0.8, "text.parse_math": False})
    fig = plt.figure(figsize=(width_in, height_in), facecolor="#f4f5f7")
    canvas = Canvas(fig, width_in, height_in, col_in, row_in, top_in)
    fig.text(
        0.06 / width_in,
        1 - 0.12 / height_in,
        f"{dashboard.get('title', 'Dashboard')} — dashboard preview",
        ha="left",
        va="top",
        fontsize=13,
        fontweight="bold",
        color=INK,
    )
    first, last = dt.datetime.fromtimestamp(start).astimezone(), dt.datetime.fromtimestamp(end).astimezone()
    fig.text(
        1 - 0.06 / width_in,
        1 - 0.14 / height_in,
        f"{first:%H:%M}–{last:%H:%M} {last:%Z} · $__rate_interval = {rate_interval} · $namespace = All",
        ha="right",
        va="top",
        fontsize=8.5,
        color=MUTED,
    )
    for panel in panels:
        if "gridPos" not in panel:
            continue
        if panel.get("type") == "row":
            draw_row(canvas, panel)
        else:
            DRAW.get(panel.get("type"), draw_timeseries)(canvas, panel, data.get(id(panel), []))
    date = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    fig.text(
        0.5,
        0.28 / height_in,
        f"Rendered from {DASHBOARD_NAME} by {TOOL} —\n"
        f"data from a real Prometheus scraping the local stack under load, {date}",
        ha="center",
        va="center",
        fontsize=8.5,
        color=MUTED,
        style="italic",
        linespacing=1.5,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    plt.close(fig)
    # flat colours: a 256-colour palette keeps it sharp at a quarter of the size
    image = Image.open(png).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(out, optimize=True)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="steady load after the burst (default 4)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png", help="image to write")
    parser.add_argument("--rate-interval", default="30s", help="$__rate_interval (Prometheus scrapes every 1 s)")
    parser.add_argument(
        "--latency-scale",
        type=float,
        default=0.1,
        help="the sandbox's factor on real provider latencies (the tests use 0.01)",
    )
    parser.add_argument("--width", type=float, default=10.0, help="image width in inches")
    parser.add_argument("--dpi", type=int, default=130)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, Prometheus data)")
    args = parser.parse_args(argv)

    if not PROMETHEUS.exists():
        print(f"{PROMETHEUS.relative_to(ROOT)} is missing: run `make tools`", file=sys.stderr)
        return 2
    dashboard = json.loads(DASHBOARD.read_text())
    variables = dashboard_variables(dashboard)
    variables["$__rate_interval"] = args.rate_interval

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)

    workdir = Path(tempfile.mkdtemp(prefix="unilingo-dashboard-"))
    failed = True
    t0 = time.monotonic()
    try:
        with contextlib.ExitStack() as started:
            print(
                f"dashboard preview: starting Redis, the sandbox, the API, two workers and Prometheus ({workdir})",
                flush=True,
            )
            redis_server = started.enter_context(RedisServer(workdir=workdir / "redis"))
            sandbox = start_sandbox(workdir, latency_scale=args.latency_scale)
            started.callback(sandbox.stop)
            stack = started.enter_context(run_stack(redis_server.url, sandbox.url, workdir))
            # A shorter breaker than the test's 10 minutes: it opens, half-opens and opens again.
            PolicyStore(stack.redis).write(
                ProviderPolicy(
                    provider="azure-vision",
                    breaker=BreakerPolicy(failure_threshold=2, open_seconds=60),
                    retry=RetryPolicy(attempts=1, backoff_seconds=1, max_backoff_seconds=1),
                )
            )
            start = float(math.floor(time.time()))
            with httpx.Client(base_url=stack.api.url, timeout=15) as http:
                print(
                    f"dashboard preview: stack up after {time.monotonic() - t0:.0f} s; load for {args.minutes:g} min",
                    flush=True,
                )
                drive_load(stack, http, sandbox.url)
                counts = steady_load(stack, http, sandbox.url, args.minutes * 60)
            time.sleep(3)  # the last scrapes
            end = float(math.floor(time.time()))
            print(
                f"dashboard preview: {counts.accepted} jobs accepted, {counts.refused} refused by the quota"
                + (f", unexpected answers {counts.errors}" if counts.errors else ""),
                flush=True,
            )
            variables["$__range"] = f"{int(end - start)}s"
            step = max(1.0, round((end - start) / 200))
            data, empty_targets, no_data_panels = {}, [], []
            for panel in flat_panels(dashboard["panels"]):
                if panel.get("type") == "row":
                    continue
                series, empty = panel_series(stack.prometheus_url, panel, variables, start, end, step)
                data[id(panel)] = series
                if not series:
                    no_data_panels.append(panel.get("title", f"panel {panel.get('id')}"))
                else:
                    empty_targets.extend(f"{panel.get('title')} {e}" for e in empty)
        # everything is stopped here; draw
        render(dashboard, data, args.out, start, end, args.rate_interval, args.width, args.dpi)
        print(f"dashboard preview: wrote {args.out} in {time.monotonic() - t0:.0f} s", flush=True)
        for line in empty_targets:
            print(f"  a query of a panel with data returned nothing: {line}", flush=True)
        failed = False
        if no_data_panels:
            print("dashboard preview: panels without data: " + "; ".join(no_data_panels), file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        print("dashboard preview: interrupted; everything it started is stopped", file=sys.stderr)
        failed = False
        return 130
    finally:
        if failed or args.keep:
            print(f"dashboard preview: logs and data kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
