"""The one way a measured program is started: through the launcher (launch.c), which
forks, applies the preload to the program only, waits for it with wait4(2), and writes
the wall time, exit status and rusage to a file that spawn_measured reads back."""

import math
import os

from .common import BENCH_DIR, read_result


def spawn_measured(argv, env, preload, stdin_path, out_path, err_path, timeout):
    """Run argv through the launcher, stdout and stderr to the given files; return the
    launcher's measurements (status, wall, user, sys, maxrss_kb, minflt, majflt, nvcsw,
    nivcsw, timed_out) as a dict, or raise OSError."""
    result_path = out_path + ".rusage"
    if os.path.exists(result_path):
        os.unlink(result_path)
    launch = [os.path.join(BENCH_DIR, "launch"), str(int(math.ceil(timeout))), result_path,
              preload or "-"] + argv
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, stdin_path or os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
    ]
    pid = os.posix_spawn(launch[0], launch, env, file_actions=actions)
    _, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        raise OSError(f"launcher failed (wait status {status})")
    return read_result(result_path)
