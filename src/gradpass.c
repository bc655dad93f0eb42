/* gradpass.c — gradient-only passes over a sample set (see gradpass.h): the batch loop, the
 * accumulators (dense dL/dW and the NeST bridging gradient), one by-construction reduction. */
#include "nest/gradpass.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nest/area.h"
#include "nest/gemm.h"
#include "nest/loss.h"
#include "nest/shard.h"
#include "nest/surgery.h"

/* Forward (and backward when dlogits is wanted) of global batch `s` of ids[0..n): this rank's
 * slice, gradient-only context, loss scaled by 1/n. Adds the local loss sum to *loss. */
static nest_status pass_batch(nest_trainer *t, const int64_t *ids, int64_t n, int64_t s,
                              int backward, double *loss, int *rows) {
  int64_t begin;
  int count;
  nest_shard_slice(n, t->cfg.batch, s, t->rank, t->nranks, &begin, &count);
  const int global_rows = nest_shard_batch_rows(n, t->cfg.batch, s);
  for (int i = 0; i < count; ++i) t->ids[i] = ids[begin + i];
  /* Undistorted (centre crop); every rank passes here for each s, so the read is agreed. */
  NEST_CALL(nest_trainer_read_agree(t, t->train, nest_trainer_read(t, t->train, t->ids, count, 0)));
  if (s + 1 < nest_shard_steps(n, t->cfg.batch)) {
    int64_t nb;
    int nc;
    nest_shard_slice(n, t->cfg.batch, s + 1, t->rank, t->nranks, &nb, &nc);
    nest_trainer_read_ahead(t, t->train, ids + nb, nc, 0);
  }
  nest_ctx ctx = nest_trainer_ctx(t, count, 1, global_rows);
  ctx.grad_only = 1;
  const float *logits;
  NEST_CALL(nest_net_forward(t->net, &ctx, t->x, &logits));
  int64_t hits = 0;
  nest_loss_softmax_xent(logits, t->y, count, t->net->nclasses, 1.0f / (float)n,
                         backward ? t->dlogits : NULL, loss, &hits);
  if (backward) NEST_CALL(nest_net_backward(t->net, &ctx, t->dlogits));
  *rows = count;
  return NEST_OK;
}

/* acc[i] += (double)g[i]; elementwise, so the result does not depend on the thread count. */
static void accumulate(double *acc, const float *g, size_t n, int nthreads) {
#pragma omp parallel for simd schedule(static) num_threads(nthreads) if (n > 65536)
  for (size_t i = 0; i < n; ++i) acc[i] += (double)g[i];
}

nest_status nest_gradpass(nest_trainer *t, const int64_t *ids, int64_t n,
                          const nest_gradsum_req *req, nest_gradsum **out) {
  *out = NULL;
  nest_net *net = t->net;
  nest_status st = NEST_OK;
  nest_gradsum *g = NULL;
  float *prod = NULL; /* [M, N] float product of one batch, the largest bridge */
  NEST_CALL(nest_calloc((void **)&g, 1, sizeof *g, "gradient sums"));
  g->generation = net->generation;
  g->ntensors = net->ntensors;
  g->nlayers = net->nlayers;
  g->n = n;
  NEST_CALL_GOTO(st, nest_calloc((void **)&g->grad, net->ntensors, sizeof *g->grad, "sums"), fail);
  NEST_CALL_GOTO(st, nest_calloc((void **)&g->bridge, net->nlayers, sizeof *g->bridge, "sums"),
                 fail);
  NEST_CALL_GOTO(st, nest_calloc((void **)&g->bridge_m, net->nlayers, sizeof(int), "sums"), fail);
  NEST_CALL_GOTO(st, nest_calloc((void **)&g->bridge_n, net->nlayers, sizeof(int), "sums"), fail);

  /* Lay every accumulator out in one double arena (+1 for the loss sum). */
  size_t total = 0, maxprod = 0;
  for (int i = 0; req->tensors && i < net->ntensors; ++i)
    if (req->tensors[i]) {
      NEST_ASSERT(net->tensors[i].param->maskable);
      total += net->tensors[i].param->count;
    }
  for (int l = 0; req->bridges && l < net->nlayers; ++l) {
    if (!req->bridges[l]) continue;
    const int c = nest_surgery_consumer(net, l);
    NEST_ASSERT(net->layers[l]->kind == NEST_LAYER_DENSE && c >= 0 &&
                net->layers[c]->kind == NEST_LAYER_DENSE);
    g->bridge_m[l] = net->layers[c]->hp.units;
    g->bridge_n[l] = (int)nest_shape_size(net->layers[l]->in);
    const size_t mn = (size_t)g->bridge_m[l] * (size_t)g->bridge_n[l];
    total += mn;
    if (mn > maxprod) maxprod = mn;
  }
  g->nmem = total + 1;
  NEST_CALL_GOTO(st, nest_calloc((void **)&g->mem, g->nmem, sizeof(double), "gradient sums"),
                 fail);
  if (maxprod)
    NEST_CALL_GOTO(st, nest_malloc_aligned((void **)&prod, maxprod * sizeof(float),
                                           "bridging gradient"),
                   fail);
  double *p = g->mem;
  for (int i = 0; req->tensors && i < net->ntensors; ++i)
    if (req->tensors[i]) g->grad[i] = p, p += net->tensors[i].param->count;
  for (int l = 0; req->bridges && l < net->nlayers; ++l)
    if (req->bridges[l]) g->bridge[l] = p, p += (size_t)g->bridge_m[l] * g->bridge_n[l];

  const int want_backward = total > 0;
  double loss = 0;
  const int64_t steps = nest_shard_steps(n, t->cfg.batch);
  for (int64_t s = 0; s < steps; ++s) {
    int rows = 0;
    NEST_CALL_GOTO(st, pass_batch(t, ids, n, s, want_backward, &loss, &rows), fail);
    if (!want_backward || rows == 0) continue;
    for (int i = 0; req->tensors && i < net->ntensors; ++i)
      if (g->grad[i])
        accumulate(g->grad[i], net->grads + net->tensors[i].param->offset,
                   net->tensors[i].param->count, t->nthreads);
    for (int l = 0; req->bridges && l < net->nlayers; ++l) {
      if (!g->bridge[l]) continue;
      const int c = nest_surgery_consumer(net, l), M = g->bridge_m[l], N = g->bridge_n[l];
      /* prod[M, N] = dU[rows, M]^T . X[rows, N]: U = the consumer's output (act[c+1]),
       * X = layer l's input (act[l]); dU already carries the 1/n loss scale. nest_sgemm:
       * the same bits for any thread count (gemm.h). */
      nest_sgemm(1, 0, M, N, rows, 1.0f, net->dact[c + 1], M, net->act[l], N, 0.0f, prod, N,
                 t->nthreads);
      accumulate(g->bridge[l], prod, (size_t)M * N, t->nthreads);
    }
  }
  g->mem[g->nmem - 1] = loss;
  NEST_CALL_GOTO(st, nest_comm_sum_same_f64(t->comm, g->mem, g->nmem), fail);
  g->loss = g->mem[g->nmem - 1] / (double)n; /* the loss sum is unscaled */
  nest_free_aligned(prod);
  *out = g;
  return NEST_OK;
fail:
  nest_free_aligned(prod);
  nest_gradsum_destroy(&g);
  return st;
}

void nest_gradsum_destroy(nest_gradsum **gp) {
  if (!gp || !*gp) return;
  nest_gradsum *g = *gp;
  free(g->mem);
  free(g->grad);
  free(g->bridge);
  free(g->bridge_m);
  free(g->bridge_n);
  free(g);
  *gp = NULL;
}

nest_status nest_gradpass_loss(nest_trainer *t, const int64_t *ids, int64_t n, double *loss) {
  double sum = 0;
  const int64_t steps = nest_shard_steps(n, t->cfg.batch);
  for (int64_t s = 0; s < steps; ++s) {
    int rows = 0;
    NEST_CALL(pass_batch(t, ids, n, s, 0, &sum, &rows));
  }
  NEST_CALL(nest_comm_sum_same_f64(t->comm, &sum, 1));
  *loss = sum / (double)n;
  return NEST_OK;
}

/* ---- activation statistics (gradpass.h) ---------------------------------------------------- */

int nest_actpass_output(const nest_net *net, int layer) {
  const nest_layer_kind k = net->layers[layer]->kind;
  if (k != NEST_LAYER_DENSE && k != NEST_LAYER_CONV2D) return -1;
  for (int j = layer + 1; j < net->nlayers; ++j) {
    const nest_layer_kind kj = net->layers[j]->kind;
    if (kj == NEST_LAYER_RELU) return j + 1;
    if (kj != NEST_LAYER_BATCHNORM && kj != NEST_LAYER_DROPOUT) return -1;
  }
  return -1;
}

void nest_actsum_destroy(nest_actsum **ap) {
  if (!ap || !*ap) return;
  nest_actsum *a = *ap;
  free(a->mem);
  free(a->unit_abs);
  free(a->positions);
  free(a->area);
  free(a->act_frac);
  free(a->in_frac);
  free(a);
  *ap = NULL;
}

/* Count of non-zero entries of x[0..n). */
static double count_nonzero(const float *x, size_t n) {
  int64_t c = 0;
#pragma omp parallel for simd reduction(+ : c) schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) c += x[i] != 0.0f;
  return (double)c; /* an integer count: exact in double, any thread count */
}

nest_status nest_actpass(nest_trainer *t, const nest_dataset *ds, const int64_t *ids, int64_t n,
                         const nest_actsum_req *req, nest_actsum **out) {
  *out = NULL;
  nest_net *net = t->net;
  const int L = net->nlayers;
  nest_status st = NEST_OK;
  nest_actsum *a = NULL;
  NEST_CALL(nest_calloc((void **)&a, 1, sizeof *a, "activation sums"));
  a->generation = net->generation;
  a->nlayers = L;
  a->n = n;
  NEST_CALL_GOTO(st, nest_calloc((void **)&a->unit_abs, (size_t)L, sizeof(double *), "sums"), fail);
  NEST_CALL_GOTO(st, nest_calloc((void **)&a->area, (size_t)L, sizeof(double *), "sums"), fail);
  NEST_CALL_GOTO(st, nest_calloc((void **)&a->positions, (size_t)L, sizeof(int64_t), "sums"), fail);
  NEST_CALL_GOTO(st, nest_calloc((void **)&a->act_frac, (size_t)L, sizeof(double), "sums"), fail);
  NEST_CALL_GOTO(st, nest_calloc((void **)&a->in_frac, (size_t)L, sizeof(double), "sums"), fail);
  /* Arena: unit sums, area sums, then 4 counters per layer (out non-zero, out total, in
   * non-zero, in total) — one reduction for everything. */
  size_t total = 0;
  for (int l = 0; l < L; ++l) {
    const nest_layer *ly = net->layers[l];
    a->positions[l] = (int64_t)ly->out.h * ly->out.w;
    if (req->units && req->units[l]) {
      NEST_ASSERT(nest_actpass_output(net, l) >= 0);
      total += (size_t)ly->out.c;
    }
    if (req->area && req->area[l]) {
      NEST_ASSERT(ly->kind == NEST_LAYER_CONV2D && ly->hp.area);
      total += (size_t)ly->out.c * ly->in.c * ly->out.h * ly->out.w;
    }
  }
  const size_t counters = total;
  total += 4 * (size_t)L;
  a->nmem = total;
  NEST_CALL_GOTO(st, nest_calloc((void **)&a->mem, total, sizeof(double), "activation sums"),
                 fail);
  double *p = a->mem;
  for (int l = 0; l < L; ++l)
    if (req->units && req->units[l]) a->unit_abs[l] = p, p += net->layers[l]->out.c;
  for (int l = 0; l < L; ++l)
    if (req->area && req->area[l]) {
      const nest_layer *ly = net->layers[l];
      a->area[l] = p, p += (size_t)ly->out.c * ly->in.c * ly->out.h * ly->out.w;
    }
  double *cnt = a->mem + counters;

  const int64_t lo = n * t->rank / t->nranks, hi = n * (t->rank + 1) / t->nranks;
  nest_status rd = NEST_OK; /* ranks may run different batch counts: reads agreed after */
  for (int64_t b = lo; b < hi; b += t->max_local) {
    int rows;
    if ((rd = nest_trainer_read_chunk(t, ds, ids, b, hi, &rows)) != NEST_OK) break;
    nest_ctx ctx = nest_trainer_ctx(t, rows, 0, 0);
    const float *logits;
    NEST_CALL_GOTO(st, nest_net_forward(net, &ctx, t->x, &logits), fail);
    for (int l = 0; l < L; ++l) {
      const nest_layer *ly = net->layers[l];
      if (ly->kind != NEST_LAYER_DENSE && ly->kind != NEST_LAYER_CONV2D) continue;
      const int o = nest_actpass_output(net, l);
      if (req->fractions) {
        const size_t nin = (size_t)rows * nest_shape_size(ly->in);
        cnt[4 * l + 2] += count_nonzero(net->act[l], nin);
        cnt[4 * l + 3] += (double)nin;
        if (o >= 0) {
          const size_t nout = (size_t)rows * nest_shape_size(ly->out);
          cnt[4 * l + 0] += count_nonzero(net->act[o], nout);
          cnt[4 * l + 1] += (double)nout;
        }
      }
      if (a->unit_abs[l]) {
        /* per unit, rows then positions in order: the same sum whatever the thread count */
        const int U = ly->out.c;
        const int64_t P = a->positions[l];
        const float *y = net->act[o];
        double *acc = a->unit_abs[l];
#pragma omp parallel for schedule(static)
        for (int u = 0; u < U; ++u) {
          double s = 0;
          for (int r = 0; r < rows; ++r) {
            const float *yu = y + ((size_t)r * U + u) * (size_t)P;
            for (int64_t q = 0; q < P; ++q) s += fabsf(yu[q]);
          }
          acc[u] += s;
        }
      }
      if (a->area[l])
        NEST_CALL_GOTO(st, nest_conv2d_area_accumulate(ly, net->act[l], rows, a->area[l]), fail);
    }
  }
  NEST_CALL_GOTO(st, nest_trainer_read_agree(t, ds, rd), fail);
  NEST_CALL_GOTO(st, nest_comm_sum_same_f64(t->comm, a->mem, a->nmem), fail);
  for (int l = 0; l < L; ++l) {
    a->act_frac[l] = cnt[4 * l + 1] > 0 ? cnt[4 * l + 0] / cnt[4 * l + 1] : NAN;
    a->in_frac[l] = cnt[4 * l + 3] > 0 ? cnt[4 * l + 2] / cnt[4 * l + 3] : NAN;
  }
  *out = a;
  return NEST_OK;
fail:
  nest_actsum_destroy(&a);
  return st;
}
