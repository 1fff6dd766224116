#!/usr/bin/env python3
"""The benchmark suite of ringpay (issue 11): one command, bounded in time, loopback only.

    bench/suite.sh [--mode quick|full|smoke] [--out DIR] [--no-docs]   (./dev.sh bench ...)

It starts every server it measures and stops them all at the end (also on Ctrl-C or an
error): ringpay engines on their own temporary data directories, nginx answering a fixed
JSON body, PostgreSQL (its own cluster in a temporary directory, synchronous_commit=on)
and Redis (appendonly yes, appendfsync always). It measures, in one run on one machine:

  - one fdatasync of a 4 KiB overwrite on the data directories' disk (the physical unit);
  - durable authorize throughput against connections (1 .. 1,000) for ringpay and every
    peer: nginx (the same signed POSTs from `ringpay load`), PostgreSQL (pgbench, the
    same transaction as a PL/pgSQL function), Redis (redis-benchmark, one Lua script);
  - ringpay's latency percentiles against offered load (open loop, % of its maximum);
  - the lifecycle mix, idempotent replays, the Zipf skew over merchants;
  - 1 core against 2 cores (with the CPU time of the engine and of the load generator);
  - auth on against off, replication on against off (when `serve --replication` exists);
  - an empty store against a pre-filled one; RSS per idle connection;
  - `ringpay load` against wrk on GET /healthz (the tool check);
  - the Google Benchmark microbenchmarks (bench/microbench.sh).

Results go to --out (default docs/bench/data): results.json and one CSV per chart.
Unless --no-docs, it then renders them (this file's render()) into docs/benchmarks.md
between the suite markers and into the plots docs/bench/*.png (gnuplot). `--render DIR`
renders existing results again without measuring.

Standard library only (python3 from Debian); tools from Debian packages (dev.sh PKGS).
"""
import argparse
import datetime
import glob
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_BIN = "/usr/lib/postgresql/15/bin"
MERCHANTS = 64  # --merchants; the peers' scripts draw from the same number

# Each mode: seconds per point, rounds of the side-by-side comparisons, the points.
MODES = {
    "quick": dict(dur=3, rounds=1, conns=[1, 8, 64, 256, 1000], pg_conns_max=256,
                  open_pcts=[10, 30, 50, 70, 90], zipf=[0.0, 1.0], prefill=300_000,
                  prefill_max_s=120, idle=10_000, micro=True, micro_min_time=0.05, budget_s=600),
    "full": dict(dur=10, rounds=3, conns=[1, 8, 64, 256, 1000], pg_conns_max=1000,
                 open_pcts=[10, 20, 30, 40, 50, 60, 70, 80, 90], zipf=[0.0, 0.5, 1.0, 1.5],
                 prefill=10_000_000, prefill_max_s=720, idle=10_000, micro=True,
                 micro_min_time=0.5, budget_s=2700),
    # The plumbing only (ctest): one short point of each kind, no peers but nginx.
    "smoke": dict(dur=1, rounds=1, conns=[8], pg_conns_max=0, open_pcts=[50], zipf=[1.0],
                  prefill=2000, prefill_max_s=30, idle=200, micro=False, micro_min_time=0.01,
                  budget_s=170),
}

GOALS = [  # key, what, target, direction (">=" higher is better, "<=" lower is better)
    ("vs_nginx", "durable authorize at 64 connections / nginx's fixed body", 0.5, ">="),
    ("vs_postgres", "durable authorize at 64 connections / PostgreSQL (synchronous_commit=on)",
     20.0, ">="),
    ("vs_redis", "durable authorize at 64 connections / Redis (appendfsync always)", 2.0, ">="),
    ("p99_half_vs_fsync", "p99 at half the maximum rate / one fdatasync (median)", 3.0, "<="),
    ("cores", "2 cores / 1 core (durable authorize, 64 connections)", 1.6, ">="),
    ("prefilled", "pre-filled store / empty store", 0.9, ">="),
    ("auth", "auth on / auth off", 0.95, ">="),
    ("replication", "replication on / off", 0.9, ">="),
    ("rss", "RSS per idle connection (KiB)", 8.0, "<="),
]


class Fail(Exception):
    pass


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def percentile(sorted_xs, q):
    """Nearest rank: the ceil(q*n)-th smallest (the definition ringpay load uses)."""
    if not sorted_xs:
        return None
    return sorted_xs[max(0, math.ceil(q * len(sorted_xs)) - 1)]


def proc_cpu_s(pid):
    """User + system CPU seconds of a process and its threads."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name, port, proc=None, data=None, kind="ringpay"):
        self.name, self.port, self.proc, self.data, self.kind = name, port, proc, data, kind

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"


class Suite:
    def __init__(self, args):
        self.args = args
        self.mode = args.mode
        self.m = MODES[args.mode]
        self.build = os.path.abspath(args.build)
        self.rp = os.path.join(self.build, "ringpay")
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.m["budget_s"]
        self.tmp = tempfile.mkdtemp(prefix="ringpay-suite-", dir=args.tmpdir)
        os.chmod(self.tmp, 0o755)
        self.stoppers = []  # (name, function) in start order
        self.merchants = args.merchants
        self.res = {"mode": self.mode, "points": {}, "notes": [], "merchants": args.merchants}

    # ---- logging and bounds ----

    def log(self, msg):
        print(f"[suite {time.monotonic() - self.t0:6.1f}s] {msg}", flush=True)

    def note(self, msg):
        self.log("note: " + msg)
        self.res["notes"].append(msg)

    def left_s(self):
        return self.deadline - time.monotonic()

    def run(self, argv, timeout, **kw):
        if self.left_s() < 0:
            raise Fail(f"over the time budget of {self.m['budget_s']} s")
        timeout = max(1.0, min(timeout, self.left_s() + 5))
        return subprocess.run(argv, timeout=timeout, capture_output=True, text=True, **kw)

    # ---- servers ----

    def spawn(self, name, argv, log_name=None, **kw):
        log = open(os.path.join(self.tmp, (log_name or name) + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True, **kw)
        log.close()

        def stop():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.stoppers.append((name, stop))
        return p

    def stop(self, server):
        for i, (name, fn) in enumerate(self.stoppers):
            if name == server.name:
                fn()
                del self.stoppers[i]
                return

    def stop_all(self):
        for name, fn in reversed(self.stoppers):
            try:
                fn()
            except Exception as e:  # keep stopping the others
                print(f"suite: stopping {name}: {e}", file=sys.stderr)
        self.stoppers = []

    def wait_http(self, port, path, proc=None, timeout=15):
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if proc is not None and proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                              .encode())
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise Fail(f"server on port {port} did not answer {path} (logs in {self.tmp})")

    def start_ringpay(self, name, cores=2, flags=(), data=None):
        port = free_port()
        data = data or os.path.join(self.tmp, name)
        p = self.spawn(name, [self.rp, "serve", "--listen", f"127.0.0.1:{port}",
                              "--cores", str(cores), "--data", data, "--log-level", "error",
                              *flags])
        self.wait_http(port, "/readyz", p)
        s = Server(name, port, p, data)
        s.cores, s.flags = cores, list(flags)
        return s

    def start_nginx(self):
        port = free_port()
        conf = open(os.path.join(ROOT, "bench/nginx.conf")).read()
        conf = (conf.replace("NWORKERS", str(os.cpu_count()))
                .replace("PIDFILE", os.path.join(self.tmp, "nginx.pid"))
                .replace("PORT", str(port)))
        path = os.path.join(self.tmp, "nginx.conf")
        open(path, "w").write(conf)
        p = self.spawn("nginx", ["nginx", "-c", path, "-p", self.tmp])
        self.wait_http(port, "/", p)
        return Server("nginx", port, p, kind="nginx")

    def start_postgres(self):
        port = free_port()
        d = os.path.join(self.tmp, "pg")
        os.makedirs(d)
        as_user = []
        if os.geteuid() == 0:  # postgres refuses to run as root
            shutil.chown(d, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        r = self.run(as_user + [f"{PG_BIN}/initdb", "-D", f"{d}/data", "-A", "trust",
                                "-U", "postgres", "-E", "UTF8"], 120)
        if r.returncode:
            raise Fail("initdb: " + r.stderr[-500:])
        opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={d} "
                "-c max_connections=1100 -c shared_buffers=256MB -c fsync=on "
                "-c synchronous_commit=on -c full_page_writes=on -c wal_sync_method=fdatasync "
                # No checkpoint or autovacuum inside a run: the suite checkpoints after
                # each pgbench run instead, so PostgreSQL's deferred writes never land in
                # another system's measurement (nor in its own).
                "-c max_wal_size=8GB -c checkpoint_timeout=1h -c autovacuum=off")
        ctl = as_user + [f"{PG_BIN}/pg_ctl", "-D", f"{d}/data", "-l", f"{d}/log", "-w"]
        r = self.run(ctl + ["-o", opts, "start"], 60)
        if r.returncode:
            raise Fail("pg_ctl start: " + r.stderr[-500:] + r.stdout[-500:])

        def stop():
            subprocess.run(ctl + ["-m", "fast", "stop"], capture_output=True, timeout=60)
        self.stoppers.append(("postgres", stop))
        r = self.run([f"{PG_BIN}/psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                      "-q", "-v", "ON_ERROR_STOP=1", "-f",
                      os.path.join(ROOT, "bench/peers/pg_schema.sql"), "postgres"], 60)
        if r.returncode:
            raise Fail("schema: " + r.stderr[-500:])
        s = Server("postgres", port, kind="postgres")
        s.dir = d
        return s

    def start_redis(self):
        port = free_port()
        d = os.path.join(self.tmp, "redis")
        os.makedirs(d)
        p = self.spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                 "--dir", d, "--appendonly", "yes", "--appendfsync", "always",
                                 "--save", "", "--protected-mode", "no", "--daemonize", "no",
                                 "--auto-aof-rewrite-percentage", "0",
                                 "--maxclients", "10000"])
        until = time.monotonic() + 10
        while True:
            r = self.run(["redis-cli", "-p", str(port), "PING"], 5)
            if r.stdout.strip() == "PONG":
                break
            if time.monotonic() > until or p.poll() is not None:
                raise Fail("redis did not start")
            time.sleep(0.1)
        lua = open(os.path.join(ROOT, "bench/peers/redis_authorize.lua")).read()
        r = self.run(["redis-cli", "-p", str(port), "SCRIPT", "LOAD", lua], 10)
        s = Server("redis", port, p, kind="redis")
        s.sha = r.stdout.strip()
        if not re.fullmatch(r"[0-9a-f]{40}", s.sha):
            raise Fail("redis SCRIPT LOAD: " + r.stdout + r.stderr)
        return s

    # ---- load generators ----

    def load(self, srv, scenario="authorize", conns=64, dur=None, rate=0, pipeline=1,
             extra=(), keys=None, requests=None, threads=1):
        """One `ringpay load` run: its JSON summary, with CPU seconds of the engine
        (when it is a ringpay) and of the load tool during the run."""
        dur = dur or self.m["dur"]
        argv = [self.rp, "load", "--target", srv.target, "--scenario", scenario,
                "--connections", str(conns), "--pipeline", str(pipeline), "--json",
                "--merchants", str(self.merchants), "--timeout-ms", "20000",
                "--threads", str(threads), "--duration-s", str(int(math.ceil(dur)))]
        if requests:
            argv += ["--requests", str(requests)]
        if rate:
            argv += ["--rate", str(int(rate))]
        if scenario != "healthz":
            argv += ["--keys", keys] if keys else ["--keys-data", srv.data]
        argv += list(extra)
        cpu0 = proc_cpu_s(srv.proc.pid) if srv.proc else None
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = self.run(argv, dur + 60)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu1 = proc_cpu_s(srv.proc.pid) if srv.proc else None
        if r.returncode != 0:
            raise Fail(f"ringpay load on {srv.name}: exit {r.returncode}: {r.stderr.strip()}")
        d = json.loads(r.stdout.strip().splitlines()[-1])
        d["load_cpu_s"] = round((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime), 3)
        if cpu0 is not None and cpu1 is not None:
            d["server_cpu_s"] = round(cpu1 - cpu0, 3)
        d["server"] = srv.name
        return d

    def warm(self, srv, keys=None):
        """Makes the keys (--keys-data) and warms the server: a short untimed run."""
        self.load(srv, conns=8, dur=1, requests=self.merchants * 4, keys=keys)

    def pgbench(self, pg, conns):
        # pgbench counts connecting inside -T but leaves it out of its tps; connecting a
        # backend costs tens of ms here, so -T gets that allowance on top.
        dur = self.m["dur"]
        per_conn_s = max(0.1, 1.5 * getattr(pg, "connect_s", 0.0))  # from the last point
        allowance = 2 + conns * per_conn_s
        prefix = os.path.join(pg.dir, f"pgb-{conns}-{time.monotonic_ns()}")
        argv = [f"{PG_BIN}/pgbench", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
                "-n", "-M", "prepared", "-f", os.path.join(ROOT, "bench/peers/pg_authorize.pgbench"),
                "-D", f"merchants={self.merchants}",
                "-c", str(conns), "-j", "1", "-T", str(int(math.ceil(dur + allowance))),
                "-l", "--log-prefix", prefix, "postgres"]
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = self.run(argv, dur + allowance + 120, cwd=pg.dir)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        m = re.search(r"tps = ([0-9.]+)", r.stdout)
        conn_ms = re.search(r"initial connection time = ([0-9.]+) ms", r.stdout)
        failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
        if r.returncode != 0 or not m:
            raise Fail(f"pgbench -c {conns}: exit {r.returncode}: {r.stderr[-400:]}")
        self.run([f"{PG_BIN}/psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
                  "-qc", "CHECKPOINT", "postgres"], 300)
        lat = []
        for f in glob.glob(prefix + "*"):
            with open(f) as fh:
                lat += [int(line.split()[2]) for line in fh if line.strip()]
            os.unlink(f)
        lat.sort()
        if conn_ms:
            pg.connect_s = float(conn_ms.group(1)) / 1000 / conns
        return {"server": "postgres", "connections": conns, "rps": float(m.group(1)),
                "ok": len(lat), "errors": int(failed.group(1)) if failed else None,
                "connect_ms": float(conn_ms.group(1)) if conn_ms else None,
                "latency_us": {k: percentile(lat, q) for k, q in
                               (("p50", .5), ("p90", .9), ("p99", .99), ("p999", .999))},
                "load_cpu_s": round((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime), 3)}

    def redis_count(self, rd, conns, n):
        argv = ["redis-benchmark", "-p", str(rd.port), "-c", str(conns), "-n", str(n),
                "-r", "2000000000", "--csv", "EVALSHA", rd.sha, "1", "idem:__rand_int__",
                "__rand_int__", str(self.merchants)]
        t = time.monotonic()
        r = self.run(argv, self.m["dur"] * 6 + 60)
        took = time.monotonic() - t
        rows = [l for l in r.stdout.splitlines() if l.startswith('"EVALSHA')]
        if r.returncode != 0 or not rows:
            raise Fail(f"redis-benchmark -c {conns}: {r.stderr[-400:]}")
        return [x.strip('"') for x in rows[-1].split('","')], took

    def redis_bench(self, rd, conns):
        # redis-benchmark runs a count, not a time: a short probe at these connections
        # measures the rate, and the count is that rate times the point's duration. Keys:
        # __rand_int__ over 2e9 values (a repeat, ~n^2/4e9 of n requests, is answered as
        # a replay, as ringpay would).
        f, _ = self.redis_count(rd, conns, max(conns * 5, 200))
        n = max(conns * 20, int(float(f[1]) * self.m["dur"]))
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        f, took = self.redis_count(rd, conns, n)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        ms = lambda x: round(float(x) * 1000)
        return {"server": "redis", "connections": conns, "rps": float(f[1]), "ok": n,
                "duration_s": round(took, 2),
                "latency_us": {"p50": ms(f[4]), "p90": None, "p99": ms(f[6]), "p999": None,
                               "max": ms(f[7])},
                "load_cpu_s": round((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime), 3)}

    def wrk(self, srv, conns=64, depth=1, dur=None, cpu=None):
        dur = int(math.ceil(dur or self.m["dur"]))
        argv = ["taskset", "-c", str(cpu)] if cpu is not None else []
        argv += ["wrk", "-t1", f"-c{conns}", f"-d{dur}s", "--latency"]
        if depth > 1:
            argv += ["-s", os.path.join(ROOT, "bench/pipeline.lua")]
        argv.append(f"http://{srv.target}/healthz")
        if depth > 1:
            argv += ["--", "/healthz", str(depth)]
        r = self.run(argv, dur + 60)
        rps = re.search(r"Requests/sec:\s+([0-9.]+)", r.stdout)
        if r.returncode or not rps:
            raise Fail("wrk: " + r.stdout[-300:] + r.stderr[-300:])

        def us(v):
            n = float(re.match(r"[0-9.]+", v).group(0))
            return n * (1e6 if v.endswith("s") and not v.endswith(("ms", "us")) else
                        1e3 if v.endswith("ms") else 1)
        lat = {}
        for q, k in (("50%", "p50"), ("90%", "p90"), ("99%", "p99")):
            m = re.search(rf"^\s+{re.escape(q)}\s+(\S+)", r.stdout, re.M)
            lat[k] = round(us(m.group(1))) if m else None
        total = re.search(r"(\d+) requests in ([0-9.]+)(m?s)", r.stdout)
        return {"server": srv.name, "tool": "wrk", "rps": float(rps.group(1)), "latency_us": lat,
                "requests": int(total.group(1)) if total else None}

    def healthz_count(self, srv):
        """Answers to GET /healthz that a ringpay engine counted (its /metrics)."""
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return None
        return sum(float(m.group(1)) for m in re.finditer(
            r'^ringpay_http_requests_total\{[^}]*route="/healthz"[^}]*\}\s+([0-9.eE+]+)$',
            data.decode(errors="replace"), re.M))

    def metrics(self, srv):
        """Sums of the engine's shard counters (for where the time goes)."""
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return {}
        out = {}
        for line in data.decode(errors="replace").splitlines():
            m = re.match(r"(ringpay_(?:shard|wal)_[a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)$", line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
        return out

    @staticmethod
    def shard_delta(a, b):
        d = {k: b[k] - a.get(k, 0.0) for k in b}
        commits = d.get("ringpay_shard_commits_total", 0)
        if not commits:
            return None
        out = {"commits": int(commits),
               "mean_batch": round(d.get("ringpay_shard_batch_jobs_total", 0) / commits, 2),
               "mean_commit_us": round(d.get("ringpay_shard_commit_seconds_total", 0) / commits * 1e6),
               "idle_syncs": int(d.get("ringpay_shard_idle_syncs_total", 0))}
        syncs = d.get("ringpay_wal_syncs_total", 0)
        if syncs:  # the write-ahead log (issue 10): answers wait for its fsyncs
            out["wal_syncs"] = int(syncs)
            out["mean_wal_sync_us"] = round(d.get("ringpay_wal_sync_seconds_total", 0) / syncs * 1e6)
            out["jobs_per_wal_sync"] = round(d.get("ringpay_shard_batch_jobs_total", 0) / syncs, 2)
        return out

    # ---- sections ----

    def fdatasync_probe(self, n=300):
        """One 4 KiB overwrite of a preallocated file and its fdatasync, n times, on the
        disk of the data directories: microseconds per (pwrite + fdatasync)."""
        path = os.path.join(self.tmp, "fdatasync.probe")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"\0" * (1 << 20))
            os.fsync(fd)
            block = os.urandom(4096)
            xs = []
            for i in range(n):
                t = time.perf_counter_ns()
                os.pwrite(fd, block, (i % 256) * 4096)
                os.fdatasync(fd)
                xs.append((time.perf_counter_ns() - t) / 1000)
        finally:
            os.close(fd)
            os.unlink(path)
        xs.sort()
        return {"samples": n, "p50_us": round(percentile(xs, .5)), "p90_us": round(percentile(xs, .9)),
                "p99_us": round(percentile(xs, .99)), "mean_us": round(statistics.mean(xs))}

    def store_commit_us(self):
        exe = os.path.join(self.build, "bench/store_bench")
        if not os.path.exists(exe):
            return None
        r = self.run([exe, "--benchmark_filter=BM_DurableCommit", "--benchmark_format=json"], 120,
                     cwd=self.tmp, env={**os.environ, "TMPDIR": self.tmp})
        try:
            b = json.loads(r.stdout)["benchmarks"][0]
            return round(b["real_time"] * {"ns": 1e-3, "us": 1, "ms": 1e3}[b["time_unit"]], 1)
        except (ValueError, KeyError, IndexError):
            return None

    def sweep(self, rp, ng, pg, rd):
        """Throughput against connections: ringpay and every peer, point by point."""
        rows = []
        for c in self.m["conns"]:
            self.log(f"sweep: {c} connections")
            os.sync()  # nothing another system wrote is left to flush during a point
            m0 = self.metrics(rp)
            d = self.load(rp, conns=c)
            d["shard"] = self.shard_delta(m0, self.metrics(rp))
            rows.append(d)
            rows.append(self.load(ng, conns=c, keys=rp.keys))
            os.sync()
            # A peer that fails at a point is noted and the run goes on.
            if pg is not None and c <= self.m["pg_conns_max"]:
                try:
                    rows.append(self.pgbench(pg, c))
                except (Fail, subprocess.TimeoutExpired) as e:
                    self.note(f"PostgreSQL at {c} connections failed: {e}")
            if rd is not None:
                os.sync()
                try:
                    rows.append(self.redis_bench(rd, c))
                except (Fail, subprocess.TimeoutExpired) as e:
                    self.note(f"Redis at {c} connections failed: {e}")
        self.res["points"]["sweep"] = rows

    def latency(self, rp, max_rps):
        rows = []
        for pct in self.m["open_pcts"]:
            rate = max(1, int(max_rps * pct / 100))
            self.log(f"latency: open loop at {pct}% = {rate}/s")
            m0 = self.metrics(rp)
            d = self.load(rp, conns=64, rate=rate)
            d["pct"], d["offered"] = pct, rate
            d["shard"] = self.shard_delta(m0, self.metrics(rp))
            rows.append(d)
        self.res["points"]["latency"] = rows

    def mixes(self, rp):
        self.log("lifecycle, replay, zipf")
        p = self.res["points"]
        p["lifecycle"] = self.load(rp, scenario="lifecycle")
        p["replay"] = self.load(rp, scenario="replay")
        p["zipf"] = []
        for s in self.m["zipf"]:
            d = self.load(rp, extra=["--zipf", str(s)])
            d["zipf"] = s
            p["zipf"].append(d)

    def pairs(self, key, a, b, scenario="authorize", a_keys=None, b_keys=None):
        """ROUNDS alternating runs of the same load on two servers: both series."""
        rows = []
        for _ in range(self.m["rounds"]):
            pair = []
            for srv, keys in ((a, a_keys), (b, b_keys)):
                m0 = self.metrics(srv)
                d = self.load(srv, scenario=scenario, keys=keys)
                d["shard"] = self.shard_delta(m0, self.metrics(srv))
                pair.append(d)
            rows.append(pair)
        self.res["points"][key] = rows
        return rows

    def scaling(self):
        self.log("scaling: 1 core against 2 cores")
        c1 = self.start_ringpay("cores1", cores=1)
        c2 = self.start_ringpay("cores2", cores=2)
        self.warm(c1)
        self.warm(c2)
        self.pairs("cores_authorize", c1, c2)
        self.pairs("cores_healthz", c1, c2, scenario="healthz")
        self.stop(c1)
        self.stop(c2)

    def auth_repl(self, main_keys):
        self.log("auth on against off")
        on = self.start_ringpay("auth-on")
        off = self.start_ringpay("auth-off", flags=["--auth", "off"])
        self.warm(on)
        self.warm(off, keys=main_keys)  # signed alike: the load tool's HMAC costs the same
        self.pairs("auth", on, off, b_keys=main_keys)
        self.stop(on)
        self.stop(off)
        r = self.run([self.rp, "serve", "--help"], 10)
        if "--wal " in r.stdout:  # the write-ahead log (issue 10): its effect, same run
            self.log("write-ahead log on against off")
            on = self.start_ringpay("wal-on", flags=["--wal", "on"])
            off = self.start_ringpay("wal-off", flags=["--wal", "off"])
            self.warm(on)
            self.warm(off)
            self.pairs("wal", on, off)
            self.stop(on)
            self.stop(off)
        if "--replication" not in r.stdout:
            self.note("replication on/off skipped: this build's `serve` has no --replication "
                      "(Kafka replication, issue 8, is not merged yet); the suite runs it "
                      "as soon as the flag exists")
            return
        self.log("replication on against off")
        on = self.start_ringpay("repl-on", flags=["--replication", "on"])
        off = self.start_ringpay("repl-off", flags=["--replication", "off"])
        self.warm(on)
        self.warm(off)
        self.pairs("replication", on, off)
        self.stop(on)
        self.stop(off)

    def store(self):
        n = self.m["prefill"]
        self.log(f"store: filling {n:,} payments")
        fill = self.start_ringpay("filled", flags=["--access-log", "off"])
        # Bounded: N payments, or as many as prefill_max_s allows (the count is reported).
        t = time.monotonic()
        d = self.load(fill, conns=64, pipeline=32, requests=n, dur=self.m["prefill_max_s"],
                      threads=1)
        took = time.monotonic() - t
        self.stop(fill)
        du = self.run(["du", "-sk", fill.data], 60).stdout.split()
        self.res["points"]["fill"] = {"payments": d["ok"], "errors": d["errors"],
                                      "seconds": round(took, 1), "rate": round(d["ok"] / took),
                                      "data_mib": round(int(du[0]) / 1024) if du else None}
        self.log(f"store: {d['ok']:,} payments in {took:.0f} s")
        filled = self.start_ringpay("filled", data=fill.data)
        empty = self.start_ringpay("empty")
        self.warm(empty)
        self.warm(filled)
        self.pairs("store", empty, filled)
        self.stop(filled)
        self.stop(empty)

    def rss(self):
        n = self.m["idle"]
        self.log(f"rss: {n:,} idle connections")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = n + 256
        if soft < want:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(hard, want)))
            except (ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        per_core = max(4096, n)
        srv = self.start_ringpay("rss", flags=["--max-connections", str(per_core)])
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        socks = []
        # A few connections first, so one-time allocations are not counted per connection.
        warm = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(16)]
        for s in warm:
            s.sendall(req)
            s.recv(4096)
        time.sleep(0.5)
        before = proc_rss_kib(srv.proc.pid)
        try:
            # First only connected (accepted, nothing read yet), then each sends one
            # request and reads its answer: an idle keep-alive connection that served.
            for _ in range(n):
                socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
            self.wait_accepted(srv, len(warm) + n)
            connected = proc_rss_kib(srv.proc.pid)
            for s in socks:
                s.sendall(req)
            for s in socks:
                if not s.recv(4096).startswith(b"HTTP/1.1 200"):
                    raise Fail("rss: a connection was not answered 200")
            time.sleep(1.0)
            after = proc_rss_kib(srv.proc.pid)
            # Still open: one more request on the last connection.
            socks[-1].sendall(req)
            alive = socks[-1].recv(4096).startswith(b"HTTP/1.1 200")
        finally:
            for s in socks + warm:
                s.close()
        self.stop(srv)
        self.res["points"]["rss"] = {"connections": n, "rss_before_kib": before,
                                     "rss_connected_kib": connected,
                                     "rss_after_kib": after, "alive": alive,
                                     "kib_per_connected": round((connected - before) / n, 2),
                                     "kib_per_connection": round((after - before) / n, 2)}

    def wait_accepted(self, srv, want, timeout=20):
        """Until the engine reports `want` open connections (its gauge), at most timeout."""
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            m = self.gauge(srv, "ringpay_connections_open")
            if m is not None and m >= want:
                return
            time.sleep(0.2)

    def gauge(self, srv, name):
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return None
        vals = [float(m.group(1)) for m in re.finditer(
            rf"^{name}(?:\{{[^}}]*\}})?\s+([0-9.eE+]+)$", data.decode(errors="replace"), re.M)]
        return sum(vals) - 1 if vals else None  # less the /metrics connection itself

    def tool_check(self):
        """ringpay load against wrk on GET /healthz: the engine on 1 core (CPU 0), each
        tool with one thread pinned to CPU 1, alternating, keep-alive and pipelined x16;
        the engine's own count of the answers checks each tool's count."""
        self.log("tool check: ringpay load against wrk on GET /healthz")
        srv = self.start_ringpay("toolcheck", cores=1, flags=["--access-log", "off"])
        rounds, dur = (3, 2) if self.mode == "quick" else (1, 1) if self.mode == "smoke" else (5, 5)
        rounds = self.args.tool_rounds or rounds
        dur = self.args.tool_duration or dur
        rows = []
        for depth in (1, 16):
            for _ in range(rounds):
                n0 = self.healthz_count(srv)
                w = self.wrk(srv, depth=depth, dur=dur, cpu=1)
                n1 = self.healthz_count(srv)
                argv_extra = ["taskset", "-c", "1"]
                l = self.load_pinned(srv, depth, dur, argv_extra)
                n2 = self.healthz_count(srv)
                rows.append({"depth": depth, "wrk": w, "load": l,
                             "server_wrk": n1 - n0 if n0 is not None else None,
                             "server_load": n2 - n1 if n1 is not None else None})
        self.stop(srv)
        self.res["points"]["tool_check"] = rows

    def load_pinned(self, srv, depth, dur, prefix):
        argv = prefix + [self.rp, "load", "--target", srv.target, "--scenario", "healthz",
                         "--connections", "64", "--pipeline", str(depth), "--threads", "1",
                         "--duration-s", str(dur), "--json"]
        r = self.run(argv, dur + 60)
        if r.returncode:
            raise Fail("ringpay load (tool check): " + r.stderr[-300:])
        d = json.loads(r.stdout.strip().splitlines()[-1])
        return {"rps": d["rps"], "latency_us": d["latency_us"], "errors": d["errors"],
                "requests": d["requests"]}

    def microbench(self):
        self.log("microbenchmarks")
        out = os.path.join(self.tmp, "microbench")
        r = self.run([os.path.join(ROOT, "bench/microbench.sh"), self.build, out,
                      str(self.m["micro_min_time"])], 900, env={**os.environ, "TMPDIR": self.tmp})
        if r.returncode:
            self.note("microbenchmarks failed: " + r.stderr[-300:])
            return
        rows = []
        for f in sorted(glob.glob(os.path.join(out, "*.json"))):
            try:
                data = json.load(open(f))
            except ValueError:
                continue
            for b in data.get("benchmarks", []):
                if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
                    continue
                unit = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[b.get("time_unit", "ns")]
                rows.append({"binary": os.path.basename(f)[:-5], "name": b["name"],
                             "real_ns": round(b["real_time"] * unit, 1),
                             "cpu_ns": round(b["cpu_time"] * unit, 1),
                             "items_per_s": b.get("items_per_second"),
                             "bytes_per_s": b.get("bytes_per_second")})
        self.res["points"]["micro"] = rows

    # ---- the run ----

    def machine(self):
        r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True)
        # The suite's own outputs do not make the code "changed".
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no",
                                "--", ".", ":!docs/bench", ":!docs/benchmarks.md"],
                               capture_output=True, text=True).stdout.strip()
        fs = subprocess.run(["df", "-T", self.tmp], capture_output=True, text=True).stdout.split("\n")
        cpu = ""
        try:
            cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                       if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        load1 = os.getloadavg()[0]
        self.res["machine"] = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": r.stdout.strip() + (" (with uncommitted changes)" if dirty else ""),
            "cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "fs": fs[1].split()[1] if len(fs) > 1 else "", "loadavg_at_start": round(load1, 2),
            "versions": self.versions()}

    def versions(self):
        v = {}
        for name, argv in (("nginx", ["nginx", "-v"]), ("postgres", [f"{PG_BIN}/postgres", "-V"]),
                           ("redis", ["redis-server", "-v"]), ("wrk", ["wrk", "-v"])):
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
                v[name] = (r.stdout + r.stderr).strip().splitlines()[0].split(" Copyright")[0][:60]
            except (OSError, IndexError, subprocess.TimeoutExpired):
                v[name] = None
        return v

    def main(self):
        if not os.path.exists(self.rp):
            raise Fail(f"{self.rp} not built (./dev.sh build)")
        # 1,000 connections for pgbench and redis-benchmark, 10,000 idle ones here.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.machine()
        self.log(f"mode {self.mode}: {self.m['dur']} s per point, {self.m['rounds']} round(s); "
                 f"budget {self.m['budget_s']} s; servers in {self.tmp}")
        p = self.res["points"]
        p["fdatasync_start"] = self.fdatasync_probe()
        p["store_commit_us"] = self.store_commit_us()
        rp = self.start_ringpay("ringpay")
        self.warm(rp)
        rp.keys = os.path.join(rp.data, "load.keys")
        ng = self.start_nginx()
        pg = rd = None
        if self.mode != "smoke":
            if os.path.exists(f"{PG_BIN}/pgbench"):
                pg = self.start_postgres()
            else:
                self.note("PostgreSQL skipped: postgresql-15 is not installed")
            if shutil.which("redis-server") and shutil.which("redis-benchmark"):
                rd = self.start_redis()
            else:
                self.note("Redis skipped: redis-server / redis-tools are not installed")
        self.sweep(rp, ng, pg, rd)
        if pg:
            self.stop(pg)
        if rd:
            self.stop(rd)
        if self.args.sweep_only:
            p["fdatasync"] = self.fdatasync_probe()
            self.stop(ng)
            self.stop(rp)
            return self.finish()
        at64 = [d for d in p["sweep"] if d["server"] == "ringpay" and d["connections"] == 64]
        max_rps = (at64 or [d for d in p["sweep"] if d["server"] == "ringpay"])[-1]["rps"]
        p["fdatasync"] = self.fdatasync_probe()
        self.latency(rp, max_rps)
        self.mixes(rp)
        self.stop(ng)
        self.stop(rp)
        self.scaling()
        self.auth_repl(rp.keys)
        self.store()
        self.rss()
        self.tool_check()
        if self.m["micro"]:
            self.microbench()
        self.finish()

    def finish(self):
        self.res["elapsed_s"] = round(time.monotonic() - self.t0)
        self.res["machine"]["loadavg_at_end"] = round(os.getloadavg()[0], 2)
        self.log(f"measured in {self.res['elapsed_s']} s")


# ---- analysis ----

def rps_of(rows, server, conns=64):
    xs = [d["rps"] for d in rows if d["server"] == server and d.get("connections") == conns]
    return xs[-1] if xs else None


def pair_ratio(rows):
    """Median of a over median of b, and the per-round ratios."""
    if not rows:
        return None, []
    a = median([r[0]["rps"] for r in rows])
    b = median([r[1]["rps"] for r in rows])
    return (a / b if a and b else None), [r[0]["rps"] / r[1]["rps"] for r in rows if r[1]["rps"]]


def goals(res):
    p = res["points"]
    sweep = p.get("sweep", [])
    rp = rps_of(sweep, "ringpay")
    out = {}

    def ratio(a, b):
        return a / b if a and b else None
    out["vs_nginx"] = ratio(rp, rps_of(sweep, "nginx"))
    out["vs_postgres"] = ratio(rp, rps_of(sweep, "postgres"))
    out["vs_redis"] = ratio(rp, rps_of(sweep, "redis"))
    half = [d for d in p.get("latency", []) if d["pct"] == 50]
    fs = p.get("fdatasync") or p.get("fdatasync_start")
    if half and fs:
        out["p99_half_vs_fsync"] = half[0]["latency_us"]["p99"] / fs["p50_us"]
    out["cores"] = (lambda r: 1 / r if r else None)(pair_ratio(p.get("cores_authorize"))[0])
    out["prefilled"] = (lambda r: 1 / r if r else None)(pair_ratio(p.get("store"))[0])
    out["auth"] = pair_ratio(p.get("auth"))[0]
    out["replication"] = pair_ratio(p.get("replication"))[0]
    if p.get("rss"):
        out["rss"] = p["rss"]["kib_per_connection"]
    table = []
    for key, what, target, op in GOALS:
        v = out.get(key)
        if v is None:
            table.append({"key": key, "goal": what, "target": target, "op": op, "value": None,
                          "met": None})
            continue
        met = v >= target if op == ">=" else v <= target
        table.append({"key": key, "goal": what, "target": target, "op": op,
                      "value": round(v, 3), "met": met,
                      "of_target": round(v / target if op == ">=" else target / v, 3) if v else None})
    return table


# ---- rendering ----

BEGIN = "<!-- suite:begin (generated by bench/suite.sh; edits here are overwritten) -->"
END = "<!-- suite:end -->"


def fmt(x, digits=0):
    if x is None:
        return "–"
    if isinstance(x, float) and digits:
        return f"{x:,.{digits}f}"
    return f"{round(x):,}"


def lat(d, k):
    return fmt((d.get("latency_us") or {}).get(k))


def write_csvs(res, out):
    p = res["points"]
    with open(os.path.join(out, "throughput_vs_connections.csv"), "w") as f:
        f.write("server,connections,rps,p50_us,p99_us\n")
        for d in p.get("sweep", []):
            f.write(f"{d['server']},{d['connections']},{d['rps']:.1f},"
                    f"{d['latency_us'].get('p50') or ''},{d['latency_us'].get('p99') or ''}\n")
    with open(os.path.join(out, "latency_vs_load.csv"), "w") as f:
        f.write("pct,offered_rps,achieved_rps,p50_us,p90_us,p99_us,p999_us,max_us,missed\n")
        for d in p.get("latency", []):
            l = d["latency_us"]
            f.write(f"{d['pct']},{d['offered']},{d['rps']:.1f},{l['p50']},{l['p90']},{l['p99']},"
                    f"{l['p999']},{l['max']},{d['missed']}\n")
    with open(os.path.join(out, "comparisons.csv"), "w") as f:
        f.write("comparison,round,a_server,a_rps,a_p99_us,b_server,b_rps,b_p99_us\n")
        for key in ("cores_authorize", "cores_healthz", "auth", "wal", "replication", "store"):
            for i, (a, b) in enumerate(p.get(key) or []):
                f.write(f"{key},{i + 1},{a['server']},{a['rps']:.1f},{a['latency_us']['p99']},"
                        f"{b['server']},{b['rps']:.1f},{b['latency_us']['p99']}\n")


def gnuplot(script, cwd):
    if not shutil.which("gnuplot"):
        return False
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True, cwd=cwd)
    if r.returncode:
        print("suite: gnuplot: " + r.stderr[-800:], file=sys.stderr)
    return r.returncode == 0


TERM = 'set terminal pngcairo size 960,560 font "DejaVu Sans,11" noenhanced\n'


def plots(res, data_dir, img_dir):
    """The charts, from the CSVs in data_dir, into img_dir. Returns the files made."""
    p = res["points"]
    made = []
    rel = os.path.relpath(data_dir, img_dir)
    label = f"{res['machine']['date']}, {res['mode']} mode, commit {res['machine']['commit']}"
    names = {"ringpay": "ringpay, durable authorize (signed)", "nginx": "nginx, fixed body",
             "postgres": "PostgreSQL 15, synchronous_commit=on (pgbench)",
             "redis": "Redis 7, appendfsync always (redis-benchmark)"}
    servers = [s for s in ("ringpay", "nginx", "postgres", "redis")
               if any(d["server"] == s for d in p.get("sweep", []))]
    if servers and len(set(d["connections"] for d in p["sweep"])) > 1:
        for srv in servers:  # one data file per line of the chart
            with open(os.path.join(data_dir, f"sweep_{srv}.dat"), "w") as f:
                f.write("# connections rps\n")
                for d in p["sweep"]:
                    if d["server"] == srv:
                        f.write(f"{d['connections']} {d['rps']:.1f}\n")
        lines = ", ".join(f"'{rel}/sweep_{s}.dat' using 1:2 with linespoints lw 2 pt 7 "
                          f"title '{names[s]}'" for s in servers)
        script = TERM + f"""set output 'throughput_vs_connections.png'
set title "Durable authorize: requests/s against connections (closed loop, one request in flight each)\\n{label}"
set logscale xy
set xlabel 'connections (log scale)'
set ylabel 'requests/s (log scale)'
set xtics (1, 8, 64, 256, 1000)
set format y '%.0f'
set grid
set key below
set xrange [0.8:1300]
plot {lines}
"""
        if gnuplot(script, img_dir):
            made.append("throughput_vs_connections.png")
    fs = p.get("fdatasync") or p.get("fdatasync_start")
    if len(p.get("latency", [])) > 1:
        fsl = ""
        if fs:
            fsl = (f", {fs['p50_us'] / 1000} with lines dt 2 lc 'black' title 'one fdatasync (median, {fs['p50_us']} µs)'"
                   f", {3 * fs['p50_us'] / 1000} with lines dt 3 lw 2 lc 'red' title 'goal: p99 at 50% ≤ 3× one fdatasync'")
        script = TERM + f"""set output 'latency_vs_load.png'
set datafile separator ','
set title "ringpay durable authorize, open loop over 64 connections: latency against offered load\\n{label}"
set logscale y
set xlabel 'offered load (% of the measured maximum at 64 connections)'
set ylabel 'latency from the scheduled send (ms, log scale)'
set format y '%g'
set grid
set key below
set xrange [0:100]
plot '{rel}/latency_vs_load.csv' every ::1 using 1:($4/1000) with linespoints lw 2 pt 7 title 'p50', \\
     '' every ::1 using 1:($5/1000) with linespoints lw 2 pt 7 title 'p90', \\
     '' every ::1 using 1:($6/1000) with linespoints lw 2 pt 7 title 'p99', \\
     '' every ::1 using 1:($7/1000) with linespoints lw 2 pt 7 title 'p99.9'{fsl}
"""
        if gnuplot(script, img_dir):
            made.append("latency_vs_load.png")
    bars = []  # (group, label, rps)
    for key, group, la, lb in (("cores_authorize", "durable authorize", "1 core", "2 cores"),
                               ("cores_healthz", "GET /healthz", "1 core", "2 cores")):
        rows = p.get(key) or []
        if rows:
            bars.append((group, la, median([r[0]["rps"] for r in rows])))
            bars.append((group, lb, median([r[1]["rps"] for r in rows])))
    if bars:
        dat = os.path.join(data_dir, "scaling.dat")
        with open(dat, "w") as f:
            f.write("# group 1core 2cores\n")
            for g in ("durable authorize", "GET /healthz"):
                v = [b[2] for b in bars if b[0] == g]
                if len(v) == 2:
                    f.write(f'"{g}" {v[0]:.1f} {v[1]:.1f}\n')
        script = TERM + f"""set output 'scaling.png'
set title "ringpay on 1 core against 2 cores, 64 connections (the load generator shares the 2 vCPUs)\\n{label}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set logscale y
set ylabel 'requests/s (log scale)'
set format y '%.0f'
set yrange [100:{max(b[2] for b in bars) * 4:.0f}]
set grid ytics
set key top left
plot '{rel}/scaling.dat' using 2:xtic(1) title '1 core', '' using 3 title '2 cores', \\
     '' using ($0-0.17):2:(sprintf('%.0f/s', $2)) with labels offset 0,0.8 notitle, \\
     '' using ($0+0.17):3:(sprintf('%.0f/s (%.2f×)', $3, $3/$2)) with labels offset 0,0.8 notitle
"""
        if gnuplot(script, img_dir):
            made.append("scaling.png")
    rows = p.get("store") or []
    if rows:
        fill = p.get("fill", {})
        e = [r[0] for r in rows]
        f_ = [r[1] for r in rows]
        dat = os.path.join(data_dir, "store.dat")
        with open(dat, "w") as f:
            f.write("# what empty filled\n")
            f.write(f'"requests/s" {median([d["rps"] for d in e]):.1f} {median([d["rps"] for d in f_]):.1f}\n')
            f.write(f'"p50 latency (µs)" {median([d["latency_us"]["p50"] for d in e])} {median([d["latency_us"]["p50"] for d in f_])}\n')
            f.write(f'"p99 latency (µs)" {median([d["latency_us"]["p99"] for d in e])} {median([d["latency_us"]["p99"] for d in f_])}\n')
        script = TERM + f"""set output 'store.png'
set title "ringpay durable authorize, 64 connections: empty store against {fill.get('payments', 0):,} payments\\n{label}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set logscale y
set ylabel 'requests/s, or latency in µs (log scale)'
set format y '%.0f'
set grid ytics
set key top left
plot '{rel}/store.dat' using 2:xtic(1) title 'empty store', '' using 3 title 'pre-filled store', \\
     '' using ($0-0.17):2:(sprintf('%.0f', $2)) with labels offset 0,0.8 notitle, \\
     '' using ($0+0.17):3:(sprintf('%.0f', $3)) with labels offset 0,0.8 notitle
"""
        if gnuplot(script, img_dir):
            made.append("store.png")
    return made


def render_markdown(res, made, img_prefix):
    p = res["points"]
    m = res["machine"]
    L = []
    w = L.append
    quick = res["mode"] != "full"
    w(BEGIN)
    w("")
    w("## 6. The suite's results (issue 11): ringpay against what users would pick instead")
    w("")
    if quick:
        w(f"> **A {res['mode']} validation run, not the final numbers.** Measured "
          f"{m['date']} in {res['mode']} mode ({MODES[res['mode']]['dur']} s per point, "
          f"{MODES[res['mode']]['rounds']} round(s)) on commit {m['commit']}, on a shared "
          f"machine (load average {m['loadavg_at_start']} at the start"
          + (f" and {m['loadavg_at_end']} at the end" if m.get("loadavg_at_end") else "") +
          ", from other work on its 2 vCPUs). "
          "The final full run on the final code replaces this section.")
    else:
        w(f"Measured {m['date']} in full mode ({MODES['full']['dur']} s per point, "
          f"{MODES['full']['rounds']} rounds of each side-by-side comparison) on commit "
          f"{m['commit']} (load average {m['loadavg_at_start']} at the start).")
    w("")
    w("Command (from a fresh clone; installs what is missing, builds, runs, rewrites this "
      "section and the plots in `docs/bench/`; how it measures: section 5):")
    w("")
    w("```sh")
    w(f"./dev.sh bench --mode {res['mode']}" if res["mode"] != "smoke" else "./dev.sh bench --mode smoke")
    w("```")
    w("")
    w(f"Machine: {m['cpus']} vCPUs ({m['cpu']}), kernel {m['kernel']}, data directories on "
      f"{m['fs']}; the load generators run on the same vCPUs as the servers, for every "
      f"server alike. Peers: {', '.join(v for v in m['versions'].values() if v)}. "
      f"Raw results: [`docs/bench/data/results.json`](bench/data/results.json) and the CSVs "
      f"beside it. The suite took {res.get('elapsed_s', 0)} s.")
    w("")
    # goals
    w("### Goals")
    w("")
    w("| goal | target | measured | |")
    w("|---|---:|---:|---|")
    for g in res["goals"]:
        tgt = f"{g['op']} {g['target']:g}" + ("" if g["key"] == "rss" else "×")
        if g["value"] is None:
            val, verdict = "–", "not measured (see notes)"
        else:
            val = f"{g['value']:.2f}" + ("" if g["key"] == "rss" else "×")
            verdict = ("**met**" if g["met"] else
                       f"**missed** ({g['of_target']:.2f} of the target)")
        w(f"| {g['goal']} | {tgt} | {val} | {verdict} |")
    w("")
    fs = p.get("fdatasync") or {}
    fs0 = p.get("fdatasync_start") or {}
    w(f"The physical unit, measured in the same run: one `fdatasync` after overwriting 4 KiB "
      f"of a preallocated file on the data directories' disk: p50 **{fmt(fs.get('p50_us'))} µs**, "
      f"p99 {fmt(fs.get('p99_us'))} µs ({fs.get('samples', 0)} samples, just before the latency "
      f"runs; at the start of the suite p50 {fmt(fs0.get('p50_us'))} µs, p99 "
      f"{fmt(fs0.get('p99_us'))} µs). One durable LMDB commit of one authorization alone "
      f"(`store_bench BM_DurableCommit`): {fmt(p.get('store_commit_us'))} µs.")
    w("")
    for n in res["notes"]:
        w(f"- Note: {n}")
    if res["notes"]:
        w("")
    # sweep
    if "throughput_vs_connections.png" in made:
        w(f"![throughput against connections]({img_prefix}throughput_vs_connections.png)")
        w("")
    w("### Durable authorize against connections, ringpay and its peers")
    w("")
    w("Closed loop, one request in flight per connection. ringpay: `ringpay load --scenario "
      f"authorize` (signed, {res.get('merchants', MERCHANTS)} merchants, access log on to a "
      "file, as deployed); nginx: the "
      "same signed POSTs from the same tool, answered with a fixed JSON body (the HTTP "
      "ceiling); PostgreSQL: `pgbench -M prepared -j 1` running "
      "[`bench/peers/pg_authorize.pgbench`](../bench/peers/pg_authorize.pgbench), one call of "
      "the transaction in [`pg_schema.sql`](../bench/peers/pg_schema.sql) (payment row, unique "
      "idempotency key, ledger, balances, outbox) per transaction; Redis: `redis-benchmark` "
      "calling [`redis_authorize.lua`](../bench/peers/redis_authorize.lua) (`SET NX`, "
      "`HINCRBY`, `XADD`, …).")
    w("")
    conns = sorted(set(d["connections"] for d in p.get("sweep", [])))
    servers = [s for s in ("ringpay", "nginx", "postgres", "redis")
               if any(d["server"] == s for d in p.get("sweep", []))]
    w("| connections | " + " | ".join(f"{s} req/s (p50 / p99 µs)" for s in servers) +
      " | ringpay / " + " | ringpay / ".join(servers[1:]) + " |")
    w("|---:|" + "---:|" * (2 * len(servers) - 1))
    for c in conns:
        cells = []
        rp = rps_of(p["sweep"], "ringpay", c)
        for s in servers:
            d = [x for x in p["sweep"] if x["server"] == s and x["connections"] == c]
            cells.append(f"{fmt(d[0]['rps'])} ({lat(d[0], 'p50')} / {lat(d[0], 'p99')})"
                         if d else "–")
        ratios = []
        for s in servers[1:]:
            o = rps_of(p["sweep"], s, c)
            ratios.append(f"{rp / o:.2f}×" if rp and o else "–")
        w(f"| {c:,} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    w("")
    pgs = [d for d in p.get("sweep", []) if d["server"] == "postgres"]
    if pgs and max(conns) > max(d["connections"] for d in pgs):
        w(f"PostgreSQL is measured up to {max(d['connections'] for d in pgs)} connections in "
          f"this mode: a backend process per connection, and connecting one took "
          f"~{fmt(pgs[-1].get('connect_ms', 0) / max(1, pgs[-1]['connections']))} ms here "
          "(pgbench leaves the connecting out of its tps; the full mode goes to 1,000).")
        w("")
    shard = [d.get("shard") for d in p.get("sweep", []) if d["server"] == "ringpay"
             and d["connections"] == 64 and d.get("shard")]
    if shard:
        s = shard[0]
        wal = (f" The write-ahead log: {s['wal_syncs']:,} log fsyncs, {s['jobs_per_wal_sync']} "
               f"authorizations each, mean **{fmt(s['mean_wal_sync_us'])} µs** per log fsync = "
               f"{s['mean_wal_sync_us'] / max(1, fs.get('p50_us', 1)):.1f}× the fdatasync probe's "
               "median." if s.get("wal_syncs") else "")
        w(f"Where ringpay's time goes at 64 connections (the shards' own counters during that "
          f"point): {s['commits']:,} group commits, mean batch {s['mean_batch']} "
          f"authorizations, mean apply + commit {fmt(s['mean_commit_us'])} µs"
          + (" (the log's fsync apart)" if wal else
             f" = {s['mean_commit_us'] / max(1, fs.get('p50_us', 1)):.1f}× one fdatasync") + "."
          + wal + " With one "
          "request in flight per connection the throughput is connections ÷ latency, and an "
          "answer waits for the group commit in progress and then its own, each ending in an "
          "fsync (SPEC §6). With the log, the fsync is no longer what sets the pace on this "
          "machine: the engine, the load generator and the peers share 2 vCPUs, and the "
          "engine's CPU per request does (section 8, \"Where the CPU goes\").")
        w("")
    # latency
    if p.get("latency"):
        if "latency_vs_load.png" in made:
            w(f"![latency against offered load]({img_prefix}latency_vs_load.png)")
            w("")
        w("### Latency against offered load (open loop)")
        w("")
        w("`ringpay load --rate R --connections 64`: requests sent at fixed intervals, latency "
          "from each one's scheduled time (no coordinated omission); R is a share of the "
          "closed-loop maximum at 64 connections measured above.")
        w("")
        w("| offered | req/s offered | req/s answered | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | missed | mean batch | mean commit µs | mean log fsync µs |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for d in p["latency"]:
            s = d.get("shard") or {}
            w(f"| {d['pct']}% | {fmt(d['offered'])} | {fmt(d['rps'])} | {lat(d, 'p50')} | "
              f"{lat(d, 'p90')} | {lat(d, 'p99')} | {lat(d, 'p999')} | {lat(d, 'max')} | "
              f"{fmt(d['missed'])} | {s.get('mean_batch', '–')} | {fmt(s.get('mean_commit_us'))} | "
              f"{fmt(s.get('mean_wal_sync_us'))} |")
        w("")
    # mixes
    if p.get("lifecycle"):
        d = p["lifecycle"]
        kinds = d.get("kinds", {})
        w("### The lifecycle mix, replays, and the hot-merchant skew")
        w("")
        w("`ringpay load --scenario lifecycle` with its default shares (10% GETs of a payment, 5% "
          "GETs of balances, the rest authorizations; 80% of them captured, 10% voided; 20% of "
          "the captured refunded in 2 partial refunds), 64 connections: "
          f"**{fmt(d['rps'])} requests/s**, p50 {lat(d, 'p50')} µs, p99 {lat(d, 'p99')} µs, "
          f"{fmt(d['ok'])} answered 2xx of {fmt(d['requests'])}; by kind: " +
          ", ".join(f"{k} {fmt(v['sent'])}" for k, v in kinds.items()) + ".")
        w("")
        r = p.get("replay")
        if r:
            w(f"`--scenario replay` (50% of the authorizations re-send an earlier one, same key "
              f"and body): **{fmt(r['rps'])} requests/s**, p50 {lat(r, 'p50')} µs, p99 "
              f"{lat(r, 'p99')} µs; {fmt(r['replayed'])} answers carried "
              "`Idempotent-Replayed: true`.")
            w("")
        if p.get("zipf"):
            w("| merchants | requests/s | p50 µs | p99 µs | vs uniform |")
            w("|---|---:|---:|---:|---:|")
            base = next((z["rps"] for z in p["zipf"] if z["zipf"] == 0), None)
            for z in p["zipf"]:
                what = ("uniform (in turn)" if z["zipf"] == 0
                        else f"Zipf s = {z['zipf']:g} (m-0 hottest)")
                vs = f"{z['rps'] / base:.2f}×" if base else "–"
                w(f"| {what} | {fmt(z['rps'])} | {lat(z, 'p50')} | {lat(z, 'p99')} | {vs} |")
            w("")
            w(f"{res.get('merchants', MERCHANTS)} merchants over the shards by "
              "`hash(merchant_id) mod cores`: under skew one "
              "shard holds the hot merchants; its group commits grow (more per batch), so the "
              "throughput holds as long as that shard's commits keep up.")
            w("")
    # scaling
    rows = p.get("cores_authorize")
    if rows:
        if "scaling.png" in made:
            w(f"![1 core against 2 cores]({img_prefix}scaling.png)")
            w("")
        w("### 1 core against 2 cores")
        w("")
        w("Two engines side by side (`serve --cores 1` pinned to CPU 0, `--cores 2` on both), "
          "the same load alternating between them. **How the load generator was accounted "
          "for:** this machine has 2 vCPUs, so the load generator (one thread, unpinned) shares "
          "them with the engine in both runs; the table gives the CPU seconds each used per "
          "second of the run, so the engine's share of the machine is visible, and requests "
          "per engine CPU-second as a measure that does not depend on the generator's share.")
        w("")
        w("| load | cores | requests/s | p99 µs | engine CPU (vCPUs busy) | load tool CPU | requests per engine CPU-second | 2 cores / 1 core |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for key, name in (("cores_authorize", "durable authorize"), ("cores_healthz", "GET /healthz")):
            rs = p.get(key) or []
            if not rs:
                continue
            ratio, per = pair_ratio([[r[1], r[0]] for r in rs])
            for i, cores in ((0, 1), (1, 2)):
                ds = [r[i] for r in rs]
                rps = median([d["rps"] for d in ds])
                ecpu = median([d.get("server_cpu_s", 0) / d["duration_s"] for d in ds])
                lcpu = median([d.get("load_cpu_s", 0) / d["duration_s"] for d in ds])
                per_cpu = median([d["ok"] / d["server_cpu_s"] for d in ds if d.get("server_cpu_s")])
                w(f"| {name} | {cores} | {fmt(rps)} | {fmt(median([d['latency_us']['p99'] for d in ds]))} | "
                  f"{ecpu:.2f} | {lcpu:.2f} | {fmt(per_cpu)} | "
                  + (f"**{ratio:.2f}×** ({', '.join(f'{x:.2f}' for x in per)})" if i == 1 and ratio else "") + " |")
        w("")
    # auth / replication / store
    def pair_table(key, title, la, lb, what):
        rs = p.get(key) or []
        if not rs:
            return
        ratio, per = pair_ratio(rs)
        commit = [median([(r[i].get("shard") or {}).get("mean_commit_us") for r in rs]) for i in (0, 1)]
        if commit[0] and commit[1]:
            what += f"; mean apply + commit {fmt(commit[0])} µs (A) against {fmt(commit[1])} µs (B)"
        w(f"| {title} | {la}: {fmt(median([r[0]['rps'] for r in rs]))} req/s, p99 "
          f"{fmt(median([r[0]['latency_us']['p99'] for r in rs]))} µs | {lb}: "
          f"{fmt(median([r[1]['rps'] for r in rs]))} req/s, p99 "
          f"{fmt(median([r[1]['latency_us']['p99'] for r in rs]))} µs | **{ratio:.2f}×** "
          f"({', '.join(f'{x:.2f}' for x in per)}) | {what} |")
    if p.get("auth") or p.get("store"):
        w("### Auth, the write-ahead log, replication, and a pre-filled store")
        w("")
        w("Fresh engines side by side, the same signed load (64 connections, durable authorize) "
          "alternating between them; medians of the rounds, and the ratio per round.")
        w("")
        w("| comparison | A | B | A / B (per round) | note |")
        w("|---|---|---|---:|---|")
        pair_table("auth", "auth on / off", "auth on", "`--auth off`",
                   "the load signs for both, so its HMAC costs the same")
        if p.get("wal"):
            pair_table("wal", "write-ahead log on / off", "`--wal on`", "`--wal off`",
                       "answers after one log fsync against after an LMDB commit (issue 10)")
        if p.get("replication"):
            pair_table("replication", "replication on / off", "on", "`--replication off`",
                       "embedded Kafka-protocol cluster")
        else:
            w("| replication on / off | – | – | – | skipped: no `serve --replication` in this "
              "build (issue 8); wired in the suite |")
        if p.get("store"):
            rs = [[r[1], r[0]] for r in p["store"]]
            p["store_ba"] = rs
            fill = p.get("fill", {})
            pair_table("store_ba", "pre-filled / empty",
                       f"{fmt(fill.get('payments'))} payments", "empty",
                       f"filled at {fmt(fill.get('rate'))}/s (`--pipeline 32`, 64 connections) in "
                       f"{fill.get('seconds')} s; {fmt(fill.get('data_mib'))} MiB of data")
            del p["store_ba"]
        w("")
        if p.get("fill"):
            want = MODES[res["mode"]]["prefill"]
            w(f"The pre-filled store holds {fmt(p['fill']['payments'])} payments"
              + (f" in {res['mode']} mode (the full mode fills {MODES['full']['prefill']:,})"
                 if res["mode"] != "full" else "")
              + (f"; the fill stopped at its bound of {MODES[res['mode']]['prefill_max_s']} s "
                 f"before the {want:,} it aims at" if p["fill"]["payments"] < want else "")
              + ".")
            w("")
        if "store.png" in made:
            w(f"![empty against pre-filled store]({img_prefix}store.png)")
            w("")
    r = p.get("rss")
    if r:
        w("### Memory per idle connection")
        w("")
        w(f"A fresh engine (`--max-connections {max(4096, r['connections'])}` per core), then "
          f"{r['connections']:,} keep-alive connections that each sent one `GET /healthz` and "
          f"stay idle: VmRSS {fmt(r['rss_before_kib'])} KiB before, {fmt(r['rss_after_kib'])} KiB "
          f"after = **{r['kib_per_connection']:.2f} KiB per connection** (goal ≤ 8 KiB); the "
          f"last connection still answered afterwards: {'yes' if r['alive'] else 'no'}.")
        if r.get("rss_connected_kib"):
            w(f"Before their first request (accepted, nothing read yet) the same connections "
              f"held {r['kib_per_connected']:.2f} KiB each. What a connection touches (net/reactor.c): "
              "its part of the 14.5 KiB `struct conn` array (64 answer slots of 192 bytes), the "
              "first 4 KiB page of its 16 KiB input buffer (`CONN_SMALL_BUF_BYTES`) when it "
              "first reads, and the answer buffer it allocates for its first answer (4 KiB, "
              "kept while the connection lives).")
        w("")
    tc = p.get("tool_check")
    if tc:
        w("### The load generator against wrk")
        w("")
        w("`GET /healthz` of an engine on 1 core (CPU 0), 64 connections, each tool with one "
          "thread pinned to CPU 1 (`taskset -c 1 wrk -t1 -c64 --latency [-s bench/pipeline.lua]` "
          "and `taskset -c 1 ringpay load --scenario healthz --connections 64 --threads 1 "
          "[--pipeline 16]`), alternating; medians of the rounds. The engine's own count of "
          "answers (`ringpay_http_requests_total`) over each run checks each tool's count.")
        w("")
        w("| requests in flight per connection | rounds | wrk req/s | ringpay load req/s | load / wrk | wrk p50 / p99 µs | load p50 / p99 µs | tools' counts = engine's count |")
        w("|---:|---:|---:|---:|---:|---:|---:|---|")
        for depth in sorted(set(r["depth"] for r in tc)):
            rs = [r for r in tc if r["depth"] == depth]
            a = median([r["wrk"]["rps"] for r in rs])
            b = median([r["load"]["rps"] for r in rs])
            ratio = b / a if a else 0
            ok = "within 10%" if abs(ratio - 1) <= 0.10 else "**apart by more than 10%**"
            same = all(r["server_load"] == r["load"]["requests"] for r in rs)
            wrk_same = all(r["wrk"].get("requests") is not None and r["server_wrk"] is not None and
                           abs(r["server_wrk"] - r["wrk"]["requests"]) <= 64 * depth for r in rs)
            med = lambda k, t: median([r[t]["latency_us"].get(k) for r in rs])
            per = ", ".join("%.2f" % (r["load"]["rps"] / r["wrk"]["rps"]) for r in rs)
            w(f"| {depth} | {len(rs)} | {fmt(a)} | {fmt(b)} | {ratio:.2f}× ({ok}; per round "
              f"{per}) | "
              f"{fmt(med('p50', 'wrk'))} / {fmt(med('p99', 'wrk'))} | "
              f"{fmt(med('p50', 'load'))} / {fmt(med('p99', 'load'))} | "
              f"load: {'exactly' if same else 'NO'}; wrk: {'yes (± the requests in flight at its end)' if wrk_same else 'no'} |")
        w("")
    mb = p.get("micro")
    if mb:
        w("### Microbenchmarks (Google Benchmark)")
        w("")
        w("`cmake --build build --target microbench` (or `bench/microbench.sh build OUT`) runs "
          "every benchmark program of `bench/`; times per iteration:")
        w("")
        w("| program | benchmark | real time | CPU time | items/s |")
        w("|---|---|---:|---:|---:|")
        for b in mb:
            def t(ns):
                return f"{ns / 1e6:,.2f} ms" if ns >= 1e6 else f"{ns / 1e3:,.2f} µs" if ns >= 1e4 else f"{ns:,.0f} ns"
            w(f"| {b['binary']} | `{b['name']}` | {t(b['real_ns'])} | {t(b['cpu_ns'])} | "
              f"{fmt(b['items_per_s']) if b.get('items_per_s') else ''} |")
        if not any("log" in b["binary"] or "wal" in b["binary"] for b in mb):
            w("| log append | (the write-ahead log, issue 10: its benchmark program joins "
              "`microbench` with `rp_microbench()` in bench/CMakeLists.txt) | – | – | |")
        w("")
    w(END)
    return "\n".join(L) + "\n"


def render(res, data_dir, docs=True):
    res["goals"] = goals(res)
    write_csvs(res, data_dir)
    with open(os.path.join(data_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(data_dir, "goals.csv"), "w") as f:
        f.write("goal,target,measured,met\n")
        for g in res["goals"]:
            f.write(f"\"{g['goal']}\",{g['op']} {g['target']},{g['value'] if g['value'] is not None else ''},"
                    f"{'' if g['met'] is None else ('met' if g['met'] else 'missed')}\n")
    for g in res["goals"]:
        v = "not measured" if g["value"] is None else f"{g['value']:.2f}"
        verdict = "" if g["met"] is None else ("MET" if g["met"] else "MISSED")
        print(f"goal: {g['goal']}: {v} (target {g['op']} {g['target']:g}) {verdict}")
    # Without docs (the smoke test), the plots and the section go to data_dir instead.
    img_dir = os.path.join(ROOT, "docs/bench") if docs else data_dir
    os.makedirs(img_dir, exist_ok=True)
    made = plots(res, data_dir, img_dir)
    md = render_markdown(res, made, "bench/")
    if not docs:
        open(os.path.join(data_dir, "section.md"), "w").write(md)
        print(f"suite: wrote {data_dir}/section.md and {len(made)} plot(s) there")
        return
    path = os.path.join(ROOT, "docs/benchmarks.md")
    text = open(path).read()
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + md + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + md
    open(path, "w").write(text)
    print(f"suite: wrote docs/benchmarks.md (section 6) and {', '.join('docs/bench/' + m for m in made)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=sorted(MODES), default="quick")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/bench/data"),
                    help="results directory (results.json and CSVs)")
    ap.add_argument("--tmpdir", default=None, help="where the servers' data live (default $TMPDIR)")
    ap.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    ap.add_argument("--render", metavar="DIR", help="only render the results in DIR")
    ap.add_argument("--merchants", type=int, default=MERCHANTS,
                    help="merchants of every load, ringpay's and the peers' (default %(default)s)")
    ap.add_argument("--sweep-only", action="store_true",
                    help="only throughput against connections, ringpay and its peers "
                         "(use with --no-docs --out DIR)")
    ap.add_argument("--tool-check", action="store_true",
                    help="only ringpay load against wrk (bench/load_vs_wrk.sh); prints its table")
    ap.add_argument("--tool-rounds", type=int, default=0, help="rounds of the tool check")
    ap.add_argument("--tool-duration", type=int, default=0, help="seconds per tool-check run")
    args = ap.parse_args()
    if args.render:
        res = json.load(open(os.path.join(args.render, "results.json")))
        render(res, args.render, docs=not args.no_docs)
        return 0
    suite = Suite(args)

    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    if args.tool_check:
        try:
            suite.machine()
            suite.tool_check()
        except (Fail, subprocess.TimeoutExpired, KeyboardInterrupt) as e:
            print(f"suite: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        finally:
            suite.stop_all()
        md = render_markdown({**suite.res, "goals": [], "elapsed_s": 0}, [], "")
        print(md[md.index("### The load generator against wrk"):md.index("<!-- suite:end")].strip())
        shutil.rmtree(suite.tmp, ignore_errors=True)
        return 0
    try:
        suite.main()
    except (Fail, subprocess.TimeoutExpired, KeyboardInterrupt) as e:
        print(f"suite: {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    finally:
        suite.stop_all()
    if code == 0:
        os.makedirs(args.out, exist_ok=True)
        render(suite.res, args.out, docs=not args.no_docs)
        shutil.rmtree(suite.tmp, ignore_errors=True)
    else:
        print(f"suite: server logs kept in {suite.tmp}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
