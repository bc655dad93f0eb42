/* test_rng.c — Philox known answers, stream/stateless agreement, distributions, key separation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "nest/rng.h"

/* Known-answer vectors of Philox4x32-10 from Random123 (kat_vectors). */
static void test_philox_kat(void **state) {
  uint32_t out[4];
  const uint32_t c0[4] = {0, 0, 0, 0}, k0[2] = {0, 0};
  nest_philox4x32_10(c0, k0, out);
  assert_int_equal(out[0], 0x6627e8d5u);
  assert_int_equal(out[1], 0xe169c58du);
  assert_int_equal(out[2], 0xbc57ac4cu);
  assert_int_equal(out[3], 0x9b00dbd8u);
  const uint32_t c1[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
  const uint32_t k1[2] = {0xffffffffu, 0xffffffffu};
  nest_philox4x32_10(c1, k1, out);
  assert_int_equal(out[0], 0x408f276du);
  assert_int_equal(out[1], 0x41c83b0eu);
  assert_int_equal(out[2], 0xa20bc7c6u);
  assert_int_equal(out[3], 0x6d5451fdu);
  const uint32_t c2[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u};
  const uint32_t k2[2] = {0xa4093822u, 0x299f31d0u};
  nest_philox4x32_10(c2, k2, out);
  assert_int_equal(out[0], 0xd16cfe09u);
  assert_int_equal(out[1], 0x94fdcceb);
  assert_int_equal(out[2], 0x5001e420u);
  assert_int_equal(out[3], 0x24126ea1u);
}

static void test_stream_matches_stateless(void **state) {
  nest_rng r;
  nest_rng_init(&r, 42, NEST_RNG_MASK, 3, 7);
  for (uint64_t i = 0; i < 37; ++i) assert_int_equal(nest_rng_u32(&r), nest_rng_at(42, NEST_RNG_MASK, 3, 7, i));
}

static void test_keys_separate(void **state) {
  /* Changing any key component changes the stream. */
  uint32_t base = nest_rng_at(1, 1, 1, 1, 0);
  assert_int_not_equal(base, nest_rng_at(2, 1, 1, 1, 0));
  assert_int_not_equal(base, nest_rng_at(1, 2, 1, 1, 0));
  assert_int_not_equal(base, nest_rng_at(1, 1, 2, 1, 0));
  assert_int_not_equal(base, nest_rng_at(1, 1, 1, 2, 0));
  /* (index, step) must not commute: (1,2) differs from (2,1). */
  assert_int_not_equal(nest_rng_at(1, 1, 1, 2, 0), nest_rng_at(1, 1, 2, 1, 0));
}

static void test_distributions(void **state) {
  nest_rng r;
  nest_rng_init(&r, 7, NEST_RNG_TEST, 0, 0);
  const int n = 200000;
  double s = 0, s2 = 0, us = 0;
  int hist[10] = {0};
  for (int i = 0; i < n; ++i) {
    float u = nest_rng_uniform(&r);
    assert_true(u >= 0.0f && u < 1.0f);
    us += u;
    uint64_t b = nest_rng_below(&r, 10);
    assert_true(b < 10);
    hist[b]++;
    double z = nest_rng_normal(&r);
    s += z;
    s2 += z * z;
  }
  assert_true(fabs(us / n - 0.5) < 0.005);
  assert_true(fabs(s / n) < 0.01);
  assert_true(fabs(s2 / n - 1.0) < 0.02);
  double chi = 0;
  for (int k = 0; k < 10; ++k) chi += pow(hist[k] - n / 10.0, 2) / (n / 10.0);
  assert_true(chi < 30.0); /* 9 dof: p < 0.001 threshold is 27.9 */
}

static void test_reproducible(void **state) {
  nest_rng a, b;
  nest_rng_init(&a, 5, NEST_RNG_SHUFFLE, 0, 3);
  nest_rng_init(&b, 5, NEST_RNG_SHUFFLE, 0, 3);
  for (int i = 0; i < 100; ++i) assert_true(nest_rng_normal(&a) == nest_rng_normal(&b));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_philox_kat),
      cmocka_unit_test(test_stream_matches_stateless),
      cmocka_unit_test(test_keys_separate),
      cmocka_unit_test(test_distributions),
      cmocka_unit_test(test_reproducible),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
