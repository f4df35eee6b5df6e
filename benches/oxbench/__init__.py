"""oxbench: the whole-program benchmark harness behind scripts/bench (standard library only).

Modules, in the order a run uses them; each can be read on its own:

    workloads   the workload table: names, command lines, how a run's result is checked
    allocators  the allocators under test: libraries, Debian packages, oxmalloc's build,
                the probe that malloc really comes from the preloaded library
    build       compiling the C workloads and the two helpers (launch.c, probe.c)
    spawn       starting one measured process through the launcher (wait4 rusage)
    runner      one run of one workload under one allocator, checked; the fixed-cost runs
    redis       the redis workload (built once from Debian's source, client and server)
    syscalls    the un-timed pass that counts madvise and munmap calls (perf or strace)
    stats       cells of runs: medians, spreads, ratios to glibc, geometric means
    report      summary.md's tables (also printed), results.csv, the report's header
    chart       chart.svg
    machine     the commit, machine, load and tool versions a report names
    cli         the command line and the order of a run (main)

Dependencies point one way: cli -> report, chart -> stats; cli -> syscalls -> runner ->
redis, spawn -> workloads, common. common holds the paths and small helpers.
"""
