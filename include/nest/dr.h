/* dr.h — DR+SCANN's dimensionality reduction before synthesis (ALGORITHMS.md §10,
 * docs/scann.md): the data's d raw features become k (reduce.h: min-max normalisation, then PCA
 * or a Gaussian or sparse random projection), fitted on the training split only, before the
 * engine is built; the hidden widths shrink by k / d (dr.shrink); then the run's phases, a SCANN
 * scheme typically, see the reduced data as if they were the data.
 *
 *   dr.reduce   the candidate reductions (a list of pca, gaussian, sparse); with more than one,
 *               each is scored by a small dense baseline (the configured architecture at the
 *               shrunk widths, density 1, no skips) trained dr.baseline_epochs epochs with the
 *               optim settings: the highest validation accuracy wins, ties to the earlier one
 *               in the list; with one, it is taken as it is;
 *   dr.k        output features, in [1, d - 1]; 0 = round(d / dr.ratio), at least 1.
 *
 * The training rows are the ones the engine will train on: nest_dataset_split with
 * data.val_split and run.seed, as train.c calls it; validation rows are the other ones of the
 * training file, and the test set gets the same map. A random projection is keyed by run.seed.
 * Every rank holds the same data and fits the same transform by construction (reduce.h: no
 * communication, the same bits for any thread count); the baseline scores are evaluations of
 * the engine, identical on every rank. The chosen transform goes into the run's model files
 * (model.h: /input/reduce), so nest_infer applies it to raw features. */
#ifndef NEST_DR_H
#define NEST_DR_H

#include "nest/comm.h"
#include "nest/config.h"
#include "nest/data.h"
#include "nest/reduce.h"

typedef struct {
  nest_reduce *reduce;  /* the chosen transform (owned) or NULL (dr.reduce empty) */
  int d, k;             /* features before / after */
  double val_acc[4];    /* the baseline's validation accuracy per candidate (NaN: not scored) */
  int ncand;            /* candidates in dr.reduce */
  double seconds;
} nest_dr_result;

/* Check the dr keys against the training set (in memory, float or byte features, k < d) and,
 * with dr.reduce set, reduce *train and *test in place (the sets are replaced by reduced
 * ones), multiply cfg->width by k / d when dr.shrink and write k for d in an "mlp:d-..."
 * model.arch. Nothing is done (res->reduce NULL)
 * without dr.reduce. NEST_ERR_CONFIG naming the key; on error the sets are untouched.
 * Collective (the baseline runs). */
nest_status nest_dr_prepare(nest_config *cfg, nest_comm *comm, nest_dataset **train,
                            nest_dataset **test, nest_dr_result *res);
void nest_dr_result_free(nest_dr_result *res);
/* ds (in memory, r->d features: floats, or bytes times u8_scale) reduced by r: a new set of
 * r->k features (nest_dataset_with_features), per row as reduce.h applies it, so training and
 * nest_infer reduce a row to the same bits. NULL ds: *out = NULL. */
nest_status nest_dr_reduce_set(const nest_dataset *ds, const nest_reduce *r, nest_dataset **out);

#endif
