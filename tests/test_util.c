/* test_util.c — helpers shared by the test executables (see test_util.h). */
#define _POSIX_C_SOURCE 200809L
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nest/rng.h"

static char tmpdir[512];

static void rm_tmpdir(void) {
  if (tmpdir[0]) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmpdir);
  }
}

const char *nest_test_tmpdir(void) {
  if (!tmpdir[0]) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/nest_test_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
      perror("mkdtemp");
      abort();
    }
    atexit(rm_tmpdir);
  }
  return tmpdir;
}

const char *nest_test_path(const char *dir, const char *name) {
  static char bufs[8][1024];
  static int next;
  char *b = bufs[next++ & 7];
  snprintf(b, 1024, "%s/%s", dir, name);
  return b;
}

const char *nest_test_data(const char *relpath) {
  static char bufs[8][1024];
  static int next;
  char *b = bufs[next++ & 7];
  snprintf(b, 1024, "%s/%s", NEST_DATA_DIR, relpath);
  if (access(b, R_OK) != 0) {
    printf("SKIP: %s not found (real data lives in ../shared/data beside the checkout)\n", b);
    return NULL;
  }
  return b;
}

void nest_test_fill_normal(float *x, size_t n, uint64_t seed, float scale) {
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_TEST, 0, 0);
  for (size_t i = 0; i < n; ++i) x[i] = scale * nest_rng_normal(&r);
}

int nest_test_write_file(const char *path, const void *data, size_t bytes) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t w = fwrite(data, 1, bytes, f);
  return (fclose(f) == 0 && w == bytes) ? 0 : -1;
}

int nest_test_write_factor_csv(const char *path, int n, uint64_t seed) {
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  nest_rng rng;
  nest_rng_init(&rng, seed, 99, 0, 0);
  for (int i = 0; i < n; ++i) {
    double z[3];
    for (int j = 0; j < 3; ++j) z[j] = nest_rng_normal_f64(&rng);
    const int y = z[0] < -0.4 ? 0 : z[0] < 0.4 ? 1 : 2;
    fprintf(f, "c%d", y);
    for (int j = 0; j < 12; ++j)
      fprintf(f, ",%.5f", 10 * (j + 1) * (z[j % 3] + 0.3 * z[(j + 1) % 3]) +
                              0.5 * nest_rng_normal_f64(&rng));
    fprintf(f, "\n");
  }
  return fclose(f) == 0 ? 0 : -1;
}

double nest_test_max_rel_diff(const float *a, const double *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = fabs((double)a[i] - b[i]) / fmax(1.0, fabs(b[i]));
    if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
  }
  return m;
}

double *nest_test_dalloc(size_t n) {
  double *p = calloc(n ? n : 1, sizeof(double));
  if (!p) abort();
  return p;
}

float *nest_test_falloc(size_t n) {
  float *p = calloc(n ? n : 1, sizeof(float));
  if (!p) abort();
  return p;
}

void nest_test_to_double(const float *a, double *b, size_t n) {
  for (size_t i = 0; i < n; ++i) b[i] = a[i];
}

double nest_test_norm_rel(const float *a, const double *b, size_t n) {
  double num = 0.0, den = 1e-30;
  for (size_t i = 0; i < n; ++i) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= num)) num = d; /* NaN sticks */
    if (fabs(b[i]) > den) den = fabs(b[i]);
  }
  return num / den;
}

void nest_test_slurp(const char *path, char *buf, size_t cap) {
  buf[0] = '\0';
  FILE *f = fopen(path, "rb");
  if (!f) return;
  size_t n = fread(buf, 1, cap - 1, f);
  buf[n] = '\0';
  fclose(f);
}

int nest_test_run(const char *command, char *out, size_t out_cap, char *err, size_t err_cap) {
  const char *dir = nest_test_tmpdir();
  char cmd[20000], o[1024], e[1024];
  snprintf(o, sizeof o, "%s/run.out", dir);
  snprintf(e, sizeof e, "%s/run.err", dir);
  snprintf(cmd, sizeof cmd, "%s >'%s' 2>'%s'", command, o, e);
  int rc = system(cmd);
  if (out) nest_test_slurp(o, out, out_cap);
  if (err) nest_test_slurp(e, err, err_cap);
  return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

int nest_test_tool(const char *prog, const char *args, char *out, size_t out_cap, char *err,
                   size_t err_cap) {
  char cmd[16384];
  snprintf(cmd, sizeof cmd, "'%s' %s", prog, args);
  return nest_test_run(cmd, out, out_cap, err, err_cap);
}

int nest_test_one_error_line(const char *err, const char *prefix, const char *word) {
  const size_t n = strlen(err);
  return strncmp(err, prefix, strlen(prefix)) == 0 && strstr(err, word) && n > 0 &&
         strchr(err, '\n') == err + n - 1;
}

uint64_t nest_test_hash_bytes(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

nest_net *nest_test_net(const char *arch, nest_shape in, int classes, const nest_arch_opts *opts,
                        const char *grow_layer, int grow_by) {
  const nest_arch_opts def = {.width = 1.0};
  nest_layer_spec *specs = NULL;
  int n = 0, grown = grow_layer == NULL;
  nest_net *net = NULL;
  nest_status st = nest_arch_build(arch, opts ? opts : &def, in, classes, &specs, &n);
  for (int i = 0; st == NEST_OK && i < n; ++i)
    if (grow_layer && strcmp(specs[i].name, grow_layer) == 0) {
      if (specs[i].kind == NEST_LAYER_DENSE) specs[i].hp.units += grow_by;
      else specs[i].hp.out_c += grow_by;
      grown = 1;
    }
  if (st == NEST_OK && grown) st = nest_net_create(specs, n, in, classes, 4, 1, &net);
  free(specs);
  if (st != NEST_OK || !grown) {
    fprintf(stderr, "nest_test_net(%s): %s\n", arch, grown ? nest_error_message() : "no such layer");
    abort();
  }
  return net;
}

void nest_test_h5_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                          const hsize_t *chunk, int allocate) {
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  herr_t e = dcpl >= 0 ? 0 : -1;
  if (e >= 0 && chunk) e = H5Pset_chunk(dcpl, rank, chunk);
  if (e >= 0 && allocate) e = H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
  if (e >= 0 && allocate) e = H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
  hid_t sp = e >= 0 ? H5Screate_simple(rank, dims, NULL) : -1;
  hid_t d = sp >= 0 ? H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT) : -1;
  if (d >= 0) H5Dclose(d);
  if (sp >= 0) H5Sclose(sp);
  if (dcpl >= 0) H5Pclose(dcpl);
  if (d < 0) {
    fprintf(stderr, "nest_test_h5_dataset: cannot create %s\n", name);
    abort();
  }
}

char *nest_test_capture(void (*print)(FILE *f)) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) return NULL;
  print(f);
  if (fclose(f) != 0) {
    free(text);
    return NULL;
  }
  return text;
}

nest_trainer *nest_test_trainer(nest_comm *c, const nest_config *cfg, nest_shape shape, int n,
                                uint64_t data_seed) {
  nest_dataset *ds = NULL;
  nest_trainer *t = NULL;
  if (nest_dataset_synthetic(n, shape, 4, 0.5f, data_seed, 1, &ds) != NEST_OK) return NULL;
  if (nest_trainer_create_with_data(cfg, c, ds, NULL, &t) != NEST_OK) return NULL;
  t->quiet = getenv("NEST_TEST_VERBOSE") == NULL;
  return t;
}

nest_pipeline *nest_test_pipeline(nest_comm *c, const nest_config *cfg, nest_shape shape, int n,
                                  uint64_t data_seed) {
  nest_dataset *ds = NULL;
  nest_pipeline *p = NULL;
  if (nest_dataset_synthetic(n, shape, 4, 0.5f, data_seed, 1, &ds) != NEST_OK) return NULL;
  if (nest_pipeline_create_with_data(cfg, c, ds, NULL, &p) != NEST_OK) return NULL;
  p->t->quiet = getenv("NEST_TEST_VERBOSE") == NULL;
  return p;
}

void nest_test_synthetic_config(nest_config *cfg, const char *arch, uint64_t seed) {
  nest_config_defaults(cfg);
  snprintf(cfg->arch, sizeof cfg->arch, "%s", arch);
  snprintf(cfg->train, sizeof cfg->train, "synthetic");
  cfg->out_dir[0] = '\0';
  cfg->run_dir[0] = '\0';
  cfg->batch = 10;
  cfg->lr = 0.05;
  cfg->seed = seed;
  cfg->val_split = 0.2;
}

int nest_test_setup_error(nest_comm *c, const nest_config *cfg, nest_shape shape, int n,
                          const char *key1, const char *key2, char *why, size_t cap) {
  nest_dataset *ds = NULL;
  nest_pipeline *pl = NULL;
  if (nest_dataset_synthetic(n, shape, 4, 0.5f, 31, 1, &ds) != NEST_OK) {
    snprintf(why, cap, "synthetic data: %s", nest_error_message());
    return 1;
  }
  const nest_status st = nest_pipeline_create_with_data(cfg, c, ds, NULL, &pl);
  const char *msg = nest_error_message();
  int bad = 1;
  if (st != NEST_ERR_CONFIG || pl)
    snprintf(why, cap, "create: %s (%s), want a config error", nest_status_name(st), msg);
  else if (!strstr(msg, key1) || !strstr(msg, key2))
    snprintf(why, cap, "message '%s' does not name %s and %s", msg, key1, key2);
  else if (nest_comm_check_same(c, nest_test_hash_bytes(msg, strlen(msg)), "messages") != NEST_OK)
    snprintf(why, cap, "the ranks' messages differ");
  else
    bad = 0;
  nest_pipeline_destroy(&pl);
  if (!bad) nest_error_clear();
  return bad;
}

