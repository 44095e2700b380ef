#!/usr/bin/env python3
"""bench/report.py: turns target/bench/results.json into the printed table (median [min–max] of
the repetitions, and the ratio Samsa/peer per row), a Markdown copy (results.md) and the plot
(results.svg, via bench/plot.py). It only reads results.json; it never runs anything.
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot  # noqa: E402

SYSTEMS = ["samsa", "samsa-none", "samsa-rf3", "tansu", "mock"]
HEADS = {"samsa": "Samsa (fsync)", "samsa-none": "Samsa (none)",
         "samsa-rf3": "Samsa 3 nodes RF3", "tansu": "Tansu (memory)", "mock": "mock ceiling"}
# Ratio columns: (numerator, denominator, heading).
RATIOS = [("samsa", "tansu", "Samsa/Tansu"), ("samsa", "mock", "Samsa/mock"),
          ("samsa-rf3", "samsa", "RF3/RF1")]
# (workload, field, label, unit, better)
ROWS = [
    ("produce_1k", "msgs_s", "produce 1 KiB, acks=all, linger 5 ms, 1 part.", "msg/s", "high"),
    ("produce_1k", "mb_s", "produce 1 KiB, 1 part.", "MB/s", "high"),
    ("produce_100", "msgs_s", "produce 100 B, 1 part.", "msg/s", "high"),
    ("produce_100", "mb_s", "produce 100 B, 1 part.", "MB/s", "high"),
    ("produce_1k_8p", "msgs_s", "produce 1 KiB, 8 part. (mock: 4)", "msg/s", "high"),
    ("produce_1k_8p", "mb_s", "produce 1 KiB, 8 part.", "MB/s", "high"),
    ("fetch", "mb_s", "fetch from start, 1 consumer", "MB/s", "high"),
    ("e2e_1000", "p50_us", "e2e 1 KiB @1,000/s p50", "µs", "low"),
    ("e2e_1000", "p99_us", "e2e @1,000/s p99", "µs", "low"),
    ("e2e_1000", "p999_us", "e2e @1,000/s p99.9", "µs", "low"),
    ("e2e_1000", "max_us", "e2e @1,000/s max", "µs", "low"),
    ("e2e_10000", "p50_us", "e2e 1 KiB @10,000/s p50", "µs", "low"),
    ("e2e_10000", "p99_us", "e2e @10,000/s p99", "µs", "low"),
    ("e2e_10000", "p999_us", "e2e @10,000/s p99.9", "µs", "low"),
    ("e2e_10000", "max_us", "e2e @10,000/s max", "µs", "low"),
    ("produce_1k", "broker_cpu_s_per_gb", "broker CPU per GB (produce 1 KiB)", "s/GB", "low"),
    ("fetch", "broker_cpu_s_per_gb", "broker CPU per GB (fetch)", "s/GB", "low"),
    ("memory", "peak_rss_mb_per_gb", "broker peak RSS per GB produced", "MB/GB", "low"),
    ("memory", "peak_rss_mb", "broker peak RSS", "MB", "low"),
]
PHYS = [
    ("loopback_gb_s", "loopback TCP, iperf3, 1 stream", "GB/s"),
    ("fio_1m_fdatasync_mb_s", "seq. write 1 MiB + fdatasync each (fio)", "MB/s"),
    ("fio_16k_fdatasync_mb_s", "seq. write 16 KiB + fdatasync each (fio)", "MB/s"),
    ("crc32c_16k_gb_s", "CRC-32C (crc32c crate), 16 KiB chunks, in cache", "GB/s"),
    ("crc32c_1k_gb_s", "CRC-32C, 1 KiB chunks, in cache", "GB/s"),
]


def fmt(v):
    if v is None:
        return "—"
    a = abs(v)
    if a >= 100_000:
        return f"{v / 1000:,.0f}k"
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(vals):
    vals = [v for v in vals if isinstance(v, (int, float))]
    if not vals:
        return "—", None
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med), med
    return f"{fmt(med)} [{fmt(min(vals))}–{fmt(max(vals))}]", med


def table(res):
    """Returns (header, rows) with strings, and the medians for the JSON summary."""
    systems = [s for s in SYSTEMS if s in res["meta"]["systems"]]
    # The two peer columns always (a missing peer shows "—"); RF3/RF1 when both ran.
    ratios = RATIOS[:2] + [r for r in RATIOS[2:] if r[0] in systems and r[1] in systems]
    head = ["workload", "unit"] + [HEADS[s] for s in systems] + [r[2] for r in ratios]
    rows, summary = [], []
    for w, field, label, unit, better in ROWS:
        per = res["workloads"].get(w, {})
        if not per:
            continue
        line = [label, unit + (" ↓" if better == "low" else "")]
        med = {}
        for s in systems:
            txt, m = cell([r.get(field) for r in per.get(s, [])])
            line.append(txt)
            med[s] = m
        if all(v is None for v in med.values()):
            continue
        for num, den, _ in ratios:
            a, b = med.get(num), med.get(den)
            line.append(f"{a / b:.2f}" if a is not None and b else "—")
        rows.append(line)
        summary.append({"workload": w, "field": field, "unit": unit, "better": better,
                        "median": med})
    rec = res.get("recovery")
    if rec and rec.get("runs"):
        first, later = rec["runs"][:1], rec["runs"][1:]
        for field, runs, label in (("serving_s", first, "1st restart after the fill"),
                                   ("serving_s", later, "later restarts"),
                                   ("listen_s", first, "1st restart: to listening")):
            if not runs:
                continue
            txt, m = cell([r.get(field) for r in runs])
            sub = (f"recovery, SIGKILL, {rec['bytes_on_disk'] / 1e9:,.1f} GB, "
                   f"{rec['files']} files: {label}")
            rows.append([sub, "s ↓", txt] + ["—"] * (len(systems) - 1) + ["—"] * len(ratios))
            summary.append({"workload": "recovery", "field": field, "runs": label,
                            "unit": "s", "median": {"samsa": m}})
    for key, label, unit in PHYS:
        p = res["physical"].get(key)
        if not p:
            continue
        txt = fmt(p["median"]) if p["n"] == 1 else \
            f"{fmt(p['median'])} [{fmt(p['min'])}–{fmt(p['max'])}]"
        rows.append([f"limit: {label}", unit, txt] + [""] * (len(systems) - 1)
                    + [""] * len(ratios))
    return head, rows, summary


def render(head, rows, md=False):
    if md:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "target/bench/results.json"
    with open(path) as f:
        res = json.load(f)
    head, rows, summary = table(res)
    m = res["meta"]
    mach = m.get("machine", {})
    title = (f"Samsa benchmarks, {m['date_utc']} UTC, {m['mode']} mode, median of {m['reps']} "
             f"[min–max]; {mach.get('cpus')} vCPU {mach.get('cpu', '?')}, "
             f"{mach.get('mem_gib')} GiB, Linux {mach.get('kernel')}")
    print(title)
    print(render(head, rows))
    res["table"] = summary
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    base = os.path.splitext(path)[0]
    with open(base + ".md", "w") as f:
        f.write(title + "\n\n" + render(head, rows, md=True) + "\n")
    plot.write_svg(res, base + ".svg")
    print(f"\nwrote {path}, {base}.md, {base}.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
