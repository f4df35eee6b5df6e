/* smallloop: the memory of a small program, a malloc/free loop with a small live set.
 *
 * Each of THREADS threads keeps 1000 slots; every step frees the block in a random slot
 * and allocates a new one of a random small size (16..512 bytes, most under 64). The live
 * set is ~60 KB a thread, so the process peaks at 1..3 MiB and the peak RSS column shows
 * what the allocator adds to a small program: its start-up reservations, per-thread
 * caches and slab granularity. The total number of steps is fixed and split among the
 * threads. Run with 1 thread (`smallloop`) and 2 (`smallloop-2`).
 *
 * usage: smallloop THREADS [scale] [divisor]   (work = scale / divisor)
 */
#include "common.h"
#include <pthread.h>

#define SLOTS 1000

#define MAX_THREADS 64

static int nthreads;
static uint64_t steps_per_thread;
static uint64_t sums[MAX_THREADS];

static size_t pick_size(uint64_t *rng)
{
    uint32_t r = rng_below(rng, 100);
    if (r < 70)
        return rng_range(rng, 16, 64);
    if (r < 95)
        return rng_range(rng, 65, 128);
    return rng_range(rng, 129, 512);
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t rng = mix64(0x5E1Fu + (uint64_t)id), sum = 0;
    uint64_t base = (uint64_t)id << 48;
    void *slot[SLOTS] = {0};
    for (uint64_t s = 0; s < steps_per_thread; s++) {
        unsigned k = rng_below(&rng, SLOTS);
        if (slot[k]) {
            sum += check(slot[k]);
            free(slot[k]);
        }
        size_t n = pick_size(&rng);
        void *p = xmalloc(n);
        stamp(p, n, mix64(base + s));
        slot[k] = p;
    }
    for (unsigned k = 0; k < SLOTS; k++)
        if (slot[k]) {
            sum += check(slot[k]);
            free(slot[k]);
        }
    sums[id] = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    nthreads = (int)arg_long(argc, argv, 1, 1);
    long scale = arg_long(argc, argv, 2, 1);
    long divisor = arg_long(argc, argv, 3, 1);
    if (nthreads > MAX_THREADS)
        fail("too many threads");
    steps_per_thread = 25000000ull * (uint64_t)scale / (uint64_t)divisor / (uint64_t)nthreads;
    uint64_t sum = 0;
    if (nthreads == 1) {
        /* no thread at all: the single-threaded program, as small as it gets */
        worker((void *)0);
    } else {
        pthread_t th[MAX_THREADS];
        for (int i = 0; i < nthreads; i++)
            if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) != 0)
                fail("pthread_create");
        for (int i = 0; i < nthreads; i++)
            pthread_join(th[i], NULL);
    }
    for (int i = 0; i < nthreads; i++)
        sum += sums[i];
    print_ok(sum);
    return 0;
}
