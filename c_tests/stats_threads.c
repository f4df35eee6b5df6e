/*
 * The statistics can be read while other threads allocate, free each other's blocks,
 * exit and are replaced: mallinfo2, ox_stats_get and malloc_info walk every slab of every
 * heap, and must neither crash nor report figures that contradict each other
 * (arena = uordblks + fordblks; live = small + medium + huge; held >= ...). At the end,
 * with every worker joined and every block freed, uordblks is back where it started.
 */
#include "common.h"
#include "oxmalloc.h"
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>

enum { WORKERS = 4, ROUNDS = 6, SLOTS = 2000 };

static void *shared[WORKERS][SLOTS];
static atomic_int stop;

static void *worker(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 7919 + 1;
    int me = (int)(uintptr_t)arg % WORKERS;
    for (int i = 0; i < 20000; i++) {
        int slot = (int)(ox_rand(&seed) % SLOTS);
        int owner = (int)(ox_rand(&seed) % WORKERS);
        /* Take a block from any worker's table (a remote free when it is not ours). */
        void *old = __atomic_exchange_n(&shared[owner][slot], NULL, __ATOMIC_ACQ_REL);
        free(old);
        size_t size = (ox_rand(&seed) % 8 == 0) ? 20000 + ox_rand(&seed) % 100000
                                                 : 8 + ox_rand(&seed) % 600;
        void *p = malloc(size);
        CHECK(p != NULL, "malloc(%zu) failed", size);
        memset(p, 0x5a, size < 64 ? size : 64);
        void *prev = __atomic_exchange_n(&shared[me][slot], p, __ATOMIC_ACQ_REL);
        free(prev);
    }
    return NULL;
}

static void *reader(void *arg)
{
    (void)arg;
    typedef void (*stats_fn)(ox_stats *);
    stats_fn stats_get = (stats_fn)ox_sym("ox_stats_get");
    FILE *sink = fopen("/dev/null", "w");
    CHECK(sink != NULL, "fopen /dev/null");
    long reads = 0;
    while (!atomic_load(&stop)) {
        struct mallinfo2 m = mallinfo2();
        CHECK(m.arena == m.uordblks + m.fordblks, "arena %zu != %zu + %zu", m.arena,
              m.uordblks, m.fordblks);
        ox_stats s;
        stats_get(&s);
        CHECK(s.live_bytes == s.small_live_bytes + s.medium_live_bytes + s.huge_live_bytes,
              "live bytes are not the sum of their parts");
        CHECK(s.live_blocks ==
                  s.small_live_blocks + s.medium_live_blocks + s.huge_live_blocks,
              "live blocks are not the sum of their parts");
        CHECK(s.peak_held_bytes >= s.held_bytes, "peak held below held");
        CHECK(malloc_info(0, sink) == 0, "malloc_info failed");
        reads++;
    }
    fclose(sink);
    return (void *)reads;
}

int main(void)
{
    ox_require_active();
    CHECK(ox_sym("ox_stats_get") != NULL, "ox_stats_get not found");
    struct mallinfo2 before = mallinfo2();
    pthread_t r;
    CHECK(pthread_create(&r, NULL, reader, NULL) == 0, "pthread_create");
    for (int round = 0; round < ROUNDS; round++) {
        pthread_t t[WORKERS];
        for (int i = 0; i < WORKERS; i++)
            CHECK(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(round * WORKERS + i)) == 0,
                  "pthread_create");
        for (int i = 0; i < WORKERS; i++)
            pthread_join(t[i], NULL);
    }
    atomic_store(&stop, 1);
    void *reads;
    pthread_join(r, &reads);
    for (int w = 0; w < WORKERS; w++)
        for (int i = 0; i < SLOTS; i++) {
            free(shared[w][i]);
            shared[w][i] = NULL;
        }
    /* Remote frees are counted live until their owner collects them; trimming collects
     * them (and adopts the heaps of exited threads). */
    malloc_trim(0);
    ox_stats s;
    ((void (*)(ox_stats *))ox_sym("ox_stats_get"))(&s);
    struct mallinfo2 after = mallinfo2();
    CHECK(after.uordblks <= before.uordblks + 65536,
          "uordblks %zu after freeing everything (%zu before)", after.uordblks, before.uordblks);
    CHECK(s.remote_frees > 0, "no remote frees counted");
    CHECK(s.threads_started >= WORKERS * ROUNDS, "threads started %zu", s.threads_started);
    printf("%ld statistics reads while workers ran; remote frees %zu; uordblks %zu -> %zu\n",
           (long)(intptr_t)reads, s.remote_frees, before.uordblks, after.uordblks);
    return 0;
}
