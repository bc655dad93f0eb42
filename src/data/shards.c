/* shards.c — image shards (docs/data-format.md): the writer behind nest_prep
 * --synthetic-images / --images, the reader that opens a set WITHOUT loading its images, and
 * the per-image read the batch reader (prefetch.h) calls for each sample of a rank's slice.
 *
 *   /images  uint8 [n, C, H, W], chunked (1, C, H, W), uncompressed
 *   /labels  int32 [n]
 *   /mean, /std  float32 [C]: raw 0..255 units, over the whole set, identical in every shard
 *   /class_names  optional [nclasses] strings
 *   root attributes: nest_format = "image-shard", shard_version = 1, nclasses,
 *                    shard_index, shard_count
 *
 * Why images are read with pread() and not with HDF5: Debian's HDF5 is built without thread
 * safety (H5is_library_threadsafe() reports 0), and the prefetch thread reads the next batch
 * while the main thread may be writing a checkpoint or a model file with HDF5. A lock around
 * every HDF5 call would make the prefetch thread wait for whole checkpoint writes (seconds for
 * AlexNet). Instead HDF5 is used only when a set is opened, on the main thread: it validates
 * the files and resolves where each image's chunk lies in its file (images are uncompressed
 * and one chunk each, so a chunk IS the image's C*H*W bytes); from then on the files are read
 * with pread() on descriptors of our own, which any thread may call at any time.
 * Sizes in a shard's header are checked before they are trusted: C*H*W <= INT_MAX (as the
 * writer and the h5 reader require), n images of C*H*W bytes must fit in the file, and the
 * label buffer grows without overflow.
 * A file-format module: HDF5 through the helpers of h5io.h (HDF5 is called only by h5io.c and
 * the file-format modules model.c, ckpt.c, data/h5.c, data/shards.c). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nest/atomic.h"
#include "nest/data.h"
#include "nest/h5io.h"
#include "nest/rng.h"

#include "data_internal.h"

#define SHARD_FORMAT "image-shard"
#define SHARD_VERSION 1
#define SHARD_MAX_CLASSES (1 << 20)

typedef struct {
  char *path;
  int fd;
  int64_t first, n;     /* global sample ids [first, first + n) */
  int64_t base, stride; /* file offset of image i = base + i * stride, when off is NULL */
  int64_t *off;         /* [n] file offsets when they are not an arithmetic sequence */
} shard_file;

struct nest_shards {
  int nfiles;
  shard_file *f;
  nest_shape stored;  /* per image as stored; the dataset's shape is the crop */
  size_t image_bytes; /* C * H * W */
  float *mean, *std;  /* [C], raw 0..255 units */
  _Atomic int64_t images_read, bytes_read;
  int32_t *track;     /* tests: reads per sample id, or NULL */
};

nest_status nest_shard_path(const char *prefix, int k, char *out, size_t cap) {
  int len = snprintf(out, cap, "%s-%05d.h5", prefix, k);
  if (len < 0 || (size_t)len >= cap)
    return NEST_ERR(NEST_ERR_ARG, "%s: shard path longer than %zu characters", prefix, cap - 1);
  return NEST_OK;
}

/* ---- small HDF5 helpers ------------------------------------------------------------------- */

/* Optional root int attribute: *present = 0 when it does not exist. */
static nest_status opt_int(hid_t file, const char *path, const char *name, int *v, int *present) {
  *present = H5Aexists(file, name) > 0;
  return *present ? nest_h5_attr_int(file, path, "/", name, v) : NEST_OK;
}

/* Root attribute nest_format into out (cap bytes): "" when absent or not a string. */
static void format_of(hid_t file, const char *path, char *out, size_t cap) {
  out[0] = '\0';
  char *s = NULL;
  if (H5Aexists(file, "nest_format") <= 0) return;
  if (nest_h5_attr_str(file, path, "/", "nest_format", &s) != NEST_OK) {
    nest_error_clear(); /* not a string: not a shard, said by the caller */
    return;
  }
  snprintf(out, cap, "%s", s);
  free(s);
}

int nest_data_is_shard(const char *path) {
  hid_t f = nest_h5_probe(path);
  if (f < 0) return 0;
  char fmt[64];
  format_of(f, path, fmt, sizeof fmt);
  H5Fclose(f);
  return strcmp(fmt, SHARD_FORMAT) == 0;
}

/* ---- writing ------------------------------------------------------------------------------ */

struct nest_shard_writer {
  char *prefix;
  nest_shape shape;
  size_t image_bytes;
  int nclasses;
  int64_t shard_size;
  char **names;   /* [nclasses] or NULL */
  char **tmp;     /* [ntmp] PATH.tmp of every shard started */
  char **final;   /* [ntmp] PATH */
  int ntmp, cap;
  hid_t file, dset, mspace; /* the open shard */
  int64_t in_shard;         /* images in the open shard */
  int32_t *labels;          /* [shard_size] of the open shard */
  uint64_t *sum, *sq;       /* [C] exact sums of pixel values and their squares, all images */
  int64_t total;
};

nest_status nest_shard_writer_create(const char *prefix, nest_shape shape, int nclasses,
                                     int64_t shard_size, char *const *class_names,
                                     nest_shard_writer **out) {
  nest_h5_quiet();
  *out = NULL;
  if (!prefix || !*prefix || shape.c < 1 || shape.h < 1 || shape.w < 1 || nclasses < 1 ||
      nclasses > SHARD_MAX_CLASSES || shard_size < 1 ||
      (double)shape.c * shape.h * shape.w > (double)INT_MAX)
    return NEST_ERR(NEST_ERR_ARG, "%s: bad shard set (shape %dx%dx%d, %d classes, %lld per shard)",
                    prefix ? prefix : "(null)", shape.c, shape.h, shape.w, nclasses,
                    (long long)shard_size);
  nest_shard_writer *w;
  NEST_CALL(nest_calloc((void **)&w, 1, sizeof *w, "shard writer"));
  w->file = w->dset = w->mspace = -1;
  w->shape = shape;
  w->image_bytes = nest_shape_size(shape);
  w->nclasses = nclasses;
  w->shard_size = shard_size;
  nest_status st = nest_data_strdup(prefix, &w->prefix);
  if (st == NEST_OK)
    st = nest_malloc((void **)&w->labels, sizeof(int32_t) * (size_t)shard_size, "shard labels");
  if (st == NEST_OK) st = nest_calloc((void **)&w->sum, (size_t)shape.c, sizeof(uint64_t), "sums");
  if (st == NEST_OK) st = nest_calloc((void **)&w->sq, (size_t)shape.c, sizeof(uint64_t), "sums");
  if (st == NEST_OK && class_names) {
    st = nest_calloc((void **)&w->names, (size_t)nclasses, sizeof(char *), "class names");
    for (int k = 0; k < nclasses && st == NEST_OK; ++k)
      st = nest_data_strdup(class_names[k], &w->names[k]);
  }
  if (st != NEST_OK) {
    nest_shard_writer_destroy(&w);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  *out = w;
  return NEST_OK;
}

static nest_status start_shard(nest_shard_writer *w) {
  char path[4096], tmp[4200];
  NEST_CALL(nest_shard_path(w->prefix, w->ntmp, path, sizeof path));
  if (w->ntmp == w->cap) {
    int cap = w->cap ? 2 * w->cap : 16;
    char **t = realloc(w->tmp, sizeof(char *) * (size_t)cap);
    if (t) w->tmp = t;
    char **f = t ? realloc(w->final, sizeof(char *) * (size_t)cap) : NULL;
    if (f) w->final = f;
    if (!t || !f) return NEST_ERR(NEST_ERR_NOMEM, "out of memory (shard list)");
    w->cap = cap;
  }
  NEST_CALL(nest_h5_begin(path, tmp, sizeof tmp, H5F_LIBVER_V18, &w->file));
  nest_status st = nest_data_strdup(tmp, &w->tmp[w->ntmp]);
  if (st == NEST_OK) {
    st = nest_data_strdup(path, &w->final[w->ntmp]);
    if (st != NEST_OK) free(w->tmp[w->ntmp]);
  }
  if (st != NEST_OK) {
    nest_h5_abort(&w->file, tmp);
    return st;
  }
  w->ntmp++;
  /* [shard_size, C, H, W], one chunk per image, no filter: a chunk is the image's raw bytes,
   * so the reader can pread() it (see the top of this file). Shrunk at the end if the shard
   * is the last and short. No chunk cache: each image goes straight to the file. */
  const nest_shape s = w->shape;
  hsize_t dims[4] = {(hsize_t)w->shard_size, (hsize_t)s.c, (hsize_t)s.h, (hsize_t)s.w};
  hsize_t chunk[4] = {1, (hsize_t)s.c, (hsize_t)s.h, (hsize_t)s.w};
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE), dapl = H5Pcreate(H5P_DATASET_ACCESS);
  herr_t e = dcpl >= 0 && dapl >= 0 ? H5Pset_chunk(dcpl, 4, chunk) : -1;
  if (e >= 0) e = H5Pset_chunk_cache(dapl, 0, 0, 1.0);
  hid_t sp = e >= 0 ? H5Screate_simple(4, dims, NULL) : -1;
  w->dset = sp >= 0 ? H5Dcreate2(w->file, "images", H5T_STD_U8LE, sp, H5P_DEFAULT, dcpl, dapl) : -1;
  if (sp >= 0) H5Sclose(sp);
  if (dcpl >= 0) H5Pclose(dcpl);
  if (dapl >= 0) H5Pclose(dapl);
  if (w->mspace < 0) w->mspace = H5Screate_simple(4, chunk, NULL);
  if (w->dset < 0 || w->mspace < 0)
    return NEST_ERR(NEST_ERR_IO, "%s: cannot create dataset /images", tmp);
  w->in_shard = 0;
  return NEST_OK;
}

/* Shrink, write labels and the attributes known now, close. mean/std come in finish. */
static nest_status close_shard(nest_shard_writer *w) {
  const char *tmp = w->tmp[w->ntmp - 1];
  herr_t e = 0;
  if (w->in_shard < w->shard_size) {
    hsize_t dims[4] = {(hsize_t)w->in_shard, (hsize_t)w->shape.c, (hsize_t)w->shape.h,
                       (hsize_t)w->shape.w};
    e = H5Dset_extent(w->dset, dims);
  }
  if (H5Dclose(w->dset) < 0) e = -1;
  w->dset = -1;
  if (e >= 0)
    e = nest_h5_put_dataset(w->file, "labels", 1, (hsize_t[]){(hsize_t)w->in_shard},
                            H5T_STD_I32LE, H5T_NATIVE_INT32, 4, NEST_H5_CONTIGUOUS, w->labels);
  if (e >= 0) e = nest_h5_put_fixed_str(w->file, "nest_format", SHARD_FORMAT);
  if (e >= 0) e = nest_h5_put_int(w->file, "shard_version", SHARD_VERSION);
  if (e >= 0) e = nest_h5_put_int(w->file, "nclasses", w->nclasses);
  if (e >= 0 && w->names) e = nest_h5_put_strs(w->file, "class_names", w->names, w->nclasses, 0);
  if (H5Fclose(w->file) < 0) e = -1;
  w->file = -1;
  if (e < 0) return NEST_ERR(NEST_ERR_IO, "%s: writing the shard failed (disk full?)", tmp);
  return NEST_OK;
}

nest_status nest_shard_writer_add(nest_shard_writer *w, const uint8_t *image, int32_t label) {
  if (label < 0 || label >= w->nclasses)
    return NEST_ERR(NEST_ERR_ARG, "%s: label %d out of range [0, %d)", w->prefix, label,
                    w->nclasses);
  if (w->file < 0) NEST_CALL(start_shard(w));
  hsize_t start[4] = {(hsize_t)w->in_shard, 0, 0, 0};
  hsize_t count[4] = {1, (hsize_t)w->shape.c, (hsize_t)w->shape.h, (hsize_t)w->shape.w};
  hid_t fs = H5Dget_space(w->dset);
  herr_t e = fs >= 0 ? H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) : -1;
  if (e >= 0) e = H5Dwrite(w->dset, H5T_NATIVE_UINT8, w->mspace, fs, H5P_DEFAULT, image);
  if (fs >= 0) H5Sclose(fs);
  if (e < 0)
    return NEST_ERR(NEST_ERR_IO, "%s: writing image %lld failed (disk full?)",
                    w->tmp[w->ntmp - 1], (long long)w->in_shard);
  /* Exact integer sums: the statistics do not depend on the order or the shard size. */
  const size_t hw = (size_t)w->shape.h * w->shape.w;
  for (int c = 0; c < w->shape.c; ++c) {
    const uint8_t *p = image + c * hw;
    uint64_t s = 0, q = 0;
    for (size_t j = 0; j < hw; ++j) s += p[j], q += (uint32_t)p[j] * p[j];
    w->sum[c] += s;
    w->sq[c] += q;
  }
  w->labels[w->in_shard++] = label;
  w->total++;
  if (w->in_shard == w->shard_size) NEST_CALL(close_shard(w));
  return NEST_OK;
}

nest_status nest_shard_writer_finish(nest_shard_writer *w, int64_t *n, int *nfiles) {
  if (w->file >= 0) NEST_CALL(close_shard(w));
  if (w->total == 0) return NEST_ERR(NEST_ERR_ARG, "%s: no images to write", w->prefix);
  const int C = w->shape.c;
  float mean[64], sd[64], *m = mean, *s = sd;
  if (C > 64) {
    NEST_CALL(nest_malloc((void **)&m, sizeof(float) * 2 * (size_t)C, "statistics"));
    s = m + C;
  }
  const double cnt = (double)w->total * w->shape.h * w->shape.w;
  for (int c = 0; c < C; ++c) {
    const double mu = (double)w->sum[c] / cnt, var = (double)w->sq[c] / cnt - mu * mu;
    m[c] = (float)mu;
    s[c] = (float)fmax(sqrt(fmax(var, 0.0)), 1e-3); /* a constant channel must not divide by 0 */
  }
  nest_status st = NEST_OK;
  for (int k = 0; k < w->ntmp && st == NEST_OK; ++k) {
    hid_t f = H5Fopen(w->tmp[k], H5F_ACC_RDWR, H5P_DEFAULT);
    herr_t e = f >= 0 ? 0 : -1;
    const hsize_t c1[1] = {(hsize_t)C};
    if (e >= 0)
      e = nest_h5_put_dataset(f, "mean", 1, c1, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4,
                              NEST_H5_CONTIGUOUS, m);
    if (e >= 0)
      e = nest_h5_put_dataset(f, "std", 1, c1, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4,
                              NEST_H5_CONTIGUOUS, s);
    if (e >= 0) e = nest_h5_put_int(f, "shard_index", k);
    if (e >= 0) e = nest_h5_put_int(f, "shard_count", w->ntmp);
    if (f >= 0 && H5Fclose(f) < 0) e = -1;
    if (e < 0) st = NEST_ERR(NEST_ERR_IO, "%s: completing the shard failed (disk full?)", w->tmp[k]);
  }
  if (m != mean) free(m);
  NEST_CALL(st);
  /* Every shard complete: rename them all. */
  for (int k = 0; k < w->ntmp; ++k) {
    st = nest_atomic_commit(w->tmp[k], w->final[k]);
    free(w->tmp[k]);
    w->tmp[k] = NULL;
    NEST_CALL(st);
  }
  if (n) *n = w->total;
  if (nfiles) *nfiles = w->ntmp;
  return NEST_OK;
}

void nest_shard_writer_destroy(nest_shard_writer **wp) {
  if (!wp || !*wp) return;
  nest_shard_writer *w = *wp;
  nest_h5_close(&w->dset, H5Dclose);
  nest_h5_close(&w->mspace, H5Sclose);
  nest_h5_close(&w->file, H5Fclose);
  for (int k = 0; k < w->ntmp; ++k) {
    if (w->tmp && w->tmp[k]) nest_atomic_abort(w->tmp[k]); /* not finished: no half set */
    if (w->tmp) free(w->tmp[k]);
    if (w->final) free(w->final[k]);
  }
  free(w->tmp);
  free(w->final);
  nest_data_free_names(w->names, w->nclasses);
  free(w->prefix);
  free(w->labels);
  free(w->sum);
  free(w->sq);
  free(w);
  *wp = NULL;
}

/* ---- synthetic shards ---------------------------------------------------------------------- */

typedef struct {
  float colour[4];  /* per channel (first 4; further channels reuse them) */
  float phase[4];
  int fx, fy;       /* grating frequency: cycles across the width and the height */
} synth_class;

/* Image i: label from (seed, SYNTH, i, 1); pixels = 128 + colour + 40 sin(grating + phase)
 * + uniform noise in +-50 from (seed, SYNTH, i, 3), rounded and clamped to 0..255. */
static void synth_image(const synth_class *cls, int nclasses, nest_shape s, uint64_t seed,
                        int64_t i, uint8_t *img, int32_t *label, float *tab) {
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_SYNTH, (uint64_t)i, 1);
  const int k = (int)nest_rng_below(&r, (uint64_t)nclasses);
  *label = k;
  const synth_class *p = &cls[k];
  const float two_pi = 6.28318530717958647692f;
  /* sin(a + b) = sin a cos b + cos a sin b with a along x, b along y: tables, not a sin per
   * pixel. tab: [W] sin a, [W] cos a, [H] sin b, [H] cos b. */
  float *sa = tab, *ca = tab + s.w, *sb = tab + 2 * s.w, *cb = sb + s.h;
  nest_rng nr;
  nest_rng_init(&nr, seed, NEST_RNG_SYNTH, (uint64_t)i, 3);
  uint32_t bits = 0;
  int left = 0;
  for (int c = 0; c < s.c; ++c) {
    const float ph = p->phase[c & 3], col = p->colour[c & 3];
    for (int x = 0; x < s.w; ++x) {
      const float a = two_pi * (float)p->fx * (float)x / (float)s.w + ph;
      sa[x] = sinf(a), ca[x] = cosf(a);
    }
    for (int y = 0; y < s.h; ++y) {
      const float b = two_pi * (float)p->fy * (float)y / (float)s.h;
      sb[y] = sinf(b), cb[y] = cosf(b);
    }
    uint8_t *o = img + (size_t)c * s.h * s.w;
    for (int y = 0; y < s.h; ++y)
      for (int x = 0; x < s.w; ++x) {
        if (!left) bits = nest_rng_u32(&nr), left = 4;
        const float u = (float)(bits & 255u) * (2.0f / 255.0f) - 1.0f; /* 8 bits per pixel */
        bits >>= 8, --left;
        const float v = 128.0f + col + 40.0f * (sa[x] * cb[y] + ca[x] * sb[y]) + 50.0f * u;
        const float q = roundf(v);
        o[(size_t)y * s.w + x] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
      }
  }
}

nest_status nest_shards_synthetic(const char *prefix, int64_t n, nest_shape shape, int nclasses,
                                  int64_t shard_size, uint64_t seed, int64_t first, int *nfiles) {
  if (n < 1)
    return NEST_ERR(NEST_ERR_ARG, "%s: synthetic shards need at least one image", prefix);
  nest_shard_writer *w = NULL;
  NEST_CALL(nest_shard_writer_create(prefix, shape, nclasses, shard_size, NULL, &w));
  enum { GROUP = 32 }; /* images generated in parallel, then written in order */
  const size_t ib = nest_shape_size(shape), tabn = 2 * (size_t)shape.w + 2 * (size_t)shape.h;
  synth_class *cls = NULL;
  uint8_t *buf = NULL;
  float *tab = NULL;
  int32_t lab[GROUP];
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_malloc((void **)&cls, sizeof *cls * (size_t)nclasses, "classes"), done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&buf, ib * GROUP, "images"), done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&tab, sizeof(float) * tabn * GROUP, "tables"), done);
  for (int k = 0; k < nclasses; ++k) {
    nest_rng r;
    nest_rng_init(&r, seed, NEST_RNG_SYNTH, (uint64_t)k, 2);
    for (int c = 0; c < 4; ++c) {
      cls[k].colour[c] = 60.0f * nest_rng_uniform(&r) - 30.0f;
      cls[k].phase[c] = 6.2831853f * nest_rng_uniform(&r);
    }
    do {
      cls[k].fx = (int)nest_rng_below(&r, 9) - 4;
      cls[k].fy = (int)nest_rng_below(&r, 9) - 4;
    } while (cls[k].fx == 0 && cls[k].fy == 0);
  }
  for (int64_t i0 = 0; i0 < n && st == NEST_OK; i0 += GROUP) {
    const int g = (int)(n - i0 < GROUP ? n - i0 : GROUP);
#pragma omp parallel for schedule(static)
    for (int j = 0; j < g; ++j)
      synth_image(cls, nclasses, shape, seed, first + i0 + j, buf + (size_t)j * ib, &lab[j],
                  tab + (size_t)j * tabn);
    for (int j = 0; j < g && st == NEST_OK; ++j)
      st = nest_shard_writer_add(w, buf + (size_t)j * ib, lab[j]);
  }
  if (st == NEST_OK) st = nest_shard_writer_finish(w, NULL, nfiles);
done:
  free(cls);
  free(buf);
  free(tab);
  nest_shard_writer_destroy(&w);
  return st;
}

/* ---- reading --------------------------------------------------------------------------------- */

void nest_data_shards_free(struct nest_shards *s) {
  if (!s) return;
  for (int k = 0; k < s->nfiles; ++k) {
    if (s->f[k].fd >= 0) close(s->f[k].fd);
    free(s->f[k].path);
    free(s->f[k].off);
  }
  free(s->f);
  free(s->mean);
  free(s->std);
  free(s);
}

/* What one file says about itself, before it is compared with the first. */
typedef struct {
  int nclasses, index, count, has_index, has_count;
  nest_shape shape;
  int64_t n;
  float *mean, *std;
  char **names; /* file 0 only */
} shard_meta;

/* One shard file being opened: its HDF5 handles and what open_file learns step by step. */
typedef struct {
  const char *path;
  hid_t file, img, dcpl;
  hsize_t dims[4];     /* of /images: [n, C, H, W] */
  H5D_layout_t layout; /* of /images: contiguous or chunked one image per chunk */
  size_t ib;           /* bytes per image, C*H*W <= INT_MAX */
  int64_t size;        /* of the file, in bytes */
} shard_open;

static void shard_open_close(shard_open *o) {
  nest_h5_close(&o->dcpl, H5Pclose);
  nest_h5_close(&o->img, H5Dclose);
  nest_h5_close(&o->file, H5Fclose);
}

/* Root attributes: nest_format, shard_version, nclasses, shard_index, shard_count. */
static nest_status read_attrs(hid_t file, const char *path, const shard_meta *meta0,
                              shard_meta *m) {
  char fmt[64];
  format_of(file, path, fmt, sizeof fmt);
  if (strcmp(fmt, SHARD_FORMAT) != 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: not an image shard (root attribute nest_format is "
                    "'%s', expected '" SHARD_FORMAT "')", path, fmt);
  int v, present;
  NEST_CALL(opt_int(file, path, "shard_version", &v, &present));
  if (!present || v != SHARD_VERSION)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: shard_version %d not supported (this build reads %d)",
                    path, present ? v : -1, SHARD_VERSION);
  NEST_CALL(opt_int(file, path, "nclasses", &m->nclasses, &present));
  if (!present || m->nclasses < 1 || m->nclasses > SHARD_MAX_CLASSES)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: attribute nclasses missing or out of range [1, %d]",
                    path, SHARD_MAX_CLASSES);
  if (meta0 && m->nclasses != meta0->nclasses)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: nclasses = %d but the first shard has %d", path,
                    m->nclasses, meta0->nclasses);
  NEST_CALL(opt_int(file, path, "shard_index", &m->index, &m->has_index));
  NEST_CALL(opt_int(file, path, "shard_count", &m->count, &m->has_count));
  return NEST_OK;
}

/* /images: uint8 [n, C, H, W] with C*H*W <= INT_MAX and the first shard's shape, n images
 * that fit in the file, contiguous or chunked one image per chunk, no filter, no user block. */
static nest_status check_images(shard_open *o, const shard_meta *meta0, shard_meta *m) {
  const char *path = o->path;
  int rank;
  hid_t ty;
  NEST_CALL(nest_h5_dset_open(o->file, path, "", "images", 4, 4, &o->img, &rank, o->dims, &ty));
  const int u8 = nest_h5_is_u8(ty);
  H5Tclose(ty);
  if (!u8) return NEST_ERR(NEST_ERR_FORMAT, "%s: /images must be uint8", path);
  const hsize_t *dims = o->dims;
  for (int i = 1; i < 4; ++i)
    if (dims[i] < 1 || dims[i] > 65535)
      return NEST_ERR(NEST_ERR_FORMAT, "%s: /images has bad dimensions", path);
  /* Per-image sizes are ints downstream (the writer and the h5 reader have the same limit). */
  const uint64_t ib = (uint64_t)dims[1] * dims[2] * dims[3];
  if (ib > (uint64_t)INT_MAX)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: images of %llux%llux%llu = %llu bytes exceed the limit "
                    "of %d (INT_MAX) bytes per image", path, (unsigned long long)dims[1],
                    (unsigned long long)dims[2], (unsigned long long)dims[3],
                    (unsigned long long)ib, INT_MAX);
  m->shape = (nest_shape){(int)dims[1], (int)dims[2], (int)dims[3]};
  o->ib = (size_t)ib;
  if (meta0 && (m->shape.c != meta0->shape.c || m->shape.h != meta0->shape.h ||
                m->shape.w != meta0->shape.w))
    return NEST_ERR(NEST_ERR_FORMAT, "%s: images are %dx%dx%d but the first shard's are %dx%dx%d "
                    "(all shards of a set have one shape)", path, m->shape.c, m->shape.h,
                    m->shape.w, meta0->shape.c, meta0->shape.h, meta0->shape.w);
  /* Every image is ib bytes of the file (uncompressed): a count the file cannot hold is a lie,
   * refused before it sizes the label buffer. */
  if (dims[0] > (hsize_t)(o->size / (int64_t)ib))
    return NEST_ERR(NEST_ERR_FORMAT, "%s: /images claims %llu images of %zu bytes but the file "
                    "has only %lld bytes (truncated or corrupt?)", path,
                    (unsigned long long)dims[0], o->ib, (long long)o->size);
  m->n = (int64_t)dims[0];
  hid_t fcpl = H5Fget_create_plist(o->file);
  hsize_t ublock = 1;
  const int ub_ok = fcpl >= 0 && H5Pget_userblock(fcpl, &ublock) >= 0 && ublock == 0;
  if (fcpl >= 0) H5Pclose(fcpl);
  if (!ub_ok)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: files with a user block are not supported", path);
  o->dcpl = H5Dget_create_plist(o->img);
  o->layout = o->dcpl >= 0 ? H5Pget_layout(o->dcpl) : H5D_LAYOUT_ERROR;
  if (o->layout == H5D_CHUNKED) {
    hsize_t cd[4] = {0, 0, 0, 0};
    if (H5Pget_chunk(o->dcpl, 4, cd) != 4 || cd[0] != 1 || cd[1] != dims[1] ||
        cd[2] != dims[2] || cd[3] != dims[3])
      return NEST_ERR(NEST_ERR_FORMAT, "%s: /images must be chunked one image per chunk (1, %d, "
                      "%d, %d)", path, m->shape.c, m->shape.h, m->shape.w);
  } else if (o->layout != H5D_CONTIGUOUS) {
    return NEST_ERR(NEST_ERR_FORMAT, "%s: /images must be contiguous or chunked per image", path);
  }
  if (H5Pget_nfilters(o->dcpl) != 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: /images is compressed or filtered; image shards are "
                    "stored uncompressed (each image is read directly from the file)", path);
  return NEST_OK;
}

/* Room for `need` labels in *labels (capacity *cap, doubled): an error, not a wrapped size,
 * when the count cannot be allocated at all. */
static nest_status grow_labels(const char *path, int64_t need, int32_t **labels, int64_t *cap) {
  if (need <= *cap) return NEST_OK;
  int64_t c = *cap ? *cap : 1024;
  while (c < need) {
    if (c > INT64_MAX / 2 || (uint64_t)c * 2 > SIZE_MAX / sizeof(int32_t))
      return NEST_ERR(NEST_ERR_FORMAT, "%s: %lld labels in all are more than this machine can "
                      "address", path, (long long)need);
    c *= 2;
  }
  int32_t *p = realloc(*labels, sizeof(int32_t) * (size_t)c);
  if (!p)
    return NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory for %lld labels", path, (long long)c);
  *labels = p, *cap = c;
  return NEST_OK;
}

/* /labels: m->n integers in [0, nclasses), appended at (*labels)[*total]. */
static nest_status read_labels(hid_t file, const char *path, const shard_meta *m,
                               int32_t **labels, int64_t *cap, int64_t total) {
  hid_t lab, ty;
  int rank;
  hsize_t ld[4];
  NEST_CALL(nest_h5_dset_open(file, path, "", "labels", 1, 1, &lab, &rank, ld, &ty));
  const int lint = H5Tget_class(ty) == H5T_INTEGER;
  H5Tclose(ty);
  nest_status st = NEST_OK;
  if (!lint || ld[0] != (hsize_t)m->n)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /labels must be %lld integers (one per image), has %llu",
                  path, (long long)m->n, (unsigned long long)ld[0]);
  if (st == NEST_OK) st = grow_labels(path, total + m->n, labels, cap);
  if (st == NEST_OK && m->n > 0 &&
      H5Dread(lab, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, *labels + total) < 0)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read /labels (corrupt or truncated file?)", path);
  H5Dclose(lab);
  for (int64_t i = 0; st == NEST_OK && i < m->n; ++i) {
    const int32_t l = (*labels)[total + i];
    if (l < 0 || l >= m->nclasses)
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: /labels[%lld] = %d out of range [0, %d) (nclasses)",
                    path, (long long)i, l, m->nclasses);
  }
  return st;
}

/* /mean, /std: per channel, identical in every shard of a set (bit for bit); the first file's
 * optional /class_names. */
static nest_status read_stats(hid_t file, const char *path, const shard_meta *meta0,
                              shard_meta *m) {
  const int C = m->shape.c;
  NEST_CALL(nest_h5_read_floats(file, path, "mean", 0, C, 0, &m->mean));
  NEST_CALL(nest_h5_read_floats(file, path, "std", 0, C, 1, &m->std));
  if (meta0 && (memcmp(m->mean, meta0->mean, sizeof(float) * (size_t)C) != 0 ||
                memcmp(m->std, meta0->std, sizeof(float) * (size_t)C) != 0))
    return NEST_ERR(NEST_ERR_FORMAT, "%s: /mean or /std differs from the first shard's (shards "
                    "of different sets?)", path);
  if (!meta0 && H5Lexists(file, "class_names", H5P_DEFAULT) > 0)
    NEST_CALL(nest_h5_read_strs(file, path, "class_names", 0, m->nclasses, &m->names));
  return NEST_OK;
}

/* Where each image lies in the file (f->base + i * f->stride, or f->off[i]), all inside it;
 * opens f->fd, the descriptor later reads use. */
static nest_status locate_images(const shard_open *o, int64_t n, shard_file *f) {
  const char *path = o->path;
  f->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (f->fd < 0)
    return NEST_ERR(NEST_ERR_IO, "%s: cannot open: %s%s", path, strerror(errno),
                    errno == EMFILE ? " (too many shard files open at once: raise ulimit -n or "
                                      "write larger shards with --shard-size)" : "");
  struct stat sb;
  if (fstat(f->fd, &sb) != 0)
    return NEST_ERR(NEST_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
  const int64_t ib = (int64_t)o->ib;
  f->n = n;
  f->stride = ib;
  if (o->layout == H5D_CONTIGUOUS) {
    haddr_t a = H5Dget_offset(o->img);
    if (n > 0 && a == HADDR_UNDEF)
      return NEST_ERR(NEST_ERR_FORMAT, "%s: /images has no data in the file", path);
    f->base = (int64_t)a;
  } else {
    NEST_CALL(nest_malloc((void **)&f->off, sizeof(int64_t) * (size_t)(n + 1), "offsets"));
    int arith = 1;
    for (int64_t i = 0; i < n; ++i) {
      hsize_t coord[4] = {(hsize_t)i, 0, 0, 0}, size = 0;
      unsigned mask = 0;
      haddr_t a = HADDR_UNDEF;
      if (H5Dget_chunk_info_by_coord(o->img, coord, &mask, &a, &size) < 0 || a == HADDR_UNDEF ||
          size != o->ib)
        return NEST_ERR(NEST_ERR_FORMAT, "%s: image %lld was never written (or has a bad chunk)",
                        path, (long long)i);
      f->off[i] = (int64_t)a;
      if (i > 0 && f->off[i] != f->off[0] + i * ib) arith = 0;
    }
    f->base = n > 0 ? f->off[0] : 0;
    if (arith) { /* the usual case: images back to back, no table needed */
      free(f->off);
      f->off = NULL;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t off = f->off ? f->off[i] : f->base + i * f->stride;
    if (off < 0 || off + ib > (int64_t)sb.st_size)
      return NEST_ERR(NEST_ERR_FORMAT, "%s: truncated: image %lld ends at byte %lld, the file has "
                      "%lld", path, (long long)i, (long long)(off + ib), (long long)sb.st_size);
  }
  return NEST_OK;
}

/* The descriptor reads what HDF5 reads: checked on the first image of the set. */
static nest_status check_first_image(const shard_open *o, const shard_file *f) {
  const size_t ib = o->ib;
  uint8_t *a = NULL;
  NEST_CALL(nest_malloc((void **)&a, 2 * ib, "image"));
  nest_status st = nest_h5_read_rows(o->img, o->path, "/images", 4, o->dims, 0, 1,
                                     H5T_NATIVE_UINT8, a);
  const ssize_t got = st == NEST_OK ? pread(f->fd, a + ib, ib, (off_t)f->base) : -1;
  if (st == NEST_OK && (got != (ssize_t)ib || memcmp(a, a + ib, ib) != 0))
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot locate the images in the file", o->path);
  free(a);
  return st;
}

/* Validate one shard file, read its labels (appended at labels + f->first) and resolve its
 * images' file offsets. meta0: the first file's meta (NULL for the first file itself). */
static nest_status open_file(const char *path, const shard_meta *meta0, shard_file *f,
                             shard_meta *m, int32_t **labels, int64_t *labels_cap,
                             int64_t *total) {
  memset(m, 0, sizeof *m);
  f->fd = -1;
  shard_open o = {.path = path, .file = -1, .img = -1, .dcpl = -1};
  NEST_CALL(nest_h5_open_read(path, "an image shard", &o.file));
  nest_status st = NEST_OK;
  struct stat sb;
  if (stat(path, &sb) != 0) {
    st = NEST_ERR(NEST_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    goto done;
  }
  o.size = (int64_t)sb.st_size;
  NEST_CALL_GOTO(st, read_attrs(o.file, path, meta0, m), done);
  NEST_CALL_GOTO(st, check_images(&o, meta0, m), done);
  NEST_CALL_GOTO(st, read_labels(o.file, path, m, labels, labels_cap, *total), done);
  NEST_CALL_GOTO(st, read_stats(o.file, path, meta0, m), done);
  NEST_CALL_GOTO(st, locate_images(&o, m->n, f), done);
  if (!meta0 && m->n > 0) NEST_CALL_GOTO(st, check_first_image(&o, f), done);
  f->first = *total;
  *total += m->n;
  NEST_CALL_GOTO(st, nest_data_strdup(path, &f->path), done);
done:
  shard_open_close(&o);
  return st;
}

static void meta_free(shard_meta *m) {
  free(m->mean);
  free(m->std);
  m->mean = m->std = NULL;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Many shards: one descriptor each, kept open. Raise the soft limit towards the hard one when
 * the set needs more than the soft limit leaves (a process-wide setting, but only upwards). */
static void ensure_fd_limit(int nfiles) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  const rlim_t want = (rlim_t)nfiles + 256;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* The files a glob pattern names, sorted in byte order whatever the locale (globfree g). */
static nest_status expand_pattern(const char *pattern, glob_t *g) {
  const int r = glob(pattern, GLOB_ERR, NULL, g);
  if (r == GLOB_NOMATCH || (r == 0 && g->gl_pathc == 0))
    return NEST_ERR(NEST_ERR_IO, "%s: no file matches the pattern", pattern);
  if (r != 0)
    return NEST_ERR(NEST_ERR_IO, "%s: cannot expand the pattern (unreadable directory?)", pattern);
  if (g->gl_pathc > INT_MAX / 2) return NEST_ERR(NEST_ERR_IO, "%s: too many files", pattern);
  qsort(g->gl_pathv, g->gl_pathc, sizeof(char *), cmp_str);
  return NEST_OK;
}

/* A pattern must name a whole set, in order: file k of nfiles is shard k of a set of nfiles. */
static nest_status check_member(const char *pattern, const char *path, const shard_meta *m, int k,
                                int nfiles) {
  if (!m->has_index || !m->has_count)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: shard_index / shard_count missing (an unfinished "
                    "shard?)", path);
  if (m->count != nfiles)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: the set has %d shards (shard_count of %s) but the "
                    "pattern matches %d file%s%s", pattern, m->count, path, nfiles,
                    nfiles == 1 ? "" : "s",
                    m->count > nfiles ? ": a shard is missing" : ": files of another set match too");
  if (m->index != k)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: shard_index %d, expected %d: shard %d of the set is "
                    "missing or the pattern matches files of another set", path, m->index, k, k);
  return NEST_OK;
}

/* The fingerprint of a set: base names, sizes, counts; the stored shape. */
static uint64_t set_fingerprint(const struct nest_shards *s) {
  uint64_t h = NEST_FNV1A_INIT;
  h = nest_hash_fnv1a(&s->stored, sizeof s->stored, h);
  for (int k = 0; k < s->nfiles; ++k) {
    const char *b = strrchr(s->f[k].path, '/');
    b = b ? b + 1 : s->f[k].path;
    struct stat sb;
    const int64_t size = fstat(s->f[k].fd, &sb) == 0 ? (int64_t)sb.st_size : -1;
    h = nest_hash_fnv1a(b, strlen(b) + 1, h);
    h = nest_hash_fnv1a(&size, sizeof size, h);
    h = nest_hash_fnv1a(&s->f[k].n, sizeof s->f[k].n, h);
  }
  return h ? h : 1;
}

nest_status nest_data_shards_open(const char *pattern, int64_t max_samples, nest_dataset **out) {
  nest_h5_quiet();
  *out = NULL;
  const int is_glob = strpbrk(pattern, "*?") != NULL;
  glob_t g;
  memset(&g, 0, sizeof g);
  char *one[1] = {(char *)pattern};
  char **paths = one;
  int nfiles = 1;
  if (is_glob) {
    nest_status st = expand_pattern(pattern, &g);
    if (st != NEST_OK) {
      globfree(&g);
      nest_error_trace(__FILE__, __LINE__);
      return st;
    }
    nfiles = (int)g.gl_pathc;
    paths = g.gl_pathv;
  }
  ensure_fd_limit(nfiles);

  struct nest_shards *s = NULL;
  nest_dataset *ds = NULL;
  int32_t *labels = NULL;
  int64_t cap = 0, total = 0;
  shard_meta m0, m;
  memset(&m0, 0, sizeof m0);
  memset(&m, 0, sizeof m);
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_calloc((void **)&s, 1, sizeof *s, "shards"), done);
  NEST_CALL_GOTO(st, nest_calloc((void **)&s->f, (size_t)nfiles, sizeof *s->f, "shard files"), done);
  for (int k = 0; k < nfiles; ++k) s->f[k].fd = -1;
  for (int k = 0; k < nfiles; ++k) {
    shard_meta *mk = k == 0 ? &m0 : &m;
    NEST_CALL_GOTO(st, open_file(paths[k], k ? &m0 : NULL, &s->f[k], mk, &labels, &cap, &total), done);
    s->nfiles = k + 1;
    if (is_glob) NEST_CALL_GOTO(st, check_member(pattern, paths[k], mk, k, nfiles), done);
    if (k > 0) meta_free(&m);
    if (max_samples > 0 && total >= max_samples) { /* enough: the rest is not opened */
      s->f[k].n -= total - max_samples;
      total = max_samples;
      break;
    }
  }
  if (total < 1) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: the shards hold no images", pattern);
    goto done;
  }
  s->stored = m0.shape;
  s->image_bytes = nest_shape_size(m0.shape);
  s->mean = m0.mean, s->std = m0.std;
  m0.mean = m0.std = NULL;
  NEST_CALL_GOTO(st, nest_data_new(pattern, total, s->stored, 0, &ds), done);
  memcpy(ds->labels, labels, sizeof(int32_t) * (size_t)total);
  ds->nclasses = m0.nclasses;
  ds->u8_scale = 1.0f / 255.0f;
  ds->class_names = m0.names;
  m0.names = NULL;
  ds->source_hash = set_fingerprint(s);
  /* The stored statistics as the dataset's normalisation (after u8_scale, like gather's). */
  ds->norm.nch = s->stored.c;
  NEST_CALL_GOTO(st, nest_malloc((void **)&ds->norm.mean, sizeof(float) * (size_t)s->stored.c, "norm"), done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&ds->norm.std, sizeof(float) * (size_t)s->stored.c, "norm"), done);
  for (int c = 0; c < s->stored.c; ++c) {
    ds->norm.mean[c] = s->mean[c] / 255.0f;
    ds->norm.std[c] = s->std[c] / 255.0f;
  }
  ds->shards = s;
  s = NULL;
  *out = ds;
  ds = NULL;
done:
  if (m0.names) nest_data_free_names(m0.names, m0.nclasses);
  meta_free(&m0);
  meta_free(&m);
  free(labels);
  nest_data_shards_free(s);
  nest_dataset_destroy(&ds);
  if (is_glob) globfree(&g);
  return st;
}

/* ---- per-image reads (any thread) ------------------------------------------------------------- */

nest_status nest_dataset_read_u8(const nest_dataset *ds, int64_t id, uint8_t *buf) {
  struct nest_shards *s = ds->shards;
  NEST_ASSERT(s && id >= 0 && id < ds->n);
  int lo = 0, hi = s->nfiles - 1; /* the last file whose first id <= id */
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (s->f[mid].first <= id) lo = mid;
    else hi = mid - 1;
  }
  const shard_file *f = &s->f[lo];
  const int64_t i = id - f->first;
  const int64_t off = f->off ? f->off[i] : f->base + i * f->stride;
  size_t done = 0;
  while (done < s->image_bytes) {
    const ssize_t r = pread(f->fd, buf + done, s->image_bytes - done, (off_t)(off + (int64_t)done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0)
      return NEST_ERR(NEST_ERR_IO, "%s: cannot read image %lld: %s", f->path, (long long)i,
                      strerror(errno));
    if (r == 0)
      return NEST_ERR(NEST_ERR_IO, "%s: truncated since it was opened: image %lld is cut short",
                      f->path, (long long)i);
    done += (size_t)r;
  }
  atomic_fetch_add_explicit(&s->images_read, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->bytes_read, (int64_t)s->image_bytes, memory_order_relaxed);
  if (s->track) __atomic_fetch_add(&s->track[id], 1, __ATOMIC_RELAXED);
  return NEST_OK;
}

nest_shape nest_dataset_stored_shape(const nest_dataset *ds) {
  return ds->shards ? ds->shards->stored : ds->shape;
}

nest_status nest_dataset_set_crop(nest_dataset *ds, int crop) {
  if (crop == 0) {
    if (ds->shards) ds->shape = ds->shards->stored;
    return NEST_OK;
  }
  if (!ds->shards)
    return NEST_ERR(NEST_ERR_CONFIG, "augment.crop = %d: %s is not a set of image shards (crop "
                    "needs data written by nest_prep --images or --synthetic-images)", crop,
                    ds->path);
  const nest_shape s = ds->shards->stored;
  if (crop < 1 || crop > s.h || crop > s.w)
    return NEST_ERR(NEST_ERR_CONFIG, "augment.crop = %d does not fit the %dx%d images of %s", crop,
                    s.h, s.w, ds->path);
  ds->shape = (nest_shape){s.c, crop, crop};
  return NEST_OK;
}

nest_status nest_dataset_train_norm(const nest_dataset *ds, const int64_t *idx, int64_t n,
                                    nest_norm *out) {
  if (!ds->shards) return nest_norm_compute(ds, idx, n, out);
  memset(out, 0, sizeof *out);
  const int C = ds->shards->stored.c;
  NEST_CALL(nest_malloc((void **)&out->mean, sizeof(float) * (size_t)C, "norm mean"));
  nest_status st = nest_malloc((void **)&out->std, sizeof(float) * (size_t)C, "norm std");
  if (st != NEST_OK) {
    nest_norm_free(out);
    return st;
  }
  out->nch = C;
  for (int c = 0; c < C; ++c) {
    out->mean[c] = ds->shards->mean[c] / 255.0f;
    out->std[c] = ds->shards->std[c] / 255.0f;
  }
  return NEST_OK;
}

void nest_dataset_io_counts(const nest_dataset *ds, nest_io_counts *out) {
  out->images = out->bytes = 0;
  if (!ds->shards) return;
  out->images = atomic_load(&ds->shards->images_read);
  out->bytes = atomic_load(&ds->shards->bytes_read);
}

void nest_dataset_track_reads(nest_dataset *ds, int32_t *counts) {
  if (ds->shards) ds->shards->track = counts;
}
