// Allocator churn for C++: 8 std::threads build and drop std::vector, std::string,
// std::map and std::unordered_map; batches travel between threads as
// std::shared_ptr (some shared by two consumers, so the last owner, on either
// thread, frees them). Every batch is verified by its consumer; the final
// checksum is recomputed single-threaded and compared. The main thread also forks
// children that allocate while the workers run, and starts short-lived threads whose
// allocations it frees after they exited. Prints "cpp ok <hex>".
// With the argument --probe it exits at once (used to inspect symbol bindings).
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

constexpr int kThreads = 8;
constexpr int kBatches = 400;  // per producer

struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ULL + 1) {}
    uint64_t next() {  // splitmix64
        uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    uint64_t below(uint64_t n) { return next() % n; }
};

uint64_t fnv(uint64_t h, const void* p, size_t n) {
    const unsigned char* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001B3ULL; }
    return h;
}

struct Batch {
    uint64_t seed;
    std::vector<std::string> items;
};

std::shared_ptr<Batch> make_batch(uint64_t seed) {
    auto b = std::make_shared<Batch>();
    b->seed = seed;
    Rng r(seed);
    size_t n = r.below(64) + 1;
    for (size_t i = 0; i < n; i++) {
        size_t len = r.below(8) == 0 ? r.below(20000) : r.below(100);
        std::string s(len, static_cast<char>('a' + r.below(26)));
        if (len > 0) s[len / 2] = static_cast<char>('A' + i % 26);
        b->items.push_back(std::move(s));
    }
    return b;
}

// Value of a batch; recomputing from the seed checks the content that arrived.
uint64_t batch_value(const Batch& b) {
    uint64_t h = 0xCBF29CE484222325ULL;
    for (const auto& s : b.items) { h = fnv(h, s.data(), s.size()); h = fnv(h, "|", 1); }
    return h;
}

// Thread-local churn: containers built and dropped; deterministic in `seed`.
uint64_t local_churn(uint64_t seed) {
    Rng r(seed);
    uint64_t h = 0xCBF29CE484222325ULL;
    std::map<uint64_t, std::string> m;
    std::unordered_map<std::string, std::vector<int>> um;
    for (int round = 0; round < 60; round++) {
        for (int i = 0; i < 200; i++) {
            uint64_t k = r.below(5000);
            m[k] = std::string(r.below(300), static_cast<char>('0' + k % 10));
            std::string key = "u" + std::to_string(r.below(3000));
            um[key].push_back(static_cast<int>(k));
        }
        for (int i = 0; i < 100; i++) m.erase(r.below(5000));
        if (round % 10 == 9) {
            for (const auto& kv : m) { h = fnv(h, &kv.first, sizeof kv.first); h = fnv(h, kv.second.data(), kv.second.size()); }
            std::map<std::string, size_t> sorted;
            for (const auto& kv : um) sorted[kv.first] = kv.second.size();
            for (const auto& kv : sorted) { h = fnv(h, kv.first.data(), kv.first.size()); h = fnv(h, &kv.second, sizeof kv.second); }
            um.clear();
        }
        std::vector<std::vector<uint32_t>> vv(r.below(50) + 1);
        for (auto& v : vv) { v.resize(r.below(2000)); for (size_t j = 0; j < v.size(); j++) v[j] = static_cast<uint32_t>(j * round); }
        for (const auto& v : vv) { size_t n = v.size(); h = fnv(h, &n, sizeof n); }
    }
    return h;
}

struct Queue {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::shared_ptr<Batch>> q;
    int producers_done = 0;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && std::strcmp(argv[1], "--probe") == 0) return 0;

    Queue queues[kThreads];
    std::atomic<uint64_t> consumed_sum{0};
    std::atomic<uint64_t> consumed_count{0};
    std::atomic<int> bad{0};
    uint64_t local_results[kThreads] = {};

    auto worker = [&](int id) {
        local_results[id] = local_churn(1000 + id);
        Queue& next = queues[(id + 1) % kThreads];
        Queue& other = queues[(id + 3) % kThreads];
        Queue& mine = queues[id];
        for (int i = 0; i < kBatches; i++) {
            auto b = make_batch(static_cast<uint64_t>(id) * 100000 + i);
            {
                std::lock_guard<std::mutex> g(next.mu);
                next.q.push_back(b);
            }
            next.cv.notify_one();
            if (i % 4 == 0) {  // shared by two consumers
                std::lock_guard<std::mutex> g(other.mu);
                other.q.push_back(b);
                other.cv.notify_one();
            }
            b.reset();
            // drain what has arrived so far
            for (;;) {
                std::shared_ptr<Batch> got;
                {
                    std::lock_guard<std::mutex> g(mine.mu);
                    if (mine.q.empty()) break;
                    got = std::move(mine.q.front());
                    mine.q.pop_front();
                }
                uint64_t v = batch_value(*got);
                if (v != batch_value(*make_batch(got->seed))) bad++;
                consumed_sum += v;
                consumed_count++;
            }
        }
        // tell the two queues we feed that this producer is done
        for (Queue* q : {&next, &other}) {
            std::lock_guard<std::mutex> g(q->mu);
            q->producers_done++;
            q->cv.notify_all();
        }
        // finish consuming: each queue is fed by exactly two producers
        for (;;) {
            std::shared_ptr<Batch> got;
            {
                std::unique_lock<std::mutex> g(mine.mu);
                mine.cv.wait(g, [&] { return !mine.q.empty() || mine.producers_done == 2; });
                if (mine.q.empty()) break;
                got = std::move(mine.q.front());
                mine.q.pop_front();
            }
            uint64_t v = batch_value(*got);
            if (v != batch_value(*make_batch(got->seed))) bad++;
            consumed_sum += v;
            consumed_count++;
        }
    };

    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; i++) threads.emplace_back(worker, i);

    // fork while the workers allocate: the child must be able to allocate
    for (int f = 0; f < 3; f++) {
        pid_t pid = fork();
        if (pid < 0) { std::perror("fork"); return 1; }
        if (pid == 0) {
            bool ok = local_churn(42) == local_churn(42);
            std::map<int, std::string> m;
            for (int i = 0; i < 20000; i++) m[i] = std::to_string(i);
            for (int i = 0; i < 20000; i++) ok = ok && m[i] == std::to_string(i);
            _exit(ok ? 0 : 2);
        }
        int status = 0;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            std::printf("cpp FAIL forked child %d: wait status %d\n", f, status);
            return 1;
        }
    }
    for (auto& t : threads) t.join();

    // short-lived threads whose allocations outlive them and are freed by main
    uint64_t short_sum = 0, short_want = 0;
    for (int round = 0; round < 5; round++) {
        std::vector<std::future<std::shared_ptr<Batch>>> futs;
        for (int i = 0; i < 40; i++)
            futs.push_back(std::async(std::launch::async, [round, i] { return make_batch(900000 + round * 100 + i); }));
        for (auto& fu : futs) short_sum += batch_value(*fu.get());
        for (int i = 0; i < 40; i++) short_want += batch_value(*make_batch(900000 + round * 100 + i));
    }
    if (short_sum != short_want) {
        std::printf("cpp FAIL short-lived threads: sum %016llx want %016llx\n", (unsigned long long)short_sum,
                    (unsigned long long)short_want);
        return 1;
    }

    // single-threaded recomputation of the expected results
    uint64_t want_sum = 0, want_count = 0;
    for (int id = 0; id < kThreads; id++) {
        for (int i = 0; i < kBatches; i++) {
            uint64_t v = batch_value(*make_batch(static_cast<uint64_t>(id) * 100000 + i));
            want_sum += v * (i % 4 == 0 ? 2 : 1);
            want_count += (i % 4 == 0 ? 2 : 1);
        }
    }
    uint64_t local_total = 0;
    for (int id = 0; id < kThreads; id++) {
        uint64_t again = local_churn(1000 + id);
        if (again != local_results[id]) {
            std::printf("cpp FAIL local churn of thread %d: %016llx, recomputed %016llx\n", id,
                        (unsigned long long)local_results[id], (unsigned long long)again);
            return 1;
        }
        local_total ^= again;
    }
    if (bad != 0 || consumed_count != want_count || consumed_sum != want_sum) {
        std::printf("cpp FAIL bad=%d consumed %llu of %llu, sum %016llx want %016llx\n", bad.load(),
                    (unsigned long long)consumed_count.load(), (unsigned long long)want_count,
                    (unsigned long long)consumed_sum.load(), (unsigned long long)want_sum);
        return 1;
    }
    std::printf("cpp ok %016llx\n", (unsigned long long)(want_sum ^ local_total));
    return 0;
}
