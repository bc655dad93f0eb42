/* test_kernels.c — every fast kernel against its naive double-precision twin
 * (include/nest/kernels.h), on several shapes: im2col / col2im (also round trip and
 * adjointness), conv2d forward / backward (im2col + sgemm) against direct convolution,
 * max pooling (including ties), batch-norm passes. Plus thread-count behaviour: BN and
 * pooling are bit-identical for 1 and 2 threads; conv2d is bit-reproducible for a fixed
 * thread count and agrees across thread counts to rounding. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nest/kernels.h"
#include "nest/layer.h"
#include "nest/rng.h"
#include "test_util.h"


typedef struct {
  int c, h, w, kh, kw, stride, pad;
} geom_case;

static const geom_case geoms[] = {
    {1, 28, 28, 5, 5, 1, 0},  /* LeNet-5 conv1 */
    {20, 12, 12, 5, 5, 1, 0}, /* LeNet-5 conv2 */
    {3, 7, 5, 3, 2, 1, 0},     {3, 7, 5, 3, 2, 2, 1}, {2, 9, 8, 3, 3, 3, 2},
    {3, 35, 35, 11, 11, 4, 2}, /* AlexNet conv1, small */
    {4, 13, 13, 3, 3, 1, 1},   {2, 6, 6, 5, 5, 1, 2}, {2, 5, 9, 1, 1, 2, 0},
    {1, 4, 11, 2, 4, 2, 1},    {2, 3, 3, 3, 3, 1, 2},
};
#define NGEOMS (sizeof geoms / sizeof geoms[0])

static nest_conv_geom make(const geom_case *gc) {
  nest_conv_geom g = nest_conv_geom_make(gc->c, gc->h, gc->w, gc->kh, gc->kw, gc->stride, gc->pad);
  assert_true(g.oh > 0 && g.ow > 0);
  return g;
}

/* ---- geometry -------------------------------------------------------------------------------- */

static void test_geom(void **state) {
  (void)state;
  nest_conv_geom g = nest_conv_geom_make(3, 224, 224, 11, 11, 4, 2);
  assert_int_equal(g.oh, 55);
  assert_int_equal(g.ow, 55);
  g = nest_conv_geom_make(96, 55, 55, 3, 3, 2, 0);
  assert_int_equal(g.oh, 27);
  g = nest_conv_geom_make(1, 3, 3, 5, 5, 1, 0);
  assert_true(g.oh <= 0 && g.ow <= 0);
  g = nest_conv_geom_make(1, 4, 7, 5, 2, 3, 0); /* rows don't fit, columns do */
  assert_true(g.oh <= 0 && g.ow == 2);
}

/* ---- im2col / col2im ----------------------------------------------------------------------- */

/* Output-row ranges to cut a geometry into: the whole, and a few partial ranges. */
static int row_ranges(int oh, int r[][2]) {
  int k = 0;
  r[k][0] = 0, r[k][1] = oh, ++k;
  r[k][0] = 0, r[k][1] = 1, ++k;
  r[k][0] = oh / 2, r[k][1] = oh, ++k;
  r[k][0] = oh - 1, r[k][1] = oh, ++k;
  if (oh > 2) r[k][0] = 1, r[k][1] = oh - 1, ++k;
  r[k][0] = oh / 3, r[k][1] = oh / 3, ++k; /* empty */
  return k;
}

static void test_im2col(void **state) {
  (void)state;
  for (size_t t = 0; t < NGEOMS; ++t) {
    nest_conv_geom g = make(&geoms[t]);
    const size_t K = (size_t)g.c * g.kh * g.kw, N = (size_t)g.oh * g.ow,
                 X = (size_t)g.c * g.h * g.w;
    const size_t ld = 2 * N + 3; /* embedded in a wider matrix, at column offset N */
    float *x = nest_test_falloc(X), *col = nest_test_falloc(K * ld);
    double *xd = nest_test_dalloc(X), *ref = nest_test_dalloc(K * N);
    nest_test_fill_normal(x, X, 100 + t, 1.0f);
    nest_test_to_double(x, xd, X);
    nest_ref_im2col(&g, xd, ref);
    int rr[8][2], nr = row_ranges(g.oh, rr);
    for (int q = 0; q < nr; ++q) {
      const int oy0 = rr[q][0], oy1 = rr[q][1];
      const size_t c0 = (size_t)oy0 * g.ow, len = (size_t)(oy1 - oy0) * g.ow;
      for (size_t i = 0; i < K * ld; ++i) col[i] = -777.0f;
      nest_kernel_im2col(&g, x, oy0, oy1, col + N, ld);
      for (size_t r = 0; r < K; ++r)
        for (size_t j = 0; j < ld; ++j) {
          float v = col[r * ld + j];
          if (j >= N && j < N + len) {
            if (v != (float)ref[r * N + c0 + j - N])
              fail_msg("geom %zu rows [%d, %d): col[%zu, %zu] = %g, want %g", t, oy0, oy1, r, j - N,
                       v, ref[r * N + c0 + j - N]);
          } else if (v != -777.0f) {
            fail_msg("geom %zu rows [%d, %d): im2col wrote outside its columns (row %zu col %zu)",
                     t, oy0, oy1, r, j);
          }
        }
    }
    free(x), free(col), free(xd), free(ref);
  }
}

static void test_col2im(void **state) {
  (void)state;
  for (size_t t = 0; t < NGEOMS; ++t) {
    nest_conv_geom g = make(&geoms[t]);
    const size_t K = (size_t)g.c * g.kh * g.kw, N = (size_t)g.oh * g.ow,
                 X = (size_t)g.c * g.h * g.w;
    const size_t ld = N + 5;
    float *col = nest_test_falloc(K * ld), *x = nest_test_falloc(X), *x0 = nest_test_falloc(X), *x2 = nest_test_falloc(X),
          *cc = nest_test_falloc(K * N);
    double *cd = nest_test_dalloc(K * N), *xd = nest_test_dalloc(X), *ones = nest_test_dalloc(X), *cover = nest_test_dalloc(X),
           *oc = nest_test_dalloc(K * N), *want = nest_test_dalloc(X);
    nest_test_fill_normal(col, K * ld, 200 + t, 1.0f);
    nest_test_fill_normal(x0, X, 250 + t, 1.0f);
    for (size_t r = 0; r < K; ++r)
      for (size_t j = 0; j < N; ++j) cd[r * N + j] = col[r * ld + j];
    nest_ref_col2im(&g, cd, xd);

    /* accumulates onto x: x0 + col2im(col) */
    memcpy(x, x0, sizeof(float) * X);
    nest_kernel_col2im_add(&g, col, ld, 0, g.oh, x);
    for (size_t i = 0; i < X; ++i) want[i] = x0[i] + xd[i];
    double e = nest_test_norm_rel(x, want, X);
    if (!(e < 1e-6)) fail_msg("geom %zu: col2im differs from reference by %.3g", t, e);

    /* in row chunks (as conv2d cuts large samples): the same sum */
    memset(x, 0, sizeof(float) * X);
    const int step = g.oh > 3 ? g.oh / 3 : 1;
    for (int oy0 = 0; oy0 < g.oh; oy0 += step) {
      int oy1 = oy0 + step < g.oh ? oy0 + step : g.oh;
      nest_kernel_col2im_add(&g, col + (size_t)oy0 * g.ow, ld, oy0, oy1, x);
    }
    e = nest_test_norm_rel(x, xd, X);
    if (!(e < 1e-6)) fail_msg("geom %zu: chunked col2im differs by %.3g", t, e);

    /* adjointness: <im2col(x), C> == <x, col2im(C)> */
    float *xr = nest_test_falloc(X);
    nest_test_fill_normal(xr, X, 300 + t, 1.0f);
    nest_kernel_im2col(&g, xr, 0, g.oh, cc, N);
    double lhs = 0.0, rhs = 0.0;
    for (size_t r = 0; r < K; ++r)
      for (size_t j = 0; j < N; ++j) lhs += (double)cc[r * N + j] * cd[r * N + j];
    for (size_t i = 0; i < X; ++i) rhs += (double)xr[i] * xd[i];
    assert_true(fabs(lhs - rhs) <= 1e-9 * (1.0 + fabs(lhs)));

    /* round trip: col2im(im2col(x)) = x * (number of windows covering each pixel) */
    for (size_t i = 0; i < X; ++i) ones[i] = 1.0;
    nest_ref_im2col(&g, ones, oc);
    nest_ref_col2im(&g, oc, cover);
    memset(x2, 0, sizeof(float) * X);
    nest_kernel_col2im_add(&g, cc, N, 0, g.oh, x2);
    for (size_t i = 0; i < X; ++i) cover[i] *= xr[i];
    e = nest_test_norm_rel(x2, cover, X);
    if (!(e < 1e-6)) fail_msg("geom %zu: round trip differs by %.3g", t, e);
    free(col), free(x), free(x0), free(x2), free(cc), free(xr);
    free(cd), free(xd), free(ones), free(cover), free(oc), free(want);
  }
}

/* ---- conv2d (im2col + sgemm) vs direct convolution ---------------------------------------------
 */

typedef struct {
  float *y, *dx, *dW, *db;
} conv_out;

static void conv_run(const geom_case *gc, int oc, int n, int nthreads, const float *x,
                     const float *W, const float *b, const float *dy, conv_out *o) {
  nest_layer *l = NULL;
  nest_layer_hparams hp = {
      .out_c = oc, .kh = gc->kh, .kw = gc->kw, .stride = gc->stride, .pad = gc->pad};
  assert_int_equal(nest_layer_create(&nest_conv2d_ops, "conv", (nest_shape){gc->c, gc->h, gc->w},
                                     &hp, n, nthreads, &l),
                   NEST_OK);
  assert_int_equal(nest_layer_bind_standalone(l), NEST_OK);
  memcpy(l->p[0], W, sizeof(float) * l->param[0].count);
  memcpy(l->p[1], b, sizeof(float) * oc);
  nest_ctx ctx = {.n = n, .train = 1, .nthreads = nthreads};
  assert_int_equal(l->ops->forward(l, &ctx, x, o->y), NEST_OK);
  assert_int_equal(l->ops->backward(l, &ctx, x, o->y, dy, o->dx), NEST_OK);
  memcpy(o->dW, l->g[0], sizeof(float) * l->param[0].count);
  memcpy(o->db, l->g[1], sizeof(float) * oc);
  nest_layer_destroy(&l);
}

static void conv_case(const geom_case *gc, int oc, int n) {
  nest_conv_geom g = make(gc);
  const size_t X = (size_t)n * g.c * g.h * g.w, Y = (size_t)n * oc * g.oh * g.ow;
  const size_t WN = (size_t)oc * g.c * g.kh * g.kw;
  float *x = nest_test_falloc(X), *W = nest_test_falloc(WN), *b = nest_test_falloc(oc), *dy = nest_test_falloc(Y);
  nest_test_fill_normal(x, X, 1, 1.0f);
  nest_test_fill_normal(W, WN, 2, 0.3f);
  nest_test_fill_normal(b, oc, 3, 0.3f);
  nest_test_fill_normal(dy, Y, 4, 1.0f);
  double *xd = nest_test_dalloc(X), *Wd = nest_test_dalloc(WN), *bd = nest_test_dalloc(oc), *dyd = nest_test_dalloc(Y);
  double *yr = nest_test_dalloc(Y), *dxr = nest_test_dalloc(X), *dWr = nest_test_dalloc(WN), *dbr = nest_test_dalloc(oc);
  nest_test_to_double(x, xd, X);
  nest_test_to_double(W, Wd, WN);
  nest_test_to_double(b, bd, oc);
  nest_test_to_double(dy, dyd, Y);
  nest_ref_conv2d_forward(&g, oc, n, xd, Wd, bd, yr);
  nest_ref_conv2d_backward(&g, oc, n, xd, Wd, dyd, dxr, dWr, dbr);

  conv_out o[3];
  for (int k = 0; k < 3; ++k) o[k] = (conv_out){nest_test_falloc(Y), nest_test_falloc(X), nest_test_falloc(WN), nest_test_falloc(oc)};
  conv_run(gc, oc, n, 1, x, W, b, dy, &o[0]);
  conv_run(gc, oc, n, 2, x, W, b, dy, &o[1]);
  conv_run(gc, oc, n, 2, x, W, b, dy, &o[2]);
  for (int k = 0; k < 2; ++k) {
    double ey = nest_test_norm_rel(o[k].y, yr, Y), ex = nest_test_norm_rel(o[k].dx, dxr, X);
    double ew = nest_test_norm_rel(o[k].dW, dWr, WN), eb = nest_test_norm_rel(o[k].db, dbr, oc);
    if (!(ey < 1e-5 && ex < 1e-5 && ew < 1e-5 && eb < 1e-5))
      fail_msg(
          "conv c%d %dx%d k%dx%d s%d p%d oc%d n%d threads %d: rel err y %.2g dx %.2g "
          "dW %.2g db %.2g",
          gc->c, gc->h, gc->w, gc->kh, gc->kw, gc->stride, gc->pad, oc, n, k + 1, ey, ex, ew, eb);
  }
  /* a fixed thread count reproduces bit for bit */
  assert_memory_equal(o[1].y, o[2].y, sizeof(float) * Y);
  assert_memory_equal(o[1].dx, o[2].dx, sizeof(float) * X);
  assert_memory_equal(o[1].dW, o[2].dW, sizeof(float) * WN);
  assert_memory_equal(o[1].db, o[2].db, sizeof(float) * oc);
  for (int k = 0; k < 3; ++k) free(o[k].y), free(o[k].dx), free(o[k].dW), free(o[k].db);
  free(x), free(W), free(b), free(dy), free(xd), free(Wd), free(bd), free(dyd);
  free(yr), free(dxr), free(dWr), free(dbr);
}

static void test_conv2d_vs_direct(void **state) {
  (void)state;
  for (size_t t = 0; t < NGEOMS; ++t) conv_case(&geoms[t], 3, 5);
  conv_case(&geoms[0], 20, 9);  /* LeNet-5 conv1: one sample per GEMM */
  conv_case(&geoms[1], 50, 13); /* LeNet-5 conv2: several samples per GEMM */
  conv_case(&geoms[5], 16, 3);  /* AlexNet conv1-like: stride 4 */
  conv_case(&geoms[6], 24, 1);  /* one sample: one group, BLAS may thread */
  /* large samples, cut into row chunks (col over the L2 budget) */
  const geom_case big[] = {
      {3, 100, 100, 3, 3, 1, 1},
      {2, 160, 150, 5, 5, 2, 2},
      {3, 224, 224, 11, 11, 4, 2}, /* AlexNet conv1 */
  };
  conv_case(&big[0], 4, 3);
  conv_case(&big[1], 3, 2);
  conv_case(&big[2], 4, 1);
  conv_case(&big[2], 2, 3);
}

/* ---- max pooling -------------------------------------------------------------------------------
 */

static void pool_case(const geom_case *gc, int n, int ties) {
  nest_conv_geom g = make(gc);
  const size_t X = (size_t)n * g.c * g.h * g.w, Y = (size_t)n * g.c * g.oh * g.ow;
  const size_t hw = (size_t)g.h * g.w, ohw = (size_t)g.oh * g.ow;
  float *x = nest_test_falloc(X), *y = nest_test_falloc(Y), *dy = nest_test_falloc(Y), *dx = nest_test_falloc(X);
  int32_t *arg = calloc(Y, sizeof(int32_t));
  assert_non_null(arg);
  double *xd = nest_test_dalloc(X), *yr = nest_test_dalloc(Y), *dyd = nest_test_dalloc(Y), *dxr = nest_test_dalloc(X);
  nest_test_fill_normal(x, X, 7, 1.0f);
  if (ties) /* few distinct values: many ties, the first maximum must win in both */
    for (size_t i = 0; i < X; ++i) x[i] = roundf(x[i]);
  nest_test_fill_normal(dy, Y, 8, 1.0f);
  nest_test_to_double(x, xd, X);
  nest_test_to_double(dy, dyd, Y);
  for (size_t p = 0; p < (size_t)n * g.c; ++p) {
    nest_kernel_maxpool_forward(&g, x + p * hw, y + p * ohw, arg + p * ohw);
    nest_kernel_maxpool_backward(&g, dy + p * ohw, arg + p * ohw, dx + p * hw);
  }
  nest_ref_maxpool_forward(&g, n, xd, yr);
  nest_ref_maxpool_backward(&g, n, xd, dyd, dxr);
  for (size_t i = 0; i < Y; ++i) assert_true(y[i] == (float)yr[i]);
  for (size_t i = 0; i < Y; ++i) assert_true(arg[i] >= 0 && (size_t)arg[i] < hw);
  double e = nest_test_norm_rel(dx, dxr, X);
  if (!(e < 1e-6))
    fail_msg("pool k%dx%d s%d p%d: dx differs by %.3g", gc->kh, gc->kw, gc->stride, gc->pad, e);
  free(x), free(y), free(dy), free(dx), free(arg), free(xd), free(yr), free(dyd), free(dxr);
}

static void test_maxpool_kernels(void **state) {
  (void)state;
  const geom_case pools[] = {
      {3, 24, 24, 2, 2, 2, 0}, {96, 55, 55, 3, 3, 2, 0}, {2, 7, 5, 3, 2, 2, 1},
      {2, 9, 8, 3, 3, 3, 2},   {1, 5, 5, 3, 3, 1, 2},    {4, 13, 13, 3, 3, 2, 0},
  };
  for (size_t t = 0; t < sizeof pools / sizeof pools[0]; ++t) {
    pool_case(&pools[t], 2, 0);
    pool_case(&pools[t], 2, 1);
  }
}

/* ---- batch norm
 * ----------------------------------------------------------------------------------- */

static void test_bn_kernels(void **state) {
  (void)state;
  const int shapes[][3] = {{5, 6, 1}, {7, 3, 20}, {1, 4, 9}, {3, 100, 1}, {2, 5, 169}};
  for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; ++t) {
    const int n = shapes[t][0], c = shapes[t][1], s = shapes[t][2];
    const size_t cnt = (size_t)n * c * s;
    float *a = nest_test_falloc(cnt), *b = nest_test_falloc(cnt), *y = nest_test_falloc(cnt), *dx = nest_test_falloc(cnt);
    float *center = nest_test_falloc(c), *k1 = nest_test_falloc(c), *k2 = nest_test_falloc(c), *k3 = nest_test_falloc(c);
    double *sa = nest_test_dalloc(c), *sab = nest_test_dalloc(c), *ref = nest_test_dalloc(cnt);
    nest_test_fill_normal(a, cnt, 10 + t, 1.0f);
    nest_test_fill_normal(b, cnt, 20 + t, 2.0f);
    nest_test_fill_normal(center, c, 30 + t, 1.0f);
    nest_test_fill_normal(k1, c, 40 + t, 1.0f);
    nest_test_fill_normal(k2, c, 50 + t, 1.0f);
    nest_test_fill_normal(k3, c, 60 + t, 1.0f);
    for (int pass = 0; pass < 2; ++pass) {
      const float *cen = pass ? center : NULL;
      /* two halves of the channel range, as two threads would */
      nest_kernel_bn_sums(a, b, cen, n, c, s, 0, c / 2, sa, sab);
      nest_kernel_bn_sums(a, b, cen, n, c, s, c / 2, c, sa, sab);
      for (int ch = 0; ch < c; ++ch) {
        double ra = 0.0, rab = 0.0;
        for (int i = 0; i < n; ++i)
          for (int k = 0; k < s; ++k) {
            size_t j = ((size_t)i * c + ch) * s + k;
            ra += a[j];
            rab += (double)a[j] * ((double)b[j] - (cen ? cen[ch] : 0.0));
          }
        assert_true(fabs(sa[ch] - ra) <= 1e-12 * (1.0 + fabs(ra)));
        assert_true(fabs(sab[ch] - rab) <= 1e-12 * (1.0 + fabs(rab)));
      }
    }
    nest_kernel_bn_affine(a, n, c, s, 0, c, center, k1, k2, y);
    for (size_t j = 0; j < cnt; ++j) {
      int ch = (int)((j / s) % c);
      ref[j] = ((double)a[j] - center[ch]) * k1[ch] + k2[ch];
    }
    assert_true(nest_test_norm_rel(y, ref, cnt) < 1e-6);
    nest_kernel_bn_backward_dx(a, b, n, c, s, 0, c, center, k1, k2, k3, dx);
    for (size_t j = 0; j < cnt; ++j) {
      int ch = (int)((j / s) % c);
      ref[j] = (double)k1[ch] * a[j] + (double)k2[ch] * ((double)b[j] - center[ch]) + k3[ch];
    }
    assert_true(nest_test_norm_rel(dx, ref, cnt) < 1e-6);
    free(a), free(b), free(y), free(dx), free(center), free(k1), free(k2), free(k3);
    free(sa), free(sab), free(ref);
  }
}

/* The batch-norm layer against its reference, and bit-identical for 1 and 2 threads. */
static void bn_layer_case(nest_shape in, int n) {
  const size_t cnt = nest_shape_size(in) * n;
  const int c = in.c, s = in.h * in.w;
  float *x = nest_test_falloc(cnt), *dy = nest_test_falloc(cnt), *y[2], *dx[2], *g[2][2], *rb[2][2];
  nest_test_fill_normal(x, cnt, 70, 2.0f);
  nest_test_fill_normal(dy, cnt, 71, 1.0f);
  for (size_t i = 0; i < cnt; ++i) x[i] += 1.5f;
  for (int t = 0; t < 2; ++t) {
    nest_layer *l = NULL;
    assert_int_equal(
        nest_layer_create(&nest_batchnorm_ops, "bn", in, &(nest_layer_hparams){0}, n, t + 1, &l),
        NEST_OK);
    assert_int_equal(nest_layer_bind_standalone(l), NEST_OK);
    for (int ch = 0; ch < c; ++ch) {
      l->p[0][ch] = 1.0f + 0.01f * ch;
      l->p[1][ch] = 0.02f * ch;
    }
    nest_ctx ctx = {.n = n, .train = 1, .nthreads = t + 1};
    y[t] = nest_test_falloc(cnt);
    dx[t] = nest_test_falloc(cnt);
    assert_int_equal(l->ops->forward(l, &ctx, x, y[t]), NEST_OK);
    assert_int_equal(l->ops->backward(l, &ctx, x, y[t], dy, dx[t]), NEST_OK);
    for (int i = 0; i < 2; ++i) {
      g[t][i] = nest_test_falloc(c);
      rb[t][i] = nest_test_falloc(c);
      memcpy(g[t][i], l->g[i], sizeof(float) * c);
      memcpy(rb[t][i], l->buf[i], sizeof(float) * c);
    }
    if (t == 0) { /* against the reference */
      double *xd = nest_test_dalloc(cnt), *dyd = nest_test_dalloc(cnt), *yr = nest_test_dalloc(cnt), *dxr = nest_test_dalloc(cnt);
      double *gm = nest_test_dalloc(c), *bt = nest_test_dalloc(c), *dg = nest_test_dalloc(c), *dbt = nest_test_dalloc(c);
      nest_test_to_double(x, xd, cnt);
      nest_test_to_double(dy, dyd, cnt);
      nest_test_to_double(l->p[0], gm, c);
      nest_test_to_double(l->p[1], bt, c);
      nest_ref_batchnorm_forward(n, c, s, l->hp.eps, xd, gm, bt, yr, NULL, NULL);
      nest_ref_batchnorm_backward(n, c, s, l->hp.eps, xd, gm, dyd, dxr, dg, dbt);
      assert_true(nest_test_norm_rel(y[0], yr, cnt) < 1e-5);
      assert_true(nest_test_norm_rel(dx[0], dxr, cnt) < 1e-4);
      assert_true(nest_test_norm_rel(g[0][0], dg, c) < 1e-4);
      assert_true(nest_test_norm_rel(g[0][1], dbt, c) < 1e-4);
      free(xd), free(dyd), free(yr), free(dxr), free(gm), free(bt), free(dg), free(dbt);
    }
    nest_layer_destroy(&l);
  }
  assert_memory_equal(y[0], y[1], sizeof(float) * cnt);
  assert_memory_equal(dx[0], dx[1], sizeof(float) * cnt);
  for (int i = 0; i < 2; ++i) {
    assert_memory_equal(g[0][i], g[1][i], sizeof(float) * c);
    assert_memory_equal(rb[0][i], rb[1][i], sizeof(float) * c);
  }
  for (int t = 0; t < 2; ++t) {
    free(y[t]), free(dx[t]);
    for (int i = 0; i < 2; ++i) free(g[t][i]), free(rb[t][i]);
  }
  free(x), free(dy);
}

static void test_bn_layer_threads(void **state) {
  (void)state;
  bn_layer_case((nest_shape){16, 24, 24}, 8);  /* conv input, threaded */
  bn_layer_case((nest_shape){4096, 1, 1}, 16); /* dense input, threaded */
  bn_layer_case((nest_shape){5, 3, 3}, 4);     /* small: serial path */
}

/* Max pooling layer: bit-identical for 1 and 2 threads. */
static void test_pool_layer_threads(void **state) {
  (void)state;
  const nest_shape in = {24, 27, 27};
  const int n = 6;
  const size_t X = nest_shape_size(in) * n;
  float *x = nest_test_falloc(X), *yb[2] = {0}, *dxb[2] = {0};
  nest_test_fill_normal(x, X, 90, 1.0f);
  size_t Y = 0;
  for (int t = 0; t < 2; ++t) {
    nest_layer *l = NULL;
    assert_int_equal(nest_layer_create(&nest_maxpool_ops, "pool", in,
                                       &(nest_layer_hparams){.kh = 3, .stride = 2}, n, t + 1, &l),
                     NEST_OK);
    assert_int_equal(nest_layer_bind_standalone(l), NEST_OK);
    Y = nest_shape_size(l->out) * n;
    float *dy = nest_test_falloc(Y);
    nest_test_fill_normal(dy, Y, 91, 1.0f);
    yb[t] = nest_test_falloc(Y);
    dxb[t] = nest_test_falloc(X);
    nest_ctx ctx = {.n = n, .train = 1, .nthreads = t + 1};
    assert_int_equal(l->ops->forward(l, &ctx, x, yb[t]), NEST_OK);
    assert_int_equal(l->ops->backward(l, &ctx, x, yb[t], dy, dxb[t]), NEST_OK);
    free(dy);
    nest_layer_destroy(&l);
  }
  assert_memory_equal(yb[0], yb[1], sizeof(float) * Y);
  assert_memory_equal(dxb[0], dxb[1], sizeof(float) * X);
  free(x), free(yb[0]), free(yb[1]), free(dxb[0]), free(dxb[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_geom),
      cmocka_unit_test(test_im2col),
      cmocka_unit_test(test_col2im),
      cmocka_unit_test(test_conv2d_vs_direct),
      cmocka_unit_test(test_maxpool_kernels),
      cmocka_unit_test(test_bn_kernels),
      cmocka_unit_test(test_bn_layer_threads),
      cmocka_unit_test(test_pool_layer_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
