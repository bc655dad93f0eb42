/* test_loss.c — softmax cross-entropy against a double reference and finite differences. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "nest/loss.h"
#include "test_util.h"

/* Naive reference twin in double. */
static double ref_loss(const double *z, const int32_t *y, int n, int k) {
  double total = 0;
  for (int i = 0; i < n; ++i) {
    double s = 0;
    for (int j = 0; j < k; ++j) s += exp(z[i * k + j]);
    total += log(s) - z[i * k + y[i]];
  }
  return total;
}

static void test_matches_reference_and_fd(void **state) {
  enum { N = 5, K = 7 };
  float z[N * K], d[N * K];
  double zd[N * K];
  int32_t y[N] = {0, 6, 3, 3, 1};
  nest_test_fill_normal(z, N * K, 3, 2.0f);
  for (int i = 0; i < N * K; ++i) zd[i] = z[i];
  double loss = 0;
  int64_t correct = 0;
  const float scale = 1.0f / N;
  nest_loss_softmax_xent(z, y, N, K, scale, d, &loss, &correct);
  assert_true(fabs(loss - ref_loss(zd, y, N, K)) < 1e-5 * fmax(1, loss));
  for (int i = 0; i < N * K; ++i) {
    double h = 1e-6, save = zd[i];
    zd[i] = save + h;
    double lp = ref_loss(zd, y, N, K);
    zd[i] = save - h;
    double lm = ref_loss(zd, y, N, K);
    zd[i] = save;
    double fd = scale * (lp - lm) / (2 * h);
    assert_true(fabs(d[i] - fd) < 1e-5);
  }
  /* Accuracy: argmax count computed naively. */
  int64_t want = 0;
  for (int i = 0; i < N; ++i) {
    int a = 0;
    for (int j = 1; j < K; ++j)
      if (z[i * K + j] > z[i * K + a]) a = j;
    want += a == y[i];
  }
  assert_int_equal(correct, want);
}

static void test_large_logits_stable(void **state) {
  float z[3] = {1000.0f, 0.0f, -1000.0f}, d[3];
  int32_t y[1] = {1};
  double loss = 0;
  int64_t c = 0;
  nest_loss_softmax_xent(z, y, 1, 3, 1.0f, d, &loss, &c);
  assert_true(isfinite(loss));
  assert_true(fabs(loss - 1000.0) < 1e-3);
  assert_true(fabs(d[0] - 1.0f) < 1e-6 && fabs(d[1] + 1.0f) < 1e-6);
  assert_int_equal(c, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matches_reference_and_fd),
      cmocka_unit_test(test_large_logits_stable),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
