/* bench_train.c — training throughput of nest on this machine; prints figures, asserts nothing.
 *
 *   mpirun -n 2 build/bench_train [--models lenet300,lenet5,alexnet] [--steps N]
 *
 * For each model: images/s of full training steps (forward, loss, backward, fused gradient
 * allreduce, masked SGD) on synthetic data, the GFLOP/s that represents (2 x MACs for forward,
 * weight gradient and — except the first layer — input gradient), and that rate as a fraction
 * of what OpenBLAS sgemm reaches on a 2048^3 multiply with the same ranks and threads (every
 * rank multiplies at once; rates summed). LeNets: MNIST-shaped 1x28x28, batch 128; AlexNet:
 * 3x224x224, 1000 classes, batch 128. docs/performance.md records the figures. */
#define _GNU_SOURCE
#include <cblas.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nest/comm.h"
#include "nest/shard.h"
#include "nest/train.h"

void openblas_set_num_threads(int);

static nest_comm *comm;
static int rank, nranks, threads;
static double peak; /* sgemm GFLOP/s, all ranks */

static int die(const char *what) {
  if (rank == 0) fprintf(stderr, "bench_train: %s: %s\n", what, nest_error_message());
  nest_comm_destroy(&comm);
  return 1;
}

/* Rate of one big sgemm on every rank at once, summed over ranks (GFLOP/s). */
static double sgemm_rate(void) {
  const int n = 2048;
  float *a, *b, *c;
  if (nest_malloc_aligned((void **)&a, sizeof(float) * n * n, "a") != NEST_OK ||
      nest_malloc_aligned((void **)&b, sizeof(float) * n * n, "b") != NEST_OK ||
      nest_malloc_aligned((void **)&c, sizeof(float) * n * n, "c") != NEST_OK)
    return 0;
  for (long i = 0; i < (long)n * n; ++i) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
  nest_comm_barrier(comm);
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    double t0 = nest_comm_wtime();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double t = nest_comm_wtime() - t0;
    if (t < best) best = t;
  }
  nest_free_aligned(a);
  nest_free_aligned(b);
  nest_free_aligned(c);
  double rate[1] = {2.0 * n * n * (double)n / best / 1e9};
  nest_comm_allreduce_f64(comm, rate, 1);
  return rate[0];
}

/* Training FLOPs per image: per dense/conv layer 2 x MACs for forward and for the weight
 * gradient, plus the input gradient for every layer but the first. */
static double train_flops(const nest_net *net) {
  double f = 0;
  int first = 1;
  for (int i = 0; i < net->nlayers; ++i) {
    const nest_layer *l = net->layers[i];
    if (l->kind != NEST_LAYER_DENSE && l->kind != NEST_LAYER_CONV2D) continue;
    double macs = (double)l->param[0].count * l->out.h * l->out.w;
    f += 2 * macs * (first ? 2 : 3);
    first = 0;
  }
  return f;
}

static int bench(const char *arch, nest_shape shape, int classes, int batch, int steps) {
  nest_config c;
  nest_config_defaults(&c);
  snprintf(c.arch, sizeof c.arch, "%s", arch);
  c.out_dir[0] = '\0';
  c.batch = batch;
  c.val_split = 0;
  const int warm = 2;
  nest_dataset *ds;
  if (nest_dataset_synthetic((int64_t)batch * (steps + warm), shape, classes, 0.5f, 1, 1, &ds) !=
      NEST_OK)
    return die("synthetic data");
  nest_trainer *t;
  if (nest_trainer_create_with_data(&c, comm, ds, NULL, &t) != NEST_OK) return die(arch);
  t->quiet = 1;
  nest_shard_permute(c.seed, 0, t->train_idx, t->n_train, t->perm);
  double loss = 0;
  int64_t hits = 0, rows = 0;
  for (int s = 0; s < warm; ++s)
    if (nest_trainer_step(t, t->perm, s, 0.01, &loss, &hits, &rows) != NEST_OK) return die(arch);
  nest_comm_barrier(comm);
  double t0 = nest_comm_wtime();
  for (int s = warm; s < warm + steps; ++s)
    if (nest_trainer_step(t, t->perm, s, 0.01, &loss, &hits, &rows) != NEST_OK) return die(arch);
  nest_comm_barrier(comm);
  double el = nest_comm_wtime() - t0;
  double ips = (double)batch * steps / el;
  double gf = train_flops(t->net) / 1e9;
  if (rank == 0)
    printf("%-10s %5d  %9.1f  %9.4f  %8.1f  %6.1f%%\n", arch, batch, ips, gf, ips * gf,
           100.0 * ips * gf / peak);
  fflush(stdout);
  nest_trainer_destroy(&t);
  return 0;
}

int main(int argc, char **argv) {
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  rank = nest_comm_rank(comm);
  nranks = nest_comm_size(comm);
  const char *models = "lenet300,lenet5,alexnet";
  int steps = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--models") == 0 && i + 1 < argc) models = argv[++i];
    else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) steps = atoi(argv[++i]);
    else {
      if (rank == 0) fprintf(stderr, "usage: bench_train [--models a,b,c] [--steps N]\n");
      nest_comm_destroy(&comm);
      return 2;
    }
  }
  cpu_set_t set;
  threads = 1;
  if (sched_getaffinity(0, sizeof set, &set) == 0) threads = CPU_COUNT(&set);
  long cap = sysconf(_SC_NPROCESSORS_ONLN) / nest_comm_local_size(comm);
  if (threads > cap) threads = cap > 0 ? (int)cap : 1;
  const char *env = getenv("OMP_NUM_THREADS");
  if (env && atoi(env) > 0) threads = atoi(env);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  peak = sgemm_rate();
  if (rank == 0) {
    printf("bench_train: %d ranks x %d threads; OpenBLAS sgemm 2048^3 on all ranks at once: "
           "%.1f GFLOP/s\n",
           nranks, threads, peak);
    printf("%-10s %5s  %9s  %9s  %8s  %7s\n", "model", "batch", "images/s", "GFLOP/img",
           "GFLOP/s", "of sgemm");
  }
  char list[256];
  snprintf(list, sizeof list, "%s", models);
  for (char *m = strtok(list, ","); m; m = strtok(NULL, ",")) {
    int rc = 0;
    if (strcmp(m, "lenet300") == 0)
      rc = bench("lenet300", (nest_shape){1, 28, 28}, 10, 128, steps ? steps : 200);
    else if (strcmp(m, "lenet5") == 0)
      rc = bench("lenet5", (nest_shape){1, 28, 28}, 10, 128, steps ? steps : 60);
    else if (strcmp(m, "alexnet") == 0)
      rc = bench("alexnet", (nest_shape){3, 224, 224}, 1000, 128, steps ? steps : 3);
    else if (rank == 0)
      fprintf(stderr, "bench_train: unknown model '%s' (lenet300, lenet5, alexnet)\n", m);
    if (rc) return rc;
  }
  nest_comm_destroy(&comm);
  return 0;
}
