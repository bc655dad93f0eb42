/* test_threads.c — results that do not depend on the thread count (docs/design.md,
 * "Determinism"): a run restarted from a checkpoint on a node with another core count must
 * compute the same bits.
 *
 * Each case runs the same inputs with 1, 2 and 3 threads (ctx.nthreads, the layer's setup
 * thread count, omp_set_num_threads and the OpenBLAS budget, as nest_mpi sets them) and
 * compares everything with memcmp against the 1-thread run:
 *   - conv2d forward + backward (y, dx, dW, db), plain and partial-area (hp.area = 1), grouped
 *     small samples, single samples, row-chunked large samples, a batch of one;
 *   - batch norm in training mode (y, running mean / var, dx, dgamma, dbeta), conv-shaped and
 *     dense-shaped, above the size where it goes parallel;
 *   - dense forward + backward (y, dx, dW, db) at sizes where OpenBLAS threads its sgemm;
 *   - whole nets (LeNet-5 and an MLP with batch norm): forward, loss, backward, SGD step;
 *   - the trainer: training steps, the gradient-only pass (dL/dW and bridging sums) and the
 *     activation-statistics pass; nest_conv2d_area_accumulate.
 * Batch sizes (7, 13) are not multiples of the thread counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/arch.h"
#include "nest/area.h"
#include "nest/gradpass.h"
#include "nest/kernels.h"
#include "nest/layer.h"
#include "nest/loss.h"
#include "nest/net.h"
#include "nest/optim.h"
#include "nest/rng.h"
#include "nest/surgery.h"
#include "nest/train.h"
#include "test_util.h"

void openblas_set_num_threads(int);

#define NT 3 /* thread counts 1..NT */

static nest_comm *self;

/* The thread budget nest_mpi gives a rank (main.c): OpenMP and OpenBLAS. */
static void use_threads(int nt) {
  omp_set_num_threads(nt);
  openblas_set_num_threads(nt);
}

/* Mismatches found by the current test: each one is printed (what, thread count, how many
 * elements differ from the 1-thread run, the first one), and the test fails at its end, so
 * one run shows every sum that still depends on the thread count. */
static int g_mismatches;

static void same_bits(const char *label, const char *what, int nt, const void *a, const void *b,
                      size_t bytes, size_t elem) {
  if (memcmp(a, b, bytes) == 0) return;
  const unsigned char *x = a, *y = b;
  size_t diff = 0, first = (size_t)-1;
  for (size_t i = 0; i < bytes / elem; ++i)
    if (memcmp(x + i * elem, y + i * elem, elem) != 0) {
      if (first == (size_t)-1) first = i;
      ++diff;
    }
  fprintf(stderr, "MISMATCH %s: %s with %d threads differs from 1 thread in %zu of %zu elements "
          "(first: %zu)\n", label, what, nt, diff, bytes / elem, first);
  ++g_mismatches;
}

static int reset(void **state) {
  (void)state;
  g_mismatches = 0;
  return 0;
}

/* Ends every test: fails if any output differed. */
static void no_mismatches(void) {
  if (g_mismatches)
    fail_msg("%d outputs depend on the thread count (MISMATCH lines)", g_mismatches);
}

#define SAME_F(label, what, nt, a, b, n) same_bits(label, what, nt, a, b, sizeof(float) * (n), 4)
#define SAME_D(label, what, nt, a, b, n) same_bits(label, what, nt, a, b, sizeof(double) * (n), 8)

/* ---- single layers ------------------------------------------------------------------------ */

/* Everything a forward + backward of one layer produces. */
typedef struct {
  float *y, *dx, *g[NEST_MAX_PARAMS], *buf[NEST_MAX_BUFFERS];
  size_t ny, nx, ng[NEST_MAX_PARAMS], nbuf[NEST_MAX_BUFFERS];
  int nparams, nbuffers;
} layer_out;

/* Forward + backward (training mode) of a fresh layer set up for nt threads; parameters from
 * seeds, area buffer (if any) from msk. */
static layer_out layer_run(const nest_layer_ops *ops, nest_shape in, nest_layer_hparams hp, int n,
                           int nt, int want_dx, const float *msk) {
  use_threads(nt);
  nest_layer *l = NULL;
  assert_ok(nest_layer_create(ops, "layer", in, &hp, n, nt, &l));
  assert_ok(nest_layer_bind_standalone(l));
  for (int s = 0; s < l->nparams; ++s)
    nest_test_fill_normal(l->p[s], l->param[s].count, 20 + (uint64_t)s, 0.3f);
  if (hp.area) memcpy(l->buf[0], msk, sizeof(float) * l->buffer[0].count);
  layer_out r = {0};
  r.nx = nest_shape_size(l->in) * (size_t)n;
  r.ny = nest_shape_size(l->out) * (size_t)n;
  float *x = nest_test_falloc(r.nx), *dy = nest_test_falloc(r.ny);
  nest_test_fill_normal(x, r.nx, 11, 1.0f);
  nest_test_fill_normal(dy, r.ny, 12, 1.0f);
  r.y = nest_test_falloc(r.ny);
  r.dx = want_dx ? nest_test_falloc(r.nx) : NULL;
  nest_ctx ctx = {.n = n, .train = 1, .nthreads = nt, .seed = 1, .step = 1};
  assert_ok(l->ops->forward(l, &ctx, x, r.y));
  assert_ok(l->ops->backward(l, &ctx, x, r.y, dy, r.dx));
  r.nparams = l->nparams;
  for (int s = 0; s < l->nparams; ++s) {
    r.ng[s] = l->param[s].count;
    r.g[s] = nest_test_falloc(r.ng[s]);
    memcpy(r.g[s], l->g[s], sizeof(float) * r.ng[s]);
  }
  r.nbuffers = l->nbuffers;
  for (int s = 0; s < l->nbuffers; ++s) {
    r.nbuf[s] = l->buffer[s].count;
    r.buf[s] = nest_test_falloc(r.nbuf[s]);
    memcpy(r.buf[s], l->buf[s], sizeof(float) * r.nbuf[s]);
  }
  free(x), free(dy);
  nest_layer_destroy(&l);
  return r;
}

static void layer_out_free(layer_out *r) {
  free(r->y), free(r->dx);
  for (int s = 0; s < r->nparams; ++s) free(r->g[s]);
  for (int s = 0; s < r->nbuffers; ++s) free(r->buf[s]);
}

/* Runs with 1..NT threads; every output bit-identical to the 1-thread run. */
static void layer_case(const char *label, const nest_layer_ops *ops, nest_shape in,
                       nest_layer_hparams hp, int n, int want_dx, const float *msk) {
  layer_out r[NT + 1];
  for (int nt = 1; nt <= NT; ++nt) r[nt] = layer_run(ops, in, hp, n, nt, want_dx, msk);
  for (int nt = 2; nt <= NT; ++nt) {
    SAME_F(label, "y", nt, r[nt].y, r[1].y, r[1].ny);
    if (want_dx) SAME_F(label, "dx", nt, r[nt].dx, r[1].dx, r[1].nx);
    for (int s = 0; s < r[1].nparams; ++s) {
      char what[32];
      snprintf(what, sizeof what, "gradient %d", s);
      SAME_F(label, what, nt, r[nt].g[s], r[1].g[s], r[1].ng[s]);
    }
    for (int s = 0; s < r[1].nbuffers; ++s) {
      char what[32];
      snprintf(what, sizeof what, "buffer %d", s);
      SAME_F(label, what, nt, r[nt].buf[s], r[1].buf[s], r[1].nbuf[s]);
    }
  }
  for (int nt = 1; nt <= NT; ++nt) layer_out_free(&r[nt]);
}

#define S(c, h, w) ((nest_shape){c, h, w})
#define CONV(oc, k, s, p) ((nest_layer_hparams){.out_c = oc, .kh = k, .stride = s, .pad = p})

static void conv_cases(int area) {
  struct {
    const char *label;
    nest_shape in;
    nest_layer_hparams hp;
    int n, dx;
  } cases[] = {
      {"lenet5.conv1 n13", S(1, 28, 28), CONV(20, 5, 1, 0), 13, 0}, /* one sample per item */
      {"lenet5.conv2 n13", S(20, 12, 12), CONV(50, 5, 1, 0), 13, 1}, /* grouped samples */
      {"lenet5.conv2 n7", S(20, 12, 12), CONV(50, 5, 1, 0), 7, 1},
      {"lenet5.conv2 n37", S(20, 12, 12), CONV(50, 5, 1, 0), 37, 1}, /* 10 items, 8 chunks */
      {"lenet5.conv2 n1", S(20, 12, 12), CONV(50, 5, 1, 0), 1, 1},  /* one work item */
      {"small n13", S(3, 6, 5), CONV(70, 3, 1, 1), 13, 1},          /* wide groups, 2 blocks */
      {"chunks n3", S(3, 100, 100), CONV(8, 3, 1, 1), 3, 1},        /* row chunks */
      {"chunks n1", S(3, 100, 100), CONV(8, 3, 1, 1), 1, 1},
      {"alexnet.conv3-like n7", S(32, 13, 13), CONV(48, 3, 1, 1), 7, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
    nest_layer_hparams hp = cases[i].hp;
    hp.area = area;
    float *msk = NULL;
    if (area) {
      nest_conv_geom g = nest_conv_geom_make(cases[i].in.c, cases[i].in.h, cases[i].in.w, hp.kh,
                                             hp.kh, hp.stride, hp.pad);
      const size_t mn = (size_t)hp.out_c * cases[i].in.c * g.oh * g.ow;
      msk = nest_test_falloc(mn);
      nest_rng r;
      nest_rng_init(&r, 5, NEST_RNG_TEST, 77, 0);
      /* mixed maps, and one all-ones and one all-zeros input map where there are 3+ maps */
      for (size_t j = 0; j < mn; ++j) msk[j] = nest_rng_uniform(&r) < 0.5 ? 0.0f : 1.0f;
      if (cases[i].in.c >= 3) {
        const size_t N = (size_t)g.oh * g.ow;
        for (int o = 0; o < hp.out_c; ++o)
          for (size_t j = 0; j < N; ++j) {
            msk[((size_t)o * cases[i].in.c + 0) * N + j] = 1.0f;
            msk[((size_t)o * cases[i].in.c + 1) * N + j] = 0.0f;
          }
      }
    }
    char label[64];
    snprintf(label, sizeof label, "%s%s", area ? "area " : "", cases[i].label);
    layer_case(label, &nest_conv2d_ops, cases[i].in, hp, cases[i].n, cases[i].dx, msk);
    free(msk);
  }
}

static void test_conv2d(void **state) {
  (void)state;
  conv_cases(0);
  no_mismatches();
}

static void test_conv2d_area(void **state) {
  (void)state;
  conv_cases(1);
  no_mismatches();
}

static void test_batchnorm(void **state) {
  (void)state;
  const nest_layer_hparams hp = {0};
  /* n*C*S above the size where batch norm opens a parallel region (BN_PAR_MIN) */
  layer_case("bn conv-shaped n13", &nest_batchnorm_ops, S(16, 20, 20), hp, 13, 1, NULL);
  layer_case("bn conv-shaped n7", &nest_batchnorm_ops, S(17, 19, 19), hp, 7, 1, NULL);
  layer_case("bn dense-shaped n13", &nest_batchnorm_ops, S(3001, 1, 1), hp, 13, 1, NULL);
  layer_case("bn dense-shaped n7", &nest_batchnorm_ops, S(5003, 1, 1), hp, 7, 1, NULL);
  no_mismatches();
}

static void test_dense(void **state) {
  (void)state;
  const nest_layer_hparams fc300 = {.units = 300}, fc100 = {.units = 100}, fc10 = {.units = 10};
  layer_case("fc 784-300 n13", &nest_dense_ops, S(784, 1, 1), fc300, 13, 1, NULL);
  layer_case("fc 784-300 n7", &nest_dense_ops, S(784, 1, 1), fc300, 7, 0, NULL);
  layer_case("fc 784-300 n64", &nest_dense_ops, S(784, 1, 1), fc300, 64, 1, NULL);
  layer_case("fc 300-100 n64", &nest_dense_ops, S(300, 1, 1), fc100, 64, 1, NULL);
  layer_case("fc 100-10 n13", &nest_dense_ops, S(100, 1, 1), fc10, 13, 1, NULL);
  layer_case("fc conv-input 800-500 n13", &nest_dense_ops, S(50, 4, 4),
             (nest_layer_hparams){.units = 500}, 13, 1, NULL);
  layer_case("fc 2048-1024 n13", &nest_dense_ops, S(2048, 1, 1),
             (nest_layer_hparams){.units = 1024}, 13, 1, NULL);
  no_mismatches();
}

/* ---- whole nets --------------------------------------------------------------------------- */

typedef struct {
  float *logits, *grads, *params, *mom, *buffers;
  size_t nlogits, nparams, nbuf;
  double loss;
} net_out;

/* Seed net of `arch` for nt threads; forward, loss, backward and two SGD steps (the second
 * with momentum from the first) on one batch of n random samples. */
static net_out net_run(const char *arch, nest_shape in, int bn, int n, int nt) {
  use_threads(nt);
  nest_layer_spec *specs;
  int ns;
  nest_arch_opts o = {.width = 1.0, .batchnorm = bn};
  const int k = 10;
  assert_ok(nest_arch_build(arch, &o, in, k, &specs, &ns));
  nest_net *net;
  assert_ok(nest_net_create(specs, ns, in, k, n, nt, &net));
  free(specs);
  assert_ok(nest_net_init(net, 7, 0.5, -1));
  const size_t d = nest_shape_size(in);
  float *x = nest_test_falloc(d * n), *dl = nest_test_falloc((size_t)n * k);
  int32_t *y = malloc(sizeof(int32_t) * n);
  nest_test_fill_normal(x, d * n, 31, 1.0f);
  for (int i = 0; i < n; ++i) y[i] = (int32_t)((i * 7) % k);
  int64_t *ids = malloc(sizeof(int64_t) * n);
  for (int i = 0; i < n; ++i) ids[i] = 100 + i;
  nest_optim opt = {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = 1};
  net_out r = {0};
  r.nlogits = (size_t)n * k;
  r.logits = nest_test_falloc(r.nlogits);
  for (int step = 0; step < 2; ++step) {
    nest_ctx ctx = {.n = n, .train = 1, .nthreads = nt, .seed = 3, .step = step,
                    .sample_ids = ids};
    const float *logits;
    assert_ok(nest_net_forward(net, &ctx, x, &logits));
    memcpy(r.logits, logits, sizeof(float) * r.nlogits);
    int64_t hits = 0;
    r.loss = 0;
    nest_loss_softmax_xent(logits, y, n, k, 1.0f / (float)n, dl, &r.loss, &hits);
    assert_ok(nest_net_backward(net, &ctx, dl));
    if (step == 0) nest_optim_step(net, &opt, 0.05, nt);
  }
  r.nparams = net->nparams;
  r.nbuf = net->nbuf;
  r.grads = nest_test_falloc(r.nparams);
  r.params = nest_test_falloc(r.nparams);
  r.mom = nest_test_falloc(r.nparams);
  r.buffers = nest_test_falloc(r.nbuf ? r.nbuf : 1);
  memcpy(r.grads, net->grads, sizeof(float) * r.nparams);
  memcpy(r.params, net->params, sizeof(float) * r.nparams);
  memcpy(r.mom, net->mom, sizeof(float) * r.nparams);
  memcpy(r.buffers, net->buffers, sizeof(float) * r.nbuf);
  free(x), free(dl), free(y), free(ids);
  nest_net_destroy(&net);
  return r;
}

static void net_case(const char *arch, nest_shape in, int bn, int n) {
  net_out r[NT + 1];
  for (int nt = 1; nt <= NT; ++nt) r[nt] = net_run(arch, in, bn, n, nt);
  char label[64];
  snprintf(label, sizeof label, "%s%s n%d", arch, bn ? "+bn" : "", n);
  for (int nt = 2; nt <= NT; ++nt) {
    SAME_F(label, "logits", nt, r[nt].logits, r[1].logits, r[1].nlogits);
    SAME_F(label, "grads", nt, r[nt].grads, r[1].grads, r[1].nparams);
    SAME_F(label, "params", nt, r[nt].params, r[1].params, r[1].nparams);
    SAME_F(label, "momentum", nt, r[nt].mom, r[1].mom, r[1].nparams);
    SAME_F(label, "buffers", nt, r[nt].buffers, r[1].buffers, r[1].nbuf);
    SAME_D(label, "loss", nt, &r[nt].loss, &r[1].loss, 1);
  }
  for (int nt = 1; nt <= NT; ++nt) {
    net_out *o = &r[nt];
    free(o->logits), free(o->grads), free(o->params), free(o->mom), free(o->buffers);
  }
}

static void test_net(void **state) {
  (void)state;
  net_case("lenet5", S(1, 28, 28), 0, 13);
  net_case("lenet5", S(1, 28, 28), 1, 7);
  net_case("lenet300", S(784, 1, 1), 1, 13);
  net_case("lenet300", S(784, 1, 1), 0, 64);
  no_mismatches();
}

/* ---- trainer, gradient pass, activation statistics ---------------------------------------- */

typedef struct {
  double *grad_sums, *act_sums, *area;
  size_t ngrad, nact, narea;
  float *params, *buffers;
  size_t nparams, nbuf;
} trainer_out;

/* A trainer for nt threads on synthetic data (the same seed net for every nt): a gradient-only
 * pass (dL/dW of every maskable tensor, a bridging gradient where the net has one), an
 * activation-statistics pass (unit sums, non-zero shares), partial-area scores of the last
 * conv layer if there is one, then 3 training steps. */
static trainer_out trainer_run(const char *arch, nest_shape shape, int bn, int nt) {
  use_threads(nt);
  nest_config cfg;
  nest_config_defaults(&cfg);
  snprintf(cfg.arch, sizeof cfg.arch, "%s", arch);
  snprintf(cfg.train, sizeof cfg.train, "synthetic");
  cfg.out_dir[0] = '\0';
  cfg.run_dir[0] = '\0';
  cfg.batch = 13;
  cfg.density = 0.3;
  cfg.width = 0.5;
  cfg.lr = 0.05;
  cfg.seed = 9;
  cfg.val_split = 0.1;
  cfg.batchnorm = bn;
  nest_dataset *ds;
  assert_ok(nest_dataset_synthetic(71, shape, 4, 0.5f, 77, 1, &ds));
  nest_trainer *t;
  assert_ok(nest_trainer_create_with_data(&cfg, self, ds, NULL, &t));
  t->quiet = 1;
  assert_int_equal(t->nthreads, nt);
  nest_net *net = t->net;

  uint8_t *tens = calloc((size_t)net->ntensors, 1), *brid = calloc((size_t)net->nlayers, 1);
  for (int i = 0; i < net->ntensors; ++i) tens[i] = (uint8_t)net->tensors[i].param->maskable;
  for (int l = 0; l < net->nlayers; ++l) {
    const int c = nest_surgery_consumer(net, l);
    if (net->layers[l]->kind == NEST_LAYER_DENSE && c >= 0 &&
        net->layers[c]->kind == NEST_LAYER_DENSE) {
      brid[l] = 1;
      break;
    }
  }
  nest_gradsum_req greq = {tens, brid};
  nest_gradsum *g;
  assert_ok(nest_gradpass(t, t->train_idx, t->n_train, &greq, &g));

  uint8_t *units = calloc((size_t)net->nlayers, 1);
  for (int l = 0; l < net->nlayers; ++l) units[l] = nest_actpass_output(net, l) >= 0;
  nest_actsum_req areq = {.units = units, .fractions = 1};
  nest_actsum *a;
  assert_ok(nest_actpass(t, t->train, t->train_idx, t->n_train, &areq, &a));

  trainer_out r = {0};
  r.ngrad = g->nmem;
  r.grad_sums = nest_test_dalloc(r.ngrad);
  memcpy(r.grad_sums, g->mem, sizeof(double) * r.ngrad);
  r.nact = a->nmem;
  r.act_sums = nest_test_dalloc(r.nact);
  memcpy(r.act_sums, a->mem, sizeof(double) * r.nact);
  int lc = -1; /* the last conv layer: its input comes through the conv layers before it */
  for (int l = 0; l < net->nlayers; ++l)
    if (net->layers[l]->kind == NEST_LAYER_CONV2D) lc = l;
  if (lc >= 0) {
    /* the scores of its weights on the first 13 samples */
    const nest_layer *ly = net->layers[lc];
    const int n = 13;
    nest_ctx ctx = nest_trainer_ctx(t, 0, 0, 0);
    ctx.n = n;
    for (int i = 0; i < n; ++i) t->ids[i] = t->train_idx[i];
    nest_dataset_gather(t->train, t->ids, n, t->x, t->y);
    assert_ok(nest_net_forward(net, &ctx, t->x, NULL));
    r.narea = (size_t)ly->out.c * ly->in.c * ly->out.h * ly->out.w;
    r.area = nest_test_dalloc(r.narea);
    assert_ok(nest_conv2d_area_accumulate(ly, net->act[lc], n, r.area));
  }
  /* then training steps (forward, backward, allreduce, SGD) from the same start */
  double loss = 0;
  int64_t correct = 0, rows = 0;
  for (int64_t s = 0; s < 3; ++s)
    assert_ok(nest_trainer_step(t, t->train_idx, s, 0.05, &loss, &correct, &rows));
  r.nparams = net->nparams;
  r.params = nest_test_falloc(r.nparams);
  memcpy(r.params, net->params, sizeof(float) * r.nparams);
  r.nbuf = net->nbuf;
  r.buffers = nest_test_falloc(r.nbuf ? r.nbuf : 1);
  memcpy(r.buffers, net->buffers, sizeof(float) * r.nbuf);
  nest_gradsum_destroy(&g);
  nest_actsum_destroy(&a);
  free(tens), free(brid), free(units);
  nest_trainer_destroy(&t);
  return r;
}

static void trainer_case(const char *arch, nest_shape shape, int bn) {
  trainer_out r[NT + 1];
  for (int nt = 1; nt <= NT; ++nt) r[nt] = trainer_run(arch, shape, bn, nt);
  char label[64];
  snprintf(label, sizeof label, "trainer %s%s", arch, bn ? "+bn" : "");
  for (int nt = 2; nt <= NT; ++nt) {
    SAME_D(label, "gradient-pass sums", nt, r[nt].grad_sums, r[1].grad_sums, r[1].ngrad);
    SAME_D(label, "activation sums", nt, r[nt].act_sums, r[1].act_sums, r[1].nact);
    if (r[1].narea) SAME_D(label, "area scores", nt, r[nt].area, r[1].area, r[1].narea);
    SAME_F(label, "params after 3 steps", nt, r[nt].params, r[1].params, r[1].nparams);
    SAME_F(label, "buffers after 3 steps", nt, r[nt].buffers, r[1].buffers, r[1].nbuf);
  }
  for (int nt = 1; nt <= NT; ++nt) {
    free(r[nt].grad_sums), free(r[nt].act_sums), free(r[nt].area);
    free(r[nt].params), free(r[nt].buffers);
  }
}

static void test_trainer_mlp(void **state) {
  (void)state;
  /* width 0.5: 784-150-50-4; the bridging gradient around fc1 is a 50 x 784 x rows product */
  trainer_case("mlp:784-300-100-4", S(1, 28, 28), 1);
  trainer_case("mlp:784-300-100-4", S(1, 28, 28), 0);
  no_mismatches();
}

static void test_trainer_lenet5(void **state) {
  (void)state;
  trainer_case("lenet5", S(1, 28, 28), 1);
  no_mismatches();
}

int main(void) {
  if (nest_comm_create_self(&self) != NEST_OK) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_conv2d, reset),
      cmocka_unit_test_setup(test_conv2d_area, reset),
      cmocka_unit_test_setup(test_batchnorm, reset),
      cmocka_unit_test_setup(test_dense, reset),
      cmocka_unit_test_setup(test_net, reset),
      cmocka_unit_test_setup(test_trainer_mlp, reset),
      cmocka_unit_test_setup(test_trainer_lenet5, reset),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nest_comm_destroy(&self);
  return rc;
}
