/* bench_augment.c — what affine distortion costs next to training; prints figures, asserts
 * nothing.
 *
 *   mpirun -n 2 build/bench_augment [--steps N] [--rounds R]
 *
 * On synthetic MNIST-shaped data (1x28x28 bytes, 10 classes) with a global batch of 128, in one
 * run: (a) the wall time of distorting one global batch (every rank distorts its slice of the
 * batch with the default ranges, as the trainer's hook does: nest_augment_apply on the gathered,
 * normalised rows), (b) the wall time of one LeNet-5 training step (gather, forward, loss,
 * backward, gradient sum, masked SGD) without augmentation, and (c) the same step with
 * augment.affine = 1. Each figure is the best of R rounds of N batches (the machine is shared;
 * rounds interleave the three measurements). The ratio a / b is the figure docs/performance.md
 * records (aim: below 20%). */
#define _GNU_SOURCE
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nest/augment.h"
#include "nest/comm.h"
#include "nest/shard.h"
#include "nest/train.h"

void openblas_set_num_threads(int);

static nest_comm *comm;
static int rank;

static int die(const char *what) {
  if (rank == 0) fprintf(stderr, "bench_augment: %s: %s\n", what, nest_error_message());
  nest_comm_destroy(&comm);
  return 1;
}

static nest_status make(int affine, int batch, int64_t n, nest_trainer **out) {
  nest_config c;
  nest_config_defaults(&c);
  snprintf(c.arch, sizeof c.arch, "lenet5");
  c.out_dir[0] = '\0';
  c.batch = batch;
  c.val_split = 0;
  c.aug_affine = affine;
  nest_dataset *ds;
  NEST_CALL(nest_dataset_synthetic(n, (nest_shape){1, 28, 28}, 10, 0.5f, 1, 1, &ds));
  NEST_CALL(nest_trainer_create_with_data(&c, comm, ds, NULL, out));
  (*out)->quiet = 1;
  nest_shard_permute(c.seed, 0, (*out)->train_idx, (*out)->n_train, (*out)->perm);
  (*out)->data_key = 0;
  return NEST_OK;
}

/* Wall time per step of steps [first, first + steps) of the permutation (all ranks). */
static nest_status time_steps(nest_trainer *t, int first, int steps, double *per_step) {
  double loss = 0;
  int64_t hits = 0, rows = 0;
  nest_comm_barrier(comm);
  double t0 = nest_comm_wtime();
  for (int s = first; s < first + steps; ++s)
    NEST_CALL(nest_trainer_step(t, t->perm, s % t->steps_per_epoch, 0.01, &loss, &hits, &rows));
  nest_comm_barrier(comm);
  *per_step = (nest_comm_wtime() - t0) / steps;
  return NEST_OK;
}

int main(int argc, char **argv) {
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  rank = nest_comm_rank(comm);
  const int nranks = nest_comm_size(comm);
  int steps = 40, rounds = 5;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) steps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) rounds = atoi(argv[++i]);
    else {
      if (rank == 0) fprintf(stderr, "usage: bench_augment [--steps N] [--rounds R]\n");
      nest_comm_destroy(&comm);
      return 2;
    }
  }
  if (steps < 1) steps = 1;
  if (rounds < 1) rounds = 1;
  /* Threads as bench_train and nest_mpi choose them: the affinity mask, capped at cores per
   * rank on the node; OMP_NUM_THREADS overrides. */
  cpu_set_t set;
  int threads = 1;
  if (sched_getaffinity(0, sizeof set, &set) == 0) threads = CPU_COUNT(&set);
  long cap = sysconf(_SC_NPROCESSORS_ONLN) / nest_comm_local_size(comm);
  if (threads > cap) threads = cap > 0 ? (int)cap : 1;
  const char *env = getenv("OMP_NUM_THREADS");
  if (env && atoi(env) > 0) threads = atoi(env);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);

  const int batch = 128, warm = 2;
  const int64_t n = (int64_t)batch * (steps + warm);
  nest_trainer *plain = NULL, *aug = NULL;
  if (make(0, batch, n, &plain) != NEST_OK) return die("lenet5 trainer");
  if (make(1, batch, n, &aug) != NEST_OK) return die("lenet5 trainer with augmentation");
  double dummy;
  if (time_steps(plain, 0, warm, &dummy) != NEST_OK || time_steps(aug, 0, warm, &dummy) != NEST_OK)
    return die("warm-up");

  /* This rank's slice of the first global batch, gathered and normalised once; distorted in
   * place again and again under a new data key each time (same work as fresh rows). */
  int64_t begin;
  int count;
  nest_shard_slice(aug->n_train, batch, 0, rank, nranks, &begin, &count);
  int64_t *ids = malloc(sizeof(int64_t) * (size_t)(count > 0 ? count : 1));
  float *x = malloc(sizeof(float) * 784 * (size_t)(count > 0 ? count : 1));
  if (!ids || !x) return die("allocation");
  for (int i = 0; i < count; ++i) ids[i] = aug->perm[begin + i];
  nest_dataset_gather(aug->train, ids, count, x, NULL);

  double best_aug = 1e30, best_plain = 1e30, best_with = 1e30;
  int64_t key = 1;
  for (int r = 0; r < rounds; ++r) {
    nest_comm_barrier(comm);
    double t0 = nest_comm_wtime();
    for (int s = 0; s < steps; ++s) nest_augment_apply(aug->aug, key++, ids, count, x, aug->nthreads);
    nest_comm_barrier(comm);
    double ta = (nest_comm_wtime() - t0) / steps, tp, tw;
    if (time_steps(plain, warm, steps, &tp) != NEST_OK) return die("steps");
    if (time_steps(aug, warm, steps, &tw) != NEST_OK) return die("steps with augmentation");
    if (ta < best_aug) best_aug = ta;
    if (tp < best_plain) best_plain = tp;
    if (tw < best_with) best_with = tw;
  }
  if (rank == 0) {
    printf("bench_augment: %d ranks x %d threads; LeNet-5, 1x28x28, global batch %d; best of %d "
           "rounds x %d batches\n",
           nranks, threads, batch, rounds, steps);
    printf("augment one global batch (default ranges)  %8.3f ms\n", 1e3 * best_aug);
    printf("LeNet-5 training step                       %8.3f ms\n", 1e3 * best_plain);
    printf("LeNet-5 training step, augment.affine = 1   %8.3f ms\n", 1e3 * best_with);
    printf("augment / step                              %8.1f %%   (aim < 20%%)\n",
           100.0 * best_aug / best_plain);
    fflush(stdout);
  }
  free(ids);
  free(x);
  nest_trainer_destroy(&plain);
  nest_trainer_destroy(&aug);
  nest_comm_destroy(&comm);
  return 0;
}
