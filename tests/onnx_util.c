/* onnx_util.c — ONNX Runtime and the ONNX checker for the export tests (onnx_util.h). */
#include "onnx_util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "test_util.h"

#define ORT_DIR NEST_BINARY_DIR "/onnx/node"

int onnx_test_ort_ready(char *why, size_t cap) {
  char err[4096];
  int rc = nest_test_run("bash '" NEST_SOURCE_DIR "/tests/onnx/ort_install.sh' '" ORT_DIR "'", NULL,
                         0, err, sizeof err);
  char ok[256];
  nest_test_slurp(ORT_DIR "/ort_ok", ok, sizeof ok);
  if (rc == 0 && ok[0]) return 1;
  char reason[1024];
  nest_test_slurp(ORT_DIR "/ort_unavailable.txt", reason, sizeof reason);
  snprintf(why, cap, "%s", reason[0] ? reason : err);
  if (rc != 0) fprintf(stderr, "ort_install.sh exited %d: %s\n", rc, err);
  return 0;
}

int onnx_test_ort_run(const char *model, const float *x, int n, int ndims, const int *dims,
                      int batch, float *out, int nout, char *err, size_t cap) {
  const char *dir = nest_test_tmpdir();
  char in_path[1024], out_path[1024], cmd[8192], sout[1024];
  snprintf(in_path, sizeof in_path, "%s/ort_in.f32", dir);
  snprintf(out_path, sizeof out_path, "%s/ort_out.f32", dir);
  size_t per = 1;
  for (int i = 0; i < ndims; ++i) per *= (size_t)dims[i];
  if (nest_test_write_file(in_path, x, sizeof(float) * per * (size_t)n) != 0) {
    snprintf(err, cap, "cannot write %s", in_path);
    return -1;
  }
  int len = snprintf(cmd, sizeof cmd,
                     "NODE_PATH='" ORT_DIR "/node_modules' node '" NEST_SOURCE_DIR
                     "/tests/onnx/ort_run.js' '%s' '%s' '%s' %d",
                     model, in_path, out_path, batch);
  for (int i = 0; i < ndims; ++i)
    len += snprintf(cmd + len, sizeof cmd - (size_t)len, " %d", dims[i]);
  int rc = nest_test_run(cmd, sout, sizeof sout, err, cap);
  if (rc != 0) return rc;
  char expect[64];
  snprintf(expect, sizeof expect, "rows=%d out=%d", n, nout);
  if (!strstr(sout, expect)) {
    snprintf(err, cap, "ort_run.js printed \"%s\", expected \"%s\"", sout, expect);
    return -1;
  }
  FILE *f = fopen(out_path, "rb");
  size_t got = f ? fread(out, sizeof(float), (size_t)n * nout, f) : 0;
  if (f) fclose(f);
  if (got != (size_t)n * nout) {
    snprintf(err, cap, "%s: %zu of %zu floats", out_path, got, (size_t)n * nout);
    return -1;
  }
  return 0;
}

int onnx_test_check(const char *model, char *out, size_t cap) {
  char cmd[4096], err[4096];
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 '" NEST_SOURCE_DIR "/tests/onnx/check_model.py' '%s'",
           model);
  int rc = nest_test_run(cmd, out, cap, err, sizeof err);
  if (rc != 0) snprintf(out, cap, "%s", err); /* the checker's message, or why it skipped */
  return rc;
}

double onnx_test_max_abs_diff(const float *a, const float *b, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; ++i) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (!(d <= m)) m = d; /* NaN wins */
  }
  return m;
}
