/* shard.c — which samples each rank processes at each step (see shard.h): a per-epoch
 * Fisher-Yates permutation from the counter RNG, cut into global batches of B rows, each
 * batch split over P ranks in contiguous slices. Pure functions of their arguments, so every
 * rank computes the same schedule without communicating. */
#include "nest/shard.h"

#include "nest/rng.h"
#include "nest/status.h"

int64_t nest_shard_steps(int64_t n, int batch) {
  NEST_ASSERT(batch > 0);
  return n <= 0 ? 0 : (n + batch - 1) / batch;
}

void nest_shard_permute(uint64_t seed, int64_t epoch, const int64_t *items, int64_t n,
                        int64_t *perm) {
  for (int64_t i = 0; i < n; ++i) perm[i] = items ? items[i] : i;
  /* Fisher-Yates from the top: position i swaps with a uniform j in [0, i]. */
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_SHUFFLE, 0, (uint64_t)epoch);
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = (int64_t)nest_rng_below(&r, (uint64_t)i + 1);
    int64_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}

int nest_shard_batch_rows(int64_t n, int batch, int64_t step) {
  NEST_ASSERT(batch > 0);
  if (step < 0 || step >= nest_shard_steps(n, batch)) return 0;
  int64_t left = n - step * batch;
  return left < batch ? (int)left : batch;
}

void nest_shard_slice(int64_t n, int batch, int64_t step, int rank, int nranks, int64_t *begin,
                      int *count) {
  NEST_ASSERT(nranks > 0 && rank >= 0 && rank < nranks);
  const int b = nest_shard_batch_rows(n, batch, step);
  const int q = b / nranks, extra = b % nranks;
  /* Ranks below `extra` take q + 1 rows; the slices tile [step*B, step*B + b) in rank order. */
  *count = q + (rank < extra);
  *begin = (b ? step * (int64_t)batch : 0) + (int64_t)rank * q + (rank < extra ? rank : extra);
}
