#!/usr/bin/env python3
"""Chaos: SIGKILL the master under load, then start it again.

    contrib/chaos/kill9-master.py [--rounds 3] [--workers 3] [--clients 6]
        [--spawn exec|preload|both] [--deadline 5s] [--serve-within 1s]
        [--no-build] [--keep-tmp] [--out FILE]

herd runs with a pid file and up to three pools: `tcp` (example-app on a
loopback port), `unix` (example-app on a unix socket) and, with
`--spawn preload` or `both` (the default), `preload` (`spawn = preload`:
examples/hello forked from a preloader, on a unix socket). Client threads
load every pool (half on kept-alive connections). Each round: SIGKILL the
master; within `--deadline` every process it had (workers, preloaders)
must be gone (they die with it: PR_SET_PDEATHSIG); then this script, like
systemd would, starts herd again on the same config (its stale pid file,
unix socket files and control socket still there) and measures the time
from the start until each pool's first 200, expected within
`--serve-within`.

Client errors are counted by kind, separately inside the windows from a
kill to all pools serving again (expected there: resets, refused
connects) and outside them (expected: none).

Prints one markdown table; exits 1 when something is flagged. Every
process started here is stopped, by pid, and checked gone at the end.
"""

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaoslib as c  # noqa: E402


def first_200(addr, t0, limit, result, key):
    """Polls `addr` until a 200; stores seconds since t0 (or None)."""
    while time.monotonic() - t0 < limit:
        if c.fcgi_get(addr, "/first", timeout=2).kind == "ok":
            result[key] = time.monotonic() - t0
            return
        time.sleep(0.005)
    result[key] = None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--spawn", choices=["exec", "preload", "both"], default="both")
    ap.add_argument("--deadline", type=c.duration, default=5.0)
    ap.add_argument("--serve-within", type=c.duration, default=1.0)
    ap.add_argument("--duration", type=c.duration, default=None,
                    help="accepted for run-all.sh; the scenario lasts as long as its rounds")
    c.common_args(ap)
    args = ap.parse_args()
    preload = args.spawn in ("preload", "both")
    c.build(args.no_build, examples=preload)
    sc = c.Scenario("kill9-master", args)
    n = args.workers

    addrs = {}
    text = c.global_section("pid = {dir}/herd.pid\n")
    if args.spawn in ("exec", "both"):
        addrs["tcp"] = f"127.0.0.1:{c.free_port()}"
        addrs["unix"] = str(sc.dir / "unix.sock")
        text += c.example_pool("tcp", addrs["tcp"], n) + c.example_pool("unix", addrs["unix"], n)
    if preload:
        addrs["preload"] = str(sc.dir / "preload.sock")
        text += (f"[preload]\nlisten = {addrs['preload']}\npm = static\npm.max_children = {n}\n"
                 f"spawn = preload\ncommand = {{hello}}\n{c.user_lines()}")
    sizes = {p: n for p in addrs}
    herd = c.Herd(sc, text).start()

    def up(limit=20):
        if herd.wait_settled(sizes, within=limit, children=False) is None:
            return False
        return all(herd.wait_serving(a, within=limit) is not None for a in addrs.values())

    if not up():
        c.log(herd.log_text())
        sys.exit("herd did not come up")

    clients = []
    for i in range(args.clients):
        pool = list(addrs)[i % len(addrs)]
        uri = "/h?id={id}" if pool == "preload" else "/m?ms=20&id={id}"
        clients.append({"addr": addrs[pool], "uri": uri, "keep": (i // len(addrs)) % 2 == 1,
                        "pause": 0.005})
    load = c.Load(clients, timeout=10.0).start()
    sc.cleanups.append(load.stop)

    rounds = []
    windows = []
    for r in range(1, args.rounds + 1):
        time.sleep(1.0)
        victims = herd.descendants()
        master = herd.pid
        t_kill = time.monotonic()
        herd.kill9()
        gone = None
        while time.monotonic() - t_kill < args.deadline:
            if not any(c.alive(p) for p in victims):
                gone = time.monotonic() - t_kill
                break
            time.sleep(0.005)
        survivors = [p for p in victims if c.alive(p)]
        stale = {"pid file": (sc.dir / "herd.pid").exists(),
                 "unix sockets": [p for p in addrs.values() if "/" in p and os.path.exists(p)]}
        # systemd's part: start it again, same config.
        herd.start()
        t_start = time.monotonic()
        firsts = {}
        probes = [threading.Thread(target=first_200, args=(a, t_start, 10.0, firsts, p))
                  for p, a in addrs.items()]
        for t in probes:
            t.start()
        for t in probes:
            t.join()
        serving_at = time.monotonic()
        windows.append((t_kill, serving_at))
        pidfile = (sc.dir / "herd.pid").read_text().strip() if (sc.dir / "herd.pid").exists() else ""
        rounds.append({"round": r, "master": master, "victims": len(victims), "gone": gone,
                       "survivors": survivors, "firsts": firsts, "stale": stale,
                       "pidfile_ok": pidfile == str(herd.pid)})
        c.log(f"round {r}: killed {master} ({len(victims)} descendants); gone in {c.fmt_s(gone)}; "
              f"survivors {survivors}; stale {stale}; first 200 {firsts}")
        if not up(limit=10):
            c.log("herd did not settle after the restart")
    time.sleep(1.0)
    outcomes = load.stop()
    master_alive = herd.running()
    stopped = herd.stop()

    def in_window(o):
        return any(a <= o.t1 and o.t0 <= b for a, b in windows)

    inside = [o for o in outcomes if o.kind != "ok" and in_window(o)]
    outside = [o for o in outcomes if o.kind != "ok" and not in_window(o)]
    firsts = [v for rd in rounds for v in rd["firsts"].values()]
    slow = [(rd["round"], p, v) for rd in rounds for p, v in rd["firsts"].items()
            if v is None or v > args.serve_within]
    survivors = [p for rd in rounds for p in rd["survivors"]]
    t = c.Table(
        f"kill -9 the master under load ({args.rounds} rounds)",
        [f"pools: {', '.join(f'{p} ({n} workers)' for p in addrs)}; {args.clients} clients "
         "(half kept-alive); after each SIGKILL the script starts herd again, same config"])
    t.row("masters killed", len(rounds))
    t.row("workers and preloaders they had", sum(rd["victims"] for rd in rounds))
    t.row(f"left running {args.deadline:.0f} s after the kill", len(survivors) if not survivors else
          f"{len(survivors)}: {survivors}", 0, not survivors)
    t.row("time until all were gone (max)",
          c.fmt_s(max((rd["gone"] for rd in rounds if rd["gone"] is not None), default=None)))
    t.row("left behind by the killed master", "; ".join(
        f"#{rd['round']}: pid file {'yes' if rd['stale']['pid file'] else 'no'}, "
        f"{len(rd['stale']['unix sockets'])} socket files" for rd in rounds))
    t.row("restart to first 200, per pool (max over rounds)", ", ".join(
        f"{p} {c.fmt_s(max((rd['firsts'].get(p) or 99 for rd in rounds)))}" for p in addrs),
        f"< {args.serve_within:.1f} s", not slow)
    t.row("restart to first 200 (min / max, all pools)",
          f"{c.fmt_s(min((f for f in firsts if f is not None), default=None))} / "
          f"{c.fmt_s(max((f if f is not None else 99 for f in firsts), default=None))}")
    t.row("pid file names the new master", "all rounds" if all(rd["pidfile_ok"] for rd in rounds)
          else "not always", "all rounds", all(rd["pidfile_ok"] for rd in rounds))
    t.row("requests", len(outcomes))
    t.row("completed 200", sum(1 for o in outcomes if o.kind == "ok"))
    t.row("errors between a kill and serving again, by kind", c.kinds_text(c.count_kinds(inside)))
    t.row("errors outside those windows", f"{len(outside)}" + (
        f" ({c.kinds_text(c.count_kinds(outside))}): " + "; ".join(map(repr, outside[:5])) if outside else ""),
        0, not outside)
    t.row("last master alive at the end", "yes" if master_alive else "no", "yes", master_alive)
    t.row("herd stopped, every worker gone", "yes" if stopped else "no", "yes", bool(stopped))
    c.leftover_rows(t, sc, [herd])
    sys.exit(t.emit(sc))


if __name__ == "__main__":
    main()
