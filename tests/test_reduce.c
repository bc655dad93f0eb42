/* test_reduce.c — reduce.h: PCA against a naive double-precision twin (covariance by plain
 * loops, eigenpairs by power iteration with deflation) and its invariants (orthonormal
 * components, projected variances = eigenvalues, reconstruction error = sum of the dropped
 * eigenvalues); random projections keep pairwise distances within the Johnson–Lindenstrauss
 * bound and have the stated entry distributions; the same bits with 1 and 2 threads and for a
 * row alone or among others; min-max normalisation (training rows only, constant features);
 * bad input gives one clear error; the file arrays round-trip and are validated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/reduce.h"
#include "nest/rng.h"
#include "test_util.h"

void openblas_set_num_threads(int);

/* x [n, d] = L [n, d] diag(sigma) M [d, d] + offset: latent scales sigma_j = 0.8^j give
 * distinct, well separated eigenvalues; offsets and a large scale on feature 0 make min-max
 * normalisation matter. */
static float *make_data(int64_t n, int d, uint64_t seed) {
  float *L = nest_test_falloc((size_t)n * d), *M = nest_test_falloc((size_t)d * d);
  float *x = nest_test_falloc((size_t)n * d);
  nest_test_fill_normal(L, (size_t)n * d, seed, 1.0f);
  nest_test_fill_normal(M, (size_t)d * d, seed + 1000, 1.0f);
  for (int64_t r = 0; r < n; ++r)
    for (int i = 0; i < d; ++i) {
      double v = 0;
      for (int j = 0; j < d; ++j) v += L[(size_t)r * d + j] * pow(0.8, j) * M[(size_t)j * d + i];
      x[(size_t)r * d + i] = (float)(v * (i == 0 ? 1000.0 : 1.0) + 3.0 * i);
    }
  free(L), free(M);
  return x;
}

/* The normalised training rows in double, from the fitted min / max (z = (x - min) / range). */
static double *ref_z(const nest_reduce *r, const float *x, const int64_t *idx, int64_t n) {
  const int d = r->d;
  double *z = nest_test_dalloc((size_t)n * d);
  for (int64_t t = 0; t < n; ++t)
    for (int i = 0; i < d; ++i) {
      const double range = (double)r->max[i] - r->min[i];
      const float *row = x + (size_t)(idx ? idx[t] : t) * d;
      z[(size_t)t * d + i] = range > 0 ? (row[i] - (double)r->min[i]) / range : 0.0;
    }
  return z;
}

/* Naive covariance S [d, d] of z [n, d] (two passes, plain loops). */
static double *ref_cov(const double *z, int64_t n, int d) {
  double *mu = nest_test_dalloc((size_t)d), *S = nest_test_dalloc((size_t)d * d);
  for (int64_t t = 0; t < n; ++t)
    for (int i = 0; i < d; ++i) mu[i] += z[(size_t)t * d + i] / (double)n;
  for (int64_t t = 0; t < n; ++t)
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j)
        S[(size_t)i * d + j] +=
            (z[(size_t)t * d + i] - mu[i]) * (z[(size_t)t * d + j] - mu[j]) / (double)(n - 1);
  free(mu);
  return S;
}

/* Top k eigenpairs of S by power iteration with deflation (S is modified): lambda [k],
 * V [k, d], each vector signed like reduce.h says (first largest-|.| entry positive). */
static void ref_eigen(double *S, int d, int k, double *lambda, double *V) {
  double *v = nest_test_dalloc((size_t)d), *u = nest_test_dalloc((size_t)d);
  for (int t = 0; t < k; ++t) {
    for (int i = 0; i < d; ++i) v[i] = 1.0 / sqrt((double)d) + 1e-3 * i;
    double lam = 0;
    for (int it = 0; it < 100000; ++it) {
      double nu = 0;
      for (int i = 0; i < d; ++i) {
        u[i] = 0;
        for (int j = 0; j < d; ++j) u[i] += S[(size_t)i * d + j] * v[j];
        nu += u[i] * u[i];
      }
      nu = sqrt(nu);
      double change = 0;
      for (int i = 0; i < d; ++i) {
        change = fmax(change, fabs(u[i] / nu - v[i]));
        v[i] = u[i] / nu;
      }
      lam = nu;
      if (change < 1e-14) break;
    }
    int big = 0;
    for (int i = 1; i < d; ++i)
      if (fabs(v[i]) > fabs(v[big])) big = i;
    const double s = v[big] < 0 ? -1 : 1;
    for (int i = 0; i < d; ++i) V[(size_t)t * d + i] = s * v[i];
    lambda[t] = lam;
    for (int i = 0; i < d; ++i) /* deflate: S -= lam v v^T */
      for (int j = 0; j < d; ++j) S[(size_t)i * d + j] -= lam * v[i] * v[j];
  }
  free(v), free(u);
}

static nest_reduce *fit(nest_reduce_kind kind, int k, uint64_t seed, const float *x,
                        int64_t nrows, int d, const int64_t *idx, int64_t n) {
  const nest_reduce_opts o = {kind, k, seed, "test.ini: reduce"};
  nest_reduce *r = NULL;
  assert_ok(nest_reduce_fit(&o, x, nrows, d, idx, n, &r));
  assert_non_null(r);
  return r;
}

/* PCA = the naive twin: eigenvalues, all d of them summing to the trace, and components. */
static void test_pca_reference(void **state) {
  (void)state;
  const int64_t n = 500;
  const int d = 10, k = 4;
  float *x = make_data(n, d, 7);
  nest_reduce *r = fit(NEST_REDUCE_PCA, k, 0, x, n, d, NULL, n);
  double *z = ref_z(r, x, NULL, n), *S = ref_cov(z, n, d);
  double trace = 0, sum = 0;
  for (int i = 0; i < d; ++i) trace += S[(size_t)i * d + i], sum += r->variance[i];
  assert_true(fabs(sum - trace) <= 1e-6 * trace);
  double lambda[4], *V = nest_test_dalloc((size_t)k * d);
  ref_eigen(S, d, k, lambda, V);
  for (int t = 0; t < k; ++t) {
    if (!(fabs(r->variance[t] - lambda[t]) <= 1e-6 * lambda[0]))
      fail_msg("eigenvalue %d: %.9g vs reference %.9g", t, r->variance[t], lambda[t]);
    for (int i = 0; i < d; ++i)
      if (!(fabs(r->components[(size_t)t * d + i] - V[(size_t)t * d + i]) < 1e-5))
        fail_msg("component %d entry %d: %.7g vs reference %.7g", t, i,
                 r->components[(size_t)t * d + i], V[(size_t)t * d + i]);
  }
  for (int t = 1; t < d; ++t) assert_true(r->variance[t] <= r->variance[t - 1]);
  assert_true(r->variance[k - 1] > 1.05 * r->variance[k]); /* the data separate them */
  free(V), free(z), free(S), free(x);
  nest_reduce_destroy(&r);
  assert_null(r);
}

/* PCA outputs y [n, k] of the training rows: each has mean ~0 and variance = its eigenvalue. */
static void check_outputs(const nest_reduce *r, const float *y, int64_t n) {
  const int k = r->k;
  for (int j = 0; j < k; ++j) {
    double m = 0, v = 0;
    for (int64_t t = 0; t < n; ++t) m += y[t * k + j] / (double)n;
    for (int64_t t = 0; t < n; ++t) v += pow(y[t * k + j] - m, 2) / (double)(n - 1);
    if (!(fabs(m) < 1e-4 * sqrt(r->variance[0])))
      fail_msg("output %d: training mean %.3g, expected 0", j, m);
    if (!(fabs(v - r->variance[j]) <= 1e-4 * r->variance[j]))
      fail_msg("output %d: variance %.7g, eigenvalue %.7g", j, v, r->variance[j]);
  }
}

/* Invariants on a training subset: C C^T = I; the variance of each output over the training
 * rows = its eigenvalue (outputs centred); mean squared reconstruction error = the sum of the
 * dropped eigenvalues. */
static void test_pca_invariants(void **state) {
  (void)state;
  const int64_t nrows = 900;
  const int d = 12, k = 5;
  float *x = make_data(nrows, d, 11);
  int64_t *idx = malloc(sizeof(int64_t) * nrows), n = 0;
  for (int64_t t = 0; t < nrows; ++t)
    if (t % 3 != 1) idx[n++] = t;
  nest_reduce *r = fit(NEST_REDUCE_PCA, k, 0, x, nrows, d, idx, n);
  for (int a = 0; a < k; ++a)
    for (int b = 0; b < k; ++b) {
      double dot = 0;
      for (int i = 0; i < d; ++i)
        dot += (double)r->components[(size_t)a * d + i] * r->components[(size_t)b * d + i];
      assert_true(fabs(dot - (a == b)) < 1e-6);
    }
  float *xt = nest_test_falloc((size_t)n * d), *y = nest_test_falloc((size_t)n * k);
  for (int64_t t = 0; t < n; ++t) memcpy(xt + t * d, x + idx[t] * d, sizeof(float) * d);
  assert_ok(nest_reduce_apply(r, xt, n, y));
  double *z = ref_z(r, x, idx, n), *mu = nest_test_dalloc(d), recon = 0, dropped = 0, total = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int i = 0; i < d; ++i) mu[i] += z[t * d + i] / (double)n;
  check_outputs(r, y, n);
  for (int64_t t = 0; t < n; ++t)
    for (int i = 0; i < d; ++i) {
      double back = mu[i];
      for (int j = 0; j < k; ++j) back += (double)r->components[(size_t)j * d + i] * y[t * k + j];
      recon += (z[t * d + i] - back) * (z[t * d + i] - back) / (double)(n - 1);
    }
  for (int i = 0; i < d; ++i) total += r->variance[i], dropped += i >= k ? r->variance[i] : 0;
  if (!(fabs(recon - dropped) <= 1e-3 * dropped + 1e-6 * total))
    fail_msg("reconstruction error %.7g, dropped eigenvalues %.7g", recon, dropped);
  assert_true(dropped > 1e-3 * total); /* the check above is not vacuous */
  free(idx), free(x), free(xt), free(y), free(z), free(mu);
  nest_reduce_destroy(&r);
}

/* Johnson–Lindenstrauss (Dasgupta–Gupta; Achlioptas for the sparse matrix): for npts points and
 * k >= 4 ln(npts) / (eps^2/2 - eps^3/3), every squared pairwise distance of the centred
 * normalised points is kept within a factor 1 +- eps (eps = 0.5, npts = 40 -> k = 178; the
 * lemma holds with probability >= 1/npts per draw, in practice far higher: the worst ratio seen
 * is printed). */
static void test_projection_jl(void **state) {
  (void)state;
  const int npts = 40, d = 1000;
  const double eps = 0.5;
  const int k = (int)ceil(4 * log((double)npts) / (eps * eps / 2 - eps * eps * eps / 3));
  assert_int_equal(k, 178);
  float *x = nest_test_falloc((size_t)npts * d), *y = nest_test_falloc((size_t)npts * k);
  nest_test_fill_normal(x, (size_t)npts * d, 5, 2.0f);
  const nest_reduce_kind kinds[] = {NEST_REDUCE_GAUSSIAN, NEST_REDUCE_SPARSE};
  for (int kk = 0; kk < 2; ++kk)
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      nest_reduce *r = fit(kinds[kk], k, seed, x, npts, d, NULL, npts);
      assert_ok(nest_reduce_apply(r, x, npts, y));
      double *z = ref_z(r, x, NULL, npts), worst = 0;
      for (int a = 0; a < npts; ++a)
        for (int b = a + 1; b < npts; ++b) {
          double dz = 0, dy = 0;
          for (int i = 0; i < d; ++i) dz += pow(z[a * d + i] - z[b * d + i], 2);
          for (int j = 0; j < k; ++j) dy += pow((double)y[a * k + j] - y[b * k + j], 2);
          worst = fmax(worst, fabs(dy / dz - 1));
        }
      printf("JL %s seed %llu: k = %d, worst |ratio - 1| = %.3f (bound %.2f)\n",
             nest_reduce_kind_name(kinds[kk]), (unsigned long long)seed, k, worst, eps);
      assert_true(worst <= eps);
      assert_true(worst > 0.01); /* a projection, not an isometry by accident */
      free(z);
      nest_reduce_destroy(&r);
    }
  free(x), free(y);
}

/* Entry distributions (N(0, 1/k); sqrt(3/k) x {+1, 0, -1} with 1/6, 2/3, 1/6) within 5 sigma;
 * element (j, i) depends on (seed, j, i) only: the rows of a k = 10 projection are those of
 * k = 20 rescaled; another seed gives another matrix. */
static void test_projection_entries(void **state) {
  (void)state;
  const int d = 400, k = 100;
  const double N = (double)d * k;
  float *x = nest_test_falloc((size_t)4 * d);
  nest_test_fill_normal(x, (size_t)4 * d, 3, 1.0f);
  nest_reduce *g = fit(NEST_REDUCE_GAUSSIAN, k, 42, x, 4, d, NULL, 4);
  double m = 0, v = 0;
  for (int e = 0; e < d * k; ++e) m += g->components[e] / N;
  for (int e = 0; e < d * k; ++e) v += pow(g->components[e] - m, 2) / N;
  assert_true(fabs(m) < 5 * sqrt(1.0 / k / N));
  assert_true(fabs(v * k - 1) < 5 * sqrt(2 / N));
  assert_null(g->variance);
  nest_reduce *s = fit(NEST_REDUCE_SPARSE, k, 42, x, 4, d, NULL, 4);
  const float a = (float)sqrt(3.0 / k);
  double plus = 0, minus = 0;
  for (int e = 0; e < d * k; ++e) {
    const float c = s->components[e];
    assert_true(c == 0.0f || c == a || c == -a);
    plus += c == a, minus += c == -a;
  }
  const double sd = sqrt(N * (1.0 / 6) * (5.0 / 6));
  assert_true(fabs(plus - N / 6) < 5 * sd && fabs(minus - N / 6) < 5 * sd);
  nest_reduce *g10 = fit(NEST_REDUCE_GAUSSIAN, 10, 42, x, 4, d, NULL, 4);
  for (int e = 0; e < 10 * d; ++e)
    assert_true(fabs(g10->components[e] * sqrt(10.0) - g->components[e] * sqrt((double)k)) <
                1e-5 * (1 + fabs(g->components[e] * sqrt((double)k))));
  nest_reduce *g7 = fit(NEST_REDUCE_GAUSSIAN, k, 7, x, 4, d, NULL, 4);
  int same = 0;
  for (int e = 0; e < d * k; ++e) same += g7->components[e] == g->components[e];
  assert_true(same < d * k / 100);
  nest_reduce_destroy(&g), nest_reduce_destroy(&s), nest_reduce_destroy(&g10);
  nest_reduce_destroy(&g7);
  free(x);
}

/* Fit + apply with 1 and with 2 threads (OpenMP and OpenBLAS): the same bits for every kind, on
 * several row chunks (n = 1000) and covariance panels (d = 150); and a row reduced alone gives
 * the bits it gets among all rows. */
static void test_threads(void **state) {
  (void)state;
  const int64_t n = 1000;
  const int d = 150, k = 20;
  float *x = make_data(n, d, 3);
  const nest_reduce_kind kinds[] = {NEST_REDUCE_PCA, NEST_REDUCE_GAUSSIAN, NEST_REDUCE_SPARSE};
  for (int kk = 0; kk < 3; ++kk) {
    nest_reduce *r[3] = {NULL};
    float *y[3];
    for (int nt = 1; nt <= 2; ++nt) {
      omp_set_num_threads(nt);
      openblas_set_num_threads(nt);
      r[nt] = fit(kinds[kk], k, 9, x, n, d, NULL, n);
      y[nt] = nest_test_falloc((size_t)n * k);
      assert_ok(nest_reduce_apply(r[nt], x, n, y[nt]));
    }
    nest_reduce_array a1[NEST_REDUCE_MAX_ARRAYS], a2[NEST_REDUCE_MAX_ARRAYS];
    const int na = nest_reduce_arrays(r[1], a1);
    assert_int_equal(nest_reduce_arrays(r[2], a2), na);
    assert_int_equal(na, kinds[kk] == NEST_REDUCE_PCA ? 5 : 4);
    for (int t = 0; t < na; ++t)
      if (memcmp(a1[t].data, a2[t].data, sizeof(float) * a1[t].rows * a1[t].cols) != 0)
        fail_msg("%s: %s differs between 1 and 2 threads", nest_reduce_kind_name(kinds[kk]),
                 a1[t].name);
    assert_memory_equal(y[1], y[2], sizeof(float) * n * k);
    float one[20];
    for (int64_t t = 0; t < n; t += 97) {
      assert_ok(nest_reduce_apply(r[2], x + t * d, 1, one));
      assert_memory_equal(one, y[1] + t * k, sizeof one);
    }
    for (int nt = 1; nt <= 2; ++nt) nest_reduce_destroy(&r[nt]), free(y[nt]);
  }
  omp_set_num_threads(1);
  openblas_set_num_threads(1);
  free(x);
}

/* Several covariance chunks (d = 600: 6912 rows each; n = 8000 -> 2 chunks, the second short):
 * the eigenvalues sum to the naive total variance, the outputs' variances are the eigenvalues,
 * and 1 and 2 threads give the same bits. */
static void test_pca_chunks(void **state) {
  (void)state;
  const int64_t n = 8000;
  const int d = 600, k = 5;
  assert_true(n > (int64_t)NEST_REDUCE_COV_ELEMS / d && n < 2 * (int64_t)NEST_REDUCE_COV_ELEMS / d);
  float *x = nest_test_falloc((size_t)n * d), *y = nest_test_falloc((size_t)n * k);
  nest_test_fill_normal(x, (size_t)n * d, 77, 1.0f);
  for (int64_t t = 0; t < n; ++t) /* correlated neighbours, growing scale: distinct eigenvalues */
    for (int i = 1; i < d; ++i) x[t * d + i] = 0.9f * x[t * d + i - 1] + x[t * d + i] * (1 + i % 7);
  nest_reduce *r[3] = {NULL};
  for (int nt = 1; nt <= 2; ++nt) {
    omp_set_num_threads(nt);
    openblas_set_num_threads(nt);
    r[nt] = fit(NEST_REDUCE_PCA, k, 0, x, n, d, NULL, n);
  }
  omp_set_num_threads(1);
  openblas_set_num_threads(1);
  assert_memory_equal(r[1]->components, r[2]->components, sizeof(float) * k * d);
  assert_memory_equal(r[1]->variance, r[2]->variance, sizeof(float) * d);
  double *z = ref_z(r[1], x, NULL, n), total = 0, sum = 0;
  for (int i = 0; i < d; ++i) {
    double m = 0, v = 0;
    for (int64_t t = 0; t < n; ++t) m += z[t * d + i] / (double)n;
    for (int64_t t = 0; t < n; ++t) v += pow(z[t * d + i] - m, 2) / (double)(n - 1);
    total += v, sum += r[1]->variance[i];
  }
  if (!(fabs(sum - total) <= 1e-5 * total)) fail_msg("eigenvalues sum to %.9g, total %.9g", sum, total);
  assert_ok(nest_reduce_apply(r[1], x, n, y));
  check_outputs(r[1], y, n);
  nest_reduce_destroy(&r[1]), nest_reduce_destroy(&r[2]);
  free(x), free(y), free(z);
}

/* Min-max from the training rows only (a held-out row with extreme values changes nothing);
 * constant features map to 0 (and do not move the output); other rows may leave [0, 1]. */
static void test_minmax(void **state) {
  (void)state;
  /* feature 0: 2, 4, 6 on training rows; feature 1 constant 5; feature 2 varied */
  float x[5][3] = {{2, 5, 0}, {4, 5, 1}, {6, 5, 3}, {1000, -7, 9}, {8, 5, 2}};
  const int64_t idx[3] = {0, 1, 2};
  nest_reduce *r = fit(NEST_REDUCE_PCA, 1, 0, &x[0][0], 5, 3, idx, 3);
  assert_true(r->min[0] == 2 && r->max[0] == 6 && r->min[1] == 5 && r->max[1] == 5);
  assert_true(r->min[2] == 0 && r->max[2] == 3);
  assert_true(r->mean[1] == 0.0f && r->variance[2] < 1e-12f); /* 3 rows, 2 varying features */
  float z[5][3];
  nest_reduce_normalise(r, &x[0][0], 5, &z[0][0]);
  const float want[5][3] = {
      {0, 0, 0}, {0.5f, 0, 1.0f / 3}, {1, 0, 1}, {249.5f, 0, 3}, {1.5f, 0, 2.0f / 3}};
  for (int t = 0; t < 5; ++t)
    for (int i = 0; i < 3; ++i)
      if (fabsf(z[t][i] - want[t][i]) > 1e-6f)
        fail_msg("z[%d][%d] = %g, expected %g", t, i, z[t][i], want[t][i]);
  float y1, y2, row[3] = {4, 5, 1};
  assert_ok(nest_reduce_apply(r, row, 1, &y1));
  row[1] = -1234.5f; /* the constant feature */
  assert_ok(nest_reduce_apply(r, row, 1, &y2));
  assert_true(y1 == y2);
  assert_true(fabsf(r->components[1]) < 1e-7f); /* no weight on a zero-variance feature */
  nest_reduce_destroy(&r);
}

static void expect_error(nest_reduce_kind kind, int k, const float *x, int64_t nrows, int d,
                         const int64_t *idx, int64_t n, nest_status code, const char *needle) {
  const nest_reduce_opts o = {kind, k, 1, "cfg.ini: reduce"};
  nest_reduce dummy, *r = &dummy; /* must be reset to NULL */
  nest_error_clear();
  const nest_status st = nest_reduce_fit(&o, x, nrows, d, idx, n, &r);
  if (st != code || !strstr(nest_error_message(), needle) ||
      strncmp(nest_error_message(), "cfg.ini: reduce: ", 17) != 0)
    fail_msg("expected %s error with '%s', got %s: %s", nest_status_name(code), needle,
             nest_status_name(st), nest_error_message());
  assert_null(r);
  printf("error as expected: %s\n", nest_error_message());
}

static void test_bad_input(void **state) {
  (void)state;
  float x[4][3] = {{1, 2, 3}, {4, 5, 6}, {7, 8, 9}, {1, 0, 1}};
  expect_error(NEST_REDUCE_PCA, 3, &x[0][0], 4, 3, NULL, 4, NEST_ERR_CONFIG,
               "k = 3 must be in [1, 2] (d = 3 input features)");
  expect_error(NEST_REDUCE_GAUSSIAN, 0, &x[0][0], 4, 3, NULL, 4, NEST_ERR_CONFIG, "k = 0 must be");
  expect_error(NEST_REDUCE_SPARSE, -2, &x[0][0], 4, 3, NULL, 4, NEST_ERR_CONFIG, "k = -2 must");
  expect_error(NEST_REDUCE_PCA, 1, &x[0][0], 4, 3, NULL, 1, NEST_ERR_ARG,
               "1 training row(s): pca needs at least 2");
  expect_error(NEST_REDUCE_PCA, 1, &x[0][0], 4, 1, NULL, 4, NEST_ERR_ARG, "d = 1 input features");
  expect_error((nest_reduce_kind)7, 1, &x[0][0], 4, 3, NULL, 4, NEST_ERR_CONFIG,
               "unknown reduction kind 7");
  const int64_t bad_idx[2] = {0, 4};
  expect_error(NEST_REDUCE_PCA, 1, &x[0][0], 4, 3, bad_idx, 2, NEST_ERR_ARG,
               "training row index 4 outside [0, 4)");
  x[2][1] = NAN;
  expect_error(NEST_REDUCE_SPARSE, 2, &x[0][0], 4, 3, NULL, 4, NEST_ERR_FORMAT,
               "feature 1 of training row 2 is not finite");
  const int64_t skip[2] = {3, 0}; /* the NaN row is not a training row: fine */
  nest_reduce *r = fit(NEST_REDUCE_PCA, 1, 0, &x[0][0], 4, 3, skip, 2);
  nest_reduce_destroy(&r);
  nest_reduce_kind kind;
  assert_int_equal(nest_reduce_kind_parse("ica", "cfg.ini: reduce.kind", &kind), NEST_ERR_CONFIG);
  assert_string_equal(nest_error_message(),
                      "cfg.ini: reduce.kind: unknown reduction 'ica' (expected pca, gaussian or "
                      "sparse)");
  assert_ok(nest_reduce_kind_parse("sparse", NULL, &kind));
  assert_int_equal(kind, NEST_REDUCE_SPARSE);
  /* A projection needs only one row. */
  r = fit(NEST_REDUCE_GAUSSIAN, 2, 1, &x[0][0], 4, 3, skip, 1);
  nest_reduce_destroy(&r);
}

/* What a model file carries: create an empty transform, fill it array by array, validate, and it
 * applies with the same bits; damaged arrays are refused naming the array and element. */
static void test_arrays(void **state) {
  (void)state;
  const int64_t n = 300;
  const int d = 9, k = 3;
  float *x = make_data(n, d, 21), *y1 = nest_test_falloc(n * k), *y2 = nest_test_falloc(n * k);
  const nest_reduce_kind kinds[] = {NEST_REDUCE_PCA, NEST_REDUCE_SPARSE};
  for (int kk = 0; kk < 2; ++kk) {
    nest_reduce *r = fit(kinds[kk], k, 5, x, n, d, NULL, n), *b = NULL;
    assert_ok(nest_reduce_create(r->kind, r->d, r->k, r->seed, &b));
    nest_reduce_array ar[NEST_REDUCE_MAX_ARRAYS], ab[NEST_REDUCE_MAX_ARRAYS];
    const int na = nest_reduce_arrays(r, ar);
    assert_int_equal(nest_reduce_arrays(b, ab), na);
    for (int t = 0; t < na; ++t) {
      assert_string_equal(ar[t].name, ab[t].name);
      assert_true(ar[t].rows == ab[t].rows && ar[t].cols == ab[t].cols);
      memcpy(ab[t].data, ar[t].data, sizeof(float) * ar[t].rows * ar[t].cols);
    }
    assert_string_equal(ar[3].name, "components");
    assert_true(ar[3].rows == k && ar[3].cols == d);
    assert_ok(nest_reduce_validate(b, "m.h5"));
    assert_ok(nest_reduce_apply(r, x, n, y1));
    assert_ok(nest_reduce_apply(b, x, n, y2));
    assert_memory_equal(y1, y2, sizeof(float) * n * k);
    b->components[5] = NAN;
    assert_int_equal(nest_reduce_validate(b, "m.h5"), NEST_ERR_FORMAT);
    assert_string_equal(nest_error_message(), "m.h5: reduce/components[5] is not finite");
    b->components[5] = 0;
    b->min[2] = b->max[2] + 1;
    assert_int_equal(nest_reduce_validate(b, "m.h5"), NEST_ERR_FORMAT);
    assert_non_null(strstr(nest_error_message(), "reduce/min[2]"));
    b->min[2] = r->min[2];
    if (b->variance) {
      b->variance[4] = b->variance[2] * 2;
      assert_int_equal(nest_reduce_validate(b, "m.h5"), NEST_ERR_FORMAT);
      assert_non_null(strstr(nest_error_message(), "reduce/variance[4]"));
    }
    nest_reduce_destroy(&r), nest_reduce_destroy(&b);
  }
  nest_reduce *b = NULL;
  assert_int_equal(nest_reduce_create(NEST_REDUCE_PCA, 4, 4, 0, &b), NEST_ERR_CONFIG);
  assert_null(b);
  free(x), free(y1), free(y2);
}

int main(void) {
  omp_set_num_threads(1);
  openblas_set_num_threads(1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pca_reference),  cmocka_unit_test(test_pca_invariants),
      cmocka_unit_test(test_projection_jl),  cmocka_unit_test(test_projection_entries),
      cmocka_unit_test(test_threads),        cmocka_unit_test(test_pca_chunks),
      cmocka_unit_test(test_minmax),
      cmocka_unit_test(test_bad_input),      cmocka_unit_test(test_arrays),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
