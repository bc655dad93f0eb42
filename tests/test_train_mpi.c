/* test_train_mpi.c — data parallelism is exact: a few steps on P ranks give the loss and the
 * weights of one process running the same global batches, and every rank holds identical
 * weights and masks. Covers dense+BN+dropout and conv+pool nets, batch % P != 0, and steps that
 * distil from a teacher network (with the pruning phases' dropout override).
 * Run under mpiexec -n 1/2/4. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/comm.h"
#include "nest/prune.h"
#include "nest/rng.h"
#include "nest/shard.h"
#include "nest/train.h"

static nest_comm *comm;
static int R, P;

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

/* distill > 0: the second epoch distils (weight distill, T = 3) from the network after the
 * first, captured by nest_prune_teacher, with the dropout override at half the rate. */
static void run_equivalence(const char *arch, nest_shape shape, int batchnorm, double dropout,
                            double distill) {
  nest_config cfg;
  nest_config_defaults(&cfg);
  snprintf(cfg.arch, sizeof cfg.arch, "%s", arch);
  cfg.out_dir[0] = '\0';
  cfg.run_dir[0] = '\0';
  cfg.batch = 10; /* not divisible by 4 (nor 3): ranks get unequal shares */
  cfg.batchnorm = batchnorm;
  cfg.sync_bn = 1;
  cfg.dropout = dropout;
  cfg.density = 0.5;
  cfg.width = 0.3;
  cfg.lr = 0.05;
  cfg.seed = 5;
  cfg.val_split = 0.1;
  cfg.prune_distill = distill;
  cfg.prune_distill_temp = 3;
  const int n = 57;

  nest_comm *self;
  assert_int_equal(nest_comm_create_self(&self), NEST_OK);
  nest_trainer *par = make(comm, &cfg, shape, n);
  nest_trainer *ref = make(self, &cfg, shape, n);
  assert_true(nest_net_hash(par->net, NEST_HASH_ALL) == nest_net_hash(ref->net, NEST_HASH_ALL));

  /* Two epochs' worth of steps, crossing an epoch boundary with a short last batch. */
  const int64_t spe = par->steps_per_epoch;
  for (int64_t e = 0; e < 2; ++e) {
    if (e == 1 && distill > 0) {
      nest_trainer *both[2] = {par, ref};
      for (int k = 0; k < 2; ++k) {
        assert_int_equal(nest_prune_teacher(both[k]), NEST_OK);
        both[k]->distill = 1;
        both[k]->dropout_set = 1;
        both[k]->dropout_rate = (float)(dropout / 2);
      }
    }
    nest_shard_permute(cfg.seed, e, par->train_idx, par->n_train, par->perm);
    nest_shard_permute(cfg.seed, e, ref->train_idx, ref->n_train, ref->perm);
    for (int64_t s = 0; s < spe; ++s) {
      double lp = 0, lr_ = 0;
      int64_t cp = 0, cr = 0, np_ = 0, nr = 0;
      assert_int_equal(nest_trainer_step(par, par->perm, s, 0.05, &lp, &cp, &np_), NEST_OK);
      assert_int_equal(nest_trainer_step(ref, ref->perm, s, 0.05, &lr_, &cr, &nr), NEST_OK);
      double red[2] = {lp, (double)np_};
      assert_int_equal(nest_comm_allreduce_f64(comm, red, 2), NEST_OK);
      assert_true(red[1] == (double)nr);
      double a = red[0] / red[1], b = lr_ / (double)nr;
      if (fabs(a - b) > 1e-4 * fmax(1.0, fabs(b)))
        fail_msg("%s step %lld: loss on %d ranks %.8f vs 1 process %.8f", arch, (long long)s, P, a, b);
    }
  }
  /* Weights follow the single-process run (fp tolerance), masks exactly. */
  double maxd = 0;
  for (size_t i = 0; i < par->net->nparams; ++i) {
    maxd = fmax(maxd, fabs((double)par->net->params[i] - ref->net->params[i]));
    assert_true(par->net->masks[i] == ref->net->masks[i]);
  }
  if (maxd > 1e-4) fail_msg("%s: weights differ from 1-process run by %g", arch, maxd);
  /* Every rank holds bit-identical weights, masks and BN statistics. */
  assert_int_equal(nest_comm_check_same(comm, nest_net_hash(par->net, NEST_HASH_ALL), "weights and masks"), NEST_OK);

  /* Evaluation sharded over ranks equals the single-process evaluation. */
  nest_eval ep, er;
  assert_int_equal(nest_trainer_evaluate(par, par->train, par->val_idx, par->n_val, &ep), NEST_OK);
  assert_int_equal(nest_trainer_evaluate(ref, ref->train, ref->val_idx, ref->n_val, &er), NEST_OK);
  assert_int_equal(ep.n, er.n);
  assert_true(fabs(ep.loss - er.loss) < 1e-4 * fmax(1, er.loss));
  nest_trainer_destroy(&par);
  nest_trainer_destroy(&ref);
  nest_comm_destroy(&self);
}

static void test_mlp_bn_dropout(void **state) {
  run_equivalence("mlp:36-20-12-4", (nest_shape){1, 6, 6}, 1, 0.3, 0);
}

static void test_conv(void **state) {
  run_equivalence("lenet5", (nest_shape){1, 16, 16}, 1, 0.0, 0);
}

/* Distillation (prune.distill): the teacher's soft targets are computed per rank on its own
 * rows, so P ranks still follow one process; with the dropout override. */
static void test_distill(void **state) {
  run_equivalence("mlp:36-20-12-4", (nest_shape){1, 6, 6}, 1, 0.3, 0.7);
  run_equivalence("lenet5", (nest_shape){1, 16, 16}, 1, 0.0, 0.5);
}


/* The bucketed gradient sum (train.bucket_mb > 0: buckets summed on the communication thread
 * during backward) leaves the weights bit for bit where the fused sum (bucket_mb = 0) leaves
 * them, step after step: tiny buckets (many ranges, every layer its own) and middling ones
 * (a bucket larger than the arena takes the fused path). LeNet-5 with sync batch-norm, so the main thread calls
 * collectives in backward while the bucket thread runs. */
static void test_bucketed_steps_equal_fused(void **state) {
  nest_config cfg;
  nest_config_defaults(&cfg);
  snprintf(cfg.arch, sizeof cfg.arch, "lenet5");
  cfg.out_dir[0] = '\0';
  cfg.run_dir[0] = '\0';
  cfg.batch = 10;
  cfg.batchnorm = 1;
  cfg.sync_bn = 1;
  cfg.density = 0.5;
  cfg.width = 0.5;
  cfg.seed = 9;
  cfg.val_split = 0;
  const nest_shape shape = {1, 16, 16};
  const double mb[] = {0.0001, 0.002, 0.02};
  cfg.bucket_mb = 0;
  nest_trainer *fused = make(comm, &cfg, shape, 40);
  nest_trainer *bk[3];
  for (int k = 0; k < 3; ++k) {
    cfg.bucket_mb = mb[k];
    bk[k] = make(comm, &cfg, shape, 40);
  }
  const size_t bytes = fused->net->nparams * sizeof(float);
  nest_shard_permute(cfg.seed, 0, fused->train_idx, fused->n_train, fused->perm);
  for (int64_t s = 0; s < fused->steps_per_epoch; ++s) {
    double l = 0;
    int64_t c = 0, rows = 0;
    assert_int_equal(nest_trainer_step(fused, fused->perm, s, 0.05, &l, &c, &rows), NEST_OK);
    for (int k = 0; k < 3; ++k) {
      assert_int_equal(nest_trainer_step(bk[k], fused->perm, s, 0.05, &l, &c, &rows), NEST_OK);
      if (memcmp(bk[k]->net->grads, fused->net->grads, bytes) != 0 ||
          memcmp(bk[k]->net->params, fused->net->params, bytes) != 0)
        fail_msg("step %lld, bucket_mb %g: gradients or weights differ from the fused sum's",
                 (long long)s, mb[k]);
    }
  }
  assert_int_equal(nest_comm_check_same(comm, nest_net_hash(fused->net, NEST_HASH_ALL),
                                        "weights and masks"),
                   NEST_OK);
  for (int k = 0; k < 3; ++k) nest_trainer_destroy(&bk[k]);
  nest_trainer_destroy(&fused);
}

/* Without sync BN each rank's running statistics differ until nest_trainer_sync_buffers
 * averages them: the result must be the by-construction sum's — ((b0 + b1) + b2) + ... in rank
 * order, then / P — bit for bit on every rank (the pruning scores read the statistics as if
 * identical everywhere). Rank r's values have magnitudes 1 + 7r, so a reduction in another order
 * (MPI_Allreduce's recursive halving at 4 ranks) rounds differently in many elements. */
static void test_bn_average_by_construction(void **state) {
  nest_config cfg;
  nest_config_defaults(&cfg);
  snprintf(cfg.arch, sizeof cfg.arch, "mlp:36-200-120-4");
  cfg.out_dir[0] = '\0';
  cfg.run_dir[0] = '\0';
  cfg.batchnorm = 1;
  cfg.sync_bn = 0;
  cfg.val_split = 0;
  nest_trainer *t = make(comm, &cfg, (nest_shape){1, 6, 6}, 40);
  const size_t nb = t->net->nbuf;
  assert_true(nb >= 600);
  float *all = malloc(sizeof(float) * nb * (size_t)P), *mine = malloc(sizeof(float) * nb);
  assert_non_null(all);
  assert_non_null(mine);
  nest_rng rng;
  nest_rng_init(&rng, 17, NEST_RNG_SYNTH, (uint64_t)R, 0);
  for (size_t i = 0; i < nb; ++i) mine[i] = nest_rng_uniform(&rng) * (float)(1 + 7 * R);
  memcpy(t->net->buffers, mine, sizeof(float) * nb);
  assert_int_equal(nest_comm_allgather(comm, mine, all, sizeof(float) * nb), NEST_OK);
  assert_int_equal(nest_trainer_sync_buffers(t), NEST_OK);
  size_t differ = 0;
  for (size_t i = 0; i < nb; ++i) {
    float sum = all[i];
    for (int r = 1; r < P; ++r) sum += all[(size_t)r * nb + i];
    if (P > 1) sum /= (float)P; /* one rank: nothing to average, the values stay */
    differ += memcmp(&sum, &t->net->buffers[i], sizeof sum) != 0;
  }
  if (differ)
    fail_msg("rank %d: %zu of %zu averaged statistics differ from the rank-order sum / %d", R,
             differ, nb, P);
  assert_int_equal(nest_comm_check_same(comm, nest_net_hash(t->net, NEST_HASH_ALL), "statistics"),
                   NEST_OK);
  free(all);
  free(mine);
  nest_trainer_destroy(&t);
}

int main(int argc, char **argv) {
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  R = nest_comm_rank(comm);
  P = nest_comm_size(comm);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mlp_bn_dropout),
      cmocka_unit_test(test_conv),
      cmocka_unit_test(test_distill),
      cmocka_unit_test(test_bucketed_steps_equal_fused),
      cmocka_unit_test(test_bn_average_by_construction),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nest_comm_destroy(&comm);
  return rc;
}
