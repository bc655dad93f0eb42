/* test_augment_mpi.c — training with affine distortion is as exact under data parallelism as
 * training without it: two epochs (nest_trainer_epoch, so the data key comes from the epoch) on
 * P ranks give the weights and validation loss of one process, every rank holds identical
 * weights, and the distortion really changed training (the result differs from the same run
 * without augmentation). Run under mpiexec -n 1/2/4. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nest/augment.h"
#include "nest/comm.h"
#include "nest/train.h"

static nest_comm *comm;
static int P;

static nest_trainer *make(nest_comm *c, const nest_config *cfg, nest_shape shape, int n) {
  nest_dataset *ds;
  assert_int_equal(nest_dataset_synthetic(n, shape, 4, 0.5f, 77, 1, &ds), NEST_OK);
  nest_trainer *t;
  nest_status st = nest_trainer_create_with_data(cfg, c, ds, NULL, &t);
  if (st != NEST_OK) fprintf(stderr, "create: %s\n", nest_error_message());
  assert_int_equal(st, NEST_OK);
  t->quiet = 1;
  return t;
}

/* Two epochs of the "train" phase; returns the last validation evaluation. */
static nest_eval train2(nest_trainer *t) {
  nest_eval val = {0}, test;
  for (int64_t e = 0; e < 2; ++e) {
    nest_epoch_plan plan = {.phase = "train", .sched = &t->optim, .t0 = (double)e, .index = e,
                            .count = 2, .evaluate = 1};
    nest_status st = nest_trainer_epoch(t, &plan, &val, &test);
    if (st != NEST_OK) fail_msg("epoch %lld: %s", (long long)e, nest_error_message());
    assert_true(t->data_key == e); /* the epoch keyed the distortion */
  }
  return val;
}

static double max_weight_diff(const nest_net *a, const nest_net *b) {
  assert_true(a->nparams == b->nparams);
  double d = 0;
  for (size_t i = 0; i < a->nparams; ++i) d = fmax(d, fabs((double)a->params[i] - b->params[i]));
  return d;
}

static void run(const char *arch, nest_shape shape, int batchnorm) {
  nest_config cfg;
  nest_config_defaults(&cfg);
  snprintf(cfg.arch, sizeof cfg.arch, "%s", arch);
  cfg.out_dir[0] = '\0';
  cfg.run_dir[0] = '\0';
  cfg.batch = 10; /* not divisible by 4 (nor 3): ranks get unequal shares */
  cfg.batchnorm = batchnorm;
  cfg.density = 0.5;
  cfg.width = 0.3;
  cfg.lr = 0.05;
  cfg.epochs = 2;
  cfg.seed = 5;
  cfg.val_split = 0.1;
  cfg.aug_affine = 1;
  cfg.aug_rotate = 20;
  cfg.aug_translate = 2;
  const int n = 57;

  nest_comm *self;
  assert_int_equal(nest_comm_create_self(&self), NEST_OK);
  nest_trainer *par = make(comm, &cfg, shape, n);
  nest_trainer *ref = make(self, &cfg, shape, n);
  cfg.aug_affine = 0;
  nest_trainer *plain = make(self, &cfg, shape, n);
  assert_non_null(par->aug);
  assert_null(plain->aug);

  nest_eval vp = train2(par), vr = train2(ref), vn = train2(plain);

  /* P ranks with augmentation = 1 process with augmentation (fp tolerance), masks exactly. */
  double d = max_weight_diff(par->net, ref->net);
  if (d > 1e-4) fail_msg("%s: weights on %d ranks differ from 1 process by %g", arch, P, d);
  for (size_t i = 0; i < par->net->nparams; ++i)
    assert_true(par->net->masks[i] == ref->net->masks[i]);
  if (fabs(vp.loss - vr.loss) > 1e-4 * fmax(1, vr.loss))
    fail_msg("%s: validation loss on %d ranks %.8f vs 1 process %.8f", arch, P, vp.loss, vr.loss);
  assert_int_equal(nest_comm_check_same(comm, nest_net_hash(par->net, NEST_HASH_ALL),
                                        "weights and masks"),
                   NEST_OK);

  /* The distortion is not a no-op: training without it ends elsewhere, by far more than the
   * rank-count tolerance above. */
  double dn = max_weight_diff(ref->net, plain->net);
  if (!(dn > 1e-2)) fail_msg("%s: augmentation changed the weights by only %g", arch, dn);
  assert_true(vn.loss != vr.loss);

  nest_trainer_destroy(&par);
  nest_trainer_destroy(&ref);
  nest_trainer_destroy(&plain);
  nest_comm_destroy(&self);
}

static void test_conv(void **state) { run("lenet5", (nest_shape){1, 16, 16}, 1); }

static void test_mlp_rgb(void **state) { run("mlp:192-24-4", (nest_shape){3, 8, 8}, 0); }

int main(int argc, char **argv) {
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  P = nest_comm_size(comm);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conv),
      cmocka_unit_test(test_mlp_rgb),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nest_comm_destroy(&comm);
  return rc;
}
