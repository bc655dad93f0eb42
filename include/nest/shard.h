/* shard.h — which samples each rank processes at each step.
 *
 * Per epoch, a permutation of the training items drawn from (seed, epoch) — identical on
 * every rank. Step s uses the global batch perm[s*B, min((s+1)*B, n)); that batch is split
 * over P ranks in contiguous slices, rank r taking floor(b/P) rows plus one if r < b % P
 * (b = rows in this batch). So every sample is used exactly once per epoch across ranks, the
 * global batch of a step does not depend on P, and B % P != 0 is fine (a rank may get 0). */
#ifndef NEST_SHARD_H
#define NEST_SHARD_H

#include <stdint.h>

/* Steps per epoch: ceil(n / batch). */
int64_t nest_shard_steps(int64_t n, int batch);
/* perm[i] = items[pi(i)] for the epoch's permutation pi (Fisher-Yates on a counter RNG keyed
 * by (seed, NEST_RNG_SHUFFLE, 0, epoch)). items may be NULL for 0..n-1. */
void nest_shard_permute(uint64_t seed, int64_t epoch, const int64_t *items, int64_t n,
                        int64_t *perm);
/* Rank `rank`'s slice of step `step`: positions [*begin, *begin + *count) of the epoch's perm. */
void nest_shard_slice(int64_t n, int batch, int64_t step, int rank, int nranks, int64_t *begin,
                      int *count);
/* Rows in the global batch of `step`. */
int nest_shard_batch_rows(int64_t n, int batch, int64_t step);

#endif
