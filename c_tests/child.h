/*
 * Running a piece of a test in a forked child, for cases that are expected to
 * kill the process (a bad free must abort) or that need a fresh process.
 *
 *   struct ox_child r;
 *   ox_child_run(fn, arg, 10, &r);   // fn(arg) runs in the child
 *
 * The child's stdout and stderr go into two pipes that the parent reads while
 * it waits; whatever fn writes there is in r.out / r.err (NUL-terminated, cut
 * at OX_CHILD_TEXT_MAX - 1 bytes). When fn returns, the child _exit(0)s. The
 * parent never hangs: past the timeout the child is killed with SIGKILL and
 * r.timed_out is set. ox_child_describe() turns the outcome into words for a
 * failure message.
 *
 * Children report values to the parent on stdout with ox_child_say(), which
 * formats into a stack buffer and write(2)s it (no stdio buffer is shared
 * with the parent); the parent finds them with ox_child_value().
 *
 * ox_child_exec() runs another program (typically /proc/self/exe with other
 * arguments and environment) the same way.
 */
#ifndef OXTEST_CHILD_H
#define OXTEST_CHILD_H

#include "common.h"
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#define OX_CHILD_TEXT_MAX 16384

struct ox_child {
    int status;     /* raw status from waitpid (valid unless spawn_failed) */
    int exited;     /* 1 if the child exited; exit_code is then its status */
    int exit_code;
    int signaled;   /* 1 if a signal killed it; signo is then the signal */
    int signo;
    int timed_out;  /* 1 if the parent killed it after the timeout */
    int spawn_failed;
    char out[OX_CHILD_TEXT_MAX];
    char err[OX_CHILD_TEXT_MAX];
    size_t out_len, err_len;
};

typedef void (*ox_child_fn)(void *arg);

static inline double ox_child_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Appends what is readable on `fd` to buf; returns 0 at end of file. */
static inline int ox_child_drain(int fd, char *buf, size_t *len)
{
    char scratch[4096];
    ssize_t k = read(fd, scratch, sizeof scratch);
    if (k < 0)
        return errno == EINTR || errno == EAGAIN;
    if (k == 0)
        return 0;
    size_t room = OX_CHILD_TEXT_MAX - 1 - *len;
    size_t take = (size_t)k < room ? (size_t)k : room;
    memcpy(buf + *len, scratch, take);
    *len += take;
    buf[*len] = '\0';
    return 1;
}

/*
 * The parent's side: collects both pipes until they close, then waits for
 * the child; kills it with SIGKILL once `timeout_s` seconds have passed.
 */
static inline void ox_child_collect(pid_t pid, int out_fd, int err_fd, double timeout_s,
                                    struct ox_child *r)
{
    double deadline = ox_child_now() + timeout_s;
    int open_out = 1, open_err = 1;
    while (open_out || open_err) {
        double left = deadline - ox_child_now();
        if (left <= 0) {
            kill(pid, SIGKILL);
            r->timed_out = 1;
            break;
        }
        struct pollfd pf[2];
        int n = 0;
        if (open_out)
            pf[n++] = (struct pollfd){.fd = out_fd, .events = POLLIN};
        if (open_err)
            pf[n++] = (struct pollfd){.fd = err_fd, .events = POLLIN};
        int ms = (int)(left * 1000) + 1;
        int k = poll(pf, (nfds_t)n, ms > 200 ? 200 : ms);
        if (k < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n && k > 0; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (pf[i].fd == out_fd)
                open_out = ox_child_drain(out_fd, r->out, &r->out_len);
            else
                open_err = ox_child_drain(err_fd, r->err, &r->err_len);
        }
    }
    /* The pipes are closed (or we gave up on them): wait for the exit, still
     * bounded by the deadline (a child may close its descriptors and spin). */
    for (;;) {
        pid_t w = waitpid(pid, &r->status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            r->spawn_failed = 1;
            break;
        }
        if (ox_child_now() > deadline && !r->timed_out) {
            kill(pid, SIGKILL);
            r->timed_out = 1;
        }
        struct timespec nap = {0, 2 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    close(out_fd);
    close(err_fd);
    if (!r->spawn_failed) {
        r->exited = WIFEXITED(r->status);
        r->exit_code = r->exited ? WEXITSTATUS(r->status) : 0;
        r->signaled = WIFSIGNALED(r->status);
        r->signo = r->signaled ? WTERMSIG(r->status) : 0;
    }
}

/*
 * Common part of ox_child_run and ox_child_exec: fork with both pipes set up.
 * Returns the pid in the parent, 0 in the child (fd 1 and 2 are then the
 * pipes), -1 on failure (r->spawn_failed set).
 */
static inline pid_t ox_child_fork(struct ox_child *r, int *out_fd, int *err_fd)
{
    memset(r, 0, sizeof *r);
    int po[2], pe[2];
    if (pipe(po) != 0) {
        r->spawn_failed = 1;
        return -1;
    }
    if (pipe(pe) != 0) {
        close(po[0]);
        close(po[1]);
        r->spawn_failed = 1;
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        r->spawn_failed = 1;
        return -1;
    }
    if (pid == 0) {
        close(po[0]);
        close(pe[0]);
        if (dup2(po[1], 1) < 0 || dup2(pe[1], 2) < 0)
            _exit(125);
        close(po[1]);
        close(pe[1]);
        /* Default SIGABRT, and no core files from the deliberate aborts. */
        signal(SIGABRT, SIG_DFL);
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        return 0;
    }
    close(po[1]);
    close(pe[1]);
    *out_fd = po[0];
    *err_fd = pe[0];
    return pid;
}

/* Runs fn(arg) in a forked child; see the top of the file. */
static inline void ox_child_run(ox_child_fn fn, void *arg, double timeout_s, struct ox_child *r)
{
    int out_fd = -1, err_fd = -1;
    pid_t pid = ox_child_fork(r, &out_fd, &err_fd);
    if (pid < 0)
        return;
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    ox_child_collect(pid, out_fd, err_fd, timeout_s, r);
}

/* Runs `path` with `argv` and `envp` in a child; see the top of the file. */
static inline void ox_child_exec(const char *path, char *const argv[], char *const envp[],
                                 double timeout_s, struct ox_child *r)
{
    int out_fd = -1, err_fd = -1;
    pid_t pid = ox_child_fork(r, &out_fd, &err_fd);
    if (pid < 0)
        return;
    if (pid == 0) {
        execve(path, argv, envp);
        static const char msg[] = "ox_child_exec: execve failed\n";
        ssize_t ignored = write(2, msg, sizeof msg - 1);
        (void)ignored;
        _exit(126);
    }
    ox_child_collect(pid, out_fd, err_fd, timeout_s, r);
}

/* In a child: writes "KEY=VALUE\n" (printf-formatted) to stdout with write(2). */
static inline void ox_child_say(const char *key, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void ox_child_say(const char *key, const char *fmt, ...)
{
    char line[512];
    int n = snprintf(line, sizeof line, "%s=", key);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    const char *p = line;
    while (n > 0) {
        ssize_t k = write(1, p, (size_t)n);
        if (k <= 0) {
            if (k < 0 && errno == EINTR)
                continue;
            break;
        }
        p += k;
        n -= (int)k;
    }
}

/*
 * In the parent: the value of the last "KEY=..." line the child said, copied
 * into buf (without the newline). Returns 1 if found.
 */
static inline int ox_child_value(const struct ox_child *r, const char *key, char *buf,
                                 size_t size)
{
    size_t klen = strlen(key);
    const char *found = NULL;
    for (const char *line = r->out; *line;) {
        if (strncmp(line, key, klen) == 0 && line[klen] == '=')
            found = line + klen + 1;
        const char *nl = strchr(line, '\n');
        if (nl == NULL)
            break;
        line = nl + 1;
    }
    if (found == NULL || size == 0)
        return 0;
    size_t len = strcspn(found, "\n");
    if (len >= size)
        len = size - 1;
    memcpy(buf, found, len);
    buf[len] = '\0';
    return 1;
}

/* How the child ended, in words (for messages). */
static inline const char *ox_child_describe(const struct ox_child *r)
{
    static char text[128];
    if (r->spawn_failed)
        snprintf(text, sizeof text, "could not be started or waited for");
    else if (r->timed_out)
        snprintf(text, sizeof text, "hung (killed after the timeout)");
    else if (r->signaled)
        snprintf(text, sizeof text, "killed by signal %d (%s)", r->signo, strsignal(r->signo));
    else
        snprintf(text, sizeof text, "exited with status %d", r->exit_code);
    return text;
}

/* 1 if the child was killed by SIGABRT (and not by us after a timeout). */
static inline int ox_child_aborted(const struct ox_child *r)
{
    return !r->spawn_failed && !r->timed_out && r->signaled && r->signo == SIGABRT;
}

/*
 * 1 if `text` has a line of the form
 *     oxmalloc: CALL(): <what> 0x<hex of ptr>
 * where the number is exactly `ptr` printed with "0x%lx" (lower case, no
 * leading zeros) and ends the line. When `what` is not NULL it must appear
 * between the call and the pointer.
 */
static inline int ox_child_has_report(const char *text, const char *call, const char *what,
                                      uintptr_t ptr)
{
    char prefix[128], number[32];
    snprintf(prefix, sizeof prefix, "oxmalloc: %s(): ", call);
    snprintf(number, sizeof number, " 0x%lx", (unsigned long)ptr);
    size_t plen = strlen(prefix), nlen = strlen(number);
    for (const char *line = text; *line;) {
        size_t len = strcspn(line, "\n");
        if (len >= plen + nlen && strncmp(line, prefix, plen) == 0 &&
            strncmp(line + len - nlen, number, nlen) == 0) {
            if (what == NULL)
                return 1;
            size_t wlen = strlen(what);
            for (const char *s = line + plen; s + wlen <= line + len - nlen; s++)
                if (strncmp(s, what, wlen) == 0)
                    return 1;
        }
        if (line[len] == '\0')
            break;
        line += len + 1;
    }
    return 0;
}

#endif /* OXTEST_CHILD_H */
