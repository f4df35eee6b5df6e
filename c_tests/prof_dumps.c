/*
 * When the heap profiler writes its files, and that it never changes how a
 * program runs.
 *
 * Each case runs this program again as a worker with some OXMALLOC_PROF*
 * options and checks the files in its profile directory:
 *   off      profiling off: no file, ox_prof_dump says ENOTSUP;
 *   api      ox_prof_dump(NULL) numbers its files 0000, 0001; a path of one's
 *            own; a missing directory gives ENOENT with nothing on stderr;
 *            errno kept; the exit profile is written and the exit status (3)
 *            is the program's own; no temporary file is left;
 *   signal   OXMALLOC_PROF_SIGNAL=SIGUSR1 and USR2: the signal does not kill,
 *            and the next allocations write a "signal" profile;
 *   fork     a child forked by a sampling thread's neighbour writes its own
 *            files (its pid, numbered from 0000) with the parent's samples, and
 *            keeps allocating; forks while another thread samples do not hang;
 *   missing  OXMALLOC_PROF_DIR names no directory: the program's output and
 *            exit status are unchanged, and one warning line is printed;
 *   bytes    OXMALLOC_PROF_DUMP_BYTES: a "bytes" profile per 4 MB allocated;
 *   peak     OXMALLOC_PROF_DUMP_PEAK=1: "peak" profiles at growing live sizes,
 *            at least 10% apart, and none while the program stays below its
 *            peak.
 */
#include "prof.h"
#include <pthread.h>
#include <signal.h>

static int (*prof_dump)(const char *path);

static void load_api(void)
{
    prof_dump = (int (*)(const char *))ox_sym("ox_prof_dump");
    CHECK(prof_dump != NULL, "ox_prof_dump not found");
}

/* Allocates and frees `total` bytes in blocks of `block` bytes. */
static void churn(size_t total, size_t block)
{
    for (size_t done = 0; done < total; done += block) {
        void *p = malloc(ox_opaque(block));
        CHECK(p != NULL, "malloc");
        ox_escape(p);
        free(p);
    }
}

static void worker_off(void)
{
    churn(64 << 20, 1000);
    errno = 0;
    CHECK(prof_dump(NULL) == ENOTSUP, "ox_prof_dump with profiling off");
    CHECK(errno == 0, "errno changed");
    printf("done\n");
}

static void worker_api(const char *dir)
{
    churn(8 << 20, 100);
    errno = 1234;
    CHECK(prof_dump(NULL) == 0, "first ox_prof_dump");
    CHECK(prof_dump(NULL) == 0, "second ox_prof_dump");
    CHECK(errno == 1234, "ox_prof_dump changed errno to %d", errno);
    char path[256];
    snprintf(path, sizeof path, "%s/mine.raw", dir);
    CHECK(prof_dump(path) == 0, "ox_prof_dump(%s)", path);
    CHECK(prof_dump("/nonexistent-oxprof-dir/x.raw") == ENOENT, "dump into a missing directory");
    ox_child_say("PID", "%ld", (long)getpid());
    exit(3);
}

static void worker_signal(int signo)
{
    churn(1 << 20, 100);
    CHECK(raise(signo) == 0, "raise");
    /* Dumps happen on slow paths: medium blocks take one each time. */
    churn(8 << 20, 100000);
    ox_child_say("PID", "%ld", (long)getpid());
}

static volatile int sampling_stop;
static void *sample_hard(void *arg)
{
    (void)arg;
    while (!sampling_stop)
        churn(1 << 20, 64);
    return NULL;
}

/* In a section of its own: its exact address range is known. */
extern char __start_oxprof_before_fork[], __stop_oxprof_before_fork[];
__attribute__((noinline, section("oxprof_before_fork"))) static void before_fork(void **keep)
{
    for (int i = 0; i < 100; i++)
        keep[i] = malloc(ox_opaque(2000));
}

static void worker_fork(void)
{
    static void *keep[100];
    before_fork(keep);
    CHECK(prof_dump(NULL) == 0, "parent's dump");
    pthread_t t;
    CHECK(pthread_create(&t, NULL, sample_hard, NULL) == 0, "pthread_create");
    pid_t first = -1;
    for (int i = 0; i < 20; i++) {
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0, "fork");
        if (pid == 0) {
            churn(4 << 20, 100);
            if (i == 0 && prof_dump(NULL) != 0)
                _exit(10);
            if (i == 0)
                exit(0); /* the exit profile too */
            _exit(0);
        }
        int status;
        CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "child %d: status 0x%x", i, status);
        if (i == 0)
            first = pid;
    }
    sampling_stop = 1;
    pthread_join(t, NULL);
    CHECK(prof_dump(NULL) == 0, "parent's second dump");
    ox_child_say("PID", "%ld", (long)getpid());
    ox_child_say("CHILD", "%ld", (long)first);
    ox_child_say("SITE", "%lu %lu", (unsigned long)(uintptr_t)__start_oxprof_before_fork,
                 (unsigned long)(uintptr_t)__stop_oxprof_before_fork);
}

static void worker_missing(void)
{
    churn(8 << 20, 100);
    printf("output unchanged\n");
    fflush(stdout);
}

static void worker_bytes(void)
{
    churn(40 << 20, 1000);
    ox_child_say("PID", "%ld", (long)getpid());
}

static void worker_peak(void)
{
    enum { BLOCKS = 512 };
    static void *blocks[BLOCKS];
    /* Grow to 32 MiB live, in 64 KiB blocks; free it all; grow to half of it. */
    for (int i = 0; i < BLOCKS; i++)
        blocks[i] = malloc(64 << 10);
    for (int i = 0; i < BLOCKS; i++)
        free(blocks[i]);
    for (int i = 0; i < BLOCKS / 2; i++)
        blocks[i] = malloc(64 << 10);
    ox_child_say("PID", "%ld", (long)getpid());
    for (int i = 0; i < BLOCKS / 2; i++)
        free(blocks[i]);
}

/* Runs a worker with `extra` options plus OXMALLOC_PROF_DIR=dir. */
static void run(const char *mode, const char *dir, const char *const *extra, struct ox_child *r)
{
    char env_dir[160];
    snprintf(env_dir, sizeof env_dir, "OXMALLOC_PROF_DIR=%s", dir);
    const char *env[16];
    int n = 0;
    env[n++] = env_dir;
    for (; *extra != NULL && n < 15; extra++)
        env[n++] = *extra;
    env[n] = NULL;
    ox_prof_run_worker(mode, env, 50, r);
}

static void expect_clean_exit(const char *mode, const struct ox_child *r, int code)
{
    CHECK(r->exited && r->exit_code == code, "%s worker %s (expected status %d): %s", mode,
          ox_child_describe(r), code, r->err);
}

static void test_off(void)
{
    char dir[64];
    ox_prof_dir_make(dir, sizeof dir);
    const char *env[] = {NULL};
    struct ox_child r;
    run("off", dir, env, &r);
    expect_clean_exit("off", &r, 0);
    CHECK(strcmp(r.out, "done\n") == 0 && r.err[0] == '\0', "off: output '%s', stderr '%s'", r.out,
          r.err);
    CHECK(ox_prof_dir_count(dir, "", "") == 0, "off: files were written in %s", dir);
    ox_prof_dir_remove(dir);
}

static void test_api(void)
{
    char dir[64];
    ox_prof_dir_make(dir, sizeof dir);
    const char *env[] = {"OXMALLOC_PROF=1", NULL};
    struct ox_child r;
    run("api", dir, env, &r);
    expect_clean_exit("api", &r, 3);
    CHECK(r.err[0] == '\0', "api: stderr '%s'", r.err);
    long pid = (long)ox_prof_said(&r, "PID");
    struct ox_prof_file f;
    ox_prof_read_or_fail(dir, pid, "0000", &f);
    CHECK(strcmp(f.reason, "api") == 0 && f.interval == 512 * 1024, "api: reason %s interval %llu",
          f.reason, (unsigned long long)f.interval);
    CHECK(f.total_alloc > 4 << 20, "api: 8 MiB allocated, %llu estimated",
          (unsigned long long)f.total_alloc);
    ox_prof_free(&f);
    ox_prof_read_or_fail(dir, pid, "0001", &f);
    ox_prof_free(&f);
    ox_prof_read_or_fail(dir, pid, "exit", &f);
    CHECK(strcmp(f.reason, "exit") == 0, "exit profile's reason: %s", f.reason);
    ox_prof_free(&f);
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/mine.raw", dir);
    CHECK(ox_prof_read(path, &f, err, sizeof err), "%s", err);
    ox_prof_free(&f);
    CHECK(ox_prof_dir_count(dir, "", ".tmp") == 0, "api: temporary files left in %s", dir);
    CHECK(ox_prof_dir_count(dir, "oxprof.", ".raw") == 3, "api: expected 3 numbered files");
    ox_prof_dir_remove(dir);
}

static void test_signal(const char *option, const char *mode)
{
    char dir[64];
    ox_prof_dir_make(dir, sizeof dir);
    const char *env[] = {"OXMALLOC_PROF=1", option, NULL};
    struct ox_child r;
    run(mode, dir, env, &r);
    expect_clean_exit(mode, &r, 0);
    struct ox_prof_file f;
    ox_prof_read_or_fail(dir, (long)ox_prof_said(&r, "PID"), "0000", &f);
    CHECK(strcmp(f.reason, "signal") == 0, "%s: reason %s", option, f.reason);
    ox_prof_free(&f);
    ox_prof_dir_remove(dir);
}

static void test_fork(void)
{
    char dir[64];
    ox_prof_dir_make(dir, sizeof dir);
    const char *env[] = {"OXMALLOC_PROF=1", "OXMALLOC_PROF_INTERVAL=4096", NULL};
    struct ox_child r;
    run("fork", dir, env, &r);
    expect_clean_exit("fork", &r, 0);
    long pid = (long)ox_prof_said(&r, "PID"), child = (long)ox_prof_said(&r, "CHILD");
    char buf[128];
    unsigned long lo, hi;
    CHECK(ox_child_value(&r, "SITE", buf, sizeof buf) && sscanf(buf, "%lu %lu", &lo, &hi) == 2,
          "worker did not say SITE");
    struct ox_prof_file parent0, parent1, child0, child_exit;
    ox_prof_read_or_fail(dir, pid, "0000", &parent0);
    ox_prof_read_or_fail(dir, pid, "0001", &parent1);
    ox_prof_read_or_fail(dir, child, "0000", &child0);
    ox_prof_read_or_fail(dir, child, "exit", &child_exit);
    /* The child keeps the parent's samples of before_fork (taken before it). */
    uint64_t in_parent = 0, in_child = 0;
    for (int i = 0; i < parent0.nstacks; i++)
        if (parent0.stacks[i].depth > 0 && parent0.stacks[i].pcs[0] > lo &&
            parent0.stacks[i].pcs[0] <= hi)
            in_parent += parent0.stacks[i].alloc_samples;
    for (int i = 0; i < child0.nstacks; i++)
        if (child0.stacks[i].depth > 0 && child0.stacks[i].pcs[0] > lo &&
            child0.stacks[i].pcs[0] <= hi)
            in_child += child0.stacks[i].alloc_samples;
    CHECK(in_parent > 0 && in_child == in_parent,
          "before_fork: %llu samples in the parent, %llu in the child",
          (unsigned long long)in_parent, (unsigned long long)in_child);
    /* The child allocated 4 MiB more than the parent had at the fork. */
    CHECK(child_exit.total_alloc > parent0.total_alloc + (2 << 20),
          "child's allocations not counted: %llu vs the parent's %llu",
          (unsigned long long)child_exit.total_alloc, (unsigned long long)parent0.total_alloc);
    ox_prof_free(&parent0);
    ox_prof_free(&parent1);
    ox_prof_free(&child0);
    ox_prof_free(&child_exit);
    ox_prof_dir_remove(dir);
}

static void test_missing(void)
{
    const char *env[] = {"OXMALLOC_PROF=1", NULL};
    struct ox_child r;
    run("missing", "/nonexistent-oxprof-dir/sub", env, &r);
    expect_clean_exit("missing", &r, 0);
    CHECK(strcmp(r.out, "output unchanged\n") == 0, "missing: stdout '%s'", r.out);
    size_t lines = 0;
    for (const char *c = r.err; *c; c++)
        lines += *c == '\n';
    CHECK(lines == 1 && strstr(r.err, "oxmalloc: heap profile (exit) not written") != NULL &&
              strstr(r.err, "/nonexistent-oxprof-dir/sub") != NULL,
          "missing: expected one warning line, stderr: '%s'", r.err);
    NOTE("missing directory: %s", r.err);
}

/* The numbered profiles of `pid` in `dir`, in order; returns how many. */
static int read_numbered(const char *dir, long pid, struct ox_prof_file *files, int max)
{
    int n = 0;
    for (; n < max; n++) {
        char path[256], err[512];
        snprintf(path, sizeof path, "%s/oxprof.%ld.%04d.raw", dir, pid, n);
        if (access(path, F_OK) != 0)
            break;
        CHECK(ox_prof_read(path, &files[n], err, sizeof err), "%s", err);
    }
    return n;
}

static void test_bytes(void)
{
    char dir[64];
    ox_prof_dir_make(dir, sizeof dir);
    const char *env[] = {"OXMALLOC_PROF=1", "OXMALLOC_PROF_INTERVAL=65536",
                         "OXMALLOC_PROF_DUMP_BYTES=4000000", NULL};
    struct ox_child r;
    run("bytes", dir, env, &r);
    expect_clean_exit("bytes", &r, 0);
    static struct ox_prof_file files[64];
    int n = read_numbered(dir, (long)ox_prof_said(&r, "PID"), files, 64);
    /* 40 MiB allocated: about 10 dumps, each after another 4 MB (estimated). */
    CHECK(n >= 6 && n <= 14, "bytes: %d profiles for 40 MiB at one per 4 MB", n);
    for (int i = 0; i < n; i++) {
        CHECK(strcmp(files[i].reason, "bytes") == 0, "bytes: reason %s", files[i].reason);
        CHECK(files[i].total_alloc >= 4000000ull * (unsigned)(i + 1),
              "bytes: dump %d at %llu bytes", i, (unsigned long long)files[i].total_alloc);
        ox_prof_free(&files[i]);
    }
    NOTE("bytes: %d profiles", n);
    ox_prof_dir_remove(dir);
}

static void test_peak(void)
{
    char dir[64];
    ox_prof_dir_make(dir, sizeof dir);
    const char *env[] = {"OXMALLOC_PROF=1", "OXMALLOC_PROF_INTERVAL=65536",
                         "OXMALLOC_PROF_DUMP_PEAK=1", NULL};
    struct ox_child r;
    run("peak", dir, env, &r);
    expect_clean_exit("peak", &r, 0);
    static struct ox_prof_file files[128];
    int n = read_numbered(dir, (long)ox_prof_said(&r, "PID"), files, 128);
    CHECK(n >= 5, "peak: %d profiles while growing to 32 MiB", n);
    uint64_t last = 0;
    for (int i = 0; i < n; i++) {
        CHECK(strcmp(files[i].reason, "peak") == 0, "peak: reason %s", files[i].reason);
        uint64_t live = files[i].total_live;
        CHECK(live >= last + last / 10 && live >= last + 65536,
              "peak: dump %d at %llu live bytes, previous at %llu", i, (unsigned long long)live,
              (unsigned long long)last);
        last = live;
        ox_prof_free(&files[i]);
    }
    /* The last peak is near 32 MiB (the second growth, to 16 MiB, adds none). */
    CHECK(last > 24 << 20, "peak: last peak profile at %llu live bytes", (unsigned long long)last);
    NOTE("peak: %d profiles, the last at %llu live bytes", n, (unsigned long long)last);
    ox_prof_dir_remove(dir);
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "worker") == 0) {
        load_api();
        const char *mode = argv[2];
        const char *dir = getenv("OXMALLOC_PROF_DIR");
        if (strcmp(mode, "off") == 0)
            worker_off();
        else if (strcmp(mode, "api") == 0)
            worker_api(dir);
        else if (strcmp(mode, "signal1") == 0)
            worker_signal(SIGUSR1);
        else if (strcmp(mode, "signal2") == 0)
            worker_signal(SIGUSR2);
        else if (strcmp(mode, "fork") == 0)
            worker_fork();
        else if (strcmp(mode, "missing") == 0)
            worker_missing();
        else if (strcmp(mode, "bytes") == 0)
            worker_bytes();
        else if (strcmp(mode, "peak") == 0)
            worker_peak();
        else
            CHECK(0, "unknown worker mode %s", mode);
        return 0;
    }
    ox_require_active();
    test_off();
    test_api();
    test_signal("OXMALLOC_PROF_SIGNAL=SIGUSR1", "signal1");
    test_signal("OXMALLOC_PROF_SIGNAL=USR2", "signal2");
    test_fork();
    test_missing();
    test_bytes();
    test_peak();
    return 0;
}
