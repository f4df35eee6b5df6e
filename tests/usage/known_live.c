/*
 * A program whose allocations at exit are known, for checking the statistics reports.
 *
 *   known_live N        leaves N blocks of 200 bytes (size class 208), 3 medium blocks of
 *                       300 KiB and 1 huge block of 5 MiB live at exit; prints its pid
 *   known_live close2 N the same, then closes fd 2 before exiting (the report must still
 *                       come out, on oxmalloc's own copy of stderr)
 *   known_live fork     forks a child that allocates and exits with exit(), and runs
 *                       /bin/true; prints "parent PID", "child PID", "exec PID"
 *   known_live overflow writes one byte past a 24-byte block and frees it (check mode
 *                       reports it; without check mode nothing happens: it fits the
 *                       block's 32 usable bytes)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *keep[100000];

static void leave_live(int n)
{
    for (int i = 0; i < n && i < 100000; i++) {
        keep[i] = malloc(200);
        memset(keep[i], i, 200);
    }
    for (int i = 0; i < 3; i++) {
        void *m = malloc(300 * 1024);
        memset(m, 1, 4096);
        keep[n + i] = m;
    }
    char *huge = malloc(5 << 20);
    memset(huge, 1, 4096);
    keep[n + 3] = huge;
    __asm__ volatile("" : : "r"(keep) : "memory");
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc >= 2 && strcmp(argv[1], "overflow") == 0) {
        char *volatile p = malloc(24);
        p[24] = 'x';
        __asm__ volatile("" : : "r"(p) : "memory");
        free(p);
        printf("overflow not detected\n");
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "fork") == 0) {
        printf("parent %d\n", (int)getpid());
        leave_live(10);
        pid_t child = fork();
        if (child == 0) {
            leave_live(20);
            exit(0);
        }
        waitpid(child, NULL, 0);
        printf("child %d\n", (int)child);
        pid_t runner = fork();
        if (runner == 0) {
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        int status = 0;
        waitpid(runner, &status, 0);
        printf("exec %d\n", (int)runner);
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
    }
    int close2 = argc >= 2 && strcmp(argv[1], "close2") == 0;
    int n = atoi(argv[argc - 1]);
    leave_live(n);
    printf("pid %d\n", (int)getpid());
    if (close2)
        close(2);
    return 0;
}
