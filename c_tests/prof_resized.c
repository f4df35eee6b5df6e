/*
 * Medium blocks that a sampled realloc leaves where they are.
 *
 * A sampled realloc of a medium block that stays medium keeps the block in the
 * buddy arena (no copy) and its profiler record on the side, in a table of 768
 * records at most (beyond, the block moves into a profiler slot as before).
 * The worker, profiled at a 64 KiB interval so that most first allocations of
 * 24 KiB are not sampled and most reallocs of them are, grows 4,000 vectors in two
 * threads at once through 48, 96 and 192 KiB (every byte checked at each step),
 * frees all but every 16th (through a shared stack, so that most are freed by the
 * other thread while it records its own), and gives the kept ones a last realloc
 * to 160 KiB. Its exit profile
 * must estimate the site's allocated bytes (the mallocs and reallocs, 1.5 GB)
 * within 3% and its live bytes (250 blocks of 160 KiB) within 15%: over repeated
 * runs the estimates spread by 0.3% and 2%. A record left behind by a free or a
 * realloc counts freed blocks as live (tried: 3 to 4 times the truth), a lost one
 * would count live blocks as gone.
 */
#include "prof.h"
#include <pthread.h>

#define ALLOC_SITE(name) __attribute__((noinline, section(name)))
extern char __start_oxprof_resized[], __stop_oxprof_resized[];

#define VECTORS 4000
#define KEEP_EVERY 16

static void fill(unsigned char *p, size_t from, size_t to, unsigned seed)
{
    for (size_t i = from; i < to; i++)
        p[i] = (unsigned char)(seed * 31 + i / 4096);
}

static void verify(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i += 512)
        CHECK(p[i] == (unsigned char)(seed * 31 + i / 4096), "vector %u: byte %zu lost", seed,
              i);
    CHECK(p[n - 1] == (unsigned char)(seed * 31 + (n - 1) / 4096), "vector %u: last byte lost",
          seed);
}

#define THREADS 2

/* Vectors to free, pushed by either thread and popped by either. */
static pthread_mutex_t to_free_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *to_free[VECTORS];
static int to_free_n;

static void push_to_free(unsigned char *p)
{
    pthread_mutex_lock(&to_free_lock);
    to_free[to_free_n++] = p;
    pthread_mutex_unlock(&to_free_lock);
}

static unsigned char *pop_to_free(void)
{
    pthread_mutex_lock(&to_free_lock);
    unsigned char *p = to_free_n > 0 ? to_free[--to_free_n] : NULL;
    pthread_mutex_unlock(&to_free_lock);
    return p;
}

struct share {
    unsigned first;
    double allocated, live;
    unsigned char *kept[VECTORS / KEEP_EVERY / THREADS + 1];
};

ALLOC_SITE("oxprof_resized") void grow_vectors(struct share *t)
{
    static const size_t steps[] = {48 << 10, 96 << 10, 192 << 10};
    int nkept = 0;
    for (unsigned v = t->first; v < t->first + VECTORS / THREADS; v++) {
        size_t n = 24 << 10;
        unsigned char *p = malloc(ox_opaque(n));
        CHECK(p != NULL, "malloc");
        t->allocated += (double)n;
        fill(p, 0, n, v);
        for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
            unsigned char *q = realloc(p, ox_opaque(steps[s]));
            CHECK(q != NULL, "realloc to %zu", steps[s]);
            t->allocated += (double)steps[s];
            verify(q, n, v);
            fill(q, n, steps[s], v);
            p = q;
            n = steps[s];
        }
        verify(p, n, v);
        if (v % KEEP_EVERY == 0)
            t->kept[nkept++] = p;
        else
            push_to_free(p);
        unsigned char *old = pop_to_free();
        if (old != NULL)
            free(old);
    }
    for (int k = 0; k < nkept; k++) {
        unsigned char *q = realloc(t->kept[k], ox_opaque(160 << 10));
        CHECK(q != NULL, "realloc to 160 KiB");
        t->allocated += 160 << 10;
        t->kept[k] = q;
        t->live += 160 << 10;
    }
}

static void *thread_main(void *arg)
{
    grow_vectors(arg);
    return NULL;
}

static void worker(void)
{
    static struct share share[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        share[i].first = (unsigned)i * (VECTORS / THREADS);
        CHECK(pthread_create(&th[i], NULL, thread_main, &share[i]) == 0, "pthread_create");
    }
    double allocated = 0, live = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        allocated += share[i].allocated;
        live += share[i].live;
    }
    for (unsigned char *p; (p = pop_to_free()) != NULL;)
        free(p);
    ox_child_say("PID", "%ld", (long)getpid());
    ox_child_say("ALLOC", "%.0f", allocated);
    ox_child_say("LIVE", "%.0f", live);
    ox_child_say("SITE", "%lu %lu", (unsigned long)__start_oxprof_resized,
                 (unsigned long)__stop_oxprof_resized);
    /* The kept vectors stay live: the exit profile's in-use bytes. */
}

int main(int argc, char **argv)
{
    char dir[64];
    struct ox_child r;
    struct ox_prof_file f;
    if (ox_prof_worker_or_profile(argc, argv, worker, "resized", "65536", dir, sizeof dir, &r,
                                  &f))
        return 0;
    CHECK(r.err[0] == '\0', "the profiled worker wrote to stderr: %s", r.err);
    uintptr_t lo, hi;
    ox_prof_range_of(&r, "SITE", &lo, &hi);
    double alloc = 0, inuse = 0;
    for (int i = 0; i < f.nstacks; i++) {
        const struct ox_prof_stack *s = &f.stacks[i];
        if (s->depth > 0 && s->pcs[0] >= lo && s->pcs[0] < hi) {
            alloc += (double)s->alloc_bytes;
            inuse += (double)s->inuse_bytes;
        }
    }
    ox_prof_check_near("allocated bytes", alloc, ox_prof_said(&r, "ALLOC"), 0.03);
    ox_prof_check_near("live bytes", inuse, ox_prof_said(&r, "LIVE"), 0.15);
    ox_prof_free(&f);
    ox_prof_dir_remove(dir);
    return 0;
}
