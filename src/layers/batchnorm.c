/* batchnorm.c — batch normalisation per channel (conv input) or per feature (dense input).
 *
 * Shapes: x, y, dy, dx [n, C, S] with C = in.c and S = in.h*in.w (dense inputs are (d,1,1):
 * C = d features, S = 1); gamma, beta [C]; buffers running_mean, running_var [C].
 * Train mode:  mean, var = statistics of the M = rows*S values of a channel in the batch,
 *              y = gamma * x̂ + beta with x̂ = (x - mean) / sqrt(var + eps).
 *   With ctx->allreduce the batch is the GLOBAL one (sync batch-norm): the local sums
 *   (Σx, Σx²) are summed over ranks, rows = ctx->global_n, so every rank normalises with
 *   the same statistics and updates the running averages identically (running_var takes
 *   the unbiased variance). Backward then needs the global Σdy and Σdy·x̂ (second
 *   allreduce) for dx; g[] gets the LOCAL sums (the network reduces g[] over ranks).
 * Eval mode:   y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta.
 * A rank with n == 0 still joins both allreduces.
 * Sums are in double; work is split over channel ranges, so each channel is summed by one
 * thread in a fixed order and results do not depend on the thread count.
 * Cache: the per-channel centre (mean) and 1/sqrt(var + eps) used by the forward pass; x̂ is
 * recomputed from x in backward (one FMA), which is cheaper than storing and reloading it. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "nest/kernels.h"
#include "nest/layer.h"

/* Below this many values per call the threads cost more than they save. */
#define BN_PAR_MIN 32768

/* Workspace: 2C doubles of sums, then three float coefficient arrays [C]. */
static size_t bn_ws_floats(size_t c) { return 16 + 4 * c + 3 * c; }

static void *align64(void *p) { return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

static nest_status bn_setup(nest_layer *l, int max_batch, int nthreads) {
  const int c = l->in.c;
  if (c <= 0 || l->in.h <= 0 || l->in.w <= 0)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: batchnorm has an empty input (%dx%dx%d)", l->name,
                    l->in.c, l->in.h, l->in.w);
  if (l->hp.eps == 0.0f) l->hp.eps = 1e-5f;
  if (l->hp.momentum == 0.0f) l->hp.momentum = 0.1f;
  if (!(l->hp.eps > 0.0f) || !(l->hp.momentum > 0.0f && l->hp.momentum <= 1.0f))
    return NEST_ERR(NEST_ERR_CONFIG,
                    "%s: batchnorm needs eps > 0 and momentum in (0, 1] (got "
                    "eps=%g momentum=%g)",
                    l->name, l->hp.eps, l->hp.momentum);
  l->out = l->in;
  nest_layer_declare_param(l, "gamma", 1, (int[]){c}, NEST_INIT_ONE, 0, 0, c, c);
  nest_layer_declare_param(l, "beta", 1, (int[]){c}, NEST_INIT_ZERO, 0, 0, c, c);
  nest_layer_declare_buffer(l, "running_mean", (size_t)c, 0.0f);
  nest_layer_declare_buffer(l, "running_var", (size_t)c, 1.0f);
  l->ws_floats = bn_ws_floats((size_t)c);
  l->cache_floats = 2 * (size_t)c; /* centre [C], inverse std [C] */
  return NEST_OK;
}

/* Per-channel sums over the local batch, split over channel ranges. */
static void bn_sums(const nest_ctx *ctx, int c, int s, const float *a, const float *b,
                    const float *center, double *sa, double *sab) {
  const int n = ctx->n, nt = ctx->nthreads > 0 ? ctx->nthreads : 1;
#pragma omp parallel num_threads(nt) if ((long)n * c * s > BN_PAR_MIN)
  {
    const int t = omp_get_thread_num(), team = omp_get_num_threads();
    const int c0 = (int)((long)c * t / team), c1 = (int)((long)c * (t + 1) / team);
    nest_kernel_bn_sums(a, b, center, n, c, s, c0, c1, sa, sab);
  }
}

/* y = (x - center) * scale + shift, split over channel ranges. */
static void bn_affine(const nest_ctx *ctx, int c, int s, const float *x, const float *center,
                      const float *scale, const float *shift, float *y) {
  const int n = ctx->n, nt = ctx->nthreads > 0 ? ctx->nthreads : 1;
#pragma omp parallel num_threads(nt) if ((long)n * c * s > BN_PAR_MIN)
  {
    const int t = omp_get_thread_num(), team = omp_get_num_threads();
    const int c0 = (int)((long)c * t / team), c1 = (int)((long)c * (t + 1) / team);
    nest_kernel_bn_affine(x, n, c, s, c0, c1, center, scale, shift, y);
  }
}

/* Rows of the batch the statistics are over (global with sync batch-norm). A synced call
 * without the global row count would silently normalise by local rows: a caller bug. */
static int64_t bn_rows(const nest_ctx *ctx) {
  if (!ctx->allreduce) return ctx->n;
  NEST_ASSERT(ctx->global_n > 0);
  return ctx->global_n;
}

/* y[n, C, S] = gamma * x̂ + beta */
static nest_status bn_forward(nest_layer *l, const nest_ctx *ctx, const float *x, float *y) {
  const int c = l->in.c, s = l->in.h * l->in.w;
  const float *gamma = l->p[0], *beta = l->p[1];
  float *rmean = l->buf[0], *rvar = l->buf[1];
  float *center = l->cache, *istd = l->cache + c;
  double *sum = align64(l->ws), *sq = sum + c;
  float *scale = (float *)(sq + c); /* then the shift is beta itself */
  const double eps = l->hp.eps, mom = l->hp.momentum;
  NEST_ASSERT(l->ws && l->ws_floats >= bn_ws_floats((size_t)c) && l->cache);

  if (!ctx->train) {
    for (int ch = 0; ch < c; ++ch) {
      center[ch] = rmean[ch];
      istd[ch] = (float)(1.0 / sqrt((double)rvar[ch] + eps));
      scale[ch] = gamma[ch] * istd[ch];
    }
    bn_affine(ctx, c, s, x, center, scale, beta, y);
    return NEST_OK;
  }

  /* local Σx, Σx² per channel, then over ranks (every rank joins, even with n == 0) */
  bn_sums(ctx, c, s, x, x, NULL, sum, sq);
  if (ctx->allreduce) NEST_CALL(ctx->allreduce(ctx->comm, sum, 2 * (size_t)c));
  const double m = (double)bn_rows(ctx) * s;
  if (m <= 0.0) return NEST_OK; /* empty batch everywhere: nothing to normalise */
  for (int ch = 0; ch < c; ++ch) {
    double mean = sum[ch] / m;
    double var = sq[ch] / m - mean * mean;
    if (var < 0.0) var = 0.0; /* rounding */
    double is = 1.0 / sqrt(var + eps);
    center[ch] = (float)mean;
    istd[ch] = (float)is;
    scale[ch] = (float)(gamma[ch] * is);
    if (ctx->grad_only) continue; /* gradient-only pass: running statistics untouched */
    double unbiased = m > 1.0 ? var * m / (m - 1.0) : var;
    rmean[ch] = (float)((1.0 - mom) * rmean[ch] + mom * mean);
    rvar[ch] = (float)((1.0 - mom) * rvar[ch] + mom * unbiased);
  }
  if (ctx->n > 0) bn_affine(ctx, c, s, x, center, scale, beta, y);
  return NEST_OK;
}

static nest_status bn_backward(nest_layer *l, const nest_ctx *ctx, const float *x, const float *y,
                               const float *dy, float *dx) {
  const int c = l->in.c, s = l->in.h * l->in.w;
  const float *gamma = l->p[0];
  float *dgamma = l->g[0], *dbeta = l->g[1];
  const float *center = l->cache, *istd = l->cache + c;
  double *sdy = align64(l->ws), *sdyxc = sdy + c; /* Σdy, Σdy·(x - centre) */
  float *ka = (float *)(sdyxc + c), *kb = ka + c, *kc = kb + c;
  NEST_ASSERT(l->ws && l->ws_floats >= bn_ws_floats((size_t)c) && l->cache);

  /* local sums -> g[] (Σ dy·x̂ = istd · Σ dy·(x - centre)) */
  bn_sums(ctx, c, s, dy, x, center, sdy, sdyxc);
  for (int ch = 0; ch < c; ++ch) {
    dbeta[ch] = (float)sdy[ch];
    dgamma[ch] = (float)(istd[ch] * sdyxc[ch]);
  }
  if (!dx) return NEST_OK;

  if (!ctx->train) { /* statistics are constants: dx = gamma * istd * dy */
    for (int ch = 0; ch < c; ++ch) {
      ka[ch] = gamma[ch] * istd[ch];
      kb[ch] = 0.0f;
      kc[ch] = 0.0f;
    }
  } else {
    /* dx = gamma*istd * (dy - Σdy/M - x̂ Σdy·x̂/M) with the global sums */
    if (ctx->allreduce) NEST_CALL(ctx->allreduce(ctx->comm, sdy, 2 * (size_t)c));
    const double m = (double)bn_rows(ctx) * s;
    if (m <= 0.0 || ctx->n == 0) return NEST_OK;
    for (int ch = 0; ch < c; ++ch) {
      const double is = istd[ch], k = (double)gamma[ch] * is;
      ka[ch] = (float)k;
      kb[ch] = (float)(-k * is * is * sdyxc[ch] / m);
      kc[ch] = (float)(-k * sdy[ch] / m);
    }
  }
  const int n = ctx->n, nt = ctx->nthreads > 0 ? ctx->nthreads : 1;
#pragma omp parallel num_threads(nt) if ((long)n * c * s > BN_PAR_MIN)
  {
    const int t = omp_get_thread_num(), team = omp_get_num_threads();
    const int c0 = (int)((long)c * t / team), c1 = (int)((long)c * (t + 1) / team);
    nest_kernel_bn_backward_dx(dy, x, n, c, s, c0, c1, center, ka, kb, kc, dx);
  }
  return NEST_OK;
}

const nest_layer_ops nest_batchnorm_ops = {
    .kind = "batchnorm",
    .setup = bn_setup,
    .forward = bn_forward,
    .backward = bn_backward,
    .cleanup = NULL,
};
