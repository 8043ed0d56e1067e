#!/usr/bin/env python3
"""Render deploy/grafana/llmux-dashboard.json's panels from a real Prometheus into one PNG.

Grafana is the dashboard's real home; this draws the same panels (same queries, titles,
units, thresholds and grid) where no Grafana runs, e.g. for docs/observability.md.

  # from a Prometheus that scrapes llmux, the last 30 minutes
  scripts/render-dashboard.py --prometheus http://127.0.0.1:9090 --minutes 30

  # start a real llmux and a real Prometheus, put a mixed load on it, then render
  scripts/render-dashboard.py --demo --load-seconds 150 -o docs/images/dashboard.png

Needs matplotlib, which is not one of llmux's dependencies:
  .venv/bin/pip install matplotlib
--demo also needs Debian's prometheus package and the test extras (scripts/setup test).
"""

from __future__ import annotations

import argparse
import io
import math
import re
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "llmux-dashboard.json"

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes
    from matplotlib.ticker import FuncFormatter
except ImportError:
    sys.exit(
        "render-dashboard needs matplotlib (not an llmux dependency): .venv/bin/pip install matplotlib"
    )

BG, PANEL, TEXT, DIM, GRID = "#111217", "#181b1f", "#d8d9da", "#8e8e8e", "#2c3235"
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a"]
NAMED = {"green": "#73bf69", "orange": "#ff9830", "red": "#f2495c", "yellow": "#fade2a"}
ROW_H = 0.45  # figure inches per grid row (Grafana: 30 px)
CLOCK = ["%H:%M"]  # the time axis' format: seconds too for a short range


# ------------------------------------------------------------------ dashboard and data


def load_dashboard() -> dict[str, Any]:
    import json

    return dict(json.loads(DASHBOARD.read_text()))


def concrete(expr: str, rate_interval: str, range_s: int) -> str:
    for name, value in [
        ("$__rate_interval", rate_interval),
        ("$__interval", rate_interval),
        ("$__range", f"{range_s}s"),
        ("${model}", ".*"),
        ("$model", ".*"),
    ]:
        expr = expr.replace(name, value)
    return expr


def legend(fmt: str, labels: dict[str, str]) -> str:
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in labels.items()) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


Series = tuple[str, list[float], list[float]]  # label, times, values


def fetch(
    prometheus: str, panel: dict[str, Any], start: float, end: float, step: float, rate: str
) -> list[Series]:
    out: list[Series] = []
    for target in panel.get("targets", []):
        expr = concrete(target["expr"], rate, int(end - start))
        reply = httpx.get(
            f"{prometheus}/api/v1/query_range",
            params={"query": expr, "start": start, "end": end, "step": step},
            timeout=30,
        ).json()
        if reply.get("status") != "success":
            raise SystemExit(f"{panel['title']}: {expr}: {reply.get('error')}")
        for series in reply["data"]["result"]:
            times = [float(t) for t, _ in series["values"]]
            values = [float(v) for _, v in series["values"]]
            out.append((legend(target.get("legendFormat", ""), series["metric"]), times, values))
    return out


# ------------------------------------------------------------------------- formatting


def formatter(unit: str, decimals: int | None = None) -> FuncFormatter:
    def fmt(value: float, _pos: object = None) -> str:
        if not math.isfinite(value):
            return "-"
        if unit == "percentunit":
            return f"{value * 100:.{1 if decimals is None else decimals}f}%"
        if unit == "s":
            if value == 0:
                return "0"
            return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.3g} s"
        suffix = {"reqps": " req/s"}.get(unit, "")
        if decimals is not None:
            return f"{value:.{decimals}f}{suffix}"
        if abs(value) >= 1000:
            return f"{value / 1000:.1f}k{suffix}"
        return f"{value:.3g}{suffix}"

    return FuncFormatter(fmt)


def threshold_steps(panel: dict[str, Any]) -> list[tuple[float | None, str]]:
    steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
    return [(s["value"], NAMED.get(s["color"], s["color"])) for s in steps]


def style(ax: Axes, title: str) -> None:
    ax.set_facecolor(PANEL)
    for side in ax.spines.values():
        side.set_color(GRID)
    ax.tick_params(colors=DIM, labelsize=7)
    ax.set_title(title, color=TEXT, fontsize=9, loc="left", pad=4)


def no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "No data", color=DIM, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def dates(times: list[float]) -> list[datetime]:
    return [datetime.fromtimestamp(t) for t in times]


# ------------------------------------------------------------------------ the panels


def draw_timeseries(ax: Axes, panel: dict[str, Any], series: list[Series]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    unit, custom = defaults.get("unit", "short"), defaults.get("custom", {})
    if not series:
        return no_data(ax)
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    base: list[float] | None = None
    for i, (label, times, values) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        if stacked:
            below = base or [0.0] * len(values)
            if len(below) != len(values):
                below = [0.0] * len(values)
            top = [b + (v if math.isfinite(v) else 0) for b, v in zip(below, values, strict=True)]
            ax.fill_between(dates(times), below, top, color=color, alpha=0.35, lw=0)
            ax.plot(dates(times), top, color=color, lw=1, label=label)
            base = top
        else:
            ax.plot(dates(times), values, color=color, lw=1.2, label=label)
            ax.fill_between(dates(times), values, color=color, alpha=0.08, lw=0)
    if custom.get("thresholdsStyle", {}).get("mode") == "line":
        for value, color in threshold_steps(panel):
            if value is not None:
                ax.axhline(value, color=color, lw=1, ls="--")
    ax.set_ylim(bottom=defaults.get("min", 0))
    if "max" in defaults:
        ax.set_ylim(top=defaults["max"] * 1.05)
    ax.yaxis.set_major_formatter(formatter(unit, defaults.get("decimals")))
    ax.xaxis.set_major_formatter(mdates.DateFormatter(CLOCK[0]))
    ax.grid(color=GRID, lw=0.5)
    ax.legend(loc="upper left", fontsize=6, frameon=False, labelcolor=TEXT, ncol=3)


def draw_stat(ax: Axes, panel: dict[str, Any], series: list[Series]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    fmt = formatter(defaults.get("unit", "short"), defaults.get("decimals"))
    ax.set_xticks([])
    ax.set_yticks([])
    finite = [(label, t, v) for label, t, v in series if any(math.isfinite(x) for x in v)]
    if not finite:
        return no_data(ax)
    label, times, values = finite[0]
    last = next(v for v in reversed(values) if math.isfinite(v))
    color = TEXT
    for value, step_color in threshold_steps(panel):
        if value is None or last >= value:
            color = step_color
    text = fmt(last)
    if panel["targets"][0].get("legendFormat", "").startswith("{{"):
        text = f"{text} {label}"  # e.g. the currency
    ax.text(0.5, 0.55, text, color=color, fontsize=17, ha="center", va="center",
            transform=ax.transAxes, weight="bold")  # fmt: skip
    spark = ax.inset_axes((0, 0, 1, 0.3))
    spark.fill_between(times, [v if math.isfinite(v) else 0 for v in values], color=color,
                       alpha=0.25, lw=0)  # fmt: skip
    spark.set_axis_off()


def draw_state_timeline(ax: Axes, panel: dict[str, Any], series: list[Series]) -> None:
    if not series:
        return no_data(ax)
    mapping = panel["fieldConfig"]["defaults"].get("mappings", [{}])[0].get("options", {})
    for row, (_label, times, values) in enumerate(series):
        for i, (t, v) in enumerate(zip(times, values, strict=True)):
            if not math.isfinite(v):
                continue
            state = mapping.get(str(int(v)), {"color": "green", "text": str(v)})
            end = times[i + 1] if i + 1 < len(times) else t + (t - times[i - 1] if i else 1)
            start_d, end_d = mdates.date2num(dates([t, end]))
            ax.barh(row, end_d - start_d, left=start_d, height=0.7,
                    color=NAMED.get(state["color"], state["color"]), lw=0)  # fmt: skip
    ax.set_yticks(range(len(series)), [s[0] for s in series], color=TEXT, fontsize=7)
    ax.invert_yaxis()
    ax.xaxis_date()
    ax.xaxis.set_major_formatter(mdates.DateFormatter(CLOCK[0]))
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=NAMED.get(m["color"], m["color"]))
        for m in mapping.values()
    ]
    ax.legend(handles, [m["text"] for m in mapping.values()], loc="lower right", fontsize=6,
              frameon=False, labelcolor=TEXT, ncol=3, bbox_to_anchor=(1, 1))  # fmt: skip


def render(prometheus: str, start: float, end: float, out: Path, rate: str) -> None:
    board = load_dashboard()
    items = board["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in items)
    fig = plt.figure(figsize=(16, rows * ROW_H + 0.6), facecolor=BG)
    top = 1 - 0.6 / (rows * ROW_H + 0.6)
    stamp = f"{datetime.fromtimestamp(start):%Y-%m-%d %H:%M} to {datetime.fromtimestamp(end):%H:%M}"
    fig.text(0.01, 1 - 0.2 / (rows * ROW_H + 0.6), f"{board['title']} dashboard", color=TEXT,
             fontsize=13, weight="bold", va="top")  # fmt: skip
    fig.text(0.99, 1 - 0.22 / (rows * ROW_H + 0.6),
             f"{stamp}, rate interval {rate}; the Grafana dashboard's queries, drawn from "
             "Prometheus by scripts/render-dashboard.py", color=DIM, fontsize=8, ha="right",
             va="top")  # fmt: skip
    step = max(1.0, (end - start) / 300)
    CLOCK[0] = "%H:%M:%S" if end - start < 900 else "%H:%M"

    def box(pos: dict[str, int], pad_top: float = 0.5) -> tuple[float, float, float, float]:
        x0, w = pos["x"] / 24, pos["w"] / 24
        y0 = top * (1 - (pos["y"] + pos["h"]) / rows)
        h = top * pos["h"] / rows
        return (x0 + 0.034, y0 + 0.012, w - 0.042, h - 0.012 - pad_top * 0.012)

    for panel in items:
        pos = panel["gridPos"]
        if panel["type"] == "row":
            fig.text(pos["x"] / 24 + 0.008, top * (1 - (pos["y"] + 0.6) / rows), panel["title"],
                     color=TEXT, fontsize=10, weight="bold")  # fmt: skip
            continue
        ax = fig.add_axes(box(pos))
        style(ax, panel["title"])
        series = fetch(prometheus, panel, start, end, step, rate)
        if panel["type"] == "stat":
            draw_stat(ax, panel, series)
        elif panel["type"] == "state-timeline":
            draw_state_timeline(ax, panel, series)
        else:
            draw_timeseries(ax, panel, series)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, facecolor=BG)
    plt.close(fig)
    from PIL import Image  # comes with matplotlib

    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB, {image.width}x{image.height})")


# ------------------------------------------------------------------------------ demo


def demo(seconds: float, out: Path, rate: str) -> None:
    """A real llmux and a real Prometheus (1 s scrapes) under a varying mixed load."""
    sys.path.insert(0, str(ROOT))
    import shutil

    from tests.support.prometheus import ALERTS, Load, Prometheus, start_llmux

    binary = shutil.which("prometheus")
    if binary is None:
        sys.exit("--demo needs prometheus: apt-get install --no-install-recommends prometheus")
    with tempfile.TemporaryDirectory(prefix="llmux-dashboard-") as tmp:
        home, data = Path(tmp, "home"), Path(tmp, "prometheus")
        home.mkdir()
        data.mkdir()
        server = start_llmux(home)
        prometheus = Prometheus.start(data, server.url.removeprefix("http://"),
                                      rule_files=(ALERTS,), binary=binary)  # fmt: skip
        try:
            prometheus.wait_for('up{job="llmux"} == 1')
            began = time.time()
            phases = (seconds / 3, 2 * seconds / 3)

            def pace(i: int) -> None:
                age = time.time() - began
                print(f"  round {i + 1} done at {age:.0f}s", flush=True)
                if age < phases[0]:
                    time.sleep(6)  # light traffic
                elif age > phases[1]:
                    time.sleep(2)  # busy, then heavy in between: back to back

            print(f"load for {seconds:.0f}s on {server.url}, Prometheus on {prometheus.url}")
            Load(server.url).run(until=time.monotonic() + seconds, each=pace)
            time.sleep(5)
            render(prometheus.url, began - 10, time.time(), out, rate)
        finally:
            prometheus.stop()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--prometheus", help="base URL of a Prometheus that scrapes llmux")
    where.add_argument(
        "--demo", action="store_true", help="start llmux and Prometheus, load, render"
    )
    parser.add_argument("--minutes", type=float, default=30, help="range to draw (--prometheus)")
    parser.add_argument("--load-seconds", type=float, default=150, help="load duration (--demo)")
    parser.add_argument(
        "--rate-interval", help="what $__rate_interval becomes (default: 1m, demo 20s)"
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=ROOT / "docs" / "images" / "dashboard.png"
    )
    args = parser.parse_args()
    if args.demo:
        demo(args.load_seconds, args.output, args.rate_interval or "20s")
    else:
        end = time.time()
        render(args.prometheus.rstrip("/"), end - args.minutes * 60, end, args.output,
               args.rate_interval or "1m")  # fmt: skip


if __name__ == "__main__":
    main()
