/* reduce.h — dimensionality reduction of tabular features before synthesis (DR+SCANN,
 * ALGORITHMS.md §10): min-max normalisation, then a linear map from d features to k < d.
 *
 * A fitted transform maps a raw row x [d] to y [k]:
 *     z_i = (x_i - min_i) * s_i,   s_i = 1 / (max_i - min_i)  (0 for a constant feature: z_i = 0)
 *     y   = components [k, d] · (z - mean)
 * min, max and mean [d] are statistics of the TRAINING rows only (the caller passes their
 * indices); validation, test and inference rows get the same map (their z may leave [0, 1]).
 * Kinds:
 *   PCA       components = the k leading eigenvectors of the training covariance of z (double,
 *             LAPACK dsyevr from the OpenBLAS nest links), by eigenvalue descending, each signed
 *             so that its largest-|.| entry (the first such, by index) is positive; variance [d]
 *             keeps all d eigenvalues, descending (explained variance of the first k =
 *             sum(variance[0..k)) / sum(variance)).
 *   GAUSSIAN  components[j, i] ~ N(0, 1/k)  (Johnson–Lindenstrauss projection).
 *   SPARSE    components[j, i] = sqrt(3/k) * {+1 w.p. 1/6, 0 w.p. 2/3, -1 w.p. 1/6}
 *             (Achlioptas 2003).
 * Random projections draw element (j, i) from the counter RNG keyed by (seed,
 * NEST_REDUCE_RNG_PURPOSE, index = j, step = i): they depend on nothing but (seed, j, i), so
 * the first k' rows of a k-row projection equal those of a k'-row one up to the 1/sqrt(k) scale.
 * Every kind centres z on the training mean (distances are unchanged; outputs have zero training
 * mean).
 *
 * Rank-identical by construction: a fit reads only data every rank holds identically (in-memory
 * datasets are loaded the same way on every rank; the split is seeded) and computes with sums in
 * a fixed order — the mean in double partials over chunks of NEST_REDUCE_CHUNK training rows added
 * in chunk order; the d x d covariance in double over chunks of a row count fixed by d (about
 * NEST_REDUCE_COV_ELEMS values each) and in row panels fixed by d, each element summed by one
 * single-threaded BLAS call per chunk, chunks added in order; the eigensolver runs
 * single-threaded — so every rank gets the same bits without communicating, for any OpenMP /
 * OpenBLAS thread count (on one CPU type and build). Applying is
 * per row (one single-threaded sgemv per row), so a row's output bits do not depend on the thread
 * count nor on which other rows are in the call: reducing a whole dataset at load and reducing one
 * sample at inference give the same numbers.
 *
 * Errors are one line, start with the caller's ctx (e.g. "inputs/letter.ini: reduce"; NULL means
 * "reduce") and name the quantity: "<ctx>: k = 20 must be in [1, 15] (d = 16 input features)". */
#ifndef NEST_REDUCE_H
#define NEST_REDUCE_H

#include <stdint.h>

#include "nest/status.h"

/* rng.h purpose for random projections (above rng.h's enum values, below NEST_RNG_TEST). */
#define NEST_REDUCE_RNG_PURPOSE 20u
/* Training rows per min/max and mean partial (fixed: the order of the sums depends on n only). */
#define NEST_REDUCE_CHUNK 256
/* Values (rows x d) per covariance chunk: 4M doubles, 32 MB of scratch. */
#define NEST_REDUCE_COV_ELEMS (4 << 20)
/* Covariance row-panel height (fixed: panels depend on d only). */
#define NEST_REDUCE_PANEL 64

typedef enum {
  NEST_REDUCE_PCA = 1,
  NEST_REDUCE_GAUSSIAN = 2,
  NEST_REDUCE_SPARSE = 3
} nest_reduce_kind;

typedef struct {
  nest_reduce_kind kind;
  int d, k;
  uint64_t seed;     /* random projections: the RNG seed; PCA: 0 */
  float *min;        /* [d] training minimum of each raw feature */
  float *max;        /* [d] training maximum */
  float *mean;       /* [d] training mean of z (the normalised features) */
  float *components; /* [k, d] row-major: output j = components[j, :] · (z - mean) */
  float *variance;   /* PCA: [d] eigenvalues of the training covariance of z, descending
                        (clamped at 0); NULL for random projections */
} nest_reduce;

typedef struct {
  nest_reduce_kind kind;
  int k;           /* output features, 1 <= k < d */
  uint64_t seed;   /* random projections */
  const char *ctx; /* prefix of error messages (config file and section); NULL = "reduce" */
} nest_reduce_opts;

/* "pca", "gaussian", "sparse" (the names model files and configs use). */
const char *nest_reduce_kind_name(nest_reduce_kind kind);
/* Parse a kind name; NEST_ERR_CONFIG "<ctx>: unknown reduction 'x' (expected pca, gaussian or
 * sparse)" otherwise. */
nest_status nest_reduce_kind_parse(const char *name, const char *ctx, nest_reduce_kind *out);

/* Fit on the training rows x[idx[r], :] (r < n; idx NULL = the first n rows) of x [nrows, d].
 * Errors (nothing allocated): NEST_ERR_CONFIG for an unknown kind or k outside [1, d - 1];
 * NEST_ERR_ARG for d < 2, n < 2 for PCA (a covariance needs two rows) or n < 1, an index
 * outside [0, nrows); NEST_ERR_FORMAT for a non-finite feature (naming row and feature). */
nest_status nest_reduce_fit(const nest_reduce_opts *o, const float *x, int64_t nrows, int d,
                            const int64_t *idx, int64_t n, nest_reduce **out);

/* y[r, :] = transform of x[r, :] for r < n; x [n, d], y [n, k] (not aliased). Allocates one
 * d-float scratch row per thread per call (call it on whole datasets or batches, not per row
 * in a hot loop). */
nest_status nest_reduce_apply(const nest_reduce *r, const float *x, int64_t n, float *y);

/* The min-max scales s[i] = 1 / (max_i - min_i) apply and normalise multiply by, s [d]: computed
 * in double and rounded once; 0 for a constant feature (or a range whose reciprocal overflows a
 * float). What an exporter writes as a constant (onnx.h). */
void nest_reduce_scales(const nest_reduce *r, float *s);

/* Min-max normalisation alone: z[r, :] = (x[r, :] - min) * s for r < n (no centring, no
 * projection); x and z [n, d] (may alias). The same float formula apply uses. */
void nest_reduce_normalise(const nest_reduce *r, const float *x, int64_t n, float *z);

/* An empty transform of the given kind and shape (arrays zeroed): what a model-file reader
 * fills through nest_reduce_arrays and then checks with nest_reduce_validate. */
nest_status nest_reduce_create(nest_reduce_kind kind, int d, int k, uint64_t seed,
                               nest_reduce **out);
void nest_reduce_destroy(nest_reduce **r);

/* ---- what a model file stores -----------------------------------------------------------
 * Scalars: kind (nest_reduce_kind_name), d, k, seed. Arrays, all float32, row-major: */
#define NEST_REDUCE_MAX_ARRAYS 5
typedef struct {
  const char *name; /* "min", "max", "mean", "components", "variance" */
  int64_t rows, cols; /* shape [rows, cols]; vectors are [1, d] */
  float *data;        /* owned by the transform; a reader writes rows * cols floats here */
} nest_reduce_array;
/* The arrays of r in a fixed order (min, max, mean, components, then variance for PCA);
 * returns their count (4 or 5). */
int nest_reduce_arrays(nest_reduce *r, nest_reduce_array out[NEST_REDUCE_MAX_ARRAYS]);
/* Check a transform read from a file: every value finite, min <= max, PCA variance
 * non-negative and descending. NEST_ERR_FORMAT "<ctx>: reduce/<array>[i]: <problem>". */
nest_status nest_reduce_validate(const nest_reduce *r, const char *ctx);

#endif
