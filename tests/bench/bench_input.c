/* bench_input.c — does an AlexNet step wait on its input? Prints figures, asserts nothing.
 *
 *   build/bench_input [--dir DIR] [--batches 32,64] [--steps N] [--keep]
 *
 * Writes synthetic 3x256x256 image shards to DIR (default: a fresh directory under /tmp),
 * then for each per-rank batch b trains AlexNet (model.arch = alexnet, augment.crop = 224,
 * augment.flip = 1, 100 classes) for N + 1 steps on one rank, twice: with synchronous reads
 * (data.prefetch = 0) and with the background prefetch (data.prefetch = 1). Per step (the
 * first, always synchronous, left out) it reports the step time, the time the trainer spent
 * inside the batch reader ("wait": synchronous reads, pread + crop/flip/convert; with prefetch,
 * waiting for the background read), the time spent reading in any thread ("read": hidden behind
 * compute with prefetch), the compute time (step minus wait) and wait / step in percent — the
 * issue's goal is < 5% with prefetch. Before each run the shard files are evicted from the
 * page cache with posix_fadvise(DONTNEED) and mincore() tells how much of them was still
 * cached: the figure printed says whether the reads came from the disk or from memory. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <glob.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nest/comm.h"
#include "nest/prefetch.h"
#include "nest/shard.h"
#include "nest/train.h"

static nest_comm *comm;

static int die(const char *what) {
  fprintf(stderr, "bench_input: %s: %s\n", what, nest_error_message());
  nest_comm_destroy(&comm);
  return 1;
}

/* Evict the files of `pattern` from the page cache; return the share of their pages that
 * were still resident afterwards (0 = every read goes to the disk). */
static double evict(const char *pattern) {
  glob_t g;
  if (glob(pattern, 0, NULL, &g) != 0) return -1;
  long page = sysconf(_SC_PAGESIZE);
  double resident = 0, total = 0;
  for (size_t i = 0; i < g.gl_pathc; ++i) {
    int fd = open(g.gl_pathv[i], O_RDONLY);
    if (fd < 0) continue;
    struct stat sb;
    fstat(fd, &sb);
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    void *m = sb.st_size > 0 ? mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (m != MAP_FAILED) {
      size_t np = ((size_t)sb.st_size + (size_t)page - 1) / (size_t)page;
      unsigned char *v = malloc(np);
      if (v && mincore(m, (size_t)sb.st_size, v) == 0)
        for (size_t k = 0; k < np; ++k) resident += v[k] & 1;
      total += (double)np;
      free(v);
      munmap(m, (size_t)sb.st_size);
    }
    close(fd);
  }
  globfree(&g);
  return total > 0 ? resident / total : -1;
}

typedef struct {
  double step, input, read, cached; /* seconds per step: all, caller waiting, reading (any thread) */
} result;

static int run(const char *pattern, int batch, int steps, int prefetch, result *r) {
  nest_config cfg;
  nest_config_defaults(&cfg);
  snprintf(cfg.arch, sizeof cfg.arch, "alexnet");
  snprintf(cfg.train, sizeof cfg.train, "%s", pattern);
  cfg.out_dir[0] = cfg.run_dir[0] = '\0';
  cfg.batch = batch;
  cfg.val_split = 0;
  cfg.aug_crop = 224;
  cfg.aug_flip = 1;
  cfg.prefetch = prefetch;
  cfg.lr = 0.001;
  nest_trainer *t = NULL;
  if (nest_trainer_create(&cfg, comm, &t) != NEST_OK) return die("trainer");
  t->quiet = 1;
  r->cached = evict(pattern);
  nest_shard_permute(cfg.seed, 0, t->train_idx, t->n_train, t->perm);
  t->data_key = 0;
  double loss = 0, t0 = 0;
  int64_t hits = 0, rows = 0;
  nest_prefetch_stats s0, s1;
  for (int s = 0; s <= steps; ++s) {
    if (s == 1) { /* the first step of an epoch is always read synchronously: not counted */
      nest_prefetch_get_stats(t->pf, &s0);
      t0 = nest_comm_wtime();
    }
    if (nest_trainer_step(t, t->perm, s, cfg.lr, &loss, &hits, &rows) != NEST_OK) return die("step");
  }
  const double el = nest_comm_wtime() - t0;
  nest_prefetch_get_stats(t->pf, &s1);
  r->step = el / steps;
  r->input = (s1.wait_s - s0.wait_s) / steps;
  r->read = (s1.read_s - s0.read_s) / steps;
  nest_trainer_destroy(&t);
  return 0;
}

int main(int argc, char **argv) {
  const char *dir = NULL;
  char batches[64] = "32,64";
  int steps = 3, keep = 0;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
    else if (!strcmp(argv[i], "--batches") && i + 1 < argc) snprintf(batches, sizeof batches, "%s", argv[++i]);
    else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--keep")) keep = 1;
    else {
      fprintf(stderr, "usage: bench_input [--dir DIR] [--batches 32,64] [--steps N] [--keep]\n");
      return 2;
    }
  }
  if (steps < 1) steps = 1;
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) return 1;
  char tmp[] = "/tmp/bench_input.XXXXXX";
  if (!dir) dir = mkdtemp(tmp);
  int maxb = 0;
  for (const char *p = batches; *p;) {
    int b = atoi(p);
    if (b > maxb) maxb = b;
    p += strcspn(p, ",");
    p += *p == ',';
  }
  const int64_t n = (int64_t)maxb * (steps + 1);
  char prefix[960], pattern[1000];
  snprintf(prefix, sizeof prefix, "%s/synth256", dir);
  snprintf(pattern, sizeof pattern, "%s-*.h5", prefix);
  double t0 = nest_comm_wtime();
  if (nest_shards_synthetic(prefix, n, (nest_shape){3, 256, 256}, 100, 256, 1, 0, NULL) != NEST_OK)
    return die("writing shards");
  printf("bench_input: wrote %lld synthetic 3x256x256 images (%.0f MB) as shards of 256 in %s in "
         "%.1f s; AlexNet, crop 224, flip, 1 rank x %d threads, %d timed steps per run\n",
         (long long)n, (double)n * 3 * 256 * 256 / 1e6, pattern, nest_comm_wtime() - t0,
         omp_get_max_threads(), steps);
  printf("%6s  %-9s  %8s  %10s  %9s  %10s  %8s  %s\n", "batch", "input", "step s", "wait ms",
         "read ms", "compute s", "wait %", "shards cached at start");
  for (const char *p = batches; *p;) {
    const int b = atoi(p);
    p += strcspn(p, ",");
    p += *p == ',';
    for (int pf = 0; pf < 2; ++pf) {
      result r;
      if (run(pattern, b, steps, pf, &r)) return 1;
      printf("%6d  %-9s  %8.3f  %10.3f  %9.1f  %10.3f  %7.3f%%  %.0f%%\n", b,
             pf ? "prefetch" : "sync", r.step, 1e3 * r.input, 1e3 * r.read, r.step - r.input,
             100.0 * r.input / r.step, 100.0 * r.cached);
      fflush(stdout);
    }
  }
  if (!keep) {
    glob_t g;
    if (glob(pattern, 0, NULL, &g) == 0) {
      for (size_t i = 0; i < g.gl_pathc; ++i) unlink(g.gl_pathv[i]);
      globfree(&g);
    }
    if (dir == tmp) rmdir(dir);
  }
  nest_comm_destroy(&comm);
  return 0;
}
