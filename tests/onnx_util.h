/* onnx_util.h — what the ONNX export tests share (test_onnx.c, test_onnx_mnist.c): ONNX Runtime
 * through Node.js (tests/onnx/ort_install.sh, ort_run.js) and python3-onnx's checker
 * (tests/onnx/check_model.py). */
#ifndef NEST_ONNX_UTIL_H
#define NEST_ONNX_UTIL_H

#include <stddef.h>

/* Install onnxruntime-node into the build tree if needed (idempotent; one installer at a time)
 * and say whether it can run models: 1 yes; 0 no, with the reason in why. */
int onnx_test_ort_ready(char *why, size_t cap);

/* Run `model` with ONNX Runtime on n rows of x (each of shape dims[0..ndims)), `batch` rows per
 * run; out gets n * nout floats (the logits). 0 on success, else non-zero with the tool's
 * message in err. */
int onnx_test_ort_run(const char *model, const float *x, int n, int ndims, const int *dims,
                      int batch, float *out, int nout, char *err, size_t cap);

/* python3-onnx's full check of `model` (/usr/bin/python3): the exit code (0 valid: out holds
 * the JSON summary and a LABELS line; 77 python3-onnx missing; other: invalid, message in
 * out). */
int onnx_test_check(const char *model, char *out, size_t cap);

/* Max |a - b| over n values. */
double onnx_test_max_abs_diff(const float *a, const float *b, size_t n);

#endif
