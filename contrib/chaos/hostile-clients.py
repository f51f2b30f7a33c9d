#!/usr/bin/env python3
"""Chaos: slow and hostile clients against one herd listener.

    contrib/chaos/hostile-clients.py [--phases a,b,c,d,e,f] [--stallers 200]
        [--idle 2000] [--hold 5s] [--burst 10000] [--read-timeout 2s]
        [--tricklers 50] [--burst-rounds 3] [--workers 4] [--no-build] [--keep-tmp] [--out FILE]

herd runs one pool of `--workers` example-app workers on a loopback TCP
port with `request.read_timeout = --read-timeout`, `request.header_timeout`
twice that, and every other limit at its default (`request.max_params_size` 128K, `listen.max_connections`
8192; herd raises its own fd limit to the hard limit, and so does this
script for its client sockets). Throughout, a normal client sends a GET
every 20 ms on its kept-alive connection (opened before any phase, as
nginx keeps its upstream connections), and another opens a new connection
for a GET every 100 ms. The phases, one after the other:

  a  `--stallers` connections send a BEGIN_REQUEST and half a PARAMS
     record, then stall: each must be closed after about read_timeout,
     with one log line each (not one per byte).
  b  `--idle` connections each served one kept-alive request, then left
     idle for `--hold` (longer than read_timeout): none closed by herd (a
     connection idle between requests is closed only after
     request.idle_timeout, 120 s), then a sample of them still gets served.
  c  params at the bound: max_params_size - 1 and exactly max_params_size
     bytes are served; max_params_size + 1 and 16 MiB close the
     connection, with one log line each, the 16 MiB costing no memory.
  d  `--burst` connections opened as fast as possible that never send a
     byte, `--burst-rounds` times: up to listen.max_connections are held
     open, the rest closed at once with a throttled log line (one a
     second at most, with a count, not one per connection); the held ones
     are closed after read_timeout, quietly (no line each); the master's
     VmRSS must stay within 16 KiB per connection held, and come back
     to within 8 MiB of where it started a few seconds after the
     connections are gone (herd trims its heap after a burst).
  e  `--tricklers` connections send a valid request one byte at a time,
     a byte every read_timeout / 2, each within read_timeout: every one is
     closed at request.header_timeout (twice read_timeout here), with one
     log line each.
  f  `--burst` connections opened as fast as possible, each sending a
     kept-alive request: up to listen.max_connections are answered (200,
     or 503 once pm.max_queue requests wait), the rest closed at once. A
     normal request meeting a full queue gets the same 503: expected here.

Measured per phase: outcomes of the hostile connections, the normal
clients' outcomes, herd's log lines by refusal kind, the master's VmRSS
(before, peak, after) and open fds. Prints one markdown table; exits 1
when something is flagged. Every process started here is stopped, by pid,
and checked gone at the end.
"""

import argparse
import errno
import os
import re
import select
import selectors
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaoslib as c  # noqa: E402

MAX_PARAMS = 128 << 10
MAX_CONNECTIONS = 8192

REFUSALS = {
    "stalled (read_timeout)": "dropping connection: no bytes for",
    "trickled (header_timeout)": "(request.header_timeout)",
    "params past max_params_size": "dropping connection: params of request",
    "past listen.max_connections": "listen.max_connections",
    "accept failed (fds)": "failed to accept",
    "other dropped connections": "dropping connection",
}


def refusal_counts(herd, since_line):
    lines = herd.log_text().splitlines()[since_line:]
    out = {}
    for kind, needle in REFUSALS.items():
        out[kind] = sum(1 for l in lines if needle in l and (
            kind != "other dropped connections" or not any(
                n in l for k, n in REFUSALS.items() if k != kind)))
    out["WARN/ERROR lines in all"] = sum(1 for l in lines if " WARN " in l or " ERROR " in l)
    return out


class Normal:
    """The well-behaved clients: kept-alive and new-connection GETs."""

    def __init__(self, addr):
        self.addr = addr
        self.keep, self.fresh = [], []
        self.stop_ev = threading.Event()
        self.conn = c.FcgiConn(addr, timeout=10)
        first = self.conn.request("/normal/first", keep_conn=True)
        if first.kind != "ok":
            raise SystemExit(f"the normal client's first request failed: {first}")
        self.threads = [threading.Thread(target=self._keep, daemon=True),
                        threading.Thread(target=self._fresh, daemon=True)]

    def _keep(self):
        i = 0
        while not self.stop_ev.wait(0.02):
            i += 1
            o = self.conn.request(f"/normal/keep?id={i}", keep_conn=True)
            self.keep.append(o)

    def _fresh(self):
        i = 0
        while not self.stop_ev.wait(0.1):
            i += 1
            self.fresh.append(c.fcgi_get(self.addr, f"/normal/fresh?id={i}", timeout=10))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(15)
        self.conn.close()

    def between(self, t0, t1):
        k = [o for o in self.keep if t0 <= o.t0 <= t1]
        f = [o for o in self.fresh if t0 <= o.t0 <= t1]
        return k, f


def tcp_connect_nb(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    err = s.connect_ex((host, port))
    return s, err


def open_many(host, port, n, pace=0.0):
    """n connected blocking-mode sockets (errors counted), opened in order."""
    socks, errors = [], {}
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect((host, port))
            socks.append(s)
        except OSError as e:
            errors[errno.errorcode.get(e.errno, str(e))] = errors.get(errno.errorcode.get(e.errno, str(e)), 0) + 1
            s.close()
        if pace:
            time.sleep(pace)
    return socks, errors


def wait_closed(socks, within):
    """{index: seconds until EOF/reset} for sockets closed by the peer within `within`."""
    sel = selectors.DefaultSelector()
    t0 = time.monotonic()
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    closed = {}
    while len(closed) < len(socks) and time.monotonic() - t0 < within:
        for key, _ in sel.select(timeout=0.2):
            try:
                data = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closed[key.data] = time.monotonic() - t0
                sel.unregister(key.fileobj)
    sel.close()
    return closed


def established(socks, skip):
    """How many of socks (but those indexed in skip) have finished their
    handshake: writable and in no error. A connect whose SYN the kernel is
    still retrying is not (yet)."""
    poller = select.poll()
    for i, s in enumerate(socks):
        if i not in skip:
            poller.register(s, select.POLLOUT)
    n = 0
    for _, ev in poller.poll(0):
        if ev & select.POLLOUT and not ev & (select.POLLERR | select.POLLHUP):
            n += 1
    return n


def half_record():
    begin = c.record(c.BEGIN_REQUEST, 1, struct.pack(">HB5x", 1, c.KEEP_CONN))
    params = c.params_block("/stall")
    rec = c.record(c.PARAMS, 1, params)
    return begin + rec[: 8 + len(params) // 2]


def params_of_size(size):
    """A params block of exactly `size` bytes (a filler HTTP_X_FILL pair)."""
    base = c.params_block("/params")
    name = b"HTTP_X_FILL"
    vlen = size - len(base) - 1 - 4 - len(name)
    assert vlen >= 128
    block = base + c.pair(name, b"v" * vlen)
    assert len(block) == size, (len(block), size)
    return block


def close_all(socks):
    for s in socks:
        c.linger0(s)
        s.close()


def burst(host, port, n, within):
    """Opens n connections as fast as possible; each sends a kept-alive
    request. Returns (sockets still open and served, counts by outcome)."""
    sel = selectors.DefaultSelector()
    req = c.request_bytes(1, "/burst", keep_conn=True)
    state = {}
    counts = {"served": 0, "refused (closed, no answer)": 0, "connect failed": 0,
              "reset after a partial answer": 0, "no outcome": 0}
    for i in range(n):
        try:
            s, err = tcp_connect_nb(host, port)
        except OSError as e:  # EMFILE and the like on our side
            counts["connect failed"] += 1
            c.log(f"burst: socket(): {e}")
            continue
        if err not in (0, errno.EINPROGRESS):
            counts["connect failed"] += 1
            s.close()
            continue
        state[s] = {"phase": "connecting", "buf": b""}
        sel.register(s, selectors.EVENT_WRITE, s)
    opened = time.monotonic()
    served = []
    t0 = time.monotonic()
    while sel.get_map() and time.monotonic() - t0 < within:
        for key, ev in sel.select(timeout=0.2):
            s = key.data
            st = state[s]
            if st["phase"] == "connecting":
                e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if e:
                    counts["connect failed"] += 1
                    sel.unregister(s)
                    s.close()
                    continue
                try:
                    s.send(req)
                except OSError:
                    counts["refused (closed, no answer)"] += 1
                    sel.unregister(s)
                    s.close()
                    continue
                st["phase"] = "reading"
                sel.modify(s, selectors.EVENT_READ, s)
                continue
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = None
            if not data:
                counts["refused (closed, no answer)" if not st["buf"] else "reset after a partial answer"] += 1
                sel.unregister(s)
                s.close()
                continue
            st["buf"] += data
            if has_end_request(st["buf"]):
                counts["served"] += 1
                sel.unregister(s)
                served.append(s)
    for key in list(sel.get_map().values()):
        counts["no outcome"] += 1
        served.append(key.fileobj)  # still open: hold it like the others
    sel.close()
    statuses = {}
    for st in state.values():
        if has_end_request(st["buf"]):
            k = status_of(st["buf"])
            statuses[k] = statuses.get(k, 0) + 1
    return served, counts, statuses, opened - t0


def status_of(buf):
    """'200', '503 queue full', ... of the first response in raw records."""
    out, i = b"", 0
    while i + 8 <= len(buf):
        _, rtype, _, clen, pad = struct.unpack(">BBHHB", buf[i:i + 7])
        if rtype == c.STDOUT:
            out += buf[i + 8:i + 8 + clen]
        i += 8 + clen + pad
    status = str(c.parse_status(out))
    return status + (" queue full" if b"queue of this pool is full" in out else "")


def queue_full(o):
    return o.status == 503 and b"queue of this pool is full" in (o.body or b"")


def open_nb(host, port, n):
    """n connections started as fast as possible (non-blocking connect);
    returns (sockets, connect errors, seconds it took)."""
    socks, errs = [], {}
    t0 = time.monotonic()
    for _ in range(n):
        try:
            s, err = tcp_connect_nb(host, port)
        except OSError as e:
            k = errno.errorcode.get(e.errno, str(e))
            errs[k] = errs.get(k, 0) + 1
            continue
        if err not in (0, errno.EINPROGRESS):
            k = errno.errorcode.get(err, str(err))
            errs[k] = errs.get(k, 0) + 1
            s.close()
            continue
        socks.append(s)
    return socks, errs, time.monotonic() - t0


def has_end_request(buf):
    i = 0
    while i + 8 <= len(buf):
        _, rtype, _, clen, pad = struct.unpack(">BBHHB", buf[i:i + 7])
        if rtype == c.END_REQUEST and i + 8 + clen <= len(buf):
            return True
        i += 8 + clen + pad
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", default="a,b,c,d,e,f")
    ap.add_argument("--burst-rounds", type=int, default=3)
    ap.add_argument("--stallers", type=int, default=200)
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--hold", type=c.duration, default=5.0)
    ap.add_argument("--burst", type=int, default=10000)
    ap.add_argument("--read-timeout", type=c.duration, default=2.0)
    ap.add_argument("--tricklers", type=int, default=50)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--duration", type=c.duration, default=None,
                    help="accepted for run-all.sh; the phases take the time they take")
    c.common_args(ap)
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    c.build(args.no_build)
    nofile = c.raise_nofile()
    sc = c.Scenario("hostile-clients", args)
    port = c.free_port()
    addr = f"127.0.0.1:{port}"
    rt = args.read_timeout
    extra = (f"request.read_timeout = {int(rt * 1000)}ms\n"
             f"request.header_timeout = {int(2 * rt * 1000)}ms\n")
    herd = c.Herd(sc, c.global_section() + c.example_pool("app", addr, args.workers, extra)).start()
    if herd.wait_settled({"app": args.workers}, within=20) is None or herd.wait_serving(addr) is None:
        c.log(herd.log_text())
        sys.exit("herd did not come up")
    herd_nofile = None
    try:
        for line in open(f"/proc/{herd.pid}/limits"):
            if line.startswith("Max open files"):
                herd_nofile = int(line.split()[3])
    except (OSError, ValueError):
        pass

    sampler = c.Sampler(herd, every=0.05).start()
    sc.cleanups.append(sampler.stop)
    normal = Normal(addr).start()
    sc.cleanups.append(normal.stop)
    time.sleep(0.5)
    rss0, fds0 = herd.rss_kb(), herd.fds()

    t = c.Table(
        "slow and hostile clients",
        [f"{args.workers} example-app workers on TCP, request.read_timeout {rt:g} s, "
         f"max_params_size 128K, max_connections 8192 (defaults); herd's fd limit {herd_nofile}, "
         f"the client's {nofile}; a kept-alive client GETs every 20 ms and a new-connection "
         "client every 100 ms throughout"])
    t.row("master VmRSS / fds at the start", f"{c.mib(rss0)} / {fds0}")
    queue_full_windows = []

    def phase(name, fn, queue_full_ok=False):
        c.log(f"phase {name}")
        line0 = len(herd.log_text().splitlines())
        t0 = time.monotonic()
        fn()
        time.sleep(0.5)  # the log lines of the last closes
        t1 = time.monotonic()
        k, f = normal.between(t0, t1)
        peak = max((s[1] for s in sampler.samples if t0 <= s[0] <= t1), default=None)
        kbad = [o for o in k if o.kind != "ok"]
        qfull = [o for o in kbad if queue_full(o)]
        t.row(f"{name}: kept-alive client served", f"{len(k) - len(kbad)} of {len(k)}"
              + (f" ({c.kinds_text(c.count_kinds(kbad))}; {len(qfull)} of them 503 queue full)" if kbad else ""),
              "all" + (", or 503 queue full" if queue_full_ok else ""),
              len(k) > 0 and len(kbad) == (len(qfull) if queue_full_ok else 0))
        if queue_full_ok:
            queue_full_windows.append((t0, t1))
        fbad = [o for o in f if o.kind != "ok"]
        return line0, t0, t1, peak, f, fbad

    # a: half a record, then a stall -------------------------------------------
    if "a" in phases:
        def run_a():
            socks, errs = open_many("127.0.0.1", port, args.stallers)
            hr = half_record()
            for s in socks:
                s.sendall(hr)
            closed = wait_closed(socks, rt + 15)
            times = sorted(closed.values())
            t.row("a: stallers opened (connect errors)", f"{len(socks)} ({c.kinds_text(errs)})")
            t.row("a: stallers closed by herd", len(closed), len(socks), len(closed) == len(socks))
            t.row("a: time to close (min / max)", f"{c.fmt_s(times[0] if times else None)} / "
                  f"{c.fmt_s(times[-1] if times else None)}",
                  f">= {rt * 0.9:.1f} s", bool(times) and times[0] >= rt * 0.9)
            close_all(socks)
        line0, *_, peak, f, fbad = phase("a", run_a)
        n = refusal_counts(herd, line0)
        t.row("a: log lines 'no bytes for ...'", n["stalled (read_timeout)"], f"{args.stallers} (one each)",
              n["stalled (read_timeout)"] == args.stallers)
        t.row("a: WARN/ERROR lines in all", n["WARN/ERROR lines in all"], f"{args.stallers}",
              n["WARN/ERROR lines in all"] == args.stallers)
        t.row("a: new-connection client served", f"{len(f) - len(fbad)} of {len(f)}", "all", not fbad)
        t.row("a: master VmRSS peak", c.mib(peak))

    # b: idle connections ----------------------------------------------------------
    if "b" in phases:
        def run_b():
            socks, errs = open_many("127.0.0.1", port, args.idle)
            t.row("b: idle connections opened (connect errors)", f"{len(socks)} ({c.kinds_text(errs)})",
                  args.idle, len(socks) == args.idle)
            served = 0
            for s in socks:
                conn = c.FcgiConn(addr, timeout=10)
                conn.sock = s
                if conn.request("/idle/first", keep_conn=True).kind == "ok":
                    served += 1
            t.row("b: each served one kept-alive request first", f"{served} of {len(socks)}",
                  "all", served == len(socks))
            hold = max(args.hold, rt + 1)
            closed = wait_closed(socks, hold)
            t.row(f"b: closed by herd while idle for {hold:g} s (read_timeout {rt:g} s)", len(closed), 0,
                  not closed)
            fds = herd.fds()
            t.row("b: master fds while they are open", fds)
            sample = [s for i, s in enumerate(socks) if i not in closed][:: max(1, args.idle // 50)]
            ok = 0
            for s in sample:
                s.setblocking(True)
                s.settimeout(10)
                conn = c.FcgiConn(addr, timeout=10)
                conn.sock = s
                if conn.request("/idle/then-busy", keep_conn=True).kind == "ok":
                    ok += 1
            t.row("b: idle connections served afterwards (a sample)", f"{ok} of {len(sample)}",
                  "all", ok == len(sample))
            close_all(socks)
        line0, *_, peak, f, fbad = phase("b", run_b)
        n = refusal_counts(herd, line0)
        t.row("b: WARN/ERROR lines", n["WARN/ERROR lines in all"], 0, n["WARN/ERROR lines in all"] == 0)
        t.row("b: new-connection client served", f"{len(f) - len(fbad)} of {len(f)}", "all", not fbad)
        t.row("b: master VmRSS peak", c.mib(peak))

    # c: params at and past the bound ------------------------------------------------
    if "c" in phases:
        def run_c():
            for size, expect in [(MAX_PARAMS - 1, "200"), (MAX_PARAMS, "200"),
                                 (MAX_PARAMS + 1, "closed"), (16 << 20, "closed")]:
                conn = c.FcgiConn(addr, timeout=15)
                o = conn.request("/params", params=params_of_size(size) if size < (1 << 20) else None,
                                 extra=[] if size < (1 << 20) else [("HTTP_X_BIG", "v" * (size - 100))])
                conn.close()
                got = str(o.status) if o.kind == "ok" else o.kind
                good = got == expect or (expect == "closed" and o.kind in ("closed", "reset"))
                t.row(f"c: params of {size} bytes", got + (f" ({o.detail})" if o.detail else ""),
                      expect, good)
        line0, *_, peak, f, fbad = phase("c", run_c)
        n = refusal_counts(herd, line0)
        t.row("c: log lines 'params of request N exceed 131072 bytes'", n["params past max_params_size"], 2,
              n["params past max_params_size"] == 2)
        t.row("c: WARN/ERROR lines in all", n["WARN/ERROR lines in all"], 2, n["WARN/ERROR lines in all"] == 2)
        t.row("c: new-connection client served", f"{len(f) - len(fbad)} of {len(f)}", "all", not fbad)
        t.row("c: master VmRSS peak (16 MiB sent)", c.mib(peak))

    # d: a burst of idle connections ---------------------------------------------------
    if "d" in phases:
        def run_d(rnd):
            def go():
                rss_before = herd.rss_kb()
                socks, errs, took = open_nb("127.0.0.1", port, args.burst)
                opened = time.monotonic()
                t.row(f"d{rnd}: {args.burst} connections opened in", f"{took:.2f} s"
                      + (f" (connect errors: {c.kinds_text(errs)})" if errs else ""))
                # Refusals come at once (or after the kernel's 1 s SYN retry);
                # the held ones are closed at read_timeout.
                closed = wait_closed(socks, min(args.hold, rt * 0.75))
                d_state.setdefault("refused", []).append(len(closed))
                # The kernel may still be retrying the SYNs of a burst that
                # overflowed the listen backlog (after 1 s, 3 s, 7 s): herd
                # can only hold what has connected, so count that on this
                # side, around the sample.
                est_before = established(socks, closed)
                held = herd.metric("herd_connections_open", 'pool="app"')
                held = None if held is None else int(held)
                est_after = established(socks, closed)
                # Besides the burst, the kept-alive client holds a slot (and the
                # new-connection client may hold one for a moment).
                limit = MAX_CONNECTIONS - 1
                want = max(0, len(socks) - limit)
                # A connect whose SYN the kernel retried (after 1 s, 3 s) may
                # come after the first held ones timed out, and find room.
                late_room = max(0, len(socks) - len(closed) - limit)
                t.row(f"d{rnd}: closed by herd at once (past max_connections)", len(closed),
                      f"{want} (+1; -{late_room} accepted late, once held ones had closed)",
                      want - late_room <= len(closed) <= want + 1)
                late = sorted(v for v in closed.values() if v > 1.0)
                t.row(f"d{rnd}: of those, closed later than 1 s (their SYN retried by the kernel)",
                      len(late))
                # + 1: the kept-alive client; - 1: the new-connection client's
                # may be between two; and a connection may still wait in the
                # accept queue, herd accepting as fast as it can.
                low = min(MAX_CONNECTIONS, est_before + 1) - 2
                high = min(MAX_CONNECTIONS, est_after + 2)
                pending = len(socks) - len(closed) - est_after
                t.row(f"d{rnd}: connections open in herd (herd_connections_open)", held,
                      f"{low}..{high} (connected here: {est_before}..{est_after} of the burst"
                      + (f"; {pending} still in SYN retry" if pending else "") + ")",
                      held is not None and low <= held <= high)
                peak = herd.rss_kb()
                rest = [x for i, x in enumerate(socks) if i not in closed]
                since = time.monotonic() - opened
                later = sorted(since + v for v in wait_closed(rest, rt + 5).values())
                t.row(f"d{rnd}: the held ones (never sent a byte) closed by herd, seconds after the burst",
                      f"{len(later)} of {len(rest)}, after {c.fmt_s(later[0] if later else None)}"
                      f"..{c.fmt_s(later[-1] if later else None)}",
                      f"all, after >= {rt * 0.75:.1f} s", len(later) == len(rest)
                      and (not later or later[0] >= rt * 0.75))
                close_all(socks)
                # herd gives the memory back once the connections are gone
                # (it looks every 2 s).
                t_closed = time.monotonic()
                while time.monotonic() - t_closed < 8 and herd.rss_kb() > rss0 + 8 * 1024:
                    time.sleep(0.2)
                d_state.setdefault("rounds", []).append((rss_before, peak, herd.rss_kb(), herd.fds()))
            return go
        d_state = {}
        for rnd in range(1, args.burst_rounds + 1):
            line0, t0, t1, peak, f, fbad = phase(f"d{rnd}", run_d(rnd))
            lines = [l for l in herd.log_text().splitlines()[line0:] if "listen.max_connections" in l]
            others = refusal_counts(herd, line0)["WARN/ERROR lines in all"] - len(lines)
            most = int(t1 - t0) + 2
            t.row(f"d{rnd}: log lines 'listen.max_connections'", len(lines),
                  f"<= {most} (one a second at most)", (0 < len(lines) <= most) if args.burst >= MAX_CONNECTIONS
                  else not lines)
            suppressed = sum(int(m) for l in lines for m in re.findall(r"and (\d+) more", l))
            refused = d_state["refused"][-1] + sum(1 for o in f if o.kind in ("reset", "closed"))
            t.row(f"d{rnd}: refusals those lines account for / refused (burst + new-connection client)",
                  f"{len(lines) + suppressed} / {refused}", "equal", len(lines) + suppressed >= refused)
            t.row(f"d{rnd}: other WARN/ERROR lines", others, 0, others == 0)
            t.row(f"d{rnd}: new-connection client (refused while the limit is reached)",
                  c.kinds_text(c.count_kinds(f)))
            b, pk, a, fds = d_state["rounds"][-1]
            bound = min(args.burst, MAX_CONNECTIONS) * 16
            t.row(f"d{rnd}: master VmRSS before / with the burst / within 8 s of closing; fds after",
                  f"{c.mib(b)} / {c.mib(pk)} / {c.mib(a)}; {fds}",
                  f"- / <= start + {bound // 1024} MiB (16 KiB a connection) / <= start + 8 MiB",
                  pk - rss0 <= bound and a - rss0 <= 8 * 1024)
        rs = [r[2] for r in d_state["rounds"]]
        t.row("d: master VmRSS after each burst (given back by herd's heap trim)",
              " / ".join(c.mib(x) for x in rs))

    # e: tricklers ----------------------------------------------------------------------
    if "e" in phases:
        e_opened = []

        def run_e():
            socks, errs = open_many("127.0.0.1", port, args.tricklers)
            e_opened.append(len(socks))
            req = c.request_bytes(1, "/trickle", keep_conn=False)
            sent = {i: 0 for i in range(len(socks))}
            closed = set()
            t_end = time.monotonic() + 3 * rt + 1
            answered = 0
            # One byte per connection every read_timeout / 2, until the
            # request is complete, the deadline, or herd closes it.
            while time.monotonic() < t_end and len(closed) < len(socks):
                for i, s in enumerate(socks):
                    if i in closed or sent[i] >= len(req):
                        continue
                    try:
                        s.send(req[sent[i]:sent[i] + 1])
                        sent[i] += 1
                    except OSError:
                        closed.add(i)
                time.sleep(rt / 2)
            t.row(f"e: tricklers (a byte every {rt / 2:g} s) closed by herd within {3 * rt + 1:g} s",
                  f"{len(closed)} of {len(socks)}", f"all (request.header_timeout {2 * rt:g} s)",
                  len(closed) == len(socks))
            t.row("e: bytes sent per trickler (of a request's)", f"{min(sent.values(), default=0)} "
                  f"(of {len(req)})")
            close_all(socks)
            return answered
        line0, *_, peak, f, fbad = phase("e", run_e)
        n = refusal_counts(herd, line0)
        t.row("e: log lines 'request.header_timeout'", n["trickled (header_timeout)"],
              f"{e_opened[0]} (one each)", n["trickled (header_timeout)"] == e_opened[0])
        t.row("e: WARN/ERROR lines", n["WARN/ERROR lines in all"], f"<= {args.tricklers} (one per connection)",
              n["WARN/ERROR lines in all"] <= args.tricklers)

    # f: a burst of requests ----------------------------------------------------------------
    if "f" in phases:
        def run_f():
            held, counts, statuses, took = burst("127.0.0.1", port, args.burst, within=60)
            t.row(f"f: {args.burst} connections, each a kept-alive request, by outcome", c.kinds_text(
                {k: v for k, v in counts.items() if v}))
            t.row("f: answers by status", c.kinds_text(statuses),
                  "200, or 503 past pm.max_queue (1024)", set(statuses) <= {"200", "503 queue full"})
            limit = MAX_CONNECTIONS - 1
            t.row("f: refused at once", counts["refused (closed, no answer)"],
                  f"{max(0, args.burst - limit)} (+1)",
                  0 <= counts["refused (closed, no answer)"] - max(0, args.burst - limit) <= 1)
            t.row("f: no outcome within 60 s (hung)", counts["no outcome"], 0, counts["no outcome"] == 0)
            closed = wait_closed(held, args.hold)
            t.row(f"f: answered connections closed by herd while held {args.hold:g} s", len(closed), 0,
                  not closed)
            close_all(held)
        line0, t0, t1, peak, f, fbad = phase("f", run_f, queue_full_ok=True)
        lines = [l for l in herd.log_text().splitlines()[line0:] if "listen.max_connections" in l]
        t.row("f: log lines 'listen.max_connections'", len(lines), f"<= {int(t1 - t0) + 2}",
              len(lines) <= int(t1 - t0) + 2)
        t.row("f: new-connection client, by kind", c.kinds_text(c.count_kinds(f)))
        t.row("f: master VmRSS peak", c.mib(peak))

    time.sleep(2.0)
    normal.stop()
    sampler.stop()
    rss1, fds1 = herd.rss_kb(), herd.fds()
    kbad = [o for o in normal.keep if o.kind != "ok" and not (
        queue_full(o) and any(a <= o.t0 <= b for a, b in queue_full_windows))]
    t.row("kept-alive client over the whole run (503 queue full in f aside)",
          f"{len(normal.keep) - len(kbad)} of {len(normal.keep)}", "all", not kbad)
    t.row("master VmRSS start / peak / end", f"{c.mib(rss0)} / {c.mib(sampler.peak_rss())} / {c.mib(rss1)}")
    t.row("master fds start / peak / end", f"{fds0} / {sampler.peak_fds()} / {fds1}")
    master_alive = herd.running()
    t.row("master alive throughout", "yes" if master_alive else "no", "yes", master_alive)
    stopped = herd.stop()
    t.row("herd stopped, every worker gone", "yes" if stopped else "no", "yes", bool(stopped))
    c.leftover_rows(t, sc, [herd])
    sys.exit(t.emit(sc))


if __name__ == "__main__":
    main()
