/* ckpt.c — the restart-checkpoint container (ckpt.h, docs/checkpoint-format.md): a model file
 * (written and read through model.c's layout, model_layout.h) plus momentum, /state datasets,
 * root string attributes and further nets in groups. What goes in is restart.c's business.
 * A file-format module: HDF5 through the helpers of h5io.h (HDF5 is called only by h5io.c and
 * the file-format modules model.c, ckpt.c, data/h5.c, data/shards.c). Serial HDF5, no MPI:
 * rank 0 writes, every rank reads on its own (docs/restart.md). */
#define _POSIX_C_SOURCE 200809L
#include "nest/ckpt.h"

#include "nest/atomic.h"
#include "nest/h5io.h"

#include "model_layout.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CKPT_COMPRESS
#define CKPT_COMPRESS 0
#endif

struct nest_ckpt {
  char path[4096], tmp[4096];
  int writing;
  hid_t file, state; /* state: the /state group */
  uint8_t *u8;       /* mask buffer of put_net */
  size_t u8cap;
};

static hid_t ck_ftype(nest_ck_type t) {
  switch (t) {
    case NEST_CK_I64: return H5T_STD_I64LE;
    case NEST_CK_F64: return H5T_IEEE_F64LE;
    case NEST_CK_F32: return H5T_IEEE_F32LE;
    default: return H5T_STD_U8LE;
  }
}
static hid_t ck_mtype(nest_ck_type t) {
  switch (t) {
    case NEST_CK_I64: return H5T_NATIVE_INT64;
    case NEST_CK_F64: return H5T_NATIVE_DOUBLE;
    case NEST_CK_F32: return H5T_NATIVE_FLOAT;
    default: return H5T_NATIVE_UINT8;
  }
}
static size_t ck_size(nest_ck_type t) {
  return t == NEST_CK_U8 ? 1 : t == NEST_CK_F32 ? 4 : 8;
}
static const char *ck_name(nest_ck_type t) {
  return t == NEST_CK_I64 ? "int64" : t == NEST_CK_F64 ? "float64" : t == NEST_CK_F32 ? "float32"
                                                                                   : "uint8";
}

nest_status nest_ckpt_create(const char *path, nest_ckpt **out) {
  nest_h5_quiet();
  *out = NULL;
  nest_ckpt *w;
  NEST_CALL(nest_calloc((void **)&w, 1, sizeof *w, "checkpoint writer"));
  w->file = w->state = -1;
  w->writing = 1;
  snprintf(w->path, sizeof w->path, "%s", path);
  nest_status st = nest_h5_begin(path, w->tmp, sizeof w->tmp, H5F_LIBVER_V110, &w->file);
  if (st != NEST_OK) {
    free(w);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  w->state = H5Gcreate2(w->file, "state", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const int v = NEST_CHECKPOINT_VERSION;
  if (w->state < 0 || nest_h5_put_int(w->file, "checkpoint_version", v) < 0) {
    nest_ckpt_close(&w);
    return NEST_ERR(NEST_ERR_IO, "%s.tmp: cannot create the checkpoint file", path);
  }
  *out = w;
  return NEST_OK;
}

nest_status nest_ckpt_put_net(nest_ckpt *w, const char *group, const nest_net *net, int momentum) {
  size_t maxmask;
  NEST_CALL(nest_model_check(net, w->path, &maxmask));
  if (maxmask > w->u8cap) {
    free(w->u8);
    w->u8 = NULL;
    w->u8cap = 0;
    NEST_CALL(nest_malloc((void **)&w->u8, maxmask, "mask buffer"));
    w->u8cap = maxmask;
  }
  hid_t loc = w->file;
  if (group) loc = H5Gcreate2(w->file, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  herr_t e = loc >= 0 ? nest_model_layout_write(loc, net, NULL, w->u8, momentum, CKPT_COMPRESS) : -1;
  if (group && loc >= 0 && H5Gclose(loc) < 0) e = -1;
  if (e < 0)
    return NEST_ERR(NEST_ERR_IO, "%s: writing the network%s%s failed (disk full?)", w->tmp,
                    group ? " /" : "", group ? group : "");
  return NEST_OK;
}

nest_status nest_ckpt_put_input(nest_ckpt *w, const nest_net *net, const nest_model_input *in) {
  return nest_model_layout_put_input(w->file, w->tmp, net, in);
}

nest_status nest_ckpt_put(nest_ckpt *w, const char *name, nest_ck_type type, const void *v,
                          size_t n) {
  hsize_t d = (hsize_t)n;
  if (nest_h5_put_dataset(w->state, name, 1, &d, ck_ftype(type), ck_mtype(type), ck_size(type),
                          NEST_H5_FLETCHER32, v) < 0)
    return NEST_ERR(NEST_ERR_IO, "%s: writing /state/%s failed (disk full?)", w->tmp, name);
  return NEST_OK;
}

nest_status nest_ckpt_put_strs(nest_ckpt *w, const char *name, const char *base, size_t stride,
                               size_t n, size_t width) {
  char *buf = NULL;
  NEST_CALL(nest_calloc((void **)&buf, n ? n : 1, width, "string table"));
  for (size_t i = 0; i < n; ++i) snprintf(buf + i * width, width, "%s", base + i * stride);
  hid_t t = H5Tcopy(H5T_C_S1);
  herr_t e = t >= 0 ? H5Tset_size(t, width) : -1;
  if (e >= 0) e = H5Tset_strpad(t, H5T_STR_NULLPAD);
  hsize_t d = (hsize_t)n;
  if (e >= 0) e = nest_h5_put_dataset(w->state, name, 1, &d, t, t, width, NEST_H5_FLETCHER32, buf);
  if (t >= 0) H5Tclose(t);
  free(buf);
  if (e < 0) return NEST_ERR(NEST_ERR_IO, "%s: writing /state/%s failed (disk full?)", w->tmp, name);
  return NEST_OK;
}

nest_status nest_ckpt_put_attr(nest_ckpt *w, const char *name, const char *value) {
  if (nest_h5_put_str(w->file, name, value) < 0)
    return NEST_ERR(NEST_ERR_IO, "%s: writing attribute %s failed", w->tmp, name);
  return NEST_OK;
}

nest_status nest_ckpt_commit(nest_ckpt **wp) {
  nest_ckpt *w = *wp;
  const herr_t e = H5Gclose(w->state);
  w->state = -1;
  nest_status st = e < 0 ? NEST_ERR(NEST_ERR_IO, "%s: closing /state failed (disk full?)", w->tmp)
                         : nest_h5_commit(&w->file, w->tmp, w->path);
  if (st == NEST_OK) w->tmp[0] = '\0'; /* nothing left to remove */
  nest_ckpt_close(wp);
  return st;
}

void nest_ckpt_close(nest_ckpt **wp) {
  if (!wp || !*wp) return;
  nest_ckpt *w = *wp;
  nest_h5_close(&w->state, H5Gclose);
  nest_h5_close(&w->file, H5Fclose);
  if (w->writing && w->tmp[0]) nest_atomic_abort(w->tmp);
  free(w->u8);
  free(w);
  *wp = NULL;
}

int nest_ckpt_is_checkpoint(const char *path) {
  hid_t f = nest_h5_probe(path);
  if (f < 0) return 0;
  const int is = H5Aexists(f, "checkpoint_version") > 0;
  H5Fclose(f);
  return is;
}

nest_status nest_ckpt_open(const char *path, nest_ckpt **out) {
  nest_h5_quiet();
  *out = NULL;
  nest_ckpt *r;
  NEST_CALL(nest_calloc((void **)&r, 1, sizeof *r, "checkpoint reader"));
  r->file = r->state = -1;
  snprintf(r->path, sizeof r->path, "%s", path);
  nest_status st = nest_model_open_file(path, &r->file);
  int v = 0;
  if (st == NEST_OK && H5Aexists(r->file, "checkpoint_version") <= 0)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: a model file, not a restart checkpoint (no "
                  "checkpoint_version)", path);
  if (st == NEST_OK) st = nest_h5_attr_int(r->file, path, "/", "checkpoint_version", &v);
  if (st == NEST_OK && v != NEST_CHECKPOINT_VERSION)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: checkpoint_version %d not supported (this build reads %d)",
                  path, v, NEST_CHECKPOINT_VERSION);
  if (st == NEST_OK) st = nest_h5_group_open(r->file, path, "", "state", &r->state);
  if (st != NEST_OK) {
    nest_ckpt_close(&r);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  *out = r;
  return NEST_OK;
}

int nest_ckpt_has(nest_ckpt *r, const char *name) {
  return H5Lexists(r->state, name, H5P_DEFAULT) > 0;
}

int nest_ckpt_has_group(nest_ckpt *r, const char *group) {
  return H5Lexists(r->file, group, H5P_DEFAULT) > 0;
}

/* Open /state/<name> as a 1-D dataset; its length and type. */
static nest_status ck_open(nest_ckpt *r, const char *name, hid_t *d, size_t *n, hid_t *type) {
  int rank;
  hsize_t dim[4];
  NEST_CALL(nest_h5_dset_open(r->state, r->path, "/state", name, 1, 1, d, &rank, dim, type));
  *n = (size_t)dim[0];
  return NEST_OK;
}

nest_status nest_ckpt_len(nest_ckpt *r, const char *name, size_t *n) {
  hid_t d, t;
  NEST_CALL(ck_open(r, name, &d, n, &t));
  H5Tclose(t);
  H5Dclose(d);
  return NEST_OK;
}

nest_status nest_ckpt_get(nest_ckpt *r, const char *name, nest_ck_type type, void *v, size_t n) {
  hid_t d, t;
  size_t have = 0;
  NEST_CALL(ck_open(r, name, &d, &have, &t));
  const H5T_class_t cls = H5Tget_class(t);
  const int ok_type = (type == NEST_CK_F64 || type == NEST_CK_F32) ? cls == H5T_FLOAT
                                                                     : cls == H5T_INTEGER;
  nest_status st = NEST_OK;
  if (!ok_type || H5Tget_size(t) != ck_size(type))
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /state/%s must be %s", r->path, name, ck_name(type));
  else if (have != n)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /state/%s has %zu elements, expected %zu", r->path, name,
                  have, n);
  else if (n > 0 && H5Dread(d, ck_mtype(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read /state/%s (checksum mismatch: corrupt or "
                  "truncated file?)", r->path, name);
  H5Tclose(t);
  H5Dclose(d);
  return st;
}

nest_status nest_ckpt_get_strs(nest_ckpt *r, const char *name, char **out, size_t *n,
                               size_t *width) {
  *out = NULL;
  hid_t d, t;
  NEST_CALL(ck_open(r, name, &d, n, &t));
  nest_status st = NEST_OK;
  *width = H5Tget_size(t);
  if (H5Tget_class(t) != H5T_STRING || H5Tis_variable_str(t) > 0 || *width < 1 ||
      *width > NEST_H5_MAX_STR)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /state/%s must hold fixed-length strings", r->path, name);
  char *buf = NULL;
  if (st == NEST_OK) st = nest_calloc((void **)&buf, *n ? *n : 1, *width + 1, "string table");
  hid_t m = st == NEST_OK ? H5Tcopy(H5T_C_S1) : -1;
  if (m >= 0 && (H5Tset_size(m, *width) < 0 || H5Tset_strpad(m, H5T_STR_NULLPAD) < 0)) nest_h5_close(&m, H5Tclose);
  if (st == NEST_OK && (m < 0 || (*n && H5Dread(d, m, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)))
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read /state/%s (checksum mismatch: corrupt or "
                  "truncated file?)", r->path, name);
  if (m >= 0) H5Tclose(m);
  H5Tclose(t);
  H5Dclose(d);
  if (st == NEST_OK) {
    for (size_t i = 0; i < *n; ++i) buf[i * *width + *width - 1] = '\0';
    *out = buf;
  } else {
    free(buf);
  }
  return st;
}

nest_status nest_ckpt_get_attr(nest_ckpt *r, const char *name, char **out) {
  return nest_h5_attr_str(r->file, r->path, "/", name, out);
}

nest_status nest_ckpt_get_net(nest_ckpt *r, const char *group, int max_batch, int nthreads,
                              int momentum, nest_net **out) {
  *out = NULL;
  if (max_batch <= 0) return NEST_ERR(NEST_ERR_ARG, "%s: max_batch must be positive", r->path);
  hid_t loc = r->file;
  if (group) NEST_CALL(nest_h5_group_open(r->file, r->path, "", group, &loc));
  nest_status st = nest_model_layout_read(loc, r->path, max_batch, nthreads, momentum, out);
  if (group) H5Gclose(loc);
  return st;
}
