"""The workload table: every benchmark, its command line and how a run is checked.

A C workload is one entry of C_WORKLOADS. "{threads}" in its arguments makes it a family,
one workload per thread count, named NAME-THREADS (xthread-1, xthread-2, ...); "{scale}"
is the size factor (--scale); a divisible program also takes a work divisor after its
arguments, which --smoke sets. The real programs (CPython, sqlite3, gcc, redis) follow in
program_workloads(). Every workload is deterministic and prints a result that must be the
same under every allocator (an "OK ..." line, or its output, or its output file).
"""

import os
import shutil

from .common import BENCH_DIR, PROGRAM_SRC, die

# --smoke: these workloads, one round; the divisible ones cut down by SMOKE_DIVISOR
SMOKE_WORKLOADS = ["churn", "xthread-2", "prodcons-2", "falseshare-2", "realloc", "frag", "sqlite",
                   "tchurn-2", "tchurn-8", "larson-sized-2", "xbatch-2"]
SMOKE_DIVISOR = 8

# thread counts of the threaded families: 8 and 16 only for the cross-thread and
# thread-churn ones (oversubscribed on small machines: lock convoys, unfair spinning)
FEW = (1, 2, 4)
MANY = (1, 2, 4, 8, 16)

# redis: requests per command at scale 1, the commands, the client's connections
REDIS_TESTS = "set,get,lpush,lpop,incr,hset,sadd"
REDIS_REQUESTS = 100000
REDIS_CLIENTS = 20


class Workload:
    """One benchmark: how to build its command line and how to verify a run."""

    def __init__(self, name, kind, desc, args=None, binary=None, check="okline",
                 env=None, stdin=None, gen=None, score="wall", divisible=False):
        self.name = name
        self.kind = kind          # "c" (our C program), "program" (a real program), "redis"
        self.desc = desc
        self.args = args or (lambda scale: [str(scale)])
        self.binary = binary      # C: source stem; program: command name
        self.check = check        # "okline" | "stdout" | "outfile" | "redis"
        self.env = env or {}
        self.stdin = stdin
        self.gen = gen            # generator script of the input (gcc workload)
        self.score = score        # "wall": wall time; "cpu": user + system time (wait4)
        self.divisible = divisible  # C program that takes a work divisor after the scale
        self.divisor = 1          # set to SMOKE_DIVISOR for --smoke

    def label(self):
        return f"{self.name} (cpu)" if self.score == "cpu" else self.name

    def command(self, scale, run_dir):
        if self.kind == "c":
            extra = [str(self.divisor)] if self.divisible and self.divisor != 1 else []
            return [os.path.join(BENCH_DIR, self.binary)] + self.args(scale) + extra
        return self.args(scale, run_dir)


class C:
    """One entry of the C workload table (see the module's note)."""

    def __init__(self, name, binary, desc, args="{scale}", threads=None, divisible=False,
                 score="wall"):
        self.name, self.binary, self.desc, self.args = name, binary, desc, args
        self.threads, self.divisible, self.score = threads, divisible, score

    def expand(self):
        counts = self.threads or [None]
        out = []
        for t in counts:
            words = self.args.split()
            fill = {"threads": t, "s": "s" if t and t > 1 else ""}
            out.append(Workload(
                f"{self.name}-{t}" if t else self.name, "c", self.desc.format(**fill),
                binary=self.binary, divisible=self.divisible, score=self.score,
                args=lambda scale, words=words, fill=fill:
                    [w.format(scale=scale, **fill) for w in words]))
        return out


C_WORKLOADS = [
    C("churn", "churn", "1 thread, small short-lived objects"),
    C("window", "window", "mixed sizes, sliding window of 100k live objects"),
    C("xthread", "xthread", "server pattern, frees by other threads, {threads} thr",
      args="{threads} {scale}", threads=MANY),
    C("prodcons", "prodcons", "producer/consumer queue, {threads} thr",
      args="{threads} {scale}", threads=MANY),
    C("free-lifo", "freeorder", "batch of 100k freed in lifo order", args="lifo {scale}"),
    C("free-fifo", "freeorder", "batch of 100k freed in fifo order", args="fifo {scale}"),
    C("free-random", "freeorder", "batch of 100k freed in random order", args="random {scale}"),
    C("threadlife", "threadlife", "objects outlive their threads, {threads} thr/gen",
      args="{threads} {scale}", threads=MANY),
    C("falseshare", "falseshare", "active+passive false sharing, {threads} thr",
      args="{threads} {scale}", threads=FEW),
    C("large", "large", "large blocks 64 KiB .. 32 MiB"),
    C("realloc", "realloc", "realloc growth, byte-wise and doubling"),
    C("frag", "frag", "scattered survivors, then larger blocks; final RSS"),
    C("tchurn", "tchurn", "threads started and joined each round, objects swapped between "
      "them, {threads} thr/round", args="{threads} {scale}", threads=MANY, divisible=True),
    C("tchurn_mixed", "tchurn_mixed", "a thread per round beside the main one, medium and huge "
      "blocks, pointer arrays grown by realloc", divisible=True),
    C("rslot", "rslot", "random-slot replacement, power-law sizes, 32k slots per thread, "
      "{threads} thr", args="{threads} {scale}", threads=FEW, divisible=True),
    C("xbatch", "xbatch", "batches of 1000 blocks 8 B..16 KiB, half freed by the next thread, "
      "{threads} thr; scored by CPU time", args="{threads} {scale}", threads=MANY,
      divisible=True, score="cpu"),
    C("larson", "larson", "larson server simulation, arrays handed to new threads, free(), "
      "{threads} lane{s}", args="free {threads} {scale}", threads=MANY, divisible=True),
    C("larson-sized", "larson", "larson server simulation, arrays handed to new threads, "
      "free_sized(), {threads} lane{s}", args="sized {threads} {scale}", threads=MANY,
      divisible=True),
    C("smallloop", "smallloop", "small program: malloc/free loop, small live set (peak RSS)",
      args="1 {scale}", divisible=True),
    C("smallloop-2", "smallloop", "the same on 2 threads (peak RSS)", args="2 {scale}",
      divisible=True),
    C("minimize", "minimize", "small program: logic-minimizer cubes in lists (peak RSS)",
      divisible=True),
]


def c_workloads():
    return [w for entry in C_WORKLOADS for w in entry.expand()]


def program_workloads(python):
    py_script = os.path.join(PROGRAM_SRC, "py_objects.py")
    sql_script = os.path.join(PROGRAM_SRC, "sqlite.sql")
    mix_script = os.path.join(PROGRAM_SRC, "sqlite_mix.sql")
    gen = os.path.join(PROGRAM_SRC, "gen_c.py")
    return [
        Workload("py-objects", "program", "CPython, PYTHONMALLOC=malloc, object-heavy script",
                 binary=python, args=lambda s, d: [python, py_script, str(s)],
                 env={"PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0",
                      "PYTHONDONTWRITEBYTECODE": "1"}),
        Workload("sqlite", "program", "sqlite3 in-memory: insert, index, query",
                 binary="sqlite3", check="stdout", stdin=sql_script,
                 args=lambda s, d: [shutil.which("sqlite3") or "sqlite3", ":memory:",
                                    "-cmd", f".parameter set @scale {s}"]),
        Workload("gcc", "program", "gcc -O2 -c on a generated C file",
                 binary="gcc", check="outfile",
                 args=lambda s, d: [shutil.which("gcc") or "gcc", "-O2", "-c",
                                    os.path.join(BENCH_DIR, f"big_{s}.c"),
                                    "-o", os.path.join(d, "big.o")],
                 gen=gen),
        Workload("sqlite-mix", "program", "sqlite3 in-memory: 300k rows inserted, indexed, "
                 "updated, deleted, queried; self-checks",
                 binary="sqlite3", check="stdout", stdin=mix_script,
                 args=lambda s, d: [shutil.which("sqlite3") or "sqlite3", ":memory:",
                                    "-cmd", f".parameter set @scale {s}"]),
        Workload("redis", "redis", f"redis-server (Debian source, MALLOC=libc) under "
                 f"redis-benchmark, {len(REDIS_TESTS.split(','))} commands x "
                 f"{REDIS_REQUESTS // 1000}k requests x scale; client wall time, server RSS",
                 binary="redis-benchmark", check="redis"),
    ]


def select_workloads(all_wl, spec):
    """The workloads named in spec (comma-separated names or prefixes), in table order of
    the names given; all of them when spec is empty."""
    if not spec:
        return list(all_wl)
    chosen = []
    for item in [x.strip() for x in spec.split(",") if x.strip()]:
        exact = [w for w in all_wl if w.name == item]
        match = exact or [w for w in all_wl if w.name.startswith(item)]
        if not match:
            die(f"unknown workload '{item}' (known: {', '.join(w.name for w in all_wl)})", 2)
        for w in match:
            if w not in chosen:
                chosen.append(w)
    return chosen

