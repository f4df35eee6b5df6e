/*
 * mallinfo2 is honest, and malloc_info and ox_stats_get agree with it:
 *  - uordblks counts the bytes of live small and medium blocks exactly (small blocks at
 *    their size class's block size: 100 bytes -> 112; medium blocks in whole OS pages);
 *  - after everything is freed it comes back to where it started (near zero), instead
 *    of staying at the size of every slab ever mapped;
 *  - hblks/hblkhd count huge blocks only, and uordblks does not include them;
 *  - arena = uordblks + fordblks;
 *  - malloc_info's "allocated" total and ox_stats_get's small + medium live bytes are the
 *    same figure at the same moment.
 */
#include "common.h"
#include "oxmalloc.h"
#include <malloc.h>

enum { SMALL_COUNT = 1000, SMALL_SIZE = 100, SMALL_BLOCK = 112 };
enum { MEDIUM_COUNT = 10, MEDIUM_SIZE = 100 * 1024 };
#define HUGE_SIZE ((size_t)10 << 20)

static long xml_total(const char *xml, const char *type)
{
    char key[64];
    snprintf(key, sizeof key, "<total type=\"%s\" size=\"", type);
    const char *at = strstr(xml, key);
    return at == NULL ? -1 : atol(at + strlen(key));
}

int main(void)
{
    ox_require_active();
    typedef void (*stats_fn)(ox_stats *);
    stats_fn stats_get = (stats_fn)ox_sym("ox_stats_get");
    CHECK(stats_get != NULL, "ox_stats_get not found");
    FILE *xml_file = tmpfile();
    CHECK(xml_file != NULL, "tmpfile failed");
    static char xml[1 << 16];

    struct mallinfo2 before = mallinfo2();
    CHECK(before.arena == before.uordblks + before.fordblks,
          "arena %zu != uordblks %zu + fordblks %zu", before.arena, before.uordblks,
          before.fordblks);
    CHECK(before.uordblks < ((size_t)1 << 20),
          "a program that has allocated almost nothing has uordblks %zu", before.uordblks);

    void *small[SMALL_COUNT];
    for (int i = 0; i < SMALL_COUNT; i++) {
        small[i] = malloc(ox_opaque(SMALL_SIZE));
        CHECK(small[i] != NULL, "malloc(%d) failed", SMALL_SIZE);
    }
    struct mallinfo2 with_small = mallinfo2();
    CHECK(with_small.uordblks - before.uordblks == (size_t)SMALL_COUNT * SMALL_BLOCK,
          "uordblks grew by %zu for %d blocks of %d bytes (want %d)",
          with_small.uordblks - before.uordblks, SMALL_COUNT, SMALL_BLOCK,
          SMALL_COUNT * SMALL_BLOCK);

    void *medium[MEDIUM_COUNT];
    for (int i = 0; i < MEDIUM_COUNT; i++) {
        medium[i] = malloc(ox_opaque(MEDIUM_SIZE));
        CHECK(medium[i] != NULL, "malloc(%d) failed", MEDIUM_SIZE);
    }
    struct mallinfo2 with_medium = mallinfo2();
    CHECK(with_medium.uordblks - with_small.uordblks == (size_t)MEDIUM_COUNT * MEDIUM_SIZE,
          "uordblks grew by %zu for %d medium blocks of %d bytes",
          with_medium.uordblks - with_small.uordblks, MEDIUM_COUNT, MEDIUM_SIZE);

    void *huge = malloc(ox_opaque(HUGE_SIZE));
    CHECK(huge != NULL, "malloc(10 MiB) failed");
    memset(huge, 1, HUGE_SIZE);
    struct mallinfo2 with_huge = mallinfo2();
    CHECK(with_huge.uordblks == with_medium.uordblks,
          "uordblks changed (%zu -> %zu) with a huge block: it must be in hblkhd only",
          with_medium.uordblks, with_huge.uordblks);
    CHECK(with_huge.hblks == with_medium.hblks + 1, "hblks %zu -> %zu with one huge block",
          with_medium.hblks, with_huge.hblks);
    CHECK(with_huge.hblkhd >= with_medium.hblkhd + HUGE_SIZE &&
              with_huge.hblkhd <= with_medium.hblkhd + HUGE_SIZE + 8192,
          "hblkhd %zu -> %zu for a 10 MiB block", with_medium.hblkhd, with_huge.hblkhd);
    CHECK(with_huge.arena == with_huge.uordblks + with_huge.fordblks,
          "arena %zu != uordblks %zu + fordblks %zu", with_huge.arena, with_huge.uordblks,
          with_huge.fordblks);

    /* malloc_info: the census is taken before the stream's buffer is allocated. */
    struct mallinfo2 at_info = mallinfo2();
    CHECK(malloc_info(0, xml_file) == 0, "malloc_info failed");
    fflush(xml_file);
    rewind(xml_file);
    size_t got = fread(xml, 1, sizeof xml - 1, xml_file);
    xml[got] = 0;
    CHECK(xml_total(xml, "allocated") == (long)at_info.uordblks,
          "malloc_info allocated %ld, mallinfo2 uordblks %zu\n%s",
          xml_total(xml, "allocated"), at_info.uordblks, xml);
    CHECK(xml_total(xml, "mmap") == (long)at_info.hblkhd, "malloc_info mmap %ld, hblkhd %zu",
          xml_total(xml, "mmap"), at_info.hblkhd);
    CHECK(strstr(xml, "<size from=\"112\" to=\"112\"") != NULL,
          "malloc_info lists no 112-byte class:\n%s", xml);

    /* ox_stats_get: the same figures. */
    ox_stats st;
    struct mallinfo2 at_stats = mallinfo2();
    stats_get(&st);
    CHECK(st.small_live_bytes + st.medium_live_bytes == at_stats.uordblks,
          "ox_stats small %zu + medium %zu != uordblks %zu", st.small_live_bytes,
          st.medium_live_bytes, at_stats.uordblks);
    CHECK(st.huge_live_bytes == at_stats.hblkhd && st.huge_live_blocks == at_stats.hblks,
          "ox_stats huge %zu bytes / %zu blocks, mallinfo2 %zu / %zu", st.huge_live_bytes,
          st.huge_live_blocks, at_stats.hblkhd, at_stats.hblks);
    CHECK(st.live_bytes == st.small_live_bytes + st.medium_live_bytes + st.huge_live_bytes,
          "live_bytes %zu is not the sum of its parts", st.live_bytes);
    CHECK(st.medium_live_blocks >= MEDIUM_COUNT, "medium live blocks %zu", st.medium_live_blocks);
    CHECK(st.resident_bytes >= HUGE_SIZE && st.resident_bytes <= st.mapped_bytes,
          "resident %zu (mapped %zu) with a 10 MiB block written", st.resident_bytes,
          st.mapped_bytes);
    CHECK(st.peak_held_bytes >= st.held_bytes && st.held_bytes >= st.live_bytes,
          "peak held %zu, held %zu, live %zu", st.peak_held_bytes, st.held_bytes,
          st.live_bytes);

    free(huge);
    for (int i = 0; i < MEDIUM_COUNT; i++)
        free(medium[i]);
    for (int i = 0; i < SMALL_COUNT; i++)
        free(small[i]);
    struct mallinfo2 after = mallinfo2();
    /* The tmpfile's buffer (allocated by malloc_info's write) is the one block more. */
    CHECK(after.uordblks <= before.uordblks + 8192,
          "uordblks did not come back after freeing: %zu before, %zu after", before.uordblks,
          after.uordblks);
    CHECK(after.hblks == before.hblks && after.hblkhd == before.hblkhd,
          "huge figures did not come back: %zu/%zu before, %zu/%zu after", before.hblks,
          before.hblkhd, after.hblks, after.hblkhd);
    CHECK(after.arena == after.uordblks + after.fordblks, "arena != uordblks + fordblks");
    fclose(xml_file);
    printf("mallinfo2 uordblks: %zu before, %zu with %d small + %d medium blocks, %zu after "
           "freeing\n",
           before.uordblks, with_medium.uordblks, SMALL_COUNT, MEDIUM_COUNT, after.uordblks);
    return 0;
}
