/* test_comm.c — collectives, error agreement and cross-rank identity checks.
 * Run under mpiexec -n 1/2/4. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nest/comm.h"

static nest_comm *comm;
static int R, P;

static void test_sums(void **state) {
  float f[5];
  double d[5];
  int64_t i64[5];
  for (int i = 0; i < 5; ++i) f[i] = (float)(R + i), d[i] = R + 0.5 * i, i64[i] = R * 10 + i;
  assert_int_equal(nest_comm_allreduce_f32(comm, f, 5), NEST_OK);
  assert_int_equal(nest_comm_allreduce_f64(comm, d, 5), NEST_OK);
  assert_int_equal(nest_comm_allreduce_i64(comm, i64, 5), NEST_OK);
  for (int i = 0; i < 5; ++i) {
    assert_true(f[i] == (float)(P * i + P * (P - 1) / 2));
    assert_true(d[i] == 0.5 * i * P + P * (P - 1) / 2.0);
    assert_true(i64[i] == (int64_t)(10 * P * (P - 1) / 2 + P * i));
  }
  int64_t mx[1] = {R}, mn[1] = {R};
  assert_int_equal(nest_comm_allreduce_max_i64(comm, mx, 1), NEST_OK);
  assert_int_equal(nest_comm_allreduce_min_i64(comm, mn, 1), NEST_OK);
  assert_true(mx[0] == P - 1 && mn[0] == 0);
}

/* The by-construction sums: every rank holds the same bits (checked by hashing the bytes
 * across ranks), and the value is the sum (integers, so exact). Sizes cover the tiny
 * allgather path, reduce-scatter with and without a tail. */
static void test_sum_same(void **state) {
  const size_t sizes[] = {1, 3, 64, 1000, 4099};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; ++k) {
    const size_t n = sizes[k];
    double *d = malloc(n * sizeof *d);
    float *f = malloc(n * sizeof *f);
    for (size_t i = 0; i < n; ++i) {
      /* values whose float sum depends on the order: 1e8 + small numbers */
      d[i] = (R == 0 ? 1e16 : 1.0) + 0.1 * (double)(i % 7) + R;
      f[i] = (R == 0 ? 1e8f : 1.0f) + 0.1f * (float)(i % 7) + (float)R;
    }
    assert_int_equal(nest_comm_sum_same_f64(comm, d, n), NEST_OK);
    assert_int_equal(nest_comm_sum_same_f32(comm, f, n), NEST_OK);
    uint64_t h = 1469598103934665603ull;
    const unsigned char *b = (const unsigned char *)d;
    for (size_t i = 0; i < n * sizeof *d; ++i) h = (h ^ b[i]) * 1099511628211ull;
    b = (const unsigned char *)f;
    for (size_t i = 0; i < n * sizeof *f; ++i) h = (h ^ b[i]) * 1099511628211ull;
    assert_int_equal(nest_comm_check_same(comm, h, "sum_same bits"), NEST_OK);
    for (size_t i = 0; i < n; ++i) {
      double want = 1e16 + (P - 1) + P * 0.1 * (double)(i % 7) + P * (P - 1) / 2.0;
      assert_true(fabs(d[i] - want) <= 1e-15 * want * P);
      double wantf = 1e8 + (P - 1) + P * 0.1 * (double)(i % 7) + P * (P - 1) / 2.0;
      assert_true(fabs(f[i] - wantf) <= 16.0 * P); /* float spacing at 1e8 is 8 */
    }
    free(d);
    free(f);
  }
}

static void test_bcast_allgather(void **state) {
  char buf[16] = {0};
  if (R == P - 1) strcpy(buf, "from-last");
  assert_int_equal(nest_comm_bcast(comm, buf, sizeof buf, P - 1), NEST_OK);
  assert_string_equal(buf, "from-last");
  int mine = R * R, all[64];
  assert_int_equal(nest_comm_allgather(comm, &mine, all, sizeof(int)), NEST_OK);
  for (int r = 0; r < P; ++r) assert_int_equal(all[r], r * r);
}

static void test_agree(void **state) {
  assert_int_equal(nest_comm_agree(comm, NEST_OK), NEST_OK);
  /* Only the last rank fails; every rank must come back with its code and message. */
  nest_status local = NEST_OK;
  if (R == P - 1) local = NEST_ERR(NEST_ERR_IO, "data.h5: disk full");
  nest_status st = nest_comm_agree(comm, local);
  assert_int_equal(st, NEST_ERR_IO);
  assert_non_null(strstr(nest_error_message(), "data.h5: disk full"));
  if (P > 1) assert_non_null(strstr(nest_error_message(), "rank"));
  /* Two ranks fail differently: the lowest rank's error wins everywhere. */
  local = R == 0 ? NEST_ERR(NEST_ERR_CONFIG, "zero failed") : NEST_ERR(NEST_ERR_NUMERIC, "other");
  st = nest_comm_agree(comm, local);
  assert_int_equal(st, NEST_ERR_CONFIG);
  assert_non_null(strstr(nest_error_message(), "zero failed"));
}

static void test_check_same(void **state) {
  assert_int_equal(nest_comm_check_same(comm, 0x1234, "hash"), NEST_OK);
  nest_status st = nest_comm_check_same(comm, R == P - 1 ? 99 : 1, "weights");
  if (P == 1) {
    assert_int_equal(st, NEST_OK);
  } else {
    assert_int_equal(st, NEST_ERR_MISMATCH);
    assert_non_null(strstr(nest_error_message(), "weights"));
  }
}

static void test_self(void **state) {
  nest_comm *self;
  assert_int_equal(nest_comm_create_self(&self), NEST_OK);
  assert_int_equal(nest_comm_size(self), 1);
  float f[2] = {1, 2};
  assert_int_equal(nest_comm_allreduce_f32(self, f, 2), NEST_OK);
  assert_true(f[0] == 1 && f[1] == 2);
  assert_int_equal(nest_comm_agree(self, NEST_ERR_IO), NEST_ERR_IO);
  nest_comm_destroy(&self);
  assert_null(self);
}

int main(int argc, char **argv) {
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  R = nest_comm_rank(comm);
  P = nest_comm_size(comm);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sums),        cmocka_unit_test(test_sum_same),
      cmocka_unit_test(test_bcast_allgather),
      cmocka_unit_test(test_agree),       cmocka_unit_test(test_check_same),
      cmocka_unit_test(test_self),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nest_comm_destroy(&comm);
  return rc;
}
