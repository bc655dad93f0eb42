/* bench_step.c — where an AlexNet / VGG-16 training step spends its time and memory; prints
 * figures, asserts nothing (docs/memory.md, docs/performance.md).
 *
 *   mpirun -n 2 build/bench_step [--model alexnet|vgg16] [--batch B] [--steps N]
 *                                [--bucket-mb 0,25] [--mem-only | --alloc-only]
 *
 * --batch is the PER-RANK batch (the global batch is B x ranks); 3x224x224 synthetic images
 * (bytes), 1000 classes, the arch's defaults otherwise. Every step goes through
 * nest_trainer_step on the same global batch. Each value of --bucket-mb (train.bucket_mb;
 * 0 = one fused gradient sum after backward) is a mode; the modes take turns step by step
 * (after one warm-up step each), so a mode is compared with the others under the same load
 * (the machine is shared). Per mode, the mean per step of: forward (+ loss), backward, the
 * wait for the gradient sum after backward (the exposed allreduce), the optimizer, the time
 * the gradient sum was in progress, and the whole step; on rank 0, and the max over ranks of
 * the step and the wait. Then the bytes summed per step and the per-rank memory: what nest
 * allocates by category and the peak RSS (getrusage ru_maxrss, max over ranks).
 * --mem-only: one forward + backward + sum + optimizer step (touching every buffer), then the
 * memory lines only; --alloc-only: the memory lines without a step (peak RSS then counts only
 * what creation touched). */
#define _GNU_SOURCE
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "nest/comm.h"
#include "nest/shard.h"
#include "nest/train.h"

void openblas_set_num_threads(int);

static nest_comm *comm;
static int rank, nranks;

static int die(const char *what) {
  if (rank == 0) fprintf(stderr, "bench_step: %s: %s\n", what, nest_error_message());
  nest_comm_destroy(&comm);
  return 1;
}

static double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

/* max over ranks */
static double rank_max(double v) {
  int64_t x = (int64_t)(v * 1e6);
  nest_comm_allreduce_max_i64(comm, &x, 1);
  return (double)x / 1e6;
}

static void memory_lines(const nest_trainer *t, int64_t nsamples, nest_shape shape) {
  const nest_net *net = t->net;
  const double arena = (double)net->nparams * sizeof(float);
  const double batchbuf = (double)t->max_local * ((double)nest_shape_size(shape) + 1000) * 4;
  const double data = (double)nsamples * (double)nest_shape_size(shape); /* bytes */
  const double nestb = 4 * arena + (double)net->nbuf * 4 + (double)net->act_bytes +
                       (double)net->dact_bytes + (double)net->ws_bytes +
                       (double)net->cache_bytes + batchbuf;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  const double rss = rank_max((double)ru.ru_maxrss * 1024.0);
  if (rank) return;
  printf("memory per rank (MiB): params %.1f, grads %.1f, mom %.1f, masks %.1f, buffers %.1f\n",
         mib(arena), mib(arena), mib(arena), mib(arena), mib((double)net->nbuf * 4));
  printf("  activations %.1f, activation gradients %.1f, workspace (shared) %.1f, layer caches "
         "%.1f, batch buffers %.1f\n",
         mib((double)net->act_bytes), mib((double)net->dact_bytes), mib((double)net->ws_bytes),
         mib((double)net->cache_bytes), mib(batchbuf));
  printf("  nest total %.1f (+ synthetic data set %.1f); peak RSS %.1f (max over ranks)\n",
         mib(nestb), mib(data), mib(rss));
}

int main(int argc, char **argv) {
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  rank = nest_comm_rank(comm);
  nranks = nest_comm_size(comm);
  const char *model = "alexnet", *modes = "0";
  int batch = 32, steps = 3, mem_only = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) model = argv[++i];
    else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) batch = atoi(argv[++i]);
    else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) steps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--bucket-mb") == 0 && i + 1 < argc) modes = argv[++i];
    else if (strcmp(argv[i], "--mem-only") == 0) mem_only = 1;
    else if (strcmp(argv[i], "--alloc-only") == 0) mem_only = 2;
    else {
      if (rank == 0)
        fprintf(stderr, "usage: bench_step [--model alexnet|vgg16] [--batch B] [--steps N] "
                        "[--bucket-mb 0,25] [--mem-only | --alloc-only]\n");
      nest_comm_destroy(&comm);
      return 2;
    }
  }
  double mode_mb[8];
  int nmodes = 0;
  {
    char list[128];
    snprintf(list, sizeof list, "%s", modes);
    for (char *m = strtok(list, ","); m && nmodes < 8; m = strtok(NULL, ","))
      mode_mb[nmodes++] = atof(m);
  }
  int threads = 1;
  const char *env = getenv("OMP_NUM_THREADS");
  if (env && atoi(env) > 0) threads = atoi(env);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);

  const nest_shape shape = {3, 224, 224};
  const int64_t nsamples = (int64_t)batch * nranks;
  nest_config c;
  nest_config_defaults(&c);
  snprintf(c.arch, sizeof c.arch, "%s", model);
  c.out_dir[0] = '\0';
  c.batch = batch * nranks;
  c.val_split = 0;
  c.threads = threads;
  nest_dataset *ds;
  if (nest_dataset_synthetic(nsamples, shape, 1000, 0.5f, 1, 1, &ds) != NEST_OK)
    return die("synthetic data");
  nest_trainer *t;
  if (nest_trainer_create_with_data(&c, comm, ds, NULL, &t) != NEST_OK) return die(model);
  t->quiet = 1;
  nest_shard_permute(c.seed, 0, t->train_idx, t->n_train, t->perm);
  if (rank == 0)
    printf("bench_step: %s, %d ranks x %d threads, per-rank batch %d; %zu parameters: %.1f MiB "
           "summed per step\n",
           model, nranks, threads, batch, t->net->nparams,
           mib((double)t->net->nparams * sizeof(float)));
  double loss = 0;
  int64_t hits = 0, rows = 0;
  if (mem_only) {
    if (mem_only == 1 && nest_trainer_step(t, t->perm, 0, 0.01, &loss, &hits, &rows) != NEST_OK) return die(model);
    memory_lines(t, nsamples, shape);
    nest_trainer_destroy(&t);
    nest_comm_destroy(&comm);
    return 0;
  }
  nest_step_times tm[8];
  memset(tm, 0, sizeof tm);
  double step_sum[8] = {0}, step_max[8] = {0}, wait_max[8] = {0};
  for (int s = 0; s < nmodes * (steps + 1); ++s) {
    const int m = s % nmodes;
    t->cfg.bucket_mb = mode_mb[m];
    nest_step_times one;
    memset(&one, 0, sizeof one);
    t->times = &one;
    nest_comm_barrier(comm);
    double t0 = nest_comm_wtime();
    if (nest_trainer_step(t, t->perm, 0, 0.01, &loss, &hits, &rows) != NEST_OK) return die(model);
    double el = nest_comm_wtime() - t0;
    t->times = NULL;
    double mx = rank_max(el), wmx = rank_max(one.wait);
    if (s < nmodes) continue; /* warm-up */
    tm[m].fwd += one.fwd, tm[m].bwd += one.bwd, tm[m].wait += one.wait, tm[m].opt += one.opt;
    tm[m].sum += one.sum, tm[m].steps++;
    step_sum[m] += el, step_max[m] += mx, wait_max[m] += wmx;
  }
  if (rank == 0) {
    printf("%9s %8s %8s %8s %8s %8s %8s | %8s %8s %7s\n", "bucket_mb", "forward", "backward",
           "wait", "optim", "sum", "step", "step max", "wait max", "exposed");
    for (int m = 0; m < nmodes; ++m) {
      const double k = (double)tm[m].steps;
      printf("%9g %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f | %8.3f %8.3f %6.1f%%\n", mode_mb[m],
             tm[m].fwd / k, tm[m].bwd / k, tm[m].wait / k, tm[m].opt / k, tm[m].sum / k,
             step_sum[m] / k, step_max[m] / k, wait_max[m] / k,
             100.0 * wait_max[m] / step_max[m]);
    }
    printf("(seconds per step, mean of %d steps per mode; wait = exposed gradient sum; exposed = "
           "wait max / step max)\n",
           steps);
  }
  memory_lines(t, nsamples, shape);
  nest_trainer_destroy(&t);
  nest_comm_destroy(&comm);
  return 0;
}
