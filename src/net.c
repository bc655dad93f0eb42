/* net.c — network construction over flat arenas, seed masks and init, forward/backward,
 * counting and hashing. See net.h for the layout. */
#include "nest/net.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/gemm.h"
#include "nest/rng.h"

/* Round up to a multiple of 16 floats so every tensor starts 64-byte aligned. */
static size_t pad16(size_t n) { return (n + 15) / 16 * 16; }


/* ---- skip connections (net.h, "Skip connections") ------------------------------------------- */

static int is_weight_kind(nest_layer_kind k) {
  return k == NEST_LAYER_DENSE || k == NEST_LAYER_CONV2D;
}

/* Layers a source's value passes through unchanged in meaning (its canonical name skips them). */
static int is_follower_kind(nest_layer_kind k) {
  return k == NEST_LAYER_RELU || k == NEST_LAYER_BATCHNORM || k == NEST_LAYER_DROPOUT;
}

int nest_skip_source(const nest_layer_spec *specs, int n, const char *from,
                     char canon[NEST_NAME_LEN]) {
  int j = -1;
  if (strcmp(from, "in") == 0) {
    j = 0;
  } else {
    for (int i = 0; i < n && j < 0; ++i)
      if (strcmp(specs[i].name, from) == 0)
        for (int k = i + 1; k < n; ++k)
          if (is_weight_kind(specs[k].kind)) {
            j = k;
            break;
          }
    if (j < 0) return -1;
  }
  if (canon) {
    int k = j - 1;
    while (k >= 0 && is_follower_kind(specs[k].kind)) --k;
    snprintf(canon, NEST_NAME_LEN, "%s", k < 0 ? "in" : specs[k].name);
  }
  return j;
}

int nest_skip_valid(const nest_layer_spec *specs, int n, const char *from, int dest,
                    const char **why) {
  const char *w = NULL;
  const int j = nest_skip_source(specs, n, from, NULL);
  if (dest < 0 || dest >= n) w = "there is no such destination layer";
  else if (specs[dest].kind != NEST_LAYER_DENSE) w = "skips end at dense layers";
  else if (j < 0) w = "the source is no layer whose output a later dense or conv2d layer reads";
  else if (j == dest) w = "the layers are adjacent (that is the chain tensor)";
  else if (j > dest) w = "it points backwards";
  for (int k = j; !w && k < n; ++k)
    if (specs[k].kind == NEST_LAYER_CONV2D)
      w = "a conv2d layer reads the source (skips start at the flattened features after the last "
          "conv2d layer)";
  if (why) *why = w;
  return w == NULL;
}

nest_status nest_skip_declare(nest_layer *l, const nest_layer_spec *specs, int n, int i,
                              const nest_shape *acts) {
  const nest_layer_spec *s = &specs[i];
  if (s->nskips == 0) return NEST_OK;
  if (s->nskips < 0 || s->nskips > NEST_MAX_SKIPS)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: %d skip tensors (at most %d)", s->name, s->nskips,
                    NEST_MAX_SKIPS);
  int seen[NEST_MAX_SKIPS];
  for (int k = 0; k < s->nskips; ++k) {
    const char *why = NULL;
    if (!nest_skip_valid(specs, n, s->skip_from[k], i, &why))
      return NEST_ERR(NEST_ERR_CONFIG, "skip %s>%s: %s", s->skip_from[k], s->name, why);
    char canon[NEST_NAME_LEN];
    seen[k] = nest_skip_source(specs, n, s->skip_from[k], canon);
    for (int q = 0; q < k; ++q)
      if (seen[q] == seen[k])
        return NEST_ERR(NEST_ERR_CONFIG, "skip %s>%s: listed twice (%s and %s read the same "
                        "output)", s->skip_from[k], s->name, s->skip_from[q], s->skip_from[k]);
    char pname[NEST_NAME_LEN + 8];
    snprintf(pname, sizeof pname, "skip_%s", canon);
    if (strlen(pname) >= NEST_NAME_LEN)
      return NEST_ERR(NEST_ERR_CONFIG, "skip %s>%s: source name too long for a tensor name "
                      "(at most %d characters)", canon, s->name, NEST_NAME_LEN - 6);
    const int S = (int)nest_shape_size(acts[seen[k]]), units = l->hp.units;
    nest_layer_declare_param(l, pname, 2, (int[]){units, S}, NEST_INIT_HE, 1, 1, S, units);
  }
  return NEST_OK;
}

const nest_skip *nest_net_skip(const nest_net *net, int layer, int slot) {
  for (int k = 0; k < net->nskips; ++k)
    if (net->skips[k].layer == layer && net->skips[k].slot == slot) return &net->skips[k];
  return NULL;
}

/* net->skips from the specs (after the layers declared their tensors). */
static nest_status resolve_skips(nest_net *net, const nest_layer_spec *specs) {
  int n = 0;
  for (int i = 0; i < net->nlayers; ++i) n += specs[i].nskips;
  net->nskips = n;
  if (!n) return NEST_OK;
  NEST_CALL(nest_calloc((void **)&net->skips, (size_t)n, sizeof *net->skips, "skip list"));
  n = 0;
  for (int i = 0; i < net->nlayers; ++i)
    for (int k = 0; k < specs[i].nskips; ++k) {
      nest_skip *sk = &net->skips[n++];
      sk->layer = i;
      sk->slot = 2 + k; /* after the dense layer's W and b */
      sk->src = nest_skip_source(specs, net->nlayers, specs[i].skip_from[k], sk->from);
      NEST_ASSERT(sk->src >= 0 && net->layers[i]->nparams > sk->slot);
    }
  return NEST_OK;
}

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
  size_t *sz = NULL, *aoff = NULL, *doff = NULL, *sdoff = NULL;
  int *grp = NULL; /* dact: -1 own buffer, 0 = A, 1 = B */
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_calloc((void **)&sdoff, (size_t)L + 1, sizeof *sdoff, "activation sizes"), done);
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
  /* skip sources j > 0: a buffer each for the skip tensors' share of dL/dact[j] (sdoff[j] > 0
   * marks one: its offset from the end of the shared buffers, plus 1) */
  size_t stotal = 0;
  for (int k = 0; k < net->nskips; ++k) {
    const int j = net->skips[k].src;
    if (j == 0 || sdoff[j]) continue;
    sdoff[j] = stotal + 1;
    stotal += sz[j];
  }
  const size_t all = base_ab + szab[0] + szab[1] + stotal;
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
  if (net->nskips) {
    NEST_CALL_GOTO(st, nest_calloc((void **)&net->sdact, (size_t)L + 1, sizeof(float *), "sdact"),
                   done);
    NEST_CALL_GOTO(st, nest_calloc((void **)&net->sd_used, (size_t)L + 1, sizeof(int), "sdact"),
                   done);
    for (int j = 1; j <= L; ++j)
      if (sdoff[j]) net->sdact[j] = net->act_mem + base_ab + szab[0] + szab[1] + sdoff[j] - 1;
  }
done:
  free(sdoff);
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
  nest_shape *acts = NULL;
  nest_net *net;
  NEST_CALL(nest_calloc((void **)&net, 1, sizeof *net, "network"));
  net->in_shape = in;
  net->nclasses = nclasses;
  net->max_batch = max_batch;
  net->nthreads = nthreads > 0 ? nthreads : 1;
  NEST_CALL_GOTO(st, nest_calloc((void **)&net->layers, nspecs, sizeof *net->layers, "layers"),
                 fail);

  /* 1. Create layers in order; each setup() derives its output shape from its input; the net
   * declares a dense layer's skip tensors after its own (acts[j] = the shape of act[j]). */
  nest_shape shape = in;
  NEST_CALL_GOTO(st, nest_calloc((void **)&acts, (size_t)nspecs + 1, sizeof *acts, "shapes"), fail);
  acts[0] = in;
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
    NEST_CALL_GOTO(st, nest_skip_declare(net->layers[i], specs, nspecs, i, acts), fail);
    shape = net->layers[i]->out;
    acts[i + 1] = shape;
  }
  free(acts);
  acts = NULL;
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
  NEST_CALL_GOTO(st, resolve_skips(net, specs), fail);
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
  free(acts);
  nest_net_destroy(&net);
  return st;
}

nest_status nest_net_clone(const nest_net *src, nest_net **out) {
  NEST_CALL(nest_net_create(src->specs, src->nlayers, src->in_shape, src->nclasses,
                            src->max_batch, src->nthreads, out));
  nest_net *d = *out;
  NEST_ASSERT(d->nparams == src->nparams && d->nbuf == src->nbuf);
  memcpy(d->params, src->params, sizeof(float) * src->nparams);
  memcpy(d->masks, src->masks, sizeof(float) * src->nparams);
  memcpy(d->mom, src->mom, sizeof(float) * src->nparams);
  if (src->nbuf) memcpy(d->buffers, src->buffers, sizeof(float) * src->nbuf);
  d->generation = src->generation;
  return NEST_OK;
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
  free(net->sdact);
  free(net->sd_used);
  free(net->skips);
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

/* Key of a skip tensor's streams: its destination and source names, so adding another skip
 * leaves this one's seed mask and values unchanged. (FNV-1a of "dest<from".) */
static uint64_t skip_key(const nest_layer *l, const nest_skip *sk) {
  uint64_t h = layer_key(l);
  h = (h ^ (unsigned char)'<') * 0x100000001b3ull;
  for (const char *c = sk->from; *c; ++c) h = (h ^ (unsigned char)*c) * 0x100000001b3ull;
  return h;
}

/* A skip tensor's seed mask: each position active with probability density, no repair. */
static void seed_skip_mask(nest_layer *l, const nest_skip *sk, uint64_t seed, double density) {
  const nest_param *p = &l->param[sk->slot];
  float *m = l->m[sk->slot];
  const double thresh = density * 4294967296.0;
  const uint64_t key = skip_key(l, sk);
#pragma omp parallel for schedule(static)
  for (long i = 0; i < (long)p->count; ++i)
    m[i] = density >= 1.0 || (double)mask_key(seed, key, 0, (size_t)i) < thresh ? 1.0f : 0.0f;
}

static double active_density(const nest_layer *l, int s) {
  const nest_param *p = &l->param[s];
  double active = 0;
  for (size_t i = 0; i < p->count; ++i) active += l->m[s][i];
  double dens = p->count ? active / (double)p->count : 1.0;
  return dens <= 0 ? 1.0 : dens;
}

/* Sum of fan_in x realised density over the maskable tensors of a layer with skips (its
 * chain tensor and every skip tensor: they all add into the same pre-activation). */
static double total_fan_in(const nest_layer *l) {
  double f = 0;
  for (int s = 0; s < l->nparams; ++s) {
    if (!l->param[s].maskable) continue;
    double active = 0;
    for (size_t i = 0; i < l->param[s].count; ++i) active += l->m[s][i];
    f += l->param[s].fan_in * (active / (double)l->param[s].count);
  }
  return f > 0 ? f : 1.0;
}

nest_status nest_net_init(nest_net *net, uint64_t seed, double density, int init_override) {
  return nest_net_init_ex(net, seed, density, density, init_override);
}

nest_status nest_net_init_ex(nest_net *net, uint64_t seed, double density, double skip_density,
                             int init_override) {
  if (!(density > 0.0 && density <= 1.0))
    return NEST_ERR(NEST_ERR_CONFIG, "density %g must be in (0, 1]", density);
  if (!(skip_density >= 0.0 && skip_density <= 1.0))
    return NEST_ERR(NEST_ERR_CONFIG, "skip density %g must be in [0, 1]", skip_density);
  /* Masks first (each tensor's from its own stream), then values: a layer with skips scales
   * its tensors by the fan-in of all of them. */
  int first_weight_layer = -1;
  for (int t = 0; t < net->ntensors; ++t) {
    nest_layer *l = net->tensors[t].layer;
    int s = net->tensors[t].slot;
    const nest_param *p = &l->param[s];
    const nest_skip *sk = nest_net_skip(net, l->index, s);
    if (sk) {
      seed_skip_mask(l, sk, seed, skip_density);
    } else if (p->maskable) {
      if (first_weight_layer < 0) first_weight_layer = l->index;
      seed_mask(l, s, seed, density, l->index == first_weight_layer);
    } else {
      for (size_t i = 0; i < p->count; ++i) l->m[s][i] = 1.0f;
    }
  }
  for (int t = 0; t < net->ntensors; ++t) {
    nest_layer *l = net->tensors[t].layer;
    int s = net->tensors[t].slot;
    const nest_param *p = &l->param[s];
    const nest_skip *sk = nest_net_skip(net, l->index, s);
    float *w = l->p[s];
    nest_init_kind kind = p->init;
    if (p->maskable && init_override >= 0) kind = (nest_init_kind)init_override;
    const int with_skips = p->maskable && l->nparams > 2 && nest_net_skip(net, l->index, 2);
    double std = 0;
    if (with_skips) {
      const double f = total_fan_in(l);
      if (kind == NEST_INIT_HE) std = sqrt(2.0 / f);
      if (kind == NEST_INIT_XAVIER) std = sqrt(2.0 / (f + p->fan_out));
    } else {
      const double dens = active_density(l, s);
      if (kind == NEST_INIT_HE) std = sqrt(2.0 / (p->fan_in * dens));
      if (kind == NEST_INIT_XAVIER) std = sqrt(2.0 / ((p->fan_in + p->fan_out) * dens));
    }
    const uint64_t key = sk ? skip_key(l, sk) : layer_key(l);
    const int kslot = sk ? 0 : s;
    switch (kind) {
      case NEST_INIT_ZERO: memset(w, 0, p->count * sizeof(float)); break;
      case NEST_INIT_ONE:
        for (size_t i = 0; i < p->count; ++i) w[i] = 1.0f;
        break;
      default:
#pragma omp parallel for schedule(static)
        for (long i = 0; i < (long)p->count; ++i)
          w[i] = l->m[s][i] * (float)std * normal_at(seed, key, kslot, (size_t)i);
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

/* Skip tensors of dense layer i: y[n, units] += act[src][n, S] · skipᵀ, one per slot in order. */
static void skip_forward(nest_net *net, const nest_ctx *ctx, int i) {
  nest_layer *l = net->layers[i];
  const int n = ctx->n, units = l->hp.units;
  if (n == 0) return;
  for (int s = 2; s < l->nparams; ++s) {
    const nest_skip *sk = nest_net_skip(net, i, s);
    const int S = l->param[s].dims[1];
    nest_sgemm(0, 1, n, units, S, 1.0f, net->act[sk->src], S, l->p[s], S, 1.0f, net->act[i + 1],
               units, ctx->nthreads);
  }
}

/* Their backward, from dy = dact[i + 1] (dL/d pre-activation): g = dyᵀ · act[src] (dense,
 * dormant positions included) and sdact[src] (+)= dy · skip (the first term of a backward
 * pass overwrites, the later ones add: destinations from the top, slots in order). */
static void skip_backward(nest_net *net, const nest_ctx *ctx, int i) {
  nest_layer *l = net->layers[i];
  const int n = ctx->n, units = l->hp.units;
  const float *dy = net->dact[i + 1];
  for (int s = 2; s < l->nparams; ++s) {
    const nest_skip *sk = nest_net_skip(net, i, s);
    const int S = l->param[s].dims[1];
    if (n == 0) {
      memset(l->g[s], 0, sizeof(float) * l->param[s].count);
      continue;
    }
    nest_sgemm(1, 0, units, S, n, 1.0f, dy, units, net->act[sk->src], S, 0.0f, l->g[s], S,
               ctx->nthreads);
    if (sk->src == 0) continue; /* nobody needs dL/dx */
    nest_sgemm(0, 0, n, S, units, 1.0f, dy, units, l->p[s], S, net->sd_used[sk->src] ? 1.0f : 0.0f,
               net->sdact[sk->src], S, ctx->nthreads);
    net->sd_used[sk->src] = 1;
  }
}

nest_status nest_net_forward(nest_net *net, const nest_ctx *ctx, const float *x,
                             const float **logits) {
  NEST_ASSERT(ctx->n >= 0 && ctx->n <= net->max_batch);
  size_t in_sz = (size_t)ctx->n * nest_shape_size(net->in_shape);
  if (x != net->act[0]) memcpy(net->act[0], x, in_sz * sizeof(float));
  for (int i = 0; i < net->nlayers; ++i) {
    nest_layer *l = net->layers[i];
    NEST_CALL(l->ops->forward(l, ctx, net->act[i], net->act[i + 1]));
    if (l->nparams > 2) skip_forward(net, ctx, i);
  }
  if (logits) *logits = net->act[net->nlayers];
  return NEST_OK;
}

nest_status nest_net_backward_ready(nest_net *net, const nest_ctx *ctx, const float *dlogits,
                                   nest_grads_ready_fn ready, void *arg) {
  size_t out_sz = (size_t)ctx->n * (size_t)net->nclasses;
  float *top = net->dact[net->nlayers];
  if (dlogits != top) memcpy(top, dlogits, out_sz * sizeof(float));
  if (net->nskips) memset(net->sd_used, 0, sizeof(int) * (size_t)(net->nlayers + 1));
  for (int i = net->nlayers - 1; i >= 0; --i) {
    nest_layer *l = net->layers[i];
    /* The first layer's dx is never needed: pass NULL to skip that GEMM. */
    NEST_CALL(l->ops->backward(l, ctx, net->act[i], net->act[i + 1], net->dact[i + 1],
                               i > 0 ? net->dact[i] : NULL));
    if (l->nparams > 2) skip_backward(net, ctx, i);
    /* layers lie in the arenas in order: everything from this layer's first tensor is final */
    if (ready && l->nparams > 0) NEST_CALL(ready(arg, l->param[0].offset));
    /* dact[i] is complete once the skip tensors reading act[i] (all in later layers) add in */
    if (i > 0 && net->nskips && net->sd_used[i]) {
      float *d = net->dact[i];
      const float *e = net->sdact[i];
      const long m = (long)((size_t)ctx->n * nest_shape_size(l->in));
#pragma omp parallel for simd schedule(static) if (m > 65536)
      for (long k = 0; k < m; ++k) d[k] += e[k];
    }
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
  /* a dense layer's skip tensors: one multiply-add per active weight too */
  for (int s = 2; l->kind == NEST_LAYER_DENSE && s < l->nparams; ++s)
    for (size_t j = 0; j < l->param[s].count; ++j) active += l->m[s][j] != 0.0f;
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
      case NEST_LAYER_DENSE:
        emit(buf, cap, &used, " %d", hp->units);
        for (int k = 0; k < net->nskips; ++k) /* its skip sources, "fc3 dense 10 <in,fc1" */
          if (net->skips[k].layer == i)
            emit(buf, cap, &used, "%s%s", net->skips[k].slot == 2 ? " <" : ",", net->skips[k].from);
        break;
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
    for (int s = 2; l->kind == NEST_LAYER_DENSE && s < l->nparams; ++s) {
      size_t active = 0;
      for (size_t j = 0; j < l->param[s].count; ++j) active += l->m[s][j] != 0.0f;
      fprintf(f, "; %s %zu / %zu", l->param[s].name, active, l->param[s].count);
    }
    fputc('\n', f);
  }
}
