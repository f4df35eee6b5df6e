"""JSON round trips of a big structure, for CPython run with PYTHONMALLOC=malloc.
Checks itself; prints "json ok <length> <digest>".
"""
import hashlib, json, random
rng = random.Random(2024)
def leaf(i):
    k = i % 5
    if k == 0: return i * 7
    if k == 1: return "s%d-%s" % (i, "\u00e9\u4e2d" * (i % 9))
    if k == 2: return [i, i / 4, None, True, False]
    if k == 3: return {"n": i, "neg": -i, "f": i * 0.125, "e": ""}
    return "x" * (i % 300)
data = {
    "items": [{"id": i, "name": "item-%d" % i, "tags": ["t%d" % (i % 17)] * (i % 4),
               "value": leaf(i), "r": rng.randrange(1 << 40)} for i in range(40000)],
    "nested": None,
}
node = {"leaf": True}
for d in range(400):
    node = {"depth": d, "child": node, "pad": list(range(d % 10))}
data["nested"] = node
s = json.dumps(data, sort_keys=True)
back = json.loads(s)
assert back == data, "round trip changed the data"
s2 = json.dumps(back, sort_keys=True, indent=2, ensure_ascii=False)
assert json.loads(s2) == data, "indented round trip changed the data"
assert json.dumps(json.loads(s2), sort_keys=True) == s, "re-serialisation differs"
for _ in range(3):
    s = json.dumps(json.loads(s), sort_keys=True)
print("json ok", len(s), hashlib.sha256(s.encode()).hexdigest()[:16])
