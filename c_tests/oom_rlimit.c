/*
 * Out of memory for real: with RLIMIT_AS set to the current VmSize + 256 MiB,
 * allocate blocks of 8 MiB, then 100 KiB, then 128 bytes until each fails.
 * Every failure is NULL with errno ENOMEM, nothing crashes; after freeing
 * everything, small and big allocations succeed again.
 */
#include "common.h"
#include <sys/mman.h>
#include <sys/resource.h>

static size_t vmsize_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    CHECK(f != NULL, "cannot open /proc/self/status");
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %zu kB", &kb) == 1)
            break;
    fclose(f);
    CHECK(kb > 0, "no VmSize in /proc/self/status");
    return kb * 1024;
}

/* The pointer table lives in memory mapped before the limit is set. */
#define MAXPTRS (4u << 20)
static void **ptrs;
static size_t nptrs;

/* Allocate blocks of `n` bytes until NULL or `cap` blocks. Returns 1 if an
 * allocation failed (and checks it failed properly). */
static int fill_until_null(size_t n, size_t cap, const char *what)
{
    size_t got = 0;
    for (;;) {
        if (got == cap || nptrs == MAXPTRS) {
            NOTE("%s: %zu blocks of %zu bytes allocated without failing (memory reserved "
                 "before the limit?)", what, got, n);
            return 0;
        }
        errno = 0;
        unsigned char *p = malloc(ox_opaque(n));
        int e = errno;
        if (p == NULL) {
            CHECK(e == ENOMEM, "%s: malloc(%zu) returned NULL with errno %d (%s), expected "
                  "ENOMEM", what, n, e, strerror(e));
            NOTE("%s: NULL + ENOMEM after %zu blocks of %zu bytes", what, got, n);
            return 1;
        }
        p[0] = 1;
        p[n - 1] = 2;
        ptrs[nptrs++] = p;
        got++;
    }
}

static void others_fail_cleanly(void)
{
    /* When the address space is exhausted, the other entry points fail
     * cleanly too (any of them may still succeed from cached memory). */
    errno = 0;
    void *p = calloc(1, (size_t)16 << 20);
    CHECK(p != NULL || errno == ENOMEM, "calloc under OOM: errno %d", errno);
    free(p);
    errno = 0;
    p = aligned_alloc((size_t)1 << 20, (size_t)16 << 20);
    CHECK(p != NULL || errno == ENOMEM, "aligned_alloc under OOM: errno %d", errno);
    free(p);
    void *m = (void *)0x1;
    int r = posix_memalign(&m, 4096, (size_t)16 << 20);
    CHECK(r == 0 || (r == ENOMEM && m == (void *)0x1), "posix_memalign under OOM: %d", r);
    if (r == 0)
        free(m);
    unsigned char *q = malloc(100);
    if (q != NULL) {
        errno = 0;
        void *g = realloc(q, (size_t)32 << 20);
        if (g == NULL) {
            CHECK(errno == ENOMEM, "realloc under OOM: errno %d", errno);
            q[0] = 5; /* old block still ours */
            free(q);
        } else {
            free(g);
        }
    }
}

int main(void)
{
    ox_require_active();

    ptrs = mmap(NULL, MAXPTRS * sizeof(void *), PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    CHECK(ptrs != MAP_FAILED, "mmap of the pointer table failed");

    /* Warm up every path first, so the allocator's own set-up is done. */
    const size_t warm[] = {16, 128, 4000, 100 * 1024, (size_t)8 << 20};
    for (size_t i = 0; i < sizeof(warm) / sizeof(warm[0]); i++) {
        void *p = malloc(warm[i]);
        CHECK(p != NULL, "warm-up malloc(%zu) failed", warm[i]);
        memset(p, 0, warm[i]);
        free(p);
    }

    size_t vm = vmsize_bytes();
    struct rlimit rl = {vm + ((size_t)256 << 20), vm + ((size_t)256 << 20)};
    struct rlimit old;
    CHECK(getrlimit(RLIMIT_AS, &old) == 0, "getrlimit failed");
    if (old.rlim_max != RLIM_INFINITY && old.rlim_max < rl.rlim_max)
        rl.rlim_max = old.rlim_max;
    if (rl.rlim_cur > rl.rlim_max)
        rl.rlim_cur = rl.rlim_max;
    CHECK(setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit(RLIMIT_AS, %zu) failed: %s",
          (size_t)rl.rlim_cur, strerror(errno));
    NOTE("VmSize %zu MiB, RLIMIT_AS set to %zu MiB", vm >> 20, (size_t)rl.rlim_cur >> 20);

    int failed_any = 0;
    failed_any |= fill_until_null((size_t)8 << 20, 100000, "8 MiB blocks");
    others_fail_cleanly();
    failed_any |= fill_until_null(100 * 1024, 200000, "100 KiB blocks");
    others_fail_cleanly();
    failed_any |= fill_until_null(128, 2u << 20, "128-byte blocks");
    others_fail_cleanly();
    CHECK(failed_any, "no allocation ever failed under RLIMIT_AS = VmSize + 256 MiB "
          "(%zu blocks allocated)", nptrs);

    /* A few more attempts in the exhausted state must keep failing cleanly. */
    for (int i = 0; i < 100; i++) {
        errno = 0;
        void *p = malloc((size_t)8 << 20);
        CHECK(p != NULL || errno == ENOMEM, "malloc(8 MiB) under OOM: errno %d", errno);
        if (p)
            ptrs[nptrs++] = p;
    }

    for (size_t i = 0; i < nptrs; i++)
        free(ptrs[i]);
    nptrs = 0;

    /* Allocation works again, small and big, with the limit still in place. */
    const size_t again[] = {16, 128, 4000, 100 * 1024, 1u << 20, (size_t)8 << 20,
                            (size_t)8 << 20, (size_t)16 << 20};
    void *held[sizeof(again) / sizeof(again[0])];
    for (size_t i = 0; i < sizeof(again) / sizeof(again[0]); i++) {
        errno = 0;
        held[i] = malloc(again[i]);
        CHECK(held[i] != NULL, "malloc(%zu) failed after everything was freed (errno %d)",
              again[i], errno);
        memset(held[i], 0x2f, again[i]);
    }
    for (size_t i = 0; i < sizeof(again) / sizeof(again[0]); i++)
        free(held[i]);
    /* Many small ones. */
    for (int i = 0; i < 100000; i++) {
        void *p = malloc(64);
        CHECK(p != NULL, "malloc(64) #%d failed after recovery", i);
        ptrs[nptrs++] = p;
    }
    for (size_t i = 0; i < nptrs; i++)
        free(ptrs[i]);
    return 0;
}
