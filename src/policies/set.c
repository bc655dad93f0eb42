/* set.c — SET, Sparse Evolutionary Training (Mocanu et al., 2018), offered so users can compare
 * NeST growth with a method they know (ALGORITHMS.md §6).
 *
 * After every epoch of the training phase, per maskable tensor: drop the fraction zeta
 * (grow.set_zeta) of the positive weights closest to zero and of the negative weights closest
 * to zero (k = ceil(zeta x count) of each sign, smallest |w| first, ties to the lower index;
 * an active weight that is exactly 0 counts as positive, so it goes first — our reading: with
 * zero-initialised regrowth, connections that never receive a gradient would otherwise stay),
 * then regrow as many at uniformly random positions among those dormant BEFORE the drop (our
 * reading: a dropped connection is not re-grown in the same step, so every regrown one is new).
 * The density stays fixed. New weights 0, momentum 0. The random positions are the top-k of a
 * random key per dormant position (select.h on keys from a rank-identical stream), so the
 * one selection function serves here too. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "nest/policy.h"
#include "nest/select.h"

typedef struct {
  float *pos, *neg, *key; /* [count] scores: w of positives, -w of negatives, random key */
  float *cpos, *cneg;     /* [count] candidate masks: active positive / active negative */
  int64_t *drop, *grow;   /* chosen indices */
  int64_t ndrop, ngrow;
} set_state;

static void set_release(void *state) {
  set_state *s = state;
  free(s->pos);
  free(s->neg);
  free(s->key);
  free(s->cpos);
  free(s->cneg);
  free(s->drop);
  free(s->grow);
}

static nest_status set_score(nest_policy_run *r) {
  set_state *s = r->state;
  const nest_param *p = nest_policy_tensor(r)->param;
  const float *w = r->t->net->params + p->offset, *m = r->t->net->masks + p->offset;
  const size_t n = p->count;
  float **arrays[5] = {&s->pos, &s->neg, &s->key, &s->cpos, &s->cneg};
  for (int a = 0; a < 5; ++a)
    NEST_CALL(nest_malloc((void **)arrays[a], sizeof(float) * n, "SET scores"));
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const int on = m[i] != 0.0f;
    /* an exact zero counts as the smallest "positive": a connection that never moved off 0
     * (e.g. on a pixel that is 0 in every image) must be replaceable, or such dead weights
     * pile up epoch after epoch */
    s->cpos[i] = on && !(w[i] < 0.0f) ? 1.0f : 0.0f;
    s->cneg[i] = on && w[i] < 0.0f ? 1.0f : 0.0f;
    s->pos[i] = w[i] > 0.0f ? w[i] : 0.0f;
    s->neg[i] = w[i] < 0.0f ? -w[i] : 0.0f;
    s->key[i] = (float)(nest_policy_rng_at(r, 0, i) >> 8) * (1.0f / 16777216.0f);
  }
  return NEST_OK;
}

/* Choose from one candidate set; appends the chosen indices to *out (capacity grown). */
static nest_status choose(nest_policy_run *r, const nest_scores *sc, const nest_select_req *req,
                          int64_t **out, int64_t *n) {
  nest_selection sel;
  NEST_CALL(nest_select_replicated(r->t->comm, sc, req, &sel));
  int64_t *p = realloc(*out, sizeof(int64_t) * (size_t)(*n + sel.k + 1));
  if (!p) return NEST_ERR(NEST_ERR_NOMEM, "out of memory for SET choices");
  *out = p;
  *n += nest_select_mark(&sel, sc, p + *n);
  return NEST_OK;
}

static nest_status set_select(nest_policy_run *r) {
  set_state *s = r->state;
  const nest_param *p = nest_policy_tensor(r)->param;
  const float *m = r->t->net->masks + p->offset;
  const double zeta = r->t->cfg.grow_set_zeta;
  const nest_select_req smallest = {-1, zeta, NEST_SELECT_SMALLEST};
  const nest_scores pos = {s->pos, s->cpos, NEST_CAND_ACTIVE, p->count};
  const nest_scores neg = {s->neg, s->cneg, NEST_CAND_ACTIVE, p->count};
  NEST_CALL(choose(r, &pos, &smallest, &s->drop, &s->ndrop));
  NEST_CALL(choose(r, &neg, &smallest, &s->drop, &s->ndrop));
  const nest_select_req random = {s->ndrop, 0.0, NEST_SELECT_LARGEST};
  const nest_scores dormant = {s->key, m, NEST_CAND_DORMANT, p->count};
  NEST_CALL(choose(r, &dormant, &random, &s->grow, &s->ngrow));
  return NEST_OK;
}

static nest_status set_apply(nest_policy_run *r) {
  set_state *s = r->state;
  const nest_param *p = nest_policy_tensor(r)->param;
  nest_policy_set_positions(r->t->net, p, s->drop, s->ndrop, 0);
  nest_policy_set_positions(r->t->net, p, s->grow, s->ngrow, 1);
  r->conns_removed = s->ndrop;
  r->conns_added = s->ngrow;
  return NEST_OK;
}

const nest_policy_ops nest_policy_set = {
    .name = "set",
    .summary = "SET (Mocanu et al.): each epoch replace the fraction zeta of the weights closest "
               "to zero, per sign, by random new connections",
    .when = NEST_WHEN_EPOCH,
    .target = NEST_TARGET_TENSOR,
    .needs = 0,
    .accepts = nest_policy_accepts_masked,
    .state_size = sizeof(set_state),
    .release = set_release,
    .score = set_score,
    .select = set_select,
    .apply = set_apply,
};
