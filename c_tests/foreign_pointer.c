/*
 * Freeing a pointer oxmalloc did not make (a stack address, memory from
 * mmap, a static object) is detected: the process dies by SIGABRT and the
 * message on stderr names oxmalloc and the pointer in hex. Each case runs in
 * a forked child whose stderr is captured through a pipe. realloc of a
 * foreign pointer is reported the same way; malloc_usable_size of one is
 * either reported or answered with 0.
 */
#include "common.h"
#include <malloc.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

enum how { FREE_STACK, FREE_MMAP, FREE_MMAP_MID, FREE_STATIC, REALLOC_MMAP, USABLE_MMAP, NHOW };
static const char *const how_name[] = {"free(stack address)", "free(mmap base)",
                                       "free(mmap base + 4096)", "free(static object)",
                                       "realloc(mmap address, 100)",
                                       "malloc_usable_size(mmap address)"};

static char static_object[256];

/* Does `text` contain a hex number (0x...) equal to `ptr`? Leading zeros and
 * either case are accepted. */
static int mentions_pointer(const char *text, uintptr_t ptr)
{
    for (const char *s = text; *s && s[1]; s++) {
        if (s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
            continue;
        char *end;
        unsigned long long v = strtoull(s + 2, &end, 16);
        if (end != s + 2 && (uintptr_t)v == ptr)
            return 1;
    }
    return 0;
}

static void run_case(enum how h)
{
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe failed");
    /* Child writes the pointer it used into this pipe. */
    int pfd[2];
    CHECK(pipe(pfd) == 0, "pipe failed");
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
        close(fds[0]);
        close(pfd[0]);
        dup2(fds[1], 2);
        alarm(10);
        /* Make sure the allocator is up in the child. */
        void *warm = malloc(32);
        ox_escape(warm);
        volatile char stack_buf[128];
        stack_buf[0] = 1;
        unsigned char *m = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                -1, 0);
        if (m == MAP_FAILED)
            _exit(90);
        void *target = NULL;
        switch (h) {
        case FREE_STACK: target = (void *)&stack_buf[32]; break;
        case FREE_MMAP: case REALLOC_MMAP: case USABLE_MMAP: target = m; break;
        case FREE_MMAP_MID: target = m + 4096; break;
        case FREE_STATIC: target = static_object + 16; break;
        default: _exit(91);
        }
        uintptr_t t = (uintptr_t)target;
        if (write(pfd[1], &t, sizeof t) != (ssize_t)sizeof t)
            _exit(92);
        close(pfd[1]);
        target = ox_opaque_ptr(target);
        switch (h) {
        case REALLOC_MMAP: ox_escape(realloc(target, 100)); break;
        case USABLE_MMAP:
            /* Reporting it like free does is best; answering 0 ("no block
             * of ours") is accepted; any other size is a lie. */
            _exit(malloc_usable_size(target) == 0 ? 0 : 93);
        default: free(target); break;
        }
        /* Survived: the foreign pointer was not detected. */
        _exit(0);
    }
    close(fds[1]);
    close(pfd[1]);
    uintptr_t target = 0;
    ssize_t r = read(pfd[0], &target, sizeof target);
    close(pfd[0]);
    static char buf[65536];
    size_t len = 0;
    for (;;) {
        ssize_t k = read(fds[0], buf + len, sizeof buf - 1 - len);
        if (k <= 0)
            break;
        len += (size_t)k;
        if (len == sizeof buf - 1)
            break;
    }
    buf[len] = '\0';
    close(fds[0]);
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid failed");
    CHECK(r == (ssize_t)sizeof target, "child did not report its pointer (status %#x)", st);

    if (h == USABLE_MMAP && !ox_active()) {
        NOTE("%s under glibc: status %#x (not checked)", how_name[h], st);
        return;
    }
    if (h == USABLE_MMAP && WIFEXITED(st)) {
        CHECK(WEXITSTATUS(st) == 0, "%s of %#lx returned a non-zero size for memory that is "
              "not oxmalloc's", how_name[h], (unsigned long)target);
        NOTE("%s returned 0 (accepted)", how_name[h]);
        return;
    }
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
        CHECK(0, "%s: child hung", how_name[h]);
    if (!ox_active()) {
        /* glibc detects some of these (SIGABRT) and crashes on others. */
        NOTE("%s under the system malloc: %s %d; stderr: %.200s", how_name[h],
             WIFSIGNALED(st) ? "signal" : "exit", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
             buf);
        return;
    }
    CHECK(WIFSIGNALED(st), "%s of %#lx was not detected: child exited with %d; stderr: %s",
          how_name[h], (unsigned long)target, WEXITSTATUS(st), buf);
    CHECK(WTERMSIG(st) == SIGABRT, "%s of %#lx: child died by signal %d (%s), expected SIGABRT; "
          "stderr: %s", how_name[h], (unsigned long)target, WTERMSIG(st),
          strsignal(WTERMSIG(st)), buf);
    CHECK(strstr(buf, "oxmalloc") != NULL, "%s: the message does not mention oxmalloc: %s",
          how_name[h], buf);
    CHECK(mentions_pointer(buf, target), "%s: the message does not name the pointer %#lx: %s",
          how_name[h], (unsigned long)target, buf);
}

int main(void)
{
    ox_require_active();
    for (int h = 0; h < NHOW; h++)
        run_case((enum how)h);
    return 0;
}
