#!/usr/bin/env python3
"""bench/run.py: runs the benchmark workloads against Samsa and its peers, alternating systems
within each repetition so that machine drift hits all alike, and writes target/bench/results.json.

Systems: samsa (default fsync flush policy), samsa-none (flush policy none), samsa-rf3 (three
nodes on this machine, RF 3, min.insync.replicas 2, acks=all, fsync), Tansu's memory engine,
and librdkafka's mock cluster held in its own process (the client-side ceiling). Load generators
are real clients: rdkafka_performance (C, librdkafka 2.16) for throughput and the confluent-kafka
driver bench/kbench.py for end-to-end latency. Physical limits (iperf3, fio, CRC-32C) are
measured in the same run. Figures are printed, never asserted. Everything listens on 127.0.0.1
only; every process started here is stopped (by its own pid) before the script returns, and every
wait is bounded by a count and a timeout.
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
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target", "bench")
START_WAIT_S = 30  # bound on a server's start-up
CLUSTER_NODES = 3  # samsa-rf3: nodes, and the replication factor of its topics
STOP_WAIT_S = 10  # bound on a graceful stop before SIGKILL
CLK_TCK = os.sysconf("SC_CLK_TCK")
LIVE = []  # every process started here, stopped in finally


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(cmd, out_path, **kw):
    f = open(out_path, "wb")
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, **kw)
    f.close()
    LIVE.append(p)
    return p


def stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(STOP_WAIT_S)
    if p in LIVE:
        LIVE.remove(p)


def wait_for(pred, timeout, step=0.005):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def file_match(path, pattern):
    try:
        with open(path, "rb") as f:
            m = re.search(pattern, f.read().decode("utf-8", "replace"))
            return m
    except OSError:
        return None


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def proc_cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def proc_hwm_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


class Server:
    """One broker-like process on 127.0.0.1: samsa, samsa-none, tansu or mock."""

    def __init__(self, kind, tools, workdir, extra=()):
        self.kind = kind
        self.tools = tools
        self.workdir = workdir
        self.extra = list(extra)
        self.proc = None
        self.addr = None
        self.t_listen = None

    def start(self, fresh=True):
        if self.kind == "samsa-rf3":
            return self.start_cluster()
        os.makedirs(self.workdir, exist_ok=True)
        out = os.path.join(self.workdir, f"{self.kind}.out")
        data = os.path.join(self.workdir, "data")
        if fresh and os.path.exists(data):
            shutil.rmtree(data)
        t0 = time.monotonic()
        if self.kind.startswith("samsa"):
            port = self.port if (not fresh and self.addr) else free_port()
            policy = "none" if self.kind == "samsa-none" else "fsync"
            cmd = [self.tools["SAMSA"], "broker", "--listen", f"127.0.0.1:{port}",
                   "--data-dir", data, "--flush-policy", policy, "--log-level", "warn"]
            self.proc = spawn(cmd + self.extra, out)
            ok = wait_for(lambda: file_match(out, r"samsa listening on") or
                          self.proc.poll() is not None, START_WAIT_S)
        elif self.kind == "tansu":
            port = free_port()
            url = f"tcp://127.0.0.1:{port}"
            cmd = [self.tools["TANSU"], "broker", "--listener-url", url,
                   "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
            self.proc = spawn(cmd, out, cwd=self.workdir)
            ok = wait_for(lambda: port_open(port) or self.proc.poll() is not None,
                          START_WAIT_S, 0.02)
        elif self.kind == "mock":
            cmd = [self.tools["PYTHON"], os.path.join(ROOT, "bench", "mockhold.py"),
                   "--seconds", "7200"]
            self.proc = spawn(cmd, out)
            m = wait_for(lambda: file_match(out, r"MOCK 127\.0\.0\.1:(\d+)"), START_WAIT_S, 0.02)
            port = int(m.group(1)) if m else 0
            ok = bool(m)
        else:
            raise ValueError(self.kind)
        self.t_listen = time.monotonic() - t0
        if not ok or self.proc.poll() is not None:
            raise RuntimeError(f"{self.kind} did not start; see {out}")
        self.port = port
        self.addr = f"127.0.0.1:{port}"
        return self

    def start_cluster(self):
        """samsa-rf3: three combined-mode nodes (each voter pinned by `samsa format`), fsync
        policy; topics are created with RF 3 and min.insync.replicas 2, clients use acks=all,
        so every acknowledged batch is on all three nodes' page caches and fsynced on each."""
        os.makedirs(self.workdir, exist_ok=True)
        t0 = time.monotonic()
        ports = [free_port() for _ in range(2 * CLUSTER_NODES)]
        voters = []
        for i in range(CLUSTER_NODES):
            data = os.path.join(self.workdir, f"data{i + 1}")
            shutil.rmtree(data, ignore_errors=True)
            dir_id = subprocess.run([self.tools["SAMSA"], "format", "--data-dir", data],
                                    capture_output=True, text=True, check=True).stdout.strip()
            voters.append(f"{i + 1}@127.0.0.1:{ports[CLUSTER_NODES + i]}:{dir_id}")
        self.procs = []
        for i in range(CLUSTER_NODES):
            out = os.path.join(self.workdir, f"{self.kind}.n{i + 1}.out")
            cmd = [self.tools["SAMSA"], "broker", "--listen", f"127.0.0.1:{ports[i]}",
                   "--data-dir", os.path.join(self.workdir, f"data{i + 1}"),
                   "--node-id", str(i + 1), "--voters", ",".join(voters),
                   "--controller-listen", f"127.0.0.1:{ports[CLUSTER_NODES + i]}",
                   "--flush-policy", "fsync", "--log-level", "warn"]
            self.procs.append(spawn(cmd, out))
        ok = wait_for(lambda: all(file_match(os.path.join(self.workdir, f"{self.kind}.n{i + 1}"
                                                          ".out"), r"samsa listening on")
                                  for i in range(CLUSTER_NODES))
                      or any(p.poll() is not None for p in self.procs), START_WAIT_S)
        self.proc = self.procs[0]
        if ok and not any(p.poll() is not None for p in self.procs):
            from confluent_kafka import KafkaException
            from confluent_kafka.admin import AdminClient
            admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{ports[0]}"})

            def registered():
                try:
                    return len(admin.list_topics(timeout=2).brokers) == CLUSTER_NODES
                except KafkaException:
                    return False
            ok = wait_for(registered, START_WAIT_S, 0.2)
        self.t_listen = time.monotonic() - t0
        if not ok or any(p.poll() is not None for p in self.procs):
            raise RuntimeError(f"{self.kind} did not start; see {self.workdir}")
        self.port = ports[0]
        self.addr = ",".join(f"127.0.0.1:{ports[i]}" for i in range(CLUSTER_NODES))
        return self

    def cpu_s(self):
        """CPU seconds of every process of this system (all three nodes of a cluster)."""
        vals = [proc_cpu_s(p.pid) for p in getattr(self, "procs", None) or [self.proc]]
        return None if any(v is None for v in vals) else sum(vals)

    def hwm_mb(self):
        vals = [proc_hwm_mb(p.pid) for p in getattr(self, "procs", None) or [self.proc]]
        return None if any(v is None for v in vals) else sum(vals)

    def stop(self, sig=signal.SIGTERM):
        for p in getattr(self, "procs", None) or [self.proc]:
            if p is not None:
                stop(p, sig)


def run_cmd(cmd, timeout, out_path):
    """Runs a client to completion (SIGINT at the deadline, SIGKILL after); returns its output."""
    p = spawn(["timeout", "-s", "INT", "-k", "5", str(int(timeout))] + cmd, out_path)
    try:
        p.wait(timeout + 15)
    except subprocess.TimeoutExpired:
        pass
    stop(p, signal.SIGKILL)
    with open(out_path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def kbench(tools, args, timeout, out_path):
    text = run_cmd([tools["PYTHON"], os.path.join(ROOT, "bench", "kbench.py")] + args,
                   timeout, out_path)
    for line in reversed(text.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": "no RESULT line", "tail": text[-300:]}


RDP_PRODUCE = (r"(\d+) messages produced \((\d+) bytes\), (\d+) delivered "
               r".*?(\d+) failed\) in (\d+)ms")
RDP_CONSUME = r"(\d+) messages \((\d+) bytes\) consumed in (\d+)ms"


def rdp_produce(tools, addr, topic, size, count, partition, timeout, out_path):
    cmd = ["stdbuf", "-oL", tools["RDKAFKA_PERFORMANCE"], "-P", "-t", topic, "-b", addr,
           "-s", str(size), "-c", str(count), "-a", "-1", "-X", "linger.ms=5",
           "-X", "batch.size=1048576", "-X", "queue.buffering.max.messages=2000000",
           "-X", "message.timeout.ms=60000", "-X", "enable.idempotence=false"]
    if partition is not None:
        cmd += ["-p", str(partition)]
    text = run_cmd(cmd, timeout, out_path)
    ms = re.findall(RDP_PRODUCE, text)
    if not ms:
        return {"error": "no summary", "tail": text[-300:]}
    _n, _b, delivered, failed, msec = (int(x) for x in ms[-1])
    secs = max(msec, 1) / 1000
    return {"msgs_s": delivered / secs, "mb_s": delivered * size / secs / 1e6,
            "delivered": delivered, "failed": failed, "secs": secs}


def rdp_consume(tools, addr, topic, size, count, timeout, out_path):
    cmd = ["stdbuf", "-oL", tools["RDKAFKA_PERFORMANCE"], "-C", "-t", topic, "-p", "0",
           "-b", addr, "-o", "beginning", "-c", str(count), "-i", "1000", "-q"]
    text = run_cmd(cmd, timeout, out_path)
    ms = re.findall(RDP_CONSUME, text)
    if not ms:
        return {"error": "no summary", "tail": text[-300:]}
    n, b, msec = (int(x) for x in ms[-1])
    secs = max(msec, 1) / 1000
    return {"msgs_s": n / secs, "mb_s": b / secs / 1e6, "consumed": n, "secs": secs,
            "complete": n >= count}


# ---------------------------------------------------------------------------------------------
def physical(tools, cfg, rep):
    d = os.path.join(BENCH, "phys")
    os.makedirs(d, exist_ok=True)
    res = {}
    if "IPERF3" in tools:
        port = free_port()
        s_out = os.path.join(d, "iperf3-s.out")
        srv = spawn([tools["IPERF3"], "-s", "-1", "-B", "127.0.0.1", "-p", str(port)], s_out)
        # Not a connect probe: the one-shot (-1) server would spend its single test on it.
        wait_for(lambda: file_match(s_out, r"Server listening"), 5, 0.02)
        text = run_cmd([tools["IPERF3"], "-c", "127.0.0.1", "-p", str(port), "-t",
                        str(cfg.iperf_secs), "-J"], cfg.iperf_secs + 20,
                       os.path.join(d, "iperf3-c.out"))
        stop(srv)
        try:
            bps = json.loads(text)["end"]["sum_received"]["bits_per_second"]
            res["loopback_gb_s"] = bps / 8e9
        except (ValueError, KeyError):
            log("iperf3: no result")
    if "FIO" in tools:
        for name, bs, size in (("fio_1m_fdatasync_mb_s", "1M", cfg.fio_1m_size),
                               ("fio_16k_fdatasync_mb_s", "16k", cfg.fio_16k_size)):
            text = run_cmd([tools["FIO"], f"--name={name}", f"--directory={d}",
                            "--ioengine=psync", "--rw=write", f"--bs={bs}", f"--size={size}",
                            "--fdatasync=1", "--runtime=20", "--output-format=json"], 60,
                           os.path.join(d, f"{name}.out"))
            try:
                j = json.loads(text[text.index("{"):])
                res[name] = j["jobs"][0]["write"]["bw_bytes"] / 1e6
            except (ValueError, KeyError, IndexError):
                log(f"fio {name}: no result")
            for fn in os.listdir(d):
                if fn.startswith(name) and not fn.endswith(".out"):
                    os.remove(os.path.join(d, fn))
    if "CRCBENCH" in tools and rep == 0:
        text = run_cmd([tools["CRCBENCH"], str(cfg.crc_mib)], 120, os.path.join(d, "crc.out"))
        try:
            j = json.loads(text.strip().splitlines()[-1])["crc32c"]
            res["crc32c_16k_gb_s"] = j["16384"]["median_gb_s"]
            res["crc32c_1k_gb_s"] = j["1024"]["median_gb_s"]
        except (ValueError, KeyError, IndexError):
            log("crcbench: no result")
    return res


def workloads_for(kind):
    if kind == "samsa-rf3":  # replication's cost on the produce path and on latency
        return ["produce_1k", "produce_1k_8p", "e2e_1000"]
    if kind == "samsa-none":  # e2e too: it separates the fsync's share of the latency
        return ["produce_1k", "produce_100", "produce_1k_8p", "e2e_1000", "e2e_10000"]
    if kind == "mock":
        # The mock keeps only 100,000 messages per partition: no fetch row.
        return ["produce_1k", "produce_100", "produce_1k_8p", "e2e_1000", "e2e_10000"]
    return ["produce_1k", "produce_100", "produce_1k_8p", "fetch", "e2e_1000", "e2e_10000"]


def one_system(tools, cfg, kind, rep, out):
    wd = os.path.join(BENCH, "run", kind)
    srv = Server(kind, tools, wd).start()
    log(f"rep {rep} {kind} at {srv.addr}")
    o = lambda name: os.path.join(wd, f"{name}.r{rep}.out")  # noqa: E731
    try:
        if kind != "mock":  # the mock has no CreateTopics: it auto-creates 4 partitions
            rf = ["--replication-factor", str(CLUSTER_NODES)] if kind == "samsa-rf3" else []
            kbench(tools, ["create", "--bootstrap", srv.addr, "--topic", "p1k", "--topic",
                           "p100", "--topic", "fetch", "--topic", "e2e1000", "--topic",
                           "e2e10000"] + rf, 60, o("create1"))
            kbench(tools, ["create", "--bootstrap", srv.addr, "--topic", "p1k8",
                           "--partitions", "8"] + rf, 60, o("create8"))
        produced = 0
        for w in workloads_for(kind):
            c0 = srv.cpu_s()
            if w == "produce_1k":
                r = rdp_produce(tools, srv.addr, "p1k", 1024, cfg.n_1k, 0, cfg.t_run, o(w))
            elif w == "produce_100":
                r = rdp_produce(tools, srv.addr, "p100", 100, cfg.n_100, 0, cfg.t_run, o(w))
            elif w == "produce_1k_8p":
                r = rdp_produce(tools, srv.addr, "p1k8", 1024, cfg.n_1k, None, cfg.t_run, o(w))
            elif w == "fetch":
                b = rdp_produce(tools, srv.addr, "fetch", 1024, cfg.n_fetch, 0,
                                cfg.t_run * 3, o("fetch-backlog"))
                produced += b.get("delivered", 0) * 1024
                n = b.get("delivered", 0)
                c0 = srv.cpu_s()  # the backlog's production is not the fetch's cost
                r = rdp_consume(tools, srv.addr, "fetch", 1024, n, cfg.t_fetch, o(w)) if n \
                    else {"error": "no backlog"}
                c1 = srv.cpu_s()
                if r.get("consumed") and c0 is not None and c1 is not None:
                    r["broker_cpu_s_per_gb"] = (c1 - c0) / (r["consumed"] * 1024 / 1e9)
            else:
                rate = int(w.split("_")[1])
                r = kbench(tools, ["e2e", "--bootstrap", srv.addr, "--topic", f"e2e{rate}",
                                   "--rate", str(rate), "--duration", str(cfg.e2e_secs)],
                           cfg.e2e_secs * 4 + 60, o(w))
                produced += r.get("sent", 0) * 1024
            c1 = srv.cpu_s()
            if "delivered" in r:
                size = 100 if w == "produce_100" else 1024
                produced += r["delivered"] * size
                if c0 is not None and c1 is not None and r["delivered"]:
                    r["broker_cpu_s_per_gb"] = (c1 - c0) / (r["delivered"] * size / 1e9)
            if "error" in r:
                log(f"  {kind} {w}: ERROR {r['error']} {r.get('tail', '')[-200:]!r}")
            else:
                log(f"  {kind} {w}: " + ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in r.items() if k not in ("mode",)))
            out.setdefault(w, {}).setdefault(kind, []).append(r)
        hwm = srv.hwm_mb()
        if hwm is not None and produced:
            out.setdefault("memory", {}).setdefault(kind, []).append(
                {"peak_rss_mb": hwm, "gb_produced": produced / 1e9,
                 "peak_rss_mb_per_gb": hwm / (produced / 1e9)})
    finally:
        srv.stop()
        for i in range(CLUSTER_NODES + 1):
            shutil.rmtree(os.path.join(wd, f"data{i or ''}"), ignore_errors=True)


def recovery(tools, cfg):
    """Samsa only: fill many segments, SIGKILL, time restart to 'listening' and to 'serving'."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    wd = os.path.join(BENCH, "run", "recovery")
    seg = max(1 << 20, cfg.recovery_bytes // cfg.recovery_segments)
    srv = Server("samsa", tools, wd, extra=["--segment-bytes", str(seg)]).start()
    n = cfg.recovery_bytes // 1024
    kbench(tools, ["create", "--bootstrap", srv.addr, "--topic", "rec"], 60,
           os.path.join(wd, "create.out"))
    r = rdp_produce(tools, srv.addr, "rec", 1024, n, 0, cfg.t_run * 4, os.path.join(wd, "fill"))
    delivered = r.get("delivered", 0)
    srv.stop(signal.SIGKILL)
    data = os.path.join(wd, "data")
    files = sum(len(fs) for _, _, fs in os.walk(data))
    size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(data) for f in fs)
    log(f"recovery: {delivered} msgs, {size / 1e6:.0f} MB in {files} files, killed")
    runs = []
    for rep in range(cfg.reps):
        t0 = time.monotonic()
        try:
            srv.start(fresh=False)
        except RuntimeError as e:
            runs.append({"error": str(e)})
            break
        t_listen = time.monotonic() - t0
        c = Consumer({"bootstrap.servers": srv.addr, "group.id": "samsa-bench-recovery"})
        hi = -1
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                hi = c.get_watermark_offsets(TopicPartition("rec", 0), timeout=1)[1]
                if hi >= delivered:
                    break
            except KafkaException:
                pass
            time.sleep(0.002)
        t_serve = time.monotonic() - t0
        c.close()
        run = {"listen_s": t_listen, "serving_s": t_serve, "high_watermark": hi,
               "expected": delivered, "ok": hi >= delivered}
        log(f"recovery rep {rep}: " + json.dumps(run))
        runs.append(run)
        if rep + 1 < cfg.reps:
            # Every repetition restarts after a kill under fresh writes (one more segment's
            # worth, not yet synced), like the first, not after an idle restart.
            more = rdp_produce(tools, srv.addr, "rec", 1024, seg // 1024, 0, cfg.t_run,
                               os.path.join(wd, f"more{rep}"))
            delivered += more.get("delivered", 0)
        srv.stop(signal.SIGKILL)
    shutil.rmtree(data, ignore_errors=True)
    return {"bytes_on_disk": size, "files": files, "segment_bytes": seg, "messages": delivered,
            "runs": runs}


# ---------------------------------------------------------------------------------------------
def summarize(vals):
    vals = [v for v in vals if isinstance(v, (int, float))]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--systems", default="samsa,samsa-none,samsa-rf3,tansu,mock")
    ap.add_argument("--recovery-mb", type=int, default=0, help="0 = mode default")
    ap.add_argument("--recovery-segments", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(BENCH, "results.json"))
    cfg = ap.parse_args()
    q = cfg.quick
    cfg.reps = max(1, min(cfg.reps, 20))
    cfg.n_1k = 400_000 if q else 2_000_000
    cfg.n_100 = 1_000_000 if q else 4_000_000
    cfg.n_fetch = 300_000 if q else 2_000_000
    cfg.t_run = 60 if q else 180
    cfg.t_fetch = 30 if q else 90
    cfg.e2e_secs = 2 if q else 10
    cfg.iperf_secs = 1 if q else 5
    cfg.fio_1m_size = "256M" if q else "1G"
    cfg.fio_16k_size = "32M" if q else "256M"
    cfg.crc_mib = 256 if q else 1024
    cfg.recovery_bytes = (cfg.recovery_mb or (64 if q else 2048)) << 20
    cfg.recovery_segments = cfg.recovery_segments or (16 if q else 100)

    tools = {}
    with open(os.path.join(BENCH, "tools.env")) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            if k:
                tools[k] = v
    tools["SAMSA"] = os.environ.get("SAMSA_BIN", os.path.join(ROOT, "target/release/samsa"))
    systems = [s for s in cfg.systems.split(",") if s]
    if "RDKAFKA_PERFORMANCE" not in tools:
        log("no rdkafka_performance: throughput rows skipped")
    if "TANSU" not in tools and "tansu" in systems:
        systems.remove("tansu")

    t_start = time.time()
    results = {"workloads": {}, "physical": {}, "recovery": None}
    phys_runs = []
    try:
        for rep in range(cfg.reps):
            phys_runs.append(physical(tools, cfg, rep))
            order = systems[rep % len(systems):] + systems[:rep % len(systems)]
            for kind in order:
                try:
                    one_system(tools, cfg, kind, rep, results["workloads"])
                except (RuntimeError, OSError) as e:
                    log(f"rep {rep} {kind}: {e}")
        if "samsa" in systems:
            results["recovery"] = recovery(tools, cfg)
    finally:
        for p in list(LIVE):
            stop(p, signal.SIGKILL)
    for key in sorted({k for r in phys_runs for k in r}):
        results["physical"][key] = summarize([r.get(key) for r in phys_runs])
    results["meta"] = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(t_start)),
        "mode": "quick" if q else "full", "reps": cfg.reps, "systems": systems,
        "wall_s": time.time() - t_start, "machine": machine(),
        "params": {k: getattr(cfg, k) for k in ("n_1k", "n_100", "n_fetch", "e2e_secs",
                                                  "recovery_bytes", "recovery_segments")},
    }
    os.makedirs(os.path.dirname(cfg.out), exist_ok=True)
    with open(cfg.out, "w") as f:
        json.dump(results, f, indent=1)
    log(f"wrote {cfg.out}")
    return 0


def machine():
    m = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    m["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    m["cpus"] = os.cpu_count()
    try:
        with open("/proc/meminfo") as f:
            m["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    m["kernel"] = os.uname().release
    return m


if __name__ == "__main__":
    sys.exit(main())
