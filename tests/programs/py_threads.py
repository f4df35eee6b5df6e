"""Allocator churn for CPython run with PYTHONMALLOC=malloc.

Eight threads build and destroy dicts, lists, strings and bytes of varied sizes.
Each thread's work depends only on its own seed, so its checksum is deterministic;
after the threads finish, the same work is recomputed in the main thread (with a
different interleaving of allocations) and the checksums must agree. Large sort
and dict workloads check themselves, and the main thread forks children that
allocate while the workers run. Prints one line, "py_threads ok <digest>".
"""
import hashlib
import os
import random
import sys
import threading

THREADS = 8
ROUNDS = 12


def churn(seed):
    rng = random.Random(seed)
    h = hashlib.sha256()
    keep = []  # objects that survive across rounds, freed in random order
    for rnd in range(ROUNDS):
        # dict of mixed keys and values
        n = rng.randint(200, 3000)
        d = {}
        for i in range(n):
            k = "k%d-%d" % (seed, rng.randrange(1 << 30))
            d[k] = (i, "v" * rng.randint(0, 40), bytes([i & 0xFF]) * rng.randint(0, 64))
        for k in sorted(d):
            i, s, b = d[k]
            h.update(k.encode())
            h.update(i.to_bytes(4, "little"))
            h.update(s.encode())
            h.update(b)
        # lists of lists with varied lengths, including some large ones
        lst = [[rng.random() for _ in range(rng.randint(0, 50))] for _ in range(rng.randint(10, 300))]
        big = list(range(rng.randint(1000, 60000)))
        rng.shuffle(big)
        big.sort()
        if big != list(range(len(big))):
            raise AssertionError("sort mismatch in thread %d" % seed)
        h.update(repr(sum(len(x) for x in lst)).encode())
        # strings: join, split, replace, repeat, slice
        words = ["".join(chr(97 + rng.randrange(26)) for _ in range(rng.randint(1, 20))) for _ in range(200)]
        text = " ".join(words)
        text2 = text.replace("a", "AAAA").upper().lower()
        parts = text2.split(" ")
        if len(parts) != len(words):
            raise AssertionError("split mismatch in thread %d" % seed)
        h.update(text2.encode())
        # bytes / bytearray of sizes from tiny to a few MiB
        size = rng.choice([0, 1, 15, 16, 17, 255, 4096, 65536, 300000, 2 << 20])
        ba = bytearray(size)
        for j in range(0, size, 4093):
            ba[j] = (j * 31 + seed) & 0xFF
        ba += b"tail"
        h.update(hashlib.sha256(ba).digest())
        # keep some objects alive for a while, drop others in a random order
        keep.append(d)
        keep.append(bytes(ba[: rng.randint(0, len(ba))]))
        keep.append(text2)
        while len(keep) > 12:
            keep.pop(rng.randrange(len(keep)))
        del d, lst, big, words, text, parts, ba
    for obj in keep:
        h.update(repr(type(obj)).encode())
        h.update(repr(len(obj)).encode())
    return h.hexdigest()


def big_sort_check():
    rng = random.Random(12345)
    items = [(rng.randrange(1 << 40), "s%d" % i) for i in range(200000)]
    total = sum(x for x, _ in items)
    srt = sorted(items)
    for a, b in zip(srt, srt[1:]):
        if a > b:
            raise AssertionError("sorted output not ordered")
    if len(srt) != 200000 or sum(x for x, _ in srt) != total:
        raise AssertionError("sorted output is not a permutation")
    if sorted(s for _, s in srt) != sorted("s%d" % i for i in range(200000)):
        raise AssertionError("sorted output lost strings")


def big_dict_check():
    d = {}
    for i in range(500000):
        d["key-%d" % i] = i * 3
    for i in range(500000):
        if d["key-%d" % i] != i * 3:
            raise AssertionError("dict lookup failed for key-%d" % i)
    for i in range(0, 500000, 2):
        del d["key-%d" % i]
    if len(d) != 250000:
        raise AssertionError("dict size after deletion: %d" % len(d))
    for i in range(500000):
        v = d.get("key-%d" % i)
        if v != (None if i % 2 == 0 else i * 3):
            raise AssertionError("dict lookup after deletion failed for key-%d" % i)


def fork_child_check():
    """Fork while the worker threads allocate; the child must be able to allocate."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            d = {"c%d" % i: [i] * (i % 7) for i in range(50000)}
            if any(d["c%d" % i] != [i] * (i % 7) for i in range(50000)):
                code = 2
            if sorted(range(50000, 0, -1)) != list(range(1, 50001)):
                code = 3
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def main():
    results = [None] * THREADS
    errors = []

    def worker(idx):
        try:
            results[idx] = churn(idx)
        except BaseException as e:  # report, don't hide
            errors.append("thread %d: %r" % (idx, e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    fork_status = []
    for _ in range(3):
        fork_status.append(fork_child_check())
    big_sort_check()  # runs while the workers churn
    fork_status.append(fork_child_check())
    for t in threads:
        t.join()
    if any(st != 0 for st in fork_status):
        print("py_threads FAIL forked children's wait statuses %r" % fork_status)
        return 1
    if errors:
        print("py_threads FAIL " + "; ".join(errors))
        return 1
    for i in range(THREADS):
        again = churn(i)
        if again != results[i]:
            print("py_threads FAIL thread %d checksum %s, recomputed %s" % (i, results[i], again))
            return 1
    big_dict_check()
    digest = hashlib.sha256("".join(results).encode()).hexdigest()[:16]
    print("py_threads ok " + digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
