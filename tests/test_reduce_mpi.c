/* test_reduce_mpi.c — the same reduction on every rank without communication (reduce.h,
 * "rank-identical by construction"): each rank fits every kind on the same data with a
 * different thread count (rank r: r % 2 + 1 OpenMP and OpenBLAS threads) and applies it to all
 * rows; a hash of the fitted arrays and the outputs must agree across ranks. On synthetic data,
 * and on UCI letter-recognition (training split of the seeded 80/20 split) when present.
 * Run under mpiexec -n 1/2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "nest/comm.h"
#include "nest/data.h"
#include "nest/reduce.h"
#include "test_util.h"

void openblas_set_num_threads(int);

static nest_comm *comm;

/* Fit each kind on x[idx[0..n)] and check the fitted arrays and y = apply(all rows) hash the
 * same on every rank. */
static void check_kinds(const float *x, int64_t nrows, int d, const int64_t *idx, int64_t n,
                        int k, const char *what) {
  const int nt = nest_comm_rank(comm) % 2 + 1;
  omp_set_num_threads(nt);
  openblas_set_num_threads(nt);
  const nest_reduce_kind kinds[] = {NEST_REDUCE_PCA, NEST_REDUCE_GAUSSIAN, NEST_REDUCE_SPARSE};
  float *y = nest_test_falloc((size_t)nrows * k);
  for (int kk = 0; kk < 3; ++kk) {
    const nest_reduce_opts o = {kinds[kk], k, 17, what};
    nest_reduce *r = NULL;
    assert_ok(nest_reduce_fit(&o, x, nrows, d, idx, n, &r));
    assert_ok(nest_reduce_apply(r, x, nrows, y));
    nest_reduce_array a[NEST_REDUCE_MAX_ARRAYS];
    const int na = nest_reduce_arrays(r, a);
    uint64_t h = nest_test_hash_bytes(y, sizeof(float) * (size_t)nrows * k);
    for (int t = 0; t < na; ++t)
      h ^= nest_test_hash_bytes(a[t].data, sizeof(float) * (size_t)(a[t].rows * a[t].cols)) +
           (uint64_t)t;
    char label[128];
    snprintf(label, sizeof label, "%s: %s reduction", what, nest_reduce_kind_name(kinds[kk]));
    assert_ok(nest_comm_check_same(comm, h, label));
    nest_reduce_destroy(&r);
  }
  free(y);
  omp_set_num_threads(1);
  openblas_set_num_threads(1);
}

static void test_synthetic(void **state) {
  (void)state;
  const int64_t n = 2000;
  const int d = 90;
  float *x = nest_test_falloc((size_t)n * d);
  nest_test_fill_normal(x, (size_t)n * d, 33, 1.0f);
  for (int64_t t = 0; t < n; ++t) /* correlated features: a non-trivial spectrum */
    for (int i = 1; i < d; ++i) x[t * d + i] += 0.5f * x[t * d + i - 1];
  int64_t *idx = malloc(sizeof(int64_t) * n), m = 0;
  for (int64_t t = 0; t < n; t += 1 + t % 3) idx[m++] = t;
  check_kinds(x, n, d, idx, m, 12, "synthetic");
  free(idx), free(x);
}

static void test_letter(void **state) {
  (void)state;
  const char *path = nest_test_data("uci/letter-recognition/letter-recognition.data");
  if (!path) skip();
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = path;
  o.format = "csv";
  o.csv_label_col = 0;
  nest_dataset *ds = NULL;
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  assert_int_equal(nest_dataset_dim(ds), 16);
  int64_t *tr = NULL, *va = NULL, ntr = 0, nva = 0;
  assert_ok(nest_dataset_split(ds->n, 0.2, 1, &tr, &ntr, &va, &nva));
  check_kinds(ds->f32, ds->n, 16, tr, ntr, 8, "letter-recognition");
  free(tr), free(va);
  nest_dataset_destroy(&ds);
}

int main(int argc, char **argv) {
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_synthetic),
      cmocka_unit_test(test_letter),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nest_comm_destroy(&comm);
  return rc;
}
