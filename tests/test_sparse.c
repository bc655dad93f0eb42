/* test_sparse.c — sparse inference (sparse.h) against its reference twin, the dense masked
 * path (nest_net_forward in eval mode).
 *
 * Random small nets (dense, conv with padding and stride, partial-area conv, batch norm folded
 * and not foldable, dropout, maxpool with padding) get pruned kernels, units without inputs
 * (their constants must be folded: non-zero biases, zero padding and area masks make the folded
 * term vary over a conv plane) and units without outputs; logits must agree within float
 * tolerance for several batch sizes, and be bit-identical across thread counts, tile sizes and
 * batch sizes. The same with SCANN skip tensors (net.h "Skip connections": from the input, from a
 * hidden layer behind batch norm / ReLU / dropout, from a conv base's flattened features, into
 * several layers), with units that only a skip tensor reads and dead units a skip tensor folds
 * into its consumer's bias. On MNIST (when ../shared/data/mnist and the real model files exist: CMake
 * NEST_SPARSE_MODELS or the environment variable of that name, ':'-separated) the argmax must
 * be identical on all 10,000 test images, normalised as the trainer does (train.c setup():
 * nest_dataset_split with the run's data.val_split and run.seed, nest_dataset_train_norm). */
#define _POSIX_C_SOURCE 200809L
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
#include "nest/model.h"
#include "nest/config.h"
#include "nest/data.h"
#include "nest/net.h"
#include "nest/rng.h"
#include "nest/sparse.h"
#include "test_util.h"

#ifndef NEST_SPARSE_MODELS
#define NEST_SPARSE_MODELS ""
#endif

/* ---- building random pruned nets ------------------------------------------------------------- */

static nest_layer_spec spec(nest_layer_kind kind, const char *name, nest_layer_hparams hp) {
  nest_layer_spec s;
  memset(&s, 0, sizeof s);
  s.kind = kind;
  snprintf(s.name, sizeof s.name, "%s", name);
  s.hp = hp;
  return s;
}

static float uni(nest_rng *r) { return nest_rng_uniform(r); }

/* Random values everywhere a weight is active, random biases, BN statistics and area masks
 * (each kernel's mask all ones, all zeros or mixed), then the prunings of `dead`:
 * dead = 1 zeroes whole kernels / rows / columns so that units lose all inputs or outputs
 * (row 1 of skip tensors too: unit 1 has no input at all; their columns stay, so a unit the
 * chain no longer reads may still be read by a skip tensor). */
static void randomise(nest_net *net, uint64_t seed, int dead) {
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_TEST, 7, 0);
  for (size_t i = 0; i < net->nparams; ++i) net->params[i] = 0.6f * (uni(&r) - 0.5f);
  for (int i = 0; i < net->nlayers; ++i) {
    nest_layer *l = net->layers[i];
    if (l->kind == NEST_LAYER_BATCHNORM)
      for (int c = 0; c < l->in.c; ++c) {
        l->p[0][c] = 0.5f + uni(&r);            /* gamma */
        l->buf[0][c] = 0.4f * (uni(&r) - 0.5f); /* running mean */
        l->buf[1][c] = 0.2f + uni(&r);          /* running var */
      }
    if (l->kind == NEST_LAYER_CONV2D && l->hp.area) {
      const size_t n = (size_t)l->out.h * l->out.w;
      for (int o = 0; o < l->out.c; ++o)
        for (int m = 0; m < l->in.c; ++m) {
          float *a = l->buf[0] + ((size_t)o * l->in.c + m) * n;
          const float u = uni(&r);
          for (size_t p = 0; p < n; ++p)
            a[p] = u < 0.4f ? 1.0f : u < 0.55f ? 0.0f : (uni(&r) < 0.5f ? 1.0f : 0.0f);
        }
    }
    if (!dead || (l->kind != NEST_LAYER_DENSE && l->kind != NEST_LAYER_CONV2D)) continue;
    const size_t kk = l->kind == NEST_LAYER_CONV2D ? (size_t)l->hp.kh * l->hp.kw : 1;
    const int C = l->kind == NEST_LAYER_CONV2D ? l->in.c : (int)nest_shape_size(l->in);
    float *M = l->m[0];
    /* output 1 loses every input (a constant unit / map); for the last layer too. Its bias
     * makes it positive after BN and ReLU, so that the folded constant matters */
    memset(M + (size_t)1 * C * kk, 0, sizeof(float) * C * kk);
    for (int sl = 2; sl < l->nparams; ++sl) /* skip tensors [units, S] */
      memset(l->m[sl] + l->param[sl].dims[1], 0, sizeof(float) * l->param[sl].dims[1]);
    l->p[1][1] = 1.0f;
    /* whole kernels pruned at random (conv), input 0 read by nobody (its producer loses its
     * outputs) */
    for (int o = 0; o < l->out.c; ++o)
      for (int m = 0; m < C; ++m)
        if (m == 0 || (kk > 1 && uni(&r) < 0.3f))
          memset(M + ((size_t)o * C + m) * kk, 0, sizeof(float) * kk);
  }
  nest_net_apply_masks(net);
}

/* The skip tensors of the next make_net (model.skips syntax; "" = none). */
static const char *next_skips = "";

/* A net from specs (with next_skips' skip tensors) with seed density 0.5 (skip tensors too),
 * randomised and pruned. */
static nest_net *make_net(const nest_layer_spec *specs, int ns, nest_shape in, int ncls,
                          int max_batch, uint64_t seed, int dead) {
  nest_layer_spec sp[16];
  assert_true(ns <= 16);
  memcpy(sp, specs, sizeof(nest_layer_spec) * (size_t)ns);
  assert_ok(nest_arch_skips(sp, ns, next_skips));
  next_skips = "";
  nest_net *net;
  assert_ok(nest_net_create(sp, ns, in, ncls, max_batch, 2, &net));
  assert_ok(nest_net_init(net, seed, 0.5, -1));
  randomise(net, seed, dead);
  return net;
}

/* Dense: 50 inputs, BN (folded), dropout, 7 classes. */
static nest_net *mlp(int max_batch, uint64_t seed, int dead) {
  const nest_layer_spec s[] = {
      spec(NEST_LAYER_DENSE, "fc1", (nest_layer_hparams){.units = 40}),
      spec(NEST_LAYER_BATCHNORM, "fc1.bn", (nest_layer_hparams){0}),
      spec(NEST_LAYER_RELU, "fc1.relu", (nest_layer_hparams){0}),
      spec(NEST_LAYER_DROPOUT, "fc1.drop", (nest_layer_hparams){.rate = 0.3f}),
      spec(NEST_LAYER_DENSE, "fc2", (nest_layer_hparams){.units = 30}),
      spec(NEST_LAYER_RELU, "fc2.relu", (nest_layer_hparams){0}),
      spec(NEST_LAYER_DENSE, "fc3", (nest_layer_hparams){.units = 7}),
  };
  return make_net(s, 7, (nest_shape){2, 5, 5}, 7, max_batch, seed, dead);
}

/* Conv: padded 3x3 conv + BN + ReLU + pool, a second conv (area masks optional, stride 1,
 * padding 1), pool, two dense layers with dropout. */
static nest_net *convnet(int max_batch, uint64_t seed, int dead, int area) {
  const nest_layer_spec s[] = {
      spec(NEST_LAYER_CONV2D, "conv1", (nest_layer_hparams){.out_c = 8, .kh = 3, .pad = 1}),
      spec(NEST_LAYER_BATCHNORM, "conv1.bn", (nest_layer_hparams){0}),
      spec(NEST_LAYER_RELU, "conv1.relu", (nest_layer_hparams){0}),
      spec(NEST_LAYER_MAXPOOL, "pool1", (nest_layer_hparams){.kh = 2}),
      spec(NEST_LAYER_CONV2D, "conv2",
           (nest_layer_hparams){.out_c = 10, .kh = 3, .pad = 1, .area = area}),
      spec(NEST_LAYER_MAXPOOL, "pool2", (nest_layer_hparams){.kh = 2}),
      spec(NEST_LAYER_DENSE, "fc1", (nest_layer_hparams){.units = 20}),
      spec(NEST_LAYER_RELU, "fc1.relu", (nest_layer_hparams){0}),
      spec(NEST_LAYER_DROPOUT, "fc1.drop", (nest_layer_hparams){.rate = 0.5f}),
      spec(NEST_LAYER_DENSE, "fc2", (nest_layer_hparams){.units = 5}),
  };
  return make_net(s, 10, (nest_shape){3, 12, 12}, 5, max_batch, seed, dead);
}

/* Odd shapes: BN on the input (an affine op), a strided padded 5x5 area conv, ReLU then BN (not
 * foldable), an overlapping padded pool, a 1x1 conv, dense output. */
static nest_net *oddnet(int max_batch, uint64_t seed, int dead) {
  const nest_layer_spec s[] = {
      spec(NEST_LAYER_BATCHNORM, "in.bn", (nest_layer_hparams){0}),
      spec(NEST_LAYER_CONV2D, "conv1",
           (nest_layer_hparams){.out_c = 6, .kh = 5, .stride = 2, .pad = 2, .area = 1}),
      spec(NEST_LAYER_RELU, "conv1.relu", (nest_layer_hparams){0}),
      spec(NEST_LAYER_BATCHNORM, "conv1.bn", (nest_layer_hparams){0}),
      spec(NEST_LAYER_MAXPOOL, "pool1", (nest_layer_hparams){.kh = 3, .stride = 2, .pad = 1}),
      spec(NEST_LAYER_CONV2D, "conv2", (nest_layer_hparams){.out_c = 7, .kh = 1}),
      spec(NEST_LAYER_RELU, "conv2.relu", (nest_layer_hparams){0}),
      spec(NEST_LAYER_DENSE, "fc", (nest_layer_hparams){.units = 4}),
  };
  return make_net(s, 8, (nest_shape){2, 13, 11}, 4, max_batch, seed, dead);
}

/* Batch norm on the input (an affine op) before the first dense layer, so that a skip tensor
 * from the input reads what the affine op also transforms; with dead, an input channel that
 * only skip tensors read (the affine op must still carry it: its channels in and out agree). */
static nest_net *inbn_mlp(int max_batch, uint64_t seed, int dead) {
  const nest_layer_spec s[] = {
      spec(NEST_LAYER_BATCHNORM, "in.bn", (nest_layer_hparams){0}),
      spec(NEST_LAYER_DENSE, "fc1", (nest_layer_hparams){.units = 24}),
      spec(NEST_LAYER_RELU, "fc1.relu", (nest_layer_hparams){0}),
      spec(NEST_LAYER_DENSE, "fc2", (nest_layer_hparams){.units = 16}),
      spec(NEST_LAYER_RELU, "fc2.relu", (nest_layer_hparams){0}),
      spec(NEST_LAYER_DENSE, "fc3", (nest_layer_hparams){.units = 6}),
  };
  nest_net *net = make_net(s, 6, (nest_shape){3, 4, 4}, 6, max_batch, seed, dead);
  if (dead) { /* fc1 no longer reads input channel 2: only skip tensors do */
    nest_layer *fc1 = nest_net_find_layer(net, "fc1");
    for (int o = 0; o < 24; ++o) memset(fc1->m[0] + (size_t)o * 48 + 32, 0, sizeof(float) * 16);
    nest_net_apply_masks(net);
  }
  return net;
}

/* Nets with skip tensors: the MLP with two skips and with every skip, the conv net with skips
 * from its flattened features and the input-BN MLP with skips from the raw input (before the
 * batch norm) and from fc1; `which` 0 .. 3. */
#define NSKIPNETS 4
static nest_net *skipnet(int which, int max_batch, uint64_t seed, int dead) {
  switch (which) {
  case 0: next_skips = "in>fc2, fc1>fc3"; return mlp(max_batch, seed, dead);
  case 1: next_skips = "all"; return mlp(max_batch, seed, dead);
  case 2: next_skips = "pool2>fc2"; return convnet(max_batch, seed, dead, 1);
  default: next_skips = "in>fc2, in>fc3, fc1>fc3"; return inbn_mlp(max_batch, seed, dead);
  }
}

/* ---- comparing ------------------------------------------------------------------------------- */

static float *inputs(const nest_net *net, int n, uint64_t seed) {
  const size_t d = nest_shape_size(net->in_shape);
  float *x = nest_test_falloc((size_t)n * d);
  nest_test_fill_normal(x, (size_t)n * d, seed, 1.0f);
  return x;
}

/* max |a - b| / max(1, max |b|) */
static double rel_err(const float *a, const float *b, size_t n) {
  double m = 1.0, e = 0.0;
  for (size_t i = 0; i < n; ++i) m = fmax(m, fabs((double)b[i]));
  for (size_t i = 0; i < n; ++i) e = fmax(e, fabs((double)a[i] - (double)b[i]));
  return e / m;
}

/* The dense masked logits of x[n] (eval mode). */
static void dense_logits(nest_net *net, int n, const float *x, float *out) {
  nest_ctx ctx = {.n = n, .train = 0, .nthreads = 1};
  const float *lg;
  assert_ok(nest_net_forward(net, &ctx, x, &lg));
  memcpy(out, lg, sizeof(float) * (size_t)n * net->nclasses);
}

/* Sparse against dense for batch sizes 1, 3, 37 and max_batch, 1 and 2 threads. */
static void check_net(nest_net *net, double tol) {
  const int nb = net->max_batch, k = net->nclasses;
  float *x = inputs(net, nb, 99), *ref = nest_test_falloc((size_t)nb * k);
  float *got = nest_test_falloc((size_t)nb * k);
  nest_sparse *s;
  assert_ok(nest_sparse_create(net, nb, 2, NULL, &s));
  const int sizes[] = {1, 3, 37, nb};
  for (int i = 0; i < 4; ++i) {
    const int n = sizes[i] < nb ? sizes[i] : nb;
    dense_logits(net, n, x, ref);
    for (int nt = 1; nt <= 2; ++nt) {
      memset(got, 0xff, sizeof(float) * (size_t)nb * k);
      assert_ok(nest_sparse_forward(s, n, nt, x, got));
      const double e = rel_err(got, ref, (size_t)n * k);
      if (!(e <= tol)) fail_msg("batch %d, %d threads: sparse differs from dense by %g", n, nt, e);
    }
  }
  nest_sparse_destroy(&s);
  assert_null(s);
  free(x);
  free(ref);
  free(got);
}

static void test_mlp(void **state) {
  for (int dead = 0; dead <= 1; ++dead) {
    nest_net *net = mlp(130, 11 + dead, dead);
    check_net(net, 2e-5);
    nest_net_destroy(&net);
  }
}

static void test_conv(void **state) {
  for (int dead = 0; dead <= 1; ++dead) {
    nest_net *net = convnet(70, 21 + dead, dead, 0);
    check_net(net, 2e-5);
    nest_net_destroy(&net);
  }
}

static void test_conv_area(void **state) {
  for (int dead = 0; dead <= 1; ++dead) {
    nest_net *net = convnet(70, 31 + dead, dead, 1);
    check_net(net, 2e-5);
    nest_net_destroy(&net);
  }
}

static void test_odd_shapes(void **state) {
  for (int dead = 0; dead <= 1; ++dead) {
    nest_net *net = oddnet(40, 41 + dead, dead);
    check_net(net, 2e-5);
    nest_net_destroy(&net);
  }
}

static void test_skips(void **state) {
  for (int which = 0; which < NSKIPNETS; ++which)
    for (int dead = 0; dead <= 1; ++dead) {
      nest_net *net = skipnet(which, 90, 91 + 2 * which + dead, dead);
      assert_true(net->nskips > 0);
      check_net(net, 2e-5);
      nest_net_destroy(&net);
    }
}

/* A dense op with skip tensors: its column parts name the buffers they read, it multiplies every
 * active skip weight (nothing removed at dead = 0), and a unit that only a skip tensor reads
 * (fc1 unit 0 at dead = 1: fc2 no longer reads it) is kept. */
static void test_skip_program(void **state) {
  nest_net *net = skipnet(0, 8, 52, 0);
  nest_sparse *s;
  assert_ok(nest_sparse_create(net, 8, 1, NULL, &s));
  nest_sparse_stats st;
  nest_sparse_get_stats(s, &st);
  assert_int_equal(st.units_removed, 0);
  assert_int_equal(st.nnz, st.source_weights);
  assert_int_equal(nest_sparse_nops(s), 3);
  nest_sparse_op op;
  nest_sparse_get_op(s, 1, &op); /* fc2 <in: part 1 = the program input, 50 features */
  assert_int_equal(op.nsrc, 2);
  assert_int_equal(op.src_op[0], 1);
  assert_int_equal(op.src_op[1], 0);
  assert_int_equal(op.src_cols[1], 50);
  assert_int_equal(op.cols, op.src_cols[0] + 50);
  nest_sparse_get_op(s, 2, &op); /* fc3 <fc1: the input of op 1 */
  assert_int_equal(op.nsrc, 2);
  assert_int_equal(op.src_op[1], 1);
  nest_sparse_get_op(s, 0, &op);
  assert_int_equal(op.nsrc, 1);
  nest_sparse_destroy(&s);
  nest_net_destroy(&net);

  net = skipnet(0, 8, 53, 1);
  const nest_layer *fc3 = nest_net_find_layer(net, "fc3");
  const float *sk = fc3->m[2]; /* skip_fc1 [7, 40] */
  int read = 0;
  for (int o = 0; o < 7; ++o) read |= sk[(size_t)o * 40] != 0.0f;
  assert_true(read); /* the seed keeps a skip weight from fc1 unit 0 */
  assert_ok(nest_sparse_create(net, 8, 1, NULL, &s));
  nest_sparse_get_op(s, 1, &op);
  assert_int_equal(op.in.c, 40 - 1); /* fc1 unit 1 (no inputs) folded, unit 0 kept for fc3 */
  nest_sparse_destroy(&s);
  nest_net_destroy(&net);

  net = skipnet(3, 8, 54, 1); /* input channel 2: read by the skips only, through the BN op too */
  assert_ok(nest_sparse_create(net, 8, 1, NULL, &s));
  nest_sparse_get_op(s, 0, &op);
  assert_int_equal(op.kind, NEST_SPARSE_AFFINE);
  assert_int_equal(op.in.c, 3);
  assert_int_equal(op.out.c, 3);
  nest_sparse_destroy(&s);
  nest_net_destroy(&net);
}

/* What compaction removed: a unit without inputs is folded (and its constant matters: the
 * outputs still agree above), a unit without outputs is dropped, both layers shrink; the
 * output layer keeps all its units. */
static void test_compaction(void **state) {
  nest_net *net = mlp(8, 51, 1);
  nest_sparse *s;
  assert_ok(nest_sparse_create(net, 8, 1, NULL, &s));
  nest_sparse_stats st;
  nest_sparse_get_stats(s, &st);
  /* randomise(dead): fc1 unit 1 has no inputs, fc1 unit 0 no outputs (fc2 column 0); fc2 unit 1
   * no inputs, fc2 unit 0 no outputs (fc3 column 0) */
  assert_true(st.units_removed >= 4);
  assert_true(st.units_folded >= 2);
  assert_int_equal(nest_sparse_nops(s), 3); /* BN folded, ReLU fused, dropout gone */
  nest_sparse_op op;
  nest_sparse_get_op(s, 0, &op);
  assert_int_equal(op.kind, NEST_SPARSE_DENSE);
  assert_true(op.rows <= 38 && op.relu);
  assert_int_equal(op.cols, 50);
  nest_sparse_get_op(s, 2, &op);
  assert_int_equal(op.rows, 7);
  assert_int_equal(op.rowptr[2] - op.rowptr[1], 0); /* output 1: bias only */
  int64_t active;
  nest_net_count(net, &active, NULL, NULL);
  assert_true(st.nnz < active); /* the dropped units' weights are gone */
  assert_true(st.model_bytes > 0 && st.dense_bytes < st.source_bytes);
  nest_sparse_destroy(&s);
  nest_net_destroy(&net);
}

/* The same bits for any thread count, tile and batch size (a sample alone or in a batch). */
static void test_bit_identical(void **state) {
  nest_net *nets[5] = {mlp(150, 61, 1), convnet(150, 62, 1, 1), oddnet(150, 63, 1),
                       skipnet(1, 150, 64, 1), skipnet(2, 150, 65, 1)};
  for (int i = 0; i < 5; ++i) {
    nest_net *net = nets[i];
    const int n = 150, k = net->nclasses;
    const size_t d = nest_shape_size(net->in_shape);
    float *x = inputs(net, n, 5), *ref = nest_test_falloc((size_t)n * k);
    float *got = nest_test_falloc((size_t)n * k);
    nest_sparse *s;
    assert_ok(nest_sparse_create(net, n, 2, NULL, &s));
    assert_ok(nest_sparse_forward(s, n, 2, x, ref));
    nest_sparse_destroy(&s);
    assert_ok(nest_sparse_create(net, 20, 1, NULL, &s)); /* a batch beyond max_batch: more tiles */
    assert_ok(nest_sparse_forward(s, n, 1, x, got));
    assert_memory_equal(got, ref, sizeof(float) * (size_t)n * k);
    for (int j = 0; j < n; ++j) { /* one at a time, 1 thread: tile 1 */
      assert_ok(nest_sparse_forward(s, 1, 1, x + (size_t)j * d, got + (size_t)j * k));
    }
    assert_memory_equal(got, ref, sizeof(float) * (size_t)n * k);
    nest_sparse_destroy(&s);
    const int tiles[] = {1, 1, 16, 32, 64};
    for (int t = 0; t < 5; ++t)
      for (int nt = 1; nt <= 2; ++nt) {
        nest_sparse_opts o = {.tile = tiles[t], .single = t == 0 ? 1 : 2}; /* CSR, SELL */
        assert_ok(nest_sparse_create(net, n, nt, &o, &s));
        memset(got, 0, sizeof(float) * (size_t)n * k);
        assert_ok(nest_sparse_forward(s, 101, nt, x, got)); /* a partial last tile */
        assert_ok(nest_sparse_forward(s, n, nt, x, got));
        assert_memory_equal(got, ref, sizeof(float) * (size_t)n * k);
        nest_sparse_destroy(&s);
      }
    free(x);
    free(ref);
    free(got);
    nest_net_destroy(&net);
  }
}

/* The area masks of the compact conv ops are the source's, restricted to what was kept. */
static void test_area_export(void **state) {
  nest_net *net = convnet(4, 71, 1, 1);
  nest_sparse *s;
  assert_ok(nest_sparse_create(net, 4, 1, NULL, &s));
  const nest_layer *l = nest_net_find_layer(net, "conv2");
  int found = 0;
  for (int i = 0; i < nest_sparse_nops(s); ++i) {
    nest_sparse_op op;
    nest_sparse_get_op(s, i, &op);
    if (strcmp(op.name, "conv2") != 0) continue;
    found = 1;
    assert_true(op.has_area);
    const size_t n = (size_t)op.out.h * op.out.w;
    uint8_t *a = malloc((size_t)op.rows * op.in.c * n);
    assert_ok(nest_sparse_get_area(s, i, a));
    /* every kept position of a compact kernel is a kept position of some source kernel, and
     * the number of (kernel, position) pairs times taps is what the op executes */
    size_t kept = 0, src = 0;
    for (size_t j = 0; j < (size_t)op.rows * op.in.c * n; ++j) kept += a[j];
    for (size_t j = 0; j < (size_t)l->out.c * l->in.c * n; ++j) src += l->buf[0][j] != 0.0f;
    assert_true(kept > 0 && kept < src);
    free(a);
  }
  assert_true(found);
  uint8_t dummy[4];
  assert_int_equal(nest_sparse_get_area(s, nest_sparse_nops(s) - 1, dummy), NEST_ERR_ARG);
  nest_error_clear();
  nest_sparse_destroy(&s);
  nest_net_destroy(&net);
}

static void test_bad_args(void **state) {
  nest_net *net = mlp(8, 81, 0);
  nest_sparse *s;
  nest_sparse_opts o = {.tile = 8};
  assert_int_equal(nest_sparse_create(net, 8, 1, &o, &s), NEST_ERR_ARG);
  assert_null(s);
  o = (nest_sparse_opts){.single = 3};
  assert_int_equal(nest_sparse_create(net, 8, 1, &o, &s), NEST_ERR_ARG);
  assert_int_equal(nest_sparse_create(net, 0, 1, NULL, &s), NEST_ERR_ARG);
  assert_ok(nest_sparse_create(net, 8, 1, NULL, &s));
  float x[9 * 50] = {0}, y[9 * 7];
  assert_int_equal(nest_sparse_forward(s, -1, 1, x, y), NEST_ERR_ARG);
  assert_int_equal(nest_sparse_forward(s, 8, 2, x, y), NEST_ERR_ARG);
  assert_ok(nest_sparse_forward(s, 0, 1, x, y));
  nest_error_clear();
  nest_sparse_destroy(&s);
  nest_sparse_destroy(&s); /* twice: a no-op */
  nest_net_destroy(&net);
}

/* ---- MNIST with the real models -------------------------------------------------------------- */

/* The MNIST test set normalised as the run that trained `model` did: the run's config.ini
 * (next to the model file) gives data.val_split, run.seed and data.max_train. */
static nest_dataset *mnist_test_for(const char *model) {
  char dir[1024], cfgpath[1100];
  snprintf(dir, sizeof dir, "%s", model);
  char *slash = strrchr(dir, '/');
  if (slash)
    *slash = '\0';
  else
    snprintf(dir, sizeof dir, ".");
  snprintf(cfgpath, sizeof cfgpath, "%s/config.ini", dir);
  nest_config c;
  nest_config_defaults(&c);
  assert_ok(nest_config_load(&c, cfgpath));
  const char *img = nest_test_data("mnist/train-images-idx3-ubyte.gz");
  const char *lab = nest_test_data("mnist/train-labels-idx1-ubyte.gz");
  const char *timg = nest_test_data("mnist/t10k-images-idx3-ubyte.gz");
  const char *tlab = nest_test_data("mnist/t10k-labels-idx1-ubyte.gz");
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = img;
  o.labels_path = lab;
  o.max_samples = c.max_train;
  nest_dataset *train, *test;
  assert_ok(nest_dataset_load(&o, NULL, &train));
  nest_data_opts_default(&o);
  o.path = timg;
  o.labels_path = tlab;
  assert_ok(nest_dataset_load(&o, train, &test));
  int64_t *tri, *vai, ntr, nva;
  assert_ok(nest_dataset_split(train->n, c.val_split, c.seed, &tri, &ntr, &vai, &nva));
  nest_norm norm = {0};
  assert_ok(nest_dataset_train_norm(train, tri, ntr, &norm));
  assert_ok(nest_dataset_set_norm(test, &norm));
  nest_norm_free(&norm);
  free(tri);
  free(vai);
  nest_dataset_destroy(&train);
  return test;
}

static int argmax(const float *v, int k) {
  int b = 0;
  for (int j = 1; j < k; ++j)
    if (v[j] > v[b]) b = j;
  return b;
}

static void check_mnist_model(const char *model) {
  nest_dataset *test = mnist_test_for(model);
  const int B = 500;
  nest_net *net;
  assert_ok(nest_model_load(model, B, 2, &net));
  nest_sparse *s;
  assert_ok(nest_sparse_create(net, B, 2, NULL, &s));
  nest_sparse_stats st;
  nest_sparse_get_stats(s, &st);
  const size_t d = nest_shape_size(net->in_shape);
  const int k = net->nclasses;
  float *x = nest_test_falloc((size_t)B * d), *ref = nest_test_falloc((size_t)B * k);
  float *got = nest_test_falloc((size_t)B * k);
  int64_t *idx = malloc(sizeof(int64_t) * B), same = 0, wrong_dense = 0;
  double worst = 0.0;
  for (int64_t i0 = 0; i0 < test->n; i0 += B) {
    const int n = (int)(test->n - i0 < B ? test->n - i0 : B);
    int32_t y[500];
    for (int j = 0; j < n; ++j) idx[j] = i0 + j;
    nest_dataset_gather(test, idx, n, x, y);
    dense_logits(net, n, x, ref);
    assert_ok(nest_sparse_forward(s, n, 2, x, got));
    worst = fmax(worst, rel_err(got, ref, (size_t)n * k));
    for (int j = 0; j < n; ++j) {
      const int a = argmax(ref + (size_t)j * k, k), b = argmax(got + (size_t)j * k, k);
      same += a == b;
      wrong_dense += a != y[j];
    }
  }
  printf("%s: %lld active weights -> %lld nnz, %d ops; argmax equal on %lld / %lld test images, "
         "test error %.2f%%, logits within %.2g\n",
         model, (long long)st.source_weights, (long long)st.nnz, st.nops, (long long)same,
         (long long)test->n, 100.0 * wrong_dense / test->n, worst);
  assert_int_equal(same, test->n);
  assert_true(worst < 1e-4);
  free(x);
  free(ref);
  free(got);
  free(idx);
  nest_sparse_destroy(&s);
  nest_net_destroy(&net);
  nest_dataset_destroy(&test);
}

static void test_mnist_models(void **state) {
  if (!nest_test_data("mnist/t10k-images-idx3-ubyte.gz")) skip();
  const char *env = getenv("NEST_SPARSE_MODELS");
  char list[4096];
  snprintf(list, sizeof list, "%s", env && *env ? env : NEST_SPARSE_MODELS);
  int ran = 0;
  for (char *save = NULL, *m = strtok_r(list, ":;", &save); m; m = strtok_r(NULL, ":;", &save)) {
    FILE *f = fopen(m, "rb");
    if (!f) {
      printf("SKIP: model file %s not found\n", m);
      continue;
    }
    fclose(f);
    check_mnist_model(m);
    ++ran;
  }
  if (!ran) {
    printf("SKIP: no real model files (set NEST_SPARSE_MODELS=path/model.h5:... or the CMake "
           "cache variable of that name)\n");
    skip();
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mlp),          cmocka_unit_test(test_conv),
      cmocka_unit_test(test_conv_area),    cmocka_unit_test(test_odd_shapes),
      cmocka_unit_test(test_skips),        cmocka_unit_test(test_skip_program),
      cmocka_unit_test(test_compaction),   cmocka_unit_test(test_bit_identical),
      cmocka_unit_test(test_area_export),  cmocka_unit_test(test_bad_args),
      cmocka_unit_test(test_mnist_models),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
