"""The report: the Markdown tables of summary.md (also printed), results.csv, and the
header that says what was measured where. The chart is in chart.py."""

import csv
import os
import platform
import re
import statistics

from .allocators import PACKAGES, package_version
from .machine import busy, machine_info, tool_version
from .redis import REDIS_DIR
from .runner import fixed_programs
from .stats import Cell, ratio, summarize
from .workloads import REDIS_CLIENTS, REDIS_REQUESTS, REDIS_TESTS


def fixed_cost_table(runs, allocs, base):
    rows = []
    for key, desc, _ in fixed_programs():
        row = [f"`{key}` ({desc})"]
        cells = {a: Cell([r for r in runs if r.workload == key and r.allocator == a]) for a in allocs}
        b = cells[base]
        for a in allocs:
            c = cells[a]
            if not c.runs:
                row.append("—")
            elif not c.good:
                row.append(c.fail_text())
            elif a == base:
                row.append(f"{c.med('maxrss_kb'):.0f} KiB")
            elif b.good:
                row.append(f"{c.med('maxrss_kb') - b.med('maxrss_kb'):+.0f}")
            else:
                row.append(f"{c.med('maxrss_kb'):.0f} KiB")
        rows.append(row)
    return (f"### Fixed cost (KiB over {base})\n\n" +
            md_table(["program"] + allocs, rows) +
            f"\n\nPeak RSS (ru_maxrss from wait4) of each program, median of the rounds: "
            f"{base} in KiB, the others in KiB more (or less) than {base}.")


def fmt_time(c, r):
    if not c.runs:
        return "—"
    if not c.good:
        return c.fail_text()
    rs = f" ×{r:.2f}" if r is not None else ""
    return f"{c.med('score'):.3f}s{rs} [{c.lo('score'):.3f}–{c.hi('score'):.3f}]"


def fmt_mib(kb):
    mib = kb / 1024
    return f"{mib:.0f}" if mib >= 100 else f"{mib:.1f}"


def fmt_rss(c, r):
    if not c.runs:
        return "—"
    if not c.good:
        return c.fail_text()
    rs = f" ×{r:.2f}" if r is not None else ""
    return f"{fmt_mib(c.med('maxrss_kb'))}M{rs} [{fmt_mib(c.lo('maxrss_kb'))}–{fmt_mib(c.hi('maxrss_kb'))}]"


def fmt_count(n):
    """A count in at most 5 characters: 912, 9120, 91.2k, 912k, 9.12M."""
    if n < 10000:
        return f"{n:.0f}"
    if n < 100000:
        return f"{n / 1e3:.1f}k"
    if n < 1000000:
        return f"{n / 1e3:.0f}k"
    return f"{n / 1e6:.2f}M"


def fmt_faults(c, r):
    if not c.runs:
        return "—"
    if not c.good:
        return c.fail_text()
    rs = f" ×{r:.2f}" if r is not None else ""
    return (f"{fmt_count(c.med('minflt'))}{rs} "
            f"[{fmt_count(c.lo('minflt'))}–{fmt_count(c.hi('minflt'))}]")


def fmt_sys(c):
    if not c.runs:
        return "—"
    if not c.good:
        return c.fail_text()
    return f"{c.med('sys'):.3f}s [{c.lo('sys'):.3f}–{c.hi('sys'):.3f}]"


def fmt_calls(r):
    if r is None:
        return "—"
    if r.status != "ok":
        return f"FAIL: {r.status}"
    return f"{fmt_count(r.madvise)} / {fmt_count(r.munmap)}"


def md_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    def line(cols):
        return "| " + " | ".join(str(c).ljust(wd) for c, wd in zip(cols, widths)) + " |"
    out = [line(header), "|" + "|".join("-" * (wd + 2) for wd in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def report_tables(cells, counts, counter_note, workloads, allocs, base):
    """The Markdown tables of summary.md and the terminal, and the geometric means.
    counts: {(workload, allocator): Run of the syscall-counting pass}; counter_note: how
    they were counted, or why they were not."""
    parts = []
    hdr = ["workload"] + allocs
    rows = [[w.label()] + [fmt_time(cells[(w.name, a)], ratio(cells, w.name, a, base, "score"))
                           for a in allocs] for w in workloads]
    timed = f"### Time: median ×{base} [min–max]\n\n" + md_table(hdr, rows)
    if any(w.score == "cpu" for w in workloads):
        timed += ("\n\nWall-clock seconds, except the workloads marked (cpu): those are scored "
                  "by CPU time, user + system seconds of the process from wait4(2) rusage "
                  "(fixed work, so the ratio is the inverse of operations per CPU second).")
    parts.append(timed)
    rows = [[w.name] + [fmt_rss(cells[(w.name, a)], ratio(cells, w.name, a, base, "maxrss_kb"))
                        for a in allocs] for w in workloads]
    parts.append(f"### Peak RSS (MiB): median ×{base} [min–max]\n\n" + md_table(hdr, rows))

    # what the kernel sees: page faults, system time, the calls that hand memory back
    rows = [[w.name] + [fmt_faults(cells[(w.name, a)], ratio(cells, w.name, a, base, "minflt"))
                        for a in allocs] for w in workloads]
    parts.append(f"### Minor page faults: median ×{base} [min–max]\n\n" + md_table(hdr, rows) +
                 "\n\nru_minflt from wait4(2) of the timed runs: pages the process touched "
                 "for the first time, or again after the allocator gave them back "
                 "(madvise(MADV_DONTNEED), munmap). k = thousand, M = million.")
    rows = [[w.name] + [fmt_sys(cells[(w.name, a)]) for a in allocs] for w in workloads]
    parts.append("### System time: median [min–max]\n\n" + md_table(hdr, rows) +
                 "\n\nru_stime from wait4(2) of the timed runs: kernel time on behalf of the "
                 "process (page faults, mmap, madvise, munmap, futex waits, thread start).")
    rows = [[w.name] + [fmt_calls(counts.get((w.name, a))) for a in allocs]
            for w in workloads]
    if counts:
        parts.append("### madvise / munmap calls (one counting run each)\n\n" +
                     md_table(hdr, rows) +
                     f"\n\nCounted by {counter_note}, in a separate un-timed pass after the "
                     "timed rounds (one run per workload and allocator, so one run's counts, "
                     "not a median). Every call of the program and its threads, the C "
                     "library's included: the dynamic loader's few munmap calls at start-up, "
                     "and glibc's madvise(MADV_DONTNEED) of the stack of each exiting thread "
                     "(so a workload that starts N threads shows about N madvise calls under "
                     "every allocator). redis is not counted (its server runs beside the "
                     "client, outside the counting tool).")
    else:
        parts.append(f"### madvise / munmap calls\n\nNot counted: {counter_note}.")

    geo = summarize(cells, workloads, allocs, base)
    rows = []
    for a in allocs:
        gt, gm, n, fails, gu, gf = geo[a]
        rows.append([a,
                     f"{gt:.3f}" if gt else "—",
                     f"{gm:.3f}" if gm else "—",
                     f"{gu:.3f}" if gu else "—",
                     f"{gf:.3f}" if gf else "—",
                     str(n), str(fails)])
    parts.append(f"### Geometric mean of the ratios to {base} (lower is better)\n\n" +
                 md_table(["allocator", "time ×" + base, "peak RSS ×" + base,
                           "CPU time ×" + base, "minor faults ×" + base, "workloads", "FAIL"],
                          rows) +
                 "\n\nTime is the score of each workload (wall time, or CPU time where marked "
                 "(cpu)). CPU time is user + system time of the process and its children "
                 "(median; for redis, of the server); it is less disturbed than wall time by "
                 "other load on the machine, but it counts spinning threads as busy.")

    # metrics the programs report themselves (final RSS after freeing, ...)
    mrows = []
    for w in workloads:
        keys = []
        for a in allocs:
            for r in cells[(w.name, a)].ok:
                for k in r.metrics:
                    if k not in keys:
                        keys.append(k)
        for k in keys:
            row = [w.name, k]
            for a in allocs:
                c = cells[(w.name, a)]
                vals = [r.metrics[k] for r in c.ok if k in r.metrics]
                if not c.good:
                    row.append("FAIL")
                elif vals:
                    v = statistics.median(vals)
                    row.append(f"{fmt_mib(v)}M" if k.endswith("_kb") else f"{v:g}")
                else:
                    row.append("—")
            mrows.append(row)
    if mrows:
        parts.append("### Reported by the programs themselves (median; `_kb` values in MiB)\n\n" +
                     md_table(["workload", "metric"] + allocs, mrows))
    return "\n\n".join(parts), geo


CSV_COLUMNS = ["round", "seq", "workload", "allocator", "status", "wall_s", "user_s", "sys_s",
               "maxrss_kb", "minflt", "madvise_calls", "munmap_calls", "result", "metrics",
               "detail"]


def write_csv(path, runs):
    """results.csv: one row per run. The rows of the syscall-counting pass have round
    "count" and only madvise_calls and munmap_calls (their times and rusage would be the
    counting tool's too); the timed rows leave those two empty."""
    def num(v, fmt):
        return format(v, fmt) if v is not None else ""
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(CSV_COLUMNS)
        for r in runs:
            wr.writerow([r.round, r.seq, r.workload, r.allocator, r.status,
                         num(r.wall, ".6f"), num(r.user, ".6f"), num(r.sys, ".6f"),
                         num(r.maxrss_kb, "d"), num(r.minflt, "d"), num(r.madvise, "d"),
                         num(r.munmap, "d"), r.result,
                         ";".join(f"{k}={v:g}" for k, v in r.metrics.items()), r.detail])


def summary_header(info, workloads, allocs, libs, skipped, base):
    """The opening lines of summary.md: when, what, where, with which tools; info holds
    started, finished, mode, scale, rounds, commit, load_start, load_end."""
    started, finished = info["started"], info["finished"]
    mi = machine_info()
    took = (finished - started).total_seconds() / 60
    header = [
        "# oxmalloc benchmark results",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M %Z')} (took {took:.1f} min)",
        f"- mode: {info['mode']}, scale {info['scale']}, {info['rounds']} round(s); allocators "
        f"alternate within each round in the order {', '.join(allocs)}; one un-timed glibc "
        f"reference run per workload first (expected output, warm-up)",
        f"- git commit: {info['commit']}",
        f"- machine: {mi['cores']} cores (os.cpu_count), {mi['mem_gib']:.1f} GiB memory, {mi['cpu']}, "
        f"Linux {mi['kernel']}, {mi['glibc']}",
        f"- load average (1/5/15 min) at start: {info['load_start']}, at end: {info['load_end']}",
    ]
    if busy(info["load_start"]):
        header.append("- **warning: the machine was not idle when this run started** (1-minute "
                      "load average above 0.5); wall times are noisier than usual: see the "
                      "spreads and the CPU-time column")
    header += [
        f"- tools: {tool_version(['gcc', '--version'])}; Python {platform.python_version()}; "
        f"sqlite3 {tool_version(['sqlite3', '--version']).split(' ')[0]}",
    ]
    for a in allocs:
        pkg = PACKAGES.get(a)
        ver = package_version(pkg)
        where = "no preload" if libs[a] is None else f"LD_PRELOAD {os.path.basename(libs[a])}"
        header.append(f"- {a}: {where}{' (' + pkg + ' ' + ver + ')' if ver else ''}")
    if any(w.kind == "redis" for w in workloads):
        try:
            with open(os.path.join(REDIS_DIR, "SOURCE")) as f:
                built = f.read().strip()
        except OSError:
            built = "?"
        header.append(f"- redis: {built}; server on 127.0.0.1 under each allocator, driven by "
                      f"{tool_version(['redis-benchmark', '--version'])} on glibc: "
                      f"-n {REDIS_REQUESTS * info['scale']} -c {REDIS_CLIENTS} -d 100 -t {REDIS_TESTS}")
    header.append(f"- madvise/munmap calls: {info['syscalls']}")
    for what, why in skipped:
        header.append(f"- skipped {what}: {why}")
    tuning = sorted(k for k in os.environ if re.search(r"MALLOC|TCMALLOC|GLIBC_TUNABLES", k))
    if tuning:
        header.append(f"- allocator environment variables set: {', '.join(tuning)}")
    header += [
        "",
        "Times are wall-clock seconds of the whole process, except for the workloads marked "
        "(cpu), scored by the user + system CPU time from wait4(2), and for redis, whose time "
        "is the client's wall time and whose peak RSS and CPU time are the server's; peak RSS "
        "is ru_maxrss of the "
        f"process (including its waited-for children). ×{base} is the ratio of medians; lower "
        "is better. [min–max] is the spread over the rounds. FAIL means at least one run "
        "crashed, timed out or printed a wrong result; it never counts as a time and is left "
        "out of the geometric means.",
        "",
        "Workloads: " + "; ".join(f"`{w.name}` {w.desc}" for w in workloads) + ".",
        "",
        "",
    ]
    return "\n".join(header)
