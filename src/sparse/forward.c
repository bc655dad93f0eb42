/* forward.c — nest_sparse_forward: run the compact program (sparse_internal.h) over tiles of T
 * samples, tiles spread over OpenMP threads, each thread with its own preallocated buffers.
 *
 * Kernels (x = the op's input buffer, y = its output buffer, tile layout [C, H, W, T]):
 *   dense   y[r, 0..T) = bias[r] + Σ_k values[k] · x[colidx[k], 0..T)   (column-tiled CSR:
 *           one weight times T samples; T = 1 is per-sample CSR)
 *   conv    y[r] = bias[r] (+ bias_plane[r]), then per segment and per run of output positions
 *           (p, q0..q1): y[r, p, q, :] += Σ_taps w · x[tap + (p*s, q*s), :], the tap sum taken
 *           in registers over chunks of SP_V consecutive (q, t) elements (stride 1: a run's
 *           (q, t) elements are contiguous in x and y), then added to y once per segment
 *   pool    window maxima (clipped windows, so padding never wins)
 *   affine  y = fmaf(x, scale, shift)
 *   each then max(y, 0) when the op has relu.
 * Order of every output element's sum: bias first, then segments in order, each segment's
 * taps in order (dense: nonzeros in order), all with fmaf — the same for any T, chunk position
 * or thread, hence bit-identical results for any thread count, tile and batch size. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "sparse_internal.h"

/* Lanes of a conv chunk: 16 floats = one AVX-512 register, two AVX2 ones. */
#define SP_V 16

int nest_sparse_tile_for(const nest_sparse *s, int n) {
  if (s->tile_opt) return s->tile_opt;
  if (s->tile_cap < 16 || n < 4) return 1;
  int t = 16;
  while (t < s->tile_cap && n >= 4 * t) t *= 2; /* at least two tiles of the larger size */
  return t;
}

/* Position (c, h, w) of an op's output in its bordered output buffer, in elements of T. */
static inline size_t out_pos(const sp_op *op, int c, int h, int w) {
  const size_t hp = (size_t)op->out.h + 2 * op->bout, wp = (size_t)op->out.w + 2 * op->bout;
  return ((size_t)c * hp + (size_t)h + op->bout) * wp + (size_t)w + op->bout;
}

/* ---- dense: column-tiled CSR ----------------------------------------------------------------- */

static inline __attribute__((always_inline)) void dense_rows(const sp_op *op,
                                                            const float *restrict x,
                                                            float *restrict y, const int T) {
  for (int r = 0; r < op->rows; ++r) {
    float acc[64];
    const float b = op->bias[r];
    for (int j = 0; j < T; ++j) acc[j] = b;
    for (int32_t k = op->rowptr[r]; k < op->rowptr[r + 1]; ++k) {
      const float w = op->values[k];
      const float *restrict xp = x + (size_t)op->colidx[k] * T;
      for (int j = 0; j < T; ++j) acc[j] = fmaf(w, xp[j], acc[j]);
    }
    float *restrict yr = y + out_pos(op, r, 0, 0) * T;
    if (op->relu)
      for (int j = 0; j < T; ++j) yr[j] = acc[j] > 0.0f ? acc[j] : 0.0f;
    else
      for (int j = 0; j < T; ++j) yr[j] = acc[j];
  }
}

/* ---- conv: taps over runs ---------------------------------------------------------------------- */

/* y[0..L) += Σ_k w[k] · x[toff[k]*T + (0..L)], in chunks of SP_V held in registers. */
static inline void conv_run(const float *restrict x, size_t T, const int32_t *restrict toff,
                            const float *restrict w, int ntap, size_t L, float *restrict y) {
  size_t c0 = 0;
  for (; c0 + SP_V <= L; c0 += SP_V) {
    float acc[SP_V];
    for (int j = 0; j < SP_V; ++j) acc[j] = 0.0f;
    for (int k = 0; k < ntap; ++k) {
      const float *restrict xp = x + (size_t)toff[k] * T + c0;
      const float wk = w[k];
#pragma omp simd
      for (int j = 0; j < SP_V; ++j) acc[j] = fmaf(wk, xp[j], acc[j]);
    }
#pragma omp simd
    for (int j = 0; j < SP_V; ++j) y[c0 + j] += acc[j];
  }
  if (c0 == L) return;
  const int len = (int)(L - c0);
  float acc[SP_V];
  for (int j = 0; j < SP_V; ++j) acc[j] = 0.0f;
  for (int k = 0; k < ntap; ++k) {
    const float *restrict xp = x + (size_t)toff[k] * T + c0;
    const float wk = w[k];
    for (int j = 0; j < len; ++j) acc[j] = fmaf(wk, xp[j], acc[j]);
  }
  for (int j = 0; j < len; ++j) y[c0 + j] += acc[j];
}

/* One run (p, q0..q1) of segment g of output map r. */
static inline void conv_seg_run(const sp_op *op, const sp_seg *g, const float *x, float *yo,
                                size_t T, int p, int q0, int q1) {
  const size_t s = (size_t)op->stride, wp = (size_t)op->in.w + 2 * op->pad;
  const size_t owp = (size_t)op->out.w + 2 * op->bout;
  const float *xb = x + ((size_t)p * s * wp + (size_t)q0 * s) * T;
  float *yb = yo + (((size_t)p + op->bout) * owp + (size_t)q0 + op->bout) * T;
  const int32_t *toff = op->toff + g->t0;
  const float *w = op->values + g->t0;
  const int ntap = g->t1 - g->t0;
  if (s == 1) {
    conv_run(xb, T, toff, w, ntap, (size_t)(q1 - q0) * T, yb);
    return;
  }
  for (int q = q0; q < q1; ++q)
    conv_run(xb + (size_t)(q - q0) * s * T, T, toff, w, ntap, T, yb + (size_t)(q - q0) * T);
}

static void conv_op(const sp_op *op, const float *restrict x, float *restrict y, size_t T) {
  const int OH = op->out.h, OW = op->out.w;
  const size_t n = (size_t)OH * OW;
  for (int r = 0; r < op->rows; ++r) {
    float *yo = y + out_pos(op, r, 0, 0) * T - out_pos(op, 0, 0, 0) * T; /* map r, border incl. */
    const float *bp = op->bias_plane ? op->bias_plane + (size_t)r * n : NULL;
    for (int p = 0; p < OH; ++p) {
      float *yr = y + out_pos(op, r, p, 0) * T;
      for (int q = 0; q < OW; ++q) {
        const float b = bp ? op->bias[r] + bp[(size_t)p * OW + q] : op->bias[r];
        for (size_t t = 0; t < T; ++t) yr[(size_t)q * T + t] = b;
      }
    }
    for (int32_t gi = op->segptr[r]; gi < op->segptr[r + 1]; ++gi) {
      const sp_seg *g = &op->segs[gi];
      if (g->r0 < 0) {
        for (int p = 0; p < OH; ++p) conv_seg_run(op, g, x, yo, T, p, 0, OW);
        continue;
      }
      for (int32_t ri = g->r0; ri < g->r1; ++ri)
        conv_seg_run(op, g, x, yo, T, op->runs[ri].p, op->runs[ri].q0, op->runs[ri].q1);
    }
    if (!op->relu) continue;
    for (int p = 0; p < OH; ++p) {
      float *yr = y + out_pos(op, r, p, 0) * T;
      for (size_t j = 0; j < (size_t)OW * T; ++j) yr[j] = yr[j] > 0.0f ? yr[j] : 0.0f;
    }
  }
}

/* ---- pool, affine ------------------------------------------------------------------------------ */

static inline __attribute__((always_inline)) void pool_rows(const sp_op *op,
                                                           const float *restrict x,
                                                           float *restrict y, const int T) {
  const int H = op->in.h, W = op->in.w, s = op->stride, pad = op->pad;
  for (int c = 0; c < op->out.c; ++c)
    for (int p = 0; p < op->out.h; ++p)
      for (int q = 0; q < op->out.w; ++q) {
        float m[64];
        for (int t = 0; t < T; ++t) m[t] = -INFINITY;
        for (int i = 0; i < op->kh; ++i) {
          const int r = p * s + i - pad;
          if (r < 0 || r >= H) continue;
          for (int j = 0; j < op->kw; ++j) {
            const int cc = q * s + j - pad;
            if (cc < 0 || cc >= W) continue;
            const float *restrict xp = x + (((size_t)c * H + r) * W + cc) * T;
            for (int t = 0; t < T; ++t) m[t] = xp[t] > m[t] ? xp[t] : m[t];
          }
        }
        float *restrict yp = y + out_pos(op, c, p, q) * T;
        if (op->relu)
          for (int t = 0; t < T; ++t) yp[t] = m[t] > 0.0f ? m[t] : 0.0f;
        else
          for (int t = 0; t < T; ++t) yp[t] = m[t];
      }
}

static void affine_op(const sp_op *op, const float *restrict x, float *restrict y, size_t T) {
  const size_t hw = (size_t)op->in.h * op->in.w;
  for (int c = 0; c < op->in.c; ++c)
    for (int h = 0; h < op->in.h; ++h) {
      const float *restrict xr = x + ((size_t)c * hw + (size_t)h * op->in.w) * T;
      float *restrict yr = y + out_pos(op, c, h, 0) * T;
      const float a = op->scale[c], b = op->shift[c];
      for (size_t j = 0; j < (size_t)op->in.w * T; ++j) {
        const float v = fmaf(xr[j], a, b);
        yr[j] = op->relu && !(v > 0.0f) ? 0.0f : v;
      }
    }
}

#define SP_TILE_FUNCS(TW)                                                                      \
  static void dense_t##TW(const sp_op *op, const float *x, float *y) { dense_rows(op, x, y, TW); } \
  static void pool_t##TW(const sp_op *op, const float *x, float *y) { pool_rows(op, x, y, TW); }
SP_TILE_FUNCS(1)
SP_TILE_FUNCS(16)
SP_TILE_FUNCS(32)
SP_TILE_FUNCS(64)

static void run_op(const sp_op *op, const float *x, float *y, int T) {
  switch (op->kind) {
  case NEST_SPARSE_DENSE:
    if (T == 1) dense_t1(op, x, y);
    else if (T == 16) dense_t16(op, x, y);
    else if (T == 32) dense_t32(op, x, y);
    else dense_t64(op, x, y);
    break;
  case NEST_SPARSE_CONV:
    conv_op(op, x, y, (size_t)T);
    break;
  case NEST_SPARSE_POOL:
    if (T == 1) pool_t1(op, x, y);
    else if (T == 16) pool_t16(op, x, y);
    else if (T == 32) pool_t32(op, x, y);
    else pool_t64(op, x, y);
    break;
  case NEST_SPARSE_AFFINE:
    affine_op(op, x, y, (size_t)T);
    break;
  }
}

/* ---- tiles ------------------------------------------------------------------------------------- */

/* Buffer 0 of a tile = samples s0 .. s0+nt of x (row-major [n, C, H, W]) in the tile layout,
 * compact input channels only, lanes nt..T zero. */
static void load_input(const nest_sparse *s, const float *x, int nt, int T, float *buf) {
  const int H = s->in_shape.h, W = s->in_shape.w, b = s->ops[0].bin;
  const size_t D = nest_shape_size(s->in_shape), wp = (size_t)W + 2 * b;
  const size_t hp = (size_t)H + 2 * b;
  for (int c = 0; c < s->in_c; ++c)
    for (int h = 0; h < H; ++h) {
      const float *src = x + ((size_t)s->in_chan[c] * H + h) * W;
      float *dst = buf + (((size_t)c * hp + h + b) * wp + b) * T;
      for (int w = 0; w < W; ++w) {
        float *d = dst + (size_t)w * T;
        for (int t = 0; t < nt; ++t) d[t] = src[(size_t)t * D + w];
        for (int t = nt; t < T; ++t) d[t] = 0.0f;
      }
    }
}

static void run_tile(nest_sparse *s, int tid, int T, int s0, int nt, const float *x,
                     float *logits) {
  float *base = s->arena + (size_t)tid * s->thread_floats;
  if (s->thread_tile[tid] != T) { /* new layout: the zero borders must be zero again */
    memset(base, 0, sizeof(float) * s->thread_floats);
    s->thread_tile[tid] = T;
  }
  const size_t D = nest_shape_size(s->in_shape), ncls = (size_t)s->nclasses;
  const int direct = T == 1; /* tile layout == row-major: read x, write logits in place */
  const float *in = x + (size_t)s0 * D;
  if (!direct || s->ops[0].bin != 0 || s->in_c != s->in_shape.c) {
    load_input(s, in, nt, T, base);
    in = base;
  }
  for (int k = 0; k < s->nops; ++k) {
    const float *xk = k == 0 ? in : base + (size_t)T * s->buf_pos[k];
    float *yk = direct && k == s->nops - 1 ? logits + (size_t)s0 * ncls
                                           : base + (size_t)T * s->buf_pos[k + 1];
    run_op(&s->ops[k], xk, yk, T);
  }
  if (direct) return;
  const float *outb = base + (size_t)T * s->buf_pos[s->nops];
  for (int t = 0; t < nt; ++t)
    for (size_t o = 0; o < ncls; ++o) logits[(size_t)(s0 + t) * ncls + o] = outb[o * T + t];
}

nest_status nest_sparse_forward(nest_sparse *s, int n, int nthreads, const float *x,
                                float *logits) {
  if (n < 0 || n > s->max_batch)
    return NEST_ERR(NEST_ERR_ARG, "nest_sparse_forward: %d samples, built for at most %d", n,
                    s->max_batch);
  if (nthreads < 1 || nthreads > s->nthreads)
    return NEST_ERR(NEST_ERR_ARG, "nest_sparse_forward: %d threads, built for 1 to %d", nthreads,
                    s->nthreads);
  if (n == 0) return NEST_OK;
  const int T = nest_sparse_tile_for(s, n);
  NEST_ASSERT(T <= s->tmax);
  const int ntiles = (n + T - 1) / T, nt = nthreads < ntiles ? nthreads : ntiles;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int it = 0; it < ntiles; ++it) {
    const int s0 = it * T;
    run_tile(s, omp_get_thread_num(), T, s0, n - s0 < T ? n - s0 : T, x, logits);
  }
  return NEST_OK;
}
