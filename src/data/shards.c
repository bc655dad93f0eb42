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
 * with pread() on descriptors of our own, which any thread may call at any time. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <hdf5.h>
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

static herr_t put_str_attr(hid_t loc, const char *name, const char *v) {
  hid_t ty = H5Tcopy(H5T_C_S1);
  herr_t e = ty >= 0 ? H5Tset_size(ty, strlen(v)) : -1;
  hid_t sp = e >= 0 ? H5Screate(H5S_SCALAR) : -1;
  hid_t a = sp >= 0 ? H5Acreate2(loc, name, ty, sp, H5P_DEFAULT, H5P_DEFAULT) : -1;
  e = a >= 0 ? H5Awrite(a, ty, v) : -1;
  if (a >= 0) H5Aclose(a);
  if (sp >= 0) H5Sclose(sp);
  if (ty >= 0) H5Tclose(ty);
  return e;
}

/* A small contiguous 1-D dataset. */
static herr_t put_1d(hid_t loc, const char *name, hid_t ftype, hid_t mtype, hsize_t n,
                     const void *buf) {
  hid_t sp = H5Screate_simple(1, &n, NULL);
  hid_t d = sp >= 0 ? H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
  herr_t e = d >= 0 ? H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) : -1;
  if (d >= 0 && H5Dclose(d) < 0) e = -1;
  if (sp >= 0) H5Sclose(sp);
  return e;
}

static herr_t put_names(hid_t loc, char *const *names, int n) {
  hsize_t d = (hsize_t)n;
  hid_t ty = H5Tcopy(H5T_C_S1);
  herr_t e = ty >= 0 ? H5Tset_size(ty, H5T_VARIABLE) : -1;
  if (e >= 0) e = H5Tset_cset(ty, H5T_CSET_UTF8);
  hid_t sp = e >= 0 ? H5Screate_simple(1, &d, NULL) : -1;
  hid_t ds = sp >= 0 ? H5Dcreate2(loc, "class_names", ty, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
  e = ds >= 0 ? H5Dwrite(ds, ty, H5S_ALL, H5S_ALL, H5P_DEFAULT, names) : -1;
  if (ds >= 0 && H5Dclose(ds) < 0) e = -1;
  if (sp >= 0) H5Sclose(sp);
  if (ty >= 0) H5Tclose(ty);
  return e;
}

/* Root attribute `name` as an int; *present = 0 when it does not exist. */
static nest_status get_int_attr(hid_t file, const char *path, const char *name, int *v,
                                int *present) {
  *present = H5Aexists(file, name) > 0;
  if (!*present) return NEST_OK;
  hid_t a = H5Aopen(file, name, H5P_DEFAULT);
  hid_t sp = a >= 0 ? H5Aget_space(a) : -1;
  hid_t ty = a >= 0 ? H5Aget_type(a) : -1;
  int ok = sp >= 0 && ty >= 0 && H5Sget_simple_extent_npoints(sp) == 1 &&
           H5Tget_class(ty) == H5T_INTEGER && H5Aread(a, H5T_NATIVE_INT, v) >= 0;
  if (ty >= 0) H5Tclose(ty);
  if (sp >= 0) H5Sclose(sp);
  if (a >= 0) H5Aclose(a);
  if (!ok) return NEST_ERR(NEST_ERR_FORMAT, "%s: attribute '%s' must be one integer", path, name);
  return NEST_OK;
}

/* Root string attribute `name` into out (cap bytes); "" when absent or not a string. */
static void get_str_attr(hid_t file, const char *name, char *out, size_t cap) {
  out[0] = '\0';
  if (H5Aexists(file, name) <= 0) return;
  hid_t a = H5Aopen(file, name, H5P_DEFAULT);
  hid_t ty = a >= 0 ? H5Aget_type(a) : -1;
  if (ty >= 0 && H5Tget_class(ty) == H5T_STRING) {
    hid_t mt = H5Tcopy(H5T_C_S1);
    if (H5Tis_variable_str(ty) > 0) {
      char *vl = NULL;
      H5Tset_size(mt, H5T_VARIABLE);
      if (H5Aread(a, mt, &vl) >= 0 && vl) {
        snprintf(out, cap, "%s", vl);
        H5free_memory(vl);
      }
    } else {
      size_t sz = H5Tget_size(ty);
      char buf[256] = {0};
      if (sz < sizeof buf) {
        H5Tset_size(mt, sz);
        if (H5Aread(a, mt, buf) >= 0) snprintf(out, cap, "%.*s", (int)sz, buf);
      }
    }
    H5Tclose(mt);
  }
  if (ty >= 0) H5Tclose(ty);
  if (a >= 0) H5Aclose(a);
}

int nest_data_is_shard(const char *path) {
  nest_h5_quiet();
  if (H5Fis_hdf5(path) <= 0) return 0;
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return 0;
  char fmt[64];
  get_str_attr(f, "nest_format", fmt, sizeof fmt);
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
  NEST_CALL(nest_atomic_begin(path, tmp, sizeof tmp));
  nest_status st = nest_data_strdup(tmp, &w->tmp[w->ntmp]);
  if (st == NEST_OK) {
    st = nest_data_strdup(path, &w->final[w->ntmp]);
    if (st != NEST_OK) free(w->tmp[w->ntmp]);
  }
  if (st != NEST_OK) {
    nest_atomic_abort(tmp);
    return st;
  }
  w->ntmp++;
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl >= 0) H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
  w->file = fapl >= 0 ? H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl) : -1;
  if (fapl >= 0) H5Pclose(fapl);
  if (w->file < 0) return NEST_ERR(NEST_ERR_IO, "%s: cannot create HDF5 file", tmp);
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
    e = put_1d(w->file, "labels", H5T_STD_I32LE, H5T_NATIVE_INT32, (hsize_t)w->in_shard, w->labels);
  if (e >= 0) e = put_str_attr(w->file, "nest_format", SHARD_FORMAT);
  if (e >= 0) e = nest_h5_put_int_attr(w->file, "shard_version", SHARD_VERSION);
  if (e >= 0) e = nest_h5_put_int_attr(w->file, "nclasses", w->nclasses);
  if (e >= 0 && w->names) e = put_names(w->file, w->names, w->nclasses);
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
    if (e >= 0) e = put_1d(f, "mean", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, (hsize_t)C, m);
    if (e >= 0) e = put_1d(f, "std", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, (hsize_t)C, s);
    if (e >= 0) e = nest_h5_put_int_attr(f, "shard_index", k);
    if (e >= 0) e = nest_h5_put_int_attr(f, "shard_count", w->ntmp);
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

/* A small float dataset of exactly len finite elements (std: > 0). */
static nest_status read_floats(hid_t file, const char *path, const char *name, int len,
                               int positive, float **out) {
  *out = NULL;
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: missing dataset /%s", path, name);
  hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
  hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
  hssize_t np = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
  if (sp >= 0) H5Sclose(sp);
  nest_status st = NEST_OK;
  if (np != len) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /%s has %lld values, expected %d (one per channel)", path,
                  name, (long long)np, len);
  } else {
    st = nest_malloc((void **)out, sizeof(float) * (size_t)len, name);
    if (st == NEST_OK && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0)
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read /%s", path, name);
    for (int c = 0; st == NEST_OK && c < len; ++c)
      if (!isfinite((*out)[c]) || (positive && !((*out)[c] > 0)))
        st = NEST_ERR(NEST_ERR_FORMAT, "%s: /%s[%d] = %g is invalid", path, name, c,
                      (double)(*out)[c]);
  }
  if (d >= 0) H5Dclose(d);
  if (st != NEST_OK) {
    free(*out);
    *out = NULL;
  }
  return st;
}

static nest_status read_names(hid_t file, const char *path, int n, char ***out) {
  *out = NULL;
  if (H5Lexists(file, "class_names", H5P_DEFAULT) <= 0) return NEST_OK;
  hid_t d = H5Dopen2(file, "class_names", H5P_DEFAULT);
  hid_t sp = d >= 0 ? H5Dget_space(d) : -1, ty = d >= 0 ? H5Dget_type(d) : -1;
  hssize_t np = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
  nest_status st = NEST_OK;
  char **vl = NULL, **names = NULL;
  if (np != n || ty < 0 || H5Tget_class(ty) != H5T_STRING || H5Tis_variable_str(ty) <= 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /class_names must be %d variable-length strings", path, n);
    goto done;
  }
  NEST_CALL_GOTO(st, nest_calloc((void **)&vl, (size_t)n, sizeof(char *), "class names"), done);
  NEST_CALL_GOTO(st, nest_calloc((void **)&names, (size_t)n, sizeof(char *), "class names"), done);
  hid_t mt = H5Tcopy(H5T_C_S1);
  H5Tset_size(mt, H5T_VARIABLE);
  H5Tset_cset(mt, H5Tget_cset(ty));
  herr_t e = H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, vl);
  H5Tclose(mt);
  if (e < 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read /class_names", path);
    goto done;
  }
  for (int k = 0; k < n && st == NEST_OK; ++k) st = nest_data_strdup(vl[k] ? vl[k] : "", &names[k]);
  if (st == NEST_OK) *out = names, names = NULL;
done:
  if (vl) {
    for (int k = 0; k < n; ++k)
      if (vl[k]) H5free_memory(vl[k]);
    free(vl);
  }
  nest_data_free_names(names, n);
  if (ty >= 0) H5Tclose(ty);
  if (sp >= 0) H5Sclose(sp);
  if (d >= 0) H5Dclose(d);
  return st;
}

/* Validate one shard file, read its labels (appended at labels + f->first) and resolve its
 * images' file offsets. meta0: the first file's meta (NULL for the first file itself). */
static nest_status open_file(const char *path, const shard_meta *meta0, shard_file *f,
                             shard_meta *m, int32_t **labels, int64_t *labels_cap,
                             int64_t *total) {
  hid_t file = -1, img = -1, lab = -1, sp = -1, ty = -1, dcpl = -1, fcpl = -1;
  nest_status st = NEST_OK;
  memset(m, 0, sizeof *m);
  f->fd = -1;
  if (H5Fis_hdf5(path) <= 0) {
    struct stat sb;
    if (stat(path, &sb) != 0)
      return NEST_ERR(NEST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    return NEST_ERR(NEST_ERR_FORMAT, "%s: not an HDF5 file (an image shard was expected)", path);
  }
  file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0) return NEST_ERR(NEST_ERR_IO, "%s: cannot open HDF5 file", path);
  char fmt[64];
  get_str_attr(file, "nest_format", fmt, sizeof fmt);
  if (strcmp(fmt, SHARD_FORMAT) != 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: not an image shard (root attribute nest_format is '%s', "
                  "expected '" SHARD_FORMAT "')", path, fmt);
    goto done;
  }
  int v, present;
  NEST_CALL_GOTO(st, get_int_attr(file, path, "shard_version", &v, &present), done);
  if (!present || v != SHARD_VERSION) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: shard_version %d not supported (this build reads %d)",
                  path, present ? v : -1, SHARD_VERSION);
    goto done;
  }
  NEST_CALL_GOTO(st, get_int_attr(file, path, "nclasses", &m->nclasses, &present), done);
  if (!present || m->nclasses < 1 || m->nclasses > SHARD_MAX_CLASSES) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: attribute nclasses missing or out of range [1, %d]", path,
                  SHARD_MAX_CLASSES);
    goto done;
  }
  NEST_CALL_GOTO(st, get_int_attr(file, path, "shard_index", &m->index, &m->has_index), done);
  NEST_CALL_GOTO(st, get_int_attr(file, path, "shard_count", &m->count, &m->has_count), done);

  /* /images: uint8 [n, C, H, W], contiguous or chunked one image per chunk, no filter. */
  if (H5Lexists(file, "images", H5P_DEFAULT) <= 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: missing dataset /images", path);
    goto done;
  }
  img = H5Dopen2(file, "images", H5P_DEFAULT);
  sp = img >= 0 ? H5Dget_space(img) : -1;
  ty = img >= 0 ? H5Dget_type(img) : -1;
  hsize_t dims[4] = {0, 0, 0, 0};
  if (sp < 0 || ty < 0 || H5Sget_simple_extent_ndims(sp) != 4 ||
      H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /images must have rank 4 [n, C, H, W]", path);
    goto done;
  }
  if (H5Tget_class(ty) != H5T_INTEGER || H5Tget_size(ty) != 1 || H5Tget_sign(ty) != H5T_SGN_NONE) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /images must be uint8", path);
    goto done;
  }
  for (int i = 1; i < 4; ++i)
    if (dims[i] < 1 || dims[i] > 65535) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: /images has bad dimensions", path);
      goto done;
    }
  m->shape = (nest_shape){(int)dims[1], (int)dims[2], (int)dims[3]};
  m->n = (int64_t)dims[0];
  const size_t ib = nest_shape_size(m->shape);
  if (meta0 && (m->shape.c != meta0->shape.c || m->shape.h != meta0->shape.h ||
                m->shape.w != meta0->shape.w)) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: images are %dx%dx%d but the first shard's are %dx%dx%d "
                  "(all shards of a set have one shape)", path, m->shape.c, m->shape.h,
                  m->shape.w, meta0->shape.c, meta0->shape.h, meta0->shape.w);
    goto done;
  }
  if (meta0 && m->nclasses != meta0->nclasses) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: nclasses = %d but the first shard has %d", path,
                  m->nclasses, meta0->nclasses);
    goto done;
  }
  fcpl = H5Fget_create_plist(file);
  hsize_t ublock = 1;
  if (fcpl < 0 || H5Pget_userblock(fcpl, &ublock) < 0 || ublock != 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: files with a user block are not supported", path);
    goto done;
  }
  dcpl = H5Dget_create_plist(img);
  const H5D_layout_t layout = dcpl >= 0 ? H5Pget_layout(dcpl) : H5D_LAYOUT_ERROR;
  if (layout == H5D_CHUNKED) {
    hsize_t cd[4] = {0, 0, 0, 0};
    if (H5Pget_chunk(dcpl, 4, cd) != 4 || cd[0] != 1 || cd[1] != dims[1] || cd[2] != dims[2] ||
        cd[3] != dims[3]) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: /images must be chunked one image per chunk (1, %d, %d, "
                    "%d)", path, m->shape.c, m->shape.h, m->shape.w);
      goto done;
    }
  } else if (layout != H5D_CONTIGUOUS) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /images must be contiguous or chunked per image", path);
    goto done;
  }
  if (H5Pget_nfilters(dcpl) != 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /images is compressed or filtered; image shards are stored "
                  "uncompressed (each image is read directly from the file)", path);
    goto done;
  }

  /* /labels */
  if (H5Lexists(file, "labels", H5P_DEFAULT) <= 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: missing dataset /labels", path);
    goto done;
  }
  lab = H5Dopen2(file, "labels", H5P_DEFAULT);
  hid_t lsp = lab >= 0 ? H5Dget_space(lab) : -1, lty = lab >= 0 ? H5Dget_type(lab) : -1;
  hssize_t ln = lsp >= 0 && H5Sget_simple_extent_ndims(lsp) == 1 ? H5Sget_simple_extent_npoints(lsp) : -1;
  const int lint = lty >= 0 && H5Tget_class(lty) == H5T_INTEGER;
  if (lsp >= 0) H5Sclose(lsp);
  if (lty >= 0) H5Tclose(lty);
  if (!lint || ln != (hssize_t)m->n) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /labels must be %lld integers (one per image), has %lld",
                  path, (long long)m->n, (long long)ln);
    goto done;
  }
  if (*total + m->n > *labels_cap) {
    int64_t cap = *labels_cap ? *labels_cap : 1024;
    while (cap < *total + m->n) cap *= 2;
    int32_t *p = realloc(*labels, sizeof(int32_t) * (size_t)cap);
    if (!p) {
      st = NEST_ERR(NEST_ERR_NOMEM, "out of memory (%lld labels)", (long long)cap);
      goto done;
    }
    *labels = p, *labels_cap = cap;
  }
  if (m->n > 0 && H5Dread(lab, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, *labels + *total) < 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read /labels (corrupt or truncated file?)", path);
    goto done;
  }
  for (int64_t i = 0; i < m->n; ++i) {
    const int32_t l = (*labels)[*total + i];
    if (l < 0 || l >= m->nclasses) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: /labels[%lld] = %d out of range [0, %d) (nclasses)",
                    path, (long long)i, l, m->nclasses);
      goto done;
    }
  }

  /* /mean, /std: per channel, identical in every shard of a set (bit for bit). */
  NEST_CALL_GOTO(st, read_floats(file, path, "mean", m->shape.c, 0, &m->mean), done);
  NEST_CALL_GOTO(st, read_floats(file, path, "std", m->shape.c, 1, &m->std), done);
  if (meta0 && (memcmp(m->mean, meta0->mean, sizeof(float) * (size_t)m->shape.c) != 0 ||
                memcmp(m->std, meta0->std, sizeof(float) * (size_t)m->shape.c) != 0)) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /mean or /std differs from the first shard's (shards of "
                  "different sets?)", path);
    goto done;
  }
  if (!meta0) NEST_CALL_GOTO(st, read_names(file, path, m->nclasses, &m->names), done);

  /* Where each image lies in the file. */
  struct stat sb;
  f->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (f->fd < 0) {
    st = NEST_ERR(NEST_ERR_IO, "%s: cannot open: %s%s", path, strerror(errno),
                  errno == EMFILE ? " (too many shard files open at once: raise ulimit -n or "
                                    "write larger shards with --shard-size)" : "");
    goto done;
  }
  if (fstat(f->fd, &sb) != 0) {
    st = NEST_ERR(NEST_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    goto done;
  }
  f->n = m->n;
  f->stride = (int64_t)ib;
  if (layout == H5D_CONTIGUOUS) {
    haddr_t a = H5Dget_offset(img);
    if (m->n > 0 && a == HADDR_UNDEF) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: /images has no data in the file", path);
      goto done;
    }
    f->base = (int64_t)a;
  } else {
    NEST_CALL_GOTO(st, nest_malloc((void **)&f->off, sizeof(int64_t) * (size_t)(m->n + 1), "offsets"), done);
    int arith = 1;
    for (int64_t i = 0; i < m->n; ++i) {
      hsize_t coord[4] = {(hsize_t)i, 0, 0, 0}, size = 0;
      unsigned mask = 0;
      haddr_t a = HADDR_UNDEF;
      if (H5Dget_chunk_info_by_coord(img, coord, &mask, &a, &size) < 0 || a == HADDR_UNDEF ||
          size != ib) {
        st = NEST_ERR(NEST_ERR_FORMAT, "%s: image %lld was never written (or has a bad chunk)",
                      path, (long long)i);
        goto done;
      }
      f->off[i] = (int64_t)a;
      if (i > 0 && f->off[i] != f->off[0] + i * (int64_t)ib) arith = 0;
    }
    f->base = m->n > 0 ? f->off[0] : 0;
    if (arith) { /* the usual case: images back to back, no table needed */
      free(f->off);
      f->off = NULL;
    }
  }
  for (int64_t i = 0; i < m->n; ++i) {
    const int64_t o = f->off ? f->off[i] : f->base + i * f->stride;
    if (o < 0 || o + (int64_t)ib > (int64_t)sb.st_size) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: truncated: image %lld ends at byte %lld, the file has %lld",
                    path, (long long)i, (long long)(o + (int64_t)ib), (long long)sb.st_size);
      goto done;
    }
  }
  /* The descriptor reads what HDF5 reads: check on the first image of the file. */
  if (!meta0 && m->n > 0) {
    uint8_t *a = NULL, *b = NULL;
    NEST_CALL_GOTO(st, nest_malloc((void **)&a, 2 * ib, "image"), done);
    b = a + ib;
    hsize_t start[4] = {0, 0, 0, 0}, cnt[4] = {1, dims[1], dims[2], dims[3]};
    hid_t ms = H5Screate_simple(4, cnt, NULL), fs = H5Dget_space(img);
    herr_t e = ms >= 0 && fs >= 0 ? H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL) : -1;
    if (e >= 0) e = H5Dread(img, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, a);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    const ssize_t got = e >= 0 ? pread(f->fd, b, ib, (off_t)f->base) : -1;
    if (e < 0 || got != (ssize_t)ib || memcmp(a, b, ib) != 0)
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot locate the images in the file", path);
    free(a);
    if (st != NEST_OK) goto done;
  }
  f->first = *total;
  *total += m->n;
  NEST_CALL_GOTO(st, nest_data_strdup(path, &f->path), done);
done:
  nest_h5_close(&fcpl, H5Pclose);
  nest_h5_close(&dcpl, H5Pclose);
  nest_h5_close(&ty, H5Tclose);
  nest_h5_close(&sp, H5Sclose);
  nest_h5_close(&lab, H5Dclose);
  nest_h5_close(&img, H5Dclose);
  nest_h5_close(&file, H5Fclose);
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

nest_status nest_data_shards_open(const char *pattern, int64_t max_samples, nest_dataset **out) {
  nest_h5_quiet();
  *out = NULL;
  const int is_glob = strpbrk(pattern, "*?") != NULL;
  glob_t g;
  memset(&g, 0, sizeof g);
  char **paths = NULL;
  const char *one[1] = {pattern};
  int nfiles = 1;
  if (is_glob) {
    const int r = glob(pattern, GLOB_ERR, NULL, &g);
    if (r == GLOB_NOMATCH || (r == 0 && g.gl_pathc == 0)) {
      globfree(&g);
      return NEST_ERR(NEST_ERR_IO, "%s: no file matches the pattern", pattern);
    }
    if (r != 0) {
      globfree(&g);
      return NEST_ERR(NEST_ERR_IO, "%s: cannot expand the pattern (unreadable directory?)", pattern);
    }
    if (g.gl_pathc > INT_MAX / 2) {
      globfree(&g);
      return NEST_ERR(NEST_ERR_IO, "%s: too many files", pattern);
    }
    nfiles = (int)g.gl_pathc;
    qsort(g.gl_pathv, g.gl_pathc, sizeof(char *), cmp_str); /* byte order, whatever the locale */
    paths = g.gl_pathv;
  } else {
    paths = (char **)one;
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
    if (is_glob) { /* the pattern must name a whole set, in order */
      if (!mk->has_index || !mk->has_count) {
        st = NEST_ERR(NEST_ERR_FORMAT, "%s: shard_index / shard_count missing (an unfinished "
                      "shard?)", paths[k]);
        goto done;
      }
      if (mk->count != nfiles) {
        st = NEST_ERR(NEST_ERR_FORMAT, "%s: the set has %d shards (shard_count of %s) but the "
                      "pattern matches %d file%s%s", pattern, mk->count, paths[k], nfiles,
                      nfiles == 1 ? "" : "s",
                      mk->count > nfiles ? ": a shard is missing" : ": files of another set match too");
        goto done;
      }
      if (mk->index != k) {
        st = NEST_ERR(NEST_ERR_FORMAT, "%s: shard_index %d, expected %d: shard %d of the set is "
                      "missing or the pattern matches files of another set", paths[k], mk->index,
                      k, k);
        goto done;
      }
    }
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
  /* The fingerprint of the set: base names, sizes, counts; the stored shape. */
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
  ds->source_hash = h ? h : 1;
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
