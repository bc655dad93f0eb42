/* cell_division.c — SCANN neuron growth by cell division (ALGORITHMS.md §10, docs/scann.md), one
 * step on one hidden dense or conv layer L.
 *
 * Score: the mean |output| of each unit of L (after its ReLU; a feature map over its positions
 * too) over the fixed scoring batch, in inference mode (gradpass.h, nest_actpass: by-construction
 * sums, identical on every rank).
 * Select: the scann.neurons most active units (exact, ties to the lower index, select.h).
 * Apply: each chosen unit u is split (surgery.h, nest_surgery_split): a copy of u — its input
 * weights and masks in L's chain and skip tensors, its bias and batch-norm entries, its output
 * slices in the consumer and in every skip tensor reading L's output — is appended, and the
 * outgoing weights of u and of the copy are halved, so the network computes the same function.
 * Then the copy's ACTIVE input weights get N(0, scann.split_noise^2) noise (our reading: noise
 * on the copy's weights, so the two units can drift apart; dormant positions stay 0), drawn in
 * index order from a stream keyed by (seed, policy, layer, iteration, copy). The copy's
 * momentum is u's (halved on the outgoing side), like every value it inherits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "nest/gradpass.h"
#include "nest/policy.h"
#include "nest/select.h"
#include "nest/surgery.h"

typedef struct {
  float *score;    /* [units] mean |output| */
  int64_t *chosen; /* [sel.k] units, ascending */
  nest_selection sel;
} split_state;

static void split_release(void *state) {
  split_state *s = state;
  free(s->score);
  free(s->chosen);
}

static int split_accepts(const nest_net *net, int layer, const char **why) {
  const nest_layer *l = net->layers[layer];
  if (l->kind != NEST_LAYER_DENSE && l->kind != NEST_LAYER_CONV2D) {
    *why = "it acts on hidden dense and conv2d layers";
    return 0;
  }
  const char *w = NULL;
  if (!nest_surgery_can_resize(net, layer, &w)) {
    *why = w;
    return 0;
  }
  if (nest_actpass_output(net, layer) < 0) {
    *why = "no ReLU follows it (its activation is what it ranks)";
    return 0;
  }
  return 1;
}

static nest_status split_score(nest_policy_run *r) {
  split_state *s = r->state;
  nest_trainer *t = r->t;
  const nest_net *net = t->net;
  const int L = r->layer, U = net->layers[L]->out.c;
  uint8_t *want = NULL;
  NEST_CALL(nest_calloc((void **)&want, (size_t)net->nlayers, 1, "request"));
  want[L] = 1;
  const nest_actsum_req req = {.units = want};
  nest_actsum *a = NULL;
  const nest_status st = nest_actpass(t, t->train, r->score_ids, r->n_score, &req, &a);
  free(want);
  NEST_CALL(st);
  nest_status st2 = nest_malloc((void **)&s->score, sizeof(float) * (size_t)U, "unit scores");
  for (int u = 0; st2 == NEST_OK && u < U; ++u)
    s->score[u] = (float)(a->unit_abs[L][u] / ((double)a->n * (double)a->positions[L]));
  nest_actsum_destroy(&a);
  return st2;
}

static nest_status split_select(nest_policy_run *r) {
  split_state *s = r->state;
  const int U = r->t->net->layers[r->layer]->out.c;
  const nest_scores sc = {s->score, NULL, NEST_CAND_ALL, (size_t)U};
  const nest_select_req req = {r->t->cfg.scann_neurons, 0.0, NEST_SELECT_LARGEST};
  NEST_CALL(nest_select_replicated(r->t->comm, &sc, &req, &s->sel));
  NEST_CALL(nest_malloc((void **)&s->chosen, sizeof(int64_t) * (size_t)(s->sel.k + 1),
                        "chosen units"));
  const int64_t n = nest_select_mark(&s->sel, &sc, s->chosen);
  NEST_ASSERT(n == s->sel.k);
  return NEST_OK;
}

/* N(0, sigma^2) on the active entries of row `row` of tensor p [rows, len]. */
static void add_noise(nest_net *net, const nest_param *p, int row, double sigma, nest_rng *rng) {
  const size_t len = p->count / (size_t)p->dims[0];
  float *w = net->params + p->offset + (size_t)row * len;
  const float *m = net->masks + p->offset + (size_t)row * len;
  for (size_t k = 0; k < len; ++k)
    if (m[k] != 0.0f) w[k] += (float)(sigma * nest_rng_normal_f64(rng));
}

static nest_status split_apply(nest_policy_run *r) {
  split_state *s = r->state;
  const int L = r->layer;
  const int U0 = r->t->net->layers[L]->out.c;
  const double sigma = r->t->cfg.scann_split_noise;
  int64_t before = 0, after = 0;
  nest_net_count(r->t->net, &before, NULL, NULL);
  for (int64_t j = 0; j < s->sel.k; ++j) {
    NEST_CALL(nest_surgery_split(&r->t->net, L, (int)s->chosen[j]));
    if (sigma <= 0) continue;
    nest_net *net = r->t->net; /* a new net: look the layer up again */
    const nest_layer *l = net->layers[L];
    nest_rng rng;
    nest_policy_rng(r, (uint64_t)j, &rng);
    for (int p = 0; p < l->nparams; ++p) /* the copy's input weights: chain and skip rows */
      if (l->param[p].maskable) add_noise(net, &l->param[p], U0 + (int)j, sigma, &rng);
  }
  nest_net_count(r->t->net, &after, NULL, NULL);
  r->units_added = s->sel.k;
  r->conns_added = after - before;
  snprintf(r->detail, sizeof r->detail, "split %lld most active (mean |y| >= %.3g)",
           (long long)s->sel.k, (double)s->sel.threshold);
  return NEST_OK;
}

const nest_policy_ops nest_policy_split = {
    .name = "split",
    .summary = "SCANN neuron growth by cell division: copy the most active units (weights, "
               "masks, bias), halve the outgoing weights of both, noise on the copy's inputs",
    .when = NEST_WHEN_GROWTH,
    .target = NEST_TARGET_UNITS,
    .needs = 0,
    .accepts = split_accepts,
    .state_size = sizeof(split_state),
    .release = split_release,
    .score = split_score,
    .select = split_select,
    .apply = split_apply,
};
