/* rslot: random-slot replacement with a skewed size distribution.
 *
 * Each of THREADS threads owns an array of 32768 slots. It fills them, then every step
 * frees the block in a random slot and puts a new block there, writing all of it. Sizes
 * follow a power law: size = 16 / u for u uniform in (0, 1], capped at 48 KiB, so 7 in 8
 * blocks are under 128 bytes, about 1 in 250 is over 4 KiB, and the tail reaches tens of
 * KiB (mean ~150 bytes). The live set (~5 MB a thread) is larger than the caches, so the
 * allocator's metadata and free lists are touched at random: a steady-state heap of a
 * long-running program, without the luck of LIFO reuse. The threads share nothing; the
 * total number of steps is fixed and split among them.
 *
 * usage: rslot THREADS [scale] [divisor]   (work = scale / divisor)
 */
#include "common.h"
#include <pthread.h>

#define SLOTS 32768
#define MAX_SIZE (48 * 1024)

static int nthreads;
static uint64_t steps_per_thread;
static uint64_t *sums;

static size_t pick_size(uint64_t *rng)
{
    /* u = (r + 1) / 2^32 in (0, 1]; size = 16 / u = 2^36 / (r + 1) */
    uint64_t r = rng_next(rng) >> 32;
    uint64_t n = (1ull << 36) / (r + 1);
    return n > MAX_SIZE ? MAX_SIZE : (size_t)n;
}

static void *new_block(uint64_t *rng, uint64_t tag)
{
    size_t n = pick_size(rng);
    void *p = xmalloc(n);
    memset(p, (int)(tag & 0xff), n);
    stamp(p, n, tag);
    return p;
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t rng = mix64(0x5107u + (uint64_t)id), sum = 0;
    uint64_t base = (uint64_t)id << 48;
    void **slot = xmalloc(SLOTS * sizeof *slot);
    for (uint64_t i = 0; i < SLOTS; i++)
        slot[i] = new_block(&rng, mix64(base + i));
    for (uint64_t s = 0; s < steps_per_thread; s++) {
        unsigned k = rng_below(&rng, SLOTS);
        sum += check(slot[k]);
        free(slot[k]);
        slot[k] = new_block(&rng, mix64(base + SLOTS + s));
    }
    for (uint64_t i = 0; i < SLOTS; i++) {
        sum += check(slot[i]);
        free(slot[i]);
    }
    free(slot);
    sums[id] = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    nthreads = (int)arg_long(argc, argv, 1, 1);
    long scale = arg_long(argc, argv, 2, 1);
    long divisor = arg_long(argc, argv, 3, 1);
    uint64_t total = 10000000ull * (uint64_t)scale / (uint64_t)divisor;
    steps_per_thread = total / (uint64_t)nthreads;
    sums = calloc((size_t)nthreads, sizeof *sums);
    if (!sums)
        fail("calloc");
    run_workers(nthreads, worker);
    print_ok(sum_of(sums, nthreads));
    free(sums);
    return 0;
}
