/* checkpoint.c — model files: save / load a network in HDF5 (docs/model-format.md).
 * One of the two places that call HDF5 (the other is src/data/h5.c); HDF5's own error
 * printing is switched off and every failure becomes one nest message naming the file.
 * Uses the default (serial) file driver: no MPI.
 *
 * Layout (format_version 1):
 *   /                   attrs: format "nest-model", format_version, input_shape [c,h,w],
 *                              nclasses, nlayers, generation, arch, widths
 *   /layers/NNN_<name>  one group per layer, NNN = its index (at least 3 digits, so h5ls
 *                       lists them in order); attrs: kind, index, the kind's hyper-parameters
 *     <param>           float32, the declared dims (W, b, gamma, beta)
 *     <param>_mask      uint8 0/1, same dims, for maskable parameters only
 *     <buffer>          float32 [count] (running_mean, running_var)
 * Optional info attributes (nest_model_info; written only when known, absent ones read as
 * unknown): root stage, base_arch (strings), val_error, test_error (float64); layer groups
 * act_frac, in_frac (float64).
 * Objects the reader does not expect are ignored, so a restart checkpoint can be a model file
 * plus extra state. */
#define _POSIX_C_SOURCE 200809L
#include "nest/checkpoint.h"

#include "nest/atomic.h"

#include <errno.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LAYERS 100000
#define MAX_CLASSES (1 << 20)
#define MAX_STR 65536 /* arch strings of very deep nets stay far below this */

/* ---- the hyper-parameters each kind stores (shared by save and load) --------------------- */

typedef struct {
  const char *name;
  size_t off; /* offset in nest_layer_hparams */
  int is_float;
} hp_field;

#define HPI(f) {#f, offsetof(nest_layer_hparams, f), 0}
#define HPF(f) {#f, offsetof(nest_layer_hparams, f), 1}
static const hp_field dense_hp[] = {HPI(units)};
static const hp_field conv_hp[] = {HPI(out_c), HPI(kh), HPI(kw), HPI(stride), HPI(pad)};
static const hp_field pool_hp[] = {HPI(kh), HPI(kw), HPI(stride), HPI(pad)};
static const hp_field bn_hp[] = {HPF(eps), HPF(momentum)};
static const hp_field drop_hp[] = {HPF(rate)};

static const hp_field *hp_fields(nest_layer_kind kind, int *n) {
  switch (kind) {
    case NEST_LAYER_DENSE: *n = 1; return dense_hp;
    case NEST_LAYER_CONV2D: *n = 5; return conv_hp;
    case NEST_LAYER_MAXPOOL: *n = 4; return pool_hp;
    case NEST_LAYER_BATCHNORM: *n = 2; return bn_hp;
    case NEST_LAYER_DROPOUT: *n = 1; return drop_hp;
    default: *n = 0; return NULL; /* relu: nothing */
  }
}

static void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/* No HDF5 clean-up at exit: after a write fails (a full disk), HDF5 1.10.8 keeps the file
 * half-closed and its atexit clean-up crashes (HDFFV-11052, fixed upstream after 1.10.8), which
 * would turn a clean error exit into a segfault. Every file nest opens is closed explicitly,
 * so there is nothing left for the clean-up to do. Must run before any other HDF5 call. */
__attribute__((constructor)) static void h5_no_atexit(void) { H5dont_atexit(); }

static void h5_close(hid_t *id, herr_t (*close)(hid_t)) {
  if (*id >= 0) close(*id);
  *id = -1;
}

/* "12x20" into buf. */
static const char *dims_str(char *buf, size_t cap, int n, const hsize_t *d) {
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; i < n && used < cap; ++i) {
    int k = snprintf(buf + used, cap - used, "%s%llu", i ? "x" : "", (unsigned long long)d[i]);
    if (k < 0) break;
    used += (size_t)k;
  }
  if (n == 0) snprintf(buf, cap, "scalar");
  return buf;
}

/* ---- writing ------------------------------------------------------------------------------ */

static herr_t put_attr(hid_t obj, const char *name, hid_t ftype, hid_t mtype, int n,
                       const void *v) {
  hsize_t d = (hsize_t)n;
  hid_t sp = n == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &d, NULL);
  hid_t a = sp >= 0 ? H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT) : -1;
  herr_t e = a >= 0 ? H5Awrite(a, mtype, v) : -1;
  if (a >= 0 && H5Aclose(a) < 0) e = -1;
  if (sp >= 0) H5Sclose(sp);
  return e;
}

static herr_t put_int(hid_t obj, const char *name, int v) {
  return put_attr(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT, 0, &v);
}

/* Scalar variable-length UTF-8 string (what h5py reads back as str). */
static herr_t put_str(hid_t obj, const char *name, const char *s) {
  hid_t t = H5Tcopy(H5T_C_S1);
  if (t < 0) return -1;
  herr_t e = H5Tset_size(t, H5T_VARIABLE);
  if (e >= 0) e = H5Tset_cset(t, H5T_CSET_UTF8);
  if (e >= 0) e = put_attr(obj, name, t, t, 0, &s);
  H5Tclose(t);
  return e;
}

/* Dataset holding all of buf. Every dataset with elements is chunked (about 1 MiB pieces
 * along the first dimension) and carries HDF5's Fletcher-32 checksum, verified on every read;
 * compressed ones (masks, sparse weights: mostly zeros) are also deflated, weights shuffled. */
static herr_t put_dataset(hid_t loc, const char *name, int rank, const hsize_t *dims,
                          hid_t ftype, hid_t mtype, size_t elem, int compress, const void *buf) {
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  if (dcpl < 0) return -1;
  hsize_t total = 1;
  for (int i = 0; i < rank; ++i) total *= dims[i];
  if (total > 0) {
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
      if (compress && H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) {
        if (elem > 1) H5Pset_shuffle(dcpl);
        H5Pset_deflate(dcpl, 4);
      }
      /* last in the pipeline: the checksum covers the bytes as stored */
      H5Pset_fletcher32(dcpl);
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

/* One layer's group: attributes, parameters (+ masks), buffers; with mom (the net's momentum
 * arena) also "<param>_momentum". u8 has room for the largest maskable tensor. */
static herr_t put_layer(hid_t layers, const nest_layer *l, uint8_t *u8, const float *mom,
                        int compress) {
  char gname[NEST_NAME_LEN + 16];
  snprintf(gname, sizeof gname, "%03d_%s", l->index, l->name);
  hid_t g = H5Gcreate2(layers, gname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (g < 0) return -1;
  herr_t e = put_str(g, "kind", nest_layer_kind_name(l->kind));
  if (e >= 0) e = put_int(g, "index", l->index);
  int nf;
  const hp_field *f = hp_fields(l->kind, &nf);
  for (int i = 0; i < nf && e >= 0; ++i) {
    const char *v = (const char *)&l->hp + f[i].off;
    e = f[i].is_float ? put_attr(g, f[i].name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 0, v)
                      : put_attr(g, f[i].name, H5T_STD_I32LE, H5T_NATIVE_INT, 0, v);
  }
  /* partial-area convolution; optional on reading (files from before it have none: 0) */
  if (e >= 0 && l->kind == NEST_LAYER_CONV2D) e = put_int(g, "area", l->hp.area);
  for (int s = 0; s < l->nparams && e >= 0; ++s) {
    const nest_param *p = &l->param[s];
    hsize_t dims[4];
    for (int k = 0; k < p->ndims; ++k) dims[k] = (hsize_t)p->dims[k];
    e = put_dataset(g, p->name, p->ndims, dims, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4,
                    compress > 1 && p->maskable, l->p[s]);
    if (e >= 0 && p->maskable) {
      char mname[NEST_NAME_LEN + 8];
      snprintf(mname, sizeof mname, "%s_mask", p->name);
      for (size_t i = 0; i < p->count; ++i) u8[i] = l->m[s][i] != 0.0f;
      e = put_dataset(g, mname, p->ndims, dims, H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, compress > 0,
                      u8);
    }
    if (e >= 0 && mom) {
      char mname[NEST_NAME_LEN + 16];
      snprintf(mname, sizeof mname, "%s_momentum", p->name);
      e = put_dataset(g, mname, p->ndims, dims, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4,
                      compress > 1 && p->maskable, mom + p->offset);
    }
  }
  for (int s = 0; s < l->nbuffers && e >= 0; ++s) {
    hsize_t d = (hsize_t)l->buffer[s].count;
    e = put_dataset(g, l->buffer[s].name, 1, &d, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, 0,
                    l->buf[s]);
  }
  if (H5Gclose(g) < 0) e = -1;
  return e;
}

/* ---- info attributes (nest_model_info) ---------------------------------------------------- */

/* A fraction as the info stores it: NaN (unknown) or in [0, 1]. */
static int info_frac_ok(double v) { return isnan(v) || (v >= 0.0 && v <= 1.0); }

/* Refuse info that could not be read back, before touching the file system. */
static nest_status info_check(const nest_net *net, const nest_model_info *info, const char *path) {
  if (strnlen(info->stage, sizeof info->stage) == sizeof info->stage ||
      strnlen(info->base_arch, sizeof info->base_arch) == sizeof info->base_arch)
    return NEST_ERR(NEST_ERR_ARG, "%s: info stage or base_arch is not a terminated string", path);
  if (!info_frac_ok(info->val_error) || !info_frac_ok(info->test_error))
    return NEST_ERR(NEST_ERR_ARG, "%s: info val_error %g / test_error %g must be in [0, 1] or NaN",
                    path, info->val_error, info->test_error);
  if (info->has_top5 && (!info_frac_ok(info->val_top5_error) || !info_frac_ok(info->test_top5_error)))
    return NEST_ERR(NEST_ERR_ARG,
                    "%s: info val_top5_error %g / test_top5_error %g must be in [0, 1] or NaN", path,
                    info->val_top5_error, info->test_top5_error);
  if (info->nlayers != 0 && info->nlayers != net->nlayers)
    return NEST_ERR(NEST_ERR_ARG, "%s: info has %d layers but the net has %d", path,
                    info->nlayers, net->nlayers);
  for (int i = 0; i < info->nlayers; ++i) {
    const double a = info->act_frac ? info->act_frac[i] : NAN;
    const double b = info->in_frac ? info->in_frac[i] : NAN;
    if (!info_frac_ok(a) || !info_frac_ok(b))
      return NEST_ERR(NEST_ERR_ARG, "%s: info act_frac %g / in_frac %g of layer %s must be in "
                      "[0, 1] or NaN", path, a, b, net->layers[i]->name);
  }
  return NEST_OK;
}

static herr_t put_double(hid_t obj, const char *name, double v) {
  return put_attr(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, &v);
}

/* Root attributes; only what is known, so "absent" and "unknown" are the same on read. */
static herr_t put_info_root(hid_t file, const nest_model_info *info) {
  herr_t e = 0;
  if (info->stage[0]) e = put_str(file, "stage", info->stage);
  if (e >= 0 && info->base_arch[0]) e = put_str(file, "base_arch", info->base_arch);
  if (e >= 0 && !isnan(info->val_error)) e = put_double(file, "val_error", info->val_error);
  if (e >= 0 && !isnan(info->test_error)) e = put_double(file, "test_error", info->test_error);
  if (e >= 0 && info->has_top5 && !isnan(info->val_top5_error))
    e = put_double(file, "val_top5_error", info->val_top5_error);
  if (e >= 0 && info->has_top5 && !isnan(info->test_top5_error))
    e = put_double(file, "test_top5_error", info->test_top5_error);
  return e;
}

/* Per-layer attributes, added to the groups put_layer wrote (a separate pass keeps put_layer
 * about the net alone). */
static herr_t put_info_layers(hid_t layers, const nest_net *net, const nest_model_info *info) {
  herr_t e = 0;
  for (int i = 0; i < info->nlayers && e >= 0; ++i) {
    const double a = info->act_frac ? info->act_frac[i] : NAN;
    const double b = info->in_frac ? info->in_frac[i] : NAN;
    if (isnan(a) && isnan(b)) continue;
    char gname[NEST_NAME_LEN + 16];
    snprintf(gname, sizeof gname, "%03d_%s", net->layers[i]->index, net->layers[i]->name);
    hid_t g = H5Gopen2(layers, gname, H5P_DEFAULT);
    if (g < 0) return -1;
    if (!isnan(a)) e = put_double(g, "act_frac", a);
    if (e >= 0 && !isnan(b)) e = put_double(g, "in_frac", b);
    if (H5Gclose(g) < 0) e = -1;
  }
  return e;
}

nest_status nest_model_save(const nest_net *net, const char *path) {
  return nest_model_save_info(net, NULL, path);
}

/* Refuse what could not be read back, before touching the file system; *maxmask = the
 * largest maskable tensor (the u8 buffer's size). */
static nest_status model_check(const nest_net *net, const char *path, size_t *maxmask) {
  *maxmask = 1;
  for (int i = 0; i < net->nlayers; ++i) {
    const nest_layer *l = net->layers[i];
    if (!l->name[0] || strchr(l->name, '/'))
      return NEST_ERR(NEST_ERR_ARG, "%s: layer %d name '%s' cannot be saved (empty or has '/')",
                      path, i, l->name);
    for (int s = 0; s < l->nparams; ++s) {
      const nest_param *p = &l->param[s];
      if (!p->maskable) continue;
      if (p->count > *maxmask) *maxmask = p->count;
      for (size_t k = 0; k < p->count; ++k)
        if (l->m[s][k] == 0.0f && l->p[s][k] != 0.0f)
          return NEST_ERR(NEST_ERR_INTERNAL,
                          "%s: not saved: %s.%s[%zu] = %g is non-zero but dormant (mask 0)", path,
                          l->name, p->name, k, (double)l->p[s][k]);
    }
  }
  return NEST_OK;
}

/* The model layout (root attributes, /layers) under loc (the file or a group). compress: 0 =
 * none, 1 = masks deflated, 2 = masks and weights (model files: small on disk; restart
 * checkpoints use CKPT_COMPRESS, chosen for write speed, see bench_checkpoint). */
static herr_t write_model(hid_t loc, const nest_net *net, const nest_model_info *info,
                          uint8_t *u8, int momentum, int compress) {
  char arch[MAX_STR], widths[MAX_STR];
  nest_net_arch_string(net, arch, sizeof arch);
  nest_net_widths_string(net, widths, sizeof widths);
  const int shape[3] = {net->in_shape.c, net->in_shape.h, net->in_shape.w};
  const unsigned long long gen = net->generation;
  hid_t layers = -1;
  herr_t e = put_str(loc, "format", NEST_MODEL_FORMAT);
  if (e >= 0) e = put_int(loc, "format_version", NEST_MODEL_VERSION);
  if (e >= 0) e = put_attr(loc, "input_shape", H5T_STD_I32LE, H5T_NATIVE_INT, 3, shape);
  if (e >= 0) e = put_int(loc, "nclasses", net->nclasses);
  if (e >= 0) e = put_int(loc, "nlayers", net->nlayers);
  if (e >= 0) e = put_attr(loc, "generation", H5T_STD_U64LE, H5T_NATIVE_ULLONG, 0, &gen);
  if (e >= 0) e = put_str(loc, "arch", arch);
  if (e >= 0) e = put_str(loc, "widths", widths);
  if (e >= 0 && info) e = put_info_root(loc, info);
  if (e >= 0) {
    /* Track creation order too, so tools that list by creation order see layer order. */
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    if (gcpl >= 0) H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    layers = gcpl >= 0 ? H5Gcreate2(loc, "layers", H5P_DEFAULT, gcpl, H5P_DEFAULT) : -1;
    if (gcpl >= 0) H5Pclose(gcpl);
    e = layers >= 0 ? 0 : -1;
  }
  for (int i = 0; i < net->nlayers && e >= 0; ++i)
    e = put_layer(layers, net->layers[i], u8, momentum ? net->mom : NULL, compress);
  if (e >= 0 && info) e = put_info_layers(layers, net, info);
  if (layers >= 0 && H5Gclose(layers) < 0) e = -1;
  return e;
}

/* A new HDF5 file at tmp: 1.10 object headers carry checksums of their own (attributes
 * included) and have no 64 KiB attribute limit (long arch strings of deep nets). */
static hid_t create_file(const char *tmp) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl < 0) return -1;
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_LATEST);
  hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  return file;
}

nest_status nest_model_save_info(const nest_net *net, const nest_model_info *info,
                                 const char *path) {
  h5_quiet();
  if (!net || !path || !*path) return NEST_ERR(NEST_ERR_ARG, "nest_model_save: no net or path");
  if (info) NEST_CALL(info_check(net, info, path));
  size_t maxmask;
  NEST_CALL(model_check(net, path, &maxmask));

  char tmp[4096];
  NEST_CALL(nest_atomic_begin(path, tmp, sizeof tmp));

  nest_status st = NEST_OK;
  uint8_t *u8 = NULL;
  hid_t file = -1;
  NEST_CALL_GOTO(st, nest_malloc((void **)&u8, maxmask, "mask buffer"), done);
  file = create_file(tmp);
  if (file < 0) {
    st = NEST_ERR(NEST_ERR_IO, "%s: cannot create HDF5 file", tmp);
    goto done;
  }
  if (write_model(file, net, info, u8, 0, 2) < 0) {
    st = NEST_ERR(NEST_ERR_IO, "%s: writing the HDF5 file failed (disk full?)", tmp);
    goto done;
  }
  herr_t e = H5Fclose(file);
  file = -1;
  if (e < 0) {
    st = NEST_ERR(NEST_ERR_IO, "%s: closing the HDF5 file failed (disk full?)", tmp);
    goto done;
  }
  st = nest_atomic_commit(tmp, path);

done:
  h5_close(&file, H5Fclose);
  free(u8);
  if (st != NEST_OK) nest_atomic_abort(tmp);
  return st;
}

/* ---- reading ------------------------------------------------------------------------------ */

/* Attribute `name` of obj (`where` names obj in messages: "/" or "/layers/000_fc1"): open it,
 * check its type class and element count (0 = scalar or one element). */
static nest_status attr_open(hid_t obj, const char *path, const char *where, const char *name,
                             H5T_class_t want, hssize_t want_n, hid_t *attr) {
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
    h5_close(attr, H5Aclose);
    const char *what = want == H5T_INTEGER ? "integer" : want == H5T_FLOAT ? "float" : "string";
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s: attribute '%s' must be %lld %s%s", path, where,
                    name, (long long)(want_n ? want_n : 1), what, want_n > 1 ? "s" : "");
  }
  return NEST_OK;
}

static nest_status attr_read(hid_t obj, const char *path, const char *where, const char *name,
                             H5T_class_t cls, int n, hid_t mtype, void *v) {
  hid_t a;
  NEST_CALL(attr_open(obj, path, where, name, cls, n, &a));
  herr_t e = H5Aread(a, mtype, v);
  H5Aclose(a);
  if (e < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s: cannot read attribute '%s'", path, where, name);
  return NEST_OK;
}

static nest_status attr_int(hid_t obj, const char *path, const char *where, const char *name,
                            int *v) {
  return attr_read(obj, path, where, name, H5T_INTEGER, 0, H5T_NATIVE_INT, v);
}

/* A scalar string attribute (variable- or fixed-length) as a malloc'd C string. */
static nest_status attr_str(hid_t obj, const char *path, const char *where, const char *name,
                            char **out) {
  *out = NULL;
  hid_t a, ftype = -1, mtype = -1;
  NEST_CALL(attr_open(obj, path, where, name, H5T_STRING, 0, &a));
  nest_status st = NEST_OK;
  char *vl = NULL, *fixed = NULL;
  ftype = H5Aget_type(a);
  mtype = H5Tcopy(H5T_C_S1);
  herr_t e = (ftype >= 0 && mtype >= 0) ? H5Tset_cset(mtype, H5Tget_cset(ftype)) : -1;
  if (e >= 0 && H5Tis_variable_str(ftype) > 0) {
    e = H5Tset_size(mtype, H5T_VARIABLE);
    if (e >= 0) e = H5Aread(a, mtype, &vl);
    if (e >= 0) {
      size_t len = vl ? strnlen(vl, MAX_STR) : 0;
      st = nest_malloc((void **)out, len + 1, name);
      if (st == NEST_OK) {
        memcpy(*out, vl ? vl : "", len);
        (*out)[len] = '\0';
      }
    }
  } else if (e >= 0) {
    size_t sz = H5Tget_size(ftype);
    if (sz == 0 || sz > MAX_STR) e = -1;
    if (e >= 0) e = H5Tset_size(mtype, sz);
    if (e >= 0) e = H5Tset_strpad(mtype, H5T_STR_NULLPAD);
    if (e >= 0) st = nest_calloc((void **)&fixed, sz + 1, 1, name);
    if (e >= 0 && st == NEST_OK) e = H5Aread(a, mtype, fixed);
    if (e >= 0 && st == NEST_OK) {
      *out = fixed;
      fixed = NULL;
    }
  }
  if (e < 0 && st == NEST_OK)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s: cannot read string attribute '%s'", path, where,
                  name);
  if (vl) H5free_memory(vl);
  free(fixed);
  h5_close(&mtype, H5Tclose);
  h5_close(&ftype, H5Tclose);
  H5Aclose(a);
  if (st != NEST_OK) {
    free(*out);
    *out = NULL;
  }
  return st;
}

/* Open a model file: a readable regular file, HDF5, format "nest-model", a version we read. */
static nest_status model_open(const char *path, hid_t *file) {
  *file = -1;
  struct stat sb;
  if (stat(path, &sb) != 0) return NEST_ERR(NEST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  if (S_ISDIR(sb.st_mode)) return NEST_ERR(NEST_ERR_IO, "%s: is a directory, not a model file", path);
  /* fopen first: HDF5 does not say why an open failed (permissions), strerror does. */
  FILE *probe = fopen(path, "rb");
  if (!probe) return NEST_ERR(NEST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  fclose(probe);
  if (H5Fis_hdf5(path) <= 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: not an HDF5 file (not a nest model file)", path);
  *file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (*file < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: cannot open as HDF5 (truncated or corrupt file?)", path);
  nest_status st = NEST_OK;
  char *fmt = NULL;
  int version = 0;
  if (H5Aexists(*file, "format") <= 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: not a nest model file (no 'format' attribute)", path);
    goto done;
  }
  NEST_CALL_GOTO(st, attr_str(*file, path, "/", "format", &fmt), done);
  if (strcmp(fmt, NEST_MODEL_FORMAT) != 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: not a nest model file (format '%.64s', expected '%s')",
                  path, fmt, NEST_MODEL_FORMAT);
    goto done;
  }
  NEST_CALL_GOTO(st, attr_int(*file, path, "/", "format_version", &version), done);
  if (version != NEST_MODEL_VERSION)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: format_version %d not supported (this build reads %d)",
                  path, version, NEST_MODEL_VERSION);
done:
  free(fmt);
  if (st != NEST_OK) h5_close(file, H5Fclose);
  return st;
}

/* A layer group found under /layers. */
typedef struct {
  char gname[NEST_NAME_LEN + 16]; /* "000_fc1" */
  char where[NEST_NAME_LEN + 32]; /* "/layers/000_fc1", for messages */
  char name[NEST_NAME_LEN];       /* "fc1" */
} layer_entry;

/* List /layers: exactly `nlayers` groups named NNN_<name>, indices 0..nlayers-1 once each,
 * returned in index order. Each group's 'index' attribute must agree. */
static nest_status list_layers(hid_t file, const char *path, int nlayers, layer_entry **out) {
  *out = NULL;
  nest_status st = NEST_OK;
  layer_entry *ls = NULL;
  hid_t layers = -1;
  if (H5Lexists(file, "layers", H5P_DEFAULT) <= 0 ||
      (layers = H5Gopen2(file, "layers", H5P_DEFAULT)) < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: missing group /layers", path);
  H5G_info_t info;
  if (H5Gget_info(layers, &info) < 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot list group /layers", path);
    goto done;
  }
  if (info.nlinks != (hsize_t)nlayers) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /layers has %llu entries but nlayers = %d", path,
                  (unsigned long long)info.nlinks, nlayers);
    goto done;
  }
  NEST_CALL_GOTO(st, nest_calloc((void **)&ls, (size_t)nlayers, sizeof *ls, "layer list"), done);
  for (int k = 0; k < nlayers; ++k) {
    char g[256];
    ssize_t len = H5Lget_name_by_idx(layers, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)k, g,
                                     sizeof g, H5P_DEFAULT);
    if (len < 0 || (size_t)len >= sizeof g) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: /layers entry %d has an unreadable or too long name",
                    path, k);
      goto done;
    }
    char *end;
    errno = 0;
    long idx = strtol(g, &end, 10);
    const char *name = end + 1;
    if (end == g || *end != '_' || g[0] < '0' || g[0] > '9' || errno || idx < 0 ||
        idx >= nlayers || !*name || strlen(name) >= NEST_NAME_LEN ||
        (size_t)len >= sizeof ls[0].gname) {
      st = NEST_ERR(NEST_ERR_FORMAT,
                    "%s: /layers/%s: expected a group named NNN_<name> with NNN in [0, %d) and a "
                    "name of 1 to %d characters",
                    path, g, nlayers, NEST_NAME_LEN - 1);
      goto done;
    }
    layer_entry *e = &ls[idx];
    if (e->gname[0]) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: /layers/%s and /layers/%s both claim index %ld", path,
                    e->gname, g, idx);
      goto done;
    }
    /* Lengths checked above. */
    memcpy(e->gname, g, (size_t)len + 1);
    memcpy(e->where, "/layers/", 8);
    memcpy(e->where + 8, g, (size_t)len + 1);
    memcpy(e->name, name, strlen(name) + 1);
  }
  /* nlinks == nlayers and no index twice: every index 0..nlayers-1 is present. */
  for (int i = 0; i < nlayers; ++i) {
    hid_t g = H5Gopen2(layers, ls[i].gname, H5P_DEFAULT);
    if (g < 0) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s is not a group", path, ls[i].where);
      goto done;
    }
    int index = -1;
    st = attr_int(g, path, ls[i].where, "index", &index);
    H5Gclose(g);
    if (st != NEST_OK) {
      nest_error_trace(__FILE__, __LINE__);
      goto done;
    }
    if (index != i) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s: attribute index = %d disagrees with its name",
                    path, ls[i].where, index);
      goto done;
    }
  }
  *out = ls;
  ls = NULL;
done:
  free(ls);
  h5_close(&layers, H5Gclose);
  return st;
}

/* Open dataset `name` in group g; its rank and dims, and whether its type is float32-like
 * (float class) or uint8. */
static nest_status dset_open(hid_t g, const char *path, const char *where, const char *name,
                             hid_t *d, int *rank, hsize_t dims[4], int *is_float, int *is_u8) {
  *d = -1;
  if (H5Lexists(g, name, H5P_DEFAULT) <= 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: missing dataset %s/%s", path, where, name);
  *d = H5Dopen2(g, name, H5P_DEFAULT);
  if (*d < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s is not a readable dataset", path, where, name);
  hid_t sp = H5Dget_space(*d), ty = H5Dget_type(*d);
  *rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
  if (*rank >= 0 && *rank <= 4) H5Sget_simple_extent_dims(sp, dims, NULL);
  *is_float = ty >= 0 && H5Tget_class(ty) == H5T_FLOAT;
  *is_u8 = ty >= 0 && H5Tget_class(ty) == H5T_INTEGER && H5Tget_size(ty) == 1 &&
           H5Tget_sign(ty) == H5T_SGN_NONE;
  if (sp >= 0) H5Sclose(sp);
  if (ty >= 0) H5Tclose(ty);
  if (*rank < 1 || *rank > 4) {
    h5_close(d, H5Dclose);
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s has rank %d, expected 1 to 4", path, where, name,
                    *rank);
  }
  return NEST_OK;
}

/* Read dataset `name` of group g, which must have exactly the dims `want` (rank n) and be
 * float (u8 = 0) or uint8 (u8 = 1), into buf. */
static nest_status read_exact(hid_t g, const char *path, const char *where, const char *name,
                              int n, const int *want, int u8, void *buf) {
  hid_t d;
  int rank, is_float, is_u8;
  hsize_t dims[4];
  NEST_CALL(dset_open(g, path, where, name, &d, &rank, dims, &is_float, &is_u8));
  nest_status st = NEST_OK;
  int same = rank == n;
  hsize_t w[4];
  for (int k = 0; k < n; ++k) {
    w[k] = (hsize_t)want[k];
    same = same && dims[k] == w[k];
  }
  char have_s[96], want_s[96];
  if (u8 ? !is_u8 : !is_float)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s must be %s", path, where, name,
                  u8 ? "uint8" : "float32");
  else if (!same)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s has dims %s, expected %s",
                  path, where, name, dims_str(have_s, sizeof have_s, rank, dims),
                  dims_str(want_s, sizeof want_s, n, w));
  else if (H5Dread(d, u8 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                   buf) < 0)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: cannot read %s/%s (corrupt or truncated file?)", path,
                  where, name);
  H5Dclose(d);
  return st;
}

static nest_status check_finite(const char *path, const char *where, const char *name,
                                const float *v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!isfinite(v[i]))
      return NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s[%zu] is %s", path, where, name, i,
                      isnan(v[i]) ? "NaN" : "Inf");
  return NEST_OK;
}

/* Mask bytes must be 0/1. */
static nest_status check_mask(const char *path, const char *where, const char *name,
                              const uint8_t *m, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (m[i] > 1)
      return NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s[%zu] = %u: masks must be 0 or 1", path, where,
                      name, i, (unsigned)m[i]);
  return NEST_OK;
}

static nest_status kind_of(const char *path, const char *where, const char *s,
                           nest_layer_kind *kind) {
  for (int k = 0; k < NEST_LAYER_KIND_COUNT; ++k)
    if (nest_layer_ops_of((nest_layer_kind)k) &&
        strcmp(nest_layer_kind_name((nest_layer_kind)k), s) == 0) {
      *kind = (nest_layer_kind)k;
      return NEST_OK;
    }
  return NEST_ERR(NEST_ERR_FORMAT, "%s: %s: unknown layer kind '%.64s'", path, where, s);
}

/* Root attributes and layer list shared by the two readers. */
typedef struct {
  nest_shape in;
  int nclasses, nlayers;
  unsigned long long generation;
  layer_entry *layers;
} model_head;

static nest_status read_head(hid_t file, const char *path, model_head *h) {
  memset(h, 0, sizeof *h);
  int shape[3];
  NEST_CALL(attr_read(file, path, "/", "input_shape", H5T_INTEGER, 3, H5T_NATIVE_INT, shape));
  if (shape[0] < 1 || shape[1] < 1 || shape[2] < 1 ||
      (double)shape[0] * shape[1] * shape[2] > (double)INT_MAX)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: input_shape %dx%dx%d is not a valid sample shape", path,
                    shape[0], shape[1], shape[2]);
  h->in = (nest_shape){shape[0], shape[1], shape[2]};
  NEST_CALL(attr_int(file, path, "/", "nclasses", &h->nclasses));
  if (h->nclasses < 1 || h->nclasses > MAX_CLASSES)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: nclasses = %d out of range [1, %d]", path, h->nclasses,
                    MAX_CLASSES);
  NEST_CALL(attr_int(file, path, "/", "nlayers", &h->nlayers));
  if (h->nlayers < 1 || h->nlayers > MAX_LAYERS)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: nlayers = %d out of range [1, %d]", path, h->nlayers,
                    MAX_LAYERS);
  NEST_CALL(attr_read(file, path, "/", "generation", H5T_INTEGER, 0, H5T_NATIVE_ULLONG,
                      &h->generation));
  NEST_CALL(list_layers(file, path, h->nlayers, &h->layers));
  return NEST_OK;
}

/* The spec of layer i from its group's attributes. */
static nest_status read_spec(hid_t g, const char *path, const layer_entry *e,
                             nest_layer_spec *spec) {
  memset(spec, 0, sizeof *spec);
  char *ks = NULL;
  NEST_CALL(attr_str(g, path, e->where, "kind", &ks));
  nest_status st = kind_of(path, e->where, ks, &spec->kind);
  free(ks);
  NEST_CALL(st);
  snprintf(spec->name, sizeof spec->name, "%s", e->name);
  int nf;
  const hp_field *f = hp_fields(spec->kind, &nf);
  for (int k = 0; k < nf; ++k) {
    char *v = (char *)&spec->hp + f[k].off;
    if (f[k].is_float)
      NEST_CALL(attr_read(g, path, e->where, f[k].name, H5T_FLOAT, 0, H5T_NATIVE_FLOAT, v));
    else
      NEST_CALL(attr_int(g, path, e->where, f[k].name, (int *)(void *)v));
  }
  if (spec->kind == NEST_LAYER_CONV2D && H5Aexists(g, "area") > 0)
    NEST_CALL(attr_int(g, path, e->where, "area", &spec->hp.area));
  return NEST_OK;
}

/* Copy layer l's tensors from its group: values, masks (0/1, values 0 where dormant),
 * buffers. u8 has room for the largest maskable tensor. */
static nest_status read_layer_data(hid_t g, const char *path, const char *where, nest_layer *l,
                                   uint8_t *u8, float *mom) {
  for (int s = 0; s < l->nparams; ++s) {
    const nest_param *p = &l->param[s];
    NEST_CALL(read_exact(g, path, where, p->name, p->ndims, p->dims, 0, l->p[s]));
    NEST_CALL(check_finite(path, where, p->name, l->p[s], p->count));
    if (mom) { /* restart checkpoints: the optimizer's momentum */
      char mname[NEST_NAME_LEN + 16];
      snprintf(mname, sizeof mname, "%s_momentum", p->name);
      NEST_CALL(read_exact(g, path, where, mname, p->ndims, p->dims, 0, mom + p->offset));
      NEST_CALL(check_finite(path, where, mname, mom + p->offset, p->count));
    }
    if (!p->maskable) continue; /* the mask stays all ones (nest_net_create) */
    char mname[NEST_NAME_LEN + 8];
    snprintf(mname, sizeof mname, "%s_mask", p->name);
    NEST_CALL(read_exact(g, path, where, mname, p->ndims, p->dims, 1, u8));
    NEST_CALL(check_mask(path, where, mname, u8, p->count));
    for (size_t i = 0; i < p->count; ++i) {
      if (!u8[i] && l->p[s][i] != 0.0f)
        return NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s[%zu] = %g but its mask is 0 (dormant weights "
                        "must be 0)", path, where, p->name, i, (double)l->p[s][i]);
      l->m[s][i] = u8[i] ? 1.0f : 0.0f;
    }
  }
  for (int s = 0; s < l->nbuffers; ++s) {
    const nest_buffer *b = &l->buffer[s];
    int n = (int)b->count;
    NEST_CALL(read_exact(g, path, where, b->name, 1, &n, 0, l->buf[s]));
    NEST_CALL(check_finite(path, where, b->name, l->buf[s], b->count));
    for (size_t i = 0; b->mask && i < b->count; ++i)
      if (l->buf[s][i] != 0.0f && l->buf[s][i] != 1.0f)
        return NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s[%zu] = %g is not 0 or 1 (a mask)", path,
                        where, b->name, i, (double)l->buf[s][i]);
    /* A negative running variance would make evaluation take the root of a negative. */
    if (strcmp(b->name, "running_var") == 0)
      for (size_t i = 0; i < b->count; ++i)
        if (l->buf[s][i] < 0.0f)
          return NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s[%zu] = %g is negative", path, where,
                          b->name, i, (double)l->buf[s][i]);
  }
  return NEST_OK;
}

/* The net stored under loc (the file or a group) in the model layout. */
static nest_status load_model(hid_t loc, const char *path, int max_batch, int nthreads,
                              int momentum, nest_net **out) {
  hid_t layers = -1, g = -1;
  model_head h = {0};
  nest_layer_spec *specs = NULL;
  nest_net *net = NULL;
  uint8_t *u8 = NULL;
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, read_head(loc, path, &h), done);
  layers = H5Gopen2(loc, "layers", H5P_DEFAULT);
  NEST_CALL_GOTO(st, nest_calloc((void **)&specs, (size_t)h.nlayers, sizeof *specs, "layer specs"),
                 done);
  for (int i = 0; i < h.nlayers; ++i) {
    g = H5Gopen2(layers, h.layers[i].gname, H5P_DEFAULT);
    NEST_CALL_GOTO(st, read_spec(g, path, &h.layers[i], &specs[i]), done);
    h5_close(&g, H5Gclose);
  }
  st = nest_net_create(specs, h.nlayers, h.in, h.nclasses, max_batch, nthreads, &net);
  if (st == NEST_ERR_CONFIG || st == NEST_ERR_ARG) {
    /* The layer specs in the file are impossible (setup's message names the layer). */
    char why[512];
    snprintf(why, sizeof why, "%s", nest_error_message());
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: layers do not form a valid network: %s", path, why);
    goto done;
  }
  if (st != NEST_OK) {
    nest_error_trace(__FILE__, __LINE__);
    goto done;
  }
  size_t maxmask = 1;
  for (int t = 0; t < net->ntensors; ++t)
    if (net->tensors[t].param->maskable && net->tensors[t].param->count > maxmask)
      maxmask = net->tensors[t].param->count;
  NEST_CALL_GOTO(st, nest_malloc((void **)&u8, maxmask, "mask buffer"), done);
  for (int i = 0; i < h.nlayers; ++i) {
    g = H5Gopen2(layers, h.layers[i].gname, H5P_DEFAULT);
    NEST_CALL_GOTO(st, read_layer_data(g, path, h.layers[i].where, net->layers[i], u8,
                                       momentum ? net->mom : NULL),
                   done);
    h5_close(&g, H5Gclose);
  }
  net->generation = (uint64_t)h.generation;
  *out = net;
  net = NULL;
done:
  h5_close(&g, H5Gclose);
  h5_close(&layers, H5Gclose);
  free(h.layers);
  free(specs);
  free(u8);
  nest_net_destroy(&net);
  return st;
}

nest_status nest_model_load(const char *path, int max_batch, int nthreads, nest_net **out) {
  h5_quiet();
  if (out) *out = NULL;
  if (!path || !*path || !out) return NEST_ERR(NEST_ERR_ARG, "nest_model_load: no path");
  if (max_batch <= 0) return NEST_ERR(NEST_ERR_ARG, "%s: max_batch must be positive", path);
  hid_t file = -1;
  NEST_CALL(model_open(path, &file));
  nest_status st = load_model(file, path, max_batch, nthreads, 0, out);
  h5_close(&file, H5Fclose);
  return st;
}

/* ---- the light mask reader ----------------------------------------------------------------- */

void nest_model_masks_free(nest_model_masks **mp) {
  if (!mp || !*mp) return;
  nest_model_masks *m = *mp;
  for (int i = 0; i < m->ntensors; ++i) free(m->tensors[i].mask);
  free(m->tensors);
  free(m->arch);
  free(m->widths);
  free(m);
  *mp = NULL;
}

/* Append the masks of one layer group (every "<param>_mask" dataset, in name order). */
static nest_status read_group_masks(hid_t g, const char *path, const layer_entry *e, int index,
                                    nest_model_masks *m, int *cap) {
  H5G_info_t info;
  if (H5Gget_info(g, &info) < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: cannot list %s", path, e->where);
  for (hsize_t k = 0; k < info.nlinks; ++k) {
    char name[256];
    ssize_t len = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, k, name, sizeof name,
                                     H5P_DEFAULT);
    if (len < 0 || (size_t)len >= sizeof name) continue; /* not one of ours: ignored */
    if (len <= 5 || strcmp(name + len - 5, "_mask") != 0) continue;
    char pname[NEST_NAME_LEN];
    if ((size_t)len - 5 >= sizeof pname)
      return NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s: parameter name too long", path, e->where, name);
    memcpy(pname, name, (size_t)len - 5);
    pname[len - 5] = '\0';
    /* The mask must have its parameter's dims. */
    hid_t d;
    int prank, is_float, is_u8;
    hsize_t pdims[4];
    NEST_CALL(dset_open(g, path, e->where, pname, &d, &prank, pdims, &is_float, &is_u8));
    H5Dclose(d);
    int want[4];
    size_t count = 1;
    for (int i = 0; i < prank; ++i) {
      if (pdims[i] < 1 || pdims[i] > INT_MAX)
        return NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s has a bad dimension", path, e->where, pname);
      want[i] = (int)pdims[i];
      count *= (size_t)pdims[i];
      if (count > ((size_t)1 << 40))
        return NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s is implausibly large", path, e->where, pname);
    }
    if (m->ntensors == *cap) {
      int nc = *cap ? 2 * *cap : 16;
      void *p = realloc(m->tensors, (size_t)nc * sizeof *m->tensors);
      if (!p) return NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory for the mask list", path);
      m->tensors = p;
      *cap = nc;
    }
    nest_model_mask *t = &m->tensors[m->ntensors];
    memset(t, 0, sizeof *t);
    NEST_CALL(nest_malloc((void **)&t->mask, count, "mask"));
    ++m->ntensors; /* from here on, freed with the list */
    snprintf(t->layer, sizeof t->layer, "%s", e->name);
    memcpy(t->param, pname, sizeof t->param);
    t->layer_index = index;
    t->ndims = prank;
    for (int i = 0; i < prank; ++i) t->dims[i] = want[i];
    t->count = count;
    NEST_CALL(read_exact(g, path, e->where, name, prank, want, 1, t->mask));
    NEST_CALL(check_mask(path, e->where, name, t->mask, count));
  }
  return NEST_OK;
}

nest_status nest_model_read_masks(const char *path, nest_model_masks **out) {
  h5_quiet();
  if (out) *out = NULL;
  if (!path || !*path || !out) return NEST_ERR(NEST_ERR_ARG, "nest_model_read_masks: no path");
  hid_t file = -1, layers = -1, g = -1;
  model_head h = {0};
  nest_model_masks *m = NULL;
  nest_status st = NEST_OK;
  int cap = 0;
  NEST_CALL(model_open(path, &file));
  NEST_CALL_GOTO(st, read_head(file, path, &h), done);
  NEST_CALL_GOTO(st, nest_calloc((void **)&m, 1, sizeof *m, "mask list"), done);
  NEST_CALL_GOTO(st, attr_str(file, path, "/", "arch", &m->arch), done);
  NEST_CALL_GOTO(st, attr_str(file, path, "/", "widths", &m->widths), done);
  layers = H5Gopen2(file, "layers", H5P_DEFAULT);
  for (int i = 0; i < h.nlayers; ++i) {
    g = H5Gopen2(layers, h.layers[i].gname, H5P_DEFAULT);
    NEST_CALL_GOTO(st, read_group_masks(g, path, &h.layers[i], i, m, &cap), done);
    h5_close(&g, H5Gclose);
  }
  *out = m;
  m = NULL;
done:
  h5_close(&g, H5Gclose);
  h5_close(&layers, H5Gclose);
  h5_close(&file, H5Fclose);
  free(h.layers);
  nest_model_masks_free(&m);
  return st;
}

/* ---- info attributes: reading ------------------------------------------------------------- */

void nest_model_info_free(nest_model_info *info) {
  if (!info) return;
  free(info->act_frac);
  free(info->in_frac);
  info->act_frac = info->in_frac = NULL;
  info->nlayers = 0;
}

/* Optional string attribute into buf[cap]: "" when absent; a non-string or one too long for
 * the info field is malformed. */
static nest_status opt_str(hid_t obj, const char *path, const char *where, const char *name,
                           char *buf, size_t cap) {
  buf[0] = '\0';
  if (H5Aexists(obj, name) <= 0) return NEST_OK;
  char *s;
  NEST_CALL(attr_str(obj, path, where, name, &s));
  const size_t n = strlen(s);
  if (n < cap) memcpy(buf, s, n + 1);
  free(s);
  if (n >= cap)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s: attribute '%s' is %zu characters long, at most %zu "
                    "allowed", path, where, name, n, cap - 1);
  return NEST_OK;
}

/* Optional float attribute that must be a fraction in [0, 1]: NaN when absent. */
static nest_status opt_frac(hid_t obj, const char *path, const char *where, const char *name,
                            double *v) {
  *v = NAN;
  if (H5Aexists(obj, name) <= 0) return NEST_OK;
  NEST_CALL(attr_read(obj, path, where, name, H5T_FLOAT, 0, H5T_NATIVE_DOUBLE, v));
  if (!info_frac_ok(*v))
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s: attribute '%s' = %g is not a fraction in [0, 1]",
                    path, where, name, *v);
  return NEST_OK;
}

nest_status nest_model_read_info(const char *path, nest_model_info *out) {
  h5_quiet();
  if (!out) return NEST_ERR(NEST_ERR_ARG, "nest_model_read_info: no output");
  memset(out, 0, sizeof *out);
  out->val_error = out->test_error = out->val_top5_error = out->test_top5_error = NAN;
  if (!path || !*path) return NEST_ERR(NEST_ERR_ARG, "nest_model_read_info: no path");
  hid_t file = -1, layers = -1, g = -1;
  model_head h = {0};
  nest_model_info info = {
      .val_error = NAN, .test_error = NAN, .val_top5_error = NAN, .test_top5_error = NAN};
  nest_status st = NEST_OK;
  NEST_CALL(model_open(path, &file));
  NEST_CALL_GOTO(st, read_head(file, path, &h), done);
  NEST_CALL_GOTO(st, opt_str(file, path, "/", "stage", info.stage, sizeof info.stage), done);
  NEST_CALL_GOTO(st, opt_str(file, path, "/", "base_arch", info.base_arch, sizeof info.base_arch),
                 done);
  NEST_CALL_GOTO(st, opt_frac(file, path, "/", "val_error", &info.val_error), done);
  NEST_CALL_GOTO(st, opt_frac(file, path, "/", "test_error", &info.test_error), done);
  NEST_CALL_GOTO(st, opt_frac(file, path, "/", "val_top5_error", &info.val_top5_error), done);
  NEST_CALL_GOTO(st, opt_frac(file, path, "/", "test_top5_error", &info.test_top5_error), done);
  info.has_top5 = !isnan(info.val_top5_error) || !isnan(info.test_top5_error);
  NEST_CALL_GOTO(st, nest_malloc((void **)&info.act_frac, (size_t)h.nlayers * sizeof(double),
                                 "act_frac"), done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&info.in_frac, (size_t)h.nlayers * sizeof(double),
                                 "in_frac"), done);
  info.nlayers = h.nlayers;
  int any = 0;
  layers = H5Gopen2(file, "layers", H5P_DEFAULT);
  for (int i = 0; i < h.nlayers; ++i) {
    g = H5Gopen2(layers, h.layers[i].gname, H5P_DEFAULT);
    if (g < 0) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s is not a group", path, h.layers[i].where);
      goto done;
    }
    NEST_CALL_GOTO(st, opt_frac(g, path, h.layers[i].where, "act_frac", &info.act_frac[i]), done);
    NEST_CALL_GOTO(st, opt_frac(g, path, h.layers[i].where, "in_frac", &info.in_frac[i]), done);
    any |= !isnan(info.act_frac[i]) || !isnan(info.in_frac[i]);
    h5_close(&g, H5Gclose);
  }
  /* Nothing measured: the documented "none" (nlayers 0, no arrays). */
  if (!any) nest_model_info_free(&info);
  *out = info;
  info.act_frac = info.in_frac = NULL;
done:
  h5_close(&g, H5Gclose);
  h5_close(&layers, H5Gclose);
  h5_close(&file, H5Fclose);
  free(h.layers);
  nest_model_info_free(&info);
  return st;
}

/* ---- restart checkpoints: the container ------------------------------------------------- */

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
  h5_quiet();
  *out = NULL;
  nest_ckpt *w;
  NEST_CALL(nest_calloc((void **)&w, 1, sizeof *w, "checkpoint writer"));
  w->file = w->state = -1;
  w->writing = 1;
  snprintf(w->path, sizeof w->path, "%s", path);
  nest_status st = nest_atomic_begin(path, w->tmp, sizeof w->tmp);
  if (st != NEST_OK) {
    free(w);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  w->file = create_file(w->tmp);
  if (w->file >= 0) w->state = H5Gcreate2(w->file, "state", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const int v = NEST_CHECKPOINT_VERSION;
  if (w->state < 0 || put_int(w->file, "checkpoint_version", v) < 0) {
    nest_ckpt_close(&w);
    return NEST_ERR(NEST_ERR_IO, "%s.tmp: cannot create the checkpoint file", path);
  }
  *out = w;
  return NEST_OK;
}

nest_status nest_ckpt_put_net(nest_ckpt *w, const char *group, const nest_net *net, int momentum) {
  size_t maxmask;
  NEST_CALL(model_check(net, w->path, &maxmask));
  if (maxmask > w->u8cap) {
    free(w->u8);
    w->u8 = NULL;
    w->u8cap = 0;
    NEST_CALL(nest_malloc((void **)&w->u8, maxmask, "mask buffer"));
    w->u8cap = maxmask;
  }
  hid_t loc = w->file;
  if (group) loc = H5Gcreate2(w->file, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  herr_t e = loc >= 0 ? write_model(loc, net, NULL, w->u8, momentum, CKPT_COMPRESS) : -1;
  if (group && loc >= 0 && H5Gclose(loc) < 0) e = -1;
  if (e < 0)
    return NEST_ERR(NEST_ERR_IO, "%s: writing the network%s%s failed (disk full?)", w->tmp,
                    group ? " /" : "", group ? group : "");
  return NEST_OK;
}

nest_status nest_ckpt_put(nest_ckpt *w, const char *name, nest_ck_type type, const void *v,
                          size_t n) {
  hsize_t d = (hsize_t)n;
  if (put_dataset(w->state, name, 1, &d, ck_ftype(type), ck_mtype(type), ck_size(type), 0, v) < 0)
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
  if (e >= 0) e = put_dataset(w->state, name, 1, &d, t, t, width, 0, buf);
  if (t >= 0) H5Tclose(t);
  free(buf);
  if (e < 0) return NEST_ERR(NEST_ERR_IO, "%s: writing /state/%s failed (disk full?)", w->tmp, name);
  return NEST_OK;
}

nest_status nest_ckpt_put_attr(nest_ckpt *w, const char *name, const char *value) {
  if (put_str(w->file, name, value) < 0)
    return NEST_ERR(NEST_ERR_IO, "%s: writing attribute %s failed", w->tmp, name);
  return NEST_OK;
}

nest_status nest_ckpt_commit(nest_ckpt **wp) {
  nest_ckpt *w = *wp;
  herr_t e = H5Gclose(w->state);
  w->state = -1;
  if (H5Fclose(w->file) < 0) e = -1;
  w->file = -1;
  nest_status st = NEST_OK;
  if (e < 0)
    st = NEST_ERR(NEST_ERR_IO, "%s: closing the checkpoint failed (disk full?)", w->tmp);
  else
    st = nest_atomic_commit(w->tmp, w->path);
  if (st == NEST_OK) w->tmp[0] = '\0'; /* nothing left to remove */
  nest_ckpt_close(wp);
  return st;
}

void nest_ckpt_close(nest_ckpt **wp) {
  if (!wp || !*wp) return;
  nest_ckpt *w = *wp;
  h5_close(&w->state, H5Gclose);
  h5_close(&w->file, H5Fclose);
  if (w->writing && w->tmp[0]) nest_atomic_abort(w->tmp);
  free(w->u8);
  free(w);
  *wp = NULL;
}

nest_status nest_ckpt_open(const char *path, nest_ckpt **out) {
  h5_quiet();
  *out = NULL;
  nest_ckpt *r;
  NEST_CALL(nest_calloc((void **)&r, 1, sizeof *r, "checkpoint reader"));
  r->file = r->state = -1;
  snprintf(r->path, sizeof r->path, "%s", path);
  nest_status st = model_open(path, &r->file);
  int v = 0;
  if (st == NEST_OK && H5Aexists(r->file, "checkpoint_version") <= 0)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: a model file, not a restart checkpoint (no "
                  "checkpoint_version)", path);
  if (st == NEST_OK) st = attr_int(r->file, path, "/", "checkpoint_version", &v);
  if (st == NEST_OK && v != NEST_CHECKPOINT_VERSION)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: checkpoint_version %d not supported (this build reads %d)",
                  path, v, NEST_CHECKPOINT_VERSION);
  if (st == NEST_OK && (H5Lexists(r->file, "state", H5P_DEFAULT) <= 0 ||
                        (r->state = H5Gopen2(r->file, "state", H5P_DEFAULT)) < 0))
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: missing group /state", path);
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
  *d = *type = -1;
  if (!nest_ckpt_has(r, name))
    return NEST_ERR(NEST_ERR_FORMAT, "%s: missing dataset /state/%s", r->path, name);
  *d = H5Dopen2(r->state, name, H5P_DEFAULT);
  hid_t sp = *d >= 0 ? H5Dget_space(*d) : -1;
  hsize_t dim = 0;
  const int ok = sp >= 0 && H5Sget_simple_extent_ndims(sp) == 1 &&
                 H5Sget_simple_extent_dims(sp, &dim, NULL) == 1;
  if (sp >= 0) H5Sclose(sp);
  if (ok) *type = H5Dget_type(*d);
  if (!ok || *type < 0) {
    h5_close(d, H5Dclose);
    return NEST_ERR(NEST_ERR_FORMAT, "%s: /state/%s is not a 1-D dataset", r->path, name);
  }
  *n = (size_t)dim;
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
      *width > MAX_STR)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /state/%s must hold fixed-length strings", r->path, name);
  char *buf = NULL;
  if (st == NEST_OK) st = nest_calloc((void **)&buf, *n ? *n : 1, *width + 1, "string table");
  hid_t m = st == NEST_OK ? H5Tcopy(H5T_C_S1) : -1;
  if (m >= 0 && (H5Tset_size(m, *width) < 0 || H5Tset_strpad(m, H5T_STR_NULLPAD) < 0)) h5_close(&m, H5Tclose);
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
  return attr_str(r->file, r->path, "/", name, out);
}

nest_status nest_ckpt_get_net(nest_ckpt *r, const char *group, int max_batch, int nthreads,
                              int momentum, nest_net **out) {
  *out = NULL;
  if (max_batch <= 0) return NEST_ERR(NEST_ERR_ARG, "%s: max_batch must be positive", r->path);
  hid_t loc = r->file;
  if (group) {
    if (!nest_ckpt_has_group(r, group) || (loc = H5Gopen2(r->file, group, H5P_DEFAULT)) < 0)
      return NEST_ERR(NEST_ERR_FORMAT, "%s: missing group /%s", r->path, group);
  }
  nest_status st = load_model(loc, r->path, max_batch, nthreads, momentum, out);
  if (group) H5Gclose(loc);
  return st;
}
