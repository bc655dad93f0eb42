/* rng.h — counter-based random numbers (Philox4x32-10).
 *
 * A stream is keyed by (seed, purpose, index, step): the same key gives the same numbers on
 * every rank and every run, whatever happened before — no hidden global state, no rand().
 * `purpose` separates uses (init vs. mask vs. shuffle ...) so they never share numbers;
 * `index` is typically a layer or sample index, `step` an epoch or optimizer step. */
#ifndef NEST_RNG_H
#define NEST_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  NEST_RNG_INIT = 1,      /* weight initialisation: index = layer, step = param slot */
  NEST_RNG_MASK = 2,      /* seed connectivity masks: index = layer, step = param slot */
  NEST_RNG_SHUFFLE = 3,   /* per-epoch sample permutation: step = epoch */
  NEST_RNG_SPLIT = 4,     /* splits: index 0 train/validation, index 1 data.test_split */
  NEST_RNG_DROPOUT = 5,   /* dropout: index = global sample id, step = optimizer step */
  NEST_RNG_SYNTH = 6,     /* synthetic data for tests and benchmarks */
  NEST_RNG_GROW = 7,      /* growth policies */
  NEST_RNG_PRUNE = 8,     /* pruning policies */
  NEST_RNG_AUGMENT = 9,   /* affine distortion: index = global sample id, step = data key */
  NEST_RNG_TEST = 99      /* tests */
} nest_rng_purpose;

typedef struct {
  uint32_t key[2];   /* from (seed, purpose) */
  uint32_t ctr[4];   /* ctr[0..1] = block counter, ctr[2] = index lo, ctr[3] = index hi ^ step */
  uint32_t buf[4];   /* current output block */
  int avail;         /* unused words left in buf */
  int has_spare;     /* Box-Muller keeps its second normal */
  float spare;
} nest_rng;

/* Start a stream. index and step are mixed into the counter, seed and purpose into the key. */
void nest_rng_init(nest_rng *r, uint64_t seed, uint32_t purpose, uint64_t index, uint64_t step);
uint32_t nest_rng_u32(nest_rng *r);
uint64_t nest_rng_u64(nest_rng *r);
/* Uniform in [0, 1) with 24 random bits (exactly representable floats). */
float nest_rng_uniform(nest_rng *r);
/* Uniform integer in [0, n), unbiased (rejection). n > 0. */
uint64_t nest_rng_below(nest_rng *r, uint64_t n);
/* Standard normal N(0,1) (Box-Muller, float). */
float nest_rng_normal(nest_rng *r);
/* Standard normal N(0,1) in double from two 24-bit uniforms, cosine branch only (no spare
 * kept: each call consumes exactly two draws, so a stream's position is the call count). */
double nest_rng_normal_f64(nest_rng *r);
/* Stateless: one 32-bit draw for element `i` of stream (seed, purpose, index, step).
 * Lets OpenMP loops draw per-element numbers in any order with identical results. */
uint32_t nest_rng_at(uint64_t seed, uint32_t purpose, uint64_t index, uint64_t step, uint64_t i);

/* FNV-1a over n bytes, continuing from h (start with NEST_FNV1A_INIT): fingerprints of files
 * and data (not random numbers; it lives here with the other hashing). */
#define NEST_FNV1A_INIT 1469598103934665603ull
uint64_t nest_hash_fnv1a(const void *p, size_t n, uint64_t h);

/* The raw Philox4x32-10 bijection (exposed for tests against known-answer vectors). */
void nest_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

#endif
