/* dr.c — DR+SCANN's reduction before synthesis (dr.h): fit each candidate of dr.reduce on the
 * training split, score it by a small baseline when there is a choice, reduce the sets with the
 * winner, shrink the widths. */
#include "nest/dr.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/list.h"
#include "nest/train.h"

#define MAX_CAND 4

void nest_dr_result_free(nest_dr_result *res) {
  if (res) nest_reduce_destroy(&res->reduce);
}

/* The raw features of an in-memory set as floats [n, d] (bytes times u8_scale; a copy). */
static nest_status raw_features(const nest_dataset *ds, float **out) {
  const size_t n = (size_t)ds->n * (size_t)nest_dataset_dim(ds);
  NEST_CALL(nest_malloc((void **)out, sizeof(float) * (n ? n : 1), "raw features"));
  if (ds->f32) memcpy(*out, ds->f32, sizeof(float) * n);
  else
    for (size_t i = 0; i < n; ++i) (*out)[i] = (float)ds->u8[i] * ds->u8_scale;
  return NEST_OK;
}

nest_status nest_dr_reduce_set(const nest_dataset *ds, const nest_reduce *r, nest_dataset **out) {
  *out = NULL;
  if (!ds) return NEST_OK;
  if (nest_dataset_is_sharded(ds) || nest_dataset_dim(ds) != r->d)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: samples have %lld features, the reduction (dr.reduce) "
                    "takes %d", ds->path, (long long)nest_dataset_dim(ds), r->d);
  float *x = NULL, *y = NULL;
  NEST_CALL(raw_features(ds, &x));
  nest_status st = nest_malloc((void **)&y, sizeof(float) * (size_t)(ds->n ? ds->n : 1) *
                                                (size_t)r->k, "reduced features");
  if (st == NEST_OK) st = nest_reduce_apply(r, x, ds->n, y);
  free(x);
  if (st != NEST_OK) {
    free(y);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  return nest_dataset_with_features(ds, y, r->k, out);
}

/* The keys against the data: in-memory rows of d >= 2 features, k in [1, d - 1]. */
static nest_status check_keys(const nest_config *c, const nest_dataset *train, int *k_out) {
  if (nest_dataset_is_sharded(train) || train->shape.h * train->shape.w != 1)
    return NEST_ERR(NEST_ERR_CONFIG, "dr.reduce = %s: %s holds %dx%dx%d samples; the reduction "
                    "applies to tabular rows (CSV or HDF5 features)", c->dr_reduce, train->path,
                    train->shape.c, train->shape.h, train->shape.w);
  const int d = train->shape.c;
  int k = c->dr_k;
  if (k == 0 && c->dr_ratio > 0) k = (int)fmax(1.0, round((double)d / c->dr_ratio));
  if (k == 0)
    return NEST_ERR(NEST_ERR_CONFIG, "dr.reduce = %s needs dr.k or dr.ratio (the features to "
                    "keep of the %d of %s)", c->dr_reduce, d, train->path);
  if (k >= d)
    return NEST_ERR(NEST_ERR_CONFIG, "dr.k = %d (dr.ratio %g) must be below the %d features of "
                    "%s", k, c->dr_ratio, d, train->path);
  *k_out = k;
  return NEST_OK;
}

/* The validation accuracy of the small baseline on sets reduced by r. Collective. */
static nest_status baseline(const nest_config *c, nest_comm *comm, const nest_dataset *train,
                            const nest_reduce *r, double *acc) {
  nest_config b = *c;
  b.density = 1.0;
  b.skips[0] = '\0';
  b.init_from[0] = '\0';
  b.epochs = c->dr_baseline_epochs;
  b.eval_every = 0;
  nest_dataset *tr = NULL;
  NEST_CALL(nest_dr_reduce_set(train, r, &tr));
  nest_trainer *t = NULL;
  NEST_CALL(nest_trainer_create_with_data(&b, comm, tr, NULL, &t)); /* takes tr */
  t->quiet = 1;
  nest_eval val = {NAN, NAN, 0, NAN}, test;
  nest_status st = NEST_OK;
  for (int e = 0; e < b.epochs && st == NEST_OK; ++e) {
    const nest_epoch_plan plan = {.phase = "dr", .keep = -1, .sched = &t->optim, .t0 = e,
                                  .index = e, .count = b.epochs, .evaluate = e + 1 == b.epochs};
    st = nest_trainer_epoch(t, &plan, &val, &test);
  }
  *acc = val.acc;
  nest_trainer_destroy(&t);
  return st;
}

nest_status nest_dr_prepare(nest_config *cfg, nest_comm *comm, nest_dataset **train,
                            nest_dataset **test, nest_dr_result *res) {
  memset(res, 0, sizeof *res);
  for (int i = 0; i < MAX_CAND; ++i) res->val_acc[i] = NAN;
  char names[MAX_CAND][NEST_LIST_ITEM];
  NEST_CALL(nest_list_split("dr.reduce", cfg->dr_reduce, names, MAX_CAND, &res->ncand));
  if (res->ncand == 0) return NEST_OK;
  nest_reduce_kind kinds[MAX_CAND];
  for (int i = 0; i < res->ncand; ++i) {
    NEST_CALL(nest_reduce_kind_parse(names[i], "dr.reduce", &kinds[i]));
    for (int j = 0; j < i; ++j)
      if (kinds[j] == kinds[i])
        return NEST_ERR(NEST_ERR_CONFIG, "dr.reduce = %s: '%s' is listed twice", cfg->dr_reduce,
                        names[i]);
  }
  const double t0 = nest_comm_wtime();
  int k = 0;
  NEST_CALL(check_keys(cfg, *train, &k));
  const nest_dataset *ds = *train;
  res->d = ds->shape.c, res->k = k;
  int64_t *tri = NULL, *vai = NULL, ntr = 0, nva = 0;
  NEST_CALL(nest_dataset_split(ds->n, cfg->val_split, cfg->seed, &tri, &ntr, &vai, &nva));
  free(vai);
  float *x = NULL;
  nest_status st = raw_features(ds, &x);
  /* the widths the baseline and the run use; "mlp:d-..." names the input size: k now */
  if (st == NEST_OK && cfg->dr_shrink) cfg->width *= (double)k / (double)res->d;
  if (st == NEST_OK && strncmp(cfg->arch, "mlp:", 4) == 0 && atoi(cfg->arch + 4) == res->d) {
    char rest[sizeof cfg->arch];
    snprintf(rest, sizeof rest, "%s", cfg->arch + 4 + strspn(cfg->arch + 4, "0123456789"));
    const int n = snprintf(cfg->arch, sizeof cfg->arch, "mlp:%d", k); /* k < d: fewer digits */
    memcpy(cfg->arch + n, rest, strlen(rest) + 1);
  }
  int best = -1;
  nest_reduce *fit[MAX_CAND] = {NULL};
  for (int i = 0; i < res->ncand && st == NEST_OK; ++i) {
    const nest_reduce_opts o = {.kind = kinds[i], .k = k, .seed = cfg->seed, .ctx = "dr.reduce"};
    st = nest_reduce_fit(&o, x, ds->n, res->d, tri, ntr, &fit[i]);
    if (st == NEST_OK && res->ncand > 1) st = baseline(cfg, comm, ds, fit[i], &res->val_acc[i]);
    if (st == NEST_OK && (best < 0 || res->val_acc[i] > res->val_acc[best])) best = i;
  }
  free(x);
  free(tri);
  nest_dataset *rtr = NULL, *rte = NULL;
  if (st == NEST_OK) st = nest_dr_reduce_set(*train, fit[best], &rtr);
  if (st == NEST_OK) st = nest_dr_reduce_set(*test, fit[best], &rte);
  st = nest_comm_agree(comm, st);
  for (int i = 0; i < res->ncand; ++i)
    if (i != best || st != NEST_OK) nest_reduce_destroy(&fit[i]);
  if (st != NEST_OK) {
    nest_dataset_destroy(&rtr);
    nest_dataset_destroy(&rte);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  nest_dataset_destroy(train);
  nest_dataset_destroy(test);
  *train = rtr, *test = rte;
  res->reduce = fit[best];
  res->seconds = nest_comm_wtime() - t0;
  return NEST_OK;
}
