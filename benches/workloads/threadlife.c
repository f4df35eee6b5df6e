/* threadlife: threads are created and end while their objects survive them.
 *
 * Generations of THREADS short-lived threads. In each generation every thread frees its
 * share of the survivors left by the previous generation (made by threads that have
 * exited, interleaved so each dead thread's objects are freed by all new threads),
 * allocates and frees temporaries, and leaves a fresh set of survivors behind when it
 * exits. An allocator must hand the memory of dead threads to the living (adoption or
 * a global pool) or it grows without bound; peak RSS shows it.
 *
 * usage: threadlife THREADS [scale]
 */
#include "common.h"
#include <pthread.h>

#define SURVIVORS 40000 /* per generation, over all threads */
#define TEMPS 3         /* temporaries per survivor */

static int nthreads;
static void **prev, **cur;
static uint64_t gen;
static uint64_t *sums;

static size_t pick_size(uint64_t *rng)
{
    uint32_t r = rng_below(rng, 100);
    if (r < 75)
        return rng_range(rng, 16, 256);
    if (r < 97)
        return rng_range(rng, 257, 2048);
    return rng_range(rng, 2049, 16384);
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t rng = mix64(gen * 1000003u + (uint64_t)id), sum = 0;
    void *tmp[TEMPS];
    for (size_t i = (size_t)id; i < SURVIVORS; i += (size_t)nthreads) {
        if (prev[i]) {
            sum += check(prev[i]);
            free(prev[i]);
            prev[i] = NULL;
        }
        for (int t = 0; t < TEMPS; t++) {
            size_t n = pick_size(&rng);
            tmp[t] = xmalloc(n);
            stamp(tmp[t], n, mix64(gen ^ (i << 8) ^ (uint64_t)t));
        }
        size_t n = pick_size(&rng);
        void *p = xmalloc(n);
        stamp(p, n, mix64((gen << 32) ^ i));
        cur[i] = p;
        for (int t = 0; t < TEMPS; t++) {
            sum += check(tmp[t]);
            free(tmp[t]);
        }
    }
    sums[id] += sum;
    return NULL;
}

int main(int argc, char **argv)
{
    nthreads = (int)arg_long(argc, argv, 1, 1);
    long scale = arg_long(argc, argv, 2, 1);
    long generations = 60 * scale;
    prev = calloc(SURVIVORS, sizeof(void *));
    cur = calloc(SURVIVORS, sizeof(void *));
    sums = calloc((size_t)nthreads, sizeof(uint64_t));
    pthread_t *th = calloc((size_t)nthreads, sizeof(pthread_t));
    if (!prev || !cur || !sums || !th)
        fail("calloc");
    for (gen = 0; gen < (uint64_t)generations; gen++) {
        for (int i = 0; i < nthreads; i++)
            if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) != 0)
                fail("pthread_create");
        for (int i = 0; i < nthreads; i++)
            pthread_join(th[i], NULL);
        void **t = prev;
        prev = cur;
        cur = t;
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < SURVIVORS; i++)
        if (prev[i]) {
            sum += check(prev[i]);
            free(prev[i]);
        }
    for (int i = 0; i < nthreads; i++)
        sum += sums[i];
    print_ok(sum);
    free(th);
    free(sums);
    free(cur);
    free(prev);
    return 0;
}
