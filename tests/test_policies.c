/* test_policies.c — each growth policy on a tiny network with hand-made gradients / weights
 * activates exactly the expected positions (ties by index); neuron growth follows Algorithm 1
 * (pairs dealt round robin, -sgn rule, Eq. 7 magnitudes) and lowers the loss of a linear net;
 * feature-map growth keeps the best candidate; growth configuration errors are caught before
 * training. Single process (a self communicator). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/grow.h"
#include "nest/pipeline.h"
#include "nest/policy.h"
#include "nest/surgery.h"
#include "test_util.h"

static nest_comm *self;

static void base_config(nest_config *cfg, const char *arch) {
  nest_config_defaults(cfg);
  snprintf(cfg->arch, sizeof cfg->arch, "%s", arch);
  cfg->out_dir[0] = '\0';
  cfg->run_dir[0] = '\0';
  cfg->batch = 16;
  cfg->density = 0.5;
  cfg->seed = 3;
  cfg->val_split = 0.0;
  snprintf(cfg->train, sizeof cfg->train, "synthetic"); /* validate wants a name; data is given */
}

static nest_trainer *make(const nest_config *cfg, nest_shape shape, int classes, int n) {
  nest_dataset *ds;
  assert_int_equal(nest_dataset_synthetic(n, shape, classes, 0.5f, 21, 0, &ds), NEST_OK);
  nest_trainer *t = NULL;
  nest_status st = nest_trainer_create_with_data(cfg, self, ds, NULL, &t);
  if (st != NEST_OK) fail_msg("trainer: %s", nest_error_message());
  t->quiet = 1;
  return t;
}

/* A hand-made pass holding one gradient sum (tensor) or one bridge (layer). */
typedef struct {
  nest_gradsum g;
  double *grad[8], *bridge[8];
  int bm[8], bn[8];
} fake_pass;

static void fake_init(fake_pass *f, const nest_net *net) {
  memset(f, 0, sizeof *f);
  f->g.generation = net->generation;
  f->g.ntensors = net->ntensors;
  f->g.nlayers = net->nlayers;
  f->g.grad = f->grad;
  f->g.bridge = f->bridge;
  f->g.bridge_m = f->bm;
  f->g.bridge_n = f->bn;
}

static nest_status step(nest_trainer *t, const nest_policy_ops *ops, int target,
                        const nest_gradsum *pass, int64_t iteration, nest_policy_run *out) {
  nest_policy_run r = {.ops = ops, .t = t, .target = target, .iteration = iteration, .pass = pass,
                       .room = INT64_MAX};
  r.layer = ops->target == NEST_TARGET_UNITS ? target : t->net->tensors[target].layer->index;
  nest_status st = nest_policy_step(&r);
  if (out) *out = r;
  return st;
}

static void set_mask(nest_net *net, const nest_param *p, const int *mask, const float *w) {
  for (size_t i = 0; i < p->count; ++i) {
    net->masks[p->offset + i] = (float)mask[i];
    net->params[p->offset + i] = mask[i] ? w[i] : 0.0f;
    net->mom[p->offset + i] = mask[i] ? 0.25f : 0.0f;
  }
}

/* ---- connection growth --------------------------------------------------------------------- */

static void test_conn_hand(void **state) {
  nest_config cfg;
  base_config(&cfg, "mlp:4-3-2");
  cfg.grow_conn_count = 3;
  nest_trainer *t = make(&cfg, (nest_shape){4, 1, 1}, 2, 32);
  nest_net *net = t->net;
  const nest_param *p = net->tensors[0].param; /* fc1 W [3, 4] */
  assert_int_equal(p->count, 12);
  /* active: 0, 3, 5, 10 (huge |G| there must not matter) */
  const int mask[12] = {1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0};
  const float w[12] = {0.5f, 0, 0, -0.5f, 0, 0.25f, 0, 0, 0, 0, 0.75f, 0};
  set_mask(net, p, mask, w);
  double G[12] = {5.0, 0.5, 0.9, 5.0, 0.9, 5.0, 0.2, -0.9, 0.1, -0.3, 5.0, 0.9};
  fake_pass f;
  fake_init(&f, net);
  f.grad[0] = G;
  nest_policy_run r;
  assert_int_equal(step(t, &nest_policy_conn, 0, &f.g, 1, &r), NEST_OK);
  /* dormant |G| = 0.9 at 2, 4, 7, 11: the three lowest indices win the tie */
  const int want[12] = {1, 0, 1, 1, 1, 1, 0, 1, 0, 0, 1, 0};
  for (int i = 0; i < 12; ++i) {
    assert_int_equal((int)net->masks[p->offset + i], want[i]);
    if (want[i] && !mask[i]) { /* new: weight 0, momentum 0 */
      assert_true(net->params[p->offset + i] == 0.0f);
      assert_true(net->mom[p->offset + i] == 0.0f);
    }
    if (mask[i]) assert_true(net->params[p->offset + i] == w[i] && net->mom[p->offset + i] == 0.25f);
  }
  assert_int_equal(r.conns_added, 3);

  /* grad init: w = -conn_lr x G; ratio 0.25 of 7 active = ceil(1.75) = 2 more: among the
   * dormant {1: 0.5, 6: 0.2, 8: 0.1, 9: 0.3, 11: 0.9} that is 11 and 1 */
  t->cfg.grow_conn_count = 0;
  t->cfg.grow_conn_ratio = 0.25;
  snprintf(t->cfg.grow_conn_init, sizeof t->cfg.grow_conn_init, "grad");
  t->cfg.grow_conn_lr = 0.1;
  assert_int_equal(step(t, &nest_policy_conn, 0, &f.g, 2, &r), NEST_OK);
  assert_int_equal(r.conns_added, 2);
  assert_true(net->masks[p->offset + 11] == 1.0f && net->masks[p->offset + 1] == 1.0f);
  assert_true(net->masks[p->offset + 6] == 0.0f && net->masks[p->offset + 8] == 0.0f &&
              net->masks[p->offset + 9] == 0.0f);
  assert_true(fabsf(net->params[p->offset + 11] - (-0.09f)) < 1e-7f);
  assert_true(fabsf(net->params[p->offset + 1] - (-0.05f)) < 1e-7f);

  /* the size cap's room limits k */
  nest_policy_run rr = {.ops = &nest_policy_conn, .t = t, .target = 0, .iteration = 3,
                        .pass = &f.g, .room = 1, .layer = 0};
  assert_int_equal(nest_policy_step(&rr), NEST_OK);
  assert_int_equal(rr.conns_added, 1);
  assert_true(net->masks[p->offset + 9] == 1.0f); /* |G| 0.3 > 0.2 > 0.1 */
  assert_true(net->masks[p->offset + 6] == 0.0f);

  /* NaN in the gradient sum at a dormant candidate: a clear numeric error, nothing changed */
  G[8] = NAN;
  float before[12];
  memcpy(before, net->masks + p->offset, sizeof before);
  assert_int_equal(step(t, &nest_policy_conn, 0, &f.g, 4, NULL), NEST_ERR_NUMERIC);
  assert_memory_equal(before, net->masks + p->offset, sizeof before);

  /* a zero gradient cannot reduce the loss: asked for 5, only the non-zero one (8) grows */
  G[8] = 0.1;
  G[6] = 0.0;
  t->cfg.grow_conn_count = 5;
  assert_int_equal(step(t, &nest_policy_conn, 0, &f.g, 5, &r), NEST_OK);
  assert_int_equal(r.conns_added, 1);
  assert_true(net->masks[p->offset + 8] == 1.0f && net->masks[p->offset + 6] == 0.0f);
  nest_trainer_destroy(&t);
}

/* ---- neuron growth -------------------------------------------------------------------------- */

static void test_neuron_hand(void **state) {
  nest_config cfg;
  base_config(&cfg, "mlp:3-2-2");
  cfg.density = 1.0;
  cfg.grow_beta = 0.5;   /* k = ceil(0.5 x 2 x 3) = 3 pairs */
  cfg.grow_neurons = 2;  /* dealt to 2 neurons */
  cfg.grow_alpha = 0.5;
  nest_trainer *t = make(&cfg, (nest_shape){3, 1, 1}, 2, 32);
  const int L = nest_net_find_layer(t->net, "fc1")->index;
  const int C = nest_net_find_layer(t->net, "fc2")->index;
  const nest_param *pl = nest_layer_weight(t->net->layers[L]);
  const nest_param *pc = nest_layer_weight(t->net->layers[C]);
  const double avg_in = nest_tensor_mean_abs(t->net->params + pl->offset, t->net->masks + pl->offset, pl->count);
  const double avg_out = nest_tensor_mean_abs(t->net->params + pc->offset, t->net->masks + pc->offset, pc->count);
  float old_in[6], old_out[4];
  memcpy(old_in, t->net->params + pl->offset, sizeof old_in);
  memcpy(old_out, t->net->params + pc->offset, sizeof old_out);
  /* G [M = 2, N = 3]: the top 3 |G| are (m1,n0) 0.16, (m0,n1) -0.09, (m0,n2) 0.04 */
  double G[6] = {0.0001, -0.09, 0.04, 0.16, 0.0004, -0.0009};
  fake_pass f;
  fake_init(&f, t->net);
  f.bridge[L] = G;
  f.bm[L] = 2;
  f.bn[L] = 3;
  nest_policy_run r;
  assert_int_equal(step(t, &nest_policy_neuron, L, &f.g, 1, &r), NEST_OK);
  assert_int_equal(r.units_added, 2);
  nest_net *net = t->net;
  assert_int_equal(net->layers[L]->hp.units, 4);
  pl = nest_layer_weight(net->layers[L]);
  pc = nest_layer_weight(net->layers[C]);
  /* old neurons untouched */
  assert_memory_equal(net->params + pl->offset, old_in, sizeof old_in);
  for (int m = 0; m < 2; ++m)
    for (int u = 0; u < 2; ++u) assert_true(net->params[pc->offset + m * 4 + u] == old_out[m * 2 + u]);
  /* dealt best first: (m1,n0) -> q0, (m0,n1) -> q1, (m0,n2) -> q0 */
  const float *win0 = net->params + pl->offset + 2 * 3, *win1 = net->params + pl->offset + 3 * 3;
  const float *min0 = net->masks + pl->offset + 2 * 3, *min1 = net->masks + pl->offset + 3 * 3;
  float wout[2][2]; /* [q][m] */
  for (int q = 0; q < 2; ++q)
    for (int m = 0; m < 2; ++m) wout[q][m] = net->params[pc->offset + m * 4 + 2 + q];
  assert_true(win0[0] != 0 && win0[1] == 0 && win0[2] != 0);
  assert_true(win1[0] == 0 && win1[1] != 0 && win1[2] == 0);
  assert_true(wout[0][0] != 0 && wout[0][1] != 0 && wout[1][0] != 0 && wout[1][1] == 0);
  for (int n = 0; n < 3; ++n) { /* masks 1 exactly at the non-zero weights */
    assert_true(min0[n] == (win0[n] != 0 ? 1.0f : 0.0f));
    assert_true(min1[n] == (win1[n] != 0 ? 1.0f : 0.0f));
  }
  assert_true(net->masks[pc->offset + 1 * 4 + 3] == 0.0f && net->masks[pc->offset + 0 * 4 + 3] == 1.0f);
  /* -sgn rule: w_out[m] w_in[n] has the sign of -G[m, n] */
  assert_true(wout[0][1] * win0[0] < 0);  /* G(1,0) = +0.16 */
  assert_true(wout[1][0] * win1[1] > 0);  /* G(0,1) = -0.09 */
  assert_true(wout[0][0] * win0[2] < 0);  /* G(0,2) = +0.04 */
  /* square-root rule before scaling: |w_in(q0)[n0]| : |w_in(q0)[n2]| = 0.4 : 0.2 */
  assert_true(fabs(fabsf(win0[0]) / fabsf(win0[2]) - 2.0) < 1e-5);
  assert_true(fabs(fabsf(wout[0][1]) / fabsf(wout[0][0]) - 2.0) < 1e-5);
  /* Eq. 7: mean |w| of each new vector = alpha x avg|W| of the layer before growth */
  assert_true(fabs((fabs(win0[0]) + fabs(win0[2])) / 2 - 0.5 * avg_in) < 1e-6 * avg_in + 1e-7);
  assert_true(fabs(fabs(win1[1]) - 0.5 * avg_in) < 1e-6 * avg_in + 1e-7);
  assert_true(fabs((fabs(wout[0][0]) + fabs(wout[0][1])) / 2 - 0.5 * avg_out) < 1e-6 * avg_out + 1e-7);
  assert_true(fabs(fabs(wout[1][0]) - 0.5 * avg_out) < 1e-6 * avg_out + 1e-7);
  /* bias 0, momentum 0 for the new neurons */
  assert_true(net->layers[L]->p[1][2] == 0.0f && net->layers[L]->p[1][3] == 0.0f);
  for (int n = 0; n < 6; ++n) assert_true(net->mom[pl->offset + 6 + n] == 0.0f);
  nest_trainer_destroy(&t);
}

/* With a linear activation the new neurons are a descent step: the loss on the growth set
 * drops (alpha small, so the step is short). */
static void test_neuron_linear_descends(void **state) {
  nest_config cfg;
  base_config(&cfg, "mlp:10-6-4");
  cfg.density = 0.5;
  cfg.grow_beta = 0.1;
  cfg.grow_neurons = 3;
  nest_trainer *t = make(&cfg, (nest_shape){10, 1, 1}, 4, 96);
  /* the same widths without the ReLU: fc1 -> fc2 linear */
  nest_layer_spec specs[2] = {{NEST_LAYER_DENSE, "fc1", {.units = 6}}, {NEST_LAYER_DENSE, "fc2", {.units = 4}}};
  nest_net *lin;
  assert_int_equal(nest_net_create(specs, 2, (nest_shape){10, 1, 1}, 4, t->max_local, t->nthreads, &lin), NEST_OK);
  assert_int_equal(nest_net_init(lin, 7, 0.5, -1), NEST_OK);
  nest_net_destroy(&t->net);
  t->net = lin;
  for (int trial = 0; trial < 3; ++trial) {
    t->cfg.grow_alpha = 0.05 + 0.05 * trial;
    uint8_t bridges[2] = {1, 0};
    nest_gradsum_req req = {NULL, bridges};
    nest_gradsum *pass;
    assert_int_equal(nest_gradpass(t, t->train_idx, t->n_train, &req, &pass), NEST_OK);
    double after;
    nest_policy_run r;
    assert_int_equal(step(t, &nest_policy_neuron, 0, pass, trial + 1, &r), NEST_OK);
    assert_int_equal(r.units_added, 3);
    assert_int_equal(nest_gradpass_loss(t, t->train_idx, t->n_train, &after), NEST_OK);
    if (!(after < pass->loss))
      fail_msg("trial %d: loss %.8f -> %.8f did not decrease", trial, pass->loss, after);
    nest_gradsum_destroy(&pass);
  }
  assert_int_equal(t->net->layers[0]->hp.units, 6 + 9);
  nest_trainer_destroy(&t);
}

/* ---- feature-map growth --------------------------------------------------------------------- */

static void test_fmap_best_candidate(void **state) {
  nest_config cfg;
  base_config(&cfg, "lenet5");
  cfg.width = 0.2; /* conv 4, 10 maps; fc 100 */
  cfg.density = 0.4;
  cfg.grow_fmaps = 1;
  cfg.grow_alpha = 0.5;
  for (int which = 0; which < 2; ++which) { /* conv1 (-> conv2), conv2 (-> pool -> fc1) */
    /* two identical runs: a scores only the first candidate, b six */
    nest_trainer *a = make(&cfg, (nest_shape){1, 16, 16}, 3, 64);
    nest_trainer *b = make(&cfg, (nest_shape){1, 16, 16}, 3, 64);
    a->cfg.grow_fmap_candidates = 1;
    b->cfg.grow_fmap_candidates = 6;
    const char *name = which ? "conv2" : "conv1";
    const int L = nest_net_find_layer(a->net, name)->index;
    const int C = nest_surgery_consumer(a->net, L);
    const nest_param *pc = nest_layer_weight(a->net->layers[C]);
    const double avg_c = nest_tensor_mean_abs(a->net->params + pc->offset, a->net->masks + pc->offset, pc->count);
    const int oc = a->net->layers[L]->hp.out_c;
    nest_policy_run ra = {.ops = &nest_policy_fmap, .t = a, .target = L, .layer = L, .iteration = 1,
                          .room = INT64_MAX, .score_ids = a->train_idx, .n_score = a->n_train};
    nest_policy_run rb = ra;
    rb.t = b;
    rb.score_ids = b->train_idx;
    assert_int_equal(nest_policy_step(&ra), NEST_OK);
    assert_int_equal(nest_policy_step(&rb), NEST_OK);
    assert_int_equal(a->net->layers[L]->hp.out_c, oc + 1);
    assert_int_equal(b->net->layers[L]->hp.out_c, oc + 1);
    double la, lb;
    assert_int_equal(nest_gradpass_loss(a, a->train_idx, a->n_train, &la), NEST_OK);
    assert_int_equal(nest_gradpass_loss(b, b->train_idx, b->n_train, &lb), NEST_OK);
    /* the best of 6 is at least as good as the first, which is what a (1 candidate) chose */
    assert_true(lb <= la);
    assert_non_null(strstr(rb.detail, "drop best"));
    /* the new map: kernel has an active weight; outgoing mean |w| = alpha avg|W^{l+1}| */
    const nest_param *pl = nest_layer_weight(b->net->layers[L]);
    const size_t ks = pl->count / (size_t)(oc + 1);
    int64_t kact = nest_tensor_active(b->net->masks + pl->offset + (size_t)oc * ks, ks);
    assert_true(kact >= 1);
    pc = nest_layer_weight(b->net->layers[C]);
    const nest_layer *cl = b->net->layers[C];
    const size_t rows = (size_t)pc->dims[0], row_len = pc->count / rows;
    const size_t blk = cl->kind == NEST_LAYER_CONV2D ? (size_t)pc->dims[2] * pc->dims[3] : (size_t)cl->in.h * cl->in.w;
    double s = 0;
    int64_t nz = 0;
    for (size_t row = 0; row < rows; ++row)
      for (size_t k = 0; k < blk; ++k) {
        const size_t at = pc->offset + row * row_len + (size_t)oc * blk + k;
        if (b->net->masks[at] != 0.0f) s += fabs(b->net->params[at]), ++nz;
        else assert_true(b->net->params[at] == 0.0f);
      }
    assert_true(nz >= 1);
    assert_true(fabs(s / nz - 0.5 * avg_c) < 1e-4 * avg_c);
    nest_trainer_destroy(&a);
    nest_trainer_destroy(&b);
  }
}

/* ---- strategic synthesis -------------------------------------------------------------------- */

static void test_strategic(void **state) {
  nest_config cfg;
  base_config(&cfg, "mlp:4-20-3");
  cfg.grow_conn_count = 6;
  cfg.grow_top = 0.25;
  cfg.grow_capacity = 1.0;
  nest_trainer *t = make(&cfg, (nest_shape){4, 1, 1}, 3, 32);
  nest_net *net = t->net;
  const nest_param *p = net->tensors[0].param; /* fc1 W [20, 4] */
  int mask[80] = {0};
  float w[80] = {0};
  /* column 1: strong weights at rows 6, 9, 12, 15 (Gaussian mu 10.5, sigma 3.35); weak ones
   * elsewhere */
  for (int j = 6; j < 18; j += 3) mask[j * 4 + 1] = 1, w[j * 4 + 1] = (j % 2) ? 1.0f : -1.0f;
  const int weak[] = {0 * 4 + 0, 3 * 4 + 2, 15 * 4 + 3, 19 * 4 + 0, 5 * 4 + 2, 12 * 4 + 3,
                      2 * 4 + 0, 17 * 4 + 2};
  for (size_t i = 0; i < sizeof weak / sizeof weak[0]; ++i) mask[weak[i]] = 1, w[weak[i]] = 0.01f;
  set_mask(net, p, mask, w);
  nest_policy_run r;
  assert_int_equal(step(t, &nest_policy_strategic, 0, NULL, 1, &r), NEST_OK);
  /* top 25% of 12 active = 3 weights, all in column 1 (|w| = 1): every origin is column 1,
   * endpoints ~ N(10.5, 3.35^2) rounded, dormant, distinct */
  if (r.conns_added != 6) fail_msg("added %lld: %s", (long long)r.conns_added, r.detail);
  int64_t fresh = 0;
  double rows = 0;
  for (int i = 0; i < 80; ++i) {
    if (net->masks[p->offset + i] == 0.0f || mask[i]) continue;
    ++fresh;
    rows += i / 4;
    assert_int_equal(i % 4, 1);
    assert_true(net->params[p->offset + i] == 0.0f && net->mom[p->offset + i] == 0.0f);
  }
  assert_int_equal(fresh, 6);
  assert_true(fabs(rows / 6 - 10.5) < 3.5); /* 3 standard errors of a mean of 6 */

  /* capacity: room for exactly 2 more, then none */
  const int64_t active = nest_tensor_active(net->masks + p->offset, p->count);
  t->cfg.grow_capacity = (double)(active + 2) / 80.0;
  assert_int_equal(step(t, &nest_policy_strategic, 0, NULL, 2, &r), NEST_OK);
  assert_int_equal(r.conns_added, 2);
  assert_true(nest_tensor_active(net->masks + p->offset, p->count) <= active + 2);
  t->cfg.grow_capacity = (double)active / 80.0;
  assert_int_equal(step(t, &nest_policy_strategic, 0, NULL, 3, &r), NEST_OK);
  assert_int_equal(r.conns_added, 0);
  assert_non_null(strstr(r.detail, "capacity"));
  nest_trainer_destroy(&t);
}

/* ---- SET and RigL ------------------------------------------------------------------------------ */

static void test_set(void **state) {
  nest_config cfg;
  base_config(&cfg, "mlp:5-4-2");
  cfg.grow_set_zeta = 0.3;
  nest_trainer *t = make(&cfg, (nest_shape){5, 1, 1}, 2, 32);
  nest_net *net = t->net;
  const nest_param *p = net->tensors[0].param; /* fc1 W [4, 5] */
  int mask[20] = {0};
  float w[20] = {0};
  const int at[] = {0, 1, 2, 3, 6, 7, 8, 9, 12};
  const float val[] = {0.5f, 0.1f, 0.3f, -0.2f, 0.1f, 0.9f, -0.05f, -0.7f, 0.0f};
  for (int i = 0; i < 9; ++i) mask[at[i]] = 1, w[at[i]] = val[i];
  set_mask(net, p, mask, w);
  net->params[p->offset + 12] = 0.0f; /* an active weight stuck at exactly 0 */
  nest_policy_run r;
  assert_int_equal(step(t, &nest_policy_set, 0, NULL, 0, &r), NEST_OK);
  /* "positives" (0 counts) 6 -> ceil(1.8) = 2 smallest: 0 at 12, then 0.1 at 1 (the tie
   * 0.1 at 6 goes to the lower index); negatives 3 -> ceil(0.9) = 1: -0.05 at 8.
   * Regrown: 3 positions dormant before. */
  assert_int_equal(r.conns_removed, 3);
  assert_int_equal(r.conns_added, 3);
  const int dropped[] = {12, 1, 8};
  for (int i = 0; i < 3; ++i)
    assert_true(net->masks[p->offset + dropped[i]] == 0.0f && net->params[p->offset + dropped[i]] == 0.0f);
  assert_true(net->masks[p->offset + 6] == 1.0f);
  int64_t fresh = 0;
  for (int i = 0; i < 20; ++i)
    if (!mask[i] && net->masks[p->offset + i] != 0.0f) {
      ++fresh;
      assert_true(net->params[p->offset + i] == 0.0f);
    }
  assert_int_equal(fresh, 3);
  assert_int_equal(nest_tensor_active(net->masks + p->offset, p->count), 9);
  nest_trainer_destroy(&t);
}

static void test_rigl(void **state) {
  nest_config cfg;
  base_config(&cfg, "mlp:5-4-2");
  nest_trainer *t = make(&cfg, (nest_shape){5, 1, 1}, 2, 32);
  nest_net *net = t->net;
  const nest_param *p = net->tensors[0].param; /* fc1 W [4, 5] */
  int mask[20] = {0};
  float w[20] = {0};
  for (int i = 0; i < 10; ++i) mask[2 * i] = 1, w[2 * i] = 0.1f * (float)(i + 1) * (i % 2 ? -1 : 1);
  w[8] = 0.1f; /* tie with w[0] = 0.1: index 0 wins... both are the two smallest anyway */
  w[2] = -0.15f;
  set_mask(net, p, mask, w);
  for (int i = 0; i < 20; ++i) net->grads[p->offset + i] = 0.01f * (float)i;
  net->grads[p->offset + 3] = -5.0f;  /* dormant, largest |g| */
  net->grads[p->offset + 19] = 4.0f;  /* dormant, second */
  net->grads[p->offset + 4] = 99.0f;  /* active: not a growth candidate */
  /* t = 100 of 1000 steps, T_end = 750: f = 0.15 (1 + cos(pi 100/750)) = 0.287 -> k = 2 */
  assert_true(nest_policy_rigl.due(&t->cfg, 100, 1000));
  assert_false(nest_policy_rigl.due(&t->cfg, 150, 1000));
  assert_false(nest_policy_rigl.due(&t->cfg, 800, 1000));
  nest_policy_run r = {.ops = &nest_policy_rigl, .t = t, .target = 0, .layer = 0,
                       .iteration = 100, .count = 1000, .room = INT64_MAX};
  assert_int_equal(nest_policy_step(&r), NEST_OK);
  assert_int_equal(r.conns_removed, 2);
  /* smallest |w|: 0.1 at 0 and 0.1 at 8 (|w[2]| = 0.15) */
  assert_true(net->masks[p->offset + 0] == 0.0f && net->masks[p->offset + 8] == 0.0f);
  assert_true(net->masks[p->offset + 2] == 1.0f);
  assert_true(net->masks[p->offset + 3] == 1.0f && net->masks[p->offset + 19] == 1.0f);
  assert_true(net->params[p->offset + 3] == 0.0f && net->params[p->offset + 19] == 0.0f);
  assert_int_equal(nest_tensor_active(net->masks + p->offset, p->count), 10);
  nest_trainer_destroy(&t);
}

/* ---- configuration errors, before training ----------------------------------------------------- */

/* The pipeline refuses cfg (before training) with a message holding needle. */
static void expect_pipeline_error(const nest_config *cfg, nest_shape shape, const char *needle) {
  nest_dataset *ds;
  assert_int_equal(nest_dataset_synthetic(40, shape, 3, 0.5f, 1, 0, &ds), NEST_OK);
  nest_pipeline *p = NULL;
  nest_status st = nest_pipeline_create_with_data(cfg, self, ds, NULL, &p);
  assert_int_equal(st, NEST_ERR_CONFIG);
  assert_null(p);
  if (!strstr(nest_error_message(), needle))
    fail_msg("message '%s' lacks '%s'", nest_error_message(), needle);
}

static void expect_create_error(const char *arch, nest_shape shape, const char *policy,
                                const char *layers, int64_t cap, const char *needle) {
  nest_config cfg;
  base_config(&cfg, arch);
  snprintf(cfg.grow_policy, sizeof cfg.grow_policy, "%s", policy);
  snprintf(cfg.grow_layers, sizeof cfg.grow_layers, "%s", layers);
  cfg.grow_max_weights = cap;
  assert_int_equal(nest_config_validate(&cfg), NEST_OK);
  expect_pipeline_error(&cfg, shape, needle);
}

static void test_config_errors(void **state) {
  const nest_shape img = {1, 16, 16}, vec = {8, 1, 1};
  expect_create_error("lenet5", img, "neuron", "conv1", 0, "conv1");
  expect_create_error("lenet5", img, "fmap", "fc1", 0, "fc1");
  expect_create_error("mlp:8-6-3", vec, "neuron", "fc2", 0, "output layer");
  expect_create_error("mlp:8-6-3", vec, "conn", "fc9", 0, "no layer 'fc9'");
  expect_create_error("mlp:8-6-3", vec, "fmap", "", 0, "fmap has no layer");
  expect_create_error("mlp:8-6-3", vec, "conn", "", 10, "below the seed");

  nest_config cfg;
  base_config(&cfg, "mlp:8-6-3");
  const struct {
    const char *set, *needle;
  } bad[] = {{"grow.beta=0", "grow.beta"},   {"grow.beta=1.5", "grow.beta"},
             {"grow.alpha=0", "grow.alpha"}, {"grow.alpha=-1", "grow.alpha"},
             {"grow.rigl_end=0", "rigl_end"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    nest_config c = cfg;
    assert_int_equal(nest_config_set(&c, bad[i].set, "--set"), NEST_OK);
    nest_status st = nest_config_validate(&c);
    if (st == NEST_OK) st = nest_policy_check_list(c.grow_policy);
    assert_int_equal(st, NEST_ERR_CONFIG);
    if (!strstr(nest_error_message(), bad[i].needle))
      fail_msg("%s: message '%s'", bad[i].set, nest_error_message());
  }
  assert_non_null(strstr(nest_error_message(), "rigl_end"));
  /* grow.policy's words: the pipeline checks them before it reads any data */
  const struct {
    const char *policy, *needle;
  } badpol[] = {{"conn,bogus", "unknown policy 'bogus'"}, {"conn, conn", "twice"},
                {"conn,", "empty item"}, {"conn,magnitude", "pruning policy"}};
  for (size_t i = 0; i < sizeof badpol / sizeof badpol[0]; ++i) {
    nest_config c = cfg;
    snprintf(c.grow_policy, sizeof c.grow_policy, "%s", badpol[i].policy);
    assert_int_equal(nest_policy_check_list(c.grow_policy), NEST_ERR_CONFIG);
    if (!strstr(nest_error_message(), badpol[i].needle) || !strstr(nest_error_message(), "grow.policy"))
      fail_msg("%s: message '%s'", badpol[i].policy, nest_error_message());
    expect_pipeline_error(&c, vec, badpol[i].needle);
  }
  nest_config ok = cfg;
  assert_int_equal(nest_config_set(&ok, "grow.policy=conn,neuron,fmap,strategic,set,rigl", "--set"), NEST_OK);
  assert_int_equal(nest_config_validate(&ok), NEST_OK);
  assert_int_equal(nest_policy_check_list(ok.grow_policy), NEST_OK);
}

/* Every list-valued key this side of the config takes blanks around its items (list.h):
 * grow.policy = conn, neuron; grow.layers = fc1, fc2; prune.layers; synthesis.phases. */
static void test_lists_with_blanks(void **state) {
  (void)state;
  nest_config cfg;
  base_config(&cfg, "mlp:8-6-5-3");
  cfg.val_split = 0.25;
  snprintf(cfg.grow_policy, sizeof cfg.grow_policy, "conn, neuron");
  snprintf(cfg.grow_layers, sizeof cfg.grow_layers, "fc1, fc2");
  snprintf(cfg.phases, sizeof cfg.phases, " grow ,train,  prune ");
  snprintf(cfg.prune_layers, sizeof cfg.prune_layers, "fc1 , fc2");
  cfg.grow_iterations = 1;
  cfg.grow_train_epochs = 0;
  cfg.grow_neurons = 2;
  assert_int_equal(nest_policy_check_list(cfg.grow_policy), NEST_OK);
  nest_dataset *ds;
  assert_int_equal(nest_dataset_synthetic(48, (nest_shape){8, 1, 1}, 3, 0.5f, 1, 0, &ds), NEST_OK);
  nest_pipeline *p = NULL;
  const nest_status st = nest_pipeline_create_with_data(&cfg, self, ds, NULL, &p);
  if (st != NEST_OK) fail_msg("lists with blanks: %s", nest_error_message());
  p->t->quiet = 1;
  assert_int_equal(p->nphases, 3);
  assert_int_equal(p->phases[0], NEST_PHASE_GROW);
  assert_int_equal(p->phases[2], NEST_PHASE_PRUNE);
  /* one growth iteration: neuron growth acts on both layers named, fc2 included */
  const int u1 = nest_net_find_layer(p->t->net, "fc1")->hp.units;
  const int u2 = nest_net_find_layer(p->t->net, "fc2")->hp.units;
  assert_int_equal(nest_grow_phase(&p->run, p->grow), NEST_OK);
  assert_int_equal(nest_net_find_layer(p->t->net, "fc1")->hp.units, u1 + 2);
  assert_int_equal(nest_net_find_layer(p->t->net, "fc2")->hp.units, u2 + 2);
  nest_pipeline_destroy(&p);
  /* still checked: a name that is no layer, an empty item */
  snprintf(cfg.grow_layers, sizeof cfg.grow_layers, "fc1, fc9");
  expect_create_error("mlp:8-6-5-3", (nest_shape){8, 1, 1}, cfg.grow_policy, cfg.grow_layers, 0,
                      "no layer 'fc9'");
  snprintf(cfg.grow_layers, sizeof cfg.grow_layers, "fc1,, fc2");
  expect_pipeline_error(&cfg, (nest_shape){8, 1, 1}, "grow.layers = fc1,, fc2: empty item");
  snprintf(cfg.grow_layers, sizeof cfg.grow_layers, "fc1");
  snprintf(cfg.prune_layers, sizeof cfg.prune_layers, "fc1, fc7");
  expect_pipeline_error(&cfg, (nest_shape){8, 1, 1}, "prune.layers: the network has no layer 'fc7'");
}

int main(void) {
  if (nest_comm_create_self(&self) != NEST_OK) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conn_hand),       cmocka_unit_test(test_neuron_hand),
      cmocka_unit_test(test_neuron_linear_descends), cmocka_unit_test(test_fmap_best_candidate),
      cmocka_unit_test(test_strategic),       cmocka_unit_test(test_set),
      cmocka_unit_test(test_rigl),            cmocka_unit_test(test_config_errors),
      cmocka_unit_test(test_lists_with_blanks),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nest_comm_destroy(&self);
  return rc;
}
