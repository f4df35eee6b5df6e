/*
 * Batched remote frees: a thread's frees into other threads' slabs wait in a small
 * per-thread buffer (a chain per slab) and are published together. They must not be lost:
 *
 *  1. thread exit with a non-empty buffer: the owner allocates blocks, a second thread
 *     frees a few of them (fewer than a chain holds, so they stay buffered) and exits.
 *     The owner must get every one of those blocks back before it has allocated more than
 *     its slab holds (a buffer dropped at exit would keep them counted as live forever,
 *     and the owner would move on to fresh slabs);
 *  2. the same through a thread that stays alive but takes an allocation slow path (its
 *     buffer goes out there);
 *  3. fork while another thread's buffer holds blocks, and while our own does: the child
 *     allocates, frees and runs threads normally, then exits 0; the parent still gets its
 *     blocks back when the other thread exits.
 */
#include "child.h"
#include <pthread.h>
#include <sys/wait.h>

#define SIZE 48
#define HANDED 10
/* More than any slab of 48-byte blocks holds (64 KiB slabs). */
#define BOUND 4096

static void *handed[HANDED];

struct freer {
    int slow_path; /* after freeing, allocate enough small blocks to need a new slab */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int freed, go_on;
};

static void *free_handed(void *arg)
{
    struct freer *f = arg;
    /* A thread gets its heap (and so its buffer) at its first allocation; a free before
     * that goes straight to the slab. */
    void *warm = malloc(16);
    CHECK(warm != NULL, "malloc");
    free(warm);
    for (int i = 0; i < HANDED; i++)
        free(handed[i]);
    if (f->slow_path) {
        /* Another class, enough blocks to run out of a slab: a slow path. */
        void *own[2048];
        for (int i = 0; i < 2048; i++) {
            own[i] = malloc(200);
            CHECK(own[i] != NULL, "malloc");
        }
        for (int i = 0; i < 2048; i++)
            free(own[i]);
    }
    pthread_mutex_lock(&f->lock);
    f->freed = 1;
    pthread_cond_broadcast(&f->cond);
    while (!f->go_on)
        pthread_cond_wait(&f->cond, &f->lock);
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

/* Allocates SIZE-byte blocks until every handed block came back (or BOUND allocations). */
static int wait_for_return(void)
{
    static void *got[BOUND];
    int found = 0, n = 0;
    for (; n < BOUND && found < HANDED; n++) {
        got[n] = malloc(SIZE);
        CHECK(got[n] != NULL, "malloc");
        for (int i = 0; i < HANDED; i++)
            if (got[n] == handed[i])
                found++;
    }
    for (int i = 0; i < n; i++)
        free(got[i]);
    return found;
}

static void hand_out(void)
{
    for (int i = 0; i < HANDED; i++) {
        handed[i] = malloc(SIZE);
        CHECK(handed[i] != NULL, "malloc");
        memset(handed[i], 0x5a, SIZE);
    }
}

static void start_freer(pthread_t *t, struct freer *f, int slow_path)
{
    memset(f, 0, sizeof *f);
    f->slow_path = slow_path;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    CHECK(pthread_create(t, NULL, free_handed, f) == 0, "pthread_create");
    pthread_mutex_lock(&f->lock);
    while (!f->freed)
        pthread_cond_wait(&f->cond, &f->lock);
    pthread_mutex_unlock(&f->lock);
}

static void finish_freer(pthread_t t, struct freer *f)
{
    pthread_mutex_lock(&f->lock);
    f->go_on = 1;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    CHECK(pthread_join(t, NULL) == 0, "pthread_join");
}

static void *child_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        void *p = malloc((size_t)(i % 500) + 1);
        CHECK(p != NULL, "malloc");
        free(p);
    }
    return NULL;
}

int main(void)
{
    ox_require_active();
    pthread_t t;
    struct freer f;

    /* 1. thread exit with a non-empty buffer */
    hand_out();
    start_freer(&t, &f, 0);
    finish_freer(t, &f);
    int found = wait_for_return();
    CHECK(found == HANDED, "thread exit: %d of %d blocks freed by an exited thread came back",
          found, HANDED);

    /* 2. a live thread's buffer goes out on its slow path */
    hand_out();
    start_freer(&t, &f, 1);
    found = wait_for_return();
    finish_freer(t, &f);
    CHECK(found == HANDED, "slow path: %d of %d blocks came back while the freer lives", found,
          HANDED);

    /* 3. fork with buffers in flight: another thread's, and ours (blocks of that thread) */
    hand_out();
    start_freer(&t, &f, 0); /* its buffer holds our blocks; it waits */
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        alarm(20);
        pthread_t c[4];
        for (int i = 0; i < 4; i++)
            CHECK(pthread_create(&c[i], NULL, child_thread, NULL) == 0, "pthread_create");
        for (int i = 0; i < 4; i++)
            CHECK(pthread_join(c[i], NULL) == 0, "pthread_join");
        child_thread(NULL);
        _exit(0);
    }
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork child ended with status 0x%x", st);
    finish_freer(t, &f);
    found = wait_for_return();
    CHECK(found == HANDED, "fork: %d of %d blocks came back after the freer exited", found,
          HANDED);
    printf("remote_batch: ok\n");
    return 0;
}
