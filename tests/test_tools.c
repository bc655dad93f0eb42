/* test_tools.c — the model-file tools run as programs, as users run them:
 *   nest_jaccard on masks built by hand (known Jaccard values, shape mismatches, tensors in one
 *   file only), and on a file missing a mask dataset (refused, not compared without it);
 *   nest_export from a run directory and from a checkpoint; it never writes over a run's
 *   checkpoint (the newest included, --force or not, by path, symlink, hard link or a copy
 *   elsewhere), never over its input, and --force replaces an existing output atomically (a
 *   write that fails half-way, here at a file-size limit, leaves the old output intact);
 *   nest_export --onnx writes what nest_onnx_encode gives with the model's input record, names
 *   and --force rules, and exports a DR+SCANN model (reduction and all); --config recomputes
 *   the input record of a format-1 file as training does, and must agree with a record the
 *   file has. */
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

#include "nest/atomic.h"
#include "nest/ckpt.h"
#include "nest/data.h"
#include "nest/model.h"
#include "nest/net.h"
#include "nest/onnx.h"
#include "nest/reduce.h"
#include "test_util.h"

#define JACCARD NEST_BINARY_DIR "/nest_jaccard"
#define EXPORT NEST_BINARY_DIR "/nest_export"

static char out_text[8192], err_text[8192];

/* Run `prog args`; its exit code (stdout, stderr in out_text, err_text). */
static int tool(const char *prog, const char *args) {
  const int code = nest_test_tool(prog, args, out_text, sizeof out_text, err_text, sizeof err_text);
  assert_true(code >= 0);
  return code;
}

#define assert_one_error(prefix, word) assert_one_error_line(err_text, prefix, word)

/* ---- nest_jaccard, run as a program ------------------------------------------------------------- */

static int jaccard(const char *args) { return tool(JACCARD, args); }

/* The line of stdout that starts with "<layer> <param>"-like `head` (NULL if none). */
static const char *line_of(const char *head) {
  size_t n = strlen(head);
  for (const char *p = out_text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (strncmp(p, head, n) == 0 && (p[n] == ' ' || p[n] == '\t')) return p;
  return NULL;
}

/* A row "<layer> <param> <shape> a b inter union jaccard". */
static void assert_row(const char *layer, const char *param, long long a, long long b,
                       long long in, long long un, double jac) {
  char head[64];
  snprintf(head, sizeof head, "%s", layer);
  const char *l = line_of(head);
  if (!l) fail_msg("no line for %s in:\n%s", layer, out_text);
  char ly[64], pa[64], sh[64];
  long long ra, rb, ri, ru;
  double rj;
  if (sscanf(l, "%63s %63s %63s %lld %lld %lld %lld %lf", ly, pa, sh, &ra, &rb, &ri, &ru, &rj) != 8)
    fail_msg("cannot parse line for %s in:\n%s", layer, out_text);
  if (param) assert_string_equal(pa, param);
  assert_int_equal(ra, a);
  assert_int_equal(rb, b);
  assert_int_equal(ri, in);
  assert_int_equal(ru, un);
  assert_true(fabs(rj - jac) < 1e-9);
}

/* Masks of dense layer `name` set by hand: the listed positions active (weights 1 + i/100),
 * everything else dormant (weights 0). n = -1: all active. */
static void set_mask(nest_net *net, const char *name, const int *on, int n) {
  nest_layer *l = nest_net_find_layer(net, name);
  assert_non_null(l);
  size_t c = l->param[0].count;
  for (size_t i = 0; i < c; ++i) l->m[0][i] = n < 0 ? 1.0f : 0.0f;
  for (int k = 0; k < n; ++k) l->m[0][on[k]] = 1.0f;
  for (size_t i = 0; i < c; ++i) l->p[0][i] = l->m[0][i] != 0.0f ? 1.0f + (float)i / 100 : 0.0f;
}

static void save_in(const char *dir, const char *sub, nest_net *net) {
  char d[1024], p[1100];
  snprintf(d, sizeof d, "%s/%s", dir, sub);
  assert_int_equal(mkdir(d, 0755), 0);
  snprintf(p, sizeof p, "%s/model.h5", d);
  assert_ok(nest_model_save(net, p));
}

static void test_jaccard_tool(void **state) {
  const char *dir = nest_test_tmpdir();
  const nest_shape in = {4, 1, 1};
  /* A: mlp 4-3-3-3-2. B: the same with fc2 grown 3 -> 5, so fc2.W and fc3.W differ in shape.
   * fc1.W [3x4]: A = {0..5}, B = {3..11}: |A&B| = 3, |A|B| = 12, J = 0.25.
   * fc4.W [2x3]: all active in both: 6, 6, J = 1.
   * Total: 9 / 18 = 0.5 exactly (not the mean of the per-tensor values, 0.625). */
  nest_net *a = nest_test_net("mlp:4-3-3-3-2", in, 2, NULL, NULL, 0);
  nest_net *b = nest_test_net("mlp:4-3-3-3-2", in, 2, NULL, "fc2", 2);
  nest_net *c = nest_test_net("mlp:4-3-2", in, 2, NULL, NULL, 0);
  assert_ok(nest_net_init(a, 1, 1.0, -1));
  assert_ok(nest_net_init(b, 2, 1.0, -1));
  assert_ok(nest_net_init(c, 3, 1.0, -1));
  set_mask(a, "fc1", (int[]){0, 1, 2, 3, 4, 5}, 6);
  set_mask(b, "fc1", (int[]){3, 4, 5, 6, 7, 8, 9, 10, 11}, 9);
  set_mask(a, "fc4", NULL, -1);
  set_mask(b, "fc4", NULL, -1);
  set_mask(c, "fc1", (int[]){0, 1, 2, 3, 4, 5}, 6);
  save_in(dir, "runA", a);
  save_in(dir, "runB", b);
  save_in(dir, "runC", c);

  char args[4096];
  /* Run directories and a file path are both accepted. */
  snprintf(args, sizeof args, "'%s/runA' '%s/runB/model.h5'", dir, dir);
  if (jaccard(args) != 0) fail_msg("nest_jaccard failed: %s", err_text);
  assert_string_equal(err_text, "");
  assert_row("fc1", "W", 6, 9, 3, 12, 0.25);
  assert_row("fc4", "W", 6, 6, 6, 6, 1.0);
  assert_row("total", NULL, 12, 15, 9, 18, 0.5);
  assert_non_null(strstr(out_text, "0.500000"));
  const char *l2 = line_of("fc2"), *l3 = line_of("fc3");
  assert_non_null(l2);
  assert_non_null(l3);
  assert_true(strncmp(strstr(l2, "not comparable"), "not comparable: shape 3x3 in A, 5x3 in B",
                      40) == 0);
  assert_non_null(strstr(l3, "not comparable: shape 3x3 in A, 3x5 in B"));
  assert_null(line_of("fc1.relu")); /* no masks there */
  assert_non_null(strstr(out_text, "(4-3-3-3-2)"));
  assert_non_null(strstr(out_text, "(4-3-5-3-2)"));

  /* A file against itself: every tensor compared (fc2, fc3 all active: 9 each), J = 1. */
  snprintf(args, sizeof args, "'%s/runA' '%s/runA/'", dir, dir);
  assert_int_equal(jaccard(args), 0);
  assert_row("fc2", "W", 9, 9, 9, 9, 1.0);
  assert_row("total", NULL, 30, 30, 30, 30, 1.0);

  /* Tensors in one file only: fc1 compared (A {0..5} vs C {0..5}: J = 1), fc2 shapes differ,
   * fc3 and fc4 only in A. */
  snprintf(args, sizeof args, "'%s/runA' '%s/runC'", dir, dir);
  assert_int_equal(jaccard(args), 0);
  assert_row("fc1", "W", 6, 6, 6, 6, 1.0);
  assert_row("total", NULL, 6, 6, 6, 6, 1.0);
  assert_non_null(strstr(line_of("fc2"), "not comparable"));
  assert_non_null(strstr(line_of("fc3"), "only in A"));
  assert_non_null(strstr(line_of("fc4"), "only in A"));
  snprintf(args, sizeof args, "'%s/runC' '%s/runA'", dir, dir);
  assert_int_equal(jaccard(args), 0);
  assert_non_null(strstr(line_of("fc4"), "only in B"));

  /* Errors: one line "nest_jaccard: error: <file>: ...", exit 1. */
  snprintf(args, sizeof args, "'%s/runA' '%s/missing.h5'", dir, dir);
  assert_int_equal(jaccard(args), 1);
  char want[2048];
  snprintf(want, sizeof want, "nest_jaccard: error: %s/missing.h5: ", dir);
  assert_true(strncmp(err_text, want, strlen(want)) == 0);
  assert_true(strchr(err_text, '\n') == err_text + strlen(err_text) - 1);
  /* A directory without model.h5 names the file it looked for. */
  snprintf(args, sizeof args, "'%s' '%s/runA'", dir, dir);
  assert_int_equal(jaccard(args), 1);
  snprintf(want, sizeof want, "nest_jaccard: error: %s/model.h5: ", dir);
  assert_true(strncmp(err_text, want, strlen(want)) == 0);
  /* Not a model file. */
  const char *txt = nest_test_path(dir, "notes.txt");
  assert_int_equal(nest_test_write_file(txt, "x\n", 2), 0);
  snprintf(args, sizeof args, "'%s/runA' '%s'", dir, txt);
  assert_int_equal(jaccard(args), 1);
  assert_non_null(strstr(err_text, "not an HDF5 file"));
  /* Nothing comparable: a model with one dense layer of another shape. */
  nest_net *d = nest_test_net("mlp:4-2", in, 2, NULL, NULL, 0);
  assert_ok(nest_net_init(d, 4, 1.0, -1));
  save_in(dir, "runD", d);
  snprintf(args, sizeof args, "'%s/runA' '%s/runD'", dir, dir);
  assert_int_equal(jaccard(args), 1);
  assert_non_null(strstr(err_text, "nest_jaccard: error: "));
  assert_non_null(strstr(err_text, "no maskable tensor with the same name and shape"));

  /* Usage. */
  assert_int_equal(jaccard("--help"), 0);
  assert_non_null(strstr(out_text, "usage: nest_jaccard"));
  assert_int_equal(jaccard("only-one.h5"), 2);
  assert_non_null(strstr(err_text, "nest_jaccard: error: "));
  assert_int_equal(jaccard("--bogus a b"), 2);

  nest_net_destroy(&a);
  nest_net_destroy(&b);
  nest_net_destroy(&c);
  nest_net_destroy(&d);
}

/* A model file missing one mask dataset (compact form: the active indices) is refused (it used to be compared on the tensors it
 * still had: exit 0, similarity 1.000000), in either position, naming file and dataset. */
static void test_jaccard_missing_mask(void **state) {
  const char *dir = nest_test_tmpdir();
  nest_net *a = nest_test_net("mlp:4-3-3-2", (nest_shape){4, 1, 1}, 2, NULL, NULL, 0);
  assert_ok(nest_net_init(a, 1, 0.5, -1));
  char good[1024], bad[1024], args[4096];
  snprintf(good, sizeof good, "%s/mm-good.h5", dir);
  snprintf(bad, sizeof bad, "%s/mm-bad.h5", dir);
  assert_ok(nest_model_save(a, good));
  assert_ok(nest_model_save(a, bad));
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
  assert_true(f >= 0);
  assert_true(H5Ldelete(f, "/layers/000_fc1/W_index", H5P_DEFAULT) >= 0);
  H5Fclose(f);
  snprintf(args, sizeof args, "'%s' '%s'", good, bad);
  assert_int_equal(jaccard(args), 1);
  char want[2048];
  snprintf(want, sizeof want, "nest_jaccard: error: %s: ", bad);
  assert_one_error(want, "/layers/000_fc1/W_index");
  assert_null(strstr(out_text, "1.000000"));
  snprintf(args, sizeof args, "'%s' '%s'", bad, good);
  assert_int_equal(jaccard(args), 1);
  assert_one_error(want, "/layers/000_fc1/W_index");
  /* the good file against itself still compares */
  snprintf(args, sizeof args, "'%s' '%s'", good, good);
  assert_int_equal(jaccard(args), 0);
  assert_non_null(strstr(out_text, "1.000000"));
  nest_net_destroy(&a);
}

/* ---- nest_export ------------------------------------------------------------------------------- */

static int export_(const char *args) { return tool(EXPORT, args); }

/* nest_export ARGS succeeds and writes to `out` a model file holding `net`. */
static void export_ok(const char *args, const char *out, const nest_net *net) {
  if (export_(args) != 0) fail_msg("nest_export %s: %s", args, err_text);
  nest_net *back;
  assert_ok(nest_model_load(out, 4, 1, &back));
  assert_true(nest_net_hash(back, NEST_HASH_ALL) == nest_net_hash(net, NEST_HASH_ALL));
  nest_net_destroy(&back);
}

/* A restart checkpoint of `net` at path (the container only: net with momentum, one /state
 * dataset): what nest_mpi leaves in RUN/checkpoints. */
static void write_ckpt(const nest_net *net, const char *path, int64_t step) {
  nest_ckpt *w;
  assert_ok(nest_ckpt_create(path, &w));
  assert_ok(nest_ckpt_put_net(w, NULL, net, 1));
  assert_ok(nest_ckpt_put(w, "step", NEST_CK_I64, &step, 1));
  assert_ok(nest_ckpt_commit(&w));
}

static uint64_t file_hash(const char *path) {
  static char buf[1 << 22];
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  const size_t n = fread(buf, 1, sizeof buf, f);
  assert_true(n < sizeof buf);
  fclose(f);
  return nest_test_hash_bytes(buf, n);
}

/* The checkpoint is byte for byte what it was and still opens as one. */
static void assert_ckpt_intact(const char *path, uint64_t hash) {
  assert_true(file_hash(path) == hash);
  nest_ckpt *r;
  assert_ok(nest_ckpt_open(path, &r));
  int64_t step = -1;
  assert_ok(nest_ckpt_get(r, "step", NEST_CK_I64, &step, 1));
  nest_ckpt_close(&r);
  assert_int_equal(step, 2);
}

static void test_export(void **state) {
  const char *dir = nest_test_tmpdir();
  char run[1024], cks[1100], ck1[1200], ck2[1200], out[1100], args[8192], want[2048];
  snprintf(run, sizeof run, "%s/exrun", dir);
  snprintf(cks, sizeof cks, "%s/checkpoints", run);
  assert_int_equal(mkdir(run, 0755), 0);
  assert_int_equal(mkdir(cks, 0755), 0);
  snprintf(ck1, sizeof ck1, "%s/ckpt-00000001.h5", cks);
  snprintf(ck2, sizeof ck2, "%s/ckpt-00000002.h5", cks);
  snprintf(out, sizeof out, "%s/exported.h5", dir);
  nest_net *net = nest_test_net("mlp:6-5-3", (nest_shape){6, 1, 1}, 3, NULL, NULL, 0);
  assert_ok(nest_net_init(net, 3, 0.5, -1));
  write_ckpt(net, ck1, 1);
  write_ckpt(net, ck2, 2);
  const uint64_t h2 = file_hash(ck2);

  /* A run directory: its newest checkpoint, as a plain model file. */
  snprintf(args, sizeof args, "'%s' '%s'", run, out);
  export_ok(args, out, net);
  nest_ckpt *r;
  assert_int_equal(nest_ckpt_open(out, &r), NEST_ERR_FORMAT); /* not a checkpoint */
  /* An existing output needs --force; the input itself is never an output. */
  assert_int_equal(export_(args), 1);
  snprintf(want, sizeof want, "nest_export: error: %s: ", out);
  assert_one_error(want, "--force");
  snprintf(args, sizeof args, "'%s' '%s' --force", out, out);
  assert_int_equal(export_(args), 1);
  assert_one_error(want, "input");

  /* Never over a checkpoint of a run, --force or not: the newest (the bug: the next resume
   * lost the progress since the previous checkpoint), another one, a new name in a run's
   * checkpoints/ directory, a symlink to a checkpoint, a hard link or a copy elsewhere. */
  const char *force[2] = {"", " --force"};
  for (int k = 0; k < 2; ++k) {
    snprintf(args, sizeof args, "'%s' '%s'%s", ck2, ck2, force[k]);
    assert_int_equal(export_(args), 1);
    snprintf(want, sizeof want, "nest_export: error: %s: ", ck2);
    assert_one_error(want, "checkpoint");
    snprintf(args, sizeof args, "'%s' '%s'%s", run, ck2, force[k]);
    assert_int_equal(export_(args), 1);
    assert_one_error(want, "checkpoint");
    snprintf(args, sizeof args, "'%s' '%s'%s", out, ck1, force[k]);
    assert_int_equal(export_(args), 1);
    snprintf(want, sizeof want, "nest_export: error: %s: ", ck1);
    assert_one_error(want, "checkpoint");
    const char *fresh = nest_test_path(cks, "model.h5");
    snprintf(args, sizeof args, "'%s' '%s'%s", out, fresh, force[k]);
    assert_int_equal(export_(args), 1);
    snprintf(want, sizeof want, "nest_export: error: %s: ", fresh);
    assert_one_error(want, "checkpoints");
    assert_int_not_equal(access(fresh, F_OK), 0);
    assert_ckpt_intact(ck2, h2);
  }
  const char *sym = nest_test_path(dir, "sym.h5"), *hard = nest_test_path(dir, "hard.h5");
  const char *copy = nest_test_path(dir, "copy.h5");
  assert_int_equal(symlink(ck2, sym), 0);
  assert_int_equal(link(ck2, hard), 0);
  write_ckpt(net, copy, 2);
  const char *others[3] = {sym, hard, copy};
  for (int k = 0; k < 3; ++k) {
    snprintf(args, sizeof args, "'%s' '%s' --force", out, others[k]);
    assert_int_equal(export_(args), 1);
    snprintf(want, sizeof want, "nest_export: error: %s: ", others[k]);
    assert_one_error(want, "checkpoint");
  }
  assert_ckpt_intact(ck2, h2);
  assert_ckpt_intact(hard, h2);
  struct stat sb;
  assert_int_equal(lstat(sym, &sb), 0);
  assert_true(S_ISLNK(sb.st_mode));
  nest_net_destroy(&net);
}

/* --force replaces an existing output atomically: a write that fails half-way (the file-size
 * limit, as a full disk would) leaves the old output byte for byte and no PATH.tmp. */
static void test_export_force_atomic(void **state) {
  const char *dir = nest_test_tmpdir();
  char big[1100], out[1100], tmp[1200], args[8192];
  snprintf(big, sizeof big, "%s/big-model.h5", dir);
  snprintf(out, sizeof out, "%s/force-out.h5", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", out);
  nest_net *small = nest_test_net("mlp:6-5-3", (nest_shape){6, 1, 1}, 3, NULL, NULL, 0);
  nest_net *large = nest_test_net("mlp:784-300-100-10", (nest_shape){784, 1, 1}, 10, NULL, NULL, 0);
  assert_ok(nest_net_init(small, 1, 0.5, -1));
  assert_ok(nest_net_init(large, 2, 1.0, -1));
  assert_ok(nest_model_save(small, out));
  assert_ok(nest_model_save(large, big));
  const uint64_t h = file_hash(out);
  /* 256 KiB at most (ulimit -f counts 512-byte blocks in sh, 1024 in bash: either is far
   * below the ~1 MB model); SIGXFSZ ignored so that the write fails with EFBIG instead. */
  snprintf(args, sizeof args, "sh -c \"trap '' XFSZ; ulimit -f 256; exec '%s' '%s' '%s' --force\"",
           EXPORT, big, out);
  const int code = nest_test_run(args, out_text, sizeof out_text, err_text, sizeof err_text);
  assert_int_equal(code, 1);
  char want[2048];
  snprintf(want, sizeof want, "nest_export: error: %s", out);
  assert_one_error(want, "");
  assert_true(file_hash(out) == h);
  assert_int_not_equal(access(tmp, F_OK), 0);
  /* Without the limit, --force replaces it. */
  snprintf(args, sizeof args, "'%s' '%s' --force", big, out);
  export_ok(args, out, large);
  nest_net_destroy(&small);
  nest_net_destroy(&large);
}

/* ---- nest_export --onnx, --config ---------------------------------------------------------- */

/* A model with an input record (per-feature statistics, class names) at path. */
static nest_net *save_with_input(const char *path, const nest_model_input *in) {
  nest_net *net = nest_test_net("mlp:6-5-3", (nest_shape){6, 1, 1}, 3, NULL, NULL, 0);
  assert_ok(nest_net_init(net, 4, 0.6, -1));
  const nest_model_info info = {.val_error = NAN, .test_error = NAN, .input = in};
  assert_ok(nest_model_save_info(net, &info, path));
  return net;
}

static size_t slurp_bytes(const char *path, uint8_t *buf, size_t cap) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  const size_t n = fread(buf, 1, cap, f);
  fclose(f);
  assert_true(n < cap);
  return n;
}

/* The file at onnx holds exactly what nest_onnx_encode gives for net with the input record in
 * (a 6-feature tabular record: scale, reduction, normalisation, class names) and the metadata
 * nest_export adds for the model file `model`. */
static void assert_onnx_is_encoding(const char *onnx, const nest_net *net,
                                    const nest_model_input *in, const char *model) {
  const nest_onnx_prop props[] = {
      {"nest.source", model}, {"nest.data_shape", "6x1x1"}, {"nest.center_crop", "0"}};
  const nest_onnx_meta meta = {.norm = &in->norm, .input_scale = in->scale, .labels = in->labels,
                               .reduce = in->reduce, .nprops = 3, .props = props};
  uint8_t *enc;
  size_t len;
  assert_ok(nest_onnx_encode(net, &meta, &enc, &len));
  static uint8_t file[1 << 20];
  assert_int_equal(slurp_bytes(onnx, file, sizeof file), len);
  assert_memory_equal(file, enc, len);
  free(enc);
}

/* --onnx writes exactly what nest_onnx_encode gives for the net with the model's normalisation
 * and class names (and nest.source etc.); the output name must end in .onnx with --onnx and not
 * without it; an existing output needs --force; a run's checkpoints/ stays off limits. */
static void test_export_onnx(void **state) {
  const char *dir = nest_test_tmpdir();
  char model[1024], onnx[1100], args[8192], want[4096];
  snprintf(model, sizeof model, "%s/onnx-src.h5", dir);
  snprintf(onnx, sizeof onnx, "%s/exported.onnx", dir);
  float mean[6] = {0.1f, 0.2f, 0.3f, -1.0f, 2.0f, 0.0f}, sd[6] = {1, 2, 3, 0.5f, 0.25f, 1};
  char *names[3] = {"setosa", "versicolor", "virginica"};
  const nest_model_input in = {.known = 1, .data_shape = {6, 1, 1}, .scale = 1.0f,
                               .norm = {6, mean, sd}, .nlabels = 3, .labels = names,
                               .format = "csv", .csv_delim = ','};
  nest_net *net = save_with_input(model, &in);
  snprintf(args, sizeof args, "--onnx '%s' '%s'", model, onnx);
  if (export_(args) != 0) fail_msg("nest_export %s: %s", args, err_text);
  assert_onnx_is_encoding(onnx, net, &in, model);
  /* names and --force */
  const char *bad_names[][2] = {{"--onnx", "model.h5"}, {"", "model.onnx"}, {"--onnx", "x.ONNX"}};
  for (int k = 0; k < 3; ++k) {
    snprintf(args, sizeof args, "%s '%s' '%s/%s'", bad_names[k][0], model, dir, bad_names[k][1]);
    assert_int_equal(export_(args), 2);
    assert_non_null(strstr(err_text, bad_names[k][1]));
    assert_non_null(strstr(err_text, ".onnx"));
  }
  snprintf(args, sizeof args, "--onnx '%s' '%s'", model, onnx);
  assert_int_equal(export_(args), 1);
  snprintf(want, sizeof want, "nest_export: error: %s: ", onnx);
  assert_one_error(want, "--force");
  snprintf(args, sizeof args, "--onnx '%s' '%s' --force", model, onnx);
  assert_int_equal(export_(args), 0);
  char cks[1100], inside[1200];
  snprintf(cks, sizeof cks, "%s/onnxrun/checkpoints", dir);
  assert_ok(nest_atomic_mkdirs(cks));
  snprintf(inside, sizeof inside, "%s/m.onnx", cks);
  snprintf(args, sizeof args, "--onnx '%s' '%s' --force", model, inside);
  assert_int_equal(export_(args), 1);
  snprintf(want, sizeof want, "nest_export: error: %s: ", inside);
  assert_one_error(want, "checkpoints");
  /* a run directory stands for its model.h5 (a finished run), not its newest checkpoint */
  char run[1100], runmodel[1200], ck[1300], cmd[4096];
  snprintf(run, sizeof run, "%s/onnx-run", dir);
  snprintf(runmodel, sizeof runmodel, "%s/model.h5", run);
  snprintf(ck, sizeof ck, "%s/checkpoints/ckpt-00000001.h5", run);
  snprintf(cmd, sizeof cmd, "%s/checkpoints", run);
  assert_ok(nest_atomic_mkdirs(cmd));
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", model, runmodel);
  assert_int_equal(system(cmd), 0);
  nest_net *other = nest_test_net("mlp:6-4-3", (nest_shape){6, 1, 1}, 3, NULL, NULL, 0);
  assert_ok(nest_net_init(other, 9, 1.0, -1));
  write_ckpt(other, ck, 1);
  nest_net_destroy(&other);
  snprintf(args, sizeof args, "--onnx '%s' '%s' --force", run, onnx);
  assert_int_equal(export_(args), 0);
  snprintf(want, sizeof want, "nest_export: %s -> %s: 6-5-3", runmodel, onnx);
  if (strncmp(out_text, want, strlen(want)) != 0) fail_msg("want '%s', got '%s'", want, out_text);
  /* the HDF5 export keeps the record */
  char h5[1100];
  snprintf(h5, sizeof h5, "%s/with-record.h5", dir);
  snprintf(args, sizeof args, "'%s' '%s'", model, h5);
  assert_int_equal(export_(args), 0);
  nest_model_input back;
  assert_ok(nest_model_read_input(h5, &back));
  assert_int_equal(back.known, 1);
  assert_string_equal(back.labels[2], "virginica");
  assert_true(back.norm.std[4] == 0.25f);
  nest_model_input_free(&back);
  nest_net_destroy(&net);
}

/* A DR+SCANN model (its input record holds a reduction, /input/reduce: 6 raw features -> 3)
 * exports: the file is what nest_onnx_encode gives with that reduction (test_onnx checks such a
 * graph against nest's forward pass with ONNX Runtime), its input the raw 6 features. Until the
 * export wrote the reduction, nest_export refused such a model. */
static void test_export_onnx_reduce(void **state) {
  const char *dir = nest_test_tmpdir();
  char model[1024], onnx[1100], args[8192];
  snprintf(model, sizeof model, "%s/onnx-dr.h5", dir);
  snprintf(onnx, sizeof onnx, "%s/dr.onnx", dir);
  float rows[40 * 6];
  for (int t = 0; t < 40; ++t)
    for (int i = 0; i < 6; ++i) rows[t * 6 + i] = (float)((t * (i + 3)) % 11) + 0.5f * i;
  const nest_reduce_opts ro = {.kind = NEST_REDUCE_PCA, .k = 3};
  nest_reduce *r = NULL;
  assert_ok(nest_reduce_fit(&ro, rows, 40, 6, NULL, 40, &r));
  float mean[3] = {0.1f, -0.2f, 0.0f}, sd[3] = {0.5f, 1.5f, 2.0f};
  char *names[2] = {"B", "M"};
  const nest_model_input in = {.known = 1, .data_shape = {6, 1, 1}, .scale = 1.0f,
                               .norm = {3, mean, sd}, .nlabels = 2, .labels = names,
                               .format = "csv", .csv_delim = ',', .reduce = r};
  nest_net *net = nest_test_net("mlp:3-5-2", (nest_shape){3, 1, 1}, 2, NULL, NULL, 0);
  assert_ok(nest_net_init(net, 4, 1.0, -1));
  const nest_model_info info = {.val_error = NAN, .test_error = NAN, .input = &in};
  assert_ok(nest_model_save_info(net, &info, model));
  snprintf(args, sizeof args, "--onnx '%s' '%s'", model, onnx);
  if (export_(args) != 0) fail_msg("nest_export %s: %s", args, err_text);
  assert_onnx_is_encoding(onnx, net, &in, model);
  /* --config cannot recompute a fitted reduction: one line, nothing written */
  char h5[1100];
  snprintf(h5, sizeof h5, "%s/dr-again.h5", dir);
  snprintf(args, sizeof args, "--config '%s/none.ini' '%s' '%s'", dir, model, h5);
  assert_true(export_(args) != 0);
  assert_true(nest_test_one_error_line(err_text, "nest_export: error: ", "DR+SCANN reduction"));
  assert_int_equal(access(h5, F_OK), -1);
  nest_net_destroy(&net);
  nest_reduce_destroy(&r);
}

/* --config recomputes the input record of a format-1 file from the run's config as training
 * does (data.test_split, then the data.val_split / run.seed split, statistics over the training
 * part); for a file that has one, it must agree. */
static void test_export_config(void **state) {
  const char *dir = nest_test_tmpdir();
  char csv[1024], cfg[1024], cfg2[1024], old[1024], out[1100], out2[1100], args[8192];
  snprintf(csv, sizeof csv, "%s/train.csv", dir);
  snprintf(cfg, sizeof cfg, "%s/run.ini", dir);
  snprintf(cfg2, sizeof cfg2, "%s/other-seed.ini", dir);
  snprintf(old, sizeof old, "%s/old.h5", dir);
  snprintf(out, sizeof out, "%s/upgraded.h5", dir);
  snprintf(out2, sizeof out2, "%s/again.h5", dir);
  /* 60 rows "label,f0..f5" with labels cat / dog / emu */
  char text[8192];
  size_t used = 0;
  for (int i = 0; i < 60; ++i)
    used += (size_t)snprintf(text + used, sizeof text - used, "%s,%d,%g,%g,%d,%g,%g\n",
                             i % 3 == 0 ? "cat" : i % 3 == 1 ? "dog" : "emu", i, 0.5 * (i % 7),
                             100.0 + i * i, i % 2, -0.25 * i, 3.0);
  assert_int_equal(nest_test_write_file(csv, text, used), 0);
  const char *ini = "[data]\ntrain = %s\nval_split = 0.2\ntest_split = 0.25\n"
                    "[model]\narch = mlp:6-5-3\n[run]\nseed = %d\n";
  snprintf(text, sizeof text, ini, csv, 7);
  assert_int_equal(nest_test_write_file(cfg, text, strlen(text)), 0);
  snprintf(text, sizeof text, ini, csv, 8);
  assert_int_equal(nest_test_write_file(cfg2, text, strlen(text)), 0);
  nest_net *net = nest_test_net("mlp:6-5-3", (nest_shape){6, 1, 1}, 3, NULL, NULL, 0);
  assert_ok(nest_net_init(net, 4, 0.6, -1));
  assert_ok(nest_model_save(net, old));

  snprintf(args, sizeof args, "--config '%s' '%s' '%s'", cfg, old, out);
  if (export_(args) != 0) fail_msg("nest_export %s: %s", args, err_text);
  assert_non_null(strstr(out_text, "input record from the run's data"));
  /* what the trainer computes: the same functions in the same order */
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = csv;
  nest_dataset *train, *test;
  assert_ok(nest_dataset_load(&o, NULL, &train));
  assert_ok(nest_dataset_take_test(&train, 0.25, 7, &test));
  assert_int_equal(train->n, 45);
  int64_t *tr, *va, ntr, nva;
  assert_ok(nest_dataset_split(train->n, 0.2, 7, &tr, &ntr, &va, &nva));
  nest_norm norm;
  assert_ok(nest_norm_compute(train, tr, ntr, &norm));
  nest_model_input back;
  assert_ok(nest_model_read_input(out, &back));
  assert_int_equal(back.norm.nch, 6);
  assert_memory_equal(back.norm.mean, norm.mean, 6 * sizeof(float));
  assert_memory_equal(back.norm.std, norm.std, 6 * sizeof(float));
  assert_string_equal(back.labels[0], "cat");
  assert_string_equal(back.labels[2], "emu");
  assert_string_equal(back.format, "csv");
  assert_true(back.test_split == 0.25 && back.val_split == 0.2 && back.split_seed == 7);
  nest_model_input_free(&back);
  /* a file that has a record: the same config agrees, another seed does not */
  snprintf(args, sizeof args, "--config '%s' '%s' '%s'", cfg, out, out2);
  assert_int_equal(export_(args), 0);
  snprintf(args, sizeof args, "--config '%s' '%s' '%s' --force", cfg2, out, out2);
  assert_int_equal(export_(args), 1);
  char want[2048];
  snprintf(want, sizeof want, "nest_export: error: %s: ", out);
  assert_one_error(want, "differs from what");
  /* a config whose data cannot be read: its error */
  snprintf(text, sizeof text, "[data]\ntrain = %s/missing.csv\n", dir);
  assert_int_equal(nest_test_write_file(cfg2, text, strlen(text)), 0);
  snprintf(args, sizeof args, "--config '%s' '%s' '%s' --force", cfg2, old, out2);
  assert_int_equal(export_(args), 1);
  assert_non_null(strstr(err_text, "missing.csv"));
  nest_norm_free(&norm);
  free(tr);
  free(va);
  nest_dataset_destroy(&train);
  nest_dataset_destroy(&test);
  nest_net_destroy(&net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_jaccard_tool),
      cmocka_unit_test(test_jaccard_missing_mask),
      cmocka_unit_test(test_export),
      cmocka_unit_test(test_export_force_atomic),
      cmocka_unit_test(test_export_onnx),
      cmocka_unit_test(test_export_onnx_reduce),
      cmocka_unit_test(test_export_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
