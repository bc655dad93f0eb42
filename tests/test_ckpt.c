/* test_ckpt.c — the restart-checkpoint container (ckpt.h), without a run: a round trip of
 * every kind of /state dataset (empty ones included), strings, root attributes, a net with
 * momentum and a second net in a group; the container is a model file (nest_model_load reads
 * it) and a model file is not a container; a checkpoint given up before commit leaves nothing;
 * every malformed container is one FORMAT message naming the file and the object (wrong type,
 * count, rank, missing /state, /state not a group, a missing group, a flipped byte caught by
 * the Fletcher-32 checksum). */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nest/ckpt.h"
#include "nest/model.h"
#include "test_util.h"

static const int64_t I64[5] = {1, -2, 3, INT64_MAX, INT64_MIN};
static const double F64[3] = {0.5, -1e300, 3.25};
static const float F32[2] = {1.5f, -2.0f};
static const uint8_t U8[4] = {0, 1, 254, 255};
static const char STRS[3][16] = {"fc1", "a longer name", ""};
#define PATTERN_N 4096 /* int64s 0x5a5a0000 + i: easy to find in the file */

static nest_net *test_net(uint64_t seed) {
  nest_net *net = nest_test_net("mlp:6-5-3", (nest_shape){6, 1, 1}, 3, NULL, NULL, 0);
  assert_ok(nest_net_init(net, seed, 0.5, -1));
  for (size_t i = 0; i < net->nparams; ++i) net->mom[i] = (float)i / 7.0f; /* padding too */
  return net;
}

static void write_full(const char *path, const nest_net *net, const nest_net *snap) {
  nest_ckpt *w;
  assert_ok(nest_ckpt_create(path, &w));
  assert_ok(nest_ckpt_put_net(w, NULL, net, 1));
  assert_ok(nest_ckpt_put_net(w, "snapshot", snap, 1));
  assert_ok(nest_ckpt_put(w, "i64", NEST_CK_I64, I64, 5));
  assert_ok(nest_ckpt_put(w, "f64", NEST_CK_F64, F64, 3));
  assert_ok(nest_ckpt_put(w, "f32", NEST_CK_F32, F32, 2));
  assert_ok(nest_ckpt_put(w, "u8", NEST_CK_U8, U8, 4));
  assert_ok(nest_ckpt_put(w, "empty", NEST_CK_F64, NULL, 0));
  assert_ok(nest_ckpt_put_strs(w, "names", &STRS[0][0], sizeof STRS[0], 3, 8));
  int64_t pat[PATTERN_N];
  for (int i = 0; i < PATTERN_N; ++i) pat[i] = 0x5a5a0000 + i;
  assert_ok(nest_ckpt_put(w, "pattern", NEST_CK_I64, pat, PATTERN_N));
  assert_ok(nest_ckpt_put_attr(w, "config", "[run]\nseed = 1\n"));
  assert_ok(nest_ckpt_commit(&w));
  assert_null(w);
}

/* Only the momentum of the parameters themselves (not the arena's padding) is stored. */
static void assert_same_mom(const nest_net *a, const nest_net *b) {
  for (int t = 0; t < a->ntensors; ++t) {
    const nest_param *p = a->tensors[t].param;
    assert_memory_equal(a->mom + p->offset, b->mom + p->offset, p->count * sizeof(float));
  }
}

static void test_round_trip(void **state) {
  const char *path = nest_test_path(nest_test_tmpdir(), "rt.h5");
  nest_net *net = test_net(1), *snap = test_net(2);
  write_full(path, net, snap);
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  assert_int_not_equal(access(tmp, F_OK), 0);

  nest_ckpt *r;
  assert_ok(nest_ckpt_open(path, &r));
  int64_t i64[5];
  double f64[3];
  float f32[2];
  uint8_t u8[4];
  size_t n;
  assert_ok(nest_ckpt_len(r, "i64", &n));
  assert_int_equal(n, 5);
  assert_ok(nest_ckpt_get(r, "i64", NEST_CK_I64, i64, 5));
  assert_memory_equal(i64, I64, sizeof I64);
  assert_ok(nest_ckpt_get(r, "f64", NEST_CK_F64, f64, 3));
  assert_memory_equal(f64, F64, sizeof F64);
  assert_ok(nest_ckpt_get(r, "f32", NEST_CK_F32, f32, 2));
  assert_memory_equal(f32, F32, sizeof F32);
  assert_ok(nest_ckpt_get(r, "u8", NEST_CK_U8, u8, 4));
  assert_memory_equal(u8, U8, sizeof U8);
  assert_ok(nest_ckpt_len(r, "empty", &n));
  assert_int_equal(n, 0);
  assert_ok(nest_ckpt_get(r, "empty", NEST_CK_F64, NULL, 0));
  assert_true(nest_ckpt_has(r, "u8"));
  assert_false(nest_ckpt_has(r, "nope"));
  char *strs, *cfg;
  size_t width;
  assert_ok(nest_ckpt_get_strs(r, "names", &strs, &n, &width));
  assert_int_equal(n, 3);
  assert_int_equal(width, 8);
  assert_string_equal(strs, "fc1");
  assert_string_equal(strs + 8, "a longe"); /* cut at width - 1 */
  assert_string_equal(strs + 16, "");
  free(strs);
  assert_ok(nest_ckpt_get_attr(r, "config", &cfg));
  assert_string_equal(cfg, "[run]\nseed = 1\n");
  free(cfg);
  nest_net *back, *sback;
  assert_ok(nest_ckpt_get_net(r, NULL, 4, 1, 1, &back));
  assert_true(nest_net_hash(back, NEST_HASH_ALL) == nest_net_hash(net, NEST_HASH_ALL));
  assert_same_mom(back, net);
  assert_true(nest_ckpt_has_group(r, "snapshot"));
  assert_false(nest_ckpt_has_group(r, "other"));
  assert_ok(nest_ckpt_get_net(r, "snapshot", 4, 1, 1, &sback));
  assert_true(nest_net_hash(sback, NEST_HASH_ALL) == nest_net_hash(snap, NEST_HASH_ALL));
  assert_same_mom(sback, snap);
  nest_net_destroy(&back);
  nest_net_destroy(&sback);
  nest_ckpt_close(&r);
  assert_null(r);

  /* A checkpoint is a model file; a model file is not a checkpoint. */
  assert_ok(nest_model_load(path, 4, 1, &back));
  assert_true(nest_net_hash(back, NEST_HASH_ALL) == nest_net_hash(net, NEST_HASH_ALL));
  nest_net_destroy(&back);
  const char *model = nest_test_path(nest_test_tmpdir(), "plain.h5");
  assert_ok(nest_model_save(net, model));
  assert_int_equal(nest_ckpt_open(model, &r), NEST_ERR_FORMAT);
  assert_non_null(strstr(nest_error_message(), "a model file, not a restart checkpoint"));
  assert_null(r);

  /* Given up before commit: nothing at PATH, no PATH.tmp. */
  const char *gone = nest_test_path(nest_test_tmpdir(), "gone.h5");
  nest_ckpt *w;
  assert_ok(nest_ckpt_create(gone, &w));
  assert_ok(nest_ckpt_put_net(w, NULL, net, 1));
  nest_ckpt_close(&w);
  assert_int_not_equal(access(gone, F_OK), 0);
  snprintf(tmp, sizeof tmp, "%s.tmp", gone);
  assert_int_not_equal(access(tmp, F_OK), 0);
  nest_net_destroy(&net);
  nest_net_destroy(&snap);
}

/* ---- malformed containers ---------------------------------------------------------------- */

static char good[1024], bad[1100];

static void copy(const char *from, const char *to) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
  assert_int_equal(system(cmd), 0);
}

/* A copy of the good checkpoint, edited with HDF5. */
static hid_t edit(void) {
  copy(good, bad);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
  assert_true(f >= 0);
  return f;
}

static void replace_dataset(hid_t f, const char *name, int rank, const hsize_t *dims,
                            hid_t type) {
  if (H5Lexists(f, name, H5P_DEFAULT) > 0) assert_true(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
  nest_test_h5_dataset(f, name, type, rank, dims, NULL, 0);
}

/* One FORMAT message naming the bad file and containing `word`. */
static void expect(nest_status st, const char *word) {
  const char *m = nest_error_message();
  if (st != NEST_ERR_FORMAT || !strstr(m, bad) || !strstr(m, word) || strchr(m, '\n'))
    fail_msg("expected one FORMAT line naming %s with '%s', got %s: %s", bad, word,
             nest_status_name(st), m);
}

/* Nothing left open (checked once every reader above has been closed). */
static void expect_all_closed(void) {
  assert_int_equal(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
}

/* Open the bad copy (must succeed) and try to read `name` as `type` x n. */
static nest_status get_bad(const char *name, nest_ck_type type, size_t n) {
  nest_ckpt *r;
  assert_ok(nest_ckpt_open(bad, &r));
  int64_t *buf = calloc(n ? n : 1, sizeof(int64_t)); /* room for n of any type */
  assert_non_null(buf);
  nest_status st = nest_ckpt_get(r, name, type, buf, n);
  free(buf);
  nest_ckpt_close(&r);
  return st;
}

static void test_malformed(void **state) {
  snprintf(good, sizeof good, "%s", nest_test_path(nest_test_tmpdir(), "good.h5"));
  snprintf(bad, sizeof bad, "%s", nest_test_path(nest_test_tmpdir(), "bad.h5"));
  nest_net *net = test_net(3);
  write_full(good, net, net);
  nest_ckpt *r = NULL;

  /* Reading with the wrong type or count; a missing dataset. */
  copy(good, bad);
  expect(get_bad("i64", NEST_CK_F64, 5), "/state/i64 must be float64");
  expect(get_bad("f32", NEST_CK_F64, 2), "/state/f32 must be float64");
  expect(get_bad("i64", NEST_CK_I64, 4), "/state/i64 has 5 elements, expected 4");
  expect(get_bad("nope", NEST_CK_I64, 1), "missing dataset /state/nope");

  /* checkpoint_version of another build. */
  hid_t f = edit();
  const int v = 2;
  hid_t a = H5Aopen(f, "checkpoint_version", H5P_DEFAULT);
  assert_true(H5Awrite(a, H5T_NATIVE_INT, &v) >= 0);
  H5Aclose(a);
  H5Fclose(f);
  expect(nest_ckpt_open(bad, &r), "checkpoint_version 2 not supported");
  assert_null(r);
  expect_all_closed();

  /* /state gone, /state a dataset. */
  f = edit();
  assert_true(H5Ldelete(f, "state", H5P_DEFAULT) >= 0);
  H5Fclose(f);
  expect(nest_ckpt_open(bad, &r), "missing group /state");
  f = edit();
  hsize_t d2[2] = {2, 2}, d1 = 1;
  replace_dataset(f, "state", 1, &d1, H5T_STD_I32LE);
  H5Fclose(f);
  expect(nest_ckpt_open(bad, &r), "/state is not a group");
  expect_all_closed();

  /* A /state dataset of rank 2. */
  f = edit();
  replace_dataset(f, "/state/i64", 2, d2, H5T_STD_I64LE);
  H5Fclose(f);
  expect(get_bad("i64", NEST_CK_I64, 4), "/state/i64 has rank 2, expected 1");

  /* The snapshot group gone, or not a group. */
  f = edit();
  assert_true(H5Ldelete(f, "snapshot", H5P_DEFAULT) >= 0);
  H5Fclose(f);
  assert_ok(nest_ckpt_open(bad, &r));
  nest_net *back = NULL;
  expect(nest_ckpt_get_net(r, "snapshot", 4, 1, 1, &back), "missing group /snapshot");
  assert_null(back);
  nest_ckpt_close(&r);
  f = edit();
  replace_dataset(f, "snapshot", 1, &d1, H5T_STD_I32LE);
  H5Fclose(f);
  assert_ok(nest_ckpt_open(bad, &r));
  expect(nest_ckpt_get_net(r, "snapshot", 4, 1, 1, &back), "/snapshot is not a group");
  nest_ckpt_close(&r);
  expect_all_closed();

  /* One flipped byte in a dataset's stored data: the checksum catches it. */
  copy(good, bad);
  FILE *fp = fopen(bad, "r+b");
  assert_non_null(fp);
  static unsigned char buf[1 << 22];
  const size_t len = fread(buf, 1, sizeof buf, fp);
  assert_true(len < sizeof buf);
  const int64_t probe = 0x5a5a0000 + 1000;
  size_t at = 0;
  while (at + 8 <= len && memcmp(buf + at, &probe, 8) != 0) ++at;
  assert_true(at + 8 <= len);
  buf[at] ^= 0x10;
  fseek(fp, (long)at, SEEK_SET);
  assert_int_equal(fwrite(buf + at, 1, 1, fp), 1);
  fclose(fp);
  expect(get_bad("pattern", NEST_CK_I64, PATTERN_N), "checksum mismatch");
  expect_all_closed();
  nest_net_destroy(&net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_malformed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
