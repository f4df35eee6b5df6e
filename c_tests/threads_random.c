/*
 * Several threads at once doing random malloc / calloc / realloc / aligned
 * allocation and free of mixed sizes, each block filled with a pattern that
 * is verified before the block is freed. Fixed seeds, bounded loops.
 */
#include "common.h"
#include <malloc.h>
#include <pthread.h>

#define NTHREADS 6
#define SLOTS 512
#define OPS 100000

struct slot {
    unsigned char *p;
    size_t n;
    uint64_t seed;
};

static size_t pick_size(uint64_t *rng)
{
    uint64_t r = ox_rand(rng);
    switch (r % 100) {
    case 0: return (size_t)(ox_rand(rng) % ((size_t)6 << 20)); /* medium / huge */
    case 1: case 2: case 3: return (size_t)(ox_rand(rng) % 300000);
    default:
        if (r % 100 < 30)
            return (size_t)(ox_rand(rng) % 4096);
        return (size_t)(ox_rand(rng) % 256);
    }
}

static void *worker(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    uint64_t rng = 0x9e3779b97f4a7c15ULL * (id + 1);
    static __thread struct slot slots[SLOTS];
    uint64_t seedctr = id << 40;

    for (int op = 0; op < OPS; op++) {
        struct slot *s = &slots[ox_rand(&rng) % SLOTS];
        if (s->p != NULL) {
            size_t bad = ox_verify(s->p, s->n, s->seed);
            CHECK(bad == SIZE_MAX, "thread %lu: block %p of %zu bytes corrupted at byte %zu",
                  (unsigned long)id, (void *)s->p, s->n, bad);
            if (ox_rand(&rng) % 4 == 0) {
                /* realloc, keeping the common prefix */
                size_t m = pick_size(&rng);
                unsigned char *q = realloc(s->p, m);
                if (m == 0) {
                    CHECK(q == NULL, "realloc(p, 0) returned %p", (void *)q);
                    s->p = NULL;
                    continue;
                }
                CHECK(q != NULL, "thread %lu: realloc to %zu failed", (unsigned long)id, m);
                size_t keep = s->n < m ? s->n : m;
                bad = ox_verify_part(q, s->n, keep, s->seed);
                CHECK(bad == SIZE_MAX, "thread %lu: realloc %zu -> %zu lost byte %zu",
                      (unsigned long)id, s->n, m, bad);
                s->p = q;
                s->n = m;
                s->seed = ++seedctr;
                ox_fill(q, m, s->seed);
                continue;
            }
            free(s->p);
            s->p = NULL;
            continue;
        }
        size_t n = pick_size(&rng);
        unsigned kind = (unsigned)(ox_rand(&rng) % 8);
        unsigned char *p;
        if (kind == 0) {
            p = calloc(1, n);
            CHECK(p != NULL, "calloc(1, %zu) failed", n);
            for (size_t i = 0; i < n && i < 4096; i++)
                CHECK(p[i] == 0, "thread %lu: calloc(%zu) byte %zu not zero", (unsigned long)id,
                      n, i);
        } else if (kind == 1) {
            size_t al = (size_t)16 << (ox_rand(&rng) % 9);
            p = aligned_alloc(al, n);
            CHECK(p != NULL && ox_is_aligned(p, al), "aligned_alloc(%zu, %zu) = %p", al, n,
                  (void *)p);
        } else {
            p = malloc(n);
            CHECK(p != NULL, "malloc(%zu) failed", n);
        }
        CHECK(ox_is_aligned(p, 16), "block %p not 16-byte aligned", (void *)p);
        CHECK(malloc_usable_size(p) >= n, "usable %zu < %zu", malloc_usable_size(p), n);
        s->p = p;
        s->n = n;
        s->seed = ++seedctr;
        ox_fill(p, n, s->seed);
    }
    for (int i = 0; i < SLOTS; i++) {
        if (slots[i].p) {
            size_t bad = ox_verify(slots[i].p, slots[i].n, slots[i].seed);
            CHECK(bad == SIZE_MAX, "final check: block corrupted at byte %zu", bad);
            free(slots[i].p);
            slots[i].p = NULL;
        }
    }
    return NULL;
}

int main(void)
{
    ox_require_active();
    pthread_t th[NTHREADS];
    for (uintptr_t i = 0; i < NTHREADS; i++)
        CHECK(pthread_create(&th[i], NULL, worker, (void *)i) == 0, "pthread_create failed");
    for (int i = 0; i < NTHREADS; i++)
        CHECK(pthread_join(th[i], NULL) == 0, "pthread_join failed");
    /* The main thread, which did nothing so far, runs the same mix. */
    worker((void *)(uintptr_t)NTHREADS);
    return 0;
}
