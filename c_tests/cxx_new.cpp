// C++ operator new and delete, exported by liboxmalloc itself:
//  - every form the program calls (plain, array, aligned, nothrow, sized delete)
//    resolves into liboxmalloc, and the blocks are oxmalloc's (ox_owns);
//  - a request that cannot be served throws std::bad_alloc (plain, array, aligned), and
//    the nothrow forms return nullptr;
//  - the installed new_handler is called until it gives up (it removes itself on its
//    third call, then bad_alloc is thrown); an exception thrown by the handler itself
//    reaches the program (it unwinds through the library's new);
//  - over-aligned types get their alignment; threads allocating and freeing standard
//    containers keep their contents (sized delete with the right sizes: in hardened mode
//    every size is checked).
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <map>
#include <new>
#include <string>
#include <thread>
#include <vector>

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);  \
            std::fprintf(stderr, __VA_ARGS__);                                             \
            std::fputc('\n', stderr);                                                      \
            std::exit(1);                                                                  \
        }                                                                                  \
    } while (0)

static bool in_oxmalloc(const char *symbol)
{
    void *addr = dlsym(RTLD_DEFAULT, symbol);
    Dl_info info;
    return addr != nullptr && dladdr(addr, &info) != 0 && info.dli_fname != nullptr &&
           std::strstr(info.dli_fname, "liboxmalloc") != nullptr;
}

// Keeps the compiler from proving anything about a size.
static size_t opaque(size_t n)
{
    volatile size_t v = n;
    return v;
}

static int handler_calls = 0;
static void giving_up_handler()
{
    if (++handler_calls == 3)
        std::set_new_handler(nullptr);
}

static void throwing_handler()
{
    throw 42;
}

struct alignas(256) Wide {
    unsigned char bytes[300];
};

static void worker(int seed, std::atomic<long> *checksum)
{
    long sum = 0;
    for (int round = 0; round < 200; round++) {
        std::vector<std::string> words;
        std::map<int, std::vector<int>> table;
        for (int i = 0; i < 100; i++) {
            words.push_back(std::string(static_cast<size_t>((i * 7 + seed) % 90 + 1), 'a' + i % 26));
            table[i].assign(static_cast<size_t>(i % 17 + 1), i + seed);
        }
        for (int i = 0; i < 100; i++) {
            CHECK(words[i].size() == static_cast<size_t>((i * 7 + seed) % 90 + 1), "string lost");
            CHECK(table[i].size() == static_cast<size_t>(i % 17 + 1) && table[i][0] == i + seed,
                  "vector lost");
            sum += static_cast<long>(words[i].size()) + table[i][0];
        }
        Wide *w = new Wide[3];
        CHECK(reinterpret_cast<uintptr_t>(w) % 256 == 0, "new Wide[3] gave %p", (void *)w);
        delete[] w;
    }
    checksum->fetch_add(sum);
}

int main()
{
    static const char *const symbols[] = {
        "_Znwm", "_Znam", "_ZnwmSt11align_val_t", "_ZnwmRKSt9nothrow_t", "_ZdlPv", "_ZdaPv",
        "_ZdlPvm", "_ZdaPvm", "_ZdlPvSt11align_val_t", "_ZdlPvmSt11align_val_t",
    };
    for (const char *s : symbols)
        CHECK(in_oxmalloc(s), "%s does not resolve into liboxmalloc", s);
    auto owns = reinterpret_cast<int (*)(const void *)>(dlsym(RTLD_DEFAULT, "ox_owns"));
    CHECK(owns != nullptr, "ox_owns not found");

    int *one = new int(5);
    CHECK(owns(one), "new int is not an oxmalloc block");
    delete one;
    char *array = new char[opaque(1000)];
    CHECK(owns(array), "new char[1000] is not an oxmalloc block");
    delete[] array;
    Wide *wide = new Wide;
    CHECK(reinterpret_cast<uintptr_t>(wide) % 256 == 0 && owns(wide), "new Wide gave %p",
          (void *)wide);
    delete wide;

    const size_t impossible = opaque(SIZE_MAX / 4);
    bool thrown = false;
    try {
        std::printf("unexpected %p\n", ::operator new(impossible));
    } catch (const std::bad_alloc &) {
        thrown = true;
    }
    CHECK(thrown, "operator new(SIZE_MAX / 4) did not throw bad_alloc");
    thrown = false;
    try {
        std::printf("unexpected %p\n", ::operator new[](impossible));
    } catch (const std::bad_alloc &) {
        thrown = true;
    }
    CHECK(thrown, "operator new[](SIZE_MAX / 4) did not throw bad_alloc");
    thrown = false;
    try {
        std::printf("unexpected %p\n", ::operator new(impossible, std::align_val_t(64)));
    } catch (const std::bad_alloc &) {
        thrown = true;
    }
    CHECK(thrown, "aligned operator new(SIZE_MAX / 4) did not throw bad_alloc");
    CHECK(::operator new(impossible, std::nothrow) == nullptr, "nothrow new did not fail");
    CHECK(::operator new[](impossible, std::nothrow) == nullptr, "nothrow new[] did not fail");

    std::set_new_handler(giving_up_handler);
    thrown = false;
    try {
        std::printf("unexpected %p\n", ::operator new(impossible));
    } catch (const std::bad_alloc &) {
        thrown = true;
    }
    CHECK(thrown && handler_calls == 3,
          "new with a handler: thrown %d after %d handler calls (want 1 after 3)", thrown,
          handler_calls);
    std::set_new_handler(throwing_handler);
    int caught = 0;
    try {
        std::printf("unexpected %p\n", ::operator new(impossible));
    } catch (int v) {
        caught = v;
    }
    CHECK(caught == 42, "the handler's own exception did not reach the program");
    std::set_new_handler(nullptr);

    std::atomic<long> checksum{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++)
        threads.emplace_back(worker, t, &checksum);
    for (auto &t : threads)
        t.join();
    CHECK(checksum.load() > 0, "no work done");
    std::printf("cxx_new: operator new/delete are oxmalloc's; bad_alloc, new_handler, "
                "alignment and threads ok\n");
    return 0;
}
