/*
 * malloc and free after the allocator's own per-thread cleanup: a pthread key
 * (created after the first malloc, so after any key of the allocator's) has a
 * destructor that frees the thread's blocks, mallocs new ones, hands some to
 * the main thread, and re-arms itself so that it runs again in the next
 * destructor round, when the allocator's own cleanup has certainly run.
 */
#include "common.h"
#include <pthread.h>

#define NTHREADS 200
#define CONCURRENT 8
#define HANDED_PER_THREAD 4

static pthread_key_t key;

struct tstate {
    int id;
    int rounds;
    unsigned char *early[32]; /* allocated in the thread body, freed in the destructor */
};

static unsigned char *handed[NTHREADS][HANDED_PER_THREAD];

static size_t early_size(int i)
{
    return i == 31 ? 200000 : (size_t)(i * 41 % 900);
}

static void dtor(void *v)
{
    struct tstate *st = v;
    st->rounds++;
    if (st->rounds == 1) {
        for (int i = 0; i < 32; i++) {
            size_t bad = ox_verify(st->early[i], early_size(i), (uint64_t)st->id * 100 + i);
            CHECK(bad == SIZE_MAX, "thread %d: block %d corrupted at byte %zu at thread exit",
                  st->id, i, bad);
            free(st->early[i]);
        }
    }
    /* malloc/free of every kind of size, in every round */
    for (int i = 0; i < 50; i++) {
        size_t n = (size_t)(i * 97 % 5000) + (i == 49 ? (size_t)2 << 20 : 0);
        unsigned char *p = malloc(n);
        CHECK(p != NULL, "thread %d: malloc(%zu) in key destructor round %d failed", st->id, n,
              st->rounds);
        memset(p, 0x5c, n);
        unsigned char *q = realloc(p, n + 100);
        CHECK(q != NULL, "realloc in key destructor failed");
        free(q);
        void *c = calloc(3, n);
        CHECK(c != NULL, "calloc in key destructor failed");
        free(c);
    }
    if (st->rounds <= HANDED_PER_THREAD) {
        /* a block that outlives the thread, allocated during its teardown */
        size_t n = (size_t)st->rounds * 1000 + 10;
        unsigned char *p = malloc(n);
        CHECK(p != NULL, "malloc for hand-over failed");
        ox_fill(p, n, (uint64_t)st->id * 1000 + st->rounds);
        handed[st->id][st->rounds - 1] = p;
    }
    if (st->rounds < 3) {
        /* run again in the next round, after every other key's destructor */
        CHECK(pthread_setspecific(key, st) == 0, "pthread_setspecific in destructor failed");
        return;
    }
    free(st);
}

static void *body(void *arg)
{
    int id = (int)(uintptr_t)arg;
    struct tstate *st = malloc(sizeof *st);
    CHECK(st != NULL, "malloc failed");
    memset(st, 0, sizeof *st);
    st->id = id;
    for (int i = 0; i < 32; i++) {
        st->early[i] = malloc(early_size(i));
        CHECK(st->early[i] != NULL, "malloc failed");
        ox_fill(st->early[i], early_size(i), (uint64_t)id * 100 + i);
    }
    CHECK(pthread_setspecific(key, st) == 0, "pthread_setspecific failed");
    return NULL;
}

int main(void)
{
    ox_require_active();

    /* The first malloc happens before the key exists. */
    void *first = malloc(100);
    CHECK(first != NULL, "malloc failed");
    free(first);
    CHECK(pthread_key_create(&key, dtor) == 0, "pthread_key_create failed");

    for (int base = 0; base < NTHREADS; base += CONCURRENT) {
        pthread_t th[CONCURRENT];
        for (int j = 0; j < CONCURRENT; j++)
            CHECK(pthread_create(&th[j], NULL, body, (void *)(uintptr_t)(base + j)) == 0,
                  "pthread_create failed");
        for (int j = 0; j < CONCURRENT; j++)
            CHECK(pthread_join(th[j], NULL) == 0, "pthread_join failed");
        /* Main allocates between batches. */
        void *m = malloc(4000);
        CHECK(m != NULL, "malloc failed");
        free(m);
    }

    int handed_count = 0;
    for (int t = 0; t < NTHREADS; t++)
        for (int r = 0; r < HANDED_PER_THREAD; r++) {
            if (handed[t][r] == NULL)
                continue;
            size_t n = (size_t)(r + 1) * 1000 + 10;
            size_t bad = ox_verify(handed[t][r], n, (uint64_t)t * 1000 + r + 1);
            CHECK(bad == SIZE_MAX, "block allocated in thread %d's destructor round %d "
                  "corrupted at byte %zu", t, r + 1, bad);
            free(handed[t][r]);
            handed_count++;
        }
    CHECK(handed_count == NTHREADS * 3, "expected %d destructor blocks, got %d (destructor "
          "rounds missing)", NTHREADS * 3, handed_count);
    return 0;
}
