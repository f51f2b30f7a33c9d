#!/usr/bin/env python3
"""Plot latency over time around a reload, one panel per server, side by side.

    reload_plot.py --out reload.png "LABEL=DIR" "LABEL=DIR"...

Each DIR is a run of `reload_load.py run` (requests.tsv, meta.json). x is
the request's start in seconds since the reload, y its latency in ms on a
log scale: fast requests by the version that answered, the 2 s CPU-bound
requests in grey, failures in red. The rollout window is shaded.

Uses matplotlib when it is installed; otherwise writes an SVG by hand (the
same file name with .svg). Prints the path it wrote.
"""

import argparse
import math
import os
import sys

from xml.sax.saxutils import escape

sys.dont_write_bytecode = True  # no __pycache__ beside the sources
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reload_load import analyse, failed, read_run  # noqa: E402

OLD, NEW, BURN, FAIL = "#1f77b4", "#ff7f0e", "#7f7f7f", "#d62728"


def series(meta, reqs, xmin):
    """(x, latency ms, colour) per request that started after xmin."""
    pts = []
    for r in reqs:
        if r["start"] < xmin:
            continue
        lat = max(r["end"] - r["start"], 1e-5) * 1e3
        if failed(r, meta):
            c = FAIL
        elif r["kind"] == "burn":
            c = BURN
        elif r["version"] == meta["new"]:
            c = NEW
        else:
            c = OLD
        pts.append((r["start"], lat, c))
    return pts


def load(specs):
    runs = []
    for spec in specs:
        label, _, d = spec.partition("=")
        meta, reqs, _ = read_run(d)
        a = analyse(meta, reqs)
        xmin = meta["load_start"] - meta["t0"] + 1.0
        runs.append((label, meta, a, series(meta, reqs, xmin), xmin))
    return runs


def subtitle(a):
    def f(s):
        return "—" if s is None else ("%.1f ms" % (s * 1e3) if s < 1 else "%.2f s" % s)

    return "p99 steady %s, during rollout %s (CO-corrected %s); max %s" % (
        f(a["steady_p99"]), f(a["during_p99"]), f(a["during_p99_co"]), f(a["longest"]))


def plot_matplotlib(runs, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.patches
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, len(runs), figsize=(6.5 * len(runs), 4.6), sharey=True,
                             squeeze=False)
    for ax, (label, meta, a, pts, xmin) in zip(axes[0], runs):
        # Draw the grey burn requests first, failures last (on top).
        order = {BURN: 0, OLD: 1, NEW: 2, FAIL: 3}
        pts = sorted(pts, key=lambda p: order[p[2]])
        ax.axvspan(0, a["window_end"], color="#cccccc", alpha=0.35, lw=0, zorder=0)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=[p[2] for p in pts],
                   s=4, linewidths=0, rasterized=True, zorder=2)
        # A slow request is also drawn as a bar from its start to its end, so
        # a stall shows as long as it lasted.
        slow = [p for p in pts if p[1] >= 20.0]
        if slow:
            ax.hlines([p[1] for p in slow], [p[0] for p in slow],
                      [p[0] + p[1] / 1e3 for p in slow], colors=[p[2] for p in slow],
                      lw=1.2, zorder=2)
        ax.axvline(0, color="black", lw=1)
        if a["first_new"] is not None:
            ax.axvline(a["first_new"], color=NEW, lw=1, ls="--")
        if a["steady_p99"]:
            ax.axhline(a["steady_p99"] * 1e3, color="black", lw=0.8, ls=":")
            ax.axhline(2 * a["steady_p99"] * 1e3, color=FAIL, lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlim(xmin, max(p[0] for p in pts) + 0.2 if pts else 1)
        ax.set_title("%s\n%s" % (label, subtitle(a)), fontsize=10)
        ax.set_xlabel("seconds since the reload (dot: request start; bar: until its end)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("latency (ms, log scale)")
    legend = [
        Line2D([], [], marker="o", ls="", color=OLD, label="fast, old version (v1)"),
        Line2D([], [], marker="o", ls="", color=NEW, label="fast, new version (v2)"),
        Line2D([], [], marker="o", ls="", color=BURN, label="?burn=2000 (2 s of CPU)"),
        Line2D([], [], marker="o", ls="", color=FAIL, label="failed"),
        Line2D([], [], color="black", lw=1, label="reload"),
        Line2D([], [], color=NEW, lw=1, ls="--", label="first new-version answer"),
        Line2D([], [], color="black", lw=0.8, ls=":", label="steady p99"),
        Line2D([], [], color=FAIL, lw=0.8, ls=":", label="2 × steady p99"),
        matplotlib.patches.Patch(color="#cccccc", alpha=0.5, label="rollout window"),
    ]
    fig.legend(handles=legend, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(out, dpi=110)
    return out


def plot_svg(runs, out):
    """The same picture without matplotlib: hand-written SVG."""
    out = os.path.splitext(out)[0] + ".svg"
    pw, ph, ml, mr, mt, mb = 520, 320, 60, 15, 50, 45
    width, height = len(runs) * (pw + ml + mr), ph + mt + mb + 40
    lats = [p[1] for r in runs for p in r[3]] or [1.0]
    ylo = 10 ** math.floor(math.log10(max(min(lats), 1e-3)))
    yhi = 10 ** math.ceil(math.log10(max(lats)))
    svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="11">' % (width, height),
           '<rect width="100%" height="100%" fill="white"/>']
    for i, (label, meta, a, pts, xmin) in enumerate(runs):
        ox = i * (pw + ml + mr) + ml
        xmax = max([p[0] for p in pts] + [1.0]) + 0.2

        def X(x):
            return ox + (x - xmin) / (xmax - xmin) * pw

        def Y(y):
            return mt + ph - (math.log10(y) - math.log10(ylo)) / (
                math.log10(yhi) - math.log10(ylo)) * ph

        svg.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#cccccc" '
                   'fill-opacity="0.35"/>' % (X(0), mt, X(a["window_end"]) - X(0), ph))
        e = ylo
        while e <= yhi:
            svg.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>'
                       '<text x="%d" y="%.1f" text-anchor="end">%g</text>'
                       % (ox, ox + pw, Y(e), Y(e), ox - 4, Y(e) + 4, e))
            e *= 10
        for t in range(math.ceil(xmin), int(xmax) + 1):
            svg.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>'
                       % (X(t), mt + ph + 14, t))
        seen = set()  # one dot per 2×2 pixels and colour keeps the file small
        for x, y, c in pts:
            key = (2 * round(X(x) / 2), 2 * round(Y(y) / 2), c)
            if key not in seen:
                seen.add(key)
                svg.append('<circle cx="%d" cy="%d" r="1.3" fill="%s"/>' % key)
            if y >= 20.0:
                svg.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s"/>'
                           % (X(x), X(min(x + y / 1e3, xmax)), Y(y), Y(y), c))
        svg.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="black"/>'
                   % (X(0), X(0), mt, mt + ph))
        if a["steady_p99"]:
            for k, col in ((1, "black"), (2, FAIL)):
                y = Y(k * a["steady_p99"] * 1e3)
                svg.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" '
                           'stroke-dasharray="2,3"/>' % (ox, ox + pw, y, y, col))
        svg.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="black"/>'
                   % (ox, mt, pw, ph))
        svg.append('<text x="%d" y="%d" text-anchor="middle" font-size="12">%s</text>'
                   % (ox + pw / 2, mt - 24, escape(label)))
        svg.append('<text x="%d" y="%d" text-anchor="middle">%s</text>'
                   % (ox + pw / 2, mt - 8, escape(subtitle(a))))
        svg.append('<text x="%d" y="%d" text-anchor="middle">seconds since the reload</text>'
                   % (ox + pw / 2, mt + ph + 30))
    svg.append('<text x="10" y="%d">latency in ms (log); blue: old version, orange: new, '
               'grey: ?burn=2000, red: failed; shaded: rollout window; dotted: steady p99 '
               'and 2×</text>' % (height - 8))
    svg.append("</svg>")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(svg) + "\n")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--svg", action="store_true", help="write the hand-made SVG even with matplotlib")
    ap.add_argument("runs", nargs="+", help="LABEL=DIR")
    a = ap.parse_args()
    runs = load(a.runs)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        a.svg = True
    if a.svg:
        print(plot_svg(runs, a.out))
        return 0
    print(plot_matplotlib(runs, a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
