/* test_skip.c — skip connections (SCANN, net.h "Skip connections"): model.skips parsing and
 * its errors, forward / backward against finite differences (skip tensors, dormant positions
 * included, and the chain tensors below their sources), the activation layouts giving the same
 * bits, surgery on units with skip producers and consumers (insert, delete, cell division),
 * model files. */
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
#include "nest/model.h"
#include "nest/net.h"
#include "nest/optim.h"
#include "nest/surgery.h"
#include "test_util.h"

/* specs of `arch` on `in` with model.skips = skips; *n = their count (free the result). */
static nest_layer_spec *specs_of(const char *arch, nest_shape in, int classes, const char *skips,
                                 int *n) {
  nest_layer_spec *specs;
  nest_arch_opts o = {.width = 1.0};
  assert_ok(nest_arch_build(arch, &o, in, classes, &specs, n));
  assert_ok(nest_arch_skips(specs, *n, skips));
  return specs;
}

static nest_net *net_of(const char *arch, nest_shape in, int classes, const char *skips,
                        int batch, double density, double skip_density, uint64_t seed) {
  int n;
  nest_layer_spec *specs = specs_of(arch, in, classes, skips, &n);
  nest_net *net;
  assert_ok(nest_net_create(specs, n, in, classes, batch, 1, &net));
  free(specs);
  assert_ok(nest_net_init_ex(net, seed, density, skip_density, -1));
  return net;
}

/* A small conv base: conv, pool, dense, relu, dense, relu, dense (no ReLU after the conv: its
 * kinks would swamp the finite differences of the conv weights, which see the skip tensors'
 * share of dL/d(flattened features) through the pool). */
static nest_net *conv_net(const char *skips, int batch, double skip_density, uint64_t seed,
                          const nest_net_opts *opts) {
  nest_layer_spec sp[] = {
      {NEST_LAYER_CONV2D, "conv1", {.out_c = 3, .kh = 3}},
      {NEST_LAYER_MAXPOOL, "pool1", {.kh = 2}},
      {NEST_LAYER_DENSE, "fc1", {.units = 7}},
      {NEST_LAYER_RELU, "fc1.relu", {0}},
      {NEST_LAYER_DENSE, "fc2", {.units = 6}},
      {NEST_LAYER_RELU, "fc2.relu", {0}},
      {NEST_LAYER_DENSE, "fc3", {.units = 4}},
  };
  const int ns = (int)(sizeof sp / sizeof sp[0]);
  assert_ok(nest_arch_skips(sp, ns, skips));
  nest_net *net;
  assert_ok(nest_net_create_ex(sp, ns, (nest_shape){2, 8, 8}, 4, batch, 1, opts, &net));
  assert_ok(nest_net_init_ex(net, seed, 0.8, skip_density, -1));
  return net;
}

static double loss_of(nest_net *net, const nest_ctx *ctx, const float *x, const int32_t *y) {
  const float *logits;
  assert_ok(nest_net_forward(net, ctx, x, &logits));
  double l = 0;
  int64_t c = 0;
  nest_loss_softmax_xent(logits, y, ctx->n, net->nclasses, 1.0f, NULL, &l, &c);
  return l;
}

/* ---- model.skips ------------------------------------------------------------------------------ */

static void test_skips_parse(void **state) {
  int n;
  /* all on an MLP: in>fc2, in>fc3, fc1>fc3 (fc2's chain input is fc1's, fc3's is fc2's) */
  nest_layer_spec *s = specs_of("mlp:10-8-6-5", (nest_shape){10, 1, 1}, 5, "all", &n);
  int fc2 = -1, fc3 = -1;
  for (int i = 0; i < n; ++i) {
    if (strcmp(s[i].name, "fc2") == 0) fc2 = i;
    if (strcmp(s[i].name, "fc3") == 0) fc3 = i;
  }
  assert_int_equal(s[fc2].nskips, 1);
  assert_string_equal(s[fc2].skip_from[0], "in");
  assert_int_equal(s[fc3].nskips, 2);
  assert_string_equal(s[fc3].skip_from[0], "in");
  assert_string_equal(s[fc3].skip_from[1], "fc1");
  free(s);
  /* a batch norm on the input: "in" (the raw input) once per destination, not twice */
  {
    nest_layer_spec b[6] = {{.kind = NEST_LAYER_BATCHNORM, .name = "in.bn"},
                            {.kind = NEST_LAYER_DENSE, .name = "fc1", .hp = {.units = 8}},
                            {.kind = NEST_LAYER_RELU, .name = "fc1.relu"},
                            {.kind = NEST_LAYER_DENSE, .name = "fc2", .hp = {.units = 6}},
                            {.kind = NEST_LAYER_RELU, .name = "fc2.relu"},
                            {.kind = NEST_LAYER_DENSE, .name = "fc3", .hp = {.units = 5}}};
    if (nest_arch_skips(b, 6, "all") != NEST_OK) fail_msg("all: %s", nest_error_message());
    assert_int_equal(b[3].nskips, 1);
    assert_string_equal(b[3].skip_from[0], "in");
    assert_int_equal(b[5].nskips, 2);
    assert_string_equal(b[5].skip_from[0], "in");
    assert_string_equal(b[5].skip_from[1], "fc1");
  }
  /* a layer's ReLU names its output too (canonical: the dense layer) */
  s = specs_of("mlp:10-8-6-5", (nest_shape){10, 1, 1}, 5, " fc1.relu > fc3 ", &n);
  assert_int_equal(s[fc3].nskips, 1);
  assert_string_equal(s[fc3].skip_from[0], "fc1");
  free(s);
  /* LeNet-5: skips start at the flattened features, named by the pool that makes them */
  s = specs_of("lenet5", (nest_shape){1, 28, 28}, 10, "all", &n);
  int total = 0;
  for (int i = 0; i < n; ++i) {
    total += s[i].nskips;
    if (s[i].nskips) assert_string_equal(s[i].skip_from[0], "pool2");
  }
  assert_int_equal(total, 1); /* pool2 > fc2: LeNet-5 has two dense layers */
  free(s);
  s = specs_of("lenet5", (nest_shape){1, 28, 28}, 10, "conv2>fc2", &n);
  free(s);

  /* errors: one line naming model.skips and the pair */
  const struct {
    const char *arch, *skips, *want;
  } bad[] = {
      {"mlp:10-8-6-5", "fc2>fc1", "points backwards"},
      {"mlp:10-8-6-5", "fc3>fc1", "no later dense or conv2d layer reads its output"},
      {"mlp:10-8-6-5", "fc1>fc2", "adjacent"},
      {"mlp:10-8-6-5", "in>fc1", "adjacent"},
      {"mlp:10-8-6-5", "fc1>fc1.relu", "skips end at dense layers"},
      {"mlp:10-8-6-5", "fc9>fc3", "no such source layer"},
      {"mlp:10-8-6-5", "in>fc7", "no layer 'fc7'"},
      {"mlp:10-8-6-5", "fc3>fc3", "no later dense or conv2d layer reads its output"},
      {"mlp:10-8-6-5", "in>fc3, in>fc3", "listed twice"},
      {"mlp:10-8-6-5", "fc1>fc3,fc1.relu>fc3", "listed twice"},
      {"mlp:10-8-6-5", "fc1-fc3", "not SOURCE>DEST"},
      {"mlp:10-8-6-5", "all,in>fc3", "stands alone"},
      {"mlp:10-5", "all", "no two dense layers"},
      {"lenet5", "in>fc1", "a conv2d layer reads the source"},
      {"lenet5", "conv1>fc2", "a conv2d layer reads the source"},
      {"lenet5", "pool2>conv2", "skips end at dense layers"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; ++k) {
    nest_layer_spec *specs;
    nest_arch_opts o = {.width = 1.0};
    const int mlp = bad[k].arch[0] == 'm';
    const nest_shape in = mlp ? (nest_shape){10, 1, 1} : (nest_shape){1, 28, 28};
    const int classes = mlp ? (strcmp(bad[k].arch, "mlp:10-5") == 0 ? 5 : 5) : 10;
    assert_ok(nest_arch_build(bad[k].arch, &o, in, classes, &specs, &n));
    const nest_status st = nest_arch_skips(specs, n, bad[k].skips);
    free(specs);
    if (st != NEST_ERR_CONFIG || !strstr(nest_error_message(), bad[k].want) ||
        !strstr(nest_error_message(), "model.skips"))
      fail_msg("%s / %s: got %s: %s (wanted '%s')", bad[k].arch, bad[k].skips,
               nest_status_name(st), nest_error_message(), bad[k].want);
    nest_error_clear();
  }
}

/* ---- forward / backward ---------------------------------------------------------------------- */

/* Every weight of every maskable tensor (chain and skip, active and dormant) gets the finite-
 * difference gradient of the loss; skip tensors seeded half active, so their dormant positions
 * are checked too, and the chain tensors below a skip source see its share of dL/dact. */
static void check_fd(nest_net *net, const float *x, const int32_t *y, int B) {
  nest_ctx ctx = {.n = B, .train = 1, .nthreads = 1};
  const float *logits;
  float *dl = nest_test_falloc((size_t)B * net->nclasses);
  double l = 0;
  int64_t c = 0;
  assert_ok(nest_net_forward(net, &ctx, x, &logits));
  nest_loss_softmax_xent(logits, y, B, net->nclasses, 1.0f, dl, &l, &c);
  assert_ok(nest_net_backward(net, &ctx, dl));
  free(dl);
  float *g = nest_test_falloc(net->nparams);
  memcpy(g, net->grads, net->nparams * sizeof(float));
  int probes = 0, kinks = 0, skip_probes = 0, skip_dormant = 0;
  for (int t = 0; t < net->ntensors; ++t) {
    const nest_tensor_ref *r = &net->tensors[t];
    if (!r->param->maskable) continue;
    const int is_skip = nest_net_skip(net, r->layer->index, r->slot) != NULL;
    float *w = r->layer->p[r->slot];
    const double l0 = loss_of(net, &ctx, x, y);
    for (size_t j = 0; j < r->param->count; j += 2) {
      /* central differences at h and h/4, and the one-sided ones at h: a ReLU or max-pool
       * kink inside the step (or exactly at the point, where the two sides disagree) makes
       * the probe say nothing about the gradient: skipped, at most a tenth may be */
      double fdh[2], side[2] = {0, 0};
      for (int k = 0; k < 2; ++k) {
        const float save = w[j], h = k ? 2.5e-3f : 1e-2f;
        w[j] = save + h;
        const double lp = loss_of(net, &ctx, x, y);
        w[j] = save - h;
        const double lm = loss_of(net, &ctx, x, y);
        w[j] = save;
        fdh[k] = (lp - lm) / (2.0 * h);
        if (!k) side[0] = (lp - l0) / h, side[1] = (l0 - lm) / h;
      }
      ++probes;
      if (fabs(fdh[0] - fdh[1]) > 1e-3 + 1e-2 * fabs(fdh[1]) ||
          fabs(side[0] - side[1]) > 2e-2 + 5e-2 * fabs(fdh[0])) {
        ++kinks;
        continue;
      }
      const double gj = g[r->param->offset + j];
      if (!(fabs(gj - fdh[0]) < 2e-3 + 2e-2 * fabs(fdh[0])))
        fail_msg("%s.%s[%zu]: backward %g, finite difference %g", r->layer->name,
                 r->param->name, j, gj, fdh[0]);
      skip_probes += is_skip;
      skip_dormant += is_skip && r->layer->m[r->slot][j] == 0.0f && fabs(gj) > 1e-6;
    }
  }
  assert_true(kinks * 10 <= probes);
  assert_true(skip_probes > 20);
  assert_true(skip_dormant > 5); /* dormant skip positions get their true, non-zero gradient */
  free(g);
}

static void test_gradients_mlp(void **state) {
  enum { IN = 10, B = 5 };
  nest_net *net = net_of("mlp:10-8-6-5", (nest_shape){IN, 1, 1}, 5, "all", B, 0.7, 0.5, 3);
  assert_int_equal(net->nskips, 3);
  float x[B * IN];
  int32_t y[B] = {0, 4, 2, 1, 3};
  nest_test_fill_normal(x, B * IN, 9, 1.0f);
  check_fd(net, x, y, B);
  nest_net_destroy(&net);
}

static void test_gradients_conv_base(void **state) {
  enum { B = 4 };
  nest_net *net = conv_net("all", B, 0.5, 5, NULL);
  assert_int_equal(net->nskips, 3); /* pool1>fc2, pool1>fc3, fc1>fc3 */
  float x[B * 2 * 8 * 8];
  int32_t y[B] = {0, 3, 2, 1};
  nest_test_fill_normal(x, B * 2 * 8 * 8, 4, 1.0f);
  check_fd(net, x, y, B);
  nest_net_destroy(&net);
}

/* The shared gradient buffers and in-place ReLU give the bits of the layout with a buffer per
 * activation and gradient (skip sources add into the shared buffers at the right moment). */
static void test_layouts_same_bits(void **state) {
  enum { B = 6 };
  const nest_net_opts layouts[] = {{1, 1}, {0, 0}, {0, 1}, {1, 0}};
  nest_net *net[4];
  for (int k = 0; k < 4; ++k) net[k] = conv_net("all", B, 0.3, 7, &layouts[k]);
  float x[B * 2 * 8 * 8], dl[B * 4];
  int32_t y[B] = {0, 3, 2, 1, 1, 0};
  nest_test_fill_normal(x, B * 2 * 8 * 8, 6, 1.0f);
  nest_optim o = {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-3};
  for (int step = 0; step < 3; ++step) {
    for (int k = 0; k < 4; ++k) {
      nest_ctx ctx = {.n = B, .train = 1, .nthreads = 1};
      const float *logits;
      double l = 0;
      int64_t c = 0;
      assert_ok(nest_net_forward(net[k], &ctx, x, &logits));
      nest_loss_softmax_xent(logits, y, B, 4, 1.0f / B, dl, &l, &c);
      assert_ok(nest_net_backward(net[k], &ctx, dl));
      if (k) assert_memory_equal(net[k]->grads, net[0]->grads, net[0]->nparams * sizeof(float));
    }
    for (int k = 0; k < 4; ++k) nest_optim_step(net[k], &o, 0.1, 1);
  }
  for (int k = 1; k < 4; ++k)
    assert_memory_equal(net[k]->params, net[0]->params, net[0]->nparams * sizeof(float));
  for (int k = 0; k < 4; ++k) nest_net_destroy(&net[k]);
}

/* Seeding: skip density 0 leaves every skip position dormant (and 0), 1 every one active;
 * adding a skip leaves the other skip's mask and values unchanged (streams keyed by names). */
static void test_skip_seed(void **state) {
  nest_net *a = net_of("mlp:10-8-6-5", (nest_shape){10, 1, 1}, 5, "in>fc3", 2, 0.5, 0.4, 1);
  nest_net *b = net_of("mlp:10-8-6-5", (nest_shape){10, 1, 1}, 5, "in>fc3,fc1>fc3", 2, 0.5, 0.4, 1);
  nest_net *z = net_of("mlp:10-8-6-5", (nest_shape){10, 1, 1}, 5, "all", 2, 0.5, 0.0, 1);
  nest_net *o = net_of("mlp:10-8-6-5", (nest_shape){10, 1, 1}, 5, "all", 2, 0.5, 1.0, 1);
  const nest_skip *sa = &a->skips[0], *sb = &b->skips[0];
  const nest_layer *la = a->layers[sa->layer], *lb = b->layers[sb->layer];
  assert_string_equal(sa->from, "in");
  assert_string_equal(sb->from, "in");
  assert_memory_equal(la->m[sa->slot], lb->m[sb->slot], la->param[sa->slot].count * sizeof(float));
  size_t on = 0;
  for (size_t i = 0; i < la->param[sa->slot].count; ++i) on += la->m[sa->slot][i] != 0.0f;
  assert_true(on > 0 && on < la->param[sa->slot].count);
  for (int k = 0; k < z->nskips; ++k) {
    const nest_layer *l = z->layers[z->skips[k].layer];
    const int s = z->skips[k].slot;
    for (size_t i = 0; i < l->param[s].count; ++i) {
      assert_true(l->m[s][i] == 0.0f && l->p[s][i] == 0.0f);
      assert_true(o->layers[o->skips[k].layer]->m[s][i] == 1.0f);
    }
  }
  nest_net_destroy(&a);
  nest_net_destroy(&b);
  nest_net_destroy(&z);
  nest_net_destroy(&o);
}

/* ---- surgery ---------------------------------------------------------------------------------- */

static void logits_of(nest_net *net, const float *x, int B, float *out) {
  nest_ctx ctx = {.n = B, .train = 0, .nthreads = 1};
  const float *logits;
  assert_ok(nest_net_forward(net, &ctx, x, &logits));
  memcpy(out, logits, sizeof(float) * (size_t)B * net->nclasses);
}

static double max_diff(const float *a, const float *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = fmax(m, fabs((double)a[i] - b[i]));
  return m;
}

/* fc1 of an MLP with every skip active: its units feed fc2 (chain), fc3 (skip fc1>fc3); fc2's
 * units come from fc1 (chain) and the input (skip in>fc2). Inserting a unit whose weights are
 * zero (surgery's fresh units) keeps the output; so does deleting a unit after zeroing its
 * outputs; a split keeps it before any noise. Every tensor follows (shapes checked by the
 * outputs and by the masks below). */
static void test_surgery_with_skips(void **state) {
  enum { IN = 10, B = 6 };
  nest_net *net = net_of("mlp:10-8-6-5", (nest_shape){IN, 1, 1}, 5, "all", B, 1.0, 1.0, 11);
  float x[B * IN], ref[B * 5], out[B * 5];
  nest_test_fill_normal(x, B * IN, 12, 1.0f);
  logits_of(net, x, B, ref);
  const int fc1 = nest_net_find_layer(net, "fc1")->index;
  const int fc2 = nest_net_find_layer(net, "fc2")->index;
  /* insert: fresh units are dormant everywhere: same output */
  assert_ok(nest_surgery_append(&net, fc1, 2));
  assert_ok(nest_surgery_append(&net, fc2, 1));
  logits_of(net, x, B, out);
  assert_true(max_diff(out, ref, B * 5) < 1e-5);
  /* the fresh fc1 units' columns in the skip fc1>fc3 are dormant, their rows in fc1 too */
  const nest_layer *l3 = nest_net_find_layer(net, "fc3");
  const nest_skip *sk = nest_net_skip(net, l3->index, 3);
  assert_non_null(sk);
  assert_string_equal(sk->from, "fc1");
  assert_int_equal(l3->param[3].dims[1], 10);
  for (int o = 0; o < 5; ++o) {
    assert_true(l3->m[3][o * 10 + 8] == 0.0f && l3->m[3][o * 10 + 9] == 0.0f);
    assert_true(l3->m[3][o * 10 + 7] == 1.0f);
  }
  /* fc2's skip in>fc2 gained a dormant row */
  const nest_layer *l2 = net->layers[fc2];
  assert_int_equal(l2->param[2].dims[0], 7);
  for (int i = 0; i < IN; ++i) assert_true(l2->m[2][6 * IN + i] == 0.0f);

  /* delete: zero unit 3 of fc1's outputs (chain and skip), then remove it */
  nest_layer *c2 = net->layers[fc2], *c3 = nest_net_find_layer(net, "fc3");
  for (int o = 0; o < c2->param[0].dims[0]; ++o) c2->p[0][o * 10 + 3] = 0.0f;
  for (int o = 0; o < 5; ++o) c3->p[3][o * 10 + 3] = 0.0f;
  logits_of(net, x, B, ref);
  const int gone = 3;
  assert_ok(nest_surgery_delete(&net, fc1, &gone, 1));
  logits_of(net, x, B, out);
  assert_true(max_diff(out, ref, B * 5) < 1e-5);
  assert_int_equal(nest_net_find_layer(net, "fc3")->param[3].dims[1], 9);

  /* split: the copy shares the outgoing weights: same output before noise */
  logits_of(net, x, B, ref);
  assert_ok(nest_surgery_split(&net, fc1, 2));
  logits_of(net, x, B, out);
  assert_true(max_diff(out, ref, B * 5) < 1e-5);
  const nest_layer *n1 = net->layers[fc1], *n3 = nest_net_find_layer(net, "fc3");
  assert_int_equal(n1->hp.units, 10);
  assert_memory_equal(n1->p[0] + 9 * IN, n1->p[0] + 2 * IN, IN * sizeof(float));
  assert_memory_equal(n1->m[0] + 9 * IN, n1->m[0] + 2 * IN, IN * sizeof(float));
  assert_true(n1->p[1][9] == n1->p[1][2]);
  for (int o = 0; o < 5; ++o) assert_true(n3->p[3][o * 10 + 9] == n3->p[3][o * 10 + 2]);
  nest_net_destroy(&net);
}

/* ---- model files ------------------------------------------------------------------------------ */

static void test_model_round_trip(void **state) {
  enum { B = 3 };
  nest_net *net = conv_net("pool1>fc3, fc1>fc3", B, 0.5, 21, NULL);
  const char *path = nest_test_path(nest_test_tmpdir(), "skip.h5");
  assert_ok(nest_model_save(net, path));
  nest_net *back = NULL;
  assert_ok(nest_model_load(path, B, 1, &back));
  assert_int_equal(back->nskips, 2);
  assert_int_equal(back->nparams, net->nparams);
  assert_memory_equal(back->params, net->params, net->nparams * sizeof(float));
  assert_memory_equal(back->masks, net->masks, net->nparams * sizeof(float));
  char a[512], b[512];
  nest_net_arch_string(net, a, sizeof a);
  nest_net_arch_string(back, b, sizeof b);
  assert_string_equal(a, b);
  assert_non_null(strstr(a, "fc3 dense 4 <pool1,fc1"));
  /* the masks-only reader lists the skip tensors too */
  nest_model_masks *m = NULL;
  assert_ok(nest_model_read_masks(path, &m));
  int skips = 0;
  for (int i = 0; i < m->ntensors; ++i) skips += strncmp(m->tensors[i].param, "skip_", 5) == 0;
  assert_int_equal(skips, 2);
  nest_model_masks_free(&m);
  nest_net_destroy(&back);
  nest_net_destroy(&net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_skips_parse),
      cmocka_unit_test(test_gradients_mlp),
      cmocka_unit_test(test_gradients_conv_base),
      cmocka_unit_test(test_layouts_same_bits),
      cmocka_unit_test(test_skip_seed),
      cmocka_unit_test(test_surgery_with_skips),
      cmocka_unit_test(test_model_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
