/*
 * Stress test for a malloc implementation, run under LD_PRELOAD (see
 * scripts/stress, which builds and runs it):
 *
 *   stress [--threads N] [--seconds S] [--live-mib M] [--forks F] [--seed X]
 *
 * N worker threads (default 4) run for S seconds (default 15), each doing
 * random malloc / calloc / realloc chains / posix_memalign / aligned_alloc /
 * memalign / realloc(NULL) / free on blocks of 1 byte to 4 MiB. Every block
 * holds a pattern derived from its address and a tag (blocks up to 4 KiB
 * entirely; larger ones in their first and last 256 bytes and one word in
 * every page), verified before every realloc and free; calloc'd blocks are
 * checked to be zero first; aligned blocks for their alignment.
 *
 * A share of the blocks goes to another worker through lock-protected queues
 * and is freed (or realloc'd, then freed) there. Workers live for a random
 * time (0.3-1.5 s), then exit and are replaced; half of them leave their live
 * blocks to their successor, which frees them (the blocks of a heap whose
 * thread has exited). The main thread forks F times during the run (default
 * one every 3 s, at least 3); each child allocates, reallocates, verifies and
 * frees for a moment, in its own thread in some children, then _exit(0)s, and
 * must do so within 20 s. Each worker calls ox_heap_check() (found with
 * dlsym) every 4096 calls; it must return 0.
 *
 * The bytes requested by all live blocks (in threads' tables and in queues)
 * never exceed M MiB (default 192); an allocation that would go over is
 * replaced by a free. Growth is bounded by this rule:
 *
 *   peak RSS  <=  baseline + 2 x M  +  32 MiB x (N + 1)  +  64 MiB
 *
 * 2 x M covers rounding (size classes waste under 12.5%, medium blocks take
 * power-of-two spans, so up to twice their size) and fragmentation; 32 MiB per
 * thread heap (N workers and the main thread) covers what a heap keeps cached
 * (empty slabs, medium spans, free buddy memory not yet purged); 64 MiB the
 * rest (huge-block cache, metadata). Memory that is not reused grows past this
 * within seconds. After everything is freed, the threads have exited and
 * malloc_trim(0) ran, the RSS must be within baseline + 64 MiB.
 *
 * Output: calls per second, peak RSS (getrusage ru_maxrss) and the final RSS.
 * Any corrupted block, misaligned block, failed allocation, failed heap check,
 * failed or hung fork child, or a bound exceeded: a message starting with
 * "stress: FAILED" and exit status 1.
 */
#define _GNU_SOURCE 1
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define MAX_BLOCK (4 * MiB)
#define MAX_THREADS 64
#define NSLOTS 1024
#define QUEUE_CAP 256
#define HEAP_CHECK_EVERY 4096
#define CHILD_TIMEOUT_S 20

/* ---- options and shared state ---- */

static int opt_threads = 4;
static double opt_seconds = 15;
static size_t opt_live_cap = 192 * MiB;
static int opt_forks = -1;
static uint64_t opt_seed = 0x5eed0fa11ad1ce5ULL;

static atomic_int stop;
static atomic_size_t live_bytes;
static atomic_ulong total_calls;
static atomic_ulong heap_checks;
static atomic_ulong handoffs;
static atomic_ulong threads_started;
static atomic_ulong leftovers_taken;
static int (*heap_check)(void);

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* One write, so that lines of failing threads do not interleave. */
    char line[1100];
    int n = snprintf(line, sizeof line, "stress: FAILED: %s\n", msg);
    ssize_t ignored = write(2, line, (size_t)n);
    (void)ignored;
    _exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rnd(uint64_t *s)
{
    /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static size_t rss_bytes(void)
{
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static double mib(size_t bytes)
{
    return (double)bytes / (double)MiB;
}

/* ---- patterns ---- */

struct blk {
    unsigned char *p;
    size_t n;     /* requested size */
    uint64_t tag; /* unique per block, kept across reallocs */
    int zeroed;   /* from calloc and not written yet */
};

static uint64_t seed_of(const void *p, uint64_t tag)
{
    return mix64((uint64_t)(uintptr_t)p ^ (tag * 0x9E3779B97F4A7C15ULL));
}

static inline uint64_t pat_word(uint64_t seed, size_t word_index)
{
    uint64_t z = (seed + word_index) * 0x9E3779B97F4A7C15ULL;
    return z ^ (z >> 29);
}

static inline unsigned char pat_byte(uint64_t seed, size_t j)
{
    return (unsigned char)(pat_word(seed, j >> 3) >> ((j & 7) * 8));
}

/*
 * The parts of an n-byte block that carry the pattern: all of it up to 4 KiB;
 * beyond, the first and last 256 bytes and 8 bytes at the start of every page.
 * Calls fn(p, from, to, ctx) for each range; stops at the first non-SIZE_MAX.
 */
typedef size_t (*range_fn)(unsigned char *p, size_t from, size_t to, uint64_t seed);

static size_t for_ranges(unsigned char *p, size_t n, size_t limit, uint64_t seed, range_fn fn)
{
    size_t r;
#define RANGE(a, b)                                                                           \
    do {                                                                                      \
        size_t a_ = (a), b_ = (b) < limit ? (b) : limit;                                      \
        if (a_ < b_ && (r = fn(p, a_, b_, seed)) != SIZE_MAX)                                 \
            return r;                                                                         \
    } while (0)
    if (n <= 4096) {
        RANGE(0, n);
        return SIZE_MAX;
    }
    RANGE(0, 256);
    for (size_t k = 4096; k + 8 <= n - 256; k += 4096)
        RANGE(k, k + 8);
    RANGE(n - 256, n);
    return SIZE_MAX;
#undef RANGE
}

static size_t fill_range(unsigned char *p, size_t a, size_t b, uint64_t seed)
{
    size_t j = a;
    for (; j < b && (j & 7); j++)
        p[j] = pat_byte(seed, j);
    for (; j + 8 <= b; j += 8)
        *(uint64_t *)(void *)(p + j) = pat_word(seed, j >> 3);
    for (; j < b; j++)
        p[j] = pat_byte(seed, j);
    return SIZE_MAX;
}

static size_t check_range(unsigned char *p, size_t a, size_t b, uint64_t seed)
{
    size_t j = a;
    for (; j < b && (j & 7); j++)
        if (p[j] != pat_byte(seed, j))
            return j;
    for (; j + 8 <= b; j += 8)
        if (*(uint64_t *)(void *)(p + j) != pat_word(seed, j >> 3))
            break;
    for (; j < b; j++)
        if (p[j] != pat_byte(seed, j))
            return j;
    return SIZE_MAX;
}

static size_t zero_range(unsigned char *p, size_t a, size_t b, uint64_t seed)
{
    (void)seed;
    for (size_t j = a; j < b; j++)
        if (p[j] != 0)
            return j;
    return SIZE_MAX;
}

static void fill(struct blk *b)
{
    for_ranges(b->p, b->n, b->n, seed_of(b->p, b->tag), fill_range);
    b->zeroed = 0;
}

/* Verifies the first `limit` bytes of the block; `where` names the moment. */
static void verify(const struct blk *b, size_t limit, const char *where)
{
    uint64_t seed = seed_of(b->p, b->tag);
    size_t bad = for_ranges(b->p, b->n, limit, seed, b->zeroed ? zero_range : check_range);
    if (bad != SIZE_MAX)
        fail("corrupted block %p (%zu bytes, tag %#llx) %s: byte %zu is %#x, expected %#x",
             (void *)b->p, b->n, (unsigned long long)b->tag, where, bad, b->p[bad],
             b->zeroed ? 0 : pat_byte(seed, bad));
}

/* ---- the live-bytes budget ---- */

static int reserve(size_t n)
{
    size_t before = atomic_fetch_add(&live_bytes, n);
    if (before + n > opt_live_cap) {
        atomic_fetch_sub(&live_bytes, n);
        return 0;
    }
    return 1;
}

static void unreserve(size_t n)
{
    atomic_fetch_sub(&live_bytes, n);
}

/* ---- blocks ---- */

static size_t random_size(uint64_t *rng)
{
    uint64_t r = rnd(rng) % 1000;
    if (r < 650)
        return 1 + (size_t)(rnd(rng) % 256);
    if (r < 850)
        return 257 + (size_t)(rnd(rng) % (4096 - 256));
    if (r < 940)
        return 4097 + (size_t)(rnd(rng) % (16 * KiB - 4096));
    if (r < 995)
        return 16 * KiB + 1 + (size_t)(rnd(rng) % (MiB - 16 * KiB));
    return MiB + 1 + (size_t)(rnd(rng) % (MAX_BLOCK - MiB));
}

static uint64_t next_tag(uint64_t *counter, int owner)
{
    return ((uint64_t)(owner + 1) << 48) | ++*counter;
}

/* Allocates a block of a random size with a random call; 0 if over budget. */
static int alloc_block(struct blk *b, uint64_t *rng, uint64_t *tags, int owner, unsigned long *calls)
{
    size_t n = random_size(rng);
    uint64_t how = rnd(rng) % 100;
    size_t count = 1;
    if (how >= 50 && how < 65) {
        /* calloc(count, n / count) */
        count = 1 + (size_t)(rnd(rng) % 4);
        n = (n + count - 1) / count * count;
    }
    if (!reserve(n))
        return 0;
    void *p = NULL;
    size_t align = 16;
    b->zeroed = 0;
    if (how < 50) {
        p = malloc(n);
    } else if (how < 65) {
        p = calloc(count, n / count);
        b->zeroed = 1;
    } else if (how < 75) {
        align = (size_t)16 << (rnd(rng) % 13); /* 16 B .. 64 KiB */
        int e = posix_memalign(&p, align, n);
        if (e != 0)
            fail("posix_memalign(%zu, %zu) returned %d", align, n, e);
    } else if (how < 82) {
        align = (size_t)16 << (rnd(rng) % 9); /* 16 B .. 4 KiB */
        p = aligned_alloc(align, n);
    } else if (how < 87) {
        align = (size_t)16 << (rnd(rng) % 9);
        p = memalign(align, n);
    } else {
        p = realloc(NULL, n);
    }
    (*calls)++;
    if (p == NULL)
        fail("allocation of %zu bytes (alignment %zu) failed: %s", n, align, strerror(errno));
    if (((uintptr_t)p & (align - 1)) != 0 || ((uintptr_t)p & 15) != 0)
        fail("block %p of %zu bytes is not aligned to %zu", p, n, align);
    size_t usable = malloc_usable_size(p);
    if (usable < n)
        fail("malloc_usable_size(%p) = %zu < %zu", p, usable, n);
    b->p = p;
    b->n = n;
    b->tag = next_tag(tags, owner);
    if (b->zeroed)
        verify(b, n, "fresh from calloc (not zero)");
    fill(b);
    return 1;
}

static void free_block(struct blk *b, uint64_t *rng, unsigned long *calls, const char *where)
{
    verify(b, b->n, where);
    if (rnd(rng) % 100 == 0) {
        errno = 0;
        void *r = realloc(b->p, 0); /* glibc's behaviour: frees, returns NULL */
        if (r != NULL)
            free(r);
    } else {
        errno = EDOM;
        free(b->p);
        if (errno != EDOM)
            fail("free(%p) changed errno to %d", (void *)b->p, errno);
    }
    (*calls)++;
    unreserve(b->n);
    b->p = NULL;
}

/* A chain of 1-5 reallocs, the contents checked at every step. */
static void realloc_chain(struct blk *b, uint64_t *rng, unsigned long *calls)
{
    int steps = 1 + (int)(rnd(rng) % 5);
    for (int s = 0; s < steps; s++) {
        size_t n = b->n, m;
        switch (rnd(rng) % 4) {
        case 0: m = random_size(rng); break;
        case 1: m = n * 2 + (size_t)(rnd(rng) % 64); break;
        case 2: m = n / 2 + 1; break;
        default: m = n + 1 + (size_t)(rnd(rng) % 100); break;
        }
        if (m > MAX_BLOCK)
            m = MAX_BLOCK;
        if (m > n && !reserve(m - n))
            m = n / 2 + 1;
        verify(b, n, "before realloc");
        unsigned char *q = realloc(b->p, m);
        (*calls)++;
        if (q == NULL)
            fail("realloc(%p, %zu) failed: %s", (void *)b->p, m, strerror(errno));
        if (((uintptr_t)q & 15) != 0)
            fail("realloc returned %p, not 16-byte aligned", (void *)q);
        struct blk moved = *b;
        moved.p = q;
        /* The kept bytes still hold the pattern of the old address. */
        uint64_t old_seed = seed_of(b->p, b->tag);
        size_t keep = m < n ? m : n;
        size_t bad = for_ranges(q, n, keep, old_seed, b->zeroed ? zero_range : check_range);
        if (bad != SIZE_MAX)
            fail("realloc(%p, %zu -> %zu) = %p lost the contents: byte %zu is %#x, expected %#x",
                 (void *)b->p, n, m, (void *)q, bad, q[bad], b->zeroed ? 0 : pat_byte(old_seed, bad));
        if (m < n)
            unreserve(n - m);
        moved.n = m;
        *b = moved;
        fill(b);
        if (malloc_usable_size(q) < m)
            fail("malloc_usable_size(%p) = %zu < %zu after realloc", (void *)q,
                 malloc_usable_size(q), m);
    }
}

/* ---- hand-off queues (one per worker slot) ---- */

struct queue {
    pthread_mutex_t lock;
    struct blk items[QUEUE_CAP];
    int len;
};

struct worker {
    pthread_t thread;
    int started;
    atomic_int exited;
    int index;
    int generation;
    unsigned long calls;
    uint64_t tags;
    struct blk blocks[NSLOTS]; /* survive the thread: a successor takes them over */
    struct queue queue;
};

static struct worker workers[MAX_THREADS];

static int queue_push(struct queue *q, const struct blk *b)
{
    int ok = 0;
    pthread_mutex_lock(&q->lock);
    if (q->len < QUEUE_CAP) {
        q->items[q->len++] = *b;
        ok = 1;
    }
    pthread_mutex_unlock(&q->lock);
    return ok;
}

static int queue_pop(struct queue *q, struct blk *b)
{
    int ok = 0;
    pthread_mutex_lock(&q->lock);
    if (q->len > 0) {
        *b = q->items[--q->len];
        ok = 1;
    }
    pthread_mutex_unlock(&q->lock);
    return ok;
}

/* ---- workers ---- */

static void run_heap_check(const char *who, int index)
{
    if (heap_check == NULL)
        return;
    int r = heap_check();
    atomic_fetch_add(&heap_checks, 1);
    if (r != 0)
        fail("ox_heap_check() returned %d in %s %d", r, who, index);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = mix64(opt_seed ^ ((uint64_t)w->index << 32) ^ (uint64_t)w->generation) | 1;
    unsigned long calls = 0;
    double life = 0.3 + (double)(rnd(&rng) % 1200) / 1000.0;
    double end = now_s() + life;

    /* Blocks left by the previous thread of this slot: verify them now. */
    for (int i = 0; i < NSLOTS; i++)
        if (w->blocks[i].p != NULL) {
            verify(&w->blocks[i], w->blocks[i].n, "left by an exited thread");
            atomic_fetch_add(&leftovers_taken, 1);
        }

    for (unsigned long iter = 1;; iter++) {
        if ((iter & 255) == 0 && (atomic_load_explicit(&stop, memory_order_relaxed) || now_s() > end))
            break;
        if (iter % HEAP_CHECK_EVERY == 0)
            run_heap_check("worker", w->index);

        uint64_t r = rnd(&rng) % 1000;
        if (r < 30) {
            /* Free (or realloc, then free) blocks other threads handed us. */
            struct blk b;
            for (int k = 0; k < 16 && queue_pop(&w->queue, &b); k++) {
                if (rnd(&rng) % 5 == 0)
                    realloc_chain(&b, &rng, &calls);
                free_block(&b, &rng, &calls, "handed over by another thread");
            }
            continue;
        }
        struct blk *b = &w->blocks[rnd(&rng) % NSLOTS];
        if (b->p != NULL) {
            if (r < 250) {
                realloc_chain(b, &rng, &calls);
            } else if (r < 330 && opt_threads > 1) {
                int to = (int)(rnd(&rng) % (uint64_t)(opt_threads - 1));
                if (to >= w->index)
                    to++;
                verify(b, b->n, "before hand-off");
                if (queue_push(&workers[to].queue, b)) {
                    b->p = NULL;
                    atomic_fetch_add(&handoffs, 1);
                } else {
                    free_block(b, &rng, &calls, "before free");
                }
            } else {
                free_block(b, &rng, &calls, "before free");
            }
        } else if (!alloc_block(b, &rng, &w->tags, w->index, &calls)) {
            /* Over budget: free something instead. */
            for (int k = 0; k < 8; k++) {
                struct blk *v = &w->blocks[rnd(&rng) % NSLOTS];
                if (v->p != NULL) {
                    free_block(v, &rng, &calls, "before free");
                    break;
                }
            }
        }
    }

    /* Exit: free everything, or (half the time) leave it to the successor. */
    if (atomic_load(&stop) || rnd(&rng) % 2 == 0)
        for (int i = 0; i < NSLOTS; i++)
            if (w->blocks[i].p != NULL)
                free_block(&w->blocks[i], &rng, &calls, "before free at thread exit");
    w->calls = calls;
    atomic_fetch_add(&total_calls, calls);
    atomic_store(&w->exited, 1);
    return NULL;
}

static void start_worker(struct worker *w)
{
    w->generation++;
    atomic_store(&w->exited, 0);
    int e = pthread_create(&w->thread, NULL, worker_main, w);
    if (e != 0)
        fail("pthread_create failed: %s", strerror(e));
    w->started = 1;
    atomic_fetch_add(&threads_started, 1);
}

static void join_worker(struct worker *w, double timeout_s)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)timeout_s;
    int e = pthread_timedjoin_np(w->thread, NULL, &deadline);
    if (e == ETIMEDOUT)
        fail("worker %d did not finish within %.0f s of being asked to (hung?)", w->index,
             timeout_s);
    if (e != 0)
        fail("pthread_join failed: %s", strerror(e));
    w->started = 0;
}

/* ---- fork children ---- */

static void *child_thread(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg | 1;
    uint64_t tags = 0;
    unsigned long calls = 0;
    struct blk b;
    for (int i = 0; i < 2000; i++) {
        memset(&b, 0, sizeof b);
        if (alloc_block(&b, &rng, &tags, 63, &calls))
            free_block(&b, &rng, &calls, "in a forked child's thread");
    }
    return NULL;
}

static void child_work(int k)
{
    alarm(CHILD_TIMEOUT_S);
    enum { N = 256 };
    static struct blk blocks[N];
    memset(blocks, 0, sizeof blocks);
    uint64_t rng = mix64(opt_seed + 1000 + (uint64_t)k) | 1;
    uint64_t tags = 0;
    unsigned long calls = 0;
    /* The child's own budget: the parent's blocks are not its concern. */
    atomic_store(&live_bytes, 0);
    double end = now_s() + 0.1;
    pthread_t t;
    int with_thread = k % 2 == 1;
    if (with_thread && pthread_create(&t, NULL, child_thread, (void *)(uintptr_t)(k + 7)) != 0)
        fail("fork child: pthread_create failed");
    while (now_s() < end) {
        for (int i = 0; i < 64; i++) {
            struct blk *b = &blocks[rnd(&rng) % N];
            if (b->p == NULL)
                alloc_block(b, &rng, &tags, 62, &calls);
            else if (rnd(&rng) % 4 == 0)
                realloc_chain(b, &rng, &calls);
            else
                free_block(b, &rng, &calls, "in a forked child");
        }
    }
    for (int i = 0; i < N; i++)
        if (blocks[i].p != NULL)
            free_block(&blocks[i], &rng, &calls, "in a forked child");
    if (with_thread)
        pthread_join(t, NULL);
    run_heap_check("fork child", k);
    _exit(0);
}

static void fork_once(int k)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        fail("fork failed: %s", strerror(errno));
    if (pid == 0)
        child_work(k);
    double deadline = now_s() + CHILD_TIMEOUT_S + 5;
    int st = 0;
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR)
            fail("waitpid failed: %s", strerror(errno));
        if (now_s() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fail("fork child %d hung (killed after %d s): a lock held across fork?", k,
                 CHILD_TIMEOUT_S + 5);
        }
        struct timespec nap = {0, 2 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    if (WIFSIGNALED(st))
        fail("fork child %d was killed by signal %d (%s)%s", k, WTERMSIG(st),
             strsignal(WTERMSIG(st)),
             WTERMSIG(st) == SIGALRM ? ": it hung (a lock held across fork?)" : "");
    if (WEXITSTATUS(st) != 0)
        fail("fork child %d exited with status %d", k, WEXITSTATUS(st));
}

/* ---- main ---- */

static void usage(void)
{
    fprintf(stderr, "usage: stress [--threads N] [--seconds S] [--live-mib M] [--forks F] "
                    "[--seed X]\n");
    exit(2);
}

static int on_oxmalloc(void)
{
    Dl_info info;
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    return m != NULL && dladdr(m, &info) != 0 && info.dli_fname != NULL &&
           strstr(info.dli_fname, "liboxmalloc") != NULL;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--threads") == 0 && v) {
            opt_threads = atoi(v);
            i++;
        } else if (strcmp(a, "--seconds") == 0 && v) {
            opt_seconds = atof(v);
            i++;
        } else if (strcmp(a, "--live-mib") == 0 && v) {
            opt_live_cap = (size_t)atol(v) * MiB;
            i++;
        } else if (strcmp(a, "--forks") == 0 && v) {
            opt_forks = atoi(v);
            i++;
        } else if (strcmp(a, "--seed") == 0 && v) {
            opt_seed = strtoull(v, NULL, 0);
            i++;
        } else {
            usage();
        }
    }
    if (opt_threads < 1 || opt_threads > MAX_THREADS || opt_seconds <= 0 ||
        opt_live_cap < 16 * MiB)
        usage();
    if (opt_forks < 0)
        opt_forks = opt_seconds / 3 < 3 ? 3 : (int)(opt_seconds / 3);

    int allow_other = getenv("OXTEST_ALLOW_GLIBC") != NULL &&
                      strcmp(getenv("OXTEST_ALLOW_GLIBC"), "1") == 0;
    *(void **)&heap_check = dlsym(RTLD_DEFAULT, "ox_heap_check");
    if (!on_oxmalloc() || heap_check == NULL) {
        if (!allow_other)
            fail("malloc is not liboxmalloc's (run under LD_PRELOAD, or set "
                 "OXTEST_ALLOW_GLIBC=1 to stress the system malloc)");
        fprintf(stderr, "stress: note: not running on oxmalloc\n");
        heap_check = NULL;
    }

    size_t baseline = rss_bytes();
    printf("stress: %d threads, %.0f s, live bytes at most %.0f MiB, %d forks, seed %#llx\n",
           opt_threads, opt_seconds, mib(opt_live_cap), opt_forks,
           (unsigned long long)opt_seed);

    for (int i = 0; i < opt_threads; i++) {
        workers[i].index = i;
        pthread_mutex_init(&workers[i].queue.lock, NULL);
    }
    double start = now_s();
    for (int i = 0; i < opt_threads; i++)
        start_worker(&workers[i]);

    /* The main thread: replaces exited workers, forks, allocates a little. */
    int forks_done = 0;
    uint64_t rng = mix64(opt_seed ^ 0xabcdef) | 1;
    uint64_t tags = 0;
    unsigned long main_calls = 0;
    struct blk mine[64];
    memset(mine, 0, sizeof mine);
    for (;;) {
        double t = now_s() - start;
        if (t >= opt_seconds)
            break;
        for (int i = 0; i < opt_threads; i++) {
            if (atomic_load(&workers[i].exited)) {
                join_worker(&workers[i], 30);
                start_worker(&workers[i]);
            }
        }
        if (forks_done < opt_forks && t >= opt_seconds * (forks_done + 1) / (opt_forks + 1)) {
            fork_once(forks_done);
            forks_done++;
        }
        for (int k = 0; k < 32; k++) {
            struct blk *b = &mine[rnd(&rng) % 64];
            if (b->p == NULL)
                alloc_block(b, &rng, &tags, MAX_THREADS - 1, &main_calls);
            else if (rnd(&rng) % 3 == 0)
                realloc_chain(b, &rng, &main_calls);
            else
                free_block(b, &rng, &main_calls, "in the main thread");
        }
        struct timespec nap = {0, 5 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < opt_threads; i++)
        if (workers[i].started)
            join_worker(&workers[i], 60);
    double elapsed = now_s() - start;

    /* Free what is left: queues, and blocks of the last workers (none: they
     * freed theirs when asked to stop) and of the main thread. */
    for (int i = 0; i < opt_threads; i++) {
        struct blk b;
        while (queue_pop(&workers[i].queue, &b))
            free_block(&b, &rng, &main_calls, "left in a queue");
        for (int k = 0; k < NSLOTS; k++)
            if (workers[i].blocks[k].p != NULL)
                free_block(&workers[i].blocks[k], &rng, &main_calls, "left at the end");
    }
    for (int k = 0; k < 64; k++)
        if (mine[k].p != NULL)
            free_block(&mine[k], &rng, &main_calls, "in the main thread");
    atomic_fetch_add(&total_calls, main_calls);
    if (atomic_load(&live_bytes) != 0)
        fail("bookkeeping: %zu live bytes after freeing everything", atomic_load(&live_bytes));
    run_heap_check("main thread", 0);
    malloc_trim(0);
    size_t final_rss = rss_bytes();

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    size_t peak = (size_t)ru.ru_maxrss * KiB;
    size_t peak_bound = baseline + 2 * opt_live_cap + 32 * MiB * (size_t)(opt_threads + 1) + 64 * MiB;
    size_t final_bound = baseline + 64 * MiB;
    unsigned long calls = atomic_load(&total_calls);

    printf("stress: %lu calls in %.1f s: %.0f ops/s; %lu threads started, %lu hand-offs, "
           "%lu blocks taken over from exited threads, %d forks, %lu heap checks\n",
           calls, elapsed, (double)calls / elapsed, atomic_load(&threads_started),
           atomic_load(&handoffs), atomic_load(&leftovers_taken), forks_done,
           atomic_load(&heap_checks));
    printf("stress: RSS baseline %.1f MiB, peak %.1f MiB (bound %.0f MiB = baseline + 2 x %.0f "
           "MiB live + 32 MiB x %d heaps + 64 MiB), final %.1f MiB after freeing everything and "
           "malloc_trim(0) (bound %.0f MiB)\n",
           mib(baseline), mib(peak), mib(peak_bound), mib(opt_live_cap), opt_threads + 1,
           mib(final_rss), mib(final_bound));
    if (heap_check != NULL || !allow_other) {
        if (peak > peak_bound)
            fail("unbounded growth: peak RSS %.1f MiB over the bound %.0f MiB", mib(peak),
                 mib(peak_bound));
        if (final_rss > final_bound)
            fail("memory not returned: RSS %.1f MiB after freeing everything and "
                 "malloc_trim(0), bound %.0f MiB", mib(final_rss), mib(final_bound));
    }
    printf("stress: OK\n");
    return 0;
}
