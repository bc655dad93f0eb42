/* test_prep.c — the nest_prep converter, run as a program: IDX pairs and CSV files become .h5
 * files that read back identical to the source; bad input and bad usage give one-line errors
 * and exit codes 1 and 2; an input is never overwritten, an existing output only with --force. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <stdio.h>
#include <jpeglib.h>
#include <zlib.h>

#include "nest/data.h"
#include "test_util.h"

#define PREP NEST_BINARY_DIR "/nest_prep"

static char out_text[4096], err_text[4096];

/* Run nest_prep with `args`; stdout / stderr land in out_text / err_text. Returns the exit code. */
static int prep(const char *args) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "'%s' %s", PREP, args);
  const int code = nest_test_run(cmd, out_text, sizeof out_text, err_text, sizeof err_text);
  assert_true(code >= 0);
  return code;
}

/* Exactly one line, "nest_prep: ...", containing `word`. */
static void assert_one_line_error(const char *word) {
  size_t len = strlen(err_text);
  if (strncmp(err_text, "nest_prep: ", 11) != 0 || len == 0 || err_text[len - 1] != '\n' ||
      strchr(err_text, '\n') != err_text + len - 1 || !strstr(err_text, word))
    fail_msg("expected one line 'nest_prep: ...%s...', got: '%s'", word, err_text);
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static void put_be32(unsigned char *b, uint32_t v) {
  b[0] = (unsigned char)(v >> 24);
  b[1] = (unsigned char)(v >> 16);
  b[2] = (unsigned char)(v >> 8);
  b[3] = (unsigned char)v;
}

/* IDX pair of n images rows x cols (gz or raw); `cut` bytes removed from the images file. */
static void write_idx(const char *img, const char *lab, int n, int rows, int cols, int gz, int cut) {
  size_t dim = (size_t)rows * cols, bytes = 16 + (size_t)n * dim;
  unsigned char *b = malloc(bytes), *l = malloc(8 + (size_t)n);
  assert_non_null(b);
  assert_non_null(l);
  put_be32(b, 0x803);
  put_be32(b + 4, (uint32_t)n);
  put_be32(b + 8, (uint32_t)rows);
  put_be32(b + 12, (uint32_t)cols);
  for (size_t i = 0; i < (size_t)n * dim; ++i) b[16 + i] = (unsigned char)(i * 37 % 251);
  put_be32(l, 0x801);
  put_be32(l + 4, (uint32_t)n);
  for (int i = 0; i < n; ++i) l[8 + i] = (unsigned char)((i * 7) % 10);
  if (gz) {
    gzFile f = gzopen(img, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, b, (unsigned)(bytes - (size_t)cut)), (int)(bytes - (size_t)cut));
    gzclose(f);
    f = gzopen(lab, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, l, (unsigned)(8 + n)), 8 + n);
    gzclose(f);
  } else {
    assert_int_equal(nest_test_write_file(img, b, bytes - (size_t)cut), 0);
    assert_int_equal(nest_test_write_file(lab, l, 8 + (size_t)n), 0);
  }
  free(b);
  free(l);
}

static void assert_same(const nest_dataset *a, const nest_dataset *b) {
  assert_int_equal(a->n, b->n);
  assert_int_equal(a->shape.c, b->shape.c);
  assert_int_equal(a->shape.h, b->shape.h);
  assert_int_equal(a->shape.w, b->shape.w);
  assert_int_equal(a->nclasses, b->nclasses);
  size_t d = (size_t)nest_dataset_dim(a);
  assert_true((a->u8 == NULL) == (b->u8 == NULL));
  if (a->u8) assert_memory_equal(a->u8, b->u8, (size_t)a->n * d);
  else assert_memory_equal(a->f32, b->f32, sizeof(float) * (size_t)a->n * d);
  assert_memory_equal(a->labels, b->labels, sizeof(int32_t) * (size_t)a->n);
  assert_true((a->class_names == NULL) == (b->class_names == NULL));
  for (int k = 0; a->class_names && k < a->nclasses; ++k)
    assert_string_equal(a->class_names[k], b->class_names[k]);
}

static nest_dataset *load(const char *path, const char *labels) {
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = path;
  o.labels_path = labels;
  nest_dataset *ds = NULL;
  assert_ok(nest_dataset_load(&o, NULL, &ds));
  return ds;
}

static int setup(void **state) {
  if (access(PREP, X_OK) != 0) {
    fprintf(stderr, "test_prep: %s not found: build the nest_prep target first\n", PREP);
    return -1;
  }
  return 0;
}

static void test_prep_idx(void **state) {
  const char *dir = nest_test_tmpdir();
  for (int gz = 0; gz <= 1; ++gz) {
    const char *img = nest_test_path(dir, gz ? "p-img.gz" : "p-img");
    const char *lab = nest_test_path(dir, gz ? "p-lab.gz" : "p-lab");
    const char *out = nest_test_path(dir, gz ? "p-gz.h5" : "p-raw.h5");
    write_idx(img, lab, 23, 6, 5, gz, 0);
    char args[3072];
    snprintf(args, sizeof args, "-o '%s' '%s' '%s'", out, img, lab);
    assert_int_equal(prep(args), 0);
    assert_string_equal(err_text, "");
    assert_non_null(strstr(out_text, "23 samples"));
    assert_non_null(strstr(out_text, "1x6x5"));
    assert_non_null(strstr(out_text, "10 classes"));
    assert_false(exists(nest_test_path(dir, gz ? "p-gz.h5.tmp" : "p-raw.h5.tmp")));
    nest_dataset *a = load(img, lab), *b = load(out, NULL);
    assert_same(a, b);
    nest_dataset_destroy(&a);
    nest_dataset_destroy(&b);
  }
  /* --max N keeps the first N. */
  const char *out = nest_test_path(dir, "p-max.h5");
  char args[3072];
  snprintf(args, sizeof args, "--max 4 -o '%s' '%s' '%s'", out, nest_test_path(dir, "p-img"),
           nest_test_path(dir, "p-lab"));
  assert_int_equal(prep(args), 0);
  nest_dataset *b = load(out, NULL);
  assert_int_equal(b->n, 4);
  nest_dataset_destroy(&b);
}

static void test_prep_csv(void **state) {
  const char *dir = nest_test_tmpdir();
  const char *csv = nest_test_path(dir, "p.csv"), *out = nest_test_path(dir, "p-csv.h5");
  const char *text = "id;kind;x;y\n"
                     "7;owl;1.25;-3\n"
                     "8;bat;0;2e-3\n"
                     "9;owl;4;5\n";
  assert_int_equal(nest_test_write_file(csv, text, strlen(text)), 0);
  char args[3072];
  snprintf(args, sizeof args, "-o '%s' --label-col 1 --drop-cols 0 --delim ';' --header '%s'",
           out, csv);
  assert_int_equal(prep(args), 0);
  assert_non_null(strstr(out_text, "3 samples"));
  assert_non_null(strstr(out_text, "2 classes"));
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = csv;
  o.csv_label_col = 1;
  o.csv_drop_cols = "0";
  o.csv_delim = ';';
  o.csv_header = 1;
  nest_dataset *a = NULL, *b = load(out, NULL);
  assert_ok(nest_dataset_load(&o, NULL, &a));
  assert_same(a, b);
  assert_string_equal(b->class_names[0], "bat");
  assert_string_equal(b->class_names[1], "owl");
  assert_true(b->f32[0] == 1.25f && b->f32[1] == -3.0f);
  nest_dataset_destroy(&a);
  nest_dataset_destroy(&b);
}

static void test_prep_real(void **state) {
  const char *wdbc = nest_test_data("uci/wdbc/wdbc.data");
  if (!wdbc) skip();
  const char *out = nest_test_path(nest_test_tmpdir(), "wdbc.h5");
  char args[3072];
  snprintf(args, sizeof args, "-o '%s' --label-col 1 --drop-cols 0 '%s'", out, wdbc);
  assert_int_equal(prep(args), 0);
  assert_non_null(strstr(out_text, "569 samples, shape 30x1x1"));
  nest_dataset *b = load(out, NULL);
  assert_int_equal(b->n, 569);
  assert_int_equal(b->nclasses, 2);
  nest_dataset_destroy(&b);
}

static void test_prep_errors(void **state) {
  const char *dir = nest_test_tmpdir();
  const char *img = nest_test_path(dir, "bad-img"), *lab = nest_test_path(dir, "bad-lab");
  const char *out = nest_test_path(dir, "bad.h5");
  char args[3072];

  /* Truncated images: exit 1, one line naming the file, no output left behind. */
  write_idx(img, lab, 10, 4, 4, 0, 9);
  snprintf(args, sizeof args, "-o '%s' '%s' '%s'", out, img, lab);
  assert_int_equal(prep(args), 1);
  assert_one_line_error(img);
  assert_one_line_error("truncated");
  assert_false(exists(out));
  assert_false(exists(nest_test_path(dir, "bad.h5.tmp")));

  /* Missing input. */
  const char *missing = nest_test_path(dir, "missing.csv");
  snprintf(args, sizeof args, "-o '%s' '%s'", out, missing);
  assert_int_equal(prep(args), 1);
  assert_one_line_error(missing);
  assert_one_line_error("cannot open");

  /* Bad CSV value. */
  const char *csv = nest_test_path(dir, "bad.csv");
  assert_int_equal(nest_test_write_file(csv, "a,1\nb,nan\n", 10), 0);
  snprintf(args, sizeof args, "-o '%s' '%s'", out, csv);
  assert_int_equal(prep(args), 1);
  assert_one_line_error("bad.csv:2: column 1");

  /* Unwritable output: its directory cannot be made (a missing one is created). */
  write_idx(img, lab, 10, 4, 4, 0, 0);
  char nodir[1200];
  snprintf(nodir, sizeof nodir, "%s/sub/x.h5", img); /* under a regular file */
  snprintf(args, sizeof args, "-o '%s' '%s' '%s'", nodir, img, lab);
  assert_int_equal(prep(args), 1);
  assert_one_line_error("cannot create");

  /* Usage errors: exit 2. */
  snprintf(args, sizeof args, "'%s' '%s'", img, lab);
  assert_int_equal(prep(args), 2);
  assert_one_line_error("-o");
  snprintf(args, sizeof args, "--bogus -o '%s' '%s'", out, img);
  assert_int_equal(prep(args), 2);
  assert_one_line_error("--bogus");
  snprintf(args, sizeof args, "--max zero -o '%s' '%s'", out, img);
  assert_int_equal(prep(args), 2);
  assert_one_line_error("--max");
  snprintf(args, sizeof args, "-o '%s'", out);
  assert_int_equal(prep(args), 2);
  assert_one_line_error("INPUT");
  snprintf(args, sizeof args, "-o '%s' a b c", out);
  assert_int_equal(prep(args), 2);
  assert_one_line_error("too many");

  assert_int_equal(prep("--help"), 0);
  assert_non_null(strstr(out_text, "usage: nest_prep"));
  assert_non_null(strstr(out_text, "--force"));
}

/* The whole file, malloc'ed (NULL if it cannot be read); *len its size. */
static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  size_t cap = 0;
  *len = 0;
  for (;;) {
    if (*len == cap) {
      cap = cap ? 2 * cap : 1 << 16;
      char *nb = realloc(buf, cap);
      assert_non_null(nb);
      buf = nb;
    }
    size_t got = fread(buf + *len, 1, cap - *len, f);
    *len += got;
    if (got == 0) break;
  }
  fclose(f);
  return buf;
}

/* `path` still holds exactly `want` (len bytes). */
static void assert_unchanged(const char *path, const char *want, size_t len) {
  size_t n = 0;
  char *now = slurp(path, &n);
  assert_non_null(now);
  if (n != len || memcmp(now, want, len) != 0) fail_msg("%s was changed", path);
  free(now);
}

/* Issue 7: "nest_prep -o X X LABELS" overwrote its own input, and an existing output was
 * replaced silently. The same-file check is by device and inode, not by name. */
static void test_prep_refuses_overwrite(void **state) {
  const char *dir = nest_test_tmpdir();
  char img[1024], lab[1024], out[1024], args[4096];
  snprintf(img, sizeof img, "%s", nest_test_path(dir, "ow-img"));
  snprintf(lab, sizeof lab, "%s", nest_test_path(dir, "ow-lab"));
  snprintf(out, sizeof out, "%s", nest_test_path(dir, "ow.h5"));
  write_idx(img, lab, 12, 4, 3, 0, 0);
  size_t img_len = 0, lab_len = 0;
  char *img_bytes = slurp(img, &img_len), *lab_bytes = slurp(lab, &lab_len);
  assert_non_null(img_bytes);
  assert_non_null(lab_bytes);

  /* The output is an input: refused with or without --force, the input left alone. */
  char other[1024], soft[1024], hard[1024];
  snprintf(other, sizeof other, "%s/./ow-img", dir); /* another spelling of img */
  snprintf(soft, sizeof soft, "%s", nest_test_path(dir, "ow-link"));
  snprintf(hard, sizeof hard, "%s", nest_test_path(dir, "ow-hard"));
  assert_int_equal(symlink(img, soft), 0);
  assert_int_equal(link(lab, hard), 0);
  const struct {
    const char *out, *word;
  } same[] = {{img, "the same file as the input"}, {other, "the same file as the input"},
              {soft, "the same file as the input"}, {lab, "the same file as the labels file"},
              {hard, "the same file as the labels file"}};
  for (size_t i = 0; i < sizeof same / sizeof same[0]; ++i)
    for (int force = 0; force <= 1; ++force) {
      snprintf(args, sizeof args, "%s-o '%s' '%s' '%s'", force ? "--force " : "", same[i].out,
               img, lab);
      assert_int_equal(prep(args), 1);
      assert_one_line_error(same[i].out);
      assert_one_line_error(same[i].word);
      assert_one_line_error("refusing to overwrite an input");
      assert_string_equal(out_text, "");
      assert_unchanged(img, img_bytes, img_len);
      assert_unchanged(lab, lab_bytes, lab_len);
    }

  /* A CSV converted onto itself, and an input that is the output's temporary file (the
   * atomic write truncates OUT.tmp first). */
  char csv[1024], tmpin[1024], tmpout[1024];
  snprintf(csv, sizeof csv, "%s", nest_test_path(dir, "ow.csv"));
  snprintf(tmpin, sizeof tmpin, "%s", nest_test_path(dir, "ow-t.h5.tmp"));
  snprintf(tmpout, sizeof tmpout, "%s", nest_test_path(dir, "ow-t.h5"));
  const char *text = "0,1.5\n1,2.5\n";
  assert_int_equal(nest_test_write_file(csv, text, strlen(text)), 0);
  assert_int_equal(nest_test_write_file(tmpin, text, strlen(text)), 0);
  snprintf(args, sizeof args, "--force -o '%s' '%s'", csv, csv);
  assert_int_equal(prep(args), 1);
  assert_one_line_error("the same file as the input");
  assert_unchanged(csv, text, strlen(text));
  snprintf(args, sizeof args, "--force --format csv -o '%s' '%s'", tmpout, tmpin);
  assert_int_equal(prep(args), 1);
  assert_one_line_error("temporary file");
  assert_one_line_error(tmpin);
  assert_unchanged(tmpin, text, strlen(text));
  assert_false(exists(tmpout));

  /* An existing output: refused and kept without --force, replaced with it. */
  snprintf(args, sizeof args, "-o '%s' '%s' '%s'", out, img, lab);
  assert_int_equal(prep(args), 0);
  size_t out_len = 0;
  char *out_bytes = slurp(out, &out_len);
  assert_non_null(out_bytes);
  snprintf(args, sizeof args, "--max 5 -o '%s' '%s' '%s'", out, img, lab);
  assert_int_equal(prep(args), 1);
  assert_one_line_error(out);
  assert_one_line_error("exists");
  assert_one_line_error("--force");
  assert_unchanged(out, out_bytes, out_len);
  snprintf(args, sizeof args, "--max 5 --force -o '%s' '%s' '%s'", out, img, lab);
  assert_int_equal(prep(args), 0);
  assert_string_equal(err_text, "");
  assert_false(exists(nest_test_path(dir, "ow.h5.tmp")));
  nest_dataset *b = load(out, NULL);
  assert_int_equal(b->n, 5);
  nest_dataset_destroy(&b);
  /* a dangling symlink as the output is an existing file too */
  char dangling[1024];
  snprintf(dangling, sizeof dangling, "%s", nest_test_path(dir, "ow-dangling.h5"));
  assert_int_equal(symlink(nest_test_path(dir, "nowhere"), dangling), 0);
  snprintf(args, sizeof args, "-o '%s' '%s' '%s'", dangling, img, lab);
  assert_int_equal(prep(args), 1);
  assert_one_line_error("exists");
  free(out_bytes);
  free(img_bytes);
  free(lab_bytes);
}

/* ---- image shards ------------------------------------------------------------------------- */

/* A w x h JPEG of one colour px (k = 3: RGB, 1: gray, 4: CMYK), or with px NULL an RGB one of
 * noise (compressed data large enough to cut), written with libjpeg; returns its size. */
static long write_jpeg(const char *path, int w, int h, int k, const unsigned char *px) {
  struct jpeg_compress_struct c;
  struct jpeg_error_mgr e;
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  c.err = jpeg_std_error(&e);
  jpeg_create_compress(&c);
  jpeg_stdio_dest(&c, f);
  c.image_width = (JDIMENSION)w;
  c.image_height = (JDIMENSION)h;
  c.input_components = px ? k : 3;
  c.in_color_space = c.input_components == 1 ? JCS_GRAYSCALE
                     : c.input_components == 3 ? JCS_RGB
                                               : JCS_CMYK;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 95, TRUE);
  jpeg_start_compress(&c, TRUE);
  const int kk = c.input_components;
  unsigned char *row = malloc((size_t)w * kk);
  assert_non_null(row);
  for (int x = 0; px && x < w; ++x) memcpy(row + x * kk, px, (size_t)kk);
  uint32_t r = 12345;
  while (c.next_scanline < c.image_height) {
    for (int i = 0; !px && i < w * kk; ++i)
      row[i] = (unsigned char)((r = r * 1664525u + 1013904223u) >> 24);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  const long size = ftell(f);
  fclose(f);
  free(row);
  return size;
}

/* The centre pixel of image i of a shard set, channel c. */
static int centre(nest_dataset *ds, int64_t i, int c, uint8_t *buf) {
  assert_ok(nest_dataset_read_u8(ds, i, buf));
  const nest_shape s = nest_dataset_stored_shape(ds);
  return buf[((size_t)c * s.h + s.h / 2) * s.w + s.w / 2];
}

static void test_prep_jpeg(void **state) {
  const char *dir = nest_test_tmpdir();
  char src[1024], d[1200], f[1300], out[1300], args[4096];
  snprintf(src, sizeof src, "%s", nest_test_path(dir, "jpegs"));
  const char *cls[3] = {"cat", "dog", "zebra"};
  assert_int_equal(mkdir(src, 0775), 0);
  for (int k = 0; k < 3; ++k) {
    snprintf(d, sizeof d, "%s/%s", src, cls[k]);
    assert_int_equal(mkdir(d, 0775), 0);
  }
  const unsigned char red[3] = {220, 30, 40}, blue[3] = {20, 40, 230}, gray[1] = {90};
  const unsigned char cmyk_red[4] = {255, 0, 0, 255}; /* Adobe (inverted) CMYK: red */
  snprintf(f, sizeof f, "%s/cat/a.JPEG", src);
  write_jpeg(f, 40, 30, 3, red); /* landscape */
  snprintf(f, sizeof f, "%s/cat/b.jpg", src);
  write_jpeg(f, 30, 70, 3, blue); /* portrait */
  snprintf(f, sizeof f, "%s/dog/gray.jpeg", src);
  write_jpeg(f, 20, 50, 1, gray);
  snprintf(f, sizeof f, "%s/dog/print.jpg", src);
  write_jpeg(f, 16, 16, 4, cmyk_red);
  snprintf(f, sizeof f, "%s/zebra/big.jpg", src);
  write_jpeg(f, 300, 200, 3, blue); /* decoded at 1/8, then resized */
  snprintf(f, sizeof f, "%s/zebra/bad.jpg", src);
  assert_int_equal(nest_test_write_file(f, "this is not a JPEG file at all", 30), 0);
  snprintf(f, sizeof f, "%s/zebra/notes.txt", src);
  assert_int_equal(nest_test_write_file(f, "ignored", 7), 0);
  snprintf(out, sizeof out, "%s", nest_test_path(dir, "jp"));
  snprintf(args, sizeof args, "--images '%s' -o '%s' --size 16 --shard-size 2", src, out);
  assert_int_equal(prep(args), 0);
  if (!strstr(out_text, "5 images, shape 3x16x16") || !strstr(out_text, "1 corrupt file skipped") ||
      !strstr(out_text, "3 classes, 3 shards") || !strstr(out_text, "6/6 images"))
    fail_msg("stdout: %s", out_text);
  if (!strstr(err_text, "skipped") || !strstr(err_text, "bad.jpg")) fail_msg("stderr: %s", err_text);
  char pat[2500];
  snprintf(pat, sizeof pat, "%s-*.h5", out);
  nest_dataset *ds = load(pat, NULL);
  assert_int_equal(ds->n, 5);
  assert_int_equal(ds->nclasses, 3);
  for (int k = 0; k < 3; ++k) assert_string_equal(ds->class_names[k], cls[k]);
  const int32_t want[5] = {0, 0, 1, 1, 2};
  assert_memory_equal(ds->labels, want, sizeof want);
  uint8_t buf[3 * 16 * 16];
  const unsigned char *col[5] = {red, blue, NULL, NULL, blue};
  for (int i = 0; i < 5; ++i)
    for (int c = 0; c < 3; ++c) {
      const int v = centre(ds, i, c, buf);
      const int expect = i == 2 ? gray[0] : i == 3 ? (c == 0 ? 255 : 0) : col[i][c];
      if (abs(v - expect) > 6) fail_msg("image %d channel %d: %d, expected about %d", i, c, v, expect);
    }
  nest_dataset_destroy(&ds);
  /* an existing set is kept without --force */
  assert_int_equal(prep(args), 1);
  assert_non_null(strstr(err_text, "refusing to overwrite"));
}

/* Rewrite the frame header (SOF0) of a JPEG to claim w x h: the data then ends long before
 * the image does. */
static void claim_size(const char *path, int w, int h) {
  FILE *f = fopen(path, "r+b");
  assert_non_null(f);
  unsigned char b[4096];
  const size_t n = fread(b, 1, sizeof b, f);
  size_t at = 0;
  while (at + 9 < n && !(b[at] == 0xFF && b[at + 1] == 0xC0)) ++at;
  assert_true(at + 9 < n);
  b[at + 5] = (unsigned char)(h >> 8), b[at + 6] = (unsigned char)h;
  b[at + 7] = (unsigned char)(w >> 8), b[at + 8] = (unsigned char)w;
  assert_int_equal(fseek(f, (long)at, SEEK_SET), 0);
  assert_int_equal(fwrite(b + at, 1, 9, f), 9);
  fclose(f);
}

/* SRC with one class folder "c" (made fresh under the tmpdir); returns SRC. */
static const char *image_dir(const char *name, char *src, size_t cap) {
  snprintf(src, cap, "%s", nest_test_path(nest_test_tmpdir(), name));
  assert_int_equal(mkdir(src, 0775), 0);
  char d[1200];
  snprintf(d, sizeof d, "%s/c", src);
  assert_int_equal(mkdir(d, 0775), 0);
  return src;
}

/* libjpeg's warnings are counted, as docs/data-format.md promises: a truncated file and one
 * whose header claims 65500 x 65500 both decode (the missing data filled in) "with warnings"
 * (they were reported as "0 decoded with warnings"). */
static void test_prep_jpeg_warnings(void **state) {
  char src[1024], f[1300], out[1300], args[4096];
  image_dir("warn-src", src, sizeof src);
  snprintf(f, sizeof f, "%s/c/cut.jpg", src);
  const long size = write_jpeg(f, 64, 48, 3, NULL);
  assert_int_equal(truncate(f, size / 2), 0);
  snprintf(f, sizeof f, "%s/c/huge.jpg", src);
  write_jpeg(f, 32, 32, 3, NULL);
  claim_size(f, 65500, 65500);
  snprintf(f, sizeof f, "%s/c/good.jpg", src);
  write_jpeg(f, 20, 20, 3, NULL);
  snprintf(out, sizeof out, "%s", nest_test_path(nest_test_tmpdir(), "warn"));
  snprintf(args, sizeof args, "--images '%s' -o '%s' --size 16", src, out);
  assert_int_equal(prep(args), 0);
  if (!strstr(out_text, "3 images") || !strstr(out_text, "0 corrupt files skipped") ||
      !strstr(out_text, "2 decoded with warnings"))
    fail_msg("stdout: %s\nstderr: %s", out_text, err_text);
}

/* The image size limit: a 1 x 65500 JPEG asked for ~17 GB (the whole resized row, 16.8
 * million x 256 floats); it converts within the limit now (only the centre crop is resized),
 * under a 2 GiB address-space limit. A header whose image needs more than the limit even so
 * is skipped before anything is allocated, with a message naming the limit. */
static void test_prep_jpeg_size_limit(void **state) {
  char src[1024], f[1300], out[1300];
  const char *limit = "";
#if !defined(__SANITIZE_ADDRESS__) /* ASan reserves terabytes of address space */
  limit = "ulimit -v 2097152 && ";
#endif
  image_dir("long-src", src, sizeof src);
  snprintf(f, sizeof f, "%s/c/line.jpg", src);
  const unsigned char grey[3] = {100, 100, 100};
  write_jpeg(f, 65500, 1, 3, grey);
  snprintf(out, sizeof out, "%s", nest_test_path(nest_test_tmpdir(), "long"));
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "%s'%s' --images '%s' -o '%s'", limit, PREP, src, out);
  int code = nest_test_run(cmd, out_text, sizeof out_text, err_text, sizeof err_text);
  if (code != 0 || !strstr(out_text, "1 images, shape 3x256x256"))
    fail_msg("exit %d\nstdout: %s\nstderr: %s", code, out_text, err_text);
  nest_dataset *ds = load(nest_test_path(nest_test_tmpdir(), "long-*.h5"), NULL);
  uint8_t *buf = malloc(3 * 256 * 256);
  assert_non_null(buf);
  assert_true(abs(centre(ds, 0, 1, buf) - grey[1]) <= 6);
  free(buf);
  nest_dataset_destroy(&ds);

  /* 65500 x 2400 at --size 2048: no DCT scaling (the short side would drop below 2048), so
   * 157 million pixels, 1.6 GiB to convert: over the limit, skipped, counted */
  image_dir("big-src", src, sizeof src);
  snprintf(f, sizeof f, "%s/c/big.jpg", src);
  write_jpeg(f, 32, 32, 3, NULL);
  claim_size(f, 65500, 2400);
  snprintf(out, sizeof out, "%s", nest_test_path(nest_test_tmpdir(), "big"));
  snprintf(cmd, sizeof cmd, "%s'%s' --images '%s' -o '%s' --size 2048", limit, PREP, src, out);
  code = nest_test_run(cmd, out_text, sizeof out_text, err_text, sizeof err_text);
  if (code != 1 || !strstr(err_text, "big.jpg") || !strstr(err_text, "limit of 1024 MiB") ||
      !strstr(err_text, "1 over the size limit"))
    fail_msg("exit %d\nstdout: %s\nstderr: %s", code, out_text, err_text);
}

/* A class folder that cannot be read was a class of 0 images, silently (class ids and counts
 * then wrong): now an error naming it. As root, permissions do not stop reading, so nest_prep
 * runs without the capabilities that override them (setpriv). */
static void test_prep_unreadable_class(void **state) {
  char src[1024], f[1400], d[1300], out[1300], args[4096];
  image_dir("locked-src", src, sizeof src);
  snprintf(f, sizeof f, "%s/c/a.jpg", src);
  write_jpeg(f, 20, 20, 3, NULL);
  snprintf(d, sizeof d, "%s/locked", src);
  assert_int_equal(mkdir(d, 0775), 0);
  snprintf(f, sizeof f, "%s/locked/b.jpg", src);
  write_jpeg(f, 20, 20, 3, NULL);
  assert_int_equal(chmod(d, 0), 0);
  const char *drop = "";
  if (geteuid() == 0) {
    if (access("/usr/bin/setpriv", X_OK) != 0) {
      chmod(d, 0775);
      print_message("test_prep: root without setpriv: no unreadable folder possible; skipped\n");
      skip();
    }
    drop = "/usr/bin/setpriv --bounding-set=-dac_override,-dac_read_search ";
  }
  snprintf(out, sizeof out, "%s", nest_test_path(nest_test_tmpdir(), "locked"));
  snprintf(args, sizeof args, "%s'%s' --images '%s' -o '%s' --size 16", drop, PREP, src, out);
  const int code = nest_test_run(args, out_text, sizeof out_text, err_text, sizeof err_text);
  chmod(d, 0775);
  assert_int_equal(code, 1);
  assert_one_line_error("locked");
  assert_non_null(strstr(err_text, "cannot read the class folder"));
  assert_non_null(strstr(err_text, "ermission denied"));
  snprintf(f, sizeof f, "%s-00000.h5", out);
  assert_false(exists(f));
}

/* The output's directory is created (`nest_prep -o data/synth/train`, as
 * inputs/synth_alexnet_nest.ini documents it, failed on a fresh checkout with "cannot create:
 * No such file or directory"), for shards and for a converted file. */
static void test_prep_creates_output_dir(void **state) {
  char out[1300], args[4096], f[1400];
  snprintf(out, sizeof out, "%s", nest_test_path(nest_test_tmpdir(), "fresh/data/synth/train"));
  snprintf(args, sizeof args, "--synthetic-images 6 -o '%s' --classes 2 --size 8", out);
  assert_int_equal(prep(args), 0);
  snprintf(f, sizeof f, "%s-00000.h5", out);
  assert_true(exists(f));
  const char *dir = nest_test_tmpdir();
  write_idx(nest_test_path(dir, "d-img"), nest_test_path(dir, "d-lab"), 5, 3, 3, 0, 0);
  snprintf(out, sizeof out, "%s", nest_test_path(dir, "fresh2/sub/mnist.h5"));
  snprintf(args, sizeof args, "-o '%s' '%s' '%s'", out, nest_test_path(dir, "d-img"),
           nest_test_path(dir, "d-lab"));
  assert_int_equal(prep(args), 0);
  assert_true(exists(out));
  /* a path component that is a file: one line naming it */
  snprintf(out, sizeof out, "%s", nest_test_path(dir, "d-img/x/train"));
  snprintf(args, sizeof args, "--synthetic-images 6 -o '%s' --classes 2 --size 8", out);
  assert_int_equal(prep(args), 1);
  assert_one_line_error("d-img");
}

/* --drop-cols takes a list like every list option and key: blanks trimmed, empty items
 * refused (they were skipped silently). */
static void test_prep_drop_cols_list(void **state) {
  const char *dir = nest_test_tmpdir();
  const char *csv = nest_test_path(dir, "dl.csv");
  const char *text = "1,9,2,3\n0,8,4,5\n1,7,6,7\n";
  assert_int_equal(nest_test_write_file(csv, text, strlen(text)), 0);
  char out[1300], args[3072];
  snprintf(out, sizeof out, "%s", nest_test_path(dir, "dl.h5"));
  snprintf(args, sizeof args, "-o '%s' --drop-cols '1, 2' '%s'", out, csv);
  assert_int_equal(prep(args), 0);
  assert_non_null(strstr(out_text, "shape 1x1x1"));
  snprintf(args, sizeof args, "-o '%s' --force --drop-cols '1,,2' '%s'", out, csv);
  assert_int_equal(prep(args), 2);
  assert_one_line_error("--drop-cols");
  assert_non_null(strstr(err_text, "empty item"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_prep_idx),
      cmocka_unit_test(test_prep_csv),
      cmocka_unit_test(test_prep_real),
      cmocka_unit_test(test_prep_errors),
      cmocka_unit_test(test_prep_refuses_overwrite),
      cmocka_unit_test(test_prep_jpeg),
      cmocka_unit_test(test_prep_jpeg_warnings),
      cmocka_unit_test(test_prep_jpeg_size_limit),
      cmocka_unit_test(test_prep_unreadable_class),
      cmocka_unit_test(test_prep_creates_output_dir),
      cmocka_unit_test(test_prep_drop_cols_list),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
