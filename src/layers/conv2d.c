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
 * Results do not depend on the thread count (docs/design.md, "Determinism"): the work items
 * (G, R) are fixed by the batch size and the shapes alone, every GEMM is single-threaded (also
 * with a single work item, where the region is inactive), and backward sums [dW | db] in
 * P = min(items, CONV_PARTIALS) fixed CHUNKS of consecutive items: chunk c accumulates its
 * items in order into its own partial in l->ws, threads take whole chunks, and after the loop
 * g[] = partial 0 + partial 1 + ... in chunk order — the same float sums whichever thread ran
 * which chunk. Backward therefore uses at most CONV_PARTIALS threads. No allocation here:
 * setup sizes l->ws for nthreads and min(max_batch, CONV_PARTIALS) partials.
 *
 * Partial-area convolution (hp.area = 1, NeST Algorithm 2): a 0/1 buffer "area" Msk[OC, C, N]
 * gates the contribution of input map m through kernel (o, m) at output position j:
 *   y_s[o, j] = b[o] + sum_m Msk[o, m, j] * C_m[o, j],   C_m = W[:, m, :] · col_m
 * where W[:, m, :] is [OC, kh*kw] (row stride K) and col_m the kh*kw rows of input map m in
 * col. The work items and partials are the plain path's (with its own plan constants, below);
 * per call the mask is classified per input map and, for mixed maps, copied to bytes
 * (area_prepare). Inside an item the input maps are visited in order m = 0..C-1 (a fixed
 * summation order), per block of at most CONV_AREA_OBLOCK output maps, and per map m:
 *   Msk[:, m, :] all ones   consecutive such maps are ONE GEMM with beta = 1 (a plain
 *                           convolution over those rows of col; an all-ones mask costs about
 *                           what the plain layer costs)
 *   all zeros               skipped (no FLOPs)
 *   mixed                   C_m[ob, cols] = W[o0.., m, :] · col_m into a per-thread buffer,
 *                           then y += Msk[o0.., m, :] ⊙ C_m
 * Backward: dC_m = Msk[:, m, :] ⊙ dY; [dW]_m += dC_m · col_mᵀ (dense: dormant weights too);
 * dcol_m = W[:, m, :]ᵀ · dC_m overwrites col_m once no longer needed, then col2im; db = row
 * sums of dY (the bias is not gated). A mixed map costs a kh*kw-deep GEMM plus a gating pass
 * over [OC, cols]: cheap next to the GEMMs for 5x5 kernels, not for 3x3 ones (AlexNet conv3-5;
 * docs/performance.md). hp.area = 0 never enters this code. */
#include <cblas.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "nest/kernels.h"
#include "nest/layer.h"

/* Tuning (measured with tests/bench/bench_layers):
 * CONV_TARGET_COLS  columns per GEMM worth gathering several small samples for;
 * CONV_COL_BUDGET   floats of col per work item, to keep it in L2 (per core: 2 MB);
 * CONV_MIN_COLS     fewest columns of a row chunk (narrower GEMMs lose more than L2 gains).
 * Constants in place of the thread count (they fix GEMM shapes and summation order, hence the
 * bits, so they must not follow the thread count; chosen, not tuned):
 * CONV_MIN_ITEMS    a batch is cut into at least this many work items (if it has as many
 *                   samples), so small batches still use two threads; more items would mean
 *                   narrower GEMMs for every thread count (4: partial-area AlexNet conv3 at
 *                   batch 8 took 4-7% longer with 1 and 2 threads);
 * CONV_PARTIALS     backward chunks, each with its own [dW | db] partial of OC*(K+1) floats in
 *                   l->ws: the memory cost, and the most threads backward can use. */
#ifndef CONV_TARGET_COLS
#define CONV_TARGET_COLS 256
#endif
#ifndef CONV_COL_BUDGET
#define CONV_COL_BUDGET (256 * 1024)
#endif
#ifndef CONV_MIN_COLS
#define CONV_MIN_COLS 256
#endif
#ifndef CONV_MIN_ITEMS
#define CONV_MIN_ITEMS 2
#endif
#ifndef CONV_PARTIALS
#define CONV_PARTIALS 8
#endif
/* Partial-area path (measured with tests/bench/bench_area):
 * CONV_AREA_TARGET_COLS  as CONV_TARGET_COLS; its per-map GEMMs have only kh*kw inner terms,
 *                        so wider ones pay (256 / 512 / 1024: 512 best on LeNet-5 conv2);
 * CONV_AREA_COL_BUDGET   as CONV_COL_BUDGET, larger: its GEMMs read col kh*kw rows at a time,
 *                        and grouping samples lets them share one pass over the area mask and
 *                        fewer, wider GEMM calls (AlexNet conv2: 2.3x -> 1.7x the plain time);
 * CONV_AREA_OBLOCK       output maps per block: a block's C_m and accumulator stay in L2
 *                        (32 / 64 / 128 within noise; AlexNet has OC up to 384). */
#ifndef CONV_AREA_TARGET_COLS
#define CONV_AREA_TARGET_COLS 512
#endif
#ifndef CONV_AREA_COL_BUDGET
#define CONV_AREA_COL_BUDGET (2 * 1024 * 1024)
#endif
#ifndef CONV_AREA_OBLOCK
#define CONV_AREA_OBLOCK 64
#endif

static size_t round16(size_t v) { return (v + 15) & ~(size_t)15; }

static nest_conv_geom conv_geom(const nest_layer *l) {
  return nest_conv_geom_make(l->in.c, l->in.h, l->in.w, l->hp.kh, l->hp.kw, l->hp.stride,
                             l->hp.pad);
}

/* How a call splits into work items. Either groups of G whole samples side by side (small
 * samples: LeNet) or single samples cut into chunks of R output rows (large samples: AlexNet
 * conv1, VGG), so that col[K+1, columns] stays near CONV_COL_BUDGET. A function of the shapes
 * and n only (never the thread count); G does not decrease as n grows, so setup sizes l->ws
 * with the plan of max_batch. */
typedef struct {
  int G; /* samples per work item; > 1 only when R == oh */
  int R; /* output rows per chunk */
} conv_plan;

static conv_plan conv_plan_make(size_t K, int oh, int ow, int n, int target_cols,
                                size_t budget) {
  const size_t N = (size_t)oh * ow, colN = (K + 1) * N;
  conv_plan p = {1, oh};
  if (colN > budget) {
    int R = (int)(budget / ((K + 1) * ow)), rmin = (CONV_MIN_COLS + ow - 1) / ow;
    if (R < rmin) R = rmin;
    if (R < oh) p.R = R;
    return p;
  }
  int G = (int)((target_cols + N - 1) / N), per = (n + CONV_MIN_ITEMS - 1) / CONV_MIN_ITEMS;
  int gmax = (int)(budget / colN);
  if (G > gmax) G = gmax;
  if (G > per) G = per; /* at least CONV_MIN_ITEMS items */
  p.G = G < 1 ? 1 : G;
  return p;
}

/* Workspace layout (floats, every block 64-byte aligned):
 *   Wb    [OC, K+1]          W with b appended as a last column (forward, shared)
 *   flags [C] bytes          partial-area only: per input map all ones / all zeros / mixed,
 *   m8 [OC, C, N] bytes      then the area mask as bytes (area_prepare)
 *   per thread t < nt:
 *     col [K+1, cols]        im2col of the item plus a row of ones (bias), later dcol
 *     tmp [OC, G*N]          gathered y / dy of a group (only when G > 1)
 *     cm  [OB, cols]         partial-area only: C_m (forward) or dC_m (backward) of one map
 *                            and one block of OB = min(OC, CONV_AREA_OBLOCK) output maps
 *     dcm [kh*kw, cols]      partial-area, OC > OB only: dcol_m summed over the blocks
 *   per chunk c < np (backward):
 *     dWb [OC, K+1]          [dW | db] of chunk c
 * area_c = C for a partial-area layer, 0 otherwise (then the layout is the plain one). */
typedef struct {
  size_t wb, flags, col, tmp, cm, dcm, thread, part, total;
} conv_ws;

/* Byte offset of m8 after flags[C] in the partial-area block (64-byte aligned). */
static size_t area_m8_offset(int c) { return ((size_t)c + 63) & ~(size_t)63; }

static conv_ws conv_ws_layout(size_t K, int oh, int ow, size_t oc, int nt, int np, conv_plan p,
                              int area_c) {
  const size_t N = (size_t)oh * ow, cols = p.G > 1 ? (size_t)p.G * N : (size_t)p.R * ow;
  conv_ws w;
  w.wb = round16(oc * (K + 1));
  /* flags and m8, bytes counted in floats */
  w.flags = area_c ? round16((area_m8_offset(area_c) + oc * (size_t)area_c * N + 3) / 4) : 0;
  w.col = round16((K + 1) * cols);
  w.tmp = p.G > 1 ? round16(oc * p.G * N) : 0;
  const size_t ob = oc < CONV_AREA_OBLOCK ? oc : CONV_AREA_OBLOCK;
  w.cm = area_c ? round16(ob * cols) : 0;
  w.dcm = area_c && oc > ob ? round16(K / (size_t)area_c * cols) : 0;
  w.thread = w.col + w.tmp + w.cm + w.dcm;
  w.part = round16(oc * (K + 1));
  /* 16: slack to align the base */
  w.total = 16 + w.wb + w.flags + (size_t)nt * w.thread + (size_t)np * w.part;
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
  if (hp->area != 0 && hp->area != 1)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: conv2d area must be 0 or 1 (got %d)", l->name,
                    hp->area);
  if (hp->area) {
    /* Msk[OC, C, OH, OW]: all ones = the plain convolution */
    nest_buffer *b =
        nest_layer_declare_buffer(l, "area", (size_t)oc * c * g.oh * g.ow, 1.0f);
    b->mask = 1;
  }
  const size_t K = (size_t)c * hp->kh * hp->kw;
  /* the largest plan any later call can use: G grows with n */
  conv_plan pmax = conv_plan_make(K, g.oh, g.ow, max_batch > 0 ? max_batch : 1,
                                  hp->area ? CONV_AREA_TARGET_COLS : CONV_TARGET_COLS,
                                  hp->area ? CONV_AREA_COL_BUDGET : CONV_COL_BUDGET);
  const int np = max_batch < CONV_PARTIALS ? (max_batch > 0 ? max_batch : 1) : CONV_PARTIALS;
  l->ws_floats =
      conv_ws_layout(K, g.oh, g.ow, (size_t)oc, nthreads, np, pmax, hp->area ? c : 0).total;
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

static nest_status area_forward(nest_layer *l, const nest_ctx *ctx, const float *x, float *y);
static nest_status area_backward(nest_layer *l, const nest_ctx *ctx, const float *x,
                                 const float *dy, float *dx);

/* y[n, OC, OH, OW] = conv(x[n, C, H, W], W) + b */
/* The inverse of scatter_samples: tmp[o, s*N .. (s+1)*N) = dy[s, o, :] for gs samples (dy rows
 * out_sz floats apart; tmp [OC, gs*N]). */
static void gather_samples(const float *dy, size_t out_sz, int gs, int oc, size_t N, float *tmp) {
  const size_t ld = (size_t)gs * N;
  for (int s = 0; s < gs; ++s)
    for (int o = 0; o < oc; ++o)
      memcpy(tmp + (size_t)o * ld + (size_t)s * N, dy + (size_t)s * out_sz + (size_t)o * N,
             sizeof(float) * N);
}

/* dx[s] = col2im of the columns of sample s in dcol[K, gs*N], for the gs samples of a grouped
 * GEMM (dx rows in_sz floats apart). */
static void col2im_samples(const nest_conv_geom *g, const float *dcol, int gs, size_t N, int oh,
                           float *dx, size_t in_sz) {
  const size_t ld = (size_t)gs * N;
  for (int s = 0; s < gs; ++s) {
    float *dxs = dx + (size_t)s * in_sz;
    memset(dxs, 0, sizeof(float) * in_sz);
    nest_kernel_col2im_add(g, dcol + (size_t)s * N, ld, 0, oh, dxs);
  }
}

/* y[s, o, :] = tmp[o, s*N .. (s+1)*N) for the gs samples a grouped GEMM computed side by side
 * (tmp [OC, gs*N]; y rows out_sz floats apart). */
static void scatter_samples(const float *tmp, int gs, int oc, size_t N, float *y, size_t out_sz) {
  const size_t ld = (size_t)gs * N;
  for (int s = 0; s < gs; ++s)
    for (int o = 0; o < oc; ++o)
      memcpy(y + (size_t)s * out_sz + (size_t)o * N, tmp + (size_t)o * ld + (size_t)s * N,
             sizeof(float) * N);
}

static nest_status conv_forward(nest_layer *l, const nest_ctx *ctx, const float *x, float *y) {
  if (l->hp.area) return area_forward(l, ctx, x, y);
  const int n = ctx->n, nt = ctx->nthreads > 0 ? ctx->nthreads : 1, oc = l->hp.out_c;
  if (n == 0) return NEST_OK;
  const nest_conv_geom g = conv_geom(l);
  const int oh = g.oh, ow = g.ow;
  const size_t K = (size_t)g.c * g.kh * g.kw, N = (size_t)oh * ow;
  const size_t in_sz = nest_shape_size(l->in), out_sz = (size_t)oc * N;
  const conv_plan p = conv_plan_make(K, oh, ow, n, CONV_TARGET_COLS, CONV_COL_BUDGET);
  const int G = p.G, nitems = (n + G - 1) / G;
  const conv_ws w = conv_ws_layout(K, oh, ow, (size_t)oc, nt, 0, p, 0);
  NEST_ASSERT(l->ws && w.total <= l->ws_floats);
  float *Wb = align64(l->ws), *threads = Wb + w.wb;
  /* Wb[OC, K+1] = [W | b] */
  for (int o = 0; o < oc; ++o) {
    memcpy(Wb + (size_t)o * (K + 1), l->p[0] + (size_t)o * K, sizeof(float) * K);
    Wb[(size_t)o * (K + 1) + K] = l->p[1][o];
  }

#pragma omp parallel num_threads(nt) if (nitems > 1)
  {
    omp_set_num_threads(1); /* single-threaded sgemm, also in an inactive region */
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
        scatter_samples(tmp, gs, oc, N, y + (size_t)s0 * out_sz, out_sz);
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

/* Backward chunks: P = min(nitems, CONV_PARTIALS) runs of consecutive items, chunk c =
 * items [chunk_edge(c), chunk_edge(c + 1)). */
static int conv_nparts(int nitems) { return nitems < CONV_PARTIALS ? nitems : CONV_PARTIALS; }
static int chunk_edge(int nitems, int np, int c) { return (int)((long)nitems * c / np); }

/* dW [oc, K] and db [oc] = the sum of the np chunk partials [oc, K + 1] (`stride` floats
 * apart), in chunk order: the same sum whatever thread ran which chunk. Called by every
 * thread of the parallel region (an orphaned worksharing loop). */
static void sum_partials(const float *part0, int np, size_t stride, int oc, size_t K, float *dW,
                         float *db) {
#pragma omp for schedule(static)
  for (int o = 0; o < oc; ++o)
    for (size_t k = 0; k <= K; ++k) {
      const size_t i = (size_t)o * (K + 1) + k;
      float v = part0[i];
      for (int u = 1; u < np; ++u) v += part0[(size_t)u * stride + i];
      if (k < K)
        dW[(size_t)o * K + k] = v;
      else
        db[o] = v;
    }
}

static nest_status conv_backward(nest_layer *l, const nest_ctx *ctx, const float *x, const float *y,
                                 const float *dy, float *dx) {
  if (l->hp.area) return area_backward(l, ctx, x, dy, dx);
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
  const conv_plan p = conv_plan_make(K, oh, ow, n, CONV_TARGET_COLS, CONV_COL_BUDGET);
  const int G = p.G, nitems = (n + G - 1) / G;
  const int np = conv_nparts(nitems);
  const conv_ws w = conv_ws_layout(K, oh, ow, (size_t)oc, nt, np, p, 0);
  NEST_ASSERT(l->ws && w.total <= l->ws_floats);
  float *threads = align64(l->ws) + w.wb, *parts = threads + (size_t)nt * w.thread;
  const float *W = l->p[0];

#pragma omp parallel num_threads(nt) if (nitems > 1)
  {
    omp_set_num_threads(1); /* single-threaded sgemm, also in an inactive region */
    float *col = threads + (size_t)omp_get_thread_num() * w.thread, *tmp = col + w.col;
    /* whole chunks per thread, dynamically: the chunks need not be equal (nitems % np) */
#pragma omp for schedule(dynamic, 1)
    for (int c = 0; c < np; ++c) {
      float *pW = parts + (size_t)c * w.part; /* [dW | db] of chunk c */
      const int i0 = chunk_edge(nitems, np, c), i1 = chunk_edge(nitems, np, c + 1);
      for (int it = i0; it < i1; ++it) {
        const int s0 = it * G, gs = n - s0 < G ? n - s0 : G;
        const float beta = it > i0 ? 1.0f : 0.0f; /* the chunk's first GEMM overwrites pW */
        if (gs > 1) {
          /* whole samples side by side; dY[OC, gs*N] gathered from dy */
          const size_t ld = (size_t)gs * N;
          group_cols(&g, x + (size_t)s0 * in_sz, in_sz, gs, K, col);
          gather_samples(dy + (size_t)s0 * out_sz, out_sz, gs, oc, N, tmp);
          /* [dW | db][OC, K+1] += dY · [col; 1]ᵀ */
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, oc, (int)K + 1, (int)ld, 1.0f, tmp,
                      (int)ld, col, (int)ld, beta, pW, (int)K + 1);
          if (dx) {
            /* dcol[K, gs*N] = Wᵀ · dY (into col, no longer needed), then col2im */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)ld, oc, 1.0f, W,
                        (int)K, tmp, (int)ld, 0.0f, col, (int)ld);
            col2im_samples(&g, col, gs, N, oh, dx + (size_t)s0 * in_sz, in_sz);
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
                      (int)N, col, (int)len, r0 ? 1.0f : beta, pW, (int)K + 1);
          if (dxs) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)len, oc, 1.0f, W,
                        (int)K, dY, (int)N, 0.0f, col, (int)len);
            nest_kernel_col2im_add(&g, col, len, r0, r1, dxs);
          }
        }
      }
    }
    /* (implicit barrier) g = sum of the chunk partials, in chunk order */
    sum_partials(parts, np, w.part, oc, K, dW, db);
  }
  return NEST_OK;
}

/* ---- partial-area convolution (hp.area = 1) ---------------------------------------------- */

enum { AREA_MIXED = 0, AREA_ONES = 1, AREA_ZEROS = 2 };

/* flags[m] for the maps [m0, m1): whether the slice Msk[:, m, :] is all ones (non-zero), all
 * zeros or mixed, and for mixed maps m8[o, m, j] = (Msk[o, m, j] != 0). One read of the float
 * mask per call (not per sample); the gating passes then stream bytes, a quarter of the float
 * mask's traffic (AlexNet's masks have 17-25M entries, read once per sample: measured the
 * bottleneck of the gating). */
static void area_prepare(const float *msk, int oc, int c, size_t N, int m0, int m1,
                         unsigned char *m8, unsigned char *flags) {
  for (int m = m0; m < m1; ++m) {
    /* classify first (a mixed map usually shows in its first row); bytes only for mixed maps */
    int ones = 1, zeros = 1;
    for (int o = 0; o < oc && (ones || zeros); ++o) {
      const float *restrict r = msk + ((size_t)o * c + m) * N;
      int any = 0, all = 1;
      for (size_t j = 0; j < N; ++j) {
        any |= r[j] != 0.0f;
        all &= r[j] != 0.0f;
      }
      ones &= all;
      zeros &= !any;
    }
    flags[m] = ones ? AREA_ONES : zeros ? AREA_ZEROS : AREA_MIXED;
    if (flags[m] != AREA_MIXED) continue;
    for (int o = 0; o < oc; ++o) {
      const float *restrict r = msk + ((size_t)o * c + m) * N;
      unsigned char *restrict d = m8 + ((size_t)o * c + m) * N;
      for (size_t j = 0; j < N; ++j) d[j] = r[j] != 0.0f;
    }
  }
}

/* Where an item's columns sit in the output plane: cols = blocks x span, column b*span + j is
 * plane position l0 + j (a group: span = N, l0 = 0, one block per sample; a row chunk:
 * span = cols, l0 = first row * OW). */
typedef struct {
  size_t cols, span, l0;
} area_cols;

/* acc[o, j] += Msk[o, m, pos(j)] * cm[o, j] over [OC, cols], and cm = 0 again (the next map's
 * GEMM accumulates into it with beta = 1: a GEMM with beta = 0 first runs a separate pass
 * zeroing C, measured at a fifth of the forward). mk = &Msk[0, m, l0], ldm = C*N; acc has row
 * stride ldacc, cm is dense [OC, cols]. */
static void area_gate_add(float *acc, size_t ldacc, float *cm, const unsigned char *mk,
                          size_t ldm, int oc, area_cols ac) {
  for (int o = 0; o < oc; ++o)
    for (size_t b0 = 0; b0 < ac.cols; b0 += ac.span) {
      float *restrict a = acc + (size_t)o * ldacc + b0;
      float *restrict cr = cm + (size_t)o * ac.cols + b0;
      const unsigned char *restrict mr = mk + (size_t)o * ldm;
#pragma omp simd
      for (size_t j = 0; j < ac.span; ++j) {
        a[j] += (float)mr[j] * cr[j];
        cr[j] = 0.0f;
      }
    }
}

/* dc[o, j] = Msk[o, m, pos(j)] * dY[o, j] over [OC, cols] (dY row stride lddy). */
static void area_gate(float *dc, const float *dY, size_t lddy, const unsigned char *mk, size_t ldm,
                      int oc, area_cols ac) {
  for (int o = 0; o < oc; ++o)
    for (size_t b0 = 0; b0 < ac.cols; b0 += ac.span) {
      float *restrict d = dc + (size_t)o * ac.cols + b0;
      const float *restrict g = dY + (size_t)o * lddy + b0;
      const unsigned char *restrict mr = mk + (size_t)o * ldm;
#pragma omp simd
      for (size_t j = 0; j < ac.span; ++j) d[j] = (float)mr[j] * g[j];
    }
}

/* Shapes shared by the item routines. */
typedef struct {
  int oc, c;
  size_t kk, K, N; /* kh*kw, C*kh*kw, OH*OW */
  const float *W, *b;
  const unsigned char *msk; /* m8: the area mask as 0/1 bytes [OC, C, N] */
  const unsigned char *flags;
} area_geom;

/* acc[OC, cols] (row stride ldacc) = b + sum_m Msk_m ⊙ (W_m · col_m), maps in order, one
 * block of output maps [o0, o0 + ob) at a time (the block's accumulator stays in L2 over all
 * maps). cm[OB, cols] must be all zeros on entry and is all zeros on return. */
static void area_forward_item(const area_geom *a, const float *col, area_cols ac, float *acc,
                              size_t ldacc, float *cm) {
  const int cols = (int)ac.cols, K = (int)a->K;
  const size_t ldm = (size_t)a->c * a->N;
  for (int o0 = 0; o0 < a->oc; o0 += CONV_AREA_OBLOCK) {
    const int ob = a->oc - o0 < CONV_AREA_OBLOCK ? a->oc - o0 : CONV_AREA_OBLOCK;
    float *accb = acc + (size_t)o0 * ldacc;
    const float *Wb = a->W + (size_t)o0 * a->K;
    const unsigned char *mkb = a->msk + (size_t)o0 * ldm + ac.l0;
    for (int o = 0; o < ob; ++o)
      for (size_t j = 0; j < ac.cols; ++j) accb[(size_t)o * ldacc + j] = a->b[o0 + o];
    for (int m = 0; m < a->c;) {
      const float *Wm = Wb + (size_t)m * a->kk, *colm = col + (size_t)m * a->kk * ac.cols;
      if (a->flags[m] == AREA_ZEROS) {
        ++m;
        continue;
      }
      if (a->flags[m] == AREA_ONES) { /* maps m..e-1 ungated: one GEMM over their rows */
        int e = m + 1;
        while (e < a->c && a->flags[e] == AREA_ONES) ++e;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ob, cols, (int)((e - m) * a->kk),
                    1.0f, Wm, K, colm, cols, 1.0f, accb, (int)ldacc);
        m = e;
        continue;
      }
      /* cm[ob, cols] = C_m of the block = W[o0.., m, :] · col_m, then acc += Msk_m ⊙ C_m */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ob, cols, (int)a->kk, 1.0f, Wm, K,
                  colm, cols, 1.0f, cm, cols);
      area_gate_add(accb, ldacc, cm, mkb + (size_t)m * a->N, ldm, ob, ac);
      ++m;
    }
  }
}

/* Given dY[OC, cols] (row stride lddy) and col = im2col: pW[OC, K+1] += [dW | db] of the item;
 * when want_dx, col is overwritten with dcol[K, cols] (rows of skipped maps zeroed). A mixed
 * map is done in blocks of output maps (cm[OB, cols] stays in L2 for its two GEMMs); with
 * more than one block its dcol_m is summed in dcm[kh*kw, cols] (blocks in order), since col_m
 * is still read by the later blocks. */
static void area_backward_item(const area_geom *a, float *col, area_cols ac, const float *dY,
                               size_t lddy, float *pW, float *cm, float *dcm, int want_dx) {
  const int oc = a->oc, cols = (int)ac.cols, K = (int)a->K;
  const size_t ldm = (size_t)a->c * a->N;
  for (int o = 0; o < oc; ++o) { /* db: row sums of dY (the bias is not gated) */
    const float *r = dY + (size_t)o * lddy;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (size_t j = 0; j < ac.cols; ++j) sum += r[j];
    pW[(size_t)o * (K + 1) + K] += sum;
  }
  for (int m = 0; m < a->c;) {
    const float *Wm = a->W + (size_t)m * a->kk;
    float *colm = col + (size_t)m * a->kk * ac.cols, *pWm = pW + (size_t)m * a->kk;
    if (a->flags[m] == AREA_ZEROS) { /* dC_m = 0: no dW, no dx */
      if (want_dx) memset(colm, 0, sizeof(float) * a->kk * ac.cols);
      ++m;
      continue;
    }
    if (a->flags[m] == AREA_ONES) {
      int e = m + 1;
      while (e < a->c && a->flags[e] == AREA_ONES) ++e;
      const int rows = (int)((e - m) * a->kk);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, oc, rows, cols, 1.0f, dY, (int)lddy,
                  colm, cols, 1.0f, pWm, K + 1);
      if (want_dx)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, cols, oc, 1.0f, Wm, K, dY,
                    (int)lddy, 0.0f, colm, cols);
      m = e;
      continue;
    }
    /* per block: cm = dC_m = Msk_m ⊙ dY; [dW]_m += dC_m · col_mᵀ; dcol_m += W_mᵀ · dC_m */
    const int one_block = oc <= CONV_AREA_OBLOCK;
    for (int o0 = 0; o0 < oc; o0 += CONV_AREA_OBLOCK) {
      const int ob = oc - o0 < CONV_AREA_OBLOCK ? oc - o0 : CONV_AREA_OBLOCK;
      const unsigned char *mk = a->msk + (size_t)o0 * ldm + (size_t)m * a->N + ac.l0;
      area_gate(cm, dY + (size_t)o0 * lddy, lddy, mk, ldm, ob, ac);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ob, (int)a->kk, cols, 1.0f, cm, cols,
                  colm, cols, 1.0f, pWm + (size_t)o0 * (K + 1), K + 1);
      if (want_dx)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)a->kk, cols, ob, 1.0f,
                    Wm + (size_t)o0 * a->K, K, cm, cols, o0 ? 1.0f : 0.0f,
                    one_block ? colm : dcm, cols);
    }
    if (want_dx && !one_block) memcpy(colm, dcm, sizeof(float) * a->kk * ac.cols);
    ++m;
  }
}

static area_geom area_geom_of(const nest_layer *l, const nest_conv_geom *g,
                              const unsigned char *flags, const unsigned char *m8) {
  area_geom a;
  a.oc = l->hp.out_c;
  a.c = g->c;
  a.kk = (size_t)g->kh * g->kw;
  a.K = (size_t)g->c * a.kk;
  a.N = (size_t)g->oh * g->ow;
  a.W = l->p[0];
  a.b = l->p[1];
  a.msk = m8;
  a.flags = flags;
  return a;
}

/* The plain forward's work items and plan (see conv_forward), with area_forward_item. */
static nest_status area_forward(nest_layer *l, const nest_ctx *ctx, const float *x, float *y) {
  const int n = ctx->n, nt = ctx->nthreads > 0 ? ctx->nthreads : 1, oc = l->hp.out_c;
  if (n == 0) return NEST_OK;
  const nest_conv_geom g = conv_geom(l);
  const int oh = g.oh, ow = g.ow;
  const size_t K = (size_t)g.c * g.kh * g.kw, N = (size_t)oh * ow;
  const size_t in_sz = nest_shape_size(l->in), out_sz = (size_t)oc * N;
  const conv_plan p = conv_plan_make(K, oh, ow, n, CONV_AREA_TARGET_COLS,
                                     CONV_AREA_COL_BUDGET);
  const int G = p.G, nitems = (n + G - 1) / G;
  const conv_ws w = conv_ws_layout(K, oh, ow, (size_t)oc, nt, 0, p, g.c);
  NEST_ASSERT(l->ws && w.total <= l->ws_floats && l->nbuffers == 1 && l->buf[0]);
  unsigned char *flags = (unsigned char *)(align64(l->ws) + w.wb);
  unsigned char *m8 = flags + area_m8_offset(g.c);
  float *threads = align64(l->ws) + w.wb + w.flags;
  const area_geom a = area_geom_of(l, &g, flags, m8);

#pragma omp parallel num_threads(nt) if (nitems > 1)
  {
    omp_set_num_threads(1); /* single-threaded sgemm, also in an inactive region */
    float *col = threads + (size_t)omp_get_thread_num() * w.thread, *tmp = col + w.col;
    float *cm = tmp + w.tmp;
    memset(cm, 0, sizeof(float) * w.cm); /* area_forward_item keeps it zero */
#pragma omp for schedule(static)
    for (int m = 0; m < g.c; ++m) area_prepare(l->buf[0], oc, g.c, N, m, m + 1, m8, flags);
#pragma omp for schedule(static)
    for (int it = 0; it < nitems; ++it) {
      const int s0 = it * G, gs = n - s0 < G ? n - s0 : G;
      if (gs > 1) {
        /* whole samples side by side: tmp[OC, gs*N], then scatter to y */
        const size_t ld = (size_t)gs * N;
        group_cols(&g, x + (size_t)s0 * in_sz, in_sz, gs, K, col);
        area_forward_item(&a, col, (area_cols){ld, N, 0}, tmp, ld, cm);
        scatter_samples(tmp, gs, oc, N, y + (size_t)s0 * out_sz, out_sz);
        continue;
      }
      /* one sample in chunks of R output rows, written straight into y_s (row stride N) */
      const float *xs = x + (size_t)s0 * in_sz;
      float *ys = y + (size_t)s0 * out_sz;
      for (int r0 = 0; r0 < oh; r0 += p.R) {
        const int r1 = r0 + p.R < oh ? r0 + p.R : oh;
        const size_t len = (size_t)(r1 - r0) * ow;
        nest_kernel_im2col(&g, xs, r0, r1, col, len);
        area_forward_item(&a, col, (area_cols){len, len, (size_t)r0 * ow}, ys + (size_t)r0 * ow, N,
                          cm);
      }
    }
  }
  return NEST_OK;
}

/* The plain backward's work items, chunks, partials and reduction, with area_backward_item. */
static nest_status area_backward(nest_layer *l, const nest_ctx *ctx, const float *x,
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
  const conv_plan p = conv_plan_make(K, oh, ow, n, CONV_AREA_TARGET_COLS,
                                     CONV_AREA_COL_BUDGET);
  const int G = p.G, nitems = (n + G - 1) / G;
  const int np = conv_nparts(nitems);
  const conv_ws w = conv_ws_layout(K, oh, ow, (size_t)oc, nt, np, p, g.c);
  NEST_ASSERT(l->ws && w.total <= l->ws_floats && l->nbuffers == 1 && l->buf[0]);
  unsigned char *flags = (unsigned char *)(align64(l->ws) + w.wb);
  unsigned char *m8 = flags + area_m8_offset(g.c);
  float *threads = align64(l->ws) + w.wb + w.flags, *parts = threads + (size_t)nt * w.thread;
  const area_geom a = area_geom_of(l, &g, flags, m8);

#pragma omp parallel num_threads(nt) if (nitems > 1)
  {
    omp_set_num_threads(1); /* single-threaded sgemm, also in an inactive region */
    float *col = threads + (size_t)omp_get_thread_num() * w.thread, *tmp = col + w.col;
    float *cm = tmp + w.tmp, *dcm = cm + w.cm;
#pragma omp for schedule(static)
    for (int m = 0; m < g.c; ++m) area_prepare(l->buf[0], oc, g.c, N, m, m + 1, m8, flags);
#pragma omp for schedule(dynamic, 1)
    for (int c = 0; c < np; ++c) {
      /* [dW | db] of chunk c; area_backward_item accumulates (skipped maps add nothing) */
      float *pW = parts + (size_t)c * w.part;
      memset(pW, 0, sizeof(float) * (size_t)oc * (K + 1));
      for (int it = chunk_edge(nitems, np, c); it < chunk_edge(nitems, np, c + 1); ++it) {
        const int s0 = it * G, gs = n - s0 < G ? n - s0 : G;
        if (gs > 1) {
          const size_t ld = (size_t)gs * N;
          group_cols(&g, x + (size_t)s0 * in_sz, in_sz, gs, K, col);
          gather_samples(dy + (size_t)s0 * out_sz, out_sz, gs, oc, N, tmp);
          area_backward_item(&a, col, (area_cols){ld, N, 0}, tmp, ld, pW, cm, dcm, dx != NULL);
          if (dx) col2im_samples(&g, col, gs, N, oh, dx + (size_t)s0 * in_sz, in_sz);
          continue;
        }
        const float *xs = x + (size_t)s0 * in_sz, *dys = dy + (size_t)s0 * out_sz;
        float *dxs = dx ? dx + (size_t)s0 * in_sz : NULL;
        if (dxs) memset(dxs, 0, sizeof(float) * in_sz);
        for (int r0 = 0; r0 < oh; r0 += p.R) {
          const int r1 = r0 + p.R < oh ? r0 + p.R : oh;
          const size_t len = (size_t)(r1 - r0) * ow;
          nest_kernel_im2col(&g, xs, r0, r1, col, len);
          area_backward_item(&a, col, (area_cols){len, len, (size_t)r0 * ow},
                             dys + (size_t)r0 * ow, N, pW, cm, dcm, dxs != NULL);
          if (dxs) nest_kernel_col2im_add(&g, col, len, r0, r1, dxs);
        }
      }
    }
    /* (implicit barrier) g = sum of the chunk partials, in chunk order */
    sum_partials(parts, np, w.part, oc, K, dW, db);
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
