/* model.c — model files: save / load a network in HDF5 (model.h, docs/model-format.md): atomic
 * save, validated load, the masks-only, info-only and input-only readers, and the model layout
 * under any HDF5 location, which the restart container (ckpt.c) reuses through model_layout.h.
 * A file-format module: HDF5 through the helpers of h5io.h (HDF5 is called only by h5io.c and
 * the file-format modules model.c, ckpt.c, data/h5.c, data/shards.c); HDF5's own error printing
 * is switched off and every failure becomes one nest message naming the file. Uses the default
 * (serial) file driver: no MPI.
 *
 * Layout (format_version 2; 1 is read too):
 *   /                   attrs: format "nest-model", format_version, input_shape [c,h,w],
 *                              nclasses, nlayers, generation, arch, widths
 *   /layers/NNN_<name>  one group per layer, NNN = its index (at least 3 digits, so h5ls
 *                       lists them in order); attrs: kind, index, the kind's hyper-parameters
 *     <param>           float32, the declared dims (W, b, gamma, beta); for a maskable
 *     <param>_mask      parameter also its uint8 0/1 mask (restart checkpoints, format 1), or
 *     <param>_index     instead (model files, format 2) the flat indices of its active
 *     <param>_value     positions (uint32, ascending) and their values (float32; attribute
 *                       shape = the declared dims): the compact storage
 *     <buffer>          float32 [count] (running_mean, running_var); the partial-area mask
 *                       `area` uint8 in model files (float32 in checkpoints and format 1)
 *   /input              how data reach the model (nest_model_input): attrs data_shape, crop,
 *     mean, std         dtype, scale, normalization, layout, format, csv_*, val_split,
 *                       test_split, split_seed; datasets mean, std [nch]
 *   /labels             [nclasses] strings: the class of each logit
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

/* A maskable parameter in the compact form: "<name>_index" (flat indices of the active
 * positions, ascending; uint32, uint64 for a tensor of 2^32 or more positions) and
 * "<name>_value" (their values, float32, with attribute shape = the dense dims), both
 * deflated. Measured on the LeNet runs (docs/model-format.md): half the bytes of the dense
 * weights and masks deflated. */
static herr_t put_compact(hid_t g, const nest_param *p, const float *w, const float *m) {
  size_t nnz = 0;
  for (size_t i = 0; i < p->count; ++i) nnz += m[i] != 0.0f;
  const int wide = p->count > UINT32_MAX;
  void *idx = malloc((nnz ? nnz : 1) * (wide ? 8 : 4));
  float *val = malloc((nnz ? nnz : 1) * sizeof(float));
  herr_t e = idx && val ? 0 : -1;
  size_t k = 0;
  for (size_t i = 0; e >= 0 && i < p->count; ++i) {
    if (m[i] == 0.0f) continue;
    if (wide) ((uint64_t *)idx)[k] = i;
    else ((uint32_t *)idx)[k] = (uint32_t)i;
    val[k++] = w[i];
  }
  char name[NEST_NAME_LEN + 8];
  const hsize_t n = (hsize_t)nnz;
  const unsigned flags = NEST_H5_FLETCHER32 | NEST_H5_DEFLATE | NEST_H5_SHUFFLE;
  snprintf(name, sizeof name, "%s_index", p->name);
  if (e >= 0)
    e = nest_h5_put_dataset(g, name, 1, &n, wide ? H5T_STD_U64LE : H5T_STD_U32LE,
                            wide ? H5T_NATIVE_UINT64 : H5T_NATIVE_UINT32, wide ? 8 : 4, flags, idx);
  snprintf(name, sizeof name, "%s_value", p->name);
  if (e >= 0)
    e = nest_h5_put_dataset(g, name, 1, &n, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, flags, val);
  if (e >= 0) {
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    e = d >= 0 ? nest_h5_put_attr(d, "shape", H5T_STD_I32LE, H5T_NATIVE_INT, p->ndims, p->dims)
               : -1;
    if (d >= 0 && H5Dclose(d) < 0) e = -1;
  }
  free(idx);
  free(val);
  return e;
}

/* A buffer; in the compact form a 0/1 buffer (the partial-area mask) as deflated uint8. */
static herr_t put_buffer(hid_t g, const nest_buffer *b, const float *v, int compact) {
  hsize_t d = (hsize_t)b->count;
  if (!compact || !b->mask)
    return put_tensor(g, b->name, 1, &d, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, 0, v);
  uint8_t *u = malloc(b->count ? b->count : 1);
  if (!u) return -1;
  for (size_t i = 0; i < b->count; ++i) u[i] = v[i] != 0.0f;
  herr_t e = put_tensor(g, b->name, 1, &d, H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, 1, u);
  free(u);
  return e;
}

/* One layer's group: attributes, parameters (+ masks), buffers; with mom (the net's momentum
 * arena) also "<param>_momentum". u8 has room for the largest maskable tensor. compress 3:
 * maskable parameters compact, 0/1 buffers uint8 (model files). */
static herr_t put_layer(hid_t layers, const nest_layer *l, uint8_t *u8, const float *mom,
                        int compress) {
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
  for (int s = 0; s < l->nparams && e >= 0; ++s) {
    const nest_param *p = &l->param[s];
    hsize_t dims[4];
    for (int k = 0; k < p->ndims; ++k) dims[k] = (hsize_t)p->dims[k];
    if (compress == 3 && p->maskable && !mom) {
      e = put_compact(g, p, l->p[s], l->m[s]);
      continue;
    }
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
  for (int s = 0; s < l->nbuffers && e >= 0; ++s)
    e = put_buffer(g, &l->buffer[s], l->buf[s], compress == 3);
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

/* ---- the input record (nest_model_input): writing ------------------------------------------ */

static const char *const input_formats[] = {"idx", "csv", "h5", "shards"};

static int input_format_ok(const char *f) {
  if (!f[0]) return 1; /* unknown */
  for (size_t i = 0; i < sizeof input_formats / sizeof *input_formats; ++i)
    if (strcmp(f, input_formats[i]) == 0) return 1;
  return 0;
}

/* The net input a record describes: the data's sample, or its centre crop. */
static nest_shape input_net_shape(const nest_model_input *in) {
  nest_shape s = in->data_shape;
  if (in->crop > 0) s.h = s.w = in->crop;
  return s;
}

static int cmp_strp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A label list names each class once, by a non-empty name. */
static nest_status labels_check(char *const *labels, int n, const char *path, nest_status code) {
  for (int k = 0; k < n; ++k)
    if (!labels[k] || !labels[k][0] || strlen(labels[k]) >= NEST_H5_MAX_STR)
      return NEST_ERR(code, "%s: /labels[%d] is empty or too long: every class needs a name", path,
                      k);
  char **sorted = NULL;
  NEST_CALL(nest_malloc((void **)&sorted, sizeof(char *) * (size_t)n, "label check"));
  memcpy(sorted, labels, sizeof(char *) * (size_t)n);
  qsort(sorted, (size_t)n, sizeof(char *), cmp_strp);
  nest_status st = NEST_OK;
  for (int k = 1; k < n && st == NEST_OK; ++k)
    if (strcmp(sorted[k], sorted[k - 1]) == 0)
      st = NEST_ERR(code, "%s: /labels: class name '%.64s' appears twice", path, sorted[k]);
  free(sorted);
  return st;
}

/* What describes this net and can be read back; `code` is NEST_ERR_ARG when saving,
 * NEST_ERR_FORMAT when reading. */
static nest_status input_check(const nest_model_input *in, nest_shape net_in, int nclasses,
                               const char *path, nest_status code) {
  const nest_shape d = in->data_shape, n = input_net_shape(in);
  if (d.c < 1 || d.h < 1 || d.w < 1 || (double)d.c * d.h * d.w > (double)INT_MAX)
    return NEST_ERR(code, "%s: /input: data_shape %dx%dx%d is not a sample shape", path, d.c, d.h,
                    d.w);
  if (in->crop < 0 || in->crop > d.h || in->crop > d.w)
    return NEST_ERR(code, "%s: /input: crop %d does not fit the %dx%d samples", path, in->crop,
                    d.h, d.w);
  if (n.c != net_in.c || n.h != net_in.h || n.w != net_in.w)
    return NEST_ERR(code, "%s: /input: the data give %dx%dx%d inputs (data_shape %dx%dx%d, crop "
                    "%d) but the net takes %dx%dx%d", path, n.c, n.h, n.w, d.c, d.h, d.w,
                    in->crop, net_in.c, net_in.h, net_in.w);
  if (!isfinite(in->scale) || !(in->scale > 0))
    return NEST_ERR(code, "%s: /input: scale %g must be positive and finite", path,
                    (double)in->scale);
  if (in->norm.nch != 0 && in->norm.nch != d.c)
    return NEST_ERR(code, "%s: /input: the normalisation has %d channels, the data %d", path,
                    in->norm.nch, d.c);
  for (int c = 0; c < in->norm.nch; ++c)
    if (!isfinite(in->norm.mean[c]) || !isfinite(in->norm.std[c]) || !(in->norm.std[c] > 0))
      return NEST_ERR(code, "%s: /input: channel %d: mean %g, std %g (std must be positive, both "
                      "finite)", path, c, (double)in->norm.mean[c], (double)in->norm.std[c]);
  if (in->nlabels != nclasses)
    return NEST_ERR(code, "%s: /labels: %d class names for %d classes", path, in->nlabels,
                    nclasses);
  if (in->labels) NEST_CALL(labels_check(in->labels, in->nlabels, path, code));
  if (strnlen(in->format, sizeof in->format) == sizeof in->format || !input_format_ok(in->format))
    return NEST_ERR(code, "%s: /input: format '%.8s' is not idx, csv, h5 or shards", path,
                    in->format);
  if (in->csv_label_col < -1 || in->csv_delim == '\n' || in->csv_delim == '\r' ||
      in->csv_delim == '"' || (in->csv_header != 0 && in->csv_header != 1) ||
      strnlen(in->csv_drop_cols, sizeof in->csv_drop_cols) == sizeof in->csv_drop_cols)
    return NEST_ERR(code, "%s: /input: CSV options invalid (label column %d, delimiter 0x%02x, "
                    "header %d)", path, in->csv_label_col, (unsigned char)in->csv_delim,
                    in->csv_header);
  if (!(in->val_split >= 0 && in->val_split <= 1) || !(in->test_split >= 0 && in->test_split <= 1))
    return NEST_ERR(code, "%s: /input: val_split %g / test_split %g must be in [0, 1]", path,
                    in->val_split, in->test_split);
  return NEST_OK;
}

static const char *input_layout(const nest_model_input *in) {
  return in->data_shape.h * in->data_shape.w > 1 ? "CHW" : "features";
}

static const char *input_normalization(const nest_model_input *in) {
  if (in->norm.nch == 0) return "none";
  return in->data_shape.h * in->data_shape.w > 1 ? "per_channel" : "per_feature";
}

/* /input (attributes, mean, std) and /labels under loc. */
static herr_t put_input(hid_t loc, const nest_model_input *in, int nclasses) {
  hid_t g = H5Gcreate2(loc, "input", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (g < 0) return -1;
  const int shape[3] = {in->data_shape.c, in->data_shape.h, in->data_shape.w};
  const char delim[2] = {in->csv_delim ? in->csv_delim : ',', '\0'};
  herr_t e = nest_h5_put_attr(g, "data_shape", H5T_STD_I32LE, H5T_NATIVE_INT, 3, shape);
  if (e >= 0) e = nest_h5_put_str(g, "layout", input_layout(in));
  if (e >= 0) e = nest_h5_put_int(g, "crop", in->crop);
  if (e >= 0) e = nest_h5_put_str(g, "dtype", in->is_u8 ? "uint8" : "float32");
  if (e >= 0) e = nest_h5_put_attr(g, "scale", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 0, &in->scale);
  if (e >= 0) e = nest_h5_put_str(g, "normalization", input_normalization(in));
  if (e >= 0) e = nest_h5_put_str(g, "format", in->format);
  if (e >= 0) e = nest_h5_put_int(g, "csv_label_col", in->csv_label_col);
  if (e >= 0) e = nest_h5_put_str(g, "csv_delim", delim);
  if (e >= 0) e = nest_h5_put_int(g, "csv_header", in->csv_header);
  if (e >= 0) e = nest_h5_put_str(g, "csv_drop_cols", in->csv_drop_cols);
  if (e >= 0) e = put_double(g, "val_split", in->val_split);
  if (e >= 0) e = put_double(g, "test_split", in->test_split);
  if (e >= 0)
    e = nest_h5_put_attr(g, "split_seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, 0, &in->split_seed);
  const hsize_t nch = (hsize_t)in->norm.nch;
  if (e >= 0 && nch)
    e = put_tensor(g, "mean", 1, &nch, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, 0, in->norm.mean);
  if (e >= 0 && nch)
    e = put_tensor(g, "std", 1, &nch, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, 0, in->norm.std);
  if (H5Gclose(g) < 0) e = -1;
  if (e < 0) return e;
  if (in->labels) return nest_h5_put_fixed_strs(loc, "labels", in->labels, nclasses);
  /* No names (IDX digits): the class indices. */
  char **names = calloc((size_t)nclasses, sizeof(char *));
  char *buf = malloc((size_t)nclasses * 12);
  if (names && buf) {
    for (int k = 0; k < nclasses; ++k) {
      names[k] = buf + (size_t)k * 12;
      snprintf(names[k], 12, "%d", k);
    }
    e = nest_h5_put_fixed_strs(loc, "labels", names, nclasses);
  } else {
    e = -1;
  }
  free(names);
  free(buf);
  return e;
}

nest_status nest_model_layout_put_input(hid_t loc, const char *path, const nest_net *net,
                                        const nest_model_input *in) {
  if (!in || !in->known) return NEST_OK;
  NEST_CALL(input_check(in, net->in_shape, net->nclasses, path, NEST_ERR_ARG));
  if (put_input(loc, in, net->nclasses) < 0)
    return NEST_ERR(NEST_ERR_IO, "%s: writing /input and /labels failed (disk full?)", path);
  return NEST_OK;
}

void nest_model_input_from_data(const nest_dataset *ds, nest_model_input *out) {
  memset(out, 0, sizeof *out);
  out->known = 1;
  out->data_shape = nest_dataset_stored_shape(ds);
  if (nest_dataset_is_sharded(ds) && (ds->shape.h != out->data_shape.h ||
                                      ds->shape.w != out->data_shape.w))
    out->crop = ds->shape.h;
  out->is_u8 = ds->u8 != NULL || nest_dataset_is_sharded(ds);
  out->scale = ds->u8_scale > 0 ? ds->u8_scale : 1.0f;
  out->norm = ds->norm; /* borrowed */
  out->nlabels = ds->nclasses;
  out->labels = ds->class_names; /* borrowed; NULL: "0", "1", ... */
  snprintf(out->format, sizeof out->format, "%s", ds->format);
  out->csv_delim = ',';
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
  if (e >= 0 && info && info->input && info->input->known)
    e = put_input(loc, info->input, net->nclasses);
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

nest_status nest_model_save_info(const nest_net *net, const nest_model_info *info,
                                 const char *path) {
  nest_h5_quiet();
  if (!net || !path || !*path) return NEST_ERR(NEST_ERR_ARG, "nest_model_save: no net or path");
  if (info) NEST_CALL(info_check(net, info, path));
  if (info && info->input && info->input->known)
    NEST_CALL(input_check(info->input, net->in_shape, net->nclasses, path, NEST_ERR_ARG));
  size_t maxmask;
  NEST_CALL(nest_model_check(net, path, &maxmask));

  uint8_t *u8 = NULL;
  NEST_CALL(nest_malloc((void **)&u8, maxmask, "mask buffer"));
  char tmp[4096];
  hid_t file = -1;
  /* 1.10 object headers carry checksums of their own (attributes included) and have no 64 KiB
   * attribute limit (long arch strings of deep nets). */
  nest_status st = nest_h5_begin(path, tmp, sizeof tmp, H5F_LIBVER_V110, &file);
  if (st == NEST_OK && nest_model_layout_write(file, net, info, u8, 0, 3) < 0)
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
  if (version < NEST_MODEL_VERSION_MIN || version > NEST_MODEL_VERSION)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: format_version %d not supported (this build reads %d to "
                  "%d%s)", path, version, NEST_MODEL_VERSION_MIN, NEST_MODEL_VERSION,
                  version > NEST_MODEL_VERSION ? ": written by a newer nest" : "");
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

/* ---- the compact form of a maskable parameter ---------------------------------------------- */

/* 1 if maskable parameter `name` of group g is stored compactly (either of "<name>_index",
 * "<name>_value" present: a file missing the other is then told so). */
static int is_compact(hid_t g, const char *name) {
  char n[NEST_NAME_LEN + 8];
  snprintf(n, sizeof n, "%s_index", name);
  if (H5Lexists(g, n, H5P_DEFAULT) > 0) return 1;
  snprintf(n, sizeof n, "%s_value", name);
  return H5Lexists(g, n, H5P_DEFAULT) > 0;
}

#define COMPACT_BLOCK 65536 /* entries read at a time: no allocation of the file's size */

/* Open "<p>_index" (unsigned integers) and "<p>_value" (floats, attribute shape = p's dims),
 * both 1-D of the same length nnz <= p->count. */
static nest_status compact_open(hid_t g, const char *path, const char *where, const nest_param *p,
                                hid_t *di, hid_t *dv, hsize_t *nnz) {
  char iname[NEST_NAME_LEN + 8], vname[NEST_NAME_LEN + 8];
  snprintf(iname, sizeof iname, "%s_index", p->name);
  snprintf(vname, sizeof vname, "%s_value", p->name);
  int rank, is_float, is_u8;
  hsize_t di_dims[4], dv_dims[4];
  *di = *dv = -1;
  hid_t ty;
  NEST_CALL(nest_h5_dset_open(g, path, where, iname, 1, 1, di, &rank, di_dims, &ty));
  const int uint_ok = H5Tget_class(ty) == H5T_INTEGER && H5Tget_sign(ty) == H5T_SGN_NONE &&
                      H5Tget_size(ty) <= 8;
  H5Tclose(ty);
  nest_status st = NEST_OK;
  if (!uint_ok) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s must be unsigned integers", path, where, iname);
    goto fail;
  }
  NEST_CALL_GOTO(st, dset_open(g, path, where, vname, dv, &rank, dv_dims, &is_float, &is_u8),
                 fail);
  if (!is_float || rank != 1) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s must be 1-D float32", path, where, vname);
    goto fail;
  }
  if (dv_dims[0] != di_dims[0] || di_dims[0] > (hsize_t)p->count) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s: %s has %llu entries and %s %llu (equal, and at most "
                  "the %zu positions of %s, expected)", path, where, iname,
                  (unsigned long long)di_dims[0], vname, (unsigned long long)dv_dims[0], p->count,
                  p->name);
    goto fail;
  }
  int shape[4] = {0, 0, 0, 0};
  char wv[NEST_NAME_LEN + 64];
  snprintf(wv, sizeof wv, "%s/%s", where, vname);
  NEST_CALL_GOTO(st, nest_h5_attr_read(*dv, path, wv, "shape", H5T_INTEGER, p->ndims,
                                       H5T_NATIVE_INT, shape), fail);
  for (int k = 0; k < p->ndims; ++k)
    if (shape[k] != p->dims[k]) {
      hsize_t have[4], want[4];
      for (int j = 0; j < p->ndims; ++j) have[j] = (hsize_t)shape[j], want[j] = (hsize_t)p->dims[j];
      char hs[96], ws[96];
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s: attribute 'shape' = %s, expected %s (the mask "
                    "does not fit its weights)", path, wv, dims_str(hs, sizeof hs, p->ndims, have),
                    dims_str(ws, sizeof ws, p->ndims, want));
      goto fail;
    }
  *nnz = di_dims[0];
  return NEST_OK;
fail:
  nest_h5_close(di, H5Dclose);
  nest_h5_close(dv, H5Dclose);
  return st;
}

/* Read a compact parameter: mask[count] = 1 at the listed positions (0 elsewhere) and, when w is
 * not NULL, w[count] = the values there (0 elsewhere). Indices must increase strictly and lie
 * in [0, count); values must be finite. */
static nest_status read_compact(hid_t g, const char *path, const char *where, const nest_param *p,
                                float *w, uint8_t *mask) {
  hid_t di, dv;
  hsize_t nnz;
  NEST_CALL(compact_open(g, path, where, p, &di, &dv, &nnz));
  uint64_t *ib = NULL;
  float *vb = NULL;
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_malloc((void **)&ib, sizeof(uint64_t) * COMPACT_BLOCK, "index block"),
                 done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&vb, sizeof(float) * COMPACT_BLOCK, "value block"), done);
  memset(mask, 0, p->count);
  if (w) memset(w, 0, sizeof(float) * p->count);
  char what[NEST_NAME_LEN + 96];
  uint64_t prev = 0;
  for (hsize_t first = 0; first < nnz; first += COMPACT_BLOCK) {
    const hsize_t cnt = nnz - first < COMPACT_BLOCK ? nnz - first : COMPACT_BLOCK;
    snprintf(what, sizeof what, "%s/%s_index", where, p->name);
    NEST_CALL_GOTO(st, nest_h5_read_rows(di, path, what, 1, &nnz, first, cnt, H5T_NATIVE_UINT64,
                                         ib), done);
    snprintf(what, sizeof what, "%s/%s_value", where, p->name);
    if (w)
      NEST_CALL_GOTO(st, nest_h5_read_rows(dv, path, what, 1, &nnz, first, cnt, H5T_NATIVE_FLOAT,
                                           vb), done);
    for (hsize_t k = 0; k < cnt; ++k) {
      const uint64_t i = ib[k];
      if (i >= (uint64_t)p->count || (first + k > 0 && i <= prev)) {
        st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s_index[%llu] = %llu: indices must increase and "
                      "lie in [0, %zu)", path, where, p->name, (unsigned long long)(first + k),
                      (unsigned long long)i, p->count);
        goto done;
      }
      prev = i;
      mask[i] = 1;
      if (!w) continue;
      if (!isfinite(vb[k])) {
        st = NEST_ERR(NEST_ERR_FORMAT, "%s: %s/%s_value[%llu] is %s", path, where, p->name,
                      (unsigned long long)(first + k), isnan(vb[k]) ? "NaN" : "Inf");
        goto done;
      }
      w[i] = vb[k];
    }
  }
done:
  free(ib);
  free(vb);
  H5Dclose(di);
  H5Dclose(dv);
  return st;
}

/* Buffer b of layer group g into dst[b->count]: float32; a 0/1 buffer (the area mask) may be
 * uint8 too (the compact form). */
static nest_status read_buffer(hid_t g, const char *path, const char *where, const nest_buffer *b,
                               float *dst) {
  int n = (int)b->count;
  if (!b->mask) return read_exact(g, path, where, b->name, 1, &n, 0, dst);
  hid_t d;
  int rank, is_float, is_u8;
  hsize_t dims[4];
  NEST_CALL(dset_open(g, path, where, b->name, &d, &rank, dims, &is_float, &is_u8));
  H5Dclose(d);
  if (is_float) return read_exact(g, path, where, b->name, 1, &n, 0, dst);
  uint8_t *u = NULL;
  NEST_CALL(nest_malloc((void **)&u, b->count ? b->count : 1, "mask buffer"));
  nest_status st = read_exact(g, path, where, b->name, 1, &n, 1, u);
  for (size_t i = 0; st == NEST_OK && i < b->count; ++i) dst[i] = (float)u[i];
  free(u);
  return st;
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
  return NEST_OK;
}

/* Copy layer l's tensors from its group: values, masks (0/1, values 0 where dormant),
 * buffers. u8 has room for the largest maskable tensor. */
static nest_status read_layer_data(hid_t g, const char *path, const char *where, nest_layer *l,
                                   uint8_t *u8, float *mom) {
  for (int s = 0; s < l->nparams; ++s) {
    const nest_param *p = &l->param[s];
    if (p->maskable && is_compact(g, p->name)) { /* model files, format 2 */
      NEST_CALL(read_compact(g, path, where, p, l->p[s], u8));
      for (size_t i = 0; i < p->count; ++i) l->m[s][i] = u8[i] ? 1.0f : 0.0f;
      if (!mom) continue;
    } else {
      NEST_CALL(read_exact(g, path, where, p->name, p->ndims, p->dims, 0, l->p[s]));
      NEST_CALL(check_finite(path, where, p->name, l->p[s], p->count));
    }
    if (mom) { /* restart checkpoints: the optimizer's momentum */
      char mname[NEST_NAME_LEN + 16];
      snprintf(mname, sizeof mname, "%s_momentum", p->name);
      NEST_CALL(read_exact(g, path, where, mname, p->ndims, p->dims, 0, mom + p->offset));
      NEST_CALL(check_finite(path, where, mname, mom + p->offset, p->count));
    }
    if (!p->maskable || is_compact(g, p->name)) continue; /* not maskable: all ones */
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
    NEST_CALL(read_buffer(g, path, where, b, l->buf[s]));
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

/* ---- the input record: reading ------------------------------------------------------------- */

void nest_model_input_free(nest_model_input *in) {
  if (!in) return;
  nest_norm_free(&in->norm);
  for (int k = 0; in->labels && k < in->nlabels; ++k) free(in->labels[k]);
  free(in->labels);
  memset(in, 0, sizeof *in);
}

/* A string attribute of /input into buf[cap] (one of `allowed`, '|'-separated, when given). */
static nest_status input_str(hid_t g, const char *path, const char *name, const char *allowed,
                             char *buf, size_t cap) {
  char *v = NULL;
  NEST_CALL(nest_h5_attr_str(g, path, "/input", name, &v));
  const size_t n = strlen(v);
  int ok = n < cap;
  if (ok && allowed) {
    ok = 0;
    for (const char *a = allowed; *a && !ok;) {
      const size_t len = strcspn(a, "|");
      ok = len == n && strncmp(a, v, n) == 0;
      a += len + (a[len] == '|');
    }
  }
  if (ok) memcpy(buf, v, n + 1);
  nest_status st = NEST_OK;
  if (!ok)
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /input: attribute '%s' = '%.64s' is not valid%s%s%s",
                  path, name, v, allowed ? " (one of " : "", allowed ? allowed : "",
                  allowed ? ")" : "");
  free(v);
  return st;
}

static nest_status input_double(hid_t g, const char *path, const char *name, double *v) {
  return nest_h5_attr_read(g, path, "/input", name, H5T_FLOAT, 0, H5T_NATIVE_DOUBLE, v);
}

/* The attributes of /input (group g) into in. */
static nest_status input_attrs(hid_t g, const char *path, nest_model_input *in, char *norm_kind,
                               size_t cap) {
  int shape[3];
  NEST_CALL(nest_h5_attr_read(g, path, "/input", "data_shape", H5T_INTEGER, 3, H5T_NATIVE_INT,
                              shape));
  in->data_shape = (nest_shape){shape[0], shape[1], shape[2]};
  NEST_CALL(nest_h5_attr_int(g, path, "/input", "crop", &in->crop));
  char dtype[16], delim[4];
  NEST_CALL(input_str(g, path, "dtype", "uint8|float32", dtype, sizeof dtype));
  in->is_u8 = strcmp(dtype, "uint8") == 0;
  NEST_CALL(nest_h5_attr_read(g, path, "/input", "scale", H5T_FLOAT, 0, H5T_NATIVE_FLOAT,
                              &in->scale));
  NEST_CALL(input_str(g, path, "normalization", "per_channel|per_feature|none", norm_kind, cap));
  NEST_CALL(input_str(g, path, "format", "|idx|csv|h5|shards", in->format, sizeof in->format));
  NEST_CALL(nest_h5_attr_int(g, path, "/input", "csv_label_col", &in->csv_label_col));
  NEST_CALL(input_str(g, path, "csv_delim", NULL, delim, sizeof delim));
  if (strlen(delim) != 1)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: /input: attribute 'csv_delim' = '%s' must be one "
                    "character", path, delim);
  in->csv_delim = delim[0];
  NEST_CALL(nest_h5_attr_int(g, path, "/input", "csv_header", &in->csv_header));
  NEST_CALL(input_str(g, path, "csv_drop_cols", NULL, in->csv_drop_cols,
                      sizeof in->csv_drop_cols));
  NEST_CALL(input_double(g, path, "val_split", &in->val_split));
  NEST_CALL(input_double(g, path, "test_split", &in->test_split));
  unsigned long long seed = 0;
  NEST_CALL(nest_h5_attr_read(g, path, "/input", "split_seed", H5T_INTEGER, 0, H5T_NATIVE_ULLONG,
                              &seed));
  in->split_seed = (uint64_t)seed;
  return NEST_OK;
}

/* /input and /labels of an open file, validated against the net's input shape and classes
 * (from the root attributes). No /input: known = 0. */
static nest_status read_input(hid_t file, const char *path, nest_shape net_in, int nclasses,
                              nest_model_input *out) {
  memset(out, 0, sizeof *out);
  if (H5Lexists(file, "input", H5P_DEFAULT) <= 0) return NEST_OK;
  hid_t g = -1;
  nest_model_input in;
  memset(&in, 0, sizeof in);
  char norm_kind[16];
  nest_status st = NEST_OK;
  NEST_CALL(nest_h5_group_open(file, path, "", "input", &g));
  NEST_CALL_GOTO(st, input_attrs(g, path, &in, norm_kind, sizeof norm_kind), done);
  if (in.data_shape.c < 1 || in.data_shape.c > (1 << 24)) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /input: data_shape has %d channels", path,
                  in.data_shape.c);
    goto done;
  }
  const int has_mean = H5Lexists(g, "mean", H5P_DEFAULT) > 0;
  const int has_std = H5Lexists(g, "std", H5P_DEFAULT) > 0;
  if (strcmp(norm_kind, "none") == 0 ? has_mean || has_std : !has_mean || !has_std) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: /input: normalization is '%s' but /input/mean and "
                  "/input/std are %s", path, norm_kind,
                  has_mean && has_std ? "present" : has_mean || has_std ? "half there" : "missing");
    goto done;
  }
  if (has_mean) {
    NEST_CALL_GOTO(st, nest_h5_read_floats(file, path, "input/mean", 0, in.data_shape.c, 0,
                                           &in.norm.mean), done);
    NEST_CALL_GOTO(st, nest_h5_read_floats(file, path, "input/std", 0, in.data_shape.c, 1,
                                           &in.norm.std), done);
    in.norm.nch = in.data_shape.c;
  }
  NEST_CALL_GOTO(st, nest_h5_read_strs(file, path, "labels", 0, nclasses, &in.labels), done);
  in.nlabels = nclasses;
  NEST_CALL_GOTO(st, input_check(&in, net_in, nclasses, path, NEST_ERR_FORMAT), done);
  in.known = 1;
  *out = in;
  memset(&in, 0, sizeof in);
done:
  nest_h5_close(&g, H5Gclose);
  nest_model_input_free(&in);
  return st;
}

nest_status nest_model_read_input(const char *path, nest_model_input *out) {
  nest_h5_quiet();
  if (!out) return NEST_ERR(NEST_ERR_ARG, "nest_model_read_input: no output");
  memset(out, 0, sizeof *out);
  if (!path || !*path) return NEST_ERR(NEST_ERR_ARG, "nest_model_read_input: no path");
  hid_t file = -1;
  model_head h = {.group = -1};
  nest_status st = NEST_OK;
  NEST_CALL(nest_model_open_file(path, &file));
  NEST_CALL_GOTO(st, read_head(file, path, &h), done);
  NEST_CALL_GOTO(st, read_input(file, path, h.in, h.nclasses, out), done);
done:
  head_free(&h);
  nest_h5_close(&file, H5Fclose);
  return st;
}

nest_status nest_model_load_input(const char *path, int max_batch, int nthreads, nest_net **out,
                                  nest_model_input *in) {
  nest_h5_quiet();
  if (out) *out = NULL;
  if (in) memset(in, 0, sizeof *in);
  if (!path || !*path || !out) return NEST_ERR(NEST_ERR_ARG, "nest_model_load: no path");
  if (max_batch <= 0) return NEST_ERR(NEST_ERR_ARG, "%s: max_batch must be positive", path);
  hid_t file = -1;
  NEST_CALL(nest_model_open_file(path, &file));
  nest_model_input rec;
  memset(&rec, 0, sizeof rec);
  nest_status st = nest_model_layout_read(file, path, max_batch, nthreads, 0, out);
  if (st == NEST_OK) st = read_input(file, path, (*out)->in_shape, (*out)->nclasses, &rec);
  nest_h5_close(&file, H5Fclose);
  if (st != NEST_OK) {
    nest_net_destroy(out);
    return st;
  }
  if (in) *in = rec;
  else nest_model_input_free(&rec);
  return NEST_OK;
}

nest_status nest_model_load(const char *path, int max_batch, int nthreads, nest_net **out) {
  return nest_model_load_input(path, max_batch, nthreads, out, NULL);
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
 * spec, not bound: declarations only, no storage). Dense form: the parameter's values must be
 * there with the declared dims too (not read), its "<param>_mask" uint8 0/1 with the same dims;
 * compact form: "<param>_index" valid, "<param>_value" of its length and shape (not read). */
static nest_status read_layer_masks(hid_t g, const char *path, const layer_entry *e,
                                    const nest_layer *l, nest_model_masks *m, int *cap) {
  for (int s = 0; s < l->nparams; ++s) {
    const nest_param *p = &l->param[s];
    if (!p->maskable) continue;
    const int compact = is_compact(g, p->name);
    if (!compact) {
      hid_t d;
      NEST_CALL(dset_check(g, path, e->where, p->name, p->ndims, p->dims, 0, &d));
      H5Dclose(d);
    }
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
    if (compact) {
      NEST_CALL(read_compact(g, path, e->where, p, NULL, t->mask));
      continue;
    }
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
  nest_shape shape = h->in;
  nest_layer *l = NULL;
  hid_t g = -1;
  int cap = 0;
  nest_status st = NEST_OK;
  for (int i = 0; i < h->nlayers && st == NEST_OK; ++i) {
    st = nest_layer_create(nest_layer_ops_of(specs[i].kind), specs[i].name, shape, &specs[i].hp,
                           1, 1, &l);
    if (st != NEST_OK) {
      st = invalid_layers(st, path);
      break;
    }
    l->index = i;
    st = layer_open(h, path, i, &g);
    if (st == NEST_OK) st = read_layer_masks(g, path, &h->layers[i], l, m, &cap);
    nest_h5_close(&g, H5Gclose);
    shape = l->out;
    nest_layer_destroy(&l);
  }
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

