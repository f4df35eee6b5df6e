/*
 * Guarded sampling (OXMALLOC_GUARD=1, a high rate through
 * OXMALLOC_GUARD_INTERVAL): each case is a child process (the test runs itself
 * again: /proc/self/exe --case NAME, so it works linked and preloaded alike).
 *
 * Errors, each committed in a loop by a program that would otherwise go on
 * (reads, so that an unguarded block's neighbours are not damaged), must be
 * found within a bounded number of runs (MAX_RUNS, each of ROUNDS blocks):
 *   - use after free, overflow, underflow: killed by SIGSEGV after the report
 *         oxmalloc: guard: <kind>: read at 0xA, offset N of a 100-byte block at 0xB
 *     with A = B + N, whose allocation stack (and free stack, after a free)
 *     starts in the test's own allocating (freeing) function: the child says
 *     where those functions are, the parent checks the report's frame #0;
 *   - a one-byte write past the end (inside the block's 16-byte rounding, so no
 *     fault): SIGABRT after "heap overflow: write at ..., found by free()";
 *   - a double free of a guarded block (every block guarded): SIGABRT after
 *     the usual "oxmalloc: free(): double free or corruption 0x..." line and
 *     "oxmalloc: guard: double free: free() of a 100-byte block ...";
 *   - a use after free in a fork child.
 * Chaining: a program with its own SIGSEGV handler, installed before or after
 * the guard's, still gets it called for a fault outside the guard's memory
 * (and after the report, for a guarded one), and the guard's handler is back
 * on top after the program replaced it.
 * Controls: a correct program (sizes, calloc, realloc, aligned, threads, fork)
 * runs silently and correctly with the mode on at the highest rate; the
 * erring programs run silently to the end with the mode off, and the use after
 * free does with it on in check mode and in hardened mode (which turn it off).
 */
#include "child.h"
#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>

extern char **environ;

#define CHILD_TIMEOUT_S 30.0
#define MAX_RUNS 5
#define ROUNDS 3000
#define SIZE 100

static const char *const case_names[] = {
    "uaf", "overflow", "underflow", "overwrite", "double_free", "uaf_fork",
    "own_handler_before", "own_handler_after", "own_handler_uaf", "correct",
};
enum {
    UAF, OVERFLOW, UNDERFLOW, OVERWRITE, DOUBLE_FREE, UAF_FORK,
    OWN_BEFORE, OWN_AFTER, OWN_UAF, CORRECT, NCASES
};

__attribute__((noinline)) static char *alloc_site(size_t n)
{
    char *p = malloc(n);
    if (p != NULL)
        memset(p, 'a', n);
    return p;
}

__attribute__((noinline)) static void free_site(char *p)
{
    free(p);
    __asm__ volatile("" ::: "memory"); /* not a tail call: free's caller is here */
}

static void say_sites(void)
{
    ox_child_say("alloc_fn", "%p", (void *)alloc_site);
    ox_child_say("free_fn", "%p", (void *)free_site);
}

static volatile char sink;

/* The erring loops: each block is misused once; only a guarded one faults. */
static void misuse_loop(int kind)
{
    for (int i = 0; i < ROUNDS; i++) {
        char *volatile p = alloc_site(SIZE);
        switch (kind) {
        case UAF:
            free_site(p);
            sink = p[40];
            break;
        case OVERFLOW:
            sink = p[SIZE + 12];
            free_site(p);
            break;
        case UNDERFLOW:
            sink = p[-16];
            free_site(p);
            break;
        case OVERWRITE:
            p[SIZE] = 'x';
            free_site(p);
            break;
        }
    }
}

static void own_handler(int signo, siginfo_t *info, void *context)
{
    (void)signo;
    (void)context;
    char line[96];
    int n = snprintf(line, sizeof line, "own_handler=%p\n", info->si_addr);
    ssize_t ignored = write(1, line, (size_t)n);
    (void)ignored;
    _exit(42);
}

static void install_own(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = own_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGSEGV, &sa, NULL) == 0, "sigaction: %s", strerror(errno));
}

/* 1 when the SIGSEGV handler in place is not the program's. */
static int someone_else_on_top(void)
{
    struct sigaction cur;
    sigaction(SIGSEGV, NULL, &cur);
    return (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction != own_handler;
}

/* Enough small blocks to make guarded ones at the test's rate. */
static void churn(void)
{
    for (int i = 0; i < 2000; i++)
        free_site(alloc_site(SIZE));
}

static void fault_outside(void)
{
    char *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(page != MAP_FAILED, "mmap");
    ox_child_say("fault_at", "%p", (void *)(page + 8));
    sink = page[8];
}

struct thread_arg {
    unsigned seed;
    int ok;
};

static void *correct_worker(void *argp)
{
    struct thread_arg *arg = argp;
    unsigned seed = arg->seed;
    enum { LIVE = 64 };
    char *live[LIVE] = {0};
    size_t sizes[LIVE] = {0};
    arg->ok = 1;
    for (int i = 0; i < 20000; i++) {
        int k = (int)(rand_r(&seed) % LIVE);
        if (live[k] != NULL) {
            for (size_t j = 0; j < sizes[k]; j++)
                if (live[k][j] != (char)(k + j))
                    arg->ok = 0;
            if (rand_r(&seed) % 4 == 0) {
                size_t n = 1 + rand_r(&seed) % 3000;
                char *q = realloc(live[k], n);
                if (q == NULL) {
                    arg->ok = 0;
                    continue;
                }
                for (size_t j = 0; j < n; j++)
                    q[j] = (char)(k + j);
                live[k] = q;
                sizes[k] = n;
                continue;
            }
            free(live[k]);
            live[k] = NULL;
        }
        size_t n = rand_r(&seed) % 5000;
        int how = (int)(rand_r(&seed) % 3);
        char *p = how == 0 ? malloc(n) : how == 1 ? calloc(1, n) : aligned_alloc(64, (n + 63) & ~(size_t)63);
        if (p == NULL && n != 0) {
            arg->ok = 0;
            continue;
        }
        if (how == 1)
            for (size_t j = 0; j < n; j++)
                if (p[j] != 0)
                    arg->ok = 0;
        if (how == 2 && ((uintptr_t)p & 63) != 0)
            arg->ok = 0;
        if (how == 2)
            n = (n + 63) & ~(size_t)63;
        if (malloc_usable_size(p) < n)
            arg->ok = 0;
        for (size_t j = 0; j < n; j++)
            p[j] = (char)(k + j);
        live[k] = p;
        sizes[k] = n;
    }
    for (int k = 0; k < LIVE; k++)
        free(live[k]);
    return NULL;
}

static int run_correct(void)
{
    pthread_t t[3];
    struct thread_arg args[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (struct thread_arg){.seed = 7u + (unsigned)i};
        CHECK(pthread_create(&t[i], NULL, correct_worker, &args[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        CHECK(args[i].ok, "thread %d saw wrong contents or sizes", i);
    }
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        struct thread_arg a = {.seed = 99};
        correct_worker(&a);
        _exit(a.ok ? 0 : 3);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork child: status %#x", status);
    ox_child_say("survived", "1");
    return 0;
}

static int run_case(int c)
{
    say_sites();
    switch (c) {
    case UAF:
    case OVERFLOW:
    case UNDERFLOW:
    case OVERWRITE:
        misuse_loop(c);
        break;
    case DOUBLE_FREE: {
        char *p = alloc_site(SIZE);
        free_site(p);
        free_site(p);
        break;
    }
    case UAF_FORK: {
        churn();
        pid_t pid = fork();
        CHECK(pid >= 0, "fork");
        if (pid == 0) {
            misuse_loop(UAF);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        /* Say how the fork child ended: 100 + its signal. */
        return WIFSIGNALED(status) ? 100 + WTERMSIG(status) : WEXITSTATUS(status);
    }
    case OWN_BEFORE:
        install_own();
        churn();
        ox_child_say("guard_on_top", "%d", someone_else_on_top());
        fault_outside();
        break;
    case OWN_AFTER:
        churn();
        install_own();
        churn();
        ox_child_say("guard_on_top", "%d", someone_else_on_top());
        fault_outside();
        break;
    case OWN_UAF:
        install_own();
        misuse_loop(UAF);
        break;
    case CORRECT:
        return run_correct();
    }
    ox_child_say("survived", "1");
    return 0;
}

/* ---- the parent ---- */

static const char *extra_var; /* one more variable for the next run, or NULL */

static char **case_env(int guard, const char *interval)
{
    static char *env[4096];
    static char interval_var[64];
    int n = 0;
    for (char **e = environ; *e != NULL && n < 4090; e++)
        if (strncmp(*e, "OXMALLOC_", 9) != 0)
            env[n++] = *e;
    if (guard) {
        env[n++] = "OXMALLOC_GUARD=1";
        snprintf(interval_var, sizeof interval_var, "OXMALLOC_GUARD_INTERVAL=%s", interval);
        env[n++] = interval_var;
    }
    if (extra_var != NULL)
        env[n++] = (char *)extra_var;
    env[n] = NULL;
    return env;
}

static struct ox_child r;

static void run_self(int c, int guard, const char *interval)
{
    char *argv[] = {"guard", "--case", (char *)case_names[c], NULL};
    ox_child_exec("/proc/self/exe", argv, case_env(guard, interval), CHILD_TIMEOUT_S, &r);
    CHECK(!r.spawn_failed, "could not run the test again: %s", strerror(errno));
    CHECK(!r.timed_out, "case %s hung; stderr: %s", case_names[c], r.err);
}

static uintptr_t said_pointer(const char *key)
{
    char value[64];
    CHECK(ox_child_value(&r, key, value, sizeof value), "the child did not say %s; stdout: %s",
          key, r.out);
    return (uintptr_t)strtoull(value, NULL, 16);
}

/*
 * Frame #0 of the stack after the line containing `title`: its address, 0
 * when there is none.
 */
static uintptr_t first_frame_after(const char *title)
{
    const char *at = strstr(r.err, title);
    if (at == NULL)
        return 0;
    const char *frame = strstr(at, "#0 0x");
    if (frame == NULL)
        return 0;
    return (uintptr_t)strtoull(frame + 3, NULL, 16);
}

/* Return addresses inside a small function lie this close to its start. */
#define FUNCTION_SPAN 256

static void check_in(uintptr_t pc, uintptr_t fn, const char *what)
{
    CHECK(pc >= fn && pc < fn + FUNCTION_SPAN,
          "frame #0 of the %s stack (%#lx) is not in the test's %s function (%#lx); stderr:\n%s",
          what, (unsigned long)pc, what, (unsigned long)fn, r.err);
}

/* Checks "<kind>: <access> at 0xA, offset N of a 100-byte block at 0xB" with A = B + N. */
static void check_headline(const char *kind, const char *access, long offset)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "oxmalloc: guard: %s: %s at 0x", kind, access);
    const char *line = strstr(r.err, prefix);
    CHECK(line != NULL, "no '%s' line; stderr:\n%s", prefix, r.err);
    char *end = NULL;
    uintptr_t a = (uintptr_t)strtoull(line + strlen(prefix), &end, 16);
    char expect[96];
    snprintf(expect, sizeof expect, ", offset %ld of a %d-byte block at 0x", offset, SIZE);
    CHECK(strncmp(end, expect, strlen(expect)) == 0, "expected '%s' after the address; stderr:\n%s",
          expect, r.err);
    uintptr_t b = (uintptr_t)strtoull(end + strlen(expect), NULL, 16);
    CHECK(a == b + (uintptr_t)offset, "address %#lx is not block %#lx + %ld", (unsigned long)a,
          (unsigned long)b, offset);
}

/* Runs case c with the mode on until a run stops by `signo`; returns the runs it took. */
static int run_until_caught(int c, int signo, const char *interval)
{
    for (int run = 1; run <= MAX_RUNS; run++) {
        run_self(c, 1, interval);
        if (r.signaled && r.signo == signo)
            return run;
        CHECK(r.exited && r.exit_code == 0 && strstr(r.err, "oxmalloc") == NULL,
              "case %s: run %d %s; stderr:\n%s", case_names[c], run, ox_child_describe(&r), r.err);
    }
    CHECK(0, "case %s: not caught in %d runs of %d blocks", case_names[c], MAX_RUNS, ROUNDS);
    return 0;
}

int main(int argc, char **argv)
{
    ox_require_active();
    if (argc == 3 && strcmp(argv[1], "--case") == 0) {
        for (int c = 0; c < NCASES; c++)
            if (strcmp(argv[2], case_names[c]) == 0)
                return run_case(c);
        return 2;
    }
    char value[64];
    int verbose = getenv("OXTEST_VERBOSE") != NULL;
    /* One block in about 40 (100-byte blocks, 4 KiB mean interval). */
    const char *high = "4096";

    /* Faults: use after free, overflow, underflow. */
    struct {
        int c;
        const char *kind;
        long offset;
        int freed;
    } faults[] = {
        {UAF, "use after free", 40, 1},
        {OVERFLOW, "heap overflow", SIZE + 12, 0},
        {UNDERFLOW, "heap underflow", -16, 0},
    };
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
        int runs = run_until_caught(faults[i].c, SIGSEGV, high);
        check_headline(faults[i].kind, "read", faults[i].offset);
        check_in(first_frame_after("the block was allocated by thread"), said_pointer("alloc_fn"),
                 "allocation");
        if (faults[i].freed)
            check_in(first_frame_after("and freed by thread"), said_pointer("free_fn"), "free");
        else
            CHECK(strstr(r.err, "freed by thread") == NULL, "a free stack for a live block:\n%s",
                  r.err);
        CHECK(!ox_child_value(&r, "survived", value, sizeof value), "went on after the report");
        if (verbose)
            fprintf(stderr, "%s: caught in run %d:\n%s", case_names[faults[i].c], runs, r.err);
    }

    /* A write inside the block's rounding: found at free. */
    run_until_caught(OVERWRITE, SIGABRT, high);
    check_headline("heap overflow", "write", SIZE);
    CHECK(strstr(r.err, "(0 bytes past its end), found by free()") != NULL, "stderr:\n%s", r.err);
    CHECK(strstr(r.err, "oxmalloc: free(): write past the end of the block 0x") != NULL,
          "no usual line; stderr:\n%s", r.err);
    check_in(first_frame_after("the block is being freed by thread"), said_pointer("free_fn"), "free");
    check_in(first_frame_after("the block was allocated by thread"), said_pointer("alloc_fn"),
             "allocation");

    /* Double free, every block guarded. */
    run_self(DOUBLE_FREE, 1, "1");
    CHECK(ox_child_aborted(&r), "double free: %s; stderr:\n%s", ox_child_describe(&r), r.err);
    CHECK(strstr(r.err, "oxmalloc: guard: double free: free() of a 100-byte block at 0x") != NULL,
          "stderr:\n%s", r.err);
    static const char usual[] = "oxmalloc: free(): double free or corruption 0x";
    CHECK(strncmp(r.err, usual, strlen(usual)) == 0,
          "the report does not start with the usual line; stderr:\n%s", r.err);
    check_in(first_frame_after("this free was called by thread"), said_pointer("free_fn"), "free");
    check_in(first_frame_after("and first freed by thread"), said_pointer("free_fn"), "free");
    check_in(first_frame_after("the block was allocated by thread"), said_pointer("alloc_fn"),
             "allocation");

    /* In a fork child. */
    run_self(UAF_FORK, 1, high);
    CHECK(r.exited && r.exit_code == 100 + SIGSEGV, "uaf_fork: %s; stderr:\n%s",
          ox_child_describe(&r), r.err);
    check_headline("use after free", "read", 40);

    /* The program's own handler. */
    int own_cases[] = {OWN_BEFORE, OWN_AFTER};
    for (int i = 0; i < 2; i++) {
        run_self(own_cases[i], 1, high);
        CHECK(r.exited && r.exit_code == 42, "%s: %s; stderr:\n%s", case_names[own_cases[i]],
              ox_child_describe(&r), r.err);
        CHECK(said_pointer("own_handler") == said_pointer("fault_at"), "handler saw another address");
        CHECK(ox_child_value(&r, "guard_on_top", value, sizeof value) && strcmp(value, "1") == 0,
              "%s: the guard's handler is not installed (so the case tests nothing)",
              case_names[own_cases[i]]);
        CHECK(strstr(r.err, "oxmalloc") == NULL, "stderr:\n%s", r.err);
    }
    for (int run = 1;; run++) {
        run_self(OWN_UAF, 1, high);
        if (strstr(r.err, "oxmalloc: guard:") != NULL)
            break;
        CHECK(run < MAX_RUNS, "own_handler_uaf: not caught in %d runs", MAX_RUNS);
    }
    CHECK(r.exited && r.exit_code == 42, "own_handler_uaf: %s; stderr:\n%s", ox_child_describe(&r),
          r.err);
    check_headline("use after free", "read", 40);

    /* Correct program: silent and correct, the mode on at the highest rate and off. */
    const char *rates[] = {"1", high};
    for (int i = 0; i < 2; i++) {
        run_self(CORRECT, 1, rates[i]);
        CHECK(r.exited && r.exit_code == 0 && ox_child_value(&r, "survived", value, sizeof value),
              "correct, interval %s: %s; stderr:\n%s", rates[i], ox_child_describe(&r), r.err);
        CHECK(r.err_len == 0, "correct, interval %s: stderr:\n%s", rates[i], r.err);
    }
    /* Check and hardened mode turn the guard off: a read after free (which neither of
     * them sees) runs to the end, at a rate at which the guard finds it every time. */
    const char *modes[] = {"OXMALLOC_CHECK=1", "OXMALLOC_HARDEN=1"};
    for (int i = 0; i < 2; i++) {
        extra_var = modes[i];
        run_self(UAF, 1, high);
        extra_var = NULL;
        CHECK(r.exited && r.exit_code == 0 && ox_child_value(&r, "survived", value, sizeof value),
              "%s with the guard: %s; stderr:\n%s", modes[i], ox_child_describe(&r), r.err);
        CHECK(strstr(r.err, "oxmalloc: guard") == NULL, "%s: stderr:\n%s", modes[i], r.err);
    }
    /* The mode off: the erring programs (reads only) and the correct one run to the end. */
    int off_cases[] = {UAF, OVERFLOW, UNDERFLOW, CORRECT};
    for (int i = 0; i < 4; i++) {
        run_self(off_cases[i], 0, "");
        CHECK(r.exited && r.exit_code == 0 && ox_child_value(&r, "survived", value, sizeof value),
              "off, %s: %s; stderr:\n%s", case_names[off_cases[i]], ox_child_describe(&r), r.err);
        CHECK(r.err_len == 0, "off, %s: stderr:\n%s", case_names[off_cases[i]], r.err);
    }
    printf("guard: ok\n");
    return 0;
}
