/* falseshare: small blocks handed to different threads that write to them hard.
 *
 * Two phases, after the cache-thrash / cache-scratch tests of the Hoard paper:
 *  active:  each thread repeatedly mallocs a 16-byte block, increments a counter in it
 *           many times, and frees it. An allocator that carves the threads' blocks from
 *           one shared cache line makes the cores fight over that line.
 *  passive: the main thread mallocs one 16-byte block per thread back to back (so they
 *           share cache lines) and hands them out; each thread frees its block and then
 *           does the active loop. An allocator that gives the freed block straight back
 *           to the freeing thread recreates the sharing.
 * The counters' final values are the result (deterministic).
 *
 * usage: falseshare THREADS [scale]
 */
#include "common.h"
#include <pthread.h>

#define OBJ 16

static int nthreads;
static uint64_t reps, writes;
static void **handed;
static uint64_t *sums;

static uint64_t hammer(int id)
{
    uint64_t sum = 0;
    for (uint64_t r = 0; r < reps; r++) {
        volatile uint64_t *c = xmalloc(OBJ);
        c[0] = (uint64_t)id;
        c[1] = r;
        for (uint64_t w = 0; w < writes; w++)
            c[0] += w;
        if (c[1] != r)
            fail("neighbour word changed");
        sum += c[0];
        free((void *)c);
    }
    return sum;
}

static void *active(void *arg)
{
    int id = (int)(intptr_t)arg;
    sums[id] += hammer(id);
    return NULL;
}

static void *passive(void *arg)
{
    int id = (int)(intptr_t)arg;
    volatile uint64_t *mine = handed[id];
    if (mine[0] != (uint64_t)id * 7)
        fail("handed block corrupted");
    free((void *)mine);
    sums[id] += hammer(id);
    return NULL;
}

static void run(void *(*fn)(void *), pthread_t *th)
{
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], NULL, fn, (void *)(intptr_t)i) != 0)
            fail("pthread_create");
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
}

int main(int argc, char **argv)
{
    nthreads = (int)arg_long(argc, argv, 1, 1);
    long scale = arg_long(argc, argv, 2, 1);
    /* total counter writes per phase, split among the threads */
    uint64_t total = 400000000ull * (uint64_t)scale;
    reps = 2000;
    writes = total / reps / (uint64_t)nthreads;
    sums = calloc((size_t)nthreads, sizeof(uint64_t));
    handed = calloc((size_t)nthreads, sizeof(void *));
    pthread_t *th = calloc((size_t)nthreads, sizeof(pthread_t));
    if (!sums || !handed || !th)
        fail("calloc");

    run(active, th);
    for (int i = 0; i < nthreads; i++) {
        uint64_t *p = xmalloc(OBJ);
        p[0] = (uint64_t)i * 7;
        handed[i] = p;
    }
    run(passive, th);

    /* each thread's counters depend only on its id and the per-thread work */
    uint64_t sum = 0;
    for (int i = 0; i < nthreads; i++)
        sum += sums[i];
    print_ok(sum);
    free(th);
    free(handed);
    free(sums);
    return 0;
}
