/* info.c — describing and exporting a compact program (sparse.h): statistics, the ops with
 * their CSR arrays, partial-area masks rebuilt from the runs, and a one-line-per-op listing. */
#include <stdio.h>
#include <string.h>

#include "sparse_internal.h"

void nest_sparse_get_stats(const nest_sparse *s, nest_sparse_stats *out) { *out = s->stats; }

int nest_sparse_nops(const nest_sparse *s) { return s->nops; }

void nest_sparse_get_op(const nest_sparse *s, int i, nest_sparse_op *out) {
  NEST_ASSERT(i >= 0 && i < s->nops);
  const sp_op *op = &s->ops[i];
  memset(out, 0, sizeof *out);
  out->kind = op->kind;
  out->name = op->name;
  out->in = op->in;
  out->out = op->out;
  out->relu = op->relu;
  out->kh = op->kh;
  out->kw = op->kw;
  out->stride = op->stride;
  out->pad = op->pad;
  out->rows = op->rows;
  out->cols = op->cols;
  out->nsrc = op->nsrc;
  out->src_op = op->src_buf; /* buffer k = op k's input */
  out->src_col0 = op->src_col0;
  out->src_cols = op->src_cols;
  out->nnz = op->nnz;
  out->rowptr = op->rowptr;
  out->colidx = op->colidx;
  out->values = op->values;
  out->bias = op->bias;
  out->bias_plane = op->bias_plane;
  out->has_area = op->has_area;
  out->scale = op->scale;
  out->shift = op->shift;
}

nest_status nest_sparse_get_area(const nest_sparse *s, int i, uint8_t *area) {
  if (i < 0 || i >= s->nops || s->ops[i].kind != NEST_SPARSE_CONV)
    return NEST_ERR(NEST_ERR_ARG, "nest_sparse_get_area: op %d is not a conv", i);
  const sp_op *op = &s->ops[i];
  const size_t n = (size_t)op->out.h * op->out.w, kk = (size_t)op->kh * op->kw;
  memset(area, 0, (size_t)op->rows * op->in.c * n);
  for (int r = 0; r < op->rows; ++r)
    for (int32_t gi = op->segptr[r]; gi < op->segptr[r + 1]; ++gi) {
      const sp_seg *g = &op->segs[gi];
      /* the input maps of the segment's taps (a whole-plane segment may span several) */
      for (int32_t k = g->t0; k < g->t1; ++k) {
        uint8_t *a = area + ((size_t)r * op->in.c + (size_t)op->colidx[k] / kk) * n;
        if (g->r0 < 0) {
          memset(a, 1, n);
          continue;
        }
        for (int32_t ri = g->r0; ri < g->r1; ++ri)
          memset(a + (size_t)op->runs[ri].p * op->out.w + op->runs[ri].q0, 1,
                 (size_t)(op->runs[ri].q1 - op->runs[ri].q0));
      }
    }
  return NEST_OK;
}

static const char *kind_name(nest_sparse_kind k) {
  switch (k) {
  case NEST_SPARSE_DENSE: return "dense";
  case NEST_SPARSE_CONV: return "conv2d";
  case NEST_SPARSE_POOL: return "maxpool";
  case NEST_SPARSE_AFFINE: return "affine";
  }
  return "?";
}

void nest_sparse_describe(const nest_sparse *s, void *file) {
  FILE *f = file;
  for (int i = 0; i < s->nops; ++i) {
    const sp_op *op = &s->ops[i];
    fprintf(f, "%-10s %-7s %dx%dx%d -> %dx%dx%d%s", op->name, kind_name(op->kind), op->in.c,
            op->in.h, op->in.w, op->out.c, op->out.h, op->out.w, op->relu ? " relu" : "");
    if (op->kind == NEST_SPARSE_DENSE || op->kind == NEST_SPARSE_CONV) {
      const double dense = (double)op->rows * op->cols;
      fprintf(f, ", %lld nnz (%.1f%%)", (long long)op->nnz,
              dense > 0 ? 100.0 * op->nnz / dense : 0.0);
    }
    for (int p = 1; p < op->nsrc; ++p) /* skip sources: buffer b is op b-1's output */
      fprintf(f, "%s%s", p == 1 ? ", skips <" : ",",
              op->src_buf[p] == 0 ? "in" : s->ops[op->src_buf[p] - 1].name);
    if (op->kind == NEST_SPARSE_CONV)
      fprintf(f, ", %lld segments, %lld runs%s", (long long)op->nsegs, (long long)op->nruns,
              op->bias_plane ? ", bias plane" : "");
    fprintf(f, "\n");
  }
}
