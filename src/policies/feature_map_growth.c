/* feature_map_growth.c — NeST Policy 3, feature-map growth in a hidden conv layer l
 * (ALGORITHMS.md §4; paper §3.2.3): "randomly generate sets of kernels, and pick the set of
 * kernels that reduces L the most".
 *
 * One round adds one output map to layer l (grow.fmaps rounds per growth step):
 *   score  — append a fresh, dormant map (surgery.h; the function is unchanged), then draw
 *            grow.fmap_candidates candidates from a stream identical on every rank. A candidate
 *            is the map's kernel [C_in, kh, kw] (He-normal with std sqrt(2 / (fan_in d_l)),
 *            masked at layer l's current density d_l) plus its outgoing weights into the
 *            consumer (conv: W^{l+1}[:, u, :, :]; dense after flatten: the h x w block of
 *            columns of map u in every row), masked at the consumer's current density
 *            (our reading: the paper does not say; a fully connected new map would add
 *            h x w x units weights at once), normal and scaled so their mean |w| is
 *            alpha x avg|W^{l+1}|. Each candidate is written into the net and scored by the
 *            mean training loss on the fixed scoring batch (gradpass.h: summed over ranks,
 *            identical everywhere);
 *   select — the lowest loss (ties to the earlier candidate);
 *   apply  — write the winner. The event detail records the loss drop of the best candidate
 *            against the first (a plain random kernel): the paper reports about 2x.
 * Bias 0; a batch norm after the layer starts the new map at gamma 1, beta 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/policy.h"
#include "nest/surgery.h"

typedef struct {
  int unit;             /* index of the new map */
  size_t ksize, osize;  /* kernel elements; outgoing elements */
  int ncand;
  float *kern, *kmask;  /* [ncand, ksize] */
  float *out, *omask;   /* [ncand, osize] */
  double *loss;         /* [ncand] */
  double base;          /* scoring loss without the new map */
  int best;
} fmap_state;

static int fmap_accepts(const nest_net *net, int layer, const char **why) {
  return nest_policy_accepts_hidden(net, layer, NEST_LAYER_CONV2D, why);
}

static int fmap_rounds(const nest_config *c) { return c->grow_fmaps; }

static void fmap_release(void *state) {
  fmap_state *s = state;
  free(s->kern);
  free(s->kmask);
  free(s->out);
  free(s->omask);
  free(s->loss);
}

/* v[n], mask[n]: each element active with probability d (at least one), value scale x N(0,1). */
static void draw_masked(nest_rng *r, float *v, float *mask, size_t n, double d, double scale) {
  const uint32_t thr = d >= 1.0 ? UINT32_MAX : (uint32_t)(d * 4294967296.0);
  size_t active = 0;
  for (size_t i = 0; i < n; ++i) {
    const int on = d >= 1.0 || nest_rng_u32(r) < thr;
    const double x = nest_rng_normal_f64(r);
    mask[i] = on ? 1.0f : 0.0f;
    v[i] = on ? (float)(scale * x) : 0.0f;
    active += (size_t)on;
  }
  if (!active) { /* every map keeps an input and an output connection */
    const size_t i = (size_t)nest_rng_below(r, n);
    mask[i] = 1.0f;
    v[i] = (float)(scale * nest_rng_normal_f64(r));
  }
}

/* Where map `unit` of layer L sits in the consumer's weights: element t (0 <= t < osize) of the
 * map's outgoing weights is at offset  row(t) * row_len + unit * blk + col(t)  with
 * blk = kh' x kw' (conv consumer, W[OC', C', kh', kw']) or h x w of the consumer's input plane
 * (dense consumer after flatten, W[units, C' x h x w]); rows = the consumer's outputs. */
typedef struct {
  size_t rows, row_len, blk;
} out_layout;

static out_layout consumer_layout(const nest_net *net, int C) {
  const nest_layer *c = net->layers[C];
  const nest_param *p = nest_layer_weight(c);
  out_layout o;
  o.rows = (size_t)p->dims[0];
  o.row_len = p->count / o.rows;
  o.blk = c->kind == NEST_LAYER_CONV2D ? (size_t)p->dims[2] * p->dims[3]
                                        : (size_t)c->in.h * c->in.w;
  return o;
}

/* Write candidate j into the net (kernel of map s->unit and its outgoing weights). */
static void write_candidate(nest_policy_run *r, const fmap_state *s, int j) {
  nest_net *net = r->t->net;
  const int L = r->layer, C = nest_surgery_consumer(net, L);
  const nest_param *pl = nest_layer_weight(net->layers[L]), *pc = nest_layer_weight(net->layers[C]);
  memcpy(net->params + pl->offset + (size_t)s->unit * s->ksize, s->kern + (size_t)j * s->ksize,
         sizeof(float) * s->ksize);
  memcpy(net->masks + pl->offset + (size_t)s->unit * s->ksize, s->kmask + (size_t)j * s->ksize,
         sizeof(float) * s->ksize);
  const out_layout o = consumer_layout(net, C);
  for (size_t row = 0; row < o.rows; ++row)
    for (size_t t = 0; t < o.blk; ++t) {
      const size_t at = pc->offset + row * o.row_len + (size_t)s->unit * o.blk + t;
      net->params[at] = s->out[(size_t)j * s->osize + row * o.blk + t];
      net->masks[at] = s->omask[(size_t)j * s->osize + row * o.blk + t];
    }
}

static nest_status fmap_score(nest_policy_run *r) {
  fmap_state *s = r->state;
  const nest_config *cfg = &r->t->cfg;
  nest_net *net = r->t->net;
  const int L = r->layer, C = nest_surgery_consumer(net, L);
  /* densities and avg|W^{l+1}| of the existing layers, before the new map */
  const nest_param *pl = nest_layer_weight(net->layers[L]), *pc = nest_layer_weight(net->layers[C]);
  const double d_l = (double)nest_tensor_active(net->masks + pl->offset, pl->count) / pl->count;
  const double d_c = (double)nest_tensor_active(net->masks + pc->offset, pc->count) / pc->count;
  const double avg_c = nest_tensor_mean_abs(net->params + pc->offset, net->masks + pc->offset,
                                            pc->count);
  const int fan_in = pl->dims[1] * pl->dims[2] * pl->dims[3];

  s->unit = net->layers[L]->hp.out_c;
  NEST_CALL(nest_surgery_append(&r->t->net, L, 1));
  net = r->t->net;
  const out_layout o = consumer_layout(net, C);
  s->ksize = (size_t)fan_in;
  s->osize = o.rows * o.blk;
  s->ncand = cfg->grow_fmap_candidates;
  NEST_CALL(nest_malloc((void **)&s->kern, sizeof(float) * s->ksize * s->ncand, "candidates"));
  NEST_CALL(nest_malloc((void **)&s->kmask, sizeof(float) * s->ksize * s->ncand, "candidates"));
  NEST_CALL(nest_malloc((void **)&s->out, sizeof(float) * s->osize * s->ncand, "candidates"));
  NEST_CALL(nest_malloc((void **)&s->omask, sizeof(float) * s->osize * s->ncand, "candidates"));
  NEST_CALL(nest_malloc((void **)&s->loss, sizeof(double) * s->ncand, "candidate losses"));
  NEST_CALL(nest_gradpass_loss(r->t, r->score_ids, r->n_score, &s->base));

  const double std_in = sqrt(2.0 / ((double)fan_in * (d_l > 0 ? d_l : 1.0)));
  for (int j = 0; j < s->ncand; ++j) {
    nest_rng rng;
    nest_policy_rng(r, (uint64_t)r->round * (uint64_t)s->ncand + (uint64_t)j, &rng);
    float *k = s->kern + (size_t)j * s->ksize, *km = s->kmask + (size_t)j * s->ksize;
    float *w = s->out + (size_t)j * s->osize, *wm = s->omask + (size_t)j * s->osize;
    draw_masked(&rng, k, km, s->ksize, d_l, std_in);
    draw_masked(&rng, w, wm, s->osize, d_c, 1.0);
    /* scale the outgoing weights to mean |w| = alpha x avg|W^{l+1}| over the active ones */
    double sum = 0;
    size_t nz = 0;
    for (size_t i = 0; i < s->osize; ++i)
      if (wm[i] != 0.0f) sum += fabs((double)w[i]), ++nz;
    const double f = sum > 0 ? cfg->grow_alpha * avg_c / (sum / (double)nz) : 0.0;
    for (size_t i = 0; i < s->osize; ++i) w[i] = (float)(w[i] * f);
    write_candidate(r, s, j);
    NEST_CALL(nest_gradpass_loss(r->t, r->score_ids, r->n_score, &s->loss[j]));
  }
  return NEST_OK;
}

static nest_status fmap_select(nest_policy_run *r) {
  fmap_state *s = r->state;
  s->best = 0;
  for (int j = 1; j < s->ncand; ++j)
    if (s->loss[j] < s->loss[s->best]) s->best = j;
  return NEST_OK;
}

static nest_status fmap_apply(nest_policy_run *r) {
  fmap_state *s = r->state;
  write_candidate(r, s, s->best);
  int64_t conns = 0;
  for (size_t i = 0; i < s->ksize; ++i) conns += s->kmask[(size_t)s->best * s->ksize + i] != 0.0f;
  for (size_t i = 0; i < s->osize; ++i) conns += s->omask[(size_t)s->best * s->osize + i] != 0.0f;
  r->units_added += 1;
  r->conns_added += conns;
  /* loss drop of the chosen candidate vs. the first (a plain random kernel), per map */
  const double best = s->base - s->loss[s->best], first = s->base - s->loss[0];
  const size_t used = strlen(r->detail);
  char ratio[32];
  if (first > 0)
    snprintf(ratio, sizeof ratio, "%.2fx", best / first);
  else
    snprintf(ratio, sizeof ratio, "n/a");
  snprintf(r->detail + used, sizeof r->detail - used, "%sdrop best %.3g first %.3g (%s)",
           used ? "; " : "", best, first, ratio);
  return NEST_OK;
}

const nest_policy_ops nest_policy_fmap = {
    .name = "fmap",
    .summary = "NeST feature-map growth: new maps in a hidden conv layer, best of several random "
               "kernel sets by the loss on a scoring batch (Policy 3)",
    .when = NEST_WHEN_GROWTH,
    .target = NEST_TARGET_UNITS,
    .needs = 0,
    .accepts = fmap_accepts,
    .rounds = fmap_rounds,
    .state_size = sizeof(fmap_state),
    .release = fmap_release,
    .score = fmap_score,
    .select = fmap_select,
    .apply = fmap_apply,
};
