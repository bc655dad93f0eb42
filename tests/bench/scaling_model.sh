#!/usr/bin/env bash
# scaling_model.sh — the per-step time of data-parallel nest at P ranks, modelled from figures
# measured at 1-4 ranks (docs/scaling.md). Prints a table; asserts nothing.
#
#   bash tests/bench/scaling_model.sh MODEL S_BYTES S_LAST_BYTES BUCKETS T_FWD T_BWD T_HIDE T_OPT \
#        [BANDWIDTH_GBs=12.5] [LATENCY_us=5] [INPUT_s=0] [CKPT_s=0 CKPT_EVERY_s=1800]
#
# S_BYTES       bytes summed per step (the whole gradient arena: 4 x parameters, dormant included)
# S_LAST_BYTES  bytes of the last bucket (the first layers' gradients: nothing left to hide it)
# BUCKETS       number of buckets per step (each pays the latency terms)
# T_FWD, T_BWD, T_OPT  measured per-rank seconds of forward, backward and optimizer at the
#               per-rank batch (weak scaling: the per-rank batch stays, so these stay)
# T_HIDE        seconds of backward that run after the first bucket is posted (what can hide
#               the sums of every bucket but the last)
# INPUT_s       exposed input wait per step; CKPT_s one checkpoint write, every CKPT_EVERY_s
#
# Cost of one by-construction sum of s bytes over P ranks (comm.h: all-to-all of the blocks to
# their owners, owner adds in rank order, allgather) — the bandwidth term of a ring allreduce,
# 2 (P-1)/P s / bandwidth, plus (P-1) latencies for each of the two phases:
#   T(s, P) = 2 (P-1)/P * s / bw + 2 (P-1) * alpha
# Exposed per step = T(S, P) - T_HIDE, but at least the last bucket's own T(S_last, P) (nothing
# is left to hide it) and at most T(S, P); the checkpoint column amortises CKPT_s over the
# steps of CKPT_EVERY_s.
set -euo pipefail
if [ $# -lt 8 ]; then
  sed -n '2,22p' "$0" >&2
  exit 2
fi
awk -v model="$1" -v S="$2" -v SL="$3" -v B="$4" -v tf="$5" -v tb="$6" -v th="$7" -v to="$8" \
    -v bw="${9:-12.5}" -v lat="${10:-5}" -v tin="${11:-0}" -v tck="${12:-0}" -v ckev="${13:-1800}" '
BEGIN {
  bw *= 1e9; alpha = lat * 1e-6
  comp = tf + tb + to
  printf "%s: %.1f MiB summed per step in %d buckets; compute %.3f s per step; " \
         "bandwidth %.1f GB/s, latency %.1f us\n", model, S / 1048576, B, comp, bw / 1e9, lat
  printf "%6s %10s %10s %10s %10s %10s %9s\n", "ranks", "sum s", "hidden s", "exposed s",
         "input s", "ckpt s", "exposed%"
  n = split("1 2 4 64 128 256 512 1024", Ps, " ")
  for (i = 1; i <= n; ++i) {
    P = Ps[i]
    if (P == 1) { total = 0; last = 0 }
    else {
      total = 2 * (P - 1) / P * S / bw + B * 2 * (P - 1) * alpha
      last = 2 * (P - 1) / P * SL / bw + 2 * (P - 1) * alpha
    }
    exposed = total - th
    if (exposed < last) exposed = last
    if (exposed > total) exposed = total
    ck = tck / ckev * (comp + exposed + tin)
    step = comp + exposed + tin + ck
    printf "%6d %10.4f %10.4f %10.4f %10.4f %10.4f %8.1f%%\n", P, total, total - exposed,
           exposed, tin, ck, 100 * exposed / step
  }
}'
