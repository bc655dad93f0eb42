/* sparse_internal.h — the compact program of nest_sparse (sparse.h), shared by its builder
 * (compact.c: analysis of the net, compaction, folding) and its executor (forward.c).
 *
 * Activation buffers: buffer k (k = 0..nops) is op k's input, buffer nops the logits. A tile of
 * T samples stores buffer k as [C, H + 2b, W + 2b, T] (sample innermost) with a zero border b =
 * the padding of the conv that reads it (0 otherwise), so taps never need bounds checks; a
 * dense op reads the same memory as [C*H*W, T] (flatten is free). Every buffer has its own
 * place in a thread's arena (buf_pos), so each stays alive for the whole tile: the skip tensors
 * of a dense op read earlier buffers (its skip sources) long after the ops that wrote them. */
#ifndef NEST_SPARSE_INTERNAL_H
#define NEST_SPARSE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "nest/sparse.h"

/* Output positions (p, q) for q in [q0, q1) of one row p that a kernel contributes to. */
typedef struct {
  int32_t p, q0, q1;
} sp_run;

/* A conv segment: taps [t0, t1) of the op's entries (one kernel (o, m), or the kernels of
 * consecutive input maps that all cover the whole plane) over runs [r0, r1); r0 < 0 = every
 * output position. */
typedef struct {
  int32_t t0, t1, r0, r1;
} sp_seg;

/* One-sample tiles (T = 1) run a stride-1 conv op output-stationary: output map r's plane in
 * row chunks of SP_W positions (p, q0 .. q0+SP_W-1), och[ochptr[r] .. ochptr[r + 1]); chunk
 * c's entries oent[e0 .. e1): a segment and the bits of the chunk's positions it covers (its
 * area mask; every position for a whole-plane segment), in segment order. A chunk is computed
 * in one register: bias, every entry's taps by masked multiply-add, ReLU, one store. The first
 * chunk of a run of n <= 4 consecutive chunks of the same width whose entries name the same
 * segments has n set (the others 0): they are computed together, n independent chains sharing
 * each weight, each with its own masks. */
typedef struct {
  int32_t p, q0, e0, e1, n;
} sp_ochunk;

typedef struct {
  int32_t seg;
  uint32_t bits;
} sp_oent;

typedef struct {
  nest_sparse_kind kind;
  char name[NEST_NAME_LEN];
  nest_shape in, out; /* compact */
  int bin, bout;      /* zero borders of the input and output buffers */
  int relu;
  int kh, kw, stride, pad;
  /* dense, conv: CSR [rows = out.c, cols] */
  int rows, cols;
  /* dense: the parts of its columns, part 0 its input buffer, parts 1 .. nsrc-1 its skip
   * tensors' sources (slot order); part p = feature f of buffer src_buf[p] at column
   * src_col0[p] + f, f < src_cols[p], the parts' columns in order in every row. With skips
   * (nsrc > 1) layout() rebases the columns onto the arena (src_col0[p] = buf_pos[src_buf[p]]),
   * and the op reads its tile's arena base as x: one CSR, one kernel, several buffers. */
  int nsrc;
  int32_t src_buf[1 + NEST_MAX_SKIPS], src_col0[1 + NEST_MAX_SKIPS], src_cols[1 + NEST_MAX_SKIPS];
  int64_t nnz;
  int32_t *rowptr, *colidx;
  float *values;
  /* dense, the same weights for T = 1 in SELL-W form (sliced ELLPACK, W = SP_W rows per slice,
   * rows sorted by decreasing length, ties by index): slice g holds sorted rows g*W .. g*W+W-1,
   * entry k of its lane j at sell_off[g] + k*W + j for k < sell_lens[g*W + j] (the longest,
   * sell_len[g], first), so one vector multiply-add serves W rows, each still summed in its CSR
   * order; sell_rows[g*W + j] = the row (-1: padding lane), sell_bias its bias. Built only
   * when nest_sparse_opts.single = 2 (nslices = 0 otherwise) */
  int nslices;
  int64_t *sell_off;
  int32_t *sell_len, *sell_lens, *sell_rows, *sell_col;
  float *sell_bias, *sell_val;
  /* conv: tap offsets [nnz] in input-buffer positions, m*Hp*Wp + ki*Wp + kj (Hp, Wp padded);
   * segments of row o: segs[segptr[o] .. segptr[o + 1]) */
  int32_t *toff, *segptr;
  sp_seg *segs;
  int64_t nsegs;
  sp_run *runs;
  int64_t nruns;
  int32_t *ochptr; /* conv with stride 1: [rows + 1], else NULL */
  sp_ochunk *och;
  sp_oent *oent;
  int64_t noch, noent;
  int has_area;
  float *bias;          /* [out.c] */
  float *bias_plane;    /* conv: [out.c, oh*ow] or NULL */
  float *scale, *shift; /* affine: [in.c] */
} sp_op;

struct nest_sparse {
  nest_shape in_shape;
  int nclasses;
  int max_batch, nthreads;
  int tile_opt; /* forced tile, 0 = automatic */
  int sell;     /* one-sample tiles use the SELL form of dense ops (else CSR) */
  int tile_cap; /* the largest automatic tile (activation budget) */
  int tmax;     /* the largest tile any call may use: buffers are sized for it */
  int nops;
  sp_op *ops;
  int in_arena;     /* a skip tensor reads buffer 0: it is always loaded into the arena */
  int in_c;         /* input channels buffer 0 holds ... */
  int32_t *in_chan; /* ... [in_c]: their source channels */
  size_t *buf_pos;  /* [nops + 2] floats per sample before buffer k (16-float aligned) */
  float *arena;     /* nthreads x thread_floats */
  size_t thread_floats;
  int *thread_tile; /* [nthreads] the tile each thread's buffers are laid out for (0 = none) */
  nest_sparse_stats stats;
};

/* The tile of a call with n samples on nthreads threads (forward.c): the largest for 1 thread
 * and max_batch, which the buffers are sized for. */
int nest_sparse_tile_for(const nest_sparse *s, int n, int nthreads);

#endif
