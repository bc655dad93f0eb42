/* bench_infer.c — inference latency and throughput of the compact sparse program (sparse.h)
 * against nest's own dense masked path (nest_net_forward, eval mode), same model, same inputs,
 * same process, alternated call by call. A benchmark, never a test: it prints figures.
 * tests/bench/bench_infer.py drives it round by round, alternating with PyTorch (dense and
 * torch.sparse CSR) on the same compact layers, and prints the table of docs/performance.md.
 *
 * usage: bench_infer [options] MODEL.h5...   (or synthetic:lenet300 / synthetic:lenet5: random
 *        5%-dense nets at width 0.5, the conv layers with partial-area masks; smoke runs;
 *        synthetic:lenet300+skips: with SCANN skip tensors, model.skips = all, also 5% dense)
 *   --threads 1,2       thread counts (default 1,2)
 *   --batches 1,256     batch sizes (default 1,256)
 *   --reps R1,RN        timed calls per case at batch 1 / larger batches (default 400,40)
 *   --tiles             instead: the sparse program in each layout, alternated: automatic,
 *                       one-sample tiles with dense layers as CSR rows or SELL slices, and
 *                       column-tiled CSR with 16 / 32 / 64 samples per tile
 *   --export DIR        instead: write each model's compact program for bench_infer.py to
 *                       DIR/<k>/ (manifest.txt and .npy arrays, with 64 inputs and the logits
 *                       of both paths), then print the model's sizes
 *   --rss sparse|dense  instead: run only that path (batch 256, 2 threads, 50 calls; for sparse
 *                       the loaded net is freed first) and print the process's resident memory
 *   --cpu               time with the process CPU clock instead of the wall clock
 *   --quiet             only the machine-readable lines
 * Output: per case "SAMPLES <model> <impl> <threads> <batch> <microseconds per call>..." (every
 * timed call, for pooling across rounds) and a human-readable line with medians; inputs are
 * N(0, 1) (the cost of no contender depends on the values). */
#define _GNU_SOURCE
#include <malloc.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "nest/arch.h"
#include "nest/model.h"
#include "nest/net.h"
#include "nest/rng.h"
#include "nest/sparse.h"

#define MAXB 256
#define MAXT 2

static int quiet, cpu_clock;

/* Seconds: wall clock, or with --cpu the process CPU clock (only the time this process ran: on
 * a busy shared machine a 1-thread figure then leaves out the time others had the core; with 2
 * threads it also counts OpenMP spin-waiting, so read those with the wall clock). */
static double now(void) {
  if (!cpu_clock) return omp_get_wtime();
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "bench_infer: %s: %s\n", what, nest_error_message());
  exit(1);
}

static int parse_list(const char *s, int *v, int cap) {
  int n = 0;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", s);
  for (char *t = strtok(buf, ","); t && n < cap; t = strtok(NULL, ",")) v[n++] = atoi(t);
  return n;
}

static int cmp_d(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(const double *v, int n) {
  double *t = malloc(sizeof(double) * (size_t)n);
  memcpy(t, v, sizeof(double) * (size_t)n);
  qsort(t, (size_t)n, sizeof(double), cmp_d);
  const double m = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
  free(t);
  return m;
}

/* The model's short name: the run directory's name, else the file name. */
static void model_name(const char *path, char *out, size_t cap) {
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", path);
  char *slash = strrchr(buf, '/');
  if (slash && strcmp(slash + 1, "model.h5") == 0) {
    *slash = '\0';
    slash = strrchr(buf, '/');
  }
  snprintf(out, cap, "%.100s", slash ? slash + 1 : buf);
}

typedef struct {
  const char *path;
  char name[128];
  nest_net *net;
  nest_sparse *sp;
  float *x, *y;
} model;

/* "synthetic:ARCH" (lenet300, lenet5): the architecture at width 0.5, a 5%-dense random seed,
 * the conv layers with random partial-area masks — something to run without a model file
 * (the ctest smoke runs). "ARCH+skips": with skip tensors from every source into every later
 * dense layer (model.skips = all), seeded at the same density. */
static void synthetic(const char *name, nest_net **out) {
  nest_layer_spec *specs;
  int ns;
  char arch[64];
  snprintf(arch, sizeof arch, "%s", name);
  char *plus = strstr(arch, "+skips");
  if (plus) *plus = '\0';
  const nest_arch_opts ao = {.width = 0.5, .dropout = 0.2};
  if (nest_arch_build(arch, &ao, (nest_shape){1, 28, 28}, 10, &specs, &ns) != NEST_OK) die(arch);
  if (plus && nest_arch_skips(specs, ns, "all") != NEST_OK) die(name);
  for (int i = 0; i < ns; ++i) specs[i].hp.area = specs[i].kind == NEST_LAYER_CONV2D;
  if (nest_net_create(specs, ns, (nest_shape){1, 28, 28}, 10, MAXB, MAXT, out) != NEST_OK ||
      nest_net_init(*out, 1, 0.05, -1) != NEST_OK)
    die(name);
  free(specs);
  nest_rng r;
  nest_rng_init(&r, 1, NEST_RNG_SYNTH, 1, 0);
  for (int i = 0; i < (*out)->nlayers; ++i) {
    nest_layer *l = (*out)->layers[i];
    if (l->kind != NEST_LAYER_CONV2D) continue;
    for (size_t j = 0; j < l->buffer[0].count; ++j) l->buf[0][j] = nest_rng_uniform(&r) < 0.6f;
  }
}

static void model_open(model *m, const char *path, int load_sparse) {
  m->path = path;
  if (strncmp(path, "synthetic:", 10) == 0) {
    snprintf(m->name, sizeof m->name, "%.100s", path);
    synthetic(path + 10, &m->net);
  } else {
    model_name(path, m->name, sizeof m->name);
    if (nest_model_load(path, MAXB, MAXT, &m->net) != NEST_OK) die(path);
  }
  if (load_sparse && nest_sparse_create(m->net, MAXB, MAXT, NULL, &m->sp) != NEST_OK) die(path);
  const size_t d = nest_shape_size(m->net->in_shape);
  m->x = malloc(sizeof(float) * d * MAXB);
  m->y = malloc(sizeof(float) * (size_t)m->net->nclasses * MAXB);
  nest_rng r;
  nest_rng_init(&r, 1, NEST_RNG_SYNTH, 0, 0);
  for (size_t i = 0; i < d * MAXB; ++i) m->x[i] = nest_rng_normal(&r);
}

static void model_close(model *m) {
  nest_sparse_destroy(&m->sp);
  nest_net_destroy(&m->net);
  free(m->x);
  free(m->y);
}

static void run_dense(model *m, int n, int nt) {
  nest_ctx ctx = {.n = n, .train = 0, .nthreads = nt};
  const float *lg;
  omp_set_num_threads(nt);
  if (nest_net_forward(m->net, &ctx, m->x, &lg) != NEST_OK) die("dense forward");
}

static void run_sparse(nest_sparse *s, model *m, int n, int nt) {
  if (nest_sparse_forward(s, n, nt, m->x, m->y) != NEST_OK) die("sparse forward");
}

static void print_samples(const char *model, const char *impl, int nt, int n, const double *t,
                          int reps) {
  printf("SAMPLES %s %s %d %d", model, impl, nt, n);
  for (int r = 0; r < reps; ++r) printf(" %.3f", 1e6 * t[r]);
  printf("\n");
}

/* Sparse and dense alternated call by call (the first of a pair alternates too). */
static void bench_pair(model *m, int nt, int n, int reps) {
  double *ts = malloc(sizeof(double) * (size_t)reps), *td = malloc(sizeof(double) * (size_t)reps);
  for (int w = 0; w < 3; ++w) {
    run_sparse(m->sp, m, n, nt);
    run_dense(m, n, nt);
  }
  for (int r = 0; r < reps; ++r)
    for (int k = 0; k < 2; ++k) {
      const int sparse = (k + r) % 2 == 0;
      const double t0 = now();
      if (sparse)
        run_sparse(m->sp, m, n, nt);
      else
        run_dense(m, n, nt);
      (sparse ? ts : td)[r] = now() - t0;
    }
  print_samples(m->name, "nest_sparse", nt, n, ts, reps);
  print_samples(m->name, "nest_dense", nt, n, td, reps);
  if (!quiet) {
    const double a = median(ts, reps), b = median(td, reps);
    fprintf(stderr, "%-14s threads %d batch %3d: sparse %9.2f us, dense masked %9.2f us (%.1fx)\n",
            m->name, nt, n, 1e6 * a, 1e6 * b, b / a);
  }
  free(ts);
  free(td);
}

/* The sparse program in every layout, alternated: the automatic choice, one-sample tiles with
 * dense layers as CSR rows and as SELL, and column-tiled CSR with 16, 32 and 64 samples. */
static void bench_tiles(model *m, int nt, int n, int reps) {
  static const struct {
    const char *name;
    nest_sparse_opts o;
  } v[] = {{"auto", {0, 0}}, {"t1_csr", {1, 1}}, {"t1_sell", {1, 2}},
           {"t16", {16, 0}}, {"t32", {32, 0}},   {"t64", {64, 0}}};
  enum { NV = sizeof v / sizeof v[0] };
  nest_sparse *s[NV];
  double *t[NV];
  for (int i = 0; i < NV; ++i) {
    if (nest_sparse_create(m->net, MAXB, MAXT, &v[i].o, &s[i]) != NEST_OK) die("sparse create");
    t[i] = malloc(sizeof(double) * (size_t)reps);
    for (int w = 0; w < 3; ++w) run_sparse(s[i], m, n, nt);
  }
  for (int r = 0; r < reps; ++r)
    for (int k = 0; k < NV; ++k) {
      const int i = (k + r) % NV;
      const double t0 = now();
      run_sparse(s[i], m, n, nt);
      t[i][r] = now() - t0;
    }
  for (int i = 0; i < NV; ++i) {
    print_samples(m->name, v[i].name, nt, n, t[i], reps);
    if (!quiet)
      fprintf(stderr, "%-14s threads %d batch %3d: %-8s %9.2f us\n", m->name, nt, n, v[i].name,
              1e6 * median(t[i], reps));
    nest_sparse_destroy(&s[i]);
    free(t[i]);
  }
}

/* ---- export for bench_infer.py --------------------------------------------------------------- */

/* One .npy file (format 1.0): dtype "<f4", "<i4" or "|u1", shape dims[nd]. */
static void write_npy(const char *dir, const char *name, const char *dtype, const void *data,
                      size_t elsize, int nd, const long *dims) {
  char path[2048], shape[128] = "", header[256];
  size_t count = 1;
  for (int i = 0; i < nd; ++i) {
    char d[32];
    snprintf(d, sizeof d, "%ld,%s", dims[i], nd == 1 ? "" : i + 1 < nd ? " " : "");
    strncat(shape, d, sizeof shape - strlen(shape) - 1);
    count *= (size_t)dims[i];
  }
  int len = snprintf(header, sizeof header,
                     "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", dtype, shape);
  while ((10 + len + 1) % 64) header[len++] = ' ';
  header[len++] = '\n';
  snprintf(path, sizeof path, "%.1900s/%.64s.npy", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f) {
    perror(path);
    exit(1);
  }
  const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  const unsigned char hl[2] = {(unsigned char)(len & 255), (unsigned char)(len >> 8)};
  if (fwrite(magic, 1, 8, f) != 8 || fwrite(hl, 1, 2, f) != 2 ||
      fwrite(header, 1, (size_t)len, f) != (size_t)len ||
      (count && fwrite(data, elsize, count, f) != count) || fclose(f) != 0) {
    perror(path);
    exit(1);
  }
}

static const char *kind_str(nest_sparse_kind k) {
  return k == NEST_SPARSE_DENSE  ? "dense"
         : k == NEST_SPARSE_CONV ? "conv"
         : k == NEST_SPARSE_POOL ? "pool"
                                 : "affine";
}

static void export_model(model *m, const char *dir) {
  mkdir(dir, 0775);
  char path[2048];
  snprintf(path, sizeof path, "%.1900s/manifest.txt", dir);
  FILE *f = fopen(path, "w");
  if (!f) {
    perror(path);
    exit(1);
  }
  nest_sparse_stats st;
  nest_sparse_get_stats(m->sp, &st);
  struct stat fs;
  const long file_bytes = stat(m->path, &fs) == 0 ? (long)fs.st_size : -1;
  fprintf(f, "model %s\nfile_bytes %ld\ninput %d %d %d\nnclasses %d\n", m->name, file_bytes,
          st.in_shape.c, st.in_shape.h, st.in_shape.w, st.nclasses);
  fprintf(f,
          "stats source_weights=%lld nnz=%lld units_removed=%d units_folded=%d flops=%.0f "
          "model_bytes=%zu dense_bytes=%zu source_bytes=%zu work_bytes=%zu\n",
          (long long)st.source_weights, (long long)st.nnz, st.units_removed, st.units_folded,
          st.flops, st.model_bytes, st.dense_bytes, st.source_bytes, st.work_bytes);
  for (int i = 0; i < nest_sparse_nops(m->sp); ++i) {
    nest_sparse_op op;
    nest_sparse_get_op(m->sp, i, &op);
    if (op.nsrc > 1) { /* bench_infer.py rebuilds an nn.Sequential: no skip tensors */
      fprintf(stderr, "bench_infer: --export: %s: op %s has skip tensors, which the PyTorch "
                      "rebuild does not support\n", m->name, op.name);
      exit(1);
    }
    fprintf(f,
            "op %d kind=%s name=%s in=%d,%d,%d out=%d,%d,%d relu=%d k=%d,%d stride=%d pad=%d "
            "rows=%d cols=%d nnz=%lld bias_plane=%d area=%d\n",
            i, kind_str(op.kind), op.name, op.in.c, op.in.h, op.in.w, op.out.c, op.out.h, op.out.w,
            op.relu, op.kh, op.kw, op.stride, op.pad, op.rows, op.cols, (long long)op.nnz,
            op.bias_plane != NULL, op.has_area);
    char nm[64];
    if (op.kind == NEST_SPARSE_DENSE || op.kind == NEST_SPARSE_CONV) {
      snprintf(nm, sizeof nm, "op%d_rowptr", i);
      write_npy(dir, nm, "<i4", op.rowptr, 4, 1, (long[]){op.rows + 1});
      snprintf(nm, sizeof nm, "op%d_colidx", i);
      write_npy(dir, nm, "<i4", op.colidx, 4, 1, (long[]){(long)op.nnz});
      snprintf(nm, sizeof nm, "op%d_values", i);
      write_npy(dir, nm, "<f4", op.values, 4, 1, (long[]){(long)op.nnz});
      snprintf(nm, sizeof nm, "op%d_bias", i);
      write_npy(dir, nm, "<f4", op.bias, 4, 1, (long[]){op.rows});
    }
    if (op.bias_plane) {
      snprintf(nm, sizeof nm, "op%d_bias_plane", i);
      write_npy(dir, nm, "<f4", op.bias_plane, 4, 2, (long[]){op.rows, (long)op.out.h * op.out.w});
    }
    if (op.has_area) {
      const long n = (long)op.out.h * op.out.w;
      uint8_t *a = malloc((size_t)op.rows * op.in.c * n);
      if (nest_sparse_get_area(m->sp, i, a) != NEST_OK) die("area");
      snprintf(nm, sizeof nm, "op%d_area", i);
      write_npy(dir, nm, "|u1", a, 1, 3, (long[]){op.rows, op.in.c, n});
      free(a);
    }
    if (op.kind == NEST_SPARSE_AFFINE) {
      snprintf(nm, sizeof nm, "op%d_scale", i);
      write_npy(dir, nm, "<f4", op.scale, 4, 1, (long[]){op.in.c});
      snprintf(nm, sizeof nm, "op%d_shift", i);
      write_npy(dir, nm, "<f4", op.shift, 4, 1, (long[]){op.in.c});
    }
  }
  fclose(f);
  /* 64 inputs and both paths' logits, for bench_infer.py's correctness check */
  const int n = 64, k = m->net->nclasses;
  const nest_shape in = m->net->in_shape;
  float *ld = malloc(sizeof(float) * (size_t)n * k);
  run_dense(m, n, 1);
  memcpy(ld, m->net->act[m->net->nlayers], sizeof(float) * (size_t)n * k);
  run_sparse(m->sp, m, n, 1);
  write_npy(dir, "inputs", "<f4", m->x, 4, 4, (long[]){n, in.c, in.h, in.w});
  write_npy(dir, "logits_sparse", "<f4", m->y, 4, 2, (long[]){n, k});
  write_npy(dir, "logits_dense", "<f4", ld, 4, 2, (long[]){n, k});
  free(ld);
  if (!quiet) {
    fprintf(stderr,
            "%s: %lld active weights, %lld multiplied; %d units removed (%d folded); "
            "%.0f FLOPs per sample\n  model.h5 %ld bytes; compact program %zu bytes; dense at "
            "compact shapes %zu bytes; nest's dense arrays (values + masks) %zu bytes\n",
            m->name, (long long)st.source_weights, (long long)st.nnz, st.units_removed,
            st.units_folded, st.flops, file_bytes, st.model_bytes, st.dense_bytes, st.source_bytes);
    nest_sparse_describe(m->sp, stderr);
  }
}

/* ---- resident memory ------------------------------------------------------------------------- */

static long rss_kb(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, key, strlen(key)) == 0) v = atol(line + strlen(key));
  if (f) fclose(f);
  return v;
}

static void rss_only(const char *path, const char *which) {
  model m;
  const int sparse = strcmp(which, "sparse") == 0;
  const long before = rss_kb("VmRSS:");
  model_open(&m, path, sparse);
  if (sparse) { /* the program alone: the net it was built from goes */
    nest_net *net = m.net;
    m.net = NULL;
    nest_net_destroy(&net);
    malloc_trim(0);
  }
  for (int r = 0; r < 50; ++r) {
    if (sparse)
      run_sparse(m.sp, &m, MAXB, MAXT);
    else
      run_dense(&m, MAXB, MAXT);
  }
  printf("RSS %s nest_%s rss_kb=%ld hwm_kb=%ld before_kb=%ld\n", m.name, which, rss_kb("VmRSS:"),
         rss_kb("VmHWM:"), before);
  model_close(&m);
}

int main(int argc, char **argv) {
  int threads[4] = {1, 2}, nthreads = 2, batches[8] = {1, 256}, nbatches = 2, reps[2] = {400, 40};
  const char *export_dir = NULL, *rss = NULL;
  int tiles = 0, first = argc;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      nthreads = parse_list(argv[++i], threads, 4);
    else if (strcmp(argv[i], "--batches") == 0 && i + 1 < argc)
      nbatches = parse_list(argv[++i], batches, 8);
    else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
      parse_list(argv[++i], reps, 2);
    else if (strcmp(argv[i], "--export") == 0 && i + 1 < argc)
      export_dir = argv[++i];
    else if (strcmp(argv[i], "--rss") == 0 && i + 1 < argc)
      rss = argv[++i];
    else if (strcmp(argv[i], "--tiles") == 0)
      tiles = 1;
    else if (strcmp(argv[i], "--quiet") == 0)
      quiet = 1;
    else if (strcmp(argv[i], "--cpu") == 0)
      cpu_clock = 1;
    else if (argv[i][0] == '-')
      first = argc + 1;
    else {
      first = i;
      break;
    }
  }
  int bad = first >= argc || nthreads < 1 || nbatches < 1 || reps[0] < 1 || reps[1] < 1;
  for (int i = 0; i < nthreads; ++i) bad |= threads[i] < 1 || threads[i] > MAXT;
  for (int i = 0; i < nbatches; ++i) bad |= batches[i] < 1 || batches[i] > MAXB;
  if (bad) {
    fprintf(stderr,
            "usage: bench_infer [--threads 1,2] [--batches 1,256] [--reps 400,40] "
            "[--tiles | --export DIR | --rss sparse|dense] [--cpu] [--quiet] MODEL.h5...\n"
            "  (threads at most %d, batches at most %d)\n",
            MAXT, MAXB);
    return 2;
  }
  if (rss) {
    rss_only(argv[first], rss);
    return 0;
  }
  for (int a = first; a < argc; ++a) {
    model m;
    model_open(&m, argv[a], 1);
    if (export_dir) {
      char dir[2048];
      mkdir(export_dir, 0775);
      snprintf(dir, sizeof dir, "%.1900s/%d", export_dir, a - first);
      export_model(&m, dir);
      model_close(&m);
      continue;
    }
    for (int t = 0; t < nthreads; ++t)
      for (int b = 0; b < nbatches; ++b) {
        const int r = batches[b] == 1 ? reps[0] : reps[1];
        if (tiles)
          bench_tiles(&m, threads[t], batches[b], r);
        else
          bench_pair(&m, threads[t], batches[b], r);
      }
    model_close(&m);
  }
  return 0;
}
