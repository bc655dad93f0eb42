/* gemm.c — sgemm in tiles fixed by the shape (gemm.h). */
#include "nest/gemm.h"

#include <cblas.h>
#include <omp.h>

void nest_sgemm_tiles(int M, int N, int K, int *tm, int *tn) {
  const double flops = 2.0 * M * N * K;
  int a = 1, b = 1; /* row blocks, column blocks */
  while (2 * a * b <= NEST_GEMM_MAX_TILES && flops / (2.0 * a * b) >= NEST_GEMM_MIN_FLOPS) {
    const int col_ok = N / (2 * b) >= NEST_GEMM_MIN_EXTENT,
              row_ok = M / (2 * a) >= NEST_GEMM_MIN_EXTENT;
    if (col_ok && (N / b >= M / a || !row_ok))
      b *= 2;
    else if (row_ok)
      a *= 2;
    else
      break;
  }
  *tm = a;
  *tn = b;
}

/* Start of block t of T over [0, d): multiples of 16 (whole micro-kernel panels), the last
 * block ends at d. Blocks are at least NEST_GEMM_MIN_EXTENT - 15 long, so none is empty. */
static int edge(int d, int t, int T) { return t >= T ? d : (int)((long)d * t / T) & ~15; }

static void tile(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc, int tm, int tn, int t) {
  const int bi = t / tn, bj = t % tn;
  const int i0 = edge(M, bi, tm), i1 = edge(M, bi + 1, tm);
  const int j0 = edge(N, bj, tn), j1 = edge(N, bj + 1, tn);
  const float *a = ta ? A + i0 : A + (size_t)i0 * lda;
  const float *b = tb ? B + (size_t)j0 * ldb : B + j0;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              i1 - i0, j1 - j0, K, alpha, a, lda, b, ldb, beta, C + (size_t)i0 * ldc + j0, ldc);
}

void nest_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc, int nthreads) {
  if (M <= 0 || N <= 0) return;
  int tm, tn;
  nest_sgemm_tiles(M, N, K, &tm, &tn);
  const int T = tm * tn;
  int nt = nthreads < 1 ? 1 : nthreads;
  if (nt > T) nt = T;
  /* One thread, and OpenBLAS would not thread either: no region. */
  if (nt == 1 && (omp_in_parallel() || omp_get_max_threads() == 1)) {
    for (int t = 0; t < T; ++t)
      tile(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, tm, tn, t);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    /* This task's thread budget, which OpenBLAS (OpenMP build) reads: single-threaded tiles,
     * also in a team of one, where omp_in_parallel() is false. */
    omp_set_num_threads(1);
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < T; ++t)
      tile(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, tm, tn, t);
  }
}
