/* dataset.c — the dataset object: loading (format dispatch, max_samples, the reference label
 * mapping for test sets), normalisation statistics, batch gathering (the training hot path),
 * the seeded train/validation split and synthetic data. Readers live in idx.c, csv.c, h5.c. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/data.h"
#include "nest/rng.h"

#include "data_internal.h"

#define NORM_BLOCKS 64 /* fixed partial-sum blocks: results do not depend on the thread count */

/* ---- internal helpers used by the readers ------------------------------------------------ */

/* A dataset with n samples of `shape`: labels [n] allocated; kind 1 also allocates u8 [n, D],
 * kind 2 f32 [n, D], kind 0 neither (the reader attaches its own buffer). */
nest_status nest_data_bytes(const char *path, const char *what, int64_t n, size_t d, size_t elem,
                            size_t *bytes) {
  *bytes = 0;
  if (n < 0 || (d > 0 && (uint64_t)n > SIZE_MAX / elem / d))
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %lld samples of %zu values (%s) are more than this "
                    "machine can address (a corrupt size in the file?)", path, (long long)n, d,
                    what);
  *bytes = (size_t)n * d * elem;
  return NEST_OK;
}

nest_status nest_data_new(const char *path, int64_t n, nest_shape shape, int kind,
                          nest_dataset **out) {
  *out = NULL;
  const char *p = path ? path : "";
  const size_t d = nest_shape_size(shape);
  size_t lbytes, xbytes = 0;
  NEST_CALL(nest_data_bytes(p, "labels", n, 1, sizeof(int32_t), &lbytes));
  if (kind == 1) NEST_CALL(nest_data_bytes(p, "uint8 samples", n, d, 1, &xbytes));
  if (kind == 2) NEST_CALL(nest_data_bytes(p, "float samples", n, d, sizeof(float), &xbytes));
  nest_dataset *ds = NULL;
  NEST_CALL(nest_calloc((void **)&ds, 1, sizeof *ds, "dataset"));
  snprintf(ds->path, sizeof ds->path, "%s", p);
  ds->n = n;
  ds->shape = shape;
  ds->u8_scale = kind == 1 ? 1.0f / 255.0f : 1.0f;
  nest_status st = nest_malloc((void **)&ds->labels, lbytes, "labels");
  if (st == NEST_OK && kind == 1) st = nest_malloc((void **)&ds->u8, xbytes, "u8 samples");
  if (st == NEST_OK && kind == 2) st = nest_malloc((void **)&ds->f32, xbytes, "float samples");
  if (st != NEST_OK) {
    nest_dataset_destroy(&ds);
    /* nest_malloc's message names what, not the file the sizes came from */
    return NEST_ERR(st, "%s: out of memory for %lld samples of %zu values (%zu bytes)", p,
                    (long long)n, d, lbytes + xbytes);
  }
  *out = ds;
  return NEST_OK;
}

nest_status nest_data_strdup(const char *s, char **out) {
  size_t len = strlen(s) + 1;
  NEST_CALL(nest_malloc((void **)out, len, "string"));
  memcpy(*out, s, len);
  return NEST_OK;
}

void nest_data_free_names(char **names, int n) {
  if (!names) return;
  for (int k = 0; k < n; ++k) free(names[k]);
  free(names);
}

static nest_status copy_names(char *const *src, int n, char ***out) {
  char **names = NULL;
  *out = NULL;
  if (!src) return NEST_OK;
  NEST_CALL(nest_calloc((void **)&names, (size_t)n, sizeof(char *), "class names"));
  for (int k = 0; k < n; ++k) {
    nest_status st = nest_data_strdup(src[k], &names[k]);
    if (st != NEST_OK) {
      nest_data_free_names(names, n);
      nest_error_trace(__FILE__, __LINE__);
      return st;
    }
  }
  *out = names;
  return NEST_OK;
}

/* ---- loading ----------------------------------------------------------------------------- */

void nest_data_opts_default(nest_data_opts *o) {
  memset(o, 0, sizeof *o);
  o->format = "auto";
  o->csv_label_col = 0;
  o->csv_delim = ',';
  o->csv_header = 0;
  o->csv_drop_cols = "";
  o->max_samples = 0;
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  if (a < b) return 0;
  for (size_t i = 0; i < b; ++i) {
    char c = s[a - b + i];
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (c != suffix[i]) return 0;
  }
  return 1;
}

/* Decide the format of an existing file from its first bytes (and extension). */
static nest_status sniff_format(const char *path, const char **fmt) {
  FILE *f = fopen(path, "rb");
  if (!f) return NEST_ERR(NEST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  unsigned char h[8] = {0};
  size_t got = fread(h, 1, sizeof h, f);
  int err = ferror(f) ? errno : 0;
  fclose(f);
  if (err) return NEST_ERR(NEST_ERR_IO, "%s: cannot read: %s", path, strerror(err));
  static const unsigned char hdf5_sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  /* Order: magic numbers first (an HDF5 signature is unambiguous), then the extension. */
  if (got == 8 && memcmp(h, hdf5_sig, 8) == 0) *fmt = "h5";
  else if (got >= 2 && h[0] == 0x1f && h[1] == 0x8b) *fmt = "idx"; /* gzip: MNIST-style IDX */
  else if (ends_with(path, ".h5") || ends_with(path, ".hdf5")) *fmt = "h5";
  else if (got >= 2 && h[0] == 0 && h[1] == 0) *fmt = "idx"; /* raw IDX magic 00 00 tt nd */
  else *fmt = "csv";
  return NEST_OK;
}

/* Make ds use ref's class mapping: by name when both have class names, else by index (every
 * label must be < ref->nclasses). Used for IDX and HDF5; the CSV reader maps on its own. */
static nest_status apply_label_ref(nest_dataset *ds, const nest_dataset *ref) {
  char **names = NULL;
  if (ds->class_names && ref->class_names) {
    int *map = NULL;
    NEST_CALL(nest_malloc((void **)&map, sizeof(int) * (size_t)ds->nclasses, "class map"));
    for (int k = 0; k < ds->nclasses; ++k) {
      map[k] = -1;
      for (int j = 0; j < ref->nclasses && map[k] < 0; ++j)
        if (strcmp(ds->class_names[k], ref->class_names[j]) == 0) map[k] = j;
    }
    for (int64_t i = 0; i < ds->n; ++i) {
      int m = map[ds->labels[i]];
      if (m < 0) {
        nest_status st = NEST_ERR(NEST_ERR_FORMAT,
                                  "%s: sample %lld: unknown label '%.64s': not one of the %d classes of %s",
                                  ds->path, (long long)i, ds->class_names[ds->labels[i]],
                                  ref->nclasses, ref->path);
        free(map);
        return st;
      }
      ds->labels[i] = m;
    }
    free(map);
  } else {
    for (int64_t i = 0; i < ds->n; ++i)
      if (ds->labels[i] >= ref->nclasses)
        return NEST_ERR(NEST_ERR_FORMAT,
                        "%s: sample %lld: label %d out of range: %s has only %d classes",
                        ds->path, (long long)i, ds->labels[i], ref->path, ref->nclasses);
  }
  NEST_CALL(copy_names(ref->class_names, ref->nclasses, &names));
  nest_data_free_names(ds->class_names, ds->nclasses);
  ds->class_names = names;
  ds->nclasses = ref->nclasses;
  return NEST_OK;
}

nest_status nest_dataset_load(const nest_data_opts *opts, const nest_dataset *label_ref,
                              nest_dataset **out) {
  if (!out) return NEST_ERR(NEST_ERR_ARG, "nest_dataset_load: out is NULL");
  *out = NULL;
  if (!opts || !opts->path || !*opts->path)
    return NEST_ERR(NEST_ERR_ARG, "nest_dataset_load: no data path given");
  const char *path = opts->path;
  const char *labels = opts->labels_path && *opts->labels_path ? opts->labels_path : NULL;
  const char *fmt = opts->format && *opts->format ? opts->format : "auto";
  if (opts->max_samples < 0)
    return NEST_ERR(NEST_ERR_ARG, "%s: max_samples = %lld must be >= 0", path,
                    (long long)opts->max_samples);

  nest_dataset *ds = NULL;
  /* Image shards: a glob pattern, or one file marked nest_format = "image-shard". */
  const int pattern = strpbrk(path, "*?") != NULL;
  if (pattern && labels)
    return NEST_ERR(NEST_ERR_ARG, "%s: a labels file (%s) is only used with IDX data", path, labels);
  if (pattern || (!labels && strcmp(fmt, "auto") == 0 && nest_data_is_shard(path)) ||
      (strcmp(fmt, "h5") == 0 && nest_data_is_shard(path))) {
    NEST_CALL(nest_data_shards_open(path, opts->max_samples, &ds));
    fmt = "shards";
    goto loaded;
  }

  const char *detected = "csv";
  NEST_CALL(sniff_format(path, &detected)); /* also: missing file -> "PATH: cannot open: ..." */
  /* auto: a labels file means IDX, unless the data file is clearly HDF5 (error below). */
  if (strcmp(fmt, "auto") == 0) fmt = labels && strcmp(detected, "h5") != 0 ? "idx" : detected;
  if (strcmp(fmt, "idx") != 0 && strcmp(fmt, "csv") != 0 && strcmp(fmt, "h5") != 0)
    return NEST_ERR(NEST_ERR_ARG, "%s: unknown data format '%s' (auto, idx, csv or h5)", path, fmt);
  if (labels && strcmp(fmt, "idx") != 0)
    return NEST_ERR(NEST_ERR_ARG, "%s: a labels file (%s) is only used with IDX data, format is %s",
                    path, labels, fmt);

  if (strcmp(fmt, "idx") == 0) {
    if (!labels && !opts->no_labels)
      return NEST_ERR(NEST_ERR_ARG, "%s: IDX images need a labels file too", path);
    NEST_CALL(nest_data_idx_read(path, labels, opts->max_samples, &ds));
  } else if (strcmp(fmt, "h5") == 0) {
    NEST_CALL(nest_data_h5_read(path, opts->max_samples, &ds));
  } else {
    NEST_CALL(nest_data_csv_read(opts, label_ref, &ds));
    label_ref = NULL; /* already applied, with line numbers in messages */
  }
loaded:
  snprintf(ds->format, sizeof ds->format, "%s", fmt);
  if (opts->no_labels && !ds->unlabeled) { /* labels in the file (h5, shards): not used */
    memset(ds->labels, 0, sizeof(int32_t) * (size_t)ds->n);
    ds->unlabeled = 1;
  }
  if (label_ref && ds->unlabeled) {
    ds->nclasses = label_ref->nclasses;
    label_ref = NULL;
  }
  if (label_ref) {
    nest_status st = apply_label_ref(ds, label_ref);
    if (st != NEST_OK) {
      nest_dataset_destroy(&ds);
      nest_error_trace(__FILE__, __LINE__);
      return st;
    }
  }
  *out = ds;
  return NEST_OK;
}

void nest_dataset_destroy(nest_dataset **ds) {
  if (!ds || !*ds) return;
  nest_dataset *d = *ds;
  free(d->labels);
  free(d->u8);
  free(d->f32);
  nest_norm_free(&d->norm);
  nest_data_free_names(d->class_names, d->nclasses);
  nest_data_shards_free(d->shards);
  free(d);
  *ds = NULL;
}

/* ---- normalisation ----------------------------------------------------------------------- */

void nest_norm_free(nest_norm *n) {
  if (!n) return;
  free(n->mean);
  free(n->std);
  n->mean = n->std = NULL;
  n->nch = 0;
}

/* Per channel over [nch] channels of hw values each. u8 data: exact integer sums (so the result
 * cannot depend on summation order); float data: two passes in double (mean, then squared
 * deviations), partials over NORM_BLOCKS fixed sample blocks combined in block order. */
nest_status nest_norm_compute(const nest_dataset *ds, const int64_t *idx, int64_t n,
                              nest_norm *out) {
  memset(out, 0, sizeof *out);
  if (!ds || n <= 0 || (!idx && n > ds->n))
    return NEST_ERR(NEST_ERR_ARG, "nest_norm_compute: need 1..n samples (n = %lld)", (long long)n);
  if (!ds->u8 && !ds->f32)
    return NEST_ERR(NEST_ERR_ARG, "%s: nest_norm_compute: no samples in memory (image shards "
                    "carry their statistics: nest_dataset_train_norm)", ds->path);
  if (idx)
    for (int64_t i = 0; i < n; ++i)
      if (idx[i] < 0 || idx[i] >= ds->n)
        return NEST_ERR(NEST_ERR_ARG, "%s: nest_norm_compute: index %lld out of range [0, %lld)",
                        ds->path, (long long)idx[i], (long long)ds->n);
  const int C = ds->shape.c;
  const int64_t hw = (int64_t)ds->shape.h * ds->shape.w, dim = C * hw;
  const int nb = n < NORM_BLOCKS ? (int)n : NORM_BLOCKS;
  double *part = NULL; /* [nb][2][C]: sum, sum of squares (or squared deviations) */
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_calloc((void **)&part, (size_t)nb * 2 * C, sizeof(double), "norm partials"), fail);
  NEST_CALL_GOTO(st, nest_malloc((void **)&out->mean, sizeof(float) * C, "norm mean"), fail);
  NEST_CALL_GOTO(st, nest_malloc((void **)&out->std, sizeof(float) * C, "norm std"), fail);
  out->nch = C;
  const double cnt = (double)n * hw;

  if (ds->u8) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < nb; ++b) {
      int64_t lo = n * b / nb, hi = n * (b + 1) / nb;
      for (int c = 0; c < C; ++c) {
        uint64_t s = 0, q = 0;
        for (int64_t i = lo; i < hi; ++i) {
          const uint8_t *p = ds->u8 + (idx ? idx[i] : i) * dim + c * hw;
          for (int64_t j = 0; j < hw; ++j) {
            s += p[j];
            q += (uint32_t)p[j] * p[j];
          }
        }
        part[((size_t)b * 2 + 0) * C + c] = (double)s;
        part[((size_t)b * 2 + 1) * C + c] = (double)q;
      }
    }
    const double sc = ds->u8_scale;
    for (int c = 0; c < C; ++c) {
      double s = 0, q = 0; /* block sums are exact integers < 2^53 per block; fixed order */
      for (int b = 0; b < nb; ++b) {
        s += part[((size_t)b * 2 + 0) * C + c];
        q += part[((size_t)b * 2 + 1) * C + c];
      }
      double mean = s / cnt, var = q / cnt - mean * mean;
      out->mean[c] = (float)(sc * mean);
      out->std[c] = (float)fmax(sc * sqrt(fmax(var, 0.0)), 1e-6);
    }
  } else {
    double *mean = NULL;
    NEST_CALL_GOTO(st, nest_malloc((void **)&mean, sizeof(double) * C, "norm mean"), fail);
    for (int pass = 0; pass < 2; ++pass) {
#pragma omp parallel for schedule(dynamic, 1)
      for (int b = 0; b < nb; ++b) {
        double *acc = part + ((size_t)b * 2 + pass) * C;
        int64_t lo = n * b / nb, hi = n * (b + 1) / nb;
        for (int64_t i = lo; i < hi; ++i) {
          const float *p = ds->f32 + (idx ? idx[i] : i) * dim;
          for (int c = 0; c < C; ++c) {
            double a = 0;
            if (pass == 0)
              for (int64_t j = 0; j < hw; ++j) a += p[c * hw + j];
            else
              for (int64_t j = 0; j < hw; ++j) {
                double d = p[c * hw + j] - mean[c];
                a += d * d;
              }
            acc[c] += a;
          }
        }
      }
      for (int c = 0; c < C; ++c) {
        double s = 0;
        for (int b = 0; b < nb; ++b) s += part[((size_t)b * 2 + pass) * C + c];
        if (pass == 0) mean[c] = s / cnt;
        else {
          out->mean[c] = (float)mean[c];
          out->std[c] = (float)fmax(sqrt(s / cnt), 1e-6);
        }
      }
    }
    free(mean);
  }
  free(part);
  return NEST_OK;
fail:
  free(part);
  nest_norm_free(out);
  return st;
}

nest_status nest_dataset_set_norm(nest_dataset *ds, const nest_norm *norm) {
  nest_norm copy = {0, NULL, NULL};
  if (norm && norm->nch > 0) {
    if (norm->nch != ds->shape.c)
      return NEST_ERR(NEST_ERR_ARG, "%s: normalisation has %d channels, data has %d", ds->path,
                      norm->nch, ds->shape.c);
    for (int c = 0; c < norm->nch; ++c)
      if (!(norm->std[c] > 0) || !isfinite(norm->std[c]) || !isfinite(norm->mean[c]))
        return NEST_ERR(NEST_ERR_ARG, "%s: normalisation channel %d: mean %g, std %g invalid",
                        ds->path, c, (double)norm->mean[c], (double)norm->std[c]);
    size_t bytes = sizeof(float) * (size_t)norm->nch;
    NEST_CALL(nest_malloc((void **)&copy.mean, bytes, "norm mean"));
    nest_status st = nest_malloc((void **)&copy.std, bytes, "norm std");
    if (st != NEST_OK) {
      free(copy.mean);
      nest_error_trace(__FILE__, __LINE__);
      return st;
    }
    memcpy(copy.mean, norm->mean, bytes);
    memcpy(copy.std, norm->std, bytes);
    copy.nch = norm->nch;
  }
  nest_norm_free(&ds->norm);
  ds->norm = copy;
  return NEST_OK;
}

/* ---- gather: the hot path ---------------------------------------------------------------- */

/* x[i, c*hw + j] = (v * u8_scale - mean[c]) / std[c] for u8, (v - mean[c]) / std[c] for float.
 * u8 uses the fused form v * a + b with a = scale/std, b = -mean/std (one FMA per pixel;
 * differs from the division form by a few ulp). Element-wise, so threads cannot change it. */
void nest_dataset_gather(const nest_dataset *ds, const int64_t *idx, int n, float *x,
                         int32_t *y) {
  const int C = ds->shape.c;
  const int64_t hw = (int64_t)ds->shape.h * ds->shape.w, dim = C * hw;
  const int has_norm = ds->norm.nch == C && C > 0;
  const float *mean = ds->norm.mean, *sd = ds->norm.std;
  const int64_t nds = ds->n;
  NEST_ASSERT(ds->u8 || ds->f32); /* image shards are read by prefetch.h, never gathered */
#pragma omp parallel for schedule(static) if ((int64_t)n * dim >= (1 << 17))
  for (int i = 0; i < n; ++i) {
    const int64_t s = idx[i];
    NEST_ASSERT(s >= 0 && s < nds);
    float *restrict xo = x + (int64_t)i * dim;
    if (ds->u8) {
      const uint8_t *restrict src = ds->u8 + s * dim;
      for (int c = 0; c < C; ++c) {
        float a, b;
        nest_dataset_u8_factors(ds, c, &a, &b);
        float *restrict o = xo + c * hw;
        const uint8_t *restrict p = src + c * hw;
        for (int64_t j = 0; j < hw; ++j) o[j] = (float)p[j] * a + b;
      }
    } else {
      const float *restrict src = ds->f32 + s * dim;
      if (!has_norm) {
        memcpy(xo, src, sizeof(float) * (size_t)dim);
      } else {
        for (int c = 0; c < C; ++c) {
          const float m = mean[c], sdc = sd[c];
          for (int64_t j = 0; j < hw; ++j) xo[c * hw + j] = (src[c * hw + j] - m) / sdc;
        }
      }
    }
    if (y) y[i] = ds->labels[s];
  }
}

/* ---- split ------------------------------------------------------------------------------- */

/* The split of 0..n-1 drawn from stream (seed, SPLIT, index). */
static nest_status split_keyed(int64_t n, double val_fraction, uint64_t seed, uint64_t index,
                               int64_t **train_idx, int64_t *n_train, int64_t **val_idx,
                               int64_t *n_val);

nest_status nest_dataset_split(int64_t n, double val_fraction, uint64_t seed, int64_t **train_idx,
                               int64_t *n_train, int64_t **val_idx, int64_t *n_val) {
  return split_keyed(n, val_fraction, seed, 0, train_idx, n_train, val_idx, n_val);
}

static nest_status split_keyed(int64_t n, double val_fraction, uint64_t seed, uint64_t index,
                               int64_t **train_idx, int64_t *n_train, int64_t **val_idx,
                               int64_t *n_val) {
  *train_idx = *val_idx = NULL;
  *n_train = *n_val = 0;
  if (n < 0 || !(val_fraction >= 0.0 && val_fraction <= 1.0))
    return NEST_ERR(NEST_ERR_ARG, "nest_dataset_split: need n >= 0 and val_fraction in [0, 1] "
                    "(n = %lld, val_fraction = %g)", (long long)n, val_fraction);
  int64_t nv = (int64_t)llround(val_fraction * (double)n);
  if (nv > n) nv = n;
  int64_t *perm = NULL, *tr = NULL, *va = NULL;
  unsigned char *in_val = NULL;
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_malloc((void **)&perm, sizeof(int64_t) * (size_t)n, "split permutation"), fail);
  NEST_CALL_GOTO(st, nest_calloc((void **)&in_val, (size_t)n, 1, "split flags"), fail);
  NEST_CALL_GOTO(st, nest_malloc((void **)&tr, sizeof(int64_t) * (size_t)(n - nv), "train indices"), fail);
  NEST_CALL_GOTO(st, nest_malloc((void **)&va, sizeof(int64_t) * (size_t)nv, "validation indices"), fail);
  /* Partial Fisher-Yates: the first nv positions of a uniform random permutation. */
  nest_rng r;
  nest_rng_init(&r, seed, NEST_RNG_SPLIT, index, 0);
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  for (int64_t i = 0; i < nv; ++i) {
    int64_t j = i + (int64_t)nest_rng_below(&r, (uint64_t)(n - i));
    int64_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
    in_val[perm[i]] = 1;
  }
  int64_t a = 0, b = 0; /* both lists ascending */
  for (int64_t i = 0; i < n; ++i) {
    if (in_val[i]) va[b++] = i;
    else tr[a++] = i;
  }
  free(perm);
  free(in_val);
  *train_idx = tr;
  *val_idx = va;
  *n_train = a;
  *n_val = b;
  return NEST_OK;
fail:
  free(perm);
  free(in_val);
  free(tr);
  free(va);
  return st;
}

/* ---- data.test_split and the label map ------------------------------------------------- */

/* A new in-memory set of rows idx[0..n) of ds: samples, labels, classes, scale, format. */
static nest_status subset(const nest_dataset *ds, const int64_t *idx, int64_t n,
                          const char *suffix, nest_dataset **out) {
  const size_t d = (size_t)nest_dataset_dim(ds);
  nest_dataset *s = NULL;
  NEST_CALL(nest_data_new(ds->path, n, ds->shape, ds->u8 ? 1 : 2, &s));
  snprintf(s->path, sizeof s->path, "%.1000s%s", ds->path, suffix);
  s->nclasses = ds->nclasses;
  s->u8_scale = ds->u8_scale;
  s->unlabeled = ds->unlabeled;
  memcpy(s->format, ds->format, sizeof s->format);
  for (int64_t i = 0; i < n; ++i) {
    s->labels[i] = ds->labels[idx[i]];
    if (ds->u8) memcpy(s->u8 + (size_t)i * d, ds->u8 + (size_t)idx[i] * d, d);
    else memcpy(s->f32 + (size_t)i * d, ds->f32 + (size_t)idx[i] * d, d * sizeof(float));
  }
  nest_status st = copy_names(ds->class_names, ds->nclasses, &s->class_names);
  if (st == NEST_OK) st = nest_dataset_set_norm(s, &ds->norm);
  if (st != NEST_OK) {
    nest_dataset_destroy(&s);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  *out = s;
  return NEST_OK;
}

nest_status nest_dataset_take_test(nest_dataset **train, double fraction, uint64_t seed,
                                   nest_dataset **test) {
  *test = NULL;
  nest_dataset *ds = *train;
  if (fraction == 0.0) return NEST_OK;
  if (!(fraction > 0.0 && fraction < 1.0))
    return NEST_ERR(NEST_ERR_ARG, "data.test_split = %g must be in [0, 1)", fraction);
  if (nest_dataset_is_sharded(ds))
    return NEST_ERR(NEST_ERR_CONFIG, "data.test_split: %s: image shards are not split (give "
                    "data.test, e.g. a second set written by nest_prep)", ds->path);
  int64_t *keep = NULL, *held = NULL, nk = 0, nh = 0;
  NEST_CALL(split_keyed(ds->n, fraction, seed, 1, &keep, &nk, &held, &nh));
  nest_status st = NEST_OK;
  nest_dataset *tr = NULL, *te = NULL;
  if (nh < 1 || nk < 1)
    st = NEST_ERR(NEST_ERR_CONFIG, "data.test_split = %g of the %lld samples of %s leaves %s",
                  fraction, (long long)ds->n, ds->path,
                  nh < 1 ? "no test sample" : "no training sample");
  if (st == NEST_OK) st = subset(ds, held, nh, " (test split)", &te);
  if (st == NEST_OK) st = subset(ds, keep, nk, "", &tr);
  free(keep);
  free(held);
  if (st != NEST_OK) {
    nest_dataset_destroy(&te);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  nest_dataset_destroy(train);
  *train = tr;
  *test = te;
  return NEST_OK;
}

void nest_dataset_label_map(const nest_dataset *ds, int max, char *buf, size_t cap) {
  if (!cap) return;
  buf[0] = '\0';
  size_t used = 0;
  for (int k = 0; k < ds->nclasses && used < cap; ++k) {
    int w;
    if (k == max) {
      w = snprintf(buf + used, cap - used, ", ... (%d classes)", ds->nclasses);
      break;
    }
    if (ds->class_names)
      w = snprintf(buf + used, cap - used, "%s%s -> %d", k ? ", " : "", ds->class_names[k], k);
    else
      w = snprintf(buf + used, cap - used, "%s%d -> %d", k ? ", " : "", k, k);
    if (w < 0) break;
    used += (size_t)w;
  }
}

/* ---- synthetic data ---------------------------------------------------------------------- */

/* Class k's pattern: N(0,1) values from stream (seed, SYNTH, k, 0). Sample i: label uniform in
 * [0, nclasses), then pattern + noise * N(0,1), all from stream (seed, SYNTH, i, 1), so samples
 * are independent of each other and of the thread count. */
nest_status nest_dataset_synthetic(int64_t n, nest_shape shape, int nclasses, float noise,
                                   uint64_t seed, int as_u8, nest_dataset **out) {
  *out = NULL;
  if (n <= 0 || nclasses < 1 || shape.c <= 0 || shape.h <= 0 || shape.w <= 0 || !(noise >= 0))
    return NEST_ERR(NEST_ERR_ARG, "nest_dataset_synthetic: bad arguments (n = %lld, %d classes, "
                    "shape %dx%dx%d, noise %g)", (long long)n, nclasses, shape.c, shape.h,
                    shape.w, (double)noise);
  const int64_t dim = (int64_t)nest_shape_size(shape);
  float *pat = NULL;
  nest_dataset *ds = NULL;
  NEST_CALL(nest_malloc((void **)&pat, sizeof(float) * (size_t)nclasses * (size_t)dim, "synthetic patterns"));
  nest_status st = nest_data_new("synthetic", n, shape, as_u8 ? 1 : 2, &ds);
  if (st != NEST_OK) {
    free(pat);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  ds->nclasses = nclasses;
  for (int k = 0; k < nclasses; ++k) {
    nest_rng r;
    nest_rng_init(&r, seed, NEST_RNG_SYNTH, (uint64_t)k, 0);
    for (int64_t j = 0; j < dim; ++j) pat[(int64_t)k * dim + j] = nest_rng_normal(&r);
  }
#pragma omp parallel for schedule(static) if (n * dim >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    nest_rng r;
    nest_rng_init(&r, seed, NEST_RNG_SYNTH, (uint64_t)i, 1);
    int k = (int)nest_rng_below(&r, (uint64_t)nclasses);
    ds->labels[i] = k;
    const float *p = pat + (int64_t)k * dim;
    for (int64_t j = 0; j < dim; ++j) {
      float v = p[j] + noise * nest_rng_normal(&r);
      if (as_u8) {
        float b = roundf(128.0f + 40.0f * v);
        ds->u8[i * dim + j] = (uint8_t)(b < 0 ? 0 : b > 255 ? 255 : b);
      } else {
        ds->f32[i * dim + j] = v;
      }
    }
  }
  free(pat);
  *out = ds;
  return NEST_OK;
}
