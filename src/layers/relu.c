/* relu.c — rectified linear unit, elementwise: y = max(x, 0); dx = dy where y > 0.
 * Shapes: x, y, dy, dx all [n, c, h, w]. Memory-bound; OpenMP + SIMD over all elements.
 * In place: the network passes y == x and dx == dy (net.c, "activations"): every element is
 * read before it is written at the same index, and backward needs only the output's sign. */
#include "nest/layer.h"

static nest_status relu_setup(nest_layer *l, int max_batch, int nthreads) {
  l->out = l->in;
  return NEST_OK;
}

static nest_status relu_forward(nest_layer *l, const nest_ctx *ctx, const float *x, float *y) {
  const long total = (long)ctx->n * (long)nest_shape_size(l->in);
#pragma omp parallel for simd schedule(static) num_threads(ctx->nthreads) if (total > 65536)
  for (long i = 0; i < total; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
  return NEST_OK;
}

static nest_status relu_backward(nest_layer *l, const nest_ctx *ctx, const float *x,
                                 const float *y, const float *dy, float *dx) {
  if (!dx) return NEST_OK;
  const long total = (long)ctx->n * (long)nest_shape_size(l->in);
#pragma omp parallel for simd schedule(static) num_threads(ctx->nthreads) if (total > 65536)
  for (long i = 0; i < total; ++i) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
  return NEST_OK;
}

const nest_layer_ops nest_relu_ops = {
    .kind = "relu",
    .setup = relu_setup,
    .forward = relu_forward,
    .backward = relu_backward,
    .cleanup = NULL,
};
