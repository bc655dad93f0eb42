/* test_arch.c — named architectures: layer shapes, width ratio, per-layer widths (the NeST
 * AlexNet and VGG-16 seeds), BN/dropout placement, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "nest/arch.h"
#include "nest/net.h"

static nest_net *build(const char *arch, nest_arch_opts o, nest_shape in, int classes) {
  nest_layer_spec *specs;
  int n;
  assert_int_equal(nest_arch_build(arch, &o, in, classes, &specs, &n), NEST_OK);
  nest_net *net;
  assert_int_equal(nest_net_create(specs, n, in, classes, 2, 1, &net), NEST_OK);
  free(specs);
  return net;
}

static void expect_out(nest_net *net, const char *name, int c, int h, int w) {
  nest_layer *l = nest_net_find_layer(net, name);
  assert_non_null(l);
  assert_int_equal(l->out.c, c);
  assert_int_equal(l->out.h, h);
  assert_int_equal(l->out.w, w);
}

static void test_lenet300(void **state) {
  nest_net *net = build("lenet300", (nest_arch_opts){.width = 1.0}, (nest_shape){1, 28, 28}, 10);
  expect_out(net, "fc1", 300, 1, 1);
  expect_out(net, "fc2", 100, 1, 1);
  expect_out(net, "fc3", 10, 1, 1);
  int64_t aw, tw;
  nest_net_count(net, &aw, &tw, NULL);
  assert_int_equal(tw, 784 * 300 + 300 * 100 + 100 * 10);
  nest_net_destroy(&net);
  /* Width ratio scales hidden widths only. */
  net = build("lenet300", (nest_arch_opts){.width = 0.5}, (nest_shape){1, 28, 28}, 10);
  expect_out(net, "fc1", 150, 1, 1);
  expect_out(net, "fc2", 50, 1, 1);
  expect_out(net, "fc3", 10, 1, 1);
  nest_net_destroy(&net);
}

static void test_lenet5(void **state) {
  nest_net *net = build("lenet5", (nest_arch_opts){.width = 1.0}, (nest_shape){1, 28, 28}, 10);
  expect_out(net, "conv1", 20, 24, 24);
  expect_out(net, "pool1", 20, 12, 12);
  expect_out(net, "conv2", 50, 8, 8);
  expect_out(net, "pool2", 50, 4, 4);
  expect_out(net, "fc1", 500, 1, 1);
  expect_out(net, "fc2", 10, 1, 1);
  int64_t aw, tw;
  nest_net_count(net, &aw, &tw, NULL);
  assert_int_equal(tw, 20 * 25 + 50 * 20 * 25 + 800 * 500 + 500 * 10);
  /* Caffe LeNet: no ReLU after the convolutions. */
  assert_null(nest_net_find_layer(net, "conv1.relu"));
  assert_non_null(nest_net_find_layer(net, "fc1.relu"));
  nest_net_destroy(&net);
}

static void test_alexnet_shapes(void **state) {
  /* Width 0.25 keeps memory small; spatial shapes do not depend on width. */
  nest_net *net = build("alexnet", (nest_arch_opts){.width = 0.25, .batchnorm = 1, .dropout = 0.5},
                        (nest_shape){3, 224, 224}, 1000);
  expect_out(net, "conv1", 24, 55, 55);
  expect_out(net, "pool1", 24, 27, 27);
  expect_out(net, "conv2", 64, 27, 27);
  expect_out(net, "pool2", 64, 13, 13);
  expect_out(net, "conv5", 64, 13, 13);
  expect_out(net, "pool5", 64, 6, 6);
  expect_out(net, "fc6", 1024, 1, 1);
  expect_out(net, "fc8", 1000, 1, 1);
  assert_non_null(nest_net_find_layer(net, "conv3.bn"));
  assert_non_null(nest_net_find_layer(net, "fc7.drop"));
  assert_null(nest_net_find_layer(net, "fc8.drop"));
  nest_net_destroy(&net);
}

static void test_vgg16_shapes(void **state) {
  nest_net *net = build("vgg16", (nest_arch_opts){.width = 0.125}, (nest_shape){3, 32, 32}, 10);
  expect_out(net, "conv1", 8, 32, 32);
  expect_out(net, "conv13", 64, 2, 2);
  expect_out(net, "pool5", 64, 1, 1);
  expect_out(net, "fc16", 10, 1, 1);
  nest_net_destroy(&net);
}

/* The NeST AlexNet seed (paper §4.2, ALGORITHMS.md §1): conv 60,140,240,210,160 feature maps,
 * fc 3200,1600, then the classes; 227x227 crops (conv1 11x11/4 pad 2: 56x56). */
static const char *const ALEXNET_SEED = "60,140,240,210,160,3200,1600";

static void test_alexnet_seed(void **state) {
  nest_net *net = build("alexnet", (nest_arch_opts){.width = 1.0, .widths = ALEXNET_SEED},
                        (nest_shape){3, 227, 227}, 1000);
  expect_out(net, "conv1", 60, 56, 56);
  expect_out(net, "pool1", 60, 27, 27);
  expect_out(net, "conv2", 140, 27, 27);
  expect_out(net, "pool2", 140, 13, 13);
  expect_out(net, "conv3", 240, 13, 13);
  expect_out(net, "conv4", 210, 13, 13);
  expect_out(net, "conv5", 160, 13, 13);
  expect_out(net, "pool5", 160, 6, 6);
  expect_out(net, "fc6", 3200, 1, 1);
  expect_out(net, "fc7", 1600, 1, 1);
  expect_out(net, "fc8", 1000, 1, 1);
  /* weights (out x in x kh x kw), by hand */
  static const struct {
    const char *name;
    int64_t weights;
  } w[] = {{"conv1", 60 * 3 * 11 * 11},    {"conv2", 140 * 60 * 5 * 5},
           {"conv3", 240 * 140 * 3 * 3},   {"conv4", 210 * 240 * 3 * 3},
           {"conv5", 160 * 210 * 3 * 3},   {"fc6", 3200LL * 160 * 6 * 6},
           {"fc7", 1600 * 3200},           {"fc8", 1000 * 1600}};
  int64_t sum = 0;
  for (size_t i = 0; i < sizeof w / sizeof w[0]; ++i) {
    nest_layer *l = nest_net_find_layer(net, w[i].name);
    assert_non_null(l);
    assert_int_equal((int64_t)l->param[0].count, w[i].weights);
    sum += w[i].weights;
  }
  int64_t aw, tw;
  nest_net_count(net, &aw, &tw, NULL);
  assert_int_equal(tw, sum);
  assert_int_equal(tw, 26442180); /* x d = 0.30: 7.9M active before repair; the paper: 8.4M */
  nest_net_destroy(&net);

  /* The ratio applies on top of the per-layer widths (the synthetic variant: 0.25); 224x224
   * crops give the same 6x6 at pool5. */
  net = build("alexnet", (nest_arch_opts){.width = 0.25, .widths = ALEXNET_SEED},
              (nest_shape){3, 224, 224}, 10);
  expect_out(net, "conv1", 15, 55, 55);
  expect_out(net, "conv2", 35, 27, 27);
  expect_out(net, "conv3", 60, 13, 13);
  expect_out(net, "conv4", 53, 13, 13); /* 52.5 rounds away from zero */
  expect_out(net, "conv5", 40, 13, 13);
  expect_out(net, "pool5", 40, 6, 6);
  expect_out(net, "fc6", 800, 1, 1);
  expect_out(net, "fc7", 400, 1, 1);
  expect_out(net, "fc8", 10, 1, 1);
  nest_net_destroy(&net);
}

static void test_vgg16_seed_and_widths_errors(void **state) {
  /* The NeST VGG-16 seed: r = 0.75 on the 13 convs, fc 3200, 1600 (paper §4.2). At 32x32 the
   * five pools leave 1x1, so fc14 has 384 inputs and the net stays small. */
  static const char *const seed = "48,48,96,96,192,192,192,384,384,384,384,384,384,3200,1600";
  assert_int_equal(nest_arch_hidden_layers("vgg16"), 15);
  nest_net *net = build("vgg16", (nest_arch_opts){.width = 1.0, .widths = seed},
                        (nest_shape){3, 32, 32}, 100);
  expect_out(net, "conv1", 48, 32, 32);
  expect_out(net, "conv3", 96, 16, 16);
  expect_out(net, "conv7", 192, 8, 8);
  expect_out(net, "conv13", 384, 2, 2);
  expect_out(net, "fc14", 3200, 1, 1);
  expect_out(net, "fc15", 1600, 1, 1);
  expect_out(net, "fc16", 100, 1, 1);
  assert_int_equal((int64_t)nest_net_find_layer(net, "fc14")->param[0].count, 3200 * 384);
  nest_net_destroy(&net);
  /* mlp and lenet5 take widths too */
  net = build("mlp:20-9-9-4", (nest_arch_opts){.width = 2.0, .widths = "3,5"}, (nest_shape){20, 1, 1}, 4);
  expect_out(net, "fc1", 6, 1, 1);
  expect_out(net, "fc2", 10, 1, 1);
  expect_out(net, "fc3", 4, 1, 1);
  nest_net_destroy(&net);
  assert_int_equal(nest_arch_hidden_layers("lenet5"), 3);
  assert_int_equal(nest_arch_hidden_layers("lenet300"), 2);
  assert_int_equal(nest_arch_hidden_layers("alexnet"), 7);
  assert_int_equal(nest_arch_hidden_layers("mlp:784-10"), 0);
  assert_int_equal(nest_arch_hidden_layers("resnet"), -1);
  /* A list of the wrong length or syntax: NEST_ERR_CONFIG naming model.widths. */
  nest_layer_spec *specs = NULL;
  int n = 0;
  nest_arch_opts o = {.width = 1.0, .widths = "60,140,240,210,160,3200"};
  assert_int_equal(nest_arch_build("alexnet", &o, (nest_shape){3, 224, 224}, 10, &specs, &n),
                   NEST_ERR_CONFIG);
  assert_non_null(strstr(nest_error_message(), "6 entries"));
  o.widths = "60,,140";
  assert_int_equal(nest_arch_build("lenet5", &o, (nest_shape){1, 28, 28}, 10, &specs, &n),
                   NEST_ERR_CONFIG);
  assert_non_null(strstr(nest_error_message(), "model.widths"));
  assert_null(specs);
  int v[4], nv = -1;
  assert_int_equal(nest_arch_parse_widths("1,65536", v, 4, &nv), NEST_OK);
  assert_int_equal(nv, 2);
  assert_int_equal(v[1], 65536);
  /* the one comma-list parser: blanks around entries are fine */
  assert_int_equal(nest_arch_parse_widths(" 300 , 100", v, 4, &nv), NEST_OK);
  assert_int_equal(nv, 2);
  assert_int_equal(v[0], 300);
  assert_int_equal(v[1], 100);
  assert_int_equal(nest_arch_parse_widths("", v, 4, &nv), NEST_OK);
  assert_int_equal(nv, 0);
  static const char *const bad[] = {"1,65537", "1,2,3,4,5", "0,1", "1,,2", "1,", "3e2", "-1",
                                    "1 2", "+1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    assert_int_equal(nest_arch_parse_widths(bad[i], v, 4, &nv), NEST_ERR_CONFIG);
    assert_non_null(strstr(nest_error_message(), "model.widths"));
  }
}

/* model.widths = 300, 100 (blanks after the comma) builds lenet300 like 300,100. */
static void test_widths_with_blanks(void **state) {
  (void)state;
  nest_net *a = build("lenet300", (nest_arch_opts){.width = 1.0, .widths = "300, 100"},
                      (nest_shape){1, 28, 28}, 10);
  expect_out(a, "fc1", 300, 1, 1);
  expect_out(a, "fc2", 100, 1, 1);
  nest_net_destroy(&a);
  a = build("lenet5", (nest_arch_opts){.width = 1.0, .widths = " 7 ,\t9, 11 "},
            (nest_shape){1, 28, 28}, 10);
  expect_out(a, "conv1", 7, 24, 24);
  expect_out(a, "conv2", 9, 8, 8);
  expect_out(a, "fc1", 11, 1, 1);
  nest_net_destroy(&a);
}

/* The report: --set model.widths=65536,65536 --set model.width=64 ended in "out of memory
 * allocating 70382098841664 bytes for parameter arena", naming no key. The size limit refuses
 * it before anything is allocated, naming the keys. */
static void expect_too_big(const char *arch, nest_arch_opts o, nest_shape in, int classes,
                           const char *const *words) {
  nest_layer_spec *specs = NULL;
  int n = 0;
  if (nest_arch_build(arch, &o, in, classes, &specs, &n) != NEST_ERR_CONFIG)
    fail_msg("%s: built (%d specs) or failed otherwise: %s", arch, n, nest_error_message());
  assert_null(specs);
  for (; *words; ++words)
    if (!strstr(nest_error_message(), *words))
      fail_msg("%s: '%s' lacks '%s'", arch, nest_error_message(), *words);
}

static void test_size_limit(void **state) {
  (void)state;
  const nest_shape mnist = {1, 28, 28};
  /* the reported case: fc2 alone has 4194304 x 4194304 weights */
  expect_too_big("lenet300", (nest_arch_opts){.width = 64, .widths = "65536,65536"}, mnist, 10,
                 (const char *const[]){"model.widths = 65536,65536", "model.width = 64",
                                        "model.arch = lenet300", "fc2", "2147483647", NULL});
  assert_int_equal(nest_arch_check("lenet300", &(nest_arch_opts){.width = 64,
                                                                  .widths = "65536,65536"}),
                   NEST_ERR_CONFIG);
  assert_non_null(strstr(nest_error_message(), "at least"));
  /* an mlp's own sizes: fc1 takes 784 inputs and the hidden layer is what is too wide */
  expect_too_big("mlp:784-3000000-10", (nest_arch_opts){.width = 1}, mnist, 10,
                 (const char *const[]){"model.arch = mlp:784-3000000-10", "fc1", NULL});
  /* data-independent part fine (the first layer's input is counted as 1), the data's 784
   * inputs make it too big: only nest_arch_build can tell */
  assert_int_equal(nest_arch_check("mlp:784-3000000-10", &(nest_arch_opts){.width = 1}), NEST_OK);
  /* a width ratio that makes a hidden layer wider than an int can count */
  expect_too_big("mlp:784-100000000-10", (nest_arch_opts){.width = 64}, mnist, 10,
                 (const char *const[]){"model.width = 64", NULL});
  /* conv nets: the flattened input of fc6 depends on the image size */
  expect_too_big("alexnet", (nest_arch_opts){.width = 16}, (nest_shape){3, 224, 224}, 1000,
                 (const char *const[]){"model.width = 16", "fc", NULL});
  /* just under the limit builds (nothing is allocated by nest_arch_build) */
  nest_layer_spec *specs = NULL;
  int n = 0;
  assert_int_equal(nest_arch_build("mlp:784-2700000-10", &(nest_arch_opts){.width = 1}, mnist,
                                   10, &specs, &n),
                   NEST_OK);
  free(specs);
  /* an mlp of more sizes than a spec list holds is a config error, not an abort */
  char big[512] = "mlp:4";
  for (int i = 0; i < 70; ++i) strcat(big, "-4");
  assert_int_equal(nest_arch_check(big, &(nest_arch_opts){.width = 1, .batchnorm = 1,
                                                           .dropout = 0.5}),
                   NEST_ERR_CONFIG);
  assert_non_null(strstr(nest_error_message(), "model.arch"));
}

static void test_errors(void **state) {
  nest_layer_spec *specs = NULL;
  int n = 0;
  nest_arch_opts o = {.width = 1.0};
  assert_int_equal(nest_arch_build("resnet", &o, (nest_shape){1, 28, 28}, 10, &specs, &n), NEST_ERR_CONFIG);
  assert_non_null(strstr(nest_error_message(), "resnet"));
  assert_int_equal(nest_arch_build("mlp:100-10", &o, (nest_shape){1, 28, 28}, 10, &specs, &n), NEST_ERR_CONFIG);
  assert_non_null(strstr(nest_error_message(), "784"));
  assert_int_equal(nest_arch_build("mlp:784-7", &o, (nest_shape){1, 28, 28}, 10, &specs, &n), NEST_ERR_CONFIG);
  assert_int_equal(nest_arch_build("mlp:784-x-10", &o, (nest_shape){1, 28, 28}, 10, &specs, &n), NEST_ERR_CONFIG);
  assert_null(specs);
  /* AlexNet on MNIST-sized input: the layer that runs out of pixels is named. */
  assert_int_equal(nest_arch_build("alexnet", &o, (nest_shape){1, 28, 28}, 10, &specs, &n), NEST_OK);
  nest_net *net = NULL;
  assert_int_equal(nest_net_create(specs, n, (nest_shape){1, 28, 28}, 10, 2, 1, &net), NEST_ERR_CONFIG);
  assert_null(net);
  assert_non_null(strstr(nest_error_message(), "pool"));
  free(specs);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lenet300),
      cmocka_unit_test(test_lenet5),
      cmocka_unit_test(test_alexnet_shapes),
      cmocka_unit_test(test_vgg16_shapes),
      cmocka_unit_test(test_alexnet_seed),
      cmocka_unit_test(test_vgg16_seed_and_widths_errors),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_widths_with_blanks),
      cmocka_unit_test(test_size_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
