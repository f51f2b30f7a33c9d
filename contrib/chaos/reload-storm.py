#!/usr/bin/env python3
"""Chaos: a storm of reloads under load, some of them to a broken generation.

    contrib/chaos/reload-storm.py [--reloads 20] [--broken-every 4]
        [--workers 4] [--clients 6] [--slow-ms 200] [--timeout 10s]
        [--no-wait-every N]
        [--no-build] [--keep-tmp] [--out FILE]

herd runs one pool of `--workers` static `herd example-app` workers on a
loopback TCP port, each new worker warmed with `warmup.request[]`. Client
threads run throughout: fast GETs on new connections, fast GETs on
kept-alive connections, and slow GETs (`?ms=--slow-ms`) that are in
flight when workers retire. Then `--reloads` times in a row, with no pause:
`herd ctl reload --force --wait`, every `--broken-every`th one to a broken
config that herd must refuse while the old generation serves on; the
broken ones alternate between a generation whose warm-up fails
(`warmup.request[] = /?status=500`: deploy refused) and a config that does
not parse (reload refused). With `--no-wait-every N`, every Nth good
reload goes without --wait, so the next one supersedes a rollout in
progress.

Measured: failed requests (expect 0), each reload's exit code (0 for a
good one, 1 for a broken one), and, before and after the storm, once the
pool has settled (no rollout, no retiring worker, as many master children
as workers) and after the same short warm-up load: the master's open fds
(`/proc/<pid>/fd`, by kind), its child processes (PPid = master), its
VmRSS; and whether any worker herd ever spawned is still running besides
the pool's current ones. Any growth is flagged.

Prints one markdown table; exits 1 when something is flagged. Every
process started here is stopped, by pid, and checked gone at the end.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaoslib as c  # noqa: E402


def pool_config(addr, workers, round_, broken=None):
    extra = f"env[CHAOS_ROUND] = {round_}\nwarmup.request[] = /warm?ms=5\n"
    if broken == "warmup":
        extra += "warmup.request[] = /?status=500\n"
    elif broken == "config":
        extra += "chaos.not_a_directive = yes\n"
    return c.global_section() + c.example_pool("app", addr, workers, extra)


def quiet_fds(herd, within=5.0):
    """The master's fd count once it is the same three samples in a row."""
    deadline = time.monotonic() + within
    last = []
    while time.monotonic() < deadline:
        last = (last + [herd.fds()])[-3:]
        if len(last) == 3 and len(set(last)) == 1:
            return last[0]
        time.sleep(0.1)
    return last[-1] if last else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reloads", type=int, default=20)
    ap.add_argument("--broken-every", type=int, default=4)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--slow-ms", type=int, default=200)
    ap.add_argument("--no-wait-every", type=int, default=0,
                    help="every Nth good reload without --wait, so the next one supersedes a rollout "
                         "in progress (0: never)")
    ap.add_argument("--timeout", type=c.duration, default=10.0)
    ap.add_argument("--duration", type=c.duration, default=None,
                    help="accepted for run-all.sh; the storm lasts as long as its reloads")
    c.common_args(ap)
    args = ap.parse_args()
    c.build(args.no_build)
    sc = c.Scenario("reload-storm", args)
    n = args.workers
    addr = f"127.0.0.1:{c.free_port()}"
    herd = c.Herd(sc, pool_config(addr, n, 0)).start()
    if herd.wait_settled({"app": n}, within=20) is None or herd.wait_serving(addr) is None:
        c.log(herd.log_text())
        sys.exit("herd did not come up")

    kinds = ["fresh", "keep", "slow"]
    clients = []
    for i in range(args.clients):
        k = kinds[i % 3]
        uri = f"/s?ms={args.slow_ms}&id={{id}}" if k == "slow" else "/f?id={id}"
        clients.append({"addr": addr, "uri": uri, "keep": k == "keep"})
    warm = [{"addr": addr, "uri": "/w?ms=20&id={id}", "keep": False} for _ in range(n * 2)]

    def measure(label):
        w = c.Load(warm, timeout=args.timeout).start()
        time.sleep(2.0)
        bad = [o for o in w.stop() if o.kind != "ok"]
        fds = quiet_fds(herd)
        m = {"fds": fds, "kinds": c.fd_kinds(herd.pid), "children": len(herd.children()),
             "rss": herd.rss_kb(), "warm_bad": bad}
        c.log(f"{label}: {m['fds']} fds {m['kinds']}, {m['children']} children, rss {m['rss']} kB")
        return m

    before = measure("before")
    load = c.Load(clients, timeout=args.timeout).start()
    sc.cleanups.append(load.stop)
    time.sleep(1.0)

    results = []  # (round, broken, rc, seconds, last line)
    broken_kinds = ["warmup", "config"]
    peak_children = 0
    storm_t0 = time.monotonic()
    for r in range(1, args.reloads + 1):
        broken = None
        if args.broken_every and r % args.broken_every == 0:
            broken = broken_kinds[(r // args.broken_every - 1) % 2]
        herd.write_config(pool_config(addr, n, r, broken))
        t0 = time.monotonic()
        wait = not (broken is None and args.no_wait_every and r % args.no_wait_every == 0)
        rc, out, err = herd.ctl("reload", "--force", *(["--wait"] if wait else []), timeout=120)
        took = time.monotonic() - t0
        said = (out + err).strip().splitlines()
        results.append((r, broken, rc, took, said[-1] if said else "", wait))
        peak_children = max(peak_children, len(herd.children()))
        c.log(f"reload {r} ({broken or 'good'}): exit {rc} in {took:.2f}s: {said[-1] if said else ''}")
    storm_s = time.monotonic() - storm_t0
    # The last config is a good one, so the pool ends on a fresh generation.
    herd.write_config(pool_config(addr, n, args.reloads + 1))

    time.sleep(1.0)
    outcomes = load.stop()
    settled = herd.wait_settled({"app": n}, within=60)
    after = measure("after")
    st = herd.status()
    pool = st["pools"][0] if st else {}
    current = {p["pid"] for p in pool.get("processes", [])}
    spawned = herd.logged_pids()
    for pid in spawned:
        sc.reg.add_herd_worker(pid)
    stray = [p for p in spawned if p not in current and c.alive(p)]
    refusals = herd.log_lines("deploy refused")
    master_alive = herd.running()
    stopped = herd.stop()

    failed = [o for o in outcomes if o.kind != "ok"]
    good = [x for x in results if not x[1]]
    bad = [x for x in results if x[1]]
    good_wrong = [x for x in good if x[2] != 0]
    bad_wrong = [x for x in bad if x[2] != 1]
    t = c.Table(
        f"reload storm ({args.reloads} reloads, {len(bad)} broken)",
        [f"{n} example-app workers, {args.clients} clients (fresh, kept-alive, ?ms={args.slow_ms}), "
         f"`herd ctl reload --force --wait` back to back; broken: every {args.broken_every}th, "
         "alternately a failing warm-up and an unparsable config"])
    t.row("storm duration", f"{storm_s:.1f} s")
    t.row("good reloads exiting 0", f"{len(good) - len(good_wrong)} of {len(good)}", len(good),
          not good_wrong)
    if good_wrong:
        t.row("good reloads that did not exit 0", "; ".join(f"#{x[0]} exit {x[2]}: {x[4]}" for x in good_wrong))
    t.row("broken reloads refused (exit 1)", f"{len(bad) - len(bad_wrong)} of {len(bad)}", len(bad),
          not bad_wrong)
    if bad_wrong:
        t.row("broken reloads not refused", "; ".join(f"#{x[0]} {x[1]} exit {x[2]}: {x[4]}" for x in bad_wrong))
    waited = [x for x in good if x[5]]
    t.row("reload --wait time, good (min / max)",
          f"{min((x[3] for x in waited), default=0):.2f} / {max((x[3] for x in waited), default=0):.2f} s")
    if len(waited) < len(good):
        t.row("good reloads sent without --wait (superseded mid-rollout)", len(good) - len(waited))
    t.row("'deploy refused' log lines", len(refusals))
    t.row("requests", len(outcomes))
    t.row("failed requests", f"{len(failed)} ({c.kinds_text(c.count_kinds(failed))})"
          + ("; " + "; ".join(map(repr, failed[:5])) if failed else ""), 0, not failed)
    t.row("pool settled after the storm", "yes" if settled is not None else "no", "yes",
          settled is not None)
    t.row("master fds before / after", f"{before['fds']} / {after['fds']}", "equal",
          before["fds"] == after["fds"])
    if before["kinds"] != after["kinds"]:
        t.row("master fds by kind, before / after", f"{before['kinds']} / {after['kinds']}")
    t.row("master children before / peak during / after",
          f"{before['children']} / {peak_children} / {after['children']}", f"{n} / - / {n}",
          before["children"] == n and after["children"] == n)
    t.row("workers spawned in all; still running besides the pool's", f"{len(spawned)}; {len(stray)}",
          "-; 0", not stray)
    t.row("master VmRSS before / after", f"{c.mib(before['rss'])} / {c.mib(after['rss'])}")
    t.row("master alive throughout", "yes" if master_alive else "no", "yes", master_alive)
    t.row("herd stopped, every worker gone", "yes" if stopped else "no", "yes", bool(stopped))
    c.leftover_rows(t, sc, [herd])
    sys.exit(t.emit(sc))


if __name__ == "__main__":
    main()
