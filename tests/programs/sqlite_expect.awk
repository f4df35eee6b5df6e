# Prints what sqlite_churn.sql must print, computed without sqlite.
# (mawk prints %d only up to 2^31-1, so large sums use %.0f.)
BEGIN {
    N = 100000
    letters = "abcdefghijklmnopqrstuvwxyz"
    sum_a = 0; sum_len = 0; range = 0; max_a = -1
    for (i = 1; i <= N; i++) {
        a[i] = (i * 7919) % 100003
        sum_a += a[i]
        l = 1 + i % 17
        if (l > 26 - i % 26) l = 26 - i % 26
        sum_len += 11 + l
        if (a[i] >= 1000 && a[i] <= 50999) range++
        if (a[i] > max_a) max_a = a[i]
    }
    print "wal"
    print "count|" N
    printf "sum_a|%.0f\n", sum_a
    printf "sum_len_b|%.0f\n", sum_len
    printf "total_c|%.1f\n", N * (N + 1) / 4
    print "range_a|" range
    print "max_a|" max_a
    printf "groups|97|%.0f\n", sum_a
    print "sorted_b|" N
    count2 = 0; sum2 = 0; like = 0
    for (i = 1; i <= N; i++) {
        if (i % 10 == 0) { delete a[i]; continue }
        if (i % 3 == 0) { a[i]++; like++ }
        count2++; sum2 += a[i]
    }
    print "count2|" count2
    printf "sum_a2|%.0f\n", sum2
    print "like|" like
    print "ok"
    join = 0
    for (i in a) if (a[i] in a) join++
    print "join|" join
    i = 77777
    printf "row|%d|row-%06d-%s%s\n", a[i], i, substr(letters, 1 + i % 26, 1 + i % 17), (i % 3 == 0 ? "-updated" : "")
}
