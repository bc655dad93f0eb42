/* test_data.c — the data module: IDX / CSV / HDF5 readers (round trips and bad files), real
 * datasets when present, normalisation, gather, split and synthetic data. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include <hdf5.h>
#include <zlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "nest/data.h"
#include "nest/rng.h"
#include "test_util.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static void put_be32(unsigned char *b, uint32_t v) {
  b[0] = (unsigned char)(v >> 24);
  b[1] = (unsigned char)(v >> 16);
  b[2] = (unsigned char)(v >> 8);
  b[3] = (unsigned char)v;
}

/* Write bytes raw or gzip-compressed. */
static void write_bytes(const char *path, const void *data, size_t n, int gz) {
  if (!gz) {
    assert_int_equal(nest_test_write_file(path, data, n), 0);
    return;
  }
  gzFile f = gzopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(gzwrite(f, data, (unsigned)n), (int)n);
  assert_int_equal(gzclose(f), Z_OK);
}

/* IDX images [n, rows, cols] (pixel = (i * 31 + j * 7) & 255) and labels; `extra` bytes of
 * images data are dropped (negative) or appended (positive). */
static void write_idx_pair(const char *img, const char *lab, uint32_t n, uint32_t rows,
                           uint32_t cols, const uint8_t *labels, uint32_t nlabels, int gz,
                           int extra, uint32_t img_magic) {
  size_t dim = (size_t)rows * cols, bytes = 16 + n * dim;
  unsigned char *b = calloc(bytes + (extra > 0 ? (size_t)extra : 0), 1);
  assert_non_null(b);
  put_be32(b, img_magic);
  put_be32(b + 4, n);
  put_be32(b + 8, rows);
  put_be32(b + 12, cols);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < dim; ++j) b[16 + i * dim + j] = (uint8_t)((i * 31 + j * 7) & 255);
  write_bytes(img, b, (size_t)((long)bytes + extra), gz);
  free(b);
  unsigned char *l = malloc(8 + nlabels);
  assert_non_null(l);
  put_be32(l, 0x00000801);
  put_be32(l + 4, nlabels);
  memcpy(l + 8, labels, nlabels);
  write_bytes(lab, l, 8 + nlabels, gz);
  free(l);
}

static void write_text(const char *path, const char *text) {
  assert_int_equal(nest_test_write_file(path, text, strlen(text)), 0);
}

/* Load with defaults plus a path (and labels); returns the status. */
static nest_status load2(const char *path, const char *labels, nest_dataset **ds) {
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = path;
  o.labels_path = labels;
  return nest_dataset_load(&o, NULL, ds);
}

/* The status is `code` and the message names `file` and contains `word`. */
static void expect_error(nest_status st, nest_status code, const char *file, const char *word) {
  const char *msg = nest_error_message();
  if (st != code || !strstr(msg, file) || !strstr(msg, word))
    fail_msg("expected %s error naming '%s' with '%s'; got %s: %s", nest_status_name(code), file,
             word, nest_status_name(st), msg);
  assert_null(strchr(msg, '\n'));
  assert_int_equal(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0); /* no HDF5 object left open */
}

/* Like assert_int_equal(expr, NEST_OK) but shows the nest error message on failure. */
static const char *tmp(const char *name) { return nest_test_path(nest_test_tmpdir(), name); }

/* ---- IDX --------------------------------------------------------------------------------- */

static void idx_roundtrip(int gz) {
  const uint8_t labels[7] = {3, 1, 4, 1, 5, 9, 2};
  const char *img = tmp(gz ? "rt-img.gz" : "rt-img.idx"), *lab = tmp(gz ? "rt-lab.gz" : "rt-lab.idx");
  write_idx_pair(img, lab, 7, 3, 5, labels, 7, gz, 0, 0x00000803);
  nest_dataset *ds = NULL;
  assert_ok(load2(img, lab, &ds));
  assert_int_equal(ds->n, 7);
  assert_int_equal(ds->shape.c, 1);
  assert_int_equal(ds->shape.h, 3);
  assert_int_equal(ds->shape.w, 5);
  assert_int_equal(ds->nclasses, 10);
  assert_non_null(ds->u8);
  assert_null(ds->f32);
  assert_null(ds->class_names);
  assert_float_equal(ds->u8_scale, 1.0f / 255.0f, 1e-9);
  for (int i = 0; i < 7; ++i) {
    assert_int_equal(ds->labels[i], labels[i]);
    for (int j = 0; j < 15; ++j) assert_int_equal(ds->u8[i * 15 + j], (i * 31 + j * 7) & 255);
  }
  nest_dataset_destroy(&ds);
  assert_null(ds);

  /* max_samples keeps the first records. */
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = img;
  o.labels_path = lab;
  o.max_samples = 3;
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  assert_int_equal(ds->n, 3);
  assert_int_equal(ds->labels[2], 4);
  assert_int_equal(ds->u8[2 * 15 + 4], (2 * 31 + 4 * 7) & 255);
  nest_dataset_destroy(&ds);
}

static void test_idx_roundtrip_raw(void **state) { idx_roundtrip(0); }
static void test_idx_roundtrip_gz(void **state) { idx_roundtrip(1); }

static void test_idx_nclasses(void **state) {
  /* Labels are bytes: nclasses = max(10, max label + 1). */
  const uint8_t labels[3] = {0, 17, 2};
  const char *img = tmp("nc-img"), *lab = tmp("nc-lab");
  write_idx_pair(img, lab, 3, 2, 2, labels, 3, 0, 0, 0x00000803);
  nest_dataset *ds = NULL;
  assert_ok(load2(img, lab, &ds));
  assert_int_equal(ds->nclasses, 18);
  nest_dataset_destroy(&ds);
}

static void test_idx_bad(void **state) {
  const uint8_t labels[4] = {0, 1, 2, 3};
  nest_dataset *ds = NULL;

  const char *img = tmp("tr-img"), *lab = tmp("tr-lab");
  write_idx_pair(img, lab, 4, 4, 4, labels, 4, 0, -10, 0x00000803);
  expect_error(load2(img, lab, &ds), NEST_ERR_FORMAT, img, "truncated");
  assert_null(ds);
  assert_non_null(strstr(nest_error_message(), "expected 80 bytes, got 70"));

  img = tmp("trz-img.gz"), lab = tmp("trz-lab.gz");
  write_idx_pair(img, lab, 4, 4, 4, labels, 4, 1, -10, 0x00000803);
  expect_error(load2(img, lab, &ds), NEST_ERR_FORMAT, img, "truncated");

  /* A gzip file cut in the middle of the compressed stream. */
  {
    size_t n = 16 + 200 * 64;
    unsigned char *b = calloc(n, 1);
    assert_non_null(b);
    put_be32(b, 0x803);
    put_be32(b + 4, 200);
    put_be32(b + 8, 8);
    put_be32(b + 12, 8);
    for (size_t i = 16; i < n; ++i) b[i] = (unsigned char)nest_rng_at(1, NEST_RNG_TEST, 0, 0, i);
    img = tmp("cut-img.gz");
    write_bytes(img, b, n, 1);
    free(b);
    FILE *f = fopen(img, "rb");
    unsigned char part[4000];
    size_t got = fread(part, 1, sizeof part, f);
    fclose(f);
    assert_true(got > 3000);
    assert_int_equal(nest_test_write_file(img, part, 3000), 0);
    uint8_t many[200] = {0};
    lab = tmp("cut-lab");
    write_idx_pair(tmp("unused-img"), lab, 1, 1, 1, many, 200, 0, 0, 0x803);
    expect_error(load2(img, lab, &ds), NEST_ERR_FORMAT, img, "truncated");
  }

  img = tmp("mg-img"), lab = tmp("mg-lab");
  write_idx_pair(img, lab, 4, 4, 4, labels, 4, 0, 0, 0x00000802);
  expect_error(load2(img, lab, &ds), NEST_ERR_FORMAT, img, "magic");
  /* Labels given as images (and vice versa): the magic check catches the swap. */
  write_idx_pair(img, lab, 4, 4, 4, labels, 4, 0, 0, 0x00000803);
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = lab;
  o.labels_path = img;
  o.format = "idx";
  expect_error(nest_dataset_load(&o, NULL, &ds), NEST_ERR_FORMAT, lab, "magic");

  img = tmp("cm-img"), lab = tmp("cm-lab");
  write_idx_pair(img, lab, 4, 4, 4, labels, 3, 0, 0, 0x00000803);
  expect_error(load2(img, lab, &ds), NEST_ERR_FORMAT, img, "mismatch");
  assert_non_null(strstr(nest_error_message(), lab));

  img = tmp("tg-img"), lab = tmp("tg-lab");
  write_idx_pair(img, lab, 4, 4, 4, labels, 4, 0, 5, 0x00000803);
  expect_error(load2(img, lab, &ds), NEST_ERR_FORMAT, img, "trailing");

  img = tmp("zero-img"), lab = tmp("zero-lab");
  write_idx_pair(img, lab, 0, 4, 4, labels, 0, 0, 0, 0x00000803);
  expect_error(load2(img, lab, &ds), NEST_ERR_FORMAT, img, "dimensions");

  img = tmp("nl-img"), lab = tmp("does-not-exist-lab");
  write_idx_pair(img, tmp("nl-lab"), 4, 4, 4, labels, 4, 0, 0, 0x00000803);
  expect_error(load2(img, lab, &ds), NEST_ERR_IO, lab, "cannot open");

  expect_error(load2(img, NULL, &ds), NEST_ERR_ARG, img, "labels");
  assert_null(ds);
}

/* ---- CSV --------------------------------------------------------------------------------- */

static void test_csv_roundtrip(void **state) {
  /* Header, CRLF, a blank line, quoted label, an ID column to drop, label last, no final
   * newline. */
  const char *p = tmp("rt.csv");
  write_text(p, "id,a,b,c,kind\r\n"
                "101, 1.5,-2,3e2,dog\r\n"
                "102,0,0.25,-1e-3,\"cat\"\r\n"
                "\r\n"
                "103,7,8,9,emu\r\n"
                "104,-0.5,1,2,cat");
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = p;
  o.csv_header = 1;
  o.csv_label_col = -1;
  o.csv_drop_cols = "0";
  nest_dataset *ds = NULL;
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  assert_int_equal(ds->n, 4);
  assert_int_equal(ds->shape.c, 3);
  assert_int_equal(ds->shape.h, 1);
  assert_int_equal(ds->shape.w, 1);
  assert_null(ds->u8);
  const float want[4][3] = {{1.5f, -2, 300}, {0, 0.25f, -1e-3f}, {7, 8, 9}, {-0.5f, 1, 2}};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j) assert_true(ds->f32[i * 3 + j] == want[i][j]);
  /* Sorted distinct strings: cat 0, dog 1, emu 2. */
  assert_int_equal(ds->nclasses, 3);
  assert_string_equal(ds->class_names[0], "cat");
  assert_string_equal(ds->class_names[1], "dog");
  assert_string_equal(ds->class_names[2], "emu");
  const int wl[4] = {1, 0, 2, 0};
  for (int i = 0; i < 4; ++i) assert_int_equal(ds->labels[i], wl[i]);
  nest_dataset_destroy(&ds);

  /* Integer labels: class = the integer; names are the decimal strings; other delimiter. */
  p = tmp("int.csv");
  write_text(p, "3;0.5;1\n0;1;2\n1;2;3\n");
  nest_data_opts_default(&o);
  o.path = p;
  o.csv_delim = ';';
  o.format = "csv";
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  assert_int_equal(ds->n, 3);
  assert_int_equal(ds->shape.c, 2);
  assert_int_equal(ds->nclasses, 4);
  assert_int_equal(ds->labels[0], 3);
  assert_int_equal(ds->labels[1], 0);
  assert_int_equal(ds->labels[2], 1);
  assert_string_equal(ds->class_names[2], "2");
  assert_string_equal(ds->class_names[3], "3");
  assert_true(ds->f32[0] == 0.5f && ds->f32[5] == 3.0f);
  nest_dataset_destroy(&ds);

  /* max_samples keeps the first rows; the mapping still comes from every row. */
  p = tmp("max.csv");
  write_text(p, "b,1\nb,2\na,3\n");
  nest_data_opts_default(&o);
  o.path = p;
  o.max_samples = 2;
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  assert_int_equal(ds->n, 2);
  assert_int_equal(ds->nclasses, 2);
  assert_int_equal(ds->labels[0], 1);
  nest_dataset_destroy(&ds);
}

static void test_csv_label_ref(void **state) {
  const char *tr = tmp("ref-train.csv"), *te = tmp("ref-test.csv"), *bad = tmp("ref-bad.csv");
  write_text(tr, "cat,1\ndog,2\nemu,3\n");
  write_text(te, "emu,1\ndog,2\n");
  write_text(bad, "emu,1\nfox,2\n");
  nest_dataset *train = NULL, *test = NULL;
  assert_ok(load2(tr, NULL, &train));
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = te;
  assert_ok(nest_dataset_load(&o, train, &test));
  /* Without the reference "emu" would be class 1 of 2; with it, class 2 of 3. */
  assert_int_equal(test->nclasses, 3);
  assert_int_equal(test->labels[0], 2);
  assert_int_equal(test->labels[1], 1);
  assert_string_equal(test->class_names[2], "emu");
  nest_dataset_destroy(&test);

  o.path = bad;
  expect_error(nest_dataset_load(&o, train, &test), NEST_ERR_FORMAT, bad, "unknown label");
  assert_non_null(strstr(nest_error_message(), ":2:"));
  assert_null(test);
  nest_dataset_destroy(&train);

  /* A reference without names (e.g. IDX): integer labels must be < its nclasses. */
  nest_dataset *syn = NULL;
  assert_ok(nest_dataset_synthetic(10, (nest_shape){2, 1, 1}, 3, 0.1f, 1, 0, &syn));
  write_text(te, "2,1\n0,2\n");
  o.path = te;
  assert_ok(nest_dataset_load(&o, syn, &test));
  assert_int_equal(test->nclasses, 3);
  nest_dataset_destroy(&test);
  write_text(te, "2,1\n3,2\n");
  expect_error(nest_dataset_load(&o, syn, &test), NEST_ERR_FORMAT, te, "unknown label");
  nest_dataset_destroy(&syn);
}

static void csv_expect(const char *name, const char *text, int label_col, nest_status code,
                       const char *word) {
  const char *p = tmp(name);
  write_text(p, text);
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = p;
  o.csv_label_col = label_col;
  nest_dataset *ds = NULL;
  expect_error(nest_dataset_load(&o, NULL, &ds), code, p, word);
  assert_null(ds);
}

static void test_csv_bad(void **state) {
  csv_expect("nan.csv", "a,1,2\nb,nan,3\n", 0, NEST_ERR_FORMAT, "NaN");
  assert_non_null(strstr(nest_error_message(), "nan.csv:2: column 1"));
  csv_expect("inf.csv", "a,1,2\nb,3,-inf\n", 0, NEST_ERR_FORMAT, "Inf");
  csv_expect("big.csv", "a,1,1e60\n", 0, NEST_ERR_FORMAT, "Inf");
  csv_expect("word.csv", "a,1,2\nb,3,x7\n", 0, NEST_ERR_FORMAT, "non-numeric");
  assert_non_null(strstr(nest_error_message(), "word.csv:2: column 2"));
  csv_expect("tail.csv", "a,1,2.5kg\n", 0, NEST_ERR_FORMAT, "non-numeric");
  csv_expect("empty.csv", "a,1,2\nb,,3\n", 0, NEST_ERR_FORMAT, "empty feature");
  csv_expect("emptylab.csv", "a,1,2\n,4,3\n", 0, NEST_ERR_FORMAT, "empty label");
  csv_expect("ragged.csv", "a,1,2\nb,3,4\nc,5\n", 0, NEST_ERR_FORMAT, "expected 3 columns, got 2");
  assert_non_null(strstr(nest_error_message(), "ragged.csv:3"));
  csv_expect("ragged2.csv", "a,1,2\nb,3,4,5\n", 0, NEST_ERR_FORMAT, "expected 3 columns, got 4");
  csv_expect("nodata.csv", "\n\n", 0, NEST_ERR_FORMAT, "no data");
  csv_expect("labcol.csv", "a,1,2\n", 5, NEST_ERR_ARG, "label column");
  csv_expect("bigint.csv", "1,1\n99999999,2\n", 0, NEST_ERR_FORMAT, "too large");
  {
    const char *bin = tmp("binary.csv");
    assert_int_equal(nest_test_write_file(bin, "a,1\n\0\0b,2\n", 10), 0);
    nest_dataset *ds = NULL;
    expect_error(load2(bin, NULL, &ds), NEST_ERR_FORMAT, bin, "NUL");
  }

  const char *p = tmp("drop.csv");
  write_text(p, "a,1,2\n");
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = p;
  nest_dataset *ds = NULL;
  o.csv_drop_cols = "0";
  expect_error(nest_dataset_load(&o, NULL, &ds), NEST_ERR_ARG, p, "label column");
  o.csv_drop_cols = "1,x";
  expect_error(nest_dataset_load(&o, NULL, &ds), NEST_ERR_ARG, p, "csv_drop_cols");
  o.csv_drop_cols = "7";
  expect_error(nest_dataset_load(&o, NULL, &ds), NEST_ERR_ARG, p, "out of range");
  o.csv_drop_cols = "1,2";
  expect_error(nest_dataset_load(&o, NULL, &ds), NEST_ERR_FORMAT, p, "no feature");
  /* the one comma-list parser: blanks around items are fine, empty items are not */
  o.csv_drop_cols = " 1 ,  2 ";
  expect_error(nest_dataset_load(&o, NULL, &ds), NEST_ERR_FORMAT, p, "no feature");
  static const char *const empty_item[] = {"1,,2", ",1", "1,", "1, ,2"};
  for (size_t i = 0; i < sizeof empty_item / sizeof empty_item[0]; ++i) {
    o.csv_drop_cols = empty_item[i];
    expect_error(nest_dataset_load(&o, NULL, &ds), NEST_ERR_ARG, p, "empty item");
  }
  o.csv_drop_cols = "1 2";
  expect_error(nest_dataset_load(&o, NULL, &ds), NEST_ERR_ARG, p, "'1 2' is not a 0-based");
  /* A labels file only makes sense for IDX: with format auto it selects the IDX reader. */
  o.csv_drop_cols = "";
  o.labels_path = p;
  expect_error(nest_dataset_load(&o, NULL, &ds), NEST_ERR_FORMAT, p, "magic");
  o.format = "csv";
  expect_error(nest_dataset_load(&o, NULL, &ds), NEST_ERR_ARG, p, "labels file");
  o.labels_path = NULL;
  o.format = "xml";
  expect_error(nest_dataset_load(&o, NULL, &ds), NEST_ERR_ARG, p, "format");
  assert_null(ds);
}

static void test_missing_file(void **state) {
  const char *p = tmp("no-such-file.csv");
  nest_dataset *ds = NULL;
  expect_error(load2(p, NULL, &ds), NEST_ERR_IO, p, "cannot open");
  assert_non_null(strstr(nest_error_message(), "No such file"));
  p = tmp("no-such-file.h5");
  expect_error(load2(p, NULL, &ds), NEST_ERR_IO, p, "cannot open");
  assert_null(ds);
}

/* ---- HDF5 -------------------------------------------------------------------------------- */

static void assert_same_dataset(const nest_dataset *a, const nest_dataset *b) {
  assert_int_equal(a->n, b->n);
  assert_int_equal(a->shape.c, b->shape.c);
  assert_int_equal(a->shape.h, b->shape.h);
  assert_int_equal(a->shape.w, b->shape.w);
  assert_int_equal(a->nclasses, b->nclasses);
  int64_t d = nest_dataset_dim(a);
  assert_true((a->u8 == NULL) == (b->u8 == NULL));
  if (a->u8) assert_memory_equal(a->u8, b->u8, (size_t)(a->n * d));
  if (a->f32) assert_memory_equal(a->f32, b->f32, sizeof(float) * (size_t)(a->n * d));
  assert_memory_equal(a->labels, b->labels, sizeof(int32_t) * (size_t)a->n);
  assert_int_equal(a->norm.nch, b->norm.nch);
  for (int c = 0; c < a->norm.nch; ++c) {
    assert_true(a->norm.mean[c] == b->norm.mean[c]);
    assert_true(a->norm.std[c] == b->norm.std[c]);
  }
  assert_true((a->class_names == NULL) == (b->class_names == NULL));
  if (a->class_names)
    for (int k = 0; k < a->nclasses; ++k) assert_string_equal(a->class_names[k], b->class_names[k]);
}

static void give_names(nest_dataset *ds) {
  ds->class_names = calloc((size_t)ds->nclasses, sizeof(char *));
  assert_non_null(ds->class_names);
  for (int k = 0; k < ds->nclasses; ++k) {
    char buf[32];
    snprintf(buf, sizeof buf, "class-%c%d", 'a' + k, k);
    ds->class_names[k] = strdup(buf);
  }
}

static void test_h5_roundtrip(void **state) {
  const char *p = tmp("rt.h5");
  nest_dataset *a = NULL, *b = NULL;

  /* u8 images with normalisation and class names. */
  assert_ok(nest_dataset_synthetic(50, (nest_shape){3, 4, 5}, 4, 0.7f, 3, 1, &a));
  nest_norm nm;
  assert_ok(nest_norm_compute(a, NULL, a->n, &nm));
  assert_ok(nest_dataset_set_norm(a, &nm));
  nest_norm_free(&nm);
  give_names(a);
  assert_ok(nest_dataset_save_h5(a, p));
  assert_ok(load2(p, NULL, &b));
  assert_same_dataset(a, b);
  assert_float_equal(b->u8_scale, 1.0f / 255.0f, 1e-9);
  nest_dataset_destroy(&b);
  FILE *f = fopen(nest_test_path(nest_test_tmpdir(), "rt.h5.tmp"), "rb");
  assert_null(f); /* renamed away */
  nest_dataset_destroy(&a);

  /* Tabular floats, no norm, no names; read back with max_samples; any extension. */
  p = tmp("rt-tab.data");
  assert_ok(nest_dataset_synthetic(33, (nest_shape){7, 1, 1}, 3, 1.0f, 4, 0, &a));
  assert_ok(nest_dataset_save_h5(a, p));
  assert_ok(load2(p, NULL, &b)); /* detected by the HDF5 signature */
  assert_same_dataset(a, b);
  nest_dataset_destroy(&b);
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = p;
  o.max_samples = 5;
  o.format = "h5";
  assert_ok(nest_dataset_load(&o, NULL, &b));
  assert_int_equal(b->n, 5);
  assert_memory_equal(a->f32, b->f32, sizeof(float) * 5 * 7);
  assert_memory_equal(a->labels, b->labels, sizeof(int32_t) * 5);
  nest_dataset_destroy(&b);
  nest_dataset_destroy(&a);

  /* Float images keep their [N, C, H, W] shape; many features -> large mean/std attributes. */
  p = tmp("rt-fimg.h5");
  assert_ok(nest_dataset_synthetic(6, (nest_shape){2, 3, 3}, 2, 1.0f, 5, 0, &a));
  assert_ok(nest_dataset_save_h5(a, p));
  assert_ok(load2(p, NULL, &b));
  assert_same_dataset(a, b);
  nest_dataset_destroy(&b);
  nest_dataset_destroy(&a);
  p = tmp("rt-wide.h5");
  assert_ok(nest_dataset_synthetic(4, (nest_shape){20000, 1, 1}, 2, 1.0f, 6, 0, &a));
  assert_ok(nest_norm_compute(a, NULL, a->n, &nm));
  assert_ok(nest_dataset_set_norm(a, &nm));
  nest_norm_free(&nm);
  assert_ok(nest_dataset_save_h5(a, p));
  assert_ok(load2(p, NULL, &b));
  assert_same_dataset(a, b);
  nest_dataset_destroy(&b);
  nest_dataset_destroy(&a);

  /* label_ref with names: the test set's labels are remapped by name. */
  assert_ok(nest_dataset_synthetic(8, (nest_shape){2, 1, 1}, 3, 1.0f, 7, 0, &a));
  give_names(a);
  nest_dataset *ref = NULL;
  assert_ok(nest_dataset_synthetic(8, (nest_shape){2, 1, 1}, 4, 1.0f, 8, 0, &ref));
  give_names(ref);
  free(ref->class_names[0]); /* ref classes: [class-b1 class-a0 class-c2 class-d3] */
  free(ref->class_names[1]);
  ref->class_names[0] = strdup("class-b1");
  ref->class_names[1] = strdup("class-a0");
  p = tmp("remap.h5");
  assert_ok(nest_dataset_save_h5(a, p));
  o.path = p;
  o.max_samples = 0;
  assert_ok(nest_dataset_load(&o, ref, &b));
  assert_int_equal(b->nclasses, 4);
  for (int i = 0; i < 8; ++i) {
    const int want[3] = {1, 0, 2};
    assert_int_equal(b->labels[i], want[a->labels[i]]);
  }
  nest_dataset_destroy(&b);
  free(ref->class_names[2]);
  ref->class_names[2] = strdup("zebra");
  if (a->labels[0] != 2) a->labels[0] = 2; /* make sure class-c2 is used */
  assert_ok(nest_dataset_save_h5(a, p));
  expect_error(nest_dataset_load(&o, ref, &b), NEST_ERR_FORMAT, p, "unknown label");
  nest_dataset_destroy(&ref);
  nest_dataset_destroy(&a);
}

/* Crafting bad files needs HDF5 itself; tests may call it (the rule is for library code). */
static void h5_set_int_attr(const char *path, const char *name, int v) {
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  assert_true(f >= 0);
  hid_t a = H5Aopen(f, name, H5P_DEFAULT);
  assert_true(a >= 0);
  assert_true(H5Awrite(a, H5T_NATIVE_INT, &v) >= 0);
  H5Aclose(a);
  H5Fclose(f);
}

static void h5_delete(const char *path, const char *name, int is_attr) {
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  assert_true(f >= 0);
  assert_true((is_attr ? H5Adelete(f, name) : H5Ldelete(f, name, H5P_DEFAULT)) >= 0);
  H5Fclose(f);
}

/* Replace dataset `name` with one of the given type and dims (contents zero). */
static void h5_replace(const char *path, const char *name, hid_t type, int rank,
                       const hsize_t *dims) {
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  assert_true(f >= 0);
  if (H5Lexists(f, name, H5P_DEFAULT) > 0) H5Ldelete(f, name, H5P_DEFAULT);
  nest_test_h5_dataset(f, name, type, rank, dims, NULL, 0);
  H5Fclose(f);
}

static const char *fresh_h5(const char *name, int as_u8) {
  const char *p = tmp(name);
  nest_dataset *ds = NULL;
  assert_ok(nest_dataset_synthetic(10, as_u8 ? (nest_shape){1, 2, 2} : (nest_shape){3, 1, 1},
                                          5, 1.0f, 9, as_u8, &ds));
  for (int i = 0; i < 10; ++i) ds->labels[i] = i % 5; /* every class present */
  assert_ok(nest_dataset_save_h5(ds, p));
  nest_dataset_destroy(&ds);
  return p;
}

static void test_h5_bad(void **state) {
  nest_dataset *ds = NULL;
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);

  const char *p = fresh_h5("lab-range.h5", 1);
  h5_set_int_attr(p, "nclasses", 4); /* label 4 now out of range */
  expect_error(load2(p, NULL, &ds), NEST_ERR_FORMAT, p, "out of range");

  p = tmp("nan.h5");
  assert_ok(nest_dataset_synthetic(10, (nest_shape){3, 1, 1}, 2, 1.0f, 9, 0, &ds));
  ds->f32[3 * 3 + 2] = NAN;
  assert_ok(nest_dataset_save_h5(ds, p));
  nest_dataset_destroy(&ds);
  expect_error(load2(p, NULL, &ds), NEST_ERR_FORMAT, p, "NaN");
  assert_non_null(strstr(nest_error_message(), "/features[3][2]"));

  p = fresh_h5("nolabels.h5", 0);
  h5_delete(p, "labels", 0);
  expect_error(load2(p, NULL, &ds), NEST_ERR_FORMAT, p, "missing dataset /labels");

  p = fresh_h5("nodata.h5", 1);
  h5_delete(p, "images", 0);
  expect_error(load2(p, NULL, &ds), NEST_ERR_FORMAT, p, "missing dataset");

  p = fresh_h5("noversion.h5", 1);
  h5_delete(p, "format_version", 1);
  expect_error(load2(p, NULL, &ds), NEST_ERR_FORMAT, p, "format_version");

  p = fresh_h5("version2.h5", 1);
  h5_set_int_attr(p, "format_version", 2);
  expect_error(load2(p, NULL, &ds), NEST_ERR_FORMAT, p, "format_version");

  p = fresh_h5("nonclasses.h5", 1);
  h5_delete(p, "nclasses", 1);
  expect_error(load2(p, NULL, &ds), NEST_ERR_FORMAT, p, "nclasses");

  hsize_t d4[4] = {10, 1, 2, 2}, d3[3] = {10, 2, 2}, d1[1] = {9};
  p = fresh_h5("imgtype.h5", 1);
  h5_replace(p, "images", H5T_IEEE_F32LE, 4, d4);
  expect_error(load2(p, NULL, &ds), NEST_ERR_FORMAT, p, "uint8");

  p = fresh_h5("imgrank.h5", 1);
  h5_replace(p, "images", H5T_STD_U8LE, 3, d3);
  expect_error(load2(p, NULL, &ds), NEST_ERR_FORMAT, p, "rank");

  p = fresh_h5("feattype.h5", 0);
  hsize_t d2[2] = {10, 3};
  h5_replace(p, "features", H5T_STD_I32LE, 2, d2);
  expect_error(load2(p, NULL, &ds), NEST_ERR_FORMAT, p, "float32");

  p = fresh_h5("labcount.h5", 1);
  h5_replace(p, "labels", H5T_STD_I32LE, 1, d1);
  expect_error(load2(p, NULL, &ds), NEST_ERR_FORMAT, p, "mismatch");

  p = fresh_h5("labtype.h5", 1);
  hsize_t d10[1] = {10};
  h5_replace(p, "labels", H5T_IEEE_F64LE, 1, d10);
  expect_error(load2(p, NULL, &ds), NEST_ERR_FORMAT, p, "int32");

  /* Labels of another integer type are converted (all zero here: valid). */
  p = fresh_h5("lab64.h5", 1);
  h5_replace(p, "labels", H5T_STD_I64LE, 1, d10);
  assert_ok(load2(p, NULL, &ds));
  assert_int_equal(ds->labels[9], 0);
  nest_dataset_destroy(&ds);

  /* A labels file with HDF5 data is a usage error. */
  p = fresh_h5("withlabels.h5", 1);
  expect_error(load2(p, p, &ds), NEST_ERR_ARG, p, "labels file");

  /* Not HDF5 at all but named .h5. */
  p = tmp("text.h5");
  write_text(p, "hello\n");
  expect_error(load2(p, NULL, &ds), NEST_ERR_FORMAT, p, "not an HDF5 file");

  /* A truncated HDF5 file. */
  p = fresh_h5("cut.h5", 1);
  {
    FILE *f = fopen(p, "rb");
    static unsigned char buf[1 << 16];
    size_t got = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_int_equal(nest_test_write_file(p, buf, got / 2), 0);
  }
  nest_status st = load2(p, NULL, &ds);
  assert_int_not_equal(st, NEST_OK);
  assert_non_null(strstr(nest_error_message(), p));
  assert_null(ds);

  /* Saving into a missing directory fails cleanly, naming the file. */
  assert_ok(nest_dataset_synthetic(3, (nest_shape){1, 1, 1}, 2, 1.0f, 9, 0, &ds));
  p = tmp("no-such-dir/x.h5");
  expect_error(nest_dataset_save_h5(ds, p), NEST_ERR_IO, p, "cannot create");
  nest_dataset_destroy(&ds);
}

/* A nest HDF5 file whose sizes claim more than memory can hold: /features [n, d] float32 and
 * /labels [n] int32, chunked and never written (HDF5 stores nothing for them), so the file is
 * tiny whatever n says. */
static const char *h5_claiming(const char *name, hsize_t n, hsize_t d) {
  const char *p = tmp(name);
  hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  assert_true(f >= 0);
  const hsize_t fd[2] = {n, d}, fc[2] = {1, d}, ld[1] = {n}, lc[1] = {1};
  nest_test_h5_dataset(f, "features", H5T_IEEE_F32LE, 2, fd, fc, 0);
  nest_test_h5_dataset(f, "labels", H5T_STD_I32LE, 1, ld, lc, 0);
  const int one = 1, two = 2;
  hid_t as = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(f, "format_version", H5T_STD_I32LE, as, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT, &one);
  H5Aclose(a);
  a = H5Acreate2(f, "nclasses", H5T_STD_I32LE, as, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT, &two);
  H5Aclose(a);
  H5Sclose(as);
  H5Fclose(f);
  return p;
}

/* The one-line error names the file, and nothing was allocated on the file's word. */
static void expect_size_error(const char *p) {
  nest_dataset *ds = NULL;
  nest_status st = load2(p, NULL, &ds);
  const char *msg = nest_error_message();
  if (st == NEST_OK || !strstr(msg, p) || strchr(msg, '\n'))
    fail_msg("expected one line naming %s, got %s: %s", p, nest_status_name(st), msg);
  assert_null(ds);
  assert_int_equal(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
}

/* Sizes from a file are checked before they become an allocation (sizeof(float) * n * d). */
static void test_h5_sizes(void **state) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  /* 4 * (2^62 + 1) * 4 bytes wraps around to 16 in 64 bits: an unchecked product allocates
   * 16 bytes and reads 2^62 rows into them. */
  expect_size_error(h5_claiming("wrap.h5", ((hsize_t)1 << 62) + 1, 4));
  assert_non_null(strstr(nest_error_message(), "4611686018427387905"));
  /* No wrap, but 2^40 x 1000 floats (4 PB): the allocation fails, and the message still
   * names the file (not just "out of memory allocating ... for float samples"). */
  expect_size_error(h5_claiming("huge.h5", (hsize_t)1 << 40, 1000));
  /* With data.max_samples only what is kept must fit. */
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = h5_claiming("huge-kept.h5", (hsize_t)1 << 40, 3);
  o.max_samples = 5;
  nest_dataset *ds = NULL;
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  assert_int_equal(ds->n, 5);
  nest_dataset_destroy(&ds);
}

/* ---- real data --------------------------------------------------------------------------- */

static void count_classes(const nest_dataset *ds, int64_t *counts) {
  memset(counts, 0, sizeof(int64_t) * (size_t)ds->nclasses);
  for (int64_t i = 0; i < ds->n; ++i) counts[ds->labels[i]]++;
}

static void test_real_mnist(void **state) {
  const char *ti = nest_test_data("mnist/t10k-images-idx3-ubyte.gz");
  const char *tl = nest_test_data("mnist/t10k-labels-idx1-ubyte.gz");
  const char *ri = nest_test_data("mnist/train-images-idx3-ubyte.gz");
  const char *rl = nest_test_data("mnist/train-labels-idx1-ubyte.gz");
  if (!ti || !tl || !ri || !rl) skip();
  nest_dataset *train = NULL, *test = NULL;
  assert_ok(load2(ri, rl, &train));
  assert_int_equal(train->n, 60000);
  assert_int_equal(train->shape.c, 1);
  assert_int_equal(train->shape.h, 28);
  assert_int_equal(train->shape.w, 28);
  assert_int_equal(train->nclasses, 10);
  int64_t counts[10];
  const int64_t want_train[10] = {5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949};
  count_classes(train, counts);
  assert_memory_equal(counts, want_train, sizeof counts);

  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = ti;
  o.labels_path = tl;
  assert_ok(nest_dataset_load(&o, train, &test));
  assert_int_equal(test->n, 10000);
  const int64_t want_test[10] = {980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009};
  count_classes(test, counts);
  assert_memory_equal(counts, want_test, sizeof counts);
  /* Known MNIST facts: the first test digit is a 7, the first training digit a 5, and the
   * pixel mean / std are about 0.1307 / 0.3081. */
  assert_int_equal(test->labels[0], 7);
  assert_int_equal(train->labels[0], 5);
  nest_norm nm;
  assert_ok(nest_norm_compute(train, NULL, train->n, &nm));
  assert_float_equal(nm.mean[0], 0.1307f, 1e-4);
  assert_float_equal(nm.std[0], 0.3081f, 1e-4);
  nest_norm_free(&nm);
  nest_dataset_destroy(&test);
  nest_dataset_destroy(&train);
}

static void test_real_wdbc(void **state) {
  const char *p = nest_test_data("uci/wdbc/wdbc.data");
  if (!p) skip();
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = p;
  o.csv_label_col = 1;
  o.csv_drop_cols = "0";
  nest_dataset *ds = NULL;
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  assert_int_equal(ds->n, 569);
  assert_int_equal(nest_dataset_dim(ds), 30);
  assert_int_equal(ds->nclasses, 2);
  assert_string_equal(ds->class_names[0], "B");
  assert_string_equal(ds->class_names[1], "M");
  int64_t counts[2];
  count_classes(ds, counts);
  assert_int_equal(counts[0], 357);
  assert_int_equal(counts[1], 212);
  /* First row: 842302,M,17.99,10.38,... */
  assert_int_equal(ds->labels[0], 1);
  assert_true(ds->f32[0] == 17.99f && ds->f32[1] == 10.38f);
  nest_dataset_destroy(&ds);
}

static void test_real_letter(void **state) {
  const char *p = nest_test_data("uci/letter-recognition/letter-recognition.data");
  if (!p) skip();
  nest_dataset *ds = NULL;
  assert_ok(load2(p, NULL, &ds));
  assert_int_equal(ds->n, 20000);
  assert_int_equal(nest_dataset_dim(ds), 16);
  assert_int_equal(ds->nclasses, 26);
  for (int k = 0; k < 26; ++k) {
    char want[2] = {(char)('A' + k), 0};
    assert_string_equal(ds->class_names[k], want);
  }
  /* First row: T,2,8,3,5,1,8,13,0,6,6,10,8,0,8,0,8 */
  assert_int_equal(ds->labels[0], 'T' - 'A');
  assert_true(ds->f32[6] == 13.0f && ds->f32[15] == 8.0f);
  int64_t counts[26];
  count_classes(ds, counts);
  assert_int_equal(counts[0], 789); /* A: 789 per letter-recognition.names */
  assert_int_equal(counts[25], 734); /* Z: 734 */
  nest_dataset_destroy(&ds);
}

/* ---- normalisation and gather ------------------------------------------------------------ */

static void naive_stats(const nest_dataset *ds, const int64_t *idx, int64_t n, double *mean,
                        double *sd) {
  int C = ds->shape.c;
  int64_t hw = (int64_t)ds->shape.h * ds->shape.w, dim = C * hw;
  for (int c = 0; c < C; ++c) {
    double s = 0, q = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < hw; ++j) {
        int64_t k = idx[i] * dim + c * hw + j;
        double v = ds->u8 ? ds->u8[k] * (double)ds->u8_scale : ds->f32[k];
        s += v;
      }
    mean[c] = s / (double)(n * hw);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < hw; ++j) {
        int64_t k = idx[i] * dim + c * hw + j;
        double v = ds->u8 ? ds->u8[k] * (double)ds->u8_scale : ds->f32[k];
        q += (v - mean[c]) * (v - mean[c]);
      }
    sd[c] = fmax(sqrt(q / (double)(n * hw)), 1e-6);
  }
}

static void check_norm_and_gather(int as_u8, nest_shape shape) {
  nest_dataset *ds = NULL;
  assert_ok(nest_dataset_synthetic(300, shape, 3, 1.5f, 11, as_u8, &ds));
  int C = shape.c;
  int64_t dim = nest_dataset_dim(ds);
  /* A training subset: every third sample. */
  int64_t idx[100];
  for (int i = 0; i < 100; ++i) idx[i] = 3 * i + 1;
  nest_norm nm;
  assert_ok(nest_norm_compute(ds, idx, 100, &nm));
  assert_int_equal(nm.nch, C);
  double mean[16], sd[16];
  naive_stats(ds, idx, 100, mean, sd);
  assert_true(nest_test_max_rel_diff(nm.mean, mean, (size_t)C) < 1e-6);
  assert_true(nest_test_max_rel_diff(nm.std, sd, (size_t)C) < 1e-6);

  /* Gather without, then with normalisation. */
  int64_t pick[5] = {299, 0, 17, 17, 150};
  float *x = malloc(sizeof(float) * 5 * (size_t)dim);
  int32_t y[5];
  assert_non_null(x);
  nest_dataset_gather(ds, pick, 5, x, y);
  for (int i = 0; i < 5; ++i) {
    assert_int_equal(y[i], ds->labels[pick[i]]);
    for (int64_t j = 0; j < dim; ++j) {
      float v = ds->u8 ? ds->u8[pick[i] * dim + j] * ds->u8_scale : ds->f32[pick[i] * dim + j];
      assert_float_equal(x[i * dim + j], v, 1e-6);
    }
  }
  assert_ok(nest_dataset_set_norm(ds, &nm));
  nest_norm_free(&nm);
  nest_dataset_gather(ds, pick, 5, x, NULL);
  int64_t hw = dim / C;
  double xs[16] = {0};
  for (int i = 0; i < 5; ++i)
    for (int64_t j = 0; j < dim; ++j) {
      int c = (int)(j / hw);
      double v = ds->u8 ? ds->u8[pick[i] * dim + j] * (double)ds->u8_scale
                        : ds->f32[pick[i] * dim + j];
      double want = (v - mean[c]) / sd[c];
      assert_true(fabs(x[i * dim + j] - want) < 1e-5 * fmax(1.0, fabs(want)));
      xs[c] += x[i * dim + j];
    }
  free(x);

  /* Over the whole training subset the normalised data has mean ~0 and std ~1. */
  float *all = malloc(sizeof(float) * 100 * (size_t)dim);
  assert_non_null(all);
  nest_dataset_gather(ds, idx, 100, all, NULL);
  for (int c = 0; c < C; ++c) {
    double s = 0, q = 0;
    for (int i = 0; i < 100; ++i)
      for (int64_t j = 0; j < hw; ++j) {
        double v = all[i * dim + c * hw + j];
        s += v;
        q += v * v;
      }
    double m = s / (100.0 * hw);
    assert_true(fabs(m) < 1e-4);
    assert_true(fabs(sqrt(q / (100.0 * hw) - m * m) - 1.0) < 1e-3);
  }
  free(all);

  /* Norm of the wrong width is rejected; NULL / nch 0 clears. */
  nest_norm bad = {C + 1, NULL, NULL};
  expect_error(nest_dataset_set_norm(ds, &bad), NEST_ERR_ARG, "synthetic", "channels");
  assert_ok(nest_dataset_set_norm(ds, NULL));
  assert_int_equal(ds->norm.nch, 0);
  nest_dataset_destroy(&ds);
}

static void test_norm_gather(void **state) {
  check_norm_and_gather(1, (nest_shape){3, 6, 5}); /* u8 images */
  check_norm_and_gather(0, (nest_shape){12, 1, 1}); /* tabular */
  check_norm_and_gather(0, (nest_shape){2, 4, 4}); /* float images */
}

static void test_norm_threads(void **state) {
  /* Fixed blocks combined in order: the statistics are bit-identical for any thread count. */
#ifdef _OPENMP
  const nest_shape shapes[2] = {{5, 1, 1}, {3, 4, 4}};
  for (int as_u8 = 0; as_u8 <= 1; ++as_u8) {
    nest_dataset *ds = NULL;
    assert_ok(nest_dataset_synthetic(5000, shapes[as_u8], 3, 2.0f, 14, as_u8, &ds));
    nest_norm a, b;
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    assert_ok(nest_norm_compute(ds, NULL, ds->n, &a));
    omp_set_num_threads(3);
    assert_ok(nest_norm_compute(ds, NULL, ds->n, &b));
    omp_set_num_threads(saved);
    assert_memory_equal(a.mean, b.mean, sizeof(float) * (size_t)a.nch);
    assert_memory_equal(a.std, b.std, sizeof(float) * (size_t)a.nch);
    nest_norm_free(&a);
    nest_norm_free(&b);
    nest_dataset_destroy(&ds);
  }
#else
  skip();
#endif
}

static void test_norm_constant(void **state) {
  /* A constant feature gets std 1e-6 (floor), not 0. */
  nest_dataset *ds = NULL;
  assert_ok(nest_dataset_synthetic(20, (nest_shape){2, 1, 1}, 2, 1.0f, 12, 0, &ds));
  for (int i = 0; i < 20; ++i) ds->f32[i * 2 + 1] = 4.25f;
  nest_norm nm;
  assert_ok(nest_norm_compute(ds, NULL, 20, &nm));
  assert_float_equal(nm.mean[1], 4.25f, 1e-7);
  assert_float_equal(nm.std[1], 1e-6f, 1e-12);
  nest_norm_free(&nm);
  int64_t bad = 20;
  expect_error(nest_norm_compute(ds, &bad, 1, &nm), NEST_ERR_ARG, "synthetic", "out of range");
  nest_dataset_destroy(&ds);
}

static double now_sec(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void test_mnist_gather_speed(void **state) {
  /* The hot path: 1000 MNIST-sized batches of 128 (100 M pixel conversions) take ~30-100 ms;
   * the bound only catches something pathological (e.g. a division or a call per pixel). */
  nest_dataset *ds = NULL;
  assert_ok(nest_dataset_synthetic(2000, (nest_shape){1, 28, 28}, 10, 1.0f, 13, 1, &ds));
  nest_norm nm;
  assert_ok(nest_norm_compute(ds, NULL, ds->n, &nm));
  assert_ok(nest_dataset_set_norm(ds, &nm));
  nest_norm_free(&nm);
  int64_t idx[128];
  float *x = malloc(sizeof(float) * 128 * 784);
  int32_t y[128];
  assert_non_null(x);
  double sum = 0, t0 = now_sec();
  for (int b = 0; b < 1000; ++b) {
    for (int i = 0; i < 128; ++i) idx[i] = (b * 131 + i * 17) % 2000;
    nest_dataset_gather(ds, idx, 128, x, y);
    sum += x[b % (128 * 784)];
  }
  double dt = now_sec() - t0;
  printf("gather: 1000 batches of 128 x 784 in %.1f ms\n", 1e3 * dt);
  assert_true(isfinite(sum));
  assert_true(dt < 5.0);
  free(x);
  nest_dataset_destroy(&ds);
}

/* ---- split ------------------------------------------------------------------------------- */

static void test_split(void **state) {
  const int64_t n = 1000;
  int64_t *tr, *va, nt, nv;
  assert_ok(nest_dataset_split(n, 0.1, 42, &tr, &nt, &va, &nv));
  assert_int_equal(nv, 100);
  assert_int_equal(nt, 900);
  char *seen = calloc((size_t)n, 1);
  for (int64_t i = 0; i < nt; ++i) {
    if (i) assert_true(tr[i] > tr[i - 1]);
    assert_true(tr[i] >= 0 && tr[i] < n);
    seen[tr[i]]++;
  }
  for (int64_t i = 0; i < nv; ++i) {
    if (i) assert_true(va[i] > va[i - 1]);
    assert_true(va[i] >= 0 && va[i] < n);
    seen[va[i]]++;
  }
  for (int64_t i = 0; i < n; ++i) assert_int_equal(seen[i], 1); /* disjoint, union = all */
  free(seen);
  /* Validation is spread over the range, not a prefix. */
  assert_true(va[0] < 100 && va[nv - 1] > 900);

  int64_t *tr2, *va2, nt2, nv2;
  assert_ok(nest_dataset_split(n, 0.1, 42, &tr2, &nt2, &va2, &nv2));
  assert_int_equal(nv2, nv);
  assert_memory_equal(va, va2, sizeof(int64_t) * (size_t)nv);
  assert_memory_equal(tr, tr2, sizeof(int64_t) * (size_t)nt);
  free(tr2);
  free(va2);
  assert_ok(nest_dataset_split(n, 0.1, 43, &tr2, &nt2, &va2, &nv2));
  assert_int_equal(nv2, nv);
  assert_memory_not_equal(va, va2, sizeof(int64_t) * (size_t)nv);
  free(tr2);
  free(va2);
  free(tr);
  free(va);

  /* Rounding and edges. */
  assert_ok(nest_dataset_split(7, 0.25, 1, &tr, &nt, &va, &nv));
  assert_int_equal(nv, 2); /* round(1.75) */
  assert_int_equal(nt, 5);
  free(tr);
  free(va);
  assert_ok(nest_dataset_split(5, 0.0, 1, &tr, &nt, &va, &nv));
  assert_int_equal(nv, 0);
  assert_int_equal(nt, 5);
  for (int i = 0; i < 5; ++i) assert_int_equal(tr[i], i);
  free(tr);
  free(va);
  assert_ok(nest_dataset_split(5, 1.0, 1, &tr, &nt, &va, &nv));
  assert_int_equal(nv, 5);
  assert_int_equal(nt, 0);
  free(tr);
  free(va);
  assert_int_equal(nest_dataset_split(5, 1.5, 1, &tr, &nt, &va, &nv), NEST_ERR_ARG);
  assert_int_equal(nest_dataset_split(5, NAN, 1, &tr, &nt, &va, &nv), NEST_ERR_ARG);
}

/* ---- data.test_split, the label map, data without labels --------------------------------------- */

/* data.test_split holds out a seeded share of the training file: the two sets partition it
 * (rows, labels, classes), keep file order, agree for the same seed, differ from the
 * validation split of the same seed; image shards and empty sides are refused. */
static void test_take_test(void **state) {
  nest_dataset *ds, *orig, *te;
  assert_ok(nest_dataset_synthetic(200, (nest_shape){5, 1, 1}, 3, 0.5f, 9, 0, &orig));
  assert_ok(nest_dataset_synthetic(200, (nest_shape){5, 1, 1}, 3, 0.5f, 9, 0, &ds));
  snprintf(ds->format, sizeof ds->format, "csv");
  assert_ok(nest_dataset_take_test(&ds, 0.25, 4, &te));
  assert_int_equal(te->n, 50);
  assert_int_equal(ds->n, 150);
  assert_int_equal(te->nclasses, 3);
  assert_string_equal(te->format, "csv");
  assert_non_null(strstr(te->path, "(test split)"));
  /* Each row of the original is in exactly one set, in file order. */
  int64_t a = 0, b = 0;
  for (int64_t i = 0; i < orig->n; ++i) {
    const float *row = orig->f32 + i * 5;
    if (b < te->n && memcmp(te->f32 + b * 5, row, 5 * sizeof(float)) == 0 &&
        te->labels[b] == orig->labels[i])
      ++b;
    else if (a < ds->n && memcmp(ds->f32 + a * 5, row, 5 * sizeof(float)) == 0 &&
             ds->labels[a] == orig->labels[i])
      ++a;
    else
      fail_msg("row %lld is in neither set (in order)", (long long)i);
  }
  assert_int_equal(a, 150);
  assert_int_equal(b, 50);
  /* Not the rows the validation split of the same seed would take. */
  int64_t *tr, *va, nt, nv;
  assert_ok(nest_dataset_split(200, 0.25, 4, &tr, &nt, &va, &nv));
  int64_t same = 0;
  nest_dataset *again, *te2;
  assert_ok(nest_dataset_synthetic(200, (nest_shape){5, 1, 1}, 3, 0.5f, 9, 0, &again));
  assert_ok(nest_dataset_take_test(&again, 0.25, 4, &te2));
  assert_memory_equal(te->f32, te2->f32, sizeof(float) * 50 * 5); /* same seed, same split */
  for (int64_t k = 0; k < nv; ++k)
    same += memcmp(orig->f32 + va[k] * 5, te->f32 + k * 5, 5 * sizeof(float)) == 0;
  assert_true(same < nv);
  free(tr);
  free(va);
  nest_dataset_destroy(&again);
  nest_dataset_destroy(&te2);
  /* 0: nothing; empty sides and bad fractions refused. */
  nest_dataset *keep = ds;
  assert_ok(nest_dataset_take_test(&ds, 0.0, 4, &te2));
  assert_null(te2);
  assert_true(ds == keep);
  nest_dataset *tiny;
  assert_ok(nest_dataset_synthetic(3, (nest_shape){2, 1, 1}, 2, 0.5f, 1, 0, &tiny));
  expect_error(nest_dataset_take_test(&tiny, 0.1, 1, &te2), NEST_ERR_CONFIG, "synthetic",
               "leaves no test sample");
  expect_error(nest_dataset_take_test(&tiny, 0.9, 1, &te2), NEST_ERR_CONFIG, "synthetic",
               "leaves no training sample");
  assert_int_equal(nest_dataset_take_test(&tiny, 1.0, 1, &te2), NEST_ERR_ARG);
  assert_int_equal(tiny->n, 3);
  nest_dataset_destroy(&tiny);
  nest_dataset_destroy(&te);
  nest_dataset_destroy(&ds);
  nest_dataset_destroy(&orig);
}

static void test_label_map(void **state) {
  char buf[256];
  nest_dataset *ds;
  assert_ok(nest_dataset_synthetic(10, (nest_shape){2, 1, 1}, 12, 0.5f, 1, 0, &ds));
  nest_dataset_label_map(ds, 3, buf, sizeof buf);
  assert_string_equal(buf, "0 -> 0, 1 -> 1, 2 -> 2, ... (12 classes)");
  nest_dataset_destroy(&ds);
  const char *p = tmp("labelmap.csv");
  write_text(p, "1,M,0.5\n2,B,0.25\n3,M,1\n");
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = p;
  o.csv_label_col = 1;
  o.csv_drop_cols = "0";
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  nest_dataset_label_map(ds, 20, buf, sizeof buf);
  assert_string_equal(buf, "B -> 0, M -> 1");
  char small[8];
  nest_dataset_label_map(ds, 20, small, sizeof small);
  assert_string_equal(small, "B -> 0,");
  nest_dataset_destroy(&ds);
}

/* New samples to predict: a CSV without its label column (every other column not dropped is
 * a feature), IDX images without a labels file; labels all 0, marked unlabeled, the class
 * count the reference's. Without no_labels, such files are refused as before. */
static void test_no_labels(void **state) {
  const char *p = tmp("nolab.csv");
  write_text(p, "id,a,b,c\n7,0.5,1.5,2.5\n8,1,2,3\n");
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = p;
  o.csv_header = 1;
  o.csv_drop_cols = "0";
  o.no_labels = 1;
  nest_dataset *ref, *ds;
  assert_ok(nest_dataset_synthetic(4, (nest_shape){3, 1, 1}, 5, 0.5f, 1, 0, &ref));
  assert_ok(nest_dataset_load(&o, ref, &ds));
  assert_int_equal(ds->unlabeled, 1);
  assert_int_equal(ds->n, 2);
  assert_int_equal(nest_dataset_dim(ds), 3);
  assert_int_equal(ds->nclasses, 5);
  assert_true(ds->f32[0] == 0.5f && ds->f32[5] == 3.0f);
  assert_int_equal(ds->labels[0] + ds->labels[1], 0);
  nest_dataset_destroy(&ds);
  o.no_labels = 0; /* the same file with labels: column 0 (dropped) */
  expect_error(nest_dataset_load(&o, NULL, &ds), NEST_ERR_ARG, p, "drops the label column");

  const uint8_t labels[3] = {1, 2, 0};
  const char *img = tmp("nolab-img.idx"), *lab = tmp("nolab-lab.idx");
  write_idx_pair(img, lab, 3, 2, 2, labels, 3, 0, 0, 0x00000803);
  nest_data_opts_default(&o);
  o.path = img;
  expect_error(nest_dataset_load(&o, NULL, &ds), NEST_ERR_ARG, img, "need a labels file");
  o.no_labels = 1;
  assert_ok(nest_dataset_load(&o, ref, &ds));
  assert_int_equal(ds->unlabeled, 1);
  assert_int_equal(ds->n, 3);
  assert_int_equal(ds->nclasses, 5);
  assert_string_equal(ds->format, "idx");
  nest_dataset_destroy(&ds);
  /* with a labels file given too: read, and not used */
  o.labels_path = lab;
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  assert_int_equal(ds->unlabeled, 1);
  assert_int_equal(ds->labels[1], 0);
  nest_dataset_destroy(&ds);
  nest_dataset_destroy(&ref);
}

/* ---- synthetic --------------------------------------------------------------------------- */

static void test_synthetic(void **state) {
  nest_dataset *a = NULL, *b = NULL;
  nest_shape sh = {1, 8, 8};
  assert_ok(nest_dataset_synthetic(600, sh, 5, 0.8f, 21, 0, &a));
  assert_ok(nest_dataset_synthetic(600, sh, 5, 0.8f, 21, 0, &b));
  assert_memory_equal(a->f32, b->f32, sizeof(float) * 600 * 64);
  assert_memory_equal(a->labels, b->labels, sizeof(int32_t) * 600);
  nest_dataset_destroy(&b);
  assert_ok(nest_dataset_synthetic(600, sh, 5, 0.8f, 22, 0, &b));
  assert_memory_not_equal(a->f32, b->f32, sizeof(float) * 600 * 64);
  nest_dataset_destroy(&b);

  /* Learnable: nearest class mean (estimated on the first half) classifies the second half. */
  int64_t cnt[5] = {0};
  double mu[5][64] = {{0}};
  for (int i = 0; i < 300; ++i) {
    int k = a->labels[i];
    assert_true(k >= 0 && k < 5);
    cnt[k]++;
    for (int j = 0; j < 64; ++j) mu[k][j] += a->f32[i * 64 + j];
  }
  for (int k = 0; k < 5; ++k) {
    assert_true(cnt[k] > 20); /* every class present */
    for (int j = 0; j < 64; ++j) mu[k][j] /= (double)cnt[k];
  }
  int correct = 0;
  for (int i = 300; i < 600; ++i) {
    int best = 0;
    double bd = INFINITY;
    for (int k = 0; k < 5; ++k) {
      double d = 0;
      for (int j = 0; j < 64; ++j) d += pow(a->f32[i * 64 + j] - mu[k][j], 2);
      if (d < bd) bd = d, best = k;
    }
    correct += best == a->labels[i];
  }
  assert_true(correct > 270);
  nest_dataset_destroy(&a);

  /* u8: bytes around 128, scale 1/255, same labels as the float version. */
  assert_ok(nest_dataset_synthetic(50, sh, 5, 0.8f, 21, 1, &b));
  assert_ok(nest_dataset_synthetic(50, sh, 5, 0.8f, 21, 0, &a));
  assert_non_null(b->u8);
  assert_null(b->f32);
  assert_float_equal(b->u8_scale, 1.0f / 255.0f, 1e-9);
  for (int i = 0; i < 50 * 64; ++i) {
    float want = fminf(255.0f, fmaxf(0.0f, roundf(128.0f + 40.0f * a->f32[i])));
    assert_int_equal(b->u8[i], (int)want);
  }
  assert_memory_equal(a->labels, b->labels, sizeof(int32_t) * 50);
  nest_dataset_destroy(&a);
  nest_dataset_destroy(&b);
  expect_error(nest_dataset_synthetic(0, sh, 5, 0.8f, 21, 1, &b), NEST_ERR_ARG, "synthetic", "bad");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_idx_roundtrip_raw), cmocka_unit_test(test_idx_roundtrip_gz),
      cmocka_unit_test(test_idx_nclasses),      cmocka_unit_test(test_idx_bad),
      cmocka_unit_test(test_csv_roundtrip),     cmocka_unit_test(test_csv_label_ref),
      cmocka_unit_test(test_csv_bad),           cmocka_unit_test(test_missing_file),
      cmocka_unit_test(test_h5_roundtrip),      cmocka_unit_test(test_h5_bad),
      cmocka_unit_test(test_h5_sizes),
      cmocka_unit_test(test_real_mnist),        cmocka_unit_test(test_real_wdbc),
      cmocka_unit_test(test_real_letter),       cmocka_unit_test(test_norm_gather),
      cmocka_unit_test(test_norm_threads),      cmocka_unit_test(test_norm_constant),     cmocka_unit_test(test_mnist_gather_speed),
      cmocka_unit_test(test_split),             cmocka_unit_test(test_synthetic),
      cmocka_unit_test(test_take_test),         cmocka_unit_test(test_label_map),
      cmocka_unit_test(test_no_labels),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
