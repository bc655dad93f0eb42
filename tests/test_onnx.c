/* test_onnx.c — ONNX export (onnx.h): small random networks of every layer kind (dense, conv2d
 * with and without partial-area masks, maxpool, relu, batchnorm on images and on features,
 * dropout, pruned weights) are exported, accepted by python3-onnx's checker, and run by ONNX
 * Runtime (onnxruntime-node, installed by tests/onnx/ort_install.sh) on random raw inputs: its
 * logits equal nest_net_forward's (eval mode) on the normalised inputs within 1e-4. The encoded
 * model is also read back with protobuf-c (structure, weights, metadata), and bad inputs fail
 * with a message and leave an existing file untouched. The checker or ONNX Runtime missing
 * (python3-onnx not installed, npm unreachable) skips those parts with the reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nest/net.h"
#include "nest/arch.h"
#include "nest/onnx.h"
#include "nest/reduce.h"
#include "nest/rng.h"
#include "onnx/onnx.pb-c.h"
#include "onnx_util.h"
#include "test_util.h"

#define ROWS 23  /* samples per comparison; ONNX Runtime runs them 10 at a time (N symbolic) */
#define TOL 1e-4 /* max |logit difference| */

static float uniform(nest_rng *r, float lo, float hi) {
  return lo + (hi - lo) * nest_rng_uniform(r);
}

/* Build and seed a net, then give every bias, batch-norm parameter and statistic a random
 * value (nest_net_init leaves biases 0 and BN at identity, which would hide mistakes). */
static nest_net *make_net(const nest_layer_spec *specs, int n, nest_shape in, int classes,
                          double density, uint64_t seed) {
  nest_net *net = NULL;
  assert_ok(nest_net_create(specs, n, in, classes, ROWS, 1, &net));
  assert_ok(nest_net_init(net, seed, density, -1));
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_TEST, 7, 0);
  for (int i = 0; i < net->nlayers; ++i) {
    nest_layer *l = net->layers[i];
    for (int k = 0; k < l->nparams; ++k) {
      const char *pn = l->param[k].name;
      for (size_t j = 0; j < l->param[k].count; ++j) {
        if (!strcmp(pn, "b") || !strcmp(pn, "beta")) l->p[k][j] = uniform(&r, -0.3f, 0.3f);
        if (!strcmp(pn, "gamma")) l->p[k][j] = uniform(&r, 0.5f, 1.5f);
      }
    }
    for (int k = 0; l->kind == NEST_LAYER_BATCHNORM && k < l->nbuffers; ++k)
      for (size_t j = 0; j < l->buffer[k].count; ++j)
        l->buf[k][j] = k == 0 ? uniform(&r, -0.5f, 0.5f) : uniform(&r, 0.3f, 2.0f);
  }
  return net;
}

/* mean in [-0.3, 0.3], std in [0.2, 1.5] per channel / feature */
static void random_norm(nest_norm *nm, int c, uint64_t seed) {
  nm->nch = c;
  nm->mean = malloc(sizeof(float) * c);
  nm->std = malloc(sizeof(float) * c);
  assert_non_null(nm->mean);
  assert_non_null(nm->std);
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_TEST, 8, 0);
  for (int i = 0; i < c; ++i) {
    nm->mean[i] = uniform(&r, -0.3f, 0.3f);
    nm->std[i] = uniform(&r, 0.2f, 1.5f);
  }
}

/* Partial-area mask of a conv layer: input map m is all ones, all zeros or random 0/1 by
 * pattern[m % strlen(pattern)] = '1', '0' or 'x'. */
static void set_area(nest_layer *l, const char *pattern, uint64_t seed) {
  float *msk = NULL;
  for (int k = 0; k < l->nbuffers; ++k)
    if (!strcmp(l->buffer[k].name, "area")) msk = l->buf[k];
  assert_non_null(msk);
  const int oc = l->hp.out_c, c = l->in.c;
  const size_t pq = (size_t)l->out.h * l->out.w, np = strlen(pattern);
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_TEST, 9, 0);
  for (int o = 0; o < oc; ++o)
    for (int m = 0; m < c; ++m)
      for (size_t j = 0; j < pq; ++j) {
        const char p = pattern[m % np];
        msk[((size_t)o * c + m) * pq + j] = p == '1' ? 1.0f : p == '0' ? 0.0f
                                                       : (float)(nest_rng_uniform(&r) < 0.6f);
      }
}

/* Raw inputs: pixel values 0..255 (images, scale 1/255) or N(1, 3^2) features; and nest's
 * input, (raw * scale - mean) / std as data.h defines it. */
static void make_inputs(const nest_net *net, const nest_norm *nm, float scale, int pixels,
                        uint64_t seed, float *raw, float *x) {
  const nest_shape s = net->in_shape;
  const size_t hw = (size_t)s.h * s.w, d = nest_shape_size(s);
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_TEST, 10, 0);
  for (size_t i = 0; i < (size_t)ROWS * d; ++i)
    raw[i] = pixels ? (float)nest_rng_below(&r, 256) : 1.0f + 3.0f * nest_rng_normal(&r);
  for (int n = 0; n < ROWS; ++n)
    for (size_t j = 0; j < d; ++j) {
      const size_t c = j / hw, k = (size_t)n * d + j;
      float v = raw[k] * (scale != 0.0f ? scale : 1.0f);
      x[k] = nm ? (v - nm->mean[c]) / nm->std[c] : v;
    }
}

/* python3-onnx's checker on the file at path: valid, opset 13, nest's IR version, and every
 * substring of ops (NULL-terminated) in its summary. */
static void check_file(const char *name, const char *path, const char *const *ops) {
  char out[65536];
  int rc = onnx_test_check(path, out, sizeof out);
  if (rc == 77) {
    printf("SKIP (checker): %s", out);
    return;
  }
  if (rc != 0) fail_msg("%s: the ONNX checker rejects the file: %s", name, out);
  assert_non_null(strstr(out, "\"opset\": {\"ai.onnx\": 13}"));
  char ir[64];
  snprintf(ir, sizeof ir, "\"ir_version\": %d", (int)ONNX__VERSION__IR_VERSION);
  assert_non_null(strstr(out, ir));
  for (int i = 0; ops && ops[i]; ++i)
    if (!strstr(out, ops[i])) fail_msg("%s: no %s in the graph: %s", name, ops[i], out);
}

/* ONNX Runtime on the raw rows raw [ROWS, dims...] (ndims 1: tabular) against nest's forward
 * pass on x, nest's input for the same rows: every logit within TOL. Skips when ONNX Runtime
 * cannot be installed. */
static void ort_compare(const char *name, const char *path, nest_net *net, const float *raw,
                        const float *x, int ndims, const int *dims) {
  char why[1024];
  if (!onnx_test_ort_ready(why, sizeof why)) {
    printf("SKIP (ONNX Runtime): %s\n", why);
    skip();
  }
  float *ort = nest_test_falloc((size_t)ROWS * net->nclasses);
  char err[8192];
  if (onnx_test_ort_run(path, raw, ROWS, ndims, dims, 10, ort, net->nclasses, err,
                        sizeof err) != 0)
    fail_msg("%s: ONNX Runtime failed: %s", name, err);
  nest_ctx ctx = {.n = ROWS, .train = 0, .nthreads = 1};
  const float *logits = NULL;
  assert_ok(nest_net_forward(net, &ctx, x, &logits));
  const double diff = onnx_test_max_abs_diff(ort, logits, (size_t)ROWS * net->nclasses);
  double big = 0.0;
  for (int i = 0; i < ROWS * net->nclasses; ++i) big = fmax(big, fabs(logits[i]));
  printf("%s: ONNX Runtime vs nest: max |logit difference| %.3g (largest |logit| %.3g)\n", name,
         diff, big);
  assert_true(big > 0.1); /* a net whose logits vanish would compare nothing */
  assert_true(diff <= TOL);
  free(ort);
}

/* Export net (with norm / scale), check the file, run it with ONNX Runtime on raw inputs and
 * compare with nest's forward pass. ops: substrings the checker's op list must contain. */
static void export_and_compare(const char *name, nest_net *net, const nest_norm *nm, float scale,
                               int pixels, const char *const *ops) {
  const nest_shape s = net->in_shape;
  const size_t d = nest_shape_size(s);
  nest_onnx_meta meta = {.norm = nm, .input_scale = scale};
  char path[1024];
  snprintf(path, sizeof path, "%s/%s.onnx", nest_test_tmpdir(), name);
  assert_ok(nest_onnx_write(net, &meta, path));
  check_file(name, path, ops);
  float *raw = nest_test_falloc((size_t)ROWS * d), *x = nest_test_falloc((size_t)ROWS * d);
  make_inputs(net, nm, scale, pixels, 42, raw, x);
  const int tab = nest_onnx_input_is_tabular(net);
  const int dims[3] = {s.c, s.h, s.w};
  ort_compare(name, path, net, raw, x, tab ? 1 : 3, dims);
  free(raw);
  free(x);
}

/* The model nest_onnx_encode writes, read back with protobuf-c (onnx__model_proto__free_unpacked
 * it). */
static Onnx__ModelProto *encode_unpack(const nest_net *net, const nest_onnx_meta *meta) {
  uint8_t *buf = NULL;
  size_t len = 0;
  assert_ok(nest_onnx_encode(net, meta, &buf, &len));
  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, buf);
  assert_non_null(m);
  free(buf);
  return m;
}

/* ---- every layer kind ------------------------------------------------------------------------ */

static void test_tabular_mlp(void **state) {
  /* [N, 13] features, per-feature normalisation; batch norm on [N, D]; pruned weights */
  const nest_layer_spec specs[] = {
      {NEST_LAYER_DENSE, "fc1", {.units = 16}},  {NEST_LAYER_BATCHNORM, "fc1.bn", {0}},
      {NEST_LAYER_RELU, "fc1.relu", {0}},        {NEST_LAYER_DROPOUT, "fc1.drop", {.rate = 0.5f}},
      {NEST_LAYER_DENSE, "fc2", {.units = 9}},   {NEST_LAYER_RELU, "fc2.relu", {0}},
      {NEST_LAYER_DENSE, "fc3", {.units = 5}},
  };
  nest_net *net = make_net(specs, 7, (nest_shape){13, 1, 1}, 5, 0.5, 1);
  nest_norm nm;
  random_norm(&nm, 13, 1);
  const char *ops[] = {"\"input\": [\"N\", 13]", "\"logits\": [\"N\", 5]", "\"Sub\"", "\"Div\"",
                       "\"Gemm\"", "\"BatchNormalization\"", "\"nest.input_layout\": \"NF\"",
                       "per_feature", NULL};
  export_and_compare("mlp", net, &nm, 0.0f, 0, ops);
  nest_norm_free(&nm);
  nest_net_destroy(&net);
}

static void test_cnn(void **state) {
  /* images 0..255 scaled by 1/255, per-channel normalisation; padded / strided conv and pool */
  const nest_layer_spec specs[] = {
      {NEST_LAYER_CONV2D, "conv1", {.out_c = 6, .kh = 3, .pad = 1}},
      {NEST_LAYER_BATCHNORM, "conv1.bn", {.eps = 1e-3f}},
      {NEST_LAYER_RELU, "conv1.relu", {0}},
      {NEST_LAYER_MAXPOOL, "pool1", {.kh = 2}},
      {NEST_LAYER_CONV2D, "conv2", {.out_c = 8, .kh = 3, .kw = 2, .stride = 2, .pad = 1}},
      {NEST_LAYER_RELU, "conv2.relu", {0}},
      {NEST_LAYER_MAXPOOL, "pool2", {.kh = 3, .stride = 2, .pad = 1}},
      {NEST_LAYER_DENSE, "fc1", {.units = 10}},
      {NEST_LAYER_RELU, "fc1.relu", {0}},
      {NEST_LAYER_DROPOUT, "fc1.drop", {.rate = 0.3f}},
      {NEST_LAYER_DENSE, "fc2", {.units = 4}},
  };
  nest_net *net = make_net(specs, 11, (nest_shape){3, 12, 12}, 4, 0.6, 2);
  nest_norm nm;
  random_norm(&nm, 3, 2);
  const char *ops[] = {"\"input\": [\"N\", 3, 12, 12]", "\"Mul\"", "\"Conv\"", "\"MaxPool\"",
                       "\"Flatten\"", "\"Relu\"", "\"BatchNormalization\"", "per_channel", NULL};
  export_and_compare("cnn", net, &nm, 1.0f / 255.0f, 1, ops);
  nest_norm_free(&nm);
  nest_net_destroy(&net);
}

static void test_partial_area(void **state) {
  /* conv1: maps all ones / all zeros / mixed (plain Conv + Gather + grouped Conv + ReduceSum);
   * conv2: every map mixed (no plain part, no Gather); both with pruned kernels */
  const nest_layer_spec specs[] = {
      {NEST_LAYER_CONV2D, "conv1", {.out_c = 6, .kh = 3, .area = 1}},
      {NEST_LAYER_RELU, "conv1.relu", {0}},
      {NEST_LAYER_MAXPOOL, "pool1", {.kh = 2}},
      {NEST_LAYER_CONV2D, "conv2", {.out_c = 5, .kh = 3, .pad = 1, .area = 1}},
      {NEST_LAYER_RELU, "conv2.relu", {0}},
      {NEST_LAYER_DENSE, "fc", {.units = 3}},
  };
  nest_net *net = make_net(specs, 6, (nest_shape){5, 10, 10}, 3, 0.7, 3);
  set_area(net->layers[0], "10x", 3);
  set_area(net->layers[3], "x", 4);
  nest_norm nm;
  random_norm(&nm, 5, 3);
  const char *ops[] = {"\"Gather\"", "\"ReduceSum\"", "\"Add\"", "\"Reshape\"", NULL};
  export_and_compare("area", net, &nm, 1.0f / 255.0f, 1, ops);

  /* The structure of the decomposition: conv1's maps by "10x" are ones, zeros, mixed, ones,
   * zeros: one mixed map (a grouped Conv of group 1, i.e. no group attribute, behind a Gather);
   * conv2's 6 maps are all mixed: one Conv of group 6. */
  Onnx__ModelProto *m = encode_unpack(net, NULL);
  int nred = 0, ngroup = 0, group = 0, ngather = 0;
  for (size_t i = 0; i < m->graph->n_node; ++i) {
    const Onnx__NodeProto *n = m->graph->node[i];
    nred += !strcmp(n->op_type, "ReduceSum");
    ngather += !strcmp(n->op_type, "Gather");
    for (size_t a = 0; a < n->n_attribute; ++a)
      if (!strcmp(n->attribute[a]->name, "group")) {
        ++ngroup;
        group = (int)n->attribute[a]->i;
      }
  }
  assert_int_equal(ngather, 1);
  assert_int_equal(ngroup, 1);
  assert_int_equal(group, 6);
  assert_int_equal(nred, 2);
  onnx__model_proto__free_unpacked(m, NULL);
  nest_norm_free(&nm);
  nest_net_destroy(&net);
}

static void test_area_all_ones(void **state) {
  /* an all-ones area mask is a plain convolution: one Conv, no decomposition */
  const nest_layer_spec specs[] = {
      {NEST_LAYER_CONV2D, "conv1", {.out_c = 4, .kh = 3, .area = 1}},
      {NEST_LAYER_RELU, "conv1.relu", {0}},
      {NEST_LAYER_DENSE, "fc", {.units = 2}},
  };
  nest_net *net = make_net(specs, 3, (nest_shape){2, 6, 6}, 2, 1.0, 4);
  Onnx__ModelProto *m = encode_unpack(net, NULL);
  const char *want[] = {"Conv", "Relu", "Flatten", "Gemm"};
  assert_int_equal(m->graph->n_node, 4);
  for (int i = 0; i < 4; ++i) assert_string_equal(m->graph->node[i]->op_type, want[i]);
  onnx__model_proto__free_unpacked(m, NULL);
  export_and_compare("area_ones", net, NULL, 0.0f, 0, NULL);
  nest_net_destroy(&net);
}

/* Skip connections (net.h): each skip tensor a Gemm on the tensor its source layer's
 * successor reads, added to the destination's output; from the input of an MLP and from the
 * flattened features of a CNN (after the Flatten). */
static void test_skips(void **state) {
  nest_layer_spec mlp[] = {
      {NEST_LAYER_DENSE, "fc1", {.units = 12}}, {NEST_LAYER_RELU, "fc1.relu", {0}},
      {NEST_LAYER_DENSE, "fc2", {.units = 9}},  {NEST_LAYER_RELU, "fc2.relu", {0}},
      {NEST_LAYER_DENSE, "fc3", {.units = 5}},
  };
  assert_ok(nest_arch_skips(mlp, 5, "all"));
  nest_net *net = make_net(mlp, 5, (nest_shape){13, 1, 1}, 5, 0.5, 3);
  assert_int_equal(net->nskips, 3);
  nest_norm nm;
  random_norm(&nm, 13, 3);
  const char *ops[] = {"\"Gemm\"", "\"Add\"", NULL};
  export_and_compare("mlp_skips", net, &nm, 0.0f, 0, ops);
  nest_norm_free(&nm);
  nest_net_destroy(&net);
  nest_layer_spec cnn[] = {
      {NEST_LAYER_CONV2D, "conv1", {.out_c = 4, .kh = 3}}, {NEST_LAYER_RELU, "conv1.relu", {0}},
      {NEST_LAYER_MAXPOOL, "pool1", {.kh = 2}},           {NEST_LAYER_DENSE, "fc1", {.units = 8}},
      {NEST_LAYER_RELU, "fc1.relu", {0}},                 {NEST_LAYER_DENSE, "fc2", {.units = 4}},
  };
  assert_ok(nest_arch_skips(cnn, 6, "pool1>fc2"));
  net = make_net(cnn, 6, (nest_shape){2, 10, 10}, 4, 0.7, 4);
  random_norm(&nm, 2, 4);
  const char *cops[] = {"\"Conv\"", "\"Flatten\"", "\"Add\"", NULL};
  export_and_compare("cnn_skips", net, &nm, 1.0f / 255.0f, 1, cops);
  nest_norm_free(&nm);
  nest_net_destroy(&net);
}

static void test_shape_changes(void **state) {
  /* a dense layer feeding a 1x1 conv (Reshape to [N, 8, 1, 1]) that is the last layer: its
   * [N, 3, 1, 1] output is flattened into the logits; no normalisation */
  const nest_layer_spec specs[] = {
      {NEST_LAYER_DENSE, "fc1", {.units = 8}},
      {NEST_LAYER_RELU, "fc1.relu", {0}},
      {NEST_LAYER_CONV2D, "head", {.out_c = 3, .kh = 1}},
  };
  nest_net *net = make_net(specs, 3, (nest_shape){2, 6, 6}, 3, 1.0, 5);
  const char *ops[] = {"\"Reshape\"", "\"Flatten\"", "\"logits\": [\"N\", 3]", NULL};
  export_and_compare("shapes", net, NULL, 0.0f, 0, ops);
  nest_net_destroy(&net);
}

/* ---- the encoding -------------------------------------------------------------------------- */

static const Onnx__TensorProto *find_init(const Onnx__GraphProto *g, const char *name) {
  for (size_t i = 0; i < g->n_initializer; ++i)
    if (!strcmp(g->initializer[i]->name, name)) return g->initializer[i];
  return NULL;
}

static const char *find_prop(const Onnx__ModelProto *m, const char *key) {
  for (size_t i = 0; i < m->n_metadata_props; ++i)
    if (!strcmp(m->metadata_props[i]->key, key)) return m->metadata_props[i]->value;
  return NULL;
}

static void test_encoding(void **state) {
  const nest_layer_spec specs[] = {
      {NEST_LAYER_DENSE, "fc1", {.units = 7}},
      {NEST_LAYER_RELU, "fc1.relu", {0}},
      {NEST_LAYER_DENSE, "fc2", {.units = 3}},
  };
  nest_net *net = make_net(specs, 3, (nest_shape){1, 4, 4}, 3, 0.3, 6);
  nest_norm nm;
  random_norm(&nm, 1, 6);
  char *labels[] = {"B", "M \"malignant\", late", "caf\xe9"}; /* a Latin-1 byte */
  const nest_onnx_prop props[] = {{"nest.source", "run/model.h5"}};
  nest_onnx_meta meta = {.norm = &nm, .input_scale = 1.0f / 255.0f, .labels = labels,
                         .doc = "a test", .nprops = 1, .props = props};
  uint8_t *a = NULL, *b = NULL;
  size_t na = 0, nb = 0;
  assert_ok(nest_onnx_encode(net, &meta, &a, &na));
  assert_ok(nest_onnx_encode(net, &meta, &b, &nb));
  assert_int_equal(na, nb); /* the same net gives the same bytes */
  assert_memory_equal(a, b, na);

  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, na, a);
  assert_non_null(m);
  assert_int_equal(m->ir_version, ONNX__VERSION__IR_VERSION);
  assert_int_equal(m->n_opset_import, 1);
  assert_int_equal(m->opset_import[0]->version, NEST_ONNX_OPSET);
  assert_string_equal(m->producer_name, "nest");
  assert_string_equal(m->doc_string, "a test");
  const Onnx__GraphProto *g = m->graph;
  assert_string_equal(g->input[0]->name, "input");
  const Onnx__TensorShapeProto *sh = g->input[0]->type->tensor_type->shape;
  assert_int_equal(sh->n_dim, 4);
  assert_string_equal(sh->dim[0]->dim_param, "N");
  assert_int_equal(sh->dim[2]->dim_value, 4);
  assert_string_equal(g->output[0]->name, "logits");
  assert_string_equal(g->node[g->n_node - 1]->output[0], "logits");
  const char *want[] = {"Mul", "Sub", "Div", "Flatten", "Gemm", "Relu", "Gemm"};
  assert_int_equal(g->n_node, 7);
  for (int i = 0; i < 7; ++i) assert_string_equal(g->node[i]->op_type, want[i]);

  /* fc1.W: [7, 16] little-endian floats equal to the params, pruned positions exactly 0 */
  const nest_layer *fc1 = net->layers[0];
  const Onnx__TensorProto *w = find_init(g, "fc1.W");
  assert_non_null(w);
  assert_int_equal(w->n_dims, 2);
  assert_int_equal(w->dims[0], 7);
  assert_int_equal(w->dims[1], 16);
  assert_int_equal(w->raw_data.len, 4 * fc1->param[0].count);
  size_t zeros = 0;
  for (size_t j = 0; j < fc1->param[0].count; ++j) {
    const uint8_t *p = w->raw_data.data + 4 * j;
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float v;
    memcpy(&v, &u, 4);
    assert_true(v == fc1->p[0][j]);
    if (fc1->m[0][j] == 0.0f) {
      assert_true(v == 0.0f);
      ++zeros;
    }
  }
  assert_true(zeros > 0);
  const Onnx__TensorProto *mean = find_init(g, "input.mean");
  assert_non_null(mean);
  assert_int_equal(mean->n_dims, 3); /* [C, 1, 1]: broadcast over N, H, W */

  assert_string_equal(find_prop(m, "nest.format"), NEST_ONNX_FORMAT);
  assert_string_equal(find_prop(m, "nest.labels"),
                      "[\"B\", \"M \\\"malignant\\\", late\", \"caf\\u00e9\"]");
  assert_string_equal(find_prop(m, "nest.input_layout"), "NCHW");
  assert_string_equal(find_prop(m, "nest.input_shape"), "[1, 4, 4]");
  assert_string_equal(find_prop(m, "nest.normalization"), "per_channel");
  assert_string_equal(find_prop(m, "nest.source"), "run/model.h5");
  char want_w[32];
  int64_t active, total;
  nest_net_count(net, &active, &total, NULL);
  snprintf(want_w, sizeof want_w, "%lld", (long long)active);
  assert_string_equal(find_prop(m, "nest.active_weights"), want_w);
  assert_non_null(strstr(find_prop(m, "nest.arch"), "fc1 dense 7"));
  onnx__model_proto__free_unpacked(m, NULL);

  /* the checker reads the labels back as written */
  char path[1024], out[65536];
  snprintf(path, sizeof path, "%s/labels.onnx", nest_test_tmpdir());
  assert_ok(nest_onnx_write(net, &meta, path));
  int rc = onnx_test_check(path, out, sizeof out);
  if (rc == 77) {
    printf("SKIP (checker): %s", out);
  } else {
    if (rc != 0) fail_msg("checker: %s", out);
    assert_non_null(strstr(out, "LABELS [\"B\", \"M \\\"malignant\\\", late\", \"caf\\u00e9\"]"));
  }
  free(a);
  free(b);
  nest_norm_free(&nm);
  nest_net_destroy(&net);
}

/* ---- bad input ----------------------------------------------------------------------------- */

static void expect_error(nest_status got, nest_status want, const char *needle) {
  assert_int_equal(got, want);
  if (!strstr(nest_error_message(), needle))
    fail_msg("message \"%s\" does not name \"%s\"", nest_error_message(), needle);
  nest_error_clear();
}

static void test_errors(void **state) {
  const nest_layer_spec specs[] = {
      {NEST_LAYER_DENSE, "fc1", {.units = 4}},
      {NEST_LAYER_RELU, "fc1.relu", {0}},
      {NEST_LAYER_DENSE, "fc2", {.units = 2}},
  };
  nest_net *net = make_net(specs, 3, (nest_shape){3, 1, 1}, 2, 1.0, 7);
  const char *dir = nest_test_tmpdir();
  char path[1024], tmp[1100], bad_dir[1100], got[64];
  snprintf(path, sizeof path, "%s/keep.onnx", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  snprintf(bad_dir, sizeof bad_dir, "%s/no/such/dir/x.onnx", dir);
  assert_int_equal(nest_test_write_file(path, "old", 3), 0);

  nest_norm nm;
  random_norm(&nm, 2, 7); /* 2 channels for a 3-feature input */
  nest_onnx_meta meta = {.norm = &nm};
  expect_error(nest_onnx_write(net, &meta, path), NEST_ERR_ARG, "normalisation has 2");
  nest_norm_free(&nm);
  random_norm(&nm, 3, 7);
  nm.std[1] = 0.0f;
  expect_error(nest_onnx_write(net, &meta, path), NEST_ERR_ARG, "channel 1");
  nm.std[1] = 1.0f;

  char *labels[] = {"a", NULL};
  nest_onnx_meta m2 = {.labels = labels};
  expect_error(nest_onnx_write(net, &m2, path), NEST_ERR_ARG, "class 1 has no label");
  const nest_onnx_prop dup[] = {{"nest.labels", "[]"}};
  nest_onnx_meta m3 = {.nprops = 1, .props = dup};
  expect_error(nest_onnx_write(net, &m3, path), NEST_ERR_ARG, "nest.labels given twice");
  nest_onnx_meta m4 = {.input_scale = -1.0f};
  expect_error(nest_onnx_write(net, &m4, path), NEST_ERR_ARG, "input scale");

  net->layers[2]->p[1][1] = NAN;
  expect_error(nest_onnx_write(net, &meta, path), NEST_ERR_NUMERIC, "layer fc2: b");
  net->layers[2]->p[1][1] = 0.5f;

  /* none of that touched the existing file */
  nest_test_slurp(path, got, sizeof got);
  assert_string_equal(got, "old");
  assert_int_equal(access(tmp, F_OK), -1);

  expect_error(nest_onnx_write(net, &meta, bad_dir), NEST_ERR_IO, bad_dir);
  expect_error(nest_onnx_write(net, &meta, ""), NEST_ERR_ARG, "no output file");

  /* a good write replaces the file with exactly the encoded bytes, and leaves no tmp */
  assert_ok(nest_onnx_write(net, &meta, path));
  uint8_t *buf = NULL;
  size_t len = 0;
  assert_ok(nest_onnx_encode(net, &meta, &buf, &len));
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  uint8_t *disk = malloc(len + 1);
  assert_int_equal(fread(disk, 1, len + 1, f), len);
  fclose(f);
  assert_memory_equal(disk, buf, len);
  assert_int_equal(access(tmp, F_OK), -1);
  free(disk);
  free(buf);
  nest_norm_free(&nm);
  nest_net_destroy(&net);
}

/* ---- DR+SCANN: a reduction before the net ------------------------------------------------- */

#define RD 9     /* raw features */
#define RK 4     /* after the reduction: the net's input */
#define RFIT 60  /* rows the reduction is fitted on */
#define RCONST 2 /* a feature constant in the fitted rows: its scale is 0 */

/* Raw rows [n, RD]: feature i is 10 i + N(1, 3^2); feature RCONST is 5 in every row when
 * `constant` (the fitted rows), random like the others otherwise (the compared rows: it must
 * not matter). */
static void raw_rows(float *x, int n, int constant, uint64_t seed) {
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_TEST, 11, 0);
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < RD; ++i)
      x[t * RD + i] = constant && i == RCONST ? 5.0f : 10.0f * i + 1.0f + 3.0f * nest_rng_normal(&r);
}

static float init_float(const Onnx__TensorProto *t, size_t j) {
  const uint8_t *p = t->raw_data.data + 4 * j;
  const uint32_t u =
      (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
  float v;
  memcpy(&v, &u, 4);
  return v;
}

/* The reduction's part of the graph read back: nodes in nest_infer's order, the constants bit
 * for bit (componentsᵀ [d, k], a zero scale for the constant feature). */
static void check_reduce_nodes(const nest_net *net, const nest_onnx_meta *meta) {
  const nest_reduce *r = meta->reduce;
  Onnx__ModelProto *m = encode_unpack(net, meta);
  const Onnx__GraphProto *g = m->graph;
  const char *want[] = {"Mul", "Sub", "Mul", "Sub", "MatMul", "Sub", "Div", "Gemm"};
  assert_true(g->n_node >= 8);
  for (int i = 0; i < 8; ++i) assert_string_equal(g->node[i]->op_type, want[i]);
  assert_int_equal(g->input[0]->type->tensor_type->shape->dim[1]->dim_value, RD);
  const Onnx__TensorProto *ct = find_init(g, "reduce.components_t"),
                          *sc = find_init(g, "reduce.scale"), *mn = find_init(g, "reduce.min");
  assert_non_null(ct);
  assert_non_null(sc);
  assert_non_null(mn);
  assert_int_equal(ct->n_dims, 2);
  assert_int_equal(ct->dims[0], RD);
  assert_int_equal(ct->dims[1], RK);
  for (int i = 0; i < RD; ++i) {
    for (int j = 0; j < RK; ++j)
      assert_true(init_float(ct, (size_t)i * RK + j) == r->components[j * RD + i]);
    assert_true(init_float(mn, (size_t)i) == r->min[i]);
    if (i == RCONST) assert_true(init_float(sc, (size_t)i) == 0.0f);
    else assert_true(fabsf(init_float(sc, (size_t)i) * (r->max[i] - r->min[i]) - 1.0f) < 1e-6f);
  }
  onnx__model_proto__free_unpacked(m, NULL);
}

/* A reduction of kind `kind` fitted on scaled raw rows (what training reduces: raw * scale),
 * a small net on its RK outputs with a per-feature normalisation; the ONNX model takes the raw
 * [N, RD] rows. Reference: nest_infer's steps — raw * scale, nest_reduce_apply, (y - mean) /
 * std — then nest_net_forward. */
static void reduce_case(const char *name, nest_reduce_kind kind, float scale) {
  float fit[RFIT * RD], raw[ROWS * RD], scaled[ROWS * RD], y[ROWS * RK], x[ROWS * RK];
  const float sc = scale != 0.0f ? scale : 1.0f;
  raw_rows(fit, RFIT, 1, 21);
  for (int i = 0; i < RFIT * RD; ++i) fit[i] *= sc;
  const nest_reduce_opts o = {.kind = kind, .k = RK, .seed = 5};
  nest_reduce *r = NULL;
  assert_ok(nest_reduce_fit(&o, fit, RFIT, RD, NULL, RFIT, &r));
  const nest_layer_spec specs[] = {
      {NEST_LAYER_DENSE, "fc1", {.units = 7}},
      {NEST_LAYER_RELU, "fc1.relu", {0}},
      {NEST_LAYER_DENSE, "fc2", {.units = 3}},
  };
  nest_net *net = make_net(specs, 3, (nest_shape){RK, 1, 1}, 3, 1.0, 3);
  nest_norm nm;
  random_norm(&nm, RK, 3);
  const nest_onnx_meta meta = {.norm = &nm, .input_scale = scale, .reduce = r};
  check_reduce_nodes(net, &meta);
  char path[1024], in_shape[64], kind_meta[64];
  snprintf(path, sizeof path, "%s/%s.onnx", nest_test_tmpdir(), name);
  assert_ok(nest_onnx_write(net, &meta, path));
  snprintf(in_shape, sizeof in_shape, "\"input\": [\"N\", %d]", RD);
  snprintf(kind_meta, sizeof kind_meta, "\"nest.reduce\": \"%s\"", nest_reduce_kind_name(kind));
  const char *ops[] = {in_shape, "\"logits\": [\"N\", 3]", "\"MatMul\"", kind_meta,
                       "\"nest.reduce_k\": \"4\"", "\"nest.input_shape\": \"[9]\"", NULL};
  check_file(name, path, ops);
  raw_rows(raw, ROWS, 0, 22);
  for (int i = 0; i < ROWS * RD; ++i) scaled[i] = raw[i] * sc;
  assert_ok(nest_reduce_apply(r, scaled, ROWS, y));
  for (int t = 0; t < ROWS; ++t)
    for (int j = 0; j < RK; ++j) x[t * RK + j] = (y[t * RK + j] - nm.mean[j]) / nm.std[j];
  const int dims[1] = {RD};
  ort_compare(name, path, net, raw, x, 1, dims);
  nest_norm_free(&nm);
  nest_net_destroy(&net);
  nest_reduce_destroy(&r);
}

static void test_reduce_pca(void **state) { reduce_case("reduce_pca", NEST_REDUCE_PCA, 0.5f); }
static void test_reduce_gaussian(void **state) {
  reduce_case("reduce_gaussian", NEST_REDUCE_GAUSSIAN, 0.25f);
}
static void test_reduce_sparse(void **state) {
  reduce_case("reduce_sparse", NEST_REDUCE_SPARSE, 2.0f);
}

/* A reduction whose k is not the net's input, or whose arrays are not finite, is refused. */
static void test_reduce_errors(void **state) {
  float fit[RFIT * RD];
  raw_rows(fit, RFIT, 1, 23);
  const nest_reduce_opts o = {.kind = NEST_REDUCE_GAUSSIAN, .k = RK, .seed = 5};
  nest_reduce *r = NULL;
  assert_ok(nest_reduce_fit(&o, fit, RFIT, RD, NULL, RFIT, &r));
  const nest_layer_spec specs[] = {{NEST_LAYER_DENSE, "fc1", {.units = 2}}};
  nest_net *net = make_net(specs, 1, (nest_shape){RK + 1, 1, 1}, 2, 1.0, 3);
  const nest_onnx_meta meta = {.reduce = r};
  uint8_t *buf = NULL;
  size_t len = 0;
  expect_error(nest_onnx_encode(net, &meta, &buf, &len), NEST_ERR_ARG, "reduction gives 4");
  nest_net_destroy(&net);
  net = make_net(specs, 1, (nest_shape){RK, 1, 1}, 2, 1.0, 3);
  r->mean[3] = NAN;
  expect_error(nest_onnx_encode(net, &meta, &buf, &len), NEST_ERR_FORMAT, "reduce/mean[3]");
  assert_null(buf);
  nest_net_destroy(&net);
  nest_reduce_destroy(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_encoding),       cmocka_unit_test(test_errors),
      cmocka_unit_test(test_area_all_ones),  cmocka_unit_test(test_tabular_mlp),
      cmocka_unit_test(test_cnn),            cmocka_unit_test(test_partial_area),
      cmocka_unit_test(test_shape_changes),
      cmocka_unit_test(test_skips),
      cmocka_unit_test(test_reduce_pca),     cmocka_unit_test(test_reduce_gaussian),
      cmocka_unit_test(test_reduce_sparse),  cmocka_unit_test(test_reduce_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
