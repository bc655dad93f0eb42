/* dropout.c — inverted dropout: in training, drop each value with probability p and scale
 * the kept ones by 1/(1-p); identity in eval mode or when p == 0.
 *
 * Shapes: x, y, dy, dx [n, D] (D = in.c*in.h*in.w). The keep decision for element j of
 * sample i is a pure function of (run seed, layer index, global sample id, optimizer step,
 * j): draw u = nest_rng_at(seed, NEST_RNG_DROPOUT | index << 8, sample_id, step, j) and
 * drop when u < p * 2^32. So the mask does not depend on how samples are spread over ranks
 * or threads. (The draws of one sample are consecutive words of one Philox stream, so a
 * sequential nest_rng_u32 loop yields exactly the nest_rng_at values, 4x cheaper.)
 * The keep mask is cached as one byte per value for backward: dx = dy * keep / (1-p). */
#include <stdint.h>
#include <string.h>

#include "nest/layer.h"
#include "nest/rng.h"

static nest_status dropout_setup(nest_layer *l, int max_batch, int nthreads) {
  if (!(l->hp.rate >= 0.0f && l->hp.rate < 1.0f))
    return NEST_ERR(NEST_ERR_CONFIG, "%s: dropout rate must be in [0, 1) (got %g)", l->name,
                    l->hp.rate);
  if (nest_shape_size(l->in) == 0)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: dropout has an empty input", l->name);
  l->out = l->in;
  const size_t bytes = (size_t)(max_batch > 0 ? max_batch : 1) * nest_shape_size(l->in);
  l->cache_floats = l->hp.rate > 0.0f ? (bytes + sizeof(float) - 1) / sizeof(float) : 0;
  l->ws_floats = 0;
  return NEST_OK;
}

/* The rate of this pass: the layer's, or the context's override (a layer built without
 * dropout has no mask cache and stays off). */
static float dropout_rate(const nest_layer *l, const nest_ctx *ctx) {
  return l->hp.rate > 0.0f && ctx->dropout_set ? ctx->dropout_rate : l->hp.rate;
}

/* Dropout acts in training steps only: not in evaluation, not in gradient-only passes. */
static int dropout_active(const nest_layer *l, const nest_ctx *ctx) {
  return ctx->train && !ctx->grad_only && dropout_rate(l, ctx) > 0.0f;
}

/* The RNG purpose of this layer's masks. */
static uint32_t dropout_purpose(const nest_layer *l) {
  return (uint32_t)NEST_RNG_DROPOUT | ((uint32_t)l->index << 8);
}

/* y[n, D] = x * keep / (1 - p) */
static nest_status dropout_forward(nest_layer *l, const nest_ctx *ctx, const float *x, float *y) {
  const int n = ctx->n, nt = ctx->nthreads > 0 ? ctx->nthreads : 1;
  const size_t d = nest_shape_size(l->in);
  if (!dropout_active(l, ctx)) {
    if (y != x) memcpy(y, x, sizeof(float) * d * (size_t)n);
    return NEST_OK;
  }
  NEST_ASSERT(l->cache && (size_t)n * d <= l->cache_floats * sizeof(float));
  /* Masks keyed by batch position would differ between rank counts: ids are required. */
  NEST_ASSERT(n == 0 || ctx->sample_ids != NULL);
  uint8_t *keep = (uint8_t *)l->cache;
  const float rate = dropout_rate(l, ctx);
  NEST_ASSERT(rate < 1.0f);
  const uint64_t thr = (uint64_t)((double)rate * 4294967296.0);
  const float scale = 1.0f / (1.0f - rate);
  const uint32_t purpose = dropout_purpose(l);
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)n * d > 16384)
  for (int i = 0; i < n; ++i) {
    const uint64_t id = (uint64_t)ctx->sample_ids[i];
    nest_rng r;
    nest_rng_init(&r, ctx->seed, purpose, id, (uint64_t)ctx->step);
    const float *xi = x + (size_t)i * d;
    float *yi = y + (size_t)i * d;
    uint8_t *ki = keep + (size_t)i * d;
    for (size_t j = 0; j < d; ++j) {
      const uint8_t k = (uint64_t)nest_rng_u32(&r) >= thr;
      ki[j] = k;
      yi[j] = k ? xi[j] * scale : 0.0f;
    }
  }
  return NEST_OK;
}

/* dx[n, D] = dy * keep / (1 - p) (no parameters) */
static nest_status dropout_backward(nest_layer *l, const nest_ctx *ctx, const float *x,
                                    const float *y, const float *dy, float *dx) {
  if (!dx) return NEST_OK;
  const int n = ctx->n, nt = ctx->nthreads > 0 ? ctx->nthreads : 1;
  const size_t total = nest_shape_size(l->in) * (size_t)n;
  if (!dropout_active(l, ctx)) {
    if (dx != dy) memcpy(dx, dy, sizeof(float) * total);
    return NEST_OK;
  }
  const uint8_t *keep = (const uint8_t *)l->cache;
  const float scale = 1.0f / (1.0f - dropout_rate(l, ctx));
#pragma omp parallel for simd schedule(static) num_threads(nt) if (total > 65536)
  for (size_t j = 0; j < total; ++j) dx[j] = keep[j] ? dy[j] * scale : 0.0f;
  return NEST_OK;
}

const nest_layer_ops nest_dropout_ops = {
    .kind = "dropout",
    .setup = dropout_setup,
    .forward = dropout_forward,
    .backward = dropout_backward,
    .cleanup = NULL,
};
