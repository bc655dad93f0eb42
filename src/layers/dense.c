/* dense.c — fully connected layer: y = x·Wᵀ + b, with W masked (dormant weights are 0).
 *
 * Shapes: x [n, D] (D = in.c*in.h*in.w, so a conv output is flattened for free),
 *         W [units, D], b [units], y [n, units].
 * All three products are nest_sgemm calls (gemm.h): tiles fixed by the shape, spread over
 * ctx->nthreads threads, so the results do not depend on the thread count (OpenBLAS's own
 * threading would). The weight gradient is the full dense GEMM, so dormant positions get their
 * true dL/dW, which connection growth ranks; db sums the rows of dy in row order. */
#include <string.h>

#include "nest/gemm.h"
#include "nest/layer.h"

static nest_status dense_setup(nest_layer *l, int max_batch, int nthreads) {
  int units = l->hp.units;
  int d = (int)nest_shape_size(l->in);
  if (units <= 0) return NEST_ERR(NEST_ERR_CONFIG, "%s: dense layer needs units > 0", l->name);
  if (d <= 0) return NEST_ERR(NEST_ERR_CONFIG, "%s: dense layer has an empty input", l->name);
  l->out = (nest_shape){units, 1, 1};
  nest_layer_declare_param(l, "W", 2, (int[]){units, d}, NEST_INIT_HE, 1, 1, d, units);
  nest_layer_declare_param(l, "b", 1, (int[]){units}, NEST_INIT_ZERO, 0, 0, d, units);
  return NEST_OK;
}

/* y[n, units] = b (broadcast) + x[n, D] · W[units, D]ᵀ */
static nest_status dense_forward(nest_layer *l, const nest_ctx *ctx, const float *x, float *y) {
  const int n = ctx->n, units = l->hp.units, d = (int)nest_shape_size(l->in);
  const float *W = l->p[0], *b = l->p[1];
  if (n == 0) return NEST_OK;
  for (int i = 0; i < n; ++i) memcpy(y + (size_t)i * units, b, sizeof(float) * units);
  nest_sgemm(0, 1, n, units, d, 1.0f, x, d, W, d, 1.0f, y, units, ctx->nthreads);
  return NEST_OK;
}

static nest_status dense_backward(nest_layer *l, const nest_ctx *ctx, const float *x,
                                  const float *y, const float *dy, float *dx) {
  const int n = ctx->n, units = l->hp.units, d = (int)nest_shape_size(l->in);
  float *dW = l->g[0], *db = l->g[1];
  if (n == 0) {
    memset(dW, 0, sizeof(float) * (size_t)units * d);
    memset(db, 0, sizeof(float) * units);
    return NEST_OK;
  }
  /* dW[units, D] = dy[n, units]ᵀ · x[n, D]  (dense: dormant positions included) */
  nest_sgemm(1, 0, units, d, n, 1.0f, dy, units, x, d, 0.0f, dW, d, ctx->nthreads);
  /* db[units] = column sums of dy */
  memcpy(db, dy, sizeof(float) * units);
  for (int i = 1; i < n; ++i) {
    const float *row = dy + (size_t)i * units;
    for (int j = 0; j < units; ++j) db[j] += row[j];
  }
  /* dx[n, D] = dy[n, units] · W[units, D] */
  if (dx)
    nest_sgemm(0, 0, n, d, units, 1.0f, dy, units, l->p[0], d, 0.0f, dx, d, ctx->nthreads);
  return NEST_OK;
}

const nest_layer_ops nest_dense_ops = {
    .kind = "dense",
    .setup = dense_setup,
    .forward = dense_forward,
    .backward = dense_backward,
    .cleanup = NULL,
};
