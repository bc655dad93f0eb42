/* test_shards.c — image shards and the batch reader, in one process: the writer round-trips
 * images, labels and statistics; a set opens without loading its images and reads exactly the
 * bytes asked for; broken sets (a missing shard, another shape, other statistics, a truncated
 * file, no match) fail with one line naming the file; the crop kernel against its reference
 * twin; an uncropped shard read gives gather's bits; crop/flip draws are deterministic per
 * (seed, key, id), differ across epochs and do not depend on the batch position or thread
 * count; background reads give exactly the synchronous batches. */
#define _DEFAULT_SOURCE /* truncate */
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
#include <unistd.h>

#include "nest/augment.h"
#include "nest/data.h"
#include "nest/prefetch.h"
#include "nest/rng.h"
#include "test_util.h"

#pragma GCC diagnostic ignored "-Wformat-truncation" /* test paths are short */

static const char *dir;

/* Image i of the handmade sets: byte j = (i * 7 + j * 13 + i * j) mod 256; label i mod 3. */
static void handmade(int64_t i, size_t bytes, uint8_t *img) {
  for (size_t j = 0; j < bytes; ++j) img[j] = (uint8_t)((i * 7 + (int64_t)j * 13 + i * (int64_t)j) & 255);
}

static void write_handmade(const char *prefix, int64_t n, nest_shape shape, int64_t per_shard,
                           int64_t first) {
  nest_shard_writer *w;
  assert_ok(nest_shard_writer_create(prefix, shape, 3, per_shard, NULL, &w));
  const size_t b = nest_shape_size(shape);
  uint8_t *img = malloc(b);
  for (int64_t i = 0; i < n; ++i) {
    handmade(first + i, b, img);
    assert_ok(nest_shard_writer_add(w, img, (int32_t)((first + i) % 3)));
  }
  int64_t got;
  int nf;
  assert_ok(nest_shard_writer_finish(w, &got, &nf));
  assert_int_equal(got, n);
  assert_int_equal(nf, (int)((n + per_shard - 1) / per_shard));
  nest_shard_writer_destroy(&w);
  free(img);
}

static nest_dataset *open_set(const char *pattern) {
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = pattern;
  nest_dataset *ds = NULL;
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  return ds;
}

static nest_status try_open(const char *pattern, nest_dataset **ds) {
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = pattern;
  return nest_dataset_load(&o, NULL, ds);
}

static void expect_error(const char *pattern, const char *want1, const char *want2) {
  nest_dataset *ds = NULL;
  nest_status st = try_open(pattern, &ds);
  assert_null(ds);
  if (st == NEST_OK) fail_msg("%s: opened, expected an error with '%s'", pattern, want1);
  const char *m = nest_error_message();
  if (!strstr(m, want1) || (want2 && !strstr(m, want2)))
    fail_msg("%s: message '%s' lacks '%s' / '%s'", pattern, m, want1, want2 ? want2 : "");
  if (strchr(m, '\n')) fail_msg("not one line: %s", m);
  if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != 0) fail_msg("%s: HDF5 objects left open", pattern);
}

static void test_round_trip(void **state) {
  const nest_shape shape = {3, 5, 7};
  const int64_t n = 23;
  const char *prefix = nest_test_path(dir, "rt");
  write_handmade(prefix, n, shape, 10, 0);
  char pattern[4096];
  snprintf(pattern, sizeof pattern, "%s-*.h5", prefix);
  nest_dataset *ds = open_set(pattern);
  assert_int_equal(ds->n, n);
  assert_int_equal(ds->nclasses, 3);
  assert_true(nest_dataset_is_sharded(ds));
  assert_null(ds->u8); /* no image in memory: only labels and offsets */
  assert_null(ds->f32);
  assert_int_equal(ds->shape.c, 3);
  assert_int_equal(ds->shape.h, 5);
  assert_int_equal(ds->shape.w, 7);
  assert_true(ds->source_hash != 0);
  const size_t b = nest_shape_size(shape);
  uint8_t want[105], got[105];
  /* mean / std over all images in raw units, computed here in double */
  double s[3] = {0}, q[3] = {0};
  for (int64_t i = 0; i < n; ++i) {
    handmade(i, b, want);
    assert_ok(nest_dataset_read_u8(ds, i, got));
    assert_memory_equal(got, want, b);
    assert_int_equal(ds->labels[i], (int)(i % 3));
    for (int c = 0; c < 3; ++c)
      for (int j = 0; j < 35; ++j) s[c] += want[c * 35 + j], q[c] += (double)want[c * 35 + j] * want[c * 35 + j];
  }
  nest_io_counts io;
  nest_dataset_io_counts(ds, &io);
  assert_int_equal(io.images, n);
  assert_int_equal(io.bytes, n * (int64_t)b);
  nest_norm norm;
  assert_ok(nest_dataset_train_norm(ds, NULL, 0, &norm));
  for (int c = 0; c < 3; ++c) {
    const double m = s[c] / (n * 35.0), sd = sqrt(q[c] / (n * 35.0) - m * m);
    assert_true(fabs(norm.mean[c] * 255.0 - m) < 1e-3);
    assert_true(fabs(norm.std[c] * 255.0 - sd) < 1e-3);
  }
  nest_norm_free(&norm);
  /* One shard alone opens too (no set check). */
  nest_dataset *one = open_set(nest_test_path(dir, "rt-00001.h5"));
  assert_int_equal(one->n, 10);
  handmade(13, b, want);
  assert_ok(nest_dataset_read_u8(one, 3, got));
  assert_memory_equal(got, want, b);
  nest_dataset_destroy(&one);
  /* max_samples keeps the first N across shards */
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = pattern;
  o.max_samples = 12;
  assert_ok(nest_dataset_load(&o, NULL, &one));
  assert_int_equal(one->n, 12);
  assert_ok(nest_dataset_read_u8(one, 11, got));
  handmade(11, b, want);
  assert_memory_equal(got, want, b);
  nest_dataset_destroy(&one);
  nest_dataset_destroy(&ds);
}

/* Copy a file (to graft a shard of another set into one). */
static void copy_file(const char *from, const char *to) {
  char cmd[8400];
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
  assert_int_equal(system(cmd), 0);
}

static void test_broken_sets(void **state) {
  const nest_shape shape = {3, 6, 6};
  char p[4096], pat[4096], a[4096], b[4096];
  /* a missing shard */
  snprintf(p, sizeof p, "%s", nest_test_path(dir, "miss"));
  write_handmade(p, 30, shape, 10, 0);
  snprintf(a, sizeof a, "%s-00001.h5", p);
  assert_int_equal(unlink(a), 0);
  snprintf(pat, sizeof pat, "%s-*.h5", p);
  expect_error(pat, "a shard is missing", "the set has 3 shards");
  /* the last shard missing too: the first shard still knows the count */
  snprintf(a, sizeof a, "%s-00002.h5", p);
  assert_int_equal(unlink(a), 0);
  expect_error(pat, "a shard is missing", NULL);
  /* a shard of another shape grafted in */
  snprintf(p, sizeof p, "%s", nest_test_path(dir, "shape"));
  write_handmade(p, 20, shape, 10, 0);
  write_handmade(nest_test_path(dir, "other"), 20, (nest_shape){3, 8, 6}, 10, 0);
  snprintf(a, sizeof a, "%s", nest_test_path(dir, "other-00001.h5"));
  snprintf(b, sizeof b, "%s-00001.h5", p);
  copy_file(a, b);
  snprintf(pat, sizeof pat, "%s-*.h5", p);
  expect_error(pat, "shape-00001.h5: images are 3x8x6", "first shard's are 3x6x6");
  /* same shape, other statistics */
  snprintf(p, sizeof p, "%s", nest_test_path(dir, "stats"));
  write_handmade(p, 20, shape, 10, 0);
  write_handmade(nest_test_path(dir, "later"), 20, shape, 10, 500);
  snprintf(a, sizeof a, "%s", nest_test_path(dir, "later-00001.h5"));
  snprintf(b, sizeof b, "%s-00001.h5", p);
  copy_file(a, b);
  snprintf(pat, sizeof pat, "%s-*.h5", p);
  expect_error(pat, "stats-00001.h5: /mean or /std differs", NULL);
  /* a truncated shard */
  snprintf(p, sizeof p, "%s", nest_test_path(dir, "trunc"));
  write_handmade(p, 20, shape, 10, 0);
  snprintf(a, sizeof a, "%s-00001.h5", p);
  assert_int_equal(truncate(a, 1200), 0);
  snprintf(pat, sizeof pat, "%s-*.h5", p);
  nest_dataset *ds = NULL;
  assert_int_not_equal(try_open(pat, &ds), NEST_OK);
  assert_non_null(strstr(nest_error_message(), "trunc-00001.h5"));
  /* no match, a file that is not a shard */
  expect_error(nest_test_path(dir, "nothing-*.h5"), "no file matches the pattern", NULL);
  assert_int_equal(nest_test_write_file(nest_test_path(dir, "junk-00000.h5"), "hello", 5), 0);
  expect_error(nest_test_path(dir, "junk-*.h5"), "junk-00000.h5: not an HDF5 file", NULL);
}

/* A one-file shard set written with HDF5 directly, whose sizes say what the test wants:
 * /images uint8 [n, C, H, W] (chunked one image per chunk, or contiguous and allocated but
 * never written: a sparse file), /labels int32 [n] (chunked, never written: all 0),
 * /mean, /std [C] and the root attributes of a finished shard. */
static const char *craft_shard(const char *name, hsize_t n, hsize_t c, hsize_t h, hsize_t w,
                               int contiguous) {
  const char *p = nest_test_path(dir, name);
  hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  assert_true(f >= 0);
  hid_t as = H5Screate(H5S_SCALAR), st = H5Tcopy(H5T_C_S1);
  H5Tset_size(st, strlen("image-shard"));
  hid_t a = H5Acreate2(f, "nest_format", st, as, H5P_DEFAULT, H5P_DEFAULT);
  assert_true(H5Awrite(a, st, "image-shard") >= 0);
  H5Aclose(a);
  H5Tclose(st);
  const char *ints[4] = {"shard_version", "nclasses", "shard_index", "shard_count"};
  const int vals[4] = {1, 3, 0, 1};
  for (int k = 0; k < 4; ++k) {
    a = H5Acreate2(f, ints[k], H5T_STD_I32LE, as, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Awrite(a, H5T_NATIVE_INT, &vals[k]) >= 0);
    H5Aclose(a);
  }
  H5Sclose(as);
  const hsize_t dims[4] = {n, c, h, w}, chunk[4] = {1, c, h, w}, lc = n < 1024 ? n : 1024;
  nest_test_h5_dataset(f, "images", H5T_STD_U8LE, 4, dims, contiguous ? NULL : chunk, contiguous);
  nest_test_h5_dataset(f, "labels", H5T_STD_I32LE, 1, &n, &lc, 0);
  float stat[4] = {1, 1, 1, 1};
  assert_true(c <= 4);
  hid_t sp = H5Screate_simple(1, &c, NULL);
  const char *stats[2] = {"mean", "std"};
  for (int k = 0; k < 2; ++k) {
    hid_t d = H5Dcreate2(f, stats[k], H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, stat) >= 0);
    H5Dclose(d);
  }
  H5Sclose(sp);
  assert_true(H5Fclose(f) >= 0);
  return p;
}

/* Sizes from a shard's header are checked before they are trusted. */
static void test_lying_sizes(void **state) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  /* The crafted skeleton itself opens (one image, all zero). */
  const char *p = craft_shard("fine.h5", 1, 1, 4, 4, 0);
  nest_dataset *ds = NULL;
  nest_status st = try_open(p, &ds);
  nest_dataset_destroy(&ds);
  assert_int_equal(st, NEST_ERR_FORMAT); /* chunk never written: "image 0 was never written" */
  assert_non_null(strstr(nest_error_message(), "image 0 was never written"));
  /* 2^61 + 1 images in a file of a few KiB: the label buffer's capacity (doubled up to
   * 2^62 entries, 2^64 bytes) must not wrap around to a tiny allocation. */
  p = craft_shard("many.h5", ((hsize_t)1 << 61) + 1, 1, 1, 1, 0);
  expect_error(p, "many.h5: ", "2305843009213693953 images");
  /* C*H*W = 1 x 46341 x 46341 > INT_MAX: refused from the header, before the reader
   * allocates two images (4.3 GB) to check where the first one lies. The file is sparse. */
  p = craft_shard("wide.h5", 1, 1, 46341, 46341, 1);
  expect_error(p, "wide.h5: ", "INT_MAX");
  unlink(p);
}

/* The file shrinks after the set was opened: the read fails with the file's name. */
static void test_read_error(void **state) {
  const nest_shape shape = {1, 8, 8};
  const char *p = nest_test_path(dir, "shrink");
  write_handmade(p, 12, shape, 6, 0);
  char pat[4096], a[4096];
  snprintf(pat, sizeof pat, "%s-*.h5", p);
  nest_dataset *ds = open_set(pat);
  snprintf(a, sizeof a, "%s-00001.h5", p);
  assert_int_equal(truncate(a, 2000), 0);
  uint8_t buf[64];
  assert_ok(nest_dataset_read_u8(ds, 0, buf));
  assert_int_equal(nest_dataset_read_u8(ds, 11, buf), NEST_ERR_IO);
  assert_non_null(strstr(nest_error_message(), "shrink-00001.h5: truncated"));
  /* through the batch reader, synchronously and in the background: the same error */
  for (int bg = 0; bg < 2; ++bg) {
    nest_prefetch *pf;
    assert_ok(nest_prefetch_create(1, 0, 4, 64, 64, 2, bg, &pf));
    float *x;
    assert_ok(nest_malloc_aligned((void **)&x, sizeof(float) * 4 * 64, "x"));
    int32_t *y = malloc(sizeof(int32_t) * 4);
    const int64_t ids[3] = {1, 11, 2};
    const nest_batch_req r = {.ds = ds, .ids = ids, .n = 3, .train = 0};
    nest_prefetch_ahead(pf, &r);
    nest_error_clear();
    assert_int_equal(nest_prefetch_get(pf, &r, &x, &y), NEST_ERR_IO);
    if (!strstr(nest_error_message(), "shrink-00001.h5: truncated"))
      fail_msg("background %d: message '%s'", bg, nest_error_message());
    nest_prefetch_destroy(&pf);
    nest_free_aligned(x); /* the pairs may have been swapped: both are aligned */
    free(y);
  }
  nest_dataset_destroy(&ds);
}

/* The fast crop kernel against its double twin, windows and flips drawn at random. */
static void test_crop_reference(void **state) {
  const nest_shape stored = {3, 19, 23}, out = {3, 11, 13};
  uint8_t src[3 * 19 * 23];
  nest_rng r;
  nest_rng_init(&r, 3, NEST_RNG_TEST, 0, 0);
  for (size_t j = 0; j < sizeof src; ++j) src[j] = (uint8_t)nest_rng_u32(&r);
  const float mean[3] = {0.4f, 0.5f, 0.45f}, sd[3] = {0.2f, 0.25f, 0.3f}, scale = 1.0f / 255.0f;
  float a[3], b[3], x[3 * 11 * 13];
  double ref[3 * 11 * 13];
  for (int c = 0; c < 3; ++c) a[c] = scale / sd[c], b[c] = -mean[c] / sd[c];
  int seen_flip = 0, seen_plain = 0, corners = 0;
  for (int64_t id = 0; id < 200; ++id) {
    const nest_crop_window w = nest_aug_crop_draw(9, 4, id, stored, out, 1, 1);
    assert_true(w.y0 >= 0 && w.y0 <= stored.h - out.h && w.x0 >= 0 && w.x0 <= stored.w - out.w);
    seen_flip += w.flip, seen_plain += !w.flip;
    corners += (w.y0 == 0 || w.y0 == stored.h - out.h) && (w.x0 == 0 || w.x0 == stored.w - out.w);
    nest_augment_crop_u8(src, stored, out, w, a, b, x);
    nest_ref_crop_u8(src, stored, out, w, mean, sd, scale, ref);
    const double d = nest_test_max_rel_diff(x, ref, sizeof x / sizeof x[0]);
    if (d > 1e-5) fail_msg("sample %lld: crop kernel differs from the reference by %g", (long long)id, d);
  }
  assert_true(seen_flip > 60 && seen_plain > 60); /* a fair coin */
  assert_true(corners > 0);                       /* the whole range of offsets is reachable */
  /* evaluation: the centre, unflipped; no flip when flip is off */
  nest_crop_window c = nest_aug_crop_draw(9, 4, 7, stored, out, 1, 0);
  assert_int_equal(c.y0, 4);
  assert_int_equal(c.x0, 5);
  assert_int_equal(c.flip, 0);
  for (int64_t id = 0; id < 50; ++id) assert_int_equal(nest_aug_crop_draw(9, 4, id, stored, out, 0, 1).flip, 0);
}

/* Crop and flip are a pure function of (seed, key, id): the same in any batch position and
 * thread count, and another epoch (key) moves most windows. */
static void test_crop_determinism(void **state) {
  const nest_shape stored = {3, 32, 32}, out = {3, 24, 24};
  int same = 0;
  for (int64_t id = 0; id < 100; ++id) {
    const nest_crop_window a = nest_aug_crop_draw(5, 0, id, stored, out, 1, 1);
    const nest_crop_window b = nest_aug_crop_draw(5, 0, id, stored, out, 1, 1);
    const nest_crop_window e = nest_aug_crop_draw(5, 1, id, stored, out, 1, 1);
    const nest_crop_window s = nest_aug_crop_draw(6, 0, id, stored, out, 1, 1);
    assert_memory_equal(&a, &b, sizeof a);
    same += memcmp(&a, &e, sizeof a) == 0;
    same += memcmp(&a, &s, sizeof a) == 0;
  }
  assert_true(same < 10); /* 81 windows x 2 flips: a repeat is rare */

  /* through shards: a batch read in one order and threads vs another order and thread count */
  const char *p = nest_test_path(dir, "det");
  int nf = 0;
  assert_ok(nest_shards_synthetic(p, 40, stored, 4, 16, 11, 0, &nf));
  assert_int_equal(nf, 3);
  char pat[4096];
  snprintf(pat, sizeof pat, "%s-*.h5", p);
  nest_dataset *ds = open_set(pat);
  assert_ok(nest_dataset_set_crop(ds, 24));
  assert_int_equal(ds->shape.h, 24);
  const size_t dim = nest_shape_size(ds->shape), ib = nest_shape_size(stored);
  int64_t ids[40], rev[40];
  for (int i = 0; i < 40; ++i) ids[i] = (i * 17) % 40;
  for (int i = 0; i < 40; ++i) rev[i] = ids[39 - i];
  float *x1 = malloc(sizeof(float) * 40 * dim), *x2 = malloc(sizeof(float) * 40 * dim);
  float *x3 = malloc(sizeof(float) * 40 * dim);
  int32_t y1[40], y2[40];
  uint8_t *scratch = malloc(ib * 3);
  nest_batch_req r = {.ds = ds, .ids = ids, .n = 40, .train = 1, .data_key = 2};
  assert_ok(nest_prefetch_read(&r, 5, 1, 1, scratch, ib, x1, y1));
  r.ids = rev;
  assert_ok(nest_prefetch_read(&r, 5, 1, 3, scratch, ib, x2, y2));
  for (int i = 0; i < 40; ++i) {
    assert_memory_equal(x1 + (size_t)i * dim, x2 + (size_t)(39 - i) * dim, sizeof(float) * dim);
    assert_int_equal(y1[i], y2[39 - i]);
    assert_int_equal(y1[i], ds->labels[ids[i]]);
  }
  /* another epoch: other windows for most samples; evaluation (train 0) ignores the key */
  r.ids = ids;
  r.data_key = 3;
  assert_ok(nest_prefetch_read(&r, 5, 1, 2, scratch, ib, x2, y2));
  int differ = 0;
  for (int i = 0; i < 40; ++i) differ += memcmp(x1 + (size_t)i * dim, x2 + (size_t)i * dim, sizeof(float) * dim) != 0;
  assert_true(differ > 30);
  r.train = 0;
  assert_ok(nest_prefetch_read(&r, 5, 1, 2, scratch, ib, x2, y2));
  r.data_key = 99;
  assert_ok(nest_prefetch_read(&r, 5, 1, 1, scratch, ib, x3, y2));
  assert_memory_equal(x2, x3, sizeof(float) * 40 * dim);
  free(x1), free(x2), free(x3), free(scratch);
  nest_dataset_destroy(&ds);
}

/* An uncropped, unflipped shard read is gather's batch of the same images, bit for bit. */
static void test_same_as_gather(void **state) {
  const nest_shape shape = {3, 9, 9};
  const char *p = nest_test_path(dir, "gath");
  int nf;
  assert_ok(nest_shards_synthetic(p, 30, shape, 5, 7, 21, 0, &nf));
  char pat[4096];
  snprintf(pat, sizeof pat, "%s-*.h5", p);
  nest_dataset *sh = open_set(pat), *mem = NULL;
  const size_t ib = nest_shape_size(shape);
  /* the same images in memory */
  assert_ok(nest_dataset_synthetic(30, shape, 5, 0.1f, 1, 1, &mem));
  for (int64_t i = 0; i < 30; ++i) {
    assert_ok(nest_dataset_read_u8(sh, i, mem->u8 + i * ib));
    mem->labels[i] = sh->labels[i];
  }
  nest_norm norm;
  assert_ok(nest_dataset_train_norm(sh, NULL, 0, &norm));
  assert_ok(nest_dataset_set_norm(mem, &norm));
  assert_ok(nest_dataset_set_norm(sh, &norm));
  nest_norm_free(&norm);
  int64_t ids[30];
  for (int i = 0; i < 30; ++i) ids[i] = 29 - i;
  float *xa = malloc(sizeof(float) * 30 * ib), *xb = malloc(sizeof(float) * 30 * ib);
  int32_t ya[30], yb[30];
  uint8_t *scratch = malloc(ib * 2);
  nest_dataset_gather(mem, ids, 30, xa, ya);
  const nest_batch_req r = {.ds = sh, .ids = ids, .n = 30, .train = 0};
  assert_ok(nest_prefetch_read(&r, 1, 0, 2, scratch, ib, xb, yb));
  assert_memory_equal(xa, xb, sizeof(float) * 30 * ib);
  assert_memory_equal(ya, yb, sizeof ya);
  free(xa), free(xb), free(scratch);
  nest_dataset_destroy(&sh);
  nest_dataset_destroy(&mem);
}

/* Synthetic shards: the same bytes for any shard size; learnable (the class means differ). */
static void test_synthetic(void **state) {
  const nest_shape shape = {3, 16, 16};
  char pa[4096], pb[4096];
  snprintf(pa, sizeof pa, "%s", nest_test_path(dir, "syna"));
  snprintf(pb, sizeof pb, "%s", nest_test_path(dir, "synb"));
  int na, nb;
  assert_ok(nest_shards_synthetic(pa, 50, shape, 3, 7, 4, 0, &na));
  assert_ok(nest_shards_synthetic(pb, 20, shape, 3, 50, 4, 30, &nb)); /* images 30..49 */
  assert_int_equal(na, 8);
  assert_int_equal(nb, 1);
  char pat[4096];
  snprintf(pat, sizeof pat, "%s-*.h5", pa);
  nest_dataset *a = open_set(pat);
  snprintf(pat, sizeof pat, "%s-*.h5", pb);
  nest_dataset *b = open_set(pat);
  uint8_t ia[768], ibuf[768];
  for (int64_t i = 0; i < 20; ++i) {
    assert_ok(nest_dataset_read_u8(a, 30 + i, ia));
    assert_ok(nest_dataset_read_u8(b, i, ibuf));
    assert_memory_equal(ia, ibuf, sizeof ia);
    assert_int_equal(a->labels[30 + i], b->labels[i]);
  }
  /* per-class mean of channel 0 over the set: classes are apart */
  double sum[3] = {0}, cnt[3] = {0};
  for (int64_t i = 0; i < 50; ++i) {
    assert_ok(nest_dataset_read_u8(a, i, ia));
    double s = 0;
    for (int j = 0; j < 256; ++j) s += ia[j];
    sum[a->labels[i]] += s / 256, cnt[a->labels[i]]++;
  }
  for (int k = 0; k < 3; ++k) assert_true(cnt[k] > 0);
  const double m0 = sum[0] / cnt[0], m1 = sum[1] / cnt[1], m2 = sum[2] / cnt[2];
  assert_true(fabs(m0 - m1) > 2 || fabs(m0 - m2) > 2 || fabs(m1 - m2) > 2);
  nest_dataset_destroy(&a);
  nest_dataset_destroy(&b);
}

/* Background reads give exactly the synchronous batches; the reader holds one extra pair and
 * its scratch, the dataset none; each read moves exactly its images' bytes. */
static void test_prefetch_equals_sync(void **state) {
  const nest_shape stored = {3, 20, 20};
  const char *p = nest_test_path(dir, "pf");
  int nf;
  assert_ok(nest_shards_synthetic(p, 64, stored, 4, 20, 8, 0, &nf));
  char pat[4096];
  snprintf(pat, sizeof pat, "%s-*.h5", p);
  nest_dataset *ds = open_set(pat);
  assert_ok(nest_dataset_set_crop(ds, 16));
  const size_t dim = nest_shape_size(ds->shape), ib = nest_shape_size(stored);
  const int rows = 10;
  nest_prefetch *bg, *sync;
  assert_ok(nest_prefetch_create(13, 1, rows, dim, ib, 2, 1, &bg));
  assert_ok(nest_prefetch_create(13, 1, rows, dim, ib, 2, 0, &sync));
  nest_prefetch_stats st;
  nest_prefetch_get_stats(bg, &st);
  assert_int_equal(st.buffer_bytes, 3 * ib + rows * dim * sizeof(float) + rows * sizeof(int32_t));
  nest_prefetch_get_stats(sync, &st);
  assert_int_equal(st.buffer_bytes, 3 * ib);
  float *xa, *xb;
  int32_t *ya, *yb;
  assert_ok(nest_malloc_aligned((void **)&xa, sizeof(float) * rows * dim, "x"));
  assert_ok(nest_malloc_aligned((void **)&xb, sizeof(float) * rows * dim, "x"));
  ya = malloc(sizeof(int32_t) * rows), yb = malloc(sizeof(int32_t) * rows);
  int64_t perm[64];
  nest_io_counts before, after;
  nest_dataset_io_counts(ds, &before);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    for (int i = 0; i < 64; ++i) perm[i] = (i * 37 + epoch * 5) % 64;
    for (int s = 0; s * rows < 64; ++s) {
      const int n = 64 - s * rows < rows ? 64 - s * rows : rows;
      const nest_batch_req r = {.ds = ds, .ids = perm + s * rows, .n = n, .train = 1, .data_key = epoch};
      assert_ok(nest_prefetch_get(bg, &r, &xa, &ya));
      if ((s + 1) * rows < 64) {
        const int n2 = 64 - (s + 1) * rows < rows ? 64 - (s + 1) * rows : rows;
        const nest_batch_req next = {.ds = ds, .ids = perm + (s + 1) * rows, .n = n2, .train = 1, .data_key = epoch};
        nest_prefetch_ahead(bg, &next);
      }
      assert_ok(nest_prefetch_get(sync, &r, &xb, &yb));
      assert_memory_equal(xa, xb, sizeof(float) * (size_t)n * dim);
      assert_memory_equal(ya, yb, sizeof(int32_t) * (size_t)n);
    }
  }
  nest_dataset_io_counts(ds, &after);
  /* 2 readers x 2 epochs x 64 images, each read once */
  assert_int_equal(after.images - before.images, 4 * 64);
  assert_int_equal(after.bytes - before.bytes, 4 * 64 * (int64_t)ib);
  nest_prefetch_get_stats(bg, &st);
  assert_int_equal(st.prefetched, 12); /* all but the first batch of each epoch */
  assert_int_equal(st.sync_reads, 2);
  assert_int_equal(st.discarded, 0);
  /* a hint that does not come true: discarded, and the batch asked for is still right */
  const nest_batch_req wrong = {.ds = ds, .ids = perm, .n = rows, .train = 1, .data_key = 7};
  const nest_batch_req right = {.ds = ds, .ids = perm + 1, .n = rows, .train = 1, .data_key = 7};
  nest_prefetch_ahead(bg, &wrong);
  assert_ok(nest_prefetch_get(bg, &right, &xa, &ya));
  assert_ok(nest_prefetch_get(sync, &right, &xb, &yb));
  assert_memory_equal(xa, xb, sizeof(float) * rows * dim);
  nest_prefetch_get_stats(bg, &st);
  assert_int_equal(st.discarded, 1);
  nest_prefetch_destroy(&bg);
  nest_prefetch_destroy(&sync);
  nest_free_aligned(xa), nest_free_aligned(xb), free(ya), free(yb);
  nest_dataset_destroy(&ds);
}

/* crop / flip need image shards; a crop must fit. */
static void test_config_errors(void **state) {
  nest_config cfg;
  nest_config_defaults(&cfg);
  nest_dataset *mem = NULL;
  assert_ok(nest_dataset_synthetic(10, (nest_shape){1, 8, 8}, 2, 0.1f, 1, 1, &mem));
  nest_prefetch *pf = NULL;
  cfg.aug_crop = 6;
  assert_int_equal(nest_prefetch_from_config(&cfg, mem, NULL, 4, 1, &pf), NEST_ERR_CONFIG);
  assert_non_null(strstr(nest_error_message(), "augment.crop = 6"));
  cfg.aug_crop = 0;
  cfg.aug_flip = 1;
  assert_int_equal(nest_prefetch_from_config(&cfg, mem, NULL, 4, 1, &pf), NEST_ERR_CONFIG);
  assert_non_null(strstr(nest_error_message(), "augment.flip = 1"));
  cfg.aug_flip = 0;
  assert_ok(nest_prefetch_from_config(&cfg, mem, NULL, 4, 1, &pf)); /* in memory: plain gather */
  nest_prefetch_destroy(&pf);
  const char *p = nest_test_path(dir, "cfg");
  int nf;
  assert_ok(nest_shards_synthetic(p, 5, (nest_shape){3, 10, 12}, 2, 5, 1, 0, &nf));
  char pat[4096];
  snprintf(pat, sizeof pat, "%s-*.h5", p);
  nest_dataset *sh = open_set(pat);
  cfg.aug_crop = 11;
  assert_int_equal(nest_prefetch_from_config(&cfg, sh, NULL, 4, 1, &pf), NEST_ERR_CONFIG);
  assert_non_null(strstr(nest_error_message(), "does not fit the 10x12 images"));
  cfg.aug_crop = 10;
  cfg.aug_flip = 1;
  assert_ok(nest_prefetch_from_config(&cfg, sh, NULL, 4, 1, &pf));
  assert_int_equal(sh->shape.h, 10);
  assert_int_equal(sh->shape.w, 10);
  nest_prefetch_destroy(&pf);
  nest_dataset_destroy(&sh);
  nest_dataset_destroy(&mem);
}

int main(void) {
  dir = nest_test_tmpdir();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),       cmocka_unit_test(test_broken_sets),
      cmocka_unit_test(test_lying_sizes),
      cmocka_unit_test(test_read_error),       cmocka_unit_test(test_crop_reference),
      cmocka_unit_test(test_crop_determinism), cmocka_unit_test(test_same_as_gather),
      cmocka_unit_test(test_synthetic),        cmocka_unit_test(test_prefetch_equals_sync),
      cmocka_unit_test(test_config_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
