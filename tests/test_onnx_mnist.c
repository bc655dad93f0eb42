/* test_onnx_mnist.c — real models through ONNX (slow): each model file of NEST_ONNX_MODELS (the
 * CMake cache variable, or the environment variable of that name; ':'-separated paths
 * RUN/model.h5, e.g. the LeNet-300-100 and LeNet-5 NeST runs) is exported with the
 * normalisation and class names its input record holds (model format 2) — for a format-1 file,
 * the normalisation recomputed as the trainer does (the run's data.val_split and run.seed split
 * the training set, nest_dataset_train_norm over the training part) — then python3-onnx's
 * checker accepts it and ONNX Runtime runs it on the raw
 * pixels of the 10,000 MNIST test images: its predicted class equals nest_net_forward's on
 * every image and the logits agree within 1e-4. nest's test error is compared with the run's
 * summary.txt when it has one. Skips with a message without models, MNIST or the tools. */
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

#include "nest/model.h"
#include "nest/config.h"
#include "nest/data.h"
#include "nest/onnx.h"
#include "onnx_util.h"
#include "test_util.h"

#ifndef NEST_ONNX_MODELS
#define NEST_ONNX_MODELS ""
#endif
#define BATCH 250 /* rows per forward pass and per ONNX Runtime run */
#define TOL 1e-4

static int argmax(const float *v, int n) {
  int k = 0;
  for (int i = 1; i < n; ++i)
    if (v[i] > v[k]) k = i;
  return k;
}

/* "test_error = X" of RUN/summary.txt, or NAN. */
static double summary_test_error(const char *run_dir) {
  char path[2100], text[65536];
  snprintf(path, sizeof path, "%s/summary.txt", run_dir);
  nest_test_slurp(path, text, sizeof text);
  for (const char *p = text; (p = strstr(p, "test_error = ")) != NULL; ++p)
    if (p == text || p[-1] == '\n') return atof(p + strlen("test_error = "));
  return NAN;
}

/* The training normalisation of the run in run_dir: its split of `train`, then the trainer's
 * statistics over the training part. */
static void run_norm(const char *run_dir, const nest_dataset *train, nest_norm *norm) {
  char cfg_path[2100];
  snprintf(cfg_path, sizeof cfg_path, "%s/config.ini", run_dir);
  nest_config cfg;
  nest_config_defaults(&cfg);
  assert_ok(nest_config_load(&cfg, cfg_path));
  int64_t *tr = NULL, *va = NULL, ntr = 0, nva = 0;
  assert_ok(nest_dataset_split(train->n, cfg.val_split, cfg.seed, &tr, &ntr, &va, &nva));
  assert_ok(nest_dataset_train_norm(train, tr, ntr, norm));
  printf("  %s: val_split %g, seed %llu: %lld training images, mean %.6f, std %.6f\n", cfg_path,
         cfg.val_split, (unsigned long long)cfg.seed, (long long)ntr, norm->mean[0],
         norm->std[0]);
  free(tr);
  free(va);
}

/* nest's logits [n, classes] for the normalised test images. */
static void nest_logits(nest_net *net, nest_dataset *test, float *out) {
  const int64_t n = test->n, d = nest_dataset_dim(test);
  float *x = nest_test_falloc((size_t)BATCH * d);
  int64_t *idx = malloc(sizeof(int64_t) * BATCH);
  assert_non_null(idx);
  for (int64_t i0 = 0; i0 < n; i0 += BATCH) {
    const int rows = (int)(n - i0 < BATCH ? n - i0 : BATCH);
    for (int i = 0; i < rows; ++i) idx[i] = i0 + i;
    nest_dataset_gather(test, idx, rows, x, NULL);
    nest_ctx ctx = {.n = rows, .train = 0, .nthreads = 1};
    const float *logits = NULL;
    assert_ok(nest_net_forward(net, &ctx, x, &logits));
    memcpy(out + i0 * net->nclasses, logits, sizeof(float) * (size_t)rows * net->nclasses);
  }
  free(x);
  free(idx);
}

static void check_model(const char *model, nest_dataset *train, nest_dataset *test) {
  char run_dir[2048];
  snprintf(run_dir, sizeof run_dir, "%s", model);
  char *slash = strrchr(run_dir, '/');
  if (slash) *slash = '\0';
  else snprintf(run_dir, sizeof run_dir, ".");
  printf("%s\n", model);
  nest_net *net = NULL;
  nest_model_input in;
  assert_ok(nest_model_load_input(model, BATCH, 1, &net, &in));
  const nest_shape s = net->in_shape;
  assert_int_equal(nest_dataset_dim(test), nest_shape_size(s));
  nest_norm norm = {0}; /* format 1 only: recomputed */
  const nest_norm *use = &in.norm;
  if (in.known) {
    test->u8_scale = in.scale;
    printf("  normalisation and class names from the model file: mean %.6f, std %.6f\n",
           in.norm.mean[0], in.norm.std[0]);
  } else {
    run_norm(run_dir, train, &norm);
    use = &norm;
  }
  assert_ok(nest_dataset_set_norm(test, use));

  char path[1024];
  snprintf(path, sizeof path, "%s/model_%d.onnx", nest_test_tmpdir(), net->nlayers);
  const nest_onnx_prop props[] = {{"nest.source", model}};
  nest_onnx_meta meta = {.norm = use, .input_scale = test->u8_scale,
                         .labels = in.known ? in.labels : test->class_names, .nprops = 1,
                         .props = props};
  assert_ok(nest_onnx_write(net, &meta, path));
  char out[65536];
  int rc = onnx_test_check(path, out, sizeof out);
  if (rc == 77)
    printf("SKIP (checker): %s", out);
  else if (rc != 0)
    fail_msg("%s: the ONNX checker rejects the export: %s", model, out);
  else
    printf("  checker: valid (%s)\n", strstr(out, "\"ops\"") ? "ops listed" : "?");

  const int64_t n = test->n, d = nest_dataset_dim(test);
  const int k = net->nclasses;
  float *ref = nest_test_falloc((size_t)n * k), *ort = nest_test_falloc((size_t)n * k);
  nest_logits(net, test, ref);
  float *raw = nest_test_falloc((size_t)n * d); /* the pixels as they are in the file */
  for (int64_t i = 0; i < n * d; ++i) raw[i] = (float)test->u8[i];
  const int dims[3] = {s.c, s.h, s.w};
  char err[8192];
  if (onnx_test_ort_run(path, raw, (int)n, 3, dims, BATCH, ort, k, err, sizeof err) != 0)
    fail_msg("%s: ONNX Runtime failed: %s", model, err);
  int64_t agree = 0, wrong_nest = 0, wrong_ort = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int a = argmax(ref + i * k, k), b = argmax(ort + i * k, k);
    agree += a == b;
    wrong_nest += a != test->labels[i];
    wrong_ort += b != test->labels[i];
  }
  const double diff = onnx_test_max_abs_diff(ort, ref, (size_t)n * k);
  const double want = summary_test_error(run_dir);
  printf("  ONNX Runtime vs nest: %lld / %lld predicted classes agree, max |logit difference| "
         "%.3g; test error nest %.4f, ONNX Runtime %.4f, summary.txt %.4f\n",
         (long long)agree, (long long)n, diff, (double)wrong_nest / n, (double)wrong_ort / n,
         want);
  assert_int_equal(agree, n);
  assert_true(diff <= TOL);
  if (!isnan(want)) assert_true(fabs((double)wrong_nest / n - want) < 0.5 / n);
  free(ref);
  free(ort);
  free(raw);
  nest_norm_free(&norm);
  nest_model_input_free(&in);
  nest_net_destroy(&net);
}

static void test_mnist_models(void **state) {
  const char *env = getenv("NEST_ONNX_MODELS");
  const char *list = env && env[0] ? env : NEST_ONNX_MODELS;
  if (!list[0]) {
    printf("SKIP: no model files: configure with -DNEST_ONNX_MODELS=RUN/model.h5;... or set "
           "NEST_ONNX_MODELS=RUN/model.h5:...\n");
    skip();
  }
  const char *ti = nest_test_data("mnist/train-images-idx3-ubyte.gz");
  const char *tl = nest_test_data("mnist/train-labels-idx1-ubyte.gz");
  const char *si = nest_test_data("mnist/t10k-images-idx3-ubyte.gz");
  const char *sl = nest_test_data("mnist/t10k-labels-idx1-ubyte.gz");
  if (!ti || !tl || !si || !sl) skip();
  char why[1024];
  if (!onnx_test_ort_ready(why, sizeof why)) {
    printf("SKIP (ONNX Runtime): %s\n", why);
    skip();
  }
  nest_data_opts o;
  nest_data_opts_default(&o);
  nest_dataset *train = NULL, *test = NULL;
  o.path = ti;
  o.labels_path = tl;
  assert_ok(nest_dataset_load(&o, NULL, &train));
  o.path = si;
  o.labels_path = sl;
  assert_ok(nest_dataset_load(&o, train, &test));
  char models[8192];
  snprintf(models, sizeof models, "%s", list);
  int checked = 0;
  for (char *save = NULL, *m = strtok_r(models, ":", &save); m; m = strtok_r(NULL, ":", &save)) {
    if (access(m, R_OK) != 0) {
      printf("SKIP: %s not found\n", m);
      continue;
    }
    check_model(m, train, test);
    ++checked;
  }
  nest_dataset_destroy(&train);
  nest_dataset_destroy(&test);
  if (checked == 0) skip();
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_mnist_models)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
