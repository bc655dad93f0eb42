/* test_layers.c — gradient checks for every layer kind (dense, relu, conv2d, maxpool,
 * batchnorm, dropout) against double-precision references (include/nest/kernels.h).
 *
 * For random x, parameters and upstream R, L = Σ R ⊙ y. Each case checks
 *   (1) the reference backward against central finite differences of the reference
 *       forward (double, tight tolerance), and
 *   (2) the fast float forward / backward (dx and every g[]) against the reference
 *       (normwise relative tolerance 1e-4).
 * Cases cover masked weights (dormant weights 0 and their gradients still the dense ones),
 * odd shapes, strides 1-3, padding 0-2, batch sizes 1 and 5, 1 and 2 threads, dx == NULL.
 * Also: setup errors, sync batch-norm over simulated ranks (threads), dropout masks that do
 * not depend on the rank split, eval modes. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
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

/* ---- references, one adapter per kind ------------------------------------------------------ */

/* Dropout keep mask used by the reference (set by the test from the RNG). */
static uint8_t *g_keep;
/* Partial-area mask [oc, c, oh, ow] of a conv2d layer with hp.area = 1 (set by the test). */
static double *g_area;

static nest_conv_geom geom_of(const nest_layer *l) {
  if (l->kind != NEST_LAYER_CONV2D && l->kind != NEST_LAYER_MAXPOOL) return (nest_conv_geom){0};
  return nest_conv_geom_make(l->in.c, l->in.h, l->in.w, l->hp.kh, l->hp.kw, l->hp.stride,
                             l->hp.pad);
}

static void ref_forward(const nest_layer *l, int n, const double *x, double *const *p, double *y) {
  const size_t in_sz = nest_shape_size(l->in);
  nest_conv_geom g = geom_of(l);
  switch (l->kind) {
    case NEST_LAYER_DENSE:
      nest_ref_dense_forward(n, (int)in_sz, l->hp.units, x, p[0], p[1], y);
      break;
    case NEST_LAYER_RELU: nest_ref_relu_forward(in_sz * n, x, y); break;
    case NEST_LAYER_CONV2D:
      if (l->hp.area)
        nest_ref_conv2d_area_forward(&g, l->hp.out_c, n, x, p[0], p[1], g_area, y);
      else
        nest_ref_conv2d_forward(&g, l->hp.out_c, n, x, p[0], p[1], y);
      break;
    case NEST_LAYER_MAXPOOL: nest_ref_maxpool_forward(&g, n, x, y); break;
    case NEST_LAYER_BATCHNORM:
      nest_ref_batchnorm_forward(n, l->in.c, l->in.h * l->in.w, l->hp.eps, x, p[0], p[1], y, NULL,
                                 NULL);
      break;
    case NEST_LAYER_DROPOUT: nest_ref_dropout_forward(in_sz * n, l->hp.rate, g_keep, x, y); break;
    default: fail_msg("no reference for kind %d", (int)l->kind);
  }
}

static void ref_backward(const nest_layer *l, int n, const double *x, double *const *p,
                         const double *dy, double *dx, double *const *dp) {
  const size_t in_sz = nest_shape_size(l->in);
  nest_conv_geom g = geom_of(l);
  switch (l->kind) {
    case NEST_LAYER_DENSE:
      nest_ref_dense_backward(n, (int)in_sz, l->hp.units, x, p[0], dy, dx, dp[0], dp[1]);
      break;
    case NEST_LAYER_RELU: nest_ref_relu_backward(in_sz * n, x, dy, dx); break;
    case NEST_LAYER_CONV2D:
      if (l->hp.area)
        nest_ref_conv2d_area_backward(&g, l->hp.out_c, n, x, p[0], g_area, dy, dx, dp[0], dp[1]);
      else
        nest_ref_conv2d_backward(&g, l->hp.out_c, n, x, p[0], dy, dx, dp[0], dp[1]);
      break;
    case NEST_LAYER_MAXPOOL: nest_ref_maxpool_backward(&g, n, x, dy, dx); break;
    case NEST_LAYER_BATCHNORM:
      nest_ref_batchnorm_backward(n, l->in.c, l->in.h * l->in.w, l->hp.eps, x, p[0], dy, dx, dp[0],
                                  dp[1]);
      break;
    case NEST_LAYER_DROPOUT:
      nest_ref_dropout_backward(in_sz * n, l->hp.rate, g_keep, dy, dx);
      break;
    default: fail_msg("no reference for kind %d", (int)l->kind);
  }
}


static double loss_of(const double *R, const double *y, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += R[i] * y[i];
  return s;
}

/* Distinct, well separated values (no ties within 2e-3) in random order: safe for maxpool
 * finite differences. */
static void fill_distinct(float *x, size_t n, uint64_t seed) {
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_TEST, 7, 0);
  for (size_t i = 0; i < n; ++i) x[i] = (float)((double)i - 0.5 * (double)n) * (4.0f / (float)n);
  for (size_t i = n; i > 1; --i) { /* Fisher-Yates */
    size_t j = (size_t)nest_rng_below(&r, i);
    float t = x[i - 1];
    x[i - 1] = x[j];
    x[j] = t;
  }
}

/* Fill the area mask Msk[oc, c, oh, ow] of a partial-area conv layer so that every branch of
 * the fast path runs: with c >= 2, input map 0 stays all ones (merged GEMMs), map 1 all zeros
 * (skipped), and the others (every map when c == 1) lose each entry with probability `off`.
 * Returns the number of zeros. */
static size_t area_fill(nest_layer *l, double off, uint64_t seed) {
  const int oc = l->hp.out_c, c = l->in.c;
  const size_t plane = (size_t)l->out.h * l->out.w;
  float *msk = l->buf[0];
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_TEST, 40, 0);
  size_t zeros = 0;
  for (int o = 0; o < oc; ++o)
    for (int ci = 0; ci < c; ++ci)
      for (size_t j = 0; j < plane; ++j) {
        float v = 1.0f;
        if (c >= 2 && ci % 4 == 1)
          v = off > 0 ? 0.0f : 1.0f;
        else if (c == 1 || ci % 4 != 0)
          v = nest_rng_uniform(&r) < off ? 0.0f : 1.0f;
        msk[((size_t)o * c + ci) * plane + j] = v;
        zeros += v == 0.0f;
      }
  return zeros;
}

/* ---- the generic case
 * ---------------------------------------------------------------------------- */

typedef struct {
  const char *label;
  const nest_layer_ops *ops;
  nest_shape in;
  nest_layer_hparams hp;
  int n, nthreads;
  int dx_null;
  double dormant; /* fraction of maskable weights made dormant */
} layer_case;

#define FD_MAX 48 /* finite-difference probes per tensor */

/* Check reference gradient grad[] of tensor t[] (count values) against central differences
 * of L = Σ R ⊙ ref_forward. */
static void fd_check(const layer_case *tc, const nest_layer *l, double *x, double *const *p,
                     const double *R, double *t, size_t count, const double *grad,
                     const char *what) {
  const size_t out_n = nest_shape_size(l->out) * tc->n;
  double *y = nest_test_dalloc(out_n);
  const double h = 1e-5;
  size_t probes = count < FD_MAX ? count : FD_MAX;
  double worst = 0.0;
  for (size_t k = 0; k < probes; ++k) {
    size_t i = count <= FD_MAX ? k : (k * count) / FD_MAX + (k * 7) % (count / FD_MAX);
    double keep = t[i];
    t[i] = keep + h;
    ref_forward(l, tc->n, x, p, y);
    double lp = loss_of(R, y, out_n);
    t[i] = keep - h;
    ref_forward(l, tc->n, x, p, y);
    double lm = loss_of(R, y, out_n);
    t[i] = keep;
    double fd = (lp - lm) / (2 * h);
    double err = fabs(fd - grad[i]) / fmax(1.0, fabs(grad[i]));
    if (err > worst) worst = err;
    if (err > 1e-6)
      fail_msg("%s: reference d%s[%zu] = %.10g but finite difference %.10g", tc->label, what, i,
               grad[i], fd);
  }
  free(y);
}

/* area_off: for a conv2d layer with hp.area, the fraction of its area mask set to 0 (see
 * area_fill). */
static void run_case_area(const layer_case *tc, double area_off) {
  nest_layer *l = NULL;
  const int n = tc->n, max_batch = tc->n + 2; /* a partly filled batch */
  nest_status st =
      nest_layer_create(tc->ops, tc->label, tc->in, &tc->hp, max_batch, tc->nthreads, &l);
  if (st != NEST_OK) fail_msg("%s: create failed: %s", tc->label, nest_error_message());
  assert_int_equal(nest_layer_bind_standalone(l), NEST_OK);
  l->index = 3;
  const size_t in_n = nest_shape_size(l->in) * n, out_n = nest_shape_size(l->out) * n;
  uint64_t seed = 1000 + (uint64_t)tc->n * 31 + (uint64_t)nest_shape_size(tc->in);

  /* parameters: random, with dormant weights (mask 0, value 0) */
  double *pd[NEST_MAX_PARAMS] = {0}, *gd[NEST_MAX_PARAMS] = {0};
  size_t ndormant = 0;
  for (int i = 0; i < l->nparams; ++i) {
    size_t c = l->param[i].count;
    nest_test_fill_normal(l->p[i], c, seed + 10 + i, 0.5f);
    if (l->param[i].init == NEST_INIT_ONE)
      for (size_t j = 0; j < c; ++j) l->p[i][j] += 1.0f;
    if (l->param[i].maskable && tc->dormant > 0) {
      nest_rng r;
      nest_rng_init(&r, seed, NEST_RNG_TEST, 20 + i, 0);
      for (size_t j = 0; j < c; ++j)
        if (nest_rng_uniform(&r) < tc->dormant) {
          l->m[i][j] = 0.0f;
          l->p[i][j] = 0.0f;
          ++ndormant;
        }
    }
    for (size_t j = 0; j < c; ++j) l->g[i][j] = NAN; /* backward must overwrite */
    pd[i] = nest_test_dalloc(c);
    gd[i] = nest_test_dalloc(c);
    nest_test_to_double(l->p[i], pd[i], c);
  }
  if (tc->dormant > 0) assert_true(ndormant > 0);
  if (l->kind == NEST_LAYER_CONV2D && l->hp.area) {
    assert_int_equal(l->nbuffers, 1);
    size_t off = area_fill(l, area_off, seed + 30);
    if (area_off > 0) assert_true(off > 0 && off < l->buffer[0].count);
    g_area = nest_test_dalloc(l->buffer[0].count);
    nest_test_to_double(l->buf[0], g_area, l->buffer[0].count);
  }

  float *x = nest_test_falloc(in_n), *y = nest_test_falloc(out_n), *dy = nest_test_falloc(out_n), *dx = nest_test_falloc(in_n);
  if (l->kind == NEST_LAYER_MAXPOOL) {
    fill_distinct(x, in_n, seed + 1);
  } else {
    nest_test_fill_normal(x, in_n, seed + 1, 1.0f);
    if (l->kind == NEST_LAYER_RELU) /* keep finite differences away from the kink */
      for (size_t i = 0; i < in_n; ++i)
        if (fabsf(x[i]) < 0.05f) x[i] += x[i] < 0 ? -0.1f : 0.1f;
  }
  nest_test_fill_normal(dy, out_n, seed + 2, 1.0f);
  for (size_t i = 0; i < in_n; ++i) dx[i] = NAN;

  int64_t ids[16];
  for (int i = 0; i < n; ++i) ids[i] = 1000 + 17 * i;
  nest_ctx ctx = {
      .n = n, .train = 1, .nthreads = tc->nthreads, .seed = 42, .step = 5, .sample_ids = ids};

  /* dropout: the reference uses the keep mask the RNG spec defines */
  if (l->kind == NEST_LAYER_DROPOUT) {
    const size_t d = nest_shape_size(l->in);
    g_keep = malloc(in_n ? in_n : 1);
    assert_non_null(g_keep);
    const uint64_t thr = (uint64_t)((double)l->hp.rate * 4294967296.0);
    for (int i = 0; i < n; ++i)
      for (size_t j = 0; j < d; ++j)
        g_keep[i * d + j] =
            nest_rng_at(42, NEST_RNG_DROPOUT | (3u << 8), (uint64_t)ids[i], 5, j) >= thr;
  }

  double *xd = nest_test_dalloc(in_n), *yd = nest_test_dalloc(out_n), *R = nest_test_dalloc(out_n), *dxd = nest_test_dalloc(in_n);
  nest_test_to_double(x, xd, in_n);
  nest_test_to_double(dy, R, out_n);

  /* (1) reference backward vs finite differences of the reference forward */
  ref_backward(l, n, xd, pd, R, dxd, gd);
  fd_check(tc, l, xd, pd, R, xd, in_n, dxd, "x");
  for (int i = 0; i < l->nparams; ++i)
    fd_check(tc, l, xd, pd, R, pd[i], l->param[i].count, gd[i], l->param[i].name);

  /* (2) fast forward / backward vs the reference */
  ref_forward(l, n, xd, pd, yd);
  assert_int_equal(l->ops->forward(l, &ctx, x, y), NEST_OK);
  double e = nest_test_norm_rel(y, yd, out_n);
  if (!(e < 1e-5)) fail_msg("%s: forward differs from reference by %.3g", tc->label, e);

  assert_int_equal(l->ops->backward(l, &ctx, x, y, dy, tc->dx_null ? NULL : dx), NEST_OK);
  if (!tc->dx_null) {
    e = nest_test_norm_rel(dx, dxd, in_n);
    if (!(e < 1e-4)) fail_msg("%s: dx differs from reference by %.3g", tc->label, e);
  }
  for (int i = 0; i < l->nparams; ++i) {
    e = nest_test_norm_rel(l->g[i], gd[i], l->param[i].count);
    if (!(e < 1e-4))
      fail_msg("%s: d%s differs from reference by %.3g", tc->label, l->param[i].name, e);
    if (l->param[i].maskable && ndormant > 0) {
      /* dormant positions carry the dense gradient (needed by growth): nonzero somewhere */
      int nonzero = 0;
      for (size_t j = 0; j < l->param[i].count; ++j)
        if (l->m[i][j] == 0.0f && l->g[i][j] != 0.0f) nonzero = 1;
      if (!nonzero) fail_msg("%s: all dormant gradients are zero", tc->label);
    }
  }

  /* the same forward again gives bit-identical output (no state leaks between calls) */
  float *y2 = nest_test_falloc(out_n);
  assert_int_equal(l->ops->forward(l, &ctx, x, y2), NEST_OK);
  assert_memory_equal(y, y2, sizeof(float) * out_n);

  free(y2);
  free(x), free(y), free(dy), free(dx), free(xd), free(yd), free(R), free(dxd);
  for (int i = 0; i < l->nparams; ++i) free(pd[i]), free(gd[i]);
  free(g_keep);
  g_keep = NULL;
  free(g_area);
  g_area = NULL;
  nest_layer_destroy(&l);
  assert_null(l);
}

static void run_case(const layer_case *tc) { run_case_area(tc, 0.0); }

static void run_cases(const layer_case *cases, size_t count) {
  for (size_t i = 0; i < count; ++i) run_case(&cases[i]);
}

#define S(c, h, w) ((nest_shape){(c), (h), (w)})

/* ---- per-kind gradient checks -------------------------------------------------------------- */

static void test_dense_grad(void **state) {
  (void)state;
  const layer_case cases[] = {
      {"fc_masked", &nest_dense_ops, S(7, 1, 1), {.units = 5}, 5, 1, 0, 0.3},
      {"fc_flat", &nest_dense_ops, S(3, 4, 2), {.units = 4}, 1, 2, 0, 0.4},
      {"fc_nodx", &nest_dense_ops, S(6, 1, 1), {.units = 3}, 5, 2, 1, 0.3},
  };
  run_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_relu_grad(void **state) {
  (void)state;
  const layer_case cases[] = {
      {"relu_a", &nest_relu_ops, S(3, 5, 4), {0}, 5, 1, 0, 0},
      {"relu_b", &nest_relu_ops, S(9, 1, 1), {0}, 1, 2, 0, 0},
  };
  run_cases(cases, sizeof cases / sizeof cases[0]);
}

/* hyper-parameters: conv (out_c, kh, kw, stride, pad), pool (kh, kw, stride, pad) */
#define CONV(oc, h, w, s, p) {.out_c = (oc), .kh = (h), .kw = (w), .stride = (s), .pad = (p)}
#define POOL(h, w, s, p) {.kh = (h), .kw = (w), .stride = (s), .pad = (p)}

/* clang-format off */
static void test_conv2d_grad(void **state) {
  (void)state;
  const nest_layer_ops *C = &nest_conv2d_ops;
  const layer_case cases[] = {
      /* label            ops in          hp                 n nt nodx dormant */
      {"conv_s1p0",       C, S(3, 7, 5),  CONV(4, 3, 2, 1, 0), 5, 1, 0, 0.3}, /* odd shapes */
      {"conv_s2p1",       C, S(3, 7, 5),  CONV(4, 3, 2, 2, 1), 5, 2, 0, 0.3},
      {"conv_s3p2_n1",    C, S(2, 9, 8),  CONV(3, 3, 3, 3, 2), 1, 2, 0, 0.5},
      {"conv_s3p2_nodx",  C, S(2, 9, 8),  CONV(3, 3, 3, 3, 2), 5, 2, 1, 0.2},
      {"conv_big_kernel", C, S(1, 6, 6),  CONV(2, 5, 5, 1, 2), 5, 2, 0, 0.3}, /* grouped GEMM */
      {"conv_1x1",        C, S(4, 5, 3),  CONV(3, 1, 1, 1, 0), 5, 1, 0, 0.3},
      {"conv_wide",       C, S(2, 4, 11), CONV(5, 2, 4, 2, 1), 5, 2, 0, 0.0},
      {"conv_defaults",   C, S(2, 6, 5),  {.out_c = 2, .kh = 3}, 5, 1, 0, 0.3}, /* kw=kh, s=1 */
  };
  run_cases(cases, sizeof cases / sizeof cases[0]);
}

/* Partial-area convolution (hp.area = 1): reference vs finite differences and the fast path vs
 * the reference, with a partial mask (about half the entries 0 where random; see area_fill)
 * and with the all-ones mask. Shapes cover grouped samples and row chunks (conv_chunks:
 * col over the L2 budget), 1 and 2 threads, dx == NULL. */
static void test_conv2d_area_grad(void **state) {
  (void)state;
  const nest_layer_ops *C = &nest_conv2d_ops;
#define ACONV(oc, h, w, s, p) {.out_c = (oc), .kh = (h), .kw = (w), .stride = (s), .pad = (p), .area = 1}
  const struct {
    layer_case c;
    double area_off;
  } cases[] = {
      /*  label            ops in             hp                   n nt nodx dormant  area_off */
      {{"area_s1p0",       C, S(3, 7, 5),     ACONV(4, 3, 2, 1, 0), 5, 1, 0, 0.3},   0.5},
      {{"area_s2p1",       C, S(5, 7, 5),     ACONV(4, 3, 2, 2, 1), 5, 2, 0, 0.3},   0.5},
      {{"area_s3p2_n1",    C, S(2, 9, 8),     ACONV(3, 3, 3, 3, 2), 1, 2, 0, 0.5},   0.5},
      {{"area_nodx",       C, S(6, 9, 8),     ACONV(3, 3, 3, 1, 1), 5, 2, 1, 0.2},   0.5},
      {{"area_one_map",    C, S(1, 8, 8),     ACONV(3, 5, 5, 1, 2), 5, 2, 0, 0.3},   0.5},
      {{"area_all_ones",   C, S(3, 7, 6),     ACONV(4, 3, 3, 1, 1), 5, 2, 0, 0.3},   0.0},
      {{"area_1x1",        C, S(4, 5, 3),     ACONV(3, 1, 1, 1, 0), 5, 1, 0, 0.3},   0.5},
      {{"area_chunks",     C, S(3, 100, 100), ACONV(2, 3, 3, 1, 1), 2, 2, 0, 0.3},   0.5},
  };
#undef ACONV
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)
    run_case_area(&cases[i].c, cases[i].area_off);
}

typedef struct {
  float *y, *dx, *dW, *db;
} conv_result;

/* Forward + backward of a conv layer (area on or off) on given x, W, b, dy (and, with area,
 * mask msk); results copied out. */
static conv_result conv_once(nest_shape in, nest_layer_hparams hp, int n, int nt, const float *x,
                             const float *W, const float *b, const float *msk, const float *dy) {
  nest_layer *l = NULL;
  assert_ok(nest_layer_create(&nest_conv2d_ops, "conv", in, &hp, n, nt, &l));
  assert_ok(nest_layer_bind_standalone(l));
  const size_t X = nest_shape_size(l->in) * n, Y = nest_shape_size(l->out) * n;
  memcpy(l->p[0], W, sizeof(float) * l->param[0].count);
  memcpy(l->p[1], b, sizeof(float) * l->param[1].count);
  if (hp.area) memcpy(l->buf[0], msk, sizeof(float) * l->buffer[0].count);
  conv_result r = {nest_test_falloc(Y), nest_test_falloc(X), nest_test_falloc(l->param[0].count),
                   nest_test_falloc(l->param[1].count)};
  nest_ctx ctx = {.n = n, .train = 1, .nthreads = nt};
  assert_ok(l->ops->forward(l, &ctx, x, r.y));
  assert_ok(l->ops->backward(l, &ctx, x, r.y, dy, r.dx));
  memcpy(r.dW, l->g[0], sizeof(float) * l->param[0].count);
  memcpy(r.db, l->g[1], sizeof(float) * l->param[1].count);
  nest_layer_destroy(&l);
  return r;
}

static void conv_result_free(conv_result *r) { free(r->y), free(r->dx), free(r->dW), free(r->db); }

static double rel_f(const float *a, const float *b, size_t n) {
  double *bd = nest_test_dalloc(n);
  nest_test_to_double(b, bd, n);
  double e = nest_test_norm_rel(a, bd, n);
  free(bd);
  return e;
}

/* One shape: (a) all-ones mask == plain convolution (float tolerance); (b) a partial mask vs
 * the double reference; (c) 2 threads twice: bit-identical. */
static void area_case(const char *label, nest_shape in, nest_layer_hparams hp, int n) {
  if (!hp.kw) hp.kw = hp.kh;
  if (!hp.stride) hp.stride = 1;
  nest_layer_hparams plain = hp;
  plain.area = 0;
  hp.area = 1;
  nest_conv_geom g = nest_conv_geom_make(in.c, in.h, in.w, hp.kh, hp.kw, hp.stride, hp.pad);
  const size_t X = nest_shape_size(in) * n, Y = (size_t)n * hp.out_c * g.oh * g.ow;
  const size_t WN = (size_t)hp.out_c * in.c * hp.kh * hp.kw;
  const size_t MN = (size_t)hp.out_c * in.c * g.oh * g.ow;
  float *x = nest_test_falloc(X), *W = nest_test_falloc(WN), *b = nest_test_falloc(hp.out_c);
  float *dy = nest_test_falloc(Y), *ones = nest_test_falloc(MN), *msk = nest_test_falloc(MN);
  nest_test_fill_normal(x, X, 11, 1.0f);
  nest_test_fill_normal(W, WN, 12, 0.3f);
  nest_test_fill_normal(b, hp.out_c, 13, 0.3f);
  nest_test_fill_normal(dy, Y, 14, 1.0f);
  nest_rng r;
  nest_rng_init(&r, 15, NEST_RNG_TEST, 41, 0);
  size_t zeros = 0;
  for (size_t i = 0; i < MN; ++i) {
    ones[i] = 1.0f;
    msk[i] = nest_rng_uniform(&r) < 0.5 ? 0.0f : 1.0f;
    zeros += msk[i] == 0.0f;
  }
  assert_true(zeros > MN / 4 && zeros < 3 * MN / 4);

  /* (a) all ones: the plain convolution */
  conv_result p = conv_once(in, plain, n, 2, x, W, b, NULL, dy);
  conv_result a = conv_once(in, hp, n, 2, x, W, b, ones, dy);
  double e[4] = {rel_f(a.y, p.y, Y), rel_f(a.dx, p.dx, X), rel_f(a.dW, p.dW, WN),
                 rel_f(a.db, p.db, hp.out_c)};
  for (int k = 0; k < 4; ++k)
    if (!(e[k] < 1e-5))
      fail_msg("%s: all-ones area differs from the plain conv: y %.2g dx %.2g dW %.2g db %.2g",
               label, e[0], e[1], e[2], e[3]);

  /* (b) a partial mask vs the reference, 1 and 2 threads */
  double *xd = nest_test_dalloc(X), *Wd = nest_test_dalloc(WN), *bd = nest_test_dalloc(hp.out_c);
  double *md = nest_test_dalloc(MN), *dyd = nest_test_dalloc(Y), *yr = nest_test_dalloc(Y);
  double *dxr = nest_test_dalloc(X), *dWr = nest_test_dalloc(WN), *dbr = nest_test_dalloc(hp.out_c);
  nest_test_to_double(x, xd, X);
  nest_test_to_double(W, Wd, WN);
  nest_test_to_double(b, bd, hp.out_c);
  nest_test_to_double(msk, md, MN);
  nest_test_to_double(dy, dyd, Y);
  nest_ref_conv2d_area_forward(&g, hp.out_c, n, xd, Wd, bd, md, yr);
  nest_ref_conv2d_area_backward(&g, hp.out_c, n, xd, Wd, md, dyd, dxr, dWr, dbr);
  conv_result q[3];
  for (int k = 0; k < 3; ++k) {
    q[k] = conv_once(in, hp, n, k ? 2 : 1, x, W, b, msk, dy);
    double f[4] = {nest_test_norm_rel(q[k].y, yr, Y), nest_test_norm_rel(q[k].dx, dxr, X),
                   nest_test_norm_rel(q[k].dW, dWr, WN), nest_test_norm_rel(q[k].db, dbr, hp.out_c)};
    for (int j = 0; j < 4; ++j)
      if (!(f[j] < 1e-5))
        fail_msg("%s (%d threads): partial area vs reference: y %.2g dx %.2g dW %.2g db %.2g",
                 label, k ? 2 : 1, f[0], f[1], f[2], f[3]);
  }
  /* the mask matters: the partial-mask output is not the plain one */
  assert_true(rel_f(q[0].y, p.y, Y) > 1e-2);
  /* (c) a fixed thread count reproduces bit for bit */
  assert_memory_equal(q[1].y, q[2].y, sizeof(float) * Y);
  assert_memory_equal(q[1].dx, q[2].dx, sizeof(float) * X);
  assert_memory_equal(q[1].dW, q[2].dW, sizeof(float) * WN);
  assert_memory_equal(q[1].db, q[2].db, sizeof(float) * hp.out_c);
  for (int k = 0; k < 3; ++k) conv_result_free(&q[k]);
  conv_result_free(&p);
  conv_result_free(&a);
  free(x), free(W), free(b), free(dy), free(ones), free(msk);
  free(xd), free(Wd), free(bd), free(md), free(dyd), free(yr), free(dxr), free(dWr), free(dbr);
}

static void test_conv2d_area_vs_plain(void **state) {
  (void)state;
  area_case("lenet5.conv1", S(1, 28, 28), (nest_layer_hparams){.out_c = 20, .kh = 5}, 9);
  area_case("lenet5.conv2", S(20, 12, 12), (nest_layer_hparams){.out_c = 50, .kh = 5}, 13);
  area_case("chunks", S(3, 140, 140),
            (nest_layer_hparams){.out_c = 6, .kh = 5, .stride = 2, .pad = 2}, 3);
  area_case("alexnet.conv1-like", S(3, 227, 227),
            (nest_layer_hparams){.out_c = 4, .kh = 11, .stride = 4}, 2);
}

static void test_maxpool_grad(void **state) {
  (void)state;
  const nest_layer_ops *P = &nest_maxpool_ops;
  const layer_case cases[] = {
      {"pool_2x2",     P, S(3, 7, 5), POOL(2, 2, 2, 0), 5, 1, 0, 0},
      {"pool_3x3s2p1", P, S(2, 9, 8), POOL(3, 3, 2, 1), 5, 2, 0, 0}, /* overlapping windows */
      {"pool_3x2s3p1", P, S(2, 7, 6), POOL(3, 2, 3, 1), 1, 2, 0, 0},
      {"pool_3x3s1p2", P, S(1, 5, 5), POOL(3, 3, 1, 2), 5, 2, 0, 0},
      {"pool_default", P, S(2, 6, 7), {.kh = 2},        5, 1, 0, 0}, /* kw = kh, stride = kh */
  };
  run_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_batchnorm_grad(void **state) {
  (void)state;
  const nest_layer_ops *B = &nest_batchnorm_ops;
  const layer_case cases[] = {
      {"bn_dense",     B, S(6, 1, 1),    {0},           5, 1, 0, 0},
      {"bn_dense_2t",  B, S(40, 1, 1),   {.eps = 1e-3f}, 5, 2, 0, 0},
      {"bn_conv",      B, S(3, 4, 5),    {0},           5, 2, 0, 0},
      {"bn_conv_n1",   B, S(3, 4, 5),    {0},           1, 1, 0, 0},
      {"bn_conv_nodx", B, S(3, 4, 5),    {0},           5, 2, 1, 0},
      {"bn_conv_big",  B, S(8, 32, 32),  {0},           5, 2, 0, 0}, /* threaded path */
      {"bn_dense_big", B, S(4100, 1, 1), {0},           9, 2, 0, 0},
  };
  run_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_dropout_grad(void **state) {
  (void)state;
  const layer_case cases[] = {
      {"drop_a", &nest_dropout_ops, S(4, 3, 2),  {.rate = 0.3f}, 5, 2, 0, 0},
      {"drop_b", &nest_dropout_ops, S(50, 1, 1), {.rate = 0.5f}, 1, 1, 0, 0},
  };
  run_cases(cases, sizeof cases / sizeof cases[0]);
}
/* clang-format on */

/* ---- setup declarations and errors --------------------------------------------------------------
 */

static void expect_config_error(const nest_layer_ops *ops, const char *name, nest_shape in,
                                nest_layer_hparams hp, const char *needle) {
  nest_layer *l = NULL;
  nest_error_clear();
  nest_status st = nest_layer_create(ops, name, in, &hp, 4, 1, &l);
  assert_int_equal(st, NEST_ERR_CONFIG);
  assert_null(l);
  if (!strstr(nest_error_message(), name) || !strstr(nest_error_message(), needle))
    fail_msg("message '%s' lacks '%s' / '%s'", nest_error_message(), name, needle);
  nest_error_clear();
}

static void test_setup_errors(void **state) {
  (void)state;
  expect_config_error(&nest_conv2d_ops, "conv2", S(6, 3, 3),
                      (nest_layer_hparams){.out_c = 4, .kh = 5, .kw = 5}, "too small");
  expect_config_error(&nest_conv2d_ops, "conv9", S(6, 8, 8), (nest_layer_hparams){.kh = 3},
                      "out_c");
  expect_config_error(&nest_maxpool_ops, "pool1", S(2, 1, 5),
                      (nest_layer_hparams){.kh = 2, .kw = 2, .stride = 2}, "too small");
  expect_config_error(&nest_maxpool_ops, "pool2", S(2, 8, 8),
                      (nest_layer_hparams){.kh = 2, .stride = 2, .pad = 2}, "pad");
  expect_config_error(&nest_dropout_ops, "drop1", S(5, 1, 1), (nest_layer_hparams){.rate = 1.0f},
                      "rate");
  expect_config_error(&nest_batchnorm_ops, "bn1", S(5, 1, 1),
                      (nest_layer_hparams){.momentum = 1.5f}, "momentum");
}

static void test_declarations(void **state) {
  (void)state;
  nest_layer *l = NULL;
  assert_int_equal(
      nest_layer_create(&nest_conv2d_ops, "conv1", S(3, 32, 30),
                        &(nest_layer_hparams){.out_c = 8, .kh = 5, .kw = 3, .stride = 2, .pad = 1},
                        16, 2, &l),
      NEST_OK);
  assert_int_equal(l->kind, NEST_LAYER_CONV2D);
  assert_int_equal(l->out.c, 8);
  assert_int_equal(l->out.h, (32 + 2 - 5) / 2 + 1);
  assert_int_equal(l->out.w, (30 + 2 - 3) / 2 + 1);
  assert_int_equal(l->nparams, 2);
  assert_string_equal(l->param[0].name, "W");
  assert_int_equal(l->param[0].ndims, 4);
  assert_int_equal(l->param[0].dims[1], 3);
  assert_int_equal(l->param[0].fan_in, 3 * 5 * 3);
  assert_int_equal(l->param[0].fan_out, 8 * 5 * 3);
  assert_int_equal(l->param[0].init, NEST_INIT_HE);
  assert_true(l->param[0].maskable && l->param[0].decay);
  assert_string_equal(l->param[1].name, "b");
  assert_true(!l->param[1].maskable && !l->param[1].decay);
  nest_layer_destroy(&l);

  assert_int_equal(
      nest_layer_create(&nest_batchnorm_ops, "bn", S(6, 4, 4), &(nest_layer_hparams){0}, 8, 1, &l),
      NEST_OK);
  assert_int_equal(l->nparams, 2);
  assert_int_equal(l->param[0].init, NEST_INIT_ONE);
  assert_int_equal(l->param[1].init, NEST_INIT_ZERO);
  assert_int_equal(l->nbuffers, 2);
  assert_string_equal(l->buffer[0].name, "running_mean");
  assert_string_equal(l->buffer[1].name, "running_var");
  assert_true(l->buffer[1].init_value == 1.0f);
  assert_true(fabsf(l->hp.eps - 1e-5f) < 1e-9f && fabsf(l->hp.momentum - 0.1f) < 1e-7f);
  nest_layer_destroy(&l);

  assert_int_equal(nest_layer_create(&nest_maxpool_ops, "pool", S(96, 55, 55),
                                     &(nest_layer_hparams){.kh = 3, .stride = 2}, 8, 1, &l),
                   NEST_OK);
  assert_int_equal(l->out.h, 27); /* AlexNet pool1 */
  assert_int_equal(l->out.w, 27);
  nest_layer_destroy(&l);
}

/* ---- batch norm: running statistics and eval mode ---------------------------------------------
 */

static void test_batchnorm_running_and_eval(void **state) {
  (void)state;
  const int n = 5, c = 3, s = 4 * 5;
  nest_layer *l = NULL;
  assert_int_equal(nest_layer_create(&nest_batchnorm_ops, "bn", S(c, 4, 5),
                                     &(nest_layer_hparams){.momentum = 0.25f}, n, 2, &l),
                   NEST_OK);
  assert_int_equal(nest_layer_bind_standalone(l), NEST_OK);
  const size_t cnt = (size_t)n * c * s;
  float *x = nest_test_falloc(cnt), *y = nest_test_falloc(cnt), *dy = nest_test_falloc(cnt), *dx = nest_test_falloc(cnt);
  double *xd = nest_test_dalloc(cnt), *yd = nest_test_dalloc(cnt), mean[3], var[3], gam[3], bet[3];
  nest_test_fill_normal(x, cnt, 5, 2.0f);
  for (size_t i = 0; i < cnt; ++i) x[i] += 3.0f; /* a real mean */
  for (int ch = 0; ch < c; ++ch) {
    l->p[0][ch] = 0.5f + ch;
    l->p[1][ch] = -0.25f * ch;
    gam[ch] = l->p[0][ch];
    bet[ch] = l->p[1][ch];
  }
  nest_test_to_double(x, xd, cnt);
  nest_ref_batchnorm_forward(n, c, s, 1e-5, xd, gam, bet, yd, mean, var);
  nest_ctx ctx = {.n = n, .train = 1, .nthreads = 2};
  assert_int_equal(l->ops->forward(l, &ctx, x, y), NEST_OK);
  const double m = (double)n * s;
  for (int ch = 0; ch < c; ++ch) {
    assert_true(fabs(l->buf[0][ch] - 0.25 * mean[ch]) < 1e-5);
    assert_true(fabs(l->buf[1][ch] - (0.75 + 0.25 * var[ch] * m / (m - 1))) < 1e-5);
  }
  /* a gradient-only pass normalises with the batch statistics (same y) but leaves the running
   * statistics exactly as they were */
  float run[6], *y2 = nest_test_falloc(cnt);
  memcpy(run, l->buf[0], sizeof(float) * 3);
  memcpy(run + 3, l->buf[1], sizeof(float) * 3);
  ctx.grad_only = 1;
  assert_int_equal(l->ops->forward(l, &ctx, x, y2), NEST_OK);
  assert_memory_equal(y, y2, sizeof(float) * cnt);
  assert_memory_equal(run, l->buf[0], sizeof(float) * 3);
  assert_memory_equal(run + 3, l->buf[1], sizeof(float) * 3);
  ctx.grad_only = 0;
  free(y2);
  /* eval: y = gamma (x - running_mean) / sqrt(running_var + eps) + beta */
  ctx.train = 0;
  assert_int_equal(l->ops->forward(l, &ctx, x, y), NEST_OK);
  for (size_t i = 0; i < cnt; ++i) {
    int ch = (int)((i / s) % c);
    double want = gam[ch] * (xd[i] - l->buf[0][ch]) / sqrt(l->buf[1][ch] + 1e-5) + bet[ch];
    assert_true(fabs(y[i] - want) < 1e-5 * fmax(1.0, fabs(want)));
  }
  /* eval backward: statistics are constants, so dx = gamma / sqrt(rv + eps) * dy */
  nest_test_fill_normal(dy, cnt, 6, 1.0f);
  assert_int_equal(l->ops->backward(l, &ctx, x, y, dy, dx), NEST_OK);
  for (size_t i = 0; i < cnt; ++i) {
    int ch = (int)((i / s) % c);
    double want = gam[ch] / sqrt(l->buf[1][ch] + 1e-5) * dy[i];
    assert_true(fabs(dx[i] - want) < 1e-5 * fmax(1.0, fabs(want)));
  }
  /* running stats do not move in eval mode */
  float rm0 = l->buf[0][0];
  assert_int_equal(l->ops->forward(l, &ctx, x, y), NEST_OK);
  assert_true(l->buf[0][0] == rm0);
  free(x), free(y), free(dy), free(dx), free(xd), free(yd);
  nest_layer_destroy(&l);
}

/* ---- sync batch-norm over simulated ranks ------------------------------------------------------
 */

#define NRANKS 2

typedef struct {
  pthread_barrier_t bar;
  double *slot[NRANKS];
  int calls[NRANKS];
} fake_world;

typedef struct {
  fake_world *w;
  int rank;
  size_t last_n;
} fake_comm;

/* Sum over the simulated ranks in rank order (identical result on every rank). */
static nest_status fake_allreduce(void *comm, double *buf, size_t n) {
  fake_comm *fc = comm;
  fake_world *w = fc->w;
  w->slot[fc->rank] = buf;
  w->calls[fc->rank]++;
  fc->last_n = n;
  pthread_barrier_wait(&w->bar);
  double *tmp = malloc(sizeof(double) * (n ? n : 1));
  if (!tmp) return NEST_ERR(NEST_ERR_NOMEM, "fake allreduce");
  for (size_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (int r = 0; r < NRANKS; ++r) s += w->slot[r][i];
    tmp[i] = s;
  }
  pthread_barrier_wait(&w->bar); /* everyone has read every slot */
  memcpy(buf, tmp, sizeof(double) * n);
  free(tmp);
  return NEST_OK;
}

typedef struct {
  nest_layer *l;
  fake_comm comm;
  int n;
  int64_t global_n;
  const float *x, *dy;
  float *y, *dx;
  nest_status st;
} rank_job;

static void *rank_main(void *arg) {
  rank_job *j = arg;
  nest_ctx ctx = {.n = j->n,
                  .train = 1,
                  .nthreads = 2,
                  .allreduce = fake_allreduce,
                  .comm = &j->comm,
                  .global_n = j->global_n};
  j->st = j->l->ops->forward(j->l, &ctx, j->x, j->y);
  if (j->st == NEST_OK) j->st = j->l->ops->backward(j->l, &ctx, j->x, j->y, j->dy, j->dx);
  return NULL;
}

/* A batch split over 2 ranks gives the same y, dx, summed g[] and running statistics as the
 * whole batch on one rank; running statistics are bit-identical on both ranks. */
static void sync_bn_split(nest_shape in, int n0, int n1) {
  const int n = n0 + n1;
  const size_t d = nest_shape_size(in), cnt = d * n;
  float *x = nest_test_falloc(cnt), *dy = nest_test_falloc(cnt), *y = nest_test_falloc(cnt), *dx = nest_test_falloc(cnt);
  float *yr = nest_test_falloc(cnt), *dxr = nest_test_falloc(cnt);
  nest_test_fill_normal(x, cnt, 11, 1.5f);
  nest_test_fill_normal(dy, cnt, 12, 1.0f);
  for (size_t i = 0; i < cnt; ++i) x[i] += 0.7f;

  nest_layer *whole = NULL, *rk[NRANKS] = {0};
  const nest_layer_hparams hp = {0};
  assert_int_equal(nest_layer_create(&nest_batchnorm_ops, "bn", in, &hp, n, 2, &whole), NEST_OK);
  assert_int_equal(nest_layer_bind_standalone(whole), NEST_OK);
  for (int r = 0; r < NRANKS; ++r) {
    assert_int_equal(nest_layer_create(&nest_batchnorm_ops, "bn", in, &hp, n, 2, &rk[r]), NEST_OK);
    assert_int_equal(nest_layer_bind_standalone(rk[r]), NEST_OK);
  }
  for (int ch = 0; ch < in.c; ++ch) {
    float gm = 1.0f + 0.1f * ch, bt = 0.05f * ch;
    whole->p[0][ch] = rk[0]->p[0][ch] = rk[1]->p[0][ch] = gm;
    whole->p[1][ch] = rk[0]->p[1][ch] = rk[1]->p[1][ch] = bt;
  }
  nest_ctx ctx = {.n = n, .train = 1, .nthreads = 1};
  assert_int_equal(whole->ops->forward(whole, &ctx, x, y), NEST_OK);
  assert_int_equal(whole->ops->backward(whole, &ctx, x, y, dy, dx), NEST_OK);

  fake_world w;
  memset(&w, 0, sizeof w);
  assert_int_equal(pthread_barrier_init(&w.bar, NULL, NRANKS), 0);
  rank_job jobs[NRANKS];
  pthread_t th[NRANKS];
  const int rows[NRANKS] = {n0, n1};
  size_t off = 0;
  for (int r = 0; r < NRANKS; ++r) {
    jobs[r] = (rank_job){.l = rk[r],
                         .comm = {&w, r, 0},
                         .n = rows[r],
                         .global_n = n,
                         .x = x + off,
                         .dy = dy + off,
                         .y = yr + off,
                         .dx = dxr + off};
    off += (size_t)rows[r] * d;
  }
  for (int r = 0; r < NRANKS; ++r)
    assert_int_equal(pthread_create(&th[r], NULL, rank_main, &jobs[r]), 0);
  for (int r = 0; r < NRANKS; ++r) pthread_join(th[r], NULL);
  pthread_barrier_destroy(&w.bar);
  for (int r = 0; r < NRANKS; ++r) {
    assert_int_equal(jobs[r].st, NEST_OK);
    assert_int_equal(w.calls[r], 2); /* forward statistics + backward sums, even with n == 0 */
    assert_int_equal(jobs[r].comm.last_n, 2 * (size_t)in.c);
  }
  double *ref = nest_test_dalloc(cnt);
  nest_test_to_double(y, ref, cnt);
  assert_true(nest_test_norm_rel(yr, ref, cnt) < 1e-5);
  nest_test_to_double(dx, ref, cnt);
  assert_true(nest_test_norm_rel(dxr, ref, cnt) < 1e-4);
  for (int i = 0; i < 2; ++i)
    for (int ch = 0; ch < in.c; ++ch) {
      double sum = (double)rk[0]->g[i][ch] + rk[1]->g[i][ch];
      assert_true(fabs(sum - whole->g[i][ch]) < 1e-4 * fmax(1.0, fabs(whole->g[i][ch])));
    }
  for (int b = 0; b < 2; ++b) {
    assert_memory_equal(rk[0]->buf[b], rk[1]->buf[b], sizeof(float) * in.c);
    for (int ch = 0; ch < in.c; ++ch)
      assert_true(fabs(rk[0]->buf[b][ch] - whole->buf[b][ch]) < 1e-5);
  }
  free(ref);
  free(x), free(dy), free(y), free(dx), free(yr), free(dxr);
  nest_layer_destroy(&whole);
  for (int r = 0; r < NRANKS; ++r) nest_layer_destroy(&rk[r]);
}

static void test_sync_batchnorm(void **state) {
  (void)state;
  sync_bn_split(S(3, 4, 5), 3, 2);
  sync_bn_split(S(3, 4, 5), 5, 0); /* a rank with no rows still joins */
  sync_bn_split(S(17, 1, 1), 2, 4);
  sync_bn_split(S(8, 32, 32), 4, 3); /* threaded kernels */
}

/* ---- dropout: masks independent of the rank split, eval identity, rate ------------------------
 */

static void test_dropout_masks(void **state) {
  (void)state;
  const int n = 6;
  const nest_shape in = S(40, 3, 3);
  const size_t d = nest_shape_size(in);
  const nest_layer_hparams hp = {.rate = 0.4f};
  nest_layer *l = NULL;
  assert_int_equal(nest_layer_create(&nest_dropout_ops, "drop", in, &hp, n, 2, &l), NEST_OK);
  assert_int_equal(nest_layer_bind_standalone(l), NEST_OK);
  l->index = 7;
  float *x = nest_test_falloc(d * n), *y = nest_test_falloc(d * n), *y2 = nest_test_falloc(d * n);
  nest_test_fill_normal(x, d * n, 3, 1.0f);
  int64_t ids[6] = {5, 900, 13, 77, 1234567, 2};
  nest_ctx ctx = {.n = n, .train = 1, .nthreads = 2, .seed = 9, .step = 11, .sample_ids = ids};
  assert_int_equal(l->ops->forward(l, &ctx, x, y), NEST_OK);

  /* the same rows on "another rank", in another batch position: identical values */
  ctx.n = 2;
  ctx.sample_ids = ids + 3;
  ctx.nthreads = 1;
  assert_int_equal(l->ops->forward(l, &ctx, x + 3 * d, y2), NEST_OK);
  assert_memory_equal(y + 3 * d, y2, sizeof(float) * 2 * d);

  /* matches the stateless per-element draw; drop fraction close to the rate */
  size_t dropped = 0;
  const uint64_t thr = (uint64_t)(0.4 * 4294967296.0);
  for (int i = 0; i < n; ++i)
    for (size_t j = 0; j < d; ++j) {
      int keep = nest_rng_at(9, NEST_RNG_DROPOUT | (7u << 8), (uint64_t)ids[i], 11, j) >= thr;
      float want = keep ? x[i * d + j] / 0.6f : 0.0f;
      assert_true(fabsf(y[i * d + j] - want) <= 1e-6f * fabsf(want));
      dropped += !keep;
    }
  double frac = (double)dropped / (double)(d * n);
  assert_true(frac > 0.33 && frac < 0.47);

  /* another step draws another mask */
  ctx.n = n;
  ctx.sample_ids = ids;
  ctx.step = 12;
  assert_int_equal(l->ops->forward(l, &ctx, x, y2), NEST_OK);
  assert_true(memcmp(y, y2, sizeof(float) * d * n) != 0);

  /* eval mode and NULL sample ids */
  ctx.train = 0;
  assert_int_equal(l->ops->forward(l, &ctx, x, y2), NEST_OK);
  assert_memory_equal(x, y2, sizeof(float) * d * n);
  assert_int_equal(l->ops->backward(l, &ctx, x, y2, x, y), NEST_OK);
  assert_memory_equal(x, y, sizeof(float) * d * n);
  /* a gradient-only pass (growth scoring) is deterministic: no dropout, no sample ids needed */
  ctx.train = 1;
  ctx.grad_only = 1;
  ctx.sample_ids = NULL;
  assert_int_equal(l->ops->forward(l, &ctx, x, y2), NEST_OK);
  assert_memory_equal(x, y2, sizeof(float) * d * n);
  free(x), free(y), free(y2);
  nest_layer_destroy(&l);

  /* rate 0 is the identity in training too */
  assert_int_equal(
      nest_layer_create(&nest_dropout_ops, "drop0", in, &(nest_layer_hparams){0}, n, 1, &l),
      NEST_OK);
  assert_int_equal(nest_layer_bind_standalone(l), NEST_OK);
  x = nest_test_falloc(d * n), y = nest_test_falloc(d * n);
  nest_test_fill_normal(x, d * n, 4, 1.0f);
  ctx = (nest_ctx){.n = n, .train = 1, .nthreads = 1, .seed = 1};
  assert_int_equal(l->ops->forward(l, &ctx, x, y), NEST_OK);
  assert_memory_equal(x, y, sizeof(float) * d * n);
  free(x), free(y);
  nest_layer_destroy(&l);
}

/* ---- empty local batch ------------------------------------------------------------------------
 */

static void test_empty_batch(void **state) {
  (void)state;
  nest_layer *l = NULL;
  assert_int_equal(nest_layer_create(&nest_conv2d_ops, "conv", S(2, 6, 6),
                                     &(nest_layer_hparams){.out_c = 3, .kh = 3}, 4, 2, &l),
                   NEST_OK);
  assert_int_equal(nest_layer_bind_standalone(l), NEST_OK);
  for (int i = 0; i < l->nparams; ++i)
    for (size_t j = 0; j < l->param[i].count; ++j) l->g[i][j] = 7.0f;
  nest_ctx ctx = {.n = 0, .train = 1, .nthreads = 2};
  float dummy[1] = {0};
  assert_int_equal(l->ops->forward(l, &ctx, dummy, dummy), NEST_OK);
  assert_int_equal(l->ops->backward(l, &ctx, dummy, dummy, dummy, dummy), NEST_OK);
  for (int i = 0; i < l->nparams; ++i)
    for (size_t j = 0; j < l->param[i].count; ++j) assert_true(l->g[i][j] == 0.0f);
  nest_layer_destroy(&l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dense_grad),
      cmocka_unit_test(test_relu_grad),
      cmocka_unit_test(test_conv2d_grad),
      cmocka_unit_test(test_conv2d_area_grad),
      cmocka_unit_test(test_conv2d_area_vs_plain),
      cmocka_unit_test(test_maxpool_grad),
      cmocka_unit_test(test_batchnorm_grad),
      cmocka_unit_test(test_dropout_grad),
      cmocka_unit_test(test_setup_errors),
      cmocka_unit_test(test_declarations),
      cmocka_unit_test(test_batchnorm_running_and_eval),
      cmocka_unit_test(test_sync_batchnorm),
      cmocka_unit_test(test_dropout_masks),
      cmocka_unit_test(test_empty_batch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
