/*
 * The program the set-user-ID test runs: it allocates (so that an allocator
 * placed in front of it has work, a profile and an exit report), then says on
 * stdout whether malloc is oxmalloc's and whether the kernel started it in
 * secure-execution mode.
 *
 *   probe               allocate, report, exit
 *   probe dump PATH     also ask the profiler for a profile at PATH
 */
#define _GNU_SOURCE 1
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

int main(int argc, char **argv)
{
    void *volatile keep[64];
    for (int i = 0; i < 64; i++) {
        keep[i] = malloc((size_t)(i + 1) * 1000);
        if (keep[i] == NULL)
            return 2;
        memset(keep[i], i, (size_t)(i + 1) * 1000);
    }
    Dl_info info;
    const char *lib = dladdr((void *)dlsym(RTLD_DEFAULT, "malloc"), &info) && info.dli_fname
                          ? info.dli_fname
                          : "?";
    printf("malloc-from=%s\n", lib);
    printf("oxmalloc=%d\n", strstr(lib, "oxmalloc") != NULL);
    printf("secure=%lu\n", getauxval(AT_SECURE));
    if (argc == 3 && strcmp(argv[1], "dump") == 0) {
        int (*dump)(const char *) = (int (*)(const char *))dlsym(RTLD_DEFAULT, "ox_prof_dump");
        printf("dump=%d\n", dump ? dump(argv[2]) : -1);
    }
    for (int i = 0; i < 64; i++)
        free(keep[i]);
    return 0;
}
