/* test_infer.c — nest_infer run as a program, as users run it, and bad model files through every
 * tool that reads models:
 *   - IDX images with a conv / batch-norm / dropout / partial-area model: the printed error and
 *     top-5 error and every line of the predictions CSV equal nest_net_forward on the data
 *     normalised with the model's record, through the sparse program (the default; the same
 *     bytes at 1 and 2 threads and any batch size) and the dense path (--dense; the same bytes
 *     at 1 and 2 threads); a run directory stands for its model.h5; --out needs --force to
 *     replace a file;
 *   - a model with SCANN skip tensors: the sparse program by default (no dense fallback), its
 *     predictions those of nest_net_forward, the same bytes at any thread count and batch size;
 *   - CSV with string labels: the training CSV's options from the model, an unknown label named,
 *     new rows without labels, a feature count that does not match;
 *   - usage and data errors: one line, exit 2 / 1;
 *   - the Python example docs/examples/infer_numpy.py (h5py + numpy, when /usr/bin/python3 has
 *     them) predicts the class nest_infer predicts for every sample of both models;
 *   - a model file that is truncated, misses a dataset, has a mask whose shape disagrees with its
 *     weights, NaN / Inf values, an unknown format version or a broken input record: one line
 *     naming the file and the problem from nest_infer, nest_export (HDF5 and ONNX),
 *     nest_report and nest_mpi's model.init_from alike. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nest/arch.h"
#include "nest/data.h"
#include "nest/loss.h"
#include "nest/model.h"
#include "nest/prefetch.h"
#include "nest/rng.h"
#include "nest/surgery.h"
#include "test_util.h"

#define INFER NEST_BINARY_DIR "/nest_infer"
#define EXPORT NEST_BINARY_DIR "/nest_export"
#define REPORT NEST_BINARY_DIR "/nest_report"
#define PYEXAMPLE NEST_SOURCE_DIR "/docs/examples/infer_numpy.py"

static char out_text[1 << 16], err_text[1 << 14];
static const char *dir;

static int tool(const char *prog, const char *args) {
  const int code = nest_test_tool(prog, args, out_text, sizeof out_text, err_text, sizeof err_text);
  assert_true(code >= 0);
  return code;
}

#define assert_one_error(prefix, word) assert_one_error_line(err_text, prefix, word)

static void write_text(const char *path, const char *text) {
  assert_int_equal(nest_test_write_file(path, text, strlen(text)), 0);
}

static void put_be32(unsigned char *b, uint32_t v) {
  b[0] = (unsigned char)(v >> 24), b[1] = (unsigned char)(v >> 16);
  b[2] = (unsigned char)(v >> 8), b[3] = (unsigned char)v;
}

/* IDX images [n, h, w] of counter-RNG bytes and labels k % 10. */
static void write_idx(const char *img, const char *lab, uint32_t n, uint32_t h, uint32_t w) {
  const size_t d = (size_t)h * w;
  unsigned char *b = malloc(16 + n * d), *l = malloc(8 + n);
  assert_non_null(b);
  assert_non_null(l);
  put_be32(b, 0x803), put_be32(b + 4, n), put_be32(b + 8, h), put_be32(b + 12, w);
  nest_rng r;
  nest_rng_init(&r, 5, NEST_RNG_TEST, 0, 0);
  for (size_t i = 0; i < n * d; ++i) b[16 + i] = (unsigned char)nest_rng_below(&r, 256);
  put_be32(l, 0x801), put_be32(l + 4, n);
  for (uint32_t i = 0; i < n; ++i) l[8 + i] = (unsigned char)((i * 7) % 10);
  assert_int_equal(nest_test_write_file(img, b, 16 + n * d), 0);
  assert_int_equal(nest_test_write_file(lab, l, 8 + n), 0);
  free(b);
  free(l);
}

/* Give every parameter and buffer of net values worth predicting with: weights as initialised,
 * non-zero biases, BN statistics away from 0 / 1, half the area masks of conv2 zero. */
static void perturb(nest_net *net, uint64_t seed) {
  for (int t = 0; t < net->ntensors; ++t) {
    const nest_tensor_ref *r = &net->tensors[t];
    if (r->param->maskable) continue;
    nest_test_fill_normal(r->layer->p[r->slot], r->param->count, seed + t, 0.2f);
    if (strcmp(r->param->name, "gamma") == 0)
      for (size_t i = 0; i < r->param->count; ++i) r->layer->p[r->slot][i] += 1.0f;
  }
  for (int i = 0; i < net->nlayers; ++i) {
    nest_layer *l = net->layers[i];
    for (int s = 0; s < l->nbuffers; ++s) {
      float *b = l->buf[s];
      const size_t n = l->buffer[s].count;
      nest_test_fill_normal(b, n, seed + 100 + (uint64_t)i, 0.5f);
      for (size_t k = 0; k < n; ++k) {
        if (strcmp(l->buffer[s].name, "running_var") == 0) b[k] = 0.5f + fabsf(b[k]);
        else if (l->buffer[s].mask) b[k] = b[k] < 0.0f ? 0.0f : 1.0f;
      }
    }
  }
}

static char *digit_names[10] = {"zero", "one", "two", "three", "four",
                                "five", "six", "seven", "eight", "nine"};

/* net (for 1x16x16 bytes, destroyed) saved with its input record (scale 1/255, per-channel
 * statistics, class names). */
static void save_idx_model(nest_net *net, const char *path) {
  float mean = 0.47f, sd = 0.29f;
  const nest_model_input in = {.known = 1, .data_shape = {1, 16, 16}, .is_u8 = 1,
                               .scale = 1.0f / 255, .norm = {1, &mean, &sd}, .nlabels = 10,
                               .labels = digit_names, .format = "idx", .csv_delim = ','};
  const nest_model_info info = {.val_error = NAN, .test_error = NAN, .input = &in};
  assert_ok(nest_model_save_info(net, &info, path));
  nest_net_destroy(&net);
}

/* A LeNet-5-shaped model for 1x16x16 bytes: batch norm, dropout, partial-area conv2. */
static void save_conv_model(const char *path) {
  const nest_arch_opts o = {.width = 0.3, .batchnorm = 1, .dropout = 0.3};
  nest_net *net = nest_test_net("lenet5", (nest_shape){1, 16, 16}, 10, &o, NULL, 0);
  assert_ok(nest_net_init(net, 3, 0.6, -1));
  nest_layer *c2 = nest_net_find_layer(net, "conv2");
  assert_non_null(c2);
  assert_ok(nest_surgery_set_area(&net, c2->index, 1));
  perturb(net, 11);
  save_idx_model(net, path);
}

/* A LeNet-300-100-shaped SCANN model for 1x16x16 bytes with skip tensors in>fc2 and fc1>fc3
 * (chain 30% dense, skips 20%), batch norm and dropout. */
static void save_skip_model(const char *path) {
  const nest_arch_opts o = {.width = 0.3, .batchnorm = 1, .dropout = 0.3};
  nest_layer_spec *specs;
  int n;
  assert_ok(nest_arch_build("lenet300", &o, (nest_shape){1, 16, 16}, 10, &specs, &n));
  assert_ok(nest_arch_skips(specs, n, "in>fc2, fc1>fc3"));
  nest_net *net;
  assert_ok(nest_net_create(specs, n, (nest_shape){1, 16, 16}, 10, 4, 1, &net));
  free(specs);
  assert_ok(nest_net_init_ex(net, 4, 0.3, 0.2, -1));
  assert_int_equal(net->nskips, 2);
  perturb(net, 12);
  save_idx_model(net, path);
}

/* What nest_infer must print and write: the model loaded again, the data read and normalised
 * with its record, nest_net_forward in eval mode. */
typedef struct {
  int64_t n, wrong, top5_wrong;
  int *pred, *label;
  float *score;
} expected;

/* The class (ties to the lower index), its softmax probability and the errors of logits
 * [n, k] against labels y. */
static void expect_logits(const float *logits, const int32_t *y, int64_t n, int k, expected *e) {
  e->n = n, e->wrong = 0;
  e->pred = malloc(sizeof(int) * (size_t)n), e->label = malloc(sizeof(int) * (size_t)n);
  e->score = malloc(sizeof(float) * (size_t)n);
  assert_true(e->pred && e->label && e->score);
  for (int64_t i = 0; i < n; ++i) {
    const float *z = logits + i * k;
    int b = 0;
    for (int j = 1; j < k; ++j)
      if (z[j] > z[b]) b = j;
    double s = 0;
    for (int j = 0; j < k; ++j) s += exp((double)z[j] - z[b]);
    e->pred[i] = b, e->label[i] = y[i], e->score[i] = (float)(1.0 / s);
    e->wrong += b != y[i];
  }
  e->top5_wrong = n - nest_loss_topk_hits(logits, y, (int)n, k, 5);
}

static void expect_from(const char *model, nest_dataset *ds, expected *e) {
  nest_net *net;
  nest_model_input in;
  assert_ok(nest_model_load_input(model, (int)ds->n, 1, &net, &in));
  assert_ok(nest_dataset_set_norm(ds, &in.norm));
  ds->u8_scale = in.scale;
  const int64_t n = ds->n, d = nest_dataset_dim(ds);
  const int k = net->nclasses;
  float *x = nest_test_falloc((size_t)(n * d));
  int64_t *idx = malloc(sizeof(int64_t) * (size_t)n);
  int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
  assert_non_null(idx);
  assert_non_null(y);
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  nest_dataset_gather(ds, idx, (int)n, x, y);
  const nest_ctx ctx = {.n = (int)n, .train = 0, .nthreads = 1};
  const float *logits;
  assert_ok(nest_net_forward(net, &ctx, x, &logits));
  expect_logits(logits, y, n, k, e);
  free(x);
  free(idx);
  free(y);
  nest_model_input_free(&in);
  nest_net_destroy(&net);
}

static void expected_free(expected *e) {
  free(e->pred);
  free(e->label);
  free(e->score);
}

/* The predictions CSV is a header and one line per sample: index, name of the expected class,
 * its probability (to 1e-5), the true class's name when labelled. */
static void check_predictions(const char *csv, const expected *e, char *const *names,
                              int labelled) {
  static char text[1 << 20];
  nest_test_slurp(csv, text, sizeof text);
  const char *p = text;
  const char *head = labelled ? "index,label,score,true_label\n" : "index,label,score\n";
  assert_int_equal(strncmp(p, head, strlen(head)), 0);
  p += strlen(head);
  for (int64_t i = 0; i < e->n; ++i) {
    long long idx;
    char name[64], truth[64] = "";
    double score;
    int got = labelled ? sscanf(p, "%lld,%63[^,],%lf,%63[^\n]", &idx, name, &score, truth)
                       : sscanf(p, "%lld,%63[^,],%lf", &idx, name, &score);
    if (got != (labelled ? 4 : 3)) fail_msg("line %lld of %s: '%.60s'", (long long)i, csv, p);
    assert_int_equal(idx, i);
    assert_string_equal(name, names[e->pred[i]]);
    assert_true(fabs(score - e->score[i]) <= 1e-5);
    if (labelled) assert_string_equal(truth, names[e->label[i]]);
    p = strchr(p, '\n');
    assert_non_null(p);
    ++p;
  }
  assert_int_equal(*p, '\0');
}

/* stdout says "error X% (W / N)" with W = want (and the top-5 error when asked for). */
static void check_error_line(int64_t wrong, int64_t n, int64_t top5_wrong) {
  char want[128];
  snprintf(want, sizeof want, "error %.2f%% (%lld / %lld)", 100.0 * (double)wrong / (double)n,
           (long long)wrong, (long long)n);
  if (!strstr(out_text, want)) fail_msg("stdout lacks '%s':\n%s", want, out_text);
  if (top5_wrong < 0) {
    assert_null(strstr(out_text, "top-5"));
    return;
  }
  snprintf(want, sizeof want, "top-5 error %.2f%% (%lld / %lld)",
           100.0 * (double)top5_wrong / (double)n, (long long)top5_wrong, (long long)n);
  if (!strstr(out_text, want)) fail_msg("stdout lacks '%s':\n%s", want, out_text);
}

/* 1 if /usr/bin/python3 has h5py and numpy (else a SKIP note). */
static int python_ready(void) {
  static int ready = -1;
  if (ready < 0) {
    ready = nest_test_run("/usr/bin/python3 -c 'import h5py, numpy' 2>/dev/null", NULL, 0, NULL,
                          0) == 0;
    if (!ready)
      printf("SKIP (python): /usr/bin/python3 lacks h5py or numpy (Debian python3-h5py, "
             "python3-numpy; jobs/setup.sh installs them)\n");
  }
  return ready;
}

/* docs/examples/infer_numpy.py --predictions ARGS prints "i,name" for the expected classes. */
static void check_python(const char *args, const expected *e, char *const *names) {
  if (!python_ready()) return;
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' --predictions %s", PYEXAMPLE, args);
  static char text[1 << 20];
  const int rc = nest_test_run(cmd, text, sizeof text, err_text, sizeof err_text);
  if (rc != 0) fail_msg("%s: exit %d: %s", cmd, rc, err_text);
  const char *p = text;
  for (int64_t i = 0; i < e->n; ++i) {
    char want[96];
    snprintf(want, sizeof want, "%lld,%s\n", (long long)i, names[e->pred[i]]);
    if (strncmp(p, want, strlen(want)) != 0)
      fail_msg("python line %lld: '%.40s', nest: '%s'", (long long)i, p, want);
    p += strlen(want);
  }
  printf("infer_numpy.py: the same class as nest_infer for all %lld samples\n", (long long)e->n);
}

/* ---- IDX images ------------------------------------------------------------------------------ */

/* An IDX case: the model dir/TAG.h5 written by save, 300 images of 16x16 with labels
 * (dir/TAG-img.idx, dir/TAG-lab.idx), two prediction CSV paths, and what nest_infer must print
 * for them into e. */
typedef struct {
  char model[1024], img[1024], lab[1024], csv[1024], csv2[1024];
} idx_case;

static void idx_case_setup(idx_case *c, const char *tag, void (*save)(const char *),
                           expected *e) {
  snprintf(c->model, sizeof c->model, "%s/%s.h5", dir, tag);
  snprintf(c->img, sizeof c->img, "%s/%s-img.idx", dir, tag);
  snprintf(c->lab, sizeof c->lab, "%s/%s-lab.idx", dir, tag);
  snprintf(c->csv, sizeof c->csv, "%s/%s-pred.csv", dir, tag);
  snprintf(c->csv2, sizeof c->csv2, "%s/%s-pred2.csv", dir, tag);
  save(c->model);
  write_idx(c->img, c->lab, 300, 16, 16);
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = c->img, o.labels_path = c->lab;
  nest_dataset *ds;
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  expect_from(c->model, ds, e);
  nest_dataset_destroy(&ds);
}

static void test_infer_idx(void **state) {
  idx_case c;
  expected e;
  idx_case_setup(&c, "conv", save_conv_model, &e);
  const char *model = c.model, *img = c.img, *lab = c.lab, *csv = c.csv, *csv2 = c.csv2;
  char args[8192];

  /* the sparse program (the default) */
  snprintf(args, sizeof args, "'%s' '%s' '%s' --out '%s' --threads 1 --batch 64", model, img,
           lab, csv);
  if (tool(INFER, args) != 0) fail_msg("nest_infer %s: %s", args, err_text);
  assert_non_null(strstr(out_text, "sparse path"));
  check_error_line(e.wrong, e.n, e.top5_wrong);
  check_predictions(csv, &e, digit_names, 1);
  /* 2 threads, another batch size, --labels: the same bytes (the sparse program's logits do not
   * depend on either) */
  snprintf(args, sizeof args, "'%s' '%s' --labels '%s' --out '%s' --threads 2 --batch 100", model,
           img, lab, csv2);
  assert_int_equal(tool(INFER, args), 0);
  char a[1 << 16], b[1 << 16];
  nest_test_slurp(csv, a, sizeof a);
  nest_test_slurp(csv2, b, sizeof b);
  assert_string_equal(a, b);
  /* the dense masked path: the same predictions; at 1 and 2 threads the same bytes */
  for (int t = 1; t <= 2; ++t) {
    snprintf(args, sizeof args, "'%s' '%s' '%s' --dense --out '%s' --force --batch 64 --threads %d",
             model, img, lab, csv2, t);
    assert_int_equal(tool(INFER, args), 0);
    assert_non_null(strstr(out_text, "dense path"));
    check_error_line(e.wrong, e.n, e.top5_wrong);
    check_predictions(csv2, &e, digit_names, 1);
    static char d1[1 << 16];
    if (t == 1) nest_test_slurp(csv2, d1, sizeof d1);
    else nest_test_slurp(csv2, b, sizeof b), assert_string_equal(d1, b);
  }
  /* --out exists: refused without --force (the file left as it was), replaced with it */
  snprintf(args, sizeof args, "'%s' '%s' '%s' --out '%s'", model, img, lab, csv);
  assert_int_equal(tool(INFER, args), 1);
  char want[2048];
  snprintf(want, sizeof want, "nest_infer: error: %s: ", csv);
  assert_one_error(want, "--force");
  nest_test_slurp(csv, b, sizeof b);
  assert_string_equal(a, b);
  strcat(args, " --force");
  assert_int_equal(tool(INFER, args), 0);
  /* a run directory stands for its model.h5; without one it is an error */
  char run[1024], cmd[4096];
  snprintf(run, sizeof run, "%s/run-idx", dir);
  assert_int_equal(mkdir(run, 0755), 0);
  snprintf(args, sizeof args, "'%s' '%s' '%s'", run, img, lab);
  assert_int_equal(tool(INFER, args), 1);
  snprintf(want, sizeof want, "nest_infer: error: %s: ", run);
  assert_one_error(want, "no model.h5");
  snprintf(cmd, sizeof cmd, "cp '%s' '%s/model.h5'", model, run);
  assert_int_equal(system(cmd), 0);
  assert_int_equal(tool(INFER, args), 0);
  check_error_line(e.wrong, e.n, e.top5_wrong);
  /* without labels: predictions only */
  snprintf(args, sizeof args, "'%s' '%s' --no-labels --out '%s' --force", model, img, csv);
  assert_int_equal(tool(INFER, args), 0);
  assert_non_null(strstr(out_text, "no labels"));
  check_predictions(csv, &e, digit_names, 0);

  snprintf(args, sizeof args, "'%s' '%s' '%s'", model, img, lab);
  check_python(args, &e, digit_names);
  expected_free(&e);
}

/* A model with SCANN skip tensors runs on the sparse path (no note of a dense fallback) and
 * predicts what nest_net_forward predicts, the same bytes at 1 and 2 threads and any batch size;
 * --dense still runs the dense path. */
static void test_infer_skips(void **state) {
  idx_case c;
  expected e;
  idx_case_setup(&c, "skips", save_skip_model, &e);
  char args[8192];
  static char first[1 << 16], again[1 << 16];
  const char *mode[3][2] = {{"1", "64"}, {"2", "100"}, {"2", "1"}};
  for (int m = 0; m < 3; ++m) {
    snprintf(args, sizeof args, "'%s' '%s' '%s' --out '%s' --force --threads %s --batch %s",
             c.model, c.img, c.lab, c.csv, mode[m][0], mode[m][1]);
    if (tool(INFER, args) != 0) fail_msg("nest_infer %s: %s", args, err_text);
    assert_non_null(strstr(out_text, "sparse path"));
    if (err_text[0]) fail_msg("nest_infer %s wrote to stderr: %s", args, err_text);
    check_error_line(e.wrong, e.n, e.top5_wrong);
    check_predictions(c.csv, &e, digit_names, 1);
    nest_test_slurp(c.csv, m == 0 ? first : again, sizeof first);
    if (m > 0) assert_string_equal(first, again);
  }
  snprintf(args, sizeof args, "'%s' '%s' '%s' --dense --out '%s' --force", c.model, c.img, c.lab,
           c.csv2);
  assert_int_equal(tool(INFER, args), 0);
  assert_non_null(strstr(out_text, "dense path"));
  check_predictions(c.csv2, &e, digit_names, 1);
  expected_free(&e);
}

/* ---- CSV ------------------------------------------------------------------------------------- */

static char *bm_names[2] = {"B", "M"};

/* A tabular model for 4 features, classes B / M, trained on "id,label,f1..f4" (label column 1,
 * column 0 dropped, no header). */
static void save_csv_model(const char *path) {
  nest_net *net = nest_test_net("mlp:4-7-2", (nest_shape){4, 1, 1}, 2, NULL, NULL, 0);
  assert_ok(nest_net_init(net, 8, 0.8, -1));
  perturb(net, 21);
  float mean[4] = {1.0f, -2.0f, 0.5f, 10.0f}, sd[4] = {0.5f, 2.0f, 1.0f, 4.0f};
  const nest_model_input in = {.known = 1, .data_shape = {4, 1, 1}, .scale = 1.0f,
                               .norm = {4, mean, sd}, .nlabels = 2, .labels = bm_names,
                               .format = "csv", .csv_label_col = 1, .csv_delim = ',',
                               .csv_drop_cols = "0"};
  const nest_model_info info = {.val_error = NAN, .test_error = NAN, .input = &in};
  assert_ok(nest_model_save_info(net, &info, path));
  nest_net_destroy(&net);
}

/* n rows "id,label,f1..f4" (label_col 1) or "id,f1..f4" (labelled = 0). */
static void write_rows(const char *path, int n, int labelled, const char *bad_label) {
  char *t = malloc((size_t)n * 96 + 1);
  assert_non_null(t);
  size_t used = 0;
  for (int i = 0; i < n; ++i) {
    const float f[4] = {1.0f + 0.1f * (float)(i % 7), -2.0f + 0.25f * (float)(i % 5),
                        0.5f * (float)(i % 3), 8.0f + (float)(i % 11)};
    const char *l = bad_label && i == n - 1 ? bad_label : bm_names[(i * 3) % 2];
    used += (size_t)sprintf(t + used, "%d%s%s,%g,%g,%g,%g\n", 9000 + i, labelled ? "," : "",
                            labelled ? l : "", f[0], f[1], f[2], f[3]);
  }
  write_text(path, t);
  free(t);
}

static void test_infer_csv(void **state) {
  char model[1024], rows[1024], nolab[1024], badrows[1024], csv[1024], args[8192], want[2048];
  snprintf(model, sizeof model, "%s/tab.h5", dir);
  snprintf(rows, sizeof rows, "%s/rows.csv", dir);
  snprintf(nolab, sizeof nolab, "%s/new-rows.csv", dir);
  snprintf(badrows, sizeof badrows, "%s/bad-rows.csv", dir);
  snprintf(csv, sizeof csv, "%s/tab-pred.csv", dir);
  save_csv_model(model);
  write_rows(rows, 40, 1, NULL);
  write_rows(nolab, 40, 0, NULL);
  write_rows(badrows, 40, 1, "X");
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = rows, o.csv_label_col = 1, o.csv_drop_cols = "0";
  nest_dataset *ds;
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  expected e;
  expect_from(model, ds, &e);
  nest_dataset_destroy(&ds);

  /* the training CSV's options come from the model */
  snprintf(args, sizeof args, "'%s' '%s' --out '%s'", model, rows, csv);
  if (tool(INFER, args) != 0) fail_msg("nest_infer %s: %s", args, err_text);
  check_error_line(e.wrong, e.n, -1); /* 2 classes: no top-5 */
  check_predictions(csv, &e, bm_names, 1);
  /* an unknown label is named */
  snprintf(args, sizeof args, "'%s' '%s'", model, badrows);
  assert_int_equal(tool(INFER, args), 1);
  snprintf(want, sizeof want, "nest_infer: error: %s:40: ", badrows);
  assert_one_error(want, "unknown label 'X'");
  /* new rows without labels: predictions only */
  snprintf(args, sizeof args, "'%s' '%s' --no-labels --out '%s' --force", model, nolab, csv);
  assert_int_equal(tool(INFER, args), 0);
  assert_non_null(strstr(out_text, "no labels: predictions only"));
  check_predictions(csv, &e, bm_names, 0);
  /* columns that do not give the model's features */
  snprintf(args, sizeof args, "'%s' '%s' --no-labels --drop-cols ''", model, nolab);
  assert_int_equal(tool(INFER, args), 2); /* an empty value is a usage error */
  snprintf(args, sizeof args, "'%s' '%s' --label-col 0 --drop-cols 1", model, rows);
  assert_int_equal(tool(INFER, args), 1);
  snprintf(want, sizeof want, "nest_infer: error: %s:1: ", rows);
  assert_one_error(want, "unknown label '9000'");
  write_text(badrows, "1,B,1,2,3\n2,M,4,5,6\n");
  snprintf(args, sizeof args, "'%s' '%s'", model, badrows);
  assert_int_equal(tool(INFER, args), 1);
  snprintf(want, sizeof want, "nest_infer: error: %s: ", badrows);
  assert_one_error(want, "rows have 3 features but the model");

  snprintf(args, sizeof args, "'%s' '%s'", model, rows);
  check_python(args, &e, bm_names);
  snprintf(args, sizeof args, "'%s' '%s'", model, nolab);
  check_python(args, &e, bm_names);
  expected_free(&e);
}

/* ---- image shards ----------------------------------------------------------------------------- */

/* Image shards (3x10x10 bytes) with a model trained on centre 8x8 crops: nest_infer reads them
 * with the batch reader training evaluates with (centre window, the model's normalisation)
 * and predicts what nest_net_forward predicts on those inputs. */
static void test_infer_shards(void **state) {
  char prefix[1024], pattern[1100], model[1024], csv[1024], args[8192], want[2048];
  snprintf(prefix, sizeof prefix, "%s/shard", dir);
  snprintf(pattern, sizeof pattern, "%s-*.h5", prefix);
  snprintf(model, sizeof model, "%s/crop.h5", dir);
  snprintf(csv, sizeof csv, "%s/shard-pred.csv", dir);
  int nfiles;
  assert_ok(nest_shards_synthetic(prefix, 50, (nest_shape){3, 10, 10}, 4, 20, 3, 0, &nfiles));
  assert_int_equal(nfiles, 3);
  nest_net *net = nest_test_net("mlp:192-9-4", (nest_shape){3, 8, 8}, 4, NULL, NULL, 0);
  assert_ok(nest_net_init(net, 6, 0.7, -1));
  perturb(net, 31);
  float mean[3] = {0.4f, 0.5f, 0.45f}, sd[3] = {0.2f, 0.25f, 0.3f};
  char *names[4] = {"ant", "bee", "cat", "dog"};
  const nest_model_input in = {.known = 1, .data_shape = {3, 10, 10}, .crop = 8, .is_u8 = 1,
                               .scale = 1.0f / 255, .norm = {3, mean, sd}, .nlabels = 4,
                               .labels = names, .format = "shards", .csv_delim = ','};
  const nest_model_info info = {.val_error = NAN, .test_error = NAN, .input = &in};
  assert_ok(nest_model_save_info(net, &info, model));
  nest_net_destroy(&net);
  /* what nest_infer must predict */
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = pattern;
  nest_dataset *ds;
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  assert_ok(nest_dataset_set_crop(ds, 8));
  assert_ok(nest_dataset_set_norm(ds, &in.norm));
  ds->u8_scale = in.scale;
  assert_ok(nest_model_load(model, 50, 1, &net));
  float *x = nest_test_falloc(50 * 192);
  int32_t y[50];
  int64_t ids[50];
  for (int i = 0; i < 50; ++i) ids[i] = i;
  uint8_t *scratch = malloc(300);
  assert_non_null(scratch);
  const nest_batch_req req = {.ds = ds, .ids = ids, .n = 50};
  assert_ok(nest_prefetch_read(&req, 0, 0, 1, scratch, 300, x, y));
  const nest_ctx ctx = {.n = 50, .train = 0, .nthreads = 1};
  const float *logits;
  assert_ok(nest_net_forward(net, &ctx, x, &logits));
  expected e;
  expect_logits(logits, y, 50, 4, &e);
  snprintf(args, sizeof args, "'%s' '%s' --out '%s'", model, pattern, csv);
  if (tool(INFER, args) != 0) fail_msg("nest_infer %s: %s", args, err_text);
  check_error_line(e.wrong, 50, -1); /* 4 classes: no top-5 */
  check_predictions(csv, &e, names, 1);
  /* a model trained on crops takes image shards only */
  char img[1024], lab[1024];
  snprintf(img, sizeof img, "%s/img10.idx", dir);
  snprintf(lab, sizeof lab, "%s/lab10.idx", dir);
  write_idx(img, lab, 5, 10, 10);
  snprintf(args, sizeof args, "'%s' '%s' --no-labels", model, img);
  assert_int_equal(tool(INFER, args), 1);
  snprintf(want, sizeof want, "nest_infer: error: %s: ", img);
  assert_one_error(want, "samples are 1x10x10 but the model");
  nest_net *one = nest_test_net("mlp:64-5-4", (nest_shape){1, 8, 8}, 4, NULL, NULL, 0);
  nest_model_input in1 = in;
  in1.data_shape = (nest_shape){1, 10, 10};
  in1.norm.nch = 1;
  const nest_model_info info1 = {.val_error = NAN, .test_error = NAN, .input = &in1};
  assert_ok(nest_model_save_info(one, &info1, model));
  nest_net_destroy(&one);
  assert_int_equal(tool(INFER, args), 1);
  assert_one_error(want, "takes image shards centre-cropped to 8");
  free(x);
  free(scratch);
  expected_free(&e);
  nest_dataset_destroy(&ds);
  nest_net_destroy(&net);
}

/* ---- usage and data errors ---------------------------------------------------------------------- */

static void test_infer_errors(void **state) {
  char model[1024], img[1024], lab[1024], old[1024], args[8192], want[2048];
  snprintf(model, sizeof model, "%s/err-conv.h5", dir);
  snprintf(img, sizeof img, "%s/img28.idx", dir);
  snprintf(lab, sizeof lab, "%s/lab28.idx", dir);
  snprintf(old, sizeof old, "%s/format1.h5", dir);
  save_conv_model(model);
  write_idx(img, lab, 20, 28, 28);
  const struct {
    const char *args, *word;
  } usage[] = {{"", "need a model and data"},
               {"m.h5", "need a model and data"},
               {"m.h5 d.csv --bogus", "unknown option '--bogus'"},
               {"m.h5 d.csv --threads 0", "--threads 0"},
               {"m.h5 d.csv --format xls", "--format xls"},
               {"m.h5 d.csv --batch", "--batch needs a value"},
               {"m.h5 i.idx l.idx --no-labels", "--no-labels with a labels file"},
               {"m.h5 i.idx l.idx x.idx", "unexpected argument 'x.idx'"}};
  for (size_t k = 0; k < sizeof usage / sizeof usage[0]; ++k) {
    assert_int_equal(tool(INFER, usage[k].args), 2);
    if (!strstr(err_text, usage[k].word)) fail_msg("%s: '%s'", usage[k].args, err_text);
  }
  assert_int_equal(tool(INFER, "--help"), 0);
  assert_non_null(strstr(out_text, "usage: nest_infer"));
  /* images of another shape; IDX without labels */
  snprintf(args, sizeof args, "'%s' '%s' '%s'", model, img, lab);
  assert_int_equal(tool(INFER, args), 1);
  snprintf(want, sizeof want, "nest_infer: error: %s: ", img);
  assert_one_error(want, "samples are 1x28x28 but the model");
  snprintf(args, sizeof args, "'%s' '%s'", model, img);
  assert_int_equal(tool(INFER, args), 1);
  assert_one_error(want, "IDX images need a labels file too");
  /* a model without an input record (format 1) */
  nest_net *net = nest_test_net("mlp:4-3-2", (nest_shape){4, 1, 1}, 2, NULL, NULL, 0);
  assert_ok(nest_net_init(net, 1, 1.0, -1));
  assert_ok(nest_model_save(net, old));
  nest_net_destroy(&net);
  snprintf(args, sizeof args, "'%s' '%s' '%s'", old, img, lab);
  assert_int_equal(tool(INFER, args), 1);
  snprintf(want, sizeof want, "nest_infer: error: %s: ", old);
  assert_one_error(want, "records no input normalisation");
  snprintf(args, sizeof args, "--onnx '%s' '%s/old.onnx'", old, dir);
  assert_int_equal(tool(EXPORT, args), 1);
  snprintf(want, sizeof want, "nest_export: error: %s: ", old);
  assert_one_error(want, "--config");
}

/* ---- bad model files through every tool ----------------------------------------------------------- */

static void copy_file(const char *from, const char *to, long keep) {
  static char buf[1 << 22];
  FILE *f = fopen(from, "rb");
  assert_non_null(f);
  const size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  assert_int_equal(nest_test_write_file(to, buf, keep >= 0 && (size_t)keep < n ? (size_t)keep : n),
                   0);
}

static hid_t open_rw(const char *path) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  assert_true(f >= 0);
  return f;
}

/* In a copy of good: element k of float dataset `name` set to v. */
static void poke_float(const char *good, const char *bad, const char *name, size_t k, float v) {
  copy_file(good, bad, -1);
  hid_t f = open_rw(bad), d = H5Dopen2(f, name, H5P_DEFAULT);
  assert_true(d >= 0);
  hid_t sp = H5Dget_space(d);
  const hssize_t n = H5Sget_simple_extent_npoints(sp);
  H5Sclose(sp);
  assert_true(n > (hssize_t)k);
  float *x = malloc((size_t)n * sizeof(float));
  assert_non_null(x);
  assert_true(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
  x[k] = v;
  assert_true(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
  free(x);
  H5Dclose(d);
  H5Fclose(f);
}

/* In a copy of good: integer attribute `attr` of object `obj` set to v (n values). */
static void poke_attr(const char *good, const char *bad, const char *obj, const char *attr,
                      const int *v) {
  copy_file(good, bad, -1);
  hid_t f = open_rw(bad), o = H5Oopen(f, obj, H5P_DEFAULT), a = H5Aopen(o, attr, H5P_DEFAULT);
  assert_true(a >= 0 && H5Awrite(a, H5T_NATIVE_INT, v) >= 0);
  H5Aclose(a);
  H5Oclose(o);
  H5Fclose(f);
}

/* The bad file through nest_infer, nest_export (HDF5, ONNX), nest_report and nest_mpi's
 * model.init_from: each fails with one error line naming the file and containing `word`. */
static void every_tool_refuses(const char *bad, const char *data, const char *word) {
  char args[8192], want[2048];
  const struct {
    const char *prog, *fmt, *name;
  } tools[] = {{INFER, "'%s' '%s'", "nest_infer"},
               {EXPORT, "'%s' '%s/x-out.h5' --force", "nest_export"},
               {EXPORT, "--onnx '%s' '%s/x-out.onnx' --force", "nest_export"},
               {REPORT, "'%s'", "nest_report"}};
  for (size_t t = 0; t < sizeof tools / sizeof tools[0]; ++t) {
    snprintf(args, sizeof args, tools[t].fmt, bad, t == 0 ? data : dir);
    const int code = tool(tools[t].prog, args);
    snprintf(want, sizeof want, "%s: error: %s: ", tools[t].name, bad);
    if (code != 1) fail_msg("%s %s: exit %d (%s)", tools[t].name, args, code, err_text);
    assert_one_error(want, word);
  }
  /* nest_mpi, 2 ranks: one error line (Open MPI may add its own notice after it) */
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "cd '%s' && timeout 120 mpiexec -n 2 --oversubscribe '%s/nest_mpi' "
           "init.ini --set model.init_from='%s'", dir, NEST_BINARY_DIR, bad);
  const int code = nest_test_run(cmd, out_text, sizeof out_text, err_text, sizeof err_text);
  if (code == 0 || code == 124) fail_msg("nest_mpi init_from=%s: exit %d", bad, code);
  const char *line = strstr(err_text, "nest_mpi: error: ");
  if (!line || strstr(line + 1, "nest_mpi: error: ") || !strstr(line, bad) || !strstr(line, word))
    fail_msg("nest_mpi init_from=%s: expected one error line with '%s', got:\n%s", bad, word,
             err_text);
}

static void test_bad_model_files(void **state) {
  char good[1024], bad[1024], data[1024], train[1024];
  snprintf(good, sizeof good, "%s/good-tab.h5", dir);
  snprintf(bad, sizeof bad, "%s/bad-tab.h5", dir);
  snprintf(data, sizeof data, "%s/bad-rows-data.csv", dir);
  snprintf(train, sizeof train, "%s/init-train.h5", dir);
  save_csv_model(good);
  write_rows(data, 10, 1, NULL);
  /* a run that would start from the model: 4 features, 2 classes */
  nest_dataset *ds;
  assert_ok(nest_dataset_synthetic(60, (nest_shape){4, 1, 1}, 2, 0.5f, 2, 0, &ds));
  assert_ok(nest_dataset_save_h5(ds, train));
  nest_dataset_destroy(&ds);
  write_text(nest_test_path(dir, "init.ini"),
             "[data]\ntrain = init-train.h5\n[model]\narch = mlp:4-7-2\n[train]\nepochs = 1\n"
             "batch = 20\n[run]\nrun_dir = init-run\n");
  /* the good file passes every tool (nest_mpi not run: the point is what it refuses) */
  char args[4096];
  snprintf(args, sizeof args, "'%s' '%s'", good, data);
  assert_int_equal(tool(INFER, args), 0);

  copy_file(good, bad, 3000);
  every_tool_refuses(bad, data, "truncated");
  copy_file(good, bad, -1);
  hid_t f = open_rw(bad);
  assert_true(H5Ldelete(f, "/layers/002_fc2/W_value", H5P_DEFAULT) >= 0);
  H5Fclose(f);
  every_tool_refuses(bad, data, "missing dataset /layers/002_fc2/W_value");
  const int shape[2] = {7, 5};
  poke_attr(good, bad, "/layers/000_fc1/W_value", "shape", shape);
  every_tool_refuses(bad, data, "attribute 'shape' = 7x5, expected 7x4");
  poke_float(good, bad, "/layers/000_fc1/W_value", 0, NAN);
  every_tool_refuses(bad, data, "/layers/000_fc1/W_value[0] is NaN");
  poke_float(good, bad, "/layers/002_fc2/b", 1, INFINITY);
  every_tool_refuses(bad, data, "/layers/002_fc2/b[1] is Inf");
  const int v99 = 99;
  poke_attr(good, bad, "/", "format_version", &v99);
  every_tool_refuses(bad, data, "format_version 99 not supported");
  poke_float(good, bad, "/input/std", 2, -1.0f);
  every_tool_refuses(bad, data, "/input/std[2] = -1");
}

static int setup(void **state) {
  (void)state;
  dir = nest_test_tmpdir();
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_infer_idx),
      cmocka_unit_test(test_infer_skips),
      cmocka_unit_test(test_infer_csv),
      cmocka_unit_test(test_infer_shards),
      cmocka_unit_test(test_infer_errors),
      cmocka_unit_test(test_bad_model_files),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
