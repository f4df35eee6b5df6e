"""What a report says about where it was measured: the commit, the machine, its load,
tool versions."""

import os
import platform

from .common import ROOT, run_quiet


def git_commit():
    r = run_quiet(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"])
    commit = r.stdout.strip() if r.returncode == 0 else "(no commit)"
    s = run_quiet(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
    if s.returncode == 0 and s.stdout.strip():
        commit += " (with uncommitted changes)"
    return commit


def machine_info():
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "mem_gib": mem_kb / 1024 / 1024,
        "cpu": model,
        "kernel": platform.release(),
        "glibc": " ".join(platform.libc_ver()),
    }


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def busy(load):
    try:
        return float(load.split()[0]) > 0.5
    except (ValueError, IndexError):
        return False


def tool_version(cmd):
    r = run_quiet(cmd)
    return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else "?"


