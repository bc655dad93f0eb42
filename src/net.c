/* net.c — network construction over flat arenas, seed masks and init, forward/backward,
 * counting and hashing. See net.h for the layout. */
#include "nest/net.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/rng.h"

/* Round up to a multiple of 16 floats so every tensor starts 64-byte aligned. */
static size_t pad16(size_t n) { return (n + 15) / 16 * 16; }

/* ---- activations --------------------------------------------------------------------------
 *
 * act[j] / dact[j] (j = 0..nlayers) hold layer j's input and its gradient, [max_batch, size of
 * shape j] with shape 0 the net's input and shape j + 1 layer j's output.
 *
 * In-place ReLU: a relu layer i > 0 writes its output over its input (act[i + 1] = act[i])
 * and its dx over its dy (dact[i] = dact[i + 1]): y = max(x, 0) and dx = (y > 0 ? dy : 0) are
 * elementwise, and relu's backward needs only y, which the buffer then holds. That is correct
 * because no layer's backward reads its own output y except relu's (dense, conv2d, maxpool,
 * batchnorm and dropout read x, dy and their caches), and a relu before an in-place relu finds
 * its output unchanged (relu(y) = y). Readers of activations after a pass see post-ReLU values
 * at a relu's input, which is what they read there anyway (gradpass reads act[l] of dense /
 * conv inputs and the relu outputs nest_actpass_output names, never the pre-ReLU values).
 *
 * Shared gradient buffers: backward needs only dact[j + 1] (its dy) and dact[j] (its dx) at a
 * time, so the activation gradients alternate between two buffers A and B, each the size of
 * the largest gradient it holds. Exceptions, with buffers of their own: dact[nlayers] (dL/dlogits,
 * written before backward) and the gradient of every dense layer's output — the gradient pass
 * reads dact[c + 1] of a dense consumer c after backward for the bridging products (growth)
 * — both small. dact[0] is never written (the first layer gets dx = NULL) and is NULL.
 * Without sharing (opts->separate_grads), every dact[j] has its own buffer, as act does. */

static int relu_in_place(const nest_net *net, const nest_net_opts *o, int i) {
  return !(o && o->no_inplace_relu) && i > 0 && net->layers[i]->kind == NEST_LAYER_RELU;
}

static nest_status layout_activations(nest_net *net, const nest_net_opts *o) {
  const int L = net->nlayers;
  const int share = !(o && o->separate_grads);
  size_t *sz = NULL, *aoff = NULL, *doff = NULL;
  int *grp = NULL; /* dact: -1 own buffer, 0 = A, 1 = B */
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_calloc((void **)&sz, (size_t)L + 1, sizeof *sz, "activation sizes"), done);
  NEST_CALL_GOTO(st, nest_calloc((void **)&aoff, (size_t)L + 1, sizeof *aoff, "activation sizes"), done);
  NEST_CALL_GOTO(st, nest_calloc((void **)&doff, (size_t)L + 1, sizeof *doff, "activation sizes"), done);
  NEST_CALL_GOTO(st, nest_calloc((void **)&grp, (size_t)L + 1, sizeof *grp, "activation sizes"), done);
  for (int j = 0; j <= L; ++j)
    sz[j] = pad16((size_t)net->max_batch *
                  nest_shape_size(j == 0 ? net->in_shape : net->layers[j - 1]->out));
  /* act: own buffers, except in-place relu outputs */
  size_t total = 0;
  for (int j = 0; j <= L; ++j) {
    if (j > 0 && relu_in_place(net, o, j - 1)) {
      aoff[j] = aoff[j - 1];
      continue;
    }
    aoff[j] = total;
    total += sz[j];
  }
  net->act_bytes = total * sizeof(float);
  /* dact, top down: an in-place relu i aliases dact[i] to dact[i + 1] (one group); a group is
   * private if it is the top one or holds a dense layer's output gradient; the others take
   * turns between A and B (never the buffer of the group above: a layer reads one and writes
   * the other). */
  size_t dtotal = 0, szab[2] = {0, 0};
  int above = -1; /* buffer of the group above: -1 private */
  for (int j = L; j >= 1;) {
    int lo = j; /* the group is [lo, j] */
    while (lo - 1 >= 1 && relu_in_place(net, o, lo - 1)) --lo;
    int priv = !share || j == L;
    for (int m = lo; m <= j; ++m) priv |= net->layers[m - 1]->kind == NEST_LAYER_DENSE;
    int g = -1;
    if (!priv) g = above == 0 ? 1 : 0;
    for (int m = lo; m <= j; ++m) grp[m] = g;
    if (g < 0) {
      for (int m = lo; m <= j; ++m) doff[m] = dtotal;
      dtotal += sz[j];
    } else if (sz[j] > szab[g]) {
      szab[g] = sz[j];
    }
    above = g;
    j = lo - 1;
  }
  /* dact[0]: own buffer only without sharing (old layout), else none */
  const size_t d0 = share ? 0 : sz[0];
  const size_t base_ab = total + dtotal + d0;
  const size_t all = base_ab + szab[0] + szab[1];
  net->dact_bytes = (all - total) * sizeof(float);
  NEST_CALL_GOTO(st, nest_malloc_aligned((void **)&net->act_mem, (all ? all : 1) * sizeof(float),
                                         "activations"),
                 done);
  memset(net->act_mem, 0, (all ? all : 1) * sizeof(float));
  NEST_CALL_GOTO(st, nest_calloc((void **)&net->act, (size_t)L + 1, sizeof(float *), "act"), done);
  NEST_CALL_GOTO(st, nest_calloc((void **)&net->dact, (size_t)L + 1, sizeof(float *), "dact"), done);
  for (int j = 0; j <= L; ++j) net->act[j] = net->act_mem + aoff[j];
  net->dact[0] = share ? NULL : net->act_mem + total + dtotal;
  for (int j = 1; j <= L; ++j)
    net->dact[j] = grp[j] < 0   ? net->act_mem + total + doff[j]
                   : grp[j] == 0 ? net->act_mem + base_ab
                                 : net->act_mem + base_ab + szab[0];
done:
  free(sz);
  free(aoff);
  free(doff);
  free(grp);
  return st;
}

nest_status nest_net_create(const nest_layer_spec *specs, int nspecs, nest_shape in, int nclasses,
                            int max_batch, int nthreads, nest_net **out) {
  return nest_net_create_ex(specs, nspecs, in, nclasses, max_batch, nthreads, NULL, out);
}

nest_status nest_net_create_ex(const nest_layer_spec *specs, int nspecs, nest_shape in,
                               int nclasses, int max_batch, int nthreads,
                               const nest_net_opts *opts, nest_net **out) {
  *out = NULL;
  if (nspecs <= 0) return NEST_ERR(NEST_ERR_CONFIG, "network has no layers");
  if (max_batch <= 0) return NEST_ERR(NEST_ERR_ARG, "max_batch must be positive");
  nest_status st = NEST_OK;
  nest_net *net;
  NEST_CALL(nest_calloc((void **)&net, 1, sizeof *net, "network"));
  net->in_shape = in;
  net->nclasses = nclasses;
  net->max_batch = max_batch;
  net->nthreads = nthreads > 0 ? nthreads : 1;
  NEST_CALL_GOTO(st, nest_calloc((void **)&net->layers, nspecs, sizeof *net->layers, "layers"),
                 fail);

  /* 1. Create layers in order; each setup() derives its output shape from its input. */
  nest_shape shape = in;
  for (int i = 0; i < nspecs; ++i) {
    const nest_layer_ops *ops = nest_layer_ops_of(specs[i].kind);
    if (!ops) {
      st = NEST_ERR(NEST_ERR_CONFIG, "%s: unknown layer kind %d", specs[i].name, specs[i].kind);
      goto fail;
    }
    NEST_CALL_GOTO(st, nest_layer_create(ops, specs[i].name, shape, &specs[i].hp, max_batch,
                                         net->nthreads, &net->layers[i]),
                   fail);
    net->layers[i]->index = i;
    net->nlayers = i + 1;
    shape = net->layers[i]->out;
  }
  NEST_CALL_GOTO(st, nest_calloc((void **)&net->specs, nspecs, sizeof *net->specs, "layer specs"),
                 fail);
  for (int i = 0; i < nspecs; ++i) {
    net->specs[i] = specs[i];
    net->specs[i].hp = net->layers[i]->hp; /* with the defaults setup() filled in */
  }
  if (nest_shape_size(shape) != (size_t)nclasses) {
    st = NEST_ERR(NEST_ERR_CONFIG, "%s: network outputs %zu values but the data has %d classes",
                  net->layers[nspecs - 1]->name, nest_shape_size(shape), nclasses);
    goto fail;
  }

  /* 2. Lay out the arenas: offsets for every declared tensor and buffer. */
  size_t off = 0, boff = 0, scratch = 0, ws = 0;
  int ntensors = 0;
  for (int i = 0; i < net->nlayers; ++i) {
    nest_layer *l = net->layers[i];
    for (int s = 0; s < l->nparams; ++s) {
      l->param[s].offset = off;
      off += pad16(l->param[s].count);
      ++ntensors;
    }
    for (int s = 0; s < l->nbuffers; ++s) {
      l->buffer[s].offset = boff;
      boff += pad16(l->buffer[s].count);
    }
    /* ws is per-call workspace (layer.h): one block, the largest, serves every layer */
    if (pad16(l->ws_floats) > ws) ws = pad16(l->ws_floats);
    scratch += pad16(l->cache_floats);
  }
  net->ws_bytes = ws * sizeof(float);
  net->cache_bytes = scratch * sizeof(float);
  scratch += ws;
  net->nparams = off;
  net->nbuf = boff;
  NEST_CALL_GOTO(st, nest_calloc((void **)&net->tensors, ntensors ? ntensors : 1,
                                 sizeof *net->tensors, "tensor list"),
                 fail);
  float **arenas[4] = {&net->params, &net->grads, &net->mom, &net->masks};
  for (int a = 0; a < 4; ++a) {
    NEST_CALL_GOTO(st, nest_malloc_aligned((void **)arenas[a], (off ? off : 1) * sizeof(float),
                                           "parameter arena"),
                   fail);
    memset(*arenas[a], 0, (off ? off : 1) * sizeof(float));
  }
  for (size_t i = 0; i < off; ++i) net->masks[i] = 1.0f;
  NEST_CALL_GOTO(st, nest_malloc_aligned((void **)&net->buffers, (boff ? boff : 1) * sizeof(float),
                                         "buffer arena"),
                 fail);
  /* Zero the padding too: hashes and checkpoints read whole arenas. */
  memset(net->buffers, 0, (boff ? boff : 1) * sizeof(float));
  NEST_CALL_GOTO(st, nest_malloc_aligned((void **)&net->scratch_mem,
                                         (scratch ? scratch : 1) * sizeof(float), "layer scratch"),
                 fail);
  NEST_CALL_GOTO(st, layout_activations(net, opts), fail);
  /* 3. Bind layer pointers into the arenas. */
  float *ws_mem = net->scratch_mem, *sp = net->scratch_mem + ws;
  ntensors = 0;
  for (int i = 0; i < net->nlayers; ++i) {
    nest_layer *l = net->layers[i];
    for (int s = 0; s < l->nparams; ++s) {
      size_t o = l->param[s].offset;
      l->p[s] = net->params + o;
      l->g[s] = net->grads + o;
      l->m[s] = net->masks + o;
      net->tensors[ntensors++] = (nest_tensor_ref){l, s, &l->param[s]};
    }
    for (int s = 0; s < l->nbuffers; ++s) l->buf[s] = net->buffers + l->buffer[s].offset;
    l->ws = l->ws_floats ? ws_mem : NULL;
    l->cache = l->cache_floats ? sp : NULL;
    sp += pad16(l->cache_floats);
  }
  net->ntensors = ntensors;
  *out = net;
  return NEST_OK;
fail:
  nest_net_destroy(&net);
  return st;
}

void nest_net_destroy(nest_net **np) {
  if (!np || !*np) return;
  nest_net *net = *np;
  for (int i = 0; i < net->nlayers; ++i) nest_layer_destroy(&net->layers[i]);
  free(net->layers);
  free(net->specs);
  free(net->tensors);
  nest_free_aligned(net->params);
  nest_free_aligned(net->grads);
  nest_free_aligned(net->mom);
  nest_free_aligned(net->masks);
  nest_free_aligned(net->buffers);
  nest_free_aligned(net->scratch_mem);
  nest_free_aligned(net->act_mem);
  free(net->act);
  free(net->dact);
  free(net);
  *np = NULL;
}

/* ---- seed masks ------------------------------------------------------------------------ */

/* Input groups of a weight tensor: the elements that connect one input neuron / feature map.
 * dense W [units, D] after an input of shape (c, h, w): group g = channel g's h*w columns
 * (a flattened feature map is one "neuron" for connectivity), so groups = c, each spanning
 * h*w consecutive columns of every row. conv W [out, in_c, kh, kw]: group = input channel. */
typedef struct {
  int rows;      /* output neurons / maps */
  int row_len;   /* elements per row */
  int groups;    /* input neurons / maps */
  int glen;      /* consecutive elements of one group inside a row */
} conn_layout;

static conn_layout layout_of(const nest_layer *l, const nest_param *p) {
  conn_layout c;
  c.rows = p->dims[0];
  c.row_len = (int)(p->count / (size_t)p->dims[0]);
  if (p->ndims == 4) {
    c.groups = p->dims[1];
    c.glen = p->dims[2] * p->dims[3];
  } else {
    c.groups = l->in.c;
    c.glen = l->in.h * l->in.w;
  }
  return c;
}

/* The random streams of a tensor are keyed by its layer's NAME, not its position: adding a
 * batch-norm or dropout layer, or growing a neighbour, leaves every other layer's seed masks
 * and initial values unchanged, so "the same seed" means the same seed network. (FNV-1a.) */
static uint64_t layer_key(const nest_layer *l) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char *c = l->name; *c; ++c) h = (h ^ (unsigned char)*c) * 0x100000001b3ull;
  return h;
}

static uint32_t mask_key(uint64_t seed, uint64_t layer, int slot, size_t i) {
  return nest_rng_at(seed, NEST_RNG_MASK, layer, (uint64_t)slot, i);
}

/* Activate the element with the smallest key among those listed (deterministic repair). */
static void seed_mask(nest_layer *l, int slot, uint64_t seed, double density, int first) {
  const nest_param *p = &l->param[slot];
  float *m = l->m[slot];
  if (density >= 1.0) {
    for (size_t i = 0; i < p->count; ++i) m[i] = 1.0f;
    return;
  }
  const double thresh = density * 4294967296.0;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < (long)p->count; ++i)
    m[i] = (double)mask_key(seed, layer_key(l), slot, (size_t)i) < thresh ? 1.0f : 0.0f;

  conn_layout c = layout_of(l, p);
  /* Every output neuron needs an active input. */
  for (int r = 0; r < c.rows; ++r) {
    float *row = m + (size_t)r * c.row_len;
    int any = 0;
    for (int j = 0; j < c.row_len && !any; ++j) any = row[j] != 0.0f;
    if (any) continue;
    size_t best = 0;
    uint32_t bk = UINT32_MAX;
    for (int j = 0; j < c.row_len; ++j) {
      uint32_t k = mask_key(seed, layer_key(l), slot, (size_t)r * c.row_len + j);
      if (k < bk) bk = k, best = (size_t)j;
    }
    row[best] = 1.0f;
  }
  /* Every input neuron needs an active output — except raw inputs (pixels are not neurons). */
  if (first) return;
  for (int g = 0; g < c.groups; ++g) {
    int any = 0;
    for (int r = 0; r < c.rows && !any; ++r)
      for (int t = 0; t < c.glen && !any; ++t)
        any = m[(size_t)r * c.row_len + (size_t)g * c.glen + t] != 0.0f;
    if (any) continue;
    size_t best = 0;
    uint32_t bk = UINT32_MAX;
    for (int r = 0; r < c.rows; ++r)
      for (int t = 0; t < c.glen; ++t) {
        size_t idx = (size_t)r * c.row_len + (size_t)g * c.glen + t;
        uint32_t k = mask_key(seed, layer_key(l), slot, idx);
        if (k < bk) bk = k, best = idx;
      }
    m[best] = 1.0f;
  }
}

/* Normal draw for element i from two stateless uniforms (Box-Muller): order-independent. */
static float normal_at(uint64_t seed, uint64_t layer, int slot, size_t i) {
  uint32_t a = nest_rng_at(seed, NEST_RNG_INIT, (uint64_t)layer, (uint64_t)slot, 2 * i);
  uint32_t b = nest_rng_at(seed, NEST_RNG_INIT, (uint64_t)layer, (uint64_t)slot, 2 * i + 1);
  double u1 = ((double)(a >> 8) + 1.0) / 16777216.0, u2 = (double)(b >> 8) / 16777216.0;
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

nest_status nest_net_init(nest_net *net, uint64_t seed, double density, int init_override) {
  if (!(density > 0.0 && density <= 1.0))
    return NEST_ERR(NEST_ERR_CONFIG, "density %g must be in (0, 1]", density);
  int first_weight_layer = -1;
  for (int t = 0; t < net->ntensors; ++t) {
    nest_layer *l = net->tensors[t].layer;
    int s = net->tensors[t].slot;
    const nest_param *p = &l->param[s];
    float *w = l->p[s];
    if (p->maskable) {
      if (first_weight_layer < 0) first_weight_layer = l->index;
      seed_mask(l, s, seed, density, l->index == first_weight_layer);
    } else {
      for (size_t i = 0; i < p->count; ++i) l->m[s][i] = 1.0f;
    }
    nest_init_kind kind = p->init;
    if (p->maskable && init_override >= 0) kind = (nest_init_kind)init_override;
    double active = 0;
    for (size_t i = 0; i < p->count; ++i) active += l->m[s][i];
    double dens = p->count ? active / (double)p->count : 1.0;
    if (dens <= 0) dens = 1.0;
    double std = 0;
    if (kind == NEST_INIT_HE) std = sqrt(2.0 / (p->fan_in * dens));
    if (kind == NEST_INIT_XAVIER) std = sqrt(2.0 / ((p->fan_in + p->fan_out) * dens));
    switch (kind) {
      case NEST_INIT_ZERO: memset(w, 0, p->count * sizeof(float)); break;
      case NEST_INIT_ONE:
        for (size_t i = 0; i < p->count; ++i) w[i] = 1.0f;
        break;
      default:
#pragma omp parallel for schedule(static)
        for (long i = 0; i < (long)p->count; ++i)
          w[i] = l->m[s][i] * (float)std * normal_at(seed, layer_key(l), s, (size_t)i);
    }
  }
  memset(net->mom, 0, net->nparams * sizeof(float));
  memset(net->grads, 0, net->nparams * sizeof(float));
  for (int i = 0; i < net->nlayers; ++i) {
    nest_layer *l = net->layers[i];
    for (int s = 0; s < l->nbuffers; ++s)
      for (size_t j = 0; j < l->buffer[s].count; ++j) l->buf[s][j] = l->buffer[s].init_value;
  }
  nest_net_apply_masks(net);
  return NEST_OK;
}

/* ---- passes ------------------------------------------------------------------------------ */

nest_status nest_net_forward(nest_net *net, const nest_ctx *ctx, const float *x,
                             const float **logits) {
  NEST_ASSERT(ctx->n >= 0 && ctx->n <= net->max_batch);
  size_t in_sz = (size_t)ctx->n * nest_shape_size(net->in_shape);
  if (x != net->act[0]) memcpy(net->act[0], x, in_sz * sizeof(float));
  for (int i = 0; i < net->nlayers; ++i) {
    nest_layer *l = net->layers[i];
    NEST_CALL(l->ops->forward(l, ctx, net->act[i], net->act[i + 1]));
  }
  if (logits) *logits = net->act[net->nlayers];
  return NEST_OK;
}

nest_status nest_net_backward_ready(nest_net *net, const nest_ctx *ctx, const float *dlogits,
                                   nest_grads_ready_fn ready, void *arg) {
  size_t out_sz = (size_t)ctx->n * (size_t)net->nclasses;
  float *top = net->dact[net->nlayers];
  if (dlogits != top) memcpy(top, dlogits, out_sz * sizeof(float));
  for (int i = net->nlayers - 1; i >= 0; --i) {
    nest_layer *l = net->layers[i];
    /* The first layer's dx is never needed: pass NULL to skip that GEMM. */
    NEST_CALL(l->ops->backward(l, ctx, net->act[i], net->act[i + 1], net->dact[i + 1],
                               i > 0 ? net->dact[i] : NULL));
    /* layers lie in the arenas in order: everything from this layer's first tensor is final */
    if (ready && l->nparams > 0) NEST_CALL(ready(arg, l->param[0].offset));
  }
  return NEST_OK;
}

nest_status nest_net_backward(nest_net *net, const nest_ctx *ctx, const float *dlogits) {
  return nest_net_backward_ready(net, ctx, dlogits, NULL, NULL);
}

void nest_net_apply_masks(nest_net *net) {
  float *p = net->params, *v = net->mom;
  const float *m = net->masks;
  const long n = (long)net->nparams;
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < n; ++i) {
    const int on = m[i] != 0.0f;
    p[i] = on ? p[i] : 0.0f;
    v[i] = on ? v[i] : 0.0f;
  }
}

void nest_net_count(const nest_net *net, int64_t *active_weights, int64_t *total_weights,
                    int64_t *active_params) {
  int64_t aw = 0, tw = 0, ap = 0;
  for (int t = 0; t < net->ntensors; ++t) {
    const nest_tensor_ref *r = &net->tensors[t];
    const float *m = r->layer->m[r->slot];
    int64_t a = 0;
    for (size_t i = 0; i < r->param->count; ++i) a += m[i] != 0.0f;
    if (r->param->maskable) {
      aw += a;
      tw += (int64_t)r->param->count;
    }
    ap += a;
  }
  if (active_weights) *active_weights = aw;
  if (total_weights) *total_weights = tw;
  if (active_params) *active_params = ap;
}

/* The partial-area mask Msk[OC, C, P, Q] of a conv layer with hp.area = 1, else NULL. */
static const float *area_mask(const nest_layer *l, size_t *count) {
  if (l->kind != NEST_LAYER_CONV2D || !l->hp.area) return NULL;
  for (int s = 0; s < l->nbuffers; ++s)
    if (l->buffer[s].mask && strcmp(l->buffer[s].name, "area") == 0) {
      *count = l->buffer[s].count;
      return l->buf[s];
    }
  return NULL;
}

double nest_net_layer_flops(const nest_net *net, int layer) {
  const nest_layer *l = net->layers[layer];
  if (l->kind != NEST_LAYER_DENSE && l->kind != NEST_LAYER_CONV2D) return 0.0;
  size_t acount = 0;
  const float *msk = area_mask(l, &acount);
  if (msk) {
    /* Kernel (o, m) runs at the positions (p, q) its area mask keeps, with its active
     * weights: 2 x sum_{o,m} active(o, m) x kept(o, m). W [OC, C, kh, kw], Msk [OC, C, P*Q]. */
    const size_t pairs = (size_t)l->hp.out_c * l->in.c, kk = (size_t)l->hp.kh * l->hp.kw;
    const size_t plane = (size_t)l->out.h * l->out.w;
    double flops = 0;
    for (size_t k = 0; k < pairs; ++k) {
      double active = 0, kept = 0;
      for (size_t t = 0; t < kk; ++t) active += l->m[0][k * kk + t] != 0.0f;
      for (size_t j = 0; j < plane; ++j) kept += msk[k * plane + j] != 0.0f;
      flops += active * kept;
    }
    return 2.0 * flops;
  }
  double active = 0;
  for (size_t j = 0; j < l->param[0].count; ++j) active += l->m[0][j] != 0.0f;
  /* Each active weight is used once per output position (1 for dense). */
  double positions = (double)l->out.h * l->out.w;
  return 2.0 * active * positions;
}

double nest_net_layer_conv_frac(const nest_net *net, int layer) {
  size_t count = 0;
  const float *msk = area_mask(net->layers[layer], &count);
  if (!msk || count == 0) return 1.0;
  double kept = 0;
  for (size_t j = 0; j < count; ++j) kept += msk[j] != 0.0f;
  return kept / (double)count;
}

double nest_net_flops(const nest_net *net) {
  double flops = 0;
  for (int i = 0; i < net->nlayers; ++i) flops += nest_net_layer_flops(net, i);
  return flops;
}

/* Hash 64-bit words with a multiply-xorshift; chunk hashes combined in chunk order so the
 * result does not depend on the thread count. */
static uint64_t hash_words(const void *data, size_t bytes, uint64_t h) {
  const unsigned char *b = data;
  size_t nchunks = (bytes + (1u << 20) - 1) >> 20;
  for (size_t c = 0; c < nchunks; ++c) {
    size_t lo = c << 20, hi = lo + (1u << 20) < bytes ? lo + (1u << 20) : bytes;
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)c;
    size_t i = lo;
    for (; i + 8 <= hi; i += 8) {
      uint64_t w;
      memcpy(&w, b + i, 8);
      x = (x ^ w) * 0xBF58476D1CE4E5B9ull;
      x ^= x >> 31;
    }
    for (; i < hi; ++i) x = (x ^ b[i]) * 0x100000001B3ull;
    h = (h ^ x) * 0x94D049BB133111EBull;
    h ^= h >> 29;
  }
  return h;
}

uint64_t nest_net_hash(const nest_net *net, unsigned parts) {
  uint64_t h = 0xCBF29CE484222325ull ^ parts;
  if (parts & NEST_HASH_PARAMS) h = hash_words(net->params, net->nparams * sizeof(float), h);
  if (parts & NEST_HASH_MASKS) {
    h = hash_words(net->masks, net->nparams * sizeof(float), h);
    /* architecture mask buffers (partial-area "area") are masks too */
    for (int i = 0; i < net->nlayers; ++i) {
      const nest_layer *l = net->layers[i];
      for (int s = 0; s < l->nbuffers; ++s)
        if (l->buffer[s].mask) h = hash_words(l->buf[s], l->buffer[s].count * sizeof(float), h);
    }
  }
  if (parts & NEST_HASH_BUFFERS) h = hash_words(net->buffers, net->nbuf * sizeof(float), h);
  return h;
}

/* Append to buf at *used, never past cap; *used counts what was needed. */
static void emit(char *buf, size_t cap, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void emit(char *buf, size_t cap, size_t *used, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(*used < cap ? buf + *used : NULL, *used < cap ? cap - *used : 0, fmt, ap);
  va_end(ap);
  if (n > 0) *used += (size_t)n;
}

int nest_net_arch_string(const nest_net *net, char *buf, size_t cap) {
  size_t used = 0;
  if (cap) buf[0] = '\0';
  for (int i = 0; i < net->nlayers; ++i) {
    const nest_layer *l = net->layers[i];
    const nest_layer_hparams *hp = &l->hp;
    emit(buf, cap, &used, "%s%s %s", i ? " | " : "", l->name, l->ops->kind);
    switch (l->kind) {
      case NEST_LAYER_DENSE: emit(buf, cap, &used, " %d", hp->units); break;
      case NEST_LAYER_CONV2D:
        emit(buf, cap, &used, " %d %dx%d/%d p%d", hp->out_c, hp->kh, hp->kw, hp->stride, hp->pad);
        break;
      case NEST_LAYER_MAXPOOL:
        emit(buf, cap, &used, " %dx%d/%d p%d", hp->kh, hp->kw, hp->stride, hp->pad);
        break;
      case NEST_LAYER_DROPOUT: emit(buf, cap, &used, " %g", hp->rate); break;
      default: break;
    }
  }
  return (int)used;
}

int nest_net_widths_string(const nest_net *net, char *buf, size_t cap) {
  size_t used = 0;
  if (cap) buf[0] = '\0';
  emit(buf, cap, &used, "%zu", nest_shape_size(net->in_shape));
  for (int i = 0; i < net->nlayers; ++i) {
    const nest_layer *l = net->layers[i];
    if (l->kind == NEST_LAYER_DENSE) emit(buf, cap, &used, "-%d", l->hp.units);
    if (l->kind == NEST_LAYER_CONV2D) emit(buf, cap, &used, "-%dc", l->hp.out_c);
  }
  return (int)used;
}

nest_layer *nest_net_find_layer(const nest_net *net, const char *name) {
  for (int i = 0; i < net->nlayers; ++i)
    if (strcmp(net->layers[i]->name, name) == 0) return net->layers[i];
  return NULL;
}

void nest_net_describe(const nest_net *net, void *file) {
  FILE *f = file;
  for (int i = 0; i < net->nlayers; ++i) {
    const nest_layer *l = net->layers[i];
    fprintf(f, "  %-8s %-9s %4dx%-3dx%-3d -> %4dx%-3dx%-3d", l->name, l->ops->kind, l->in.c,
            l->in.h, l->in.w, l->out.c, l->out.h, l->out.w);
    if (l->kind == NEST_LAYER_DENSE || l->kind == NEST_LAYER_CONV2D) {
      size_t active = 0;
      for (size_t j = 0; j < l->param[0].count; ++j) active += l->m[0][j] != 0.0f;
      fprintf(f, "  %10zu / %-10zu weights active (%5.1f%%)", active, l->param[0].count,
              100.0 * (double)active / (double)l->param[0].count);
    }
    fputc('\n', f);
  }
}
