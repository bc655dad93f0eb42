/* test_augment.c — affine distortion of training images (augment.h): transforms are a pure
 * function of (seed, data key, sample id) and lie in their ranges; the fast warp equals the
 * naive double reference; all-zero ranges are the exact identity; known transforms (integer and
 * half-pixel translation, a quarter turn) move pixels where the geometry says; results do not
 * depend on the thread count or the batch position; the fill is the normalised value of a raw
 * zero; the trainer distorts training steps only, leaves labels alone, and refuses non-image
 * data with a one-line config error. Single process (a self communicator). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/augment.h"
#include "nest/gradpass.h"
#include "nest/shard.h"
#include "nest/train.h"
#include "test_util.h"

static nest_comm *self;

static const nest_aug_ranges wide = {.rotate = 40, .scale = 0.3, .shear = 0.4, .translate = 3};
static const nest_aug_ranges defaults = {.rotate = 12, .scale = 0.1, .shear = 0.15, .translate = 2};
static const nest_aug_ranges none = {0, 0, 0, 0};

/* ---- transforms ------------------------------------------------------------------------- */

static void test_draw_deterministic(void **state) {
  nest_aug_xform a = nest_aug_draw(&defaults, 7, 3, 11), b = nest_aug_draw(&defaults, 7, 3, 11);
  assert_memory_equal(&a, &b, sizeof a);
  nest_aug_xform e = nest_aug_draw(&defaults, 7, 4, 11); /* next epoch */
  nest_aug_xform i = nest_aug_draw(&defaults, 7, 3, 12); /* next sample */
  nest_aug_xform s = nest_aug_draw(&defaults, 8, 3, 11); /* other seed */
  assert_true(a.angle != e.angle && a.tx != e.tx && a.sx != e.sx);
  assert_true(a.angle != i.angle && a.ty != i.ty && a.sy != i.sy);
  assert_true(a.angle != s.angle && a.shear != s.shear);
}

static void test_draw_ranges(void **state) {
  const double max_angle = defaults.rotate * 3.14159265358979323846 / 180.0;
  double lo[6] = {1e9, 1e9, 1e9, 1e9, 1e9, 1e9}, hi[6] = {-1e9, -1e9, -1e9, -1e9, -1e9, -1e9};
  double mean_angle = 0;
  const int n = 4000;
  for (int id = 0; id < n; ++id) {
    nest_aug_xform x = nest_aug_draw(&defaults, 1, 0, id);
    double v[6] = {x.angle / max_angle, (x.sx - 1) / defaults.scale, (x.sy - 1) / defaults.scale,
                   x.shear / defaults.shear, x.tx / defaults.translate, x.ty / defaults.translate};
    for (int k = 0; k < 6; ++k) {
      assert_true(v[k] > -1.0 - 1e-12 && v[k] < 1.0 + 1e-12);
      lo[k] = fmin(lo[k], v[k]);
      hi[k] = fmax(hi[k], v[k]);
    }
    mean_angle += v[0] / n;
  }
  /* Uniform over the whole range: 4000 draws reach within 1% of both ends (p ~ 1e-17 not). */
  for (int k = 0; k < 6; ++k) assert_true(lo[k] < -0.99 && hi[k] > 0.99);
  assert_true(fabs(mean_angle) < 0.05); /* sd of the mean: 0.58 / sqrt(4000) = 0.009 */

  /* A zero range is exactly off. */
  for (int id = 0; id < 100; ++id) {
    nest_aug_xform x = nest_aug_draw(&none, 1, 5, id);
    assert_true(x.angle == 0 && x.sx == 1 && x.sy == 1 && x.shear == 0 && x.tx == 0 && x.ty == 0);
  }
}

/* ---- the warp ------------------------------------------------------------------------------ */

static nest_augment *make_aug(const nest_aug_ranges *r, nest_shape s, uint64_t seed, int threads) {
  float fill[8];
  for (int c = 0; c < s.c; ++c) fill[c] = -0.5f - 0.25f * (float)c; /* non-zero: it must show */
  nest_augment *a;
  assert_ok(nest_augment_create(r, seed, s, fill, threads, &a));
  return a;
}

static void test_identity_exact(void **state) {
  const nest_shape shapes[] = {{1, 28, 28}, {3, 5, 7}, {2, 2, 2}};
  for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; ++k) {
    const nest_shape s = shapes[k];
    const size_t dim = nest_shape_size(s);
    const int n = 5;
    float *x = nest_test_falloc(dim * n), *x0 = nest_test_falloc(dim * n);
    nest_test_fill_normal(x, dim * n, 40 + k, 1.5f);
    memcpy(x0, x, sizeof(float) * dim * n);
    int64_t ids[5] = {0, 9, 17, 123456, 3};
    nest_augment *a = make_aug(&none, s, 9, 2);
    nest_augment_apply(a, 2, ids, n, x, 2);
    for (size_t i = 0; i < dim * n; ++i)
      if (x[i] != x0[i]) fail_msg("shape %dx%dx%d: element %zu %g -> %g", s.c, s.h, s.w, i, x0[i], x[i]);
    nest_augment_destroy(&a);
    free(x);
    free(x0);
  }
}

/* The fast path against the reference for every sample of a batch. */
static void check_reference(const nest_aug_ranges *r, nest_shape s) {
  const size_t dim = nest_shape_size(s);
  const int n = 8;
  float *x = nest_test_falloc(dim * n), *x0 = nest_test_falloc(dim * n);
  double *src = nest_test_dalloc(dim), *ref = nest_test_dalloc(dim), fill[8];
  nest_test_fill_normal(x, dim * n, 100 + (uint64_t)s.h, 1.0f);
  memcpy(x0, x, sizeof(float) * dim * n);
  int64_t ids[8];
  for (int i = 0; i < n; ++i) ids[i] = 31 * i + 5;
  nest_augment *a = make_aug(r, s, 4, 2);
  for (int c = 0; c < s.c; ++c) fill[c] = a->fill[c];
  nest_augment_apply(a, 6, ids, n, x, 2);
  double worst = 0, moved = 0;
  for (int i = 0; i < n; ++i) {
    nest_aug_xform xf = nest_aug_draw(r, 4, 6, ids[i]);
    nest_test_to_double(x0 + i * dim, src, dim);
    nest_ref_augment(&xf, s, fill, src, ref);
    worst = fmax(worst, nest_test_max_rel_diff(x + i * dim, ref, dim));
    for (size_t j = 0; j < dim; ++j) moved = fmax(moved, fabs(ref[j] - src[j]));
  }
  if (worst > 1e-5)
    fail_msg("shape %dx%dx%d, rotate %g: fast vs reference differ by %g", s.c, s.h, s.w, r->rotate, worst);
  assert_true(moved > 0.1); /* the images really were distorted */
  nest_augment_destroy(&a);
  free(x);
  free(x0);
  free(src);
  free(ref);
}

static void test_matches_reference(void **state) {
  const nest_shape shapes[] = {{1, 28, 28}, {3, 7, 9}, {2, 2, 3}, {1, 2, 2}, {1, 32, 17}};
  for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; ++k) {
    check_reference(&wide, shapes[k]);
    check_reference(&defaults, shapes[k]);
  }
  /* Large translations: most of the image reads fill. */
  const nest_aug_ranges far = {.rotate = 180, .scale = 0.9, .shear = 0.9, .translate = 40};
  check_reference(&far, (nest_shape){2, 28, 28});
}

/* A known transform through the fast path: a pure integer translation moves every pixel by
 * (tx, ty) and reads fill where the source is off the image. */
static void test_integer_translation(void **state) {
  const nest_shape s = {2, 6, 8};
  const size_t hw = 48;
  float x[96], x0[96];
  for (int i = 0; i < 96; ++i) x[i] = x0[i] = (float)(i + 1);
  nest_augment *a = make_aug(&none, s, 1, 1);
  const nest_aug_xform xf = {.angle = 0, .sx = 1, .sy = 1, .shear = 0, .tx = 2, .ty = -1};
  nest_augment_warp(a, &xf, x, 0);
  for (int c = 0; c < 2; ++c)
    for (int Y = 0; Y < 6; ++Y)
      for (int X = 0; X < 8; ++X) {
        const int sx = X - 2, sy = Y + 1; /* content moves right by 2 and up by 1 */
        const float want = (sx >= 0 && sy < 6) ? x0[c * hw + sy * 8 + sx] : a->fill[c];
        if (x[c * hw + Y * 8 + X] != want)
          fail_msg("c %d (%d, %d): %g, expected %g", c, X, Y, x[c * hw + Y * 8 + X], want);
      }
  /* Half a pixel to the left: the mean of two horizontal neighbours (bilinear), fill at the
   * right edge. */
  for (int i = 0; i < 96; ++i) x[i] = x0[i];
  const nest_aug_xform half = {.angle = 0, .sx = 1, .sy = 1, .shear = 0, .tx = -0.5, .ty = 0};
  nest_augment_warp(a, &half, x, 0);
  for (int c = 0; c < 2; ++c)
    for (int Y = 0; Y < 6; ++Y)
      for (int X = 0; X < 8; ++X) {
        const float l = x0[c * hw + Y * 8 + X], r = X + 1 < 8 ? x0[c * hw + Y * 8 + X + 1] : a->fill[c];
        assert_float_equal(x[c * hw + Y * 8 + X], 0.5f * (l + r), 1e-5);
      }
  nest_augment_destroy(&a);
}

/* A quarter turn about the centre of a square image: out(X, Y) = in(column Y, row w-1-X)
 * (angle > 0 turns content from +x towards +y, i.e. clockwise on screen with y down). */
static void test_quarter_turn(void **state) {
  const nest_shape s = {1, 5, 5};
  float x[25], x0[25];
  for (int i = 0; i < 25; ++i) x[i] = x0[i] = (float)(i * i % 17);
  nest_augment *a = make_aug(&none, s, 1, 1);
  const nest_aug_xform xf = {.angle = 3.14159265358979323846 / 2, .sx = 1, .sy = 1};
  nest_augment_warp(a, &xf, x, 0);
  for (int Y = 0; Y < 5; ++Y)
    for (int X = 0; X < 5; ++X) assert_float_equal(x[Y * 5 + X], x0[(4 - X) * 5 + Y], 1e-5);
  nest_augment_destroy(&a);
}

/* Thread count, batch position and batch composition do not change a sample's result. */
static void test_thread_and_position_independent(void **state) {
  const nest_shape s = {1, 28, 28};
  const size_t dim = 784;
  enum { N = 13 };
  float *base = nest_test_falloc(dim * N), *one = nest_test_falloc(dim * N),
        *two = nest_test_falloc(dim * N), *rev = nest_test_falloc(dim * N),
        *solo = nest_test_falloc(dim), *next = nest_test_falloc(dim * N);
  nest_test_fill_normal(base, dim * N, 77, 1.0f);
  int64_t ids[N], rids[N];
  for (int i = 0; i < N; ++i) ids[i] = 1000 + 7 * i, rids[N - 1 - i] = ids[i];
  nest_augment *a = make_aug(&defaults, s, 12, 2);
  memcpy(one, base, sizeof(float) * dim * N);
  nest_augment_apply(a, 5, ids, N, one, 1);
  memcpy(two, base, sizeof(float) * dim * N);
  nest_augment_apply(a, 5, ids, N, two, 2);
  assert_memory_equal(one, two, sizeof(float) * dim * N);
  for (int i = 0; i < N; ++i) memcpy(rev + (N - 1 - i) * dim, base + i * dim, sizeof(float) * dim);
  nest_augment_apply(a, 5, rids, N, rev, 2);
  for (int i = 0; i < N; ++i) {
    assert_memory_equal(rev + (N - 1 - i) * dim, one + i * dim, sizeof(float) * dim);
    memcpy(solo, base + i * dim, sizeof(float) * dim);
    nest_augment_apply(a, 5, &ids[i], 1, solo, 2);
    assert_memory_equal(solo, one + i * dim, sizeof(float) * dim);
  }
  /* Another data key (the next epoch) distorts every sample differently. */
  memcpy(next, base, sizeof(float) * dim * N);
  nest_augment_apply(a, 6, ids, N, next, 2);
  for (int i = 0; i < N; ++i)
    assert_true(memcmp(next + i * dim, one + i * dim, sizeof(float) * dim) != 0);
  nest_augment_destroy(&a);
  free(base), free(one), free(two), free(rev), free(solo), free(next);
}

/* ---- the trainer ----------------------------------------------------------------------------- */

static void base_config(nest_config *cfg, const char *arch) {
  nest_config_defaults(cfg);
  snprintf(cfg->arch, sizeof cfg->arch, "%s", arch);
  cfg->out_dir[0] = '\0';
  cfg->run_dir[0] = '\0';
  cfg->batch = 16;
  cfg->seed = 3;
  cfg->val_split = 0.2;
  snprintf(cfg->train, sizeof cfg->train, "synthetic"); /* validate wants a name; data is given */
}

/* The fill is what gather makes of a raw 0, bit for bit, for byte and float data. */
static void test_fill_is_normalised_zero(void **state) {
  for (int as_u8 = 0; as_u8 <= 1; ++as_u8) {
    const nest_shape s = {3, 4, 5};
    const int64_t dim = 60;
    nest_dataset *ds;
    assert_ok(nest_dataset_synthetic(30, s, 2, 0.5f, 8, as_u8, &ds));
    if (as_u8) memset(ds->u8, 0, (size_t)dim); /* sample 0: all zero */
    else memset(ds->f32, 0, sizeof(float) * (size_t)dim);
    nest_norm nm;
    assert_ok(nest_norm_compute(ds, NULL, ds->n, &nm));
    assert_ok(nest_dataset_set_norm(ds, &nm));
    nest_norm_free(&nm);
    nest_config cfg;
    base_config(&cfg, "lenet5");
    nest_augment *a;
    assert_ok(nest_augment_from_config(&cfg, ds, 1, &a));
    assert_null(a); /* augment.affine = 0: nothing to do */
    cfg.aug_affine = 1;
    assert_ok(nest_augment_from_config(&cfg, ds, 1, &a));
    assert_non_null(a);
    float x[60];
    int64_t zero = 0;
    nest_dataset_gather(ds, &zero, 1, x, NULL);
    for (int c = 0; c < 3; ++c) {
      /* Bytes centre on 128, so a raw 0 is far below the mean; floats centre near 0, but the
       * normalisation still moves a raw 0 off 0. */
      assert_true(as_u8 ? a->fill[c] < -1.0f : a->fill[c] != 0.0f);
      for (int j = 0; j < 20; ++j) assert_true(x[c * 20 + j] == a->fill[c]);
    }
    nest_augment_destroy(&a);
    nest_dataset_destroy(&ds);
  }
}

/* Real MNIST: the background of a digit is a raw 0, so the fill is the value every corner
 * pixel of a gathered image has. */
static void test_mnist_fill(void **state) {
  const char *img = nest_test_data("mnist/train-images-idx3-ubyte.gz");
  const char *lab = nest_test_data("mnist/train-labels-idx1-ubyte.gz");
  if (!img || !lab) skip();
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = img;
  o.labels_path = lab;
  o.max_samples = 256;
  nest_dataset *ds;
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  nest_norm nm;
  assert_ok(nest_norm_compute(ds, NULL, ds->n, &nm));
  assert_ok(nest_dataset_set_norm(ds, &nm));
  nest_norm_free(&nm);
  nest_config cfg;
  base_config(&cfg, "lenet5");
  cfg.aug_affine = 1;
  nest_augment *a;
  assert_ok(nest_augment_from_config(&cfg, ds, 1, &a));
  float x[784];
  for (int64_t i = 0; i < 10; ++i) {
    nest_dataset_gather(ds, &i, 1, x, NULL);
    assert_true(x[0] == a->fill[0] && x[27] == a->fill[0] && x[783] == a->fill[0]);
  }
  printf("MNIST fill (normalised raw 0): %.6f\n", (double)a->fill[0]);
  nest_augment_destroy(&a);
  nest_dataset_destroy(&ds);
}

static nest_trainer *make_trainer(const nest_config *cfg, nest_shape shape, int n) {
  nest_dataset *ds;
  assert_ok(nest_dataset_synthetic(n, shape, 3, 0.5f, 21, 1, &ds));
  nest_trainer *t = NULL;
  assert_ok(nest_trainer_create_with_data(cfg, self, ds, NULL, &t));
  t->quiet = 1;
  return t;
}

/* Training steps are distorted (exactly as nest_augment_apply distorts the gathered batch),
 * labels are not; evaluation and gradient passes see the plain data. */
static void test_trainer_hook(void **state) {
  const nest_shape s = {1, 8, 8};
  nest_config cfg;
  base_config(&cfg, "mlp:64-16-3");
  nest_trainer *plain = make_trainer(&cfg, s, 80);
  cfg.aug_affine = 1;
  cfg.aug_rotate = 30;
  nest_trainer *aug = make_trainer(&cfg, s, 80);
  assert_non_null(aug->aug);
  assert_null(plain->aug);

  /* Same initial net: evaluation and the gradient-pass loss must agree exactly. */
  nest_eval ea, ep;
  assert_ok(nest_trainer_evaluate(aug, aug->train, aug->val_idx, aug->n_val, &ea));
  assert_ok(nest_trainer_evaluate(plain, plain->train, plain->val_idx, plain->n_val, &ep));
  assert_true(ea.loss == ep.loss && ea.acc == ep.acc);
  double la, lp;
  assert_ok(nest_gradpass_loss(aug, aug->train_idx, aug->n_train, &la));
  assert_ok(nest_gradpass_loss(plain, plain->train_idx, plain->n_train, &lp));
  assert_true(la == lp);

  /* One training step under data key 3. */
  aug->data_key = plain->data_key = 3;
  nest_shard_permute(cfg.seed, 3, aug->train_idx, aug->n_train, aug->perm);
  nest_shard_permute(cfg.seed, 3, plain->train_idx, plain->n_train, plain->perm);
  double loss_a = 0, loss_p = 0;
  int64_t hits = 0, rows_a = 0, rows_p = 0;
  assert_ok(nest_trainer_step(aug, aug->perm, 1, 0.05, &loss_a, &hits, &rows_a));
  assert_ok(nest_trainer_step(plain, plain->perm, 1, 0.05, &loss_p, &hits, &rows_p));
  assert_int_equal(rows_a, 16);
  assert_memory_equal(aug->ids, plain->ids, sizeof(int64_t) * 16);
  float want[16 * 64];
  int32_t labels[16];
  nest_dataset_gather(aug->train, aug->ids, 16, want, labels);
  assert_memory_equal(plain->x, want, sizeof want); /* no augmentation: the gathered batch */
  nest_augment_apply(aug->aug, 3, aug->ids, 16, want, 1);
  assert_memory_equal(aug->x, want, sizeof want);
  assert_memory_equal(aug->y, labels, sizeof labels);
  assert_memory_equal(plain->y, labels, sizeof labels);
  assert_true(loss_a != loss_p);

  nest_trainer_destroy(&aug);
  nest_trainer_destroy(&plain);
}

/* Non-image data with augment.affine = 1: one-line NEST_ERR_CONFIG naming the key. */
static void test_not_image(void **state) {
  const nest_shape shapes[] = {{8, 1, 1}, {1, 1, 8}, {1, 8, 1}};
  for (size_t k = 0; k < 3; ++k) {
    nest_config cfg;
    base_config(&cfg, "mlp:8-4-3");
    cfg.aug_affine = 1;
    nest_dataset *ds;
    assert_ok(nest_dataset_synthetic(40, shapes[k], 3, 0.5f, 2, 0, &ds));
    nest_trainer *t = NULL;
    nest_status st = nest_trainer_create_with_data(&cfg, self, ds, NULL, &t);
    assert_int_equal(st, NEST_ERR_CONFIG);
    assert_null(t);
    const char *msg = nest_error_message();
    printf("expected error: %s\n", msg);
    assert_non_null(strstr(msg, "augment.affine"));
    assert_non_null(strstr(msg, "not images"));
    assert_null(strchr(msg, '\n'));
    nest_error_clear();
    /* Without augmentation the same data trains. */
    cfg.aug_affine = 0;
    assert_ok(nest_dataset_synthetic(40, shapes[k], 3, 0.5f, 2, 0, &ds));
    assert_ok(nest_trainer_create_with_data(&cfg, self, ds, NULL, &t));
    nest_trainer_destroy(&t);
  }
}

int main(void) {
  if (nest_comm_create_self(&self) != NEST_OK) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_draw_deterministic),
      cmocka_unit_test(test_draw_ranges),
      cmocka_unit_test(test_identity_exact),
      cmocka_unit_test(test_matches_reference),
      cmocka_unit_test(test_integer_translation),
      cmocka_unit_test(test_quarter_turn),
      cmocka_unit_test(test_thread_and_position_independent),
      cmocka_unit_test(test_fill_is_normalised_zero),
      cmocka_unit_test(test_mnist_fill),
      cmocka_unit_test(test_trainer_hook),
      cmocka_unit_test(test_not_image),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nest_comm_destroy(&self);
  return rc;
}
