/*
 * Bad pointers in the default mode: every input oxmalloc promises to detect
 * is tried in a forked child, which must die by SIGABRT after printing one
 * line on stderr
 *     oxmalloc: CALL(): <what> 0x<pointer>
 * naming the call (free, realloc, malloc_usable_size) and the exact pointer
 * as "0x%lx" prints it.
 *
 * Addresses that are not blocks, each passed to free, realloc and
 * malloc_usable_size: a stack address, a static object, an mmap'd page, a
 * page mapped right after a huge block (inside the same 4 MiB of address
 * space), blocks from glibc's own allocator (__libc_malloc, small and
 * mmap'd), and addresses inside small, medium and huge blocks (just past the
 * start, and at offsets that look like block or span boundaries).
 *
 * Misuse of real blocks: double free of small blocks (immediately; after a
 * block of the same size was freed in between; after a hundred were), of
 * medium and huge blocks (the second free by the same or another thread),
 * free of a block that realloc moved away, realloc of a freed block.
 *
 * Afterwards the parent, which did none of this itself, still works: its
 * blocks kept their contents, frees keep errno, ox_heap_check() returns 0.
 */
#include "child.h"
#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>

extern void *__libc_malloc(size_t size);

#define CHILD_TIMEOUT_S 10.0
#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

enum call { CALL_FREE, CALL_REALLOC, CALL_USABLE, NCALLS };
static const char *const call_name[NCALLS] = {"free", "realloc", "malloc_usable_size"};

/* Addresses that are not the start of a live block of ours. */
enum target {
    T_STACK,
    T_STATIC,
    T_MMAP,
    T_MMAP_AFTER_HUGE,
    T_LIBC_SMALL,
    T_LIBC_MMAPPED,
    T_SMALL_48_PLUS_16,
    T_SMALL_1000_PLUS_512,
    T_SMALL_16000_PLUS_8192,
    T_MEDIUM_PLUS_16,
    T_MEDIUM_PLUS_4K,
    T_MEDIUM_PLUS_32K,
    T_HUGE_PLUS_16,
    T_HUGE_PLUS_4K,
    T_HUGE_PLUS_4M,
    NTARGETS
};
static const char *const target_name[NTARGETS] = {
    "a stack address",
    "a static object",
    "an mmap'd page",
    "a page mapped right after a huge block",
    "a block from __libc_malloc(100)",
    "a block from __libc_malloc(1 MiB) (mmap'd by glibc)",
    "48-byte block + 16",
    "1000-byte block + 512",
    "16000-byte block + 8192",
    "100 KiB block + 16",
    "100 KiB block + 4 KiB",
    "100 KiB block + 32 KiB",
    "10 MiB block + 16",
    "10 MiB block + 4 KiB",
    "10 MiB block + 4 MiB",
};

/* Misuse of real blocks; each names the call that must report it. */
enum misuse {
    M_SMALL_DOUBLE_FREE,
    M_TINY_DOUBLE_FREE,
    M_SMALL_16K_DOUBLE_FREE,
    M_SMALL_ABA,
    M_SMALL_AFTER_100_FREES,
    M_MEDIUM_DOUBLE_FREE,
    M_MEDIUM_ABA,
    M_HUGE_DOUBLE_FREE,
    M_MEDIUM_DOUBLE_FREE_OTHER_THREAD,
    M_HUGE_DOUBLE_FREE_OTHER_THREAD,
    M_FREE_AFTER_REALLOC_MOVED,
    M_REALLOC_FREED_SMALL,
    M_REALLOC_FREED_MEDIUM,
    M_REALLOC_FREED_HUGE,
    NMISUSES
};
static const struct {
    const char *name;
    enum call call;
} misuse_info[NMISUSES] = {
    {"double free of a 100-byte block", CALL_FREE},
    {"double free of a 16-byte block", CALL_FREE},
    {"double free of a 16 KiB block", CALL_FREE},
    {"free(a); free(b); free(a) (100-byte blocks)", CALL_FREE},
    {"free(a); free 100 blocks of its size; free(a)", CALL_FREE},
    {"double free of a 200 KiB block", CALL_FREE},
    {"free(a); free(b); free(a) (200 KiB blocks)", CALL_FREE},
    {"double free of a 6 MiB block", CALL_FREE},
    {"double free of a 200 KiB block, the second by another thread", CALL_FREE},
    {"double free of a 6 MiB block, the second by another thread", CALL_FREE},
    {"free of a 100-byte block after realloc moved it to 300 KiB", CALL_FREE},
    {"realloc of a freed 100-byte block", CALL_REALLOC},
    {"realloc of a freed 200 KiB block", CALL_REALLOC},
    {"realloc of a freed 6 MiB block", CALL_REALLOC},
};

struct bad_case {
    int is_misuse;
    enum target target;
    enum call call;
    enum misuse misuse;
};

static _Alignas(64) char static_object[4096];

/* Tells the parent which pointer the bad call gets; must come right before it. */
static void announce(const void *p)
{
    ox_child_say("ptr", "0x%lx", (unsigned long)(uintptr_t)p);
}

/* Makes the bad call; returning means it was not detected. */
static void bad_call(enum call c, void *p)
{
    p = ox_opaque_ptr(p);
    switch (c) {
    case CALL_FREE:
        free(p);
        break;
    case CALL_REALLOC:
        ox_escape(realloc(p, ox_opaque(200)));
        break;
    case CALL_USABLE:
        ox_child_say("usable", "%zu", malloc_usable_size(p));
        break;
    default:
        break;
    }
    ox_child_say("survived", "1");
}

static void *xmalloc(size_t n)
{
    void *p = malloc(ox_opaque(n));
    if (p == NULL) {
        ox_child_say("setup", "malloc(%zu) failed", n);
        _exit(90);
    }
    memset(p, 0x5a, n < 4096 ? n : 4096);
    return p;
}

static void run_target(const struct bad_case *c)
{
    volatile _Alignas(16) char stack_buf[512];
    stack_buf[0] = 1;
    char *p = NULL;
    switch (c->target) {
    case T_STACK:
        p = (char *)&stack_buf[64];
        break;
    case T_STATIC:
        static_object[0] = 1;
        p = static_object;
        break;
    case T_MMAP:
        p = mmap(NULL, 64 * KiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            _exit(91);
        p[0] = 1;
        break;
    case T_MMAP_AFTER_HUGE: {
        /* A huge block whose mapping ends inside a 4 MiB unit of address
         * space; a foreign page mapped right behind it shares that unit. */
        char *h = xmalloc(4 * MiB + 40 * KiB);
        uintptr_t end = ((uintptr_t)h + malloc_usable_size(h) + ox_page_size() - 1) &
                        ~(uintptr_t)(ox_page_size() - 1);
        if (end % (4 * MiB) == 0) {
            ox_child_say("skip", "the huge block's mapping ends on a 4 MiB boundary");
            _exit(0);
        }
        p = mmap((void *)end, ox_page_size(), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (p == MAP_FAILED || p != (char *)end) {
            ox_child_say("skip", "could not map the page after the huge block at 0x%lx: %s",
                         (unsigned long)end, strerror(errno));
            _exit(0);
        }
        p[0] = 1;
        break;
    }
    case T_LIBC_SMALL:
        p = __libc_malloc(100);
        break;
    case T_LIBC_MMAPPED:
        p = __libc_malloc(MiB);
        break;
    case T_SMALL_48_PLUS_16:
        p = xmalloc(48) + 16;
        break;
    case T_SMALL_1000_PLUS_512:
        p = xmalloc(1000) + 512;
        break;
    case T_SMALL_16000_PLUS_8192:
        p = xmalloc(16000) + 8192;
        break;
    case T_MEDIUM_PLUS_16:
        p = xmalloc(100 * KiB) + 16;
        break;
    case T_MEDIUM_PLUS_4K:
        p = xmalloc(100 * KiB) + 4 * KiB;
        break;
    case T_MEDIUM_PLUS_32K:
        p = xmalloc(100 * KiB) + 32 * KiB;
        break;
    case T_HUGE_PLUS_16:
        p = xmalloc(10 * MiB) + 16;
        break;
    case T_HUGE_PLUS_4K:
        p = xmalloc(10 * MiB) + 4 * KiB;
        break;
    case T_HUGE_PLUS_4M:
        p = xmalloc(10 * MiB) + 4 * MiB;
        break;
    default:
        _exit(92);
    }
    if (p == NULL)
        _exit(93);
    announce(p);
    bad_call(c->call, p);
    ox_escape((const void *)stack_buf);
}

static void *second_free_thread(void *stale)
{
    announce(stale);
    bad_call(CALL_FREE, stale);
    return NULL;
}

static void run_misuse(const struct bad_case *c)
{
    /* `stale` is an opaque copy of a pointer that is about to be freed (the
     * compiler rightly warns about using `a` itself after free). */
    char *a, *b, *stale;
    switch (c->misuse) {
    case M_SMALL_DOUBLE_FREE:
    case M_TINY_DOUBLE_FREE:
    case M_SMALL_16K_DOUBLE_FREE:
    case M_MEDIUM_DOUBLE_FREE:
    case M_HUGE_DOUBLE_FREE: {
        size_t n = c->misuse == M_SMALL_DOUBLE_FREE      ? 100
                 : c->misuse == M_TINY_DOUBLE_FREE       ? 16
                 : c->misuse == M_SMALL_16K_DOUBLE_FREE  ? 16 * KiB
                 : c->misuse == M_MEDIUM_DOUBLE_FREE     ? 200 * KiB
                                                         : 6 * MiB;
        a = xmalloc(n);
        stale = ox_opaque_ptr(a);
        free(a);
        announce(stale);
        bad_call(CALL_FREE, stale);
        break;
    }
    case M_MEDIUM_DOUBLE_FREE_OTHER_THREAD:
    case M_HUGE_DOUBLE_FREE_OTHER_THREAD: {
        size_t n = c->misuse == M_MEDIUM_DOUBLE_FREE_OTHER_THREAD ? 200 * KiB : 6 * MiB;
        a = xmalloc(n);
        stale = ox_opaque_ptr(a);
        free(a);
        pthread_t t;
        if (pthread_create(&t, NULL, second_free_thread, stale) != 0)
            _exit(96);
        pthread_join(t, NULL);
        break;
    }
    case M_SMALL_ABA:
    case M_MEDIUM_ABA: {
        size_t n = c->misuse == M_SMALL_ABA ? 100 : 200 * KiB;
        a = xmalloc(n);
        b = xmalloc(n);
        stale = ox_opaque_ptr(a);
        free(a);
        free(b);
        announce(stale);
        bad_call(CALL_FREE, stale);
        break;
    }
    case M_SMALL_AFTER_100_FREES: {
        char *others[100];
        for (int i = 0; i < 100; i++)
            others[i] = xmalloc(100);
        a = xmalloc(100);
        stale = ox_opaque_ptr(a);
        free(a);
        for (int i = 0; i < 100; i++)
            free(others[i]);
        announce(stale);
        bad_call(CALL_FREE, stale);
        break;
    }
    case M_FREE_AFTER_REALLOC_MOVED:
        a = xmalloc(100);
        stale = ox_opaque_ptr(a);
        b = realloc(a, ox_opaque(300 * KiB));
        if (b == NULL)
            _exit(94);
        if (b == stale) {
            ox_child_say("skip", "realloc did not move the block");
            _exit(0);
        }
        announce(stale);
        bad_call(CALL_FREE, stale);
        break;
    case M_REALLOC_FREED_SMALL:
    case M_REALLOC_FREED_MEDIUM:
    case M_REALLOC_FREED_HUGE: {
        size_t n = c->misuse == M_REALLOC_FREED_SMALL    ? 100
                 : c->misuse == M_REALLOC_FREED_MEDIUM   ? 200 * KiB
                                                         : 6 * MiB;
        a = xmalloc(n);
        stale = ox_opaque_ptr(a);
        free(a);
        announce(stale);
        bad_call(CALL_REALLOC, stale);
        break;
    }
    default:
        _exit(95);
    }
}

static void child_main(void *arg)
{
    const struct bad_case *c = arg;
    /* The allocator is up, and this child has a few blocks of its own. */
    void *warm[8];
    for (int i = 0; i < 8; i++)
        warm[i] = xmalloc((size_t)32 << i);
    if (c->is_misuse)
        run_misuse(c);
    else
        run_target(c);
    for (int i = 0; i < 8; i++)
        free(warm[i]);
}

static int caught, skipped;

static void run_case(const struct bad_case *c)
{
    char what[256];
    enum call call = c->is_misuse ? misuse_info[c->misuse].call : c->call;
    if (c->is_misuse)
        snprintf(what, sizeof what, "%s", misuse_info[c->misuse].name);
    else
        snprintf(what, sizeof what, "%s(%s)", call_name[call], target_name[c->target]);

    static struct ox_child r;
    ox_child_run(child_main, (void *)c, CHILD_TIMEOUT_S, &r);
    char ptr_text[64], note[256];
    if (ox_child_value(&r, "skip", note, sizeof note) && r.exited && r.exit_code == 0) {
        NOTE("%s: skipped: %s", what, note);
        skipped++;
        return;
    }
    CHECK(!r.spawn_failed, "%s: could not run a child: %s", what, strerror(errno));
    CHECK(!r.timed_out, "%s: the child hung (stderr: %s)", what, r.err);
    int have_ptr = ox_child_value(&r, "ptr", ptr_text, sizeof ptr_text);
    CHECK(have_ptr, "%s: the child did not get to the bad call: %s; stdout: %s; stderr: %s",
          what, ox_child_describe(&r), r.out, r.err);
    uintptr_t ptr = (uintptr_t)strtoull(ptr_text, NULL, 16);

    if (!ox_active()) {
        NOTE("%s on the system malloc: %s; stderr: %.200s", what, ox_child_describe(&r), r.err);
        return;
    }
    if (r.exited && ox_child_value(&r, "survived", note, sizeof note)) {
        char usable[64] = "";
        ox_child_value(&r, "usable", usable, sizeof usable);
        CHECK(0, "%s of %#lx was not detected: the call returned%s%s; stderr: %s", what,
              (unsigned long)ptr, usable[0] ? " size " : "", usable, r.err);
    }
    CHECK(ox_child_aborted(&r), "%s of %#lx: the child %s, expected SIGABRT; stderr: %s", what,
          (unsigned long)ptr, ox_child_describe(&r), r.err);
    CHECK(ox_child_has_report(r.err, call_name[call], NULL, ptr),
          "%s: stderr lacks the line \"oxmalloc: %s(): ... 0x%lx\"; it was: %s", what,
          call_name[call], (unsigned long)ptr, r.err);
    if (getenv("OXTEST_VERBOSE") != NULL)
        NOTE("%s: %.*s", what, (int)strcspn(r.err, "\n"), r.err);
    caught++;
}

/* The parent's own blocks, checked before and after the children ran. */
#define NKEEP 12
static const size_t keep_sizes[NKEEP] = {1,          16,         100,        1000,
                                         16 * KiB,   20 * KiB,   100 * KiB,  300 * KiB,
                                         MiB,        2 * MiB,    5 * MiB,    9 * MiB};

int main(void)
{
    ox_require_active();

    void *keep[NKEEP];
    for (int i = 0; i < NKEEP; i++) {
        keep[i] = malloc(ox_opaque(keep_sizes[i]));
        CHECK(keep[i] != NULL, "malloc(%zu) failed", keep_sizes[i]);
        ox_fill(keep[i], keep_sizes[i], (uint64_t)i * 77 + 1);
    }

    int total = 0;
    for (int t = 0; t < NTARGETS; t++) {
        for (int c = 0; c < NCALLS; c++) {
            struct bad_case bc = {.is_misuse = 0, .target = (enum target)t, .call = (enum call)c};
            run_case(&bc);
            total++;
        }
    }
    for (int m = 0; m < NMISUSES; m++) {
        struct bad_case bc = {.is_misuse = 1, .misuse = (enum misuse)m};
        run_case(&bc);
        total++;
    }

    /* The parent is unaffected. */
    for (int i = 0; i < NKEEP; i++) {
        size_t bad = ox_verify(keep[i], keep_sizes[i], (uint64_t)i * 77 + 1);
        CHECK(bad == SIZE_MAX, "the parent's %zu-byte block changed at byte %zu", keep_sizes[i],
              bad);
        errno = EILSEQ;
        free(keep[i]);
        CHECK(errno == EILSEQ, "free of a %zu-byte block changed errno to %d", keep_sizes[i],
              errno);
    }
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < NKEEP; i++) {
            void *p = round == 1 ? calloc(1, ox_opaque(keep_sizes[i]))
                                 : malloc(ox_opaque(keep_sizes[i]));
            CHECK(p != NULL, "allocation of %zu bytes failed", keep_sizes[i]);
            ox_fill(p, keep_sizes[i], (uint64_t)i);
            if (round == 2) {
                void *q = realloc(p, ox_opaque(keep_sizes[i] * 2 + 1));
                CHECK(q != NULL, "realloc failed");
                CHECK(ox_verify(q, keep_sizes[i], (uint64_t)i) == SIZE_MAX,
                      "realloc lost contents");
                p = q;
            }
            errno = ENOTSUP;
            free(p);
            CHECK(errno == ENOTSUP, "free changed errno to %d", errno);
        }
    }
    int (*heap_check)(void) = (int (*)(void))ox_sym("ox_heap_check");
    if (ox_active()) {
        CHECK(heap_check != NULL, "ox_heap_check not found");
        CHECK(heap_check() == 0, "ox_heap_check() failed in the parent");
    }

    if (ox_active())
        CHECK(caught + skipped == total, "%d of %d cases caught, %d skipped", caught, total,
              skipped);
    printf("bad_pointers: %d cases caught", caught);
    if (skipped)
        printf(" (%d skipped)", skipped);
    printf("\n");
    return 0;
}
