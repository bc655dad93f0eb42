/* model.c — model files: save / load a network in HDF5 (model.h, docs/model-format.md): atomic
 * save, validated load, the masks-only and info-only readers, and the model layout under any
 * HDF5 location, which the restart container (ckpt.c) reuses through model_layout.h.
 * A file-format module: HDF5 through the helpers of h5io.h (HDF5 is called only by h5io.c and
 * the file-format modules model.c, ckpt.c, data/h5.c, data/shards.c); HDF5's own error printing
 * is switched off and every failure becomes one nest message naming the file. Uses the default
 * (serial) file driver: no MPI.
 *
 * Layout (format_version 1):
 *   /                   attrs: format "nest-model", format_version, input_shape [c,h,w],
 *                              nclasses, nlayers, generation, arch, widths
 *   /layers/NNN_<name>  one group per layer, NNN = its index (at least 3 digits, so h5ls
 *                       lists them in order); attrs: kind, index, the kind's hyper-parameters
 *     <param>           float32, the declared dims (W, b, gamma, beta)
 *     <param>_mask      uint8 0/1, same dims, for maskable parameters only
 *     <buffer>          float32 [count] (running_mean, running_var)
 *   a dense layer with skip tensors (net.h) also has the attribute skips (its sources, comma-
 *   separated) and the tensors skip_<source> [units, source size] with their _mask
 * Optional info attributes (nest_model_info; written only when known, absent ones read as
 * unknown): root stage, base_arch (strings), val_error, test_error (float64); layer groups
 * act_frac, in_frac (float64).
 * Objects the reader does not expect are ignored, so a restart checkpoint can be a model file
 * plus extra state. */
#define _POSIX_C_SOURCE 200809L
#include "nest/model.h"

#include "nest/h5io.h"

#include "model_layout.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAYERS 100000
#define MAX_CLASSES (1 << 20)

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

/* A tensor dataset of a model file or checkpoint: chunked with the Fletcher-32 checksum;
 * compress = 1 also deflates it (multi-byte elements shuffled first). */
static herr_t put_tensor(hid_t loc, const char *name, int rank, const hsize_t *dims, hid_t ftype,
                         hid_t mtype, size_t elem, int compress, const void *buf) {
  unsigned flags = NEST_H5_FLETCHER32;
  if (compress) flags |= NEST_H5_DEFLATE | (elem > 1 ? NEST_H5_SHUFFLE : 0);
  return nest_h5_put_dataset(loc, name, rank, dims, ftype, mtype, elem, flags, buf);
}

/* One layer's group: attributes, parameters (+ masks), buffers; with mom (the net's momentum
 * arena) also "<param>_momentum". u8 has room for the largest maskable tensor. */
static herr_t put_layer(hid_t layers, const nest_layer *l, const nest_layer_spec *spec,
                        uint8_t *u8, const float *mom, int compress) {
  char gname[NEST_NAME_LEN + 16];
  snprintf(gname, sizeof gname, "%03d_%s", l->index, l->name);
  hid_t g = H5Gcreate2(layers, gname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (g < 0) return -1;
  herr_t e = nest_h5_put_str(g, "kind", nest_layer_kind_name(l->kind));
  if (e >= 0) e = nest_h5_put_int(g, "index", l->index);
  int nf;
  const hp_field *f = hp_fields(l->kind, &nf);
  for (int i = 0; i < nf && e >= 0; ++i) {
    const char *v = (const char *)&l->hp + f[i].off;
    e = f[i].is_float ? nest_h5_put_attr(g, f[i].name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 0, v)
                      : nest_h5_put_attr(g, f[i].name, H5T_STD_I32LE, H5T_NATIVE_INT, 0, v);
  }
  /* partial-area convolution; optional on reading (files from before it have none: 0) */
  if (e >= 0 && l->kind == NEST_LAYER_CONV2D) e = nest_h5_put_int(g, "area", l->hp.area);
  /* skip tensors into a dense layer: their sources, comma-separated; optional on reading */
  if (e >= 0 && spec->nskips > 0) {
    char list[NEST_MAX_SKIPS * (NEST_NAME_LEN + 1)] = "";
    for (int k = 0; k < spec->nskips; ++k)
      snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? "," : "",
               spec->skip_from[k]);
    e = nest_h5_put_str(g, "skips", list);
  }
  for (int s = 0; s < l->nparams && e >= 0; ++s) {
    const nest_param *p = &l->param[s];
    hsize_t dims[4];
    for (int k = 0; k < p->ndims; ++k) dims[k] = (hsize_t)p->dims[k];
    e = put_tensor(g, p->name, p->ndims, dims, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4,
                    compress > 1 && p->maskable, l->p[s]);
    if (e >= 0 && p->maskable) {
      char mname[NEST_NAME_LEN + 8];
      snprintf(mname, sizeof mname, "%s_mask", p->name);
      for (size_t i = 0; i < p->count; ++i) u8[i] = l->m[s][i] != 0.0f;
      e = put_tensor(g, mname, p->ndims, dims, H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, compress > 0,
                      u8);
    }
    if (e >= 0 && mom) {
      char mname[NEST_NAME_LEN + 16];
      snprintf(mname, sizeof mname, "%s_momentum", p->name);
      e = put_tensor(g, mname, p->ndims, dims, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4,
                      compress > 1 && p->maskable, mom + p->offset);
    }
  }
  for (int s = 0; s < l->nbuffers && e >= 0; ++s) {
    hsize_t d = (hsize_t)l->buffer[s].count;
    e = put_tensor(g, l->buffer[s].name, 1, &d, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, 0,
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
  return nest_h5_put_attr(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, &v);
}

/* Root attributes; only what is known, so "absent" and "unknown" are the same on read. */
static herr_t put_info_root(hid_t file, const nest_model_info *info) {
  herr_t e = 0;
  if (info->stage[0]) e = nest_h5_put_str(file, "stage", info->stage);
  if (e >= 0 && info->base_arch[0]) e = nest_h5_put_str(file, "base_arch", info->base_arch);
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

nest_status nest_model_check(const nest_net *net, const char *path, size_t *maxmask) {
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

herr_t nest_model_layout_write(hid_t loc, const nest_net *net, const nest_model_info *info,
                               uint8_t *u8, int momentum, int compress) {
  char arch[NEST_H5_MAX_STR], widths[NEST_H5_MAX_STR];
  nest_net_arch_string(net, arch, sizeof arch);
  nest_net_widths_string(net, widths, sizeof widths);
  const int shape[3] = {net->in_shape.c, net->in_shape.h, net->in_shape.w};
  const unsigned long long gen = net->generation;
  hid_t layers = -1;
  herr_t e = nest_h5_put_str(loc, "format", NEST_MODEL_FORMAT);
  if (e >= 0) e = nest_h5_put_int(loc, "format_version", NEST_MODEL_VERSION);
  if (e >= 0) e = nest_h5_put_attr(loc, "input_shape", H5T_STD_I32LE, H5T_NATIVE_INT, 3, shape);
  if (e >= 0) e = nest_h5_put_int(loc, "nclasses", net->nclasses);
  if (e >= 0) e = nest_h5_put_int(loc, "nlayers", net->nlayers);
  if (e >= 0) e = nest_h5_put_attr(loc, "generation", H5T_STD_U64LE, H5T_NATIVE_ULLONG, 0, &gen);
  if (e >= 0) e = nest_h5_put_str(loc, "arch", arch);
  if (e >= 0) e = nest_h5_put_str(loc, "widths", widths);
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
    e = put_layer(layers, net->layers[i], &net->specs[i], u8, momentum ? net->mom : NULL,
                  compress);
  if (e >= 0 && info) e = put_info_layers(layers, net, info);
  if (layers >= 0 && H5Gclose(layers) < 0) e = -1;
  return e;
}

nest_status nest_model_save_info(const nest_net *net, const nest_model_info *info,
                                 const char *path) {
  nest_h5_quiet();
  if (!net || !path || !*path) return NEST_ERR(NEST_ERR_ARG, "nest_model_save: no net or path");
  if (info) NEST_CALL(info_check(net, info, path));
  size_t maxmask;
  NEST_CALL(nest_model_check(net, path, &maxmask));

  uint8_t *u8 = NULL;
  NEST_CALL(nest_malloc((void **)&u8, maxmask, "mask buffer"));
  char tmp[4096];
  hid_t file = -1;
  /* 1.10 object headers carry checksums of their own (attributes included) and have no 64 KiB
   * attribute limit (long arch strings of deep nets). */
  nest_status st = nest_h5_begin(path, tmp, sizeof tmp, H5F_LIBVER_V110, &file);
  if (st == NEST_OK && nest_model_layout_write(file, net, info, u8, 0, 2) < 0)
    st = NEST_ERR(NEST_ERR_IO, "%s: writing the HDF5 file failed (disk full?)", tmp);
  if (st == NEST_OK) st = nest_h5_commit(&file, tmp, path);
  else if (file >= 0) nest_h5_abort(&file, tmp);
  free(u8);
  return st;
}

/* ---- reading ------------------------------------------------------------------------------ */

nest_status nest_model_open_file(const char *path, hid_t *file) {
  NEST_CALL(nest_h5_open_read(path, "a nest model file", file));
  nest_status st = NEST_OK;
  char *fmt = NULL;
  int version = 0;
  if (H5Aexists(*file, "format") <= 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: not a nest model file (no 'format' attribute)", path);
    goto done;
  }
  NEST_CALL_GOTO(st, nest_h5_attr_str(*file, path, "/", "format", &fmt), done);
  if (strcmp(fmt, NEST_MODEL_FORMAT) != 0) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: not a nest model file (format '%.64s', expected '%s')",
                  path, fmt, NEST_MODEL_FORMAT);
    goto done;
  }
  NEST_CALL_GOTO(st, nest_h5_attr_int(*file, path, "/", "format_version", &version), done);
  if (version != NEST_MODEL_VERSION)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: format_version %d not supported (this build reads %d)",
                  path, version, NEST_MODEL_VERSION);
done:
  free(fmt);
  if (st != NEST_OK) nest_h5_close(file, H5Fclose);
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
  NEST_CALL(nest_h5_group_open(file, path, "", "layers", &layers));
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
    hid_t g;
    NEST_CALL_GOTO(st, nest_h5_group_open(layers, path, "/layers", ls[i].gname, &g), done);
    int index = -1;
    st = nest_h5_attr_int(g, path, ls[i].where, "index", &index);
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
  nest_h5_close(&layers, H5Gclose);
  return st;
}

/* Open dataset `name` in group g; its rank and dims, and whether its type is float32-like
 * (float class) or uint8. */
static nest_status dset_open(hid_t g, const char *path, const char *where, const char *name,
                             hid_t *d, int *rank, hsize_t dims[4], int *is_float, int *is_u8) {
  hid_t ty;
  NEST_CALL(nest_h5_dset_open(g, path, where, name, 1, 4, d, rank, dims, &ty));
  *is_float = H5Tget_class(ty) == H5T_FLOAT;
  *is_u8 = nest_h5_is_u8(ty);
  H5Tclose(ty);
  return NEST_OK;
}

/* Open dataset `name` of group g, which must have exactly the dims `want` (rank n) and be
 * float (u8 = 0) or uint8 (u8 = 1). */
static nest_status dset_check(hid_t g, const char *path, const char *where, const char *name,
                              int n, const int *want, int u8, hid_t *d) {
  int rank, is_float, is_u8;
  hsize_t dims[4];
  NEST_CALL(dset_open(g, path, where, name, d, &rank, dims, &is_float, &is_u8));
  int same = rank == n;
  hsize_t w[4];
  for (int k = 0; k < n; ++k) {
    w[k] = (hsize_t)want[k];
    same = same && dims[k] == w[k];
  }
  char have_s[96], want_s[96];
  nest_status st = NEST_OK;
  if (u8 ? !is_u8 : !is_float)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s must be %s", path, where, name,
                  u8 ? "uint8" : "float32");
  else if (!same)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s has dims %s, expected %s",
                  path, where, name, dims_str(have_s, sizeof have_s, rank, dims),
                  dims_str(want_s, sizeof want_s, n, w));
  if (st != NEST_OK) nest_h5_close(d, H5Dclose);
  return st;
}

/* dset_check, then read all of it into buf. */
static nest_status read_exact(hid_t g, const char *path, const char *where, const char *name,
                              int n, const int *want, int u8, void *buf) {
  hid_t d;
  NEST_CALL(dset_check(g, path, where, name, n, want, u8, &d));
  nest_status st = NEST_OK;
  if (H5Dread(d, u8 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
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

/* Root attributes, the layer list and the open /layers group: what every reader starts with. */
typedef struct {
  nest_shape in;
  int nclasses, nlayers;
  unsigned long long generation;
  layer_entry *layers;
  hid_t group; /* /layers */
} model_head;

static void head_free(model_head *h) {
  free(h->layers);
  h->layers = NULL;
  nest_h5_close(&h->group, H5Gclose);
}

/* The group of layer i (checked: list_layers saw a group there, but say so if it is gone). */
static nest_status layer_open(const model_head *h, const char *path, int i, hid_t *g) {
  return nest_h5_group_open(h->group, path, "/layers", h->layers[i].gname, g);
}

/* On failure h holds nothing to free. */
static nest_status read_head(hid_t file, const char *path, model_head *h) {
  memset(h, 0, sizeof *h);
  h->group = -1;
  int shape[3];
  NEST_CALL(nest_h5_attr_read(file, path, "/", "input_shape", H5T_INTEGER, 3, H5T_NATIVE_INT, shape));
  if (shape[0] < 1 || shape[1] < 1 || shape[2] < 1 ||
      (double)shape[0] * shape[1] * shape[2] > (double)INT_MAX)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: input_shape %dx%dx%d is not a valid sample shape", path,
                    shape[0], shape[1], shape[2]);
  h->in = (nest_shape){shape[0], shape[1], shape[2]};
  NEST_CALL(nest_h5_attr_int(file, path, "/", "nclasses", &h->nclasses));
  if (h->nclasses < 1 || h->nclasses > MAX_CLASSES)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: nclasses = %d out of range [1, %d]", path, h->nclasses,
                    MAX_CLASSES);
  NEST_CALL(nest_h5_attr_int(file, path, "/", "nlayers", &h->nlayers));
  if (h->nlayers < 1 || h->nlayers > MAX_LAYERS)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: nlayers = %d out of range [1, %d]", path, h->nlayers,
                    MAX_LAYERS);
  NEST_CALL(nest_h5_attr_read(file, path, "/", "generation", H5T_INTEGER, 0, H5T_NATIVE_ULLONG,
                      &h->generation));
  NEST_CALL(list_layers(file, path, h->nlayers, &h->layers));
  nest_status st = nest_h5_group_open(file, path, "", "layers", &h->group);
  if (st != NEST_OK) {
    head_free(h);
    nest_error_trace(__FILE__, __LINE__);
  }
  return st;
}

/* The "skips" attribute of a dense layer: its skip sources, comma-separated (nest_net_create
 * checks they form valid skips). */
static nest_status read_skips(hid_t g, const char *path, const char *where,
                              nest_layer_spec *spec) {
  char *v = NULL;
  NEST_CALL(nest_h5_attr_str(g, path, where, "skips", &v));
  nest_status st = NEST_OK;
  if (spec->kind != NEST_LAYER_DENSE)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s: skip tensors on a %s layer (only dense layers "
                  "take them)", path, where, nest_layer_kind_name(spec->kind));
  for (char *tok = v, *end; st == NEST_OK && tok; tok = end ? end + 1 : NULL) {
    end = strchr(tok, ',');
    const size_t len = end ? (size_t)(end - tok) : strlen(tok);
    if (spec->nskips == NEST_MAX_SKIPS || len == 0 || len >= NEST_NAME_LEN)
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s: attribute skips = '%.200s' is malformed (at most "
                    "%d names of 1 to %d characters)", path, where, v, NEST_MAX_SKIPS,
                    NEST_NAME_LEN - 1);
    else
      memcpy(spec->skip_from[spec->nskips++], tok, len); /* the slot is zeroed */
  }
  free(v);
  return st;
}

/* The spec of layer i from its group's attributes. */
static nest_status read_spec(hid_t g, const char *path, const layer_entry *e,
                             nest_layer_spec *spec) {
  memset(spec, 0, sizeof *spec);
  char *ks = NULL;
  NEST_CALL(nest_h5_attr_str(g, path, e->where, "kind", &ks));
  nest_status st = kind_of(path, e->where, ks, &spec->kind);
  free(ks);
  NEST_CALL(st);
  snprintf(spec->name, sizeof spec->name, "%s", e->name);
  int nf;
  const hp_field *f = hp_fields(spec->kind, &nf);
  for (int k = 0; k < nf; ++k) {
    char *v = (char *)&spec->hp + f[k].off;
    if (f[k].is_float)
      NEST_CALL(nest_h5_attr_read(g, path, e->where, f[k].name, H5T_FLOAT, 0, H5T_NATIVE_FLOAT, v));
    else
      NEST_CALL(nest_h5_attr_int(g, path, e->where, f[k].name, (int *)(void *)v));
  }
  if (spec->kind == NEST_LAYER_CONV2D && H5Aexists(g, "area") > 0)
    NEST_CALL(nest_h5_attr_int(g, path, e->where, "area", &spec->hp.area));
  if (H5Aexists(g, "skips") > 0) NEST_CALL(read_skips(g, path, e->where, spec));
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

/* "PATH: layers do not form a valid network: <why>" for a setup error (CONFIG / ARG, whose
 * message names the layer) while rebuilding the layers a file describes; other codes pass. */
static nest_status invalid_layers(nest_status st, const char *path) {
  if (st != NEST_ERR_CONFIG && st != NEST_ERR_ARG) {
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  char why[512];
  snprintf(why, sizeof why, "%s", nest_error_message());
  return NEST_ERR(NEST_ERR_FORMAT, "%s: layers do not form a valid network: %s", path, why);
}

/* Every layer's spec from its group. */
static nest_status read_specs(const model_head *h, const char *path, nest_layer_spec **out) {
  *out = NULL;
  nest_layer_spec *specs;
  NEST_CALL(nest_calloc((void **)&specs, (size_t)h->nlayers, sizeof *specs, "layer specs"));
  nest_status st = NEST_OK;
  for (int i = 0; i < h->nlayers && st == NEST_OK; ++i) {
    hid_t g;
    st = layer_open(h, path, i, &g);
    if (st == NEST_OK) st = read_spec(g, path, &h->layers[i], &specs[i]);
    nest_h5_close(&g, H5Gclose);
  }
  if (st != NEST_OK) {
    free(specs);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  *out = specs;
  return NEST_OK;
}

nest_status nest_model_layout_read(hid_t loc, const char *path, int max_batch, int nthreads,
                                   int momentum, nest_net **out) {
  hid_t g = -1;
  model_head h = {.group = -1};
  nest_layer_spec *specs = NULL;
  nest_net *net = NULL;
  uint8_t *u8 = NULL;
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, read_head(loc, path, &h), done);
  NEST_CALL_GOTO(st, read_specs(&h, path, &specs), done);
  st = nest_net_create(specs, h.nlayers, h.in, h.nclasses, max_batch, nthreads, &net);
  if (st != NEST_OK) {
    st = invalid_layers(st, path);
    goto done;
  }
  size_t maxmask = 1;
  for (int t = 0; t < net->ntensors; ++t)
    if (net->tensors[t].param->maskable && net->tensors[t].param->count > maxmask)
      maxmask = net->tensors[t].param->count;
  NEST_CALL_GOTO(st, nest_malloc((void **)&u8, maxmask, "mask buffer"), done);
  for (int i = 0; i < h.nlayers; ++i) {
    NEST_CALL_GOTO(st, layer_open(&h, path, i, &g), done);
    NEST_CALL_GOTO(st, read_layer_data(g, path, h.layers[i].where, net->layers[i], u8,
                                       momentum ? net->mom : NULL),
                   done);
    nest_h5_close(&g, H5Gclose);
  }
  net->generation = (uint64_t)h.generation;
  *out = net;
  net = NULL;
done:
  nest_h5_close(&g, H5Gclose);
  head_free(&h);
  free(specs);
  free(u8);
  nest_net_destroy(&net);
  return st;
}

nest_status nest_model_load(const char *path, int max_batch, int nthreads, nest_net **out) {
  nest_h5_quiet();
  if (out) *out = NULL;
  if (!path || !*path || !out) return NEST_ERR(NEST_ERR_ARG, "nest_model_load: no path");
  if (max_batch <= 0) return NEST_ERR(NEST_ERR_ARG, "%s: max_batch must be positive", path);
  hid_t file = -1;
  NEST_CALL(nest_model_open_file(path, &file));
  nest_status st = nest_model_layout_read(file, path, max_batch, nthreads, 0, out);
  nest_h5_close(&file, H5Fclose);
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

/* Append the mask of every maskable parameter layer l declares (l: created from the file's
 * spec, not bound: declarations only, no storage). The parameter's values must be there with
 * the declared dims too (not read), its "<param>_mask" uint8 0/1 with the same dims. */
static nest_status read_layer_masks(hid_t g, const char *path, const layer_entry *e,
                                    const nest_layer *l, nest_model_masks *m, int *cap) {
  for (int s = 0; s < l->nparams; ++s) {
    const nest_param *p = &l->param[s];
    if (!p->maskable) continue;
    hid_t d;
    NEST_CALL(dset_check(g, path, e->where, p->name, p->ndims, p->dims, 0, &d));
    H5Dclose(d);
    if (m->ntensors == *cap) {
      const int nc = *cap ? 2 * *cap : 16;
      void *q = realloc(m->tensors, (size_t)nc * sizeof *m->tensors);
      if (!q) return NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory for the mask list", path);
      m->tensors = q;
      *cap = nc;
    }
    nest_model_mask *t = &m->tensors[m->ntensors];
    memset(t, 0, sizeof *t);
    NEST_CALL(nest_malloc((void **)&t->mask, p->count, "mask"));
    ++m->ntensors; /* from here on, freed with the list */
    snprintf(t->layer, sizeof t->layer, "%s", e->name);
    snprintf(t->param, sizeof t->param, "%s", p->name);
    t->layer_index = l->index;
    t->ndims = p->ndims;
    for (int i = 0; i < p->ndims; ++i) t->dims[i] = p->dims[i];
    t->count = p->count;
    char mname[NEST_NAME_LEN + 8];
    snprintf(mname, sizeof mname, "%s_mask", p->name);
    NEST_CALL(read_exact(g, path, e->where, mname, p->ndims, p->dims, 1, t->mask));
    NEST_CALL(check_mask(path, e->where, mname, t->mask, p->count));
  }
  return NEST_OK;
}

/* The layers the file describes, rebuilt one at a time from its specs (declarations only:
 * which parameters are maskable, their dims), and their masks. */
static nest_status read_masks(const model_head *h, const char *path, nest_model_masks *m) {
  nest_layer_spec *specs;
  NEST_CALL(read_specs(h, path, &specs));
  nest_shape shape = h->in, *acts = NULL;
  nest_layer *l = NULL;
  hid_t g = -1;
  int cap = 0;
  nest_status st = nest_calloc((void **)&acts, (size_t)h->nlayers + 1, sizeof *acts, "shapes");
  if (st == NEST_OK) acts[0] = shape;
  for (int i = 0; i < h->nlayers && st == NEST_OK; ++i) {
    st = nest_layer_create(nest_layer_ops_of(specs[i].kind), specs[i].name, shape, &specs[i].hp,
                           1, 1, &l);
    if (st == NEST_OK) st = nest_skip_declare(l, specs, h->nlayers, i, acts);
    if (st != NEST_OK) {
      st = invalid_layers(st, path);
      nest_layer_destroy(&l);
      break;
    }
    l->index = i;
    st = layer_open(h, path, i, &g);
    if (st == NEST_OK) st = read_layer_masks(g, path, &h->layers[i], l, m, &cap);
    nest_h5_close(&g, H5Gclose);
    shape = l->out;
    acts[i + 1] = shape;
    nest_layer_destroy(&l);
  }
  free(acts);
  if (st == NEST_OK && nest_shape_size(shape) != (size_t)h->nclasses)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: layers do not form a valid network: the last outputs %zu "
                  "values but nclasses = %d", path, nest_shape_size(shape), h->nclasses);
  free(specs);
  return st;
}

nest_status nest_model_read_masks(const char *path, nest_model_masks **out) {
  nest_h5_quiet();
  if (out) *out = NULL;
  if (!path || !*path || !out) return NEST_ERR(NEST_ERR_ARG, "nest_model_read_masks: no path");
  hid_t file = -1;
  model_head h = {.group = -1};
  nest_model_masks *m = NULL;
  nest_status st = NEST_OK;
  NEST_CALL(nest_model_open_file(path, &file));
  NEST_CALL_GOTO(st, read_head(file, path, &h), done);
  NEST_CALL_GOTO(st, nest_calloc((void **)&m, 1, sizeof *m, "mask list"), done);
  NEST_CALL_GOTO(st, nest_h5_attr_str(file, path, "/", "arch", &m->arch), done);
  NEST_CALL_GOTO(st, nest_h5_attr_str(file, path, "/", "widths", &m->widths), done);
  NEST_CALL_GOTO(st, read_masks(&h, path, m), done);
  *out = m;
  m = NULL;
done:
  head_free(&h);
  nest_h5_close(&file, H5Fclose);
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
  NEST_CALL(nest_h5_attr_str(obj, path, where, name, &s));
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
  NEST_CALL(nest_h5_attr_read(obj, path, where, name, H5T_FLOAT, 0, H5T_NATIVE_DOUBLE, v));
  if (!info_frac_ok(*v))
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s: attribute '%s' = %g is not a fraction in [0, 1]",
                    path, where, name, *v);
  return NEST_OK;
}

nest_status nest_model_read_info(const char *path, nest_model_info *out) {
  nest_h5_quiet();
  if (!out) return NEST_ERR(NEST_ERR_ARG, "nest_model_read_info: no output");
  memset(out, 0, sizeof *out);
  out->val_error = out->test_error = out->val_top5_error = out->test_top5_error = NAN;
  if (!path || !*path) return NEST_ERR(NEST_ERR_ARG, "nest_model_read_info: no path");
  hid_t file = -1, g = -1;
  model_head h = {.group = -1};
  nest_model_info info = {
      .val_error = NAN, .test_error = NAN, .val_top5_error = NAN, .test_top5_error = NAN};
  nest_status st = NEST_OK;
  NEST_CALL(nest_model_open_file(path, &file));
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
  for (int i = 0; i < h.nlayers; ++i) {
    NEST_CALL_GOTO(st, layer_open(&h, path, i, &g), done);
    NEST_CALL_GOTO(st, opt_frac(g, path, h.layers[i].where, "act_frac", &info.act_frac[i]), done);
    NEST_CALL_GOTO(st, opt_frac(g, path, h.layers[i].where, "in_frac", &info.in_frac[i]), done);
    any |= !isnan(info.act_frac[i]) || !isnan(info.in_frac[i]);
    nest_h5_close(&g, H5Gclose);
  }
  /* Nothing measured: the documented "none" (nlayers 0, no arrays). */
  if (!any) nest_model_info_free(&info);
  *out = info;
  info.act_frac = info.in_frac = NULL;
done:
  nest_h5_close(&g, H5Gclose);
  head_free(&h);
  nest_h5_close(&file, H5Fclose);
  nest_model_info_free(&info);
  return st;
}

