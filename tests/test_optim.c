/* test_optim.c — the masked SGD update against a scalar reference, and the LR schedules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>

#include "nest/arch.h"
#include "nest/optim.h"
#include "test_util.h"

/* Scalar reference twin of one update. */
static void ref_update(double *w, double *v, double g, double m, double lr, double mu, double wd,
                       int nesterov) {
  double gi = g + wd * *w;
  double vi = mu * *v + gi;
  double upd = nesterov ? gi + mu * vi : vi;
  *w = m != 0.0 ? *w - lr * upd : 0.0;
  *v = m != 0.0 ? vi : 0.0;
}

/* mlp:6-4-3 at density 0.5 (seed 4): a net with dormant positions in every weight tensor. */
static nest_net *make_net(void) {
  nest_layer_spec *specs;
  int n;
  nest_arch_opts ao = {.width = 1.0};
  assert_int_equal(nest_arch_build("mlp:6-4-3", &ao, (nest_shape){6, 1, 1}, 3, &specs, &n), NEST_OK);
  nest_net *net;
  assert_int_equal(nest_net_create(specs, n, (nest_shape){6, 1, 1}, 3, 2, 1, &net), NEST_OK);
  free(specs);
  assert_int_equal(nest_net_init(net, 4, 0.5, -1), NEST_OK);
  return net;
}

static void check_update(int nesterov) {
  nest_net *net = make_net();
  size_t P = net->nparams;
  double *w = malloc(P * sizeof(double)), *v = malloc(P * sizeof(double));
  for (size_t i = 0; i < P; ++i) w[i] = net->params[i], v[i] = 0;
  nest_optim o = {.lr = 0.05, .momentum = 0.9, .weight_decay = 0.01, .nesterov = nesterov};
  for (int step = 0; step < 4; ++step) {
    nest_test_fill_normal(net->grads, P, 100 + step, 1.0f);
    for (int t = 0; t < net->ntensors; ++t) {
      const nest_param *p = net->tensors[t].param;
      for (size_t i = p->offset; i < p->offset + p->count; ++i)
        ref_update(&w[i], &v[i], net->grads[i], net->masks[i], o.lr, o.momentum,
                   p->decay ? o.weight_decay : 0.0, nesterov);
    }
    nest_optim_step(net, &o, o.lr, 1);
  }
  for (int t = 0; t < net->ntensors; ++t) {
    const nest_param *p = net->tensors[t].param;
    for (size_t i = p->offset; i < p->offset + p->count; ++i) {
      assert_true(fabs(net->params[i] - w[i]) < 1e-5);
      assert_true(fabs(net->mom[i] - v[i]) < 1e-5);
      if (net->masks[i] == 0.0f) assert_true(net->params[i] == 0.0f);
    }
  }
  free(w);
  free(v);
  nest_net_destroy(&net);
}

/* Dormant positions: the update writes +0.0 (not -0.0 from a negative product), and a NaN or
 * Inf gradient there cannot reach the weight or the momentum. */
static void test_dormant_stays_zero(void **state) {
  nest_net *net = make_net();
  const nest_param *W = net->tensors[0].param;
  size_t dormant = 0;
  for (size_t i = W->offset; i < W->offset + W->count; ++i) {
    if (net->masks[i] != 0.0f) continue;
    /* a positive gradient gives lr*g > 0, so (0 - lr*g) * 0 would be -0.0 */
    net->grads[i] = (dormant % 3 == 0) ? INFINITY : (dormant % 3 == 1) ? NAN : 2.0f;
    ++dormant;
  }
  assert_true(dormant > 3);
  nest_optim o = {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = 1};
  nest_optim_step(net, &o, o.lr, 1);
  for (size_t i = W->offset; i < W->offset + W->count; ++i) {
    if (net->masks[i] != 0.0f) continue;
    assert_true(net->params[i] == 0.0f && !signbit(net->params[i]));
    assert_true(net->mom[i] == 0.0f && !signbit(net->mom[i]));
  }
  /* apply_masks is a select too */
  for (size_t i = W->offset; i < W->offset + W->count; ++i)
    if (net->masks[i] == 0.0f) net->params[i] = -NAN;
  nest_net_apply_masks(net);
  for (size_t i = W->offset; i < W->offset + W->count; ++i)
    if (net->masks[i] == 0.0f) assert_true(net->params[i] == 0.0f && !signbit(net->params[i]));
  nest_net_destroy(&net);
}

static void test_momentum(void **state) { check_update(0); }
static void test_nesterov(void **state) { check_update(1); }

static void test_schedules(void **state) {
  nest_optim o = {.lr = 0.1, .schedule = NEST_SCHED_COSINE, .min_lr = 0.001, .total_epochs = 10};
  assert_true(fabs(nest_optim_lr(&o, 0) - 0.1) < 1e-12);
  assert_true(fabs(nest_optim_lr(&o, 5) - (0.001 + 0.5 * 0.099)) < 1e-12);
  assert_true(fabs(nest_optim_lr(&o, 10) - 0.001) < 1e-12);
  o.warmup_epochs = 2;
  assert_true(fabs(nest_optim_lr(&o, 1) - 0.5 * (0.001 + 0.5 * 0.099 * (1 + cos(3.141592653589793 * 0.1)))) < 1e-12);
  nest_optim s = {.lr = 1.0, .schedule = NEST_SCHED_STEP, .step_epochs = 3, .step_gamma = 0.5};
  assert_true(nest_optim_lr(&s, 2.9) == 1.0);
  assert_true(nest_optim_lr(&s, 3.0) == 0.5);
  assert_true(nest_optim_lr(&s, 6.5) == 0.25);
  nest_optim c = {.lr = 0.2, .schedule = NEST_SCHED_CONST};
  assert_true(nest_optim_lr(&c, 123) == 0.2);
  assert_int_equal(nest_schedule_parse("cosine"), NEST_SCHED_COSINE);
  assert_int_equal(nest_schedule_parse("linear"), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dormant_stays_zero),
      cmocka_unit_test(test_momentum),
      cmocka_unit_test(test_nesterov),
      cmocka_unit_test(test_schedules),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
