/* test_gemm.c — nest_sgemm (gemm.h): the product of every transposition against a double
 * reference, on sub-matrices (leading dimensions wider than the operands) with alpha and
 * beta; the same bits for 1, 2 and 3 threads; the tile grid (a function of the shape, tiles
 * within the limits gemm.h states). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nest/gemm.h"
#include "test_util.h"

void openblas_set_num_threads(int);

typedef struct {
  int ta, tb, M, N, K;
} shape;

/* C = alpha * op(A) op(B) + beta * C in double; same layout conventions as nest_sgemm. */
static void ref_gemm(shape s, double alpha, const float *A, int lda, const float *B, int ldb,
                     double beta, const float *C0, double *C, int ldc) {
  for (int i = 0; i < s.M; ++i)
    for (int j = 0; j < s.N; ++j) {
      double acc = 0;
      for (int k = 0; k < s.K; ++k) {
        const double a = s.ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
        const double b = s.tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
        acc += a * b;
      }
      C[(size_t)i * ldc + j] = alpha * acc + beta * C0[(size_t)i * ldc + j];
    }
}

/* One shape: padded operands, nthreads 1..3 bit-identical, close to the reference, and the
 * padding of C untouched. */
static void check(shape s) {
  const int pad = 5;
  const int arows = s.ta ? s.K : s.M, acols = s.ta ? s.M : s.K;
  const int brows = s.tb ? s.N : s.K, bcols = s.tb ? s.K : s.N;
  const int lda = acols + pad, ldb = bcols + pad, ldc = s.N + pad;
  float *A = nest_test_falloc((size_t)arows * lda), *B = nest_test_falloc((size_t)brows * ldb);
  float *C0 = nest_test_falloc((size_t)s.M * ldc), *C[4];
  nest_test_fill_normal(A, (size_t)arows * lda, 1, 1.0f);
  nest_test_fill_normal(B, (size_t)brows * ldb, 2, 1.0f);
  nest_test_fill_normal(C0, (size_t)s.M * ldc, 3, 1.0f);
  const float alpha = 0.75f, beta = -0.5f;
  for (int nt = 1; nt <= 3; ++nt) {
    omp_set_num_threads(nt);
    openblas_set_num_threads(nt);
    C[nt] = nest_test_falloc((size_t)s.M * ldc);
    memcpy(C[nt], C0, sizeof(float) * (size_t)s.M * ldc);
    nest_sgemm(s.ta, s.tb, s.M, s.N, s.K, alpha, A, lda, B, ldb, beta, C[nt], ldc, nt);
    if (nt > 1 && memcmp(C[nt], C[1], sizeof(float) * (size_t)s.M * ldc) != 0)
      fail_msg("%dx%dx%d ta%d tb%d: %d threads differ from 1", s.M, s.N, s.K, s.ta, s.tb, nt);
  }
  double *R = nest_test_dalloc((size_t)s.M * ldc);
  ref_gemm(s, alpha, A, lda, B, ldb, beta, C0, R, ldc);
  double worst = 0;
  for (int i = 0; i < s.M; ++i) {
    for (int j = 0; j < s.N; ++j) {
      const size_t e = (size_t)i * ldc + j;
      /* float products of K terms of size ~1: error ~ sqrt(K) * 2^-24 relative to sqrt(K) */
      const double err = fabs(C[1][e] - R[e]) / (sqrt((double)s.K) + 1.0);
      if (err > worst) worst = err;
    }
    for (int j = s.N; j < ldc; ++j)
      assert_true(C[1][(size_t)i * ldc + j] == C0[(size_t)i * ldc + j]);
  }
  if (!(worst < 1e-5))
    fail_msg("%dx%dx%d ta%d tb%d: error %.3g against the reference", s.M, s.N, s.K, s.ta, s.tb,
             worst);
  for (int nt = 1; nt <= 3; ++nt) free(C[nt]);
  free(A), free(B), free(C0), free(R);
}

static void test_products(void **state) {
  (void)state;
  const int dims[][3] = {
      {64, 300, 784},  /* dense forward: 2 column tiles */
      {300, 784, 64},  /* dense dW: 4 column tiles */
      {600, 700, 40},  /* rows and columns both split */
      {7, 10, 30},     /* one tile */
      {1, 1, 1},
      {257, 129, 200}, /* edges not at multiples of the tile */
  };
  for (size_t d = 0; d < sizeof dims / sizeof dims[0]; ++d)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) check((shape){ta, tb, dims[d][0], dims[d][1], dims[d][2]});
}

static void test_tiles(void **state) {
  (void)state;
  int tm, tn;
  nest_sgemm_tiles(7, 10, 30, &tm, &tn);
  assert_int_equal(tm * tn, 1); /* small: one call */
  nest_sgemm_tiles(64, 300, 784, &tm, &tn);
  assert_int_equal(tm, 1);
  assert_int_equal(tn, 2); /* 300 columns: two tiles of at least NEST_GEMM_MIN_EXTENT */
  nest_sgemm_tiles(13, 300, 784, &tm, &tn);
  assert_int_equal(tm * tn, 1); /* 6 MFLOP: halves would be below NEST_GEMM_MIN_FLOPS */
  nest_sgemm_tiles(600, 700, 40, &tm, &tn);
  assert_true(tm > 1 && tn > 1);
  for (int M = 1; M < 5000; M = M * 3 + 1)
    for (int N = 1; N < 5000; N = N * 3 + 1)
      for (int K = 1; K < 3000; K = K * 5 + 2) {
        nest_sgemm_tiles(M, N, K, &tm, &tn);
        assert_true(tm >= 1 && tn >= 1 && tm * tn <= NEST_GEMM_MAX_TILES);
        if (tm * tn > 1) assert_true(2.0 * M * N * K / (tm * tn) >= NEST_GEMM_MIN_FLOPS);
        if (tm > 1) assert_true(M / tm >= NEST_GEMM_MIN_EXTENT);
        if (tn > 1) assert_true(N / tn >= NEST_GEMM_MIN_EXTENT);
      }
}

/* M or N zero: nothing written. */
static void test_empty(void **state) {
  (void)state;
  float c = 3.0f, a = 1.0f, b = 1.0f;
  nest_sgemm(0, 0, 0, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1, 2);
  nest_sgemm(0, 0, 1, 0, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1, 2);
  assert_true(c == 3.0f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_products),
      cmocka_unit_test(test_tiles),
      cmocka_unit_test(test_empty),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
