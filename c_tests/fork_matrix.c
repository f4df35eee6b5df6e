/*
 * fork and stdio, every combination: a parent that is {single-threaded,
 * multi-threaded} when it forks, whose child then {uses stdio from its main
 * thread, uses stdio from a new thread, exits through exit() with buffered
 * output, forks again and its own child uses stdio from a new thread}, with
 * the allocator {in its default mode, profiling every allocation, in check
 * mode}.
 *
 * The hazard: the allocator's fork handlers take glibc's stdio list lock (to
 * keep glibc's lock order, see fork_stdio.c). glibc's fork resets that lock in
 * the child only when the parent was multi-threaded, so a handler that takes
 * it and leaves it to glibc leaves it held in the child of a single-threaded
 * parent: the first fopen/fclose/fflush(NULL)/exit of another thread in the
 * child waits forever (and from the child's main thread too, once it forks
 * again or starts a thread).
 *
 * Each case runs in its own process (/proc/self/exe --case ...), because the
 * options are read at start-up; the case process and every process it forks
 * set an alarm, so a hang ends as SIGALRM and is reported as such, and the
 * outer runner also kills a case that outlives its timeout.
 */
#include "child.h"
#include <pthread.h>
#include <stdatomic.h>

#define CASE_ALARM_SECONDS 3
#define CASE_TIMEOUT_SECONDS 8.0

static const char *const parents[] = {"single", "multi"};
static const char *const actions[] = {"stdio-main", "stdio-thread", "exit-buffered", "fork-again"};
static const char *const modes[] = {"default", "prof", "check"};

#define N_PARENTS (sizeof parents / sizeof parents[0])
#define N_ACTIONS (sizeof actions / sizeof actions[0])
#define N_MODES (sizeof modes / sizeof modes[0])

/* ---------------------------------------------------------------- the case */

static atomic_int worker_stop;

/* The parent's second thread: allocates and uses stdio until told to stop. */
static void *parent_worker(void *arg)
{
    (void)arg;
    uint64_t rng = 7;
    FILE *null = fopen("/dev/null", "w");
    CHECK(null != NULL, "fopen /dev/null: %s", strerror(errno));
    while (!atomic_load(&worker_stop)) {
        size_t n = (size_t)(ox_rand(&rng) % 100000);
        char *p = malloc(n + 1);
        CHECK(p != NULL, "malloc(%zu)", n + 1);
        p[n] = 1;
        fprintf(null, "%zu\n", n);
        free(p);
    }
    fclose(null);
    return NULL;
}

/* What the stdio-using code does: open, write, close, flush all, allocate. */
static void use_stdio(void)
{
    FILE *f = fopen("/dev/null", "w");
    CHECK(f != NULL, "fopen /dev/null: %s", strerror(errno));
    char *p = malloc(5000);
    CHECK(p != NULL, "malloc");
    memset(p, 'x', 4999);
    p[4999] = '\0';
    fputs(p, f);
    free(p);
    CHECK(fclose(f) == 0, "fclose");
    CHECK(fflush(NULL) == 0, "fflush(NULL)");
}

static void *stdio_thread(void *arg)
{
    (void)arg;
    use_stdio();
    return NULL;
}

static void use_stdio_from_thread(void)
{
    pthread_t t;
    CHECK(pthread_create(&t, NULL, stdio_thread, NULL) == 0, "pthread_create");
    CHECK(pthread_join(t, NULL) == 0, "pthread_join");
}

/* Waits for a child of this process; returns its raw status. */
static int wait_child(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        CHECK(errno == EINTR, "waitpid: %s", strerror(errno));
    return st;
}

static void describe_and_fail(const char *who, int st)
{
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
        CHECK(0, "%s hung (SIGALRM after %d s)", who, CASE_ALARM_SECONDS);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s ended with status 0x%x", who, st);
}

/* The child's part of a case (runs in the forked child). */
static void child_action(const char *action)
{
    alarm(CASE_ALARM_SECONDS); /* alarms are not inherited through fork */
    if (strcmp(action, "stdio-main") == 0) {
        use_stdio();
        exit(0);
    }
    if (strcmp(action, "stdio-thread") == 0) {
        use_stdio_from_thread();
        exit(0);
    }
    if (strcmp(action, "exit-buffered") == 0) {
        /* stdout is a pipe: fully buffered, so exit() must flush it (taking the
         * list lock) for the line to reach the runner. A thread ran first, so
         * the exit is a multi-threaded process's exit. */
        use_stdio_from_thread();
        char *msg = malloc(64);
        CHECK(msg != NULL, "malloc");
        snprintf(msg, 64, "CHILD_FLUSHED=%d\n", 1);
        fputs(msg, stdout);
        free(msg);
        exit(0);
    }
    if (strcmp(action, "fork-again") == 0) {
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
            alarm(CASE_ALARM_SECONDS);
            use_stdio_from_thread();
            use_stdio();
            exit(0);
        }
        describe_and_fail("the grandchild", wait_child(pid));
        use_stdio_from_thread();
        exit(0);
    }
    CHECK(0, "unknown action %s", action);
}

static int run_case(const char *parent, const char *action)
{
    alarm(CASE_ALARM_SECONDS);
    /* The allocator is set up (and its fork handlers registered) by now. */
    void *warm = malloc(100);
    CHECK(warm != NULL, "malloc");
    free(warm);
    /* Nothing buffered may be copied into the child. */
    setvbuf(stdout, NULL, _IOFBF, 4096);

    pthread_t worker;
    int multi = strcmp(parent, "multi") == 0;
    if (multi)
        CHECK(pthread_create(&worker, NULL, parent_worker, NULL) == 0, "pthread_create");
    for (int round = 0; round < 3; round++) {
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0)
            child_action(action);
        describe_and_fail("the child", wait_child(pid));
    }
    if (multi) {
        atomic_store(&worker_stop, 1);
        CHECK(pthread_join(worker, NULL) == 0, "pthread_join");
    }
    /* The parent itself can still use stdio from a new thread. */
    use_stdio_from_thread();
    fflush(NULL);
    return 0;
}

/* -------------------------------------------------------------- the runner */

/* Our environment without any OXMALLOC_ variable, plus `extra` (NULL-ended). */
static char **case_env(const char *const *extra)
{
    extern char **environ;
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 8, sizeof *env);
    CHECK(env != NULL, "calloc");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "OXMALLOC_", 9) != 0)
            env[k++] = environ[i];
    for (; *extra; extra++)
        env[k++] = (char *)*extra;
    env[k] = NULL;
    return env;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--case") == 0)
        return run_case(argv[2], argv[3]);
    ox_require_active();

    char dir[] = "/tmp/oxfork_matrix.XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
    char prof_dir[sizeof dir + 32];
    snprintf(prof_dir, sizeof prof_dir, "OXMALLOC_PROF_DIR=%s", dir);

    int failures = 0, runs = 0;
    for (size_t m = 0; m < N_MODES; m++) {
        const char *extra_default[] = {NULL};
        const char *extra_prof[] = {"OXMALLOC_PROF=1", "OXMALLOC_PROF_INTERVAL=1", prof_dir, NULL};
        const char *extra_check[] = {"OXMALLOC_CHECK=1", NULL};
        const char *const *extra = m == 0 ? extra_default : m == 1 ? extra_prof : extra_check;
        char **env = case_env(extra);
        for (size_t p = 0; p < N_PARENTS; p++) {
            for (size_t a = 0; a < N_ACTIONS; a++) {
                char *args[] = {argv[0], "--case", (char *)parents[p], (char *)actions[a], NULL};
                struct ox_child r;
                ox_child_exec("/proc/self/exe", args, env, CASE_TIMEOUT_SECONDS, &r);
                runs++;
                int ok = !r.spawn_failed && !r.timed_out && r.exited && r.exit_code == 0;
                if (ok && strcmp(actions[a], "exit-buffered") == 0) {
                    /* One line per child (three rounds), none lost or doubled. */
                    int lines = 0;
                    for (const char *s = r.out; (s = strstr(s, "CHILD_FLUSHED=1\n")); s++)
                        lines++;
                    if (lines != 3) {
                        fprintf(stderr, "FAIL %s parent, %s, %s: %d flushed lines, want 3\n",
                                parents[p], actions[a], modes[m], lines);
                        ok = 0;
                        failures++;
                        continue;
                    }
                }
                if (!ok) {
                    failures++;
                    fprintf(stderr, "FAIL %s parent, %s, %s: %s\n%s", parents[p], actions[a],
                            modes[m], ox_child_describe(&r), r.err);
                } else {
                    fprintf(stderr, "ok   %s parent, %s, %s\n", parents[p], actions[a], modes[m]);
                }
            }
        }
        free(env);
    }
    char cmd[sizeof dir + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        NOTE("could not remove %s", dir);
    CHECK(failures == 0, "%d of %d fork cases failed (see above)", failures, runs);
    printf("fork_matrix: %d cases passed\n", runs);
    return 0;
}
