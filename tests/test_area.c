/* test_area.c — partial-area scores (area.h): nest_conv2d_area_accumulate against its
 * double-precision reference twin (nest_ref_conv2d_area_accumulate), bit-identical results
 * for 1, 2 and 3 threads, the link to the forward pass, and argument errors. */
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nest/area.h"
#include "nest/kernels.h"
#include "nest/layer.h"
#include "nest/rng.h"
#include "test_util.h"

static nest_layer *make_conv(nest_shape in, nest_layer_hparams hp, int max_batch) {
  nest_layer *l = NULL;
  assert_ok(nest_layer_create(&nest_conv2d_ops, "conv", in, &hp, max_batch, 2, &l));
  assert_ok(nest_layer_bind_standalone(l));
  return l;
}

static size_t area_count(const nest_layer *l) {
  return (size_t)l->hp.out_c * l->in.c * l->out.h * l->out.w;
}

/* Random x and W (a third of the weights dormant, i.e. 0); acc starts at `start` (the call
 * adds); compare with the reference and across thread counts. */
static void accumulate_case(nest_shape in, nest_layer_hparams hp, int n) {
  nest_layer *l = make_conv(in, hp, n);
  const size_t X = nest_shape_size(l->in) * n, WN = l->param[0].count, A = area_count(l);
  float *x = nest_test_falloc(X);
  nest_test_fill_normal(x, X, 21, 1.0f);
  nest_test_fill_normal(l->p[0], WN, 22, 0.3f);
  for (size_t i = 0; i < WN; i += 3) l->p[0][i] = 0.0f;
  double *xd = nest_test_dalloc(X), *Wd = nest_test_dalloc(WN), *want = nest_test_dalloc(A);
  nest_test_to_double(x, xd, X);
  nest_test_to_double(l->p[0], Wd, WN);
  for (size_t i = 0; i < A; ++i) want[i] = 0.25 * (double)(i % 5);
  const nest_conv_geom g = nest_conv_geom_make(in.c, in.h, in.w, l->hp.kh, l->hp.kw, l->hp.stride,
                                               l->hp.pad);
  nest_ref_conv2d_area_accumulate(&g, l->hp.out_c, n, xd, Wd, want);

  double *got[3];
  const int threads[3] = {1, 2, 3};
  for (int t = 0; t < 3; ++t) {
    got[t] = nest_test_dalloc(A);
    for (size_t i = 0; i < A; ++i) got[t][i] = 0.25 * (double)(i % 5);
    omp_set_num_threads(threads[t]);
    assert_ok(nest_conv2d_area_accumulate(l, x, n, got[t]));
  }
  omp_set_num_threads(2);
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < A; ++i) {
    num = fmax(num, fabs(got[0][i] - want[i]));
    den = fmax(den, fabs(want[i]));
  }
  if (!(num / den < 1e-5))
    fail_msg("conv %dx%dx%d k%d s%d p%d oc%d n%d: scores differ from the reference by %.3g", in.c,
             in.h, in.w, l->hp.kh, l->hp.stride, l->hp.pad, l->hp.out_c, n, num / den);
  /* the scores are not trivially zero */
  assert_true(den > 1.0);
  /* the thread count does not change a bit */
  assert_memory_equal(got[0], got[1], sizeof(double) * A);
  assert_memory_equal(got[0], got[2], sizeof(double) * A);
  for (int t = 0; t < 3; ++t) free(got[t]);
  free(x), free(xd), free(Wd), free(want);
  nest_layer_destroy(&l);
}

static void test_accumulate_vs_reference(void **state) {
  (void)state;
  accumulate_case((nest_shape){3, 7, 5}, (nest_layer_hparams){.out_c = 4, .kh = 3, .kw = 2}, 5);
  accumulate_case((nest_shape){2, 9, 8},
                  (nest_layer_hparams){.out_c = 11, .kh = 3, .stride = 2, .pad = 1}, 3);
  accumulate_case((nest_shape){1, 28, 28}, (nest_layer_hparams){.out_c = 20, .kh = 5}, 4);
  accumulate_case((nest_shape){20, 12, 12}, (nest_layer_hparams){.out_c = 50, .kh = 5}, 3);
  /* row chunks (11x11 kernel rows over the column budget), stride 4 */
  accumulate_case((nest_shape){2, 227, 227}, (nest_layer_hparams){.out_c = 3, .kh = 11, .stride = 4},
                  2);
}

/* With x >= 0 and W >= 0 every contribution is non-negative, so for one sample
 * sum_m acc[o, m, p, q] = y[o, p, q] - b[o] of the layer's own forward pass (area all ones). */
static void test_accumulate_matches_forward(void **state) {
  (void)state;
  nest_layer *l = make_conv((nest_shape){6, 10, 9},
                            (nest_layer_hparams){.out_c = 5, .kh = 3, .pad = 1, .area = 1}, 1);
  const size_t X = nest_shape_size(l->in), Y = nest_shape_size(l->out), A = area_count(l);
  assert_int_equal(l->buffer[0].count, A);
  float *x = nest_test_falloc(X), *y = nest_test_falloc(Y);
  nest_test_fill_normal(x, X, 31, 1.0f);
  nest_test_fill_normal(l->p[0], l->param[0].count, 32, 0.5f);
  for (size_t i = 0; i < X; ++i) x[i] = fabsf(x[i]);
  for (size_t i = 0; i < l->param[0].count; ++i) l->p[0][i] = fabsf(l->p[0][i]);
  for (int o = 0; o < 5; ++o) l->p[1][o] = 0.1f * (float)o;
  nest_ctx ctx = {.n = 1, .train = 1, .nthreads = 2};
  assert_ok(l->ops->forward(l, &ctx, x, y));
  double *acc = nest_test_dalloc(A);
  assert_ok(nest_conv2d_area_accumulate(l, x, 1, acc));
  const size_t plane = (size_t)l->out.h * l->out.w;
  for (int o = 0; o < 5; ++o)
    for (size_t j = 0; j < plane; ++j) {
      double s = 0;
      for (int m = 0; m < 6; ++m) s += acc[((size_t)o * 6 + m) * plane + j];
      const double want = (double)y[o * plane + j] - l->p[1][o];
      if (!(fabs(s - want) < 1e-5 * fmax(1.0, fabs(want))))
        fail_msg("o %d j %zu: sum of scores %.9g but y - b = %.9g", o, j, s, want);
    }
  free(x), free(y), free(acc);
  nest_layer_destroy(&l);
}

static void test_accumulate_errors(void **state) {
  (void)state;
  nest_layer *l = NULL;
  assert_ok(nest_layer_create(&nest_dense_ops, "fc9", (nest_shape){4, 1, 1},
                              &(nest_layer_hparams){.units = 3}, 2, 1, &l));
  assert_ok(nest_layer_bind_standalone(l));
  float x[8] = {0};
  double acc[12] = {0};
  nest_error_clear();
  assert_int_equal(nest_conv2d_area_accumulate(l, x, 2, acc), NEST_ERR_ARG);
  assert_non_null(strstr(nest_error_message(), "fc9"));
  nest_layer_destroy(&l);
  l = make_conv((nest_shape){1, 4, 4}, (nest_layer_hparams){.out_c = 1, .kh = 3}, 2);
  assert_int_equal(nest_conv2d_area_accumulate(l, x, -1, acc), NEST_ERR_ARG);
  assert_int_equal(nest_conv2d_area_accumulate(l, NULL, 2, acc), NEST_ERR_ARG);
  /* n = 0 adds nothing */
  acc[0] = 7.0;
  assert_ok(nest_conv2d_area_accumulate(l, NULL, 0, NULL));
  assert_ok(nest_conv2d_area_accumulate(l, x, 0, acc));
  assert_true(acc[0] == 7.0);
  nest_error_clear();
  nest_layer_destroy(&l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_accumulate_vs_reference),
      cmocka_unit_test(test_accumulate_matches_forward),
      cmocka_unit_test(test_accumulate_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
