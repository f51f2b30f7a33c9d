#!/usr/bin/env python3
"""Chaos: SIGKILL random workers under load.

    contrib/chaos/kill9-workers.py [--duration 60s] [--interval 200ms]
        [--workers 8] [--clients 8] [--ms 50] [--timeout 10s]
        [--min-lifetime DURATION] [--no-build] [--keep-tmp] [--out FILE]

herd runs one pool of `--workers` static `herd example-app` workers on a
loopback TCP port. `--clients` client threads send GETs with `?ms=N` (the
worker sleeps N ms before it answers), half on a new connection per
request, half on one kept-alive connection each, every request with its
own id in the URI. Every `--interval` (with jitter) a random worker pid
from `herd ctl status --json` gets SIGKILL. A GET without a body whose
worker dies before answering is sent again by herd to another worker, so
most kills cost nothing; the error a client may see is a 502 (or a closed
connection, when part of the answer had been relayed) for a request whose
worker was killed: each error is matched with herd's log line naming its
URI and the killed pid. A request with no complete answer after
`--timeout` counts as hung.

When the kills stop (the load goes on), the time until the pool is back
to `--workers` ready workers is measured and compared with the respawn
backoff in effect then (100 ms doubling per failure, up to 30 s; a worker
killed within `worker.min_lifetime` before it served a request counts as a
failure). `--min-lifetime`
sets `worker.min_lifetime` (default: herd's default, 5s).

Prints one markdown table; exits 1 when something is flagged. Every
process started here is stopped, by pid, and checked gone at the end.
"""

import argparse
import os
import random
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaoslib as c  # noqa: E402


def backoff_delay(failures):
    return 0.0 if failures == 0 else min(0.1 * 2 ** min(failures - 1, 16), 30.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=c.duration, default=60.0)
    ap.add_argument("--interval", type=c.duration, default=0.2)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--ms", type=int, default=50)
    ap.add_argument("--timeout", type=c.duration, default=10.0)
    ap.add_argument("--min-lifetime", default=None)
    c.common_args(ap)
    args = ap.parse_args()
    c.build(args.no_build)
    sc = c.Scenario("kill9-workers", args)

    addr = f"127.0.0.1:{c.free_port()}"
    extra = f"worker.min_lifetime = {args.min_lifetime}\n" if args.min_lifetime else ""
    herd = c.Herd(sc, c.global_section() + c.example_pool("app", addr, args.workers, extra)).start()
    if herd.wait_settled({"app": args.workers}, within=20) is None or herd.wait_serving(addr) is None:
        c.log(herd.log_text())
        sys.exit("herd did not come up")

    clients = [{"addr": addr, "uri": f"/k?ms={args.ms}&id={{id}}", "keep": i % 2 == 1}
               for i in range(args.clients)]
    load = c.Load(clients, timeout=args.timeout).start()
    sc.cleanups.append(load.stop)

    c.log(f"killing a random worker every ~{args.interval}s for {args.duration}s")
    kills = []  # (t, pid)
    min_size, max_failures, polls, empty_polls = args.workers, 0, 0, 0
    t0 = time.monotonic()
    end = t0 + args.duration
    while time.monotonic() < end:
        st = herd.status()
        if st:
            pool = st["pools"][0]
            min_size = min(min_size, len(pool["processes"]))
            polls += 1
            empty_polls += not pool["processes"]
            max_failures = max(max_failures, pool["deploy"].get("backoff_failures", 0))
            # Only a live child of this master: never a pid that was reused.
            pids = [p["pid"] for p in pool["processes"] if c.ppid(p["pid"]) == herd.pid]
            if pids:
                pid = random.choice(pids)
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append((time.monotonic(), pid))
                except ProcessLookupError:
                    pass
        time.sleep(max(0.0, args.interval * random.uniform(0.5, 1.5)))
    kills_end = time.monotonic()

    st = herd.status()
    failures_at_end = st["pools"][0]["deploy"].get("backoff_failures", 0) if st else None
    delay = backoff_delay(failures_at_end or 0)
    size_at_end = len(st["pools"][0]["processes"]) if st else None
    c.log(f"{len(kills)} kills; pool at {size_at_end}, backoff failures {failures_at_end} "
          f"(delay {delay:.1f}s); waiting for the pool to be back to size")
    recovered = herd.wait_settled({"app": args.workers}, within=delay + 30)
    recovered_at = time.monotonic()
    # A little load after the recovery, to see it serve at full size.
    time.sleep(1.0)
    outcomes = load.stop()
    st_final = herd.status()
    pool_final = st_final["pools"][0] if st_final else {}

    # --- match errors with herd's log -----------------------------------------
    killed = {pid for _, pid in kills}
    died_serving = {}  # uri -> pid
    for line in herd.log_lines("worker died while serving"):
        m = re.search(r"worker died while serving \S+ (\S+).*\bpid=(\d+)", line)
        if m:
            died_serving[m.group(1)] = int(m.group(2))
    retried_lines = herd.log_lines("worker died before answering")
    errors = [o for o in outcomes if o.kind != "ok"]
    explained, unexplained, hung, no_worker = [], [], [], []
    for o in errors:
        if o.kind == "timeout":
            hung.append(o)
        elif o.kind == "http5xx" and b"no worker of this pool can start" in o.body:
            no_worker.append(o)
        elif o.kind in ("http5xx", "reset", "closed") and died_serving.get(o.uri) in killed:
            explained.append(o)
        else:
            unexplained.append(o)
    during = [o for o in outcomes if o.t0 < kills_end]
    ok = sum(1 for o in outcomes if o.kind == "ok")

    master_alive = herd.running()
    herd_stopped = herd.stop()

    t = c.Table(
        f"kill -9 workers under load ({args.duration:.0f} s)",
        [f"{args.workers} example-app workers, {args.clients} clients (half kept-alive) "
         f"GET ?ms={args.ms}, a SIGKILL every ~{args.interval * 1000:.0f} ms, client timeout "
         f"{args.timeout:.0f} s, worker.min_lifetime {args.min_lifetime or 'default (5s)'}, "
         f"seed {sc.seed}"])
    t.row("workers killed", len(kills))
    t.row("requests sent (during kills / in total)", f"{len(during)} / {len(outcomes)}")
    t.row("completed 200", ok)
    t.row("errors, by kind", c.kinds_text(c.count_kinds(errors)), "only on killed workers")
    t.row("errors on a killed worker (herd's log names the URI and a killed pid)", len(explained))
    t.row("503 'no worker of this pool can start' (the pool emptied, respawns backed off)",
          len(no_worker), "0 (errors only on killed workers)", not no_worker)
    t.row("errors not explained by a kill", len(unexplained) if not unexplained else
          f"{len(unexplained)}: " + "; ".join(map(repr, unexplained[:5])), 0, not unexplained)
    t.row(f"hung (no answer within {args.timeout:.0f} s)", len(hung) if not hung else
          f"{len(hung)}: " + "; ".join(f"{o.uri} sent {o.t0 - t0:.2f} s into the kills" for o in hung[:3]),
          0, not hung)
    t.row("kills that cost nothing: requests herd sent to another worker", len(retried_lines))
    t.row("herd's counters: retried / worker lost requests",
          f"{pool_final.get('retried requests', '-')} / {pool_final.get('worker lost requests', '-')}")
    t.row("smallest pool seen during the kills; status polls finding no worker at all",
          f"{min_size}; {empty_polls} of {polls}")
    t.row("backoff failures when the kills stopped (most seen)",
          f"{failures_at_end} ({max_failures}), delay {delay:.1f} s")
    t.row("pool back to size after the last kill", c.fmt_s(recovered and recovered_at - kills_end),
          f"<= backoff {delay:.1f} s + 1 s", recovered is not None and recovered_at - kills_end <= delay + 1.0)
    t.row("master alive throughout", "yes" if master_alive else "no", "yes", master_alive)
    t.row("herd stopped, every worker gone", "yes" if herd_stopped else "no", "yes", bool(herd_stopped))
    c.leftover_rows(t, sc, [herd])
    sys.exit(t.emit(sc))


if __name__ == "__main__":
    main()
