/* sparse.h — truly sparse inference: a trained nest_net compiled (read-only) into a compact,
 * forward-only program whose cost follows the active weights, not the dense shapes.
 *
 * What nest_sparse_create does to the net (docs/performance.md, "Sparse inference"):
 *   - compaction: hidden units / feature maps that cannot influence the logits are removed
 *     with every column that reads them: units with no active outputs (to units that stay),
 *     and units with no input-dependent active inputs. The latter still emit a constant
 *     (relu(bias), a constant map through pooling, ...): that constant is computed in double
 *     and folded into the bias of each consumer (a per-position bias plane for a conv consumer
 *     whose zero padding or partial-area mask makes the folded term vary over the plane), so
 *     the outputs stay those of the net. The output layer keeps all its units;
 *   - dense layers: CSR over output units (compact input columns, ascending); a layer with
 *     SCANN skip tensors (net.h "Skip connections") is one op whose rows hold the chain's
 *     entries, then each skip tensor's (columns of its source activation, kept alive for it),
 *     summed by the same kernel into one accumulator; compaction follows the skip tensors too
 *     (a unit read only by a skip tensor stays, a dead source folds through it);
 *   - conv2d: per output map, the active taps of the active kernels (CSR over
 *     [OC, C*kh*kw]); a kernel with partial-area mask (hp.area) is executed only over the runs
 *     of output positions its mask keeps, pruned kernels and masked positions are never
 *     touched; kernels with an all-ones mask are merged into one pass;
 *   - batch norm (eval) folded into the preceding dense / conv layer (else a per-channel
 *     affine op); dropout removed (identity); ReLU fused into the op before it; maxpool kept.
 * Execution: samples are processed in tiles of T (1, 16, 32 or 64) with activations laid out
 * [C, H, W, T] (the sample innermost), so one weight multiplies T samples with one vector
 * instruction; T = 1 is plain per-sample CSR. Tiles are spread over OpenMP threads. Every
 * output element is summed in an order fixed by the compact net alone (bias, then the taps /
 * nonzeros in order, with fmaf), so the logits are bit-identical for any thread count, any
 * tile size and any batch size (a sample gives the same bits alone or in a batch).
 * Nothing in nest_sparse_forward allocates: per-thread tile buffers are sized at create.
 *
 * The dense masked path (nest_net_forward in eval mode) is the reference twin
 * (tests/test_sparse.c, skip tensors included): outputs equal within float tolerance. */
#ifndef NEST_SPARSE_H
#define NEST_SPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "nest/net.h"
#include "nest/status.h"

typedef struct nest_sparse nest_sparse;

typedef struct {
  /* Samples per tile: 0 = automatic (1 for n < 4, else the largest of 16 / 32 / 64 that is
   * at most n, leaves every thread a tile and keeps a thread's activations within 2 MiB);
   * 1, 16, 32 or 64 = always that tile (benchmarks comparing the layouts). Results are the
   * same bits whatever the tile. */
  int tile;
  /* Dense layers in one-sample tiles: 0 = automatic (CSR), 1 = CSR (rows one at a time, four
   * interleaved), 2 = also build a SELL copy (sliced ELLPACK: one vector multiply-add serves
   * 16 rows with AVX-512, 8 with AVX2, the inputs gathered; 4-14% faster at batch 1 on the
   * LeNets, twice the dense layers' bytes: docs/performance.md). The same bits either way. */
  int single;
} nest_sparse_opts;

/* Compile `net` (not modified; eval-mode semantics) for at most nthreads OpenMP threads;
 * max_batch = the usual largest batch: it sizes the per-thread tile buffers (larger batches
 * run as more tiles). opts may be NULL (automatic). Errors: NEST_ERR_ARG for a net without a
 * dense / conv layer, a layer kind it cannot run or bad arguments; NEST_ERR_NOMEM. */
nest_status nest_sparse_create(const nest_net *net, int max_batch, int nthreads,
                               const nest_sparse_opts *opts, nest_sparse **out);
void nest_sparse_destroy(nest_sparse **s);

/* logits[n, nclasses] = net(x[n, in]) in eval mode, x row-major (n samples of in_shape,
 * normalised as for the dense net), any n >= 0; 1 <= nthreads <= create's nthreads, else
 * NEST_ERR_ARG. The caller's omp_set_num_threads is not consulted. One call at a time per
 * nest_sparse (the buffers are its own); nothing is allocated. */
nest_status nest_sparse_forward(nest_sparse *s, int n, int nthreads, const float *x, float *logits);

/* What compaction kept and what it costs. */
typedef struct {
  nest_shape in_shape;
  int nclasses;
  int nops;               /* ops of the compact program */
  int64_t source_weights; /* active weights of the source net (nest_net_count) */
  int64_t nnz;            /* weights the compact program multiplies */
  int units_removed;      /* hidden units / maps removed ... */
  int units_folded;       /* ... of which input-independent ones folded into biases */
  double flops;           /* per sample: 2 x multiply-adds actually executed (area masks
                             counted per kept position), plus 1 per bias-plane element */
  size_t model_bytes;     /* the compact program: values, indices, runs, biases, BN/affine */
  size_t dense_bytes;     /* the same layers stored dense at the compact shapes (float32) */
  size_t source_bytes;    /* the source net's weights, biases and masks as float32 */
  size_t work_bytes;      /* activation buffers (all threads, largest tile) */
} nest_sparse_stats;
void nest_sparse_get_stats(const nest_sparse *s, nest_sparse_stats *out);

/* One op of the compact program, for describing and exporting it (bench_infer rebuilds it in
 * PyTorch from this). Pointers are into s and live as long as it does. */
typedef enum {
  NEST_SPARSE_DENSE, /* y[out] = W x + bias (x = the flattened [C, H, W] input, then the skip
                        sources' features: nsrc below) */
  NEST_SPARSE_CONV,  /* y = conv(x, W) + bias (+ bias_plane), gated by the area runs */
  NEST_SPARSE_POOL,  /* max pooling (kh, kw, stride, pad; padding never wins) */
  NEST_SPARSE_AFFINE /* y[c] = x[c] * scale[c] + shift[c] (batch norm not foldable) */
} nest_sparse_kind;

typedef struct {
  nest_sparse_kind kind;
  const char *name;        /* the source layer's name */
  nest_shape in, out;      /* compact shapes */
  int relu;                /* 1: y = max(y, 0) after the op */
  int kh, kw, stride, pad; /* conv, pool */
  /* dense, conv: W as CSR over rows = out.c, columns = in features (dense) or
   * (m * kh + ki) * kw + kj (conv, m a compact input map), ascending per row */
  int rows, cols;
  /* dense: where its columns come from. Part 0 is the op's input, parts 1 .. nsrc-1 its skip
   * tensors' sources, each the input of op src_op[p] (0 = the program input; an earlier op's
   * input: the activation the skip tensor reads, compact); feature f of part p is column
   * src_col0[p] + f, f < src_cols[p]; a row lists part 0's entries, then part 1's, ... (each
   * ascending). Without skips nsrc = 1 and src_col0[0] = 0; with skips the parts' columns are
   * offsets into the program's activation arena (disjoint, not contiguous); cols = the sum of
   * src_cols. */
  int nsrc;
  const int32_t *src_op, *src_col0, *src_cols;
  int64_t nnz;
  const int32_t *rowptr;      /* [rows + 1] */
  const int32_t *colidx;      /* [nnz] */
  const float *values;        /* [nnz] */
  const float *bias;          /* [out.c] (conv: per map) */
  const float *bias_plane;    /* conv only, or NULL: [out.c, oh*ow] added after the bias */
  int has_area;               /* conv: some kernel runs over part of the plane only */
  const float *scale, *shift; /* affine: [in.c] */
} nest_sparse_op;

int nest_sparse_nops(const nest_sparse *s);
void nest_sparse_get_op(const nest_sparse *s, int i, nest_sparse_op *out);
/* Conv op i with has_area: area[o, m, p] (0/1, [out.c, in.c, oh*ow]) = whether kernel (o, m)
 * contributes at output position p (rebuilt from the runs; kernels with no active tap are 0).
 * NEST_ERR_ARG for an op that is not a conv. */
nest_status nest_sparse_get_area(const nest_sparse *s, int i, uint8_t *area);
/* One line per op to `file` (a FILE *): "fc1 dense 784 -> 216 relu, 7351 nnz (4.3%)", a dense
 * op with skip tensors also its sources ("<in,fc1": the program input, the output of op fc1). */
void nest_sparse_describe(const nest_sparse *s, void *file);

#endif
