/* test_surgery.c — unit surgery (surgery.h): inserting, deleting and remapping the output units
 * of dense and conv layers in small nets.
 *
 * Topologies: dense→dense (with dropout), dense→bn→dense, conv→conv, conv→bn→conv,
 * conv→pool→dense (flatten), LeNet-5 with batch norm (conv2→bn→pool→dense and
 * conv1→bn→pool→conv), and partial-area convolution (hp.area, random 0/1 area masks):
 * conv(area)→bn→conv(area) and LeNet-5 conv1→bn→pool→conv2(area). Each is run with an eval ctx and a training ctx (batch statistics,
 * sample ids; on three topologies sync batch-norm through a one-rank allreduce).
 * For every surgery the test checks, against a clone of the old net taken just before it:
 *   - every value, momentum and mask of every surviving position, position by position
 *     through the mapping written out per element from the contract (L's rows, the
 *     per-channel BN tensors and running statistics, the consumer's input slices, the rest
 *     whole), the contract's fresh values, zero gradients, generation + 1, specs and shapes;
 *   - insertions (append, fresh units in the middle) and deletions of units that carry no
 *     signal leave the network's function unchanged, also after the fresh units' masks are
 *     set to 1 (weights still 0): the logits of a double-precision reference forward are
 *     BITWISE equal; the float engine's logits, loss, surviving gradients and running
 *     statistics agree to 1e-5 — not always bitwise, because OpenBLAS sgemm rounds an output
 *     differently for different matrix shapes (see FLOAT_TOL; the run prints how often it
 *     was bitwise anyway);
 *   - after fresh units get random active weights, backward agrees with central finite
 *     differences of the (double reference) loss for the resized layer's W, the consumer's
 *     W and BN gamma.
 * Plus the errors (output layer, relu layer, bad / duplicated src, deleting every unit) with
 * the net left unchanged and usable, and the architecture strings after surgery; and
 * nest_surgery_set_area (switching partial-area convolution on and off). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/arch.h"
#include "nest/kernels.h"
#include "nest/loss.h"
#include "nest/net.h"
#include "nest/surgery.h"
#include "test_util.h"

enum { B = 4, MAXL = 16, MAXU = 64 };

/* ---- topologies ------------------------------------------------------------------------------ */

typedef struct {
  const char *label;
  nest_layer_spec specs[MAXL];
  int nspecs;
  nest_shape in;
  int classes;
  int nthreads;
  int resize;     /* the layer operated on */
  int consumer;   /* its consumer (expected) */
  int bn;         /* the batchnorm layer between them, or -1 */
  int dropout;    /* a dropout layer between them (train masks are keyed by position) */
  int relu_after; /* a relu between them and no BN: a unit with zero weights and bias is dead */
  int sync_bn;    /* training ctx sums BN statistics through a (one-rank) allreduce */
} topo;

static nest_layer_spec spec(nest_layer_kind kind, const char *name, nest_layer_hparams hp) {
  nest_layer_spec s = {.kind = kind, .hp = hp};
  snprintf(s.name, sizeof s.name, "%s", name);
  return s;
}
#define DENSE(name, u) spec(NEST_LAYER_DENSE, name, (nest_layer_hparams){.units = (u)})
#define CONV(name, oc, k, p) \
  spec(NEST_LAYER_CONV2D, name, (nest_layer_hparams){.out_c = (oc), .kh = (k), .pad = (p)})
#define ACONV(name, oc, k, p)                             \
  spec(NEST_LAYER_CONV2D, name,                           \
       (nest_layer_hparams){.out_c = (oc), .kh = (k), .pad = (p), .area = 1})
#define POOL(name, k) spec(NEST_LAYER_MAXPOOL, name, (nest_layer_hparams){.kh = (k)})
#define RELU(name) spec(NEST_LAYER_RELU, name, (nest_layer_hparams){0})
#define BN(name) spec(NEST_LAYER_BATCHNORM, name, (nest_layer_hparams){0})
#define DROP(name, r) spec(NEST_LAYER_DROPOUT, name, (nest_layer_hparams){.rate = (r)})

enum { NTOPO = 9 };

static topo topo_get(int which) {
  topo t = {.bn = -1, .nthreads = 1};
  int n = 0;
  nest_layer_spec *s = t.specs;
  switch (which) {
    case 0:
      t.label = "dense->relu->dropout->dense";
      t.in = (nest_shape){12, 1, 1};
      t.classes = 4;
      s[n++] = DENSE("fc1", 7);
      s[n++] = RELU("fc1.relu");
      s[n++] = DROP("fc1.drop", 0.25f);
      s[n++] = DENSE("fc2", 6);
      s[n++] = RELU("fc2.relu");
      s[n++] = DENSE("fc3", 4);
      t.consumer = 3, t.dropout = 1, t.relu_after = 1;
      break;
    case 1: {
      /* through nest_arch_build: fc1, fc1.bn, fc1.relu, fc2, fc2.bn, fc2.relu, fc3 */
      t.label = "mlp with batchnorm: dense->bn->dense";
      t.in = (nest_shape){12, 1, 1};
      t.classes = 4;
      nest_layer_spec *a;
      nest_arch_opts o = {.width = 1.0, .batchnorm = 1};
      assert_int_equal(nest_arch_build("mlp:12-7-6-4", &o, t.in, t.classes, &a, &n), NEST_OK);
      assert_true(n <= MAXL);
      memcpy(s, a, (size_t)n * sizeof *a);
      free(a);
      t.consumer = 3, t.bn = 1, t.sync_bn = 1;
      break;
    }
    case 2:
      t.label = "conv->relu->conv";
      t.in = (nest_shape){2, 9, 9};
      t.classes = 3;
      t.nthreads = 2;
      s[n++] = CONV("conv1", 4, 3, 1); /* 4x9x9 */
      s[n++] = RELU("conv1.relu");
      s[n++] = CONV("conv2", 5, 3, 0); /* 5x7x7 */
      s[n++] = RELU("conv2.relu");
      s[n++] = POOL("pool2", 2); /* 5x3x3 */
      s[n++] = DENSE("fc", 3);
      t.consumer = 2, t.relu_after = 1;
      break;
    case 3:
      t.label = "conv->bn->relu->conv";
      t.in = (nest_shape){2, 9, 9};
      t.classes = 3;
      t.nthreads = 2;
      s[n++] = CONV("conv1", 4, 3, 1);
      s[n++] = BN("conv1.bn");
      s[n++] = RELU("conv1.relu");
      s[n++] = CONV("conv2", 5, 3, 0);
      s[n++] = RELU("conv2.relu");
      s[n++] = POOL("pool2", 2);
      s[n++] = DENSE("fc", 3);
      t.consumer = 3, t.bn = 1, t.sync_bn = 1;
      break;
    case 4:
      t.label = "conv->relu->pool->flatten->dense";
      t.in = (nest_shape){2, 10, 10};
      t.classes = 3;
      s[n++] = CONV("conv1", 3, 3, 0); /* 3x8x8 */
      s[n++] = RELU("conv1.relu");
      s[n++] = POOL("pool1", 2); /* 3x4x4: 16 columns per map in fc1 */
      s[n++] = DENSE("fc1", 6);
      s[n++] = RELU("fc1.relu");
      s[n++] = DENSE("fc2", 3);
      t.consumer = 3, t.relu_after = 1;
      break;
    case 7:
      t.label = "conv(area)->bn->relu->conv(area)";
      t.in = (nest_shape){2, 9, 9};
      t.classes = 3;
      t.nthreads = 2;
      s[n++] = ACONV("conv1", 4, 3, 1);
      s[n++] = BN("conv1.bn");
      s[n++] = RELU("conv1.relu");
      s[n++] = ACONV("conv2", 5, 3, 0);
      s[n++] = RELU("conv2.relu");
      s[n++] = POOL("pool2", 2);
      s[n++] = DENSE("fc", 3);
      t.consumer = 3, t.bn = 1;
      break;
    case 5:
    case 6:
    case 8: {
      /* lenet5 with batchnorm on 1x20x20, width 0.2: conv1 4 (16x16), conv1.bn, pool1 (8x8),
       * conv2 10 (4x4), conv2.bn, pool2 (2x2), fc1 100, fc1.bn, fc1.relu, fc2 */
      t.in = (nest_shape){1, 20, 20};
      t.classes = 10;
      t.nthreads = 2;
      nest_layer_spec *a;
      nest_arch_opts o = {.width = 0.2, .batchnorm = 1};
      assert_int_equal(nest_arch_build("lenet5", &o, t.in, t.classes, &a, &n), NEST_OK);
      assert_true(n <= MAXL);
      memcpy(s, a, (size_t)n * sizeof *a);
      free(a);
      if (which == 5) {
        t.label = "lenet5 conv2->bn->pool->flatten->dense";
        t.resize = 3, t.consumer = 6, t.bn = 4;
      } else if (which == 8) {
        t.label = "lenet5 conv1->bn->pool->conv2(area)";
        s[3].hp.area = 1;
        t.resize = 0, t.consumer = 3, t.bn = 1;
      } else {
        t.label = "lenet5 conv1->bn->pool->conv";
        t.resize = 0, t.consumer = 3, t.bn = 1, t.sync_bn = 1;
      }
      break;
    }
    default: fail_msg("no topology %d", which);
  }
  t.nspecs = n;
  return t;
}

/* ---- nets and their state ------------------------------------------------------------------ */

static int units_of(const nest_net *net, int layer) {
  const nest_layer *l = net->layers[layer];
  return l->kind == NEST_LAYER_DENSE ? l->hp.units : l->hp.out_c;
}

/* Non-trivial state everywhere (so a misplaced copy shows): init with seed masks, then random
 * biases, BN gamma/beta, running statistics, gradients and momentum (zero where dormant: the
 * net keeps params and momentum zero at dormant positions). */
static void randomize_state(nest_net *net, uint64_t seed) {
  float *r = nest_test_falloc(net->nparams + net->nbuf);
  nest_test_fill_normal(r, net->nparams + net->nbuf, seed, 1.0f);
  for (int t = 0; t < net->ntensors; ++t) {
    const nest_param *p = net->tensors[t].param;
    for (size_t i = p->offset; i < p->offset + p->count; ++i) {
      if (!p->maskable) /* gamma around 1, bias and beta around 0 */
        net->params[i] = (p->init == NEST_INIT_ONE ? 1.0f : 0.0f) + 0.3f * r[i];
      net->mom[i] = net->masks[i] != 0.0f ? 0.05f * r[(i * 7 + 3) % net->nparams] : 0.0f;
      net->grads[i] = r[(i * 5 + 1) % net->nparams]; /* stale: surgery must zero them */
    }
  }
  for (int i = 0; i < net->nlayers; ++i) {
    nest_layer *l = net->layers[i];
    for (int s = 0; s < l->nbuffers; ++s)
      for (size_t j = 0; j < l->buffer[s].count; ++j) {
        float v = r[net->nparams + l->buffer[s].offset + j];
        if (l->buffer[s].mask) /* a partial-area mask: 0/1, about a third 0 */
          l->buf[s][j] = v < -0.43f ? 0.0f : 1.0f;
        else
          l->buf[s][j] = l->buffer[s].init_value == 1.0f ? 0.5f + fabsf(v) : 0.2f * v;
      }
  }
  free(r);
}

static nest_net *make_net(const topo *t, uint64_t seed) {
  nest_net *net;
  assert_int_equal(
      nest_net_create(t->specs, t->nspecs, t->in, t->classes, B, t->nthreads, &net), NEST_OK);
  assert_int_equal(nest_net_init(net, seed, 0.6, -1), NEST_OK);
  randomize_state(net, seed + 100);
  return net;
}

/* An independent copy with the same layout and state. */
static nest_net *clone_net(const nest_net *a) {
  nest_net *c;
  assert_int_equal(nest_net_create(a->specs, a->nlayers, a->in_shape, a->nclasses, a->max_batch,
                                   a->nthreads, &c),
                   NEST_OK);
  assert_true(c->nparams == a->nparams && c->nbuf == a->nbuf);
  memcpy(c->params, a->params, a->nparams * sizeof(float));
  memcpy(c->grads, a->grads, a->nparams * sizeof(float));
  memcpy(c->mom, a->mom, a->nparams * sizeof(float));
  memcpy(c->masks, a->masks, a->nparams * sizeof(float));
  memcpy(c->buffers, a->buffers, a->nbuf * sizeof(float));
  c->generation = a->generation;
  return c;
}

static nest_status one_rank_allreduce(void *comm, double *buf, size_t n) {
  (void)comm, (void)buf, (void)n; /* the sum over one rank is the value itself */
  return NEST_OK;
}

static const int64_t sample_ids[B] = {17, 3, 42, 8};

static nest_ctx make_ctx(const topo *t, int train) {
  nest_ctx c = {.n = B, .train = train, .nthreads = t->nthreads, .seed = 99, .step = 5};
  if (train) {
    c.sample_ids = sample_ids;
    if (t->sync_bn) c.allreduce = one_rank_allreduce, c.global_n = B;
  }
  return c;
}

/* ---- the mapping, written out per element from the contract ---------------------------------- */

typedef struct {
  int layer, consumer, uold, count;
  const int *src; /* [count] */
} mapping;

/* Where element e of a tensor of layer i of the NEW net came from in the old net (-1: fresh).
 * count_new: the tensor's element count; rows: its dims[0]; weight: a maskable tensor. */
static long old_index(const mapping *m, int i, size_t count_new, int rows, int weight, size_t e) {
  if (i == m->layer || (i > m->layer && i < m->consumer)) {
    /* L: W [U, rest] row j, b [U]; between: BN gamma / beta / running stats [U] */
    size_t per = count_new / (size_t)m->count, j = e / per, t = e % per;
    return m->src[j] < 0 ? -1 : (long)((size_t)m->src[j] * per + t);
  }
  if (i == m->consumer && weight) {
    /* dense [K, U*h*w] or conv [K, U, kh, kw]: row r, input channel j, offset t in its block */
    size_t row_new = count_new / (size_t)rows, glen = row_new / (size_t)m->count;
    size_t r = e / row_new, j = (e % row_new) / glen, t = e % glen;
    return m->src[j] < 0 ? -1 : (long)(r * glen * (size_t)m->uold + (size_t)m->src[j] * glen + t);
  }
  return (long)e;
}

/* The same for element e of buffer s of layer l (new net): per-channel statistics map like
 * a bias; a partial-area mask [OC, C, P, Q] like a conv weight (rows OC in the consumer). */
static long buffer_index(const mapping *m, const nest_layer *l, int s, size_t e) {
  const int mask = l->buffer[s].mask;
  return old_index(m, l->index, l->buffer[s].count, mask ? l->hp.out_c : 1, mask, e);
}

static int bits_equal(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Contract values of a fresh entry (surgery.h). */
static float fresh_param(const char *name) { return strcmp(name, "gamma") == 0 ? 1.0f : 0.0f; }
static float fresh_mask(const char *name) { return strcmp(name, "W") == 0 ? 0.0f : 1.0f; }
static float fresh_buffer(const char *name) {
  return strcmp(name, "running_var") == 0 || strcmp(name, "area") == 0 ? 1.0f : 0.0f;
}

/* The new net against the old one, position by position, in every arena and buffer. */
static void check_mapping(const nest_net *old, const nest_net *neu, const mapping *m) {
  assert_int_equal(old->nlayers, neu->nlayers);
  /* the consumer's input blocks are what the header says: h*w columns (dense) / kh*kw (conv) */
  const nest_layer *cl = neu->layers[m->consumer];
  size_t glen = cl->param[0].count / (size_t)cl->param[0].dims[0] / (size_t)m->count;
  assert_int_equal(cl->in.c, m->count);
  assert_int_equal(glen, cl->kind == NEST_LAYER_DENSE ? (size_t)cl->in.h * cl->in.w
                                                      : (size_t)cl->hp.kh * cl->hp.kw);
  for (size_t i = 0; i < neu->nparams; ++i) assert_true(bits_equal(neu->grads[i], 0.0f));
  for (int i = 0; i < neu->nlayers; ++i) {
    const nest_layer *lo = old->layers[i], *ln = neu->layers[i];
    for (int s = 0; s < ln->nparams; ++s) {
      const nest_param *pn = &ln->param[s];
      for (size_t e = 0; e < pn->count; ++e) {
        long o = old_index(m, i, pn->count, pn->dims[0], pn->maskable, e);
        if (o < 0) {
          if (!bits_equal(ln->p[s][e], fresh_param(pn->name)) ||
              !bits_equal(ln->m[s][e], fresh_mask(pn->name)) ||
              !bits_equal(neu->mom[pn->offset + e], 0.0f))
            fail_msg("%s.%s[%zu]: fresh entry is %g (mask %g, mom %g)", ln->name, pn->name, e,
                     ln->p[s][e], ln->m[s][e], neu->mom[pn->offset + e]);
          continue;
        }
        assert_true((size_t)o < lo->param[s].count);
        size_t oo = lo->param[s].offset + (size_t)o, on = pn->offset + e;
        if (!bits_equal(neu->params[on], old->params[oo]) ||
            !bits_equal(neu->masks[on], old->masks[oo]) || !bits_equal(neu->mom[on], old->mom[oo]))
          fail_msg("%s.%s[%zu] (old [%ld]): value/mask/mom %g/%g/%g, was %g/%g/%g", ln->name,
                   pn->name, e, o, neu->params[on], neu->masks[on], neu->mom[on], old->params[oo],
                   old->masks[oo], old->mom[oo]);
      }
    }
    for (int s = 0; s < ln->nbuffers; ++s) {
      const nest_buffer *bn = &ln->buffer[s];
      for (size_t e = 0; e < bn->count; ++e) {
        long o = buffer_index(m, ln, s, e);
        float want = o < 0 ? fresh_buffer(bn->name) : lo->buf[s][o];
        if (!bits_equal(ln->buf[s][e], want))
          fail_msg("%s.%s[%zu]: %g, want %g", ln->name, bn->name, e, ln->buf[s][e], want);
      }
    }
  }
}

/* Generation, kept settings, specs (only L's width changed) and shapes. */
static void check_meta(const nest_net *old, const nest_net *neu, const mapping *m) {
  assert_true(neu->generation == old->generation + 1);
  assert_int_equal(neu->max_batch, old->max_batch);
  assert_int_equal(neu->nthreads, old->nthreads);
  assert_int_equal(neu->nclasses, old->nclasses);
  assert_memory_equal(&neu->in_shape, &old->in_shape, sizeof old->in_shape);
  for (int i = 0; i < neu->nlayers; ++i) {
    const nest_layer_spec *a = &old->specs[i], *b = &neu->specs[i];
    assert_int_equal(a->kind, b->kind);
    assert_string_equal(a->name, b->name);
    nest_layer_hparams want = a->hp;
    if (i == m->layer) *(a->kind == NEST_LAYER_DENSE ? &want.units : &want.out_c) = m->count;
    assert_memory_equal(&want, &b->hp, sizeof want);
    assert_memory_equal(&want, &neu->layers[i]->hp, sizeof want);
  }
  assert_int_equal(units_of(neu, m->layer), m->count);
  for (int i = m->layer + 1; i <= m->consumer; ++i) assert_int_equal(neu->layers[i]->in.c, m->count);
}

/* ---- passes ---------------------------------------------------------------------------------- */

typedef struct {
  float logits[B * 16];
  double loss;
} outputs;

static const int32_t labels[B] = {0, 2, 1, 2};

/* forward + loss (+ backward): logits and the summed loss. */
static void run(nest_net *net, const nest_ctx *ctx, const float *x, int backward, outputs *o) {
  const float *lg;
  float dl[B * 16];
  int64_t correct = 0;
  assert_true(net->nclasses <= 16);
  assert_int_equal(nest_net_forward(net, ctx, x, &lg), NEST_OK);
  memset(o, 0, sizeof *o);
  memcpy(o->logits, lg, sizeof(float) * B * net->nclasses);
  nest_loss_softmax_xent(lg, labels, B, net->nclasses, 1.0f, backward ? dl : NULL, &o->loss,
                         &correct);
  if (backward) assert_int_equal(nest_net_backward(net, ctx, dl), NEST_OK);
}

/* The logits of `net` in double with the naive reference kernels (kernels.h), whose sums run
 * in plain index order. Call right after a float forward with the same ctx: a training-mode
 * dropout layer takes its keep mask from the float layer's cache. Training-mode batch norm
 * uses the batch statistics (one rank), eval mode the running statistics. */
static void ref_logits(const nest_net *net, const nest_ctx *ctx, const float *x, double *out) {
  const int n = ctx->n;
  size_t sz = (size_t)n * nest_shape_size(net->in_shape);
  double *a = nest_test_dalloc(sz);
  nest_test_to_double(x, a, sz);
  for (int i = 0; i < net->nlayers; ++i) {
    const nest_layer *l = net->layers[i];
    double *p[NEST_MAX_PARAMS] = {0};
    for (int s = 0; s < l->nparams; ++s) {
      p[s] = nest_test_dalloc(l->param[s].count);
      nest_test_to_double(l->p[s], p[s], l->param[s].count);
    }
    const size_t osz = (size_t)n * nest_shape_size(l->out);
    const int c = l->in.c, hw = l->in.h * l->in.w;
    nest_conv_geom g = {0};
    if (l->kind == NEST_LAYER_CONV2D || l->kind == NEST_LAYER_MAXPOOL)
      g = nest_conv_geom_make(l->in.c, l->in.h, l->in.w, l->hp.kh, l->hp.kw, l->hp.stride,
                              l->hp.pad);
    double *b = nest_test_dalloc(osz);
    switch (l->kind) {
      case NEST_LAYER_DENSE:
        nest_ref_dense_forward(n, (int)nest_shape_size(l->in), l->hp.units, a, p[0], p[1], b);
        break;
      case NEST_LAYER_CONV2D:
        if (l->hp.area) {
          double *msk = nest_test_dalloc(l->buffer[0].count);
          nest_test_to_double(l->buf[0], msk, l->buffer[0].count);
          nest_ref_conv2d_area_forward(&g, l->hp.out_c, n, a, p[0], p[1], msk, b);
          free(msk);
        } else {
          nest_ref_conv2d_forward(&g, l->hp.out_c, n, a, p[0], p[1], b);
        }
        break;
      case NEST_LAYER_MAXPOOL: nest_ref_maxpool_forward(&g, n, a, b); break;
      case NEST_LAYER_RELU: nest_ref_relu_forward(osz, a, b); break;
      case NEST_LAYER_BATCHNORM:
        if (ctx->train) {
          nest_ref_batchnorm_forward(n, c, hw, l->hp.eps, a, p[0], p[1], b, NULL, NULL);
        } else {
          for (int r = 0; r < n; ++r)
            for (int ch = 0; ch < c; ++ch)
              for (int t = 0; t < hw; ++t) {
                size_t k = ((size_t)r * c + ch) * hw + t;
                b[k] = p[0][ch] * (a[k] - l->buf[0][ch]) / sqrt((double)l->buf[1][ch] + l->hp.eps) +
                       p[1][ch];
              }
        }
        break;
      case NEST_LAYER_DROPOUT:
        if (ctx->train && !ctx->grad_only && l->hp.rate > 0.0f)
          nest_ref_dropout_forward(osz, l->hp.rate, (const uint8_t *)l->cache, a, b);
        else
          memcpy(b, a, osz * sizeof(double));
        break;
      default: fail_msg("no reference for %s", l->name);
    }
    for (int s = 0; s < l->nparams; ++s) free(p[s]);
    free(a);
    a = b;
  }
  memcpy(out, a, (size_t)n * net->nclasses * sizeof(double));
  free(a);
}

/* Normwise relative difference of two float arrays (max |a - b| / max |a|). */
static double rel_diff(const float *a, const float *b, size_t n) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < n; ++i) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= num)) num = d;
    if (fabs(a[i]) > den) den = fabs(a[i]);
  }
  return num / den;
}

/* How often the float engine was bitwise identical too, and its largest logit difference
 * (printed per topology; see FLOAT_TOL). */
static int g_float_same, g_float_compared;
static double g_float_maxdiff;

/* Float-engine tolerance. The float engine is not width-invariant: OpenBLAS sgemm chooses its
 * micro-kernel and inner-loop unrolling by shape, so the last bits of a surviving unit's output
 * can depend on (a) the width of L's own GEMM (dense: units; conv: OC) — measured with
 * OpenBLAS 0.3.21 (Zen/Haswell kernels): outputs in a full 8/16-wide tile agree for any
 * width, outputs in a 4/2/1-wide tail do not — and (b) for a conv consumer, the inner
 * dimension C*kh*kw + 1 that fresh or deleted (zero) channels change. The copies are exact
 * (check_mapping) and so is the function (double reference below); the float engine moves by
 * a few ulps (largest logit change seen here ~1e-7 relative), checked to this tolerance. */
#define FLOAT_TOL 1e-5

/* The new net computes what the old one did:
 *   - exactly, BITWISE, with the double-precision reference kernels (plain index-order sums,
 *     in which an inserted or removed +-0 term changes nothing): the surgery itself;
 *   - to FLOAT_TOL with the float engine: logits, loss, the gradient of every surviving
 *     position and the running statistics after a training pass.
 * *bitwise_float is cleared if the float engine was not bitwise identical (reported). */
static void check_same_function(nest_net *old, nest_net *neu, const nest_ctx *ctx, const float *x,
                                const mapping *m, const char *what, int *bitwise_float) {
  outputs a, b;
  double ra[B * 16], rb[B * 16];
  const size_t nl = (size_t)B * old->nclasses;
  run(old, ctx, x, 1, &a);
  ref_logits(old, ctx, x, ra);
  run(neu, ctx, x, 1, &b);
  ref_logits(neu, ctx, x, rb);
  if (memcmp(ra, rb, nl * sizeof(double)) != 0) {
    for (size_t i = 0; i < nl; ++i)
      if (memcmp(&ra[i], &rb[i], sizeof(double)))
        print_message("  reference logit %zu: %.17g vs %.17g\n", i, ra[i], rb[i]);
    fail_msg("%s: the reference (double) output changed", what);
  }
  if (memcmp(a.logits, b.logits, nl * sizeof(float)) != 0 || !(a.loss == b.loss))
    *bitwise_float = 0;
  g_float_maxdiff = fmax(g_float_maxdiff, rel_diff(a.logits, b.logits, nl));
  if (rel_diff(a.logits, b.logits, nl) > FLOAT_TOL ||
      fabs(a.loss - b.loss) > FLOAT_TOL * fabs(a.loss))
    fail_msg("%s: float output moved by %.3g (loss %.17g -> %.17g)", what,
             rel_diff(a.logits, b.logits, nl), a.loss, b.loss);
  /* Gradients per tensor, relative to the largest gradient of the net: a bias just before
   * training-mode batch norm has a gradient that is zero up to rounding (BN removes the
   * channel mean), so relative to itself it is all noise. */
  double gmax = 1e-30;
  for (size_t i = 0; i < old->nparams; ++i) gmax = fmax(gmax, fabs((double)old->grads[i]));
  for (int i = 0; i < neu->nlayers; ++i) {
    const nest_layer *lo = old->layers[i], *ln = neu->layers[i];
    for (int s = 0; s < ln->nparams; ++s) {
      const nest_param *pn = &ln->param[s];
      double num = 0, den = gmax;
      for (size_t e = 0; e < pn->count; ++e) {
        long o = old_index(m, i, pn->count, pn->dims[0], pn->maskable, e);
        if (o < 0) continue;
        if (!bits_equal(ln->g[s][e], lo->g[s][o])) *bitwise_float = 0;
        num = fmax(num, fabs((double)ln->g[s][e] - lo->g[s][o]));
        den = fmax(den, fabs((double)lo->g[s][o]));
      }
      if (num > FLOAT_TOL * den)
        fail_msg("%s: gradient of %s.%s moved by %.3g (normwise)", what, ln->name, pn->name,
                 num / den);
    }
    for (int s = 0; s < ln->nbuffers; ++s)
      for (size_t e = 0; e < ln->buffer[s].count; ++e) {
        long o = buffer_index(m, ln, s, e);
        if (o < 0) continue;
        if (!bits_equal(ln->buf[s][e], lo->buf[s][o])) *bitwise_float = 0;
        if (fabsf(ln->buf[s][e] - lo->buf[s][o]) > FLOAT_TOL * (1.0f + fabsf(lo->buf[s][o])))
          fail_msg("%s: %s.%s[%zu] %.9g, was %.9g", what, ln->name, ln->buffer[s].name, e,
                   ln->buf[s][e], lo->buf[s][o]);
      }
  }
}

/* Apply f to every element of the fresh units' slices: L's rows and the consumer's input
 * blocks (weights, slot 0), through the mapping. */
static void for_fresh_weights(nest_net *net, const mapping *m, void (*f)(float *p, float *mk,
                                                                       float *mom, size_t k)) {
  size_t k = 0;
  const int idx[2] = {m->layer, m->consumer};
  for (int q = 0; q < 2; ++q) {
    nest_layer *l = net->layers[idx[q]];
    const nest_param *p = &l->param[0];
    for (size_t e = 0; e < p->count; ++e)
      if (old_index(m, idx[q], p->count, p->dims[0], 1, e) < 0)
        f(&l->p[0][e], &l->m[0][e], &net->mom[p->offset + e], k++);
  }
}

static void set_active(float *p, float *mk, float *mom, size_t k) {
  (void)p, (void)mom, (void)k;
  *mk = 1.0f; /* weight stays +0.0: still no signal */
}
static void set_random(float *p, float *mk, float *mom, size_t k) {
  (void)mom;
  *mk = 1.0f;
  float v = 0.4f * sinf(1.7f * (float)k + 0.3f);
  *p = v + (v >= 0 ? 0.1f : -0.1f); /* non-zero */
}

/* ---- finite differences -------------------------------------------------------------------- */

/* The summed softmax cross-entropy of the net in double, from the reference forward (after a
 * float forward when a training-mode dropout layer needs its keep mask filled). */
static double ref_loss(nest_net *net, const nest_ctx *ctx, const float *x) {
  double z[B * 16], loss = 0;
  const int k = net->nclasses;
  int dropout = 0;
  for (int i = 0; i < net->nlayers; ++i) dropout |= net->layers[i]->kind == NEST_LAYER_DROPOUT;
  if (dropout && ctx->train) {
    outputs o;
    run(net, ctx, x, 0, &o);
  }
  ref_logits(net, ctx, x, z);
  for (int i = 0; i < B; ++i) {
    const double *zi = z + (size_t)i * k;
    double mx = zi[0], se = 0;
    for (int j = 1; j < k; ++j) mx = fmax(mx, zi[j]);
    for (int j = 0; j < k; ++j) se += exp(zi[j] - mx);
    loss += mx + log(se) - zi[labels[i]];
  }
  return loss;
}

/* dL/dparam of tensor (layer, slot) from the float backward against central differences of
 * the double-precision reference loss, on every fresh element (first, up to 24) and an even
 * sample of the rest (up to 16). In double, h = 1e-5 leaves rounding noise ~1e-10 and makes a
 * ReLU kink or max-pool switch inside the step rare; such a probe shows as curvature
 * |L(+h) - 2L(0) + L(-h)| far beyond a smooth function's and is skipped if it disagrees (at
 * most a fifth may be). The tolerance covers the float engine's rounding. */
static void fd_check(nest_net *net, const nest_ctx *ctx, const float *x, const mapping *m,
                     int layer, int slot, const char *what) {
  nest_layer *l = net->layers[layer];
  const nest_param *p = &l->param[slot];
  outputs o;
  run(net, ctx, x, 1, &o);
  float *g = nest_test_falloc(p->count);
  memcpy(g, l->g[slot], p->count * sizeof(float));
  const double l0 = ref_loss(net, ctx, x);
  size_t probes[48];
  int np = 0, nfresh = 0;
  for (size_t e = 0; e < p->count && nfresh < 24; ++e)
    if (old_index(m, layer, p->count, p->dims[0], p->maskable, e) < 0) probes[np++] = e, ++nfresh;
  size_t stride = p->count / 16 + 1;
  for (size_t e = stride / 2; e < p->count && np < 40; e += stride) probes[np++] = e;
  const double h = 1e-5;
  int checked = 0, skipped = 0;
  for (int k = 0; k < np; ++k) {
    size_t e = probes[k];
    float save = l->p[slot][e];
    l->p[slot][e] = save + (float)h;
    double hp = (double)l->p[slot][e] - save; /* the step the float actually took */
    double lp = ref_loss(net, ctx, x);
    l->p[slot][e] = save - (float)h;
    double hm = save - (double)l->p[slot][e];
    double lm = ref_loss(net, ctx, x);
    l->p[slot][e] = save;
    double fd = (lp - lm) / (hp + hm), an = g[e];
    if (fabs(an - fd) <= 2e-4 + 2e-3 * fabs(fd)) {
      ++checked;
      continue;
    }
    if (fabs(lp - 2 * l0 + lm) > 100 * h * h) {
      ++skipped;
      continue;
    }
    fail_msg("%s: d%s.%s[%zu] = %.8g but finite difference %.8g", what, l->name, p->name, e, an,
             fd);
  }
  free(g);
  if (skipped * 5 > checked + skipped)
    fail_msg("%s: %s.%s: %d of %d probes straddle a kink", what, l->name, p->name, skipped,
             checked + skipped);
  assert_true(checked > 0);
}

/* ---- one scenario ------------------------------------------------------------------------- */

typedef enum { OP_APPEND, OP_INSERT_MID, OP_DELETE_SILENT, OP_MIX, OP_PERMUTE, NOPS } op_kind;
static const char *const op_names[NOPS] = {"append 2", "insert fresh units at 0 and 3",
                                           "delete units without signal", "remap {2,-1,0}",
                                           "reverse the units"};

/* Consumer input blocks of unit u: value, mask and momentum 0 (the unit feeds nothing). */
static void silence_outgoing(nest_net *net, int layer, int consumer, int u) {
  const int U = units_of(net, layer);
  nest_layer *c = net->layers[consumer];
  const nest_param *p = &c->param[0];
  size_t row = p->count / (size_t)p->dims[0], glen = row / (size_t)U;
  for (int r = 0; r < p->dims[0]; ++r)
    for (size_t t = 0; t < glen; ++t) {
      size_t e = (size_t)r * row + (size_t)u * glen + t;
      c->p[0][e] = 0.0f, c->m[0][e] = 0.0f, net->mom[p->offset + e] = 0.0f;
    }
}

/* Unit u's own weights dormant and zero, bias 0: with a ReLU after it outputs exactly 0. */
static void kill_unit(nest_net *net, int layer, int u) {
  nest_layer *l = net->layers[layer];
  const nest_param *w = &l->param[0];
  size_t row = w->count / (size_t)w->dims[0];
  for (size_t t = 0; t < row; ++t) {
    size_t e = (size_t)u * row + t;
    l->p[0][e] = 0.0f, l->m[0][e] = 0.0f, net->mom[w->offset + e] = 0.0f;
  }
  l->p[1][u] = 0.0f;
}

static void scenario(const topo *t, int train, op_kind op) {
  char what[160];
  snprintf(what, sizeof what, "%s, %s ctx, %s", t->label, train ? "training" : "eval",
           op_names[op]);
  nest_net *net = make_net(t, 7 + (uint64_t)op);
  const int L = t->resize, U = units_of(net, L);
  assert_int_equal(nest_surgery_consumer(net, L), t->consumer);
  assert_true(nest_surgery_can_resize(net, L, NULL));
  assert_true(U >= 3 && U + 2 <= MAXU);
  const nest_ctx ctx = make_ctx(t, train);
  float *x = nest_test_falloc(B * nest_shape_size(t->in));
  nest_test_fill_normal(x, B * nest_shape_size(t->in), 31 + (uint64_t)train, 1.0f);

  int src[MAXU], count = 0;
  const int del[2] = {U - 1, 1}; /* unsorted on purpose */
  if (op == OP_DELETE_SILENT) {
    silence_outgoing(net, L, t->consumer, U - 1);
    if (t->relu_after)
      kill_unit(net, L, 1); /* dead: its consumer weights stay active and non-zero */
    else
      silence_outgoing(net, L, t->consumer, 1);
  }
  nest_net *old = clone_net(net);
  switch (op) {
    case OP_APPEND:
      for (int u = 0; u < U; ++u) src[count++] = u;
      src[count++] = -1, src[count++] = -1;
      assert_int_equal(nest_surgery_append(&net, L, 2), NEST_OK);
      break;
    case OP_INSERT_MID:
      src[count++] = -1;
      for (int u = 0; u < U; ++u) {
        if (u == 2) src[count++] = -1;
        src[count++] = u;
      }
      assert_int_equal(nest_surgery_remap(&net, L, src, count), NEST_OK);
      break;
    case OP_DELETE_SILENT:
      for (int u = 0; u < U; ++u)
        if (u != del[0] && u != del[1]) src[count++] = u;
      assert_int_equal(nest_surgery_delete(&net, L, del, 2), NEST_OK);
      break;
    case OP_MIX:
      src[0] = 2, src[1] = -1, src[2] = 0, count = 3;
      assert_int_equal(nest_surgery_remap(&net, L, src, count), NEST_OK);
      break;
    case OP_PERMUTE:
      for (int u = 0; u < U; ++u) src[count++] = U - 1 - u;
      assert_int_equal(nest_surgery_remap(&net, L, src, count), NEST_OK);
      break;
    default: fail();
  }
  const mapping m = {L, t->consumer, U, count, src};
  check_meta(old, net, &m);
  check_mapping(old, net, &m);

  /* Dropout draws are keyed by element position: once units move (anything but an append),
   * the surviving units draw other masks in training, so only eval compares there. */
  const int comparable = !(train && t->dropout && op != OP_APPEND);
  int same = 1, compared = 0;
  if (comparable && (op == OP_APPEND || op == OP_INSERT_MID || op == OP_DELETE_SILENT))
    check_same_function(old, net, &ctx, x, &m, what, &same), compared = 1;
  if (op == OP_APPEND || op == OP_INSERT_MID) {
    for_fresh_weights(net, &m, set_active); /* active but still +0.0: still no signal */
    if (comparable) check_same_function(old, net, &ctx, x, &m, what, &same), compared = 1;
  }
  g_float_compared += compared;
  g_float_same += compared && same;
  if (op == OP_PERMUTE && comparable) {
    /* Same function, but the consumer now sums its inputs in another order: equal up to
     * float rounding only. */
    outputs a, b;
    run(old, &ctx, x, 0, &a);
    run(net, &ctx, x, 0, &b);
    for (int i = 0; i < B * t->classes; ++i)
      if (fabsf(a.logits[i] - b.logits[i]) > 1e-5f * (1.0f + fabsf(a.logits[i])))
        fail_msg("%s: logit %d %.9g vs %.9g", what, i, a.logits[i], b.logits[i]);
  }

  /* The fresh units come alive: backward must still be the gradient of the new net. */
  for_fresh_weights(net, &m, set_random);
  fd_check(net, &ctx, x, &m, L, 0, what);
  fd_check(net, &ctx, x, &m, t->consumer, 0, what);
  if (t->bn >= 0) fd_check(net, &ctx, x, &m, t->bn, 0, what);

  nest_net_destroy(&old);
  nest_net_destroy(&net);
  free(x);
}

static void run_topology(int which) {
  const topo t = topo_get(which);
  g_float_same = g_float_compared = 0;
  g_float_maxdiff = 0;
  for (int train = 0; train < 2; ++train)
    for (int op = 0; op < NOPS; ++op) scenario(&t, train, (op_kind)op);
  print_message("  %s: %d surgeries keep the function: reference bitwise in all, float engine "
                "bitwise in %d (largest logit change %.2g)\n",
                t.label, g_float_compared, g_float_same, g_float_maxdiff);
}

static void test_dense_dense(void **state) { (void)state, run_topology(0); }
static void test_dense_bn_dense(void **state) { (void)state, run_topology(1); }
static void test_conv_conv(void **state) { (void)state, run_topology(2); }
static void test_conv_bn_conv(void **state) { (void)state, run_topology(3); }
static void test_conv_pool_dense(void **state) { (void)state, run_topology(4); }
static void test_lenet5_conv2_bn_pool_dense(void **state) { (void)state, run_topology(5); }
static void test_lenet5_conv1_bn_pool_conv(void **state) { (void)state, run_topology(6); }
static void test_area_conv_bn_area_conv(void **state) { (void)state, run_topology(7); }
static void test_lenet5_conv1_bn_pool_area_conv(void **state) { (void)state, run_topology(8); }

/* ---- consumers, reasons, errors, descriptions ------------------------------------------- */

static void test_consumer_and_can_resize(void **state) {
  (void)state;
  const topo t = topo_get(5); /* conv1 conv1.bn pool1 conv2 conv2.bn pool2 fc1 fc1.bn fc1.relu fc2 */
  nest_net *net = make_net(&t, 1);
  const int want[] = {3, 3, 3, 6, 6, 6, 9, 9, 9, -1};
  assert_int_equal(net->nlayers, 10);
  for (int i = 0; i < net->nlayers; ++i) assert_int_equal(nest_surgery_consumer(net, i), want[i]);
  assert_int_equal(nest_surgery_consumer(net, -1), -1);
  assert_int_equal(nest_surgery_consumer(net, 10), -1);
  const char *why = NULL;
  assert_true(nest_surgery_can_resize(net, 0, &why) && why == NULL);
  assert_true(nest_surgery_can_resize(net, 6, &why));
  assert_false(nest_surgery_can_resize(net, 9, &why));
  assert_non_null(strstr(why, "output layer"));
  assert_false(nest_surgery_can_resize(net, 1, &why));
  assert_non_null(strstr(why, "batchnorm"));
  assert_false(nest_surgery_can_resize(net, 2, &why));
  assert_non_null(strstr(why, "maxpool"));
  assert_false(nest_surgery_can_resize(net, 8, &why));
  assert_non_null(strstr(why, "relu"));
  assert_false(nest_surgery_can_resize(net, 42, &why));
  assert_non_null(why);
  assert_false(nest_surgery_can_resize(net, 9, NULL));
  nest_net_destroy(&net);
}

/* A failing call returns NEST_ERR_ARG naming the layer and leaves *net as it was. */
static void expect_arg_error(nest_net **net, nest_status st, const char *needle,
                             const nest_net *before, uint64_t hash, const nest_ctx *ctx,
                             const float *x, const outputs *ref) {
  assert_int_equal(st, NEST_ERR_ARG);
  if (!strstr(nest_error_message(), needle))
    fail_msg("message '%s' does not name '%s'", nest_error_message(), needle);
  assert_ptr_equal(*net, before);
  assert_true((*net)->generation == 0);
  assert_true(nest_net_hash(*net, NEST_HASH_ALL) == hash);
  outputs o;
  run(*net, ctx, x, 0, &o);
  assert_memory_equal(o.logits, ref->logits, sizeof o.logits);
  nest_error_clear();
}

static void test_errors(void **state) {
  (void)state;
  const topo t = topo_get(0); /* fc1 fc1.relu fc1.drop fc2 fc2.relu fc3; fc1 has 7 units */
  nest_net *net = make_net(&t, 3);
  const nest_net *before = net;
  const uint64_t hash = nest_net_hash(net, NEST_HASH_ALL);
  const nest_ctx ctx = make_ctx(&t, 0);
  float x[B * 12];
  nest_test_fill_normal(x, B * 12, 5, 1.0f);
  outputs ref;
  run(net, &ctx, x, 0, &ref);
#define EXPECT(call, needle) expect_arg_error(&net, (call), (needle), before, hash, &ctx, x, &ref)
  const int ok3[] = {0, 1, 2};
  EXPECT(nest_surgery_append(&net, 5, 1), "fc3");             /* output layer */
  EXPECT(nest_surgery_remap(&net, 5, ok3, 3), "output layer");
  EXPECT(nest_surgery_delete(&net, 5, ok3, 1), "fc3");
  EXPECT(nest_surgery_append(&net, 1, 1), "fc1.relu");        /* not a unit layer */
  EXPECT(nest_surgery_remap(&net, 2, ok3, 3), "fc1.drop");
  EXPECT(nest_surgery_append(&net, 6, 1), "layer 6");         /* no such layer */
  EXPECT(nest_surgery_append(&net, -1, 1), "layer -1");
  EXPECT(nest_surgery_append(&net, 0, -1), "fc1");
  EXPECT(nest_surgery_remap(&net, 0, (const int[]){0, 7}, 2), "fc1");  /* out of range */
  EXPECT(nest_surgery_remap(&net, 0, (const int[]){-2}, 1), "fc1");
  EXPECT(nest_surgery_remap(&net, 0, (const int[]){1, -1, 1}, 3), "twice"); /* duplicated */
  EXPECT(nest_surgery_remap(&net, 0, ok3, 0), "fc1");                      /* no unit left */
  EXPECT(nest_surgery_remap(&net, 0, NULL, 2), "fc1");
  EXPECT(nest_surgery_delete(&net, 3, (const int[]){0, 1, 2, 3, 4, 5}, 6), "fc2"); /* all */
  EXPECT(nest_surgery_delete(&net, 0, (const int[]){7}, 1), "fc1");
  EXPECT(nest_surgery_delete(&net, 0, (const int[]){-1}, 1), "fc1");
  EXPECT(nest_surgery_delete(&net, 0, (const int[]){3, 3}, 2), "twice");
  EXPECT(nest_surgery_delete(&net, 0, NULL, 1), "fc1");
#undef EXPECT
  assert_int_equal(nest_surgery_remap(NULL, 0, ok3, 3), NEST_ERR_ARG);
  nest_error_clear();
  /* still usable: a surgery after all those errors works */
  assert_int_equal(nest_surgery_append(&net, 0, 1), NEST_OK);
  assert_int_equal(net->layers[0]->hp.units, 8);
  nest_net_destroy(&net);
}

static void test_generation_and_descriptions(void **state) {
  (void)state;
  nest_layer_spec *specs;
  int n;
  nest_arch_opts o = {.width = 1.0};
  nest_shape in = {12, 1, 1};
  assert_int_equal(nest_arch_build("mlp:12-7-6-4", &o, in, 4, &specs, &n), NEST_OK);
  nest_net *net;
  assert_int_equal(nest_net_create(specs, n, in, 4, 3, 1, &net), NEST_OK);
  free(specs);
  assert_int_equal(nest_net_init(net, 1, 1.0, -1), NEST_OK);
  char buf[256];
  assert_true(net->generation == 0);

  assert_int_equal(nest_surgery_append(&net, 0, 3), NEST_OK);
  assert_true(net->generation == 1);
  assert_int_equal(net->specs[0].hp.units, 10);
  nest_net_arch_string(net, buf, sizeof buf);
  assert_string_equal(buf, "fc1 dense 10 | fc1.relu relu | fc2 dense 6 | fc2.relu relu | fc3 dense 4");
  nest_net_widths_string(net, buf, sizeof buf);
  assert_string_equal(buf, "12-10-6-4");

  assert_int_equal(nest_surgery_delete(&net, 2, (const int[]){5, 0, 2}, 3), NEST_OK);
  assert_true(net->generation == 2);
  assert_int_equal(net->specs[2].hp.units, 3);
  nest_net_widths_string(net, buf, sizeof buf);
  assert_string_equal(buf, "12-10-3-4");

  /* a remap to the same width is a rebuild: still a new generation */
  assert_int_equal(nest_surgery_remap(&net, 0, (const int[]){0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 10),
                   NEST_OK);
  assert_true(net->generation == 3);
  nest_net_destroy(&net);

  /* conv widths */
  const topo t = topo_get(6);
  net = make_net(&t, 2);
  assert_int_equal(nest_surgery_append(&net, 3, 2), NEST_OK); /* conv2 10 -> 12 */
  nest_net_arch_string(net, buf, sizeof buf);
  assert_non_null(strstr(buf, "conv2 conv2d 12 5x5/1 p0"));
  nest_net_widths_string(net, buf, sizeof buf);
  assert_string_equal(buf, "400-4c-12c-100-10");
  assert_int_equal(nest_surgery_delete(&net, 0, (const int[]){3}, 1), NEST_OK); /* conv1 4 -> 3 */
  nest_net_widths_string(net, buf, sizeof buf);
  assert_string_equal(buf, "400-3c-12c-100-10");
  assert_true(net->generation == 2);
  nest_net_destroy(&net);
}

/* nest_surgery_set_area: on (all-ones mask, same function, everything copied), refusing off
 * with a partial mask, off again, the no-op, errors. */
static void test_set_area(void **state) {
  (void)state;
  const topo t = topo_get(3); /* conv1 conv1.bn conv1.relu conv2 conv2.relu pool2 fc */
  nest_net *net = make_net(&t, 4);
  const nest_ctx ctx = make_ctx(&t, 0);
  float x[B * 2 * 9 * 9];
  nest_test_fill_normal(x, B * 2 * 9 * 9, 8, 1.0f);
  nest_net *old = clone_net(net);
  outputs a, b;
  double ra[B * 16], rb[B * 16];
  run(old, &ctx, x, 0, &a);
  ref_logits(old, &ctx, x, ra);

  /* on: a new net with conv2's area mask, all ones; every value copied bitwise */
  assert_ok(nest_surgery_set_area(&net, 3, 1));
  assert_true(net->generation == old->generation + 1);
  for (int i = 0; i < net->nlayers; ++i) {
    nest_layer_hparams want = old->specs[i].hp;
    if (i == 3) want.area = 1;
    assert_memory_equal(&want, &net->specs[i].hp, sizeof want);
    assert_memory_equal(&want, &net->layers[i]->hp, sizeof want);
  }
  nest_layer *c2 = net->layers[3];
  assert_int_equal(c2->nbuffers, 1);
  assert_string_equal(c2->buffer[0].name, "area");
  assert_true(c2->buffer[0].mask);
  assert_int_equal(c2->buffer[0].count, 5 * 4 * 7 * 7);
  for (size_t j = 0; j < c2->buffer[0].count; ++j) assert_true(c2->buf[0][j] == 1.0f);
  assert_int_equal(net->nparams, old->nparams);
  assert_memory_equal(net->params, old->params, old->nparams * sizeof(float));
  assert_memory_equal(net->mom, old->mom, old->nparams * sizeof(float));
  assert_memory_equal(net->masks, old->masks, old->nparams * sizeof(float));
  for (size_t i = 0; i < net->nparams; ++i) assert_true(bits_equal(net->grads[i], 0.0f));
  for (int s = 0; s < 2; ++s) /* BN running statistics */
    assert_memory_equal(net->layers[1]->buf[s], old->layers[1]->buf[s],
                        old->layers[1]->buffer[s].count * sizeof(float));
  /* the same function (the area sum groups the terms by input map: equal to rounding) */
  run(net, &ctx, x, 0, &b);
  ref_logits(net, &ctx, x, rb);
  for (int i = 0; i < B * t.classes; ++i) {
    if (fabs(ra[i] - rb[i]) > 1e-12 * (1.0 + fabs(ra[i])))
      fail_msg("reference logit %d: %.17g vs %.17g", i, ra[i], rb[i]);
    if (fabsf(a.logits[i] - b.logits[i]) > 1e-5f * (1.0f + fabsf(a.logits[i])))
      fail_msg("logit %d: %.9g vs %.9g", i, a.logits[i], b.logits[i]);
  }

  /* already on: nothing rebuilt */
  const nest_net *same = net;
  assert_ok(nest_surgery_set_area(&net, 3, 1));
  assert_ptr_equal(net, same);
  assert_true(net->generation == 1);

  /* off with a partial mask: refused, the net untouched; the mask's own effect is real */
  c2->buf[0][17] = 0.0f;
  c2->buf[0][300] = 0.0f;
  const uint64_t h = nest_net_hash(net, NEST_HASH_ALL);
  nest_error_clear();
  assert_int_equal(nest_surgery_set_area(&net, 3, 0), NEST_ERR_ARG);
  assert_non_null(strstr(nest_error_message(), "conv2"));
  assert_non_null(strstr(nest_error_message(), "2 of 980"));
  nest_error_clear();
  assert_ptr_equal(net, same);
  assert_true(nest_net_hash(net, NEST_HASH_ALL) == h);
  run(net, &ctx, x, 0, &b);
  assert_true(memcmp(a.logits, b.logits, sizeof(float) * B * t.classes) != 0);

  /* all ones again: off works, the buffer is gone, the function is the plain one */
  c2->buf[0][17] = c2->buf[0][300] = 1.0f;
  assert_ok(nest_surgery_set_area(&net, 3, 0));
  assert_true(net->generation == 2);
  assert_int_equal(net->layers[3]->hp.area, 0);
  assert_int_equal(net->specs[3].hp.area, 0);
  assert_int_equal(net->layers[3]->nbuffers, 0);
  assert_int_equal(net->nbuf, old->nbuf);
  assert_memory_equal(net->params, old->params, old->nparams * sizeof(float));
  assert_memory_equal(net->buffers, old->buffers, old->nbuf * sizeof(float));
  run(net, &ctx, x, 0, &b);
  assert_memory_equal(a.logits, b.logits, sizeof(float) * B * t.classes);

  /* errors name the layer and leave the net as it was */
  same = net;
  assert_int_equal(nest_surgery_set_area(&net, 1, 1), NEST_ERR_ARG); /* batchnorm */
  assert_non_null(strstr(nest_error_message(), "conv1.bn"));
  assert_int_equal(nest_surgery_set_area(&net, 7, 1), NEST_ERR_ARG); /* no such layer */
  assert_non_null(strstr(nest_error_message(), "layer 7"));
  assert_int_equal(nest_surgery_set_area(&net, 0, 2), NEST_ERR_ARG);
  assert_non_null(strstr(nest_error_message(), "conv1"));
  assert_int_equal(nest_surgery_set_area(NULL, 0, 1), NEST_ERR_ARG);
  nest_error_clear();
  assert_ptr_equal(net, same);
  assert_true(net->generation == 2);
  nest_net_destroy(&old);
  nest_net_destroy(&net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dense_dense),
      cmocka_unit_test(test_dense_bn_dense),
      cmocka_unit_test(test_conv_conv),
      cmocka_unit_test(test_conv_bn_conv),
      cmocka_unit_test(test_conv_pool_dense),
      cmocka_unit_test(test_lenet5_conv2_bn_pool_dense),
      cmocka_unit_test(test_lenet5_conv1_bn_pool_conv),
      cmocka_unit_test(test_area_conv_bn_area_conv),
      cmocka_unit_test(test_lenet5_conv1_bn_pool_area_conv),
      cmocka_unit_test(test_consumer_and_can_resize),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_generation_and_descriptions),
      cmocka_unit_test(test_set_area),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
