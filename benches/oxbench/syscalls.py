"""Counting the madvise(2) and munmap(2) calls of a workload: the memory an allocator hands
back to the kernel, and what it costs in system calls (and later in page faults).

The counts come from a separate, un-timed pass after the timed rounds: one run per
workload and allocator under a counting tool, so that the tool never touches a timed run.
Two tools, the first that works on this machine is used (--syscalls picks one):

  perf    `perf stat -e syscalls:sys_enter_madvise,syscalls:sys_enter_munmap`: the kernel
          counts the tracepoints of the program and all its threads; the program is not
          stopped, so it runs at about its usual speed and time-driven purging (decay)
          behaves as in the timed runs. Needs the tracepoints (tracefs) and the permission
          to use them (root, or kernel.perf_event_paranoid <= -1).
  strace  `strace -f -c --seccomp-bpf -e trace=madvise,munmap`: ptrace stops the program
          at each counted call (only those, with seccomp-bpf), so a program that makes
          many is slowed down there, and purges that depend on elapsed time may differ.

The tool runs under the launcher with the allocator preloaded, so the tool itself runs on
the allocator too; its own calls are not counted (perf counts from the program's exec,
strace traces its child only). Counts vary a little from run to run where an allocator
purges by elapsed time; they are one run's, not a median.
"""

import os
import shutil

from .common import RUN_DIR, clean_env, note, read_file
from .runner import Run, evaluate
from .spawn import spawn_measured

SYSCALLS = ("madvise", "munmap")


class Counter:
    """One counting tool: how to wrap a command line, and how to read its counts."""

    def __init__(self, name, description):
        self.name = name
        self.description = description

    def wrap(self, argv, out_file):
        if self.name == "perf":
            events = ",".join(f"syscalls:sys_enter_{s}" for s in SYSCALLS)
            return ["perf", "stat", "-x,", "-o", out_file, "-e", events, "--"] + argv
        return ["strace", "-f", "-c", "-q", "--seccomp-bpf", "-o", out_file,
                "-e", "trace=" + ",".join(SYSCALLS), "--"] + argv

    def parse(self, out_file):
        """{syscall: calls} from the tool's output file; raises ValueError when a count is
        missing or unreadable."""
        text = read_file(out_file).decode("utf-8", "replace")
        counts = {}
        if self.name == "perf":
            # CSV lines: value,unit,event,run time,percentage,...
            for line in text.splitlines():
                fields = line.split(",")
                if len(fields) > 2 and fields[2].startswith("syscalls:sys_enter_"):
                    if not fields[0].strip().isdigit():
                        raise ValueError(f"perf could not count {fields[2]}: {fields[0]}")
                    counts[fields[2][len("syscalls:sys_enter_"):]] = int(fields[0])
            missing = [s for s in SYSCALLS if s not in counts]
            if missing:
                raise ValueError(f"no perf count of {', '.join(missing)}")
        else:
            # the -c table: % time, seconds, usecs/call, calls, [errors,] syscall; a call
            # that was never made has no line
            if "total" not in text:
                raise ValueError("no strace summary")
            for line in text.splitlines():
                fields = line.split()
                if len(fields) >= 5 and fields[-1] in SYSCALLS and fields[3].isdigit():
                    counts[fields[-1]] = int(fields[3])
            for s in SYSCALLS:
                counts.setdefault(s, 0)
        return counts


PERF = Counter("perf", "perf stat -e syscalls:sys_enter_madvise,syscalls:sys_enter_munmap "
                       "(kernel tracepoint counts; the program is not stopped)")
STRACE = Counter("strace", "strace -f -c --seccomp-bpf -e trace=madvise,munmap "
                           "(ptrace; the program stops at each counted call)")


def try_counter(counter):
    """None when counter counts a known call correctly here, else why not."""
    if not shutil.which(counter.name):
        return f"{counter.name} not installed"
    os.makedirs(RUN_DIR, exist_ok=True)
    out_file = os.path.join(RUN_DIR, "count.test")
    out_path, err_path = os.path.join(RUN_DIR, "stdout"), os.path.join(RUN_DIR, "stderr")
    # python3 unmaps what it mapped: at least one munmap must be counted
    probe = [shutil.which("python3") or "python3", "-c",
             "import mmap; m = mmap.mmap(-1, 1 << 20); m.close()"]
    try:
        m = spawn_measured(counter.wrap(probe, out_file), clean_env(), None, None,
                           out_path, err_path, 30)
        counts = counter.parse(out_file)
    except (OSError, ValueError) as e:
        err = read_file(err_path).decode("utf-8", "replace").strip().splitlines()
        return f"{counter.name} does not work here: {e}" + (f" ({err[-1][:120]})" if err else "")
    if m["timed_out"] or not os.WIFEXITED(m["status"]) or os.WEXITSTATUS(m["status"]) != 0:
        err = read_file(err_path).decode("utf-8", "replace").strip().splitlines()
        return f"{counter.name} failed here" + (f": {err[-1][:160]}" if err else "")
    if counts.get("munmap", 0) < 1:
        return f"{counter.name} counted no munmap of a program that makes one"
    return None


def choose_counter(wanted):
    """(Counter, None) for --syscalls auto|perf|strace, or (None, why there is none)."""
    if wanted == "off":
        return None, "--syscalls off"
    candidates = [PERF, STRACE] if wanted == "auto" else [c for c in (PERF, STRACE)
                                                           if c.name == wanted]
    reasons = []
    for c in candidates:
        why = try_counter(c)
        if why is None:
            return c, None
        reasons.append(why)
    return None, "; ".join(reasons)


def count_pass(counter, workloads, allocs, libs, alloc_env, scale, reference, timeouts,
               seq, logs_dir):
    """One counting run per workload and allocator (allocators alternating within each
    workload); return ({(workload, allocator): Run with madvise and munmap}, last seq)."""
    counts = {}
    os.makedirs(RUN_DIR, exist_ok=True)
    out_path, err_path = os.path.join(RUN_DIR, "stdout"), os.path.join(RUN_DIR, "stderr")
    out_file = os.path.join(RUN_DIR, "count.out")
    for w in workloads:
        if w.kind == "redis":
            continue  # the server runs in the background; its calls are not counted
        line = [f"[count] {w.name:15}"]
        for a in allocs:
            seq += 1
            r = Run("count", seq, w.name, a)
            counts[(w.name, a)] = r
            if os.path.exists(out_file):
                os.unlink(out_file)
            argv = counter.wrap(w.command(scale, RUN_DIR), out_file)
            env = clean_env(dict(w.env or {}, **alloc_env.get(a, {})))
            # strace slows down programs that make many counted calls
            timeout = timeouts[w.name] * (3 if counter.name == "strace" else 1)
            try:
                m = spawn_measured(argv, env, libs[a], w.stdin, out_path, err_path, timeout)
            except OSError as e:
                r.status, r.detail = "spawn failed", str(e)
                line.append(f"{a} FAIL({r.status})")
                continue
            out, err = read_file(out_path), read_file(err_path)
            if m["timed_out"]:
                r.status = f"timeout ({timeout:.0f} s)"
            else:
                r.status, r.result, _ = evaluate(w, m["status"], out, err, RUN_DIR,
                                                 reference[w.name])
            if r.status == "ok":
                try:
                    c = counter.parse(out_file)
                    r.madvise, r.munmap = c["madvise"], c["munmap"]
                except ValueError as e:
                    r.status, r.detail = "count failed", str(e)
            if r.status != "ok":
                r.detail = r.detail or err.decode("utf-8", "replace").strip()[-300:].replace("\n", " | ")
                if logs_dir:
                    os.makedirs(logs_dir, exist_ok=True)
                    base = os.path.join(logs_dir, f"{w.name}.{a}.count")
                    with open(base + ".stdout", "wb") as f:
                        f.write(out)
                    with open(base + ".stderr", "wb") as f:
                        f.write(err)
                line.append(f"{a} FAIL({r.status})")
            else:
                line.append(f"{a} {r.madvise}/{r.munmap}")
        note("  ".join(line))
    return counts, seq
