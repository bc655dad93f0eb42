/* neuron_growth.c — NeST Algorithm 1, neuron growth in a hidden dense layer l (ALGORITHMS.md §3;
 * paper §3.2.2, Eq. 3 and 7).
 *
 * Bridging gradient (gradpass.h): G[m, n] = sum over the growth set of dL/du^{l+1}_m x^{l-1}_n,
 * M = units of the consumer (layer l+1), N = inputs of layer l. Choose the k = ceil(beta M N)
 * pairs with the largest |G| (select.h; the paper's "|G| > the (beta M N)-th largest" would
 * drop the k-th itself — nest connects exactly k, ties to the lower index). Deal them, in
 * descending |G| (ties by index), round robin to K = min(grow.neurons, k) new neurons; pair p
 * of neuron q adds
 *     d = sqrt(|G[m, n]|) x s,  s = +-1 from a rank-identical stream,
 *     w_out[q][m] += d,   w_in[q][n] += d x (-sgn G[m, n]),
 * so w_out[m] w_in[n] = -|G| sgn G = -G: a descent step on the virtual bridge (the paper prints
 * +sgn, which would be an ascent step; ALGORITHMS.md §3 "our reading"). Then Eq. 7 (birth
 * strength alpha; avg = mean of the non-zero magnitudes):
 *     w_out[q] *= alpha avg|W^{l+1}| / avg|w_out[q]|,   w_in[q] *= alpha avg|W^l| / avg|w_in[q]|
 * with avg|W| over the active weights of the layers before growth. The layer grows physically
 * (surgery.h: the new units are appended); a new neuron's masks are 1 exactly where its weights
 * are non-zero; bias 0, batch norm after it (if any) starts at gamma 1, beta 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/policy.h"
#include "nest/select.h"
#include "nest/surgery.h"

typedef struct {
  float *score;    /* [M*N] |G| */
  int64_t *chosen; /* [sel.k] pair indices m*N + n, best first */
  nest_selection sel;
} neuron_state;

static int neuron_accepts(const nest_net *net, int layer, const char **why) {
  return nest_policy_accepts_hidden(net, layer, NEST_LAYER_DENSE, why);
}

static void neuron_release(void *state) {
  neuron_state *s = state;
  free(s->score);
  free(s->chosen);
}

static nest_status neuron_score(nest_policy_run *r) {
  neuron_state *s = r->state;
  const double *G = r->pass->bridge[r->layer];
  NEST_ASSERT(G != NULL);
  const size_t mn = (size_t)r->pass->bridge_m[r->layer] * (size_t)r->pass->bridge_n[r->layer];
  NEST_CALL(nest_malloc((void **)&s->score, sizeof(float) * mn, "bridging scores"));
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < mn; ++i) s->score[i] = (float)fabs(G[i]);
  return NEST_OK;
}

static nest_status neuron_select(nest_policy_run *r) {
  neuron_state *s = r->state;
  const size_t mn = (size_t)r->pass->bridge_m[r->layer] * (size_t)r->pass->bridge_n[r->layer];
  const nest_scores sc = {s->score, NULL, NEST_CAND_ALL, mn};
  const nest_select_req req = {-1, r->t->cfg.grow_beta, NEST_SELECT_LARGEST};
  NEST_CALL(nest_select_replicated(r->t->comm, &sc, &req, &s->sel));
  NEST_CALL(nest_malloc((void **)&s->chosen, sizeof(int64_t) * (size_t)(s->sel.k + 1),
                        "chosen pairs"));
  const int64_t n = nest_select_mark(&s->sel, &sc, s->chosen);
  NEST_ASSERT(n == s->sel.k);
  nest_select_sort(&s->sel, s->score, s->chosen, n);
  return NEST_OK;
}

/* v[0..n) *= alpha * target / mean|v| over its non-zeros (Eq. 7); returns the non-zero count. */
static int64_t birth_scale(double *v, size_t n, double alpha, double target) {
  double sum = 0;
  int64_t nz = 0;
  for (size_t i = 0; i < n; ++i)
    if (v[i] != 0.0) sum += fabs(v[i]), ++nz;
  if (nz == 0) return 0;
  const double f = alpha * target / (sum / (double)nz);
  for (size_t i = 0; i < n; ++i) v[i] *= f;
  return nz;
}

static nest_status neuron_apply(nest_policy_run *r) {
  neuron_state *s = r->state;
  const nest_config *c = &r->t->cfg;
  const int M = r->pass->bridge_m[r->layer], N = r->pass->bridge_n[r->layer];
  const double *G = r->pass->bridge[r->layer];
  const int64_t K = s->sel.k < c->grow_neurons ? s->sel.k : c->grow_neurons;
  if (K == 0) return NEST_OK; /* nothing to bridge */
  nest_net *net = r->t->net;
  const int L = r->layer, C = nest_surgery_consumer(net, L);
  NEST_ASSERT(C >= 0 && net->layers[C]->hp.units == M &&
              (int)nest_shape_size(net->layers[L]->in) == N);
  const nest_param *pl = nest_layer_weight(net->layers[L]), *pc = nest_layer_weight(net->layers[C]);
  /* avg|W^l| and avg|W^{l+1}| over active weights, before the new neurons exist */
  const double avg_in = nest_tensor_mean_abs(net->params + pl->offset, net->masks + pl->offset,
                                             pl->count);
  const double avg_out = nest_tensor_mean_abs(net->params + pc->offset, net->masks + pc->offset,
                                              pc->count);

  double *w_in = NULL, *w_out = NULL; /* [K, N], [K, M] */
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_calloc((void **)&w_in, (size_t)K * N, sizeof(double), "new neurons"),
                 done);
  NEST_CALL_GOTO(st, nest_calloc((void **)&w_out, (size_t)K * M, sizeof(double), "new neurons"),
                 done);
  nest_rng rng;
  nest_policy_rng(r, 0, &rng);
  for (int64_t p = 0; p < s->sel.k; ++p) {
    const int64_t i = s->chosen[p], q = p % K, m = i / N, n = i % N;
    const double sgn = nest_rng_u32(&rng) & 1u ? 1.0 : -1.0;
    const double d = sqrt(fabs(G[i])) * sgn;
    w_out[q * M + m] += d;
    w_in[q * N + n] += d * (G[i] > 0 ? -1.0 : G[i] < 0 ? 1.0 : 0.0);
  }
  int64_t conns = 0;
  for (int64_t q = 0; q < K; ++q) {
    conns += birth_scale(w_out + q * M, (size_t)M, c->grow_alpha, avg_out);
    conns += birth_scale(w_in + q * N, (size_t)N, c->grow_alpha, avg_in);
  }

  const int old = net->layers[L]->hp.units;
  NEST_CALL_GOTO(st, nest_surgery_append(&r->t->net, L, (int)K), done);
  net = r->t->net;
  pl = nest_layer_weight(net->layers[L]);
  pc = nest_layer_weight(net->layers[C]);
  const int units = old + (int)K;
  for (int64_t q = 0; q < K; ++q) {
    /* W^l row old+q: [N] inputs;  W^{l+1} column old+q: [M] outputs (a dense consumer of a
     * dense layer reads unit u at column u) */
    float *wl = net->params + pl->offset + (size_t)(old + q) * N;
    float *ml = net->masks + pl->offset + (size_t)(old + q) * N;
    for (int n = 0; n < N; ++n) {
      wl[n] = (float)w_in[q * N + n];
      ml[n] = wl[n] != 0.0f ? 1.0f : 0.0f;
    }
    for (int m = 0; m < M; ++m) {
      const size_t at = pc->offset + (size_t)m * units + (size_t)(old + q);
      net->params[at] = (float)w_out[q * M + m];
      net->masks[at] = net->params[at] != 0.0f ? 1.0f : 0.0f;
    }
  }
  r->units_added = K;
  r->conns_added = conns;
  snprintf(r->detail, sizeof r->detail, "%lld pairs with |G| >= %.3g", (long long)s->sel.k,
           (double)s->sel.threshold);
done:
  free(w_in);
  free(w_out);
  return st;
}

const nest_policy_ops nest_policy_neuron = {
    .name = "neuron",
    .summary = "NeST neuron growth: new neurons in a hidden dense layer bridging the pairs with "
               "the largest bridging gradient (Algorithm 1)",
    .when = NEST_WHEN_GROWTH,
    .target = NEST_TARGET_UNITS,
    .needs = NEST_NEED_BRIDGE,
    .accepts = neuron_accepts,
    .state_size = sizeof(neuron_state),
    .release = neuron_release,
    .score = neuron_score,
    .select = neuron_select,
    .apply = neuron_apply,
};
