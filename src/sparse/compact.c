/* compact.c — nest_sparse_create: analyse a trained net and compile its compact program
 * (sparse.h for what is removed, folded and fused; sparse_internal.h for the program).
 *
 * Three passes over the net's activation tensors (t = 0 the input .. nlayers the logits):
 *  1. forward, "live": a channel (unit / feature map) is live when some active weight path
 *     reaches it from the input. A dead channel is input-independent: its values (a constant
 *     per unit, a plane per map) are computed in double by the layers' eval formulas;
 *  2. backward, "need": a live channel is needed when an active weight (not gated off by an
 *     area mask) reads it for a needed live channel of the next dense / conv layer. The
 *     tensors after the last dense / conv layer keep every channel (they are the outputs);
 *  3. build: every other tensor keeps the channels both live and needed, in source order.
 *     Dense / conv layers get their kept rows and the columns of kept inputs; active weights
 *     from dead inputs are folded into the bias (a bias plane where the folded term varies
 *     over a conv output). Batch norm folds into the op before it, ReLU fuses into it.
 * Skip tensors (net.h "Skip connections") are parts of their destination dense layer: in pass 1
 * a unit is live when its chain or a skip tensor reads a live channel (dead sources fold into
 * its bias through the skip weights too), in pass 2 a needed row marks what its skip tensors
 * read in their source tensors as needed, and in pass 3 the op's CSR rows hold the chain's
 * entries, then each skip tensor's, as columns of one concatenated input (dense_part below:
 * the one row builder for both), rebased onto the activation arena at layout.
 * Everything here runs once per create and may allocate; nothing here is on the hot path. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/layer.h"
#include "nest/net.h"
#include "simd.h"
#include "sparse_internal.h"

/* ---- the analysis ---------------------------------------------------------------------------- */

/* One activation tensor of the net during the analysis. */
typedef struct {
  nest_shape sh;
  uint8_t *live, *need; /* [c] */
  int32_t *map;         /* [c] compact channel or -1 */
  int32_t *inv;         /* [kept] source channel of each compact channel */
  int kept;
  double *cval; /* [c*h*w] values of dead channels (input-independent) */
} tensor;

typedef struct {
  const nest_net *net;
  int nt; /* tensors: nlayers + 1 */
  tensor *t;
  int last_lin;    /* index of the last dense / conv layer */
  int32_t *buf_of; /* [nt] the program buffer holding t[j] (the input of the op built for layer
                      j; set in pass 3, for the layers that get an op) */
} analysis;

static int is_linear(const nest_layer *l) {
  return l->kind == NEST_LAYER_DENSE || l->kind == NEST_LAYER_CONV2D;
}

static size_t plane(nest_shape s) { return (size_t)s.h * s.w; }

/* The partial-area mask [OC, C, OH*OW] of a conv layer, or NULL. */
static const float *area_of(const nest_layer *l) {
  if (l->kind != NEST_LAYER_CONV2D || !l->hp.area) return NULL;
  for (int b = 0; b < l->nbuffers; ++b)
    if (strcmp(l->buffer[b].name, "area") == 0) return l->buf[b];
  return NULL;
}

/* Kernel (o, m) of a conv layer has an active weight. */
static int kernel_active(const nest_layer *l, int o, int m) {
  const size_t kk = (size_t)l->hp.kh * l->hp.kw;
  const float *M = l->m[0] + ((size_t)o * l->in.c + m) * kk;
  for (size_t k = 0; k < kk; ++k)
    if (M[k] != 0.0f) return 1;
  return 0;
}

/* Kernel (o, m) contributes somewhere: active weights and an area mask not all zero. */
static int kernel_used(const nest_layer *l, int o, int m) {
  if (!kernel_active(l, o, m)) return 0;
  const float *a = area_of(l);
  if (!a) return 1;
  const size_t n = plane(l->out);
  const float *r = a + ((size_t)o * l->in.c + m) * n;
  for (size_t p = 0; p < n; ++p)
    if (r[p] != 0.0f) return 1;
  return 0;
}

/* acc[OH*OW] += the contributions of the dead input maps of `in` through kernels (o, m) of conv
 * layer l, gated by its area mask: what those maps add to output map o whatever the input. */
static void conv_fold(const nest_layer *l, const tensor *in, int o, double *acc) {
  const int C = l->in.c, H = l->in.h, Wd = l->in.w, kh = l->hp.kh, kw = l->hp.kw;
  const int s = l->hp.stride, pad = l->hp.pad, OH = l->out.h, OW = l->out.w;
  const float *W = l->p[0], *M = l->m[0], *area = area_of(l);
  for (int m = 0; m < C; ++m) {
    if (in->live[m] || !kernel_used(l, o, m)) continue;
    const double *x = in->cval + (size_t)m * H * Wd;
    const size_t wo = ((size_t)o * C + m) * kh * kw;
    for (int p = 0; p < OH; ++p)
      for (int q = 0; q < OW; ++q) {
        const size_t pos = (size_t)p * OW + q;
        if (area && area[((size_t)o * C + m) * OH * OW + pos] == 0.0f) continue;
        double v = 0.0;
        for (int ki = 0; ki < kh; ++ki)
          for (int kj = 0; kj < kw; ++kj) {
            const int r = p * s + ki - pad, c = q * s + kj - pad;
            if (r < 0 || r >= H || c < 0 || c >= Wd || M[wo + ki * kw + kj] == 0.0f) continue;
            v += (double)W[wo + ki * kw + kj] * x[(size_t)r * Wd + c];
          }
        acc[pos] += v;
      }
  }
}

/* One weight tensor into a dense layer: the chain's W (part 0) or a skip tensor (parts 1..),
 * W, M [units, |src|] reading tensor src (t[j] of the analysis: j = the layer's own input for
 * the chain, the skip's act index otherwise). */
typedef struct {
  const float *W, *M;
  const tensor *src;
  int j;
} dense_part;

/* The parts of dense layer i: the chain, then its skip tensors in slot order. Returns the count. */
static int dense_parts(const nest_net *net, const tensor *t, int i, dense_part *parts) {
  const nest_layer *l = net->layers[i];
  parts[0] = (dense_part){l->p[0], l->m[0], &t[i], i};
  int n = 1;
  for (int s = 2; s < l->nparams; ++s) {
    const nest_skip *sk = nest_net_skip(net, i, s);
    NEST_ASSERT(sk && n < 1 + NEST_MAX_SKIPS);
    parts[n++] = (dense_part){l->p[s], l->m[s], &t[sk->src], sk->src};
  }
  return n;
}

/* Sum of the active weights of row o of part p times the values of its dead inputs. */
static double dense_fold(const dense_part *p, int o) {
  const size_t D = nest_shape_size(p->src->sh), hw = plane(p->src->sh);
  const float *W = p->W + (size_t)o * D, *M = p->M + (size_t)o * D;
  double v = 0.0;
  for (size_t j = 0; j < D; ++j)
    if (M[j] != 0.0f && !p->src->live[j / hw]) v += (double)W[j] * p->src->cval[j];
  return v;
}

/* Row o of part p reads a live input through an active weight. */
static int dense_row_live(const dense_part *p, int o) {
  const size_t D = nest_shape_size(p->src->sh), hw = plane(p->src->sh);
  const float *M = p->M + (size_t)o * D;
  for (size_t j = 0; j < D; ++j)
    if (M[j] != 0.0f && p->src->live[j / hw]) return 1;
  return 0;
}

/* Batch norm in eval mode, the layer's own formula (batchnorm.c), in double. */
static void bn_coeffs(const nest_layer *l, int c, double *scale, double *shift) {
  const double istd = 1.0 / sqrt((double)l->buf[1][c] + (double)l->hp.eps);
  *scale = (double)l->p[0][c] * istd;
  *shift = (double)l->p[1][c] - (double)l->buf[0][c] * *scale;
}

/* Max pooling of one plane in double (padding never wins: windows are clipped). */
static void pool_plane(const nest_layer *l, const double *x, double *y) {
  const int H = l->in.h, Wd = l->in.w, s = l->hp.stride, pad = l->hp.pad;
  for (int p = 0; p < l->out.h; ++p)
    for (int q = 0; q < l->out.w; ++q) {
      double m = -INFINITY;
      for (int i = 0; i < l->hp.kh; ++i)
        for (int j = 0; j < l->hp.kw; ++j) {
          const int r = p * s + i - pad, c = q * s + j - pad;
          if (r >= 0 && r < H && c >= 0 && c < Wd && x[(size_t)r * Wd + c] > m)
            m = x[(size_t)r * Wd + c];
        }
      y[(size_t)p * l->out.w + q] = m;
    }
}

/* Pass 1 through layer i: liveness and the values of dead channels of its output. */
static nest_status live_layer(const analysis *a, int i) {
  const nest_layer *l = a->net->layers[i];
  const tensor *in = &a->t[i];
  tensor *out = &a->t[i + 1];
  const size_t hw = plane(out->sh);
  double *pl = NULL;
  dense_part parts[1 + NEST_MAX_SKIPS];
  int np;
  switch (l->kind) {
  case NEST_LAYER_DENSE: /* live through the chain or a skip tensor; dead: b + every part's fold */
    np = dense_parts(a->net, a->t, i, parts);
    for (int o = 0; o < out->sh.c; ++o) {
      int live = 0;
      for (int p = 0; p < np && !live; ++p) live = dense_row_live(&parts[p], o);
      out->live[o] = (uint8_t)live;
      if (live) continue;
      out->cval[o] = (double)l->p[1][o];
      for (int p = 0; p < np; ++p) out->cval[o] += dense_fold(&parts[p], o);
    }
    return NEST_OK;
  case NEST_LAYER_CONV2D:
    for (int o = 0; o < out->sh.c; ++o) {
      int live = 0;
      for (int m = 0; m < in->sh.c && !live; ++m) live = in->live[m] && kernel_used(l, o, m);
      out->live[o] = (uint8_t)live;
      if (live) continue;
      pl = out->cval + (size_t)o * hw;
      for (size_t p = 0; p < hw; ++p) pl[p] = l->p[1][o];
      conv_fold(l, in, o, pl);
    }
    return NEST_OK;
  default: break;
  }
  /* per-channel layers: liveness passes through; dead values are transformed */
  const size_t hwi = plane(in->sh);
  for (int c = 0; c < out->sh.c; ++c) {
    out->live[c] = in->live[c];
    if (in->live[c]) continue;
    const double *x = in->cval + (size_t)c * hwi;
    double *y = out->cval + (size_t)c * hw, sc, sh;
    switch (l->kind) {
    case NEST_LAYER_BATCHNORM:
      bn_coeffs(l, c, &sc, &sh);
      for (size_t p = 0; p < hw; ++p) y[p] = x[p] * sc + sh;
      break;
    case NEST_LAYER_RELU:
      for (size_t p = 0; p < hw; ++p) y[p] = x[p] > 0.0 ? x[p] : 0.0;
      break;
    case NEST_LAYER_MAXPOOL: pool_plane(l, x, y); break;
    case NEST_LAYER_DROPOUT: /* identity in eval */ memcpy(y, x, sizeof(double) * hw); break;
    default:
      return NEST_ERR(NEST_ERR_ARG, "%s: layer kind %s is not supported by sparse inference",
                      l->name, nest_layer_kind_name(l->kind));
    }
  }
  return NEST_OK;
}

/* Pass 2 through layer i: the channels of its input (and of its skip tensors' sources) a
 * needed channel of its output reads are needed (or-ed in: a tensor may be read by the chain
 * and by skip tensors of later layers, which pass 2 visits first). */
static void need_layer(const analysis *a, int i) {
  const nest_layer *l = a->net->layers[i];
  const tensor *in = &a->t[i], *out = &a->t[i + 1];
  if (l->kind == NEST_LAYER_DENSE) {
    dense_part parts[1 + NEST_MAX_SKIPS];
    const int np = dense_parts(a->net, a->t, i, parts);
    for (int p = 0; p < np; ++p) {
      const tensor *src = parts[p].src;
      const size_t D = nest_shape_size(src->sh), hw = plane(src->sh);
      for (int o = 0; o < out->sh.c; ++o) {
        if (!out->need[o] || !out->live[o]) continue;
        const float *M = parts[p].M + (size_t)o * D;
        for (size_t j = 0; j < D; ++j)
          if (M[j] != 0.0f && src->live[j / hw]) src->need[j / hw] = 1;
      }
    }
  } else if (l->kind == NEST_LAYER_CONV2D) {
    for (int o = 0; o < out->sh.c; ++o) {
      if (!out->need[o] || !out->live[o]) continue;
      for (int m = 0; m < in->sh.c; ++m)
        if (in->live[m] && !in->need[m] && kernel_used(l, o, m)) in->need[m] = 1;
    }
  } else {
    for (int c = 0; c < in->sh.c; ++c) in->need[c] |= out->need[c];
  }
}

static void analysis_free(analysis *a) {
  if (!a->t) return;
  for (int i = 0; i < a->nt; ++i) {
    free(a->t[i].live);
    free(a->t[i].need);
    free(a->t[i].map);
    free(a->t[i].inv);
    free(a->t[i].cval);
  }
  free(a->t);
  a->t = NULL;
  free(a->buf_of);
}

static nest_status analysis_alloc(analysis *a, const nest_net *net) {
  a->net = net;
  a->nt = net->nlayers + 1;
  NEST_CALL(nest_calloc((void **)&a->t, (size_t)a->nt, sizeof(tensor), "sparse analysis"));
  NEST_CALL(nest_calloc((void **)&a->buf_of, (size_t)a->nt, sizeof(int32_t), "sparse analysis"));
  for (int i = 0; i < a->nt; ++i) {
    tensor *t = &a->t[i];
    t->sh = i < net->nlayers ? net->layers[i]->in : net->layers[net->nlayers - 1]->out;
    const size_t c = (size_t)t->sh.c + 1, n = nest_shape_size(t->sh) + 1;
    NEST_CALL(nest_calloc((void **)&t->live, c, 1, "sparse analysis"));
    NEST_CALL(nest_calloc((void **)&t->need, c, 1, "sparse analysis"));
    NEST_CALL(nest_calloc((void **)&t->map, c, sizeof(int32_t), "sparse analysis"));
    NEST_CALL(nest_calloc((void **)&t->inv, c, sizeof(int32_t), "sparse analysis"));
    NEST_CALL(nest_calloc((void **)&t->cval, n, sizeof(double), "sparse analysis"));
  }
  return NEST_OK;
}

/* Passes 1 and 2 and the compact numbering of every tensor. */
static nest_status analyse(analysis *a) {
  const nest_net *net = a->net;
  a->last_lin = -1;
  for (int i = 0; i < net->nlayers; ++i)
    if (is_linear(net->layers[i])) a->last_lin = i;
  if (a->last_lin < 0)
    return NEST_ERR(NEST_ERR_ARG, "sparse inference needs a net with a dense or conv layer");
  memset(a->t[0].live, 1, (size_t)a->t[0].sh.c);
  for (int i = 0; i < net->nlayers; ++i) NEST_CALL(live_layer(a, i));
  for (int i = a->last_lin + 1; i < a->nt; ++i) memset(a->t[i].need, 1, (size_t)a->t[i].sh.c);
  for (int i = a->last_lin; i >= 0; --i) need_layer(a, i);
  /* A per-channel layer's input and output keep the same channels (its op maps channel c to
   * c): what a skip tensor needs in a layer's input is computed on through it too. */
  for (int i = 0; i < a->last_lin; ++i)
    if (!is_linear(net->layers[i]))
      for (int c = 0; c < a->t[i].sh.c; ++c) a->t[i + 1].need[c] |= a->t[i].need[c];
  for (int i = 0; i < a->nt; ++i) {
    tensor *t = &a->t[i];
    t->kept = 0;
    for (int c = 0; c < t->sh.c; ++c) {
      const int keep = i > a->last_lin || (t->live[c] && t->need[c]);
      t->map[c] = keep ? t->kept : -1;
      if (keep) t->inv[t->kept++] = c;
    }
  }
  return NEST_OK;
}

/* ---- growable arrays for the build ----------------------------------------------------------- */

typedef struct {
  void *p;
  size_t n, cap, size;
} vec;

static nest_status vec_push(vec *v, const void *item) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? 2 * v->cap : 64;
    void *p = realloc(v->p, cap * v->size);
    if (!p) return NEST_ERR(NEST_ERR_NOMEM, "sparse inference: out of memory building the program");
    v->p = p;
    v->cap = cap;
  }
  memcpy((char *)v->p + v->n * v->size, item, v->size);
  v->n++;
  return NEST_OK;
}

/* ---- building the ops ------------------------------------------------------------------------ */

static nest_shape compact_shape(const tensor *t) { return (nest_shape){t->kept, t->sh.h, t->sh.w}; }

static nest_status op_alloc_csr(sp_op *op, int rows, int64_t nnz) {
  op->rows = rows;
  op->nnz = nnz;
  NEST_CALL(nest_calloc((void **)&op->rowptr, (size_t)rows + 1, sizeof(int32_t), "sparse CSR"));
  NEST_CALL(nest_calloc((void **)&op->colidx, (size_t)nnz + 1, sizeof(int32_t), "sparse CSR"));
  NEST_CALL(nest_calloc((void **)&op->values, (size_t)nnz + 1, sizeof(float), "sparse CSR"));
  NEST_CALL(nest_calloc((void **)&op->bias, (size_t)rows + 1, sizeof(float), "sparse bias"));
  return NEST_OK;
}

/* Row o of part p into the CSR: its active weights from kept channels, at columns col0 + the
 * compact feature (ascending). The number of entries, or -1 if it reads a live channel that was
 * dropped (pass 2 keeps what a kept row reads: an internal error). With values NULL: counted. */
static int64_t dense_row(const dense_part *p, int o, int32_t col0, int32_t *colidx,
                         float *values) {
  const tensor *in = p->src;
  const size_t D = nest_shape_size(in->sh), hw = plane(in->sh);
  const float *Wr = p->W + (size_t)o * D, *Mr = p->M + (size_t)o * D;
  int64_t k = 0;
  for (size_t j = 0; j < D; ++j) {
    if (Mr[j] == 0.0f) continue;
    const int32_t c = in->map[j / hw];
    if (c < 0) {
      if (in->live[j / hw]) return -1;
      continue; /* dead: folded into the bias */
    }
    if (values) {
      colidx[k] = col0 + (int32_t)((size_t)c * hw + j % hw);
      values[k] = Wr[j];
    }
    ++k;
  }
  return k;
}

/* Dense layer i: rows = kept units; CSR over the kept features of its input, then of each skip
 * tensor's source (sp_op.src_*: part p at columns [src_col0[p], + src_cols[p])); dead inputs of
 * every part folded into the bias. */
static nest_status build_dense(sp_op *op, const analysis *a, int i) {
  const nest_layer *l = a->net->layers[i];
  const tensor *out = &a->t[i + 1];
  dense_part parts[1 + NEST_MAX_SKIPS];
  const int np = dense_parts(a->net, a->t, i, parts);
  op->kind = NEST_SPARSE_DENSE;
  op->nsrc = np;
  op->cols = 0;
  for (int p = 0; p < np; ++p) {
    op->src_buf[p] = a->buf_of[parts[p].j]; /* sparse_internal.h; buf_of[0] = 0, the input */
    op->src_col0[p] = op->cols;
    op->src_cols[p] = (int32_t)((size_t)parts[p].src->kept * plane(parts[p].src->sh));
    op->cols += op->src_cols[p];
  }
  int64_t nnz = 0;
  for (int r = 0; r < out->kept; ++r)
    for (int p = 0; p < np; ++p) {
      const int64_t n = dense_row(&parts[p], out->inv[r], 0, NULL, NULL);
      if (n < 0) /* a kept row reads only kept or dead channels (pass 2) */
        return NEST_ERR(NEST_ERR_INTERNAL, "%s: row %d reads a dropped live input", l->name,
                        out->inv[r]);
      nnz += n;
    }
  NEST_CALL(op_alloc_csr(op, out->kept, nnz));
  int64_t k = 0;
  for (int r = 0; r < out->kept; ++r) {
    const int o = out->inv[r];
    double b = (double)l->p[1][o];
    for (int p = 0; p < np; ++p) {
      k += dense_row(&parts[p], o, op->src_col0[p], op->colidx + k, op->values + k);
      b += dense_fold(&parts[p], o);
    }
    op->rowptr[r + 1] = (int32_t)k;
    op->bias[r] = (float)b;
  }
  return NEST_OK;
}

/* Row order of the SELL form: decreasing length, ties by index. */
static const int32_t *sell_rowptr;
static int sell_cmp(const void *a, const void *b) {
  const int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
  const int32_t li = sell_rowptr[i + 1] - sell_rowptr[i], lj = sell_rowptr[j + 1] - sell_rowptr[j];
  return li != lj ? (li > lj ? -1 : 1) : (i > j) - (i < j);
}

/* The SELL-W copy of a dense op's CSR (sparse_internal.h), for one-sample tiles. */
static nest_status build_sell(sp_op *op) {
  const int W = SP_W, ns = (op->rows + W - 1) / W;
  int32_t *order = NULL;
  op->nslices = ns;
  NEST_CALL(nest_calloc((void **)&order, (size_t)op->rows + 1, sizeof(int32_t), "sparse SELL"));
  for (int r = 0; r < op->rows; ++r) order[r] = r;
  sell_rowptr = op->rowptr; /* create runs on one thread: qsort has no context argument */
  qsort(order, (size_t)op->rows, sizeof(int32_t), sell_cmp);
  nest_status st =
      nest_calloc((void **)&op->sell_off, (size_t)ns + 1, sizeof(int64_t), "sparse SELL");
  if (st == NEST_OK)
    st = nest_calloc((void **)&op->sell_len, (size_t)ns + 1, sizeof(int32_t), "sparse SELL");
  if (st == NEST_OK)
    st = nest_calloc((void **)&op->sell_lens, (size_t)ns * W + 1, sizeof(int32_t), "sparse SELL");
  if (st == NEST_OK)
    st = nest_calloc((void **)&op->sell_rows, (size_t)ns * W + 1, sizeof(int32_t), "sparse SELL");
  if (st == NEST_OK)
    st = nest_calloc((void **)&op->sell_bias, (size_t)ns * W + 1, sizeof(float), "sparse SELL");
  for (int g = 0; g < ns && st == NEST_OK; ++g) {
    for (int j = 0; j < W; ++j) {
      const int i = g * W + j, r = i < op->rows ? order[i] : -1;
      op->sell_rows[i] = r;
      op->sell_lens[i] = r < 0 ? 0 : op->rowptr[r + 1] - op->rowptr[r];
      op->sell_bias[i] = r < 0 ? 0.0f : op->bias[r];
    }
    op->sell_len[g] = op->sell_lens[g * W];
    op->sell_off[g + 1] = op->sell_off[g] + (int64_t)op->sell_len[g] * W;
  }
  const size_t total = st == NEST_OK ? (size_t)op->sell_off[ns] : 0;
  if (st == NEST_OK)
    st = nest_calloc((void **)&op->sell_val, total + 1, sizeof(float), "sparse SELL");
  if (st == NEST_OK)
    st = nest_calloc((void **)&op->sell_col, total + 1, sizeof(int32_t), "sparse SELL");
  for (int i = 0; i < ns * W && st == NEST_OK; ++i) {
    const int r = op->sell_rows[i];
    for (int32_t k = 0; r >= 0 && k < op->sell_lens[i]; ++k) {
      const size_t at = (size_t)op->sell_off[i / W] + (size_t)k * W + (size_t)(i % W);
      op->sell_val[at] = op->values[op->rowptr[r] + k];
      op->sell_col[at] = op->colidx[op->rowptr[r] + k];
    }
  }
  free(order);
  return st;
}

/* Runs of the area mask row r[OH*OW] (positions kept), appended to `runs`. */
static nest_status area_runs(const float *r, int OH, int OW, vec *runs) {
  for (int p = 0; p < OH; ++p)
    for (int q = 0; q < OW;) {
      if (r[(size_t)p * OW + q] == 0.0f) {
        ++q;
        continue;
      }
      sp_run run = {p, q, q};
      while (q < OW && r[(size_t)p * OW + q] != 0.0f) ++q;
      run.q1 = q;
      NEST_CALL(vec_push(runs, &run));
    }
  return NEST_OK;
}

static int all_ones(const float *r, size_t n) {
  for (size_t p = 0; p < n; ++p)
    if (r[p] == 0.0f) return 0;
  return 1;
}

/* The taps of kernel (o, m) of conv layer l (compact input map mc) appended to the entries;
 * padded input plane Hp x Wp. */
static nest_status kernel_taps(const nest_layer *l, int o, int m, int mc, int Hp, int Wp, vec *col,
                               vec *val, vec *toff) {
  const int kh = l->hp.kh, kw = l->hp.kw;
  const size_t wo = ((size_t)o * l->in.c + m) * kh * kw;
  for (int ki = 0; ki < kh; ++ki)
    for (int kj = 0; kj < kw; ++kj) {
      if (l->m[0][wo + ki * kw + kj] == 0.0f) continue;
      const int32_t c = (mc * kh + ki) * kw + kj, t = (mc * Hp + ki) * Wp + kj;
      NEST_CALL(vec_push(col, &c));
      NEST_CALL(vec_push(val, &l->p[0][wo + ki * kw + kj]));
      NEST_CALL(vec_push(toff, &t));
    }
  return NEST_OK;
}

/* Row r of a conv op: taps of the used kernels of kept input maps, one segment per gated
 * kernel, consecutive whole-plane kernels merged into one segment. */
static nest_status conv_row(const nest_layer *l, const tensor *in, int o, int Hp, int Wp, vec *col,
                            vec *val, vec *toff, vec *segs, vec *runs) {
  const size_t n = plane(l->out), first = segs->n; /* this row's first segment */
  const float *area = area_of(l);
  for (int mc = 0; mc < in->kept; ++mc) {
    const int m = in->inv[mc];
    if (!kernel_used(l, o, m)) continue;
    const float *ar = area ? area + ((size_t)o * l->in.c + m) * n : NULL;
    const int full = !ar || all_ones(ar, n);
    sp_seg seg = {(int32_t)val->n, 0, -1, -1};
    NEST_CALL(kernel_taps(l, o, m, mc, Hp, Wp, col, val, toff));
    seg.t1 = (int32_t)val->n;
    sp_seg *prev = segs->n > first ? (sp_seg *)segs->p + segs->n - 1 : NULL;
    if (full && prev && prev->r0 < 0 && prev->t1 == seg.t0) {
      prev->t1 = seg.t1; /* the same whole plane: one pass over both kernels' taps */
      continue;
    }
    if (!full) {
      seg.r0 = (int32_t)runs->n;
      NEST_CALL(area_runs(ar, l->out.h, l->out.w, runs));
      seg.r1 = (int32_t)runs->n;
    }
    NEST_CALL(vec_push(segs, &seg));
  }
  return NEST_OK;
}

/* Chunks a and b have the same width and entries of the same segments (their bits may
 * differ: each chain keeps its own masks). */
static int same_chunk(const sp_ochunk *a, const sp_ochunk *b, int OW, const sp_oent *e) {
  const int wa = OW - a->q0 < SP_W ? OW - a->q0 : SP_W, wb = OW - b->q0 < SP_W ? OW - b->q0 : SP_W;
  if (wa != wb || a->e1 - a->e0 != b->e1 - b->e0) return 0;
  for (int32_t i = 0; i < a->e1 - a->e0; ++i)
    if (e[a->e0 + i].seg != e[b->e0 + i].seg) return 0;
  return 1;
}

/* Groups of up to 4 consecutive alike chunks among och[c0 .. c1) (sp_ochunk.n). */
static void group_ochunks(sp_ochunk *och, int32_t c0, int32_t c1, int OW, const sp_oent *e) {
  for (int32_t c = c0; c < c1;) {
    int n = 1;
    while (n < 4 && c + n < c1 && same_chunk(&och[c], &och[c + n], OW, e)) ++n;
    och[c].n = n;
    for (int i = 1; i < n; ++i) och[c + i].n = 0;
    c += n;
  }
}

/* The output-stationary form of a stride-1 conv op for one-sample tiles (sparse_internal.h). */
static nest_status build_ochunks(sp_op *op, const nest_layer *l, const tensor *in,
                                 const tensor *out) {
  const int OH = l->out.h, OW = l->out.w, C = l->in.c;
  const size_t kk = (size_t)l->hp.kh * l->hp.kw, n = (size_t)OH * OW;
  const float *area = area_of(l);
  vec och = {NULL, 0, 0, sizeof(sp_ochunk)}, oent = {NULL, 0, 0, sizeof(sp_oent)};
  nest_status st =
      nest_calloc((void **)&op->ochptr, (size_t)op->rows + 1, sizeof(int32_t), "sparse conv");
  for (int r = 0; r < op->rows && st == NEST_OK; ++r) {
    const int o = out->inv[r];
    for (int q0 = 0; q0 < OW && st == NEST_OK; q0 += SP_W) /* by column: alike rows group */
      for (int p = 0; p < OH && st == NEST_OK; ++p) {
        const int w = OW - q0 < SP_W ? OW - q0 : SP_W;
        const uint32_t all = w >= 32 ? 0xffffffffu : (1u << w) - 1u;
        sp_ochunk c = {p, q0, (int32_t)oent.n, 0, 1};
        for (int32_t g = op->segptr[r]; g < op->segptr[r + 1] && st == NEST_OK; ++g) {
          const sp_seg *sg = &op->segs[g];
          sp_oent e = {g, all};
          if (sg->r0 >= 0) { /* a gated kernel: its input map's area row */
            const int m = in->inv[(size_t)op->colidx[sg->t0] / kk];
            const float *ar = area + ((size_t)o * C + (size_t)m) * n + (size_t)p * OW + q0;
            e.bits = 0;
            for (int j = 0; j < w; ++j) e.bits |= (uint32_t)(ar[j] != 0.0f) << j;
          }
          if (e.bits) st = vec_push(&oent, &e);
        }
        c.e1 = (int32_t)oent.n;
        if (st == NEST_OK) st = vec_push(&och, &c);
      }
    op->ochptr[r + 1] = (int32_t)och.n;
    if (st == NEST_OK)
      group_ochunks((sp_ochunk *)och.p, op->ochptr[r], op->ochptr[r + 1], OW,
                    (const sp_oent *)oent.p);
  }
  op->och = och.p;
  op->noch = (int64_t)och.n;
  op->oent = oent.p;
  op->noent = (int64_t)oent.n;
  return st;
}

/* The per-row bias plane [rows, OH*OW] of a conv op (double): b + dead inputs' terms. Returns
 * whether any row varies over the plane. */
static int conv_bias_planes(const nest_layer *l, const tensor *in, const tensor *out, double *bp) {
  const size_t n = plane(l->out);
  int varies = 0;
  for (int r = 0; r < out->kept; ++r) {
    const int o = out->inv[r];
    double *pl = bp + (size_t)r * n;
    for (size_t p = 0; p < n; ++p) pl[p] = 0.0;
    conv_fold(l, in, o, pl);
    for (size_t p = 1; p < n && !varies; ++p) varies = pl[p] != pl[0];
  }
  return varies;
}

static nest_status build_conv(sp_op *op, const nest_layer *l, const tensor *in, const tensor *out) {
  const int Hp = l->in.h + 2 * l->hp.pad, Wp = l->in.w + 2 * l->hp.pad;
  const size_t n = plane(l->out);
  op->kind = NEST_SPARSE_CONV;
  op->kh = l->hp.kh;
  op->kw = l->hp.kw;
  op->stride = l->hp.stride;
  op->pad = l->hp.pad;
  op->cols = in->kept * l->hp.kh * l->hp.kw;
  vec col = {NULL, 0, 0, sizeof(int32_t)}, val = {NULL, 0, 0, sizeof(float)};
  vec toff = {NULL, 0, 0, sizeof(int32_t)}, segs = {NULL, 0, 0, sizeof(sp_seg)};
  vec runs = {NULL, 0, 0, sizeof(sp_run)};
  double *bp = NULL;
  nest_status st =
      nest_calloc((void **)&op->segptr, (size_t)out->kept + 1, sizeof(int32_t), "sparse conv");
  int32_t *rowend = NULL;
  if (st == NEST_OK)
    st = nest_calloc((void **)&rowend, (size_t)out->kept + 1, sizeof(int32_t), "sparse conv");
  for (int r = 0; r < out->kept && st == NEST_OK; ++r) {
    st = conv_row(l, in, out->inv[r], Hp, Wp, &col, &val, &toff, &segs, &runs);
    rowend[r] = (int32_t)val.n;
    op->segptr[r + 1] = (int32_t)segs.n;
  }
  if (st == NEST_OK) st = op_alloc_csr(op, out->kept, (int64_t)val.n);
  if (st == NEST_OK)
    st = nest_calloc((void **)&bp, (size_t)out->kept * n + 1, sizeof(double), "sparse conv");
  if (st == NEST_OK) {
    for (int r = 0; r < out->kept; ++r) op->rowptr[r + 1] = rowend[r];
    if (val.n) {
      memcpy(op->colidx, col.p, col.n * sizeof(int32_t));
      memcpy(op->values, val.p, val.n * sizeof(float));
    }
    op->toff = toff.p;
    toff.p = NULL;
    op->segs = segs.p;
    op->nsegs = (int64_t)segs.n;
    segs.p = NULL;
    op->runs = runs.p;
    op->nruns = (int64_t)runs.n;
    runs.p = NULL;
    op->has_area = op->nruns > 0;
    const int varies = conv_bias_planes(l, in, out, bp);
    for (int r = 0; r < out->kept; ++r)
      op->bias[r] = (float)((double)l->p[1][out->inv[r]] + bp[(size_t)r * n]);
    if (op->stride == 1) st = build_ochunks(op, l, in, out);
    if (st == NEST_OK && varies) {
      st = nest_calloc((void **)&op->bias_plane, (size_t)out->kept * n, sizeof(float),
                       "sparse conv");
      for (int r = 0; r < out->kept && st == NEST_OK; ++r)
        for (size_t p = 0; p < n; ++p) /* bias + plane = b + fold exactly as summed in double */
          op->bias_plane[(size_t)r * n + p] =
              (float)((double)l->p[1][out->inv[r]] + bp[(size_t)r * n + p] - (double)op->bias[r]);
    }
  }
  free(col.p);
  free(val.p);
  free(toff.p);
  free(segs.p);
  free(runs.p);
  free(bp);
  free(rowend);
  return st;
}

/* Batch norm folded into the dense / conv op before it (rows = the BN's channels). */
static void fold_bn(sp_op *op, const nest_layer *bn, const tensor *t) {
  const size_t n = plane(op->out);
  for (int r = 0; r < op->rows; ++r) {
    double sc, sh;
    bn_coeffs(bn, t->inv[r], &sc, &sh);
    for (int32_t k = op->rowptr[r]; k < op->rowptr[r + 1]; ++k)
      op->values[k] = (float)((double)op->values[k] * sc);
    op->bias[r] = (float)((double)op->bias[r] * sc + sh);
    if (op->bias_plane)
      for (size_t p = 0; p < n; ++p)
        op->bias_plane[(size_t)r * n + p] = (float)((double)op->bias_plane[(size_t)r * n + p] * sc);
  }
}

/* A per-channel affine op over tensor t's kept channels: identity, or a batch norm. */
static nest_status build_affine(sp_op *op, const nest_layer *bn, const tensor *t) {
  op->kind = NEST_SPARSE_AFFINE;
  NEST_CALL(nest_calloc((void **)&op->scale, (size_t)t->kept + 1, sizeof(float), "sparse affine"));
  NEST_CALL(nest_calloc((void **)&op->shift, (size_t)t->kept + 1, sizeof(float), "sparse affine"));
  for (int c = 0; c < t->kept; ++c) {
    double sc = 1.0, sh = 0.0;
    if (bn) bn_coeffs(bn, t->inv[c], &sc, &sh);
    op->scale[c] = (float)sc;
    op->shift[c] = (float)sh;
  }
  return NEST_OK;
}

/* An affine op followed by a batch norm: one affine op. */
static void compose_bn(sp_op *op, const nest_layer *bn, const tensor *t) {
  for (int c = 0; c < t->kept; ++c) {
    double sc, sh;
    bn_coeffs(bn, t->inv[c], &sc, &sh);
    op->shift[c] = (float)((double)op->shift[c] * sc + sh);
    op->scale[c] = (float)((double)op->scale[c] * sc);
  }
}

static void op_free(sp_op *op) {
  free(op->sell_off);
  free(op->sell_len);
  free(op->sell_lens);
  free(op->sell_rows);
  free(op->sell_col);
  free(op->sell_bias);
  free(op->sell_val);
  free(op->rowptr);
  free(op->colidx);
  free(op->values);
  free(op->toff);
  free(op->segptr);
  free(op->segs);
  free(op->runs);
  free(op->ochptr);
  free(op->och);
  free(op->oent);
  free(op->bias);
  free(op->bias_plane);
  free(op->scale);
  free(op->shift);
}

/* A new op reading tensor in (compact), writing out. */
static sp_op *new_op(nest_sparse *s, const nest_layer *l, const tensor *in, const tensor *out) {
  sp_op *op = &s->ops[s->nops++];
  memset(op, 0, sizeof *op);
  snprintf(op->name, sizeof op->name, "%s", l->name);
  op->in = compact_shape(in);
  op->out = compact_shape(out);
  return op;
}

/* Pass 3: the ops, layer by layer. */
static nest_status build_ops(nest_sparse *s, analysis *a) {
  const nest_net *net = a->net;
  NEST_CALL(nest_calloc((void **)&s->ops, (size_t)net->nlayers + 1, sizeof(sp_op), "sparse ops"));
  for (int i = 0; i < net->nlayers; ++i) {
    const nest_layer *l = net->layers[i];
    const tensor *in = &a->t[i], *out = &a->t[i + 1];
    sp_op *last = s->nops ? &s->ops[s->nops - 1] : NULL;
    sp_op *op;
    a->buf_of[i] = s->nops; /* the op built next, if any, reads t[i] as its input buffer */
    switch (l->kind) {
    case NEST_LAYER_DENSE: NEST_CALL(build_dense(new_op(s, l, in, out), a, i)); break;
    case NEST_LAYER_CONV2D: NEST_CALL(build_conv(new_op(s, l, in, out), l, in, out)); break;
    case NEST_LAYER_MAXPOOL:
      op = new_op(s, l, in, out);
      op->kind = NEST_SPARSE_POOL;
      op->kh = l->hp.kh;
      op->kw = l->hp.kw;
      op->stride = l->hp.stride;
      op->pad = l->hp.pad;
      break;
    case NEST_LAYER_BATCHNORM:
      if (last && (last->kind == NEST_SPARSE_DENSE || last->kind == NEST_SPARSE_CONV) &&
          !last->relu)
        fold_bn(last, l, in);
      else if (last && last->kind == NEST_SPARSE_AFFINE && !last->relu)
        compose_bn(last, l, in);
      else
        NEST_CALL(build_affine(new_op(s, l, in, out), l, in));
      break;
    case NEST_LAYER_RELU:
      if (!last) NEST_CALL(build_affine(last = new_op(s, l, in, out), NULL, in));
      last->relu = 1;
      break;
    case NEST_LAYER_DROPOUT: break;
    default:
      return NEST_ERR(NEST_ERR_ARG, "%s: layer kind %s is not supported by sparse inference",
                      l->name, nest_layer_kind_name(l->kind));
    }
  }
  return NEST_OK;
}

/* ---- the program: buffers and statistics ----------------------------------------------------- */

static size_t round16(size_t v) { return (v + 15) & ~(size_t)15; }

/* A dense op with skip tensors: its columns from the concatenated parts onto the arena, part p
 * at buf_pos[src_buf[p]] (per-sample floats; a tile of T samples has element f of buffer b at
 * T * (buf_pos[b] + f)), so the kernels read every part from the arena base. */
static nest_status rebase(nest_sparse *s, sp_op *op) {
  int32_t base[1 + NEST_MAX_SKIPS];
  for (int p = 0; p < op->nsrc; ++p) {
    if (s->ops[op->src_buf[p]].bin != 0 || s->buf_pos[op->src_buf[p] + 1] > INT32_MAX)
      return NEST_ERR(NEST_ERR_INTERNAL, "%s: skip source buffer %d cannot be read as dense",
                      op->name, op->src_buf[p]);
    base[p] = (int32_t)s->buf_pos[op->src_buf[p]];
    s->in_arena |= op->src_buf[p] == 0;
  }
  for (int r = 0; r < op->rows; ++r) {
    int p = 0; /* the parts' columns are in order in every row */
    for (int32_t k = op->rowptr[r]; k < op->rowptr[r + 1]; ++k) {
      while (op->colidx[k] >= op->src_col0[p] + op->src_cols[p]) ++p;
      op->colidx[k] += base[p] - op->src_col0[p];
    }
  }
  for (int p = 0; p < op->nsrc; ++p) op->src_col0[p] = base[p];
  return NEST_OK;
}

/* Borders, buffer offsets per sample, the tile cap and the arena. */
static nest_status layout(nest_sparse *s) {
  /* Per-thread activation budget of the automatic tile. Measured (docs/performance.md, "Sparse
   * inference"): LeNet-300-100 (4.4 KB of activations per sample) runs fastest in 64-sample
   * tiles, LeNet-5 (64 KB) in 32-sample ones (2 MB; 64 were slower at batch 64, equal at 256),
   * the tiles' activations then staying in L2. */
  const size_t budget = (size_t)2 << 20;
  for (int k = 0; k < s->nops; ++k) {
    sp_op *op = &s->ops[k];
    op->bin = op->kind == NEST_SPARSE_CONV ? op->pad : 0;
    if (k > 0) s->ops[k - 1].bout = op->bin;
  }
  NEST_CALL(
      nest_calloc((void **)&s->buf_pos, (size_t)s->nops + 2, sizeof(size_t), "sparse buffers"));
  for (int k = 0; k <= s->nops; ++k) {
    const nest_shape sh = k < s->nops ? s->ops[k].in : s->ops[s->nops - 1].out;
    const int b = k < s->nops ? s->ops[k].bin : 0;
    s->buf_pos[k + 1] = s->buf_pos[k] + round16((size_t)sh.c * (sh.h + 2 * b) * (sh.w + 2 * b));
  }
  for (int k = 0; k < s->nops; ++k) { /* the weights are final now (BN folded) */
    sp_op *op = &s->ops[k];
    if (op->kind == NEST_SPARSE_DENSE && op->nsrc > 1) NEST_CALL(rebase(s, op));
    if (op->kind == NEST_SPARSE_DENSE && s->sell) NEST_CALL(build_sell(op));
  }
  const size_t per_sample = s->buf_pos[s->nops + 1];
  s->tile_cap = 1;
  for (int t = 16; t <= 64; t *= 2)
    if ((size_t)t * per_sample * sizeof(float) <= budget) s->tile_cap = t;
  s->tmax = s->tile_opt ? s->tile_opt : nest_sparse_tile_for(s, s->max_batch, 1);
  s->thread_floats = round16((size_t)s->tmax * per_sample + 16);
  NEST_CALL(nest_malloc_aligned((void **)&s->arena,
                                sizeof(float) * s->thread_floats * (size_t)s->nthreads,
                                "sparse activation buffers"));
  NEST_CALL(nest_calloc((void **)&s->thread_tile, (size_t)s->nthreads, sizeof(int), "sparse"));
  return NEST_OK;
}

static void compute_stats(nest_sparse *s, const nest_net *net, const analysis *a) {
  nest_sparse_stats *st = &s->stats;
  st->in_shape = s->in_shape;
  st->nclasses = s->nclasses;
  st->nops = s->nops;
  nest_net_count(net, &st->source_weights, NULL, NULL);
  for (int i = 0; i < net->nlayers; ++i) {
    const nest_layer *l = net->layers[i];
    for (int p = 0; p < l->nparams; ++p)
      st->source_bytes += l->param[p].count * sizeof(float) * (l->param[p].maskable ? 2 : 1);
    for (int b = 0; b < l->nbuffers; ++b) st->source_bytes += l->buffer[b].count * sizeof(float);
    if (!is_linear(l) || i >= a->last_lin) continue;
    for (int c = 0; c < a->t[i + 1].sh.c; ++c) {
      st->units_removed += a->t[i + 1].map[c] < 0;
      st->units_folded += a->t[i + 1].map[c] < 0 && !a->t[i + 1].live[c];
    }
  }
  for (int k = 0; k < s->nops; ++k) {
    const sp_op *op = &s->ops[k];
    const size_t n = plane(op->out);
    st->nnz += op->nnz;
    st->model_bytes += sizeof(sp_op);
    if (op->kind == NEST_SPARSE_DENSE || op->kind == NEST_SPARSE_CONV) {
      st->model_bytes += ((size_t)op->rows + 1) * 4 + (size_t)op->nnz * 8 + (size_t)op->rows * 4;
      st->dense_bytes += ((size_t)op->rows * op->cols + op->rows) * sizeof(float);
    }
    if (op->kind == NEST_SPARSE_DENSE) {
      st->flops += 2.0 * (double)op->nnz;
      if (op->nslices) /* the SELL copy */
        st->model_bytes += (size_t)op->nslices * (8 + 4) + (size_t)op->nslices * SP_W * 12 +
                           (size_t)op->sell_off[op->nslices] * 8;
    }
    if (op->kind == NEST_SPARSE_CONV) {
      st->model_bytes += (size_t)op->nnz * 4 + ((size_t)op->rows + 1) * 4 +
                         (size_t)op->nsegs * sizeof(sp_seg) + (size_t)op->nruns * sizeof(sp_run) +
                         (op->ochptr ? ((size_t)op->rows + 1) * 4 : 0) +
                         (size_t)op->noch * sizeof(sp_ochunk) + (size_t)op->noent * sizeof(sp_oent);
      if (op->bias_plane) st->model_bytes += (size_t)op->rows * n * sizeof(float);
      if (op->has_area) st->dense_bytes += (size_t)op->rows * op->in.c * n * sizeof(float);
      for (int64_t g = 0; g < op->nsegs; ++g) {
        const sp_seg *sg = &op->segs[g];
        double pos = (double)n;
        if (sg->r0 >= 0) {
          pos = 0.0;
          for (int32_t r = sg->r0; r < sg->r1; ++r) pos += op->runs[r].q1 - op->runs[r].q0;
        }
        st->flops += 2.0 * (sg->t1 - sg->t0) * pos;
      }
      if (op->bias_plane) st->flops += (double)op->rows * n;
    }
    if (op->kind == NEST_SPARSE_AFFINE) st->model_bytes += (size_t)op->in.c * 8;
  }
  st->work_bytes = s->thread_floats * sizeof(float) * (size_t)s->nthreads;
}

/* ---- public ---------------------------------------------------------------------------------- */

void nest_sparse_destroy(nest_sparse **sp) {
  if (!sp || !*sp) return;
  nest_sparse *s = *sp;
  for (int k = 0; k < s->nops; ++k) op_free(&s->ops[k]);
  free(s->ops);
  free(s->in_chan);
  free(s->buf_pos);
  nest_free_aligned(s->arena);
  free(s->thread_tile);
  free(s);
  *sp = NULL;
}

static nest_status create(nest_sparse *s, const nest_net *net, analysis *a) {
  NEST_CALL(analysis_alloc(a, net));
  NEST_CALL(analyse(a));
  NEST_CALL(build_ops(s, a));
  s->in_c = a->t[0].kept;
  NEST_CALL(nest_calloc((void **)&s->in_chan, (size_t)s->in_c + 1, sizeof(int32_t), "sparse"));
  memcpy(s->in_chan, a->t[0].inv, sizeof(int32_t) * (size_t)s->in_c);
  NEST_CALL(layout(s));
  compute_stats(s, net, a);
  return NEST_OK;
}

nest_status nest_sparse_create(const nest_net *net, int max_batch, int nthreads,
                               const nest_sparse_opts *opts, nest_sparse **out) {
  *out = NULL;
  const int tile = opts ? opts->tile : 0;
  if (!net || net->nlayers < 1 || max_batch < 1 || nthreads < 1)
    return NEST_ERR(NEST_ERR_ARG,
                    "nest_sparse_create: need a net, max_batch >= 1 and "
                    "nthreads >= 1 (got max_batch %d, nthreads %d)",
                    max_batch, nthreads);
  const int single = opts ? opts->single : 0;
  if (single < 0 || single > 2)
    return NEST_ERR(NEST_ERR_ARG, "nest_sparse_create: single must be 0, 1 or 2 (got %d)", single);
  if (tile != 0 && tile != 1 && tile != 16 && tile != 32 && tile != 64)
    return NEST_ERR(NEST_ERR_ARG, "nest_sparse_create: tile must be 0, 1, 16, 32 or 64 (got %d)",
                    tile);
  nest_sparse *s;
  NEST_CALL(nest_calloc((void **)&s, 1, sizeof *s, "sparse net"));
  s->in_shape = net->in_shape;
  s->nclasses = net->nclasses;
  s->max_batch = max_batch;
  s->nthreads = nthreads;
  s->tile_opt = tile;
  s->sell = single == 2;
  analysis a = {0};
  nest_status st = create(s, net, &a);
  analysis_free(&a);
  if (st != NEST_OK) {
    nest_error_trace(__FILE__, __LINE__);
    nest_sparse_destroy(&s);
    return st;
  }
  *out = s;
  return NEST_OK;
}
