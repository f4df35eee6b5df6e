/* xbatch: batches of random-size blocks, half freed at home, half by another thread.
 *
 * THREADS threads form a ring. Each thread allocates batches of 1000 blocks of random
 * sizes from 8 bytes to 16 KiB (log-uniform: as many blocks in 8..16 B as in 8..16 KiB),
 * marks each, and keeps the last 4 batches. When a batch falls out of that window, the
 * thread rewrites every block of it, frees every other block itself and hands the rest,
 * in the same batch record, to the next thread's inbox (a mutex-protected list); that
 * thread frees them when it next looks at its inbox. So half of all frees are remote, of
 * blocks that have been live for a while among others of all sizes. A sender whose
 * receiver has 8 batches waiting drains its own inbox and then sleeps on a condition
 * variable (never spins), so that CPU time counts allocator work, not waiting. Total work
 * is fixed and split among the threads.
 *
 * Scored by CPU time (user + system from wait4), so it reads as operations per CPU
 * second ("# ops=" is the number of mallocs and frees); with more threads than cores,
 * wall time would mostly measure the scheduler.
 *
 * usage: xbatch THREADS [scale] [divisor]   (work = scale / divisor)
 */
#include "common.h"
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define BATCH 1000
#define KEEP 4        /* batches a thread holds before it gives the oldest away */
#define MAX_QUEUED 8  /* batches waiting in one inbox before the sender waits */

struct batch {
    struct batch *next;
    int n;
    uint32_t size[BATCH];
    void *blk[BATCH];
};

struct inbox {
    pthread_mutex_t lock;
    pthread_cond_t changed; /* broadcast when batches arrive and when they are taken */
    struct batch *head, *tail;
    int count;
    char pad[64];
};

static int nthreads;
static uint64_t batches_per_thread;
static struct inbox *inboxes;
static atomic_int producers_done;
static uint64_t *sums;

static size_t pick_size(uint64_t *rng)
{
    unsigned shift = rng_below(rng, 11); /* 8 << 0 .. 8 << 10 = 8 B .. 8 KiB */
    size_t lo = (size_t)8 << shift;
    return rng_range(rng, lo, 2 * lo);
}

static void wait_a_while(struct inbox *in)
{
    /* called with in->lock held; a timeout so that no lost wake-up can stall the ring */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    int rc = pthread_cond_timedwait(&in->changed, &in->lock, &ts);
    if (rc != 0 && rc != ETIMEDOUT)
        fail("pthread_cond_timedwait");
}

/* Free every block in the batches waiting in the inbox; return how many batches. */
static int drain(struct inbox *in, uint64_t *sum)
{
    pthread_mutex_lock(&in->lock);
    struct batch *b = in->head;
    int count = in->count;
    in->head = in->tail = NULL;
    in->count = 0;
    if (count)
        pthread_cond_broadcast(&in->changed);
    pthread_mutex_unlock(&in->lock);
    while (b) {
        struct batch *next = b->next;
        for (int i = 0; i < b->n; i++) {
            *sum += unmark(b->blk[i], b->size[i]);
            free(b->blk[i]);
        }
        free(b);
        b = next;
    }
    return count;
}

static void send(struct inbox *mine, struct inbox *to, struct batch *b, uint64_t *sum)
{
    b->next = NULL;
    pthread_mutex_lock(&to->lock);
    while (to != mine && to->count >= MAX_QUEUED) {
        pthread_mutex_unlock(&to->lock);
        int got = drain(mine, sum);
        pthread_mutex_lock(&to->lock);
        if (!got && to->count >= MAX_QUEUED)
            wait_a_while(to);
    }
    if (to->tail)
        to->tail->next = b;
    else
        to->head = b;
    to->tail = b;
    to->count++;
    pthread_cond_broadcast(&to->changed);
    pthread_mutex_unlock(&to->lock);
}

static struct batch *make_batch(uint64_t *rng, uint64_t base)
{
    struct batch *b = xmalloc(sizeof *b);
    b->n = BATCH;
    for (int i = 0; i < BATCH; i++) {
        size_t n = pick_size(rng);
        void *p = xmalloc(n);
        if (n > 4096)
            touch_pages(p, 8, n, 1);
        mark(p, n, mix64(base + (uint64_t)i));
        b->size[i] = (uint32_t)n;
        b->blk[i] = p;
    }
    return b;
}

/* Rewrite every block, free every other one, send the rest (in place) to the next thread. */
static void give_away(struct batch *b, struct inbox *mine, struct inbox *to, uint64_t *sum)
{
    int kept = 0;
    for (int i = 0; i < b->n; i++) {
        uint64_t tag = unmark(b->blk[i], b->size[i]);
        if (i % 2 == 0) {
            *sum += tag;
            free(b->blk[i]);
        } else {
            mark(b->blk[i], b->size[i], mix64(tag));
            b->blk[kept] = b->blk[i];
            b->size[kept] = b->size[i];
            kept++;
        }
    }
    b->n = kept;
    send(mine, to, b, sum);
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    struct inbox *mine = &inboxes[id];
    struct inbox *to = &inboxes[(id + 1) % nthreads];
    uint64_t rng = mix64(0xBA7C4u + (uint64_t)id), sum = 0;
    struct batch *window[KEEP] = {0};

    for (uint64_t k = 0; k < batches_per_thread; k++) {
        unsigned w = (unsigned)(k % KEEP);
        if (window[w])
            give_away(window[w], mine, to, &sum);
        window[w] = make_batch(&rng, ((uint64_t)id << 48) ^ (k * BATCH));
        drain(mine, &sum);
    }
    for (uint64_t k = batches_per_thread; k < batches_per_thread + KEEP; k++)
        if (window[k % KEEP])
            give_away(window[k % KEEP], mine, to, &sum);
    atomic_fetch_add(&producers_done, 1);
    for (int i = 0; i < nthreads; i++) {
        pthread_mutex_lock(&inboxes[i].lock);
        pthread_cond_broadcast(&inboxes[i].changed);
        pthread_mutex_unlock(&inboxes[i].lock);
    }
    for (;;) {
        int done = atomic_load(&producers_done) == nthreads;
        drain(mine, &sum);
        if (done)
            break;
        pthread_mutex_lock(&mine->lock);
        if (mine->count == 0)
            wait_a_while(mine);
        pthread_mutex_unlock(&mine->lock);
    }
    sums[id] = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    nthreads = (int)arg_long(argc, argv, 1, 1);
    long scale = arg_long(argc, argv, 2, 1);
    long divisor = arg_long(argc, argv, 3, 1);
    uint64_t total = 5000ull * (uint64_t)scale / (uint64_t)divisor;
    batches_per_thread = total / (uint64_t)nthreads;
    inboxes = calloc((size_t)nthreads, sizeof *inboxes);
    sums = calloc((size_t)nthreads, sizeof *sums);
    if (!inboxes || !sums)
        fail("calloc");
    for (int i = 0; i < nthreads; i++) {
        pthread_mutex_init(&inboxes[i].lock, NULL);
        pthread_cond_init(&inboxes[i].changed, NULL);
    }
    run_workers(nthreads, worker);
    uint64_t sum = sum_of(sums, nthreads);
    /* every block: one malloc and one free; every batch record too */
    uint64_t batches = batches_per_thread * (uint64_t)nthreads;
    printf("# ops=%llu\n", (unsigned long long)(batches * (BATCH + 1) * 2));
    print_ok(sum);
    free(sums);
    free(inboxes);
    return 0;
}
