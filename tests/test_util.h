/* test_util.h — small helpers shared by the test executables. */
#ifndef NEST_TEST_UTIL_H
#define NEST_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nest/status.h"

/* A fresh temporary directory (mkdtemp under $TMPDIR or /tmp), removed at exit. */
const char *nest_test_tmpdir(void);
/* Path join into a static rotating buffer: nest_test_path(dir, "x.h5"). */
const char *nest_test_path(const char *dir, const char *name);
/* Real data under ../shared/data (NEST_DATA_DIR): full path if the file exists, else NULL
 * after printing "SKIP: <why>" (callers then cmocka skip()). */
const char *nest_test_data(const char *relpath);
/* Fill with N(0, scale^2) from a counter RNG keyed by seed. */
void nest_test_fill_normal(float *x, size_t n, uint64_t seed, float scale);
/* Write bytes to a file (for crafting bad inputs); returns 0 on success. */
int nest_test_write_file(const char *path, const void *data, size_t bytes);
/* Max |a - b| / max(1, |b|) over n elements. */
double nest_test_max_rel_diff(const float *a, const double *b, size_t n);

/* Read a whole (text) file into buf (at most cap-1 bytes, NUL-terminated; "" if unreadable). */
void nest_test_slurp(const char *path, char *buf, size_t cap);
/* Run `command` through the shell with stdout / stderr captured into out / err (either may be
 * NULL); returns its exit code, or -1 if it did not exit normally. */
int nest_test_run(const char *command, char *out, size_t out_cap, char *err, size_t err_cap);

/* Fail the CMocka test with the call, the status name and nest's message unless expr is
 * NEST_OK. Use after <cmocka.h>. */
#define assert_ok(expr)                                                                      \
  do {                                                                                       \
    nest_status s_ = (expr);                                                                 \
    if (s_ != NEST_OK) fail_msg("%s: %s: %s", #expr, nest_status_name(s_), nest_error_message()); \
  } while (0)

/* What print(f) writes, as a malloc'd string (NULL if out of memory): e.g. the help text of
 * nest_config_print_help. */
char *nest_test_capture(void (*print)(FILE *f));

/* FNV-1a of n bytes (comparing whole arenas, e.g. momentum, before and after). */
uint64_t nest_test_hash_bytes(const void *p, size_t n);

/* calloc that aborts on failure (tests only). */
double *nest_test_dalloc(size_t n);
float *nest_test_falloc(size_t n);
void nest_test_to_double(const float *a, double *b, size_t n);
/* Normwise relative difference max|a - b| / max(max|b|, 1e-30); NaN propagates. */
double nest_test_norm_rel(const float *a, const double *b, size_t n);

#endif
