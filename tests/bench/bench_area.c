/* bench_area.c — cost of partial-area convolution (conv2d hp.area = 1, NeST Algorithm 2)
 * against the plain convolution, same run, same data. A benchmark, never a test.
 *
 * usage: bench_area [seconds_per_case (default 0.5)] [max_threads (default 2)]
 *
 * Per conv layer of LeNet-5 (batch 128) and AlexNet (227x227 input, batch 8), shapes from
 * nest_arch_build: ms per forward + backward (best iteration; dx skipped for first layers, as
 * in training) for
 *   plain     hp.area = 0
 *   ones      hp.area = 1, all-ones mask (every input map merged into one GEMM)
 *   partial   hp.area = 1, each mask entry 0 with probability 1/2 (every input map "mixed":
 *             per-map GEMMs plus the gating pass — the general case)
 * and the memory each needs: scratch floats (ws + cache) and the mask buffer floats.
 * Then one full LeNet-5 training step (net forward, softmax cross-entropy, net backward;
 * batch 128) without area masks, with all-ones masks and with partial masks on both conv
 * layers. Ratios are masked / plain. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/arch.h"
#include "nest/layer.h"
#include "nest/loss.h"
#include "nest/net.h"
#include "nest/rng.h"

static void fill(float *x, size_t n, uint64_t seed) {
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_SYNTH, 0, 0);
  for (size_t i = 0; i < n; ++i) x[i] = nest_rng_uniform(&r) - 0.5f;
}

/* Each entry 0 with probability 1/2 (mode 2) or all ones (mode 1). */
static void fill_mask(float *m, size_t n, int mode, uint64_t seed) {
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_SYNTH, 1, 0);
  for (size_t i = 0; i < n; ++i) m[i] = mode == 2 && nest_rng_uniform(&r) < 0.5f ? 0.0f : 1.0f;
}

typedef struct {
  double best, mean; /* seconds per iteration */
  size_t scratch, mask;
} timing;

static const char *const mode_name[3] = {"plain", "ones", "partial"};

/* Forward + backward of one conv layer; mode 0 plain, 1 all-ones area, 2 partial area. */
static int time_conv(const nest_layer_spec *sp, nest_shape in, int batch, int first, int nt,
                     int mode, double secs, timing *out) {
  nest_layer *l = NULL;
  nest_layer_hparams hp = sp->hp;
  hp.area = mode > 0;
  if (nest_layer_create(&nest_conv2d_ops, sp->name, in, &hp, batch, nt, &l) ||
      nest_layer_bind_standalone(l)) {
    fprintf(stderr, "%s: %s\n", sp->name, nest_error_message());
    return 1;
  }
  const size_t in_n = nest_shape_size(l->in) * batch, out_n = nest_shape_size(l->out) * batch;
  float *x = malloc(sizeof(float) * in_n), *y = malloc(sizeof(float) * out_n),
        *dy = malloc(sizeof(float) * out_n), *dx = first ? NULL : malloc(sizeof(float) * in_n);
  if (!x || !y || !dy || (!first && !dx)) return 1;
  fill(x, in_n, 3);
  fill(dy, out_n, 4);
  fill(l->p[0], l->param[0].count, 5);
  out->mask = 0;
  if (mode > 0) {
    fill_mask(l->buf[0], l->buffer[0].count, mode, 6);
    out->mask = l->buffer[0].count;
  }
  out->scratch = l->ws_floats + l->cache_floats;
  nest_ctx ctx = {.n = batch, .train = 1, .nthreads = nt};
  l->ops->forward(l, &ctx, x, y); /* warm-up */
  l->ops->backward(l, &ctx, x, y, dy, dx);
  double total = 0, best = 1e30;
  int reps = 0;
  do {
    double t0 = omp_get_wtime();
    l->ops->forward(l, &ctx, x, y);
    l->ops->backward(l, &ctx, x, y, dy, dx);
    double t = omp_get_wtime() - t0;
    total += t;
    if (t < best) best = t;
    ++reps;
  } while (total < secs || reps < 3);
  out->best = best;
  out->mean = total / reps;
  free(x), free(y), free(dy), free(dx);
  nest_layer_destroy(&l);
  return 0;
}

static int bench_convs(const char *arch, nest_shape in, int classes, int batch, int nt,
                       double secs) {
  nest_layer_spec *specs = NULL;
  int nspecs = 0;
  if (nest_arch_build(arch, &(nest_arch_opts){.width = 1.0}, in, classes, &specs, &nspecs)) {
    fprintf(stderr, "%s: %s\n", arch, nest_error_message());
    return 1;
  }
  nest_shape shape = in;
  int first = 1;
  for (int i = 0; i < nspecs; ++i) {
    /* every layer's setup derives its output shape; only conv layers are timed */
    nest_layer *l = NULL;
    if (nest_layer_create(nest_layer_ops_of(specs[i].kind), specs[i].name, shape, &specs[i].hp,
                          1, 1, &l)) {
      fprintf(stderr, "%s: %s\n", specs[i].name, nest_error_message());
      free(specs);
      return 1;
    }
    const nest_shape next = l->out;
    nest_layer_destroy(&l);
    if (specs[i].kind == NEST_LAYER_CONV2D) {
      timing t[3];
      for (int mode = 0; mode < 3; ++mode)
        if (time_conv(&specs[i], shape, batch, first, nt, mode, secs, &t[mode])) {
          free(specs);
          return 1;
        }
      char label[64];
      snprintf(label, sizeof label, "%s.%s", arch, specs[i].name);
      printf("%-16s %2d %5d  %9.2f %9.2f %9.2f  %5.2f %5.2f  %10zu %10zu %10zu\n", label, nt,
             batch, t[0].best * 1e3, t[1].best * 1e3, t[2].best * 1e3, t[1].best / t[0].best,
             t[2].best / t[0].best, t[0].scratch, t[2].scratch, t[2].mask);
      first = 0;
    }
    shape = next;
  }
  free(specs);
  return 0;
}

/* One LeNet-5 training step (forward, loss, backward), batch 128; mode as in time_conv, applied
 * to both conv layers. Returns best and mean seconds per step. */
static int time_lenet5_step(int nt, int mode, double secs, timing *out) {
  const int batch = 128;
  const nest_shape in = {1, 28, 28};
  nest_layer_spec *specs = NULL;
  int nspecs = 0;
  nest_net *net = NULL;
  if (nest_arch_build("lenet5", &(nest_arch_opts){.width = 1.0}, in, 10, &specs, &nspecs))
    return 1;
  for (int i = 0; i < nspecs; ++i)
    if (specs[i].kind == NEST_LAYER_CONV2D) specs[i].hp.area = mode > 0;
  if (nest_net_create(specs, nspecs, in, 10, batch, nt, &net) ||
      nest_net_init(net, 1, 1.0, -1)) {
    fprintf(stderr, "lenet5: %s\n", nest_error_message());
    free(specs);
    return 1;
  }
  free(specs);
  out->mask = 0;
  out->scratch = 0;
  for (int i = 0; i < net->nlayers; ++i) {
    nest_layer *l = net->layers[i];
    out->scratch += l->ws_floats + l->cache_floats;
    if (l->kind == NEST_LAYER_CONV2D && mode > 0) {
      fill_mask(l->buf[0], l->buffer[0].count, mode, 7 + (uint64_t)i);
      out->mask += l->buffer[0].count;
    }
  }
  float *x = malloc(sizeof(float) * batch * 784), *dl = malloc(sizeof(float) * batch * 10);
  int32_t *labels = malloc(sizeof(int32_t) * batch);
  if (!x || !dl || !labels) return 1;
  fill(x, (size_t)batch * 784, 8);
  for (int i = 0; i < batch; ++i) labels[i] = i % 10;
  nest_ctx ctx = {.n = batch, .train = 1, .nthreads = nt};
  double total = 0, best = 1e30;
  int reps = -2; /* two warm-up steps */
  do {
    double t0 = omp_get_wtime(), loss = 0;
    int64_t hits = 0;
    const float *logits = NULL;
    if (nest_net_forward(net, &ctx, x, &logits)) return 1;
    nest_loss_softmax_xent(logits, labels, batch, 10, 1.0f / batch, dl, &loss, &hits);
    if (nest_net_backward(net, &ctx, dl)) return 1;
    double t = omp_get_wtime() - t0;
    if (++reps > 0) {
      total += t;
      if (t < best) best = t;
    }
  } while (reps < 3 || total < secs);
  out->best = best;
  out->mean = total / reps;
  free(x), free(dl), free(labels);
  nest_net_destroy(&net);
  return 0;
}

int main(int argc, char **argv) {
  const double secs = argc > 1 ? atof(argv[1]) : 0.5;
  const int max_nt = argc > 2 ? atoi(argv[2]) : 2;
  for (int nt = 1; nt <= max_nt; ++nt) {
    omp_set_num_threads(nt); /* the BLAS budget outside our parallel regions */
    printf("\nthreads %d — conv forward + backward, ms per call (best iteration)\n", nt);
    printf("%-16s %2s %5s  %9s %9s %9s  %5s %5s  %10s %10s %10s\n", "layer", "th", "batch",
           "plain", "ones", "partial", "ones/", "part/", "scratch", "scratch", "mask");
    printf("%-16s %2s %5s  %9s %9s %9s  %5s %5s  %10s %10s %10s\n", "", "", "", "", "", "",
           "plain", "plain", "plain", "area", "floats");
    if (bench_convs("lenet5", (nest_shape){1, 28, 28}, 10, 128, nt, secs) ||
        bench_convs("alexnet", (nest_shape){3, 227, 227}, 1000, 8, nt, secs))
      return 1;
    printf("\nthreads %d — LeNet-5 training step (forward + loss + backward), batch 128\n", nt);
    printf("%-8s %10s %10s %7s %12s %12s\n", "masks", "best ms", "mean ms", "ratio",
           "scratch", "mask floats");
    timing t[3];
    for (int mode = 0; mode < 3; ++mode)
      if (time_lenet5_step(nt, mode, secs, &t[mode])) {
        fprintf(stderr, "lenet5 step: %s\n", nest_error_message());
        return 1;
      }
    for (int mode = 0; mode < 3; ++mode)
      printf("%-8s %10.3f %10.3f %7.2f %12zu %12zu\n", mode_name[mode], t[mode].best * 1e3,
             t[mode].mean * 1e3, t[mode].best / t[0].best, t[mode].scratch, t[mode].mask);
  }
  return 0;
}
