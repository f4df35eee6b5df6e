/*
 * Check mode (OXMALLOC_CHECK=1, read from the environment at start-up).
 *
 * The test runs itself again (/proc/self/exe --case N) with OXMALLOC_CHECK=1
 * added to the environment, once per case; LD_PRELOAD is passed on as
 * inherited, so this works linked and preloaded alike. Each case must die by
 * SIGABRT with the line
 *     oxmalloc: CALL(): <what> 0x<pointer>
 * on stderr:
 *   - a write past the end of a block, even by one byte, for small, medium and
 *     huge blocks (and calloc'd and aligned ones), found at free and at realloc:
 *     "write past the end of the block";
 *   - a double free, or a realloc, of a block after other blocks of its size
 *     were allocated in between (in the default mode these would have reused
 *     it): "double free or use of a freed block".
 * Default checks still apply in check mode (a stack address is reported).
 *
 * Two controls show that it is the variable that makes the difference: the
 * one-byte overflow of a 100-byte block (which stays within
 * malloc_usable_size) runs to completion without OXMALLOC_CHECK, and a
 * program that writes every usable byte of its blocks is never reported.
 *
 * Finally one ordinary run in check mode: a few thousand mixed
 * malloc/calloc/realloc/posix_memalign/aligned_alloc/free calls (and a second
 * thread freeing blocks of the first) that must all succeed with intact
 * contents; freed blocks are not handed out again at once (quarantine), and
 * memory is reused in the end (a long malloc/free loop stays small).
 */
#include "child.h"
#include <malloc.h>
#include <pthread.h>

extern char **environ;

#define CHILD_TIMEOUT_S 20.0
#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

enum kind { OVERFLOW, DOUBLE_FREE, REALLOC_FREED, DEFAULT_CHECK };

struct check_case {
    const char *name;
    enum kind kind;
    size_t size;
    int how;          /* OVERFLOW: 0 malloc, 1 calloc, 2 posix_memalign(64), 3 aligned_alloc(4096) */
    size_t past;      /* OVERFLOW: how many bytes past the end are written */
    const char *call; /* the call that must report it */
    const char *what; /* what the message must say */
};

static const char over[] = "write past the end of the block";
static const char dfree[] = "double free or use of a freed block";

static const struct check_case cases[] = {
    {"1-byte block, 1 byte past, free", OVERFLOW, 1, 0, 1, "free", over},
    {"24-byte block, 1 byte past, free", OVERFLOW, 24, 0, 1, "free", over},
    {"100-byte block, 1 byte past, free", OVERFLOW, 100, 0, 1, "free", over},
    {"1000-byte block, 1 byte past, free", OVERFLOW, 1000, 0, 1, "free", over},
    {"16000-byte block, 1 byte past, free", OVERFLOW, 16000, 0, 1, "free", over},
    {"16 KiB block, 1 byte past, free", OVERFLOW, 16 * KiB, 0, 1, "free", over},
    {"40000-byte block, 1 byte past, free", OVERFLOW, 40000, 0, 1, "free", over},
    {"300 KiB block, 1 byte past, free", OVERFLOW, 300 * KiB, 0, 1, "free", over},
    {"1 MiB block, 1 byte past, free", OVERFLOW, MiB, 0, 1, "free", over},
    {"2 MiB + 5 block, 1 byte past, free", OVERFLOW, 2 * MiB + 5, 0, 1, "free", over},
    {"6 MiB block, 1 byte past, free", OVERFLOW, 6 * MiB, 0, 1, "free", over},
    {"100-byte block, 8 bytes past, free", OVERFLOW, 100, 0, 8, "free", over},
    {"calloc 100x3, 1 byte past, free", OVERFLOW, 300, 1, 1, "free", over},
    {"posix_memalign(64, 200), 1 byte past, free", OVERFLOW, 200, 2, 1, "free", over},
    {"aligned_alloc(4096, 5000), 1 byte past, free", OVERFLOW, 5000, 3, 1, "free", over},
    {"100-byte block, 1 byte past, realloc", OVERFLOW, 100, 0, 1, "realloc", over},
    {"300 KiB block, 1 byte past, realloc", OVERFLOW, 300 * KiB, 0, 1, "realloc", over},
    {"6 MiB block, 1 byte past, realloc", OVERFLOW, 6 * MiB, 0, 1, "realloc", over},
    {"double free of a 100-byte block after 200 allocations", DOUBLE_FREE, 100, 0, 0, "free",
     dfree},
    {"double free of a 16-byte block after 200 allocations", DOUBLE_FREE, 16, 0, 0, "free",
     dfree},
    {"double free of a 200 KiB block after 20 allocations", DOUBLE_FREE, 200 * KiB, 0, 0, "free",
     dfree},
    {"double free of a 6 MiB block after 4 allocations", DOUBLE_FREE, 6 * MiB, 0, 0, "free",
     dfree},
    {"realloc of a freed 100-byte block after 200 allocations", REALLOC_FREED, 100, 0, 0,
     "realloc", dfree},
    {"realloc of a freed 200 KiB block after 20 allocations", REALLOC_FREED, 200 * KiB, 0, 0,
     "realloc", dfree},
    {"free of a stack address (default check, in check mode)", DEFAULT_CHECK, 0, 0, 0, "free",
     "invalid pointer"},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

/* Case numbers beyond the table: the controls and the ordinary run. */
#define CASE_CONTROL_SLACK NCASES
#define CASE_USABLE_BYTES (NCASES + 1)
#define CASE_NORMAL_RUN (NCASES + 2)

static void announce(const void *p)
{
    ox_child_say("ptr", "0x%lx", (unsigned long)(uintptr_t)p);
}

static unsigned char *alloc_how(size_t size, int how)
{
    void *p = NULL;
    switch (how) {
    case 0:
        p = malloc(ox_opaque(size));
        break;
    case 1:
        p = size % 3 == 0 ? calloc(3, ox_opaque(size / 3)) : calloc(ox_opaque(size), 1);
        break;
    case 2:
        if (posix_memalign(&p, 64, ox_opaque(size)) != 0)
            p = NULL;
        break;
    case 3:
        p = aligned_alloc(4096, ox_opaque(size));
        break;
    }
    if (p == NULL) {
        ox_child_say("setup", "allocation of %zu bytes failed", size);
        _exit(90);
    }
    return p;
}

static int run_bad_case(const struct check_case *c)
{
    if (c->kind == OVERFLOW) {
        unsigned char *p = alloc_how(c->size, c->how);
        memset(p, 0x11, c->size);
        for (size_t i = 0; i < c->past; i++)
            ((volatile unsigned char *)p)[c->size + i] = (unsigned char)(0x40 + i);
        announce(p);
        if (strcmp(c->call, "realloc") == 0)
            ox_escape(realloc(ox_opaque_ptr(p), ox_opaque(c->size * 2 + 100)));
        else
            free(ox_opaque_ptr(p));
    } else if (c->kind == DOUBLE_FREE || c->kind == REALLOC_FREED) {
        int between = c->size <= 16 * KiB ? 200 : c->size <= MiB ? 20 : 4;
        void *between_blocks[200];
        unsigned char *a = alloc_how(c->size, 0);
        memset(a, 0x22, c->size < 4096 ? c->size : 4096);
        void *stale = ox_opaque_ptr(a);
        free(a);
        /* Blocks of the same size: in the default mode, one of these would be
         * the freed block again, and the second free would free it. */
        for (int i = 0; i < between; i++) {
            between_blocks[i] = alloc_how(c->size, 0);
            memset(between_blocks[i], 0x33, c->size < 4096 ? c->size : 4096);
        }
        announce(stale);
        if (c->kind == REALLOC_FREED)
            ox_escape(realloc(stale, ox_opaque(c->size + 1000)));
        else
            free(stale);
        ox_child_say("survived", "1");
        for (int i = 0; i < between; i++)
            free(between_blocks[i]);
        return 0;
    } else {
        volatile _Alignas(16) char on_stack[256];
        on_stack[0] = 1;
        void *p = (void *)&on_stack[64];
        announce(p);
        free(ox_opaque_ptr(p));
    }
    ox_child_say("survived", "1");
    return 0;
}

/* Control: a write at p[100] of a 100-byte block is within its usable size in
 * the default mode: no report without OXMALLOC_CHECK. */
static int run_control_slack(void)
{
    unsigned char *p = alloc_how(100, 0);
    CHECK(malloc_usable_size(p) > 100, "usable size of a 100-byte block is %zu",
          malloc_usable_size(p));
    memset(p, 0x11, 100);
    ((volatile unsigned char *)p)[100] = 0x40;
    free(ox_opaque_ptr(p));
    ox_child_say("survived", "1");
    return 0;
}

/* Writing every byte malloc_usable_size promises is not an overflow. */
static int run_usable_bytes(void)
{
    static const size_t sizes[] = {1,      15,        16,        17,       100,     1000,
                                   16000,  16 * KiB,  40000,     300 * KiB, MiB,    2 * MiB + 5,
                                   6 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (int how = 0; how < 4; how++) {
            unsigned char *p = alloc_how(sizes[i] < 3 ? 3 : sizes[i], how);
            size_t u = malloc_usable_size(p);
            CHECK(u >= sizes[i], "usable size %zu < %zu", u, sizes[i]);
            memset(p, 0x5c, u);
            if (i % 2 == 0) {
                unsigned char *q = realloc(p, ox_opaque(u + 10));
                CHECK(q != NULL, "realloc failed");
                for (size_t k = 0; k < u; k += (u > 4096 ? 4093 : 1))
                    CHECK(q[k] == 0x5c, "realloc lost byte %zu", k);
                p = q;
                memset(p, 0x5d, malloc_usable_size(p));
            }
            free(p);
        }
    }
    ox_child_say("survived", "1");
    return 0;
}

/* The ordinary run: mixed calls, contents checked. */
#define NSLOTS 512
struct slot {
    unsigned char *p;
    size_t n;
    uint64_t seed;
};
static struct slot slots[NSLOTS];

static size_t random_size(uint64_t *rng)
{
    uint64_t r = ox_rand(rng) % 1000;
    if (r < 700)
        return (size_t)(ox_rand(rng) % 1025);
    if (r < 900)
        return (size_t)(ox_rand(rng) % (16 * KiB));
    if (r < 995)
        return 16 * KiB + (size_t)(ox_rand(rng) % (900 * KiB));
    return MiB + (size_t)(ox_rand(rng) % (3 * MiB));
}

struct handoff {
    pthread_mutex_t lock;
    struct slot q[256];
    int len;
    int done;
};

static void *freer_thread(void *arg)
{
    struct handoff *h = arg;
    for (;;) {
        pthread_mutex_lock(&h->lock);
        int done = h->done;
        struct slot s = {0};
        if (h->len > 0)
            s = h->q[--h->len];
        pthread_mutex_unlock(&h->lock);
        if (s.p != NULL) {
            CHECK(ox_verify(s.p, s.n, s.seed) == SIZE_MAX, "handed-off block corrupted");
            free(s.p);
        } else if (done) {
            break;
        } else {
            sched_yield();
        }
    }
    return NULL;
}

static int run_normal(void)
{
    /* Quarantine: a freed block is not the next block of its size. */
    int reused = 0;
    for (int i = 0; i < 100; i++) {
        void *a = malloc(ox_opaque(64));
        uintptr_t a_addr = (uintptr_t)a;
        free(a);
        void *b = malloc(ox_opaque(64));
        reused += (uintptr_t)b == a_addr;
        free(b);
    }
    CHECK_OX(reused == 0, "check mode: %d of 100 freed blocks were handed out again at once "
          "(no quarantine?)", reused);

    struct handoff h = {.lock = PTHREAD_MUTEX_INITIALIZER};
    pthread_t freer;
    CHECK(pthread_create(&freer, NULL, freer_thread, &h) == 0, "pthread_create failed");

    uint64_t rng = 0x6a09e667f3bcc908ULL;
    long ops = 0;
    for (int i = 0; i < 6000; i++) {
        struct slot *s = &slots[ox_rand(&rng) % NSLOTS];
        uint64_t op = ox_rand(&rng) % 100;
        if (s->p != NULL) {
            size_t bad = ox_verify(s->p, s->n, s->seed);
            CHECK(bad == SIZE_MAX, "op %d: block %p (%zu bytes) corrupted at byte %zu", i,
                  (void *)s->p, s->n, bad);
            if (op < 30) {
                size_t m = random_size(&rng);
                unsigned char *q = realloc(s->p, m);
                CHECK(q != NULL || m == 0, "realloc(%zu) failed", m);
                if (m == 0) {
                    s->p = NULL; /* realloc(p, 0) freed it */
                } else {
                    size_t keep = m < s->n ? m : s->n;
                    bad = ox_verify_part(q, s->n, keep, s->seed);
                    CHECK(bad == SIZE_MAX, "realloc %zu -> %zu lost byte %zu", s->n, m, bad);
                    s->p = q;
                    s->n = m;
                    s->seed = ox_rand(&rng);
                    ox_fill(q, m, s->seed);
                }
            } else if (op < 40) {
                pthread_mutex_lock(&h.lock);
                if (h.len < 256) {
                    h.q[h.len++] = *s;
                    s->p = NULL;
                }
                pthread_mutex_unlock(&h.lock);
                if (s->p != NULL) {
                    free(s->p);
                    s->p = NULL;
                }
            } else {
                free(s->p);
                s->p = NULL;
            }
        } else {
            size_t n = random_size(&rng);
            void *p = NULL;
            if (op < 50) {
                p = malloc(n);
            } else if (op < 70) {
                p = calloc(1, n);
                CHECK(p != NULL, "calloc(1, %zu) failed", n);
                for (size_t k = 0; k < n; k += (n > 4096 ? 511 : 1))
                    CHECK(((unsigned char *)p)[k] == 0, "calloc(1, %zu): byte %zu not zero",
                          n, k);
            } else if (op < 85) {
                size_t align = (size_t)16 << (ox_rand(&rng) % 9);
                int e = posix_memalign(&p, align, n);
                CHECK(e == 0, "posix_memalign(%zu, %zu) failed: %d", align, n, e);
                CHECK(ox_is_aligned(p, align), "posix_memalign(%zu) gave %p", align, p);
            } else {
                size_t align = (size_t)16 << (ox_rand(&rng) % 9);
                p = aligned_alloc(align, n);
                CHECK(p != NULL && ox_is_aligned(p, align), "aligned_alloc(%zu, %zu) gave %p",
                      align, n, p);
            }
            CHECK(p != NULL, "allocation of %zu bytes failed", n);
            CHECK(malloc_usable_size(p) >= n, "usable size %zu < %zu", malloc_usable_size(p),
                  n);
            s->p = p;
            s->n = n;
            s->seed = ox_rand(&rng);
            ox_fill(p, n, s->seed);
        }
        ops++;
    }
    for (int i = 0; i < NSLOTS; i++) {
        if (slots[i].p == NULL)
            continue;
        CHECK(ox_verify(slots[i].p, slots[i].n, slots[i].seed) == SIZE_MAX,
              "block corrupted at the end");
        free(slots[i].p);
        slots[i].p = NULL;
    }
    pthread_mutex_lock(&h.lock);
    h.done = 1;
    pthread_mutex_unlock(&h.lock);
    pthread_join(freer, NULL);

    /* The quarantine is bounded: memory is reused in the end. After a warm-up
     * that fills the quarantine, 200000 more pairs (195 MiB if nothing were
     * reused) must not grow the RSS by more than 16 MiB. */
    for (int i = 0; i < 20000; i++) {
        void *p = malloc(ox_opaque(1000));
        CHECK(p != NULL, "malloc failed");
        memset(p, 1, 1000);
        free(p);
    }
    size_t before = ox_rss_bytes();
    for (int i = 0; i < 200000; i++) {
        void *p = malloc(ox_opaque(1000));
        CHECK(p != NULL, "malloc failed");
        memset(p, 1, 1000);
        free(p);
    }
    size_t after = ox_rss_bytes();
    CHECK(after < before + 16 * MiB, "200000 malloc(1000)/free pairs grew RSS from %zu to %zu "
          "KiB in check mode", before >> 10, after >> 10);

    int (*heap_check)(void) = (int (*)(void))ox_sym("ox_heap_check");
    if (heap_check != NULL)
        CHECK(heap_check() == 0, "ox_heap_check() failed in check mode");
    ox_child_say("ops", "%ld", ops);
    ox_child_say("rss_growth_kib", "%+ld", (long)(after - before) / 1024);
    return 0;
}

/* ---- the parent ---- */

/* The environment of a case: ours, with OXMALLOC_CHECK set to `value` (or
 * removed when NULL), and without OXMALLOC_HARDEN (this test is about check
 * mode alone; its control needs the default mode). */
static char **case_env(const char *value)
{
    static char *env[4096];
    static char setting[64];
    int n = 0;
    for (char **e = environ; *e != NULL && n < 4094; e++)
        if (strncmp(*e, "OXMALLOC_CHECK=", 15) != 0 && strncmp(*e, "OXMALLOC_HARDEN=", 16) != 0)
            env[n++] = *e;
    if (value != NULL) {
        snprintf(setting, sizeof setting, "OXMALLOC_CHECK=%s", value);
        env[n++] = setting;
    }
    env[n] = NULL;
    return env;
}

static struct ox_child r;

static void run_self(int number, const char *check_value)
{
    char num[16];
    snprintf(num, sizeof num, "%d", number);
    char *argv[] = {"check_mode", "--case", num, NULL};
    ox_child_exec("/proc/self/exe", argv, case_env(check_value), CHILD_TIMEOUT_S, &r);
    CHECK(!r.spawn_failed, "could not run the test again: %s", strerror(errno));
    CHECK(!r.timed_out, "case %d hung; stderr: %s", number, r.err);
}

int main(int argc, char **argv)
{
    ox_require_active();
    if (argc == 3 && strcmp(argv[1], "--case") == 0) {
        int n = atoi(argv[2]);
        if (n >= 0 && n < NCASES)
            return run_bad_case(&cases[n]);
        if (n == CASE_CONTROL_SLACK)
            return run_control_slack();
        if (n == CASE_USABLE_BYTES)
            return run_usable_bytes();
        if (n == CASE_NORMAL_RUN)
            return run_normal();
        return 2;
    }
    char value[64];

    /* Control: without the variable, the 1-byte overflow within the usable
     * size goes unnoticed (and is harmless). */
    run_self(CASE_CONTROL_SLACK, NULL);
    CHECK(r.exited && r.exit_code == 0 && ox_child_value(&r, "survived", value, sizeof value),
          "control run without OXMALLOC_CHECK: %s; stderr: %s", ox_child_describe(&r), r.err);

    int caught = 0;
    for (int i = 0; i < NCASES; i++) {
        const struct check_case *c = &cases[i];
        run_self(i, "1");
        if (!ox_active()) {
            NOTE("%s on the system malloc: %s", c->name, ox_child_describe(&r));
            continue;
        }
        CHECK(ox_child_value(&r, "ptr", value, sizeof value),
              "%s: the case did not get to the bad call: %s; stdout: %s; stderr: %s", c->name,
              ox_child_describe(&r), r.out, r.err);
        uintptr_t ptr = (uintptr_t)strtoull(value, NULL, 16);
        CHECK(!ox_child_value(&r, "survived", value, sizeof value),
              "%s: not detected in check mode (%#lx); stderr: %s", c->name,
              (unsigned long)ptr, r.err);
        CHECK(ox_child_aborted(&r), "%s: the case %s, expected SIGABRT; stderr: %s", c->name,
              ox_child_describe(&r), r.err);
        CHECK(ox_child_has_report(r.err, c->call, c->what, ptr),
              "%s: stderr lacks \"oxmalloc: %s(): %s 0x%lx\"; it was: %s", c->name, c->call,
              c->what, (unsigned long)ptr, r.err);
        if (getenv("OXTEST_VERBOSE") != NULL)
            NOTE("%s: %.*s", c->name, (int)strcspn(r.err, "\n"), r.err);
        caught++;
    }

    run_self(CASE_USABLE_BYTES, "1");
    CHECK(r.exited && r.exit_code == 0 && ox_child_value(&r, "survived", value, sizeof value),
          "writing all malloc_usable_size bytes in check mode: %s; stderr: %s",
          ox_child_describe(&r), r.err);

    run_self(CASE_NORMAL_RUN, "1");
    CHECK(r.exited && r.exit_code == 0, "ordinary run in check mode: %s; stderr: %s",
          ox_child_describe(&r), r.err);
    char ops[32] = "?", growth[32] = "?";
    ox_child_value(&r, "ops", ops, sizeof ops);
    ox_child_value(&r, "rss_growth_kib", growth, sizeof growth);

    printf("check_mode: %d cases caught; ordinary run: %s calls checked, RSS %s KiB over "
           "200000 malloc/free pairs\n", caught, ops, growth);
    return 0;
}
