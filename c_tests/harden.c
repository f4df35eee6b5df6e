/*
 * Hardened mode (OXMALLOC_HARDEN=1, read from the environment at start-up):
 * one case per class of heap error, each committed by a child process (the
 * test runs itself again: /proc/self/exe --case N, so it works linked and
 * preloaded alike), for small, medium and huge blocks where the class
 * applies. With OXMALLOC_HARDEN=1 every case must stop the program:
 *   - by SIGABRT after the line
 *         oxmalloc: CALL(): <what> 0x<pointer>
 *     naming the call that found it and the block's address; or
 *   - by SIGSEGV, for the cases that touch memory the hardened mode makes
 *     inaccessible (malloc(0)'s result, a freed medium or huge block).
 *
 * The same cases are also run in the default mode and in check mode
 * (OXMALLOC_CHECK=1), and the table of what each mode stops is printed
 * (the default and check columns are what those modes do today, reported,
 * not asserted: they are the baseline the hardened mode is measured
 * against).
 *
 * Controls, asserted: a correct program (mixed calls, threads, sized frees
 * and sized deletes with the right sizes, every usable byte written) runs
 * to completion, silently and with intact contents, with and without
 * OXMALLOC_HARDEN; with it on, fresh small blocks from malloc read as zeros
 * and so does a small block right after free.
 */
#include "child.h"
#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>

extern char **environ;

#define CHILD_TIMEOUT_S 30.0
#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

enum kind {
    DOUBLE_FREE,         /* free twice, nothing in between */
    DOUBLE_FREE_DELAYED, /* free, allocate blocks of the same size, free again */
    REALLOC_FREED,       /* realloc of a freed block after allocations in between */
    BAD_INTERIOR,        /* p + 16 */
    BAD_NEVER_RETURNED,  /* a static object */
    BAD_UNALIGNED,       /* p + 1 */
    BAD_UNUSED,          /* an address in our memory no block was handed out at */
    OVERFLOW,            /* `past` bytes written after the requested size */
    UAF_WRITE,           /* write after free, then the program goes on allocating */
    UAF_WRITE_REUSED,    /* same, after blocks of the same size were allocated */
    UAF_READ,            /* read after free */
    ZERO_WRITE,          /* write through malloc(0)'s result */
    ZERO_READ,           /* read through malloc(0)'s result */
    FREE_SIZED_WRONG,    /* free_sized(p, size / 2) */
    DELETE_SIZED_WRONG,  /* operator delete(p, size / 2) after operator new(size) */
};

enum bad_call { C_FREE, C_REALLOC, C_USABLE };
static const char *const bad_call_name[] = {"free", "realloc", "malloc_usable_size"};

struct harden_case {
    const char *name;
    enum kind kind;
    size_t size;
    enum bad_call call; /* for the bad-pointer cases */
    size_t past;        /* OVERFLOW */
    const char *report_call; /* the call named in the report (NULL: dies by SIGSEGV) */
    const char *what;        /* what the report says */
};

static const char invalid[] = "invalid pointer";
static const char dfree[] = "double free";
static const char over[] = "write past the end of the block";
static const char uaf[] = "write after free";
static const char wrong_size[] = "size does not match the block";

#define S 100
#define M (200 * KiB)
#define H (6 * MiB)

static const struct harden_case cases[] = {
    {"double free, small", DOUBLE_FREE, S, 0, 0, "free", dfree},
    {"double free, medium", DOUBLE_FREE, M, 0, 0, "free", dfree},
    {"double free, huge", DOUBLE_FREE, H, 0, 0, "free", dfree},
    {"delayed double free, small", DOUBLE_FREE_DELAYED, S, 0, 0, "free", dfree},
    {"delayed double free, medium", DOUBLE_FREE_DELAYED, M, 0, 0, "free", dfree},
    {"delayed double free, huge", DOUBLE_FREE_DELAYED, H, 0, 0, "free", dfree},
    {"realloc of a freed block, small", REALLOC_FREED, S, 0, 0, "realloc", dfree},
    {"realloc of a freed block, medium", REALLOC_FREED, M, 0, 0, "realloc", dfree},
    {"free of an interior pointer, small", BAD_INTERIOR, S, C_FREE, 0, "free", invalid},
    {"free of an interior pointer, medium", BAD_INTERIOR, M, C_FREE, 0, "free", invalid},
    {"free of an interior pointer, huge", BAD_INTERIOR, H, C_FREE, 0, "free", invalid},
    {"realloc of an interior pointer, small", BAD_INTERIOR, S, C_REALLOC, 0, "realloc", invalid},
    {"realloc of an interior pointer, huge", BAD_INTERIOR, H, C_REALLOC, 0, "realloc", invalid},
    {"malloc_usable_size of an interior pointer, small", BAD_INTERIOR, S, C_USABLE, 0,
     "malloc_usable_size", invalid},
    {"malloc_usable_size of an interior pointer, medium", BAD_INTERIOR, M, C_USABLE, 0,
     "malloc_usable_size", invalid},
    {"free of a pointer never returned", BAD_NEVER_RETURNED, 0, C_FREE, 0, "free", invalid},
    {"realloc of a pointer never returned", BAD_NEVER_RETURNED, 0, C_REALLOC, 0, "realloc",
     invalid},
    {"malloc_usable_size of a pointer never returned", BAD_NEVER_RETURNED, 0, C_USABLE, 0,
     "malloc_usable_size", invalid},
    {"free of an unaligned pointer, small", BAD_UNALIGNED, S, C_FREE, 0, "free", invalid},
    {"free of an unaligned pointer, huge", BAD_UNALIGNED, H, C_FREE, 0, "free", invalid},
    {"realloc of an unaligned pointer, small", BAD_UNALIGNED, S, C_REALLOC, 0, "realloc",
     invalid},
    {"malloc_usable_size of an unaligned pointer, small", BAD_UNALIGNED, S, C_USABLE, 0,
     "malloc_usable_size", invalid},
    {"free of a pointer into unused memory", BAD_UNUSED, S, C_FREE, 0, "free", invalid},
    {"realloc of a pointer into unused memory", BAD_UNUSED, S, C_REALLOC, 0, "realloc",
     invalid},
    {"malloc_usable_size of a pointer into unused memory", BAD_UNUSED, S, C_USABLE, 0,
     "malloc_usable_size", invalid},
    {"1 byte past the end, small", OVERFLOW, S, 0, 1, "free", over},
    {"1 byte past the end, medium", OVERFLOW, M, 0, 1, "free", over},
    {"1 byte past the end, huge", OVERFLOW, H, 0, 1, "free", over},
    {"8 bytes past the end, small", OVERFLOW, S, 0, 8, "free", over},
    {"8 bytes past the end, medium", OVERFLOW, M, 0, 8, "free", over},
    {"8 bytes past the end, huge", OVERFLOW, H, 0, 8, "free", over},
    {"1 byte past the end, 16-byte block", OVERFLOW, 16, 0, 1, "free", over},
    {"write after free, small", UAF_WRITE, S, 0, 0, "malloc", uaf},
    {"write after free, medium", UAF_WRITE, M, 0, 0, NULL, NULL},
    {"write after free, huge", UAF_WRITE, H, 0, 0, NULL, NULL},
    {"write after free and reuse, small", UAF_WRITE_REUSED, S, 0, 0, "malloc", uaf},
    {"write after free and reuse, medium", UAF_WRITE_REUSED, M, 0, 0, NULL, NULL},
    {"read after free, medium", UAF_READ, M, 0, 0, NULL, NULL},
    {"read after free, huge", UAF_READ, H, 0, 0, NULL, NULL},
    {"write through malloc(0)", ZERO_WRITE, 0, 0, 0, NULL, NULL},
    {"read through malloc(0)", ZERO_READ, 0, 0, 0, NULL, NULL},
    {"free_sized with a wrong size, small", FREE_SIZED_WRONG, S, 0, 0, "free_sized", wrong_size},
    {"free_sized with a wrong size, medium", FREE_SIZED_WRONG, M, 0, 0, "free_sized",
     wrong_size},
    {"free_sized with a wrong size, huge", FREE_SIZED_WRONG, H, 0, 0, "free_sized", wrong_size},
    {"sized delete with a wrong size, small", DELETE_SIZED_WRONG, S, 0, 0, "operator delete",
     wrong_size},
    {"sized delete with a wrong size, medium", DELETE_SIZED_WRONG, M, 0, 0, "operator delete",
     wrong_size},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

/* Case numbers beyond the table: the correct program, the zeroing guarantees. */
#define CASE_CORRECT NCASES
#define CASE_ZEROED (NCASES + 1)

static void announce(const void *p)
{
    ox_child_say("ptr", "0x%lx", (unsigned long)(uintptr_t)p);
}

static unsigned char *must_alloc(size_t size)
{
    unsigned char *p = malloc(ox_opaque(size));
    if (p == NULL) {
        ox_child_say("setup", "malloc(%zu) failed", size);
        _exit(90);
    }
    return p;
}

/* The program keeps allocating and freeing blocks of `size` (what a program
 * goes on doing after its bug): enough frees to push any freed block out of
 * a quarantine. */
static void churn(size_t size, int rounds)
{
    void *keep[64];
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < 64; i++) {
            keep[i] = must_alloc(size);
            ((volatile unsigned char *)keep[i])[0] = 1;
        }
        for (int i = 0; i < 64; i++)
            free(keep[i]);
    }
}

static void bad_call(enum bad_call call, void *p)
{
    announce(p);
    switch (call) {
    case C_FREE:
        free(ox_opaque_ptr(p));
        break;
    case C_REALLOC:
        ox_escape(realloc(ox_opaque_ptr(p), ox_opaque(200)));
        break;
    case C_USABLE:
        ox_child_say("usable", "%zu", malloc_usable_size(ox_opaque_ptr(p)));
        break;
    }
}

static _Alignas(64) unsigned char never_returned[256];

static int run_case(const struct harden_case *c)
{
    size_t n = c->size;
    switch (c->kind) {
    case DOUBLE_FREE: {
        unsigned char *p = must_alloc(n);
        free(p);
        announce(p);
        free(ox_opaque_ptr(p));
        break;
    }
    case DOUBLE_FREE_DELAYED:
    case REALLOC_FREED: {
        int between = n <= 16 * KiB ? 200 : n <= MiB ? 20 : 4;
        void *blocks[200];
        unsigned char *p = must_alloc(n);
        free(p);
        /* In a LIFO allocator one of these is the freed block again, and the
         * second free frees a live block of the program. */
        for (int i = 0; i < between; i++)
            blocks[i] = must_alloc(n);
        announce(p);
        if (c->kind == REALLOC_FREED)
            ox_escape(realloc(ox_opaque_ptr(p), ox_opaque(n + 1000)));
        else
            free(ox_opaque_ptr(p));
        ox_escape(blocks);
        break;
    }
    case BAD_INTERIOR:
        bad_call(c->call, must_alloc(n) + 16);
        break;
    case BAD_NEVER_RETURNED:
        bad_call(c->call, never_returned + 64);
        break;
    case BAD_UNALIGNED:
        bad_call(c->call, must_alloc(n) + 1);
        break;
    case BAD_UNUSED: {
        /* Inside the allocator's memory, far past the only blocks handed out
         * there, at a 16-byte boundary. */
        unsigned char *p = must_alloc(n);
        bad_call(c->call, (void *)(((uintptr_t)p + 40 * KiB) & ~(uintptr_t)15));
        break;
    }
    case OVERFLOW: {
        unsigned char *p = must_alloc(n);
        memset(p, 0x11, n);
        for (size_t i = 0; i < c->past; i++)
            ((volatile unsigned char *)p)[n + i] = (unsigned char)(0x40 + i);
        announce(p);
        free(ox_opaque_ptr(p));
        break;
    }
    case UAF_WRITE:
    case UAF_WRITE_REUSED: {
        unsigned char *p = must_alloc(n);
        memset(p, 0x11, n);
        free(p);
        if (c->kind == UAF_WRITE_REUSED) {
            void *q[8];
            for (int i = 0; i < 8; i++)
                q[i] = must_alloc(n);
            ox_escape(q);
        }
        announce(p);
        ((volatile unsigned char *)ox_opaque_ptr(p))[n / 2] = 0x41;
        churn(n, n <= 16 * KiB ? 64 : 4);
        break;
    }
    case UAF_READ: {
        unsigned char *p = must_alloc(n);
        memset(p, 0x11, n);
        free(p);
        announce(p);
        ox_child_say("read", "%d", ((volatile unsigned char *)ox_opaque_ptr(p))[n / 2]);
        break;
    }
    case ZERO_WRITE:
    case ZERO_READ: {
        unsigned char *p = malloc(ox_opaque(0));
        if (p == NULL)
            return 0;
        announce(p);
        if (c->kind == ZERO_WRITE)
            ((volatile unsigned char *)p)[0] = 1;
        else
            ox_child_say("read", "%d", ((volatile unsigned char *)p)[0]);
        free(p);
        break;
    }
    case FREE_SIZED_WRONG: {
        void (*free_sized)(void *, size_t) = (void (*)(void *, size_t))ox_sym("free_sized");
        if (free_sized == NULL)
            return 0;
        unsigned char *p = must_alloc(n);
        announce(p);
        free_sized(ox_opaque_ptr(p), n / 2);
        break;
    }
    case DELETE_SIZED_WRONG: {
        void *(*op_new)(size_t) = (void *(*)(size_t))ox_sym("_Znwm");
        void (*op_delete)(void *, size_t) = (void (*)(void *, size_t))ox_sym("_ZdlPvm");
        if (op_new == NULL || op_delete == NULL || !ox_addr_in_oxmalloc((void *)op_delete))
            return 0; /* not exported by this library: nothing to stop */
        void *p = op_new(n);
        announce(p);
        op_delete(ox_opaque_ptr(p), n / 2);
        break;
    }
    }
    ox_child_say("survived", "1");
    return 0;
}

/* ---- the controls ---- */

struct slot {
    unsigned char *p;
    size_t n;
    uint64_t seed;
    int how; /* 0 malloc/free, 1 free_sized, 2 new/sized delete */
};

#define NSLOTS 256

static size_t random_size(uint64_t *rng)
{
    uint64_t r = ox_rand(rng) % 1000;
    if (r < 750)
        return (size_t)(ox_rand(rng) % 600);
    if (r < 950)
        return (size_t)(ox_rand(rng) % (16 * KiB));
    if (r < 997)
        return 16 * KiB + (size_t)(ox_rand(rng) % (600 * KiB));
    return MiB + (size_t)(ox_rand(rng) % (5 * MiB));
}

static void *correct_worker(void *arg)
{
    struct slot slots[NSLOTS] = {{0}};
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ULL + 1;
    void (*free_sized)(void *, size_t) = (void (*)(void *, size_t))ox_sym("free_sized");
    void *(*op_new)(size_t) = (void *(*)(size_t))ox_sym("_Znwm");
    void (*op_delete)(void *, size_t) = (void (*)(void *, size_t))ox_sym("_ZdlPvm");
    for (int i = 0; i < 20000; i++) {
        struct slot *s = &slots[ox_rand(&rng) % NSLOTS];
        uint64_t op = ox_rand(&rng) % 100;
        if (s->p != NULL) {
            size_t bad = ox_verify(s->p, s->n, s->seed);
            CHECK(bad == SIZE_MAX, "block %p (%zu bytes) corrupted at byte %zu", (void *)s->p,
                  s->n, bad);
            if (op < 25 && s->how == 0) {
                size_t m = random_size(&rng) + 1;
                unsigned char *q = realloc(s->p, m);
                CHECK(q != NULL, "realloc(%zu) failed", m);
                size_t keep = m < s->n ? m : s->n;
                CHECK(ox_verify_part(q, s->n, keep, s->seed) == SIZE_MAX, "realloc lost data");
                s->p = q;
                s->n = m;
                s->seed = ox_rand(&rng);
                ox_fill(q, m, s->seed);
                continue;
            }
            if (s->how == 1)
                free_sized(s->p, s->n);
            else if (s->how == 2)
                op_delete(s->p, s->n);
            else
                free(s->p);
            s->p = NULL;
        } else {
            size_t n = random_size(&rng);
            int how = 0;
            if (op < 10 && free_sized != NULL)
                how = 1;
            else if (op < 20 && op_new != NULL && op_delete != NULL)
                how = 2;
            void *p;
            if (how == 2) {
                p = op_new(n);
            } else if (op < 40) {
                p = calloc(1, n);
                CHECK(p != NULL, "calloc failed");
                for (size_t k = 0; k < n; k += (n > 4096 ? 509 : 1))
                    CHECK(((unsigned char *)p)[k] == 0, "calloc(1, %zu): byte %zu", n, k);
            } else if (op < 55) {
                size_t align = (size_t)16 << (ox_rand(&rng) % 9);
                p = aligned_alloc(align, (n + align - 1) / align * align);
                CHECK(ox_is_aligned(p, align), "aligned_alloc(%zu) gave %p", align, p);
            } else {
                p = malloc(n);
            }
            CHECK(p != NULL, "allocation of %zu bytes failed", n);
            size_t u = malloc_usable_size(p);
            CHECK(u >= n, "usable size %zu < %zu", u, n);
            if (how == 0 && op % 7 == 0) {
                /* Every usable byte is the program's. */
                memset(p, 0x5c, u);
                unsigned char *q = realloc(p, n + 1);
                CHECK(q != NULL, "realloc failed");
                p = q;
            }
            s->p = p;
            s->n = how == 0 && op % 7 == 0 ? n + 1 : n;
            s->seed = ox_rand(&rng);
            s->how = how;
            ox_fill(p, s->n, s->seed);
        }
    }
    for (int i = 0; i < NSLOTS; i++) {
        if (slots[i].p == NULL)
            continue;
        CHECK(ox_verify(slots[i].p, slots[i].n, slots[i].seed) == SIZE_MAX, "corrupted");
        free(slots[i].p);
    }
    /* malloc(0) is unique and freeable; realloc from and to it works. */
    void *z[100];
    for (int i = 0; i < 100; i++) {
        z[i] = malloc(0);
        CHECK(z[i] != NULL, "malloc(0) failed");
        for (int k = 0; k < i; k++)
            CHECK(z[k] != z[i], "malloc(0) gave %p twice", z[i]);
    }
    for (int i = 0; i < 100; i++) {
        if (i % 2 == 0) {
            unsigned char *q = realloc(z[i], 10);
            CHECK(q != NULL, "realloc of malloc(0) failed");
            memset(q, 7, 10);
            free(q);
        } else {
            free(z[i]);
        }
    }
    return NULL;
}

static int run_correct(void)
{
    pthread_t t[3];
    for (uintptr_t i = 0; i < 3; i++)
        CHECK(pthread_create(&t[i], NULL, correct_worker, (void *)(i + 1)) == 0,
              "pthread_create failed");
    correct_worker((void *)(uintptr_t)7);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    ox_child_say("survived", "1");
    return 0;
}

/* Hardened mode's two guarantees on small blocks: fresh ones read as zeros,
 * and so does a freed one (read here right after free, on purpose). */
static int run_zeroed(void)
{
    size_t dirty_fresh = 0, dirty_freed = 0;
    for (int i = 0; i < 2000; i++) {
        size_t n = 8 + (size_t)(i % 500) * 8;
        unsigned char *p = must_alloc(n);
        for (size_t k = 0; k < n; k++)
            dirty_fresh += p[k] != 0;
        memset(p, 0xee, n);
        free(p);
        for (size_t k = 16; k < n; k++)
            dirty_freed += ((volatile unsigned char *)p)[k] != 0;
    }
    ox_child_say("dirty_fresh", "%zu", dirty_fresh);
    ox_child_say("dirty_freed", "%zu", dirty_freed);
    ox_child_say("survived", "1");
    return 0;
}

/* ---- the parent ---- */

enum mode { MODE_DEFAULT, MODE_CHECK, MODE_HARDEN, NMODES };
static const char *const mode_name[NMODES] = {"default", "check", "harden"};

static char **case_env(enum mode mode)
{
    static char *env[4096];
    int n = 0;
    for (char **e = environ; *e != NULL && n < 4092; e++)
        if (strncmp(*e, "OXMALLOC_CHECK=", 15) != 0 && strncmp(*e, "OXMALLOC_HARDEN=", 16) != 0)
            env[n++] = *e;
    if (mode == MODE_CHECK)
        env[n++] = "OXMALLOC_CHECK=1";
    if (mode == MODE_HARDEN)
        env[n++] = "OXMALLOC_HARDEN=1";
    env[n] = NULL;
    return env;
}

static struct ox_child r;

static void run_self(int number, enum mode mode)
{
    char num[16];
    snprintf(num, sizeof num, "%d", number);
    char *argv[] = {"harden", "--case", num, NULL};
    ox_child_exec("/proc/self/exe", argv, case_env(mode), CHILD_TIMEOUT_S, &r);
    CHECK(!r.spawn_failed, "could not run the test again: %s", strerror(errno));
    CHECK(!r.timed_out, "case %d (%s) hung; stderr: %s", number, mode_name[mode], r.err);
}

/* Did the last child stop at its error? */
static int stopped(void)
{
    char value[64];
    return r.signaled && !ox_child_value(&r, "survived", value, sizeof value);
}

int main(int argc, char **argv)
{
    ox_require_active();
    if (argc == 3 && strcmp(argv[1], "--case") == 0) {
        int n = atoi(argv[2]);
        if (n >= 0 && n < NCASES)
            return run_case(&cases[n]);
        if (n == CASE_CORRECT)
            return run_correct();
        if (n == CASE_ZEROED)
            return run_zeroed();
        return 2;
    }
    char value[64];
    int verbose = getenv("OXTEST_VERBOSE") != NULL;

    /* Correct programs: silent and correct in both modes. */
    for (enum mode m = MODE_DEFAULT; m < NMODES; m += 2) {
        run_self(CASE_CORRECT, m);
        CHECK(r.exited && r.exit_code == 0 && ox_child_value(&r, "survived", value, sizeof value),
              "correct program (%s): %s; stderr: %s", mode_name[m], ox_child_describe(&r), r.err);
        CHECK(r.err_len == 0, "correct program (%s) wrote to stderr: %s", mode_name[m], r.err);
    }
    run_self(CASE_ZEROED, MODE_HARDEN);
    CHECK(r.exited && r.exit_code == 0, "zeroing run: %s; stderr: %s", ox_child_describe(&r),
          r.err);
    CHECK_OX(ox_child_value(&r, "dirty_fresh", value, sizeof value) && strcmp(value, "0") == 0,
             "hardened: fresh small blocks had %s non-zero bytes", value);
    CHECK_OX(ox_child_value(&r, "dirty_freed", value, sizeof value) && strcmp(value, "0") == 0,
             "hardened: freed small blocks had %s non-zero bytes", value);

    int stopped_count[NMODES] = {0};
    if (verbose)
        printf("%-52s %-8s %-8s %-8s\n", "error", "default", "check", "harden");
    for (int i = 0; i < NCASES; i++) {
        const struct harden_case *c = &cases[i];
        int stops[NMODES];
        for (enum mode m = 0; m < NMODES; m++) {
            run_self(i, m);
            stops[m] = stopped();
            stopped_count[m] += stops[m];
        }
        if (verbose)
            printf("%-52s %-8s %-8s %-8s\n", c->name, stops[0] ? "stopped" : "-",
                   stops[1] ? "stopped" : "-", stops[2] ? "stopped" : "-");
        /* The assertions, on the hardened run (the last one). */
        if (!ox_active())
            continue;
        CHECK(ox_child_value(&r, "ptr", value, sizeof value),
              "%s: the case did not get to the error: %s; stdout: %s; stderr: %s", c->name,
              ox_child_describe(&r), r.out, r.err);
        uintptr_t ptr = (uintptr_t)strtoull(value, NULL, 16);
        CHECK(stopped(), "%s: not stopped with OXMALLOC_HARDEN=1 (%#lx): %s; stderr: %s",
              c->name, (unsigned long)ptr, ox_child_describe(&r), r.err);
        if (c->report_call == NULL) {
            CHECK(r.signo == SIGSEGV, "%s: %s, expected SIGSEGV; stderr: %s", c->name,
                  ox_child_describe(&r), r.err);
        } else {
            CHECK(ox_child_aborted(&r), "%s: %s, expected SIGABRT; stderr: %s", c->name,
                  ox_child_describe(&r), r.err);
            CHECK(ox_child_has_report(r.err, c->report_call, c->what, ptr),
                  "%s: stderr lacks \"oxmalloc: %s(): %s 0x%lx\"; it was: %s", c->name,
                  c->report_call, c->what, (unsigned long)ptr, r.err);
        }
    }
    printf("harden: %d error cases; stopped: default %d, check %d, harden %d\n", NCASES,
           stopped_count[MODE_DEFAULT], stopped_count[MODE_CHECK], stopped_count[MODE_HARDEN]);
    return 0;
}
