/*
 * fork while threads allocate, in check mode (OXMALLOC_CHECK=1).
 *
 * Check mode gives threads no heap of their own, so the process set-up that registers
 * the fork handlers has to run from the checked path; once it did not, and a child forked
 * while another thread held the global heap's lock hung in its first malloc. The test
 * re-runs itself with OXMALLOC_CHECK=1 (the variable is read at start-up), then forks 20
 * children while four threads churn; every child must malloc and exit within 3 s.
 */
#include "common.h"
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void *churn(void *arg)
{
    void *slot[256] = {0};
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull;
    for (;;) {
        unsigned i = (unsigned)(ox_rand(&rng) % 256);
        free(slot[i]);
        slot[i] = malloc(16 + ox_rand(&rng) % 40000);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    ox_require_active();
    const char *mode = getenv("OXMALLOC_CHECK");
    if (mode == NULL || strcmp(mode, "1") != 0) {
        setenv("OXMALLOC_CHECK", "1", 1);
        execve("/proc/self/exe", argv, environ);
        CHECK(0, "re-executing with OXMALLOC_CHECK=1 failed: %s", strerror(errno));
    }
    (void)argc;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1)) == 0,
              "pthread_create failed");
    int hung = 0, failed = 0;
    for (int i = 0; i < 20; i++) {
        struct timespec d = {0, 5000000};
        nanosleep(&d, NULL);
        pid_t pid = fork();
        CHECK(pid >= 0, "fork failed");
        if (pid == 0) {
            alarm(3);
            void *p = malloc(64);
            void *q = malloc(100000);
            _exit(p == NULL || q == NULL);
        }
        int status;
        CHECK(waitpid(pid, &status, 0) == pid, "waitpid failed");
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
            hung++;
        else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    CHECK(hung == 0 && failed == 0, "%d of 20 children hung in malloc, %d failed", hung, failed);
    _exit(0);
}
