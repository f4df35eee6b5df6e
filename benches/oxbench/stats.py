"""Statistics over the runs: a Cell holds all runs of one workload under one allocator;
its medians, spreads and ratios to the base allocator (glibc) feed the report and the
chart. A cell with any failed run is not good, and never counts as a time."""

import math
import statistics


def geomean(xs):
    """Geometric mean of the positive values of xs; None when there are none."""
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


class Cell:
    """All runs of one workload under one allocator."""

    def __init__(self, runs):
        self.runs = runs
        self.ok = [r for r in runs if r.status == "ok"]
        self.failed = [r for r in runs if r.status != "ok"]

    @property
    def good(self):
        return bool(self.runs) and not self.failed

    def med(self, attr):
        return statistics.median(getattr(r, attr) for r in self.ok)

    def lo(self, attr):
        return min(getattr(r, attr) for r in self.ok)

    def hi(self, attr):
        return max(getattr(r, attr) for r in self.ok)

    def fail_text(self):
        reasons = sorted({r.status for r in self.failed})
        return f"FAIL {len(self.failed)}/{len(self.runs)}: {'; '.join(reasons)}"


def build_cells(runs, workloads, allocs):
    cells = {}
    for w in workloads:
        for a in allocs:
            cells[(w.name, a)] = Cell([r for r in runs if r.workload == w.name and r.allocator == a])
    return cells


def ratio(cells, w, a, base, attr):
    """Median of attr under a over its median under base, for workload w; None when
    either cell failed or the base median is 0."""
    c, b = cells[(w, a)], cells[(w, base)]
    if not (c.good and b.good):
        return None
    bm = b.med(attr)
    return c.med(attr) / bm if bm else None


def summarize(cells, workloads, allocs, base):
    """{allocator: (geomean time ratio, geomean peak RSS ratio, workloads with a ratio,
    failed workloads, geomean CPU time ratio, geomean minor faults ratio)}."""
    geo = {}
    for a in allocs:
        t = [ratio(cells, w.name, a, base, "score") for w in workloads]
        m = [ratio(cells, w.name, a, base, "maxrss_kb") for w in workloads]
        u = [ratio(cells, w.name, a, base, "cpu") for w in workloads]
        f = [ratio(cells, w.name, a, base, "minflt") for w in workloads]
        fails = sum(1 for w in workloads if cells[(w.name, a)].runs and not cells[(w.name, a)].good)
        n = sum(1 for x in t if x is not None)
        geo[a] = (geomean(t), geomean(m), n, fails, geomean(u), geomean(f))
    return geo


