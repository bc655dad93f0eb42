/* reduce.c — min-max normalisation and linear reductions d -> k (PCA, Gaussian and sparse
 * random projections) for DR+SCANN; contract and determinism argument in reduce.h.
 *
 * Fit, in three passes over the training rows, each in chunks fixed by n and d (threads only
 * pick whole chunks or panels, never cut the work):
 *   1. min / max per feature (exact, order-free) and the finiteness check;
 *   2. mean of z per feature: a double partial per chunk, partials added in chunk order;
 *   3. PCA only: covariance S [d, d] = sum over covariance chunks (in order) of Zc^T Zc, Zc
 *      [m, d] the chunk's centred z in double (a chunk: about NEST_REDUCE_COV_ELEMS values, its
 *      row count fixed by d); the upper triangle in row panels of NEST_REDUCE_PANEL rows, one
 *      single-threaded dgemm per panel per chunk; then dsyevr on S / (n - 1).
 * LAPACK: the dsyevr_ that OpenBLAS exports (Debian's libopenblas-openmp-dev builds reference
 * LAPACK into libopenblas.so, so the library nest already links provides it; CMakeLists.txt
 * checks for the symbol at configure time). Declared here with the gfortran calling convention
 * (trailing hidden lengths of the character arguments, 32-bit integers: an LP64 build). */
#include "nest/reduce.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nest/rng.h"

void dsyevr_(const char *jobz, const char *range, const char *uplo, const int *n, double *a,
             const int *lda, const double *vl, const double *vu, const int *il, const int *iu,
             const double *abstol, int *m, double *w, double *z, const int *ldz, int *isuppz,
             double *work, const int *lwork, int *iwork, const int *liwork, int *info,
             size_t jobz_len, size_t range_len, size_t uplo_len);

static const char *ctx_of(const char *ctx) { return ctx && *ctx ? ctx : "reduce"; }

const char *nest_reduce_kind_name(nest_reduce_kind kind) {
  switch (kind) {
    case NEST_REDUCE_PCA: return "pca";
    case NEST_REDUCE_GAUSSIAN: return "gaussian";
    case NEST_REDUCE_SPARSE: return "sparse";
  }
  return "unknown";
}

nest_status nest_reduce_kind_parse(const char *name, const char *ctx, nest_reduce_kind *out) {
  static const nest_reduce_kind kinds[] = {NEST_REDUCE_PCA, NEST_REDUCE_GAUSSIAN,
                                           NEST_REDUCE_SPARSE};
  for (size_t i = 0; name && i < sizeof kinds / sizeof kinds[0]; ++i)
    if (strcmp(name, nest_reduce_kind_name(kinds[i])) == 0) {
      *out = kinds[i];
      return NEST_OK;
    }
  return NEST_ERR(NEST_ERR_CONFIG, "%s: unknown reduction '%s' (expected pca, gaussian or sparse)",
                  ctx_of(ctx), name ? name : "");
}

static int kind_valid(nest_reduce_kind kind) {
  return kind == NEST_REDUCE_PCA || kind == NEST_REDUCE_GAUSSIAN || kind == NEST_REDUCE_SPARSE;
}

/* The shape rules shared by fit and create: a known kind, d >= 2, 1 <= k < d. */
static nest_status check_shape(nest_reduce_kind kind, int d, int k, const char *ctx) {
  if (!kind_valid(kind))
    return NEST_ERR(NEST_ERR_CONFIG, "%s: unknown reduction kind %d (expected pca, gaussian or "
                    "sparse)", ctx_of(ctx), (int)kind);
  if (d < 2)
    return NEST_ERR(NEST_ERR_ARG, "%s: d = %d input features: a reduction needs at least 2",
                    ctx_of(ctx), d);
  if (k < 1 || k >= d)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: k = %d must be in [1, %d] (d = %d input features)",
                    ctx_of(ctx), k, d - 1, d);
  return NEST_OK;
}

void nest_reduce_destroy(nest_reduce **r) {
  if (!r || !*r) return;
  free((*r)->min);
  free((*r)->max);
  free((*r)->mean);
  free((*r)->components);
  free((*r)->variance);
  free(*r);
  *r = NULL;
}

nest_status nest_reduce_create(nest_reduce_kind kind, int d, int k, uint64_t seed,
                               nest_reduce **out) {
  *out = NULL;
  NEST_CALL(check_shape(kind, d, k, NULL));
  nest_reduce *r = NULL;
  NEST_CALL(nest_calloc((void **)&r, 1, sizeof *r, "reduction"));
  r->kind = kind;
  r->d = d;
  r->k = k;
  r->seed = kind == NEST_REDUCE_PCA ? 0 : seed;
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_calloc((void **)&r->min, (size_t)d, sizeof(float), "reduce min"), fail);
  NEST_CALL_GOTO(st, nest_calloc((void **)&r->max, (size_t)d, sizeof(float), "reduce max"), fail);
  NEST_CALL_GOTO(st, nest_calloc((void **)&r->mean, (size_t)d, sizeof(float), "reduce mean"), fail);
  NEST_CALL_GOTO(st, nest_calloc((void **)&r->components, (size_t)k * d, sizeof(float),
                                 "reduce components"), fail);
  if (kind == NEST_REDUCE_PCA)
    NEST_CALL_GOTO(st, nest_calloc((void **)&r->variance, (size_t)d, sizeof(float),
                                   "reduce variance"), fail);
  *out = r;
  return NEST_OK;
fail:
  nest_reduce_destroy(&r);
  return st;
}

/* 1 / (max - min) in double, rounded once; 0 for a constant feature (z = 0) or a range so small
 * that its reciprocal overflows a float. */
static float scale_of(float mn, float mx) {
  const double s = mx > mn ? 1.0 / ((double)mx - (double)mn) : 0.0;
  return s <= FLT_MAX ? (float)s : 0.0f;
}

/* z[i] = (x[i] - mn[i]) * sc[i] - mu[i] (mu NULL: no centring), in float: the one formula fit and
 * apply share, so the fitted statistics describe exactly what apply feeds the components. */
static void norm_row(const float *x, const float *mn, const float *sc, const float *mu, int d,
                     float *z) {
  if (mu)
    for (int i = 0; i < d; ++i) z[i] = (x[i] - mn[i]) * sc[i] - mu[i];
  else
    for (int i = 0; i < d; ++i) z[i] = (x[i] - mn[i]) * sc[i];
}

typedef struct {
  const float *x;
  const int64_t *idx;
  int64_t n;      /* training rows */
  int d;
  int64_t chunks; /* ceil(n / NEST_REDUCE_CHUNK) */
} fit_rows;

static const float *row_of(const fit_rows *f, int64_t r) {
  return f->x + (size_t)(f->idx ? f->idx[r] : r) * (size_t)f->d;
}

/* Pass 1: min / max over the training rows; the first non-finite value (lowest row, then
 * feature) is an error. Chunk partials are combined with min / max, which is exact. */
static nest_status fit_minmax(const fit_rows *f, nest_reduce *r, const char *ctx) {
  const int d = f->d;
  float *part = NULL; /* [chunks][2][d] */
  int64_t *bad = NULL; /* [chunks] first non-finite element (row * d + feature), or -1 */
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_malloc((void **)&part, sizeof(float) * 2 * d * (size_t)f->chunks,
                                 "reduce min/max partials"), done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&bad, sizeof(int64_t) * (size_t)f->chunks,
                                 "reduce finiteness flags"), done);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < f->chunks; ++c) {
    float *mn = part + (size_t)c * 2 * d, *mx = mn + d;
    const int64_t lo = c * NEST_REDUCE_CHUNK,
                  hi = lo + NEST_REDUCE_CHUNK < f->n ? lo + NEST_REDUCE_CHUNK : f->n;
    bad[c] = -1;
    for (int i = 0; i < d; ++i) mn[i] = INFINITY, mx[i] = -INFINITY;
    for (int64_t t = lo; t < hi && bad[c] < 0; ++t) {
      const float *x = row_of(f, t);
      for (int i = 0; i < d; ++i) {
        if (!isfinite(x[i])) {
          bad[c] = t * d + i;
          break;
        }
        mn[i] = fminf(mn[i], x[i]);
        mx[i] = fmaxf(mx[i], x[i]);
      }
    }
  }
  for (int64_t c = 0; c < f->chunks; ++c)
    if (bad[c] >= 0) {
      const int64_t t = bad[c] / d;
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: feature %d of training row %lld is not finite",
                    ctx_of(ctx), (int)(bad[c] % d), (long long)(f->idx ? f->idx[t] : t));
      goto done;
    }
  for (int i = 0; i < d; ++i) r->min[i] = INFINITY, r->max[i] = -INFINITY;
  for (int64_t c = 0; c < f->chunks; ++c)
    for (int i = 0; i < d; ++i) {
      r->min[i] = fminf(r->min[i], part[(size_t)c * 2 * d + i]);
      r->max[i] = fmaxf(r->max[i], part[(size_t)c * 2 * d + d + i]);
    }
done:
  free(part);
  free(bad);
  return st;
}

/* Pass 2: mean of z = (x - min) * scale per feature, in double; chunk partials in chunk order. */
static nest_status fit_mean(const fit_rows *f, nest_reduce *r, const float *sc) {
  const int d = f->d;
  double *part = NULL; /* [chunks][d] */
  float *zbuf = NULL;  /* [threads][d] */
  const int nt = omp_get_max_threads();
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_calloc((void **)&part, (size_t)f->chunks * d, sizeof(double),
                                 "reduce mean partials"), done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&zbuf, sizeof(float) * (size_t)nt * d, "reduce rows"),
                 done);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t c = 0; c < f->chunks; ++c) {
    float *z = zbuf + (size_t)omp_get_thread_num() * d;
    double *acc = part + (size_t)c * d;
    const int64_t lo = c * NEST_REDUCE_CHUNK,
                  hi = lo + NEST_REDUCE_CHUNK < f->n ? lo + NEST_REDUCE_CHUNK : f->n;
    for (int64_t t = lo; t < hi; ++t) {
      norm_row(row_of(f, t), r->min, sc, NULL, d, z);
      for (int i = 0; i < d; ++i) acc[i] += z[i];
    }
  }
  for (int i = 0; i < d; ++i) {
    double s = 0;
    for (int64_t c = 0; c < f->chunks; ++c) s += part[(size_t)c * d + i];
    r->mean[i] = (float)(s / (double)f->n);
  }
done:
  free(part);
  free(zbuf);
  return st;
}

/* Rows per covariance chunk: NEST_REDUCE_COV_ELEMS / d rounded down to a multiple of
 * NEST_REDUCE_CHUNK (at least one chunk) — a function of d alone, so the order of the sums
 * depends on (n, d) only; large chunks keep the dgemm calls (and the barriers) few. */
static int64_t cov_rows(int d) {
  const int64_t r = (int64_t)NEST_REDUCE_COV_ELEMS / d / NEST_REDUCE_CHUNK * NEST_REDUCE_CHUNK;
  return r > NEST_REDUCE_CHUNK ? r : NEST_REDUCE_CHUNK;
}

/* Pass 3 (PCA): S [d, d] (upper triangle, then mirrored) = sum over training rows of
 * (z - mean)(z - mean)^T / (n - 1) in double, in a fixed order (file comment). */
static nest_status fit_covariance(const fit_rows *f, const nest_reduce *r, const float *sc,
                                  double *S) {
  const int d = f->d, panels = (d + NEST_REDUCE_PANEL - 1) / NEST_REDUCE_PANEL;
  const int64_t rows = cov_rows(d) < f->n ? cov_rows(d) : f->n;
  double *Z = NULL; /* [rows, d] the chunk's centred rows */
  float *zbuf = NULL;
  const int nt = omp_get_max_threads();
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_malloc_aligned((void **)&Z, sizeof(double) * (size_t)rows * d,
                                         "reduce covariance rows"), done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&zbuf, sizeof(float) * (size_t)nt * d, "reduce rows"),
                 done);
  memset(S, 0, sizeof(double) * (size_t)d * d);
  for (int64_t lo = 0; lo < f->n; lo += rows) {
    const int m = (int)(lo + rows < f->n ? rows : f->n - lo);
#pragma omp parallel num_threads(nt)
    {
      /* This task's OpenBLAS budget: single-threaded dgemm, also in a team of one. */
      omp_set_num_threads(1);
      float *z = zbuf + (size_t)omp_get_thread_num() * d;
#pragma omp for schedule(static)
      for (int t = 0; t < m; ++t) {
        norm_row(row_of(f, lo + t), r->min, sc, r->mean, d, z);
        for (int i = 0; i < d; ++i) Z[(size_t)t * d + i] = z[i];
      }
      /* Panel p: rows [i0, i1) of S, columns [i0, d): every element by one call, K = m. */
#pragma omp for schedule(dynamic, 1)
      for (int p = 0; p < panels; ++p) {
        const int i0 = p * NEST_REDUCE_PANEL,
                  i1 = i0 + NEST_REDUCE_PANEL < d ? i0 + NEST_REDUCE_PANEL : d;
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1 - i0, d - i0, m, 1.0, Z + i0, d,
                    Z + i0, d, 1.0, S + (size_t)i0 * d + i0, d);
      }
    }
  }
  const double inv = 1.0 / (double)(f->n - 1);
  for (int i = 0; i < d; ++i)
    for (int j = i; j < d; ++j) S[(size_t)j * d + i] = S[(size_t)i * d + j] *= inv;
done:
  nest_free_aligned(Z);
  free(zbuf);
  return st;
}

/* All eigenpairs of the symmetric S [d, d] (destroyed) by LAPACK dsyevr, single-threaded:
 * w [d] ascending, V [d, d] with eigenvector j in V[j * d .. j * d + d) (column-major columns). */
static nest_status eigen_all(double *S, int d, double *w, double *V, const char *ctx) {
  const int lwork_q = -1, liwork_q = -1, il = 1, iu = d;
  const double vl = 0, vu = 0, abstol = 0;
  int m = 0, info = 0, iw_q = 0;
  double w_q = 0;
  int *isuppz = NULL, *iwork = NULL;
  double *work = NULL;
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_malloc((void **)&isuppz, sizeof(int) * 2 * (size_t)d, "dsyevr isuppz"),
                 done);
  dsyevr_("V", "A", "U", &d, S, &d, &vl, &vu, &il, &iu, &abstol, &m, w, V, &d, isuppz, &w_q,
          &lwork_q, &iw_q, &liwork_q, &info, 1, 1, 1);
  if (info != 0) {
    st = NEST_ERR(NEST_ERR_INTERNAL, "%s: LAPACK dsyevr workspace query failed (info = %d)",
                  ctx_of(ctx), info);
    goto done;
  }
  const int lwork = (int)w_q, liwork = iw_q;
  NEST_CALL_GOTO(st, nest_malloc((void **)&iwork, sizeof(int) * (size_t)liwork, "dsyevr iwork"),
                 done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&work, sizeof(double) * (size_t)lwork, "dsyevr work"),
                 done);
  /* A team of one whose OpenBLAS budget is one thread: the same bits for any thread count. */
#pragma omp parallel num_threads(1)
  {
    omp_set_num_threads(1);
    dsyevr_("V", "A", "U", &d, S, &d, &vl, &vu, &il, &iu, &abstol, &m, w, V, &d, isuppz, work,
            &lwork, iwork, &liwork, &info, 1, 1, 1);
  }
  if (info != 0 || m != d)
    st = NEST_ERR(NEST_ERR_NUMERIC, "%s: PCA: LAPACK dsyevr failed on the %d x %d covariance "
                  "(info = %d, %d eigenvalues found)", ctx_of(ctx), d, d, info, m);
done:
  free(isuppz);
  free(iwork);
  free(work);
  return st;
}

/* Components = the k leading eigenvectors, descending; sign: the first largest-|.| entry > 0.
 * variance = all d eigenvalues, descending, clamped at 0 (rounding may leave -1e-17). */
static nest_status fit_pca(const fit_rows *f, nest_reduce *r, const float *sc, const char *ctx) {
  const int d = f->d;
  double *S = NULL, *V = NULL, *w = NULL;
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_malloc((void **)&S, sizeof(double) * (size_t)d * d, "covariance"), done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&V, sizeof(double) * (size_t)d * d, "eigenvectors"),
                 done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&w, sizeof(double) * (size_t)d, "eigenvalues"), done);
  NEST_CALL_GOTO(st, fit_covariance(f, r, sc, S), done);
  NEST_CALL_GOTO(st, eigen_all(S, d, w, V, ctx), done);
  for (int t = 0; t < d; ++t) r->variance[t] = (float)fmax(w[d - 1 - t], 0.0);
  for (int t = 0; t < r->k; ++t) {
    const double *v = V + (size_t)(d - 1 - t) * d;
    int big = 0;
    for (int i = 1; i < d; ++i)
      if (fabs(v[i]) > fabs(v[big])) big = i;
    const double s = v[big] < 0 ? -1.0 : 1.0;
    for (int i = 0; i < d; ++i) r->components[(size_t)t * d + i] = (float)(s * v[i]);
  }
done:
  free(S);
  free(V);
  free(w);
  return st;
}

/* Random projection: element (j, i) from the stream (seed, NEST_REDUCE_RNG_PURPOSE, j, i) only. */
static void fit_projection(nest_reduce *r) {
  const int d = r->d, k = r->k;
  const double g = sqrt(1.0 / k), a = sqrt(3.0 / k);
#pragma omp parallel for schedule(static)
  for (int j = 0; j < k; ++j)
    for (int i = 0; i < d; ++i) {
      nest_rng s;
      nest_rng_init(&s, r->seed, NEST_REDUCE_RNG_PURPOSE, (uint64_t)j, (uint64_t)i);
      double v;
      if (r->kind == NEST_REDUCE_GAUSSIAN)
        v = g * nest_rng_normal_f64(&s);
      else {
        const uint64_t u = nest_rng_below(&s, 6); /* 0: +1, 1: -1, 2..5: 0 */
        v = u == 0 ? a : u == 1 ? -a : 0.0;
      }
      r->components[(size_t)j * d + i] = (float)v;
    }
}

static nest_status check_rows(const nest_reduce_opts *o, const float *x, int64_t nrows, int d,
                              const int64_t *idx, int64_t n) {
  const char *ctx = ctx_of(o->ctx);
  NEST_CALL(check_shape(o->kind, d, o->k, o->ctx));
  const int64_t need = o->kind == NEST_REDUCE_PCA ? 2 : 1;
  if (n < need)
    return NEST_ERR(NEST_ERR_ARG, "%s: %lld training row(s): %s needs at least %lld", ctx,
                    (long long)n, nest_reduce_kind_name(o->kind), (long long)need);
  if (!x) return NEST_ERR(NEST_ERR_ARG, "%s: no feature rows given", ctx);
  if (!idx && n > nrows)
    return NEST_ERR(NEST_ERR_ARG, "%s: %lld training rows requested of %lld", ctx, (long long)n,
                    (long long)nrows);
  for (int64_t t = 0; idx && t < n; ++t)
    if (idx[t] < 0 || idx[t] >= nrows)
      return NEST_ERR(NEST_ERR_ARG, "%s: training row index %lld outside [0, %lld)", ctx,
                      (long long)idx[t], (long long)nrows);
  return NEST_OK;
}

nest_status nest_reduce_fit(const nest_reduce_opts *o, const float *x, int64_t nrows, int d,
                            const int64_t *idx, int64_t n, nest_reduce **out) {
  *out = NULL;
  NEST_CALL(check_rows(o, x, nrows, d, idx, n));
  nest_reduce *r = NULL;
  float *sc = NULL;
  nest_status st = NEST_OK;
  const fit_rows f = {x, idx, n, d, (n + NEST_REDUCE_CHUNK - 1) / NEST_REDUCE_CHUNK};
  NEST_CALL(nest_reduce_create(o->kind, d, o->k, o->seed, &r));
  NEST_CALL_GOTO(st, nest_malloc((void **)&sc, sizeof(float) * (size_t)d, "reduce scale"), fail);
  NEST_CALL_GOTO(st, fit_minmax(&f, r, o->ctx), fail);
  nest_reduce_scales(r, sc);
  NEST_CALL_GOTO(st, fit_mean(&f, r, sc), fail);
  if (o->kind == NEST_REDUCE_PCA)
    NEST_CALL_GOTO(st, fit_pca(&f, r, sc, o->ctx), fail);
  else
    fit_projection(r);
  free(sc);
  *out = r;
  return NEST_OK;
fail:
  free(sc);
  nest_reduce_destroy(&r);
  return st;
}

nest_status nest_reduce_apply(const nest_reduce *r, const float *x, int64_t n, float *y) {
  const int d = r->d, k = r->k, nt = omp_get_max_threads();
  float *buf = NULL; /* [d] scale, then per thread [d] z and [k] y, 16-float aligned slots */
  const size_t slot = ((size_t)d + k + 15) / 16 * 16;
  NEST_CALL(nest_malloc_aligned((void **)&buf, sizeof(float) * (slot * (size_t)nt + (size_t)d),
                                "reduce apply rows"));
  float *sc = buf + slot * (size_t)nt;
  nest_reduce_scales(r, sc);
#pragma omp parallel num_threads(nt)
  {
    omp_set_num_threads(1); /* single-threaded sgemv, also in a team of one */
    float *z = buf + slot * (size_t)omp_get_thread_num(), *yt = z + d;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n; ++t) {
      norm_row(x + (size_t)t * d, r->min, sc, r->mean, d, z);
      /* Same shapes and aligned buffers for every row: a row's bits depend on that row only. */
      cblas_sgemv(CblasRowMajor, CblasNoTrans, k, d, 1.0f, r->components, d, z, 1, 0.0f, yt, 1);
      memcpy(y + (size_t)t * k, yt, sizeof(float) * (size_t)k);
    }
  }
  nest_free_aligned(buf);
  return NEST_OK;
}

void nest_reduce_scales(const nest_reduce *r, float *s) {
  for (int i = 0; i < r->d; ++i) s[i] = scale_of(r->min[i], r->max[i]);
}

void nest_reduce_normalise(const nest_reduce *r, const float *x, int64_t n, float *z) {
  const int d = r->d;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    for (int i = 0; i < d; ++i)
      z[(size_t)t * d + i] = (x[(size_t)t * d + i] - r->min[i]) * scale_of(r->min[i], r->max[i]);
  }
}

int nest_reduce_arrays(nest_reduce *r, nest_reduce_array out[NEST_REDUCE_MAX_ARRAYS]) {
  int n = 0;
  out[n++] = (nest_reduce_array){"min", 1, r->d, r->min};
  out[n++] = (nest_reduce_array){"max", 1, r->d, r->max};
  out[n++] = (nest_reduce_array){"mean", 1, r->d, r->mean};
  out[n++] = (nest_reduce_array){"components", r->k, r->d, r->components};
  if (r->kind == NEST_REDUCE_PCA) out[n++] = (nest_reduce_array){"variance", 1, r->d, r->variance};
  return n;
}

nest_status nest_reduce_validate(const nest_reduce *r, const char *ctx) {
  NEST_CALL(check_shape(r->kind, r->d, r->k, ctx));
  nest_reduce_array a[NEST_REDUCE_MAX_ARRAYS];
  const int na = nest_reduce_arrays((nest_reduce *)r, a);
  for (int t = 0; t < na; ++t) {
    if (!a[t].data)
      return NEST_ERR(NEST_ERR_FORMAT, "%s: reduce/%s is missing", ctx_of(ctx), a[t].name);
    for (int64_t i = 0; i < a[t].rows * a[t].cols; ++i)
      if (!isfinite(a[t].data[i]))
        return NEST_ERR(NEST_ERR_FORMAT, "%s: reduce/%s[%lld] is not finite", ctx_of(ctx),
                        a[t].name, (long long)i);
  }
  for (int i = 0; i < r->d; ++i)
    if (r->min[i] > r->max[i])
      return NEST_ERR(NEST_ERR_FORMAT, "%s: reduce/min[%d] = %g exceeds reduce/max[%d] = %g",
                      ctx_of(ctx), i, r->min[i], i, r->max[i]);
  for (int i = 0; r->variance && i < r->d; ++i)
    if (r->variance[i] < 0 || (i > 0 && r->variance[i] > r->variance[i - 1]))
      return NEST_ERR(NEST_ERR_FORMAT, "%s: reduce/variance[%d] = %g is negative or above its "
                      "predecessor (PCA eigenvalues are stored descending)", ctx_of(ctx), i,
                      r->variance[i]);
  return NEST_OK;
}
