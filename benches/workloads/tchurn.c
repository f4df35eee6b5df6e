/* tchurn: thread churn with transfers between threads that come and go.
 *
 * Each round starts THREADS threads and joins them, hundreds of rounds per second. Every
 * thread fills a private array of objects, then overwrites random entries of it (free the
 * old object, allocate a new one). Object sizes: mostly 2..8 words, 1% ten times that,
 * and 0.01% huge (128 KiB .. 2 MiB, far past any slab, into the MiB range). One step in
 * eight, instead of allocating, the thread swaps the object of the entry into a random
 * entry of a shared transfer array (an atomic exchange of pointers) and keeps what it got
 * back: an object made by another thread, often one that has already exited, which this
 * thread frees later. The transfer array lives across rounds; the threads of a round split
 * a fixed amount of work, so the total work does not depend on THREADS.
 *
 * An allocator pays here for thread start-up and exit (heap set-up, handing back or
 * abandoning memory) and for frees of blocks whose owner is gone.
 *
 * The result is the sum of the tags of all objects freed; every object is freed exactly
 * once (by some thread), so the sum does not depend on which thread got which object.
 *
 * usage: tchurn THREADS [scale] [divisor]   (work = scale / divisor)
 */
#include "common.h"
#include <pthread.h>
#include <stdatomic.h>

#define PRIVATE 200        /* entries of each thread's own array */
#define TRANSFER 512       /* entries of the shared transfer array */
#define STEPS_PER_ROUND 12000 /* overwrite steps per round, split among the threads */

static int nthreads;
static uint64_t round_no;
static _Atomic(void *) transfer[TRANSFER];
static uint64_t *sums;

static size_t pick_size(uint64_t *rng)
{
    uint32_t r = rng_below(rng, 10000);
    size_t words = rng_range(rng, 2, 8);
    if (r == 0)
        return rng_range(rng, 128 * 1024, 2 * 1024 * 1024);
    if (r <= 100)
        words *= 10;
    return words * 8;
}

static void *new_object(uint64_t *rng, uint64_t tag)
{
    size_t n = pick_size(rng);
    void *p = xmalloc(n);
    if (n > 4096)
        touch_pages(p, 16, n - 8, (unsigned char)tag);
    stamp(p, n, tag);
    return p;
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t rng = mix64((round_no << 8) ^ (uint64_t)id ^ 0x7C4u), sum = 0, made = 0;
    uint64_t base = (round_no << 40) ^ ((uint64_t)id << 32);
    void *obj[PRIVATE];
    for (int i = 0; i < PRIVATE; i++)
        obj[i] = new_object(&rng, mix64(base + made++));
    uint64_t steps = STEPS_PER_ROUND / (uint64_t)nthreads;
    for (uint64_t s = 0; s < steps; s++) {
        unsigned k = rng_below(&rng, PRIVATE);
        if (rng_below(&rng, 8) == 0) {
            unsigned j = rng_below(&rng, TRANSFER);
            obj[k] = atomic_exchange(&transfer[j], obj[k]);
            continue;
        }
        if (obj[k]) {
            sum += check(obj[k]);
            free(obj[k]);
        }
        obj[k] = new_object(&rng, mix64(base + made++));
    }
    for (int i = 0; i < PRIVATE; i++)
        if (obj[i]) {
            sum += check(obj[i]);
            free(obj[i]);
        }
    sums[id] += sum;
    return NULL;
}

int main(int argc, char **argv)
{
    nthreads = (int)arg_long(argc, argv, 1, 1);
    long scale = arg_long(argc, argv, 2, 1);
    long divisor = arg_long(argc, argv, 3, 1);
    uint64_t rounds = 1500ull * (uint64_t)scale / (uint64_t)divisor;
    sums = calloc((size_t)nthreads, sizeof *sums);
    pthread_t *th = calloc((size_t)nthreads, sizeof *th);
    if (!sums || !th)
        fail("calloc");
    for (round_no = 0; round_no < rounds; round_no++) {
        for (int i = 0; i < nthreads; i++)
            if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) != 0)
                fail("pthread_create");
        for (int i = 0; i < nthreads; i++)
            pthread_join(th[i], NULL);
    }
    uint64_t sum = 0;
    for (int j = 0; j < TRANSFER; j++) {
        void *p = atomic_load(&transfer[j]);
        if (p) {
            sum += check(p);
            free(p);
        }
    }
    for (int i = 0; i < nthreads; i++)
        sum += sums[i];
    print_ok(sum);
    free(th);
    free(sums);
    return 0;
}
