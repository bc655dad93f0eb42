/* test_util.h — small helpers shared by the test executables. */
#ifndef NEST_TEST_UTIL_H
#define NEST_TEST_UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nest/arch.h"
#include "nest/net.h"
#include "nest/pipeline.h"
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
/* A CSV of n rows for the DR tests: the label ("c0".."c2", by the first of 3 latent normal
 * factors), then 12 features mixing the factors plus noise, so a 3-4 dimensional reduction keeps
 * what matters; rows from a counter RNG keyed by seed. Returns 0 on success. */
int nest_test_write_factor_csv(const char *path, int n, uint64_t seed);
/* Max |a - b| / max(1, |b|) over n elements. */
double nest_test_max_rel_diff(const float *a, const double *b, size_t n);

/* Read a whole (text) file into buf (at most cap-1 bytes, NUL-terminated; "" if unreadable). */
void nest_test_slurp(const char *path, char *buf, size_t cap);
/* Run `command` through the shell with stdout / stderr captured into out / err (either may be
 * NULL); returns its exit code, or -1 if it did not exit normally. */
int nest_test_run(const char *command, char *out, size_t out_cap, char *err, size_t err_cap);

/* Run the program `prog` (quoted) with `args` (shell words) as nest_test_run does. */
int nest_test_tool(const char *prog, const char *args, char *out, size_t out_cap, char *err,
                   size_t err_cap);
/* 1 if err is exactly one line that starts with `prefix` and contains `word` (a tool's error). */
int nest_test_one_error_line(const char *err, const char *prefix, const char *word);
#define assert_one_error_line(err, prefix, word)                                             \
  do {                                                                                       \
    if (!nest_test_one_error_line((err), (prefix), (word)))                                  \
      fail_msg("expected one line '%s...%s...', got '%s'", (prefix), (word), (err));         \
  } while (0)

/* Fail the CMocka test with the call, the status name and nest's message unless expr is
 * NEST_OK. Use after <cmocka.h>. */
#define assert_ok(expr)                                                                      \
  do {                                                                                       \
    nest_status s_ = (expr);                                                                 \
    if (s_ != NEST_OK) fail_msg("%s: %s: %s", #expr, nest_status_name(s_), nest_error_message()); \
  } while (0)

/* A net of `arch` (nest_arch_build with opts, NULL = defaults) for max batch 4, one thread; if
 * grow_layer is set, that layer's width (units / out_c) becomes width + grow_by, as growth
 * leaves it. Parameters as nest_net_create leaves them. Aborts with nest's message on failure. */
nest_net *nest_test_net(const char *arch, nest_shape in, int classes, const nest_arch_opts *opts,
                        const char *grow_layer, int grow_by);

/* Crafting files: dataset NAME of loc with `type` and dims, never written. chunk = the chunk
 * dims (HDF5 then stores nothing, so the dims may claim anything), or NULL for the contiguous
 * layout; allocate = 1 (contiguous only) reserves its bytes in the file without writing them
 * (a sparse file). Aborts on failure. */
void nest_test_h5_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                          const hsize_t *chunk, int allocate);

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

/* A trainer / pipeline on nest_dataset_synthetic(n, shape, 4 classes, noise 0.5, data_seed), no
 * test set; quiet unless NEST_TEST_VERBOSE is set. NULL on failure (nest_error_message says
 * why). */
nest_trainer *nest_test_trainer(nest_comm *c, const nest_config *cfg, nest_shape shape, int n,
                                uint64_t data_seed);
nest_pipeline *nest_test_pipeline(nest_comm *c, const nest_config *cfg, nest_shape shape, int n,
                                  uint64_t data_seed);

/* nest_config_defaults plus what the synthetic-data MPI tests share: model.arch = arch,
 * data.train "synthetic", no run directory, batch 10 (not divisible by 4: unequal shares),
 * lr 0.05, run.seed = seed, data.val_split 0.2. */
void nest_test_synthetic_config(nest_config *cfg, const char *arch, uint64_t seed);
/* nest_test_pipeline(c, cfg, shape, n, 31) must fail with NEST_ERR_CONFIG, no pipeline, a
 * message naming key1 and key2, the same message on every rank. 0 if so (the error is then
 * cleared), else 1 with what happened in why. Collective. */
int nest_test_setup_error(nest_comm *c, const nest_config *cfg, nest_shape shape, int n,
                          const char *key1, const char *key2, char *why, size_t cap);

#endif
