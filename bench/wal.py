#!/usr/bin/env python3
"""The write-ahead log's own measurements (issue 10), the ones the suite does not make.

  1. fsync: the physical unit, one 4 KiB pwrite + fdatasync of a preallocated file in the
     data directories' file system (N samples).
  2. lone: one connection, closed loop, durable authorizations: p50 with --wal on and
     --wal off (fresh engines side by side, ROUNDS alternating runs), against the unit.
  3. open: the closed-loop maximum at 64 connections (--wal on), then an open loop at
     half of it: p99 against the unit.
  4. soak: an engine pre-filled with PREFILL payments and an empty one, both --wal on, each
     offered SOAK_S seconds of open-loop authorizations at 80% of the empty engine's
     closed-loop maximum (one after the other, the filled one first); throughput of
     each, the largest overlay and log directory seen (sampled every 2 s), checkpoints,
     and the LMDB pages the checkpointer wrote per operation (/proc/thread-self/io).
  5. recovery: an engine whose checkpoints start only when a layer is three-quarters
     full; authorizations until the overlay holds RECOVER_OPS operations; kill -9; time
     from the restart to /readyz = 200, and the replay's own log line.

  6. openab (only when named in --parts): the open loop of 3. for two engines side by
     side, B with --ab-flags, alternating rounds at the same offered rate.

usage: bench/wal.py [--build build] [--quick] [--json OUT]
Loopback only; every engine and its data directory are removed at the end.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

MERCHANTS = 1000


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def du_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


class Engine:
    def __init__(self, b, name, flags=(), data=None):
        self.b, self.name = b, name
        self.data = data or os.path.join(b.tmp, name)
        self.port = free_port()
        self.flags = list(flags)
        self.log = os.path.join(b.tmp, name + ".log")
        self.proc = None

    def start(self):
        argv = [self.b.rp, "serve", "--listen", f"127.0.0.1:{self.port}", "--data", self.data,
                "--cores", "2", "--auth", "off", "--access-log", "off", "--log-level", "info",
                *self.flags]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "a"))
        while time.monotonic() - t0 < 600:
            if self.proc.poll() is not None:
                raise SystemExit(f"wal.py: {self.name} exited {self.proc.returncode}: "
                                 + open(self.log).read()[-2000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.01)
        raise SystemExit(f"wal.py: {self.name} not ready in 600 s")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill9()

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r"(ringpay_[a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)$", line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
        return out

    def load(self, conns=64, dur=10, rate=0, requests=0, pipeline=1):
        argv = [self.b.rp, "load", "--target", f"127.0.0.1:{self.port}", "--scenario",
                "authorize", "--connections", str(conns), "--duration-s", str(int(dur)),
                "--merchants", str(MERCHANTS), "--pipeline", str(pipeline), "--json",
                "--timeout-ms", "30000"]
        if rate:
            argv += ["--rate", str(int(rate))]
        if requests:
            argv += ["--requests", str(int(requests))]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=dur + 120)
        if r.returncode != 0:
            raise SystemExit(f"wal.py: load on {self.name}: {r.stderr[-1000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])


class Bench:
    def __init__(self, a):
        self.a = a
        self.rp = os.path.abspath(os.path.join(a.build, "ringpay"))
        self.tmp = tempfile.mkdtemp(prefix="ringpay-walbench-", dir=a.dir)
        self.engines = []
        self.res = {"quick": a.quick}

    def log(self, msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def engine(self, name, flags=()):
        e = Engine(self, name, list(flags) + self.a.serve_flags.split())
        self.engines.append(e)
        e.start()
        return e

    def drop(self, e):
        e.stop()
        shutil.rmtree(e.data, ignore_errors=True)

    def fsync(self, n=500):
        path = os.path.join(self.tmp, "probe")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.write(fd, b"\0" * (1 << 20))
        os.fsync(fd)
        block = os.urandom(4096)
        xs = []
        for i in range(n):
            t = time.perf_counter_ns()
            os.pwrite(fd, block, (i % 256) * 4096)
            os.fdatasync(fd)
            xs.append((time.perf_counter_ns() - t) / 1000)
        os.close(fd)
        os.unlink(path)
        r = {"samples": n, "p50_us": round(percentile(xs, .5)),
             "p99_us": round(percentile(xs, .99)), "mean_us": round(statistics.mean(xs))}
        self.log(f"fsync unit: {r}")
        return r

    def lone(self):
        on = self.engine("lone-on")
        off = self.engine("lone-off", ["--wal", "off"])
        rows = {"on": [], "off": []}
        for rnd in range(self.a.rounds):
            for e, k in ((on, "on"), (off, "off")) if rnd % 2 == 0 else ((off, "off"), (on, "on")):
                d = e.load(conns=1, dur=self.a.dur)
                rows[k].append(d)
                self.log(f"lone {k}: {d['rps']:.0f} req/s p50 {d['latency_us']['p50']} p99 {d['latency_us']['p99']}")
        self.drop(on)
        self.drop(off)
        return {k: {"p50_us": statistics.median(d["latency_us"]["p50"] for d in v),
                    "p99_us": statistics.median(d["latency_us"]["p99"] for d in v),
                    "rps": statistics.median(d["rps"] for d in v), "rounds": v}
                for k, v in rows.items()}

    def open_loop(self):
        e = self.engine("open")
        e.load(conns=64, dur=3)  # warm
        m0 = e.metrics()
        mx = e.load(conns=64, dur=self.a.dur)
        m1 = e.metrics()
        half = mx["rps"] / 2
        d = e.load(conns=64, dur=max(self.a.dur, 15), rate=half)
        m2 = e.metrics()
        self.log(f"open: max {mx['rps']:.0f}, at {half:.0f}/s p50 {d['latency_us']['p50']} p99 {d['latency_us']['p99']}")
        self.drop(e)
        return {"max": mx, "half": d, "where_max": where(m0, m1), "where_half": where(m1, m2)}

    def open_ab(self):
        """A/B of the open loop: engine A (--serve-flags) and B (also --ab-flags), side by
        side; A's closed-loop maximum, then ROUNDS alternating open-loop runs of each at
        half of it (the same offered rate for both)."""
        a = self.engine("ab-a")
        b = self.engine("ab-b", self.a.ab_flags.split())
        for e in (a, b):
            e.load(conns=64, dur=3)  # warm
        mx = a.load(conns=64, dur=self.a.dur)
        mxb = b.load(conns=64, dur=self.a.dur)
        half = mx["rps"] / 2
        rows = {"a": [], "b": []}
        for rnd in range(self.a.rounds):
            for e, k in ((a, "a"), (b, "b")) if rnd % 2 == 0 else ((b, "b"), (a, "a")):
                m0 = e.metrics()
                d = e.load(conns=64, dur=max(self.a.dur, 15), rate=half)
                m1 = e.metrics()
                w = where(m0, m1)
                w["overlay_full"] = int(m1.get("ringpay_overlay_full_total", 0)
                                        - m0.get("ringpay_overlay_full_total", 0))
                rows[k].append({"p50_us": d["latency_us"]["p50"], "p99_us": d["latency_us"]["p99"],
                                "p999_us": d["latency_us"]["p999"], "rps": d["rps"], "where": w})
                self.log(f"open {k}: {d['rps']:.0f}/s p50 {d['latency_us']['p50']} "
                         f"p99 {d['latency_us']['p99']} p99.9 {d['latency_us']['p999']} {w}")
        self.drop(a)
        self.drop(b)
        med = {k: {q: statistics.median(r[q] for r in v) for q in ("p50_us", "p99_us", "p999_us")}
               for k, v in rows.items()}
        return {"ab_flags": self.a.ab_flags, "max_a": mx["rps"], "max_b": mxb["rps"],
                "rate": half, "median": med, "rounds": rows}

    def soak_one(self, e, rate, dur):
        samples = []
        proc = subprocess.Popen(
            [self.rp, "load", "--target", f"127.0.0.1:{e.port}", "--scenario", "authorize",
             "--connections", "64", "--duration-s", str(dur), "--merchants", str(MERCHANTS),
             "--rate", str(int(rate)), "--json", "--timeout-ms", "30000"],
            stdout=subprocess.PIPE, text=True)
        m0 = e.metrics()
        io0 = self.proc_io(e)
        while proc.poll() is None:
            time.sleep(2)
            try:
                m = e.metrics()
            except OSError:
                continue
            wal = sum(du_bytes(os.path.join(e.data, d, "wal")) for d in os.listdir(e.data)
                      if d.startswith("shard-"))
            samples.append({"t": time.monotonic(), "overlay_bytes": m.get("ringpay_overlay_bytes", 0),
                            "overlay_ops": m.get("ringpay_overlay_operations", 0),
                            "wal_dir_bytes": wal,
                            "log_ahead_bytes": m.get("ringpay_wal_written_bytes", 0)
                            - m.get("ringpay_checkpoint_position_bytes", 0)})
        out = json.loads(proc.stdout.read().strip().splitlines()[-1])
        m1 = e.metrics()
        io1 = self.proc_io(e)
        ops = m1.get("ringpay_checkpoint_operations_total", 0) - m0.get("ringpay_checkpoint_operations_total", 0)
        wb = m1.get("ringpay_checkpoint_written_bytes_total", 0) - m0.get("ringpay_checkpoint_written_bytes_total", 0)
        return {"load": out, "where": where(m0, m1),
                "checkpoints": m1.get("ringpay_checkpoints_total", 0) - m0.get("ringpay_checkpoints_total", 0),
                "checkpoint_ops": ops, "checkpoint_written_bytes": wb,
                "pages_per_op": round(wb / 4096 / ops, 2) if ops else None,
                "engine_write_bytes": io1 - io0,
                "max_overlay_bytes": max((s["overlay_bytes"] for s in samples), default=0),
                "max_overlay_ops": max((s["overlay_ops"] for s in samples), default=0),
                "max_wal_dir_bytes": max((s["wal_dir_bytes"] for s in samples), default=0),
                "max_log_ahead_bytes": max((s["log_ahead_bytes"] for s in samples), default=0),
                "samples": len(samples)}

    @staticmethod
    def proc_io(e):
        try:
            for line in open(f"/proc/{e.proc.pid}/io"):
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def soak(self):
        filled = self.engine("soak-filled")
        t0 = time.monotonic()
        d = filled.load(conns=64, pipeline=32, requests=self.a.prefill, dur=self.a.prefill_max_s)
        fill_s = time.monotonic() - t0
        self.log(f"prefill: {d['rps']:.0f}/s, {json.dumps(d.get('status', {}))} in {fill_s:.0f} s")
        # Let the checkpoints catch up, so both runs start with an empty-ish overlay.
        time.sleep(5)
        empty = self.engine("soak-empty")
        empty.load(conns=64, dur=3)
        mx = empty.load(conns=64, dur=self.a.dur)
        rate = 0.8 * mx["rps"]
        self.log(f"soak: empty max {mx['rps']:.0f}/s, offering {rate:.0f}/s for {self.a.soak_s} s each")
        rf = self.soak_one(filled, rate, self.a.soak_s)
        self.log(f"soak filled: {rf['load']['rps']:.0f}/s p99 {rf['load']['latency_us']['p99']}")
        re_ = self.soak_one(empty, rate, self.a.soak_s)
        self.log(f"soak empty: {re_['load']['rps']:.0f}/s p99 {re_['load']['latency_us']['p99']}")
        lmdb = sum(os.path.getsize(os.path.join(filled.data, d, "data.mdb"))
                   for d in os.listdir(filled.data) if d.startswith("shard-")
                   and os.path.exists(os.path.join(filled.data, d, "data.mdb")))
        self.drop(filled)
        self.drop(empty)
        return {"prefill": {"requests": self.a.prefill, "load": d, "seconds": round(fill_s, 1),
                            "lmdb_file_bytes": lmdb},
                "empty_max": mx, "rate": rate, "filled": rf, "empty": re_}

    def recovery(self):
        flags = ["--checkpoint-ops", "100000000", "--checkpoint-ms", "3600000"]
        e = self.engine("recover", flags)
        want = self.a.recover_ops
        sent = 0
        while True:
            e.load(conns=64, pipeline=8, requests=20000, dur=120)
            sent += 20000
            m = e.metrics()
            if m.get("ringpay_overlay_operations", 0) >= want or sent >= 4 * want:
                break
        before = e.metrics()
        e.kill9()
        size = os.path.getsize(e.log)
        t = e.start()
        with open(e.log) as f:
            f.seek(size)
            lines = [json.loads(l) for l in f if "write-ahead log replayed" in l]
        after = e.metrics()
        self.log(f"recovery: {before.get('ringpay_overlay_operations')} ops in the overlay, "
                 f"ready in {t:.2f} s; {lines}")
        self.drop(e)
        return {"overlay_ops": before.get("ringpay_overlay_operations"),
                "overlay_bytes": before.get("ringpay_overlay_bytes"),
                "log_ahead_bytes": before.get("ringpay_wal_written_bytes", 0)
                - before.get("ringpay_checkpoint_position_bytes", 0),
                "ready_s": round(t, 3), "replay_lines": lines,
                "replayed_ops": after.get("ringpay_wal_replayed_operations"),
                "replay_s": after.get("ringpay_wal_replay_seconds")}

    def run(self):
        try:
            self.res["machine"] = {"nproc": os.cpu_count(), "loadavg": os.getloadavg()}
            self.res["fsync"] = self.fsync()
            for part in self.a.parts.split(","):
                self.res[part] = {"lone": self.lone, "open": self.open_loop, "soak": self.soak,
                                  "recovery": self.recovery, "openab": self.open_ab}[part]()
            self.res["fsync_after"] = self.fsync()
            self.res["loadavg_after"] = os.getloadavg()
        finally:
            for e in self.engines:
                e.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.res


def where(a, b):
    d = {k: b[k] - a.get(k, 0.0) for k in b}
    syncs = d.get("ringpay_wal_syncs_total", 0)
    commits = d.get("ringpay_shard_commits_total", 0)
    out = {"commits": int(commits), "wal_syncs": int(syncs)}
    if syncs:
        out["mean_wal_sync_us"] = round(d.get("ringpay_wal_sync_seconds_total", 0) / syncs * 1e6)
        out["jobs_per_wal_sync"] = round(d.get("ringpay_shard_batch_jobs_total", 0) / syncs, 2)
    if commits:
        out["mean_apply_us"] = round(d.get("ringpay_shard_commit_seconds_total", 0) / commits * 1e6)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default="build")
    p.add_argument("--dir", default=None, help="where the data directories go (default /tmp)")
    p.add_argument("--parts", default="lone,open,soak,recovery")
    p.add_argument("--quick", action="store_true", help="short runs, 300,000 payments")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dur", type=int, default=10)
    p.add_argument("--prefill", type=int, default=10_000_000)
    p.add_argument("--prefill-max-s", type=int, default=1800)
    p.add_argument("--soak-s", type=int, default=300)
    p.add_argument("--recover-ops", type=int, default=100_000)
    p.add_argument("--serve-flags", default="", help="more flags for every engine (A/B runs)")
    p.add_argument("--ab-flags",
                   default="--checkpoint-ms 3600000 --checkpoint-ops 100000000 --overlay-mb 1024",
                   help="part openab: engine B's flags on top of --serve-flags")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.quick:
        a.prefill, a.soak_s, a.dur, a.rounds, a.recover_ops = 300_000, 30, 5, 2, 20_000
    res = Bench(a).run()
    text = json.dumps(res, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
