/* forward.c — nest_sparse_forward: run the compact program (sparse_internal.h) over tiles of T
 * samples, tiles spread over OpenMP threads, each thread with its own preallocated buffers.
 *
 * Kernels (x = the op's input buffer, y = its output buffer, tile layout [C, H, W, T]):
 *   dense   y[r, 0..T) = bias[r] + Σ_k values[k] · x[colidx[k], 0..T)   (column-tiled CSR:
 *           one weight times T samples; T = 1 is per-sample CSR). An op with skip tensors
 *           gets x = the tile's arena base, its columns rebased onto the buffers its parts
 *           read (sparse_internal.h): the same kernels sum the chain's and the skip tensors'
 *           entries into one accumulator
 *   conv    y[r] = bias[r] (+ bias_plane[r]), then per segment and per run of output positions
 *           (p, q0..q1): y[r, p, q, :] = fma(w, x[tap + (p*s, q*s), :], y[...]) for the taps in
 *           order, y held in registers over chunks of SP_W consecutive (q, t) elements (stride 1:
 *           a run's (q, t) elements are contiguous in x and y); one-sample tiles run a
 *           stride-1 conv output-stationary over row chunks of the plane instead (conv_t1)
 *   pool    window maxima (clipped windows, so padding never wins)
 *   affine  y = fmaf(x, scale, shift)
 *   each then max(y, 0) when the op has relu.
 * Order of every output element's sum: bias first, then one fmaf per tap, segments in order and
 * each segment's taps in order (dense: nonzeros in order) — the same for any T, chunk position,
 * run / chunk form or thread, hence bit-identical results for any thread count, tile and batch
 * size. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"
#include "sparse_internal.h"

int nest_sparse_tile_for(const nest_sparse *s, int n, int nthreads) {
  if (s->tile_opt) return s->tile_opt;
  if (s->tile_cap < 16 || n < 4) return 1;
  int t = 16; /* doubled while the tile stays full and every thread keeps a tile */
  while (2 * t <= s->tile_cap && 2 * t <= n && (n + 2 * t - 1) / (2 * t) >= nthreads) t *= 2;
  return t;
}

/* Position (c, h, w) of an op's output in its bordered output buffer, in elements of T. */
static inline size_t out_pos(const sp_op *op, int c, int h, int w) {
  const size_t hp = (size_t)op->out.h + 2 * op->bout, wp = (size_t)op->out.w + 2 * op->bout;
  return ((size_t)c * hp + (size_t)h + op->bout) * wp + (size_t)w + op->bout;
}

/* ---- dense: column-tiled CSR ----------------------------------------------------------------- */

/* T = 1 (per-sample CSR): one scalar chain per row, four rows interleaved over their common
 * length (independent chains: the FMA latency hides; each row still sums in its own order). */
static inline float dense_finish(const sp_op *op, int32_t k, int32_t e, const float *x, float a) {
  for (; k < e; ++k) a = fmaf(op->values[k], x[op->colidx[k]], a);
  return op->relu && !(a > 0.0f) ? 0.0f : a;
}

static void dense_t1(const sp_op *op, const float *restrict x, float *restrict y) {
  const float *restrict v = op->values;
  const int32_t *restrict ci = op->colidx, *rp = op->rowptr;
  const size_t step = out_pos(op, 1, 0, 0) - out_pos(op, 0, 0, 0);
  float *restrict y0 = y + out_pos(op, 0, 0, 0);
  int r = 0;
  for (; r + 4 <= op->rows; r += 4) {
    int32_t k0 = rp[r], k1 = rp[r + 1], k2 = rp[r + 2], k3 = rp[r + 3];
    int32_t n = k1 - k0;
    if (rp[r + 2] - k1 < n) n = rp[r + 2] - k1;
    if (rp[r + 3] - k2 < n) n = rp[r + 3] - k2;
    if (rp[r + 4] - k3 < n) n = rp[r + 4] - k3;
    float a0 = op->bias[r], a1 = op->bias[r + 1], a2 = op->bias[r + 2], a3 = op->bias[r + 3];
    for (int32_t i = 0; i < n; ++i) {
      a0 = fmaf(v[k0 + i], x[ci[k0 + i]], a0);
      a1 = fmaf(v[k1 + i], x[ci[k1 + i]], a1);
      a2 = fmaf(v[k2 + i], x[ci[k2 + i]], a2);
      a3 = fmaf(v[k3 + i], x[ci[k3 + i]], a3);
    }
    y0[(size_t)r * step] = dense_finish(op, k0 + n, rp[r + 1], x, a0);
    y0[(size_t)(r + 1) * step] = dense_finish(op, k1 + n, rp[r + 2], x, a1);
    y0[(size_t)(r + 2) * step] = dense_finish(op, k2 + n, rp[r + 3], x, a2);
    y0[(size_t)(r + 3) * step] = dense_finish(op, k3 + n, rp[r + 4], x, a3);
  }
  for (; r < op->rows; ++r)
    y0[(size_t)r * step] = dense_finish(op, rp[r], rp[r + 1], x, op->bias[r]);
}

/* T = 1 in SELL-W form: W rows per vector multiply-add, x gathered. */
static void dense_sell(const sp_op *op, const float *restrict x, float *restrict y) {
  const size_t step = out_pos(op, 1, 0, 0) - out_pos(op, 0, 0, 0);
  float *restrict y0 = y + out_pos(op, 0, 0, 0);
  float tmp[SP_W];
  for (int g = 0; g < op->nslices; ++g) {
    const int32_t *lens = op->sell_lens + (size_t)g * SP_W;
    const float *v = op->sell_val + op->sell_off[g];
    const int32_t *c = op->sell_col + op->sell_off[g];
    vf a = v_load(op->sell_bias + (size_t)g * SP_W);
    for (int32_t k = 0; k < op->sell_len[g]; ++k) {
      const vmask m = v_lanes_gt(lens, k);
      a = v_fmam(v_load(v + (size_t)k * SP_W), v_gatherm(x, c + (size_t)k * SP_W, m), a, m);
    }
    v_store(tmp, op->relu ? v_max(a, v_zero()) : a);
    for (int j = 0; j < SP_W; ++j) {
      const int32_t r = op->sell_rows[(size_t)g * SP_W + j];
      if (r >= 0) y0[(size_t)r * step] = tmp[j];
    }
  }
}

/* T = NV * SP_W lanes: NV accumulators per row (independent chains), one broadcast weight. */
static inline __attribute__((always_inline)) void
dense_tile(const sp_op *op, const float *restrict x, float *restrict y, const int NV) {
  const size_t T = (size_t)NV * SP_W;
  for (int r = 0; r < op->rows; ++r) {
    vf a[64 / SP_W];
    const vf b = v_set1(op->bias[r]);
    for (int i = 0; i < NV; ++i) a[i] = b;
    for (int32_t k = op->rowptr[r]; k < op->rowptr[r + 1]; ++k) {
      const vf w = v_set1(op->values[k]);
      const float *xp = x + (size_t)op->colidx[k] * T;
      for (int i = 0; i < NV; ++i) a[i] = v_fma(w, v_load(xp + i * SP_W), a[i]);
    }
    float *yr = y + out_pos(op, r, 0, 0) * T;
    for (int i = 0; i < NV; ++i) v_store(yr + i * SP_W, op->relu ? v_max(a[i], v_zero()) : a[i]);
  }
}

/* ---- conv: taps over runs -------------------------------------------------------------------- */

/* y[c*SP_W ..] = fma(w[k], x[toff[k]*T + c*SP_W ..], y[..]) for the taps k in order, for NCH
 * consecutive chunks c of SP_W lanes held in registers; with MASKED the last chunk has only
 * the lanes of `last`. */
static inline __attribute__((always_inline)) void conv_chunks(const float *x, size_t T,
                                                              const int32_t *toff, const float *w,
                                                              int ntap, float *y, const int NCH,
                                                              const int MASKED, vmask last) {
  vf a[4];
  for (int c = 0; c < NCH; ++c)
    a[c] = MASKED && c == NCH - 1 ? v_loadm(y + c * SP_W, last) : v_load(y + c * SP_W);
  for (int k = 0; k < ntap; ++k) {
    const float *xp = x + (size_t)toff[k] * T;
    const vf wk = v_set1(w[k]);
    for (int c = 0; c < NCH; ++c)
      a[c] = v_fma(
          wk, MASKED && c == NCH - 1 ? v_loadm(xp + c * SP_W, last) : v_load(xp + c * SP_W), a[c]);
  }
  for (int c = 0; c < NCH; ++c) {
    if (MASKED && c == NCH - 1)
      v_storem(y + c * SP_W, last, a[c]);
    else
      v_store(y + c * SP_W, a[c]);
  }
}

/* y[0..L) = Σ-by-fma of the taps over x[toff[k]*T + (0..L)]: groups of 4 chunks, then the rest. */
static inline void conv_run(const float *x, size_t T, const int32_t *toff, const float *w, int ntap,
                            size_t L, float *y) {
  size_t c0 = 0;
  for (; c0 + 4 * SP_W <= L; c0 += 4 * SP_W)
    conv_chunks(x + c0, T, toff, w, ntap, y + c0, 4, 0, v_mask(SP_W));
  const size_t rest = L - c0;
  if (!rest) return;
  const int nch = (int)((rest + SP_W - 1) / SP_W), tail = (int)(rest % SP_W);
  const vmask m = v_mask(tail);
  x += c0;
  y += c0;
  if (tail) {
    if (nch == 1)
      conv_chunks(x, T, toff, w, ntap, y, 1, 1, m);
    else if (nch == 2)
      conv_chunks(x, T, toff, w, ntap, y, 2, 1, m);
    else if (nch == 3)
      conv_chunks(x, T, toff, w, ntap, y, 3, 1, m);
    else
      conv_chunks(x, T, toff, w, ntap, y, 4, 1, m);
  } else {
    if (nch == 1)
      conv_chunks(x, T, toff, w, ntap, y, 1, 0, m);
    else if (nch == 2)
      conv_chunks(x, T, toff, w, ntap, y, 2, 0, m);
    else
      conv_chunks(x, T, toff, w, ntap, y, 3, 0, m);
  }
}

/* One run (p, q0..q1) of segment g; yo = output map r's bordered plane. */
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

/* N alike row chunks c[0 .. N) of output map r (sp_ochunk): N independent chains. */
static inline __attribute__((always_inline)) void
conv_t1_group(const sp_op *op, int r, const sp_ochunk *c, const float *x, float *y, const int N) {
  const size_t wp = (size_t)op->in.w + 2 * op->pad;
  const int OW = op->out.w;
  const vmask all = v_mask(OW - c[0].q0);
  const float *bp = op->bias_plane ? op->bias_plane + (size_t)r * op->out.h * OW : NULL;
  const float *xb[4];
  vf a[4];
  for (int i = 0; i < N; ++i) {
    xb[i] = x + (size_t)c[i].p * wp + (size_t)c[i].q0;
    a[i] = v_set1(op->bias[r]);
    if (bp) a[i] = v_add(a[i], v_loadm(bp + (size_t)c[i].p * OW + c[i].q0, all));
  }
  for (int32_t j = 0; j < c[0].e1 - c[0].e0; ++j) {
    const sp_seg *g = &op->segs[op->oent[c[0].e0 + j].seg];
    vmask m[4];
    for (int i = 0; i < N; ++i) m[i] = v_maskbits(op->oent[c[i].e0 + j].bits);
    for (int32_t k = g->t0; k < g->t1; ++k) {
      const vf w = v_set1(op->values[k]);
      const int32_t t = op->toff[k];
      for (int i = 0; i < N; ++i) a[i] = v_fmam(w, v_loadm(xb[i] + t, m[i]), a[i], m[i]);
    }
  }
  for (int i = 0; i < N; ++i)
    v_storem(y + out_pos(op, r, c[i].p, c[i].q0), all, op->relu ? v_max(a[i], v_zero()) : a[i]);
}

/* A stride-1 conv op in a one-sample tile, output-stationary (sparse_internal.h, sp_ochunk):
 * each row chunk of each output map gets bias, its entries' taps (masked to the positions each
 * covers) and ReLU in registers; the same fmaf sequence per element as conv_op. */
static void conv_t1(const sp_op *op, const float *restrict x, float *restrict y) {
  for (int r = 0; r < op->rows; ++r)
    for (int32_t ci = op->ochptr[r]; ci < op->ochptr[r + 1]; ci += op->och[ci].n) {
      const sp_ochunk *c = &op->och[ci];
      switch (c->n) {
      case 4: conv_t1_group(op, r, c, x, y, 4); break;
      case 3: conv_t1_group(op, r, c, x, y, 3); break;
      case 2: conv_t1_group(op, r, c, x, y, 2); break;
      default: conv_t1_group(op, r, c, x, y, 1); break;
      }
    }
}

static void conv_op(const sp_op *op, const float *restrict x, float *restrict y, size_t T) {
  const int OH = op->out.h, OW = op->out.w;
  const size_t n = (size_t)OH * OW;
  const size_t plane = ((size_t)OH + 2 * op->bout) * ((size_t)OW + 2 * op->bout) * T;
  for (int r = 0; r < op->rows; ++r) {
    float *yo = y + (size_t)r * plane; /* map r with its border */
    const float *bp = op->bias_plane ? op->bias_plane + (size_t)r * n : NULL;
    for (int p = 0; p < OH; ++p) {
      float *yr = y + out_pos(op, r, p, 0) * T;
      const float b = op->bias[r];
      if (!bp) {
        for (size_t j = 0; j < (size_t)OW * T; ++j) yr[j] = b;
        continue;
      }
      for (int q = 0; q < OW; ++q)
        for (size_t t = 0; t < T; ++t) yr[(size_t)q * T + t] = b + bp[(size_t)p * OW + q];
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

/* ---- pool, affine ---------------------------------------------------------------------------- */

/* The window of output (p, q), clipped to the input (padding never wins). */
typedef struct {
  int r0, r1, c0, c1;
} window;

static inline window pool_window(const sp_op *op, int p, int q) {
  window w;
  w.r0 = p * op->stride - op->pad;
  w.c0 = q * op->stride - op->pad;
  w.r1 = w.r0 + op->kh < op->in.h ? w.r0 + op->kh : op->in.h;
  w.c1 = w.c0 + op->kw < op->in.w ? w.c0 + op->kw : op->in.w;
  if (w.r0 < 0) w.r0 = 0;
  if (w.c0 < 0) w.c0 = 0;
  return w;
}

/* T = 1: without padding every window lies inside the plane (OH = (H - kh) / s + 1), so no
 * clipping. */
static void pool_t1(const sp_op *op, const float *restrict x, float *restrict y) {
  const int H = op->in.h, W = op->in.w, OW = op->out.w, s = op->stride;
  for (int c = 0; c < op->out.c; ++c)
    for (int p = 0; p < op->out.h; ++p) {
      float *restrict yr = y + out_pos(op, c, p, 0);
      if (op->pad == 0 && op->kh == 2 && op->kw == 2 && s == 2) { /* LeNet's pools, unrolled */
        const float *restrict a = x + ((size_t)c * H + (size_t)p * 2) * W, *restrict b = a + W;
        for (int q = 0; q < OW; ++q) {
          float m = -INFINITY; /* the window in order, as below */
          m = a[2 * q] > m ? a[2 * q] : m;
          m = a[2 * q + 1] > m ? a[2 * q + 1] : m;
          m = b[2 * q] > m ? b[2 * q] : m;
          yr[q] = b[2 * q + 1] > m ? b[2 * q + 1] : m;
        }
      } else if (op->pad == 0) {
        const float *restrict x0 = x + ((size_t)c * H + (size_t)p * s) * W;
        for (int q = 0; q < OW; ++q) {
          float m = -INFINITY; /* in a register: no store-to-load round trips */
          for (int i = 0; i < op->kh; ++i)
            for (int j = 0; j < op->kw; ++j) {
              const float v = x0[(size_t)i * W + (size_t)q * s + j];
              m = v > m ? v : m;
            }
          yr[q] = m;
        }
      } else {
        for (int q = 0; q < OW; ++q) {
          const window w = pool_window(op, p, q);
          float m = -INFINITY;
          for (int r = w.r0; r < w.r1; ++r)
            for (int cc = w.c0; cc < w.c1; ++cc) {
              const float v = x[((size_t)c * H + r) * W + cc];
              m = v > m ? v : m;
            }
          yr[q] = m;
        }
      }
      if (op->relu)
        for (int q = 0; q < OW; ++q) yr[q] = yr[q] > 0.0f ? yr[q] : 0.0f;
    }
}

static void pool_tile(const sp_op *op, const float *restrict x, float *restrict y, size_t T) {
  const int H = op->in.h, W = op->in.w;
  for (int c = 0; c < op->out.c; ++c)
    for (int p = 0; p < op->out.h; ++p)
      for (int q = 0; q < op->out.w; ++q) {
        const window w = pool_window(op, p, q);
        float *yp = y + out_pos(op, c, p, q) * T;
        for (size_t t = 0; t < T; t += SP_W) {
          vf m = v_set1(-INFINITY);
          for (int r = w.r0; r < w.r1; ++r)
            for (int cc = w.c0; cc < w.c1; ++cc)
              m = v_max(v_load(x + (((size_t)c * H + r) * W + cc) * T + t), m);
          v_store(yp + t, op->relu ? v_max(m, v_zero()) : m);
        }
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

static void dense_t16(const sp_op *op, const float *x, float *y) {
  dense_tile(op, x, y, 16 / SP_W);
}
static void dense_t32(const sp_op *op, const float *x, float *y) {
  dense_tile(op, x, y, 32 / SP_W);
}
static void dense_t64(const sp_op *op, const float *x, float *y) {
  dense_tile(op, x, y, 64 / SP_W);
}

static void run_op(const nest_sparse *s, const sp_op *op, const float *x, float *y, int T) {
  switch (op->kind) {
  case NEST_SPARSE_DENSE:
    if (T == 1)
      (s->sell ? dense_sell : dense_t1)(op, x, y);
    else if (T == 16)
      dense_t16(op, x, y);
    else if (T == 32)
      dense_t32(op, x, y);
    else
      dense_t64(op, x, y);
    break;
  case NEST_SPARSE_CONV:
    if (T == 1 && op->ochptr)
      conv_t1(op, x, y);
    else
      conv_op(op, x, y, (size_t)T);
    break;
  case NEST_SPARSE_POOL:
    if (T == 1)
      pool_t1(op, x, y);
    else
      pool_tile(op, x, y, (size_t)T);
    break;
  case NEST_SPARSE_AFFINE: affine_op(op, x, y, (size_t)T); break;
  }
}

/* ---- tiles ----------------------------------------------------------------------------------- */

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

#ifdef SP_PROFILE
#include <stdio.h>
static double sp_prof[64];
static const nest_sparse *sp_prof_s;
static void sp_prof_dump(void) {
  for (int k = 0; sp_prof_s && k < sp_prof_s->nops; ++k)
    fprintf(stderr, "op %d %s: %.3f ms\n", k, sp_prof_s->ops[k].name, 1e3 * sp_prof[k]);
}
#endif
static void run_tile(nest_sparse *s, int tid, int T, int s0, int nt, const float *x,
                     float *logits) {
  float *base = s->arena + (size_t)tid * s->thread_floats;
#ifdef SP_PROFILE
  if (!sp_prof_s) atexit(sp_prof_dump);
  sp_prof_s = s;
#endif
  if (s->thread_tile[tid] != T) { /* new layout: the zero borders must be zero again */
    memset(base, 0, sizeof(float) * s->thread_floats);
    s->thread_tile[tid] = T;
  }
  const size_t D = nest_shape_size(s->in_shape), ncls = (size_t)s->nclasses;
  const int direct = T == 1; /* tile layout == row-major: read x, write logits in place */
  const float *in = x + (size_t)s0 * D;
  if (!direct || s->ops[0].bin != 0 || s->in_c != s->in_shape.c || s->in_arena) {
    load_input(s, in, nt, T, base);
    in = base;
  }
  for (int k = 0; k < s->nops; ++k) {
    const float *xk = k == 0           ? in
                      : s->ops[k].nsrc > 1 ? base /* columns rebased onto the arena */
                                           : base + (size_t)T * s->buf_pos[k];
    float *yk = direct && k == s->nops - 1 ? logits + (size_t)s0 * ncls
                                           : base + (size_t)T * s->buf_pos[k + 1];
#ifdef SP_PROFILE
    const double t0_ = omp_get_wtime();
#endif
    run_op(s, &s->ops[k], xk, yk, T);
#ifdef SP_PROFILE
    sp_prof[k] += omp_get_wtime() - t0_;
#endif
  }
  if (direct) return;
  const float *outb = base + (size_t)T * s->buf_pos[s->nops];
  for (int t = 0; t < nt; ++t)
    for (size_t o = 0; o < ncls; ++o) logits[(size_t)(s0 + t) * ncls + o] = outb[o * T + t];
}

nest_status nest_sparse_forward(nest_sparse *s, int n, int nthreads, const float *x,
                                float *logits) {
  if (n < 0) return NEST_ERR(NEST_ERR_ARG, "nest_sparse_forward: %d samples", n);
  if (nthreads < 1 || nthreads > s->nthreads)
    return NEST_ERR(NEST_ERR_ARG, "nest_sparse_forward: %d threads, built for 1 to %d", nthreads,
                    s->nthreads);
  if (n == 0) return NEST_OK;
  int T = nest_sparse_tile_for(s, n, nthreads);
  if (T > s->tmax) T = s->tmax; /* more samples than max_batch: more tiles */
  const int ntiles = (n + T - 1) / T, nt = nthreads < ntiles ? nthreads : ntiles;
  if (nt == 1) { /* no OpenMP region at all: it costs as much as a small model's forward */
    for (int it = 0; it < ntiles; ++it)
      run_tile(s, 0, T, it * T, n - it * T < T ? n - it * T : T, x, logits);
    return NEST_OK;
  }
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int it = 0; it < ntiles; ++it) {
    const int s0 = it * T;
    run_tile(s, omp_get_thread_num(), T, s0, n - s0 < T ? n - s0 : T, x, logits);
  }
  return NEST_OK;
}
