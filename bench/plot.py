"""bench/plot.py: draws results.json as a hand-written SVG (no plotting library): throughput
(MB/s, linear) and end-to-end latency percentiles (µs, log scale) per system, bars at the median
with min–max whiskers. It only writes the SVG file it is given; it never runs anything.
"""
import math
import statistics

COLORS = {"samsa": "#1f77b4", "samsa-none": "#6baed6", "samsa-rf3": "#2ca02c",
          "tansu": "#ff7f0e", "mock": "#7f7f7f"}
NAMES = {"samsa": "Samsa (fsync)", "samsa-none": "Samsa (none)",
         "samsa-rf3": "Samsa 3 nodes RF3 (fsync)", "tansu": "Tansu (memory)",
         "mock": "librdkafka mock (ceiling)"}
THROUGHPUT = [("produce_1k", "produce 1 KiB"), ("produce_100", "produce 100 B"),
              ("produce_1k_8p", "produce 1 KiB ×8 part."), ("fetch", "fetch")]
LATENCY = [(w, f, f"{lbl} {p}") for w, lbl in (("e2e_1000", "1k/s"), ("e2e_10000", "10k/s"))
           for f, p in (("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9"),
                        ("max_us", "max"))]
W, PANEL_H, PAD_L, PAD_T = 960, 300, 70, 40


def _stats(res, w, f, s):
    vals = [r.get(f) for r in res["workloads"].get(w, {}).get(s, [])]
    vals = [v for v in vals if isinstance(v, (int, float)) and v > 0]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def _panel(out, res, systems, groups, field, y0, title, unit, log):
    data = [[_stats(res, w, f if field is None else field, s) for s in systems]
            for w, f, _ in groups]
    vals = [v for g in data for st in g if st for v in st]
    if not vals:
        return
    hi = max(vals)
    lo = min(vals)
    if log:
        lo_e, hi_e = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        hi_e = max(hi_e, lo_e + 1)
        ymap = lambda v: (math.log10(v) - lo_e) / (hi_e - lo_e)  # noqa: E731
        ticks = [10 ** e for e in range(lo_e, hi_e + 1)]
    else:
        step = 10 ** math.floor(math.log10(hi))
        top = math.ceil(hi / step) * step
        ymap = lambda v: v / top  # noqa: E731
        ticks = [top * i / 4 for i in range(5)]
    ph = PANEL_H - 70
    pw = W - PAD_L - 20
    base = y0 + PAD_T + ph
    out.append(f'<text x="{W / 2}" y="{y0 + 22}" text-anchor="middle" font-size="15" '
               f'font-weight="bold">{title}</text>')
    for t in ticks:
        y = base - ymap(t) * ph
        out.append(f'<line x1="{PAD_L}" x2="{W - 20}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#ddd"/>')
        lbl = f"{t:,.0f}" if t >= 1 else f"{t:g}"
        out.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" '
                   f'font-size="11">{lbl}</text>')
    out.append(f'<text x="14" y="{y0 + PAD_T + ph / 2}" font-size="12" '
               f'transform="rotate(-90 14 {y0 + PAD_T + ph / 2})" text-anchor="middle">'
               f'{unit}</text>')
    gw = pw / len(groups)
    bw = gw * 0.8 / max(1, len(systems))
    for gi, (g, (_w, _f, label)) in enumerate(zip(data, groups)):
        gx = PAD_L + gi * gw + gw * 0.1
        for si, st in enumerate(g):
            if not st:
                continue
            med, mn, mx = st
            x = gx + si * bw
            y = base - ymap(med) * ph
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" '
                       f'height="{base - y:.1f}" fill="{COLORS[systems[si]]}">'
                       f'<title>{NAMES[systems[si]]}: {med:,.1f}</title></rect>')
            cx = x + (bw - 2) / 2
            y1, y2 = base - ymap(mn) * ph, base - ymap(mx) * ph
            out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y1:.1f}" y2="{y2:.1f}" '
                       f'stroke="black"/>')
        out.append(f'<text x="{gx + gw * 0.4:.1f}" y="{base + 16}" text-anchor="middle" '
                   f'font-size="11">{label}</text>')


def write_svg(res, path):
    systems = [s for s in COLORS if s in res["meta"]["systems"]]
    h = 2 * PANEL_H + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" '
           f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>']
    tg = [(w, "mb_s", lbl) for w, lbl in THROUGHPUT]
    _panel(out, res, systems, tg, "mb_s", 0, "Throughput (median, min–max)", "MB/s", False)
    _panel(out, res, systems, LATENCY, None, PANEL_H, "End-to-end latency, 1 KiB (log scale)",
           "µs", True)
    for i, s in enumerate(systems):
        x = PAD_L + i * 220
        out.append(f'<rect x="{x}" y="{h - 30}" width="14" height="14" fill="{COLORS[s]}"/>')
        out.append(f'<text x="{x + 20}" y="{h - 18}" font-size="12">{NAMES[s]}</text>')
    m = res["meta"]
    out.append(f'<text x="{W - 10}" y="{h - 4}" text-anchor="end" font-size="10" '
               f'fill="#666">{m["date_utc"]} UTC, {m["mode"]}, {m["reps"]} reps</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
