#!/usr/bin/env python3
"""Chaos: soak herd behind nginx with wrk.

    contrib/chaos/soak.py [--duration 30m] [--requests 10000000]
        [--app example|php] [--workers 4] [--connections 32]
        [--chunk 60s] [--sample 10s] [--no-build] [--keep-tmp] [--out FILE]

nginx (its own config in the scenario's directory; one worker process;
`fastcgi_keep_conn on` to an upstream with `keepalive 32`) sits in front
of herd (one static pool of `--workers` on a unix socket): the example
app (`herd example-app`) or, with `--app php`, php-cgi on a hello.php.
wrk (2 threads, `--connections`) runs against nginx in chunks of
`--chunk` until `--duration` has passed or `--requests` requests were
made, whichever comes first. wrk's errors (socket errors and non-2xx
answers) must be 0.

The master's VmRSS and open fds are sampled every `--sample` under load,
and once between chunks with wrk stopped (nginx's kept-alive connections
to herd stay open); "flat" means the quiet samples after the first chunk
do not grow: VmRSS within +2 MiB of the first; the master's own fds (its
fd count less the client connections open and the /proc files below) no
more than before the load plus one connection per worker (herd connects to
a worker the first time it sends it a request, and the router prefers the
longest-running idle worker, so a light load may never reach some). The
master's files under /proc are counted apart: `herd ctl status` (which
this script runs to learn the worker pids) makes the master measure each
request's CPU and memory for a while, from three /proc files per worker it
keeps open until the worker leaves: at most three per worker. Start, end, min
and max are reported; every sample goes to samples.tsv in the scenario's
directory (kept with --keep-tmp).

Prints one markdown table; exits 1 when something is flagged. Every
process started here is stopped, by pid, and checked gone at the end.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaoslib as c  # noqa: E402

PHP_CGI = "/usr/bin/php-cgi8.2"


def nginx_conf(d, port, sock, script):
    script_line = f"fastcgi_param SCRIPT_FILENAME {script};" if script else ""
    return f"""worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000000;
    upstream herd {{ server unix:{sock}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        location = /ready {{ return 204; }}
        location / {{
            include /etc/nginx/fastcgi_params;
            {script_line}
            fastcgi_keep_conn on;
            fastcgi_pass herd;
        }}
    }}
}}
"""


def parse_wrk(text):
    m = re.search(r"(\d+) requests in", text)
    reqs = int(m.group(1)) if m else None
    errs = {}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            errs[k] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errs["non-2xx"] = int(m.group(1)) if m else 0
    return reqs, errs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=c.duration, default=1800.0)
    ap.add_argument("--requests", type=int, default=10_000_000)
    ap.add_argument("--app", choices=["example", "php"], default="example")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--chunk", type=c.duration, default=60.0)
    ap.add_argument("--sample", type=c.duration, default=10.0)
    c.common_args(ap)
    args = ap.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"{tool} is missing (apt-get install {tool})")
    if args.app == "php" and not os.path.exists(PHP_CGI):
        sys.exit(f"{PHP_CGI} is missing (apt-get install php8.2-cgi)")
    c.build(args.no_build)
    sc = c.Scenario("soak", args)
    d = sc.dir
    sock = d / "herd.sock"
    if args.app == "php":
        (d / "www").mkdir()
        (d / "www" / "hello.php").write_text('<?php echo "Hello, world\\n";\n')
        os.chmod(d / "www", 0o755)
        os.chmod(d / "www" / "hello.php", 0o644)
        script, path = str(d / "www" / "hello.php"), "/hello.php"
        pool = (f"[www]\nlisten = {sock}\npm = static\npm.max_children = {args.workers}\n"
                f"command = {PHP_CGI}\nenv[PHP_FCGI_MAX_REQUESTS] = 0\n{c.user_lines()}")
    else:
        script, path = None, "/soak"
        pool = c.example_pool("www", str(sock), args.workers)
    herd = c.Herd(sc, c.global_section() + pool).start()
    if herd.wait_settled({"www": args.workers}, within=20) is None:
        c.log(herd.log_text())
        sys.exit("herd did not come up")

    port = c.free_port()
    (d / "nginx.conf").write_text(nginx_conf(d, port, sock, script))
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    ngx = subprocess.Popen([nginx_bin, "-e", str(d / "nginx-error.log"), "-p", str(d), "-c", str(d / "nginx.conf")],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=open(d / "nginx-stderr.log", "wb"))
    sc.reg.add(ngx.pid, "nginx")

    def stop_nginx():
        if ngx.poll() is None:
            ngx.terminate()
            try:
                ngx.wait(10)
            except subprocess.TimeoutExpired:
                ngx.kill()
                ngx.wait()
    sc.cleanups.append(stop_nginx)
    url = f"http://127.0.0.1:{port}{path}"
    t0 = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() - t0 > 15 or ngx.poll() is not None:
            c.log((d / "nginx-error.log").read_text() if (d / "nginx-error.log").exists() else "")
            sys.exit("nginx did not answer 200 through herd")
        time.sleep(0.1)

    # --- the soak ------------------------------------------------------------
    loaded = []  # (t, rss, fds, client connections, /proc files) every --sample under load
    quiet = []   # the same between chunks
    stop_ev = threading.Event()

    def conns():
        """Client (nginx) connections open in the master: the sockets named
        after the pool's listener, less the listener itself."""
        n = c.socket_kinds(herd.pid).get(f"unix:{sock}")
        return None if n is None else n - 1

    def sample():
        while not stop_ev.wait(args.sample):
            loaded.append((time.monotonic() - start, herd.rss_kb(), herd.fds(), conns(), c.proc_files(herd.pid)))
    start = time.monotonic()
    quiet.append((0.0, herd.rss_kb(), herd.fds(), conns(), c.proc_files(herd.pid)))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    total, errors, chunks, wrk_failed = 0, {}, 0, []
    rate = None
    while True:
        elapsed = time.monotonic() - start
        left_t = args.duration - elapsed
        left_n = args.requests - total
        if left_t < 1 or left_n <= 0:
            break
        secs = min(args.chunk, left_t)
        if rate:
            secs = min(secs, max(1.0, left_n / rate))
        out = d / f"wrk-{chunks}.txt"
        with open(out, "w") as f:
            w = subprocess.Popen(["wrk", "-t2", f"-c{args.connections}", f"-d{int(round(secs))}s", url],
                                 stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
            sc.reg.add(w.pid, "wrk")
            try:
                w.wait(secs + 60)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
                wrk_failed.append(f"chunk {chunks}: wrk still running after {secs + 60:.0f}s")
        text = out.read_text()
        reqs, errs = parse_wrk(text)
        if reqs is None:
            wrk_failed.append(f"chunk {chunks}: no request count in wrk's output: {text[-300:]!r}")
            break
        chunk_t = max(1.0, round(secs))
        rate = reqs / chunk_t
        total += reqs
        for k, v in errs.items():
            errors[k] = errors.get(k, 0) + v
        chunks += 1
        time.sleep(1.0)  # quiet: wrk gone, nginx's upstream connections idle
        quiet.append((time.monotonic() - start, herd.rss_kb(), herd.fds(), conns(), c.proc_files(herd.pid)))
        c.log(f"chunk {chunks}: {reqs} requests ({total} in all), errors {errs}; "
              f"master rss {quiet[-1][1]} kB, fds {quiet[-1][2]} {c.socket_kinds(herd.pid)}, "
              f"client connections {quiet[-1][3]}")
        if not herd.running() or ngx.poll() is not None:
            wrk_failed.append("herd or nginx exited")
            break
    soak_s = time.monotonic() - start
    stop_ev.set()
    sampler.join()
    st = herd.status()
    p = st["pools"][0] if st else {}
    nginx_errors = [l for l in (d / "nginx-error.log").read_text(errors="replace").splitlines()
                    if "[error]" in l or "[crit]" in l or "[alert]" in l] if (d / "nginx-error.log").exists() else []
    herd_warn = [l for l in herd.log_text().splitlines() if " WARN " in l or " ERROR " in l]
    master_alive = herd.running()
    stop_nginx()
    stopped = herd.stop()

    n_err = sum(errors.values())
    t = c.Table(
        f"soak: herd behind nginx, wrk ({soak_s / 60:.1f} min, {total:,} requests)",
        [f"{args.app} app, {args.workers} workers on a unix socket; nginx 1 worker, "
         f"fastcgi_keep_conn on, keepalive 32; wrk -t2 -c{args.connections} in {chunks} chunk(s) of "
         f"<= {args.chunk:.0f} s; stop at {args.duration:.0f} s or {args.requests:,} requests"])
    t.row("requests (wrk)", f"{total:,} ({total / soak_s:,.0f}/s)")
    t.row("wrk errors (socket errors + non-2xx)", f"{n_err} ({c.kinds_text({k: v for k, v in errors.items() if v})})",
          0, n_err == 0 and not wrk_failed)
    for f in wrk_failed:
        t.row("wrk run failed", f, "", False)
    t.row("nginx error log [error]/[crit]/[alert] lines", len(nginx_errors)
          if not nginx_errors else f"{len(nginx_errors)}: {nginx_errors[0][:200]}", 0, not nginx_errors)
    t.row("herd WARN/ERROR log lines", len(herd_warn) if not herd_warn else f"{len(herd_warn)}: {herd_warn[0][:200]}",
          0, not herd_warn)
    t.row("herd's 'accepted conn' (wrk does not count what was in flight when a chunk ended)",
          f"{p.get('accepted conn', '-'):,}" if isinstance(p.get('accepted conn'), int) else "-")
    rss_l = [s[1] for s in loaded if s[1] is not None]
    fds_l = [s[2] for s in loaded if s[2] is not None]
    t.row(f"master VmRSS under load, every {args.sample:.0f} s: first / last / min / max",
          " / ".join(c.mib(x) for x in (rss_l[0], rss_l[-1], min(rss_l), max(rss_l))) if rss_l else "-")
    t.row("master fds under load: first / last / min / max",
          " / ".join(str(x) for x in (fds_l[0], fds_l[-1], min(fds_l), max(fds_l))) if fds_l else "-")
    def own(x):
        """The master's fds less its client connections and /proc files."""
        return None if None in (x[2], x[3], x[4]) else x[2] - x[3] - x[4]
    own_l = [own(s) for s in loaded if own(s) is not None]
    t.row("master's own fds under load (fds - client connections - /proc files): min / max",
          f"{min(own_l)} / {max(own_l)}" if own_l else "-")
    # Quiet samples: [0] before any load, [1] after the first chunk, [-1] at the end.
    q = quiet[1:] if len(quiet) > 1 else quiet
    t.row("master VmRSS quiet: before load / after chunk 1 / end / max",
          f"{c.mib(quiet[0][1])} / {c.mib(q[0][1])} / {c.mib(q[-1][1])} / {c.mib(max(x[1] for x in q))}",
          "end <= after chunk 1 + 2 MiB", q[-1][1] - q[0][1] <= 2048)
    t.row("master fds quiet (nginx's idle connections in it): before load / after chunk 1 / end",
          f"{quiet[0][2]} ({quiet[0][3]}) / {q[0][2]} ({q[0][3]}) / {q[-1][2]} ({q[-1][3]})")
    procs = [x[4] for x in loaded + quiet if x[4] is not None]
    t.row("master's /proc files (per-worker usage, while status is watched): before load / max",
          f"{quiet[0][4]} / {max(procs) if procs else '-'}",
          f"<= {3 * args.workers} (3 per worker)", bool(procs) and max(procs) <= 3 * args.workers)
    t.row("master's own fds quiet (fds - client connections - /proc files): before load / after chunk 1 / end / max",
          f"{own(quiet[0])} / {own(q[0])} / {own(q[-1])} / {max((own(x) or 0) for x in q)}",
          f"<= before + {args.workers} (herd connects to a worker when it first needs it)",
          own(q[-1]) is not None and max((own(x) or 0) for x in q) <= own(quiet[0]) + args.workers)
    if len(loaded) > 2:
        picks = [loaded[round(i * (len(loaded) - 1) / 7)] for i in range(8)] if len(loaded) > 8 else loaded
        t.row("samples under load (t: VmRSS, fds)", ", ".join(
            f"{s[0]:.0f}s: {s[1] / 1024:.1f}M {s[2]}" for s in picks))
    t.row("master alive throughout", "yes" if master_alive else "no", "yes", master_alive)
    t.row("herd stopped, every worker gone", "yes" if stopped else "no", "yes", bool(stopped))
    c.leftover_rows(t, sc, [herd])
    with open(d / "samples.tsv", "w") as f:
        f.write("t\trss_kb\tfds\tconnections\tproc_files\tkind\n")
        for s in loaded:
            f.write(f"{s[0]:.1f}\t{s[1]}\t{s[2]}\t{s[3]}\t{s[4]}\tload\n")
        for s in quiet:
            f.write(f"{s[0]:.1f}\t{s[1]}\t{s[2]}\t{s[3]}\t{s[4]}\tquiet\n")
    sys.exit(t.emit(sc))


if __name__ == "__main__":
    main()
