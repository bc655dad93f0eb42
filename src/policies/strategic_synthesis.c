/* strategic_synthesis.c — strategic synthesis (Finlinson et al., 2020; ALGORITHMS.md §5,
 * "our reading" of an abstract that gives the idea but not the details).
 *
 * Per maskable tensor W viewed as [rows, cols] (rows = dims[0], the outputs; a column is one
 * input position: an input neuron, or (input map, kernel offset) of a conv), while the active
 * count is below capacity x size (grow.capacity): add k = grow.conn_count or
 * ceil(grow.conn_ratio x active) connections (capped by the capacity and the size cap), each:
 *   origin   — a column i: one of the top grow.top fraction of active weights by |w| (select.h),
 *              drawn with probability proportional to |w|; i is its column;
 *   endpoint — a row j ~ N(mu_i, sigma_i), the Gaussian over row index fitted to column i's
 *              active weights, weighted by |w_ji| (sigma floored at 1), rounded; redrawn until
 *              (j, i) is dormant and not already chosen, at most grow.tries times (then this
 *              connection is skipped).
 * New weights 0, momentum 0. Every draw comes from a stream keyed by (seed, tensor,
 * iteration) and every sum runs in index order, so all ranks choose the same connections. The
 * Jaccard similarity of final masks between runs: build/nest_jaccard A B (model files). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/policy.h"
#include "nest/select.h"

typedef struct {
  int64_t *top;    /* [ntop] flat indices of the top active weights, ascending */
  double *cum;     /* [ntop] cumulative |w| over top, in index order */
  int64_t ntop;
  int64_t k;       /* connections to add */
  int64_t *chosen; /* [nchosen] new positions */
  int64_t nchosen;
  int64_t skipped; /* connections given up after grow.tries draws */
} strat_state;

static void strat_release(void *state) {
  strat_state *s = state;
  free(s->top);
  free(s->cum);
  free(s->chosen);
}

static nest_status strat_score(nest_policy_run *r) {
  strat_state *s = r->state;
  const nest_config *c = &r->t->cfg;
  const nest_param *p = nest_policy_tensor(r)->param;
  const float *w = r->t->net->params + p->offset, *m = r->t->net->masks + p->offset;
  const int64_t active = nest_tensor_active(m, p->count);
  const int64_t cap = (int64_t)floor(c->grow_capacity * (double)p->count + 1e-9);
  const int64_t room = cap - active < r->room ? cap - active : r->room;
  s->k = nest_policy_conn_k(c, active, (int64_t)p->count - active, room);
  if (s->k == 0 || active == 0) return NEST_OK;
  /* origins: the top fraction of active weights by |w| */
  float *absw = NULL;
  NEST_CALL(nest_malloc((void **)&absw, sizeof(float) * p->count, "strategic scores"));
  for (size_t i = 0; i < p->count; ++i) absw[i] = fabsf(w[i]);
  const nest_scores sc = {absw, m, NEST_CAND_ACTIVE, p->count};
  nest_selection sel;
  nest_status st = nest_select_replicated(r->t->comm, &sc, &(nest_select_req){-1, c->grow_top, NEST_SELECT_LARGEST}, &sel);
  if (st == NEST_OK) st = nest_malloc((void **)&s->top, sizeof(int64_t) * (size_t)(sel.k + 1), "origins");
  if (st == NEST_OK) st = nest_malloc((void **)&s->cum, sizeof(double) * (size_t)(sel.k + 1), "origins");
  if (st == NEST_OK) {
    s->ntop = nest_select_mark(&sel, &sc, s->top);
    double acc = 0;
    for (int64_t j = 0; j < s->ntop; ++j) acc += fabs((double)w[s->top[j]]), s->cum[j] = acc;
  }
  free(absw);
  return st;
}

/* The Gaussian over rows of column i, weighted by |w_ji| of its active weights. */
static void fit_column(const float *w, const float *m, int64_t rows, int64_t cols, int64_t i,
                       double *mu, double *sigma) {
  double sw = 0, sj = 0, sjj = 0;
  for (int64_t j = 0; j < rows; ++j) {
    const size_t at = (size_t)(j * cols + i);
    if (m[at] == 0.0f) continue;
    const double a = fabs((double)w[at]);
    sw += a, sj += a * (double)j, sjj += a * (double)j * (double)j;
  }
  *mu = sw > 0 ? sj / sw : 0.5 * (double)(rows - 1);
  const double var = sw > 0 ? sjj / sw - *mu * *mu : 0.0;
  *sigma = var > 1.0 ? sqrt(var) : 1.0;
}

static nest_status strat_select(nest_policy_run *r) {
  strat_state *s = r->state;
  if (s->k == 0 || s->ntop == 0) return NEST_OK;
  const nest_param *p = nest_policy_tensor(r)->param;
  const float *w = r->t->net->params + p->offset, *m = r->t->net->masks + p->offset;
  const int64_t rows = p->dims[0], cols = (int64_t)p->count / rows;
  uint8_t *taken = NULL;
  double *mu = NULL, *sigma = NULL; /* [cols], fitted on first use (NAN = not yet) */
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_calloc((void **)&taken, p->count, 1, "strategic choices"), done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&mu, sizeof(double) * (size_t)cols, "column fits"), done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&sigma, sizeof(double) * (size_t)cols, "column fits"), done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&s->chosen, sizeof(int64_t) * (size_t)s->k, "choices"), done);
  for (int64_t i = 0; i < cols; ++i) mu[i] = NAN;
  nest_rng rng;
  nest_policy_rng(r, 0, &rng);
  const double total = s->cum[s->ntop - 1];
  for (int64_t n = 0; n < s->k; ++n) {
    /* origin: the first top weight whose cumulative |w| exceeds u x total */
    const double u = (double)(nest_rng_u64(&rng) >> 11) * (1.0 / 9007199254740992.0) * total;
    int64_t lo = 0, hi = s->ntop - 1;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (s->cum[mid] > u) hi = mid; else lo = mid + 1;
    }
    const int64_t i = s->top[lo] % cols;
    if (isnan(mu[i])) fit_column(w, m, rows, cols, i, &mu[i], &sigma[i]);
    int found = 0;
    for (int tr = 0; tr < r->t->cfg.grow_tries && !found; ++tr) {
      const double jd = nearbyint(mu[i] + sigma[i] * nest_rng_normal_f64(&rng));
      if (jd < 0 || jd >= (double)rows) continue;
      const size_t at = (size_t)((int64_t)jd * cols + i);
      if (m[at] != 0.0f || taken[at]) continue;
      taken[at] = 1;
      s->chosen[s->nchosen++] = (int64_t)at;
      found = 1;
    }
    s->skipped += !found;
  }
done:
  free(taken);
  free(mu);
  free(sigma);
  return st;
}

static nest_status strat_apply(nest_policy_run *r) {
  strat_state *s = r->state;
  nest_policy_set_positions(r->t->net, nest_policy_tensor(r)->param, s->chosen, s->nchosen, 1);
  r->conns_added = s->nchosen;
  if (s->k) snprintf(r->detail, sizeof r->detail, "%lld origins; %lld skipped after %d tries",
                     (long long)s->ntop, (long long)s->skipped, r->t->cfg.grow_tries);
  else snprintf(r->detail, sizeof r->detail, "at capacity");
  return NEST_OK;
}

const nest_policy_ops nest_policy_strategic = {
    .name = "strategic",
    .summary = "strategic synthesis (Finlinson et al.): new connections from strong origins to "
               "Gaussian-drawn endpoints, up to a capacity",
    .when = NEST_WHEN_GROWTH,
    .target = NEST_TARGET_TENSOR,
    .needs = 0,
    .accepts = nest_policy_accepts_masked,
    .state_size = sizeof(strat_state),
    .release = strat_release,
    .score = strat_score,
    .select = strat_select,
    .apply = strat_apply,
};
