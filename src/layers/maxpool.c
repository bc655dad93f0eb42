/* maxpool.c — 2-D max pooling, OpenMP over (sample, channel) planes.
 *
 * Shapes: x [n, C, H, W] -> y [n, C, OH, OW], OH = floor((H + 2p - kh)/s) + 1 (same for OW).
 * Padding never wins (it acts as -inf; pad < kernel so every window holds a real pixel).
 * Forward stores the argmax of every output (an int32 index into its input plane) in
 * l->cache; backward scatters dy to those positions, accumulating where windows overlap
 * (AlexNet pools 3x3 with stride 2). Defaults: kw = kh, stride = kh (non-overlapping). */
#include <stdint.h>

#include "nest/kernels.h"
#include "nest/layer.h"

static nest_conv_geom pool_geom(const nest_layer *l) {
  return nest_conv_geom_make(l->in.c, l->in.h, l->in.w, l->hp.kh, l->hp.kw, l->hp.stride,
                             l->hp.pad);
}

static nest_status pool_setup(nest_layer *l, int max_batch, int nthreads) {
  nest_layer_hparams *hp = &l->hp;
  if (hp->kw == 0) hp->kw = hp->kh;
  if (hp->stride == 0) hp->stride = hp->kh;
  if (hp->kh <= 0 || hp->kw <= 0 || hp->stride < 1 || hp->pad < 0 || hp->pad >= hp->kh ||
      hp->pad >= hp->kw)
    return NEST_ERR(NEST_ERR_CONFIG,
                    "%s: maxpool needs kernel > 0, stride >= 1, 0 <= pad < kernel (got "
                    "kernel=%dx%d stride=%d pad=%d)",
                    l->name, hp->kh, hp->kw, hp->stride, hp->pad);
  if (l->in.c <= 0 || l->in.h <= 0 || l->in.w <= 0)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: maxpool has an empty input (%dx%dx%d)", l->name, l->in.c,
                    l->in.h, l->in.w);
  nest_conv_geom g = pool_geom(l);
  if (g.oh <= 0 || g.ow <= 0)
    return NEST_ERR(NEST_ERR_CONFIG,
                    "%s: input %dx%d too small for %dx%d pooling window (stride %d, pad %d)",
                    l->name, l->in.h, l->in.w, hp->kh, hp->kw, hp->stride, hp->pad);
  if ((int64_t)l->in.h * l->in.w > INT32_MAX)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: maxpool input plane too large", l->name);
  l->out = (nest_shape){l->in.c, g.oh, g.ow};
  /* argmax indices, one int32 per output value (sizeof(int32_t) == sizeof(float)) */
  l->cache_floats = (size_t)(max_batch > 0 ? max_batch : 1) * nest_shape_size(l->out);
  l->ws_floats = 0;
  return NEST_OK;
}

/* y[n, C, OH, OW] = window maxima of x[n, C, H, W]; cache = their positions */
static nest_status pool_forward(nest_layer *l, const nest_ctx *ctx, const float *x, float *y) {
  const nest_conv_geom g = pool_geom(l);
  const long planes = (long)ctx->n * g.c;
  const int nt = ctx->nthreads > 0 ? ctx->nthreads : 1;
  const size_t hw = (size_t)g.h * g.w, ohw = (size_t)g.oh * g.ow;
  NEST_ASSERT((size_t)planes * ohw <= l->cache_floats);
  int32_t *arg = (int32_t *)l->cache;
#pragma omp parallel for schedule(static) num_threads(nt) if (planes * ohw > 4096)
  for (long p = 0; p < planes; ++p)
    nest_kernel_maxpool_forward(&g, x + p * hw, y + p * ohw, arg + p * ohw);
  return NEST_OK;
}

/* dx[n, C, H, W] = scatter-add of dy to the cached argmax positions (no parameters) */
static nest_status pool_backward(nest_layer *l, const nest_ctx *ctx, const float *x, const float *y,
                                 const float *dy, float *dx) {
  if (!dx) return NEST_OK;
  const nest_conv_geom g = pool_geom(l);
  const long planes = (long)ctx->n * g.c;
  const int nt = ctx->nthreads > 0 ? ctx->nthreads : 1;
  const size_t hw = (size_t)g.h * g.w, ohw = (size_t)g.oh * g.ow;
  const int32_t *arg = (const int32_t *)l->cache;
#pragma omp parallel for schedule(static) num_threads(nt) if (planes * ohw > 4096)
  for (long p = 0; p < planes; ++p)
    nest_kernel_maxpool_backward(&g, dy + p * ohw, arg + p * ohw, dx + p * hw);
  return NEST_OK;
}

const nest_layer_ops nest_maxpool_ops = {
    .kind = "maxpool",
    .setup = pool_setup,
    .forward = pool_forward,
    .backward = pool_backward,
    .cleanup = NULL,
};
