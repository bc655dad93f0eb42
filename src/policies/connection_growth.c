/* connection_growth.c — NeST Policy 1, connection growth (ALGORITHMS.md §2; paper §3.2.1).
 *
 * G = the sum over the growth set of dL/dW for a maskable tensor W, dormant positions
 * included (the shared gradient pass, gradpass.h). Activate the k dormant positions with the
 * largest |G|, k = grow.conn_count or ceil(grow.conn_ratio x active) (capped by the dormant
 * count and the room the size cap leaves), ties to the lower flat index (select.h); a chosen
 * position whose G is exactly 0 (a dead unit's column) is left dormant, since it cannot reduce
 * the loss. New
 * weights start at 0 (grow.conn_init = zero: the network's function is unchanged, the next
 * step's gradient moves them) or at -grow.conn_lr x G (grad: one virtual SGD step); their
 * momentum is 0. Works on any maskable tensor, so it needs no notion of adjacent layers.
 *
 * Percentile mode (SCANN's connection growth, ALGORITHMS.md §10; the scann phase runs it with
 * r->fraction = 1 - scann.grow_percentile / 100): k = ceil(fraction x dormant) — the dormant
 * positions whose |G| is above that percentile of the dormant positions' scores, exactly, ties
 * to the lower index — capped by scann.grow_cap x active (when set) and the room. Skip tensors
 * (net.h) are maskable tensors like any other: their dormant positions compete in their own
 * tensor's percentile. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/policy.h"
#include "nest/select.h"

typedef struct {
  float *score;     /* [count] |G| */
  int64_t *chosen;  /* [sel.k] flat indices, ascending */
  nest_selection sel;
} conn_state;

static void conn_release(void *state) {
  conn_state *s = state;
  free(s->score);
  free(s->chosen);
}

/* score[i] = |G[i]| as float (the conversion is exact arithmetic on identical inputs, so the
 * scores are identical on every rank). */
static nest_status conn_score(nest_policy_run *r) {
  conn_state *s = r->state;
  const nest_param *p = nest_policy_tensor(r)->param;
  const double *G = r->pass->grad[r->target];
  NEST_ASSERT(G != NULL);
  NEST_CALL(nest_malloc((void **)&s->score, sizeof(float) * p->count, "connection scores"));
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < p->count; ++i) s->score[i] = (float)fabs(G[i]);
  return NEST_OK;
}

static nest_status conn_select(nest_policy_run *r) {
  conn_state *s = r->state;
  const nest_param *p = nest_policy_tensor(r)->param;
  const float *mask = r->t->net->masks + p->offset;
  const int64_t active = nest_tensor_active(mask, p->count);
  const int64_t k = r->fraction > 0
                        ? nest_policy_conn_share(&r->t->cfg, r->fraction, active,
                                                 (int64_t)p->count - active, r->room)
                        : nest_policy_conn_k(&r->t->cfg, active, (int64_t)p->count - active,
                                             r->room);
  const nest_scores sc = {s->score, mask, NEST_CAND_DORMANT, p->count};
  const nest_select_req req = {k, 0.0, NEST_SELECT_LARGEST};
  NEST_CALL(nest_select_replicated(r->t->comm, &sc, &req, &s->sel));
  NEST_CALL(nest_malloc((void **)&s->chosen, sizeof(int64_t) * (size_t)(s->sel.k + 1),
                        "chosen connections"));
  const int64_t n = nest_select_mark(&s->sel, &sc, s->chosen);
  NEST_ASSERT(n == s->sel.k);
  return NEST_OK;
}

static nest_status conn_apply(nest_policy_run *r) {
  conn_state *s = r->state;
  nest_net *net = r->t->net;
  const nest_param *p = nest_policy_tensor(r)->param;
  const double *G = r->pass->grad[r->target];
  float *w = net->params + p->offset, *m = net->masks + p->offset, *v = net->mom + p->offset;
  const int grad_init = strcmp(r->t->cfg.grow_conn_init, "grad") == 0;
  const double lr = r->t->cfg.grow_conn_lr;
  int64_t added = 0;
  for (int64_t j = 0; j < s->sel.k; ++j) {
    const int64_t i = s->chosen[j];
    if (G[i] == 0.0) continue; /* cannot reduce the loss (e.g. a dead unit): not worth a weight */
    m[i] = 1.0f;
    w[i] = grad_init ? (float)(-lr * G[i]) : 0.0f;
    v[i] = 0.0f;
    ++added;
  }
  r->conns_added = added;
  if (r->fraction > 0)
    snprintf(r->detail, sizeof r->detail, "top %.3g of dormant; |G| >= %.3g", r->fraction,
             (double)s->sel.threshold);
  else
    snprintf(r->detail, sizeof r->detail, "|G| >= %.3g", (double)s->sel.threshold);
  return NEST_OK;
}

const nest_policy_ops nest_policy_conn = {
    .name = "conn",
    .summary = "NeST connection growth: activate the dormant connections with the largest "
               "summed |dL/dW| (Policy 1)",
    .when = NEST_WHEN_GROWTH,
    .target = NEST_TARGET_TENSOR,
    .needs = NEST_NEED_GRAD,
    .accepts = nest_policy_accepts_masked,
    .state_size = sizeof(conn_state),
    .release = conn_release,
    .score = conn_score,
    .select = conn_select,
    .apply = conn_apply,
};
