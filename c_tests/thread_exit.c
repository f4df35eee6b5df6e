/*
 * Threads that exit with live blocks: their blocks stay intact and can be
 * freed by the main thread later, also while new threads allocate (and may
 * adopt the dead threads' memory). Then 2000 short-lived threads, each
 * allocating and freeing, created and joined in a loop: memory must not grow
 * without bound (RSS from /proc/self/statm stays under a generous bound).
 */
#include "common.h"
#include <pthread.h>

#define NT 8
#define PER 2000

struct blk {
    unsigned char *p;
    size_t n;
    uint64_t seed;
};

static struct blk blocks[NT][PER];

static size_t size_for(int t, int i)
{
    if (i == 0)
        return ((size_t)3 << 20) + (size_t)t * 4096; /* one huge */
    if (i % 100 == 1)
        return 50000 + (size_t)i * 7; /* some medium */
    return (size_t)((i * 37 + t * 11) % 700); /* mostly small, incl. 0 */
}

static void *leave_blocks(void *arg)
{
    int t = (int)(uintptr_t)arg;
    for (int i = 0; i < PER; i++) {
        size_t n = size_for(t, i);
        unsigned char *p = malloc(n);
        CHECK(p != NULL, "thread %d: malloc(%zu) failed", t, n);
        blocks[t][i] = (struct blk){p, n, ((uint64_t)t << 20) + (uint64_t)i};
        ox_fill(p, n, blocks[t][i].seed);
        /* plus churn that is freed before exit */
        void *tmp = malloc((size_t)(i % 300));
        CHECK(tmp != NULL, "malloc failed");
        ox_escape(tmp);
        free(tmp);
    }
    return NULL;
}

static void *churn(void *arg)
{
    int seed = (int)(uintptr_t)arg;
    void *ps[256];
    for (int i = 0; i < 256; i++) {
        size_t n = (size_t)((i * 53 + seed) % 1000);
        ps[i] = malloc(n);
        CHECK(ps[i] != NULL, "malloc(%zu) failed", n);
        memset(ps[i], 0xee, n);
    }
    for (int i = 0; i < 256; i++)
        free(ps[i]);
    return NULL;
}

/* A short-lived thread: allocates a mix, frees it all, exits. Every 16th also
 * hands one block back to the main thread. */
static void *short_lived(void *arg)
{
    uintptr_t k = (uintptr_t)arg;
    void *ps[64];
    for (int i = 0; i < 64; i++) {
        size_t n = (size_t)((i * 131 + k * 17) % 2048) + 1;
        if (i == 63)
            n = 70000; /* one medium block */
        ps[i] = malloc(n);
        CHECK(ps[i] != NULL, "short-lived thread %lu: malloc(%zu) failed", (unsigned long)k, n);
        memset(ps[i], (int)(k & 0xff), n);
    }
    for (int i = 1; i < 64; i++)
        free(ps[i]);
    if (k % 16 == 0)
        return ps[0];
    free(ps[0]);
    return NULL;
}

int main(void)
{
    ox_require_active();

    pthread_t th[NT];
    for (uintptr_t t = 0; t < NT; t++)
        CHECK(pthread_create(&th[t], NULL, leave_blocks, (void *)t) == 0, "pthread_create");
    for (int t = 0; t < NT; t++)
        CHECK(pthread_join(th[t], NULL) == 0, "pthread_join");

    /* All their blocks are intact after the threads are gone. */
    for (int t = 0; t < NT; t++)
        for (int i = 0; i < PER; i++) {
            size_t bad = ox_verify(blocks[t][i].p, blocks[t][i].n, blocks[t][i].seed);
            CHECK(bad == SIZE_MAX, "block %d of dead thread %d (%zu bytes) corrupted at byte %zu",
                  i, t, blocks[t][i].n, bad);
        }
    /* Free half of them from main. */
    for (int t = 0; t < NT; t++)
        for (int i = 0; i < PER; i += 2) {
            free(blocks[t][i].p);
            blocks[t][i].p = NULL;
        }
    /* New threads allocate (and may adopt the dead threads' slabs). */
    for (uintptr_t t = 0; t < NT; t++)
        CHECK(pthread_create(&th[t], NULL, churn, (void *)t) == 0, "pthread_create");
    for (int t = 0; t < NT; t++)
        pthread_join(th[t], NULL);
    /* Main allocates too; the remaining blocks are still intact. */
    void *mine[1000];
    for (int i = 0; i < 1000; i++) {
        mine[i] = malloc((size_t)(i % 700));
        CHECK(mine[i] != NULL, "malloc failed");
        memset(mine[i], 0x99, (size_t)(i % 700));
    }
    for (int t = 0; t < NT; t++)
        for (int i = 1; i < PER; i += 2) {
            size_t bad = ox_verify(blocks[t][i].p, blocks[t][i].n, blocks[t][i].seed);
            CHECK(bad == SIZE_MAX, "block %d of dead thread %d corrupted at byte %zu after "
                  "other threads allocated", i, t, bad);
            free(blocks[t][i].p);
        }
    for (int i = 0; i < 1000; i++)
        free(mine[i]);

    /* 2000 short-lived threads. */
    const int total = 2000, warm = 200;
    size_t rss_warm = 0;
    void *handed[2000 / 16 + 1];
    int nhanded = 0;
    for (int k = 0; k < total; k++) {
        pthread_t t;
        void *ret = NULL;
        CHECK(pthread_create(&t, NULL, short_lived, (void *)(uintptr_t)k) == 0,
              "pthread_create #%d failed", k);
        CHECK(pthread_join(t, &ret) == 0, "pthread_join #%d", k);
        if (ret != NULL) {
            CHECK(((unsigned char *)ret)[0] == (unsigned char)(k & 0xff),
                  "block handed back by thread %d corrupted", k);
            handed[nhanded++] = ret;
        }
        if (k + 1 == warm)
            rss_warm = ox_rss_bytes();
    }
    size_t rss_end = ox_rss_bytes();
    for (int i = 0; i < nhanded; i++)
        free(handed[i]);
    NOTE("RSS after %d threads: %zu KiB, after %d: %zu KiB", warm, rss_warm >> 10, total,
         rss_end >> 10);
    CHECK(rss_end < rss_warm + ((size_t)96 << 20),
          "RSS grew from %zu KiB after %d short-lived threads to %zu KiB after %d: dead "
          "threads' memory is not reused",
          rss_warm >> 10, warm, rss_end >> 10, total);
    CHECK(rss_end < ((size_t)512 << 20), "RSS %zu KiB after %d short-lived threads",
          rss_end >> 10, total);
    return 0;
}
