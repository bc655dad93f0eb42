/* h5.c — nest's own HDF5 dataset format (docs/data-format.md): read with validation, write
 * atomically (atomic.h: PATH.tmp, fsync, rename). The only data-module file that calls HDF5.
 *
 *   /images    uint8   [N, C, H, W]   (or)   /features  float32 [N, D]  (or [N, C, H, W])
 *   /labels    int32   [N]            in [0, nclasses)
 *   root attributes: format_version int32 = 1, nclasses int32,
 *                    optional mean, std float32 [C or D] (both or neither; std > 0),
 *                    optional class_names: [nclasses] strings (written variable-length UTF-8;
 *                    fixed-length strings are accepted on read).
 * Reading is lenient only where no meaning can be lost: /labels may be any integer type and
 * /features any float type (HDF5 converts); /images must be 8-bit unsigned (its 1/255 scale
 * is part of the format). HDF5's own error printing is switched off; every failure becomes a
 * one-line nest message naming the file. Uses the default (serial) file driver: no MPI. */
#include <errno.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/atomic.h"
#include "nest/data.h"

#include "data_internal.h"

#define NEST_H5_VERSION 1
#define NEST_H5_MAX_CLASSES (1 << 20)

/* ---- reading ------------------------------------------------------------------------------ */

/* Open root attribute `name`; *present = 0 if it does not exist. Its element count -> *npts. */
static nest_status attr_open(hid_t file, const char *path, const char *name, hid_t *attr,
                             hssize_t *npts, H5T_class_t *cls) {
  *attr = H5Aopen(file, name, H5P_DEFAULT);
  if (*attr < 0) return NEST_ERR(NEST_ERR_FORMAT, "%s: cannot open attribute '%s'", path, name);
  hid_t sp = H5Aget_space(*attr), ty = H5Aget_type(*attr);
  *npts = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
  *cls = ty >= 0 ? H5Tget_class(ty) : H5T_NO_CLASS;
  if (sp >= 0) H5Sclose(sp);
  if (ty >= 0) H5Tclose(ty);
  if (*npts < 0) {
    nest_h5_close(attr, H5Aclose);
    return NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read the shape of attribute '%s'", path, name);
  }
  return NEST_OK;
}

static nest_status attr_int(hid_t file, const char *path, const char *name, int *val) {
  if (H5Aexists(file, name) <= 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: missing root attribute '%s' (not a nest dataset?)",
                    path, name);
  hid_t a;
  hssize_t np;
  H5T_class_t cls;
  NEST_CALL(attr_open(file, path, name, &a, &np, &cls));
  nest_status st = NEST_OK;
  if (np != 1 || cls != H5T_INTEGER)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: attribute '%s' must be one integer", path, name);
  else if (H5Aread(a, H5T_NATIVE_INT, val) < 0)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read attribute '%s'", path, name);
  H5Aclose(a);
  return st;
}

/* Float array attribute of exactly `len` finite elements (std additionally > 0). */
static nest_status attr_floats(hid_t file, const char *path, const char *name, int len,
                               int positive, float **out) {
  hid_t a;
  hssize_t np;
  H5T_class_t cls;
  *out = NULL;
  NEST_CALL(attr_open(file, path, name, &a, &np, &cls));
  nest_status st = NEST_OK;
  float *v = NULL;
  if (cls != H5T_FLOAT || np != len) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: attribute '%s' must be %d floats (one per %s), has %lld",
                  path, name, len, "channel/feature", (long long)np);
    goto done;
  }
  NEST_CALL_GOTO(st, nest_malloc((void **)&v, sizeof(float) * (size_t)len, name), done);
  if (H5Aread(a, H5T_NATIVE_FLOAT, v) < 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read attribute '%s'", path, name);
    goto done;
  }
  for (int i = 0; i < len; ++i)
    if (!isfinite(v[i]) || (positive && !(v[i] > 0))) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: attribute %s[%d] = %g is %s", path, name, i,
                    (double)v[i], isnan(v[i]) ? "NaN" : !isfinite(v[i]) ? "Inf" : "not > 0");
      goto done;
    }
  *out = v;
  v = NULL;
done:
  free(v);
  H5Aclose(a);
  return st;
}

/* class_names: [nclasses] variable- or fixed-length strings. */
static nest_status attr_names(hid_t file, const char *path, int n, char ***out) {
  hid_t a = -1, ftype = -1, mtype = -1;
  hssize_t np;
  H5T_class_t cls;
  char **names = NULL, **vl = NULL, *fixed = NULL;
  nest_status st = NEST_OK;
  *out = NULL;
  NEST_CALL(attr_open(file, path, "class_names", &a, &np, &cls));
  if (cls != H5T_STRING || np != n) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: attribute 'class_names' must be %d strings (nclasses)",
                  path, n);
    goto done;
  }
  NEST_CALL_GOTO(st, nest_calloc((void **)&names, (size_t)n, sizeof(char *), "class names"), done);
  ftype = H5Aget_type(a);
  mtype = H5Tcopy(H5T_C_S1);
  if (ftype < 0 || mtype < 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read attribute 'class_names'", path);
    goto done;
  }
  H5Tset_cset(mtype, H5Tget_cset(ftype)); /* HDF5 does not convert ASCII <-> UTF-8 */
  if (H5Tis_variable_str(ftype) > 0) {
    NEST_CALL_GOTO(st, nest_calloc((void **)&vl, (size_t)n, sizeof(char *), "class names"), done);
    H5Tset_size(mtype, H5T_VARIABLE);
    if (H5Aread(a, mtype, vl) < 0) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read attribute 'class_names'", path);
      goto done;
    }
    for (int k = 0; k < n && st == NEST_OK; ++k)
      st = nest_data_strdup(vl[k] ? vl[k] : "", &names[k]);
  } else {
    size_t sz = H5Tget_size(ftype);
    NEST_CALL_GOTO(st, nest_malloc((void **)&fixed, sz * (size_t)n + 1, "class names"), done);
    H5Tset_size(mtype, sz);
    H5Tset_strpad(mtype, H5T_STR_NULLPAD);
    if (H5Aread(a, mtype, fixed) < 0) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read attribute 'class_names'", path);
      goto done;
    }
    for (int k = 0; k < n && st == NEST_OK; ++k) {
      char tmp[4096];
      size_t len = 0;
      const char *s = fixed + (size_t)k * sz;
      while (len < sz && len < sizeof tmp - 1 && s[len]) ++len;
      memcpy(tmp, s, len);
      tmp[len] = '\0';
      st = nest_data_strdup(tmp, &names[k]);
    }
  }
  if (st != NEST_OK) goto done;
  *out = names;
  names = NULL;
done:
  if (vl) {
    for (int k = 0; k < n; ++k)
      if (vl[k]) H5free_memory(vl[k]);
    free(vl);
  }
  if (names)
    for (int k = 0; k < n; ++k) free(names[k]);
  free(names);
  free(fixed);
  nest_h5_close(&mtype, H5Tclose);
  nest_h5_close(&ftype, H5Tclose);
  nest_h5_close(&a, H5Aclose);
  return st;
}

/* Open dataset `name`, check its rank is in {rank_a, rank_b}, return dims and type class. */
static nest_status dset_open(hid_t file, const char *path, const char *name, int rank_a,
                             int rank_b, hid_t *dset, int *rank, hsize_t dims[4],
                             hid_t *type) {
  *dset = H5Dopen2(file, name, H5P_DEFAULT);
  if (*dset < 0) return NEST_ERR(NEST_ERR_FORMAT, "%s: cannot open dataset %s", path, name);
  hid_t sp = H5Dget_space(*dset);
  *rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
  if (*rank == rank_a || *rank == rank_b) H5Sget_simple_extent_dims(sp, dims, NULL);
  if (sp >= 0) H5Sclose(sp);
  *type = H5Dget_type(*dset);
  if (*rank != rank_a && *rank != rank_b) {
    nest_h5_close(type, H5Tclose);
    nest_h5_close(dset, H5Dclose);
    if (rank_a == rank_b)
      return NEST_ERR(NEST_ERR_FORMAT, "%s: dataset %s has rank %d, expected %d", path, name,
                      *rank, rank_a);
    return NEST_ERR(NEST_ERR_FORMAT, "%s: dataset %s has rank %d, expected %d or %d", path, name,
                    *rank, rank_a, rank_b);
  }
  return NEST_OK;
}

/* Read the first `keep` rows of dataset `dset` (row = rowlen elements of memtype). */
static nest_status dset_read_rows(hid_t dset, const char *path, const char *name, int rank,
                                  const hsize_t dims[4], hsize_t keep, hid_t memtype, void *buf) {
  hsize_t start[4] = {0, 0, 0, 0}, count[4];
  for (int i = 0; i < rank; ++i) count[i] = dims[i];
  count[0] = keep;
  hid_t fs = H5Dget_space(dset), ms = H5Screate_simple(rank, count, NULL);
  herr_t e = (fs >= 0 && ms >= 0)
                 ? H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL)
                 : -1;
  if (e >= 0) e = H5Dread(dset, memtype, ms, fs, H5P_DEFAULT, buf);
  if (fs >= 0) H5Sclose(fs);
  if (ms >= 0) H5Sclose(ms);
  if (e < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read dataset %s (corrupt or truncated file?)",
                    path, name);
  return NEST_OK;
}

nest_status nest_data_h5_read(const char *path, int64_t max_samples, nest_dataset **out) {
  nest_h5_quiet();
  *out = NULL;
  hid_t file = -1, dset = -1, type = -1, lset = -1, ltype = -1;
  nest_dataset *ds = NULL;
  nest_status st = NEST_OK;
  if (H5Fis_hdf5(path) <= 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: not an HDF5 file", path);
  file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0) return NEST_ERR(NEST_ERR_IO, "%s: cannot open HDF5 file", path);

  int version, nclasses;
  NEST_CALL_GOTO(st, attr_int(file, path, "format_version", &version), done);
  if (version != NEST_H5_VERSION) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: format_version %d not supported (this build reads %d)",
                  path, version, NEST_H5_VERSION);
    goto done;
  }
  NEST_CALL_GOTO(st, attr_int(file, path, "nclasses", &nclasses), done);
  if (nclasses < 1 || nclasses > NEST_H5_MAX_CLASSES) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: nclasses = %d out of range [1, %d]", path, nclasses,
                  NEST_H5_MAX_CLASSES);
    goto done;
  }

  int has_img = H5Lexists(file, "images", H5P_DEFAULT) > 0;
  int has_feat = H5Lexists(file, "features", H5P_DEFAULT) > 0;
  if (has_img == has_feat) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s", path,
                  has_img ? "has both /images and /features (expected one)"
                          : "missing dataset /images or /features");
    goto done;
  }
  if (H5Lexists(file, "labels", H5P_DEFAULT) <= 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: missing dataset /labels", path);
    goto done;
  }

  const char *dname = has_img ? "/images" : "/features";
  int rank;
  hsize_t dims[4] = {0, 1, 1, 1};
  NEST_CALL_GOTO(st, dset_open(file, path, dname, has_img ? 4 : 2, 4, &dset, &rank, dims, &type),
                 done);
  H5T_class_t cls = H5Tget_class(type);
  if (has_img && (cls != H5T_INTEGER || H5Tget_size(type) != 1 || H5Tget_sign(type) != H5T_SGN_NONE)) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: dataset /images must be uint8", path);
    goto done;
  }
  if (!has_img && cls != H5T_FLOAT) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: dataset /features must be float32", path);
    goto done;
  }
  nest_shape shape;
  if (rank == 2) {
    dims[2] = dims[3] = 1;
    if (dims[1] > INT_MAX) dims[1] = 0; /* rejected below */
    shape = (nest_shape){(int)dims[1], 1, 1};
  } else {
    for (int i = 1; i < 4; ++i)
      if (dims[i] > INT_MAX) dims[i] = 0;
    shape = (nest_shape){(int)dims[1], (int)dims[2], (int)dims[3]};
  }
  if (dims[0] == 0 || shape.c <= 0 || shape.h <= 0 || shape.w <= 0 ||
      (double)shape.c * shape.h * shape.w > (double)INT_MAX) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: dataset %s has bad dimensions", path, dname);
    goto done;
  }
  int64_t n = (int64_t)dims[0];

  int lrank;
  hsize_t ldims[4];
  NEST_CALL_GOTO(st, dset_open(file, path, "/labels", 1, 1, &lset, &lrank, ldims, &ltype), done);
  if (H5Tget_class(ltype) != H5T_INTEGER) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: dataset /labels must be int32", path);
    goto done;
  }
  if ((int64_t)ldims[0] != n) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: count mismatch: /labels has %lld entries but %s has %lld",
                  path, (long long)ldims[0], dname, (long long)n);
    goto done;
  }

  int64_t keep = (max_samples > 0 && max_samples < n) ? max_samples : n;
  NEST_CALL_GOTO(st, nest_data_new(path, keep, shape, has_img ? 1 : 2, &ds), done);
  ds->nclasses = nclasses;
  ds->u8_scale = has_img ? 1.0f / 255.0f : 1.0f;
  if (has_img)
    NEST_CALL_GOTO(st, dset_read_rows(dset, path, dname, rank, dims, (hsize_t)keep,
                                      H5T_NATIVE_UINT8, ds->u8), done);
  else
    NEST_CALL_GOTO(st, dset_read_rows(dset, path, dname, rank, dims, (hsize_t)keep,
                                      H5T_NATIVE_FLOAT, ds->f32), done);
  NEST_CALL_GOTO(st, dset_read_rows(lset, path, "/labels", 1, ldims, (hsize_t)keep,
                                    H5T_NATIVE_INT32, ds->labels), done);

  for (int64_t i = 0; i < keep; ++i)
    if (ds->labels[i] < 0 || ds->labels[i] >= nclasses) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: /labels[%lld] = %d out of range [0, %d) (nclasses)",
                    path, (long long)i, ds->labels[i], nclasses);
      goto done;
    }
  if (ds->f32) {
    int64_t dim = nest_dataset_dim(ds), total = keep * dim;
    for (int64_t i = 0; i < total; ++i)
      if (!isfinite(ds->f32[i])) {
        st = NEST_ERR(NEST_ERR_FORMAT, "%s: /features[%lld][%lld] is %s", path,
                      (long long)(i / dim), (long long)(i % dim),
                      isnan(ds->f32[i]) ? "NaN" : "Inf (or beyond float range)");
        goto done;
      }
  }

  int has_mean = H5Aexists(file, "mean") > 0, has_std = H5Aexists(file, "std") > 0;
  if (has_mean != has_std) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: attribute '%s' without '%s'", path,
                  has_mean ? "mean" : "std", has_mean ? "std" : "mean");
    goto done;
  }
  if (has_mean) {
    ds->norm.nch = shape.c;
    NEST_CALL_GOTO(st, attr_floats(file, path, "mean", shape.c, 0, &ds->norm.mean), done);
    NEST_CALL_GOTO(st, attr_floats(file, path, "std", shape.c, 1, &ds->norm.std), done);
  }
  if (H5Aexists(file, "class_names") > 0)
    NEST_CALL_GOTO(st, attr_names(file, path, nclasses, &ds->class_names), done);

  *out = ds;
  ds = NULL;
done:
  nest_h5_close(&ltype, H5Tclose);
  nest_h5_close(&lset, H5Dclose);
  nest_h5_close(&type, H5Tclose);
  nest_h5_close(&dset, H5Dclose);
  nest_h5_close(&file, H5Fclose);
  nest_dataset_destroy(&ds);
  return st;
}

/* ---- writing ------------------------------------------------------------------------------ */

herr_t nest_h5_put_int_attr(hid_t file, const char *name, int v) {
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = sp >= 0 ? H5Acreate2(file, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT) : -1;
  herr_t e = a >= 0 ? H5Awrite(a, H5T_NATIVE_INT, &v) : -1;
  if (a >= 0) H5Aclose(a);
  if (sp >= 0) H5Sclose(sp);
  return e;
}

static herr_t put_float_attr(hid_t file, const char *name, const float *v, int n) {
  hsize_t d = (hsize_t)n;
  hid_t sp = H5Screate_simple(1, &d, NULL);
  hid_t a = sp >= 0 ? H5Acreate2(file, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT) : -1;
  herr_t e = a >= 0 ? H5Awrite(a, H5T_NATIVE_FLOAT, v) : -1;
  if (a >= 0) H5Aclose(a);
  if (sp >= 0) H5Sclose(sp);
  return e;
}

static herr_t put_names_attr(hid_t file, char *const *names, int n) {
  hsize_t d = (hsize_t)n;
  hid_t st = H5Tcopy(H5T_C_S1);
  if (st < 0) return -1;
  herr_t e = H5Tset_size(st, H5T_VARIABLE);
  if (e >= 0) e = H5Tset_cset(st, H5T_CSET_UTF8);
  hid_t sp = e >= 0 ? H5Screate_simple(1, &d, NULL) : -1;
  hid_t a = sp >= 0 ? H5Acreate2(file, "class_names", st, sp, H5P_DEFAULT, H5P_DEFAULT) : -1;
  e = a >= 0 ? H5Awrite(a, st, names) : -1;
  if (a >= 0) H5Aclose(a);
  if (sp >= 0) H5Sclose(sp);
  H5Tclose(st);
  return e;
}

/* A chunked (about 1 MiB per chunk), deflate-compressed dataset holding all of buf. */
static herr_t put_dataset(hid_t file, const char *name, int rank, const hsize_t *dims,
                          hid_t filetype, hid_t memtype, size_t elem, int shuffle,
                          const void *buf) {
  hsize_t chunk[4];
  size_t row = elem;
  for (int i = 1; i < rank; ++i) {
    chunk[i] = dims[i];
    row *= dims[i];
  }
  hsize_t rows = (hsize_t)((1u << 20) / (row ? row : 1));
  if (rows < 1) rows = 1;
  if (rows > dims[0]) rows = dims[0];
  chunk[0] = rows;
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  herr_t e = dcpl >= 0 && (double)row * rows < 4e9 ? H5Pset_chunk(dcpl, rank, chunk) : -1;
  if (e >= 0 && H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) {
    if (shuffle) H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, 4);
  }
  if (e < 0 && dcpl >= 0) { /* chunking impossible (a row > 4 GB): plain contiguous layout */
    H5Pclose(dcpl);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
  }
  hid_t sp = H5Screate_simple(rank, dims, NULL);
  hid_t d = (sp >= 0 && dcpl >= 0)
                ? H5Dcreate2(file, name, filetype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT)
                : -1;
  e = d >= 0 ? H5Dwrite(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) : -1;
  if (d >= 0 && H5Dclose(d) < 0) e = -1;
  if (sp >= 0) H5Sclose(sp);
  if (dcpl >= 0) H5Pclose(dcpl);
  return e;
}

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
  NEST_CALL(nest_atomic_begin(path, tmp, sizeof tmp));

  nest_status st = NEST_OK;
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), file = -1;
  /* 1.8+ object headers: attributes (mean/std of many features) may exceed 64 KiB. */
  if (fapl >= 0) H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
  file = fapl >= 0 ? H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl) : -1;
  if (file < 0) {
    st = NEST_ERR(NEST_ERR_IO, "%s: cannot create HDF5 file", tmp);
    goto done;
  }
  const nest_shape s = ds->shape;
  hsize_t dims[4] = {(hsize_t)ds->n, (hsize_t)s.c, (hsize_t)s.h, (hsize_t)s.w};
  herr_t e;
  if (ds->u8) {
    e = put_dataset(file, "images", 4, dims, H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, 0, ds->u8);
  } else {
    int rank = (s.h == 1 && s.w == 1) ? 2 : 4; /* tabular [N, D]; float images keep [N,C,H,W] */
    e = put_dataset(file, "features", rank, dims, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, 1,
                    ds->f32);
  }
  if (e >= 0)
    e = put_dataset(file, "labels", 1, dims, H5T_STD_I32LE, H5T_NATIVE_INT32, 4, 0, ds->labels);
  if (e >= 0) e = nest_h5_put_int_attr(file, "format_version", NEST_H5_VERSION);
  if (e >= 0) e = nest_h5_put_int_attr(file, "nclasses", ds->nclasses);
  if (e >= 0 && ds->norm.nch > 0) e = put_float_attr(file, "mean", ds->norm.mean, ds->norm.nch);
  if (e >= 0 && ds->norm.nch > 0) e = put_float_attr(file, "std", ds->norm.std, ds->norm.nch);
  if (e >= 0 && ds->class_names) e = put_names_attr(file, ds->class_names, ds->nclasses);
  if (e < 0) {
    st = NEST_ERR(NEST_ERR_IO, "%s: writing the HDF5 file failed (disk full?)", tmp);
    goto done;
  }
  e = H5Fclose(file);
  file = -1;
  if (e < 0) {
    st = NEST_ERR(NEST_ERR_IO, "%s: closing the HDF5 file failed (disk full?)", tmp);
    goto done;
  }
  st = nest_atomic_commit(tmp, path);

done:
  if (file >= 0) H5Fclose(file);
  if (fapl >= 0) H5Pclose(fapl);
  if (st != NEST_OK) nest_atomic_abort(tmp);
  return st;
}
