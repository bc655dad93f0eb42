/* conv2d.c — 2-D convolution by im2col + sgemm, OpenMP over samples (groups or row chunks).
 *
 * Shapes: x [n, C, H, W], W [OC, C, kh, kw] (masked: dormant weights are 0, so the forward
 * uses W as is), b [OC], y [n, OC, OH, OW] with OH = (H + 2p - kh)/s + 1 (same for OW).
 * Per sample, col[K, N] = im2col(x_s) with K = C*kh*kw, N = OH*OW, and
 *   forward   y_s  = W[OC, K] · col + b
 *   backward  dW  += dy_s[OC, N] · colᵀ     (full dense GEMM: dormant positions included)
 *             db  += row sums of dy_s
 *             dx_s = col2im(Wᵀ · dy_s)       (skipped when dx == NULL)
 * The bias rides along in the GEMMs: col gets an extra row of ones, so
 *   y_s = [W | b] · [col; 1]   and   [dW | db] += dy_s · [col; 1]ᵀ
 * (no separate bias pass over y or dy).
 * Small GEMMs do not scale over two BLAS threads, so the batch is split instead: OpenMP
 * threads take work items and run single-threaded sgemm (OpenBLAS does not thread inside a
 * parallel region). A work item is either a group of G small samples laid side by side
 * (col[K+1, G*N]; LeNet-5 conv2 has N = 64, one sample alone would starve the GEMM) or one
 * large sample cut into chunks of R output rows, so col stays in L2 instead of streaming
 * megabytes through L3 (AlexNet conv1: 1.1M floats per sample; VGG conv1: 29M).
 * Each thread accumulates [dW | db] into its own partial in l->ws; the partials are added
 * into g[] in thread order, so results are deterministic for a fixed thread count. With a
 * single work item the region is skipped and OpenBLAS may thread the GEMMs itself (its
 * budget: omp_get_max_threads()). No allocation here: setup sizes l->ws for nthreads. */
#include <cblas.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "nest/kernels.h"
#include "nest/layer.h"

/* Tuning (measured with tests/bench/bench_layers):
 * CONV_TARGET_COLS  columns per GEMM worth gathering several small samples for;
 * CONV_COL_BUDGET   floats of col per work item, to keep it in L2 (per core: 2 MB);
 * CONV_MIN_COLS     fewest columns of a row chunk (narrower GEMMs lose more than L2 gains). */
#ifndef CONV_TARGET_COLS
#define CONV_TARGET_COLS 256
#endif
#ifndef CONV_COL_BUDGET
#define CONV_COL_BUDGET (256 * 1024)
#endif
#ifndef CONV_MIN_COLS
#define CONV_MIN_COLS 256
#endif

static size_t round16(size_t v) { return (v + 15) & ~(size_t)15; }

static nest_conv_geom conv_geom(const nest_layer *l) {
  return nest_conv_geom_make(l->in.c, l->in.h, l->in.w, l->hp.kh, l->hp.kw, l->hp.stride,
                             l->hp.pad);
}

/* How a call splits into work items. Either groups of G whole samples side by side (small
 * samples: LeNet) or single samples cut into chunks of R output rows (large samples: AlexNet
 * conv1, VGG), so that col[K+1, columns] stays near CONV_COL_BUDGET. */
typedef struct {
  int G; /* samples per work item; > 1 only when R == oh */
  int R; /* output rows per chunk */
} conv_plan;

static conv_plan conv_plan_make(size_t K, int oh, int ow, int n, int nt) {
  const size_t N = (size_t)oh * ow, colN = (K + 1) * N;
  conv_plan p = {1, oh};
  if (colN > CONV_COL_BUDGET) {
    int R = (int)(CONV_COL_BUDGET / ((K + 1) * ow)), rmin = (CONV_MIN_COLS + ow - 1) / ow;
    if (R < rmin) R = rmin;
    if (R < oh) p.R = R;
    return p;
  }
  int G = (int)((CONV_TARGET_COLS + N - 1) / N), per = (n + nt - 1) / nt;
  int gmax = (int)(CONV_COL_BUDGET / colN);
  if (G > gmax) G = gmax;
  if (G > per) G = per; /* at least one item per thread */
  p.G = G < 1 ? 1 : G;
  return p;
}

/* Workspace layout (floats, every block 64-byte aligned):
 *   Wb    [OC, K+1]          W with b appended as a last column (forward, shared)
 *   per thread t < nt:
 *     col [K+1, cols]        im2col of the item plus a row of ones (bias), later dcol
 *     tmp [OC, G*N]          gathered y / dy of a group (only when G > 1)
 *     dWb [OC, K+1]          this thread's dW with db as the last column */
typedef struct {
  size_t wb, col, tmp, part, thread, total;
} conv_ws;

static conv_ws conv_ws_layout(size_t K, int oh, int ow, size_t oc, int nt, conv_plan p) {
  const size_t N = (size_t)oh * ow, cols = p.G > 1 ? (size_t)p.G * N : (size_t)p.R * ow;
  conv_ws w;
  w.wb = round16(oc * (K + 1));
  w.col = round16((K + 1) * cols);
  w.tmp = p.G > 1 ? round16(oc * p.G * N) : 0;
  w.part = round16(oc * (K + 1));
  w.thread = w.col + w.tmp + w.part;
  w.total = 16 + w.wb + (size_t)nt * w.thread; /* 16: slack to align the base */
  return w;
}

static float *align64(float *p) { return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

static nest_status conv_setup(nest_layer *l, int max_batch, int nthreads) {
  nest_layer_hparams *hp = &l->hp;
  if (hp->kw == 0) hp->kw = hp->kh; /* square kernel by default */
  if (hp->stride == 0) hp->stride = 1;
  if (hp->out_c <= 0 || hp->kh <= 0 || hp->kw <= 0 || hp->stride < 1 || hp->pad < 0)
    return NEST_ERR(NEST_ERR_CONFIG,
                    "%s: conv2d needs out_c > 0, kernel > 0, stride >= 1, pad >= 0 (got "
                    "out_c=%d kernel=%dx%d stride=%d pad=%d)",
                    l->name, hp->out_c, hp->kh, hp->kw, hp->stride, hp->pad);
  if (l->in.c <= 0 || l->in.h <= 0 || l->in.w <= 0)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: conv2d has an empty input (%dx%dx%d)", l->name, l->in.c,
                    l->in.h, l->in.w);
  nest_conv_geom g = conv_geom(l);
  if (g.oh <= 0 || g.ow <= 0)
    return NEST_ERR(NEST_ERR_CONFIG,
                    "%s: input %dx%d too small for %dx%d kernel (stride %d, pad %d)", l->name,
                    l->in.h, l->in.w, hp->kh, hp->kw, hp->stride, hp->pad);
  const int oc = hp->out_c, c = l->in.c;
  l->out = (nest_shape){oc, g.oh, g.ow};
  nest_layer_declare_param(l, "W", 4, (int[]){oc, c, hp->kh, hp->kw}, NEST_INIT_HE, 1, 1,
                           c * hp->kh * hp->kw, oc * hp->kh * hp->kw);
  nest_layer_declare_param(l, "b", 1, (int[]){oc}, NEST_INIT_ZERO, 0, 0, c * hp->kh * hp->kw,
                           oc * hp->kh * hp->kw);
  const size_t K = (size_t)c * hp->kh * hp->kw;
  /* the largest plan any later call can use: G grows with n and shrinks with threads */
  conv_plan pmax = conv_plan_make(K, g.oh, g.ow, max_batch > 0 ? max_batch : 1, 1);
  l->ws_floats = conv_ws_layout(K, g.oh, g.ow, (size_t)oc, nthreads, pmax).total;
  l->cache_floats = 0;
  return NEST_OK;
}

static void fill_ones(float *p, size_t n) {
  for (size_t j = 0; j < n; ++j) p[j] = 1.0f;
}

/* col[K+1, gs*N] = [im2col of gs whole samples side by side; a row of ones] (the ones row
 * carries the bias through the GEMM). x points at the first sample, in_sz floats apart. */
static void group_cols(const nest_conv_geom *g, const float *x, size_t in_sz, int gs, size_t K,
                       float *col) {
  const size_t N = (size_t)g->oh * g->ow, ld = (size_t)gs * N;
  for (int s = 0; s < gs; ++s)
    nest_kernel_im2col(g, x + (size_t)s * in_sz, 0, g->oh, col + (size_t)s * N, ld);
  fill_ones(col + K * ld, ld);
}

/* y[n, OC, OH, OW] = conv(x[n, C, H, W], W) + b */
static nest_status conv_forward(nest_layer *l, const nest_ctx *ctx, const float *x, float *y) {
  const int n = ctx->n, nt = ctx->nthreads > 0 ? ctx->nthreads : 1, oc = l->hp.out_c;
  if (n == 0) return NEST_OK;
  const nest_conv_geom g = conv_geom(l);
  const int oh = g.oh, ow = g.ow;
  const size_t K = (size_t)g.c * g.kh * g.kw, N = (size_t)oh * ow;
  const size_t in_sz = nest_shape_size(l->in), out_sz = (size_t)oc * N;
  const conv_plan p = conv_plan_make(K, oh, ow, n, nt);
  const int G = p.G, nitems = (n + G - 1) / G;
  const conv_ws w = conv_ws_layout(K, oh, ow, (size_t)oc, nt, p);
  NEST_ASSERT(l->ws && w.total <= l->ws_floats);
  float *Wb = align64(l->ws), *threads = Wb + w.wb;
  /* Wb[OC, K+1] = [W | b] */
  for (int o = 0; o < oc; ++o) {
    memcpy(Wb + (size_t)o * (K + 1), l->p[0] + (size_t)o * K, sizeof(float) * K);
    Wb[(size_t)o * (K + 1) + K] = l->p[1][o];
  }

#pragma omp parallel num_threads(nt) if (nitems > 1)
  {
    float *col = threads + (size_t)omp_get_thread_num() * w.thread, *tmp = col + w.col;
#pragma omp for schedule(static)
    for (int it = 0; it < nitems; ++it) {
      const int s0 = it * G, gs = n - s0 < G ? n - s0 : G;
      if (gs > 1) {
        /* whole samples side by side: out[OC, gs*N] = Wb · [col; 1], then scatter to y */
        const size_t ld = (size_t)gs * N;
        group_cols(&g, x + (size_t)s0 * in_sz, in_sz, gs, K, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, oc, (int)ld, (int)K + 1, 1.0f, Wb,
                    (int)K + 1, col, (int)ld, 0.0f, tmp, (int)ld);
        for (int s = 0; s < gs; ++s)
          for (int o = 0; o < oc; ++o)
            memcpy(y + (size_t)(s0 + s) * out_sz + (size_t)o * N,
                   tmp + (size_t)o * ld + (size_t)s * N, sizeof(float) * N);
        continue;
      }
      /* one sample in chunks of R output rows: y_s[:, rows] = Wb · [col; 1] */
      const float *xs = x + (size_t)s0 * in_sz;
      float *ys = y + (size_t)s0 * out_sz;
      for (int r0 = 0; r0 < oh; r0 += p.R) {
        const int r1 = r0 + p.R < oh ? r0 + p.R : oh;
        const size_t len = (size_t)(r1 - r0) * ow;
        nest_kernel_im2col(&g, xs, r0, r1, col, len);
        fill_ones(col + K * len, len);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, oc, (int)len, (int)K + 1, 1.0f, Wb,
                    (int)K + 1, col, (int)len, 0.0f, ys + (size_t)r0 * ow, (int)N);
      }
    }
  }
  return NEST_OK;
}

static nest_status conv_backward(nest_layer *l, const nest_ctx *ctx, const float *x, const float *y,
                                 const float *dy, float *dx) {
  const int n = ctx->n, nt = ctx->nthreads > 0 ? ctx->nthreads : 1, oc = l->hp.out_c;
  const nest_conv_geom g = conv_geom(l);
  const int oh = g.oh, ow = g.ow;
  const size_t K = (size_t)g.c * g.kh * g.kw, N = (size_t)oh * ow;
  const size_t in_sz = nest_shape_size(l->in), out_sz = (size_t)oc * N;
  float *dW = l->g[0], *db = l->g[1];
  if (n == 0) {
    memset(dW, 0, sizeof(float) * (size_t)oc * K);
    memset(db, 0, sizeof(float) * (size_t)oc);
    return NEST_OK;
  }
  const conv_plan p = conv_plan_make(K, oh, ow, n, nt);
  const int G = p.G, nitems = (n + G - 1) / G;
  const conv_ws w = conv_ws_layout(K, oh, ow, (size_t)oc, nt, p);
  NEST_ASSERT(l->ws && w.total <= l->ws_floats);
  float *threads = align64(l->ws) + w.wb;
  const float *W = l->p[0];

#pragma omp parallel num_threads(nt) if (nitems > 1)
  {
    const int t = omp_get_thread_num(), team = omp_get_num_threads();
    float *col = threads + (size_t)t * w.thread, *tmp = col + w.col, *pW = tmp + w.tmp;
    memset(pW, 0, sizeof(float) * (size_t)oc * (K + 1));
#pragma omp for schedule(static)
    for (int it = 0; it < nitems; ++it) {
      const int s0 = it * G, gs = n - s0 < G ? n - s0 : G;
      if (gs > 1) {
        /* whole samples side by side; dY[OC, gs*N] gathered from dy */
        const size_t ld = (size_t)gs * N;
        group_cols(&g, x + (size_t)s0 * in_sz, in_sz, gs, K, col);
        for (int s = 0; s < gs; ++s)
          for (int o = 0; o < oc; ++o)
            memcpy(tmp + (size_t)o * ld + (size_t)s * N,
                   dy + (size_t)(s0 + s) * out_sz + (size_t)o * N, sizeof(float) * N);
        /* [dW | db][OC, K+1] += dY · [col; 1]ᵀ */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, oc, (int)K + 1, (int)ld, 1.0f, tmp,
                    (int)ld, col, (int)ld, 1.0f, pW, (int)K + 1);
        if (dx) {
          /* dcol[K, gs*N] = Wᵀ · dY (into col, no longer needed), then col2im */
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)ld, oc, 1.0f, W, (int)K,
                      tmp, (int)ld, 0.0f, col, (int)ld);
          for (int s = 0; s < gs; ++s) {
            float *dxs = dx + (size_t)(s0 + s) * in_sz;
            memset(dxs, 0, sizeof(float) * in_sz);
            nest_kernel_col2im_add(&g, col + (size_t)s * N, ld, 0, oh, dxs);
          }
        }
        continue;
      }
      /* one sample in chunks of R output rows; dY = the chunk's columns of dy_s */
      const float *xs = x + (size_t)s0 * in_sz, *dys = dy + (size_t)s0 * out_sz;
      float *dxs = dx ? dx + (size_t)s0 * in_sz : NULL;
      if (dxs) memset(dxs, 0, sizeof(float) * in_sz);
      for (int r0 = 0; r0 < oh; r0 += p.R) {
        const int r1 = r0 + p.R < oh ? r0 + p.R : oh;
        const size_t len = (size_t)(r1 - r0) * ow;
        const float *dY = dys + (size_t)r0 * ow; /* [OC, len], row stride N */
        nest_kernel_im2col(&g, xs, r0, r1, col, len);
        fill_ones(col + K * len, len);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, oc, (int)K + 1, (int)len, 1.0f, dY,
                    (int)N, col, (int)len, 1.0f, pW, (int)K + 1);
        if (dxs) {
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)len, oc, 1.0f, W,
                      (int)K, dY, (int)N, 0.0f, col, (int)len);
          nest_kernel_col2im_add(&g, col, len, r0, r1, dxs);
        }
      }
    }
    /* (implicit barrier) g = sum of the thread partials, in thread order */
    const float *part0 = threads + w.col + w.tmp;
#pragma omp for schedule(static)
    for (int o = 0; o < oc; ++o)
      for (size_t k = 0; k <= K; ++k) {
        const size_t i = (size_t)o * (K + 1) + k;
        float v = part0[i];
        for (int u = 1; u < team; ++u) v += part0[(size_t)u * w.thread + i];
        if (k < K)
          dW[(size_t)o * K + k] = v;
        else
          db[o] = v;
      }
  }
  return NEST_OK;
}

const nest_layer_ops nest_conv2d_ops = {
    .kind = "conv2d",
    .setup = conv_setup,
    .forward = conv_forward,
    .backward = conv_backward,
    .cleanup = NULL,
};
