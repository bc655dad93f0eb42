/* bench_checkpoint.c — restart checkpoint write and read time and size, against a plain dd
 * with fsync of the same number of bytes on the same disk, same run. A benchmark, never a test.
 *
 * usage: bench_checkpoint [DIR (default /tmp)] [repeats (default 3)] [models (default
 *        lenet300,lenet5,alexnet)] [density (default 1)]
 *
 * For each model (nest_arch_build at width 1, nest_net_init at `density`, momentum filled):
 *   write   nest_ckpt_create + nest_ckpt_put_net(net with momentum) + a /state dataset +
 *           nest_ckpt_commit (tmp, fsync, rename, fsync of the directory) — what
 *           nest_restart_point does on rank 0, minus the few KB of loop state
 *   read    nest_ckpt_open + nest_ckpt_get_net (the resume: every dataset read and its
 *           Fletcher-32 checksum verified; the page cache is warm, so this is the CPU side)
 *   dd      dd if=/dev/zero of=DIR/dd.bin bs=1M count=<size> conv=fsync: the disk's bandwidth
 *           for the same bytes
 * Best of `repeats` for each. Bandwidth = file bytes / seconds; ratio = write / dd bandwidth. */
#define _GNU_SOURCE
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nest/arch.h"
#include "nest/ckpt.h"
#include "nest/net.h"
#include "nest/rng.h"

static double best_dd(const char *dir, double mib, int repeats) {
  double best = 1e30;
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "dd if=/dev/zero of=%s/bench_dd.bin bs=1M count=%.0f conv=fsync "
           "status=none", dir, mib < 1 ? 1 : mib + 0.5);
  for (int r = 0; r < repeats; ++r) {
    double t0 = omp_get_wtime();
    if (system(cmd) != 0) return -1;
    double t = omp_get_wtime() - t0;
    if (t < best) best = t;
  }
  snprintf(cmd, sizeof cmd, "%s/bench_dd.bin", dir);
  remove(cmd);
  return best;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "/tmp";
  const int repeats = argc > 2 ? atoi(argv[2]) : 3;
  char models[256];
  snprintf(models, sizeof models, "%s", argc > 3 ? argv[3] : "lenet300,lenet5,alexnet");
  const double density = argc > 4 ? atof(argv[4]) : 1.0;
  printf("checkpoint write / read vs dd conv=fsync, directory %s, best of %d, density %g\n", dir,
         repeats, density);
  printf("%-9s %12s %10s %9s %9s %9s %9s %9s %7s\n", "model", "params", "file MiB", "write s",
         "MiB/s", "dd s", "dd MiB/s", "read s", "w/dd");
  for (char *save = NULL, *m = strtok_r(models, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
    nest_shape in = {1, 28, 28};
    if (strcmp(m, "lenet300") == 0) in = (nest_shape){784, 1, 1};
    if (strcmp(m, "alexnet") == 0) in = (nest_shape){3, 227, 227};
    if (strcmp(m, "vgg16") == 0) in = (nest_shape){3, 224, 224};
    const int nclasses = strcmp(m, "alexnet") == 0 || strcmp(m, "vgg16") == 0 ? 1000 : 10;
    nest_layer_spec *specs = NULL;
    int n = 0;
    nest_arch_opts ao = {.width = 1.0};
    nest_net *net = NULL;
    if (nest_arch_build(m, &ao, in, nclasses, &specs, &n) != NEST_OK ||
        nest_net_create(specs, n, in, nclasses, 1, 1, &net) != NEST_OK ||
        nest_net_init(net, 1, density, -1) != NEST_OK) {
      fprintf(stderr, "bench_checkpoint: %s: %s\n", m, nest_error_message());
      return 1;
    }
    free(specs);
    nest_rng r;
    nest_rng_init(&r, 7, NEST_RNG_SYNTH, 0, 0);
    /* momentum of every tensor (the arena's padding between tensors is not state) */
    for (int k = 0; k < net->ntensors; ++k) {
      const nest_param *p = net->tensors[k].param;
      for (size_t i = p->offset; i < p->offset + p->count; ++i)
        net->mom[i] = net->masks[i] != 0.0f ? 0.01f * (nest_rng_uniform(&r) - 0.5f) : 0.0f;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/bench_ckpt.h5", dir);
    double wbest = 1e30, rbest = 1e30, bytes = 0;
    for (int k = 0; k < repeats; ++k) {
      double t0 = omp_get_wtime();
      nest_ckpt *w = NULL;
      const int64_t step = k;
      if (nest_ckpt_create(path, &w) != NEST_OK || nest_ckpt_put_net(w, NULL, net, 1) != NEST_OK ||
          nest_ckpt_put(w, "progress", NEST_CK_I64, &step, 1) != NEST_OK ||
          nest_ckpt_commit(&w) != NEST_OK) {
        fprintf(stderr, "bench_checkpoint: %s\n", nest_error_message());
        nest_ckpt_close(&w);
        return 1;
      }
      double t = omp_get_wtime() - t0;
      if (t < wbest) wbest = t;
      struct stat sb;
      stat(path, &sb);
      bytes = (double)sb.st_size;
      t0 = omp_get_wtime();
      nest_ckpt *rd = NULL;
      nest_net *back = NULL;
      if (nest_ckpt_open(path, &rd) != NEST_OK ||
          nest_ckpt_get_net(rd, NULL, 1, 1, 1, &back) != NEST_OK) {
        fprintf(stderr, "bench_checkpoint: %s\n", nest_error_message());
        return 1;
      }
      nest_ckpt_close(&rd);
      t = omp_get_wtime() - t0;
      if (t < rbest) rbest = t;
      if (nest_net_hash(back, NEST_HASH_ALL) != nest_net_hash(net, NEST_HASH_ALL) ||
          memcmp(back->mom, net->mom, sizeof(float) * net->nparams) != 0) {
        fprintf(stderr, "bench_checkpoint: %s: read back differs (params %d masks %d mom %d)\n", m,
                memcmp(back->params, net->params, 4 * net->nparams) != 0,
                memcmp(back->masks, net->masks, 4 * net->nparams) != 0,
                memcmp(back->mom, net->mom, 4 * net->nparams) != 0);
        return 1;
      }
      nest_net_destroy(&back);
    }
    remove(path);
    const double mib = bytes / (1024.0 * 1024.0);
    const double dd = best_dd(dir, mib, repeats);
    printf("%-9s %12zu %10.2f %9.3f %9.0f %9.3f %9.0f %9.3f %6.0f%%\n", m, net->nparams, mib,
           wbest, mib / wbest, dd, dd > 0 ? (mib < 1 ? 1 : mib) / dd : 0, rbest,
           dd > 0 ? 100.0 * (mib / wbest) / ((mib < 1 ? 1 : mib) / dd) : 0);
    fflush(stdout);
    nest_net_destroy(&net);
  }
  return 0;
}
