/* policy.c — the growth-policy registry and the helpers the policies share (policy.h). */
#include "nest/policy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/list.h"
#include "nest/select.h"
#include "nest/surgery.h"

/* The registry: a new policy is one file in src/policies/ and one line here. The position
 * keys the policy's random streams, so append, never reorder. */
static const nest_policy_ops *const registry[] = {
    &nest_policy_conn,      &nest_policy_neuron, &nest_policy_fmap,
    &nest_policy_strategic, &nest_policy_set,    &nest_policy_rigl,
    &nest_policy_magnitude, &nest_policy_neurons, &nest_policy_area,
    &nest_policy_split,
};
#define NPOLICIES ((int)(sizeof registry / sizeof registry[0]))

const nest_policy_ops *nest_policy_find(const char *name) {
  for (int i = 0; i < NPOLICIES; ++i)
    if (strcmp(registry[i]->name, name) == 0) return registry[i];
  return NULL;
}

static int policy_code(const nest_policy_ops *ops) {
  for (int i = 0; i < NPOLICIES; ++i)
    if (registry[i] == ops) return i + 1;
  return 0;
}

nest_status nest_policy_check_list(const char *list) {
  char words[NEST_LIST_MAX][NEST_LIST_ITEM];
  int n = 0;
  NEST_CALL(nest_list_split("grow.policy", list, words, NEST_LIST_MAX, &n));
  char seen[NPOLICIES] = {0};
  for (int k = 0; k < n; ++k) {
    const char *word = words[k];
    const nest_policy_ops *ops = nest_policy_find(word);
    if (!ops) {
      char known[256] = "";
      for (int i = 0; i < NPOLICIES; ++i)
        if (registry[i]->when != NEST_WHEN_PRUNE)
          snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s",
                   known[0] ? ", " : "", registry[i]->name);
      return NEST_ERR(NEST_ERR_CONFIG, "grow.policy = %s: unknown policy '%s' (known: %s)", list,
                      word, known);
    }
    if (ops->when == NEST_WHEN_PRUNE)
      return NEST_ERR(NEST_ERR_CONFIG,
                      "grow.policy = %s: '%s' is a pruning policy; it runs in the prune / area "
                      "phases of synthesis.phases",
                      list, word);
    const int i = policy_code(ops) - 1;
    if (seen[i])
      return NEST_ERR(NEST_ERR_CONFIG, "grow.policy = %s: policy '%s' is listed twice", list, word);
    seen[i] = 1;
  }
  return NEST_OK;
}

/* Key: purpose = GROW | policy code << 8, index = target << 32 | stream, step = iteration. */
static uint32_t rng_purpose(const nest_policy_run *r) {
  return (uint32_t)NEST_RNG_GROW | ((uint32_t)policy_code(r->ops) << 8);
}
static uint64_t rng_index(const nest_policy_run *r, uint64_t stream) {
  return ((uint64_t)(uint32_t)r->target << 32) | (uint32_t)stream;
}

nest_status nest_policy_step(nest_policy_run *r) {
  const nest_policy_ops *ops = r->ops;
  NEST_CALL(nest_calloc(&r->state, 1, ops->state_size ? ops->state_size : 1, "policy state"));
  nest_status st = ops->score(r);
  if (st == NEST_OK) st = ops->select(r);
  if (st == NEST_OK) st = ops->apply(r);
  if (ops->release) ops->release(r->state);
  free(r->state);
  r->state = NULL;
  return st;
}

void nest_policy_rng(const nest_policy_run *r, uint64_t stream, nest_rng *out) {
  nest_rng_init(out, r->t->cfg.seed, rng_purpose(r), rng_index(r, stream), (uint64_t)r->iteration);
}

uint32_t nest_policy_rng_at(const nest_policy_run *r, uint64_t stream, uint64_t i) {
  return nest_rng_at(r->t->cfg.seed, rng_purpose(r), rng_index(r, stream), (uint64_t)r->iteration,
                     i);
}

const nest_tensor_ref *nest_policy_tensor(const nest_policy_run *r) {
  NEST_ASSERT(r->ops->target == NEST_TARGET_TENSOR && r->target < r->t->net->ntensors);
  return &r->t->net->tensors[r->target];
}

int64_t nest_tensor_active(const float *mask, size_t n) {
  int64_t a = 0;
  for (size_t i = 0; i < n; ++i) a += mask[i] != 0.0f;
  return a;
}

double nest_tensor_mean_abs(const float *w, const float *mask, size_t n) {
  double s = 0;
  int64_t a = 0;
  for (size_t i = 0; i < n; ++i)
    if (mask[i] != 0.0f) s += fabs((double)w[i]), ++a;
  return a ? s / (double)a : 0.0;
}

void nest_policy_set_positions(nest_net *net, const nest_param *p, const int64_t *idx, int64_t n,
                               int on) {
  float *w = net->params + p->offset, *m = net->masks + p->offset, *v = net->mom + p->offset;
  for (int64_t j = 0; j < n; ++j) {
    const int64_t i = idx[j];
    m[i] = on ? 1.0f : 0.0f;
    w[i] = 0.0f;
    v[i] = 0.0f;
  }
}

const nest_param *nest_layer_weight(const nest_layer *l) {
  NEST_ASSERT((l->kind == NEST_LAYER_DENSE || l->kind == NEST_LAYER_CONV2D) && l->nparams > 0 &&
              l->param[0].maskable);
  return &l->param[0];
}

int nest_policy_accepts_masked(const nest_net *net, int layer, const char **why) {
  const nest_layer *l = net->layers[layer];
  for (int s = 0; s < l->nparams; ++s)
    if (l->param[s].maskable) return 1;
  *why = "it acts on layers with connection masks (dense, conv2d)";
  return 0;
}

int nest_policy_accepts_hidden(const nest_net *net, int layer, nest_layer_kind kind,
                               const char **why) {
  const nest_layer *l = net->layers[layer];
  if (l->kind != kind) {
    *why = kind == NEST_LAYER_DENSE ? "it acts on hidden dense layers"
                                    : "it acts on hidden conv2d layers";
    return 0;
  }
  const char *w = NULL;
  if (!nest_surgery_can_resize(net, layer, &w)) {
    *why = w;
    return 0;
  }
  if (kind == NEST_LAYER_DENSE) {
    /* The bridging gradient pairs layer l-1 with the next DENSE layer. */
    const int c = nest_surgery_consumer(net, layer);
    if (net->layers[c]->kind != NEST_LAYER_DENSE) {
      *why = "the layer it feeds is not dense";
      return 0;
    }
  }
  return 1;
}

int64_t nest_policy_conn_k(const nest_config *c, int64_t active, int64_t dormant, int64_t room) {
  int64_t k = c->grow_conn_count > 0 ? c->grow_conn_count
                                     : (int64_t)ceil(c->grow_conn_ratio * (double)active - 1e-9);
  if (k > dormant) k = dormant;
  if (k > room) k = room;
  return k < 0 ? 0 : k;
}

int64_t nest_policy_conn_share(const nest_config *c, double share, int64_t active, int64_t dormant,
                               int64_t room) {
  const nest_select_req req = {-1, share, NEST_SELECT_LARGEST};
  int64_t k = nest_select_count(&req, dormant);
  if (c->scann_grow_cap > 0) {
    const int64_t cap = (int64_t)ceil(c->scann_grow_cap * (double)active - 1e-9);
    if (k > cap) k = cap;
  }
  if (k > room) k = room;
  return k < 0 ? 0 : k;
}
