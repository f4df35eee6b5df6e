/*
 * fork while stdio is busy: several threads fork (each child allocates, frees
 * and _exit()s), others read long lines with getline() and free them, and one
 * calls fflush(NULL) in a loop.
 *
 * The hazard (a deadlock): getline() holds its FILE's lock while it reallocs
 * its buffer; fflush(NULL) holds stdio's list lock while it waits for each
 * FILE's lock; fork() takes the list lock after running the pthread_atfork
 * prepare handlers. An allocator whose prepare handler takes its own locks
 * then waits for the list lock while holding them; the fflush thread waits for
 * the getline thread's FILE lock; the getline thread waits in realloc for the
 * allocator's lock: a cycle. glibc's own malloc avoids it by taking its locks
 * after stdio's; oxmalloc's prepare handler takes stdio's list lock first.
 *
 * Lines are 16 KiB - 512 KiB, so getline's reallocs reach the medium and huge
 * allocators' locks. A watchdog thread fails the test if the run does not end
 * in time (it reports the deadlock instead of hanging the suite).
 */
#include "common.h"
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>

#define RUN_SECONDS 3
#define WATCHDOG_SECONDS 30
#define READERS 3
#define FORKERS 3
#define LINES 64

static char path[64];
static atomic_int stop;
static atomic_long forks, lines_read, flushes;

static void *watchdog(void *arg)
{
    (void)arg;
    sleep(WATCHDOG_SECONDS);
    static const char msg[] = "fork_stdio: FAILED: no progress: fork, stdio and malloc deadlocked\n";
    if (write(2, msg, sizeof msg - 1) < 0) {
    }
    _exit(1);
}

static void *reader(void *arg)
{
    (void)arg;
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "fopen %s: %s", path, strerror(errno));
    while (!atomic_load(&stop)) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n = getline(&line, &cap, f);
        if (n < 0) {
            rewind(f);
        } else {
            CHECK(line[0] == 'L' && line[n - 1] == '\n', "line content");
            atomic_fetch_add(&lines_read, 1);
        }
        free(line);
    }
    fclose(f);
    return NULL;
}

static void *flusher(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        fflush(NULL);
        atomic_fetch_add(&flushes, 1);
    }
    return NULL;
}

static void *forker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&stop)) {
        pid_t pid = fork();
        CHECK(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
            /* The child: every size class of allocator, then out. */
            for (int i = 0; i < 64; i++) {
                size_t size = (size_t)16 << (rand_r(&seed) % 18);
                char *p = malloc(size);
                if (!p) _exit(3);
                memset(p, 1, size < 4096 ? size : 4096);
                p = realloc(p, size * 2);
                if (!p) _exit(4);
                free(p);
            }
            _exit(0);
        }
        int status;
        CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed: status %#x", status);
        atomic_fetch_add(&forks, 1);
    }
    return NULL;
}

int main(void)
{
    ox_require_active();
    snprintf(path, sizeof path, "/tmp/oxmalloc-fork-stdio-%d.txt", (int)getpid());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "fopen %s for writing", path);
    unsigned seed = 42;
    for (int i = 0; i < LINES; i++) {
        size_t len = 16384 + (size_t)(rand_r(&seed) % (512 * 1024));
        fputc('L', f);
        for (size_t j = 1; j < len; j++) fputc('a' + (int)(j % 26), f);
        fputc('\n', f);
    }
    fclose(f);

    pthread_t wd, r[READERS], fl, fk[FORKERS];
    pthread_create(&wd, NULL, watchdog, NULL);
    for (int i = 0; i < READERS; i++) pthread_create(&r[i], NULL, reader, NULL);
    pthread_create(&fl, NULL, flusher, NULL);
    for (int i = 0; i < FORKERS; i++)
        pthread_create(&fk[i], NULL, forker, (void *)(uintptr_t)(i + 1));
    sleep(RUN_SECONDS);
    atomic_store(&stop, 1);
    for (int i = 0; i < FORKERS; i++) pthread_join(fk[i], NULL);
    pthread_join(fl, NULL);
    for (int i = 0; i < READERS; i++) pthread_join(r[i], NULL);
    unlink(path);
    printf("fork_stdio: %ld forks, %ld lines, %ld fflush(NULL) calls, no deadlock\n",
           atomic_load(&forks), atomic_load(&lines_read), atomic_load(&flushes));
    CHECK(atomic_load(&forks) > 0 && atomic_load(&lines_read) > 0, "no progress");
    return 0;
}
