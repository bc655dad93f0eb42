/* rigl.c — RigL, Rigging the Lottery (Evci et al., 2020), offered so users can compare NeST
 * growth with a method they know (ALGORITHMS.md §6).
 *
 * Every grow.rigl_dt steps of the training phase until T_end = grow.rigl_end x its steps, per
 * maskable tensor: with f(t) = alpha/2 (1 + cos(pi t / T_end)) (alpha = grow.rigl_alpha) and
 * k = floor(f(t) x active), drop the k active weights with the smallest |w| and grow the k
 * dormant positions with the largest |dL/dW| of the current minibatch — the gradient of the
 * step just taken, summed over ranks by construction-identical sums (train.c), so the same on
 * every rank — among the positions dormant before the drop (so a dropped connection is not
 * grown back at once). Ties to the lower index. New weights 0, momentum 0; density fixed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "nest/policy.h"
#include "nest/select.h"

typedef struct {
  float *absw, *absg; /* [count] */
  int64_t *drop, *grow;
  int64_t k;
} rigl_state;

/* After step `step` (1-based) of `steps`: every rigl_dt steps, up to T_end. */
static int rigl_due(const nest_config *c, int64_t step, int64_t steps) {
  return step % c->grow_rigl_dt == 0 && (double)step <= c->grow_rigl_end * (double)steps;
}

static void rigl_release(void *state) {
  rigl_state *s = state;
  free(s->absw);
  free(s->absg);
  free(s->drop);
  free(s->grow);
}

static nest_status rigl_score(nest_policy_run *r) {
  rigl_state *s = r->state;
  const nest_param *p = nest_policy_tensor(r)->param;
  const float *w = r->t->net->params + p->offset, *g = r->t->net->grads + p->offset;
  NEST_CALL(nest_malloc((void **)&s->absw, sizeof(float) * p->count, "RigL scores"));
  NEST_CALL(nest_malloc((void **)&s->absg, sizeof(float) * p->count, "RigL scores"));
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < p->count; ++i) {
    s->absw[i] = fabsf(w[i]);
    s->absg[i] = fabsf(g[i]);
  }
  return NEST_OK;
}

static nest_status rigl_select(nest_policy_run *r) {
  rigl_state *s = r->state;
  const nest_config *c = &r->t->cfg;
  const nest_param *p = nest_policy_tensor(r)->param;
  const float *m = r->t->net->masks + p->offset;
  const int64_t active = nest_tensor_active(m, p->count), dormant = (int64_t)p->count - active;
  const double t_end = c->grow_rigl_end * (double)r->count;
  const double f = 0.5 * c->grow_rigl_alpha * (1.0 + cos(3.14159265358979323846 * (double)r->iteration / t_end));
  int64_t k = (int64_t)floor(f * (double)active);
  if (k > dormant) k = dormant;
  nest_selection dsel, gsel;
  const nest_scores drop = {s->absw, m, NEST_CAND_ACTIVE, p->count};
  const nest_scores grow = {s->absg, m, NEST_CAND_DORMANT, p->count};
  NEST_CALL(nest_select_replicated(r->t->comm, &drop, &(nest_select_req){k, 0, NEST_SELECT_SMALLEST},
                                   &dsel));
  NEST_CALL(nest_select_replicated(r->t->comm, &grow, &(nest_select_req){k, 0, NEST_SELECT_LARGEST},
                                   &gsel));
  NEST_ASSERT(dsel.k == k && gsel.k == k);
  NEST_CALL(nest_malloc((void **)&s->drop, sizeof(int64_t) * (size_t)(k + 1), "RigL choices"));
  NEST_CALL(nest_malloc((void **)&s->grow, sizeof(int64_t) * (size_t)(k + 1), "RigL choices"));
  nest_select_mark(&dsel, &drop, s->drop);
  nest_select_mark(&gsel, &grow, s->grow);
  s->k = k;
  snprintf(r->detail, sizeof r->detail, "f(t) = %.4f", f);
  return NEST_OK;
}

static nest_status rigl_apply(nest_policy_run *r) {
  rigl_state *s = r->state;
  const nest_param *p = nest_policy_tensor(r)->param;
  nest_policy_set_positions(r->t->net, p, s->drop, s->k, 0);
  nest_policy_set_positions(r->t->net, p, s->grow, s->k, 1);
  r->conns_removed = s->k;
  r->conns_added = s->k;
  return NEST_OK;
}

const nest_policy_ops nest_policy_rigl = {
    .name = "rigl",
    .summary = "RigL (Evci et al.): every dT steps drop the smallest |w| and grow the largest "
               "minibatch |dL/dW|, with a cosine-decaying fraction",
    .when = NEST_WHEN_STEP,
    .target = NEST_TARGET_TENSOR,
    .needs = 0,
    .accepts = nest_policy_accepts_masked,
    .due = rigl_due,
    .state_size = sizeof(rigl_state),
    .release = rigl_release,
    .score = rigl_score,
    .select = rigl_select,
    .apply = rigl_apply,
};
