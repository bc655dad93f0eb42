/* rng.c — Philox4x32-10 (Salmon et al., SC'11), the counter-based generator behind every
 * random choice in nest. Output is a pure function of (key, counter): no global state. */
#include "nest/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void nest_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
    uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/* SplitMix64 finaliser: spreads (seed, purpose) and (index, step) over all bits. */
static uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static void make_key_ctr(uint64_t seed, uint32_t purpose, uint64_t index, uint64_t step,
                         uint32_t key[2], uint32_t ctr[4]) {
  uint64_t k = mix64(seed ^ mix64((uint64_t)purpose));
  uint64_t s = mix64(index ^ mix64(step + 0x632BE59BD9B4E019ull));
  key[0] = (uint32_t)k;
  key[1] = (uint32_t)(k >> 32);
  ctr[0] = 0;
  ctr[1] = 0;
  ctr[2] = (uint32_t)s;
  ctr[3] = (uint32_t)(s >> 32);
}

void nest_rng_init(nest_rng *r, uint64_t seed, uint32_t purpose, uint64_t index, uint64_t step) {
  make_key_ctr(seed, purpose, index, step, r->key, r->ctr);
  r->avail = 0;
  r->has_spare = 0;
  r->spare = 0.0f;
}

uint32_t nest_rng_u32(nest_rng *r) {
  if (r->avail == 0) {
    nest_philox4x32_10(r->ctr, r->key, r->buf);
    if (++r->ctr[0] == 0) ++r->ctr[1];
    r->avail = 4;
  }
  return r->buf[4 - r->avail--];
}

uint64_t nest_rng_u64(nest_rng *r) {
  uint64_t hi = nest_rng_u32(r);
  return (hi << 32) | nest_rng_u32(r);
}

float nest_rng_uniform(nest_rng *r) { return (float)(nest_rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

uint64_t nest_rng_below(nest_rng *r, uint64_t n) {
  /* Rejection sampling on 64 bits: the accepted range is a multiple of n. */
  uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t v;
  do v = nest_rng_u64(r);
  while (v >= limit);
  return v % n;
}

float nest_rng_normal(nest_rng *r) {
  if (r->has_spare) {
    r->has_spare = 0;
    return r->spare;
  }
  /* u1 in (0, 1] so log() is finite. */
  float u1 = ((float)(nest_rng_u32(r) >> 8) + 1.0f) * (1.0f / 16777216.0f);
  float u2 = nest_rng_uniform(r);
  float rad = sqrtf(-2.0f * logf(u1));
  float th = 6.28318530717958647692f * u2;
  r->spare = rad * sinf(th);
  r->has_spare = 1;
  return rad * cosf(th);
}

uint32_t nest_rng_at(uint64_t seed, uint32_t purpose, uint64_t index, uint64_t step, uint64_t i) {
  uint32_t key[2], ctr[4], out[4];
  make_key_ctr(seed, purpose, index, step, key, ctr);
  uint64_t block = i >> 2;
  ctr[0] = (uint32_t)block;
  ctr[1] = (uint32_t)(block >> 32);
  nest_philox4x32_10(ctr, key, out);
  return out[i & 3];
}

double nest_rng_normal_f64(nest_rng *r) {
  const double u1 = ((double)(nest_rng_u32(r) >> 8) + 1.0) / 16777216.0; /* (0, 1]: finite log */
  const double u2 = (double)(nest_rng_u32(r) >> 8) / 16777216.0;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t nest_hash_fnv1a(const void *p, size_t n, uint64_t h) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}
