/*
 * Blocks allocated by one thread and freed by another: producer threads
 * allocate and fill blocks (some of them aligned) and push them through a
 * lock-protected queue; consumer threads check the contents and free them
 * (or realloc them first). Repeated for several rounds with fresh threads,
 * which may adopt the memory of the previous rounds' threads. Then the main
 * thread's blocks are freed by another thread, and main allocates again
 * (its memory comes back through the remote-free path).
 */
#include "common.h"
#include <pthread.h>

#define PRODUCERS 3
#define CONSUMERS 3
#define PER_PRODUCER 40000
#define QCAP 4096
#define ROUNDS 4

struct item {
    unsigned char *p;
    size_t n;
    uint64_t seed;
};

static struct item queue[QCAP];
static size_t qhead, qtail, qcount;
static int producers_left;
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qnotempty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t qnotfull = PTHREAD_COND_INITIALIZER;

static void push(struct item it)
{
    pthread_mutex_lock(&qlock);
    while (qcount == QCAP)
        pthread_cond_wait(&qnotfull, &qlock);
    queue[qtail] = it;
    qtail = (qtail + 1) % QCAP;
    qcount++;
    pthread_cond_signal(&qnotempty);
    pthread_mutex_unlock(&qlock);
}

/* Returns 0 when every producer is done and the queue is empty. */
static int pop(struct item *it)
{
    pthread_mutex_lock(&qlock);
    while (qcount == 0 && producers_left > 0)
        pthread_cond_wait(&qnotempty, &qlock);
    if (qcount == 0) {
        pthread_mutex_unlock(&qlock);
        return 0;
    }
    *it = queue[qhead];
    qhead = (qhead + 1) % QCAP;
    qcount--;
    pthread_cond_signal(&qnotfull);
    pthread_mutex_unlock(&qlock);
    return 1;
}

static int round_no;

static void *producer(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    uint64_t rng = 0xabcdef12345ULL + id * 7919 + (uint64_t)round_no * 104729;
    for (int i = 0; i < PER_PRODUCER; i++) {
        uint64_t r = ox_rand(&rng);
        size_t n;
        if (r % 500 == 0)
            n = (size_t)(ox_rand(&rng) % ((size_t)4 << 20));
        else if (r % 20 == 0)
            n = (size_t)(ox_rand(&rng) % 65536);
        else
            n = (size_t)(ox_rand(&rng) % 512);
        unsigned char *p;
        if (r % 10 == 3) {
            /* aligned blocks too: their pointers may lie inside a larger block */
            size_t al = (size_t)32 << (ox_rand(&rng) % 8);
            p = aligned_alloc(al, n);
            CHECK(p != NULL && ox_is_aligned(p, al), "producer: aligned_alloc(%zu, %zu) = %p",
                  al, n, (void *)p);
        } else {
            p = malloc(n);
            CHECK(p != NULL, "producer: malloc(%zu) failed", n);
        }
        struct item it = {p, n, ((uint64_t)id << 32) | (uint64_t)i};
        ox_fill(p, n, it.seed);
        push(it);
        /* A little local churn so the producer's heap is busy too. */
        if (i % 8 == 0) {
            void *t = malloc(r % 200);
            CHECK(t != NULL, "producer: malloc failed");
            ox_escape(t);
            free(t);
        }
    }
    pthread_mutex_lock(&qlock);
    producers_left--;
    pthread_cond_broadcast(&qnotempty);
    pthread_mutex_unlock(&qlock);
    return NULL;
}

static void *consumer(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    struct item it;
    unsigned long count = 0;
    while (pop(&it)) {
        size_t bad = ox_verify(it.p, it.n, it.seed);
        CHECK(bad == SIZE_MAX, "consumer %lu: block %p of %zu bytes corrupted at byte %zu",
              (unsigned long)id, (void *)it.p, it.n, bad);
        if (count % 16 == 0) {
            /* realloc a foreign block before freeing it */
            size_t m = it.n / 2 + 1;
            unsigned char *q = realloc(it.p, m);
            CHECK(q != NULL, "consumer: realloc(%zu) of a foreign block failed", m);
            bad = ox_verify_part(q, it.n, m, it.seed);
            CHECK(bad == SIZE_MAX, "consumer: realloc of a foreign block lost byte %zu", bad);
            it.p = q;
        }
        free(it.p);
        count++;
    }
    return NULL;
}

enum { M = 100000 };
static void *blocks[M];

static void *free_all(void *arg)
{
    (void)arg;
    for (int i = 0; i < M; i++) {
        unsigned char *b = blocks[i];
        size_t n = (size_t)(i % 200) + 1;
        CHECK(b[0] == (unsigned char)(i & 0xff) && b[n - 1] == (unsigned char)(i & 0xff),
              "block %d of main thread corrupted", i);
        free(b);
    }
    return NULL;
}

int main(void)
{
    ox_require_active();
    for (round_no = 0; round_no < ROUNDS; round_no++) {
        producers_left = PRODUCERS;
        pthread_t pt[PRODUCERS], ct[CONSUMERS];
        for (uintptr_t i = 0; i < PRODUCERS; i++)
            CHECK(pthread_create(&pt[i], NULL, producer, (void *)i) == 0, "pthread_create");
        for (uintptr_t i = 0; i < CONSUMERS; i++)
            CHECK(pthread_create(&ct[i], NULL, consumer, (void *)i) == 0, "pthread_create");
        for (int i = 0; i < PRODUCERS; i++)
            pthread_join(pt[i], NULL);
        for (int i = 0; i < CONSUMERS; i++)
            pthread_join(ct[i], NULL);
        CHECK(qcount == 0, "queue not drained");
    }

    /* Main thread allocates, another thread frees everything, then main
     * allocates again (its blocks come back through the remote-free path). */
    size_t rss_first = 0;
    for (int rep = 0; rep < 6; rep++) {
        for (int i = 0; i < M; i++) {
            size_t n = (size_t)(i % 200) + 1;
            blocks[i] = malloc(n);
            CHECK(blocks[i] != NULL, "malloc(%zu) failed", n);
            memset(blocks[i], i & 0xff, n);
        }
        pthread_t t;
        CHECK(pthread_create(&t, NULL, free_all, NULL) == 0, "pthread_create");
        pthread_join(t, NULL);
        if (rep == 0)
            rss_first = ox_rss_bytes();
    }
    /* Each round is ~10 MB of blocks; the remotely freed ones are reused. */
    size_t rss_end = ox_rss_bytes();
    CHECK(rss_end < rss_first + ((size_t)24 << 20),
          "RSS grew from %zu KiB to %zu KiB over 5 rounds of remote frees: remotely freed "
          "blocks are not reused", rss_first >> 10, rss_end >> 10);
    return 0;
}
