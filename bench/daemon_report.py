"""The report of bench/daemon_bench.py: its table (one row per metric, one column per
daemon, the ratio to upstream and the target), the daemon-independent anchors, the
machine it ran on, and its section of docs/BENCHMARKS.md."""

from __future__ import annotations

import math
import re
import sys

from benchkit.procstats import MiB, fmt_size, median
from benchkit.report import markers, write_section

UPSTREAM = "vineyardd"
TRELLIS = "trellis"
# Trellis with its arena in pre-faulted 2 MiB huge pages (`--huge_pages --reserve_memory`);
# needs a hugetlb pool, which the bench reserves for the run when it runs as root.
TRELLIS_HP = "trellis-hp"
TRELLIS_4K = "trellis-4k"
# the default daemon, its client processes writing through trellis.accel's builders
TRELLIS_ACCEL = "trellis-accel"
# the same, and the DataFrame writer builds its frame in the arena (zero-copy put)
TRELLIS_ZC = "trellis-zc"
TRELLIS_LABELS = (TRELLIS, TRELLIS_4K, TRELLIS_HP, TRELLIS_ACCEL, TRELLIS_ZC)
# the anchor with Ray's object store (`--ray`): bench.anchors["ray"]
RAY = "ray"
# issue 14's handoff targets, on the handoff as the issue defines it — writer put + reader
# get, ms (the reader's touch, a sum over every column, is in the table's total beside it):
# each is (description, check(put_get_ms, ray_put_get_ms) -> True/False/None)
HANDOFF_TARGETS = {
    TRELLIS_ACCEL: [
        ("≤ 20 ms", lambda t, r: t <= 20.0),
        ("≤ Ray's", lambda t, r: None if r is None else t <= r),
    ],
    TRELLIS_ZC: [("≤ 5 ms", lambda t, r: t <= 5.0)],
}
# issue 14's large-put target: a put of this size at >= this share of a single-threaded
# memcpy of the same bytes (large_put_table says which memcpy each put is compared with)
LARGE_TARGET_SIZE = 1 << 30
LARGE_TARGET_RATIO = 0.9
NOISE_WARN_PCT = 5.0  # warn when other processes used more than this share of all CPUs

# Message sizes of a real exists round trip (captured from 0.24.2, see
# Tests/Fixtures/captured/*.jsonl): request body 50 B, reply body 37 B,
# each preceded by an 8-byte length.
EXISTS_REQ_BODY, EXISTS_REP_BODY = 50, 37

MARK_BEGIN, MARK_END = markers("daemon_bench", "bench/daemon_bench.py")


def summarize_handoff(rounds):
    med = lambda key: median([key(r) for r in rounds])  # noqa: E731
    return {
        "put_s": med(lambda r: r["writer"]["put_s"]),
        "get_s": med(lambda r: r["reader"]["get_s"]),
        "touch_s": med(lambda r: r["reader"]["touch_s"]),
        "total_s": med(lambda r: r["total_s"]),
        "total_s_first": rounds[0]["total_s"],
        "wall_s": med(lambda r: r["wall_s"]),
        "writer_exit_s": med(lambda r: r["writer"]["exit_s"]),
        "writer_minflt": med(lambda r: r["writer"]["minflt"]),
        "reader_get_minflt": med(lambda r: r["reader"]["get_minflt"]),
        "reader_touch_minflt": med(lambda r: r["reader"]["touch_minflt"]),
        "nbytes": rounds[0]["writer"]["nbytes"],
        "put_daemon_cpu_ms": med(lambda r: r["writer"].get("daemon_cpu_ms", math.nan)),
        "get_daemon_cpu_ms": med(lambda r: r["reader"].get("daemon_cpu_ms", math.nan)),
    }

# --------------------------------------------------------------------------- report


def _get(d, *path):
    for p in path:
        if d is None:
            return None
        d = d.get(p) if isinstance(d, dict) else None
    return d


class Row:
    def __init__(self, name, path, fmt, target=None, check=None, scale=1.0):
        self.name, self.path, self.fmt, self.target, self.check, self.scale = name, path, fmt, target, check, scale

    def value(self, res):
        v = self.path(res) if callable(self.path) else _get(res, *self.path)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return v * self.scale


def build_rows(o):
    rows = []
    # a check returns True/False, or None when it cannot be decided (value or upstream missing)
    le = lambda k: lambda t, u: None if t is None or not u else t / u <= k  # noqa: E731
    ge = lambda k: lambda t, u: None if t is None or not u else t / u >= k  # noqa: E731
    at_most = lambda k: lambda t, u: None if t is None else t <= k  # noqa: E731
    at_least = lambda k: lambda t, u: None if t is None else t >= k  # noqa: E731
    for s in o.small_sizes:
        k = str(s)
        n = fmt_size(s)
        rows += [
            Row(f"put+get {n}: p50 (µs)", ("pairs", k, "one", "p50_us"), "{:.1f}"),
            Row(f"put+get {n}: p99 (µs)", ("pairs", k, "one", "p99_us"), "{:.1f}"),
            Row(f"put+get {n}: pairs/s, 1 client", ("pairs", k, "one", "pairs_per_s"), "{:,.0f}", "≥ 1.3× upstream", ge(1.3)),
            Row(f"put+get {n}: daemon CPU / pair (µs)", ("pairs", k, "one", "daemon_cpu_us_per_pair"), "{:.1f}"),
            Row(f"put+get {n}: p50, one CPU¹ (µs)", ("pairs", k, "one_cpu", "p50_us"), "{:.1f}"),
            Row(f"put+get {n}: pairs/s, 1 client, one CPU¹", ("pairs", k, "one_cpu", "pairs_per_s"), "{:,.0f}", "≥ 1.3× upstream", ge(1.3)),
            Row(f"put+get {n}: daemon CPU / pair, one CPU¹ (µs)", ("pairs", k, "one_cpu", "daemon_cpu_us_per_pair"), "{:.1f}"),
            Row(f"put+get {n}: pairs/s, 2 clients (sum)", ("pairs", k, "two_agg_per_s"), "{:,.0f}"),
            Row(
                f"put+get {n}: 2 clients / 1 client",
                ("pairs", k, "scaling"),
                "{:.2f}×",
                "≥ 1.8×",
                at_least(1.8),
            ),
        ]
    for key, suffix in (("trivial", ""), ("trivial_cpu", ", one CPU¹")):
        rows += [
            Row(f"exists: daemon CPU / request{suffix} (µs)", (key, "exists", "daemon_cpu_us"), "{:.1f}", "≤ 0.25× upstream", le(0.25)),
            Row(f"get_name: daemon CPU / request{suffix} (µs)", (key, "get_name", "daemon_cpu_us"), "{:.1f}", "≤ 0.25× upstream", le(0.25)),
            Row(f"exists: round trip{suffix} (µs)", (key, "exists", "wall_us"), "{:.1f}"),
        ]
    df_name = f"DataFrame {o.df_rows:,}×{o.df_cols}"
    rows += [
        Row(f"{df_name}: writer put (ms)", ("df", "put_s"), "{:.1f}", scale=1e3),
        Row(f"{df_name}: reader get (ms)", ("df", "get_s"), "{:.1f}", scale=1e3),
        Row(f"{df_name}: reader touch, all columns (ms)", ("df", "touch_s"), "{:.1f}", scale=1e3),
        Row(f"{df_name}: handoff total (ms)", ("df", "total_s"), "{:.1f}", "≤ 0.5× upstream", le(0.5), scale=1e3),
        Row(f"{df_name}: handoff total, 1st round (ms)", ("df", "total_s_first"), "{:.1f}", scale=1e3),
        Row(f"{df_name}: daemon CPU during writer put (ms)", ("df", "put_daemon_cpu_ms"), "{:.1f}"),
        Row(f"{df_name}: daemon CPU during reader get (ms)", ("df", "get_daemon_cpu_ms"), "{:.1f}"),
        Row(f"{df_name}: writer minor faults in put", ("df", "writer_minflt"), "{:,.0f}"),
        Row(f"{df_name}: reader minor faults get+touch", lambda r: _sum(_get(r, "df", "reader_get_minflt"), _get(r, "df", "reader_touch_minflt")), "{:,.0f}"),
    ]
    for s in o.large_sizes:
        k, n = str(s), fmt_size(s)
        rows += [
            Row(f"put {n}: GB/s, 1st put (fresh mapping)", ("large", k, "put_gbps_first"), "{:.2f}"),
            Row(f"put {n}: GB/s, repeat puts", ("large", k, "put_gbps_warm"), "{:.2f}"),
        ]
    for s in o.large_sizes:
        k, n = str(s), fmt_size(s)
        rows.append(Row(f"get {n}: latency (µs)", ("large", k, "get_us_median"), "{:.0f}", "≤ upstream", le(1.0)))
    if len(o.large_sizes) > 1:
        lo, hi = str(min(o.large_sizes)), str(max(o.large_sizes))
        rows.append(
            Row(
                f"get {fmt_size(max(o.large_sizes))} / get {fmt_size(min(o.large_sizes))}",
                lambda r: _div(_get(r, "large", hi, "get_us_median"), _get(r, "large", lo, "get_us_median")),
                "{:.2f}×",
                "≤ 1.5×",
                at_most(1.5),
            )
        )
    rows += [
        Row("RSS after start (MiB)", ("rss_start", "VmRSS"), "{:.1f}", "≤ 30 MiB", at_most(30), scale=1 / 1024),
        Row("RSS at end, all deleted (MiB)", ("rss_end", "VmRSS"), "{:.1f}", "≤ 30 MiB", at_most(30), scale=1 / 1024),
        Row("peak RSS during run (MiB)", ("rss_end", "VmHWM"), "{:.1f}", scale=1 / 1024),
    ]
    return rows


def _sum(*xs):
    return None if any(x is None for x in xs) else sum(xs)


def _div(a, b):
    return None if a is None or not b else a / b


def handoff_table(bench) -> str:
    """The seed DataFrame handoff side by side: every daemon, Ray's object store, the
    pickle handoff and a memcpy of the same bytes (issue 14's comparison), in ms."""
    a = bench.anchors
    ray = a.get(RAY) if _get(a, RAY, "rounds") else None
    ray_total = ray["total_s"] * 1e3 if ray else None
    ray_put_get = (ray["put_s"] + ray["get_s"]) * 1e3 if ray else None
    entries = [(f"{l} (upstream)" if l == UPSTREAM else l, l, bench.res[l]["df"]) for l in bench.res if "df" in bench.res[l]]
    if ray:
        entries.append((f"Ray {ray.get('version', '')} object store: `ray.put` / `ray.get`".replace("  ", " "), RAY, ray))
    if "pickle" in a:
        entries.append(("pickle through a /tmp file", "pickle", a["pickle"]))
    if not entries:
        return ""
    rounds = len(entries[0][2].get("rounds", [])) or "?"
    ms = lambda v: "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 1e3:.1f}"  # noqa: E731
    lines = [
        f"| DataFrame handoff, setup (ms, median of {rounds}) | writer put | reader get | put + get "
        "| put + get / Ray's | reader touch | total | writer start → reader end | total / Ray's | target (put + get) "
        "| met? |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|:---:|",
    ]
    for name, key, h in entries:
        total = h["total_s"] * 1e3
        put_get = (h["put_s"] + h["get_s"]) * 1e3
        targets = HANDOFF_TARGETS.get(key, [])
        verdicts = [check(put_get, ray_put_get) for _, check in targets]
        lines.append(
            f"| {name} | {ms(h['put_s'])} | {ms(h['get_s'])} | {put_get:.1f} "
            f"| {f'{put_get / ray_put_get:.2f}' if ray_put_get else '—'} | {ms(h['touch_s'])} | {total:.1f} "
            f"| {ms(h['wall_s'])} | {f'{total / ray_total:.2f}' if ray_total else '—'} "
            f"| {', '.join(t for t, _ in targets)} "
            f"| {' '.join({True: '✅', False: '❌', None: '·'}[v] for v in verdicts)} |"
        )
    if "memcpy" in a:
        m = a["memcpy"]
        for what, v in (("warm destination", m["warm_s"]), (f"fresh destination, {m['fresh_minflt']:,} page faults", m["fresh_s"])):
            lines.append(f"| memcpy of the same bytes (`np.copyto`), {what} | | | {v * 1e3:.1f} "
                         f"| {f'{v * 1e3 / ray_put_get:.2f}' if ray_put_get else '—'} | | | | | | |")
    if not ray:
        why = _get(a, RAY, "skipped") or ("failed, see the problems below" if RAY in bench.errors else "not run (`--ray`)")
        lines.append(f"\nRay's object store: {why}.")
    return "\n".join(lines) + "\n"


def large_put_table(bench) -> str:
    """Large puts side by side: every writer mode, each daemon, and a single-threaded
    memcpy of the same bytes, with issue 14's target. Each put is compared with a memcpy
    whose destination is in the state the put's is: a first put into an arena that is not
    reserved lands in pages never touched (fresh memory: the anchor's first round); a
    repeat put, or any put into a reserved arena, in populated pages (a written buffer,
    the memcpy timed in the writer process in the same round)."""
    a = bench.anchors.get("memcpy_large") or {}
    entries = [(f"{l} (upstream)" if l == UPSTREAM else l, l, bench.res[l]["large"]) for l in bench.res if "large" in bench.res[l]]
    if not entries:
        return ""
    sizes = sorted({int(k) for _, _, r in entries for k in r})
    x_ = lambda v: "—" if v is None else f"{v:.2f}×"  # noqa: E731
    gb = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    ms = lambda v: "—" if v is None else f"{v:,.0f}"  # noqa: E731
    lines = [
        "| large put | size | 1st put GB/s | 1st put / memcpy, fresh destination | 1st put / memcpy, written, same round "
        "| repeat puts GB/s (median) | repeat puts / memcpy, written, same rounds | writer faults, 1st / repeat "
        "| writer kernel ms, 1st / repeat | target | met? (1st, repeat) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|:---:|",
    ]
    for size in sizes:
        k = str(size)
        m = a.get(k) or {}
        fresh = m.get("fresh_gbps_first")
        for name, label, r in entries:
            x = r.get(k)
            if x is None:
                continue
            reserved = "--reserve_memory" in bench.res[label].get("argv", [])
            first, rep_ = x.get("put_gbps_first"), x.get("put_gbps_warm")
            first_fresh = first / fresh if first is not None and fresh else None
            r0 = x["rounds"][0]
            first_paired = r0["memcpy_s"] / r0["put_s"] if "memcpy_s" in r0 else None
            paired = x.get("put_vs_memcpy_warm")
            met, tgt = "", ""
            if size == LARGE_TARGET_SIZE and label != UPSTREAM:
                tgt = f"≥ {LARGE_TARGET_RATIO}× memcpy" + (" (written: reserved arena)" if reserved else "")
                one = first_paired if reserved else first_fresh
                verdicts = [None if v is None else v >= LARGE_TARGET_RATIO for v in (one, paired)]
                met = " ".join({True: "✅", False: "❌", None: "·"}[v] for v in verdicts)
            faults = f"{x['rounds'][0]['put_minflt']:,.0f} / {ms(x.get('put_minflt_warm'))}"
            kernel = f"{ms(x.get('put_sys_ms_first'))} / {ms(x.get('put_sys_ms_warm'))}"
            lines.append(f"| {name} | {fmt_size(size)} | {gb(first)} | {x_(first_fresh)} | {x_(first_paired)} | {gb(rep_)} "
                         f"| {x_(paired)} | {faults} | {kernel} | {tgt} | {met} |")
        if m:
            lines.append(f"| memcpy (`np.copyto`, one thread) into fresh memory: 1st round of a new process "
                         f"(later rounds: {m['fresh_gbps']:.2f} GB/s, kernel {ms(m.get('fresh_sys_ms'))} ms) "
                         f"| {fmt_size(size)} | {gb(fresh)} | 1.00× | | | | {m['fresh_minflt']:,.0f} "
                         f"| {ms(m.get('fresh_sys_ms_first'))} | | |")
            lines.append(f"| memcpy (`np.copyto`, one thread) into written memory (anchor process) | {fmt_size(size)} "
                         f"| | | | {m['warm_gbps']:.2f} | | | | | |")
    return "\n".join(lines) + "\n"


def render(bench, info: dict, cmdline: str, note: str = "") -> str:
    o = bench.o
    labels = list(bench.res)
    ours = [l for l in labels if l in TRELLIS_LABELS]
    has_upstream = UPSTREAM in labels
    rows = build_rows(o)
    head = ["metric"] + [f"{l} (upstream)" if l == UPSTREAM else l for l in labels]
    head += [f"{l} / upstream" for l in ours if has_upstream] + ["target", "met? (" + ", ".join(ours) + ")"]
    ratio_cols = len(ours) if has_upstream else 0
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(labels) + ratio_cols) + "---|:---:|"]
    for row in rows:
        vals = {l: row.value(bench.res[l]) for l in labels}
        if all(v is None for v in vals.values()):
            continue  # a section this run left out (--only)
        cells = [row.name]
        for l in labels:
            cells.append("—" if vals[l] is None else row.fmt.format(vals[l]))
        u = vals.get(UPSTREAM)
        if has_upstream:
            for l in ours:
                t = vals.get(l)
                cells.append(f"{t / u:.2f}" if t is not None and u else "—")
        cells.append(row.target or "")
        verdicts = [row.check(vals.get(l), u) if row.check else None for l in ours]
        cells.append(" ".join({True: "✅", False: "❌", None: "·"}[v] for v in verdicts) if row.check else "")
        lines.append("| " + " | ".join(cells) + " |")

    a = bench.anchors
    anchor_lines = ["| anchor (no daemon) | value |", "|---|---:|"]
    for base, server in (("echo", "Python echo server"), ("native_echo", "C echo server (bench/echo_server.c)")):
        for key, suffix in ((base, ""), (base + "_cpu", ", one CPU¹")):
            if key in a:
                e = a[key]
                anchor_lines += [
                    f"| UNIX socket round trip, {server}, {EXISTS_REQ_BODY + 8} B / {EXISTS_REP_BODY + 8} B{suffix} (µs) | {e['wall_us']:.1f} |",
                    f"| {server}: CPU / request{suffix} (µs) | {e['daemon_cpu_us']:.1f} |",
                ]
    if "memcpy" in a:
        m = a["memcpy"]
        gb = m["nbytes"] / 1e9
        anchor_lines += [
            f"| memcpy {m['nbytes'] / MiB:.1f} MiB (np.copyto), warm destination (ms) | {m['warm_s'] * 1e3:.1f} ({gb / m['warm_s']:.1f} GB/s) |",
            f"| memcpy into a fresh destination, incl. {m['fresh_minflt']:,} page faults (ms) | {m['fresh_s'] * 1e3:.1f} |",
        ]
    if "memfd" in a:
        m = a["memfd"]
        anchor_lines += [
            f"| memcpy into a new memfd mapping, fresh shmem pages, {m['write_fresh_minflt']:,} faults (ms) | {m['write_fresh_s'] * 1e3:.1f} |",
            f"| memcpy into a new mapping of populated memfd pages, {m['write_again_minflt']:,} faults (ms) | {m['write_again_s'] * 1e3:.1f} |",
            f"| read (sum) through a new memfd mapping, {m['read_minflt']:,} faults (ms) | {m['read_s'] * 1e3:.1f} |",
            f"| memfd handoff floor: populated write + read (ms) | {(m['write_again_s'] + m['read_s']) * 1e3:.1f} |",
        ]
    if "pickle" in a:
        p = a["pickle"]
        anchor_lines += [
            f"| pickle handoff: writer pickle.dump to /tmp file (ms) | {p['put_s'] * 1e3:.1f} |",
            f"| pickle handoff: reader pickle.load (ms) | {p['get_s'] * 1e3:.1f} |",
            f"| pickle handoff: reader touch (ms) | {p['touch_s'] * 1e3:.1f} |",
            f"| pickle handoff: total (ms) | {p['total_s'] * 1e3:.1f} |",
        ]

    mach = (
        f"- machine: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), "
        f"{info['memory']} RAM, Linux {info['kernel']}\n"
        f"- date: {info['date']}; repo commit {info.get('commit', '?')}; Python {info['python']}; "
        f"{info.get('packages', '')}\n"
    )
    for l in labels:
        argv = " ".join(bench.res[l]["argv"])
        mach += f"- {l}: `{re.sub(r'/tmp/tb[^/ ]*', '$TMP', argv)}`\n"
        if l in TRELLIS_LABELS and "/debug/" in bench.res[l]["binary"]:
            mach += "  - **debug build of trellis: numbers are not representative**\n"
    ray = a.get(RAY) or {}
    if ray.get("argv"):
        argv = re.sub(r"/tmp/tb[^/ ]*", "$TMP", " ".join(["ray"] + ray["argv"][1:]))
        mach += (f"- Ray {ray.get('version', '?')} (`.venv-ray`, `bench/setup_ray.sh`): `{argv}`, "
                 "in a private network namespace (loopback only)\n")
    mach += f"- command: `{cmdline}`{note}\n"
    if bench.noise:
        worst_what, worst = max(bench.noise.items(), key=lambda kv: kv[1]["foreign_pct"] + kv[1]["steal_pct"])
        mach += (
            f"- background load: other processes used at most {worst['foreign_pct']:.1f}% of all CPUs "
            f"(hypervisor steal {worst['steal_pct']:.1f}%) during any section (worst: {worst_what})\n"
        )
    errs = [f"- {l}: {e}" for l, es in bench.errors.items() for e in es]
    for what, n in bench.noise.items():
        if n["foreign_pct"] > NOISE_WARN_PCT or n["steal_pct"] > NOISE_WARN_PCT:
            errs.append(
                f"- noisy machine during {what}: other processes {n['foreign_pct']:.0f}%, "
                f"steal {n['steal_pct']:.0f}% of all CPUs; treat these figures with care"
            )
    for l in labels:
        mu = bench.res[l].get("memory_usage_end")
        if mu:
            errs.append(f"- {l}: memory_usage at end is {mu} bytes (objects left behind)")
    foot = (
        f"¹ \"one CPU\": the client process and every daemon thread pinned to CPU {o.pin_cpu} "
        "(no cross-CPU wake-ups); all other rows run unpinned.\n"
    )
    tables = [t for t in (handoff_table(bench), large_put_table(bench)) if t]
    out = "\n".join(lines) + "\n\n" + foot + "\n" + "\n".join(tables) + "\n" + "\n".join(anchor_lines) + "\n\n" + mach
    if errs:
        out += "\nProblems during the run:\n\n" + "\n".join(errs) + "\n"
    return out

SECTION_NOTES = """How to read it: every number comes from one run of `bench/daemon_bench.py` in which all
listed daemons were started side by side (each `--size {arena} --meta local --norpc`, UNIX
socket only) and driven with the pinned upstream Python client from separate worker
processes. Latencies are per put+get pair (one `client.put(arr)` plus one `client.get(id)`);
"2 clients" runs two worker processes at once and sums their pairs/s. Daemon CPU is the
daemon's on-CPU time (sum of `/proc/PID/task/*/schedstat`) over {requests:,} requests
divided by {requests:,}. The DataFrame handoff total is writer `put(df, name="seed", persist=True)` +
reader `get(name="seed")` + reader sum over every column, each side in its own fresh
process (connected and imported before timing); the reader starts after the writer process
has exited, as in a pipeline (median of {df_rounds} rounds; deleted between rounds). The
handoff table sets it beside Ray's object store when the run had `--ray`: a Ray head node
started for the run (`--num-cpus 2 --object-store-memory` the daemons' arena size, no
dashboard, in a private network namespace with only loopback), the writer timing
`ray.put(df)` plus pickling the ObjectRef, the reader `ray.get(ref)` plus the same sum;
the writer owns the object under Ray's ownership model, so it stays alive until the reader
is done (Ray's "writer start → reader end" has no writer exit in it, the daemons' has).
Large puts copy a pre-faulted source array; "1st put" is the first put of that size in the
worker process, "repeat puts" the median of the rest; get is `client.get(id)` (zero-copy),
median of all gets. The large-put table sets each writer mode beside a single-threaded
memcpy (`np.copyto`) of the same bytes from the same kind of source: into fresh memory
(a new allocation: page faults and the kernel zeroing the pages, as the first put into
arena pages never touched) and into memory already written (as a repeat put into the
pages a deleted object left). trellis-accel writes through `trellis.accel`'s builders;
trellis-zc allocates and fills each source array in the arena (numpy through
`trellis._zerocopy`), so its put only seals it in place. The fresh-memory anchor is the
first round of a new process (its first allocation of the size, like a daemon's first put
of it, 3 s after its source is written so that it does not recycle memory just freed); repeat puts are compared with a memcpy of the same bytes into a written buffer
timed in the writer process right after each put (the same machine load), the median of
the per-round ratios. Fresh memory's cost is the machine's: on a VM whose balloon reports
free pages to the host (virtio-balloon free page reporting), memory freed a few seconds
earlier costs a host fault again on its next first touch (~1.3 s of kernel time per GiB
here, against ~0.1 s for pages just recycled), so 1st-put and fresh-memcpy figures vary
from run to run; a reserved arena (`--reserve-memory`) takes that cost at daemon start. Sections run in the order of the table; the anchors run last.
"""


def write_doc(path, body):
    write_section(path, MARK_BEGIN, MARK_END, f"## Daemon benchmark: Trellis vs upstream vineyardd\n\n{body}")


def publish(bench, info, cmdline, note=""):
    """Prints the report and, with --write, rewrites the section of the markdown file."""
    o = bench.o
    body = render(bench, info, cmdline, note)
    print(body)
    if o.write:
        notes = SECTION_NOTES.format(arena=o.arena, requests=o.requests, df_rounds=o.df_rounds)
        write_doc(o.write, notes + "\n" + body)
        print(f"wrote {o.write}", file=sys.stderr)
