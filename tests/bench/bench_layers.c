/* bench_layers.c — GFLOP/s of conv2d forward + backward on LeNet-5 and AlexNet shapes, with 1
 * and 2 threads, next to a large sgemm for scale. A benchmark, never a test.
 *
 * usage: bench_layers [seconds_per_case (default 0.5)]
 * GFLOP/s columns use the best iteration (robust on a shared machine); "mean" is the
 * average over all iterations; sgemm is the best of a 2048^3 product with the same threads.
 * FLOPs counted: forward 2*OC*K*N per sample, backward dW the same, dx the same again
 * (skipped for first layers, as in training: the network passes dx == NULL there). */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "nest/layer.h"
#include "nest/rng.h"

typedef struct {
  const char *name;
  nest_shape in;
  int out_c, k, stride, pad, batch, first;
} conv_shape;

static void fill(float *x, size_t n, uint64_t seed) {
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_SYNTH, 0, 0);
  for (size_t i = 0; i < n; ++i) x[i] = nest_rng_uniform(&r) - 0.5f;
}

static double sgemm_gflops(int n, double secs) {
  float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n),
        *c = malloc(sizeof(float) * n * n);
  if (!a || !b || !c) return 0.0;
  fill(a, (size_t)n * n, 1);
  fill(b, (size_t)n * n, 2);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
  double best = 1e30, t0 = omp_get_wtime();
  int reps = 0;
  do {
    double t = omp_get_wtime();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    t = omp_get_wtime() - t;
    if (t < best) best = t;
    ++reps;
  } while (omp_get_wtime() - t0 < secs || reps < 3);
  free(a), free(b), free(c);
  return 2.0 * n * n * (double)n / best / 1e9;
}

static int bench_conv(const conv_shape *cs, int nthreads, double secs, double peak) {
  nest_layer *l = NULL;
  nest_layer_hparams hp = {
      .out_c = cs->out_c, .kh = cs->k, .kw = cs->k, .stride = cs->stride, .pad = cs->pad};
  if (nest_layer_create(&nest_conv2d_ops, cs->name, cs->in, &hp, cs->batch, nthreads, &l) ||
      nest_layer_bind_standalone(l)) {
    fprintf(stderr, "%s: %s\n", cs->name, nest_error_message());
    return 1;
  }
  const size_t in_n = nest_shape_size(l->in) * cs->batch,
               out_n = nest_shape_size(l->out) * cs->batch;
  float *x = malloc(sizeof(float) * in_n), *y = malloc(sizeof(float) * out_n),
        *dy = malloc(sizeof(float) * out_n), *dx = cs->first ? NULL : malloc(sizeof(float) * in_n);
  if (!x || !y || !dy || (!cs->first && !dx)) return 1;
  fill(x, in_n, 3);
  fill(dy, out_n, 4);
  fill(l->p[0], l->param[0].count, 5);
  nest_ctx ctx = {.n = cs->batch, .train = 1, .nthreads = nthreads};
  const double K = (double)cs->in.c * cs->k * cs->k, N = (double)l->out.h * l->out.w;
  const double f1 = 2.0 * cs->out_c * K * N * cs->batch; /* one GEMM's worth */

  double tf = 0, tb = 0, bf = 1e30, bb = 1e30; /* totals and best iteration */
  int reps = 0;
  l->ops->forward(l, &ctx, x, y); /* warm-up */
  l->ops->backward(l, &ctx, x, y, dy, dx);
  do {
    double t0 = omp_get_wtime();
    l->ops->forward(l, &ctx, x, y);
    double t1 = omp_get_wtime();
    l->ops->backward(l, &ctx, x, y, dy, dx);
    double t2 = omp_get_wtime();
    tf += t1 - t0;
    tb += t2 - t1;
    if (t1 - t0 < bf) bf = t1 - t0;
    if (t2 - t1 < bb) bb = t2 - t1;
    ++reps;
  } while (tf + tb < secs || reps < 3);
  const double ff = f1, fb = f1 * (cs->first ? 1 : 2);
  const double g = (ff + fb) / (bf + bb) / 1e9, gmean = (ff + fb) * reps / (tf + tb) / 1e9;
  printf("%-14s %2d  %5d  %8.1f  %8.1f  %8.1f  %5.0f%%  %8.1f  %7.2f\n", cs->name, nthreads,
         cs->batch, ff / bf / 1e9, fb / bb / 1e9, g, 100.0 * g / peak, gmean, (bf + bb) * 1e3);
  free(x), free(y), free(dy), free(dx);
  nest_layer_destroy(&l);
  return 0;
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 0.5;
  const conv_shape shapes[] = {
      {"lenet5.conv1", {1, 28, 28}, 20, 5, 1, 0, 128, 1},
      {"lenet5.conv2", {20, 12, 12}, 50, 5, 1, 0, 128, 0},
      {"alexnet.conv1", {3, 224, 224}, 96, 11, 4, 2, 32, 1},
      {"alexnet.conv2", {96, 27, 27}, 256, 5, 1, 2, 32, 0},
      {"alexnet.conv3", {256, 13, 13}, 384, 3, 1, 1, 32, 0},
      {"alexnet.conv4", {384, 13, 13}, 384, 3, 1, 1, 32, 0},
      {"alexnet.conv5", {384, 13, 13}, 256, 3, 1, 1, 32, 0},
  };
  for (int nt = 1; nt <= 2; ++nt) {
    omp_set_num_threads(nt); /* the BLAS thread budget outside our parallel regions */
    double peak = sgemm_gflops(2048, secs);
    printf("\nthreads %d: sgemm 2048^3 = %.1f GFLOP/s\n", nt, peak);
    printf("%-14s %2s  %5s  %8s  %8s  %8s  %6s  %8s  %7s\n", "layer", "th", "batch", "fwd", "bwd",
           "fwd+bwd", "%sgemm", "mean", "ms/iter");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; ++i)
      if (bench_conv(&shapes[i], nt, secs, peak)) return 1;
  }
  return 0;
}
