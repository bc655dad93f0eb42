/* test_loss.c — softmax cross-entropy against a double reference and finite differences; top-k
 * hit counts against a sort-based reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- distillation ---- */

/* Naive reference twin of the distillation loss in double, straight from the definition:
 * (1 - a) (-log softmax(z)[y]) + a T^2 sum_j q_j log(q_j / p_j), q = softmax(v/T), p = softmax(z/T). */
static double ref_distill(const double *z, const double *v, const int32_t *y, int n, int k,
                          double a, double temp) {
  double total = 0;
  for (int i = 0; i < n; ++i) {
    double s = 0, sz = 0, sv = 0;
    for (int j = 0; j < k; ++j) {
      s += exp(z[i * k + j]);
      sz += exp(z[i * k + j] / temp);
      sv += exp(v[i * k + j] / temp);
    }
    double kl = 0;
    for (int j = 0; j < k; ++j) {
      const double q = exp(v[i * k + j] / temp) / sv, p = exp(z[i * k + j] / temp) / sz;
      kl += q * log(q / p);
    }
    total += (1 - a) * (log(s) - z[i * k + y[i]]) + a * temp * temp * kl;
  }
  return total;
}

static void test_distill_reference_and_fd(void **state) {
  enum { N = 4, K = 6 };
  float z[N * K], v[N * K], d[N * K], d0[N * K];
  double zd[N * K], vd[N * K];
  int32_t y[N] = {2, 0, 5, 2};
  nest_test_fill_normal(z, N * K, 11, 2.0f);
  nest_test_fill_normal(v, N * K, 12, 3.0f);
  for (int i = 0; i < N * K; ++i) zd[i] = z[i], vd[i] = v[i];
  const float scale = 1.0f / 8;
  const double alphas[3] = {0.0, 0.7, 1.0}, temps[3] = {1.0, 4.0, 2.5};
  for (int c = 0; c < 3; ++c) {
    double loss = 0;
    int64_t hits = 0;
    nest_loss_distill(z, v, y, N, K, scale, alphas[c], temps[c], d, &loss, &hits);
    const double want = ref_distill(zd, vd, y, N, K, alphas[c], temps[c]);
    assert_true(fabs(loss - want) < 1e-5 * fmax(1, fabs(want)));
    for (int i = 0; i < N * K; ++i) {
      const double h = 1e-6, save = zd[i];
      zd[i] = save + h;
      const double lp = ref_distill(zd, vd, y, N, K, alphas[c], temps[c]);
      zd[i] = save - h;
      const double lm = ref_distill(zd, vd, y, N, K, alphas[c], temps[c]);
      zd[i] = save;
      assert_true(fabs(d[i] - scale * (lp - lm) / (2 * h)) < 1e-5);
    }
    double l0 = 0;
    int64_t h0 = 0;
    nest_loss_softmax_xent(z, y, N, K, scale, d0, &l0, &h0);
    assert_int_equal(hits, h0); /* the argmax count does not depend on the teacher */
    if (alphas[c] == 0.0) {     /* alpha 0: exactly the cross-entropy's gradient, same loss */
      assert_true(fabs(loss - l0) < 1e-9 * fmax(1, l0));
      for (int i = 0; i < N * K; ++i) assert_true(fabs(d[i] - d0[i]) < 1e-7);
    }
  }
  /* a student equal to its teacher has no soft-target gradient: alpha = 1 gives zero */
  double loss = 0;
  int64_t hits = 0;
  nest_loss_distill(v, v, y, N, K, 1.0f, 1.0, 4.0, d, &loss, &hits);
  assert_true(fabs(loss) < 1e-9);
  for (int i = 0; i < N * K; ++i) assert_true(fabs(d[i]) < 1e-7);
}

/* ---- top-k hits ---- */

/* Naive reference twin: sort the class indices by (logit descending, index ascending) and look
 * for the label among the first `top`. */
static const float *ref_row;
static int ref_cmp(const void *a, const void *b) {
  const int i = *(const int *)a, j = *(const int *)b;
  if (ref_row[i] != ref_row[j]) return ref_row[i] > ref_row[j] ? -1 : 1;
  return (i > j) - (i < j);
}
static int64_t ref_topk(const float *z, const int32_t *y, int n, int k, int top) {
  int *order = malloc(sizeof(int) * (size_t)k);
  int64_t hits = 0;
  for (int i = 0; i < n; ++i) {
    ref_row = z + (size_t)i * k;
    for (int j = 0; j < k; ++j) order[j] = j;
    qsort(order, (size_t)k, sizeof(int), ref_cmp);
    for (int j = 0; j < top && j < k; ++j) hits += order[j] == y[i];
  }
  free(order);
  return hits;
}

static void test_topk_matches_reference(void **state) {
  (void)state;
  /* Logits drawn from a few values so that ties (at the label too) are common; class counts
   * below, at and above 5, up to ImageNet's. */
  static const int ks[] = {1, 2, 4, 5, 6, 10, 37, 1000};
  enum { N = 64 };
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (size_t c = 0; c < sizeof ks / sizeof ks[0]; ++c) {
    const int k = ks[c];
    float *z = malloc(sizeof(float) * N * (size_t)k), *d = malloc(sizeof(float) * N * (size_t)k);
    int32_t y[N];
    for (int round = 0; round < 2; ++round) {
      const int levels = round ? 1000000 : 4; /* round 0: ties everywhere; round 1: few */
      for (int i = 0; i < N * k; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        z[i] = (float)(int)(x % (uint64_t)levels) * 0.25f - 0.5f;
      }
      for (int i = 0; i < N; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        y[i] = (int32_t)(x % (uint64_t)k);
      }
      for (int top = 1; top <= 6; ++top) {
        const int64_t got = nest_loss_topk_hits(z, y, N, k, top), want = ref_topk(z, y, N, k, top);
        if (got != want) fail_msg("k %d top %d round %d: %lld hits, reference %lld", k, top, round,
                                  (long long)got, (long long)want);
        if (top >= k) assert_int_equal(got, N); /* fewer classes than top: every row */
      }
      /* top 1 is the argmax accuracy of the loss */
      double loss = 0;
      int64_t correct = 0;
      nest_loss_softmax_xent(z, y, N, k, 1.0f, d, &loss, &correct);
      assert_int_equal(nest_loss_topk_hits(z, y, N, k, 1), correct);
    }
    free(z);
    free(d);
  }
}

static void test_topk_ties_and_nan(void **state) {
  (void)state;
  /* 7 classes, all logits equal: the label ranks at its index, so a hit in top 5 iff label < 5. */
  float z[7] = {1, 1, 1, 1, 1, 1, 1};
  for (int32_t l = 0; l < 7; ++l) assert_int_equal(nest_loss_topk_hits(z, &l, 1, 7, 5), l < 5);
  /* five logits above the label's: a miss; four: a hit */
  float w[7] = {9, 8, 7, 6, 5, 0, -1};
  int32_t l5 = 5, l4 = 4;
  assert_int_equal(nest_loss_topk_hits(w, &l5, 1, 7, 5), 0);
  assert_int_equal(nest_loss_topk_hits(w, &l4, 1, 7, 5), 1);
  /* a NaN label logit is a miss */
  w[4] = NAN;
  assert_int_equal(nest_loss_topk_hits(w, &l4, 1, 7, 5), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matches_reference_and_fd),
      cmocka_unit_test(test_large_logits_stable),
      cmocka_unit_test(test_distill_reference_and_fd),
      cmocka_unit_test(test_topk_matches_reference),
      cmocka_unit_test(test_topk_ties_and_nan),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
