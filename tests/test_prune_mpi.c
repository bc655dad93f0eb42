/* test_prune_mpi.c — the pruning policies and phases across ranks.
 * - magnitude pruning with batch norm selects by the effective weights (Eq. 9), not the raw
 *   ones; ties go to the lower index;
 * - neuron pruning removes exactly the units without active inputs or outputs, survivors
 *   keep their values;
 * - the guard restores weights, masks, momentum and buffers bit for bit;
 * - a small end-to-end synthesis (tiny MLP and tiny CNN, synthetic data) runs seed -> grow ->
 *   train -> prune (-> partial-area for the CNN), ends smaller than after growth, and every
 *   rank holds the same masks, area masks included, after every pruning step (run.check_masks)
 *   and at the end;
 * - a phase whose every target stopped counts only the iterations that pruned;
 * - a pruning phase, or grow.target_error, without validation samples is refused when the run
 *   is set up, naming the keys, on every rank.
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

#include "nest/pipeline.h"
#include "nest/surgery.h"
#include "test_util.h"

static nest_comm *comm;
static int R, P;

static void base_config(nest_config *cfg, const char *arch) {
  nest_test_synthetic_config(cfg, arch, 5);
}

static nest_trainer *make(const nest_config *cfg, nest_shape shape, int n) {
  nest_trainer *t = nest_test_trainer(comm, cfg, shape, n, 31);
  if (!t) fail_msg("create: %s", nest_error_message());
  return t;
}

/* A pipeline (growth driver, cursor, pruning state) around the same data as make(). */
static nest_pipeline *make_pipeline(const nest_config *cfg, nest_shape shape, int n) {
  nest_pipeline *p = nest_test_pipeline(comm, cfg, shape, n, 31);
  if (!p) fail_msg("create: %s", nest_error_message());
  return p;
}

static nest_status run_step(nest_trainer *t, const nest_policy_ops *ops, int target,
                            double fraction, nest_policy_run *out) {
  nest_policy_run r = {.ops = ops, .t = t, .target = target, .iteration = 1,
                       .room = INT64_MAX, .fraction = fraction};
  r.layer = ops->target == NEST_TARGET_UNITS ? target : t->net->tensors[target].layer->index;
  nest_status st = nest_policy_step(&r);
  if (out) *out = r;
  return st;
}

/* ---- magnitude pruning with batch norm ---------------------------------------------------- */

static void test_magnitude_bn(void **state) {
  (void)state;
  nest_config cfg;
  base_config(&cfg, "mlp:4-3-4");
  cfg.batchnorm = 1;
  nest_trainer *t = make(&cfg, (nest_shape){4, 1, 1}, 40);
  nest_net *net = t->net;
  const nest_layer *fc1 = nest_net_find_layer(net, "fc1"), *bn = nest_net_find_layer(net, "fc1.bn");
  assert_non_null(fc1);
  assert_non_null(bn);
  const nest_param *p = &fc1->param[0]; /* W [3, 4], all active */
  assert_int_equal(p->count, 12);
  /* raw |w|: row 0 the smallest (0.1 ..), row 2 the largest (0.9 ..) */
  const float w[12] = {0.10f, -0.11f, 0.12f, 0.13f, 0.50f, 0.51f, -0.52f, 0.53f,
                       0.90f, 0.91f, 0.92f, -0.90f};
  for (int i = 0; i < 12; ++i) net->params[p->offset + i] = w[i], net->masks[p->offset + i] = 1;
  /* BN folds a scale per output unit: row 0 x 8, row 1 x 1, row 2 x 0.125 (gamma / sqrt(var +
   * eps) with var chosen so the square root is exact up to eps) */
  const float gamma[3] = {8.0f, 1.0f, -0.125f}; /* the sign does not matter: |.| */
  for (int u = 0; u < 3; ++u) {
    bn->p[0][u] = gamma[u];
    bn->buf[1][u] = 1.0f; /* running var */
  }
  /* effective: row 0 ~0.8-1.04, row 1 ~0.5, row 2 ~0.11-0.115: the 4 smallest are row 2 */
  nest_policy_run r;
  assert_int_equal(run_step(t, &nest_policy_magnitude, 0, 4.0 / 12.0, &r), NEST_OK);
  assert_int_equal(r.conns_removed, 4);
  for (int i = 0; i < 12; ++i) {
    const int want = i < 8;
    if ((int)net->masks[p->offset + i] != want)
      fail_msg("position %d: mask %g, want %d (effective weights pick row 2)", i,
               (double)net->masks[p->offset + i], want);
    if (!want) assert_true(net->params[p->offset + i] == 0.0f && net->mom[p->offset + i] == 0.0f);
  }
  /* without BN folding the raw order would have taken row 0: check the reference differs */
  /* next step: 0.25 of the 8 active = 2: the smallest effective are row 1's 0.50, 0.51 */
  assert_int_equal(run_step(t, &nest_policy_magnitude, 0, 0.25, &r), NEST_OK);
  assert_int_equal(r.conns_removed, 2);
  assert_true(net->masks[p->offset + 4] == 0 && net->masks[p->offset + 5] == 0);
  assert_true(net->masks[p->offset + 6] == 1 && net->masks[p->offset + 7] == 1);
  /* ties by index: equal magnitudes, the lower index goes first */
  for (int i = 0; i < 4; ++i) net->params[p->offset + i] = (i % 2 ? -0.3f : 0.3f);
  assert_int_equal(run_step(t, &nest_policy_magnitude, 0, 0.5, &r), NEST_OK); /* 3 of 6 */
  /* row 0 (0.3 x 8 = 2.4 each) vs row 1's 0.52, 0.53: the two row-1 weights and index 0 */
  assert_true(net->masks[p->offset + 6] == 0 && net->masks[p->offset + 7] == 0);
  assert_true(net->masks[p->offset + 0] == 0 && net->masks[p->offset + 1] == 1);
  /* the floor: never the last active weight */
  assert_int_equal(run_step(t, &nest_policy_magnitude, 0, 0.99, &r), NEST_OK);
  int64_t active = 0;
  for (int i = 0; i < 12; ++i) active += net->masks[p->offset + i] != 0;
  assert_int_equal(active, 1);
  nest_trainer_destroy(&t);
}

/* ---- neuron pruning ----------------------------------------------------------------------- */

static void test_neurons_dead(void **state) {
  (void)state;
  nest_config cfg;
  base_config(&cfg, "mlp:6-5-3-4");
  nest_trainer *t = make(&cfg, (nest_shape){6, 1, 1}, 40);
  nest_net *net = t->net;
  const int L = nest_net_find_layer(net, "fc1")->index;
  nest_layer *fc1 = net->layers[L], *fc2 = nest_net_find_layer(net, "fc2");
  /* unit 1: no active input; unit 3: no active output (fc2 column 3) */
  for (int j = 0; j < 6; ++j) fc1->m[0][1 * 6 + j] = 0, fc1->p[0][1 * 6 + j] = 0;
  for (int o = 0; o < 3; ++o) fc2->m[0][o * 5 + 3] = 0, fc2->p[0][o * 5 + 3] = 0;
  float keep_w[3][6];
  const int survivors[3] = {0, 2, 4};
  for (int k = 0; k < 3; ++k) memcpy(keep_w[k], fc1->p[0] + survivors[k] * 6, sizeof keep_w[k]);
  nest_policy_run r;
  assert_int_equal(run_step(t, &nest_policy_neurons, L, 0, &r), NEST_OK);
  net = t->net; /* replaced by the surgery */
  fc1 = net->layers[L];
  assert_int_equal(fc1->hp.units, 3);
  assert_int_equal(r.units_added, 2);
  for (int k = 0; k < 3; ++k) assert_memory_equal(keep_w[k], fc1->p[0] + k * 6, sizeof keep_w[k]);
  /* nothing more to remove */
  assert_int_equal(run_step(t, &nest_policy_neurons, L, 0, &r), NEST_OK);
  assert_int_equal(r.units_added, 0);
  assert_int_equal(t->net->layers[L]->hp.units, 3);
  nest_trainer_destroy(&t);
}

/* ---- the guard ------------------------------------------------------------------------------ */

static void test_guard_restores(void **state) {
  (void)state;
  nest_config cfg;
  base_config(&cfg, "mlp:36-20-12-4");
  cfg.batchnorm = 1;
  cfg.sync_bn = 0; /* the phase must also leave averaged statistics alone */
  cfg.prune_target_error = 1e-6; /* an untrained net cannot meet it: every step is undone */
  cfg.prune_tolerance = 0;
  cfg.prune_retrain_steps = 3;
  cfg.prune_iterations = 3;
  cfg.prune_gamma_start = 0.3;
  cfg.prune_gamma = 0.1;
  snprintf(cfg.phases, sizeof cfg.phases, "prune");
  nest_pipeline *pl = make_pipeline(&cfg, (nest_shape){1, 6, 6}, 50);
  nest_trainer *t = pl->t;
  nest_net *net = t->net;
  for (size_t i = 0; i < net->nparams; ++i) net->mom[i] = net->masks[i] * 0.01f * (float)(i % 5);
  assert_int_equal(nest_trainer_sync_buffers(t), NEST_OK);
  const uint64_t before = nest_net_hash(net, NEST_HASH_ALL) ^ nest_test_hash_bytes(net->mom, net->nparams * 4);
  char arch0[512];
  nest_net_arch_string(net, arch0, sizeof arch0);
  if (nest_prune_phase(&pl->run, pl->grow, &pl->prune, 0) != NEST_OK)
    fail_msg("prune: %s", nest_error_message());
  const nest_prune_result res = pl->prune.res[0];
  assert_true(res.steps_restored > 0);
  assert_int_equal(res.steps_kept, 0);
  net = t->net;
  char arch1[512];
  nest_net_arch_string(net, arch1, sizeof arch1);
  assert_string_equal(arch0, arch1);
  assert_true((nest_net_hash(net, NEST_HASH_ALL) ^ nest_test_hash_bytes(net->mom, net->nparams * 4)) == before);
  assert_int_equal(res.weights_before, res.weights_after);
  nest_pipeline_destroy(&pl);
}

/* Every step of every target is undone (the target error cannot be met), so each target's gamma
 * halves at iterations 1 and 2 (0.3 -> 0.15 -> 0.075 < 0.1: stop): iteration 3 finds none
 * pruning and must not be counted (summary.txt's prune_iterations). */
static void test_prune_iterations_counted(void **state) {
  (void)state;
  nest_config cfg;
  base_config(&cfg, "mlp:36-20-12-4");
  cfg.prune_target_error = 1e-6;
  cfg.prune_tolerance = 0;
  cfg.prune_retrain_steps = 2;
  cfg.prune_iterations = 5;
  cfg.prune_gamma_start = 0.3;
  cfg.prune_gamma = 0.1;
  snprintf(cfg.phases, sizeof cfg.phases, "prune");
  nest_pipeline *pl = make_pipeline(&cfg, (nest_shape){1, 6, 6}, 50);
  if (nest_prune_phase(&pl->run, pl->grow, &pl->prune, 0) != NEST_OK)
    fail_msg("prune: %s", nest_error_message());
  const nest_prune_result *res = &pl->prune.res[0];
  const int targets = pl->prune.npts;
  assert_int_equal(targets, 3);
  for (int k = 0; k < targets; ++k) assert_int_equal(pl->prune.pts[k].stopped, 1);
  assert_int_equal(res->steps_restored, 2 * targets);
  if (res->iterations != 2)
    fail_msg("%d iterations counted; targets pruned in 2 (all stopped after the second)",
             res->iterations);
  nest_pipeline_destroy(&pl);
}

/* One expected set-up error (the same on every rank). */
static void expect_setup_error(const nest_config *cfg, nest_shape shape, int n, const char *key1,
                               const char *key2) {
  char why[1024];
  if (nest_test_setup_error(comm, cfg, shape, n, key1, key2, why, sizeof why)) fail_msg("%s", why);
}

static void test_needs_validation(void **state) {
  (void)state;
  nest_config cfg;
  base_config(&cfg, "lenet5");
  cfg.val_split = 0;
  snprintf(cfg.phases, sizeof cfg.phases, "train, prune");
  const nest_shape img = {1, 16, 16}, vec = {1, 6, 6};
  expect_setup_error(&cfg, img, 40, "synthesis.phases", "data.val_split");
  snprintf(cfg.phases, sizeof cfg.phases, "train,area");
  expect_setup_error(&cfg, img, 40, "area phase", "data.val_split");
  /* a split that rounds to no sample: 0.04 of 10 */
  cfg.val_split = 0.04;
  snprintf(cfg.phases, sizeof cfg.phases, "prune");
  expect_setup_error(&cfg, img, 10, "synthesis.phases", "data.val_split");
  /* growth that stops on a validation error it cannot measure */
  base_config(&cfg, "mlp:36-20-12-4");
  cfg.val_split = 0;
  snprintf(cfg.grow_policy, sizeof cfg.grow_policy, "conn");
  cfg.grow_target_error = 0.05;
  expect_setup_error(&cfg, vec, 40, "grow.target_error", "data.val_split");
  /* without the target error, growth runs its iterations: fine */
  cfg.grow_target_error = 0;
  nest_pipeline *pl = make_pipeline(&cfg, vec, 40);
  nest_pipeline_destroy(&pl);
}

/* ---- end to end ----------------------------------------------------------------------------- */

static void check_pipeline(const char *arch, nest_shape shape, const char *policy, int bn,
                           double lr, const char *phases) {
  nest_config cfg;
  base_config(&cfg, arch);
  cfg.lr = lr;
  cfg.prune_lr = lr / 2;
  cfg.width = 0.5;
  cfg.density = 0.3;
  cfg.batchnorm = bn;
  snprintf(cfg.grow_policy, sizeof cfg.grow_policy, "%s", policy);
  snprintf(cfg.phases, sizeof cfg.phases, "%s", phases);
  cfg.grow_iterations = 2;
  cfg.grow_train_epochs = 1;
  cfg.grow_neurons = 3;
  cfg.grow_fmaps = 2;
  cfg.grow_fmap_candidates = 2;
  cfg.grow_score_batch = 20;
  cfg.epochs = 1;
  cfg.prune_retrain_steps = 4;
  cfg.prune_iterations = 3;
  cfg.prune_tolerance = 0.5; /* synthetic data: let the pruning proceed */
  cfg.check_masks = 1;
  nest_pipeline *pl = make_pipeline(&cfg, shape, 60);
  nest_trainer *t = pl->t;
  if (nest_pipeline_run(pl) != NEST_OK) fail_msg("%s run: %s", arch, nest_error_message());
  const nest_grow_result *g = nest_grow_result_of(pl->grow);
  int64_t aw = 0;
  nest_net_count(t->net, &aw, NULL, NULL);
  if (!(aw < g->grown_weights))
    fail_msg("%s: %lld active weights after pruning, %lld after growth", arch, (long long)aw,
             (long long)g->grown_weights);
  assert_true(g->grown_weights > g->seed_weights);
  assert_int_equal(nest_comm_check_same(comm, nest_net_hash(t->net, NEST_HASH_MASKS | NEST_HASH_PARAMS),
                                        "final net"),
                   NEST_OK);
  if (strstr(phases, "area")) { /* partial-area masks on the conv layers, some entries off */
    double frac = 1;
    for (int l = 0; l < t->net->nlayers; ++l)
      if (t->net->layers[l]->kind == NEST_LAYER_CONV2D) {
        assert_true(t->net->layers[l]->hp.area);
        frac = fmin(frac, nest_net_layer_conv_frac(t->net, l));
      }
    if (!(frac < 1)) fail_msg("%s: no area entry was masked", arch);
  }
  nest_pipeline_destroy(&pl);
}

static void test_pipeline_mlp(void **state) {
  (void)state;
  check_pipeline("mlp:36-20-12-4", (nest_shape){1, 6, 6}, "conn,neuron", 1, 0.05, "grow,train,prune");
}
static void test_pipeline_cnn(void **state) {
  (void)state;
  check_pipeline("lenet5", (nest_shape){1, 16, 16}, "conn,fmap", 0, 0.005, "grow,train,prune,area");
}

int main(int argc, char **argv) {
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  R = nest_comm_rank(comm);
  P = nest_comm_size(comm);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_magnitude_bn),   cmocka_unit_test(test_neurons_dead),
      cmocka_unit_test(test_guard_restores), cmocka_unit_test(test_prune_iterations_counted),
      cmocka_unit_test(test_needs_validation), cmocka_unit_test(test_pipeline_mlp),
      cmocka_unit_test(test_pipeline_cnn),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nest_comm_destroy(&comm);
  return rc;
}
