/* onnx.c — a network as an ONNX model (onnx.h; the graph and metadata are described there and
 * in docs/onnx.md).
 *
 * The model is built as protobuf-c structures (the C code protoc-c generates at build time
 * from the system's onnx.proto) and packed in one go. Every structure, string and tensor of
 * the model is allocated through one builder that remembers its allocations and frees them all
 * at the end, so the emitting functions below only build and never free. Tensor data goes into
 * raw_data as little-endian bytes (what the ONNX format prescribes, whatever the host).
 * The builder tracks the current tensor (its name and whether it is [N, C, H, W] or [N, D]);
 * each layer reads it and leaves its own output there. The input steps come first, in
 * nest_infer's order: the input scale, a DR+SCANN reduction (raw [N, d] -> [N, k], reduce.h's
 * arrays as the model file holds them: nest_model_load_input reads them, never this file), the
 * normalisation. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/atomic.h"
#include "nest/onnx.h"
#include "onnx/onnx.pb-c.h"

#ifndef NEST_VERSION_STRING
#define NEST_VERSION_STRING "unknown"
#endif

/* Upper bounds of what one layer adds (the partial-area conv needs the most: 8 nodes, 9
 * initializers) and of the attributes of one node (Conv: kernel_shape, strides, pads, group). */
#define OB_NODES_PER_LAYER 10
#define OB_INITS_PER_LAYER 10
#define OB_ATTRS_PER_NODE 6
/* A protobuf message (and so an ONNX file without external data) is limited to 2 GiB. */
#define OB_MAX_BYTES ((size_t)2147483647)

typedef struct {
  const char *what; /* the file (or "ONNX export"): every message starts with it */
  nest_status st;   /* the first allocation failure */
  void **allocs;
  size_t nalloc, capalloc;
  Onnx__NodeProto **nodes;
  size_t nnodes, capnodes;
  Onnx__TensorProto **inits;
  size_t ninits, capinits;
  Onnx__StringStringEntryProto **props;
  size_t nprops, capprops;
  const char *cur; /* the current tensor */
  int rank4;       /* 1: cur is [N, C, H, W]; 0: [N, D] */
  const nest_net *net;
  const char **act; /* [nlayers + 1]: the [N, D] tensor a dense layer i reads (act[i]), for the
                       skip tensors that read it too */
} onnx_builder;

/* ---- allocation ----------------------------------------------------------------------------- */

static void *ob_alloc(onnx_builder *b, size_t bytes) {
  if (b->st != NEST_OK) return NULL;
  if (b->nalloc == b->capalloc) {
    size_t cap = b->capalloc ? 2 * b->capalloc : 256;
    void **a = realloc(b->allocs, cap * sizeof *a);
    if (!a) {
      b->st = NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory building the ONNX model", b->what);
      return NULL;
    }
    b->allocs = a;
    b->capalloc = cap;
  }
  void *p = calloc(1, bytes ? bytes : 1);
  if (!p) {
    b->st = NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory building the ONNX model (%zu bytes)",
                     b->what, bytes);
    return NULL;
  }
  b->allocs[b->nalloc++] = p;
  return p;
}

static void ob_free(onnx_builder *b) {
  for (size_t i = 0; i < b->nalloc; ++i) free(b->allocs[i]);
  free(b->allocs);
  b->allocs = NULL;
  b->nalloc = b->capalloc = 0;
}

static char *ob_strf(onnx_builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *ob_strf(onnx_builder *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = n >= 0 ? ob_alloc(b, (size_t)n + 1) : NULL;
  if (!s) return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

/* ---- a growing string (metadata values) ------------------------------------------------------ */

typedef struct {
  char *s;
  size_t n, cap;
  int failed;
} onnx_str;

static void str_add(onnx_str *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void str_add(onnx_str *t, const char *fmt, ...) {
  if (t->failed) return;
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (k < 0) {
    t->failed = 1;
    return;
  }
  if (t->n + (size_t)k + 1 > t->cap) {
    size_t cap = 2 * (t->n + (size_t)k + 1) + 64;
    char *s = realloc(t->s, cap);
    if (!s) {
      t->failed = 1;
      return;
    }
    t->s = s;
    t->cap = cap;
  }
  va_start(ap, fmt);
  vsnprintf(t->s + t->n, (size_t)k + 1, fmt, ap);
  va_end(ap);
  t->n += (size_t)k;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if s does not start one. */
static int utf8_len(const unsigned char *s) {
  int len = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3
            : (s[0] >> 3) == 30 ? 4 : 0;
  if (len == 2 && s[0] < 0xc2) return 0; /* overlong */
  for (int i = 1; i < len; ++i)
    if ((s[i] >> 6) != 2) return 0;
  return len;
}

/* A JSON string. Protobuf strings must be UTF-8: a byte that does not start a valid UTF-8
 * sequence (a Latin-1 CSV label) is taken as the Latin-1 character it encodes (\u00XX). */
static void str_json(onnx_str *t, const char *v) {
  str_add(t, "\"");
  for (const unsigned char *p = (const unsigned char *)v; *p;) {
    int len = utf8_len(p);
    if (*p == '"' || *p == '\\')
      str_add(t, "\\%c", *p);
    else if (*p < 0x20 || len == 0)
      str_add(t, "\\u%04x", *p);
    else
      str_add(t, "%.*s", len, (const char *)p);
    p += len > 0 ? len : 1;
  }
  str_add(t, "\"");
}

/* ---- nodes, attributes, tensors -------------------------------------------------------------- */

/* A node `op` named `name` with inputs in[0..nin) and one output; appended to the graph. */
static Onnx__NodeProto *ob_node(onnx_builder *b, const char *op, const char *name, int nin,
                                const char *const *in, const char *out) {
  Onnx__NodeProto *n = ob_alloc(b, sizeof *n);
  char **ins = ob_alloc(b, sizeof(char *) * (size_t)nin);
  char **outs = ob_alloc(b, sizeof(char *));
  Onnx__AttributeProto **attrs = ob_alloc(b, sizeof(*attrs) * OB_ATTRS_PER_NODE);
  char *nm = ob_strf(b, "%s", name), *opt = ob_strf(b, "%s", op), *o = ob_strf(b, "%s", out);
  if (b->st != NEST_OK) return NULL;
  onnx__node_proto__init(n);
  for (int i = 0; i < nin; ++i)
    if (!(ins[i] = ob_strf(b, "%s", in[i]))) return NULL;
  n->n_input = (size_t)nin;
  n->input = ins;
  outs[0] = o;
  n->n_output = 1;
  n->output = outs;
  n->name = nm;
  n->op_type = opt;
  n->attribute = attrs;
  NEST_ASSERT(b->nnodes < b->capnodes);
  b->nodes[b->nnodes++] = n;
  return n;
}

static Onnx__AttributeProto *ob_attr(onnx_builder *b, Onnx__NodeProto *n, const char *name,
                                     Onnx__AttributeProto__AttributeType type) {
  Onnx__AttributeProto *a = ob_alloc(b, sizeof *a);
  char *nm = ob_strf(b, "%s", name);
  if (!a || !nm) return NULL;
  onnx__attribute_proto__init(a);
  a->name = nm;
  a->has_type = 1;
  a->type = type;
  NEST_ASSERT(n->n_attribute < OB_ATTRS_PER_NODE);
  n->attribute[n->n_attribute++] = a;
  return a;
}

static nest_status ob_attr_int(onnx_builder *b, Onnx__NodeProto *n, const char *name, int64_t v) {
  Onnx__AttributeProto *a = ob_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
  if (!a) return b->st;
  a->has_i = 1;
  a->i = v;
  return NEST_OK;
}

static nest_status ob_attr_float(onnx_builder *b, Onnx__NodeProto *n, const char *name, float v) {
  Onnx__AttributeProto *a = ob_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
  if (!a) return b->st;
  a->has_f = 1;
  a->f = v;
  return NEST_OK;
}

static nest_status ob_attr_ints(onnx_builder *b, Onnx__NodeProto *n, const char *name, int cnt,
                                const int64_t *v) {
  Onnx__AttributeProto *a = ob_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
  int64_t *vals = ob_alloc(b, sizeof(int64_t) * (size_t)cnt);
  if (!a || !vals) return b->st;
  memcpy(vals, v, sizeof(int64_t) * (size_t)cnt);
  a->n_ints = (size_t)cnt;
  a->ints = vals;
  return NEST_OK;
}

/* An initializer `name` of type dt and shape dims[0..ndims) whose data are `bytes` bytes of
 * raw_data, left for the caller to fill (little-endian). Returns the data or NULL. */
static uint8_t *ob_init(onnx_builder *b, const char *name, int32_t dt, int ndims,
                        const int64_t *dims, size_t bytes) {
  Onnx__TensorProto *t = ob_alloc(b, sizeof *t);
  int64_t *d = ob_alloc(b, sizeof(int64_t) * (size_t)(ndims > 0 ? ndims : 1));
  uint8_t *data = ob_alloc(b, bytes);
  char *nm = ob_strf(b, "%s", name);
  if (b->st != NEST_OK) return NULL;
  onnx__tensor_proto__init(t);
  memcpy(d, dims, sizeof(int64_t) * (size_t)ndims);
  t->n_dims = (size_t)ndims;
  t->dims = d;
  t->has_data_type = 1;
  t->data_type = dt;
  t->name = nm;
  t->has_raw_data = 1;
  t->raw_data.len = bytes;
  t->raw_data.data = data;
  NEST_ASSERT(b->ninits < b->capinits);
  b->inits[b->ninits++] = t;
  return data;
}

static void put_le32(uint8_t *p, uint32_t u) {
  p[0] = (uint8_t)u;
  p[1] = (uint8_t)(u >> 8);
  p[2] = (uint8_t)(u >> 16);
  p[3] = (uint8_t)(u >> 24);
}

/* A float initializer holding v[0..prod(dims)). */
static nest_status ob_init_f32(onnx_builder *b, const char *name, int ndims, const int64_t *dims,
                               const float *v) {
  size_t count = 1;
  for (int i = 0; i < ndims; ++i) count *= (size_t)dims[i];
  uint8_t *p = ob_init(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, ndims, dims, 4 * count);
  if (!p) return b->st;
  for (size_t i = 0; i < count; ++i) {
    uint32_t u;
    memcpy(&u, v + i, 4);
    put_le32(p + 4 * i, u);
  }
  return NEST_OK;
}

/* A 1-D int64 initializer (shapes, axes, indices). */
static nest_status ob_init_i64(onnx_builder *b, const char *name, int n, const int64_t *v) {
  const int64_t dims[1] = {n};
  uint8_t *p = ob_init(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, dims, 8 * (size_t)n);
  if (!p) return b->st;
  for (int i = 0; i < n; ++i) {
    const uint64_t u = (uint64_t)v[i];
    put_le32(p + 8 * i, (uint32_t)u);
    put_le32(p + 8 * i + 4, (uint32_t)(u >> 32));
  }
  return NEST_OK;
}

/* A graph input / output: float tensor of shape [N, dims...] (N symbolic). */
static Onnx__ValueInfoProto *ob_value_info(onnx_builder *b, const char *name, int ndims,
                                           const int64_t *dims) {
  Onnx__ValueInfoProto *vi = ob_alloc(b, sizeof *vi);
  Onnx__TypeProto *tp = ob_alloc(b, sizeof *tp);
  Onnx__TypeProto__Tensor *tt = ob_alloc(b, sizeof *tt);
  Onnx__TensorShapeProto *sh = ob_alloc(b, sizeof *sh);
  Onnx__TensorShapeProto__Dimension **dv = ob_alloc(b, sizeof(*dv) * (size_t)(ndims + 1));
  char *nm = ob_strf(b, "%s", name), *batch = ob_strf(b, "N");
  if (b->st != NEST_OK) return NULL;
  onnx__value_info_proto__init(vi);
  onnx__type_proto__init(tp);
  onnx__type_proto__tensor__init(tt);
  onnx__tensor_shape_proto__init(sh);
  for (int i = 0; i <= ndims; ++i) {
    Onnx__TensorShapeProto__Dimension *d = ob_alloc(b, sizeof *d);
    if (!d) return NULL;
    onnx__tensor_shape_proto__dimension__init(d);
    if (i == 0) {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      d->dim_param = batch;
    } else {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      d->dim_value = dims[i - 1];
    }
    dv[i] = d;
  }
  sh->n_dim = (size_t)ndims + 1;
  sh->dim = dv;
  tt->has_elem_type = 1;
  tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  tt->shape = sh;
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  vi->name = nm;
  vi->type = tp;
  return vi;
}

/* ---- shape changes --------------------------------------------------------------------------- */

/* The current tensor as [N, C, H, W] for a layer that needs images (a conv or pool after a
 * dense layer: its (d, 1, 1) input). */
static nest_status ensure_rank4(onnx_builder *b, const nest_layer *l) {
  if (b->rank4) return NEST_OK;
  const int64_t shape[4] = {-1, l->in.c, l->in.h, l->in.w};
  const char *sname = ob_strf(b, "%s.in_shape", l->name), *out = ob_strf(b, "%s.in4", l->name);
  if (!sname || !out) return b->st;
  NEST_CALL(ob_init_i64(b, sname, 4, shape));
  if (!ob_node(b, "Reshape", out, 2, (const char *[]){b->cur, sname}, out)) return b->st;
  b->cur = out;
  b->rank4 = 1;
  return NEST_OK;
}

/* The current tensor as [N, D] (Flatten, axis 1): nest's layout is NCHW-contiguous, so this is
 * what a dense layer reads. */
static nest_status ensure_rank2(onnx_builder *b, const char *prefix) {
  if (!b->rank4) return NEST_OK;
  const char *out = ob_strf(b, "%s.flat", prefix);
  if (!out) return b->st;
  Onnx__NodeProto *n = ob_node(b, "Flatten", out, 1, &b->cur, out);
  if (!n) return b->st;
  NEST_CALL(ob_attr_int(b, n, "axis", 1));
  b->cur = out;
  b->rank4 = 0;
  return NEST_OK;
}

/* ---- the input: scale, reduction, normalisation ---------------------------------------------- */

/* DR+SCANN (reduce.h) on the scaled raw rows b->cur [N, d]:
 *   z [N, d] = (x - min) * s - mean      min, s, mean [d] (broadcast over N)
 *   y [N, k] = z · componentsᵀ           componentsᵀ [d, k] (nest stores components [k, d])
 * the float steps nest_reduce_apply takes, in its order (s from nest_reduce_scales, 0 for a
 * constant feature), so ONNX and nest_infer differ only by the summation order of the MatMul. */
static nest_status emit_reduce(onnx_builder *b, const nest_reduce *r) {
  const int d = r->d, k = r->k;
  const int64_t vd[1] = {d}, td[2] = {d, k};
  float *s = ob_alloc(b, sizeof(float) * (size_t)d);
  float *ct = ob_alloc(b, sizeof(float) * (size_t)d * (size_t)k); /* [d, k] */
  if (b->st != NEST_OK) return b->st;
  nest_reduce_scales(r, s);
  for (int j = 0; j < k; ++j)
    for (int i = 0; i < d; ++i) ct[(size_t)i * k + j] = r->components[(size_t)j * d + i];
  NEST_CALL(ob_init_f32(b, "reduce.min", 1, vd, r->min));
  NEST_CALL(ob_init_f32(b, "reduce.scale", 1, vd, s));
  NEST_CALL(ob_init_f32(b, "reduce.mean", 1, vd, r->mean));
  NEST_CALL(ob_init_f32(b, "reduce.components_t", 2, td, ct));
  if (!ob_node(b, "Sub", "reduce.shift", 2, (const char *[]){b->cur, "reduce.min"},
               "reduce.shifted") ||
      !ob_node(b, "Mul", "reduce.scale", 2, (const char *[]){"reduce.shifted", "reduce.scale"},
               "reduce.z") ||
      !ob_node(b, "Sub", "reduce.centre", 2, (const char *[]){"reduce.z", "reduce.mean"},
               "reduce.centred") ||
      !ob_node(b, "MatMul", "reduce.project", 2,
               (const char *[]){"reduce.centred", "reduce.components_t"}, "reduce.out"))
    return b->st;
  b->cur = "reduce.out";
  return NEST_OK;
}

/* x * input_scale (if not 1); the reduction (meta->reduce); then (x - mean[c]) / std[c] with
 * constants shaped [C, 1, 1] (broadcast over N, H, W) or [D] (tabular). The order of nest_infer
 * (scale, reduce, normalise). */
static nest_status emit_input(onnx_builder *b, const nest_net *net, const nest_onnx_meta *meta) {
  const int c = net->in_shape.c;
  const int64_t cdims[3] = {c, 1, 1};
  const int cnd = b->rank4 ? 3 : 1;
  const float scale = meta->input_scale;
  if (scale != 0.0f && scale != 1.0f) {
    const int64_t one[1] = {1};
    NEST_CALL(ob_init_f32(b, "input.scale", 1, one, &scale));
    if (!ob_node(b, "Mul", "input.scale", 2, (const char *[]){b->cur, "input.scale"},
                 "input.scaled"))
      return b->st;
    b->cur = "input.scaled";
  }
  if (meta->reduce) NEST_CALL(emit_reduce(b, meta->reduce));
  if (!meta->norm || meta->norm->nch == 0) return NEST_OK;
  NEST_CALL(ob_init_f32(b, "input.mean", cnd, cdims, meta->norm->mean));
  NEST_CALL(ob_init_f32(b, "input.std", cnd, cdims, meta->norm->std));
  if (!ob_node(b, "Sub", "input.centre", 2, (const char *[]){b->cur, "input.mean"},
               "input.centred") ||
      !ob_node(b, "Div", "input.norm", 2, (const char *[]){"input.centred", "input.std"},
               "input.normalised"))
    return b->st;
  b->cur = "input.normalised";
  return NEST_OK;
}

/* ---- layers ---------------------------------------------------------------------------------- */

/* dense: y[N, units] = x[N, D] · Wᵀ + b */
static nest_status emit_dense(onnx_builder *b, const nest_layer *l) {
  NEST_CALL(ensure_rank2(b, l->name));
  b->act[l->index] = b->cur;
  const nest_param *w = &l->param[0];
  const int64_t wd[2] = {w->dims[0], w->dims[1]}, bd[1] = {w->dims[0]};
  const char *wn = ob_strf(b, "%s.W", l->name), *bn = ob_strf(b, "%s.b", l->name);
  const char *out = ob_strf(b, "%s.out", l->name);
  if (b->st != NEST_OK) return b->st;
  NEST_CALL(ob_init_f32(b, wn, 2, wd, l->p[0]));
  NEST_CALL(ob_init_f32(b, bn, 1, bd, l->p[1]));
  Onnx__NodeProto *n = ob_node(b, "Gemm", l->name, 3, (const char *[]){b->cur, wn, bn}, out);
  if (!n) return b->st;
  NEST_CALL(ob_attr_int(b, n, "transB", 1));
  b->cur = out;
  /* skip tensors (net.h): y += act[src] · skipᵀ, one Gemm and one Add each, in slot order */
  for (int s = 2; s < l->nparams; ++s) {
    const nest_skip *sk = nest_net_skip(b->net, l->index, s);
    const nest_param *p = &l->param[s];
    const int64_t sd[2] = {p->dims[0], p->dims[1]};
    const char *sn = ob_strf(b, "%s.%s", l->name, p->name);
    const char *so = ob_strf(b, "%s.%s.out", l->name, p->name);
    const char *sum = ob_strf(b, "%s.sum%d", l->name, s - 1);
    if (b->st != NEST_OK) return b->st;
    NEST_ASSERT(sk && b->act[sk->src]);
    NEST_CALL(ob_init_f32(b, sn, 2, sd, l->p[s]));
    Onnx__NodeProto *g = ob_node(b, "Gemm", sn, 2, (const char *[]){b->act[sk->src], sn}, so);
    if (!g) return b->st;
    NEST_CALL(ob_attr_int(b, g, "transB", 1));
    if (!ob_node(b, "Add", sum, 2, (const char *[]){b->cur, so}, sum)) return b->st;
    b->cur = sum;
  }
  return NEST_OK;
}

/* The geometry attributes of Conv / MaxPool: kernel_shape, strides, pads (top, left, bottom,
 * right: nest pads symmetrically). */
static nest_status conv_attrs(onnx_builder *b, Onnx__NodeProto *n, const nest_layer *l) {
  const int64_t k[2] = {l->hp.kh, l->hp.kw}, s[2] = {l->hp.stride, l->hp.stride};
  const int64_t p[4] = {l->hp.pad, l->hp.pad, l->hp.pad, l->hp.pad};
  NEST_CALL(ob_attr_ints(b, n, "kernel_shape", 2, k));
  NEST_CALL(ob_attr_ints(b, n, "strides", 2, s));
  NEST_CALL(ob_attr_ints(b, n, "pads", 4, p));
  return NEST_OK;
}

/* out = Conv(in, weights W[OC, C', kh, kw] named wn, bias bn or none; group). */
static nest_status conv_node(onnx_builder *b, const nest_layer *l, const char *name,
                             const char *in, const char *wn, const char *bn, int group,
                             const char *out) {
  Onnx__NodeProto *n =
      ob_node(b, "Conv", name, bn ? 3 : 2, (const char *[]){in, wn, bn}, out);
  if (!n) return b->st;
  NEST_CALL(conv_attrs(b, n, l));
  if (group > 1) NEST_CALL(ob_attr_int(b, n, "group", group));
  return NEST_OK;
}

/* Input map m of a partial-area mask Msk[OC, C, PQ]: 0 all zeros, 1 all ones, 2 mixed. */
static int area_map_kind(const float *msk, int oc, int c, size_t pq, int m) {
  int any0 = 0, any1 = 0;
  for (int o = 0; o < oc; ++o) {
    const float *r = msk + ((size_t)o * c + m) * pq;
    for (size_t j = 0; j < pq; ++j) {
      any1 |= r[j] != 0.0f;
      any0 |= r[j] == 0.0f;
    }
  }
  return any0 && any1 ? 2 : any1;
}

/* The mixed maps mix[0..nm) of a partial-area conv: S[N, OC, P, Q] = sum_j Msk[:, mix[j]] ⊙
 * C[:, mix[j]] (onnx.h). Leaves S's name in *sum. */
static nest_status emit_area_sum(onnx_builder *b, const nest_layer *l, const float *msk,
                                 const int64_t *mix, int nm, const char **sum) {
  const int oc = l->hp.out_c, c = l->in.c;
  const size_t kk = (size_t)l->hp.kh * l->hp.kw, pq = (size_t)l->out.h * l->out.w;
  const char *in = b->cur;
  if (nm < c) { /* only the mixed maps: Gather along the channel axis */
    const char *idx = ob_strf(b, "%s.area_maps", l->name), *g = ob_strf(b, "%s.area_in", l->name);
    if (!idx || !g) return b->st;
    NEST_CALL(ob_init_i64(b, idx, nm, mix));
    Onnx__NodeProto *n = ob_node(b, "Gather", g, 2, (const char *[]){in, idx}, g);
    if (!n) return b->st;
    NEST_CALL(ob_attr_int(b, n, "axis", 1));
    in = g;
  }
  /* Wg[j*OC + o, 0] = W[o, mix[j]]; Mg[j, o] = Msk[o, mix[j]] */
  float *wg = ob_alloc(b, sizeof(float) * (size_t)nm * oc * kk);
  float *mg = ob_alloc(b, sizeof(float) * (size_t)nm * oc * pq);
  const char *wn = ob_strf(b, "%s.area_W", l->name), *cn = ob_strf(b, "%s.area_c", l->name);
  const char *sh = ob_strf(b, "%s.area_shape", l->name), *c5 = ob_strf(b, "%s.area_c5", l->name);
  const char *mn = ob_strf(b, "%s.area_mask", l->name), *mo = ob_strf(b, "%s.area_masked", l->name);
  const char *ax = ob_strf(b, "%s.area_axes", l->name), *so = ob_strf(b, "%s.area_sum", l->name);
  if (b->st != NEST_OK) return b->st;
  for (int j = 0; j < nm; ++j)
    for (int o = 0; o < oc; ++o) {
      memcpy(wg + ((size_t)j * oc + o) * kk, l->p[0] + ((size_t)o * c + mix[j]) * kk,
             sizeof(float) * kk);
      memcpy(mg + ((size_t)j * oc + o) * pq, msk + ((size_t)o * c + mix[j]) * pq,
             sizeof(float) * pq);
    }
  const int64_t wd[4] = {(int64_t)nm * oc, 1, l->hp.kh, l->hp.kw};
  const int64_t md[4] = {nm, oc, l->out.h, l->out.w};
  const int64_t shape[5] = {-1, nm, oc, l->out.h, l->out.w}, axes[1] = {1};
  NEST_CALL(ob_init_f32(b, wn, 4, wd, wg));
  NEST_CALL(ob_init_f32(b, mn, 4, md, mg));
  NEST_CALL(ob_init_i64(b, sh, 5, shape));
  NEST_CALL(ob_init_i64(b, ax, 1, axes));
  NEST_CALL(conv_node(b, l, cn, in, wn, NULL, nm, cn)); /* [N, nm*OC, P, Q] */
  if (!ob_node(b, "Reshape", c5, 2, (const char *[]){cn, sh}, c5) ||
      !ob_node(b, "Mul", mo, 2, (const char *[]){c5, mn}, mo))
    return b->st;
  Onnx__NodeProto *r = ob_node(b, "ReduceSum", so, 2, (const char *[]){mo, ax}, so);
  if (!r) return b->st;
  NEST_CALL(ob_attr_int(b, r, "keepdims", 0));
  *sum = so;
  return NEST_OK;
}

/* conv2d with partial-area masks that are not all ones: the all-ones maps through one plain
 * Conv (the other maps' weights zeroed; it carries the bias), the mixed maps through
 * emit_area_sum, the two added; all-zero maps drop out. */
static nest_status emit_conv_area(onnx_builder *b, const nest_layer *l, const float *msk,
                                  const int *kind, const char *out) {
  const int oc = l->hp.out_c, c = l->in.c;
  const size_t kk = (size_t)l->hp.kh * l->hp.kw;
  int64_t *mix = ob_alloc(b, sizeof(int64_t) * (size_t)c);
  if (!mix) return b->st;
  int nm = 0, nones = 0;
  for (int m = 0; m < c; ++m) {
    if (kind[m] == 2) mix[nm++] = m;
    nones += kind[m] == 1;
  }
  const char *x = b->cur, *sum = NULL, *plain = NULL;
  NEST_CALL(emit_area_sum(b, l, msk, mix, nm, &sum));
  const char *bn = ob_strf(b, "%s.b", l->name);
  if (!bn) return b->st;
  if (nones > 0) {
    float *wp = ob_alloc(b, sizeof(float) * (size_t)oc * c * kk);
    const char *wn = ob_strf(b, "%s.W", l->name);
    plain = ob_strf(b, "%s.plain", l->name);
    if (b->st != NEST_OK) return b->st;
    for (int o = 0; o < oc; ++o)
      for (int m = 0; m < c; ++m)
        if (kind[m] == 1)
          memcpy(wp + ((size_t)o * c + m) * kk, l->p[0] + ((size_t)o * c + m) * kk,
                 sizeof(float) * kk);
    const int64_t wd[4] = {oc, c, l->hp.kh, l->hp.kw}, bd[1] = {oc};
    NEST_CALL(ob_init_f32(b, wn, 4, wd, wp));
    NEST_CALL(ob_init_f32(b, bn, 1, bd, l->p[1]));
    NEST_CALL(conv_node(b, l, plain, x, wn, bn, 1, plain));
  } else { /* no plain part: the bias, shaped [OC, 1, 1] to broadcast over N, P, Q */
    const int64_t bd[3] = {oc, 1, 1};
    NEST_CALL(ob_init_f32(b, bn, 3, bd, l->p[1]));
    plain = bn;
  }
  if (!ob_node(b, "Add", out, 2, (const char *[]){plain, sum}, out)) return b->st;
  return NEST_OK;
}

/* conv2d: Conv, or the partial-area form when its area mask is not all ones. */
static nest_status emit_conv(onnx_builder *b, const nest_layer *l) {
  NEST_CALL(ensure_rank4(b, l));
  const int oc = l->hp.out_c, c = l->in.c;
  const char *out = ob_strf(b, "%s.out", l->name);
  if (!out) return b->st;
  const float *msk = NULL;
  for (int i = 0; l->hp.area && i < l->nbuffers; ++i)
    if (strcmp(l->buffer[i].name, "area") == 0) msk = l->buf[i];
  if (l->hp.area && !msk)
    return NEST_ERR(NEST_ERR_INTERNAL, "%s: layer %s: partial-area conv without an area buffer",
                    b->what, l->name);
  int *kind = ob_alloc(b, sizeof(int) * (size_t)c);
  if (!kind) return b->st;
  int all_ones = 1;
  for (int m = 0; msk && m < c; ++m) {
    kind[m] = area_map_kind(msk, oc, c, (size_t)l->out.h * l->out.w, m);
    all_ones &= kind[m] == 1;
  }
  if (!all_ones) {
    NEST_CALL(emit_conv_area(b, l, msk, kind, out));
  } else {
    const int64_t wd[4] = {oc, c, l->hp.kh, l->hp.kw}, bd[1] = {oc};
    const char *wn = ob_strf(b, "%s.W", l->name), *bn = ob_strf(b, "%s.b", l->name);
    if (!wn || !bn) return b->st;
    NEST_CALL(ob_init_f32(b, wn, 4, wd, l->p[0]));
    NEST_CALL(ob_init_f32(b, bn, 1, bd, l->p[1]));
    NEST_CALL(conv_node(b, l, l->name, b->cur, wn, bn, 1, out));
  }
  b->cur = out;
  return NEST_OK;
}

static nest_status emit_maxpool(onnx_builder *b, const nest_layer *l) {
  NEST_CALL(ensure_rank4(b, l));
  const char *out = ob_strf(b, "%s.out", l->name);
  if (!out) return b->st;
  Onnx__NodeProto *n = ob_node(b, "MaxPool", l->name, 1, &b->cur, out);
  if (!n) return b->st;
  NEST_CALL(conv_attrs(b, n, l));
  b->cur = out;
  return NEST_OK;
}

static nest_status emit_relu(onnx_builder *b, const nest_layer *l) {
  const char *out = ob_strf(b, "%s.out", l->name);
  if (!out || !ob_node(b, "Relu", l->name, 1, &b->cur, out)) return b->st;
  b->cur = out;
  return NEST_OK;
}

/* batchnorm (eval): gamma * (x - running_mean) / sqrt(running_var + eps) + beta per channel
 * (axis 1 of [N, C, H, W]) or feature (of [N, D]). */
static nest_status emit_batchnorm(onnx_builder *b, const nest_layer *l) {
  const int64_t cd[1] = {l->in.c};
  const char *g = ob_strf(b, "%s.gamma", l->name), *be = ob_strf(b, "%s.beta", l->name);
  const char *rm = ob_strf(b, "%s.running_mean", l->name);
  const char *rv = ob_strf(b, "%s.running_var", l->name), *out = ob_strf(b, "%s.out", l->name);
  if (b->st != NEST_OK) return b->st;
  NEST_CALL(ob_init_f32(b, g, 1, cd, l->p[0]));
  NEST_CALL(ob_init_f32(b, be, 1, cd, l->p[1]));
  NEST_CALL(ob_init_f32(b, rm, 1, cd, l->buf[0]));
  NEST_CALL(ob_init_f32(b, rv, 1, cd, l->buf[1]));
  Onnx__NodeProto *n = ob_node(b, "BatchNormalization", l->name, 5,
                               (const char *[]){b->cur, g, be, rm, rv}, out);
  if (!n) return b->st;
  NEST_CALL(ob_attr_float(b, n, "epsilon", l->hp.eps));
  b->cur = out;
  return NEST_OK;
}

static nest_status emit_layer(onnx_builder *b, const nest_layer *l) {
  switch (l->kind) {
    case NEST_LAYER_DENSE: return emit_dense(b, l);
    case NEST_LAYER_CONV2D: return emit_conv(b, l);
    case NEST_LAYER_MAXPOOL: return emit_maxpool(b, l);
    case NEST_LAYER_RELU: return emit_relu(b, l);
    case NEST_LAYER_BATCHNORM: return emit_batchnorm(b, l);
    case NEST_LAYER_DROPOUT: return NEST_OK; /* the identity at inference */
    default:
      return NEST_ERR(NEST_ERR_ARG, "%s: layer %s: kind %s cannot be exported to ONNX", b->what,
                      l->name, nest_layer_kind_name(l->kind));
  }
}

/* The last tensor becomes the output "logits" [N, classes]: the last node's output renamed,
 * or a Flatten / Identity when the last layer left an image-shaped tensor or no node. */
static nest_status emit_output(onnx_builder *b) {
  if (b->rank4) {
    Onnx__NodeProto *n = ob_node(b, "Flatten", "logits", 1, &b->cur, "logits");
    if (!n) return b->st;
    NEST_CALL(ob_attr_int(b, n, "axis", 1));
  } else if (b->nnodes > 0 && strcmp(b->nodes[b->nnodes - 1]->output[0], b->cur) == 0) {
    char *name = ob_strf(b, "logits");
    if (!name) return b->st;
    b->nodes[b->nnodes - 1]->output[0] = name;
  } else if (!ob_node(b, "Identity", "logits", 1, &b->cur, "logits")) {
    return b->st;
  }
  b->cur = "logits";
  return NEST_OK;
}

/* ---- checks and metadata --------------------------------------------------------------------- */

/* (onnx.h) A (D, 1, 1) input and no layer that needs images. */
int nest_onnx_input_is_tabular(const nest_net *net) {
  if (net->in_shape.h != 1 || net->in_shape.w != 1) return 0;
  for (int i = 0; i < net->nlayers; ++i)
    if (net->layers[i]->kind == NEST_LAYER_CONV2D || net->layers[i]->kind == NEST_LAYER_MAXPOOL)
      return 0;
  return 1;
}

static int all_finite(const float *v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!isfinite(v[i])) return 0;
  return 1;
}

static nest_status check_net(const onnx_builder *b, const nest_net *net) {
  for (int i = 0; i < net->nlayers; ++i) {
    const nest_layer *l = net->layers[i];
    for (int k = 0; k < l->nparams; ++k)
      if (!all_finite(l->p[k], l->param[k].count))
        return NEST_ERR(NEST_ERR_NUMERIC, "%s: layer %s: %s holds NaN or Inf values", b->what,
                        l->name, l->param[k].name);
    for (int k = 0; k < l->nbuffers; ++k)
      if (!all_finite(l->buf[k], l->buffer[k].count))
        return NEST_ERR(NEST_ERR_NUMERIC, "%s: layer %s: %s holds NaN or Inf values", b->what,
                        l->name, l->buffer[k].name);
  }
  return NEST_OK;
}

static nest_status check_meta(const onnx_builder *b, const nest_net *net, const nest_onnx_meta *m) {
  const nest_norm *nm = m->norm;
  if (nm && nm->nch != 0) {
    if (nm->nch != net->in_shape.c)
      return NEST_ERR(NEST_ERR_ARG,
                      "%s: the normalisation has %d channels / features, the model's input %d",
                      b->what, nm->nch, net->in_shape.c);
    for (int c = 0; c < nm->nch; ++c)
      if (!isfinite(nm->mean[c]) || !isfinite(nm->std[c]) || !(nm->std[c] > 0.0f))
        return NEST_ERR(NEST_ERR_ARG,
                        "%s: normalisation of channel %d: mean %g, std %g (need finite, std > 0)",
                        b->what, c, nm->mean[c], nm->std[c]);
  }
  if (m->reduce) {
    if (!nest_onnx_input_is_tabular(net) || m->reduce->k != net->in_shape.c)
      return NEST_ERR(NEST_ERR_ARG, "%s: the reduction gives %d features, the model's input is "
                      "%dx%dx%d (need %d, 1, 1 and no conv2d / maxpool)", b->what, m->reduce->k,
                      net->in_shape.c, net->in_shape.h, net->in_shape.w, m->reduce->k);
    NEST_CALL(nest_reduce_validate(m->reduce, b->what));
  }
  if (!isfinite(m->input_scale) || m->input_scale < 0.0f)
    return NEST_ERR(NEST_ERR_ARG, "%s: input scale %g (need finite, > 0; 0 = 1)", b->what,
                    m->input_scale);
  for (int k = 0; m->labels && k < net->nclasses; ++k)
    if (!m->labels[k])
      return NEST_ERR(NEST_ERR_ARG, "%s: class %d has no label", b->what, k);
  if (m->nprops < 0 || (m->nprops > 0 && !m->props))
    return NEST_ERR(NEST_ERR_ARG, "%s: %d metadata entries but none given", b->what, m->nprops);
  for (int k = 0; k < m->nprops; ++k)
    if (!m->props[k].key || !m->props[k].value || !m->props[k].key[0])
      return NEST_ERR(NEST_ERR_ARG, "%s: metadata entry %d has no key or no value", b->what, k);
  return NEST_OK;
}

/* Append metadata (key, value); a key given twice is an error naming it. */
static nest_status ob_prop(onnx_builder *b, const char *key, const char *value) {
  for (size_t i = 0; i < b->nprops; ++i)
    if (strcmp(b->props[i]->key, key) == 0)
      return NEST_ERR(NEST_ERR_ARG, "%s: metadata key %s given twice (nest writes it itself)",
                      b->what, key);
  Onnx__StringStringEntryProto *e = ob_alloc(b, sizeof *e);
  char *k = ob_strf(b, "%s", key), *v = ob_strf(b, "%s", value);
  if (b->st != NEST_OK) return b->st;
  onnx__string_string_entry_proto__init(e);
  e->key = k;
  e->value = v;
  NEST_ASSERT(b->nprops < b->capprops);
  b->props[b->nprops++] = e;
  return NEST_OK;
}

/* A JSON array of floats (%.9g: they read back to the same float). */
static void str_floats(onnx_str *t, const float *v, int n) {
  str_add(t, "[");
  for (int i = 0; i < n; ++i) str_add(t, "%s%.9g", i ? ", " : "", v[i]);
  str_add(t, "]");
}

/* One metadata entry whose value is built in t (then reset); NOMEM if t failed. */
static nest_status ob_prop_str(onnx_builder *b, const char *key, onnx_str *t) {
  if (t->failed) return NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory (metadata %s)", b->what, key);
  nest_status st = ob_prop(b, key, t->s ? t->s : "");
  t->n = 0;
  if (t->s) t->s[0] = '\0';
  return st;
}

static nest_status emit_metadata(onnx_builder *b, const nest_net *net, const nest_onnx_meta *m) {
  onnx_str t = {0};
  nest_status st = NEST_OK;
  const nest_shape in = net->in_shape;
  const int tab = !b->rank4, has_norm = m->norm && m->norm->nch > 0;
  char num[64];
  NEST_CALL_GOTO(st, ob_prop(b, "nest.format", NEST_ONNX_FORMAT), done);
  snprintf(num, sizeof num, "%d", NEST_ONNX_FORMAT_VERSION);
  NEST_CALL_GOTO(st, ob_prop(b, "nest.format_version", num), done);
  str_add(&t, "[");
  for (int k = 0; k < net->nclasses; ++k) {
    snprintf(num, sizeof num, "%d", k);
    str_add(&t, "%s", k ? ", " : "");
    str_json(&t, m->labels ? m->labels[k] : num);
  }
  str_add(&t, "]");
  NEST_CALL_GOTO(st, ob_prop_str(b, "nest.labels", &t), done);
  NEST_CALL_GOTO(st, ob_prop(b, "nest.input_layout", tab ? "NF" : "NCHW"), done);
  if (m->reduce)
    str_add(&t, "[%d]", m->reduce->d);
  else if (tab)
    str_add(&t, "[%d]", in.c);
  else
    str_add(&t, "[%d, %d, %d]", in.c, in.h, in.w);
  NEST_CALL_GOTO(st, ob_prop_str(b, "nest.input_shape", &t), done);
  snprintf(num, sizeof num, "%.9g", m->input_scale != 0.0f ? m->input_scale : 1.0f);
  NEST_CALL_GOTO(st, ob_prop(b, "nest.input_scale", num), done);
  NEST_CALL_GOTO(st, ob_prop(b, "nest.normalization",
                             !has_norm ? "none" : tab ? "per_feature" : "per_channel"),
                 done);
  if (has_norm) {
    str_floats(&t, m->norm->mean, m->norm->nch);
    NEST_CALL_GOTO(st, ob_prop_str(b, "nest.norm_mean", &t), done);
    str_floats(&t, m->norm->std, m->norm->nch);
    NEST_CALL_GOTO(st, ob_prop_str(b, "nest.norm_std", &t), done);
  }
  if (m->reduce) {
    NEST_CALL_GOTO(st, ob_prop(b, "nest.reduce", nest_reduce_kind_name(m->reduce->kind)), done);
    snprintf(num, sizeof num, "%d", m->reduce->k);
    NEST_CALL_GOTO(st, ob_prop(b, "nest.reduce_k", num), done);
  }
  const size_t na = (size_t)nest_net_arch_string(net, NULL, 0) + 1;
  const size_t nw = (size_t)nest_net_widths_string(net, NULL, 0) + 1;
  char *arch = ob_alloc(b, na), *widths = ob_alloc(b, nw);
  if (b->st != NEST_OK) {
    st = b->st;
    goto done;
  }
  nest_net_arch_string(net, arch, na);
  nest_net_widths_string(net, widths, nw);
  NEST_CALL_GOTO(st, ob_prop(b, "nest.arch", arch), done);
  NEST_CALL_GOTO(st, ob_prop(b, "nest.widths", widths), done);
  int64_t active = 0, total = 0, params = 0;
  nest_net_count(net, &active, &total, &params);
  snprintf(num, sizeof num, "%lld", (long long)active);
  NEST_CALL_GOTO(st, ob_prop(b, "nest.active_weights", num), done);
  snprintf(num, sizeof num, "%lld", (long long)total);
  NEST_CALL_GOTO(st, ob_prop(b, "nest.total_weights", num), done);
  for (int k = 0; k < m->nprops; ++k)
    NEST_CALL_GOTO(st, ob_prop(b, m->props[k].key, m->props[k].value), done);
done:
  free(t.s);
  return st;
}

/* ---- the model ------------------------------------------------------------------------------- */

/* Build the whole graph and metadata into b, then pack the model into *out. */
static nest_status build_and_pack(onnx_builder *b, const nest_net *net, const nest_onnx_meta *m,
                                  uint8_t **out, size_t *len) {
  const nest_shape in = net->in_shape;
  /* + the input's nodes (scale 1, reduction 4, normalisation 2) and initializers (1, 4, 2),
   * and the output's node */
  b->capnodes = (size_t)net->nlayers * OB_NODES_PER_LAYER + 2 * (size_t)net->nskips + 16;
  b->capinits = (size_t)net->nlayers * OB_INITS_PER_LAYER + (size_t)net->nskips + 16;
  b->net = net;
  b->act = ob_alloc(b, sizeof(*b->act) * ((size_t)net->nlayers + 1));
  b->capprops = (size_t)m->nprops + 24; /* nest's own: 15 at most (emit_metadata) */
  b->nodes = ob_alloc(b, sizeof(*b->nodes) * b->capnodes);
  b->inits = ob_alloc(b, sizeof(*b->inits) * b->capinits);
  b->props = ob_alloc(b, sizeof(*b->props) * b->capprops);
  if (b->st != NEST_OK) return b->st;
  b->cur = "input";
  b->rank4 = !nest_onnx_input_is_tabular(net);
  /* the graph's input: [N, C, H, W], [N, D], or with a reduction the raw [N, d] */
  const int64_t in_dims[3] = {m->reduce ? m->reduce->d : in.c, in.h, in.w};
  const int64_t out_dims[1] = {net->nclasses};
  Onnx__ValueInfoProto *vin = ob_value_info(b, "input", b->rank4 ? 3 : 1, in_dims);
  if (!vin) return b->st;
  NEST_CALL(emit_metadata(b, net, m));
  NEST_CALL(emit_input(b, net, m));
  for (int i = 0; i < net->nlayers; ++i) NEST_CALL(emit_layer(b, net->layers[i]));
  NEST_CALL(emit_output(b));
  Onnx__ValueInfoProto *vout = ob_value_info(b, "logits", 1, out_dims);
  if (!vout) return b->st;

  Onnx__GraphProto graph = ONNX__GRAPH_PROTO__INIT;
  graph.name = "nest";
  graph.n_node = b->nnodes;
  graph.node = b->nodes;
  graph.n_initializer = b->ninits;
  graph.initializer = b->inits;
  graph.n_input = 1;
  graph.input = &vin;
  graph.n_output = 1;
  graph.output = &vout;
  Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT, *opsets = &opset;
  opset.domain = ""; /* the default domain, ai.onnx */
  opset.has_version = 1;
  opset.version = NEST_ONNX_OPSET;
  Onnx__ModelProto model = ONNX__MODEL_PROTO__INIT;
  model.has_ir_version = 1;
  model.ir_version = ONNX__VERSION__IR_VERSION; /* of the onnx.proto nest was built with */
  model.n_opset_import = 1;
  model.opset_import = &opsets;
  model.producer_name = "nest";
  model.producer_version = NEST_VERSION_STRING;
  model.doc_string = m->doc ? (char *)m->doc : NULL; /* packed, never written */
  model.graph = &graph;
  model.n_metadata_props = b->nprops;
  model.metadata_props = b->props;

  const size_t n = onnx__model_proto__get_packed_size(&model);
  if (n > OB_MAX_BYTES)
    return NEST_ERR(NEST_ERR_ARG,
                    "%s: the model needs %zu bytes, more than the 2 GiB one ONNX file can hold "
                    "without external data (not supported)",
                    b->what, n);
  NEST_CALL(nest_malloc((void **)out, n, "ONNX model"));
  const size_t packed = onnx__model_proto__pack(&model, *out);
  if (packed != n) {
    free(*out);
    *out = NULL;
    return NEST_ERR(NEST_ERR_INTERNAL, "%s: protobuf-c packed %zu of %zu bytes", b->what, packed,
                    n);
  }
  *len = n;
  return NEST_OK;
}

static nest_status onnx_encode(const nest_net *net, const nest_onnx_meta *meta, const char *what,
                               uint8_t **out, size_t *len) {
  static const nest_onnx_meta none = {0};
  if (!out || !len) return NEST_ERR(NEST_ERR_ARG, "%s: no output buffer", what);
  *out = NULL;
  *len = 0;
  if (!net || net->nlayers < 1) return NEST_ERR(NEST_ERR_ARG, "%s: no network to export", what);
  onnx_builder b = {.what = what, .st = NEST_OK};
  if (!meta) meta = &none;
  NEST_CALL(check_meta(&b, net, meta));
  NEST_CALL(check_net(&b, net));
  nest_status st = build_and_pack(&b, net, meta, out, len);
  ob_free(&b);
  if (st != NEST_OK) nest_error_trace(__FILE__, __LINE__);
  return st;
}

nest_status nest_onnx_encode(const nest_net *net, const nest_onnx_meta *meta, uint8_t **out,
                             size_t *len) {
  NEST_CALL(onnx_encode(net, meta, "ONNX export", out, len));
  return NEST_OK;
}

nest_status nest_onnx_write(const nest_net *net, const nest_onnx_meta *meta, const char *path) {
  if (!path || !path[0]) return NEST_ERR(NEST_ERR_ARG, "ONNX export: no output file");
  uint8_t *buf = NULL;
  size_t len = 0;
  NEST_CALL(onnx_encode(net, meta, path, &buf, &len));
  char tmp[4096];
  FILE *f = NULL;
  nest_status st = nest_atomic_fopen(path, tmp, sizeof tmp, &f);
  if (st == NEST_OK) {
    int e = 0;
    if (fwrite(buf, 1, len, f) != len) e = errno ? errno : EIO;
    if (e) { /* keep fwrite's own reason (a full disk) */
      fclose(f);
      nest_atomic_abort(tmp);
      st = NEST_ERR(NEST_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    } else {
      st = nest_atomic_fclose(f, tmp, path);
    }
  }
  free(buf);
  NEST_CALL(st);
  return NEST_OK;
}
