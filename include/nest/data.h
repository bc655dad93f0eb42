/* data.h — datasets: readers (MNIST IDX raw/.gz, CSV, nest HDF5, image shards), normalisation,
 * splits, gathering a batch, the HDF5 writers used by nest_prep, and synthetic data for tests.
 *
 * An in-memory dataset holds every sample in memory, either as raw bytes (images: u8, converted
 * with u8_scale) or as float32 features, plus int32 labels in [0, nclasses). A SHARDED dataset
 * (image shards, docs/data-format.md: one or more HDF5 files of uint8 images, e.g. ImageNet)
 * holds only its labels and where each image sits on disk: the images are read one by one on
 * demand (nest_dataset_read_u8), by the batch reader of prefetch.h. Normalisation is
 * applied when a batch is gathered, per channel (images) or per feature (tabular), with
 * statistics computed on the TRAINING subset and copied to validation/test sets.
 * Every reader error is NEST_ERR_IO / NEST_ERR_FORMAT with a one-line message naming the file
 * and the problem (e.g. "data/x.idx: truncated: expected 47040016 bytes, got 1000"). */
#ifndef NEST_DATA_H
#define NEST_DATA_H

#include <stdint.h>
#include <stdio.h>
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
  struct nest_shards *shards; /* image shards read on demand, or NULL (in memory). Then u8 and
                                 f32 are NULL and `shape` is the shape delivered to the net:
                                 the stored shape, or crop x crop after nest_dataset_set_crop */
  int unlabeled;         /* 1: the file has no labels (nest_data_opts.no_labels): labels all
                           0, only predictions make sense */
  char format[8];        /* the reader that loaded it: "idx", "csv", "h5", "shards" ("" for
                           synthetic sets) */
  uint64_t source_hash; /* image shards: hash of the files' base names, sizes and sample counts
                           (restart's data fingerprint; no pixel is hashed); 0 in memory */
} nest_dataset;

typedef struct {
  const char *path;          /* IDX images (raw or .gz), CSV, nest HDF5 (.h5), one image shard,
                                or a glob pattern (contains '*' or '?') of image shards */
  const char *labels_path;   /* IDX labels (raw or .gz); IDX only */
  const char *format;        /* "auto" (by magic / extension), "idx", "csv", "h5" */
  int csv_label_col;         /* 0-based label column; -1 = last column */
  char csv_delim;            /* field delimiter, e.g. ',' */
  int csv_header;            /* 1: the first line is a header and is skipped */
  const char *csv_drop_cols; /* comma-separated 0-based columns to ignore (e.g. an ID), or "" */
  int64_t max_samples;       /* > 0: keep only the first max_samples; 0: all */
  int no_labels;             /* 1: the data have no labels (new samples to predict): CSV
                                without a label column, IDX images without a labels file;
                                other formats keep their labels unused. ds->unlabeled = 1 */
} nest_data_opts;

/* Fill opts with defaults (format auto, label col 0, ',', no header, no drops, all samples). */
void nest_data_opts_default(nest_data_opts *o);

/* Load a dataset. Format "auto": HDF5 signature -> h5; gzip or IDX magic -> idx (a labels
 * file also implies idx); ".h5"/".hdf5" -> h5; anything else -> csv. An h5 file with root
 * attribute nest_format = "image-shard", or a glob pattern, opens image shards: labels are
 * read whole, images stay on disk; a pattern must match a whole set (shard_index 0..count-1).
 * label_ref, if not NULL, is the training set whose class mapping the new set must use (e.g.
 * the test set): labels are matched by class name when both sets have names, else must be
 * below label_ref->nclasses; an unknown label is an error. */
nest_status nest_dataset_load(const nest_data_opts *opts, const nest_dataset *label_ref,
                              nest_dataset **out);
void nest_dataset_destroy(nest_dataset **ds);

/* Features per sample (c*h*w) as delivered (image shards: after the crop). */
static inline int64_t nest_dataset_dim(const nest_dataset *ds) {
  return (int64_t)nest_shape_size(ds->shape);
}

/* The u8 -> float factors of channel c: v * a + b = (v * u8_scale - mean[c]) / std[c] in fused
 * form (a = u8_scale / std[c], b = -mean[c] / std[c]; without a normalisation a = u8_scale,
 * b = 0). Every reader of u8 images (gather, the image-shard reader) uses these, so their
 * batches agree bit for bit. */
static inline void nest_dataset_u8_factors(const nest_dataset *ds, int c, float *a, float *b) {
  const int has_norm = ds->norm.nch == ds->shape.c && ds->shape.c > 0;
  *a = has_norm ? ds->u8_scale / ds->norm.std[c] : ds->u8_scale;
  *b = has_norm ? -ds->norm.mean[c] / ds->norm.std[c] : 0.0f;
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

/* Write s as one CSV field: as it is, or quoted (RFC 4180: in double quotes, quotes doubled)
 * when it holds a comma, a double quote or a line break. For every CSV nest writes with text in
 * it (report.csv, nest_infer's predictions). */
void nest_csv_put_field(FILE *f, const char *s);

/* data.test_split: hold out round(fraction * n) samples of *train, chosen by a seeded random
 * permutation (the split stream of `seed`, index 1: independent of the validation split's), as
 * a new test set *test; *train is replaced by a set of the remaining samples. Both keep file
 * order, the class list and names, scale and format; the test set's path is "PATH (test
 * split)". fraction 0: nothing happens (*test = NULL). In-memory sets only: NEST_ERR_CONFIG
 * naming data.test_split for image shards, for a split that leaves either side empty, and
 * NEST_ERR_ARG for a fraction outside [0, 1). Identical on every rank. */
nest_status nest_dataset_take_test(nest_dataset **train, double fraction, uint64_t seed,
                                   nest_dataset **test);

/* The class mapping as text for the run log: "B -> 0, M -> 1" (names as the data have them,
 * then the class id); a set without names (IDX) "0 -> 0, 1 -> 1, ...". At most `max` entries,
 * then ", ... (N classes)". Always NUL-terminated in buf[cap]. */
void nest_dataset_label_map(const nest_dataset *ds, int max, char *buf, size_t cap);

/* ---- image shards (docs/data-format.md) ---------------------------------------------------- */

static inline int nest_dataset_is_sharded(const nest_dataset *ds) { return ds->shards != NULL; }
/* The stored per-sample shape (image shards: before the crop; in memory: ds->shape). */
nest_shape nest_dataset_stored_shape(const nest_dataset *ds);
/* Image shards: deliver crop x crop samples from now on (ds->shape becomes (c, crop, crop));
 * crop 0 keeps the stored size. NEST_ERR_CONFIG naming augment.crop if the set is not image
 * shards (crop > 0) or crop exceeds the stored height or width. */
nest_status nest_dataset_set_crop(nest_dataset *ds, int crop);
/* Image shards: the stored bytes [c, h, w] of sample id into buf (stored-shape bytes).
 * Thread-safe and HDF5-free: a pread() at the offset resolved when the set was opened, so the
 * prefetch thread may call it while the main thread writes a checkpoint with HDF5. Errors:
 * NEST_ERR_IO naming the shard file (read error, file truncated since it was opened). */
nest_status nest_dataset_read_u8(const nest_dataset *ds, int64_t id, uint8_t *buf);
/* Normalisation for training on ds[idx[0..n)]: nest_norm_compute for in-memory sets; image
 * shards: their stored /mean, /std (over the whole set, raw units) times u8_scale. */
nest_status nest_dataset_train_norm(const nest_dataset *ds, const int64_t *idx, int64_t n,
                                    nest_norm *out);
/* What an image-shard set has read so far (zeros in memory): images, bytes, in all threads. */
typedef struct {
  int64_t images, bytes;
} nest_io_counts;
void nest_dataset_io_counts(const nest_dataset *ds, nest_io_counts *out);
/* Tests: count reads per sample into counts[ds->n] (atomically; caller-owned), NULL = stop. */
void nest_dataset_track_reads(nest_dataset *ds, int32_t *counts);

/* Writing image shards: PREFIX-00000.h5, PREFIX-00001.h5, ... with shard_size images each
 * (the last may hold fewer). Images are added one at a time ([c, h, w] bytes); the per-channel
 * mean / std over ALL images are known only at the end, so every shard is written as
 * PATH.tmp, completed by finish (mean, std, shard_index, shard_count) and only then renamed
 * (atomic.h); destroy without finish removes the .tmp files. class_names: [nclasses] or NULL. */
typedef struct nest_shard_writer nest_shard_writer;
nest_status nest_shard_writer_create(const char *prefix, nest_shape shape, int nclasses,
                                     int64_t shard_size, char *const *class_names,
                                     nest_shard_writer **out);
nest_status nest_shard_writer_add(nest_shard_writer *w, const uint8_t *image, int32_t label);
/* Completes and renames every shard; *n images, *nfiles shards (either may be NULL). */
nest_status nest_shard_writer_finish(nest_shard_writer *w, int64_t *n, int *nfiles);
void nest_shard_writer_destroy(nest_shard_writer **w);
/* The shard path of index k: PREFIX-%05d.h5 (cap bytes; error if it does not fit). */
nest_status nest_shard_path(const char *prefix, int k, char *out, size_t cap);

/* Learnable synthetic ImageNet-format shards: image i of class k (uniform, from the counter
 * RNG keyed by (seed, SYNTH, first + i)) is class k's pattern — a colour and an oriented
 * sinusoidal grating, both drawn from (seed, SYNTH, k) — plus uniform noise; any size and
 * count, the same bytes for any shard size and thread count. A test set: the same seed and
 * first = the training set's count (same classes, other images). *nfiles may be NULL. */
nest_status nest_shards_synthetic(const char *prefix, int64_t n, nest_shape shape, int nclasses,
                                  int64_t shard_size, uint64_t seed, int64_t first, int *nfiles);

/* Write ds (raw data, labels, class count, normalisation, class names) in nest's HDF5
 * format (docs/data-format.md). Written to PATH.tmp and renamed, so a crash never leaves a
 * half-written file under the final name. */
nest_status nest_dataset_save_h5(const nest_dataset *ds, const char *path);

/* A learnable synthetic dataset: class k has a fixed random mean pattern; samples are the
 * pattern plus N(0, noise^2). as_u8: store as bytes (images) instead of floats. */
nest_status nest_dataset_synthetic(int64_t n, nest_shape shape, int nclasses, float noise,
                                   uint64_t seed, int as_u8, nest_dataset **out);

#endif
