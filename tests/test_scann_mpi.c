/* test_scann_mpi.c — SCANN's operations and schemes (scann.h, ALGORITHMS.md §10) across ranks:
 * - cell division (policy split) keeps the network's function before the noise, on an MLP
 *   whose split layer feeds a skip tensor; the copy is the most active unit's; with noise the
 *   copy's active inputs move by N(0, split_noise^2) and its dormant positions stay 0;
 * - quantile pruning (policy magnitude at the step scann.prune_quantile) removes exactly
 *   ceil(q x active) weights of each tensor, ties to the lower index;
 * - percentile connection growth activates exactly ceil((1 - p/100) x dormant) positions of a
 *   tensor (capped by scann.grow_cap x active), skip tensors included;
 * - schemes A, B and C end to end (train, scann) on synthetic data with run.check_masks: every
 *   rank holds the same masks and weights at the end, the run's net is the best validation
 *   network (its error no worse than the start's), the counts add up;
 * - bad scann configs are refused at set-up, naming the keys, the same message on every rank.
 * Run under mpiexec -n 1/2/4. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/gradpass.h"
#include "nest/pipeline.h"
#include "nest/select.h"
#include "test_util.h"

static nest_comm *comm;

static void base_config(nest_config *cfg, const char *arch) {
  nest_test_synthetic_config(cfg, arch, 7);
}

static nest_trainer *make(const nest_config *cfg, nest_shape shape, int n) {
  nest_trainer *t = nest_test_trainer(comm, cfg, shape, n, 31);
  if (!t) fail_msg("create: %s", nest_error_message());
  return t;
}

static nest_status run_step(nest_trainer *t, const nest_policy_ops *ops, int target,
                            double fraction, nest_policy_run *out) {
  const int64_t n_score = t->n_train < 24 ? t->n_train : 24;
  nest_policy_run r = {.ops = ops, .t = t, .target = target, .iteration = 1,
                       .room = INT64_MAX, .fraction = fraction,
                       .score_ids = t->train_idx, .n_score = n_score};
  r.layer = ops->target == NEST_TARGET_UNITS ? target : t->net->tensors[target].layer->index;
  nest_status st = nest_policy_step(&r);
  if (out) *out = r;
  return st;
}

static void logits_of(nest_net *net, const float *x, int B, float *out) {
  nest_ctx ctx = {.n = B, .train = 0, .nthreads = 1};
  const float *logits;
  assert_int_equal(nest_net_forward(net, &ctx, x, &logits), NEST_OK);
  memcpy(out, logits, sizeof(float) * (size_t)B * (size_t)net->nclasses);
}

static int tensor_of(const nest_net *net, const char *layer, const char *param) {
  for (int i = 0; i < net->ntensors; ++i)
    if (strcmp(net->tensors[i].layer->name, layer) == 0 &&
        strcmp(net->tensors[i].param->name, param) == 0)
      return i;
  fail_msg("no tensor %s/%s", layer, param);
  return -1;
}

static void same_on_every_rank(const nest_net *net, const char *what) {
  if (nest_comm_check_same(comm, nest_net_hash(net, NEST_HASH_ALL), what) != NEST_OK)
    fail_msg("%s: %s", what, nest_error_message());
}

/* ---- cell division -------------------------------------------------------------------------- */

static void test_split_keeps_function(void **state) {
  (void)state;
  enum { IN = 10, B = 2, C = 4 }; /* B <= the per-rank batch at 4 ranks */
  nest_config cfg;
  base_config(&cfg, "mlp:10-8-6-4");
  snprintf(cfg.skips, sizeof cfg.skips, "all"); /* fc1's output also feeds fc3 (skip) */
  cfg.skip_density = 0.5;
  cfg.density = 0.7;
  cfg.scann_split_noise = 0;
  cfg.scann_neurons = 2;
  nest_trainer *t = make(&cfg, (nest_shape){IN, 1, 1}, 60);
  const int L = nest_net_find_layer(t->net, "fc1")->index;
  float x[B * IN], ref[B * C], out[B * C];
  for (int i = 0; i < B * IN; ++i) x[i] = (float)sin(0.37 * i + 0.1);
  logits_of(t->net, x, B, ref);
  const nest_layer *l0 = t->net->layers[L];
  float w0[8][IN];
  for (int u = 0; u < 8; ++u) memcpy(w0[u], l0->p[0] + u * IN, sizeof w0[u]);
  nest_policy_run r;
  assert_int_equal(run_step(t, &nest_policy_split, L, 0, &r), NEST_OK);
  assert_int_equal(r.units_added, 2);
  nest_net *net = t->net;
  assert_int_equal(net->layers[L]->hp.units, 10);
  logits_of(net, x, B, out);
  double m = 0;
  for (int i = 0; i < B * C; ++i) m = fmax(m, fabs((double)out[i] - ref[i]));
  if (m > 1e-5) fail_msg("split changed the logits by %g before noise", m);
  /* each copy (units 8, 9) repeats the input row of one original unit, bit for bit */
  const nest_layer *l1 = net->layers[L];
  for (int c = 8; c < 10; ++c) {
    int found = -1;
    for (int u = 0; u < 8 && found < 0; ++u)
      if (memcmp(w0[u], l1->p[0] + c * IN, sizeof w0[u]) == 0) found = u;
    if (found < 0) fail_msg("copy %d repeats no original unit's inputs", c);
  }
  same_on_every_rank(net, "after the split");

  /* with noise: the copy's active inputs move, its dormant ones stay 0 */
  t->cfg.scann_split_noise = 0.01;
  t->cfg.scann_neurons = 1;
  assert_int_equal(run_step(t, &nest_policy_split, L, 0, &r), NEST_OK);
  net = t->net;
  const nest_layer *l2 = net->layers[L];
  assert_int_equal(l2->hp.units, 11);
  const float *cw = l2->p[0] + 10 * IN, *cm = l2->m[0] + 10 * IN;
  int best = -1;
  double bestd = 1e30;
  for (int u = 0; u < 10; ++u) { /* the source: the unit whose row is closest */
    double d = 0;
    for (int j = 0; j < IN; ++j) d += fabs((double)cw[j] - l2->p[0][u * IN + j]);
    if (d < bestd) bestd = d, best = u;
  }
  assert_true(best >= 0);
  int moved = 0;
  for (int j = 0; j < IN; ++j) {
    const double d = fabs((double)cw[j] - l2->p[0][best * IN + j]);
    if (cm[j] == 0.0f) {
      assert_true(cw[j] == 0.0f);
      continue;
    }
    if (d > 0.06) fail_msg("noise %g on input %d: more than 6 sigma of 0.01", d, j);
    moved += d > 0;
  }
  assert_true(moved > 0);
  same_on_every_rank(net, "after the noisy split");
  nest_trainer_destroy(&t);
}

/* ---- quantile pruning ------------------------------------------------------------------------ */

static void test_quantile_pruning(void **state) {
  (void)state;
  nest_config cfg;
  base_config(&cfg, "mlp:6-5-4");
  nest_trainer *t = make(&cfg, (nest_shape){6, 1, 1}, 40);
  nest_net *net = t->net;
  const int ti = tensor_of(net, "fc1", "W");
  const nest_param *p = net->tensors[ti].param; /* [5, 6]: 30 weights, all active */
  assert_int_equal(p->count, 30);
  float *w = net->params + p->offset, *m = net->masks + p->offset;
  /* |w|: 0.2 at indices 3, 7, 11 (ties), 0.5 at every other index except 20..29 (1 + i/100) */
  for (int i = 0; i < 30; ++i) {
    m[i] = 1;
    w[i] = i >= 20 ? (float)(1 + i / 100.0) : (i % 2 ? -0.5f : 0.5f);
  }
  w[3] = 0.2f, w[7] = -0.2f, w[11] = 0.2f;
  nest_policy_run r;
  /* 0.2 of 30 = 6: the three 0.2s, then the three lowest-index 0.5s (0, 1, 2) */
  assert_int_equal(run_step(t, &nest_policy_magnitude, ti, 0.2, &r), NEST_OK);
  assert_int_equal(r.conns_removed, 6);
  for (int i = 0; i < 30; ++i) {
    const int gone = i == 0 || i == 1 || i == 2 || i == 3 || i == 7 || i == 11;
    if ((m[i] == 0.0f) != gone) fail_msg("index %d: mask %g (want %s)", i, (double)m[i], gone ? "0" : "1");
  }
  /* 0.2 of the 24 left = ceil(4.8) = 5: the five lowest-index 0.5s (4, 5, 6, 8, 9) */
  assert_int_equal(run_step(t, &nest_policy_magnitude, ti, 0.2, &r), NEST_OK);
  assert_int_equal(r.conns_removed, 5);
  for (int i = 4; i <= 9; ++i) assert_true(m[i] == 0.0f);
  assert_true(m[10] == 1.0f && m[12] == 1.0f);
  same_on_every_rank(net, "after pruning");
  nest_trainer_destroy(&t);
}

/* ---- percentile growth -------------------------------------------------------------------------- */

static int64_t active_of(const nest_net *net, int ti) {
  const nest_param *p = net->tensors[ti].param;
  int64_t a = 0;
  for (size_t i = 0; i < p->count; ++i) a += net->masks[p->offset + i] != 0.0f;
  return a;
}

static void test_percentile_growth(void **state) {
  (void)state;
  nest_config cfg;
  base_config(&cfg, "mlp:36-20-12-4");
  snprintf(cfg.skips, sizeof cfg.skips, "in>fc2");
  cfg.density = 0.3;
  cfg.skip_density = 0;
  nest_trainer *t = make(&cfg, (nest_shape){1, 6, 6}, 60);
  nest_net *net = t->net;
  const int skip = tensor_of(net, "fc2", "skip_in");
  assert_int_equal(active_of(net, skip), 0);
  uint8_t want[16] = {0};
  assert_true(net->ntensors <= 16);
  for (int i = 0; i < net->ntensors; ++i) want[i] = net->tensors[i].param->maskable;
  const nest_gradsum_req req = {.tensors = want};
  nest_gradsum *g = NULL;
  assert_int_equal(nest_gradpass(t, t->train_idx, 24, &req, &g), NEST_OK);
  for (int pass = 0; pass < 2; ++pass) {
    /* pass 0: no cap; pass 1: scann.grow_cap = 0.05 of the active (0 active: nothing) */
    t->cfg.scann_grow_cap = pass ? 0.05 : 0;
    for (int i = 0; i < net->ntensors; ++i) {
      if (!want[i]) continue;
      const nest_param *p = net->tensors[i].param;
      const int64_t a0 = active_of(net, i), d0 = (int64_t)p->count - a0;
      float *mask0 = malloc(sizeof(float) * p->count);
      memcpy(mask0, net->masks + p->offset, sizeof(float) * p->count);
      nest_policy_run r = {.ops = &nest_policy_conn, .t = t, .target = i,
                           .layer = net->tensors[i].layer->index, .iteration = 1,
                           .room = INT64_MAX, .fraction = 0.3, .pass = g};
      assert_int_equal(nest_policy_step(&r), NEST_OK);
      const nest_select_req sr = {-1, 0.3, NEST_SELECT_LARGEST};
      int64_t k = nest_select_count(&sr, d0);
      if (pass) {
        const int64_t cap = (int64_t)ceil(0.05 * (double)a0 - 1e-9);
        if (k > cap) k = cap;
      }
      if (r.conns_added != k)
        fail_msg("%s/%s (pass %d): %lld added, want %lld of %lld dormant", net->tensors[i].layer->name,
                 p->name, pass, (long long)r.conns_added, (long long)k, (long long)d0);
      /* the added positions have the largest |G| of the dormant ones: none left dormant above */
      double lo = INFINITY, hi = 0;
      for (size_t j = 0; j < p->count; ++j) {
        if (mask0[j] != 0.0f) continue;
        const double sc = fabs(g->grad[i][j]);
        if (net->masks[p->offset + j] != 0.0f) {
          lo = fmin(lo, sc);
          assert_true(net->params[p->offset + j] == 0.0f); /* grown weights start at 0 */
        } else {
          hi = fmax(hi, sc);
        }
      }
      if (k > 0 && !(lo >= hi)) fail_msg("%s: grew |G| >= %g but left %g dormant", p->name, lo, hi);
      free(mask0);
    }
  }
  assert_true(active_of(net, skip) > 0); /* the skip tensor's dormant positions competed */
  same_on_every_rank(net, "after percentile growth");
  nest_gradsum_destroy(&g);
  nest_trainer_destroy(&t);
}

/* ---- the schemes end to end ----------------------------------------------------------------- */

static void run_scheme(const char *scheme, const char *skips) {
  nest_config cfg;
  base_config(&cfg, "mlp:36-20-12-4");
  snprintf(cfg.skips, sizeof cfg.skips, "%s", skips);
  cfg.skip_density = scheme[0] == 'B' ? 0.1 : 0;
  cfg.density = scheme[0] == 'A' ? 0.3 : 1.0;
  cfg.width = scheme[0] == 'A' ? 0.5 : 1.0;
  snprintf(cfg.scheme, sizeof cfg.scheme, "%s", scheme);
  snprintf(cfg.phases, sizeof cfg.phases, "train, scann");
  cfg.epochs = 1;
  cfg.scann_iterations = 2;
  cfg.scann_epochs = 1;
  cfg.scann_prune_iterations = 1;
  cfg.scann_neurons = 2;
  cfg.grow_score_batch = 20;
  cfg.check_masks = 1;
  nest_pipeline *pl = nest_test_pipeline(comm, &cfg, (nest_shape){1, 6, 6}, 80, 31);
  if (!pl) fail_msg("scheme %s: create: %s", scheme, nest_error_message());
  nest_trainer *t = pl->t;
  if (nest_pipeline_run(pl) != NEST_OK) fail_msg("scheme %s: run: %s", scheme, nest_error_message());
  const nest_scann_state *s = &pl->scann;
  assert_true(s->ran);
  assert_int_equal(s->res.operations, scheme[0] == 'A' ? 5 : 4);
  assert_int_equal(s->res.operations, nest_scann_operations(&t->cfg));
  int64_t aw = 0;
  nest_net_count(t->net, &aw, NULL, NULL);
  assert_int_equal(aw, s->res.weights_after);
  /* the kept network is the best by validation error: never worse than the start's */
  nest_eval v, te;
  assert_int_equal(nest_trainer_evaluate_sets(t, NEST_EVAL_BOTH, &v, &te), NEST_OK);
  assert_true(fabs((1.0 - v.acc) - s->res.val_error) < 1e-12);
  if (!(s->res.val_error <= s->min_val + 1e-12))
    fail_msg("scheme %s: kept validation error %g, the lowest seen %g", scheme, s->res.val_error,
             s->min_val);
  if (s->res.best_op < 0 || s->res.best_op > s->res.operations)
    fail_msg("scheme %s: best operation %d", scheme, s->res.best_op);
  same_on_every_rank(t->net, "the scheme's network");
  nest_pipeline_destroy(&pl);
}

static void test_scheme_a(void **state) {
  (void)state;
  run_scheme("A", "all");
}
static void test_scheme_b(void **state) {
  (void)state;
  run_scheme("B", "all");
}
static void test_scheme_c(void **state) {
  (void)state;
  run_scheme("C", "");
}

/* ---- bad configs -------------------------------------------------------------------------------- */

static void expect_setup_error(const nest_config *cfg, const char *key1, const char *key2) {
  char why[1024];
  if (nest_test_setup_error(comm, cfg, (nest_shape){1, 6, 6}, 40, key1, key2, why, sizeof why))
    fail_msg("%s", why);
}

static void test_bad_configs(void **state) {
  (void)state;
  nest_config cfg;
  base_config(&cfg, "mlp:36-20-12-4");
  snprintf(cfg.phases, sizeof cfg.phases, "train, scann");
  expect_setup_error(&cfg, "synthesis.scheme", "none"); /* scann without a scheme */
  snprintf(cfg.scheme, sizeof cfg.scheme, "C");
  snprintf(cfg.skips, sizeof cfg.skips, "all");
  expect_setup_error(&cfg, "synthesis.scheme = C", "model.skips");
  cfg.skips[0] = '\0';
  snprintf(cfg.phases, sizeof cfg.phases, "train");
  expect_setup_error(&cfg, "synthesis.scheme", "synthesis.phases");
  snprintf(cfg.phases, sizeof cfg.phases, "scann");
  cfg.val_split = 0;
  expect_setup_error(&cfg, "synthesis.scheme", "data.val_split");
  cfg.val_split = 0.2;
  snprintf(cfg.scheme, sizeof cfg.scheme, "A");
  snprintf(cfg.arch, sizeof cfg.arch, "mlp:36-4"); /* nothing to split */
  expect_setup_error(&cfg, "synthesis.scheme = A", "ReLU");
}

int main(int argc, char **argv) {
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_split_keeps_function), cmocka_unit_test(test_quantile_pruning),
      cmocka_unit_test(test_percentile_growth),    cmocka_unit_test(test_scheme_a),
      cmocka_unit_test(test_scheme_b),             cmocka_unit_test(test_scheme_c),
      cmocka_unit_test(test_bad_configs),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nest_comm_destroy(&comm);
  return rc;
}
