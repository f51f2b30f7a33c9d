#!/usr/bin/env python3
"""Turn the wrk outputs of one contrib/bench/run.sh run into a markdown table.

Input is a tab-separated file written by lib.sh, one line per measured row:

    server <TAB> keep-alive <TAB> wrk output file <TAB> master CPU ticks <TAB> master RSS kB
        [<TAB> total PSS kB <TAB> processes]

An output file ending in .json is oha's (`--output-format json`), from a
run at a fixed rate (app.sh --rate): the same figures, read from its
summary and percentiles.

The master columns are "-" when they were not measured (only herd's master
is measured: php-fpm's master and spawn-fcgi are not in the request path).
The PSS columns (app.sh) sum every process of the contender, manager
included; when any row has them, the table gains "total PSS" and its ratio.

A server and mode measured several times (rounds, interleaved with the
other contenders) make one row: the median of each figure, and the ratio
to the baseline taken round by round (the k-th run of a server against the
k-th run of the baseline, which ran next to it), its median and range. On
a small shared machine one run's ratio can be off by a tenth either way.

Standard library only, so the harness needs nothing beyond python3.
"""

import argparse
import json
import re
import statistics
import sys

# wrk prints durations as e.g. "812.00us", "1.23ms", "2.00s", "1.50m".
_UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
_DURATION = r"([0-9.]+)(us|ms|s|m|h)"


class LoadResult:
    """What both load generators' results answer."""

    @property
    def ok(self):
        return self.requests is not None and self.rps is not None

    @property
    def errors(self):
        return self.socket_errors + self.bad_status


class WrkResult(LoadResult):
    fixed_rate = False

    def __init__(self, text):
        self.text = text
        self.requests = self._int(r"^\s*(\d+) requests in ")
        self.rps = self._float(r"^Requests/sec:\s*([0-9.]+)")
        self.p50 = self._duration(r"^\s*50(?:\.0+)?%\s+" + _DURATION)
        self.p99 = self._duration(r"^\s*99(?:\.0+)?%\s+" + _DURATION)
        self.max = self._duration(r"^\s*Latency\s+\S+\s+\S+\s+" + _DURATION)
        self.mean = self._duration(r"^\s*Latency\s+" + _DURATION)
        self.connections = self._int(r"threads and (\d+) connections")
        self.seconds = self._duration(r"requests in " + _DURATION)
        # wrk only prints these lines when the counts are not zero.
        socket = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
            text,
        )
        self.socket_errors = sum(int(g) for g in socket.groups()) if socket else 0
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        self.bad_status = int(non2xx.group(1)) if non2xx else 0

    @property
    def unanswered(self):
        """Connections left without an answer, in whole-run equivalents.

        wrk keeps one request in flight on every connection for the whole
        run, and times only the requests that complete: a connection whose
        request the server never answers adds nothing to the latencies
        (nor to wrk's errors). By Little's law the connections that got
        answers number requests × mean latency ÷ run time; the rest were
        left waiting. php-fpm with nginx's upstream keep-alive leaves a
        connection waiting when it is not one of the ones its children
        hold."""
        if None in (self.requests, self.mean, self.connections, self.seconds):
            return None
        if not self.seconds:
            return None
        answered = self.requests * self.mean / self.seconds
        return max(0.0, self.connections - answered)

    def _match(self, pattern):
        return re.search(pattern, self.text, re.MULTILINE)

    def _int(self, pattern):
        m = self._match(pattern)
        return int(m.group(1)) if m else None

    def _float(self, pattern):
        m = self._match(pattern)
        return float(m.group(1)) if m else None

    def _duration(self, pattern):
        m = self._match(pattern)
        return float(m.group(1)) * _UNIT_US[m.group(2)] if m else None


class OhaResult(LoadResult):
    """oha's JSON summary, with the attributes WrkResult has.

    oha sends requests at a fixed rate (-q) and, with --latency-correction,
    times each from when it was due, not from when a connection was free to
    send it, so a server that falls behind shows in the latencies instead of
    slowing the load down (wrk keeps one request in flight per connection:
    a slow server gets fewer requests)."""

    fixed_rate = True

    def __init__(self, text):
        self.text = text
        self.requests = self.rps = self.p50 = self.p99 = self.max = self.mean = None
        self.seconds = self.connections = None
        self.socket_errors = self.bad_status = 0
        try:
            doc = json.loads(text)
            summary = doc["summary"]
            pct = doc["latencyPercentiles"]
            codes = doc.get("statusCodeDistribution") or {}
            errors = doc.get("errorDistribution") or {}
            self.seconds = summary["total"] * 1e6
            self.rps = summary["requestsPerSec"]
            self.requests = sum(codes.values()) + sum(errors.values())
            self.p50 = pct["p50"] * 1e6
            self.p99 = pct["p99"] * 1e6
            self.max = summary["slowest"] * 1e6
            self.mean = summary["average"] * 1e6
        except (ValueError, KeyError, TypeError):
            return
        self.bad_status = sum(n for code, n in codes.items() if int(code) >= 400)
        self.socket_errors = sum(errors.values())

    @property
    def unanswered(self):
        """Not a question at a fixed rate: every request is due at its time
        and timed from it, answered or late."""
        return None


def fmt_duration(us):
    if us is None:
        return "?"
    if us < 1e3:
        return f"{us:.0f} µs"
    if us < 1e6:
        return f"{us / 1e3:.2f} ms"
    return f"{us / 1e6:.2f} s"


def fmt_errors(r):
    if r.errors == 0:
        return "0"
    parts = []
    if r.bad_status:
        parts.append(f"{r.bad_status} status")
    if r.socket_errors:
        parts.append(f"{r.socket_errors} socket")
    return f"{r.errors} ({', '.join(parts)})"


def fmt_unanswered(w):
    """`0`, or how many of the connections waited the whole run."""
    if w.fixed_rate:
        return "—"
    n = w.unanswered
    if n is None:
        return "?"
    if n < 0.5:
        return "0"
    return f"{n:.0f} of {w.connections}"


def pss_cells(row, base_kb):
    """total PSS, its ratio to the baseline's in the same mode, processes."""
    kb = row["pss_kb"]
    if kb is None:
        return ["—", "—", "—"]
    ratio = f"{kb / base_kb:.2f}" if base_kb else "—"
    procs = str(row["procs"]) if row["procs"] is not None else "—"
    return [f"{kb / 1024:.1f} MiB", ratio, procs]


def read_rows(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            fields = line.split("\t")
            server, mode, wrk_file, ticks, rss = fields[:5]
            pss, procs = (fields[5:7] + ["-", "-"])[:2]
            parse = OhaResult if wrk_file.endswith(".json") else WrkResult
            with open(wrk_file, encoding="utf-8", errors="replace") as w:
                result = parse(w.read())
            rows.append(
                {
                    "server": server,
                    "mode": mode,
                    "wrk": result,
                    "wrk_file": wrk_file,
                    "ticks": None if ticks == "-" else int(ticks),
                    "rss_kb": None if rss == "-" else int(rss),
                    "pss_kb": None if pss == "-" else int(pss),
                    "procs": None if procs == "-" else int(procs),
                }
            )
    return rows


class Rounds:
    """Several runs of one server and mode: the median of each figure."""

    def __init__(self, results):
        ok = [r for r in results if r.ok]
        med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
        self.runs = results
        self.fixed_rate = any(r.fixed_rate for r in results)
        self.requests = med([r.requests for r in ok])
        self.rps = med([r.rps for r in ok])
        self.p50 = med([r.p50 for r in ok if r.p50 is not None])
        self.p99 = med([r.p99 for r in ok if r.p99 is not None])
        self.max = med([r.max for r in ok if r.max is not None])
        self.unanswered = med([r.unanswered for r in ok if r.unanswered is not None])
        self.connections = ok[0].connections if ok else None
        self.socket_errors = sum(r.socket_errors for r in results)
        self.bad_status = sum(r.bad_status for r in results)
        self.ok_all = len(ok) == len(results)

    @property
    def ok(self):
        return self.ok_all and self.rps is not None

    @property
    def errors(self):
        return self.socket_errors + self.bad_status


def merge_rounds(rows, clk_tck):
    """One row per server and mode, in the order first seen; `rounds` keeps
    each run's rps, CPU per request and PSS for ratios and medians."""
    groups = {}
    for r in rows:
        groups.setdefault((r["server"], r["mode"]), []).append(r)
    merged = []
    for (server, mode), runs in groups.items():
        cpu = [
            r["ticks"] / clk_tck / r["wrk"].requests * 1e6
            for r in runs
            if r["ticks"] is not None and r["wrk"].ok and r["wrk"].requests
        ]
        pss = [r["pss_kb"] for r in runs if r["pss_kb"] is not None]
        rss = [r["rss_kb"] for r in runs if r["rss_kb"] is not None]
        merged.append(
            {
                "server": server,
                "mode": mode,
                "wrk": runs[0]["wrk"] if len(runs) == 1 else Rounds([r["wrk"] for r in runs]),
                "wrk_file": runs[0]["wrk_file"],
                "runs": [r["wrk"].rps if r["wrk"].ok else None for r in runs],
                "p99s": [r["wrk"].p99 if r["wrk"].ok else None for r in runs],
                "cpu_us": statistics.median(cpu) if cpu else None,
                "rss_kb": statistics.median(rss) if rss else None,
                "pss_kb": statistics.median(pss) if pss else None,
                "procs": runs[-1]["procs"],
            }
        )
    return merged


def ratio_cell(row, base, key="runs"):
    """The ratio of a figure (`runs`: req/s, `p99s`: p99) to the baseline's
    row in the same mode, round by round; with several rounds, the median
    and the range."""
    pairs = [
        a / b for a, b in zip(row[key], base[key]) if a is not None and b
    ]
    if not pairs:
        return "—"
    if len(pairs) == 1:
        return f"{pairs[0]:.2f}"
    return f"{statistics.median(pairs):.2f} ({min(pairs):.2f}–{max(pairs):.2f})"


def table(rows, baseline, clk_tck):
    rows = merge_rounds(rows, clk_tck)
    base_rows = {r["mode"]: r for r in rows if r["server"] == baseline}
    base_pss = {
        r["mode"]: r["pss_kb"] for r in rows if r["server"] == baseline and r["pss_kb"]
    }
    with_pss = any(r["pss_kb"] is not None for r in rows)
    head = (
        f"| server | keep-alive | req/s | ×{baseline} | p50 | p99 | p99 ×{baseline} | max "
        "| unanswered | errors | master CPU/req | master RSS |"
    )
    rule = "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    if with_pss:
        head += f" total PSS | PSS ×{baseline} | processes |"
        rule += "--:|--:|--:|"
    out = [head, rule]
    for r in rows:
        w = r["wrk"]
        if not w.ok:
            out.append(
                f"| {r['server']} | {r['mode']} | (wrk output unreadable: "
                f"{r['wrk_file']}) | | | | | | | | | |" + (" | | |" if with_pss else "")
            )
            continue
        base = base_rows.get(r["mode"])
        ratio = ratio_cell(r, base) if base else "—"
        p99_ratio = ratio_cell(r, base, "p99s") if base else "—"
        cpu = f"{r['cpu_us']:.1f} µs" if r["cpu_us"] is not None else "—"
        rss = f"{r['rss_kb'] / 1024:.1f} MiB" if r["rss_kb"] is not None else "—"
        line = (
            f"| {r['server']} | {r['mode']} | {w.rps:,.0f} | {ratio} "
            f"| {fmt_duration(w.p50)} | {fmt_duration(w.p99)} | {p99_ratio} | {fmt_duration(w.max)} "
            f"| {fmt_unanswered(w)} | {fmt_errors(w)} | {cpu} | {rss} |"
        )
        if with_pss:
            line += " " + " | ".join(pss_cells(r, base_pss.get(r["mode"]))) + " |"
        out.append(line)
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", help="the TSV file written by run.sh")
    ap.add_argument("--header", action="append", default=[], help="a line printed above the table")
    ap.add_argument("--clk-tck", type=int, required=True, help="clock ticks per second (getconf CLK_TCK)")
    ap.add_argument("--baseline", default="php-fpm", help="server the ratio column divides by")
    args = ap.parse_args()

    rows = read_rows(args.rows)
    rounds = max(
        sum(1 for x in rows if (x["server"], x["mode"]) == (r["server"], r["mode"]))
        for r in rows
    ) if rows else 1
    for line in args.header:
        print(line)
    if args.header:
        print()
    print(table(rows, args.baseline, args.clk_tck))
    print()
    pss_note = ""
    if any(r["pss_kb"] is not None for r in rows):
        pss_note = (
            " total PSS: the Pss lines of /proc/PID/smaps_rollup summed over every process "
            "of the contender (manager included), read after the run with everything still up; "
            f"PSS ×{args.baseline}: divided by {args.baseline}'s in the same keep-alive mode; "
            "processes: how many were summed."
        )
    rate_note = ""
    if any(r["wrk"].fixed_rate for r in rows):
        rate_note = (
            "Fixed rate (app.sh --rate): oha sent the requests at the rate above, on as many "
            "connections as the run has, and timed each from when it was due "
            "(--latency-correction), so waiting for a free connection counts; req/s is what "
            "each contender answered, errors oha's errors plus status ≥ 400. oha waits for "
            "the requests still out at the end of a run (--wait-ongoing-requests-after-deadline), "
            "so a request the server never took (a connection left in its accept queue) ends "
            "with nginx's 504 after its 60 s fastcgi_read_timeout: that round's max is past a "
            "minute and its req/s counts the wait. "
        )
    print(
        rate_note +
        "keep-alive: nginx → FastCGI server connections (`keepalive` + `fastcgi_keep_conn on`); "
        "wrk → nginx is keep-alive in every row. "
        f"×{args.baseline}: req/s divided by {args.baseline}'s req/s in the same keep-alive mode; "
        f"p99 ×{args.baseline}: p99 divided by {args.baseline}'s (under 1: lower). "
        "errors: wrk's status ≥ 400 count plus socket errors (connect/read/write/timeout). "
        "Latencies count every request that completed within the run (wrk --timeout 120s; "
        "with wrk's default of 2 s, slower requests would silently drop out of them). "
        "unanswered: wrk times only requests that complete, so a connection the server "
        "never answers is in no latency and no error count; by Little's law the connections "
        "that were answered number requests × mean latency ÷ run time, and this is how many "
        "of the run's connections were not (in whole-run equivalents). "
        "master CPU/req: (utime+stime) of herd's master over the measured run ÷ requests; "
        "master RSS: its VmRSS after the run." + pss_note
        + (
            f" Each row is the median of {rounds} rounds, run one after another "
            "with every contender in each, every other round in reverse order; the ratios are taken round by round: "
            "median (lowest–highest)."
            if rounds > 1
            else ""
        )
    )
    return 0 if all(r["wrk"].ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
