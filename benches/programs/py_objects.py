"""Object-heavy Python workload for the allocator benchmarks.

Run with PYTHONMALLOC=malloc so that every object goes through the C allocator under
test instead of pymalloc's arenas. Builds and drops many small objects of mixed kinds:
class instances, dicts, lists, tuples, strings, a binary tree, and a string-keyed index,
with sorts and rebuilds. Deterministic: prints "OK <checksum>" that depends only on the
scale argument.

usage: python3 py_objects.py [scale]
"""
import random
import sys
import zlib


class Node:
    __slots__ = ("key", "left", "right", "payload")

    def __init__(self, key, payload):
        self.key = key
        self.left = None
        self.right = None
        self.payload = payload


class Record:
    def __init__(self, ident, name, tags, score):
        self.ident = ident
        self.name = name
        self.tags = tags
        self.score = score
        self.extra = {"len": len(name), "first": name[:3]}


def tree_insert(root, key, payload):
    if root is None:
        return Node(key, payload)
    node = root
    while True:
        if key < node.key:
            if node.left is None:
                node.left = Node(key, payload)
                return root
            node = node.left
        else:
            if node.right is None:
                node.right = Node(key, payload)
                return root
            node = node.right


def tree_sum(root):
    total, stack = 0, [root]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        total = (total * 31 + node.key + len(node.payload)) & 0xFFFFFFFF
        stack.append(node.left)
        stack.append(node.right)
    return total


def make_name(rng):
    return "".join(chr(97 + rng.randrange(26)) for _ in range(rng.randrange(3, 24)))


def round_(rng, n):
    crc = 0
    # records with nested containers, an index on a string key, a sort, and a churn pass
    records = [Record(i, make_name(rng), [rng.randrange(1000) for _ in range(rng.randrange(1, 8))],
                      rng.random()) for i in range(n)]
    index = {}
    for r in records:
        index.setdefault(r.name[:2], []).append(r)
    for key in sorted(index):
        group = index[key]
        group.sort(key=lambda r: (r.score, r.ident))
        crc = zlib.crc32(("%s:%d:%d" % (key, len(group), group[0].ident)).encode(), crc)
    for i in range(0, n, 3):
        records[i] = Record(i, records[i].name.upper(), tuple(records[i].tags), 1.0 - records[i].score)
    crc = zlib.crc32(str(sum(len(r.tags) for r in records)).encode(), crc)
    del index

    # a binary tree of payload tuples, then dropped
    root = None
    for i in range(n // 2):
        root = tree_insert(root, rng.randrange(1 << 30), (i, str(i), [i] * (i % 5)))
    crc = zlib.crc32(str(tree_sum(root)).encode(), crc)
    del root

    # string building and splitting, dicts of tuples
    text = " ".join(r.name for r in records)
    words = text.split()
    counts = {}
    for w in words:
        k = (w[0], len(w))
        counts[k] = counts.get(k, 0) + 1
    crc = zlib.crc32(repr(sorted(counts.items())).encode(), crc)
    pairs = [(w, w[::-1]) for w in words[: n // 2]]
    crc = zlib.crc32(str(len({a + b for a, b in pairs})).encode(), crc)
    return crc


def main():
    scale = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    rng = random.Random(20240611)
    crc = 0
    for _ in range(2 * scale):
        crc = zlib.crc32(str(round_(rng, 30000)).encode(), crc)
    print("OK %08x" % crc)


if __name__ == "__main__":
    main()
