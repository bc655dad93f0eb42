/* nest_prep.c — convert MNIST IDX (images + labels, raw or .gz) or a CSV table into nest's
 * HDF5 dataset format (docs/data-format.md), so training runs read one validated file; write
 * image shards (ImageNet-format, read from disk batch by batch) of synthetic images.
 * Serial tool: uses the data module only, never MPI.
 *
 *   nest_prep -o mnist-train.h5 train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
 *   nest_prep -o wdbc.h5 --label-col 1 --drop-cols 0 wdbc.data
 *   nest_prep --synthetic-images 2000 -o synth/train --classes 10 --size 256
 *
 * The output is never one of the inputs (not even with --force), and an existing output is
 * kept unless --force is given; its directory is created if missing. --images: a class folder
 * that cannot be read is an error, an image over the size limit (PREP_IMAGE_MIB) is skipped
 * and counted like a corrupt one, libjpeg's warnings are counted.
 *
 * Exit codes: 0 success (one summary line on stdout), 1 data or file error (including a
 * refused output), 2 usage error; every error is one line "nest_prep: <message>" on stderr. */
#define _GNU_SOURCE /* getopt_long */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>
#include <jpeglib.h>
#include <math.h>
#include <setjmp.h>
#include <time.h>

#include "nest/atomic.h"
#include "nest/data.h"
#include "nest/list.h"

static const char *usage_line =
    "usage: nest_prep -o OUT.h5 [--format auto|idx|csv|h5] [--label-col N] [--delim C]\n"
    "                 [--header] [--drop-cols LIST] [--max N] [--force] INPUT [LABELS]\n"
    "       nest_prep --images SRC_DIR -o PREFIX [--size S] [--shard-size K] [--force]\n"
    "       nest_prep --synthetic-images N -o PREFIX [--classes C] [--size S] [--channels K]\n"
    "                 [--shard-size K] [--seed X] [--first N] [--force]\n";

static void print_help(void) {
  printf("%s", usage_line);
  printf("\nConvert a dataset into nest's HDF5 format (see docs/data-format.md).\n"
         "  INPUT [LABELS]      IDX images + IDX labels (raw or .gz), or one CSV file\n"
         "                      (an existing nest .h5 is re-written to OUT, e.g. with --max)\n"
         "  -o, --output FILE   output .h5 (written to FILE.tmp, then renamed; its directory\n"
         "                      is created); never one of the input files, and not an\n"
         "                      existing file unless --force\n"
         "  --format F          auto (default: by magic bytes / extension), idx, csv, h5\n"
         "  --label-col N       CSV: 0-based label column, -1 = last (default 0)\n"
         "  --delim C           CSV: field delimiter, one character or 'tab' (default ',')\n"
         "  --header            CSV: the first line is a header and is skipped\n"
         "  --drop-cols LIST    CSV: comma-separated 0-based columns to ignore, e.g. 0 or '0, 3'\n"
         "  --max N             keep only the first N samples\n"
         "  --force             overwrite an existing output file (never an input)\n"
         "  -h, --help          this help\n"
         "\nImage shards (PREFIX-00000.h5, PREFIX-00001.h5, ...; data.train = PREFIX-*.h5):\n"
         "  --images SRC_DIR    JPEGs in SRC_DIR/<class>/ (ILSVRC2012 layout; sorted folder\n"
         "                      names = class ids): short side resized to S, centre S x S;\n"
         "                      an image needing over 1024 MiB to convert is skipped\n"
         "  --synthetic-images N  N learnable synthetic images (class colour + grating + noise)\n"
         "  --classes C         classes (default 10)\n"
         "  --size S            images are S x S (default 256)\n"
         "  --channels K        channels (default 3)\n"
         "  --shard-size K      images per shard file (default 1024)\n"
         "  --seed X            seed of the synthetic images (default 1)\n"
         "  --first N           number the images from N (default 0): a test set of the same\n"
         "                      classes is --first <training count> with the same --seed\n"
         "\nExamples:\n"
         "  nest_prep -o mnist-train.h5 train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz\n"
         "  nest_prep -o wdbc.h5 --label-col 1 --drop-cols 0 wdbc.data\n"
         "  nest_prep -o letters.h5 letter-recognition.data\n"
         "  nest_prep --synthetic-images 5000 -o synth/train --classes 100\n"
         "  nest_prep --synthetic-images 500 -o synth/test --classes 100 --first 5000\n");
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "nest_prep: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (try --help)\n");
  return 2;
}

/* The same file by device and inode, so another spelling of a path, a symlink or a hard link
 * to it counts too. */
static int same_file(const struct stat *a, const struct stat *b) {
  return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* 0 if outpath may be written, else 1 after a one-line message. An input is never
 * overwritten: the conversion would destroy its own source (the atomic write replaces OUT
 * after reading, and truncates OUT.tmp before, so neither may be an input). An existing
 * output is only replaced with --force. Checked before reading anything; a file created in
 * between is not caught, this guards against mistakes, not against races. */
static int check_output(const char *outpath, const char *const inputs[2],
                        const char *const roles[2], int force) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", outpath);
  struct stat out, out_tmp, in;
  const int have_out = stat(outpath, &out) == 0, have_tmp = stat(tmp, &out_tmp) == 0;
  for (int i = 0; i < 2; ++i) {
    if (!inputs[i] || stat(inputs[i], &in) != 0) continue; /* a missing input: the loader says */
    if (have_out && same_file(&out, &in)) {
      fprintf(stderr,
              "nest_prep: %s: the output is the same file as the %s %s; refusing to overwrite "
              "an input (--force does not allow that)\n",
              outpath, roles[i], inputs[i]);
      return 1;
    }
    if (have_tmp && same_file(&out_tmp, &in)) {
      fprintf(stderr,
              "nest_prep: %s: the output's temporary file %s is the %s %s; refusing to "
              "overwrite an input (--force does not allow that)\n",
              outpath, tmp, roles[i], inputs[i]);
      return 1;
    }
  }
  struct stat any;
  if (!force && lstat(outpath, &any) == 0) { /* lstat: a dangling symlink would be replaced too */
    fprintf(stderr, "nest_prep: %s: the output file exists; refusing to overwrite it (use --force)\n",
            outpath);
    return 1;
  }
  return 0;
}

/* A list option splits with the one comma-list parser (list.h); 0 with the error set if not. */
static int list_ok(const char *option, const char *s) {
  const int cap = (int)(strlen(s) / 2 + 1);
  char(*items)[NEST_LIST_ITEM] = malloc((size_t)cap * NEST_LIST_ITEM);
  int n = 0;
  const int ok = items ? nest_list_split(option, s, items, cap, &n) == NEST_OK
                       : (NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory", option), 0);
  free(items);
  return ok;
}

static int parse_long(const char *s, long lo, long hi, long *v) {
  char *end;
  errno = 0;
  long x = strtol(s, &end, 10);
  if (end == s || *end || errno || x < lo || x > hi) return 0;
  *v = x;
  return 1;
}

/* Shards: refuse to replace an existing set (its first shard) unless --force; with --force,
 * shards of the old set beyond the new count are removed after the new set is complete, so
 * that PREFIX-*.h5 names exactly the new set. */
static int check_shard_output(const char *prefix, int force) {
  char path[4096];
  if (nest_shard_path(prefix, 0, path, sizeof path) != NEST_OK) {
    fprintf(stderr, "nest_prep: %s\n", nest_error_message());
    return 1;
  }
  struct stat any;
  if (!force && lstat(path, &any) == 0) {
    fprintf(stderr, "nest_prep: %s: the output shard exists; refusing to overwrite the set (use "
            "--force)\n", path);
    return 1;
  }
  return 0;
}

/* Create the directory the output goes in (`-o data/synth/train` on a fresh checkout): a shard
 * prefix's or an output file's parent. 0, or 1 after a one-line message. */
static int make_output_dir(const char *out) {
  const char *slash = strrchr(out, '/');
  if (!slash || slash == out) return 0; /* the current directory, or "/" */
  char dir[4096];
  if ((size_t)(slash - out) >= sizeof dir) {
    fprintf(stderr, "nest_prep: %s: path too long\n", out);
    return 1;
  }
  snprintf(dir, sizeof dir, "%.*s", (int)(slash - out), out);
  if (nest_atomic_mkdirs(dir) != NEST_OK) {
    fprintf(stderr, "nest_prep: %s: %s\n", out, nest_error_message());
    return 1;
  }
  return 0;
}

static void remove_stale_shards(const char *prefix, int from) {
  char path[4096];
  struct stat any;
  for (int k = from; nest_shard_path(prefix, k, path, sizeof path) == NEST_OK &&
                     lstat(path, &any) == 0; ++k)
    if (unlink(path) == 0) printf("nest_prep: removed %s (left from an earlier, larger set)\n", path);
}

typedef struct {
  long n, classes, size, channels, shard_size, first;
  unsigned long long seed;
} shard_opts;

/* ---- JPEG directories (ILSVRC2012 layout) -------------------------------------------------- */

/* The working memory one image may need (docs/data-format.md, "Image size limit"): its decoded
 * pixels (W x H x K bytes, W x H after the decoder's DCT scaling) plus the float planes of the
 * resize (W x H + W x S + S x S floats: one channel, then only the S rows and S columns of the
 * centre crop). Checked before anything is allocated, so a file whose header claims more is
 * skipped and counted instead of asking for gigabytes; a JPEG's largest possible size,
 * 65500 x 65500, decoded at 1/8 needs 640 MiB at --size 4096 and fits. */
#define PREP_IMAGE_MIB 1024
#define PREP_IMAGE_BYTES ((double)PREP_IMAGE_MIB * 1024 * 1024)

/* libjpeg reports fatal errors through error_exit, which must not return: jump back to the
 * decode call, so a corrupt file is skipped and never ends the process. */
typedef struct {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void on_jpeg_error(j_common_ptr cinfo) {
  jpeg_err *e = (jpeg_err *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, e->msg);
  longjmp(e->jump, 1);
}

/* Level -1 is a warning (damaged data: a truncated file, a corrupt Huffman code, a header
 * that claims more than the file holds): counted in num_warnings as libjpeg's own
 * emit_message counts it, not printed. Levels >= 0 are trace messages. */
static void on_jpeg_message(j_common_ptr cinfo, int level) {
  if (level < 0) cinfo->err->num_warnings++;
}

/* Resample one line: outputs k0 .. k0 + cnt - 1 of `on` (into out[0], out[ostride], ...) from
 * in[] (`in_n` values `stride` apart), a triangle filter of radius max(1, scale) about each
 * output's source position (bilinear when enlarging, an area-weighted average when reducing,
 * so no aliasing). Each output depends only on its own k. */
static void resample_line(const float *in, int in_n, int stride, float *out, int on, int k0,
                          int cnt, int ostride) {
  const double scale = (double)in_n / on, rad = scale > 1 ? scale : 1;
  for (int i = 0; i < cnt; ++i) {
    const int k = k0 + i;
    const double c = (k + 0.5) * scale - 0.5;
    int lo = (int)floor(c - rad) + 1, hi = (int)ceil(c + rad) - 1;
    if (lo < 0) lo = 0;
    if (hi > in_n - 1) hi = in_n - 1;
    double s = 0, w = 0;
    for (int j = lo; j <= hi; ++j) {
      const double t = 1.0 - fabs(j - c) / rad;
      if (t <= 0) continue;
      s += t * in[(size_t)j * stride], w += t;
    }
    out[(size_t)i * ostride] =
        (float)(w > 0 ? s / w : in[(size_t)(c < 0 ? 0 : in_n - 1) * stride]);
  }
}

enum { JPEG_OK = 0, JPEG_CORRUPT = -1, JPEG_TOO_LARGE = -2 };

/* rgb[H, W, K] (K = 1 gray, 3 RGB, 4 CMYK) -> img[3, size, size]: per channel, the short side
 * resized to size and the centre size x size kept, computing only the kept rows and columns.
 * tmp holds W x H + W x size + size x size floats. */
static void resize_centre(const unsigned char *rgb, int W, int H, int K, int cmyk, int adobe,
                          int size, float *tmp, uint8_t *img) {
  const int oh = H <= W ? size : (int)lround((double)H * size / W);
  const int ow = W <= H ? size : (int)lround((double)W * size / H);
  const int y0 = (oh - size) / 2, x0 = (ow - size) / 2;
  float *plane = tmp, *cols = tmp + (size_t)W * H, *res = cols + (size_t)W * size;
  for (int c = 0; c < 3; ++c) {
    for (size_t p = 0; p < (size_t)W * H; ++p) {
      const unsigned char *px = rgb + p * K;
      float v;
      if (K == 1) v = px[0];
      else if (!cmyk) v = px[c];
      else { /* Adobe writes inverted CMYK (saw_Adobe_marker): R = C * K / 255 on stored values */
        const float cc = adobe ? px[c] : 255 - px[c], kk = adobe ? px[3] : 255 - px[3];
        v = cc * kk / 255.0f;
      }
      plane[p] = v;
    }
    /* vertical: rows y0 .. y0 + size of the oh-row image, every column: cols[size, W] */
    for (int x = 0; x < W; ++x) resample_line(plane + x, H, W, cols + x, oh, y0, size, W);
    /* horizontal: columns x0 .. x0 + size of the ow-column rows: res[size, size] */
    for (int y = 0; y < size; ++y)
      resample_line(cols + (size_t)y * W, W, 1, res + (size_t)y * size, ow, x0, size, 1);
    for (size_t i = 0; i < (size_t)size * size; ++i) {
      const float v = roundf(res[i]);
      img[(size_t)c * size * size + i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
  }
}

/* Decode `path` to img[3, size, size]: RGB (grayscale replicated, CMYK converted), the short
 * side resized to `size`, the centre size x size kept. JPEG_OK; JPEG_CORRUPT (cannot be
 * decoded) or JPEG_TOO_LARGE (over PREP_IMAGE_BYTES) with a message in msg. *warned = 1 if
 * libjpeg warned (a damaged but decodable file). */
static int decode_jpeg(const char *path, int size, uint8_t *img, char *msg, size_t cap,
                       int *warned) {
  struct jpeg_decompress_struct ci;
  jpeg_err err;
  FILE *volatile f = fopen(path, "rb");
  unsigned char *volatile rgb = NULL;
  float *volatile tmp = NULL;
  *warned = 0;
  if (!f) {
    snprintf(msg, cap, "%s: cannot open: %s", path, strerror(errno));
    return JPEG_CORRUPT;
  }
  ci.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_jpeg_error;
  err.pub.emit_message = on_jpeg_message;
  if (setjmp(err.jump)) {
    snprintf(msg, cap, "%s: %s", path, err.msg);
    jpeg_destroy_decompress(&ci);
    fclose(f);
    free(rgb);
    free(tmp);
    return JPEG_CORRUPT;
  }
  jpeg_create_decompress(&ci);
  jpeg_stdio_src(&ci, f);
  jpeg_read_header(&ci, TRUE);
  const int cmyk = ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK;
  ci.out_color_space = cmyk ? JCS_CMYK : ci.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  /* Let the decoder shrink by 1/2, 1/4 or 1/8 while the short side stays >= size (faster). */
  const unsigned short_side = ci.image_width < ci.image_height ? ci.image_width : ci.image_height;
  ci.scale_num = 1;
  ci.scale_denom = 1;
  while (ci.scale_denom < 8 && short_side / (ci.scale_denom * 2) >= (unsigned)size) ci.scale_denom *= 2;
  jpeg_calc_output_dimensions(&ci);
  const int W = (int)ci.output_width, H = (int)ci.output_height, K = ci.output_components;
  const double need =
      (double)W * H * K + 4.0 * ((double)W * H + (double)W * size + (double)size * size);
  if (need > PREP_IMAGE_BYTES) {
    snprintf(msg, cap, "%s: %ux%u pixels (%dx%d decoded at 1/%u) need %.0f MiB to convert, more "
             "than the limit of %d MiB per image", path, ci.image_width, ci.image_height, W, H,
             ci.scale_denom, need / (1024.0 * 1024.0), PREP_IMAGE_MIB);
    jpeg_destroy_decompress(&ci);
    fclose(f);
    return JPEG_TOO_LARGE;
  }
  rgb = malloc((size_t)W * H * K);
  tmp = malloc(sizeof(float) * ((size_t)W * H + (size_t)W * size + (size_t)size * size));
  if (!rgb || !tmp) {
    snprintf(err.msg, sizeof err.msg, "out of memory (%dx%d)", W, H);
    longjmp(err.jump, 1);
  }
  jpeg_start_decompress(&ci);
  while (ci.output_scanline < ci.output_height) {
    JSAMPROW row = rgb + (size_t)ci.output_scanline * W * K;
    jpeg_read_scanlines(&ci, &row, 1);
  }
  jpeg_finish_decompress(&ci);
  *warned = err.pub.num_warnings > 0; /* the end of the data may warn too */
  const int saw_adobe = ci.saw_Adobe_marker;
  jpeg_destroy_decompress(&ci);
  fclose(f);
  resize_centre(rgb, W, H, K, cmyk, saw_adobe, size, tmp, img);
  free(rgb);
  free(tmp);
  return JPEG_OK;
}

static int has_jpeg_ext(const char *name) {
  const char *d = strrchr(name, '.');
  return d && (strcasecmp(d, ".jpg") == 0 || strcasecmp(d, ".jpeg") == 0);
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_list(char **v, int n) {
  for (int i = 0; v && i < n; ++i) free(v[i]);
  free(v);
}

/* v[*n] = strdup(name), growing v (capacity *cap). 0, or -1 out of memory. */
static int list_add(char ***v, int *n, int *cap, const char *name) {
  if (*n == *cap) {
    const int ncap = *cap ? 2 * *cap : 64;
    char **nv = realloc(*v, sizeof(char *) * (size_t)ncap);
    if (!nv) return -1;
    *v = nv, *cap = ncap;
  }
  if (!((*v)[*n] = strdup(name))) return -1;
  ++*n;
  return 0;
}

/* Sorted names in `path` of the directories (want_dirs: the class folders) or of the .jpg /
 * .jpeg files (a class folder; one that cannot be opened is kept, its decode reports it and
 * counts it as corrupt). 0, or -1 with a one-line reason in msg: the folder cannot be opened
 * or read, a class folder's entry cannot be examined (it might be a class), out of memory. */
static int list_dir(const char *path, int want_dirs, char ***out, int *n, char *msg, size_t cap) {
  const char *what = want_dirs ? "image directory" : "class folder";
  char **v = NULL;
  int vcap = 0, rc = 0;
  *out = NULL;
  *n = 0;
  DIR *d = opendir(path);
  if (!d) {
    snprintf(msg, cap, "%.900s: cannot read the %s: %s", path, what, strerror(errno));
    return -1;
  }
  for (;;) {
    errno = 0;
    const struct dirent *e = readdir(d);
    if (!e) {
      if (errno)
        snprintf(msg, cap, "%.900s: cannot read the %s: %s", path, what, strerror(errno)), rc = -1;
      break;
    }
    if (e->d_name[0] == '.' || (!want_dirs && !has_jpeg_ext(e->d_name))) continue;
    char full[8192];
    struct stat sb;
    if ((size_t)snprintf(full, sizeof full, "%s/%s", path, e->d_name) >= sizeof full) {
      snprintf(msg, cap, "%.200s/%.200s: path too long", path, e->d_name), rc = -1;
      break;
    }
    const int got = stat(full, &sb) == 0;
    if (!got && want_dirs) {
      snprintf(msg, cap, "%.900s: cannot examine: %s", full, strerror(errno)), rc = -1;
      break;
    }
    if (got && (want_dirs ? !S_ISDIR(sb.st_mode) : !S_ISREG(sb.st_mode))) continue;
    if (list_add(&v, n, &vcap, e->d_name)) {
      snprintf(msg, cap, "%.900s: out of memory listing the %s", path, what), rc = -1;
      break;
    }
  }
  closedir(d);
  if (rc) {
    free_list(v, *n);
    *n = 0;
    return -1;
  }
  if (v) qsort(v, (size_t)*n, sizeof(char *), cmp_name); /* byte order: class ids stable */
  *out = v;
  return 0;
}

static double wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* SRC_DIR's class folders and their JPEG files. */
typedef struct {
  char **classes;
  int nclasses;
  char ***files; /* [nclasses] */
  int *nfiles;   /* [nclasses] */
  int64_t total;
} image_tree;

static void free_tree(image_tree *t) {
  for (int c = 0; t->files && c < t->nclasses; ++c) free_list(t->files[c], t->nfiles[c]);
  free(t->files);
  free(t->nfiles);
  free_list(t->classes, t->nclasses);
  memset(t, 0, sizeof *t);
}

/* Every class folder and its files, before any image is converted (the total is the progress
 * line's): a folder that cannot be read is an error naming it, never a class of 0 images. 0,
 * or 1 after a one-line message. */
static int read_tree(const char *src, image_tree *t) {
  char msg[1024];
  memset(t, 0, sizeof *t);
  if (list_dir(src, 1, &t->classes, &t->nclasses, msg, sizeof msg)) {
    fprintf(stderr, "nest_prep: %s\n", msg);
    return 1;
  }
  if (t->nclasses == 0) {
    fprintf(stderr, "nest_prep: %s: no class folders (expected SRC_DIR/<class>/*.JPEG)\n", src);
    return 1;
  }
  t->files = calloc((size_t)t->nclasses, sizeof(char **));
  t->nfiles = calloc((size_t)t->nclasses, sizeof(int));
  if (!t->files || !t->nfiles) {
    fprintf(stderr, "nest_prep: %s: out of memory listing %d class folders\n", src, t->nclasses);
    return 1;
  }
  for (int k = 0; k < t->nclasses; ++k) {
    char d[8192];
    snprintf(d, sizeof d, "%s/%s", src, t->classes[k]);
    if (list_dir(d, 0, &t->files[k], &t->nfiles[k], msg, sizeof msg)) {
      fprintf(stderr, "nest_prep: %s\n", msg);
      return 1;
    }
    t->total += t->nfiles[k];
  }
  if (t->total == 0) {
    fprintf(stderr, "nest_prep: %s: no .jpg / .jpeg files in the %d class folders\n", src,
            t->nclasses);
    return 1;
  }
  return 0;
}

typedef struct {
  int64_t done, written, corrupt, too_large, warned;
} image_counts;

enum { GROUP = 32 }; /* images decoded at once, over the OpenMP threads */

/* The next (up to) GROUP images of the tree from class *k, file *i on (class, then file
 * order): decoded over the threads, the good ones added to the writer in order, the others
 * reported and counted. buf holds GROUP images, msgs GROUP messages. */
static nest_status convert_group(const char *src, const image_tree *t, int *k, int *i, long size,
                                 uint8_t *buf, char (*msgs)[1024], nest_shard_writer *w,
                                 image_counts *n) {
  const size_t ib = 3 * (size_t)size * (size_t)size;
  char *paths[GROUP];
  int32_t labels[GROUP];
  int res[GROUP], warn[GROUP], g = 0;
  nest_status st = NEST_OK;
  for (; g < GROUP && *k < t->nclasses; ++*i) {
    if (*i >= t->nfiles[*k]) {
      ++*k, *i = -1;
      continue;
    }
    const size_t len = strlen(src) + strlen(t->classes[*k]) + strlen(t->files[*k][*i]) + 3;
    if (!(paths[g] = malloc(len))) {
      st = NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory for a file name", src);
      break;
    }
    snprintf(paths[g], len, "%s/%s/%s", src, t->classes[*k], t->files[*k][*i]);
    labels[g++] = *k;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int j = 0; j < g; ++j)
    res[j] = st == NEST_OK ? decode_jpeg(paths[j], (int)size, buf + (size_t)j * ib, msgs[j],
                                         sizeof msgs[j], &warn[j])
                           : JPEG_CORRUPT;
  for (int j = 0; j < g; ++j) {
    if (st == NEST_OK && res[j] == JPEG_OK) {
      n->warned += warn[j];
      st = nest_shard_writer_add(w, buf + (size_t)j * ib, labels[j]);
      ++n->written;
    } else if (st == NEST_OK) {
      fprintf(stderr, "\nnest_prep: skipped %s\n", msgs[j]);
      ++*(res[j] == JPEG_TOO_LARGE ? &n->too_large : &n->corrupt);
    }
    free(paths[j]);
  }
  n->done += g;
  return st;
}

/* SRC_DIR/<class>/<image>.JPEG -> shards of 3 x size x size images, class ids = the sorted
 * folder names (stored as class_names). Files that do not decode, or are over the image size
 * limit, are skipped with a message and counted. Decoding runs GROUP images at a time over the
 * OpenMP threads; writing is in order. */
static int run_images(const char *src, const char *prefix, long size, long shard_size, int force) {
  if (check_shard_output(prefix, force)) return 1;
  image_tree t;
  if (read_tree(src, &t)) {
    free_tree(&t);
    return 1;
  }
  int rc = 1;
  nest_shard_writer *w = NULL;
  uint8_t *buf = malloc(3 * (size_t)size * (size_t)size * GROUP);
  char(*msgs)[1024] = malloc(sizeof *msgs * GROUP);
  image_counts n = {0};
  nest_status st = NEST_OK;
  if (!buf || !msgs) {
    fprintf(stderr, "nest_prep: out of memory\n");
    goto out;
  }
  if (make_output_dir(prefix)) goto out;
  st = nest_shard_writer_create(prefix, (nest_shape){3, (int)size, (int)size}, t.nclasses,
                                shard_size, t.classes, &w);
  double last = 0;
  const double t0 = wall();
  for (int k = 0, i = 0; st == NEST_OK && n.done < t.total;) {
    st = convert_group(src, &t, &k, &i, size, buf, msgs, w, &n);
    const double now = wall();
    if (now - last >= 1.0 || n.done == t.total) {
      last = now;
      printf("\rnest_prep: %lld/%lld images (%.1f%%), %lld skipped, %.0f images/s   ",
             (long long)n.done, (long long)t.total, 100.0 * (double)n.done / (double)t.total,
             (long long)(n.corrupt + n.too_large), (double)n.done / (now - t0 + 1e-9));
      fflush(stdout);
    }
  }
  printf("\n");
  int nshards = 0;
  if (st == NEST_OK && n.written == 0) {
    fprintf(stderr, "nest_prep: %s: no image could be converted (%lld corrupt, %lld over the size "
            "limit)\n", src, (long long)n.corrupt, (long long)n.too_large);
    goto out;
  }
  if (st == NEST_OK) st = nest_shard_writer_finish(w, NULL, &nshards);
  if (st != NEST_OK) {
    fprintf(stderr, "nest_prep: %s\n", nest_error_message());
    goto out;
  }
  if (force) remove_stale_shards(prefix, nshards);
  printf("nest_prep: wrote %s-00000.h5 .. %s-%05d.h5: %lld images, shape 3x%ldx%ld (uint8), %d "
         "classes, %d shard%s; %lld corrupt file%s skipped, %lld over the size limit skipped, "
         "%lld decoded with warnings\n", prefix, prefix, nshards - 1, (long long)n.written, size,
         size, t.nclasses, nshards, nshards == 1 ? "" : "s", (long long)n.corrupt,
         n.corrupt == 1 ? "" : "s", (long long)n.too_large, (long long)n.warned);
  rc = 0;
out:
  nest_shard_writer_destroy(&w);
  free(buf);
  free(msgs);
  free_tree(&t);
  return rc;
}

static int run_synthetic(const char *prefix, const shard_opts *so, int force) {
  if (check_shard_output(prefix, force) || make_output_dir(prefix)) return 1;
  const nest_shape shape = {(int)so->channels, (int)so->size, (int)so->size};
  int nfiles = 0;
  nest_status st = nest_shards_synthetic(prefix, so->n, shape, (int)so->classes, so->shard_size,
                                         so->seed, so->first, &nfiles);
  if (st != NEST_OK) {
    fprintf(stderr, "nest_prep: %s\n", nest_error_message());
    return 1;
  }
  if (force) remove_stale_shards(prefix, nfiles);
  printf("nest_prep: wrote %s-00000.h5 .. %s-%05d.h5: %ld synthetic images, shape %ldx%ldx%ld "
         "(uint8), %ld classes, %d shard%s\n", prefix, prefix, nfiles - 1, so->n, so->channels,
         so->size, so->size, so->classes, nfiles, nfiles == 1 ? "" : "s");
  return 0;
}

/* The options of the shard writers (--synthetic-images and its companions): 0 if c was one
 * and its value is good, 2 after a usage error, -1 if c is not one of them. */
static int shard_option(int c, const char *arg, shard_opts *so) {
  long v;
  switch (c) {
  case 'S':
    if (!parse_long(arg, 1, 1L << 40, &v))
      return usage_error("--synthetic-images '%s': expected a positive image count", arg);
    so->n = v;
    break;
  case 'C':
    if (!parse_long(arg, 1, 1 << 20, &v))
      return usage_error("--classes '%s': expected 1 .. 1048576", arg);
    so->classes = v;
    break;
  case 'z':
    if (!parse_long(arg, 1, 4096, &v)) return usage_error("--size '%s': expected 1 .. 4096", arg);
    so->size = v;
    break;
  case 'k':
    if (!parse_long(arg, 1, 64, &v)) return usage_error("--channels '%s': expected 1 .. 64", arg);
    so->channels = v;
    break;
  case 'K':
    if (!parse_long(arg, 1, 1L << 30, &v))
      return usage_error("--shard-size '%s': expected a positive image count", arg);
    so->shard_size = v;
    break;
  case 'T':
    if (!parse_long(arg, 0, 1L << 50, &v))
      return usage_error("--first '%s': expected a non-negative image number", arg);
    so->first = v;
    break;
  case 's': {
    char *end;
    errno = 0;
    so->seed = strtoull(arg, &end, 10);
    if (end == arg || *end || errno || arg[0] == '-')
      return usage_error("--seed '%s': expected a non-negative integer", arg);
    break;
  }
  default: return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"synthetic-images", required_argument, NULL, 'S'}, {"classes", required_argument, NULL, 'C'},
      {"size", required_argument, NULL, 'z'},    {"channels", required_argument, NULL, 'k'},
      {"shard-size", required_argument, NULL, 'K'}, {"seed", required_argument, NULL, 's'},
      {"first", required_argument, NULL, 'T'},
      {"images", required_argument, NULL, 'I'},
      {"output", required_argument, NULL, 'o'},    {"format", required_argument, NULL, 'f'},
      {"label-col", required_argument, NULL, 'l'}, {"delim", required_argument, NULL, 'd'},
      {"header", no_argument, NULL, 'H'},          {"drop-cols", required_argument, NULL, 'x'},
      {"max", required_argument, NULL, 'm'},       {"help", no_argument, NULL, 'h'},
      {"force", no_argument, NULL, 'F'},           {NULL, 0, NULL, 0}};
  nest_data_opts o;
  nest_data_opts_default(&o);
  const char *outpath = NULL;
  int force = 0, synthetic = 0;
  const char *images = NULL;
  shard_opts so = {.classes = 10, .size = 256, .channels = 3, .shard_size = 1024, .seed = 1};
  long v;
  opterr = 0; /* we print our own one-line messages */
  int c;
  while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'o': outpath = optarg; break;
    case 'f':
      if (strcmp(optarg, "auto") && strcmp(optarg, "idx") && strcmp(optarg, "csv") &&
          strcmp(optarg, "h5"))
        return usage_error("--format '%s': expected auto, idx, csv or h5", optarg);
      o.format = optarg;
      break;
    case 'l':
      if (!parse_long(optarg, -1, INT_MAX, &v))
        return usage_error("--label-col '%s': expected a column number >= -1", optarg);
      o.csv_label_col = (int)v;
      break;
    case 'd':
      if (strcmp(optarg, "tab") == 0 || strcmp(optarg, "\\t") == 0) o.csv_delim = '\t';
      else if (strlen(optarg) == 1) o.csv_delim = optarg[0];
      else return usage_error("--delim '%s': expected one character or 'tab'", optarg);
      break;
    case 'H': o.csv_header = 1; break;
    case 'F': force = 1; break;
    case 'x':
      if (!list_ok("--drop-cols", optarg)) return usage_error("%s", nest_error_message());
      o.csv_drop_cols = optarg;
      break;
    case 'm':
      if (!parse_long(optarg, 1, LONG_MAX, &v))
        return usage_error("--max '%s': expected a positive sample count", optarg);
      o.max_samples = v;
      break;
    case 'I': images = optarg; break;
    case 'h': print_help(); return 0;
    case ':': return usage_error("option %s needs a value", argv[optind - 1]);
    default: {
      const int r = shard_option(c, optarg, &so);
      if (r >= 0) {
        if (r > 0) return r;
        synthetic |= c == 'S';
        break;
      }
      return usage_error("unknown option '%s'", argv[optind - 1]);
    }
    }
  }
  int npos = argc - optind;
  if (images) {
    if (synthetic) return usage_error("%s", "--images and --synthetic-images exclude each other");
    if (!outpath || !*outpath) return usage_error("%s", "missing -o PREFIX");
    if (npos > 0) return usage_error("unexpected argument '%s' with --images", argv[optind]);
    return run_images(images, outpath, so.size, so.shard_size, force);
  }
  if (synthetic) {
    if (!outpath || !*outpath) return usage_error("%s", "missing -o PREFIX");
    if (npos > 0) return usage_error("unexpected argument '%s' with --synthetic-images", argv[optind]);
    return run_synthetic(outpath, &so, force);
  }
  if (!outpath || !*outpath) return usage_error("%s", "missing -o OUT.h5");
  if (npos < 1 || npos > 2)
    return usage_error("%s", npos < 1 ? "missing INPUT file" : "too many input files");
  o.path = argv[optind];
  o.labels_path = npos == 2 ? argv[optind + 1] : NULL;
  const char *const inputs[2] = {o.path, o.labels_path};
  const char *const roles[2] = {"input", "labels file"};
  if (check_output(outpath, inputs, roles, force)) return 1;

  nest_dataset *ds = NULL;
  nest_status st = nest_dataset_load(&o, NULL, &ds);
  if (st == NEST_OK && make_output_dir(outpath)) {
    nest_dataset_destroy(&ds);
    return 1;
  }
  if (st == NEST_OK) st = nest_dataset_save_h5(ds, outpath);
  if (st != NEST_OK) {
    fprintf(stderr, "nest_prep: %s\n", nest_error_message());
    nest_dataset_destroy(&ds);
    return 1;
  }
  printf("nest_prep: wrote %s: %lld samples, shape %dx%dx%d (%s), %d classes\n", outpath,
         (long long)ds->n, ds->shape.c, ds->shape.h, ds->shape.w, ds->u8 ? "uint8" : "float32",
         ds->nclasses);
  nest_dataset_destroy(&ds);
  return 0;
}
