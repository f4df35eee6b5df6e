-- sqlite3 workload for the allocator tests: 100k generated rows in one
-- transaction, two indexes, aggregates with known results, a big sort, an
-- update and a delete, VACUUM, and integrity checks. run.sh compares the output
-- with values computed independently (awk).
PRAGMA cache_size = -32000;
PRAGMA journal_mode = WAL;
CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER NOT NULL, b TEXT NOT NULL, c REAL NOT NULL);
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
INSERT INTO t(id, a, b, c)
  SELECT i, (i * 7919) % 100003, printf('row-%06d-', i) || substr('abcdefghijklmnopqrstuvwxyz', 1 + i % 26, 1 + i % 17), i * 0.5
  FROM n;
COMMIT;
CREATE INDEX t_a ON t(a);
CREATE INDEX t_b ON t(b);
SELECT 'count', count(*) FROM t;
SELECT 'sum_a', sum(a) FROM t;
SELECT 'sum_len_b', sum(length(b)) FROM t;
SELECT 'total_c', total(c) FROM t;
SELECT 'range_a', count(*) FROM t WHERE a BETWEEN 1000 AND 50999;
SELECT 'max_a', max(a) FROM t;
SELECT 'groups', count(*), sum(s) FROM (SELECT id % 97 AS g, sum(a) AS s FROM t GROUP BY g);
SELECT 'sorted_b', count(*) FROM (SELECT b FROM t ORDER BY b DESC, id);
BEGIN;
UPDATE t SET b = b || '-updated', a = a + 1 WHERE id % 3 = 0;
DELETE FROM t WHERE id % 10 = 0;
COMMIT;
SELECT 'count2', count(*) FROM t;
SELECT 'sum_a2', sum(a) FROM t;
SELECT 'like', count(*) FROM t WHERE b LIKE '%-updated';
VACUUM;
PRAGMA integrity_check;
PRAGMA foreign_key_check;
SELECT 'join', count(*) FROM t AS x JOIN t AS y ON x.a = y.id;
SELECT 'row', a, b FROM t WHERE id = 77777;
