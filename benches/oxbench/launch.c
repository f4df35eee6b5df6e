/* launch: runs one measured program for scripts/bench.
 *
 * It exists because the peak RSS that wait4(2) reports for a process includes the
 * high-water mark of the memory image it had before exec: a program spawned straight from
 * the harness (Python, ~20 MB) would never show a peak below the harness's own. The launcher is a small C program: it forks, sets
 * LD_PRELOAD only in the child (the launcher itself never runs on the allocator under
 * test), execs the workload in its own process group, takes the wall time with
 * CLOCK_MONOTONIC around fork..wait4, kills the group on timeout, and writes the status
 * and rusage that wait4 returned to a result file. Both die with the harness.
 *
 * usage: launch TIMEOUT_S RESULT_FILE PRELOAD|- PROGRAM ARGS...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t timed_out;
static pid_t child;

static void on_alarm(int sig)
{
    (void)sig;
    timed_out = 1;
    kill(-child, SIGKILL);
}

static double tv(struct timeval t) { return (double)t.tv_sec + (double)t.tv_usec / 1e6; }

int main(int argc, char **argv)
{
    /* launch TIMEOUT_S RESULT_FILE PRELOAD|- PROGRAM ARGS... */
    if (argc < 5)
        return 125;
    unsigned timeout = (unsigned)strtoul(argv[1], NULL, 10);
    const char *result = argv[2], *preload = argv[3];
    struct timespec t0, t1;
    struct rusage ru;
    int status = 0;

    /* if the harness dies (Ctrl-C), the launcher and the program go with it */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    child = fork();
    if (child < 0)
        return 125;
    if (child == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (strcmp(preload, "-") != 0)
            setenv("LD_PRELOAD", preload, 1);
        else
            unsetenv("LD_PRELOAD");
        execvp(argv[4], argv + 4);
        fprintf(stderr, "launch: cannot run %s: %s\n", argv[4], strerror(errno));
        _exit(127);
    }
    setpgid(child, child);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    alarm(timeout);
    while (wait4(child, &status, 0, &ru) < 0)
        if (errno != EINTR)
            return 125;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    alarm(0);
    kill(-child, SIGKILL); /* helpers the program left behind */
    FILE *f = fopen(result, "w");
    if (!f)
        return 125;
    fprintf(f, "status=%d\nwall=%.6f\nuser=%.6f\nsys=%.6f\nmaxrss_kb=%ld\nminflt=%ld\n"
               "majflt=%ld\nnvcsw=%ld\nnivcsw=%ld\ntimed_out=%d\n",
            status,
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
            tv(ru.ru_utime), tv(ru.ru_stime), ru.ru_maxrss, ru.ru_minflt, ru.ru_majflt,
            ru.ru_nvcsw, ru.ru_nivcsw, (int)timed_out);
    fclose(f);
    return 0;
}
