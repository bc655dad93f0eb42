/* layer.h — the layer vtable and the layer object.
 *
 * A layer maps a batch x[n, in] to y[n, out], where in/out are per-sample shapes (c, h, w)
 * stored NCHW-contiguous (dense vectors are (d, 1, 1)), so "flatten" is free.
 *
 * Parameters do NOT belong to the layer: setup() only *declares* them (nest_param: shape,
 * init, maskable, decay); the network lays every declared tensor out in flat arenas
 * (values, gradients, momentum, masks) and binds the pointers p[], g[], m[] before any
 * forward pass. A resize (growth / pruning of neurons) is "declare new shapes, rebuild the
 * arenas, copy", done by the network at a sync point identically on every rank.
 *
 * Masks: every maskable tensor W has a mask M of the same shape (1 active, 0 dormant). The
 * network keeps the invariant W == W ⊙ M (dormant weights are exactly 0), so forward may use
 * W directly. backward() must produce the DENSE gradient dL/dW at every position, dormant
 * ones included: growth needs it. The optimizer updates only active positions.
 *
 * Gradient semantics: backward() OVERWRITES g[] with the sum over the local batch rows of
 * dL/dparam, where dy already carries the 1/global_batch scaling of the loss. The training
 * engine then sums g[] over ranks with the by-construction sum (comm.h; in buckets during
 * backward by default). dx may be NULL (first layer: skip the work).
 *
 * Scratch: setup() requests ws_floats (per-call workspace) and cache_floats (values kept
 * from forward for backward, e.g. pool argmax, BN x-hat), both sized for max_batch rows and
 * nthreads threads; the network allocates them once, 64-byte aligned — no malloc in
 * forward/backward. ws contents do not survive a call: the network gives every layer the
 * same ws block (the largest request), so a net needs one layer's workspace, not the sum.
 * At run time ctx->n <= max_batch and ctx->nthreads <= the setup nthreads (asserted). The
 * caller sets omp_set_num_threads(nthreads) too.
 * Thread-count independence: forward and backward give the same bits for any ctx->nthreads
 * (docs/design.md, "Determinism"). Work splits are fixed by the shapes and n, never by the
 * thread count; sums across work items are added in a fixed order; no layer lets OpenBLAS
 * thread a product (conv2d runs single-threaded sgemm per work item, dense uses nest_sgemm,
 * gemm.h).
 *
 * Training mode (ctx->train, not grad_only) requires what P-independence rests on: dropout needs
 * ctx->sample_ids, and batch norm with ctx->allreduce needs ctx->global_n > 0 (asserted, never a
 * silent fall-back to local values).
 *
 * Zero hyper-parameters take defaults, written back into l->hp by setup(): conv stride 0 -> 1,
 * kw 0 -> kh; maxpool stride 0 -> kh (and pad < kernel is required); batchnorm eps 0 -> 1e-5,
 * momentum 0 -> 0.1. */
#ifndef NEST_LAYER_H
#define NEST_LAYER_H

#include <stddef.h>
#include <stdint.h>
#include "nest/status.h"

#define NEST_MAX_PARAMS 12 /* W, b and up to 8 skip tensors (net.h NEST_MAX_SKIPS) */
#define NEST_MAX_BUFFERS 4
#define NEST_NAME_LEN 32

typedef struct {
  int c, h, w;
} nest_shape;

static inline size_t nest_shape_size(nest_shape s) { return (size_t)s.c * s.h * s.w; }

typedef enum {
  NEST_LAYER_DENSE,
  NEST_LAYER_CONV2D,
  NEST_LAYER_MAXPOOL,
  NEST_LAYER_RELU,
  NEST_LAYER_BATCHNORM,
  NEST_LAYER_DROPOUT,
  NEST_LAYER_KIND_COUNT
} nest_layer_kind;

typedef enum { NEST_INIT_ZERO, NEST_INIT_ONE, NEST_INIT_HE, NEST_INIT_XAVIER } nest_init_kind;

/* Hyper-parameters; each kind reads the fields it needs. */
typedef struct {
  int units;                      /* dense: output features */
  int out_c, kh, kw, stride, pad; /* conv2d (all); maxpool (kh, kw, stride, pad) */
  float rate;                     /* dropout: probability of dropping */
  float eps, momentum;            /* batchnorm: variance epsilon, running-average momentum */
  int area;                       /* conv2d: 1 = partial-area masks (NeST Algorithm 2): a 0/1
                                     buffer "area" [out_c, in_c, P, Q] gates the contribution of
                                     input map m through kernel (n, m) at output position (p, q) */
} nest_layer_hparams;

/* A declared trainable tensor. offset/count index the network's arenas. */
typedef struct {
  char name[NEST_NAME_LEN]; /* "W", "b", "gamma", "beta" */
  int ndims, dims[4];       /* e.g. dense W [out, in]; conv W [out_c, in_c, kh, kw] */
  size_t count;             /* product of dims */
  size_t offset;            /* set by the network */
  int fan_in, fan_out;      /* for He / Xavier init */
  nest_init_kind init;
  int maskable;             /* 1: connectivity mask applies (weights); 0: mask is all ones */
  int decay;                /* 1: weight decay applies */
} nest_param;

/* A declared non-trained state tensor (e.g. BN running mean/var); checkpointed, not reduced. */
typedef struct {
  char name[NEST_NAME_LEN];
  size_t count, offset;
  float init_value;
  int mask; /* 1: a 0/1 architecture mask (partial-area "area"), identical on every rank and
               part of the NEST_HASH_MASKS hash; 0: statistics (BN running mean / var) */
} nest_buffer;

/* Per-call context passed to forward/backward. */
typedef struct nest_ctx {
  int n;                       /* local batch rows (may be 0) */
  int train;                   /* 1: training mode (dropout on, BN batch statistics) */
  int nthreads;                /* OpenMP threads this rank may use */
  uint64_t seed;               /* run seed (dropout RNG key) */
  int64_t step;                /* optimizer step (dropout RNG key) */
  const int64_t *sample_ids;   /* [n] global sample ids, so dropout does not depend on ranks */
  /* Sum `n` doubles over all ranks in place (sync batch-norm); must give bit-identical results
   * on every rank and be called by every rank, also one with n == 0. NULL: local statistics. */
  nest_status (*allreduce)(void *comm, double *buf, size_t n);
  void *comm;
  int64_t global_n;            /* rows in the global batch; required (> 0) when allreduce is set */
  /* 1: a gradient-only pass (growth scoring): training-mode batch-norm statistics but the
   * running statistics are left untouched, and dropout is the identity, so the pass changes
   * nothing in the network and its result does not depend on a step counter. */
  int grad_only;
  /* 1: dropout layers whose rate is > 0 use dropout_rate instead (the pruning phases'
   * prune.dropout; 0 turns them off); 0: each layer's own rate. */
  int dropout_set;
  float dropout_rate;
} nest_ctx;

typedef struct nest_layer nest_layer;

typedef struct {
  const char *kind; /* "dense", "conv2d", ... */
  /* Compute l->out from l->in and l->hp, declare params/buffers, request scratch.
   * Fails with NEST_ERR_CONFIG naming l->name on impossible shapes. */
  nest_status (*setup)(nest_layer *l, int max_batch, int nthreads);
  /* y[n, out] = f(x[n, in]). */
  nest_status (*forward)(nest_layer *l, const nest_ctx *ctx, const float *x, float *y);
  /* Given x, y = forward(x) and dy = dL/dy: overwrite g[] with dL/dparams (dense, dormant
   * positions included) and write dx = dL/dx unless dx is NULL. */
  nest_status (*backward)(nest_layer *l, const nest_ctx *ctx, const float *x, const float *y,
                          const float *dy, float *dx);
  /* Optional: release kind-private data (l->priv). */
  void (*cleanup)(nest_layer *l);
} nest_layer_ops;

struct nest_layer {
  const nest_layer_ops *ops;
  nest_layer_kind kind;
  char name[NEST_NAME_LEN]; /* "fc1", "conv2", ... (used in messages and checkpoints) */
  int index;                /* position in the network */
  nest_shape in, out;
  nest_layer_hparams hp;

  int nparams;
  nest_param param[NEST_MAX_PARAMS];
  int nbuffers;
  nest_buffer buffer[NEST_MAX_BUFFERS];

  /* Bound by the network (pointers into its arenas). */
  float *p[NEST_MAX_PARAMS]; /* values */
  float *g[NEST_MAX_PARAMS]; /* gradients */
  float *m[NEST_MAX_PARAMS]; /* masks (all ones for non-maskable) */
  float *buf[NEST_MAX_BUFFERS];

  /* Scratch requested by setup(), allocated and bound by the network. */
  size_t ws_floats;
  float *ws;
  size_t cache_floats;
  float *cache;
  void *priv; /* kind-private data, freed by ops->cleanup */
  void *standalone; /* storage owned by nest_layer_bind_standalone, or NULL */
};

/* The ops of a kind; NULL if unknown. */
const nest_layer_ops *nest_layer_ops_of(nest_layer_kind kind);
const char *nest_layer_kind_name(nest_layer_kind kind);

/* Helpers for setup() implementations. */
nest_param *nest_layer_declare_param(nest_layer *l, const char *name, int ndims, const int *dims,
                                     nest_init_kind init, int maskable, int decay, int fan_in,
                                     int fan_out);
nest_buffer *nest_layer_declare_buffer(nest_layer *l, const char *name, size_t count,
                                       float init_value);

/* Create a layer of `kind` with input shape `in`, run its setup(). The caller owns it and
 * frees it with nest_layer_destroy(). Parameters are declared but not yet bound. */
nest_status nest_layer_create(const nest_layer_ops *ops, const char *name, nest_shape in,
                              const nest_layer_hparams *hp, int max_batch, int nthreads,
                              nest_layer **out);
/* Standalone binding (tests, tools): allocate private storage for params (initialised to
 * zero, masks to one), grads, buffers (init_value), ws and cache. The network does not use
 * this: it binds into its arenas. */
nest_status nest_layer_bind_standalone(nest_layer *l);
/* Frees kind-private data and, if standalone-bound, the private storage; sets *l = NULL. */
void nest_layer_destroy(nest_layer **l);

/* The built-in kinds (defined in src/layers/<kind>.c). */
extern const nest_layer_ops nest_dense_ops;
extern const nest_layer_ops nest_conv2d_ops;
extern const nest_layer_ops nest_maxpool_ops;
extern const nest_layer_ops nest_relu_ops;
extern const nest_layer_ops nest_batchnorm_ops;
extern const nest_layer_ops nest_dropout_ops;

#endif
