/*
 * Helpers shared by the oxmalloc C tests.
 *
 * Every test program calls ox_require_active() first: it checks that `malloc`
 * (and the rest of the malloc family) resolves into liboxmalloc, whether the
 * program was linked with -loxmalloc or run under LD_PRELOAD. Setting
 * OXTEST_ALLOW_GLIBC=1 lets the tests run against the system malloc instead;
 * that is only meant for developing the tests themselves. Checks whose
 * expected result is a documented difference between oxmalloc's contract and
 * the running glibc are then relaxed through ox_active().
 *
 * The extended ox_* API is looked up at run time with dlsym, so that the same
 * source works linked and preloaded and builds without include/oxmalloc.h.
 */
#ifndef OXTEST_COMMON_H
#define OXTEST_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Fail the test: print file:line and the message to stderr, exit 1. */
#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__,   \
                    #cond);                                                    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

/* Informational line on stderr (never a failure). */
#define NOTE(...)                                                              \
    do {                                                                       \
        fprintf(stderr, "note: ");                                             \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
    } while (0)

/* Exit status a test uses to say "skipped"; the runner counts it as such. */
#define OX_SKIP_STATUS 77
#define SKIP(...)                                                              \
    do {                                                                       \
        fprintf(stderr, "SKIP: ");                                             \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        exit(OX_SKIP_STATUS);                                                  \
    } while (0)

/*
 * Keep the compiler from reasoning about allocation calls: it knows what
 * malloc and free do and may drop a malloc/free pair whose pointer is unused,
 * or fold a size it can see. Sizes go through ox_opaque(), pointers that are
 * otherwise unused go through ox_escape().
 */
static inline size_t ox_opaque(size_t x)
{
    __asm__ volatile("" : "+r"(x));
    return x;
}

static inline void *ox_opaque_ptr(void *p)
{
    __asm__ volatile("" : "+r"(p));
    return p;
}

static inline void ox_escape(const void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

static inline int ox_is_aligned(const void *p, size_t align)
{
    return ((uintptr_t)p & (align - 1)) == 0;
}

static inline int ox_env_allow_glibc(void)
{
    const char *v = getenv("OXTEST_ALLOW_GLIBC");
    return v != NULL && strcmp(v, "1") == 0;
}

/* The file name of the object that defines the code at `addr`, or "?". */
static inline const char *ox_object_of(const void *addr)
{
    Dl_info info;
    if (addr == NULL)
        return "(not defined)";
    if (dladdr(addr, &info) == 0 || info.dli_fname == NULL)
        return "?";
    return info.dli_fname;
}

static inline int ox_addr_in_oxmalloc(const void *addr)
{
    return addr != NULL && strstr(ox_object_of(addr), "liboxmalloc") != NULL;
}

/*
 * 1 when `malloc` resolves into liboxmalloc. Both the address the program
 * itself calls and the global-scope definition (what other libraries get)
 * must be oxmalloc's.
 */
static inline int ox_active(void)
{
    static int cached = -1;
    if (cached < 0) {
        void *direct = (void *)&malloc;
        void *global = dlsym(RTLD_DEFAULT, "malloc");
        cached = ox_addr_in_oxmalloc(direct) && ox_addr_in_oxmalloc(global);
    }
    return cached;
}

static inline void ox_require_active(void)
{
    /* Unbuffered diagnostics: a test may die by a signal. */
    setvbuf(stdout, NULL, _IONBF, 0);
    if (ox_active())
        return;
    if (ox_env_allow_glibc()) {
        NOTE("malloc is not oxmalloc's (it is in %s); OXTEST_ALLOW_GLIBC=1, "
             "running against it anyway",
             ox_object_of(dlsym(RTLD_DEFAULT, "malloc")));
        return;
    }
    fprintf(stderr,
            "FATAL: malloc does not resolve into liboxmalloc "
            "(direct: %s, global: %s); link with -loxmalloc or set "
            "LD_PRELOAD (OXTEST_ALLOW_GLIBC=1 runs against the system "
            "malloc, for developing the tests only)\n",
            ox_object_of((void *)&malloc),
            ox_object_of(dlsym(RTLD_DEFAULT, "malloc")));
    exit(1);
}

/*
 * Contract checks that glibc does not meet (e.g. aligned_alloc's EINVAL on
 * glibc < 2.38) are only enforced when oxmalloc is active.
 */
#define CHECK_OX(cond, ...)                                                    \
    do {                                                                       \
        if (ox_active()) {                                                     \
            CHECK(cond, __VA_ARGS__);                                          \
        } else if (!(cond)) {                                                  \
            NOTE("%s:%d: not oxmalloc, ignoring failed check: %s", __FILE__,   \
                 __LINE__, #cond);                                             \
        }                                                                      \
    } while (0)

/* The extended API, looked up at run time. */
struct ox_api {
    void *(*malloc)(size_t size);
    void *(*calloc)(size_t count, size_t size);
    void *(*realloc)(void *ptr, size_t size);
    void (*free)(void *ptr);
    void *(*aligned_alloc)(size_t alignment, size_t size);
    size_t (*usable_size)(const void *ptr);
    int (*owns)(const void *ptr);
    int (*trim)(void);
};

static inline void *ox_sym(const char *name)
{
    return dlsym(RTLD_DEFAULT, name);
}

/*
 * Fill `api` from the running process. Returns 1 if every entry was found,
 * 0 otherwise (missing entries are NULL and named on stderr when `verbose`).
 */
static inline int ox_api_load(struct ox_api *api, int verbose)
{
    static const char *const names[] = {
        "ox_malloc",        "ox_calloc",       "ox_realloc", "ox_free",
        "ox_aligned_alloc", "ox_usable_size",  "ox_owns",    "ox_trim",
    };
    void *ptrs[sizeof(names) / sizeof(names[0])];
    int all = 1;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        ptrs[i] = ox_sym(names[i]);
        if (ptrs[i] == NULL) {
            all = 0;
            if (verbose)
                NOTE("extended API symbol %s not found", names[i]);
        }
    }
    memcpy(&api->malloc, &ptrs[0], sizeof(void *));
    memcpy(&api->calloc, &ptrs[1], sizeof(void *));
    memcpy(&api->realloc, &ptrs[2], sizeof(void *));
    memcpy(&api->free, &ptrs[3], sizeof(void *));
    memcpy(&api->aligned_alloc, &ptrs[4], sizeof(void *));
    memcpy(&api->usable_size, &ptrs[5], sizeof(void *));
    memcpy(&api->owns, &ptrs[6], sizeof(void *));
    memcpy(&api->trim, &ptrs[7], sizeof(void *));
    return all;
}

/* A small deterministic PRNG (xorshift64*), one state per user. */
static inline uint64_t ox_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Byte `i` of the pattern for a block identified by `seed`. */
static inline unsigned char ox_pattern_byte(uint64_t seed, size_t i)
{
    uint64_t x = (seed + i) * 0x9E3779B97F4A7C15ULL;
    return (unsigned char)(x >> 56);
}

/*
 * Fill / check a block with a pattern. Large blocks are patterned in their
 * first and last 4 KiB and one word every 4 KiB in between, which catches
 * lost or moved pages without touching every byte.
 */
static inline void ox_fill(void *p, size_t n, uint64_t seed)
{
    unsigned char *b = (unsigned char *)p;
    if (n <= 16384) {
        for (size_t i = 0; i < n; i++)
            b[i] = ox_pattern_byte(seed, i);
        return;
    }
    for (size_t i = 0; i < 4096; i++)
        b[i] = ox_pattern_byte(seed, i);
    for (size_t i = 4096; i < n - 4096; i += 4096)
        b[i] = ox_pattern_byte(seed, i);
    for (size_t i = n - 4096; i < n; i++)
        b[i] = ox_pattern_byte(seed, i);
}

/*
 * Check the first `len` bytes of a block that was filled with
 * ox_fill(p, filled, seed) (len <= filled, e.g. after a shrinking realloc;
 * only the bytes ox_fill wrote are checked). Returns the index of the first
 * wrong byte, or SIZE_MAX if all are right.
 */
static inline size_t ox_verify_part(const void *p, size_t filled, size_t len, uint64_t seed)
{
    const unsigned char *b = (const unsigned char *)p;
    if (len > filled)
        len = filled;
    if (filled <= 16384) {
        for (size_t i = 0; i < len; i++)
            if (b[i] != ox_pattern_byte(seed, i))
                return i;
        return SIZE_MAX;
    }
    for (size_t i = 0; i < 4096 && i < len; i++)
        if (b[i] != ox_pattern_byte(seed, i))
            return i;
    for (size_t i = 4096; i < filled - 4096 && i < len; i += 4096)
        if (b[i] != ox_pattern_byte(seed, i))
            return i;
    for (size_t i = filled - 4096; i < len; i++)
        if (b[i] != ox_pattern_byte(seed, i))
            return i;
    return SIZE_MAX;
}

static inline size_t ox_verify(const void *p, size_t n, uint64_t seed)
{
    return ox_verify_part(p, n, n, seed);
}

/* Resident set size of this process in bytes (from /proc/self/statm). */
static inline size_t ox_rss_bytes(void)
{
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static inline size_t ox_page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

#endif /* OXTEST_COMMON_H */
