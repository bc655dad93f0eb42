/* bench_reduce.c — reduce.h on real and synthetic tabular data; prints figures, asserts nothing.
 *
 *   OMP_NUM_THREADS=1 build/bench_reduce [--data letter-recognition.data] [--reps N]
 *
 * 1. UCI letter-recognition (20000 x 16, CSV, label in column 0), training rows of the seeded
 *    80/20 split (nest_dataset_split, val 0.2 as inputs/letter_mlp.ini) for seeds 1, 2, 3:
 *    the PCA explained-variance curve (k -> cumulative share of the training variance of the
 *    min-max normalised features), median [min, max] over the seeds; fit times of the three
 *    kinds (median of --reps fits).
 * 2. Applying: nest_reduce_apply (normalise, centre, one single-threaded sgemv per row: a row's
 *    bits depend on that row only) against the reference of the same run: normalise + centre
 *    all rows, then one cblas_sgemm [n, d] x [d, k]; on letter (k = 8) and on a synthetic
 *    HAR-shaped set (7352 x 561, k = 50), whose PCA fit time is printed too. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/comm.h"
#include "nest/data.h"
#include "nest/reduce.h"
#include "nest/rng.h"

static int cmp_d(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int die(const char *what) {
  fprintf(stderr, "bench_reduce: %s: %s\n", what, nest_error_message());
  return 1;
}

/* Median seconds of reps fits; *out keeps the last fit. */
static nest_status time_fit(nest_reduce_kind kind, int k, const float *x, int64_t nrows, int d,
                            const int64_t *idx, int64_t n, int reps, double *sec,
                            nest_reduce **out) {
  double t[64];
  const nest_reduce_opts o = {kind, k, 1, "bench"};
  reps = reps > 64 ? 64 : reps;
  for (int r = 0; r < reps; ++r) {
    nest_reduce_destroy(out);
    const double t0 = nest_comm_wtime();
    NEST_CALL(nest_reduce_fit(&o, x, nrows, d, idx, n, out));
    t[r] = nest_comm_wtime() - t0;
  }
  *sec = median(t, reps);
  return NEST_OK;
}

/* nest_reduce_apply vs normalise + centre + one sgemm (median of reps each); max |difference|. */
static nest_status time_apply(const nest_reduce *r, const float *x, int64_t n, int reps,
                              const char *what) {
  const int d = r->d, k = r->k;
  float *y = malloc(sizeof(float) * n * k), *y2 = malloc(sizeof(float) * n * k);
  float *z = malloc(sizeof(float) * n * d);
  if (!y || !y2 || !z) return NEST_ERR(NEST_ERR_NOMEM, "bench buffers");
  double ta[64], tr[64];
  reps = reps > 64 ? 64 : reps;
  for (int rep = 0; rep < reps; ++rep) {
    double t0 = nest_comm_wtime();
    NEST_CALL(nest_reduce_apply(r, x, n, y));
    ta[rep] = nest_comm_wtime() - t0;
    t0 = nest_comm_wtime();
    nest_reduce_normalise(r, x, n, z);
    for (int64_t t = 0; t < n; ++t)
      for (int i = 0; i < d; ++i) z[t * d + i] -= r->mean[i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, k, d, 1.0f, z, d, r->components,
                d, 0.0f, y2, k);
    tr[rep] = nest_comm_wtime() - t0;
  }
  double diff = 0;
  for (int64_t e = 0; e < n * k; ++e) diff = diff > fabsf(y[e] - y2[e]) ? diff : fabsf(y[e] - y2[e]);
  printf("apply %-28s n = %6lld, %3d -> %2d: nest_reduce_apply %8.2f ms, normalise + sgemm "
         "%8.2f ms (x%.1f), max |diff| %.2g\n", what, (long long)n, d, k, 1e3 * median(ta, reps),
         1e3 * median(tr, reps), median(ta, reps) / median(tr, reps), diff);
  free(y), free(y2), free(z);
  return NEST_OK;
}

static int letter(const char *path, int reps) {
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = path;
  o.format = "csv";
  o.csv_label_col = 0;
  nest_dataset *ds = NULL;
  if (nest_dataset_load(&o, NULL, &ds) != NEST_OK) return die(path);
  const int d = (int)nest_dataset_dim(ds);
  double cum[3][64], tfit[3][3];
  nest_reduce *r = NULL;
  for (int s = 0; s < 3; ++s) {
    int64_t *tr = NULL, *va = NULL, ntr = 0, nva = 0;
    if (nest_dataset_split(ds->n, 0.2, (uint64_t)s + 1, &tr, &ntr, &va, &nva) != NEST_OK)
      return die("split");
    const nest_reduce_kind kinds[3] = {NEST_REDUCE_PCA, NEST_REDUCE_GAUSSIAN, NEST_REDUCE_SPARSE};
    for (int kk = 2; kk >= 0; --kk) /* PCA last: r keeps it */
      if (time_fit(kinds[kk], kk == 0 ? d - 1 : 8, ds->f32, ds->n, d, tr, ntr, reps,
                   &tfit[kk][s], &r) != NEST_OK)
        return die("fit");
    double total = 0, run = 0;
    for (int i = 0; i < d; ++i) total += r->variance[i];
    for (int i = 0; i < d; ++i) cum[s][i] = (run += r->variance[i]) / total;
    if (s == 0) {
      printf("letter-recognition: %lld rows x %d features, training rows %lld (seed 1)\n",
             (long long)ds->n, d, (long long)ntr);
      printf("eigenvalues (seed 1):");
      for (int i = 0; i < d; ++i) printf(" %.4g", r->variance[i]);
      printf("\n");
    }
    free(tr), free(va);
  }
  printf("k  cumulative explained variance, median [min, max] over split seeds 1-3\n");
  for (int i = 0; i < d; ++i) {
    double v[3] = {cum[0][i], cum[1][i], cum[2][i]};
    const double md = median(v, 3); /* sorts v */
    printf("%2d %.4f [%.4f, %.4f]\n", i + 1, md, v[0], v[2]);
  }
  const char *names[3] = {"pca (k = 15)", "gaussian (k = 8)", "sparse (k = 8)"};
  for (int kk = 0; kk < 3; ++kk) {
    double v[3] = {tfit[kk][0], tfit[kk][1], tfit[kk][2]};
    const double md = median(v, 3); /* sorts v */
    printf("fit %-17s median %.3f ms [%.3f, %.3f] over seeds (each the median of %d fits)\n",
           names[kk], 1e3 * md, 1e3 * v[0], 1e3 * v[2], reps);
  }
  nest_reduce_destroy(&r);
  const nest_reduce_opts o8 = {NEST_REDUCE_PCA, 8, 0, "bench"};
  if (nest_reduce_fit(&o8, ds->f32, ds->n, d, NULL, ds->n, &r) != NEST_OK) return die("fit");
  if (time_apply(r, ds->f32, ds->n, reps, "letter pca") != NEST_OK) return die("apply");
  nest_reduce_destroy(&r);
  nest_dataset_destroy(&ds);
  return 0;
}

static int har_shaped(int reps) {
  const int64_t n = 7352;
  const int d = 561, k = 50;
  float *x = malloc(sizeof(float) * n * d);
  if (!x) return 1;
  for (int64_t t = 0; t < n; ++t) {
    nest_rng g;
    nest_rng_init(&g, 5, NEST_RNG_SYNTH, (uint64_t)t, 0);
    for (int i = 0; i < d; ++i) x[t * d + i] = nest_rng_normal(&g) + (i ? 0.7f * x[t * d + i - 1] : 0);
  }
  nest_reduce *r = NULL;
  double sec;
  if (time_fit(NEST_REDUCE_PCA, k, x, n, d, NULL, n, reps < 5 ? reps : 5, &sec, &r) != NEST_OK)
    return die("fit");
  printf("fit pca synthetic %lld x %d -> %d: %.1f ms (median of %d)\n", (long long)n, d, k,
         1e3 * sec, reps < 5 ? reps : 5);
  if (time_apply(r, x, n, reps < 5 ? reps : 5, "synthetic 7352 x 561 pca") != NEST_OK)
    return die("apply");
  nest_reduce_destroy(&r);
  free(x);
  return 0;
}

int main(int argc, char **argv) {
  const char *path = "../shared/data/uci/letter-recognition/letter-recognition.data";
  int reps = 21;
  for (int a = 1; a < argc; ++a) {
    if (!strcmp(argv[a], "--data") && a + 1 < argc) path = argv[++a];
    else if (!strcmp(argv[a], "--reps") && a + 1 < argc) reps = atoi(argv[++a]);
    else {
      fprintf(stderr, "usage: bench_reduce [--data letter-recognition.data] [--reps N]\n");
      return 2;
    }
  }
  if (reps < 1) reps = 1;
  printf("bench_reduce: %d OpenMP threads\n", omp_get_max_threads());
  if (letter(path, reps)) return 1;
  return har_shaped(reps);
}
