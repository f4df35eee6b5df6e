#!/usr/bin/perl
# Allocator churn for perl: a hash of 200k keys, string concatenation, sorts,
# deletions and re-insertions. Checks itself; prints "perl ok <n>" on success.
use strict;
use warnings;

my $N = 200_000;
my %h;
for my $i (0 .. $N - 1) {
    $h{"key$i"} = "value-" . ($i * 7) . ("x" x ($i % 37));
}
die "hash size " . scalar(keys %h) . "\n" unless keys %h == $N;
for my $i (0 .. $N - 1) {
    my $want = "value-" . ($i * 7) . ("x" x ($i % 37));
    die "lookup key$i\n" unless defined $h{"key$i"} && $h{"key$i"} eq $want;
}

# delete every third key, then re-insert them with longer values
for (my $i = 0; $i < $N; $i += 3) { delete $h{"key$i"}; }
my $left = $N - int(($N + 2) / 3);
die "after delete " . scalar(keys %h) . " want $left\n" unless keys %h == $left;
for (my $i = 0; $i < $N; $i += 3) { $h{"key$i"} = "again" x ($i % 11 + 1); }
die "after reinsert\n" unless keys %h == $N;

# string concatenation: grow a big string, and many small ones
my $s = "";
my $sum = 0;
for my $i (1 .. 300_000) {
    my $piece = ($i % 10) x ($i % 7 + 1);
    $s .= $piece;
    $sum += length $piece;
}
die "concat length " . length($s) . " want $sum\n" unless length($s) == $sum;
my $chk = unpack("%32C*", $s);
my $want_chk = 0;
for my $i (1 .. 300_000) { $want_chk += (48 + $i % 10) * ($i % 7 + 1); }
$want_chk %= 2**32;
die "concat checksum $chk want $want_chk\n" unless $chk == $want_chk;
my @split = split /0+/, $s;
die "split\n" unless @split > 1000;
undef $s;

# sorts: numeric and string, on shuffled data
my @nums = map { ($_ * 7919) % 200_003 } 0 .. $N - 1;
my @sorted = sort { $a <=> $b } @nums;
for my $i (1 .. $#sorted) { die "numeric sort\n" if $sorted[$i - 1] > $sorted[$i]; }
my @keys = sort keys %h;
for my $i (1 .. $#keys) { die "string sort\n" if $keys[$i - 1] ge $keys[$i]; }
die "keys after sort\n" unless @keys == $N;

# arrays of arrays, built and dropped repeatedly
my $total = 0;
for my $round (1 .. 20) {
    my @aoa = map { [ ($_) x ($_ % 13) ] } 1 .. 5000;
    $total += scalar(@{ $aoa[$_] }) for 0 .. $#aoa;
}
my $want_total = 0;
$want_total += $_ % 13 for 1 .. 5000;
$want_total *= 20;
die "aoa total $total want $want_total\n" unless $total == $want_total;

print "perl ok ", scalar(keys %h), "\n";
