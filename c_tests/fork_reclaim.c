/*
 * fork while another thread owns a heap full of live blocks: in the child that
 * thread does not exist, so its heap must not stay owned by nobody. The child
 * finds it abandoned, a new thread of the child adopts it (after the heap
 * checker found it consistent), and the inherited blocks can be read and freed
 * there. Uses ox_stats_get (heaps_abandoned) and ox_heap_check through dlsym.
 */
#include "common.h"
#include "child.h"
#include "oxmalloc.h"
#include <pthread.h>
#include <sys/wait.h>

#define BLOCKS 20000

static void *blocks[BLOCKS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int filled, release_owner;
static void (*stats_get)(ox_stats *);
static int (*heap_check)(void);

static void *owner(void *arg)
{
    (void)arg;
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(16 + (size_t)(i % 64) * 16);
        CHECK(blocks[i] != NULL, "malloc");
        memset(blocks[i], i & 0xff, 16);
    }
    pthread_mutex_lock(&lock);
    filled = 1;
    pthread_cond_broadcast(&cond);
    while (!release_owner) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static size_t abandoned_before;
static int adopted;

static size_t abandoned(void)
{
    ox_stats s;
    memset(&s, 0, sizeof s);
    stats_get(&s);
    return s.heaps_abandoned;
}

static void *adopter(void *arg)
{
    int *ok = arg;
    /* The first allocation gives this thread a heap: an abandoned one first. */
    void *p = malloc(32);
    CHECK(p != NULL, "malloc in the child's thread");
    free(p);
    /* Checked while this thread lives: when it exits, its heap waits for adoption again
     * (with what an exiting thread leaves resident for the next one). */
    adopted = abandoned() <= abandoned_before;
    for (int i = 0; i < BLOCKS; i++) {
        CHECK(((unsigned char *)blocks[i])[0] == (i & 0xff), "inherited block %d changed", i);
        free(blocks[i]);
    }
    *ok = heap_check() == 0;
    return NULL;
}

int main(void)
{
    ox_require_active();
    stats_get = (void (*)(ox_stats *))dlsym(RTLD_DEFAULT, "ox_stats_get");
    heap_check = (int (*)(void))dlsym(RTLD_DEFAULT, "ox_heap_check");
    if (!stats_get || !heap_check) {
        CHECK(!ox_active(), "ox_stats_get / ox_heap_check not exported");
        SKIP("extended ox_* API not available (not running on oxmalloc)");
    }
    pthread_t t;
    pthread_create(&t, NULL, owner, NULL);
    pthread_mutex_lock(&lock);
    while (!filled) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);

    size_t before = abandoned();
    abandoned_before = before;
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        size_t after = abandoned();
        if (after < before + 1) {
            fprintf(stderr, "child: %zu abandoned heaps after fork, %zu before: the owner's heap "
                            "was not reclaimed\n", after, before);
            _exit(2);
        }
        pthread_t a;
        int ok = 0;
        pthread_create(&a, NULL, adopter, &ok);
        pthread_join(a, NULL);
        if (!ok) {
            fprintf(stderr, "child: heap check failed after adopting the inherited heap\n");
            _exit(3);
        }
        if (!adopted) {
            fprintf(stderr, "child: the inherited heap was not adopted\n");
            _exit(4);
        }
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child exit status %#x", status);
    pthread_mutex_lock(&lock);
    release_owner = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    pthread_join(t, NULL);
    for (int i = 0; i < BLOCKS; i++) free(blocks[i]);
    printf("fork_reclaim: the child adopted the heap of a thread it does not have\n");
    return 0;
}
