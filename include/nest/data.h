/* data.h — datasets: readers (MNIST IDX raw/.gz, CSV, nest HDF5), normalisation, splits,
 * gathering a batch, the HDF5 writer used by nest_prep, and synthetic data for tests.
 *
 * A dataset holds every sample in memory, either as raw bytes (images: u8, converted with
 * u8_scale) or as float32 features, plus int32 labels in [0, nclasses). Normalisation is
 * applied when a batch is gathered, per channel (images) or per feature (tabular), with
 * statistics computed on the TRAINING subset and copied to validation/test sets.
 * Every reader error is NEST_ERR_IO / NEST_ERR_FORMAT with a one-line message naming the file
 * and the problem (e.g. "data/x.idx: truncated: expected 47040016 bytes, got 1000"). */
#ifndef NEST_DATA_H
#define NEST_DATA_H

#include <stdint.h>
#include "nest/layer.h"
#include "nest/status.h"

typedef struct {
  int nch;     /* channels (images: c) or features (tabular: d); 0 = no normalisation */
  float *mean; /* [nch] */
  float *std;  /* [nch], > 0 */
} nest_norm;

typedef struct nest_dataset {
  char path[1024];     /* source file, for messages */
  int64_t n;           /* samples */
  nest_shape shape;    /* per sample; tabular (d, 1, 1) */
  int nclasses;
  int32_t *labels;     /* [n], in [0, nclasses) */
  uint8_t *u8;         /* [n, D] raw bytes, or NULL */
  float *f32;          /* [n, D] features, or NULL */
  float u8_scale;      /* u8 -> float multiplier applied before normalisation (1/255) */
  nest_norm norm;      /* applied by gather: (v - mean[ch]) / std[ch] */
  char **class_names;  /* [nclasses] original label strings (CSV), or NULL */
} nest_dataset;

typedef struct {
  const char *path;          /* IDX images (raw or .gz), CSV, or nest HDF5 (.h5) */
  const char *labels_path;   /* IDX labels (raw or .gz); IDX only */
  const char *format;        /* "auto" (by magic / extension), "idx", "csv", "h5" */
  int csv_label_col;         /* 0-based label column; -1 = last column */
  char csv_delim;            /* field delimiter, e.g. ',' */
  int csv_header;            /* 1: the first line is a header and is skipped */
  const char *csv_drop_cols; /* comma-separated 0-based columns to ignore (e.g. an ID), or "" */
  int64_t max_samples;       /* > 0: keep only the first max_samples; 0: all */
} nest_data_opts;

/* Fill opts with defaults (format auto, label col 0, ',', no header, no drops, all samples). */
void nest_data_opts_default(nest_data_opts *o);

/* Load a dataset. Format "auto": HDF5 signature -> h5; gzip or IDX magic -> idx (a labels
 * file also implies idx); ".h5"/".hdf5" -> h5; anything else -> csv.
 * label_ref, if not NULL, is the training set whose class mapping the new set must use (e.g.
 * the test set): labels are matched by class name when both sets have names, else must be
 * below label_ref->nclasses; an unknown label is an error. */
nest_status nest_dataset_load(const nest_data_opts *opts, const nest_dataset *label_ref,
                              nest_dataset **out);
void nest_dataset_destroy(nest_dataset **ds);

/* Features per sample (c*h*w). */
static inline int64_t nest_dataset_dim(const nest_dataset *ds) {
  return (int64_t)nest_shape_size(ds->shape);
}

/* Mean / std per channel (images) or per feature (tabular) over the samples idx[0..n)
 * (idx NULL: the first n samples); bit-identical for any thread count.
 * std is floored at 1e-6 (a constant feature must not divide by zero). out is allocated. */
nest_status nest_norm_compute(const nest_dataset *ds, const int64_t *idx, int64_t n,
                              nest_norm *out);
/* Copy a normalisation into ds (replacing any). */
nest_status nest_dataset_set_norm(nest_dataset *ds, const nest_norm *norm);
void nest_norm_free(nest_norm *n);

/* x[i, :] = normalised features of sample idx[i]; y[i] = its label (y may be NULL).
 * x has n * dim floats. No allocation. An index outside [0, ds->n) is a bug: asserted. */
void nest_dataset_gather(const nest_dataset *ds, const int64_t *idx, int n, float *x, int32_t *y);

/* Split 0..n-1 into train and validation index lists with a seeded permutation (identical on
 * every rank): n_val = round(val_fraction * n). Both lists are sorted ascending and allocated. */
nest_status nest_dataset_split(int64_t n, double val_fraction, uint64_t seed, int64_t **train_idx,
                               int64_t *n_train, int64_t **val_idx, int64_t *n_val);

/* Write ds (raw data, labels, class count, normalisation, class names) in nest's HDF5
 * format (docs/data-format.md). Written to PATH.tmp and renamed, so a crash never leaves a
 * half-written file under the final name. */
nest_status nest_dataset_save_h5(const nest_dataset *ds, const char *path);

/* A learnable synthetic dataset: class k has a fixed random mean pattern; samples are the
 * pattern plus N(0, noise^2). as_u8: store as bytes (images) instead of floats. */
nest_status nest_dataset_synthetic(int64_t n, nest_shape shape, int nclasses, float noise,
                                   uint64_t seed, int as_u8, nest_dataset **out);

#endif
