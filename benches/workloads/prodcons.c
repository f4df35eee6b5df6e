/* prodcons: producer/consumer. One thread allocates, another frees, through a queue.
 *
 * THREADS/2 producer-consumer pairs (THREADS = 1: one thread alternates between filling
 * the queue and emptying it, so every free is local). Each pair shares a bounded
 * single-producer single-consumer ring of 1024 pointers. The producer allocates messages
 * of random sizes (16 B .. 2 KiB) and pushes them; the consumer pops, verifies and frees
 * them. Every free in the threaded runs is a remote free.
 *
 * usage: prodcons THREADS [scale]
 */
#include "common.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define QCAP 1024 /* power of two */

struct queue {
    _Alignas(64) atomic_size_t head; /* next slot to pop (consumer) */
    _Alignas(64) atomic_size_t tail; /* next slot to push (producer) */
    _Alignas(64) void *slot[QCAP];
    uint64_t items;
    uint64_t seed;
    uint64_t sum;
};

static size_t pick_size(uint64_t *rng)
{
    uint32_t r = rng_below(rng, 100);
    if (r < 70)
        return rng_range(rng, 16, 128);
    if (r < 95)
        return rng_range(rng, 129, 512);
    return rng_range(rng, 513, 2048);
}

static void *producer(void *arg)
{
    struct queue *q = arg;
    uint64_t rng = q->seed;
    size_t tail = 0, head_seen = 0;
    for (uint64_t i = 0; i < q->items; i++) {
        size_t n = pick_size(&rng);
        void *p = xmalloc(n);
        stamp(p, n, mix64(q->seed ^ i));
        while (tail - head_seen == QCAP) {
            head_seen = atomic_load_explicit(&q->head, memory_order_acquire);
            if (tail - head_seen == QCAP)
                sched_yield();
        }
        q->slot[tail & (QCAP - 1)] = p;
        tail++;
        atomic_store_explicit(&q->tail, tail, memory_order_release);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    struct queue *q = arg;
    size_t head = 0, tail_seen = 0;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < q->items; i++) {
        while (head == tail_seen) {
            tail_seen = atomic_load_explicit(&q->tail, memory_order_acquire);
            if (head == tail_seen)
                sched_yield();
        }
        void *p = q->slot[head & (QCAP - 1)];
        head++;
        atomic_store_explicit(&q->head, head, memory_order_release);
        sum += check(p);
        free(p);
    }
    q->sum = sum;
    return NULL;
}

/* one thread plays both roles: fill the ring, then empty it */
static void alternate(struct queue *q)
{
    uint64_t rng = q->seed, sum = 0;
    uint64_t i = 0;
    while (i < q->items) {
        size_t fill = 0;
        for (; fill < QCAP && i < q->items; fill++, i++) {
            size_t n = pick_size(&rng);
            void *p = xmalloc(n);
            stamp(p, n, mix64(q->seed ^ i));
            q->slot[fill] = p;
        }
        for (size_t k = 0; k < fill; k++) {
            sum += check(q->slot[k]);
            free(q->slot[k]);
        }
    }
    q->sum = sum;
}

int main(int argc, char **argv)
{
    int threads = (int)arg_long(argc, argv, 1, 2);
    long scale = arg_long(argc, argv, 2, 1);
    uint64_t total = 8000000ull * (uint64_t)scale;
    int pairs = threads / 2 > 0 ? threads / 2 : 1;
    struct queue *qs = aligned_alloc(64, sizeof(struct queue) * (size_t)pairs);
    pthread_t *th = calloc((size_t)pairs * 2, sizeof *th);
    if (!qs || !th)
        fail("alloc");
    memset(qs, 0, sizeof(struct queue) * (size_t)pairs);
    for (int k = 0; k < pairs; k++) {
        qs[k].items = total / (uint64_t)pairs;
        qs[k].seed = 0x9000 + (uint64_t)k;
    }
    if (threads == 1) {
        alternate(&qs[0]);
    } else {
        for (int k = 0; k < pairs; k++) {
            if (pthread_create(&th[2 * k], NULL, consumer, &qs[k]) != 0 ||
                pthread_create(&th[2 * k + 1], NULL, producer, &qs[k]) != 0)
                fail("pthread_create");
        }
        for (int k = 0; k < 2 * pairs; k++)
            pthread_join(th[k], NULL);
    }
    uint64_t sum = 0;
    for (int k = 0; k < pairs; k++)
        sum += qs[k].sum;
    print_ok(sum);
    free(th);
    free(qs);
    return 0;
}
