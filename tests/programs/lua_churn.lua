-- Allocator churn for Lua: big tables, strings, table.concat, sorting, and
-- forced garbage collection cycles. Checks itself; prints "lua ok <n>".
local N = 200000

local t = {}
for i = 1, N do t["k" .. i] = string.rep("v", i % 29) .. i end
local count = 0
for _ in pairs(t) do count = count + 1 end
assert(count == N, "table size " .. count)
for i = 1, N do
  assert(t["k" .. i] == string.rep("v", i % 29) .. i, "lookup k" .. i)
end
for i = 1, N, 2 do t["k" .. i] = nil end
collectgarbage("collect")
count = 0
for _ in pairs(t) do count = count + 1 end
assert(count == N // 2, "after delete " .. count)

-- arrays: fill, sort, verify
local a = {}
for i = 1, N do a[i] = (i * 7919) % 200003 end
table.sort(a)
for i = 2, N do assert(a[i - 1] <= a[i], "sort order") end

-- strings: concat of many pieces, gsub, rep
local parts = {}
local want = 0
for i = 1, 100000 do
  local p = string.rep(tostring(i % 10), i % 7 + 1)
  parts[#parts + 1] = p
  want = want + #p
end
local s = table.concat(parts)
assert(#s == want, "concat length")
local s2, n = s:gsub("5", "55")
local fives = 0
for i = 1, 100000 do if i % 10 == 5 then fives = fives + (i % 7 + 1) end end
assert(n == fives and #s2 == want + fives, "gsub")

-- nested tables built and dropped over several GC cycles
local total = 0
for round = 1, 20 do
  local nest = {}
  for i = 1, 5000 do
    local inner = {}
    for j = 1, i % 13 do inner[j] = { j, tostring(j) } end
    nest[i] = inner
  end
  for i = 1, 5000 do total = total + #nest[i] end
  nest = nil
  if round % 5 == 0 then collectgarbage("collect") end
end
local want_total = 0
for i = 1, 5000 do want_total = want_total + i % 13 end
assert(total == want_total * 20, "nested total")

print("lua ok " .. N)
