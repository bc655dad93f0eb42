/* test_dr_mpi.c — DR+SCANN's reduction before synthesis (dr.h) across ranks, on a synthetic CSV
 * of 12 correlated features:
 * - the pipeline reduces the data before the engine (k = 4 features, "mlp:12-..." becomes
 *   "mlp:4-...", widths times 4/12), the chosen transform is the one a single process fits on
 *   the same training rows without any communication, bit for bit (so 1 and 2 ranks reduce
 *   alike), and every rank holds it;
 * - the baseline scored every candidate and the winner has the best validation accuracy;
 * - the model file records the reduction (/input/reduce, the same arrays) and nest_infer, given
 *   the RAW test CSV, applies it: its error count is the run's test error; so does the Python
 *   example docs/examples/infer_numpy.py (the net has a dense skip tensor in>fc2 too);
 * - bad dr keys (k not below the features, an unknown reduction) are refused at set-up naming
 *   the key, the same message on every rank.
 * Run under mpiexec -n 1/2. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nest/pipeline.h"
#include "test_util.h"

static nest_comm *comm;
static int R;
static char dir[256];

static void base_config(nest_config *c) {
  nest_config_defaults(c);
  snprintf(c->arch, sizeof c->arch, "mlp:12-24-3");
  /* a dense skip tensor from the (reduced) input to the output layer: readers must apply it */
  snprintf(c->skips, sizeof c->skips, "in>fc2");
  c->skip_density = 1;
  snprintf(c->dir, sizeof c->dir, "%s", dir);
  snprintf(c->train, sizeof c->train, "train.csv");
  snprintf(c->test, sizeof c->test, "test.csv");
  snprintf(c->format, sizeof c->format, "csv");
  c->csv_label_col = 0;
  c->val_split = 0.2;
  c->batch = 16;
  c->epochs = 3;
  c->lr = 0.05;
  c->seed = 4;
  snprintf(c->dr_reduce, sizeof c->dr_reduce, "pca, gaussian, sparse");
  c->dr_k = 4;
  c->dr_baseline_epochs = 2;
  c->out_dir[0] = '\0';
  c->run_dir[0] = '\0';
}

static void same_bits(const float *a, const float *b, int64_t n, const char *what) {
  if (memcmp(a, b, sizeof(float) * (size_t)n) != 0) fail_msg("%s differs", what);
}

static void test_reduce_then_train(void **state) {
  (void)state;
  nest_config c;
  base_config(&c);
  snprintf(c.run_dir, sizeof c.run_dir, "%s/run", dir);
  nest_pipeline *p = NULL;
  if (nest_pipeline_create(&c, comm, &p) != NEST_OK) fail_msg("create: %s", nest_error_message());
  p->t->quiet = getenv("NEST_TEST_VERBOSE") == NULL;
  const nest_reduce *r = p->dr.reduce;
  assert_non_null(r);
  assert_ptr_equal(p->t->reduce, r);
  assert_int_equal(r->d, 12);
  assert_int_equal(r->k, 4);
  assert_int_equal(p->t->train->shape.c, 4);
  assert_int_equal(p->t->test->shape.c, 4);
  assert_int_equal(p->t->net->in_shape.c, 4);
  assert_string_equal(p->t->cfg.arch, "mlp:4-24-3");
  assert_true(fabs(p->t->cfg.width - 4.0 / 12.0) < 1e-12);
  /* the baseline scored all three; the winner is the first of the best */
  int best = 0;
  for (int i = 0; i < 3; ++i) {
    assert_false(isnan(p->dr.val_acc[i]));
    if (p->dr.val_acc[i] > p->dr.val_acc[best]) best = i;
  }
  const nest_reduce_kind kinds[3] = {NEST_REDUCE_PCA, NEST_REDUCE_GAUSSIAN, NEST_REDUCE_SPARSE};
  assert_int_equal(r->kind, kinds[best]);
  /* a single process, no communication: the same fit on the same training rows */
  nest_data_opts o;
  nest_data_opts_default(&o);
  char path[512];
  snprintf(path, sizeof path, "%s/train.csv", dir);
  o.path = path;
  o.format = "csv";
  nest_dataset *ds = NULL;
  assert_int_equal(nest_dataset_load(&o, NULL, &ds), NEST_OK);
  int64_t *tri, *vai, ntr, nva;
  assert_int_equal(nest_dataset_split(ds->n, c.val_split, c.seed, &tri, &ntr, &vai, &nva), NEST_OK);
  const nest_reduce_opts ro = {.kind = r->kind, .k = 4, .seed = c.seed};
  nest_reduce *mine = NULL;
  assert_int_equal(nest_reduce_fit(&ro, ds->f32, ds->n, 12, tri, ntr, &mine), NEST_OK);
  same_bits(mine->components, r->components, 4 * 12, "components");
  same_bits(mine->min, r->min, 12, "min");
  same_bits(mine->max, r->max, 12, "max");
  same_bits(mine->mean, r->mean, 12, "mean");
  /* and its output is the engine's training data (before the normalisation) */
  float *y = malloc(sizeof(float) * (size_t)ds->n * 4);
  assert_int_equal(nest_reduce_apply(mine, ds->f32, ds->n, y), NEST_OK);
  same_bits(y, p->t->train->f32, ds->n * 4, "reduced training rows");
  free(y);
  uint64_t h = nest_test_hash_bytes(r->components, sizeof(float) * 48);
  assert_int_equal(nest_comm_check_same(comm, h, "the reduction"), NEST_OK);

  if (nest_pipeline_run(p) != NEST_OK) fail_msg("run: %s", nest_error_message());
  nest_eval v, te;
  assert_int_equal(nest_trainer_evaluate_sets(p->t, NEST_EVAL_BOTH, &v, &te), NEST_OK);
  const int64_t ntest = p->t->n_test;
  if (R == 0) {
    /* the model file holds the reduction */
    char mpath[512];
    snprintf(mpath, sizeof mpath, "%s/run/model.h5", dir);
    nest_model_input in;
    assert_int_equal(nest_model_read_input(mpath, &in), NEST_OK);
    assert_non_null(in.reduce);
    assert_int_equal(in.data_shape.c, 12);
    assert_int_equal(in.norm.nch, 4);
    same_bits(in.reduce->components, r->components, 48, "the model file's components");
    same_bits(in.reduce->min, r->min, 12, "the model file's min");
    nest_model_input_free(&in);
    /* nest_infer on the raw test CSV: the run's test error */
    char cmd[2048], out[8192];
    snprintf(cmd, sizeof cmd, "%s/nest_infer %s %s/test.csv --dense > %s/infer.out 2>&1",
             NEST_BINARY_DIR, mpath, dir, dir);
    if (system(cmd) != 0) {
      snprintf(path, sizeof path, "%s/infer.out", dir);
      nest_test_slurp(path, out, sizeof out);
      fail_msg("%s failed:\n%s", cmd, out);
    }
    snprintf(path, sizeof path, "%s/infer.out", dir);
    nest_test_slurp(path, out, sizeof out);
    const char *e = strstr(out, "\nerror ");
    long wrong = -1, n = -1;
    double pct;
    if (!e || sscanf(e, "\nerror %lf%% (%ld / %ld)", &pct, &wrong, &n) != 3)
      fail_msg("no error line in:\n%s", out);
    assert_int_equal(n, ntest);
    const long want = lround((1.0 - te.acc) * (double)ntest);
    if (wrong != want) fail_msg("nest_infer: %ld wrong of %ld, the run: %ld", wrong, n, want);
    /* and so does the Python example (h5py + numpy: the reduction and the skip tensor) */
    if (system("/usr/bin/python3 -c 'import h5py, numpy' 2>/dev/null") != 0) {
      printf("SKIP (python): /usr/bin/python3 lacks h5py or numpy\n");
    } else {
      snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/docs/examples/infer_numpy.py %s %s/test.csv",
               NEST_SOURCE_DIR, mpath, dir);
      char pyout[4096], pyerr[4096];
      if (nest_test_run(cmd, pyout, sizeof pyout, pyerr, sizeof pyerr) != 0)
        fail_msg("%s failed: %s", cmd, pyerr);
      long pw = -1, pn = -1;
      const char *t = strstr(pyout, "test_error = ");
      if (!t || sscanf(t, "test_error = %*f (%ld / %ld)", &pw, &pn) != 2)
        fail_msg("no test_error line from infer_numpy.py:\n%s", pyout);
      if (pw != want || pn != ntest)
        fail_msg("infer_numpy.py: %ld wrong of %ld, the run: %ld of %lld", pw, pn, want,
                 (long long)ntest);
      printf("infer_numpy.py on the raw rows: %ld wrong of %ld, as the run\n", pw, pn);
    }
  }
  nest_reduce_destroy(&mine);
  free(tri);
  free(vai);
  nest_dataset_destroy(&ds);
  nest_pipeline_destroy(&p);
}

static void expect_error(const nest_config *c, const char *key, const char *what) {
  nest_pipeline *p = NULL;
  const nest_status st = nest_pipeline_create(c, comm, &p);
  if (st != NEST_ERR_CONFIG) fail_msg("create: %d (%s), want a config error", st, nest_error_message());
  assert_null(p);
  const char *msg = nest_error_message();
  if (!strstr(msg, key) || !strstr(msg, what)) fail_msg("message '%s' does not name %s / %s", msg, key, what);
  assert_int_equal(nest_comm_check_same(comm, nest_test_hash_bytes(msg, strlen(msg)), "messages"),
                   NEST_OK);
  nest_error_clear();
}

static void test_bad_keys(void **state) {
  (void)state;
  nest_config c;
  base_config(&c);
  c.dr_k = 12;
  expect_error(&c, "dr.k = 12", "below the 12 features");
  c.dr_k = 0;
  expect_error(&c, "dr.reduce", "dr.k or dr.ratio");
  c.dr_k = 3;
  snprintf(c.dr_reduce, sizeof c.dr_reduce, "pca, ica");
  expect_error(&c, "dr.reduce", "ica");
  snprintf(c.dr_reduce, sizeof c.dr_reduce, "pca, pca");
  expect_error(&c, "dr.reduce", "twice");
}

int main(int argc, char **argv) {
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  R = nest_comm_rank(comm);
  /* one directory for all ranks: rank 0 makes it and the data */
  char tmpl[] = "/tmp/nest_dr_XXXXXX";
  if (R == 0) {
    if (!mkdtemp(tmpl)) return 1;
    snprintf(dir, sizeof dir, "%s", tmpl);
    char p[300];
    snprintf(p, sizeof p, "%s/train.csv", dir);
    assert_int_equal(nest_test_write_factor_csv(p, 400, 1), 0);
    snprintf(p, sizeof p, "%s/test.csv", dir);
    assert_int_equal(nest_test_write_factor_csv(p, 120, 2), 0);
  }
  if (nest_comm_bcast(comm, dir, sizeof dir, 0) != NEST_OK) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reduce_then_train),
      cmocka_unit_test(test_bad_keys),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nest_comm_barrier(comm);
  if (R == 0 && getenv("NEST_TEST_KEEP") == NULL) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) rc = 1;
  }
  nest_comm_destroy(&comm);
  return rc;
}
