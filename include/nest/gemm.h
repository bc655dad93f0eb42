/* gemm.h — single-precision GEMM whose result does not depend on the thread count.
 *
 * OpenBLAS (0.3.21 measured, docs/design.md "Determinism") is not bit-reproducible across
 * thread counts: a multi-threaded sgemm cuts C by thread count, and the value of an element
 * depends on where it sits relative to the edges of the block it is computed in (even one
 * single-threaded call on a sub-matrix gives some elements other bits than the whole call).
 * LeNet-300's fc1 products (128 x 300 x 784) differ between 1 and 2 BLAS threads in 2-5% of
 * their elements.
 *
 * nest_sgemm therefore cuts C[M, N] into tiles fixed by (M, N, K) alone — never by the
 * thread count — and runs each tile as one single-threaded cblas_sgemm on its sub-matrices;
 * OpenMP threads (at most nthreads) only decide who computes which tile. K is never split, so
 * no element is summed across tiles, and every element gets the same bits for any nthreads.
 * Tiles: the larger of M, N is halved first (a tile spans at least NEST_GEMM_MIN_EXTENT rows or
 * columns, so re-packing the shared operand per tile stays cheap), up to NEST_GEMM_MAX_TILES
 * tiles of at least NEST_GEMM_MIN_FLOPS each; edges at multiples of 16. Small products are one
 * tile (one single-threaded call).
 *
 * Row-major, like cblas_sgemm(CblasRowMajor, ...):
 *   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C,  op(X) = X or Xᵀ (ta / tb = 1).
 * A is [M, lda] (ta = 0) or [K, lda] (ta = 1); B is [K, ldb] (tb = 0) or [N, ldb] (tb = 1).
 * Opens its own OpenMP region (call it outside parallel regions); never allocates. */
#ifndef NEST_GEMM_H
#define NEST_GEMM_H

#define NEST_GEMM_MAX_TILES 8
#define NEST_GEMM_MIN_EXTENT 128
#define NEST_GEMM_MIN_FLOPS (4.0 * 1024 * 1024)

void nest_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc, int nthreads);

/* The tile grid nest_sgemm uses for an M x N x K product: *tm row blocks x *tn column blocks
 * (a function of the shape only). */
void nest_sgemm_tiles(int M, int N, int K, int *tm, int *tn);

#endif
