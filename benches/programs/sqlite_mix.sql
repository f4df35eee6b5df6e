-- SQLite insert / index / update / delete / query mix for the allocator benchmarks:
-- 300k rows per scale unit in an in-memory database, strings of many lengths that grow
-- on update, indexes built and maintained, rows deleted and inserted again, and queries
-- that sort, group and join. Deterministic (no random()): the output is compared between
-- allocators, and the checks below print a line starting with FAIL when a count is not
-- what the statements must give, or when the database is damaged. The scale comes from
-- the CLI:
--   sqlite3 :memory: -cmd ".parameter set @scale N" < sqlite_mix.sql
PRAGMA cache_size = -300000;

CREATE TABLE item(id INTEGER PRIMARY KEY, k INTEGER, grp INTEGER, qty INTEGER,
                  name TEXT, body TEXT);

BEGIN;
WITH RECURSIVE s(i, x) AS (
  SELECT 1, 987654321
  UNION ALL
  SELECT i + 1, (x * 1103515245 + 12345) % 2147483648 FROM s WHERE i < 300000 * @scale)
INSERT INTO item
SELECT i, x % 1000003, x % 997, (x / 997) % 1000,
       printf('item-%07d-%x', i, x % 65536),
       printf('%s:%.*c', hex(x), x % 150, 'a')
FROM s;
COMMIT;

SELECT CASE WHEN count(*) = 300000 * @scale THEN 'rows-inserted ok'
            ELSE 'FAIL rows-inserted ' || count(*) END FROM item;

CREATE INDEX item_k ON item(k);
CREATE INDEX item_grp_qty ON item(grp, qty);
CREATE INDEX item_name ON item(name);

SELECT 'totals', count(*), sum(qty), sum(length(body)), min(k), max(k) FROM item;
SELECT 'k-range', count(*), sum(qty) FROM item WHERE k BETWEEN 250000 AND 260000;
SELECT 'groups', grp, count(*), sum(qty) FROM item GROUP BY grp
ORDER BY sum(qty) DESC, grp LIMIT 5;
SELECT 'names', name FROM item WHERE name LIKE 'item-012345%' ORDER BY name;

-- updates: a quarter of the rows, strings grow; then deletes
BEGIN;
UPDATE item SET body = body || printf('|u%d|%s', qty, name), qty = (qty * 7 + 3) % 1000
WHERE id % 4 = 1;
UPDATE item SET k = (k * 31 + 17) % 1000003 WHERE grp < 100;
DELETE FROM item WHERE grp % 5 = 0;
DELETE FROM item WHERE qty BETWEEN 100 AND 150;
COMMIT;

SELECT CASE WHEN count(*) = (SELECT count(*) FROM item INDEXED BY item_grp_qty WHERE grp >= 0)
            THEN 'index-consistent ok' ELSE 'FAIL index-consistent' END FROM item;
SELECT 'after-update', count(*), sum(qty), sum(length(body)), sum(k % 1000) FROM item;

-- insert again, then a second table for joins
BEGIN;
WITH RECURSIVE s(i, x) AS (
  SELECT 1, 13579
  UNION ALL
  SELECT i + 1, (x * 1103515245 + 12345) % 2147483648 FROM s WHERE i < 100000 * @scale)
INSERT INTO item
SELECT 300000 * @scale + i, x % 1000003, x % 997, (x / 997) % 1000,
       printf('new-%07d', i), printf('%.*c', 10 + x % 300, 'b')
FROM s;
CREATE TABLE tag(item INTEGER, t INTEGER, label TEXT);
INSERT INTO tag SELECT id, grp % 37, printf('t%d-%d', grp % 37, qty % 10) FROM item WHERE id % 2 = 0;
CREATE INDEX tag_t ON tag(t, item);
COMMIT;

SELECT 'tags', t, count(*), sum(i.qty), max(length(i.body))
FROM tag JOIN item i ON i.id = tag.item
GROUP BY t ORDER BY count(*) DESC, t LIMIT 5;
SELECT 'distinct', count(DISTINCT label), count(DISTINCT k % 5000) FROM tag JOIN item ON item.id = tag.item;
SELECT 'window', grp, total, running FROM (
  SELECT grp, sum(qty) AS total,
         sum(sum(qty)) OVER (ORDER BY grp ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS running
  FROM item GROUP BY grp)
WHERE grp % 100 = 0 ORDER BY grp;
SELECT 'median-k', k FROM item ORDER BY k, id LIMIT 1 OFFSET (SELECT count(*) / 2 FROM item);
SELECT 'concat', length(group_concat(name, ',')) FROM (SELECT name FROM item WHERE grp = 7 ORDER BY name);

DELETE FROM tag WHERE t % 3 = 0;
DELETE FROM item WHERE id IN (SELECT item FROM tag WHERE t = 1);
SELECT 'final', (SELECT count(*) FROM item), (SELECT count(*) FROM tag), (SELECT sum(qty) FROM item);
PRAGMA quick_check;
