/* layer.c — the layer-kind registry and the declaration helpers used by setup(). */
#include "nest/layer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const nest_layer_ops *const registry[NEST_LAYER_KIND_COUNT] = {
    [NEST_LAYER_DENSE] = &nest_dense_ops,         [NEST_LAYER_CONV2D] = &nest_conv2d_ops,
    [NEST_LAYER_MAXPOOL] = &nest_maxpool_ops,     [NEST_LAYER_RELU] = &nest_relu_ops,
    [NEST_LAYER_BATCHNORM] = &nest_batchnorm_ops, [NEST_LAYER_DROPOUT] = &nest_dropout_ops,
};

const nest_layer_ops *nest_layer_ops_of(nest_layer_kind kind) {
  return (kind >= 0 && kind < NEST_LAYER_KIND_COUNT) ? registry[kind] : NULL;
}

const char *nest_layer_kind_name(nest_layer_kind kind) {
  const nest_layer_ops *ops = nest_layer_ops_of(kind);
  return ops ? ops->kind : "?";
}

nest_param *nest_layer_declare_param(nest_layer *l, const char *name, int ndims, const int *dims,
                                     nest_init_kind init, int maskable, int decay, int fan_in,
                                     int fan_out) {
  NEST_ASSERT(l->nparams < NEST_MAX_PARAMS && ndims >= 1 && ndims <= 4);
  nest_param *p = &l->param[l->nparams++];
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "%s", name);
  p->ndims = ndims;
  p->count = 1;
  for (int i = 0; i < ndims; ++i) {
    p->dims[i] = dims[i];
    p->count *= (size_t)dims[i];
  }
  p->init = init;
  p->maskable = maskable;
  p->decay = decay;
  p->fan_in = fan_in;
  p->fan_out = fan_out;
  return p;
}

nest_buffer *nest_layer_declare_buffer(nest_layer *l, const char *name, size_t count,
                                       float init_value) {
  NEST_ASSERT(l->nbuffers < NEST_MAX_BUFFERS);
  nest_buffer *b = &l->buffer[l->nbuffers++];
  memset(b, 0, sizeof *b);
  snprintf(b->name, sizeof b->name, "%s", name);
  b->count = count;
  b->init_value = init_value;
  return b;
}

nest_status nest_layer_create(const nest_layer_ops *ops, const char *name, nest_shape in,
                              const nest_layer_hparams *hp, int max_batch, int nthreads,
                              nest_layer **out) {
  *out = NULL;
  nest_layer *l;
  NEST_CALL(nest_calloc((void **)&l, 1, sizeof *l, "layer"));
  l->ops = ops;
  for (int k = 0; k < NEST_LAYER_KIND_COUNT; ++k)
    if (nest_layer_ops_of((nest_layer_kind)k) == ops) l->kind = (nest_layer_kind)k;
  snprintf(l->name, sizeof l->name, "%s", name);
  l->in = in;
  if (hp) l->hp = *hp;
  nest_status st = ops->setup(l, max_batch, nthreads > 0 ? nthreads : 1);
  if (st != NEST_OK) {
    nest_error_trace(__FILE__, __LINE__);
    nest_layer_destroy(&l);
    return st;
  }
  *out = l;
  return NEST_OK;
}

/* Regions start on 16-float (64-byte) boundaries, as in the network's arenas. */
static size_t pad16(size_t n) { return (n + 15) / 16 * 16; }

nest_status nest_layer_bind_standalone(nest_layer *l) {
  NEST_ASSERT(!l->standalone);
  size_t total = 0;
  for (int i = 0; i < l->nparams; ++i) total += 3 * pad16(l->param[i].count);
  for (int i = 0; i < l->nbuffers; ++i) total += pad16(l->buffer[i].count);
  total += pad16(l->ws_floats) + pad16(l->cache_floats);
  float *mem;
  NEST_CALL(nest_malloc_aligned((void **)&mem, (total ? total : 1) * sizeof(float),
                                "standalone layer storage"));
  l->standalone = mem;
  float *p = mem;
  for (int i = 0; i < l->nparams; ++i) {
    size_t c = l->param[i].count, pc = pad16(c);
    l->p[i] = p;
    l->g[i] = p + pc;
    l->m[i] = p + 2 * pc;
    for (size_t j = 0; j < c; ++j) {
      l->p[i][j] = 0.0f;
      l->g[i][j] = 0.0f;
      l->m[i][j] = 1.0f;
    }
    p += 3 * pc;
  }
  for (int i = 0; i < l->nbuffers; ++i) {
    l->buf[i] = p;
    for (size_t j = 0; j < l->buffer[i].count; ++j) p[j] = l->buffer[i].init_value;
    p += pad16(l->buffer[i].count);
  }
  l->ws = l->ws_floats ? p : NULL;
  p += pad16(l->ws_floats);
  l->cache = l->cache_floats ? p : NULL;
  return NEST_OK;
}

void nest_layer_destroy(nest_layer **lp) {
  if (!lp || !*lp) return;
  nest_layer *l = *lp;
  if (l->ops && l->ops->cleanup) l->ops->cleanup(l);
  if (l->standalone) nest_free_aligned(l->standalone);
  free(l);
  *lp = NULL;
}
