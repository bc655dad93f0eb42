/* test_shards_mpi.c — training from image shards on P ranks (mpiexec -n 1/2/4):
 *  - an epoch reads every training sample exactly once across the ranks (and evaluation every
 *    validation sample once), each rank only its own rows: its bytes read are its rows' images,
 *    the set holds no image in memory, the reader one extra batch and its scratch;
 *  - each rank's batch (random crop + flip) is, bit for bit, its rows of the batch one process
 *    reads for the same step;
 *  - training with the background prefetch gives the same bits as synchronous reads, and the
 *    weights of one process (to rounding: the gradient sum adds P partials);
 *  - a set missing a shard, and a shard truncated during training, fail on every rank with the
 *    same one-line message (no rank left waiting). */
#define _DEFAULT_SOURCE /* truncate */
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

#include "nest/comm.h"
#include "nest/prefetch.h"
#include "nest/shard.h"
#include "nest/train.h"
#include "test_util.h"

#pragma GCC diagnostic ignored "-Wformat-truncation" /* test paths are short */

static nest_comm *comm;
static int P, R;
static char dir[1024];

#define NTRAIN 90
static const nest_shape STORED = {3, 20, 20};

static void config(nest_config *cfg, const char *set, int prefetch) {
  nest_config_defaults(cfg);
  snprintf(cfg->arch, sizeof cfg->arch, "lenet5");
  snprintf(cfg->train, sizeof cfg->train, "%s/%s-*.h5", dir, set);
  cfg->out_dir[0] = cfg->run_dir[0] = '\0';
  cfg->batch = 10; /* not divisible by 4 (nor 3): unequal shares */
  cfg->width = 0.3;
  cfg->density = 0.5;
  cfg->lr = 0.005;
  cfg->seed = 5;
  cfg->val_split = 0.2;
  cfg->aug_crop = 16;
  cfg->aug_flip = 1;
  cfg->prefetch = prefetch;
}

static nest_trainer *make(nest_comm *c, const nest_config *cfg) {
  nest_trainer *t = NULL;
  const nest_status st = nest_trainer_create(cfg, c, &t);
  if (st != NEST_OK) fail_msg("create: %s", nest_error_message());
  t->quiet = 1;
  return t;
}

static void epoch(nest_trainer *t, int64_t e, int evaluate) {
  nest_eval val, test;
  nest_epoch_plan plan = {.phase = "train", .sched = &t->optim, .t0 = (double)e, .index = e,
                          .count = 2, .evaluate = evaluate};
  const nest_status st = nest_trainer_epoch(t, &plan, &val, &test);
  if (st != NEST_OK) fail_msg("epoch %lld: %s", (long long)e, nest_error_message());
}

static void test_once_per_epoch(void **state) {
  nest_config cfg;
  config(&cfg, "a", 1);
  nest_trainer *t = make(comm, &cfg);
  assert_true(nest_dataset_is_sharded(t->train));
  assert_null(t->train->u8); /* labels and offsets only */
  assert_null(t->train->f32);
  assert_int_equal(t->net->in_shape.h, 16); /* the crop is the net's input */
  int32_t counts[NTRAIN] = {0};
  nest_dataset_track_reads(t->train, counts);
  nest_io_counts before, after;
  nest_dataset_io_counts(t->train, &before);
  epoch(t, 0, 1);
  nest_dataset_io_counts(t->train, &after);
  nest_dataset_track_reads(t->train, NULL);
  /* This rank read exactly its rows: its slices of every step, its share of validation. */
  int64_t mine = 0;
  for (int64_t s = 0; s < t->steps_per_epoch; ++s) {
    int64_t b;
    int c;
    nest_shard_slice(t->n_train, cfg.batch, s, R, P, &b, &c);
    mine += c;
  }
  mine += t->n_val * (R + 1) / P - t->n_val * R / P;
  const int64_t ib = (int64_t)nest_shape_size(STORED);
  assert_int_equal(after.images - before.images, mine);
  assert_int_equal(after.bytes - before.bytes, mine * ib);
  /* Across ranks: every training and validation sample exactly once. */
  double all[NTRAIN];
  for (int i = 0; i < NTRAIN; ++i) all[i] = counts[i];
  assert_ok(nest_comm_allreduce_f64(comm, all, NTRAIN));
  for (int i = 0; i < NTRAIN; ++i)
    if (all[i] != 1) fail_msg("sample %d read %g times in the epoch across %d ranks", i, all[i], P);
  /* Resident image data: the reader's second batch and its scratch, nothing else. */
  nest_prefetch_stats st;
  nest_prefetch_get_stats(t->pf, &st);
  const size_t row = nest_shape_size(t->train->shape);
  assert_int_equal(st.buffer_bytes, (size_t)(t->nthreads + 1) * (size_t)ib +
                                        (size_t)t->max_local * (row * sizeof(float) + sizeof(int32_t)));
  assert_true(st.prefetched > 0);
  assert_int_equal(st.discarded, 0);
  nest_trainer_destroy(&t);
}

/* Each rank's training batch = its rows of one process's read of the global batch. */
static void test_same_batches_as_one_process(void **state) {
  nest_config cfg;
  config(&cfg, "a", 1);
  nest_trainer *t = make(comm, &cfg);
  const size_t dim = nest_shape_size(t->train->shape), ib = nest_shape_size(STORED);
  float *all = malloc(sizeof(float) * (size_t)cfg.batch * dim);
  int32_t ally[64];
  uint8_t *scratch = malloc(ib);
  for (int64_t e = 0; e < 2; ++e) {
    t->data_key = e;
    nest_shard_permute(cfg.seed, e, t->train_idx, t->n_train, t->perm);
    for (int64_t s = 0; s < t->steps_per_epoch; ++s) {
      int64_t gb, b;
      int c;
      nest_shard_slice(t->n_train, cfg.batch, s, 0, 1, &gb, &c);
      const nest_batch_req whole = {.ds = t->train, .ids = t->perm + gb, .n = c, .train = 1, .data_key = e};
      assert_ok(nest_prefetch_read(&whole, cfg.seed, 1, 1, scratch, ib, all, ally));
      nest_shard_slice(t->n_train, cfg.batch, s, R, P, &b, &c);
      assert_ok(nest_trainer_read(t, t->train, t->perm + b, c, 1));
      if (s + 1 < t->steps_per_epoch) { /* the trainer's pattern: the next slice announced */
        int64_t nb;
        int nc;
        nest_shard_slice(t->n_train, cfg.batch, s + 1, R, P, &nb, &nc);
        nest_trainer_read_ahead(t, t->train, t->perm + nb, nc, 1);
      }
      assert_memory_equal(t->x, all + (size_t)(b - gb) * dim, sizeof(float) * (size_t)c * dim);
      assert_memory_equal(t->y, ally + (b - gb), sizeof(int32_t) * (size_t)c);
    }
  }
  free(all);
  free(scratch);
  nest_trainer_destroy(&t);
}

static void test_prefetch_same_training(void **state) {
  nest_config cfg;
  config(&cfg, "a", 1);
  nest_trainer *bg = make(comm, &cfg);
  cfg.prefetch = 0;
  nest_trainer *sync = make(comm, &cfg);
  nest_comm *self;
  assert_ok(nest_comm_create_self(&self));
  nest_trainer *one = make(self, &cfg);
  for (int64_t e = 0; e < 2; ++e) epoch(bg, e, e == 1), epoch(sync, e, e == 1), epoch(one, e, 0);
  /* the same ranks with and without the background thread: the same bits */
  assert_memory_equal(bg->net->params, sync->net->params, sizeof(float) * bg->net->nparams);
  nest_prefetch_stats st;
  nest_prefetch_get_stats(bg->pf, &st);
  assert_true(st.prefetched >= 2 * (bg->steps_per_epoch - 2)); /* a rank may get 0 rows in a short last batch: nothing to prefetch */
  nest_prefetch_get_stats(sync->pf, &st);
  assert_int_equal(st.prefetched, 0);
  /* P ranks vs one process: the same samples and crops, the gradient sum to rounding */
  double d = 0;
  for (size_t i = 0; i < bg->net->nparams; ++i)
    d = fmax(d, fabs((double)bg->net->params[i] - one->net->params[i]));
  if (d > 1e-4) fail_msg("weights on %d ranks differ from one process by %g", P, d);
  assert_ok(nest_comm_check_same(comm, nest_net_hash(bg->net, NEST_HASH_ALL), "weights"));
  nest_trainer_destroy(&bg);
  nest_trainer_destroy(&sync);
  nest_trainer_destroy(&one);
  nest_comm_destroy(&self);
}

/* The same message and code on every rank: gather rank 0's and compare. */
static void expect_same_error(nest_status st, nest_status want, const char *needle) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s", nest_error_message());
  if (st != want) fail_msg("rank %d: status %d, expected %d: %s", R, st, want, msg);
  if (!strstr(msg, needle)) fail_msg("rank %d: '%s' lacks '%s'", R, msg, needle);
  char first[512];
  memcpy(first, msg, sizeof first);
  assert_ok(nest_comm_bcast(comm, first, sizeof first, 0));
  assert_string_equal(first, msg);
}

static void test_errors_on_every_rank(void **state) {
  nest_config cfg;
  config(&cfg, "gap", 1);
  nest_trainer *t = NULL;
  expect_same_error(nest_trainer_create(&cfg, comm, &t), NEST_ERR_FORMAT, "a shard is missing");
  assert_null(t);
  /* a shard cut short after the set was opened: the step that reads it fails everywhere */
  config(&cfg, "cut", 1);
  t = make(comm, &cfg);
  char path[2048];
  snprintf(path, sizeof path, "%s/cut-00000.h5", dir);
  if (R == 0) assert_int_equal(truncate(path, 3000), 0);
  assert_ok(nest_comm_bcast(comm, path, 8, 0)); /* after the cut */
  nest_eval val, test;
  nest_epoch_plan plan = {.phase = "train", .sched = &t->optim, .t0 = 0, .index = 0, .count = 1};
  expect_same_error(nest_trainer_epoch(t, &plan, &val, &test), NEST_ERR_IO, "cut-00000.h5: truncated");
  nest_trainer_destroy(&t);
}

int main(int argc, char **argv) {
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  P = nest_comm_size(comm);
  R = nest_comm_rank(comm);
  nest_status st = NEST_OK;
  if (R == 0) { /* one directory for every rank (removed by rank 0 at exit) */
    snprintf(dir, sizeof dir, "%s", nest_test_tmpdir());
    char p[2048];
    snprintf(p, sizeof p, "%s/a", dir);
    st = nest_shards_synthetic(p, NTRAIN, STORED, 4, 25, 9, 0, NULL);
    snprintf(p, sizeof p, "%s/gap", dir);
    if (st == NEST_OK) st = nest_shards_synthetic(p, 40, STORED, 4, 10, 9, 0, NULL);
    snprintf(p, sizeof p, "%s/gap-00002.h5", dir);
    if (st == NEST_OK && unlink(p) != 0) st = NEST_ERR_IO;
    snprintf(p, sizeof p, "%s/cut", dir);
    if (st == NEST_OK) st = nest_shards_synthetic(p, NTRAIN, STORED, 4, 45, 9, 0, NULL);
  }
  if (nest_comm_agree(comm, st) != NEST_OK || nest_comm_bcast(comm, dir, sizeof dir, 0) != NEST_OK) {
    fprintf(stderr, "setup: %s\n", nest_error_message());
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_once_per_epoch),
      cmocka_unit_test(test_same_batches_as_one_process),
      cmocka_unit_test(test_prefetch_same_training),
      cmocka_unit_test(test_errors_on_every_rank),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nest_comm_destroy(&comm);
  return rc;
}
