/* test_arch.c — named architectures: layer shapes, width ratio, BN/dropout placement, errors. */
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
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
