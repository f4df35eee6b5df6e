/*
 * Huge blocks grown by realloc while other threads allocate medium blocks.
 *
 * Growing a huge block may move its pages to a new mapping; the old range is then free
 * address space, and another thread's next buddy region or slab segment can land there at
 * once. A regression once cleared the region-map entry of the old range after the move,
 * erasing the new region's mark: its valid blocks then looked foreign ("invalid pointer").
 * Two threads grow huge blocks by realloc, four allocate, measure and free medium and
 * small blocks, and ox_heap_check must stay clean. The race needs luck, so this runs for
 * a few seconds; the earlier bug showed within a second or two on two cores.
 */
#include "common.h"
#include <malloc.h>
#include <pthread.h>
#include <unistd.h>

static volatile int stop;
static int (*heap_check)(void);

static void *grow(void *arg)
{
    (void)arg;
    while (!stop) {
        char *p = malloc(2u << 20);
        CHECK(p != NULL, "malloc(2 MiB) failed");
        p[0] = 1;
        for (size_t n = 3u << 20; n <= (48u << 20); n += 5u << 20) {
            p = realloc(p, n);
            CHECK(p != NULL, "realloc to %zu failed", n);
            CHECK(p[0] == 1, "realloc lost the first byte");
        }
        free(p);
    }
    return NULL;
}

static void *medium(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull;
    void *b[12];
    unsigned rounds = 0;
    while (!stop) {
        for (int i = 0; i < 12; i++) {
            size_t n = (i & 1) ? 16 + ox_rand(&rng) % 4000 : 300000 + ox_rand(&rng) % 700000;
            b[i] = malloc(n);
            CHECK(b[i] != NULL, "malloc(%zu) failed", n);
            CHECK(malloc_usable_size(b[i]) >= n, "usable size below %zu", n);
        }
        for (int i = 0; i < 12; i++)
            free(b[i]);
        if ((++rounds & 63) == 0)
            CHECK(heap_check() == 0, "ox_heap_check failed");
    }
    return NULL;
}

int main(void)
{
    ox_require_active();
    void *sym = ox_sym("ox_heap_check");
    CHECK(sym != NULL, "ox_heap_check not found");
    memcpy(&heap_check, &sym, sizeof(sym));
    pthread_t t[6];
    for (int i = 0; i < 6; i++)
        CHECK(pthread_create(&t[i], NULL, i < 2 ? grow : medium, (void *)(uintptr_t)(i + 1)) == 0,
              "pthread_create failed");
    sleep(4);
    stop = 1;
    for (int i = 0; i < 6; i++)
        pthread_join(t[i], NULL);
    CHECK(heap_check() == 0, "ox_heap_check failed at the end");
    return 0;
}
