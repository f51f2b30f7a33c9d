"""Shared by the chaos scenarios in this directory (standard library only).

What is here:

* process bookkeeping: every process a scenario starts or sees herd start
  is remembered by (pid, start time), so that at the end the scenario can
  check that none is left and stop a leftover by pid without ever hitting
  a process that reused the number;
* `Herd`: one `herd run` master on a config in the scenario's directory,
  its control socket, its log, its /proc numbers (VmRSS, fds, children);
* a FastCGI client that never raises: each request ends as an `Outcome`
  whose kind says how it ended (answered with a status, reset, closed
  before the reply, timed out, not connected);
* `Load`: client threads looping on requests and recording every outcome;
* the markdown table every scenario prints.

Nothing here asserts a timing: the machine may be small and shared. The
scenarios compare counts and report durations.
"""

import argparse
import atexit
import errno
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HERD = REPO / "target" / "release" / "herd"
HELLO = REPO / "target" / "release" / "examples" / "hello"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --- command line --------------------------------------------------------------


def duration(text):
    """`90`, `90s`, `15m`, `1h`, `500ms` -> seconds (float)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 60s, 30m)")
    n = float(m.group(1))
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def common_args(parser):
    parser.add_argument("--no-build", action="store_true", help="use target/release/herd as it is")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the scenario's directory (logs, configs)")
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build(no_build, examples=False):
    if not no_build:
        cmd = ["cargo", "build", "--release", "--quiet"]
        if examples:
            cmd += ["--bins", "--examples"]
        log("building: " + " ".join(cmd))
        subprocess.run(cmd, cwd=REPO, check=True)
    if not HERD.exists():
        sys.exit(f"{HERD} is missing: run cargo build --release")
    if examples and not HELLO.exists():
        sys.exit(f"{HELLO} is missing: run cargo build --release --examples")


def raise_nofile():
    """The client's own fd limit to its hard limit (herd raises its own)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def user_lines():
    """herd refuses root workers: run them as nobody when we are root."""
    return "user = nobody\n" if os.geteuid() == 0 else ""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- /proc ---------------------------------------------------------------------


def proc_stat(pid):
    """The fields of /proc/<pid>/stat after the command name (field 3 is [0])."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_time(pid):
    f = proc_stat(pid)
    return int(f[19]) if f else None  # field 22: starttime, in clock ticks


def alive(pid, start=None):
    """Running (not a zombie), and the same process when `start` is given."""
    f = proc_stat(pid)
    if not f or f[0] == "Z":
        return False
    return start is None or int(f[19]) == start


def ppid(pid):
    f = proc_stat(pid)
    return int(f[1]) if f else None


def boot_ticks_now():
    """Now, in the clock ticks since boot that /proc start times use."""
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * CLK_TCK)


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def children_of(pid):
    return [p for p in all_pids() if ppid(p) == pid]


def descendants_of(pid):
    out, todo = [], [pid]
    parents = {}
    for p in all_pids():
        pp = ppid(p)
        if pp is not None:
            parents.setdefault(pp, []).append(p)
    while todo:
        for kid in parents.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


def status_kb(pid, key):
    """A `Key:  N kB` line of /proc/<pid>/status, in kB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def fd_targets(pid):
    """What each of pid's fds points at (readlink of /proc/PID/fd/N), or
    None when the process is gone; an fd closed meanwhile is left out."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    targets = []
    for name in names:
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            continue
    return targets


def proc_files(pid):
    """How many of pid's fds are files under /proc: herd's master keeps
    three per worker open (stat, status, clear_refs) to measure each
    request's CPU and memory while someone looks at per-worker status."""
    targets = fd_targets(pid)
    return None if targets is None else sum(t.startswith("/proc/") for t in targets)


def fd_kinds(pid):
    """{'socket': n, 'pipe': n, 'anon_inode:[eventpoll]': n, 'file': n, ...}."""
    kinds = {}
    for t in fd_targets(pid) or []:
        k = t.split(":", 1)[0] if ":" in t and not t.startswith("/") else "file"
        if k == "anon_inode":
            k = t
        kinds[k] = kinds.get(k, 0) + 1
    return dict(sorted(kinds.items()))


def socket_kinds(pid):
    """The master's sockets by what they are, from /proc/net/unix and
    /proc/net/tcp*: {'unix:<path>': n, 'unix:(unnamed)': n, 'tcp': n,
    'other': n}. An accepted unix connection shows its listener's path;
    the master's own connections to its workers are unnamed."""
    targets = fd_targets(pid)
    if targets is None:
        return {}
    inodes = [int(t[8:-1]) for t in targets if t.startswith("socket:[")]
    unix = {}
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                cols = line.split()
                if len(cols) >= 7:
                    unix[int(cols[6])] = cols[7] if len(cols) > 7 else "(unnamed)"
    except OSError:
        pass
    tcp = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if len(cols) > 9:
                        tcp.add(int(cols[9]))
        except OSError:
            pass
    out = {}
    for i in inodes:
        k = f"unix:{unix[i]}" if i in unix else ("tcp" if i in tcp else "other")
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def environ_has(pid, key):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return any(kv.startswith(key.encode() + b"=") for kv in f.read().split(b"\0"))
    except OSError:
        return False


# --- processes we started --------------------------------------------------------


class Registry:
    """Every process of the scenario, by (pid, start time)."""

    def __init__(self):
        self.procs = {}  # pid -> (start, label)
        self.lock = threading.Lock()
        self.started_ticks = boot_ticks_now()

    def add(self, pid, label):
        st = start_time(pid)
        if st is None:
            return
        with self.lock:
            if pid not in self.procs or self.procs[pid][0] != st:
                self.procs[pid] = (st, label)

    def add_herd_worker(self, pid, label="worker"):
        """A pid herd's log named: ours only if it is a herd worker that
        started after the scenario did (else the number was reused)."""
        st = start_time(pid)
        if st is None or st < self.started_ticks - CLK_TCK:
            return
        if environ_has(pid, "HERD_WORKER") or environ_has(pid, "HERD_POOL"):
            self.add(pid, label)

    def leftovers(self):
        with self.lock:
            items = list(self.procs.items())
        return [(pid, label) for pid, (st, label) in items if alive(pid, st)]

    def kill_leftovers(self, grace=3.0):
        """SIGTERM, then SIGKILL, every process of ours still running."""
        left = self.leftovers()
        for pid, _ in left:
            _signal(pid, self.procs[pid][0], signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid, _ in self.leftovers():
            _signal(pid, self.procs[pid][0], signal.SIGKILL)
        deadline = time.monotonic() + 3
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.05)
        return left


def _signal(pid, start, sig):
    if alive(pid, start):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class Scenario:
    """A scenario's directory, registry and cleanup, however it ends."""

    def __init__(self, name, args):
        self.name = name
        self.args = args
        self.reg = Registry()
        self.dir = Path(tempfile.mkdtemp(prefix=f"herd-chaos-{name}."))
        os.chmod(self.dir, 0o755)  # workers run as nobody
        self.failed = False
        self.cleanups = []
        self.seed = args.seed if args.seed is not None else int(time.time())
        random.seed(self.seed)
        atexit.register(self.cleanup)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        log(f"{self.name}: signal {signum}: stopping")
        self.failed = True
        sys.exit(128 + signum)

    def cleanup(self):
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # keep cleaning up
                log(f"cleanup: {e}")
        self.cleanups = []
        left = self.reg.kill_leftovers()
        if left:
            log(f"{self.name}: stopped leftovers: {left}")
        if self.dir.exists():
            if self.failed or self.args.keep_tmp:
                log(f"{self.name}: logs and configs kept in {self.dir}")
            else:
                shutil.rmtree(self.dir, ignore_errors=True)

    def leftover_check(self, herds=()):
        """Registers every worker the herd logs named, then returns what of
        ours still runs (the scenario must have stopped everything)."""
        for h in herds:
            for pid in h.logged_pids():
                self.reg.add_herd_worker(pid)
        deadline = time.monotonic() + 5
        while self.reg.leftovers() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.reg.leftovers()


# --- herd ------------------------------------------------------------------------


class Herd:
    """One `herd run` master with its config, log and control socket in `dir`."""

    def __init__(self, scenario, config, name="herd"):
        self.sc = scenario
        self.name = name
        self.dir = scenario.dir
        self.conf = self.dir / f"{name}.conf"
        self.log = self.dir / f"{name}.log"
        self.sock = self.dir / f"{name}-ctl.sock"
        self.proc = None
        self.pid = None
        self.started_at = None
        self.write_config(config)
        scenario.cleanups.append(self.stop)

    def expand(self, text):
        return (text.replace("{dir}", str(self.dir)).replace("{herd}", str(HERD))
                .replace("{hello}", str(HELLO)).replace("{ctl}", str(self.sock)))

    def write_config(self, text):
        text = self.expand(text)
        tmp = self.conf.with_suffix(".new")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.conf)

    def start(self):
        logf = open(self.log, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [str(HERD), "run", "-c", str(self.conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf,
        )
        logf.close()
        self.pid = self.proc.pid
        self.sc.reg.add(self.pid, f"{self.name} master")
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def ctl(self, *args, timeout=30):
        try:
            r = subprocess.run(
                [str(HERD), "ctl", "--socket", str(self.sock), *args],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
            )
            return r.returncode, r.stdout, r.stderr
        except subprocess.TimeoutExpired as e:
            return None, e.stdout or "", f"herd ctl {' '.join(args)} still running after {timeout}s"

    def status(self, timeout=10):
        """`herd ctl status --json`, or None. Registers every worker pid."""
        code, out, _ = self.ctl("status", "--json", timeout=timeout)
        if code != 0:
            return None
        try:
            st = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None
        for pool in st.get("pools", []):
            for p in pool.get("processes", []):
                self.sc.reg.add(p["pid"], f"{self.name} worker")
        return st

    def pools(self):
        st = self.status()
        return {p["pool"]: p for p in st["pools"]} if st else {}

    def worker_pids(self, pool=None):
        st = self.status()
        if not st:
            return []
        return [p["pid"] for q in st["pools"] if pool in (None, q["pool"]) for p in q["processes"]]

    def metric(self, name, labels=""):
        """One value of `herd ctl metrics`, e.g. metric("herd_connections_open",
        'pool="app"'); None when absent."""
        code, out, _ = self.ctl("metrics", timeout=10)
        if code != 0:
            return None
        for line in out.splitlines():
            if line.startswith(name + "{" + labels) or line.startswith(name + " "):
                try:
                    return float(line.rsplit(" ", 1)[1])
                except ValueError:
                    return None
        return None

    def children(self):
        kids = children_of(self.pid) if self.pid else []
        for k in kids:
            self.sc.reg.add(k, f"{self.name} child")
        return kids

    def descendants(self):
        d = descendants_of(self.pid) if self.pid else []
        for k in d:
            self.sc.reg.add(k, f"{self.name} descendant")
        return d

    def rss_kb(self):
        return status_kb(self.pid, "VmRSS")

    def hwm_kb(self):
        return status_kb(self.pid, "VmHWM")

    def fds(self):
        return fd_count(self.pid)

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_lines(self, needle):
        return [l for l in self.log_text().splitlines() if needle in l]

    def logged_pids(self):
        return [int(m) for m in re.findall(r"worker spawned .*?\bpid=(\d+)", self.log_text())]

    def wait_settled(self, sizes, within=30, children=True):
        """Waits until each pool (name -> size) has exactly that many workers,
        all idle or running, none retiring or warming, no rollout in
        progress, and (with `children`) the master has exactly that many
        child processes (retired workers have exited). Returns the seconds
        it took, or None at the deadline."""
        t0 = time.monotonic()
        deadline = t0 + within
        while time.monotonic() < deadline:
            if self.settled(sizes, children):
                return time.monotonic() - t0
            time.sleep(0.05)
        return None

    def settled(self, sizes, children=True):
        st = self.status()
        if not st:
            return False
        pools = {p["pool"]: p for p in st["pools"]}
        for name, n in sizes.items():
            p = pools.get(name)
            if not p:
                return False
            procs = p["processes"]
            if len(procs) != n:
                return False
            if any(w.get("retiring") or w.get("state") not in ("Idle", "Running") for w in procs):
                return False
            if p.get("deploy", {}).get("state") not in ("stable", "refused"):
                return False
        if children and len(self.children()) != sum(sizes.values()):
            return False
        return True

    def wait_serving(self, addr, within=20):
        """Until a GET on `addr` answers 200; seconds it took, or None."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < within:
            if not self.running():
                return None
            o = fcgi_get(addr, "/ready", timeout=2)
            if o.kind == "ok":
                return time.monotonic() - t0
            time.sleep(0.02)
        return None

    def stop(self, within=15):
        """SIGTERM (SIGKILL after `within`), then every worker must be gone."""
        if not self.proc:
            return True
        kids = self.descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(within)
            except subprocess.TimeoutExpired:
                log(f"{self.name}: still running {within}s after SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        deadline = time.monotonic() + 10
        while any(alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not any(alive(k) for k in kids)

    def kill9(self):
        """SIGKILL the master; reap it. Returns its descendants before."""
        kids = self.descendants()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        return kids


def example_pool(name, listen, workers, extra=""):
    return (f"[{name}]\nlisten = {listen}\npm = static\npm.max_children = {workers}\n"
            f"command = {{herd}}\nargs = example-app\n{user_lines()}{extra}")


def global_section(extra=""):
    return f"[global]\ncontrol.listen = {{ctl}}\n{extra}"


# --- FastCGI ---------------------------------------------------------------------

BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR = 1, 2, 3, 4, 5, 6, 7
KEEP_CONN = 1


def record(rtype, rid, content=b""):
    pad = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBx", 1, rtype, rid, len(content), pad) + content + b"\0" * pad


def stream(rtype, rid, data):
    out = b"".join(record(rtype, rid, data[i:i + 65535]) for i in range(0, len(data), 65535))
    return out + record(rtype, rid)


def pair(k, v):
    def ln(n):
        return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    return ln(len(k)) + ln(len(v)) + k + v


def params_block(uri, extra=(), body=b""):
    path, _, query = uri.partition("?")
    std = [("REQUEST_METHOD", "POST" if body else "GET"), ("REQUEST_URI", uri),
           ("SCRIPT_NAME", path), ("SCRIPT_FILENAME", path), ("QUERY_STRING", query),
           ("CONTENT_LENGTH", str(len(body))), ("SERVER_PROTOCOL", "HTTP/1.1"),
           ("GATEWAY_INTERFACE", "CGI/1.1"), ("REDIRECT_STATUS", "200")]
    names = {k for k, _ in extra}
    out = b"".join(pair(k.encode(), v.encode()) for k, v in std if k not in names)
    return out + b"".join(pair(k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in extra)


def request_bytes(rid, uri, keep_conn=False, extra=(), body=b"", params=None):
    if params is None:
        params = params_block(uri, extra, body)
    begin = record(BEGIN_REQUEST, rid, struct.pack(">HB5x", 1, KEEP_CONN if keep_conn else 0))
    return begin + stream(PARAMS, rid, params) + stream(STDIN, rid, body)


class Outcome:
    """How one request ended.

    kind: ok (2xx) | http5xx (herd's own 5xx: no app body) | app5xx |
          http_other | reset (ECONNRESET/EPIPE) | closed (EOF before
          FCGI_END_REQUEST) | timeout (nothing complete within the
          client's timeout: a hang) | connect (not connected) | bad (a
          malformed answer)"""

    __slots__ = ("kind", "status", "body", "t0", "t1", "detail", "uri", "pid", "gen")

    def __init__(self, kind, t0, status=0, body=b"", detail="", uri=""):
        self.kind, self.t0, self.t1 = kind, t0, time.monotonic()
        self.status, self.body, self.detail, self.uri = status, body, detail, uri
        m = re.search(rb"gen=(\d+) pid=(\d+)", body or b"")
        self.gen, self.pid = (int(m.group(1)), int(m.group(2))) if m else (None, None)

    def __repr__(self):
        return f"<{self.kind} {self.status} {self.uri} {self.detail} {self.t1 - self.t0:.3f}s>"


def _classify(status, body):
    if 200 <= status < 300:
        return "ok"
    if status >= 500:
        return "app5xx" if re.search(rb"gen=\d+ pid=\d+", body) else "http5xx"
    return "http_other"


def parse_status(stdout):
    head = stdout.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"status:"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return 0
    return 200 if stdout else 0


def connect(addr, timeout):
    if "/" in addr:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = addr
    else:
        host, port = addr.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = (host, int(port))
    s.settimeout(timeout)
    try:
        s.connect(target)
    except BaseException:
        s.close()
        raise
    return s


def linger0(s):
    """Close with a reset, so the client leaves no TIME_WAIT behind."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


class FcgiConn:
    """One client connection; `request` never raises."""

    def __init__(self, addr, timeout=10.0):
        self.addr, self.timeout = addr, timeout
        self.sock = None
        self.buf = b""
        self.next_id = 1

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None
        self.buf = b""

    def request(self, uri, keep_conn=False, extra=(), body=b"", params=None):
        t0 = time.monotonic()
        deadline = t0 + self.timeout
        if self.sock is None:
            try:
                self.sock = connect(self.addr, self.timeout)
            except OSError as e:
                return Outcome("connect", t0, detail=errno.errorcode.get(e.errno, str(e)), uri=uri)
        rid = self.next_id
        self.next_id = self.next_id % 65535 + 1
        try:
            self.sock.sendall(request_bytes(rid, uri, keep_conn, extra, body, params))
        except OSError as e:
            self.close()
            return Outcome("reset", t0, detail="send: " + errno.errorcode.get(e.errno, str(e)), uri=uri)
        out, err = [], []
        while True:
            rec = self._record(deadline)
            if isinstance(rec, Outcome):
                rec.t0, rec.uri = t0, uri
                self.close()
                return rec
            rtype, r, content = rec
            if r != rid:
                continue
            if rtype == STDOUT:
                out.append(content)
            elif rtype == STDERR:
                err.append(content)
            elif rtype == END_REQUEST:
                stdout = b"".join(out)
                status = parse_status(stdout)
                body = stdout.split(b"\r\n\r\n", 1)[-1]
                if not keep_conn:
                    self.close()
                return Outcome(_classify(status, body), t0, status, body, uri=uri)

    def _record(self, deadline):
        while True:
            if len(self.buf) >= 8:
                _, rtype, rid, clen, pad = struct.unpack(">BBHHB", self.buf[:7])
                total = 8 + clen + pad
                if len(self.buf) >= total:
                    content = self.buf[8:8 + clen]
                    self.buf = self.buf[total:]
                    return rtype, rid, content
            left = deadline - time.monotonic()
            if left <= 0:
                return Outcome("timeout", 0)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return Outcome("timeout", 0)
            except OSError as e:
                return Outcome("reset", 0, detail=errno.errorcode.get(e.errno, str(e)))
            if not chunk:
                return Outcome("closed", 0, detail="EOF before FCGI_END_REQUEST")
            self.buf += chunk


def fcgi_get(addr, uri, timeout=10.0, **kw):
    c = FcgiConn(addr, timeout)
    try:
        return c.request(uri, **kw)
    finally:
        c.close()


# --- load ------------------------------------------------------------------------


class Load:
    """Client threads, each looping on requests until stopped.

    `clients`: list of dicts {addr, uri (a format string; {id} is a unique
    request number), keep (reuse one connection), pause (seconds after an
    error)}. Every outcome is kept."""

    def __init__(self, clients, timeout=10.0):
        self.clients = clients
        self.timeout = timeout
        self.stop_ev = threading.Event()
        self.outcomes = []
        self.lock = threading.Lock()
        self.counter = 0
        self.threads = []

    def _next_id(self):
        with self.lock:
            self.counter += 1
            return self.counter

    def _run(self, i, c):
        conn = FcgiConn(c["addr"], self.timeout)
        while not self.stop_ev.is_set():
            uri = c["uri"].format(id=self._next_id(), client=i)
            o = conn.request(uri, keep_conn=c.get("keep", False))
            o.detail = f"client {i} " + o.detail
            with self.lock:
                self.outcomes.append(o)
            if o.kind != "ok":
                conn.close()
                self.stop_ev.wait(c.get("pause", 0.01))
        conn.close()

    def start(self):
        for i, c in enumerate(self.clients):
            t = threading.Thread(target=self._run, args=(i, c), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(self.timeout + 5)
        return self.snapshot()

    def snapshot(self):
        with self.lock:
            return list(self.outcomes)


def count_kinds(outcomes):
    kinds = {}
    for o in outcomes:
        kinds[o.kind] = kinds.get(o.kind, 0) + 1
    return kinds


class Sampler:
    """Samples a master's VmRSS and fd count every `every` seconds."""

    def __init__(self, herd, every=0.05):
        self.herd, self.every = herd, every
        self.samples = []  # (t, rss_kb, fds)
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_ev.is_set():
            rss, fds = self.herd.rss_kb(), self.herd.fds()
            if rss is not None:
                self.samples.append((time.monotonic(), rss, fds))
            self.stop_ev.wait(self.every)

    def start(self):
        self.t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.t.join()
        return self.samples

    def peak_rss(self):
        return max((s[1] for s in self.samples), default=None)

    def peak_fds(self):
        return max((s[2] for s in self.samples if s[2] is not None), default=None)


# --- report ----------------------------------------------------------------------


class Table:
    """A markdown table of | what | observed | expected | flag |."""

    def __init__(self, title, header=()):
        self.title = title
        self.header = list(header)
        self.rows = []
        self.flags = []

    def row(self, what, observed, expected="", ok=None):
        flag = "" if ok is None else ("ok" if ok else "**FLAG**")
        if ok is False:
            self.flags.append(f"{what}: observed {observed}, expected {expected}")
        self.rows.append((what, str(observed), str(expected), flag))

    def render(self):
        lines = [f"### {self.title}", ""]
        lines += self.header
        if self.header:
            lines.append("")
        lines.append("| what | observed | expected | |")
        lines.append("|---|---|---|---|")
        for r in self.rows:
            lines.append("| " + " | ".join(x.replace("|", "\\|") for x in r) + " |")
        lines.append("")
        lines.append("result: " + ("PASS" if not self.flags else f"FLAGGED ({len(self.flags)})"))
        for f in self.flags:
            lines.append(f"- {f}")
        return "\n".join(lines) + "\n"

    def emit(self, scenario):
        text = self.render()
        print(text, flush=True)
        if scenario.args.out:
            with open(scenario.args.out, "a") as f:
                f.write(text + "\n")
        if self.flags:
            scenario.failed = True
        return 1 if self.flags else 0


def kinds_text(kinds):
    return ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none"


def fmt_s(x):
    return "-" if x is None else f"{x:.2f} s"


def mib(kb):
    return "-" if kb is None else f"{kb / 1024:.1f} MiB"


LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z")


def leftover_rows(table, scenario, herds):
    left = scenario.leftover_check(herds)
    table.row("processes left running (master, workers, clients)", len(left) if not left else
              f"{len(left)}: " + ", ".join(f"{p} ({l})" for p, l in left), 0, not left)
