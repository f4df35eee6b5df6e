/*
 * fork while other threads are busy in the allocator: 4 threads hammer
 * malloc/free (small, medium and huge, some freed by another thread) while the
 * main thread forks 50 times. Each child allocates and frees a few thousand
 * blocks of mixed sizes (including huge ones, and from a new thread in some
 * children) and _exit(0)s. Every child must exit 0 in time: a lock held at
 * fork time and never released would hang it.
 */
#include "common.h"
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define NTHREADS 4
#define NFORKS 50

static volatile int stop;
/* Set while a child runs, so that the child gets the CPU (the hazard is the
 * moment of fork, when the hammering threads are inside the allocator). */
static volatile int paused;
static void *volatile exchange[NTHREADS]; /* blocks passed to the next thread */
static pthread_mutex_t xlock = PTHREAD_MUTEX_INITIALIZER;

static void *hammer(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    uint64_t rng = 0x51ed2705ULL + id;
    void *slots[64] = {0};
    struct timespec nap = {0, 100 * 1000};
    while (!stop) {
        if (paused) {
            nanosleep(&nap, NULL);
            continue;
        }
        int s = (int)(ox_rand(&rng) % 64);
        if (slots[s]) {
            free(slots[s]);
            slots[s] = NULL;
        }
        uint64_t r = ox_rand(&rng) % 1000;
        size_t n = r < 900 ? (size_t)(ox_rand(&rng) % 1024)
                 : r < 995 ? (size_t)(ox_rand(&rng) % 500000)
                           : ((size_t)4 << 20) + (size_t)(ox_rand(&rng) % 100000);
        slots[s] = malloc(n);
        CHECK(slots[s] != NULL, "hammer: malloc(%zu) failed", n);
        memset(slots[s], (int)id, n < 256 ? n : 256);
        if (r % 7 == 0) {
            /* hand a block to the next thread, free what was handed to us */
            void *mine = malloc(64);
            CHECK(mine != NULL, "malloc failed");
            pthread_mutex_lock(&xlock);
            void *old = exchange[(id + 1) % NTHREADS];
            exchange[(id + 1) % NTHREADS] = mine;
            pthread_mutex_unlock(&xlock);
            free(old);
        }
    }
    for (int s = 0; s < 64; s++)
        free(slots[s]);
    return NULL;
}

static void *child_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        void *p = malloc((size_t)(i % 3000));
        if (p == NULL)
            _exit(3);
        memset(p, 1, (size_t)(i % 3000));
        free(p);
    }
    return NULL;
}

static void child_work(int k)
{
    alarm(20); /* a hung child dies by SIGALRM, which the parent reports */
    uint64_t rng = 0xc0ffee + (uint64_t)k;
    enum { N = 2000 };
    static unsigned char *ps[N];
    static size_t ns[N];
    for (int i = 0; i < N; i++) {
        uint64_t r = ox_rand(&rng) % 1000;
        size_t n = i % 1000 == 500 ? ((size_t)8 << 20) + (size_t)(ox_rand(&rng) % 4096)
                 : r < 970 ? (size_t)(ox_rand(&rng) % 2048)
                           : (size_t)(ox_rand(&rng) % 300000);
        ps[i] = malloc(n);
        if (ps[i] == NULL)
            _exit(2);
        ns[i] = n;
        ox_fill(ps[i], n, (uint64_t)i);
        if (i % 3 == 0) {
            /* realloc and calloc too */
            unsigned char *q = realloc(ps[i], n + 1000);
            if (q == NULL)
                _exit(2);
            ps[i] = q;
            void *c = calloc(1, 5000);
            if (c == NULL)
                _exit(2);
            free(c);
        }
    }
    for (int i = 0; i < N; i++) {
        if (ox_verify(ps[i], ns[i], (uint64_t)i) != SIZE_MAX)
            _exit(4);
        free(ps[i]);
    }
    if (k % 5 == 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, child_thread, NULL) != 0)
            _exit(5);
        pthread_join(t, NULL);
    }
    _exit(0);
}

int main(void)
{
    ox_require_active();
    alarm(55);

    pthread_t th[NTHREADS];
    for (uintptr_t i = 0; i < NTHREADS; i++)
        CHECK(pthread_create(&th[i], NULL, hammer, (void *)i) == 0, "pthread_create failed");

    struct timespec busy = {0, 5 * 1000 * 1000};
    for (int k = 0; k < NFORKS; k++) {
        nanosleep(&busy, NULL); /* let the threads get going */
        /* The main thread is in the allocator a lot too. */
        void *m = malloc((size_t)k * 1000);
        CHECK(m != NULL, "malloc failed");
        pid_t pid = fork();
        CHECK(pid >= 0, "fork failed: %s", strerror(errno));
        if (pid == 0) {
            free(m); /* a block allocated by the parent before fork */
            child_work(k);
        }
        paused = 1;
        free(m);
        int st = 0;
        CHECK(waitpid(pid, &st, 0) == pid, "waitpid failed");
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
            CHECK(0, "child %d hung (killed by SIGALRM after 20 s): deadlock after fork?", k);
        CHECK(WIFEXITED(st), "child %d killed by signal %d (%s)", k, WTERMSIG(st),
              strsignal(WTERMSIG(st)));
        CHECK(WEXITSTATUS(st) == 0, "child %d exited with %d (2: malloc failed, 4: corrupted "
              "block, 5: pthread_create failed, 3: malloc in child thread failed)", k,
              WEXITSTATUS(st));
        paused = 0;
    }
    stop = 1;
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < NTHREADS; i++)
        free(exchange[i]);
    return 0;
}
