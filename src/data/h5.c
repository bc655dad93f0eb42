/* h5.c — nest's own HDF5 dataset format (docs/data-format.md): read with validation, write
 * atomically (atomic.h: PATH.tmp, fsync, rename).
 *
 *   /images    uint8   [N, C, H, W]   (or)   /features  float32 [N, D]  (or [N, C, H, W])
 *   /labels    int32   [N]            in [0, nclasses)
 *   root attributes: format_version int32 = 1, nclasses int32,
 *                    optional mean, std float32 [C or D] (both or neither; std > 0),
 *                    optional class_names: [nclasses] strings (written variable-length UTF-8;
 *                    fixed-length strings are accepted on read).
 * Reading is lenient only where no meaning can be lost: /labels may be any integer type and
 * /features any float type (HDF5 converts); /images must be 8-bit unsigned (its 1/255 scale
 * is part of the format). Sizes in the file are checked before they become allocations
 * (nest_data_new). A file-format module: HDF5 through the helpers of h5io.h (HDF5 is called
 * only by h5io.c and the file-format modules model.c, ckpt.c, data/h5.c, data/shards.c); every
 * failure is one nest message naming the file. Serial file driver: no MPI. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/data.h"
#include "nest/h5io.h"

#include "data_internal.h"

#define NEST_H5_VERSION 1
#define NEST_H5_MAX_CLASSES (1 << 20)

/* ---- reading ------------------------------------------------------------------------------ */

/* format_version and nclasses. */
static nest_status read_header(hid_t file, const char *path, int *nclasses) {
  int version;
  NEST_CALL(nest_h5_attr_int(file, path, "/", "format_version", &version));
  if (version != NEST_H5_VERSION)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: format_version %d not supported (this build reads %d)",
                    path, version, NEST_H5_VERSION);
  NEST_CALL(nest_h5_attr_int(file, path, "/", "nclasses", nclasses));
  if (*nclasses < 1 || *nclasses > NEST_H5_MAX_CLASSES)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: nclasses = %d out of range [1, %d]", path, *nclasses,
                    NEST_H5_MAX_CLASSES);
  return NEST_OK;
}

/* The sample dataset (/images or /features) and /labels, open. */
typedef struct {
  int has_img, rank;
  const char *name; /* "/images" or "/features" */
  hsize_t dims[4];  /* [N, C, H, W] ([N, D, 1, 1] for rank 2) */
  nest_shape shape;
  int64_t n;
  hid_t data, labels;
} h5_sets;

static void sets_close(h5_sets *s) {
  nest_h5_close(&s->data, H5Dclose);
  nest_h5_close(&s->labels, H5Dclose);
}

/* Open and check /images or /features (exactly one), then /labels: types, ranks, shapes, counts. */
static nest_status open_sets(hid_t file, const char *path, h5_sets *s) {
  memset(s, 0, sizeof *s);
  s->data = s->labels = -1;
  s->has_img = H5Lexists(file, "images", H5P_DEFAULT) > 0;
  const int has_feat = H5Lexists(file, "features", H5P_DEFAULT) > 0;
  if (s->has_img == has_feat)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s", path,
                    s->has_img ? "has both /images and /features (expected one)"
                               : "missing dataset /images or /features");
  s->name = s->has_img ? "/images" : "/features";
  hid_t type;
  s->dims[1] = s->dims[2] = s->dims[3] = 1;
  NEST_CALL(nest_h5_dset_open(file, path, "", s->name + 1, s->has_img ? 4 : 2, 4, &s->data,
                              &s->rank, s->dims, &type));
  const H5T_class_t cls = H5Tget_class(type);
  const int u8 = nest_h5_is_u8(type);
  H5Tclose(type);
  if (s->rank == 3)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: dataset /features has rank 3, expected 2 or 4", path);
  if (s->has_img && !u8) return NEST_ERR(NEST_ERR_FORMAT, "%s: dataset /images must be uint8", path);
  if (!s->has_img && cls != H5T_FLOAT)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: dataset /features must be float32", path);
  if (s->rank == 2) s->dims[2] = s->dims[3] = 1;
  for (int i = 1; i < 4; ++i)
    if (s->dims[i] > INT_MAX) s->dims[i] = 0; /* rejected below */
  s->shape = (nest_shape){(int)s->dims[1], (int)s->dims[2], (int)s->dims[3]};
  if (s->dims[0] == 0 || s->dims[0] > INT64_MAX || s->shape.c <= 0 || s->shape.h <= 0 ||
      s->shape.w <= 0 || (double)s->shape.c * s->shape.h * s->shape.w > (double)INT_MAX)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: dataset %s has bad dimensions", path, s->name);
  s->n = (int64_t)s->dims[0];

  int lrank;
  hsize_t ldims[4];
  NEST_CALL(nest_h5_dset_open(file, path, "", "labels", 1, 1, &s->labels, &lrank, ldims, &type));
  const int lint = H5Tget_class(type) == H5T_INTEGER;
  H5Tclose(type);
  if (!lint) return NEST_ERR(NEST_ERR_FORMAT, "%s: dataset /labels must be int32", path);
  if (ldims[0] != s->dims[0])
    return NEST_ERR(NEST_ERR_FORMAT, "%s: count mismatch: /labels has %llu entries but %s has %lld",
                    path, (unsigned long long)ldims[0], s->name, (long long)s->n);
  return NEST_OK;
}

/* Labels in [0, nclasses), features finite. */
static nest_status check_values(const nest_dataset *ds, const char *path) {
  for (int64_t i = 0; i < ds->n; ++i)
    if (ds->labels[i] < 0 || ds->labels[i] >= ds->nclasses)
      return NEST_ERR(NEST_ERR_FORMAT, "%s: /labels[%lld] = %d out of range [0, %d) (nclasses)",
                      path, (long long)i, ds->labels[i], ds->nclasses);
  if (!ds->f32) return NEST_OK;
  const int64_t dim = nest_dataset_dim(ds), total = ds->n * dim;
  for (int64_t i = 0; i < total; ++i)
    if (!isfinite(ds->f32[i]))
      return NEST_ERR(NEST_ERR_FORMAT, "%s: /features[%lld][%lld] is %s", path,
                      (long long)(i / dim), (long long)(i % dim),
                      isnan(ds->f32[i]) ? "NaN" : "Inf (or beyond float range)");
  return NEST_OK;
}

/* The optional root attributes: mean and std (both or neither), class_names. */
static nest_status read_extras(hid_t file, const char *path, nest_dataset *ds) {
  const int has_mean = H5Aexists(file, "mean") > 0, has_std = H5Aexists(file, "std") > 0;
  if (has_mean != has_std)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: attribute '%s' without '%s'", path,
                    has_mean ? "mean" : "std", has_mean ? "std" : "mean");
  if (has_mean) {
    ds->norm.nch = ds->shape.c;
    NEST_CALL(nest_h5_read_floats(file, path, "mean", 1, ds->shape.c, 0, &ds->norm.mean));
    NEST_CALL(nest_h5_read_floats(file, path, "std", 1, ds->shape.c, 1, &ds->norm.std));
  }
  if (H5Aexists(file, "class_names") > 0)
    NEST_CALL(nest_h5_read_strs(file, path, "class_names", 1, ds->nclasses, &ds->class_names));
  return NEST_OK;
}

nest_status nest_data_h5_read(const char *path, int64_t max_samples, nest_dataset **out) {
  nest_h5_quiet();
  *out = NULL;
  hid_t file = -1;
  h5_sets s = {.data = -1, .labels = -1};
  nest_dataset *ds = NULL;
  nest_status st = NEST_OK;
  int nclasses;
  NEST_CALL(nest_h5_open_read(path, "a nest dataset", &file));
  NEST_CALL_GOTO(st, read_header(file, path, &nclasses), done);
  NEST_CALL_GOTO(st, open_sets(file, path, &s), done);
  const int64_t keep = (max_samples > 0 && max_samples < s.n) ? max_samples : s.n;
  NEST_CALL_GOTO(st, nest_data_new(path, keep, s.shape, s.has_img ? 1 : 2, &ds), done);
  ds->nclasses = nclasses;
  ds->u8_scale = s.has_img ? 1.0f / 255.0f : 1.0f;
  char what[32];
  snprintf(what, sizeof what, "dataset %s", s.name);
  NEST_CALL_GOTO(st, nest_h5_read_rows(s.data, path, what, s.rank, s.dims, 0, (hsize_t)keep,
                                       s.has_img ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT,
                                       s.has_img ? (void *)ds->u8 : (void *)ds->f32), done);
  const hsize_t ldims[1] = {s.dims[0]};
  NEST_CALL_GOTO(st, nest_h5_read_rows(s.labels, path, "dataset /labels", 1, ldims, 0,
                                       (hsize_t)keep, H5T_NATIVE_INT32, ds->labels), done);
  NEST_CALL_GOTO(st, check_values(ds, path), done);
  NEST_CALL_GOTO(st, read_extras(file, path, ds), done);
  *out = ds;
  ds = NULL;
done:
  sets_close(&s);
  nest_h5_close(&file, H5Fclose);
  nest_dataset_destroy(&ds);
  return st;
}

/* ---- writing ------------------------------------------------------------------------------ */

nest_status nest_dataset_save_h5(const nest_dataset *ds, const char *path) {
  nest_h5_quiet();
  if (!ds || !path || !*path) return NEST_ERR(NEST_ERR_ARG, "nest_dataset_save_h5: no dataset or path");
  if (ds->n <= 0 || !ds->labels || (!ds->u8) == (!ds->f32) || ds->nclasses < 1)
    return NEST_ERR(NEST_ERR_ARG, "%s: cannot save an empty or inconsistent dataset", path);
  if (ds->norm.nch != 0 && ds->norm.nch != ds->shape.c)
    return NEST_ERR(NEST_ERR_ARG, "%s: normalisation has %d channels, data has %d", path,
                    ds->norm.nch, ds->shape.c);
  for (int64_t i = 0; i < ds->n; ++i)
    if (ds->labels[i] < 0 || ds->labels[i] >= ds->nclasses)
      return NEST_ERR(NEST_ERR_ARG, "%s: label %d of sample %lld out of range [0, %d)", path,
                      ds->labels[i], (long long)i, ds->nclasses);

  char tmp[4096];
  hid_t file;
  /* 1.8+ object headers: attributes (mean/std of many features) may exceed 64 KiB. */
  NEST_CALL(nest_h5_begin(path, tmp, sizeof tmp, H5F_LIBVER_V18, &file));
  const nest_shape s = ds->shape;
  hsize_t dims[4] = {(hsize_t)ds->n, (hsize_t)s.c, (hsize_t)s.h, (hsize_t)s.w};
  herr_t e;
  if (ds->u8) {
    e = nest_h5_put_dataset(file, "images", 4, dims, H5T_STD_U8LE, H5T_NATIVE_UINT8, 1,
                            NEST_H5_DEFLATE, ds->u8);
  } else {
    int rank = (s.h == 1 && s.w == 1) ? 2 : 4; /* tabular [N, D]; float images keep [N,C,H,W] */
    e = nest_h5_put_dataset(file, "features", rank, dims, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4,
                            NEST_H5_DEFLATE | NEST_H5_SHUFFLE, ds->f32);
  }
  if (e >= 0)
    e = nest_h5_put_dataset(file, "labels", 1, dims, H5T_STD_I32LE, H5T_NATIVE_INT32, 4,
                            NEST_H5_DEFLATE, ds->labels);
  if (e >= 0) e = nest_h5_put_int(file, "format_version", NEST_H5_VERSION);
  if (e >= 0) e = nest_h5_put_int(file, "nclasses", ds->nclasses);
  if (e >= 0 && ds->norm.nch > 0)
    e = nest_h5_put_attr(file, "mean", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, ds->norm.nch,
                         ds->norm.mean);
  if (e >= 0 && ds->norm.nch > 0)
    e = nest_h5_put_attr(file, "std", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, ds->norm.nch, ds->norm.std);
  if (e >= 0 && ds->class_names) e = nest_h5_put_strs(file, "class_names", ds->class_names,
                                                      ds->nclasses, 1);
  if (e < 0) {
    nest_h5_abort(&file, tmp);
    return NEST_ERR(NEST_ERR_IO, "%s: writing the HDF5 file failed (disk full?)", tmp);
  }
  return nest_h5_commit(&file, tmp, path);
}
