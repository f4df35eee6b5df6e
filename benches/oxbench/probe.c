/* probe: prints the file that malloc comes from, so that a preload that silently did
 * not take effect (ld.so only warns about a library it cannot load) is caught before
 * anything is timed. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
int main(void)
{
    void *(*volatile m)(size_t) = malloc;
    Dl_info info;
    void *p = m(100);
    if (!p || !dladdr((void *)m, &info) || !info.dli_fname)
        return 1;
    printf("%s\n", info.dli_fname);
    free(p);
    return 0;
}
