/* test_grow_mpi.c — gradient-only passes and the growth phase across ranks.
 * - the pass's dL/dW sums and bridging gradients equal one whole-set forward/backward of a
 *   separate single-process net, are bit-identical on every rank, and change nothing in the
 *   network (weights, masks, momentum, BN running statistics);
 * - the same global growth set on P ranks gives every rank identical masks and weights, equal
 *   to a single process running the same growth (masks exactly, weights to float rounding).
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
#include "nest/loss.h"
#include "nest/surgery.h"
#include "test_util.h"

static nest_comm *comm;
static int R, P;

static void base_config(nest_config *cfg, const char *arch) {
  nest_config_defaults(cfg);
  snprintf(cfg->arch, sizeof cfg->arch, "%s", arch);
  snprintf(cfg->train, sizeof cfg->train, "synthetic");
  cfg->out_dir[0] = '\0';
  cfg->run_dir[0] = '\0';
  cfg->batch = 10; /* not divisible by 4 (nor 3): unequal shares */
  cfg->density = 0.3;
  cfg->width = 0.5;
  cfg->lr = 0.05;
  cfg->seed = 9;
  cfg->val_split = 0.1;
}

static nest_trainer *make(nest_comm *c, const nest_config *cfg, nest_shape shape, int n) {
  nest_trainer *t = nest_test_trainer(c, cfg, shape, n, 77);
  if (!t) fail_msg("create: %s", nest_error_message());
  return t;
}

/* A pipeline (growth driver, cursor) around the same data as make(). */
static nest_pipeline *make_pipeline(nest_comm *c, const nest_config *cfg, nest_shape shape,
                                    int n) {
  nest_pipeline *p = nest_test_pipeline(c, cfg, shape, n, 77);
  if (!p) fail_msg("create: %s", nest_error_message());
  return p;
}

/* ---- the pass ----------------------------------------------------------------------------- */

static void check_pass(const char *arch, nest_shape shape, int batchnorm) {
  nest_config cfg;
  base_config(&cfg, arch);
  cfg.batchnorm = batchnorm;
  nest_trainer *t = make(comm, &cfg, shape, 53);
  nest_net *net = t->net;
  /* momentum and BN statistics that a pass must leave alone */
  for (size_t i = 0; i < net->nparams; ++i) net->mom[i] = net->masks[i] * 0.01f * (float)(i % 7);
  for (size_t i = 0; i < net->nbuf; ++i) net->buffers[i] += 0.125f;
  const uint64_t before = nest_net_hash(net, NEST_HASH_ALL) ^ nest_test_hash_bytes(net->mom, net->nparams * 4);

  uint8_t *tens = calloc((size_t)net->ntensors, 1), *brid = calloc((size_t)net->nlayers, 1);
  for (int i = 0; i < net->ntensors; ++i) tens[i] = (uint8_t)net->tensors[i].param->maskable;
  int bl = -1; /* a dense layer with a dense consumer */
  for (int l = 0; l < net->nlayers && bl < 0; ++l) {
    int c = nest_surgery_consumer(net, l);
    if (net->layers[l]->kind == NEST_LAYER_DENSE && c >= 0 && net->layers[c]->kind == NEST_LAYER_DENSE) bl = l;
  }
  assert_true(bl >= 0);
  brid[bl] = 1;
  nest_gradsum_req req = {tens, brid};
  nest_gradsum *g;
  assert_int_equal(nest_gradpass(t, t->train_idx, t->n_train, &req, &g), NEST_OK);
  assert_true((nest_net_hash(net, NEST_HASH_ALL) ^ nest_test_hash_bytes(net->mom, net->nparams * 4)) == before);
  /* every rank holds the same bits */
  assert_int_equal(nest_comm_check_same(comm, nest_test_hash_bytes(g->mem, g->nmem * sizeof(double)), "sums"), NEST_OK);

  /* Reference without BN: one single-process forward/backward over the whole set at once is
   * the gradient of the mean loss (batch norm would use other statistics, so only the
   * no-BN case compares values). */
  if (!batchnorm) {
    const int n = (int)t->n_train, C = nest_surgery_consumer(net, bl);
    nest_net *ref;
    assert_int_equal(nest_net_create(net->specs, net->nlayers, net->in_shape, net->nclasses, n, 1, &ref), NEST_OK);
    memcpy(ref->params, net->params, net->nparams * sizeof(float));
    memcpy(ref->masks, net->masks, net->nparams * sizeof(float));
    const size_t d = nest_shape_size(net->in_shape);
    float *x = malloc(sizeof(float) * d * n), *dl = malloc(sizeof(float) * 4 * n);
    int32_t *y = malloc(sizeof(int32_t) * n);
    nest_dataset_gather(t->train, t->train_idx, n, x, y);
    nest_ctx ctx = {.n = n, .train = 1, .grad_only = 1, .nthreads = 1};
    const float *logits;
    assert_int_equal(nest_net_forward(ref, &ctx, x, &logits), NEST_OK);
    double loss = 0;
    int64_t hits = 0;
    nest_loss_softmax_xent(logits, y, n, 4, 1.0f / n, dl, &loss, &hits);
    assert_int_equal(nest_net_backward(ref, &ctx, dl), NEST_OK);
    assert_true(fabs(g->loss - loss / n) < 1e-6 * fmax(1, loss / n));
    for (int i = 0; i < net->ntensors; ++i) {
      if (!g->grad[i]) continue;
      const nest_param *p = net->tensors[i].param;
      double num = 0, den = 0;
      for (size_t k = 0; k < p->count; ++k) {
        const double a = g->grad[i][k], b = ref->grads[p->offset + k];
        num = fmax(num, fabs(a - b));
        den = fmax(den, fabs(b));
      }
      if (num > 1e-4 * den) fail_msg("%s tensor %d: |pass - whole set| = %g of %g", arch, i, num, den);
    }
    /* bridge [M, N] = dU^T X over the set, in double */
    const int M = g->bridge_m[bl], N = g->bridge_n[bl];
    double num = 0, den = 0;
    for (int m = 0; m < M; ++m)
      for (int k = 0; k < N; ++k) {
        double b = 0;
        for (int s = 0; s < n; ++s)
          b += (double)ref->dact[C + 1][(size_t)s * M + m] * ref->act[bl][(size_t)s * N + k];
        num = fmax(num, fabs(g->bridge[bl][(size_t)m * N + k] - b));
        den = fmax(den, fabs(b));
      }
    if (num > 1e-4 * den) fail_msg("%s bridge: |pass - reference| = %g of %g", arch, num, den);
    free(x), free(dl), free(y);
    nest_net_destroy(&ref);
  }
  nest_gradsum_destroy(&g);
  free(tens), free(brid);
  nest_trainer_destroy(&t);
}

static void test_pass_mlp(void **state) { check_pass("mlp:36-20-12-4", (nest_shape){1, 6, 6}, 0); }
static void test_pass_mlp_bn(void **state) { check_pass("mlp:36-20-12-4", (nest_shape){1, 6, 6}, 1); }
static void test_pass_conv(void **state) { check_pass("lenet5", (nest_shape){1, 16, 16}, 0); }

/* ---- growth on P ranks == growth in one process ------------------------------------------ */

static void check_growth(const char *arch, nest_shape shape, const char *policy, int batchnorm,
                         double dropout, int batches) {
  nest_config cfg;
  base_config(&cfg, arch);
  cfg.batchnorm = batchnorm;
  cfg.dropout = dropout;
  snprintf(cfg.grow_policy, sizeof cfg.grow_policy, "%s", policy);
  cfg.grow_iterations = 2;
  cfg.grow_train_epochs = 1;
  cfg.grow_batches = batches;
  cfg.grow_score_batch = 23;
  cfg.grow_neurons = 3;
  cfg.grow_fmaps = 2;
  cfg.grow_fmap_candidates = 3;
  cfg.lr = 0.02;
  nest_comm *self;
  assert_int_equal(nest_comm_create_self(&self), NEST_OK);
  nest_pipeline *par = make_pipeline(comm, &cfg, shape, 61);
  nest_pipeline *ref = make_pipeline(self, &cfg, shape, 61);
  if (nest_grow_phase(&par->run, par->grow) != NEST_OK) fail_msg("grow: %s", nest_error_message());
  assert_int_equal(nest_grow_phase(&ref->run, ref->grow), NEST_OK);
  nest_net *a = par->t->net, *b = ref->t->net;
  char sa[512], sb[512];
  nest_net_arch_string(a, sa, sizeof sa);
  nest_net_arch_string(b, sb, sizeof sb);
  assert_string_equal(sa, sb);
  assert_true(a->generation > 0); /* the architecture did change */
  assert_int_equal(a->nparams, b->nparams);
  double maxd = 0;
  for (size_t i = 0; i < a->nparams; ++i) {
    if (a->masks[i] != b->masks[i])
      fail_msg("%s/%s: mask %zu differs from the 1-process run", arch, policy, i);
    maxd = fmax(maxd, fabs((double)a->params[i] - b->params[i]));
  }
  if (maxd > 1e-4) fail_msg("%s/%s: weights differ from the 1-process run by %g", arch, policy, maxd);
  assert_int_equal(nest_comm_check_same(comm, nest_net_hash(a, NEST_HASH_ALL), "grown net"), NEST_OK);
  int64_t aw0 = nest_grow_result_of(par->grow)->seed_weights, aw1;
  nest_net_count(a, &aw1, NULL, NULL);
  assert_true(aw1 > aw0);
  nest_pipeline_destroy(&par);
  nest_pipeline_destroy(&ref);
  nest_comm_destroy(&self);
}

static void test_grow_mlp(void **state) {
  check_growth("mlp:36-20-12-4", (nest_shape){1, 6, 6}, "conn,neuron", 1, 0.2, 0);
}
static void test_grow_mlp_batches(void **state) {
  check_growth("mlp:36-20-12-4", (nest_shape){1, 6, 6}, "neuron,conn,strategic", 0, 0.0, 3);
}
static void test_grow_conv(void **state) {
  check_growth("lenet5", (nest_shape){1, 16, 16}, "conn,fmap,neuron", 1, 0.0, 0);
}

int main(int argc, char **argv) {
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  R = nest_comm_rank(comm);
  P = nest_comm_size(comm);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pass_mlp),  cmocka_unit_test(test_pass_mlp_bn),
      cmocka_unit_test(test_pass_conv), cmocka_unit_test(test_grow_mlp),
      cmocka_unit_test(test_grow_mlp_batches), cmocka_unit_test(test_grow_conv),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nest_comm_destroy(&comm);
  return rc;
}
