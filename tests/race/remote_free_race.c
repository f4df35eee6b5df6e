/*
 * The remote-free / retire race, as a stress program run under LD_PRELOAD.
 *
 *   remote_free_race [SECONDS] [OWNERS] [FREERS]
 *
 * Owner threads repeatedly fill whole slabs of one size class (so the slabs go
 * to their class's full list, asking for a notification), hand ONE block of each
 * slab to a freer thread, free all the other blocks themselves, and then either
 * call malloc_trim(0) or exit (a new owner replaces them and adopts their
 * heap). Freer threads free the handed blocks: each such free is a remote free
 * into a full slab, which must queue the slab on its owner's pending stack.
 * Meanwhile the owner may already have emptied, retired and released that
 * slab's segment: a protocol that lets it do so makes the freer write into
 * unmapped or reused memory (SIGSEGV, or a corrupt pending stack found by
 * ox_heap_check). Built with the library's `race-window` feature, the freer
 * yields between publishing the block and queueing the slab, which widens the
 * window from nanoseconds to a scheduler slice.
 *
 * Every block's contents are checked before it is freed; each owner calls
 * ox_heap_check() before trimming. Exit status 0 and "remote_free_race: 1
 * passed, 0 failed" when the run completes; any check failure prints
 * "remote_free_race: FAILED ..." and exits 1; a crash kills the process.
 */
#define _GNU_SOURCE 1
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 1024          /* one size class: 64 blocks per 64 KiB slab */
#define PER_SLAB 64
#define SLABS_PER_ROUND 24  /* more than one segment's worth of full slabs over a few rounds */
#define QCAP 4096

static double seconds = 4;
static int owners = 3, freers = 2;
static atomic_int stop;
static atomic_ulong handed, rounds;
static int (*heap_check)(void);

static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;
static void *queue[QCAP];
static int qhead, qlen;

static void fail(const char *what) {
    fprintf(stderr, "remote_free_race: FAILED %s\n", what);
    fflush(stderr);
    _exit(1);
}

static void fill(void *p) { memset(p, (int)((uintptr_t)p >> 4) & 0xff, BLOCK); }

static void verify(const unsigned char *p) {
    unsigned char want = (unsigned char)(((uintptr_t)p >> 4) & 0xff);
    for (int i = 0; i < BLOCK; i += 64)
        if (p[i] != want) fail("block contents changed while live");
}

static void hand_over(void *p) {
    pthread_mutex_lock(&qlock);
    while (qlen == QCAP) pthread_cond_wait(&qcond, &qlock);
    queue[(qhead + qlen) % QCAP] = p;
    qlen++;
    pthread_cond_broadcast(&qcond);
    pthread_mutex_unlock(&qlock);
}

static void *take(void) {
    pthread_mutex_lock(&qlock);
    while (qlen == 0 && !atomic_load(&stop)) pthread_cond_wait(&qcond, &qlock);
    void *p = NULL;
    if (qlen > 0) {
        p = queue[qhead];
        qhead = (qhead + 1) % QCAP;
        qlen--;
        pthread_cond_broadcast(&qcond);
    }
    pthread_mutex_unlock(&qlock);
    return p;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One owner's life: a few rounds, then exit (its heap is abandoned and adopted). */
static void *owner(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    int life = 1 + rand_r(&seed) % 4;
    static __thread void *blocks[SLABS_PER_ROUND * PER_SLAB];
    for (int r = 0; r < life && !atomic_load(&stop); r++) {
        int n = SLABS_PER_ROUND * PER_SLAB;
        for (int i = 0; i < n; i++) {
            blocks[i] = malloc(BLOCK);
            if (!blocks[i]) fail("malloc returned NULL");
            fill(blocks[i]);
        }
        /* One block of each slab goes to a freer: the last one, so the slab is
         * full (parked with a notification request) when the remote free lands. */
        for (int i = 0; i < n; i++) {
            if (i % PER_SLAB == PER_SLAB - 1) {
                hand_over(blocks[i]);
                atomic_fetch_add(&handed, 1);
            }
        }
        for (int i = 0; i < n; i++) {
            if (i % PER_SLAB != PER_SLAB - 1) {
                verify(blocks[i]);
                free(blocks[i]);
            }
        }
        if (heap_check && heap_check() != 0) fail("ox_heap_check reported a broken heap");
        if (rand_r(&seed) % 2) malloc_trim(0);
        atomic_fetch_add(&rounds, 1);
    }
    return NULL;
}

static void *freer(void *arg) {
    (void)arg;
    for (;;) {
        void *p = take();
        if (!p) break;
        verify(p);
        free(p);
    }
    return NULL;
}

static void *owner_spawner(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    double end = now() + seconds;
    while (now() < end) {
        pthread_t t;
        if (pthread_create(&t, NULL, owner, (void *)(uintptr_t)rand_r(&seed)) != 0)
            fail("pthread_create");
        pthread_join(t, NULL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) seconds = atof(argv[1]);
    if (argc > 2) owners = atoi(argv[2]);
    if (argc > 3) freers = atoi(argv[3]);
    heap_check = (int (*)(void))dlsym(RTLD_DEFAULT, "ox_heap_check");
    pthread_t sp[64], fr[64];
    for (int i = 0; i < freers; i++) pthread_create(&fr[i], NULL, freer, NULL);
    for (int i = 0; i < owners; i++)
        pthread_create(&sp[i], NULL, owner_spawner, (void *)(uintptr_t)(0x9e37 * (i + 1)));
    for (int i = 0; i < owners; i++) pthread_join(sp[i], NULL);
    atomic_store(&stop, 1);
    pthread_mutex_lock(&qlock);
    pthread_cond_broadcast(&qcond);
    pthread_mutex_unlock(&qlock);
    for (int i = 0; i < freers; i++) pthread_join(fr[i], NULL);
    malloc_trim(0);
    if (heap_check && heap_check() != 0) fail("ox_heap_check after the run");
    printf("remote_free_race: %lu rounds, %lu remote frees into full slabs\n",
           atomic_load(&rounds), atomic_load(&handed));
    printf("remote_free_race: 1 passed, 0 failed\n");
    return 0;
}
