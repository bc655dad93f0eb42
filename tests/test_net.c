/* test_net.c — arenas, seed masks (density, repair), init, dense dormant gradients, the
 * masked-update invariant, hashing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nest/arch.h"
#include "nest/loss.h"
#include "nest/net.h"
#include "nest/optim.h"
#include "test_util.h"

static nest_net *make_mlp(const char *arch, int in, int classes, int batch, uint64_t seed,
                          double density) {
  nest_layer_spec *specs;
  int n;
  nest_arch_opts o = {.width = 1.0};
  assert_int_equal(nest_arch_build(arch, &o, (nest_shape){in, 1, 1}, classes, &specs, &n), NEST_OK);
  nest_net *net;
  assert_int_equal(nest_net_create(specs, n, (nest_shape){in, 1, 1}, classes, batch, 1, &net), NEST_OK);
  free(specs);
  assert_int_equal(nest_net_init(net, seed, density, -1), NEST_OK);
  return net;
}

static void test_layout(void **state) {
  nest_net *net = make_mlp("mlp:10-8-6-4", 10, 4, 3, 1, 1.0);
  /* 3 dense layers x (W, b): tensors 64-byte aligned and disjoint inside the arena. */
  assert_int_equal(net->ntensors, 6);
  size_t end = 0;
  for (int t = 0; t < net->ntensors; ++t) {
    const nest_param *p = net->tensors[t].param;
    assert_true(p->offset >= end);
    assert_int_equal(p->offset % 16, 0);
    end = p->offset + p->count;
    assert_ptr_equal(net->tensors[t].layer->p[net->tensors[t].slot], net->params + p->offset);
  }
  assert_true(end <= net->nparams);
  int64_t aw, tw;
  nest_net_count(net, &aw, &tw, NULL);
  assert_int_equal(tw, 10 * 8 + 8 * 6 + 6 * 4);
  assert_int_equal(aw, tw);
  nest_net_destroy(&net);
  assert_null(net);
}

static void test_seed_density_and_repair(void **state) {
  /* Low density forces repair: every hidden neuron keeps an input and an output. */
  nest_net *net = make_mlp("mlp:50-40-30-5", 50, 5, 2, 11, 0.02);
  for (int i = 0; i < net->nlayers; ++i) {
    nest_layer *l = net->layers[i];
    if (l->kind != NEST_LAYER_DENSE) continue;
    int rows = l->param[0].dims[0], cols = l->param[0].dims[1];
    for (int r = 0; r < rows; ++r) {
      int any = 0;
      for (int c = 0; c < cols; ++c) any |= l->m[0][r * cols + c] != 0.0f;
      assert_true(any);
    }
    if (i > 0) /* not the raw input */
      for (int c = 0; c < cols; ++c) {
        int any = 0;
        for (int r = 0; r < rows; ++r) any |= l->m[0][r * cols + c] != 0.0f;
        assert_true(any);
      }
    /* Dormant weights are exactly zero; masks are 0/1. */
    for (size_t j = 0; j < l->param[0].count; ++j) {
      assert_true(l->m[0][j] == 0.0f || l->m[0][j] == 1.0f);
      if (l->m[0][j] == 0.0f) assert_true(l->p[0][j] == 0.0f);
    }
  }
  nest_net_destroy(&net);

  /* Moderate density: the realised fraction is close to d. */
  net = make_mlp("mlp:200-300-10", 200, 10, 2, 5, 0.3);
  int64_t aw, tw;
  nest_net_count(net, &aw, &tw, NULL);
  double frac = (double)aw / (double)tw;
  assert_true(fabs(frac - 0.3) < 0.01);
  /* He init scaled by realised density: std of active fc1 weights ~ sqrt(2 / (200 * 0.3)). */
  nest_layer *fc1 = net->layers[0];
  double s2 = 0;
  int64_t na = 0;
  for (size_t j = 0; j < fc1->param[0].count; ++j)
    if (fc1->m[0][j] != 0.0f) s2 += (double)fc1->p[0][j] * fc1->p[0][j], ++na;
  double want = 2.0 / (200 * 0.3);
  assert_true(fabs(s2 / na / want - 1.0) < 0.1);
  nest_net_destroy(&net);
}

static void test_hash_deterministic(void **state) {
  nest_net *a = make_mlp("mlp:20-10-3", 20, 3, 2, 7, 0.5);
  nest_net *b = make_mlp("mlp:20-10-3", 20, 3, 2, 7, 0.5);
  nest_net *c = make_mlp("mlp:20-10-3", 20, 3, 2, 8, 0.5);
  assert_true(nest_net_hash(a, NEST_HASH_ALL) == nest_net_hash(b, NEST_HASH_ALL));
  assert_true(nest_net_hash(a, NEST_HASH_ALL) != nest_net_hash(c, NEST_HASH_ALL));
  a->masks[0] = 1.0f - a->masks[0];
  assert_true(nest_net_hash(a, NEST_HASH_ALL) != nest_net_hash(b, NEST_HASH_ALL));
  nest_net_destroy(&a);
  nest_net_destroy(&b);
  nest_net_destroy(&c);
}

/* Partial-area conv layers: FLOPs count only the (o, m, p, q) the area mask keeps, Conv% is
 * the mask's mean, and the mask-buffer is part of the NEST_HASH_MASKS hash. */
static void test_area_flops_frac_hash(void **state) {
  (void)state;
  const nest_layer_spec specs[] = {
      {NEST_LAYER_CONV2D, "conv1", {.out_c = 3, .kh = 3, .area = 1}},
      {NEST_LAYER_RELU, "relu1", {0}},
      {NEST_LAYER_CONV2D, "conv2", {.out_c = 2, .kh = 2}},
      {NEST_LAYER_DENSE, "fc", {.units = 4}},
  };
  nest_net *net = NULL;
  assert_ok(nest_net_create(specs, 4, (nest_shape){2, 6, 5}, 4, 2, 1, &net));
  assert_ok(nest_net_init(net, 3, 0.5, -1));
  nest_layer *c1 = net->layers[0];
  assert_int_equal(c1->nbuffers, 1);
  assert_string_equal(c1->buffer[0].name, "area");
  assert_true(c1->buffer[0].mask);
  const size_t plane = (size_t)c1->out.h * c1->out.w; /* 4 x 3 */
  assert_int_equal(c1->buffer[0].count, 3 * 2 * plane);
  /* all ones after init: exactly the plain count 2 x active x positions, Conv% 1 */
  double active = 0;
  for (size_t j = 0; j < c1->param[0].count; ++j) active += c1->m[0][j] != 0.0f;
  assert_true(nest_net_layer_flops(net, 0) == 2.0 * active * (double)plane);
  assert_true(nest_net_layer_conv_frac(net, 0) == 1.0);
  assert_true(nest_net_layer_conv_frac(net, 2) == 1.0); /* conv without area */
  assert_true(nest_net_layer_conv_frac(net, 3) == 1.0); /* dense */
  const double flops2 = nest_net_layer_flops(net, 2), total = nest_net_flops(net);
  const uint64_t hp = nest_net_hash(net, NEST_HASH_PARAMS);
  const uint64_t hm = nest_net_hash(net, NEST_HASH_MASKS);
  /* keep only the first position of every (o, m) pair's plane, and nothing of pair (2, 1) */
  for (int o = 0; o < 3; ++o)
    for (int m = 0; m < 2; ++m)
      for (size_t j = 0; j < plane; ++j)
        c1->buf[0][((size_t)o * 2 + m) * plane + j] = (j == 0 && !(o == 2 && m == 1)) ? 1.0f : 0.0f;
  double want = 0;
  for (int o = 0; o < 3; ++o)
    for (int m = 0; m < 2; ++m) {
      if (o == 2 && m == 1) continue;
      for (int t = 0; t < 9; ++t) want += c1->m[0][((size_t)o * 2 + m) * 9 + t] != 0.0f;
    }
  assert_true(want > 0);
  assert_true(nest_net_layer_flops(net, 0) == 2.0 * want);
  assert_true(nest_net_flops(net) == total - 2.0 * active * (double)plane + 2.0 * want);
  assert_true(nest_net_layer_flops(net, 2) == flops2);
  assert_true(fabs(nest_net_layer_conv_frac(net, 0) - 5.0 / (6.0 * (double)plane)) < 1e-12);
  /* the area mask is a mask: NEST_HASH_MASKS sees it, NEST_HASH_PARAMS does not */
  assert_true(nest_net_hash(net, NEST_HASH_PARAMS) == hp);
  assert_true(nest_net_hash(net, NEST_HASH_MASKS) != hm);
  nest_net_destroy(&net);
}

static double loss_of(nest_net *net, nest_ctx *ctx, const float *x, const int32_t *y) {
  const float *logits;
  assert_int_equal(nest_net_forward(net, ctx, x, &logits), NEST_OK);
  double l = 0;
  int64_t c = 0;
  nest_loss_softmax_xent(logits, y, ctx->n, net->nclasses, 1.0f, NULL, &l, &c);
  return l;
}

/* Dormant positions receive the true dL/dW (finite differences on the loss), active and
 * dormant alike, and the optimizer never moves a dormant weight or its momentum. */
static void test_dormant_gradients_and_masked_update(void **state) {
  enum { IN = 12, B = 4 };
  nest_net *net = make_mlp("mlp:12-9-5", IN, 5, B, 3, 0.4);
  float x[B * IN];
  int32_t y[B] = {0, 4, 2, 1};
  nest_test_fill_normal(x, B * IN, 9, 1.0f);
  nest_ctx ctx = {.n = B, .train = 1, .nthreads = 1};
  const float *logits;
  float dl[B * 5];
  double l = 0;
  int64_t c = 0;
  assert_int_equal(nest_net_forward(net, &ctx, x, &logits), NEST_OK);
  nest_loss_softmax_xent(logits, y, B, 5, 1.0f, dl, &l, &c);
  assert_int_equal(nest_net_backward(net, &ctx, dl), NEST_OK);

  int dormant_checked = 0, nonzero_dormant = 0, probes = 0, kinks = 0;
  for (int i = 0; i < net->nlayers; ++i) {
    nest_layer *L = net->layers[i];
    if (L->kind != NEST_LAYER_DENSE) continue;
    for (size_t j = 0; j < L->param[0].count; j += 3) {
      /* central differences at h and h/4: if they disagree, a ReLU switches inside the step
       * and the probe says nothing about the gradient (skipped; at most a tenth may be) */
      double fdh[2];
      for (int k = 0; k < 2; ++k) {
        const float save = L->p[0][j], h = k ? 2.5e-3f : 1e-2f;
        L->p[0][j] = save + h;
        double lp = loss_of(net, &ctx, x, y);
        L->p[0][j] = save - h;
        double lm = loss_of(net, &ctx, x, y);
        L->p[0][j] = save;
        fdh[k] = (lp - lm) / (2.0 * h);
      }
      ++probes;
      if (fabs(fdh[0] - fdh[1]) > 1e-3 + 1e-2 * fabs(fdh[1])) {
        ++kinks;
        continue;
      }
      const double fd = fdh[0];
      if (!(fabs(L->g[0][j] - fd) < 2e-3 + 2e-2 * fabs(fd)))
        fail_msg("layer %d weight %zu: backward %g, finite difference %g", i, j, L->g[0][j], fd);
      if (L->m[0][j] == 0.0f) {
        dormant_checked++;
        nonzero_dormant += fabsf(L->g[0][j]) > 1e-6f;
      }
    }
  }
  assert_true(kinks * 10 <= probes);
  assert_true(dormant_checked > 10);
  assert_true(nonzero_dormant > dormant_checked / 2);

  /* Several SGD steps with momentum and weight decay: dormant weights stay exactly 0. */
  nest_optim o = {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-3, .nesterov = 1};
  for (int s = 0; s < 5; ++s) {
    assert_int_equal(nest_net_forward(net, &ctx, x, &logits), NEST_OK);
    nest_loss_softmax_xent(logits, y, B, 5, 1.0f / B, dl, &l, &c);
    assert_int_equal(nest_net_backward(net, &ctx, dl), NEST_OK);
    nest_optim_step(net, &o, 0.1, 1);
  }
  int moved = 0;
  for (size_t i = 0; i < net->nparams; ++i) {
    if (net->masks[i] == 0.0f) {
      assert_true(net->params[i] == 0.0f);
      assert_true(net->mom[i] == 0.0f);
    } else {
      moved += net->mom[i] != 0.0f;
    }
  }
  assert_true(moved > 0);
  nest_net_destroy(&net);
}


/* In-place ReLU and the two shared activation-gradient buffers (net.c, "activations") give
 * the bits of the reference layout (every activation and gradient in a buffer of its own):
 * logits, loss gradients, every parameter gradient, the dense outputs' gradients that the
 * gradient pass reads, and the weights after SGD steps. The net has two relus in a row, a relu
 * after batch norm, after maxpool's input conv, after a dense layer, and dropout after a relu. */
static void test_inplace_relu_same_bits(void **state) {
  enum { B = 5, C = 2, H = 9, W = 9, K = 5 };
  nest_layer_spec sp[] = {
      {NEST_LAYER_CONV2D, "conv1", {.out_c = 4, .kh = 3, .pad = 1}},
      {NEST_LAYER_RELU, "conv1.relu", {0}},
      {NEST_LAYER_RELU, "conv1.relu2", {0}},
      {NEST_LAYER_MAXPOOL, "pool1", {.kh = 2}},
      {NEST_LAYER_CONV2D, "conv2", {.out_c = 3, .kh = 3}},
      {NEST_LAYER_BATCHNORM, "conv2.bn", {0}},
      {NEST_LAYER_RELU, "conv2.relu", {0}},
      {NEST_LAYER_DENSE, "fc1", {.units = 7}},
      {NEST_LAYER_RELU, "fc1.relu", {0}},
      {NEST_LAYER_DROPOUT, "fc1.drop", {.rate = 0.3f}},
      {NEST_LAYER_DENSE, "fc2", {.units = K}},
  };
  const int ns = (int)(sizeof sp / sizeof sp[0]);
  const nest_net_opts layouts[] = {{1, 1}, {0, 0}, {0, 1}, {1, 0}}; /* [0] = the reference */
  nest_net *net[4];
  for (int k = 0; k < 4; ++k) {
    assert_ok(nest_net_create_ex(sp, ns, (nest_shape){C, H, W}, K, B, 1, &layouts[k], &net[k]));
    assert_ok(nest_net_init(net[k], 11, 0.7, -1));
  }
  /* the default layout aliases and saves memory */
  assert_ptr_equal(net[1]->act[2], net[1]->act[1]);
  assert_ptr_equal(net[1]->dact[2], net[1]->dact[1]);
  assert_ptr_not_equal(net[0]->act[2], net[0]->act[1]);
  assert_null(net[1]->dact[0]);
  assert_true(net[1]->act_bytes < net[0]->act_bytes);
  assert_true(net[1]->dact_bytes < net[0]->dact_bytes);
  float x[B * C * H * W], dl[B * K];
  int32_t y[B] = {0, 4, 2, 1, 3};
  int64_t ids[B] = {10, 11, 12, 13, 14};
  nest_test_fill_normal(x, B * C * H * W, 5, 1.0f);
  nest_optim o = {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-3};
  float *ref_logits = nest_test_falloc(B * K), *ref_dfc1 = nest_test_falloc(B * 7);
  for (int step = 0; step < 3; ++step) {
    for (int k = 0; k < 4; ++k) {
      nest_ctx ctx = {.n = B, .train = 1, .nthreads = 1, .seed = 3, .step = step, .sample_ids = ids};
      const float *logits;
      double l = 0;
      int64_t c = 0;
      assert_ok(nest_net_forward(net[k], &ctx, x, &logits));
      nest_loss_softmax_xent(logits, y, B, K, 1.0f / B, dl, &l, &c);
      assert_ok(nest_net_backward(net[k], &ctx, dl));
      /* fc1's output gradient: dact[8] (fc1 is layer 7) */
      if (k == 0) {
        memcpy(ref_logits, logits, sizeof(float) * B * K);
        memcpy(ref_dfc1, net[0]->dact[8], sizeof(float) * B * 7);
      } else {
        assert_memory_equal(logits, ref_logits, sizeof(float) * B * K);
        assert_memory_equal(net[k]->dact[8], ref_dfc1, sizeof(float) * B * 7);
        assert_memory_equal(net[k]->grads, net[0]->grads, net[0]->nparams * sizeof(float));
      }
    }
    for (int k = 0; k < 4; ++k) nest_optim_step(net[k], &o, 0.1, 1);
  }
  for (int k = 1; k < 4; ++k)
    assert_memory_equal(net[k]->params, net[0]->params, net[0]->nparams * sizeof(float));
  free(ref_logits);
  free(ref_dfc1);
  for (int k = 0; k < 4; ++k) nest_net_destroy(&net[k]);
}

static void test_shape_errors(void **state) {
  nest_layer_spec spec = {.kind = NEST_LAYER_DENSE, .name = "fc1", .hp = {.units = 3}};
  nest_net *net = NULL;
  assert_int_equal(nest_net_create(&spec, 1, (nest_shape){4, 1, 1}, 5, 2, 1, &net), NEST_ERR_CONFIG);
  assert_null(net);
  net = make_mlp("mlp:4-3", 4, 3, 2, 1, 1.0);
  assert_int_equal(nest_net_init(net, 1, 0.0, -1), NEST_ERR_CONFIG);
  assert_int_equal(nest_net_init(net, 1, 1.5, -1), NEST_ERR_CONFIG);
  nest_net_destroy(&net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layout),
      cmocka_unit_test(test_seed_density_and_repair),
      cmocka_unit_test(test_hash_deterministic),
      cmocka_unit_test(test_area_flops_frac_hash),
      cmocka_unit_test(test_dormant_gradients_and_masked_update),
      cmocka_unit_test(test_inplace_relu_same_bits),
      cmocka_unit_test(test_shape_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
