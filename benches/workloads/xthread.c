/* xthread: the server pattern, objects freed by other threads than the ones that made them.
 *
 * T worker threads form a ring. Each thread repeatedly allocates a batch of 64 objects
 * (a "request": random small and medium sizes), hands the batch to the next thread's
 * inbox, and frees whatever batches arrived in its own inbox (made by the previous
 * thread). So every object is freed by a different thread than the one that made it
 * (with T = 1 the ring closes on itself and frees are local). The batch records
 * themselves are malloc'ed by the sender and freed by the receiver too. Total work is
 * fixed, split among the threads.
 *
 * usage: xthread THREADS [scale]
 */
#include "common.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define BATCH 64
#define MAX_INFLIGHT 32 /* batches waiting in one inbox before the sender backs off */

struct batch {
    struct batch *next;
    int n;
    void *obj[BATCH];
};

struct inbox {
    pthread_mutex_t lock;
    struct batch *head, *tail;
    atomic_int count;
    char pad[64];
};

static int nthreads;
static uint64_t batches_per_thread;
static struct inbox *inboxes;
static atomic_int producers_done;
static uint64_t *sums;

static size_t pick_size(uint64_t *rng)
{
    uint32_t r = rng_below(rng, 100);
    if (r < 60)
        return rng_range(rng, 16, 128);
    if (r < 95)
        return rng_range(rng, 129, 1024);
    return rng_range(rng, 1025, 8192);
}

static struct batch *take_all(struct inbox *in)
{
    if (atomic_load_explicit(&in->count, memory_order_relaxed) == 0)
        return NULL;
    pthread_mutex_lock(&in->lock);
    struct batch *b = in->head;
    in->head = in->tail = NULL;
    atomic_store(&in->count, 0);
    pthread_mutex_unlock(&in->lock);
    return b;
}

static void put(struct inbox *in, struct batch *b)
{
    b->next = NULL;
    pthread_mutex_lock(&in->lock);
    if (in->tail)
        in->tail->next = b;
    else
        in->head = b;
    in->tail = b;
    atomic_fetch_add(&in->count, 1);
    pthread_mutex_unlock(&in->lock);
}

static uint64_t drain(struct inbox *in)
{
    uint64_t sum = 0;
    struct batch *b = take_all(in);
    while (b) {
        struct batch *next = b->next;
        for (int i = 0; i < b->n; i++) {
            sum += check(b->obj[i]);
            free(b->obj[i]);
        }
        free(b);
        b = next;
    }
    return sum;
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    struct inbox *mine = &inboxes[id];
    struct inbox *next = &inboxes[(id + 1) % nthreads];
    uint64_t rng = 0xABCD0000ull + (uint64_t)id, sum = 0;

    for (uint64_t k = 0; k < batches_per_thread; k++) {
        struct batch *b = xmalloc(sizeof *b);
        b->n = BATCH;
        for (int i = 0; i < BATCH; i++) {
            size_t n = pick_size(&rng);
            void *p = xmalloc(n);
            stamp(p, n, mix64(((uint64_t)id << 40) ^ (k * BATCH + (uint64_t)i)));
            b->obj[i] = p;
        }
        while (nthreads > 1 && atomic_load_explicit(&next->count, memory_order_relaxed) >= MAX_INFLIGHT) {
            sum += drain(mine);
            sched_yield();
        }
        put(next, b);
        sum += drain(mine);
    }
    atomic_fetch_add(&producers_done, 1);
    for (;;) {
        int done = atomic_load(&producers_done) == nthreads;
        sum += drain(mine);
        if (done)
            break;
        sched_yield();
    }
    sums[id] = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    nthreads = (int)arg_long(argc, argv, 1, 1);
    long scale = arg_long(argc, argv, 2, 1);
    uint64_t total_batches = 100000ull * (uint64_t)scale;
    batches_per_thread = total_batches / (uint64_t)nthreads;
    inboxes = calloc((size_t)nthreads, sizeof *inboxes);
    sums = calloc((size_t)nthreads, sizeof *sums);
    pthread_t *th = calloc((size_t)nthreads, sizeof *th);
    if (!inboxes || !sums || !th)
        fail("calloc");
    for (int i = 0; i < nthreads; i++)
        pthread_mutex_init(&inboxes[i].lock, NULL);
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) != 0)
            fail("pthread_create");
    uint64_t sum = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        sum += sums[i];
    }
    print_ok(sum);
    free(th);
    free(sums);
    free(inboxes);
    return 0;
}
