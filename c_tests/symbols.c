/*
 * Every function of the malloc family that the contract names must resolve
 * into liboxmalloc, in the program and in the global scope (what other
 * libraries bind to). A family member left to glibc would hand glibc our
 * pointers (or us glibc's). The extended ox_* API must be exported too.
 */
#include "common.h"

static const char *const family[] = {
    "malloc",        "free",           "calloc",
    "realloc",       "reallocarray",   "posix_memalign",
    "aligned_alloc", "memalign",       "valloc",
    "pvalloc",       "malloc_usable_size", "free_sized",
    "free_aligned_sized", "mallopt",   "mallinfo2",
    "malloc_trim",   "malloc_stats",   "malloc_info",
};

static const char *const extended[] = {
    "ox_malloc",        "ox_calloc",      "ox_realloc", "ox_free",
    "ox_aligned_alloc", "ox_usable_size", "ox_owns",    "ox_trim",
    "ox_prof_dump",
};

int main(void)
{
    ox_require_active();
    int bad = 0;

    for (size_t i = 0; i < sizeof(family) / sizeof(family[0]); i++) {
        void *p = dlsym(RTLD_DEFAULT, family[i]);
        if (!ox_addr_in_oxmalloc(p)) {
            if (ox_active()) {
                fprintf(stderr, "%s resolves into %s, not liboxmalloc\n",
                        family[i], ox_object_of(p));
                bad++;
            } else {
                NOTE("%s resolves into %s", family[i], ox_object_of(p));
            }
        }
    }

    /* Also the addresses this program's own calls go to. */
    struct {
        const char *name;
        void *addr;
    } direct[] = {
        {"malloc", (void *)&malloc},
        {"free", (void *)&free},
        {"calloc", (void *)&calloc},
        {"realloc", (void *)&realloc},
        {"posix_memalign", (void *)&posix_memalign},
        {"aligned_alloc", (void *)&aligned_alloc},
    };
    for (size_t i = 0; i < sizeof(direct) / sizeof(direct[0]); i++) {
        if (!ox_addr_in_oxmalloc(direct[i].addr) && ox_active()) {
            fprintf(stderr, "the program's %s is in %s, not liboxmalloc\n",
                    direct[i].name, ox_object_of(direct[i].addr));
            bad++;
        }
    }

    /* mallinfo is deprecated but still called by old programs. */
    void *mi = dlsym(RTLD_DEFAULT, "mallinfo");
    if (!ox_addr_in_oxmalloc(mi))
        NOTE("mallinfo resolves into %s (not required)", ox_object_of(mi));

    for (size_t i = 0; i < sizeof(extended) / sizeof(extended[0]); i++) {
        void *p = dlsym(RTLD_DEFAULT, extended[i]);
        if (p == NULL || !ox_addr_in_oxmalloc(p)) {
            if (ox_active()) {
                fprintf(stderr, "extended API %s missing (found in %s)\n",
                        extended[i], ox_object_of(p));
                bad++;
            } else {
                NOTE("extended API %s missing", extended[i]);
            }
        }
    }

    CHECK(bad == 0, "%d symbols do not resolve into liboxmalloc", bad);
    return 0;
}
