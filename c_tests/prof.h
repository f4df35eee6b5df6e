/*
 * Helpers for the heap profiler tests (OXMALLOC_PROF=1).
 *
 * A profiler test runs its own program again as a worker ("PROGRAM worker
 * MODE"), with profiling options added to the environment (LD_PRELOAD, when
 * set, is kept, so the worker runs the way the test does), and then reads the
 * raw profiles the worker wrote (docs/prof-format.md) with ox_prof_read, which
 * checks the format strictly on the way.
 */
#ifndef OXTEST_PROF_H
#define OXTEST_PROF_H

#include "child.h"
#include <dirent.h>
#include <sys/stat.h>

#define OX_PROF_MAX_DEPTH 64

extern char **environ;

/* A fresh, empty directory under /tmp for the worker's profiles. */
static inline void ox_prof_dir_make(char *buf, size_t size)
{
    snprintf(buf, size, "/tmp/oxprof-test-XXXXXX");
    CHECK(mkdtemp(buf) != NULL, "mkdtemp: %s", strerror(errno));
}

/* Removes the directory and the files in it. */
static inline void ox_prof_dir_remove(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* Files in `dir` whose name starts with `prefix` and ends with `suffix` ("" and
 * "" for every file; the . and .. entries are not counted). */
static inline int ox_prof_dir_count(const char *dir, const char *prefix, const char *suffix)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    size_t plen = strlen(prefix), slen = strlen(suffix);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (len >= plen + slen && strncmp(e->d_name, prefix, plen) == 0 &&
            strcmp(e->d_name + len - slen, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/*
 * Runs "/proc/self/exe worker MODE" with the current environment minus any
 * OXMALLOC_PROF* variable, plus `extra` (NULL-terminated "NAME=value" list).
 */
static inline void ox_prof_run_worker(const char *mode, const char *const *extra,
                                      double timeout_s, struct ox_child *r)
{
    static char *envp[1024];
    size_t n = 0;
    for (char **e = environ; *e != NULL && n < 1000; e++)
        if (strncmp(*e, "OXMALLOC_PROF", 13) != 0)
            envp[n++] = *e;
    for (; extra != NULL && *extra != NULL && n < 1020; extra++)
        envp[n++] = (char *)*extra;
    envp[n] = NULL;
    char *argv[] = {"oxprof-worker", "worker", (char *)mode, NULL};
    ox_child_exec("/proc/self/exe", argv, envp, timeout_s, r);
}

/*
 * Runs the worker MODE with profiling on at INTERVAL (bytes, as the option takes them)
 * into a new profile directory, written to `dir`; fails unless the worker exits 0.
 */
static inline void ox_prof_run_profiled(const char *mode, const char *interval, char *dir,
                                        size_t dir_size, struct ox_child *r)
{
    char env_dir[128], env_interval[64];
    ox_prof_dir_make(dir, dir_size);
    snprintf(env_dir, sizeof env_dir, "OXMALLOC_PROF_DIR=%s", dir);
    snprintf(env_interval, sizeof env_interval, "OXMALLOC_PROF_INTERVAL=%s", interval);
    const char *env[] = {"OXMALLOC_PROF=1", env_interval, env_dir, NULL};
    ox_prof_run_worker(mode, env, 50, r);
    CHECK(r->exited && r->exit_code == 0, "worker %s: %s", ox_child_describe(r), r->err);
}

/* The value the worker said for KEY, as a number (the test fails if missing). */
static inline double ox_prof_said(const struct ox_child *r, const char *key)
{
    char buf[128];
    CHECK(ox_child_value(r, key, buf, sizeof buf), "worker did not say %s (stdout: %s, stderr: %s)",
          key, r->out, r->err);
    return strtod(buf, NULL);
}

/* The "LO HI" address range a worker said under `key` (a function's section bounds). */
static inline void ox_prof_range_of(const struct ox_child *r, const char *key, uintptr_t *lo,
                                    uintptr_t *hi)
{
    char buf[128];
    unsigned long a, b;
    CHECK(ox_child_value(r, key, buf, sizeof buf) && sscanf(buf, "%lu %lu", &a, &b) == 2,
          "worker did not say %s", key);
    *lo = a;
    *hi = b;
}

/* Fails unless the estimate `est` is within `bound` (relative) of `truth`. */
static inline void ox_prof_check_near(const char *what, double est, double truth, double bound)
{
    double rel = (est - truth) / truth;
    NOTE("%s: estimated %.0f, true %.0f (%+.2f%%)", what, est, truth, 100 * rel);
    CHECK(rel < bound && rel > -bound, "%s: estimate %.0f is %.2f%% off the true %.0f", what,
          est, 100 * rel, truth);
}

struct ox_prof_stack {
    uint64_t alloc_samples, alloc_objects, alloc_bytes;
    uint64_t inuse_samples, inuse_objects, inuse_bytes;
    uint64_t peak_samples, peak_objects, peak_bytes;
    uint64_t short_samples, short_objects, short_bytes;
    int depth;
    uintptr_t pcs[OX_PROF_MAX_DEPTH];
};

struct ox_prof_file {
    long pid;
    char exe[4096];
    char reason[16];
    long long time;
    uint64_t interval;
    uint64_t total_alloc, total_live;
    char cmdline[4096];
    uint64_t elapsed_us, short_lived_us, peak_us, peak_bytes;
    int npoints;
    struct ox_prof_point {
        uint64_t t_us, live_bytes, resident_bytes, allocated_bytes;
    } points[2048];
    int nstacks;
    struct ox_prof_stack *stacks;
    size_t maps_lines;
    char *maps; /* the text after the "maps" line */
};

static inline void ox_prof_free(struct ox_prof_file *f)
{
    free(f->stacks);
    free(f->maps);
    f->stacks = NULL;
    f->maps = NULL;
}

/* Reads a whole file; NULL if it cannot. */
static inline char *ox_prof_slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t k;
    while (buf != NULL && (k = fread(buf + n, 1, cap - n - 1, fp)) > 0) {
        n += k;
        if (n + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    fclose(fp);
    if (buf != NULL)
        buf[n] = '\0';
    *len = n;
    return buf;
}

/* A decimal number that must fill the field: 1 when it does. */
static inline int ox_prof_number(const char *s, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return 0;
    char *end;
    *out = strtoull(s, &end, 10);
    return *end == '\0';
}

/*
 * Parses the raw profile at `path` into `f`, checking the format: the header
 * lines in order, every stack line's fields and depth, the totals against the
 * sums of the stacks, and the maps section. Returns 1, or 0 with a message in
 * `err`.
 */
static inline int ox_prof_read(const char *path, struct ox_prof_file *f, char *err, size_t errsize)
{
    memset(f, 0, sizeof *f);
    size_t len;
    char *text = ox_prof_slurp(path, &len);
    if (text == NULL) {
        snprintf(err, errsize, "cannot read %s: %s", path, strerror(errno));
        return 0;
    }
    int ok = 0, lineno = 0, cap = 0;
    uint64_t sum_alloc = 0, sum_live = 0, sum_peak = 0;
    char *line = text, *next;
    const char *stage = "header";
#define PROF_FAIL(...)                                                         \
    do {                                                                       \
        int k = snprintf(err, errsize, "%s:%d: ", path, lineno);               \
        snprintf(err + k, errsize - (size_t)k, __VA_ARGS__);                   \
        goto out;                                                              \
    } while (0)
    for (; *line != '\0'; line = next) {
        lineno++;
        next = strchr(line, '\n');
        if (next == NULL)
            PROF_FAIL("line without a newline");
        *next++ = '\0';
        uint64_t v;
        if (lineno == 1) {
            if (strcmp(line, "oxprof-raw 2") != 0)
                PROF_FAIL("bad magic line '%s'", line);
        } else if (lineno == 2) {
            if (strncmp(line, "pid ", 4) != 0 || !ox_prof_number(line + 4, &v))
                PROF_FAIL("bad pid line '%s'", line);
            f->pid = (long)v;
        } else if (lineno == 3) {
            if (strncmp(line, "exe /", 5) != 0)
                PROF_FAIL("bad exe line '%s'", line);
            snprintf(f->exe, sizeof f->exe, "%s", line + 4);
        } else if (lineno == 4) {
            if (strncmp(line, "reason ", 7) != 0)
                PROF_FAIL("bad reason line '%s'", line);
            snprintf(f->reason, sizeof f->reason, "%s", line + 7);
            if (strcmp(f->reason, "exit") && strcmp(f->reason, "api") &&
                strcmp(f->reason, "signal") && strcmp(f->reason, "bytes") &&
                strcmp(f->reason, "peak"))
                PROF_FAIL("unknown reason '%s'", f->reason);
        } else if (lineno == 5) {
            if (strncmp(line, "time ", 5) != 0 || !ox_prof_number(line + 5, &v) || v < 1000000000)
                PROF_FAIL("bad time line '%s'", line);
            f->time = (long long)v;
        } else if (lineno == 6) {
            if (strncmp(line, "interval ", 9) != 0 || !ox_prof_number(line + 9, &v) || v == 0)
                PROF_FAIL("bad interval line '%s'", line);
            f->interval = v;
        } else if (lineno == 7) {
            char a[32], b[32], extra;
            if (sscanf(line, "totals %31s %31s %c", a, b, &extra) != 2 ||
                !ox_prof_number(a, &f->total_alloc) || !ox_prof_number(b, &f->total_live))
                PROF_FAIL("bad totals line '%s'", line);
        } else if (lineno == 8) {
            if (strncmp(line, "cmdline ", 8) != 0)
                PROF_FAIL("bad cmdline line '%.60s'", line);
            snprintf(f->cmdline, sizeof f->cmdline, "%s", line + 8);
        } else if (lineno == 9) {
            if (strncmp(line, "elapsed ", 8) != 0 || !ox_prof_number(line + 8, &f->elapsed_us))
                PROF_FAIL("bad elapsed line '%s'", line);
        } else if (lineno == 10) {
            if (strncmp(line, "short_lived ", 12) != 0 ||
                !ox_prof_number(line + 12, &f->short_lived_us))
                PROF_FAIL("bad short_lived line '%s'", line);
        } else if (lineno == 11) {
            char a[32], b[32], extra;
            if (sscanf(line, "peak %31s %31s %c", a, b, &extra) != 2 ||
                !ox_prof_number(a, &f->peak_us) || !ox_prof_number(b, &f->peak_bytes) ||
                f->peak_us > f->elapsed_us)
                PROF_FAIL("bad peak line '%s'", line);
            stage = "stacks";
        } else if (strcmp(stage, "stacks") == 0 && f->nstacks == 0 &&
                   strncmp(line, "point ", 6) == 0) {
            if (f->npoints == (int)(sizeof f->points / sizeof f->points[0]))
                PROF_FAIL("more than %d points", f->npoints);
            struct ox_prof_point *p = &f->points[f->npoints];
            char a[32], b[32], c[32], d[32], extra;
            if (sscanf(line, "point %31s %31s %31s %31s %c", a, b, c, d, &extra) != 4 ||
                !ox_prof_number(a, &p->t_us) || !ox_prof_number(b, &p->live_bytes) ||
                !ox_prof_number(c, &p->resident_bytes) || !ox_prof_number(d, &p->allocated_bytes))
                PROF_FAIL("bad point line '%s'", line);
            if (f->npoints > 0 && p->t_us < f->points[f->npoints - 1].t_us)
                PROF_FAIL("points out of time order");
            f->npoints++;
        } else if (strcmp(stage, "stacks") == 0 && strcmp(line, "maps") == 0) {
            stage = "maps";
            f->maps = strdup(next);
            for (const char *m = next; *m; m++)
                f->maps_lines += *m == '\n';
            break;
        } else if (strncmp(line, "stack ", 6) == 0) {
            if (f->nstacks == cap) {
                cap = cap ? 2 * cap : 64;
                f->stacks = realloc(f->stacks, (size_t)cap * sizeof *f->stacks);
                CHECK(f->stacks != NULL, "out of memory");
            }
            struct ox_prof_stack *s = &f->stacks[f->nstacks++];
            memset(s, 0, sizeof *s);
            uint64_t *fields[12] = {&s->alloc_samples, &s->alloc_objects, &s->alloc_bytes,
                                    &s->inuse_samples, &s->inuse_objects, &s->inuse_bytes,
                                    &s->peak_samples,  &s->peak_objects,  &s->peak_bytes,
                                    &s->short_samples, &s->short_objects, &s->short_bytes};
            char *save, *tok = strtok_r(line + 6, " ", &save);
            for (int i = 0; i < 12; i++) {
                if (tok == NULL || !ox_prof_number(tok, fields[i]))
                    PROF_FAIL("bad counter %d in stack line", i);
                tok = strtok_r(NULL, " ", &save);
            }
            if (tok == NULL || !ox_prof_number(tok, &v) || v > OX_PROF_MAX_DEPTH)
                PROF_FAIL("bad depth in stack line");
            s->depth = (int)v;
            for (int i = 0; i < s->depth; i++) {
                tok = strtok_r(NULL, " ", &save);
                if (tok == NULL || strncmp(tok, "0x", 2) != 0 || tok[2] == '\0' ||
                    strspn(tok + 2, "0123456789abcdef") != strlen(tok + 2))
                    PROF_FAIL("bad address %d in stack line", i);
                s->pcs[i] = (uintptr_t)strtoull(tok + 2, NULL, 16);
            }
            if (strtok_r(NULL, " ", &save) != NULL)
                PROF_FAIL("more addresses than the depth says");
            if (s->alloc_samples == 0 || s->inuse_samples > s->alloc_samples ||
                s->inuse_bytes > s->alloc_bytes || s->peak_samples > s->alloc_samples ||
                s->peak_bytes > s->alloc_bytes ||
                s->short_samples + s->inuse_samples > s->alloc_samples ||
                s->short_bytes + s->inuse_bytes > s->alloc_bytes)
                PROF_FAIL("inconsistent counters");
            sum_peak += s->peak_bytes;
            sum_alloc += s->alloc_bytes;
            sum_live += s->inuse_bytes;
        } else {
            PROF_FAIL("unexpected line '%.60s' in the %s", line, stage);
        }
    }
    if (strcmp(stage, "maps") != 0)
        PROF_FAIL("no maps section");
    if (sum_alloc != f->total_alloc || sum_live != f->total_live)
        PROF_FAIL("totals %llu %llu do not match the stacks (%llu %llu)",
                  (unsigned long long)f->total_alloc, (unsigned long long)f->total_live,
                  (unsigned long long)sum_alloc, (unsigned long long)sum_live);
    if (sum_peak != f->peak_bytes)
        PROF_FAIL("peak %llu does not match the stacks' peak bytes (%llu)",
                  (unsigned long long)f->peak_bytes, (unsigned long long)sum_peak);
    if (f->npoints == 0 && strcmp(f->reason, "exit") == 0)
        PROF_FAIL("no timeline point in an exit dump");
    if (f->maps_lines < 5 || strstr(f->maps, "[stack]") == NULL)
        PROF_FAIL("the maps section is not /proc/self/maps");
    ok = 1;
out:
#undef PROF_FAIL
    free(text);
    if (!ok)
        ox_prof_free(f);
    return ok;
}

/* Reads "DIR/oxprof.PID.TAG.raw" (TAG: "exit" or a 4-digit number); fails the test if it cannot. */
static inline void ox_prof_read_or_fail(const char *dir, long pid, const char *tag,
                                        struct ox_prof_file *f)
{
    char path[4200], err[512];
    snprintf(path, sizeof path, "%s/oxprof.%ld.%s.raw", dir, pid, tag);
    CHECK(ox_prof_read(path, f, err, sizeof err), "%s", err);
    CHECK(f->pid == pid, "%s: pid %ld", path, f->pid);
}

/*
 * The start of a test's main whose worker runs profiled: in the worker process
 * ("PROG worker MODE"), runs `worker` and returns 1 (main then returns 0); otherwise runs
 * the worker MODE profiled at INTERVAL into a new directory (written to `dir`), reads the
 * exit profile of the PID the worker said into `f`, and returns 0.
 */
static inline int ox_prof_worker_or_profile(int argc, char **argv, void (*worker)(void),
                                            const char *mode, const char *interval, char *dir,
                                            size_t dir_size, struct ox_child *r,
                                            struct ox_prof_file *f)
{
    if (argc > 2 && strcmp(argv[1], "worker") == 0) {
        worker();
        return 1;
    }
    ox_require_active();
    ox_prof_run_profiled(mode, interval, dir, dir_size, r);
    ox_prof_read_or_fail(dir, (long)ox_prof_said(r, "PID"), "exit", f);
    return 0;
}

/* 1 if `pc` lies in a mapping of `f` whose line mentions `name`. */
static inline int ox_prof_pc_in_object(const struct ox_prof_file *f, uintptr_t pc, const char *name)
{
    for (const char *line = f->maps; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && pc >= lo && pc < hi) {
            char copy[1024];
            snprintf(copy, sizeof copy, "%.*s", (int)(len < 1000 ? len : 1000), line);
            return strstr(copy, name) != NULL;
        }
        line = nl ? nl + 1 : NULL;
    }
    return 0;
}

#endif /* OXTEST_PROF_H */
