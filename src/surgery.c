/* surgery.c — insert / delete output units (dense neurons, conv feature maps) of one layer by
 * building a new net with the new width and copying every surviving value across (surgery.h).
 *
 * Every tensor of the net is copied through ONE routine, remap_copy(), which views a tensor
 * as [rows, channels, glen] and writes new channel j from old channel map[j] (or a fresh
 * value when map[j] < 0). For a resize of layer L with U old and U' new units:
 *   L's own tensors     W [U, D] or [U, C, kh, kw], b [U]   rows 1,  channels U, glen = rest
 *   per-channel tensors of the layers between L and its consumer (batchnorm gamma, beta
 *                       [U]; buffers running_mean, running_var [U]) rows 1, channels U, glen 1
 *   consumer weight     dense W [K, U*h*w]: rows K, channels U, glen h*w (the consumer's
 *                       input plane: 1 after a dense L, the pooled map after a conv L);
 *                       conv W [K, U, kh, kw]: rows K, channels U, glen kh*kw
 *   partial-area masks  (buffer "area" [OC, C, P*Q] of a conv layer with hp.area = 1)
 *                       in L: rows 1, channels U, glen C*P*Q (a unit's mask rows);
 *                       in a conv consumer: rows OC, channels U, glen P*Q (an input map's)
 *   everything else     one channel mapped to itself (a whole-tensor copy)
 * Per arena: params and mom copied, masks copied, grads left zero (they belong to the old
 * shape); buffers copied. Fresh entries: weights +0.0 with mask 0 (dormant), non-maskable
 * tensors their declared init (bias / beta 0, gamma 1) with mask 1, momentum 0, buffers
 * their declared init value (running mean 0, running variance 1, area mask 1).
 *
 * Purely local and deterministic (no MPI): every rank calls it with the same arguments and
 * builds the same net. On any failure the old net is left untouched. */
#include "nest/surgery.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Below this many floats a copy is not worth waking the OpenMP team. */
#define SURGERY_PAR_MIN 65536

/* Layers a unit passes through unchanged in count (one channel in, one channel out), so the
 * consumer search may walk past them. */
static int channel_preserving(nest_layer_kind k) {
  return k == NEST_LAYER_BATCHNORM || k == NEST_LAYER_RELU || k == NEST_LAYER_MAXPOOL ||
         k == NEST_LAYER_DROPOUT;
}

static int has_units(nest_layer_kind k) { return k == NEST_LAYER_DENSE || k == NEST_LAYER_CONV2D; }

/* The number of output units (dense neurons / conv maps) of a resizable layer. */
static int units_of(const nest_layer *l) {
  return l->kind == NEST_LAYER_DENSE ? l->hp.units : l->hp.out_c;
}

int nest_surgery_consumer(const nest_net *net, int layer) {
  if (!net || layer < 0 || layer >= net->nlayers) return -1;
  for (int i = layer + 1; i < net->nlayers; ++i) {
    nest_layer_kind k = net->layers[i]->kind;
    if (has_units(k)) return i;
    if (!channel_preserving(k)) return -1;
  }
  return -1;
}

int nest_surgery_can_resize(const nest_net *net, int layer, const char **why) {
  static const char *const not_resizable[NEST_LAYER_KIND_COUNT] = {
      [NEST_LAYER_MAXPOOL] = "it is a maxpool layer (only dense and conv2d layers have units)",
      [NEST_LAYER_RELU] = "it is a relu layer (only dense and conv2d layers have units)",
      [NEST_LAYER_BATCHNORM] = "it is a batchnorm layer (only dense and conv2d layers have units)",
      [NEST_LAYER_DROPOUT] = "it is a dropout layer (only dense and conv2d layers have units)",
  };
  const char *reason = NULL;
  if (!net || layer < 0 || layer >= net->nlayers) {
    reason = "there is no such layer";
  } else {
    nest_layer_kind k = net->layers[layer]->kind;
    if (!has_units(k))
      reason = (unsigned)k < NEST_LAYER_KIND_COUNT && not_resizable[k]
                   ? not_resizable[k]
                   : "its kind has no units to resize";
    else if (nest_surgery_consumer(net, layer) < 0)
      reason = layer == net->nlayers - 1 ? "it is the output layer"
                                         : "no dense or conv2d layer consumes its units";
  }
  if (why) *why = reason;
  return reason == NULL;
}

/* ---- the copy ------------------------------------------------------------------------------ */

/* A tensor viewed as [rows, channels, glen]; new channel j comes from old channel map[j], or
 * is fresh when map[j] < 0. rows and glen are the same in the old and the new tensor. */
typedef struct {
  size_t rows, glen;
  int cold, cnew;
  const int *map; /* [cnew] */
} remap_view;

/* dst[rows, cnew, glen] <- src[rows, cold, glen] through v->map; fresh channels get `fresh`.
 * Plain copies: the result is bitwise the source whatever the thread count. */
static void remap_copy(float *dst, const float *src, const remap_view *v, float fresh) {
  const long nblocks = (long)(v->rows * (size_t)v->cnew);
  const size_t glen = v->glen;
#pragma omp parallel for schedule(static) if ((size_t)nblocks * glen > SURGERY_PAR_MIN)
  for (long blk = 0; blk < nblocks; ++blk) {
    const size_t r = (size_t)blk / (size_t)v->cnew, j = (size_t)blk % (size_t)v->cnew;
    float *d = dst + (size_t)blk * glen;
    const int s = v->map[j];
    if (s >= 0) {
      memcpy(d, src + (r * (size_t)v->cold + (size_t)s) * glen, glen * sizeof(float));
    } else {
      for (size_t t = 0; t < glen; ++t) d[t] = fresh;
    }
  }
}

/* How layer i's tensors relate to the resized layer L. */
typedef enum { ROLE_OTHER, ROLE_RESIZED, ROLE_BETWEEN, ROLE_CONSUMER } layer_role;

static layer_role role_of(int i, int layer, int consumer) {
  if (i == layer) return ROLE_RESIZED;
  if (i > layer && i < consumer) return ROLE_BETWEEN;
  if (i == consumer) return ROLE_CONSUMER;
  return ROLE_OTHER;
}

/* The view of one tensor (old count `cold_n`, new count `cnew_n`) of a layer in `role`. The
 * consumer remaps only its connection weights (maskable: dims [K, U, ...] with U the input
 * channels); its bias and every tensor of an unrelated layer are copied whole. */
static remap_view view_of(layer_role role, int maskable, int rows0, size_t cold_n, size_t cnew_n,
                          const int *map, int uold, int unew) {
  static const int identity = 0;
  remap_view v = {1, cold_n, 1, 1, &identity};
  if (role == ROLE_RESIZED || role == ROLE_BETWEEN || (role == ROLE_CONSUMER && maskable)) {
    v.rows = role == ROLE_CONSUMER ? (size_t)rows0 : 1;
    v.cold = uold;
    v.cnew = unew;
    v.map = map;
    NEST_ASSERT(cold_n % (v.rows * (size_t)uold) == 0);
    v.glen = cold_n / (v.rows * (size_t)uold);
  }
  /* The new net was built from the same specs with only L's width changed. */
  NEST_ASSERT(v.rows * (size_t)v.cnew * v.glen == cnew_n);
  return v;
}

/* Fresh value of a parameter entry: a connection weight is born +0.0 and dormant; any other
 * tensor starts at its declared init (bias / beta 0, gamma 1) and is active like all of its
 * kind (masks of non-maskable tensors are all ones). */
static float fresh_value(const nest_param *p) {
  if (p->maskable) return 0.0f;
  NEST_ASSERT(p->init == NEST_INIT_ZERO || p->init == NEST_INIT_ONE);
  return p->init == NEST_INIT_ONE ? 1.0f : 0.0f;
}

/* Copy every tensor and buffer of `old` into `neu` (same layers; layer L resized). */
static void copy_state(const nest_net *old, nest_net *neu, int layer, int consumer,
                       const int *map, int uold, int unew) {
  NEST_ASSERT(old->nlayers == neu->nlayers);
  for (int i = 0; i < old->nlayers; ++i) {
    const nest_layer *lo = old->layers[i];
    nest_layer *ln = neu->layers[i];
    const layer_role role = role_of(i, layer, consumer);
    NEST_ASSERT(lo->kind == ln->kind && lo->nparams == ln->nparams &&
                lo->nbuffers == ln->nbuffers);
    if (role == ROLE_BETWEEN || role == ROLE_CONSUMER)
      NEST_ASSERT(lo->in.c == uold && ln->in.c == unew);
    for (int s = 0; s < lo->nparams; ++s) {
      const nest_param *po = &lo->param[s], *pn = &ln->param[s];
      NEST_ASSERT(po->maskable == pn->maskable);
      /* A skip tensor [units, S] follows L's units along its rows when L is its destination,
       * along its columns when it reads L's output (act[consumer]); else it is copied whole. */
      const nest_skip *sk = nest_net_skip(old, i, s);
      const layer_role prole = !sk              ? role
                               : i == layer     ? ROLE_RESIZED
                               : sk->src == consumer ? ROLE_CONSUMER
                                                     : ROLE_OTHER;
      const remap_view v =
          view_of(prole, po->maskable, po->dims[0], po->count, pn->count, map, uold, unew);
      /* values, momentum, masks; gradients stay zero (nest_net_create zeroed them) */
      remap_copy(neu->params + pn->offset, old->params + po->offset, &v, fresh_value(po));
      remap_copy(neu->mom + pn->offset, old->mom + po->offset, &v, 0.0f);
      remap_copy(neu->masks + pn->offset, old->masks + po->offset, &v,
                 po->maskable ? 0.0f : 1.0f);
    }
    for (int s = 0; s < lo->nbuffers; ++s) {
      const nest_buffer *bo = &lo->buffer[s], *bn = &ln->buffer[s];
      NEST_ASSERT(bo->mask == bn->mask);
      /* Statistics buffers are per channel (BN running statistics): never a consumer's input
       * slice. A mask buffer (partial-area Msk [OC, C, P, Q]) follows the units like a conv
       * weight: its rows in L, its input-map slices [:, u, :, :] in the consumer. */
      const int slice = role == ROLE_CONSUMER && bo->mask;
      const remap_view v =
          view_of(role == ROLE_CONSUMER && !bo->mask ? ROLE_OTHER : role, slice,
                  slice ? lo->hp.out_c : 1, bo->count, bn->count, map, uold, unew);
      remap_copy(neu->buffers + bn->offset, old->buffers + bo->offset, &v, bo->init_value);
    }
  }
}

/* ---- the primitive and its wrappers ----------------------------------------------------- */

/* Check that L can be resized; the error names L (or the bad index). */
static nest_status check_layer(const nest_net *net, int layer, const char *what) {
  const char *why = NULL;
  if (layer < 0 || layer >= net->nlayers)
    return NEST_ERR(NEST_ERR_ARG, "surgery: cannot %s units of layer %d: the net has %d layers",
                    what, layer, net->nlayers);
  if (!nest_surgery_can_resize(net, layer, &why))
    return NEST_ERR(NEST_ERR_ARG, "%s: cannot %s units: %s", net->layers[layer]->name, what, why);
  return NEST_OK;
}

/* The net of `old` with layer L's units remapped through src[0..count) (entries in [-1, old
 * units); duplicates allowed: a copy), every value copied; generation + 1. */
static nest_status remap_build(const nest_net *old, int layer, const int *src, int count,
                               nest_net **out) {
  const nest_layer *l = old->layers[layer];
  nest_status st = NEST_OK;
  nest_layer_spec *specs = NULL;
  /* The old architecture with L's width changed; nest_net_create re-derives every shape. */
  NEST_CALL(nest_malloc((void **)&specs, (size_t)old->nlayers * sizeof *specs,
                        "surgery layer specs"));
  memcpy(specs, old->specs, (size_t)old->nlayers * sizeof *specs);
  if (l->kind == NEST_LAYER_DENSE)
    specs[layer].hp.units = count;
  else
    specs[layer].hp.out_c = count;
  st = nest_net_create(specs, old->nlayers, old->in_shape, old->nclasses, old->max_batch,
                       old->nthreads, out);
  free(specs);
  NEST_CALL(st);
  copy_state(old, *out, layer, nest_surgery_consumer(old, layer), src, units_of(l), count);
  (*out)->generation = old->generation + 1;
  return NEST_OK;
}

nest_status nest_surgery_remap(nest_net **netp, int layer, const int *src, int count) {
  if (!netp || !*netp) return NEST_ERR(NEST_ERR_ARG, "surgery: no net given");
  nest_net *old = *netp;
  NEST_CALL(check_layer(old, layer, "remap"));
  const nest_layer *l = old->layers[layer];
  const int uold = units_of(l);
  if (count < 1)
    return NEST_ERR(NEST_ERR_ARG, "%s: cannot remap to %d units: at least one must remain",
                    l->name, count);
  if (!src) return NEST_ERR(NEST_ERR_ARG, "%s: remap to %d units without a source list",
                            l->name, count);

  nest_status st = NEST_OK;
  int *seen = NULL; /* [uold] position in src + 1 of each old unit, 0 if not yet listed */
  nest_net *neu = NULL;
  NEST_CALL_GOTO(st, nest_calloc((void **)&seen, (size_t)uold, sizeof *seen, "surgery unit list"),
                 done);
  for (int j = 0; j < count; ++j) {
    if (src[j] < -1 || src[j] >= uold) {
      st = NEST_ERR(NEST_ERR_ARG, "%s: src[%d] = %d is not a unit (the layer has %d units; -1 "
                    "means fresh)", l->name, j, src[j], uold);
      goto done;
    }
    if (src[j] < 0) continue;
    if (seen[src[j]]) {
      st = NEST_ERR(NEST_ERR_ARG, "%s: unit %d appears twice in src (src[%d] and src[%d])",
                    l->name, src[j], seen[src[j]] - 1, j);
      goto done;
    }
    seen[src[j]] = j + 1;
  }
  NEST_CALL_GOTO(st, remap_build(old, layer, src, count, &neu), done);
  nest_net_destroy(netp);
  *netp = neu;
  neu = NULL;
done:
  nest_net_destroy(&neu);
  free(seen);
  return st;
}

/* Multiply channel ch of a tensor viewed as [rows, channels, glen] by f (values and momentum). */
static void scale_channel(nest_net *net, const nest_param *p, int channels, int ch, float f) {
  const size_t rows = (size_t)p->dims[0], glen = p->count / (rows * (size_t)channels);
  for (size_t r = 0; r < rows; ++r) {
    const size_t o = p->offset + (r * (size_t)channels + (size_t)ch) * glen;
    for (size_t t = 0; t < glen; ++t) {
      net->params[o + t] *= f;
      net->mom[o + t] *= f;
    }
  }
}

nest_status nest_surgery_split(nest_net **netp, int layer, int unit) {
  if (!netp || !*netp) return NEST_ERR(NEST_ERR_ARG, "surgery: no net given");
  nest_net *old = *netp;
  NEST_CALL(check_layer(old, layer, "split"));
  const int uold = units_of(old->layers[layer]);
  if (unit < 0 || unit >= uold || uold == INT_MAX)
    return NEST_ERR(NEST_ERR_ARG, "%s: cannot split unit %d: the layer has %d units",
                    old->layers[layer]->name, unit, uold);
  int *src;
  NEST_CALL(nest_malloc((void **)&src, (size_t)(uold + 1) * sizeof *src, "surgery unit list"));
  for (int j = 0; j < uold; ++j) src[j] = j;
  src[uold] = unit; /* the copy, last */
  nest_net *neu = NULL;
  const nest_status st = remap_build(old, layer, src, uold + 1, &neu);
  free(src);
  NEST_CALL(st);
  /* Halve both units' outgoing weights: the consumer's input slices and the skip tensors that
   * read the consumer's input (their columns), so the sum the next layers see is unchanged. */
  const int c = nest_surgery_consumer(neu, layer);
  const nest_layer *lc = neu->layers[c];
  for (int s = 0; s < lc->nparams; ++s)
    if (lc->param[s].maskable && !nest_net_skip(neu, c, s)) {
      scale_channel(neu, &lc->param[s], uold + 1, unit, 0.5f);
      scale_channel(neu, &lc->param[s], uold + 1, uold, 0.5f);
    }
  for (int k = 0; k < neu->nskips; ++k)
    if (neu->skips[k].src == c) {
      const nest_param *p = &neu->layers[neu->skips[k].layer]->param[neu->skips[k].slot];
      scale_channel(neu, p, uold + 1, unit, 0.5f);
      scale_channel(neu, p, uold + 1, uold, 0.5f);
    }
  nest_net_destroy(netp);
  *netp = neu;
  return NEST_OK;
}

nest_status nest_surgery_append(nest_net **netp, int layer, int count) {
  if (!netp || !*netp) return NEST_ERR(NEST_ERR_ARG, "surgery: no net given");
  const nest_net *net = *netp;
  NEST_CALL(check_layer(net, layer, "append"));
  const nest_layer *l = net->layers[layer];
  const int uold = units_of(l);
  if (count < 0 || count > INT_MAX - uold)
    return NEST_ERR(NEST_ERR_ARG, "%s: cannot append %d units to %d", l->name, count, uold);
  int *src;
  NEST_CALL(nest_malloc((void **)&src, (size_t)(uold + count) * sizeof *src, "surgery unit list"));
  for (int j = 0; j < uold + count; ++j) src[j] = j < uold ? j : -1; /* old units keep their place */
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_surgery_remap(netp, layer, src, uold + count), done);
done:
  free(src);
  return st;
}

nest_status nest_surgery_delete(nest_net **netp, int layer, const int *units, int n) {
  if (!netp || !*netp) return NEST_ERR(NEST_ERR_ARG, "surgery: no net given");
  const nest_net *net = *netp;
  NEST_CALL(check_layer(net, layer, "delete"));
  const nest_layer *l = net->layers[layer];
  const int uold = units_of(l);
  if (n < 0) return NEST_ERR(NEST_ERR_ARG, "%s: cannot delete %d units", l->name, n);
  if (n > 0 && !units)
    return NEST_ERR(NEST_ERR_ARG, "%s: %d units to delete but no list of them", l->name, n);
  int *src; /* [uold] 1 for a unit to delete, then the survivors in order */
  NEST_CALL(nest_calloc((void **)&src, (size_t)uold, sizeof *src, "surgery unit list"));
  nest_status st = NEST_OK;
  for (int k = 0; k < n; ++k) {
    if (units[k] < 0 || units[k] >= uold) {
      st = NEST_ERR(NEST_ERR_ARG, "%s: cannot delete unit %d: the layer has %d units", l->name,
                    units[k], uold);
      goto done;
    }
    if (src[units[k]]) {
      st = NEST_ERR(NEST_ERR_ARG, "%s: unit %d is listed twice for deletion", l->name, units[k]);
      goto done;
    }
    src[units[k]] = 1;
  }
  if (n >= uold) {
    st = NEST_ERR(NEST_ERR_ARG, "%s: deleting all %d units would leave none", l->name, uold);
    goto done;
  }
  int count = 0;
  for (int u = 0; u < uold; ++u)
    if (!src[u]) src[count++] = u; /* count <= u: never overwrites an unread flag */
  NEST_CALL_GOTO(st, nest_surgery_remap(netp, layer, src, count), done);
done:
  free(src);
  return st;
}

/* ---- switching partial-area convolution on / off ------------------------------------------ */

/* The "area" mask buffer of layer l, or NULL. */
static const nest_buffer *area_buffer(const nest_layer *l, int *slot) {
  for (int s = 0; s < l->nbuffers; ++s)
    if (l->buffer[s].mask && strcmp(l->buffer[s].name, "area") == 0) {
      *slot = s;
      return &l->buffer[s];
    }
  return NULL;
}

nest_status nest_surgery_set_area(nest_net **netp, int layer, int on) {
  if (!netp || !*netp) return NEST_ERR(NEST_ERR_ARG, "surgery: no net given");
  nest_net *old = *netp;
  if (layer < 0 || layer >= old->nlayers)
    return NEST_ERR(NEST_ERR_ARG,
                    "surgery: cannot set partial-area convolution of layer %d: the net has %d "
                    "layers", layer, old->nlayers);
  const nest_layer *l = old->layers[layer];
  if (l->kind != NEST_LAYER_CONV2D)
    return NEST_ERR(NEST_ERR_ARG, "%s: partial-area convolution needs a conv2d layer, not %s",
                    l->name, l->ops->kind);
  if (on != 0 && on != 1)
    return NEST_ERR(NEST_ERR_ARG, "%s: partial-area convolution is 0 (off) or 1 (on), not %d",
                    l->name, on);
  if (l->hp.area == on) return NEST_OK; /* already so: nothing rebuilt */
  if (!on) {
    /* Only an all-ones mask is the plain convolution: dropping another would change the
     * function silently. */
    int slot = -1;
    const nest_buffer *b = area_buffer(l, &slot);
    NEST_ASSERT(b);
    size_t zeros = 0;
    for (size_t j = 0; j < b->count; ++j) zeros += l->buf[slot][j] != 1.0f;
    if (zeros)
      return NEST_ERR(NEST_ERR_ARG,
                      "%s: cannot switch partial-area convolution off: %zu of %zu area mask "
                      "entries are not 1 (only an all-ones mask leaves the function unchanged)",
                      l->name, zeros, b->count);
  }
  nest_status st = NEST_OK;
  nest_layer_spec *specs = NULL;
  nest_net *neu = NULL;
  NEST_CALL_GOTO(st, nest_malloc((void **)&specs, (size_t)old->nlayers * sizeof *specs,
                                 "surgery layer specs"),
                 done);
  memcpy(specs, old->specs, (size_t)old->nlayers * sizeof *specs);
  specs[layer].hp.area = on;
  NEST_CALL_GOTO(st, nest_net_create(specs, old->nlayers, old->in_shape, old->nclasses,
                                     old->max_batch, old->nthreads, &neu),
                 done);
  /* Parameters are untouched by the switch (it adds or drops a buffer only): the parameter
   * arenas have the same layout. Values, momentum and masks are copied; gradients stay zero
   * (as after every surgery). */
  NEST_ASSERT(neu->nparams == old->nparams && neu->ntensors == old->ntensors);
  for (int t = 0; t < old->ntensors; ++t)
    NEST_ASSERT(neu->tensors[t].param->offset == old->tensors[t].param->offset &&
                neu->tensors[t].param->count == old->tensors[t].param->count);
  memcpy(neu->params, old->params, old->nparams * sizeof(float));
  memcpy(neu->mom, old->mom, old->nparams * sizeof(float));
  memcpy(neu->masks, old->masks, old->nparams * sizeof(float));
  /* Buffers by name; the new "area" buffer (switched on) is all ones. */
  for (int i = 0; i < neu->nlayers; ++i) {
    const nest_layer *lo = old->layers[i];
    nest_layer *ln = neu->layers[i];
    for (int s = 0; s < ln->nbuffers; ++s) {
      const nest_buffer *bn = &ln->buffer[s];
      int found = -1;
      for (int k = 0; k < lo->nbuffers && found < 0; ++k)
        if (strcmp(lo->buffer[k].name, bn->name) == 0) found = k;
      if (found >= 0) {
        NEST_ASSERT(lo->buffer[found].count == bn->count);
        memcpy(ln->buf[s], lo->buf[found], bn->count * sizeof(float));
      } else {
        NEST_ASSERT(i == layer && on && bn->mask);
        for (size_t j = 0; j < bn->count; ++j) ln->buf[s][j] = bn->init_value;
      }
    }
  }
  neu->generation = old->generation + 1;
  nest_net_destroy(netp);
  *netp = neu;
  neu = NULL;
done:
  nest_net_destroy(&neu);
  free(specs);
  return st;
}
