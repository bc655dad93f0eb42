/* h5io.c — the HDF5 helper module (h5io.h): the helpers the file-format modules (model.c,
 * ckpt.c, data/h5.c, data/shards.c) share. With them, the only code that calls HDF5. */
#define _POSIX_C_SOURCE 200809L
#include "nest/h5io.h"

#include "nest/atomic.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void nest_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/* No HDF5 clean-up at exit: after a write fails (a full disk), HDF5 1.10.8 keeps the file
 * half-closed and its atexit clean-up crashes (HDFFV-11052, fixed upstream after 1.10.8), which
 * would turn a clean error exit into a segfault. Every file nest opens is closed explicitly,
 * so there is nothing left for the clean-up to do. Must run before any other HDF5 call: a
 * constructor of the module every HDF5 user links. */
__attribute__((constructor)) static void h5_no_atexit(void) { H5dont_atexit(); }

void nest_h5_close(hid_t *id, herr_t (*close)(hid_t)) {
  if (*id >= 0) close(*id);
  *id = -1;
}

/* ---- files -------------------------------------------------------------------------------- */

nest_status nest_h5_open_read(const char *path, const char *what, hid_t *file) {
  *file = -1;
  struct stat sb;
  if (stat(path, &sb) != 0)
    return NEST_ERR(NEST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  if (S_ISDIR(sb.st_mode)) return NEST_ERR(NEST_ERR_IO, "%s: is a directory, not %s", path, what);
  /* fopen first: HDF5 does not say why an open failed (permissions), strerror does. */
  FILE *probe = fopen(path, "rb");
  if (!probe) return NEST_ERR(NEST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  fclose(probe);
  if (H5Fis_hdf5(path) <= 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: not an HDF5 file (%s was expected)", path, what);
  *file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (*file < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: cannot open as HDF5 (truncated or corrupt file?)", path);
  return NEST_OK;
}

hid_t nest_h5_probe(const char *path) {
  nest_h5_quiet();
  return H5Fis_hdf5(path) > 0 ? H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
}

hid_t nest_h5_create(const char *path, H5F_libver_t low) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl < 0) return -1;
  H5Pset_libver_bounds(fapl, low, H5F_LIBVER_LATEST);
  hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  return file;
}

nest_status nest_h5_begin(const char *path, char *tmp, size_t cap, H5F_libver_t low,
                          hid_t *file) {
  *file = -1;
  NEST_CALL(nest_atomic_begin(path, tmp, cap));
  *file = nest_h5_create(tmp, low);
  if (*file < 0) {
    nest_atomic_abort(tmp);
    return NEST_ERR(NEST_ERR_IO, "%s: cannot create HDF5 file", tmp);
  }
  return NEST_OK;
}

nest_status nest_h5_commit(hid_t *file, const char *tmp, const char *path) {
  const herr_t e = H5Fclose(*file);
  *file = -1;
  if (e < 0) {
    nest_atomic_abort(tmp);
    return NEST_ERR(NEST_ERR_IO, "%s: closing the HDF5 file failed (disk full?)", tmp);
  }
  return nest_atomic_commit(tmp, path);
}

void nest_h5_abort(hid_t *file, const char *tmp) {
  nest_h5_close(file, H5Fclose);
  nest_atomic_abort(tmp);
}

/* ---- groups ------------------------------------------------------------------------------- */

nest_status nest_h5_group_open(hid_t loc, const char *path, const char *where, const char *name,
                               hid_t *g) {
  *g = -1;
  if (H5Lexists(loc, name, H5P_DEFAULT) <= 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: missing group %s/%s", path, where, name);
  *g = H5Gopen2(loc, name, H5P_DEFAULT);
  if (*g < 0) return NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s is not a group", path, where, name);
  return NEST_OK;
}

/* ---- attributes --------------------------------------------------------------------------- */

nest_status nest_h5_attr_open(hid_t obj, const char *path, const char *where, const char *name,
                              H5T_class_t want, int want_n, hid_t *attr) {
  *attr = -1;
  if (H5Aexists(obj, name) <= 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s: missing attribute '%s'", path, where, name);
  *attr = H5Aopen(obj, name, H5P_DEFAULT);
  if (*attr < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s: cannot open attribute '%s'", path, where, name);
  hid_t sp = H5Aget_space(*attr), ty = H5Aget_type(*attr);
  hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
  H5T_class_t cls = ty >= 0 ? H5Tget_class(ty) : H5T_NO_CLASS;
  if (sp >= 0) H5Sclose(sp);
  if (ty >= 0) H5Tclose(ty);
  if (cls != want || n != (want_n ? want_n : 1)) {
    nest_h5_close(attr, H5Aclose);
    const char *what = want == H5T_INTEGER ? "integer" : want == H5T_FLOAT ? "float" : "string";
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s: attribute '%s' must be %d %s%s", path, where, name,
                    want_n ? want_n : 1, what, want_n > 1 ? "s" : "");
  }
  return NEST_OK;
}

nest_status nest_h5_attr_read(hid_t obj, const char *path, const char *where, const char *name,
                              H5T_class_t cls, int n, hid_t mtype, void *v) {
  hid_t a;
  NEST_CALL(nest_h5_attr_open(obj, path, where, name, cls, n, &a));
  herr_t e = H5Aread(a, mtype, v);
  H5Aclose(a);
  if (e < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s: cannot read attribute '%s'", path, where, name);
  return NEST_OK;
}

nest_status nest_h5_attr_int(hid_t obj, const char *path, const char *where, const char *name,
                             int *v) {
  return nest_h5_attr_read(obj, path, where, name, H5T_INTEGER, 0, H5T_NATIVE_INT, v);
}

/* A memory string type for reading file type ftype: the same character set (HDF5 does not
 * convert ASCII <-> UTF-8), variable length if ftype is, else ftype's size, NUL-padded. */
static hid_t str_mtype(hid_t ftype) {
  hid_t m = H5Tcopy(H5T_C_S1);
  herr_t e = m >= 0 ? H5Tset_cset(m, H5Tget_cset(ftype)) : -1;
  if (e >= 0 && H5Tis_variable_str(ftype) > 0) {
    e = H5Tset_size(m, H5T_VARIABLE);
  } else if (e >= 0) {
    const size_t sz = H5Tget_size(ftype);
    e = sz == 0 || sz > NEST_H5_MAX_STR ? -1 : H5Tset_size(m, sz);
    if (e >= 0) e = H5Tset_strpad(m, H5T_STR_NULLPAD);
  }
  if (e < 0) nest_h5_close(&m, H5Tclose);
  return m;
}

/* n strings of attribute or dataset obj (file string type ftype) as malloc'd C strings: the
 * one reader of string attributes and string datasets. -1 if HDF5 cannot read them. */
static herr_t read_strings(hid_t obj, int is_attr, hid_t ftype, size_t n, char **out) {
  hid_t m = str_mtype(ftype);
  if (m < 0) return -1;
  const int vlen = H5Tis_variable_str(ftype) > 0;
  const size_t sz = vlen ? sizeof(char *) : H5Tget_size(ftype);
  char *raw = calloc(n ? n : 1, sz);
  herr_t e = raw ? 0 : -1;
  if (e >= 0) e = is_attr ? H5Aread(obj, m, raw) : H5Dread(obj, m, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw);
  for (size_t k = 0; k < n && e >= 0; ++k) {
    const char *s = vlen ? ((char **)(void *)raw)[k] : raw + k * sz;
    const size_t len = s ? strnlen(s, vlen ? NEST_H5_MAX_STR : sz) : 0;
    out[k] = malloc(len + 1);
    if (!out[k]) {
      e = -1;
      break;
    }
    memcpy(out[k], s ? s : "", len);
    out[k][len] = '\0';
  }
  if (raw && vlen)
    for (size_t k = 0; k < n; ++k)
      if (((char **)(void *)raw)[k]) H5free_memory(((char **)(void *)raw)[k]);
  free(raw);
  H5Tclose(m);
  return e;
}

nest_status nest_h5_attr_str(hid_t obj, const char *path, const char *where, const char *name,
                             char **out) {
  *out = NULL;
  hid_t a, ftype;
  NEST_CALL(nest_h5_attr_open(obj, path, where, name, H5T_STRING, 0, &a));
  ftype = H5Aget_type(a);
  herr_t e = ftype >= 0 ? read_strings(a, 1, ftype, 1, out) : -1;
  if (ftype >= 0) H5Tclose(ftype);
  H5Aclose(a);
  if (e < 0) {
    free(*out);
    *out = NULL;
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s: cannot read string attribute '%s'", path, where,
                    name);
  }
  return NEST_OK;
}

herr_t nest_h5_put_attr(hid_t obj, const char *name, hid_t ftype, hid_t mtype, int n,
                        const void *v) {
  hsize_t d = (hsize_t)n;
  hid_t sp = n == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &d, NULL);
  hid_t a = sp >= 0 ? H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT) : -1;
  herr_t e = a >= 0 ? H5Awrite(a, mtype, v) : -1;
  if (a >= 0 && H5Aclose(a) < 0) e = -1;
  if (sp >= 0) H5Sclose(sp);
  return e;
}

herr_t nest_h5_put_int(hid_t obj, const char *name, int v) {
  return nest_h5_put_attr(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT, 0, &v);
}

/* Variable-length UTF-8 string type. */
static hid_t vlen_utf8(void) {
  hid_t t = H5Tcopy(H5T_C_S1);
  if (t < 0) return -1;
  if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) nest_h5_close(&t, H5Tclose);
  return t;
}

herr_t nest_h5_put_str(hid_t obj, const char *name, const char *s) {
  hid_t t = vlen_utf8();
  if (t < 0) return -1;
  herr_t e = nest_h5_put_attr(obj, name, t, t, 0, &s);
  H5Tclose(t);
  return e;
}

herr_t nest_h5_put_fixed_str(hid_t obj, const char *name, const char *s) {
  hid_t t = H5Tcopy(H5T_C_S1);
  herr_t e = t >= 0 ? H5Tset_size(t, strlen(s)) : -1;
  if (e >= 0) e = nest_h5_put_attr(obj, name, t, t, 0, s);
  if (t >= 0) H5Tclose(t);
  return e;
}

/* ---- small arrays --------------------------------------------------------------------------- */

herr_t nest_h5_put_fixed_strs(hid_t loc, const char *name, char *const *s, int n) {
  size_t width = 1;
  for (int k = 0; k < n; ++k)
    if (strlen(s[k]) > width) width = strlen(s[k]);
  char *buf = calloc(n ? (size_t)n : 1, width);
  hid_t t = buf ? H5Tcopy(H5T_C_S1) : -1;
  herr_t e = t >= 0 ? H5Tset_size(t, width) : -1;
  if (e >= 0) e = H5Tset_strpad(t, H5T_STR_NULLPAD);
  if (e >= 0) e = H5Tset_cset(t, H5T_CSET_UTF8);
  for (int k = 0; k < n && e >= 0; ++k) memcpy(buf + (size_t)k * width, s[k], strlen(s[k]));
  const hsize_t d = (hsize_t)n;
  if (e >= 0) e = nest_h5_put_dataset(loc, name, 1, &d, t, t, width, NEST_H5_CONTIGUOUS, buf);
  if (t >= 0) H5Tclose(t);
  free(buf);
  return e;
}

herr_t nest_h5_put_strs(hid_t loc, const char *name, char *const *s, int n, int as_attr) {
  hid_t t = vlen_utf8();
  if (t < 0) return -1;
  const hsize_t d = (hsize_t)n;
  herr_t e = as_attr ? nest_h5_put_attr(loc, name, t, t, n, s)
                     : nest_h5_put_dataset(loc, name, 1, &d, t, t, sizeof(char *),
                                           NEST_H5_CONTIGUOUS, s);
  H5Tclose(t);
  return e;
}

/* Attribute or dataset NAME of loc: open it, its element count and type. "attribute 'x'" or
 * "/x" into label for messages. */
static nest_status small_open(hid_t loc, const char *path, const char *name, int is_attr,
                              hid_t *obj, hssize_t *npts, hid_t *type, char *label, size_t cap) {
  snprintf(label, cap, is_attr ? "attribute '%s'" : "/%s", name);
  *obj = *type = -1;
  *npts = -1;
  if ((is_attr ? H5Aexists(loc, name) : H5Lexists(loc, name, H5P_DEFAULT)) <= 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: missing %s%s", path, is_attr ? "" : "dataset ", label);
  *obj = is_attr ? H5Aopen(loc, name, H5P_DEFAULT) : H5Dopen2(loc, name, H5P_DEFAULT);
  hid_t sp = *obj < 0 ? -1 : is_attr ? H5Aget_space(*obj) : H5Dget_space(*obj);
  *npts = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
  if (sp >= 0) H5Sclose(sp);
  if (*obj >= 0) *type = is_attr ? H5Aget_type(*obj) : H5Dget_type(*obj);
  if (*obj < 0 || *npts < 0 || *type < 0) {
    nest_h5_close(type, H5Tclose);
    nest_h5_close(obj, is_attr ? H5Aclose : H5Dclose);
    return NEST_ERR(NEST_ERR_FORMAT, "%s: cannot open %s", path, label);
  }
  return NEST_OK;
}

nest_status nest_h5_read_strs(hid_t loc, const char *path, const char *name, int is_attr, int n,
                              char ***out) {
  *out = NULL;
  hid_t obj, type;
  hssize_t np;
  char label[128];
  NEST_CALL(small_open(loc, path, name, is_attr, &obj, &np, &type, label, sizeof label));
  nest_status st = NEST_OK;
  char **s = NULL;
  if (H5Tget_class(type) != H5T_STRING || np != n)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s must be %d strings (nclasses), has %lld", path, label,
                  n, (long long)np);
  if (st == NEST_OK) st = nest_calloc((void **)&s, (size_t)n, sizeof(char *), name);
  if (st == NEST_OK && read_strings(obj, is_attr, type, (size_t)n, s) < 0)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read %s", path, label);
  H5Tclose(type);
  if (is_attr) H5Aclose(obj);
  else H5Dclose(obj);
  if (st != NEST_OK) {
    for (int k = 0; s && k < n; ++k) free(s[k]);
    free(s);
    return st;
  }
  *out = s;
  return NEST_OK;
}

nest_status nest_h5_read_floats(hid_t loc, const char *path, const char *name, int is_attr,
                                int len, int positive, float **out) {
  *out = NULL;
  hid_t obj, type;
  hssize_t np;
  char label[128];
  NEST_CALL(small_open(loc, path, name, is_attr, &obj, &np, &type, label, sizeof label));
  nest_status st = NEST_OK;
  float *v = NULL;
  if (H5Tget_class(type) != H5T_FLOAT || np != len)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s must be %d floats (one per channel or feature), has "
                  "%lld", path, label, len, (long long)np);
  if (st == NEST_OK) st = nest_malloc((void **)&v, sizeof(float) * (size_t)len, name);
  herr_t e = 0;
  if (st == NEST_OK)
    e = is_attr ? H5Aread(obj, H5T_NATIVE_FLOAT, v)
                : H5Dread(obj, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
  if (st == NEST_OK && e < 0) st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read %s", path, label);
  for (int i = 0; st == NEST_OK && i < len; ++i)
    if (!isfinite(v[i]) || (positive && !(v[i] > 0)))
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s[%d] = %g is %s", path, label, i, (double)v[i],
                    isnan(v[i]) ? "NaN" : !isfinite(v[i]) ? "Inf" : "not > 0");
  H5Tclose(type);
  if (is_attr) H5Aclose(obj);
  else H5Dclose(obj);
  if (st != NEST_OK) {
    free(v);
    return st;
  }
  *out = v;
  return NEST_OK;
}

/* ---- datasets ----------------------------------------------------------------------------- */

herr_t nest_h5_put_dataset(hid_t loc, const char *name, int rank, const hsize_t *dims,
                           hid_t ftype, hid_t mtype, size_t elem, unsigned flags,
                           const void *buf) {
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  if (dcpl < 0) return -1;
  hsize_t total = 1;
  for (int i = 0; i < rank; ++i) total *= dims[i];
  if (total > 0 && !(flags & NEST_H5_CONTIGUOUS)) {
    hsize_t chunk[4];
    size_t row = elem;
    for (int i = 1; i < rank; ++i) {
      chunk[i] = dims[i];
      row *= (size_t)dims[i];
    }
    hsize_t rows = (hsize_t)((1u << 20) / row);
    if (rows < 1) rows = 1;
    if (rows > dims[0]) rows = dims[0];
    chunk[0] = rows;
    /* HDF5 chunks are limited to 4 GB; a larger row keeps the contiguous layout. */
    if ((double)row * (double)rows < 4e9 && H5Pset_chunk(dcpl, rank, chunk) >= 0) {
      if ((flags & NEST_H5_DEFLATE) && H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) {
        if (flags & NEST_H5_SHUFFLE) H5Pset_shuffle(dcpl);
        H5Pset_deflate(dcpl, 4);
      }
      /* last in the pipeline: the checksum covers the bytes as stored */
      if (flags & NEST_H5_FLETCHER32) H5Pset_fletcher32(dcpl);
    }
  }
  hid_t sp = H5Screate_simple(rank, dims, NULL);
  hid_t d = sp >= 0 ? H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT) : -1;
  herr_t e = d >= 0 ? (total ? H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) : 0) : -1;
  if (d >= 0 && H5Dclose(d) < 0) e = -1;
  if (sp >= 0) H5Sclose(sp);
  H5Pclose(dcpl);
  return e;
}

nest_status nest_h5_dset_open(hid_t loc, const char *path, const char *where, const char *name,
                              int min_rank, int max_rank, hid_t *d, int *rank, hsize_t dims[4],
                              hid_t *type) {
  *d = -1;
  if (type) *type = -1;
  if (H5Lexists(loc, name, H5P_DEFAULT) <= 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: missing dataset %s/%s", path, where, name);
  *d = H5Dopen2(loc, name, H5P_DEFAULT);
  if (*d < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s is not a readable dataset", path, where, name);
  hid_t sp = H5Dget_space(*d);
  *rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
  const int ok = *rank >= min_rank && *rank <= max_rank && *rank <= 4 &&
                 H5Sget_simple_extent_dims(sp, dims, NULL) == *rank;
  if (sp >= 0) H5Sclose(sp);
  if (ok && type) *type = H5Dget_type(*d);
  if (!ok || (type && *type < 0)) {
    nest_h5_close(d, H5Dclose);
    if (min_rank == max_rank)
      return NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s has rank %d, expected %d", path, where, name,
                      *rank, min_rank);
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s has rank %d, expected %d to %d", path, where,
                    name, *rank, min_rank, max_rank);
  }
  return NEST_OK;
}

int nest_h5_is_u8(hid_t type) {
  return type >= 0 && H5Tget_class(type) == H5T_INTEGER && H5Tget_size(type) == 1 &&
         H5Tget_sign(type) == H5T_SGN_NONE;
}

nest_status nest_h5_read_rows(hid_t d, const char *path, const char *what, int rank,
                              const hsize_t *dims, hsize_t first, hsize_t count, hid_t mtype,
                              void *buf) {
  hsize_t start[4] = {first, 0, 0, 0}, cnt[4];
  for (int i = 0; i < rank; ++i) cnt[i] = dims[i];
  cnt[0] = count;
  hid_t fs = H5Dget_space(d), ms = H5Screate_simple(rank, cnt, NULL);
  herr_t e = (fs >= 0 && ms >= 0) ? H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL)
                                  : -1;
  if (e >= 0) e = H5Dread(d, mtype, ms, fs, H5P_DEFAULT, buf);
  if (fs >= 0) H5Sclose(fs);
  if (ms >= 0) H5Sclose(ms);
  if (e < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read %s (corrupt or truncated file?)", path,
                    what);
  return NEST_OK;
}
