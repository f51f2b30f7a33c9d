#!/usr/bin/env python3
"""Load generator and reporter of contrib/bench/reload.sh.

    reload_load.py run --base URL (--reload-cmd CMD | --reload-signal SIG:PID)
                       [--prepare-cmd CMD] --dir DIR [options]
    reload_load.py report [--header LINE]... LABEL=DIR...

`run` starts N "fast" clients and M "burn" clients, each its own process
(so no client waits on another's GIL to read its response), each doing
sequential HTTP/1.1 keep-alive requests to nginx as fast as it can: fast
clients GET `app.php`, burn clients `app.php?burn=MS`. After the steady
phase it puts the new config in place (--prepare-cmd), then at t0 runs the reload
command or sends the reload signal, then keeps the
load on until the rollout has settled and `--after` seconds more. Every
request is written to DIR/requests.tsv:

    kind <TAB> start <TAB> end <TAB> status <TAB> version <TAB> error

(start and end in seconds since t0, status 0 for a connection error,
version "-" when the body does not name one), and the run's facts to
DIR/meta.json.

`report` turns such directories into one markdown table.

Standard library only. Nothing here asserts a timing.
"""

import argparse
import gc
import http.client
import json
import math
import multiprocessing as mp
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

_VERSION = re.compile(rb"version=(\S+)")

# --- run ---------------------------------------------------------------------


def die_with_parent():
    """PR_SET_PDEATHSIG: a client never outlives the run that forked it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl
        os._exit(1)


def on_term(signum, frame):
    raise SystemExit(128 + signum)


def client(kind, idx, url, stop, done, timeout, old, new, last_old, first_new, path, nice):
    """One client: sequential requests until `stop` is set; then, once every
    client is past its last request (`done`), its rows to `path`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent()
    # What a client times must be the server's, not the client's own pauses:
    # - Python's cycle collector walks every tracked object now and then,
    #   and a client holds one row (a tuple) per request, tens of thousands
    #   by the end: each full pass pauses the client longer, mid-request.
    #   The rows hold no cycles, so the collector has nothing to find.
    # - On a small machine the servers' processes keep every core busy, and
    #   a client whose response arrived waits its turn for one before it
    #   reads the clock. --client-nice (a lower nice; root only) lets it run
    #   as soon as it is woken, but then the clients' own CPU, over a core
    #   here, comes first and the servers' processes wait (perf sched saw a
    #   php-fpm child wait 132 ms at nice -10): off by default.
    gc.disable()
    if nice is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError:
            pass
    u = urllib.parse.urlsplit(url)
    target = u.path + ("?" + u.query if u.query else "")
    conn = None
    rows = []
    now = time.monotonic
    while not stop.value:
        if conn is None:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        err = ""
        body = b""
        status = 0
        start = now()
        try:
            conn.request("GET", target)
            resp = conn.getresponse()
            body = resp.read()
            status = resp.status
            if resp.will_close:
                conn.close()
                conn = None
        except Exception as e:  # a failed request is data, not a crash
            err = f"{type(e).__name__}: {e}".replace("\t", " ").replace("\n", " ")
            conn.close()
            conn = None
        end = now()
        m = _VERSION.search(body) if status == 200 else None
        version = m.group(1).decode("ascii", "replace") if m else "-"
        rows.append((kind, start, end, status, version, err))
        if version == old:
            last_old[idx] = end
        elif version == new and first_new[idx] == 0.0:
            first_new[idx] = end
        if status == 0:
            # nginx itself did not answer: do not spin on a dead socket.
            time.sleep(0.01)
    if conn is not None:
        conn.close()
    # Writing the rows takes CPU: not while another client is still timing
    # a request (on a small machine that showed as the run's slowest ones).
    try:
        done.wait(timeout + 10)
    except threading.BrokenBarrierError:
        pass
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write("%s\t%.6f\t%.6f\t%d\t%s\t%s\n" % r)


def cmd_run(a):
    os.makedirs(a.dir, exist_ok=True)
    # A stop from reload.sh (SIGTERM) still stops the clients cleanly.
    signal.signal(signal.SIGTERM, on_term)
    ctx = mp.get_context("fork")
    # A flag in shared memory, read without a lock: an Event takes a lock
    # shared by every client on each look, and a client preempted while it
    # holds it stalls all the others mid-request (seen as several clients'
    # requests taking 100-300 ms at once while nginx timed them under 30 ms).
    stop = ctx.RawValue("b", 0)
    n = a.fast_clients + a.burn_clients
    done = ctx.Barrier(n)
    last_old = ctx.Array("d", n, lock=False)
    first_new = ctx.Array("d", n, lock=False)
    burn_url = a.base + "app.php?burn=%d" % a.burn_ms
    fast_url = a.base + "app.php"
    procs = []
    for i in range(n):
        kind, url = ("fast", fast_url) if i < a.fast_clients else ("burn", burn_url)
        p = ctx.Process(
            target=client,
            args=(kind, i, url, stop, done, a.timeout, a.old, a.new, last_old, first_new,
                  os.path.join(a.dir, "client-%d.tsv" % i), a.client_nice),
        )
        p.start()
        procs.append(p)
    load_start = time.monotonic()
    meta = {"load_start": load_start, "old": a.old, "new": a.new, "steady": a.steady,
            "min_window": a.min_window, "burn_ms": a.burn_ms,
            "fast_clients": a.fast_clients, "burn_clients": a.burn_clients,
            "client_nice": a.client_nice}
    t0 = cmd_end = rc = None
    try:
        time.sleep(a.steady)
        with open(os.path.join(a.dir, "reload.log"), "wb") as log:
            if a.prepare_cmd:
                # The new config goes in place before t0: only the reload
                # itself is timed.
                subprocess.run(["bash", "-c", a.prepare_cmd], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, check=True)
            cmd = None
            if a.reload_signal:
                sig, _, pid = a.reload_signal.partition(":")
                t0 = time.monotonic()
                os.kill(int(pid), getattr(signal, "SIG" + sig))
                cmd_end, rc = t0, 0
            else:
                t0 = time.monotonic()
                cmd = subprocess.Popen(shlex.split(a.reload_cmd), stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            while True:
                time.sleep(0.05)
                now = time.monotonic()
                if cmd_end is None and cmd.poll() is not None:
                    cmd_end, rc = now, cmd.returncode
                if cmd_end is None and now - t0 > a.max_rollout:
                    cmd.kill()  # our own child, by pid
                    cmd.wait()
                    cmd_end, rc = now, "killed after %ss" % a.max_rollout
                if cmd_end is None:
                    continue
                new_seen = [x for x in first_new if x > 0.0]
                # Settled: the command is done and, once the new version
                # showed up, no old-version answer since.
                settled = max([cmd_end] + new_seen + ([max(last_old)] if new_seen else []))
                waited_enough = new_seen or a.broken or now - t0 > a.max_rollout
                if waited_enough and now - settled >= a.after:
                    break
    finally:
        stop.value = 1
        for p in procs:
            p.join(a.timeout + 15)
            if p.is_alive():
                p.kill()
                p.join()
    meta.update({"t0": t0, "reload_end": cmd_end, "reload_rc": rc,
                 "stopped": time.monotonic()})
    with open(os.path.join(a.dir, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    # One file, times relative to t0, sorted by start.
    rows = []
    for i in range(n):
        path = os.path.join(a.dir, "client-%d.tsv" % i)
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    kind, s, e, st, v, err = line.rstrip("\n").split("\t")
                    rows.append((float(s) - t0, float(e) - t0, kind, int(st), v, err))
        except FileNotFoundError:
            print("reload_load.py: client %d wrote no rows" % i, file=sys.stderr)
            continue
        os.unlink(path)
    rows.sort()
    with open(os.path.join(a.dir, "requests.tsv"), "w", encoding="utf-8") as f:
        for s, e, kind, st, v, err in rows:
            f.write("%s\t%.6f\t%.6f\t%d\t%s\t%s\n" % (kind, s, e, st, v, err))
    return 0


# --- report ------------------------------------------------------------------


def read_run(d):
    with open(os.path.join(d, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    reqs = []
    with open(os.path.join(d, "requests.tsv"), encoding="utf-8") as f:
        for line in f:
            kind, s, e, st, v, err = line.rstrip("\n").split("\t")
            reqs.append({"kind": kind, "start": float(s), "end": float(e),
                         "status": int(st), "version": v, "error": err})
    outcome = ""
    p = os.path.join(d, "outcome.txt")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            outcome = f.read().strip()
    return meta, reqs, outcome


def failed(r, meta):
    return r["status"] != 200 or r["version"] not in (meta["old"], meta["new"])


def percentile(values, q):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, math.ceil(q / 100 * len(v)) - 1)]


def co_corrected(latencies, interval):
    """Latencies plus the samples a closed-loop client never sent while it waited.

    Each client sends its next request only when the last one is answered, so
    a one-second stall is one slow sample where an open stream of users would
    have seen hundreds ("coordinated omission"). As HdrHistogram's
    recordValueWithExpectedInterval does, a latency L above the expected
    interval I (the steady median) also records L-I, L-2I, ... down to I.
    """
    if not interval:
        return list(latencies)
    interval = max(interval, 1e-4)
    out = []
    for lat in latencies:
        out.append(lat)
        missing = lat - interval
        n = 0
        while missing >= interval and n < 1000000:
            out.append(missing)
            missing -= interval
            n += 1
    return out


def analyse(meta, reqs):
    """The figures of one run; times in seconds since the reload (t0)."""
    t0 = meta["t0"]
    load_start = meta["load_start"] - t0
    old, new = meta["old"], meta["new"]
    cmd_end = (meta["reload_end"] or t0) - t0
    firsts = [r["end"] for r in reqs if r["status"] == 200 and r["version"] == new]
    first_new = min(firsts) if firsts else None
    lasts = [r["end"] for r in reqs if r["status"] == 200 and r["version"] == old]
    last_old = max(lasts) if lasts else None
    # The rollout window: from the reload until the command is done, the new
    # version has answered and (once it has) the old one has stopped answering,
    # and at least min_window seconds.
    window_end = max(meta["min_window"], cmd_end)
    if first_new is not None:
        window_end = max(window_end, first_new, last_old or 0.0)
    fast = [r for r in reqs if r["kind"] == "fast"]
    # Steady: started after a second of warm-up, ended before the reload.
    steady = [r["end"] - r["start"] for r in fast
              if r["start"] >= load_start + 1.0 and r["end"] < 0.0]
    # During the rollout: any fast request that overlaps the window.
    during = [r["end"] - r["start"] for r in fast if r["end"] >= 0.0 and r["start"] <= window_end]
    interval = percentile(steady, 50)
    bad = [r for r in reqs if failed(r, meta)]
    longest = max(fast, key=lambda r: r["end"] - r["start"]) if fast else None
    return {
        "requests": len(reqs),
        "fast": len(fast),
        "burn": len(reqs) - len(fast),
        "failed": len(bad),
        "failed_after": sum(1 for r in bad if r["end"] >= 0.0),
        "after": sum(1 for r in reqs if r["end"] >= 0.0),
        "bad_kinds": summarise_failures(bad),
        "longest": (longest["end"] - longest["start"]) if longest else None,
        "longest_at": longest["start"] if longest else None,
        "steady_p99": percentile(steady, 99),
        "steady_max": max(steady) if steady else None,
        "steady_n": len(steady),
        "during_p99": percentile(during, 99),
        "during_n": len(during),
        "steady_p99_co": percentile(co_corrected(steady, interval), 99),
        "during_p99_co": percentile(co_corrected(during, interval), 99),
        "window_end": window_end,
        "first_new": first_new,
        "last_old": last_old,
        "reload_rc": meta["reload_rc"],
        "reload_time": cmd_end,
    }


def summarise_failures(bad):
    kinds = {}
    for r in bad:
        if r["status"] == 0:
            k = r["error"].split(":")[0] or "connection error"
        elif r["status"] != 200:
            k = "HTTP %d" % r["status"]
        else:
            k = "version %s" % r["version"]
        kinds[k] = kinds.get(k, 0) + 1
    return ", ".join("%d %s" % (n, k) for k, n in sorted(kinds.items(), key=lambda x: -x[1]))


def ms(s):
    if s is None:
        return "—"
    v = s * 1e3
    if v < 10:
        return "%.2f ms" % v
    if v < 1000:
        return "%.0f ms" % v
    return "%.2f s" % (v / 1e3)


def since(s):
    return "—" if s is None else "%+.2f s" % s


def refused(label, a, outcome):
    rc = a["reload_rc"]
    if label.startswith("herd"):
        if rc == 1:
            return "yes (`herd ctl reload --wait` exit 1)"
        return "no (`herd ctl reload --wait` exit %s)" % rc
    return "no" + (" (%s)" % outcome if outcome else "")


def table(runs):
    out = [
        "| scenario | requests | failed | longest fast | steady p99 (max) | rollout p99 (× steady) "
        "| rollout p99, CO-corrected (× steady, same) | rollout window "
        "| first new-version response | last old-version response | deploy refused |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for label, (meta, reqs, outcome) in runs:
        a = analyse(meta, reqs)
        fail = "%d" % a["failed"]
        if a["failed"]:
            fail += " (%.0f%% after the reload: %s)" % (
                100.0 * a["failed_after"] / max(1, a["after"]), a["bad_kinds"])
        ratio = ratio_co = ""
        if a["steady_p99"] and a["during_p99"] is not None:
            ratio = " (×%.1f)" % (a["during_p99"] / a["steady_p99"])
        if a["steady_p99_co"] and a["during_p99_co"] is not None:
            ratio_co = " (×%.1f)" % (a["during_p99_co"] / a["steady_p99_co"])
        if a["first_new"] is not None or a["last_old"] is None:
            last = since(a["last_old"])
        else:
            last = since(a["last_old"]) + " (no new version: the old one kept serving)"
        longest = ms(a["longest"])
        if a["longest"] is not None:
            longest += " at %+.1f s" % a["longest_at"]
        out.append(
            "| %s | %d | %s | %s | %s | %s%s | %s%s | %.2f s | %s | %s | %s |" % (
                label, a["requests"], fail, longest,
                "%s (%s)" % (ms(a["steady_p99"]), ms(a["steady_max"])),
                ms(a["during_p99"]), ratio, ms(a["during_p99_co"]), ratio_co,
                a["window_end"], since(a["first_new"]), last,
                refused(label, a, outcome)))
    return "\n".join(out)


def cmd_report(a):
    runs = []
    for spec in a.runs:
        label, _, d = spec.partition("=")
        runs.append((label, read_run(d)))
    for line in a.header:
        print(line)
    if a.header:
        print()
    print(table(runs))
    print()
    print(
        "Times are seconds since the reload (t0); every figure is from the load "
        "generator's clock, each client its own process. failed: status ≠ 200, a "
        "connection error or a body without the old or new version, over the whole run. "
        "longest fast: the slowest `app.php` request of the run (and when it started). "
        "steady p99 (max): fast requests that ended before the reload (the first second of "
        "load left out); their max shows how noisy the machine was. rollout window: from the reload until the reload command returned, "
        "the new version answered and the old one stopped answering, at least %g s; "
        "rollout p99: fast requests overlapping it. CO-corrected: each client waits for "
        "its answer before it sends again, so a stall of one second is one slow sample "
        "where an open stream of users would see hundreds; this column adds the samples "
        "the client did not send, as HdrHistogram's recordValueWithExpectedInterval "
        "does (expected interval: the steady median), and compares with the steady p99 "
        "corrected the same way. first new / last old: when the first answer from the "
        "new version and the last from the old one arrived."
        % runs[0][1][0]["min_window"]
    )
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the load and the reload")
    r.add_argument("--base", required=True, help="URL prefix of app.php, e.g. http://127.0.0.1:8080/herd/")
    how = r.add_mutually_exclusive_group(required=True)
    how.add_argument("--reload-cmd", help="command (split like a shell, not run by one) run at t0")
    how.add_argument("--reload-signal", metavar="SIG:PID", help="send this signal at t0, e.g. USR2:1234")
    r.add_argument("--prepare-cmd", help="shell command run just before t0, e.g. the new config into place")
    r.add_argument("--dir", required=True, help="where requests.tsv and meta.json go")
    r.add_argument("--old", default="v1")
    r.add_argument("--new", default="v2")
    r.add_argument("--fast-clients", type=int, default=6)
    r.add_argument("--burn-clients", type=int, default=1)
    r.add_argument("--burn-ms", type=int, default=2000)
    r.add_argument("--steady", type=float, default=5.0, help="seconds of load before the reload")
    r.add_argument("--after", type=float, default=10.0, help="seconds of load after the rollout settled")
    r.add_argument("--min-window", type=float, default=3.0, help="shortest rollout window, seconds")
    r.add_argument("--max-rollout", type=float, default=60.0, help="give up waiting for the rollout after this")
    r.add_argument("--timeout", type=float, default=30.0, help="per-request socket timeout, seconds")
    r.add_argument("--broken", action="store_true", help="the new version is not expected to serve")
    r.add_argument("--client-nice", type=lambda v: None if v == "none" else int(v), default=None,
                   help="the clients' nice value when the run may set it (root), so they read "
                        "their responses as soon as they arrive, ahead of the servers; "
                        "'none' (the default) leaves it alone")
    p = sub.add_parser("report", help="print the markdown table")
    p.add_argument("runs", nargs="+", help="LABEL=DIR")
    p.add_argument("--header", action="append", default=[])
    a = ap.parse_args()
    return cmd_run(a) if a.cmd == "run" else cmd_report(a)


if __name__ == "__main__":
    sys.exit(main())
