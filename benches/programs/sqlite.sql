-- SQLite workload for the allocator benchmarks: inserts, index builds, joins, sorts,
-- updates and deletes on an in-memory database, so the page cache, the parser and the
-- sorter all allocate through the C allocator under test. Deterministic (no random()):
-- the output is compared between allocators. The scale comes from the CLI:
--   sqlite3 :memory: -cmd ".parameter set @scale N" < sqlite.sql
PRAGMA cache_size = -200000;

CREATE TABLE customer(id INTEGER PRIMARY KEY, name TEXT, city TEXT, since INTEGER);
CREATE TABLE orders(id INTEGER PRIMARY KEY, cust INTEGER, amount INTEGER, day INTEGER,
                    note TEXT);

WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000 * @scale)
INSERT INTO customer
SELECT i,
       printf('cust-%06d-%s', i, substr('abcdefghijklmnopqrstuvwxyz', 1 + (i * 7) % 26, 1 + (i * 13) % 17)),
       printf('city%03d', (i * 2654435761) % 397),
       2000 + (i * 31) % 25
FROM c;

WITH RECURSIVE o(i, x) AS (
  SELECT 1, 12345
  UNION ALL
  SELECT i + 1, (x * 1103515245 + 12345) % 2147483648 FROM o WHERE i < 100000 * @scale)
INSERT INTO orders
SELECT i, 1 + x % (20000 * @scale), 1 + (x / 7) % 10000, (x / 3) % 3650,
       printf('order %d for %d: %s', i, x % 1000, substr(hex(x * x), 1, 1 + x % 24))
FROM o;

CREATE INDEX orders_cust ON orders(cust);
CREATE INDEX orders_day_amount ON orders(day, amount);
CREATE INDEX customer_city ON customer(city, since);

SELECT 'count', count(*), sum(amount), min(day), max(day) FROM orders;

SELECT 'top-cities', city, count(*), sum(o.amount)
FROM orders o JOIN customer c ON c.id = o.cust
GROUP BY city ORDER BY sum(o.amount) DESC, city LIMIT 5;

SELECT 'top-customers', c.name, t.n, t.total
FROM (SELECT cust, count(*) AS n, sum(amount) AS total FROM orders GROUP BY cust
      ORDER BY total DESC, cust LIMIT 5) t
JOIN customer c ON c.id = t.cust ORDER BY t.total DESC, c.id;

SELECT 'day-range', count(*), sum(amount) FROM orders WHERE day BETWEEN 100 AND 400 AND amount > 5000;

SELECT 'notes', count(DISTINCT note), max(length(note)), sum(length(note)) FROM orders;

SELECT 'running', day, total, running FROM (
  SELECT day, sum(amount) AS total,
         sum(sum(amount)) OVER (ORDER BY day ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS running
  FROM orders GROUP BY day)
WHERE day % 500 = 0 ORDER BY day;

UPDATE orders SET note = note || ' (reviewed ' || day || ')', amount = amount + 1 WHERE id % 3 = 0;
DELETE FROM orders WHERE amount < 1000;
CREATE TABLE summary AS
  SELECT cust, count(*) AS n, sum(amount) AS total, group_concat(id, ',') AS ids
  FROM orders GROUP BY cust;
CREATE INDEX summary_total ON summary(total);

SELECT 'after', count(*), sum(amount), sum(length(note)) FROM orders;
SELECT 'summary', count(*), sum(n), max(total), sum(length(ids)) FROM summary;
SELECT 'median-ish', total FROM summary ORDER BY total, cust LIMIT 1 OFFSET (SELECT count(*) / 2 FROM summary);
