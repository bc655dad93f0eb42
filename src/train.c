/* train.c — the training engine: setup (data, split, normalisation, net), the step, evaluation,
 * the epoch with its hooks, progress lines and metrics rows. See train.h for the protocol. */
#define _GNU_SOURCE
#include "nest/train.h"

#include <errno.h>
#include <omp.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/arch.h"
#include "nest/augment.h"
#include "nest/model.h"
#include "nest/loss.h"
#include "nest/prefetch.h"
#include "nest/rundir.h"
#include "nest/shard.h"

/* ---- helpers ------------------------------------------------------------------------------ */

/* data.dir + relative path; a path that does not fit is an error, never silently cut. */
static nest_status resolve(const char *dir, const char *path, char *out, size_t cap) {
  int n;
  if (!path[0] || path[0] == '/' || !dir[0])
    n = snprintf(out, cap, "%s", path);
  else
    n = snprintf(out, cap, "%s/%s", dir, path);
  if (n < 0 || (size_t)n >= cap)
    return NEST_ERR(NEST_ERR_CONFIG, "data path '%s/%s' is longer than %zu characters", dir, path,
                    cap - 1);
  return NEST_OK;
}

/* Sync batch-norm statistics: identical on every rank by construction, so are the weights. */
static nest_status comm_sum_same_f64(void *comm, double *buf, size_t n) {
  return nest_comm_sum_same_f64((nest_comm *)comm, buf, n);
}

static nest_status load_set(const nest_config *c, const char *path, const char *labels,
                            int64_t max, const nest_dataset *ref, nest_dataset **out) {
  char p[NEST_PATH_LEN], lp[NEST_PATH_LEN];
  NEST_CALL(resolve(c->dir, path, p, sizeof p));
  NEST_CALL(resolve(c->dir, labels, lp, sizeof lp));
  nest_data_opts o;
  nest_data_opts_default(&o);
  o.path = p;
  o.labels_path = lp[0] ? lp : NULL;
  o.format = c->format;
  o.csv_label_col = c->csv_label_col;
  o.csv_delim = c->csv_delim[0];
  o.csv_header = c->csv_header;
  o.csv_drop_cols = c->csv_drop_cols;
  o.max_samples = max;
  return nest_dataset_load(&o, ref, out);
}

/* ---- setup -------------------------------------------------------------------------------- */

/* Split, normalise, the batch reader and augmentation, the test ids. */
static nest_status setup_data(nest_trainer *t) {
  const nest_config *c = &t->cfg;
  NEST_CALL(nest_dataset_split(t->train->n, c->val_split, c->seed, &t->train_idx, &t->n_train,
                               &t->val_idx, &t->n_val));
  if (t->n_train < 1)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: no training samples left after data.val_split = %g",
                    t->train->path, c->val_split);
  /* The batch reader (prefetch.h); with image shards augment.crop sets the net's input shape. */
  NEST_CALL(nest_prefetch_from_config(c, t->train, t->test, (c->batch + t->nranks - 1) / t->nranks,
                                      t->nthreads, &t->pf));
  /* Normalisation statistics: of the training subset for in-memory sets, the shards' stored
   * ones (over the whole set they hold) for image shards (data.h); the test set uses the same. */
  nest_norm norm = {0};
  NEST_CALL(nest_dataset_train_norm(t->train, t->train_idx, t->n_train, &norm));
  nest_status st = nest_dataset_set_norm(t->train, &norm);
  if (st == NEST_OK && t->test) {
    if (nest_dataset_dim(t->test) != nest_dataset_dim(t->train))
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: samples have %lld features but training data has %lld",
                    t->test->path, (long long)nest_dataset_dim(t->test),
                    (long long)nest_dataset_dim(t->train));
    else
      st = nest_dataset_set_norm(t->test, &norm);
  }
  nest_norm_free(&norm);
  NEST_CALL(st);
  /* After the normalisation: the fill is the normalised value of a raw 0. */
  NEST_CALL(nest_augment_from_config(c, t->train, t->nthreads, &t->aug));
  if (t->test) {
    t->n_test = t->test->n;
    NEST_CALL(nest_malloc((void **)&t->test_idx, sizeof(int64_t) * (size_t)t->n_test, "test ids"));
    for (int64_t i = 0; i < t->n_test; ++i) t->test_idx[i] = i;
  }
  return NEST_OK;
}

/* The network: from a model file (net_file, else model.init_from: an earlier run's), or built
 * from model.arch and seeded. */
static nest_status setup_net(nest_trainer *t, const char *net_file) {
  const nest_config *c = &t->cfg;
  const char *from = net_file ? net_file : c->init_from;
  if (from[0]) {
    if (!net_file && c->skips[0])
      return NEST_ERR(NEST_ERR_CONFIG, "model.skips = %s: skips are added to model.arch; the "
                      "network of model.init_from = %s has its own (unset one of them)",
                      c->skips, c->init_from);
    NEST_CALL(nest_model_load(from, t->max_local, t->nthreads, &t->net));
    const nest_shape in = t->net->in_shape, d = t->train->shape;
    if (in.c != d.c || in.h != d.h || in.w != d.w || t->net->nclasses != t->train->nclasses)
      return NEST_ERR(NEST_ERR_CONFIG,
                      "%s%s: the model takes %dx%dx%d inputs and %d classes, %s has %dx%dx%d "
                      "and %d",
                      net_file ? "" : "model.init_from = ", from, in.c, in.h, in.w,
                      t->net->nclasses, t->train->path, d.c, d.h, d.w, t->train->nclasses);
    return NEST_OK;
  }
  nest_layer_spec *specs = NULL;
  int nspecs = 0;
  nest_arch_opts ao = {.width = c->width, .batchnorm = c->batchnorm, .dropout = c->dropout,
                       .widths = c->widths};
  NEST_CALL(nest_arch_build(c->arch, &ao, t->train->shape, t->train->nclasses, &specs, &nspecs));
  nest_status st = nest_arch_skips(specs, nspecs, c->skips);
  if (st == NEST_OK)
    st = nest_net_create(specs, nspecs, t->train->shape, t->train->nclasses, t->max_local,
                         t->nthreads, &t->net);
  free(specs);
  NEST_CALL(st);
  int init = strcmp(c->init, "xavier") == 0 ? NEST_INIT_XAVIER : NEST_INIT_HE;
  return nest_net_init_ex(t->net, c->seed, c->density, c->skip_density, init);
}

static nest_status setup(nest_trainer *t, const char *net_file) {
  const nest_config *c = &t->cfg;
  NEST_CALL(setup_data(t));
  t->max_local = (c->batch + t->nranks - 1) / t->nranks;
  NEST_CALL(setup_net(t, net_file));
  t->optim = (nest_optim){.lr = c->lr,
                          .momentum = c->momentum,
                          .weight_decay = c->weight_decay,
                          .nesterov = c->nesterov,
                          .schedule = (nest_schedule)nest_schedule_parse(c->schedule),
                          .warmup_epochs = c->warmup_epochs,
                          .step_epochs = c->step_epochs,
                          .step_gamma = c->step_gamma,
                          .min_lr = c->min_lr,
                          .total_epochs = c->epochs};
  if ((int)t->optim.schedule < 0)
    return NEST_ERR(NEST_ERR_CONFIG, "optim.schedule '%s' is unknown", c->schedule);

  size_t d = (size_t)nest_dataset_dim(t->train);
  NEST_CALL(nest_malloc_aligned((void **)&t->x, sizeof(float) * d * (size_t)t->max_local, "batch"));
  NEST_CALL(nest_malloc_aligned((void **)&t->dlogits,
                                sizeof(float) * (size_t)t->train->nclasses * (size_t)t->max_local,
                                "dlogits"));
  NEST_CALL(nest_malloc((void **)&t->y, sizeof(int32_t) * (size_t)t->max_local, "labels"));
  NEST_CALL(nest_malloc((void **)&t->ids, sizeof(int64_t) * (size_t)t->max_local, "sample ids"));
  NEST_CALL(nest_malloc((void **)&t->perm, sizeof(int64_t) * (size_t)t->n_train, "permutation"));
  t->steps_per_epoch = nest_shard_steps(t->n_train, c->batch);
  return NEST_OK;
}

nest_status nest_trainer_create_from(const nest_config *cfg, const char *net_file,
                                     nest_comm *comm, nest_dataset *train, nest_dataset *test,
                                     nest_trainer **out) {
  *out = NULL;
  nest_trainer *t;
  nest_status st = nest_calloc((void **)&t, 1, sizeof *t, "trainer");
  if (st != NEST_OK) {
    nest_dataset_destroy(&train);
    nest_dataset_destroy(&test);
    return st;
  }
  t->cfg = *cfg;
  t->comm = comm;
  t->rank = nest_comm_rank(comm);
  t->nranks = nest_comm_size(comm);
  t->nthreads = omp_get_max_threads();
  t->top5[0] = t->top5[1] = NAN;
  t->best_val_error = NAN;
  nest_runlog_init(&t->log, stdout, cfg->log_seconds);
  t->train = train;
  t->test = test;
  /* Setup depends only on shared data and config, so ranks decide alike; agree anyway, since an
   * allocation can fail on one rank only and the others must not wait for it. */
  st = setup(t, net_file);
  st = nest_comm_agree(comm, st);
  if (st != NEST_OK) {
    nest_trainer_destroy(&t);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  *out = t;
  return NEST_OK;
}

nest_status nest_trainer_create_with_data(const nest_config *cfg, nest_comm *comm,
                                          nest_dataset *train, nest_dataset *test,
                                          nest_trainer **out) {
  return nest_trainer_create_from(cfg, NULL, comm, train, test, out);
}

nest_status nest_trainer_load_data(const nest_config *cfg, nest_comm *comm, nest_dataset **train,
                                   nest_dataset **test) {
  *train = *test = NULL;
  /* A file may be readable on one node and not another: agree on the outcome. */
  nest_status st = load_set(cfg, cfg->train, cfg->train_labels, cfg->max_train, NULL, train);
  NEST_CALL(nest_comm_agree(comm, st));
  if (!cfg->test[0] && cfg->test_split > 0) { /* data.test_split: the test set from train */
    st = nest_comm_agree(comm, nest_dataset_take_test(train, cfg->test_split, cfg->seed, test));
    if (st != NEST_OK) {
      nest_dataset_destroy(train);
      nest_error_trace(__FILE__, __LINE__);
      return st;
    }
  }
  if (cfg->test[0]) {
    st = load_set(cfg, cfg->test, cfg->test_labels, cfg->max_test, *train, test);
    st = nest_comm_agree(comm, st);
    if (st != NEST_OK) {
      nest_dataset_destroy(train);
      nest_error_trace(__FILE__, __LINE__);
      return st;
    }
  }
  return NEST_OK;
}

nest_status nest_trainer_create(const nest_config *cfg, nest_comm *comm, nest_trainer **out) {
  *out = NULL;
  nest_dataset *train = NULL, *test = NULL;
  NEST_CALL(nest_trainer_load_data(cfg, comm, &train, &test));
  return nest_trainer_create_with_data(cfg, comm, train, test, out);
}

void nest_trainer_destroy(nest_trainer **tp) {
  if (!tp || !*tp) return;
  nest_trainer *t = *tp;
  if (t->metrics) fclose(t->metrics);
  nest_augment_destroy(&t->aug);
  nest_net_destroy(&t->net);
  nest_net_destroy(&t->teacher);
  nest_prefetch_destroy(&t->pf); /* its thread may be reading the datasets */
  nest_dataset_destroy(&t->train);
  nest_dataset_destroy(&t->test);
  free(t->train_idx);
  free(t->val_idx);
  free(t->test_idx);
  nest_free_aligned(t->x);
  nest_free_aligned(t->dlogits);
  free(t->y);
  free(t->ids);
  free(t->perm);
  free(t);
  *tp = NULL;
}

/* ---- step and evaluation --------------------------------------------------------------- */

nest_ctx nest_trainer_ctx(nest_trainer *t, int n, int train, int64_t global_n) {
  nest_ctx ctx = {.n = n,
                  .train = train,
                  .nthreads = t->nthreads,
                  .seed = t->cfg.seed,
                  .step = t->step,
                  .sample_ids = t->ids,
                  .allreduce = (train && t->cfg.sync_bn) ? comm_sum_same_f64 : NULL,
                  .comm = t->comm,
                  .global_n = global_n,
                  .dropout_set = t->dropout_set,
                  .dropout_rate = t->dropout_rate};
  return ctx;
}

nest_status nest_trainer_read(nest_trainer *t, const nest_dataset *ds, const int64_t *ids, int n,
                              int train) {
  const nest_batch_req r = {.ds = ds, .ids = ids, .n = n, .train = train, .data_key = t->data_key};
  return nest_prefetch_get(t->pf, &r, &t->x, &t->y);
}

nest_status nest_trainer_read_agree(nest_trainer *t, const nest_dataset *ds, nest_status st) {
  return nest_dataset_is_sharded(ds) ? nest_comm_agree(t->comm, st) : st;
}

void nest_trainer_read_ahead(nest_trainer *t, const nest_dataset *ds, const int64_t *ids, int n,
                             int train) {
  const nest_batch_req r = {.ds = ds, .ids = ids, .n = n, .train = train, .data_key = t->data_key};
  nest_prefetch_ahead(t->pf, &r);
}

nest_status nest_trainer_read_chunk(nest_trainer *t, const nest_dataset *ds, const int64_t *idx,
                                    int64_t b, int64_t hi, int *rows) {
  const int n = (int)((hi - b) < t->max_local ? (hi - b) : t->max_local);
  *rows = n;
  for (int i = 0; i < n; ++i) t->ids[i] = idx[b + i];
  NEST_CALL(nest_trainer_read(t, ds, t->ids, n, 0));
  const int64_t nb = b + n;
  if (nb < hi)
    nest_trainer_read_ahead(t, ds, idx + nb, (int)((hi - nb) < t->max_local ? (hi - nb) : t->max_local), 0);
  return NEST_OK;
}

/* Bucketed gradient sum: ranges [lo, top) of the gradient arena are posted once they hold at
 * least `bucket` floats (whole layers: a bucket starts where a layer starts). */
typedef struct {
  nest_comm *comm;
  size_t top, bucket;
} grad_buckets;

static nest_status post_bucket(void *arg, size_t lo) {
  grad_buckets *b = arg;
  if (b->top - lo < b->bucket) return NEST_OK;
  NEST_CALL(nest_comm_bucket_post(b->comm, lo, b->top));
  b->top = lo;
  return NEST_OK;
}

nest_status nest_trainer_step(nest_trainer *t, const int64_t *perm, int64_t s, double lr,
                              double *loss_sum, int64_t *correct, int64_t *rows) {
  int64_t begin;
  int count;
  const int batch = t->cfg.batch;
  /* This rank's slice of global batch s (shard.h), read into t->x [count, C, H, W], t->y: from
   * memory, or from image shards on disk with crop / flip (prefetch.h), where it was usually
   * read in the background during the previous step. A read error on one rank is agreed. */
  nest_shard_slice(t->n_train, batch, s, t->rank, t->nranks, &begin, &count);
  const int global_rows = nest_shard_batch_rows(t->n_train, batch, s);
  for (int i = 0; i < count; ++i) t->ids[i] = perm[begin + i];
  NEST_CALL(nest_trainer_read_agree(t, t->train, nest_trainer_read(t, t->train, t->ids, count, 1)));
  if (s + 1 < t->steps_per_epoch) { /* the next step's slice, read while this one computes */
    int64_t nb;
    int nc;
    nest_shard_slice(t->n_train, batch, s + 1, t->rank, t->nranks, &nb, &nc);
    nest_trainer_read_ahead(t, t->train, perm + nb, nc, 1);
  }
  /* Training steps only (never evaluation or gradient passes): keyed by sample id, not rank. */
  if (t->aug) nest_augment_apply(t->aug, t->data_key, t->ids, count, t->x, t->nthreads);

  nest_ctx ctx = nest_trainer_ctx(t, count, 1, global_rows);
  const float *logits;
  double tm[5];
  tm[0] = t->times ? nest_comm_wtime() : 0;
  NEST_CALL(nest_net_forward(t->net, &ctx, t->x, &logits));
  /* scale 1/global_rows: the sum over ranks of the per-rank gradients is the mean-loss gradient. */
  if (t->distill && t->teacher) {
    nest_ctx tctx = nest_trainer_ctx(t, count, 0, 0); /* inference mode: no dropout, running BN */
    const float *soft;
    NEST_CALL(nest_net_forward(t->teacher, &tctx, t->x, &soft));
    nest_loss_distill(logits, soft, t->y, count, t->net->nclasses, 1.0f / (float)global_rows,
                      t->cfg.prune_distill, t->cfg.prune_distill_temp, t->dlogits, loss_sum,
                      correct);
  } else {
    nest_loss_softmax_xent(logits, t->y, count, t->net->nclasses, 1.0f / (float)global_rows,
                           t->dlogits, loss_sum, correct);
  }
  *rows += count;
  tm[1] = t->times ? nest_comm_wtime() : 0;
  /* The sum of the gradient arena over ranks, bit-identical on every rank by construction
   * (comm.h), so the weights stay identical without trusting MPI_Allreduce's reduction order
   * and RigL can rank this gradient. With train.bucket_mb > 0 it runs in buckets started
   * during backward (overlapped); the bits are those of one fused sum either way. */
  double sum_s = 0;
  const size_t bucket = (size_t)(t->cfg.bucket_mb * 1048576.0 / sizeof(float)) + 1;
  /* a net that fits one bucket has nothing to overlap: the fused sum, without the hand-off */
  const int bucketed = t->cfg.bucket_mb > 0 && t->nranks > 1 && t->net->nparams > bucket;
  if (bucketed) {
    grad_buckets b = {t->comm, t->net->nparams, bucket};
    NEST_CALL(nest_comm_bucket_begin(t->comm, t->net->grads));
    nest_status st = nest_net_backward_ready(t->net, &ctx, t->dlogits, post_bucket, &b);
    tm[2] = t->times ? nest_comm_wtime() : 0;
    if (st == NEST_OK) st = nest_comm_bucket_post(t->comm, 0, b.top);
    /* also after an error: a post fails on every rank alike (comm.h), so every rank ends the
     * round with the same ranges summed and returns the same status */
    nest_status st2 = nest_comm_bucket_end(t->comm, &sum_s);
    NEST_CALL(st != NEST_OK ? st : st2);
  } else {
    NEST_CALL(nest_net_backward(t->net, &ctx, t->dlogits));
    tm[2] = t->times ? nest_comm_wtime() : 0;
    NEST_CALL(nest_comm_sum_same_f32(t->comm, t->net->grads, t->net->nparams));
  }
  tm[3] = t->times ? nest_comm_wtime() : 0;
  nest_optim_step(t->net, &t->optim, lr, t->nthreads);
  if (t->times) {
    tm[4] = nest_comm_wtime();
    t->times->fwd += tm[1] - tm[0];
    t->times->bwd += tm[2] - tm[1];
    t->times->wait += tm[3] - tm[2];
    t->times->sum += bucketed ? sum_s : tm[3] - tm[2];
    t->times->opt += tm[4] - tm[3];
    t->times->steps++;
  }
  t->step++;
  return NEST_OK;
}

nest_status nest_trainer_evaluate(nest_trainer *t, const nest_dataset *ds, const int64_t *idx,
                                  int64_t n, nest_eval *out) {
  double acc[4] = {0, 0, 0, 0}; /* loss sum, correct, rows, top-5 hits */
  int64_t lo = n * t->rank / t->nranks, hi = n * (t->rank + 1) / t->nranks;
  nest_status st = NEST_OK;
  for (int64_t b = lo; b < hi; b += t->max_local) {
    int count;
    /* Ranks may run different numbers of batches here: read errors are agreed after the loop. */
    if ((st = nest_trainer_read_chunk(t, ds, idx, b, hi, &count)) != NEST_OK) break;
    nest_ctx ctx = nest_trainer_ctx(t, count, 0, 0);
    const float *logits;
    NEST_CALL(nest_net_forward(t->net, &ctx, t->x, &logits));
    int64_t hits = 0;
    nest_loss_softmax_xent(logits, t->y, count, t->net->nclasses, 0.0f, NULL, &acc[0], &hits);
    acc[1] += (double)hits;
    acc[2] += count;
    acc[3] += (double)nest_loss_topk_hits(logits, t->y, count, t->net->nclasses, 5);
  }
  NEST_CALL(nest_trainer_read_agree(t, ds, st));
  NEST_CALL(nest_comm_allreduce_f64(t->comm, acc, 4)); /* integer counts: exact in any order */
  out->n = (int64_t)acc[2];
  out->loss = acc[2] > 0 ? acc[0] / acc[2] : NAN;
  out->acc = acc[2] > 0 ? acc[1] / acc[2] : NAN;
  out->acc5 = acc[2] > 0 ? acc[3] / acc[2] : NAN;
  if (ds == t->test || (ds == t->train && idx == t->val_idx)) t->top5[ds == t->test] = out->acc5;
  /* from integer counts: the same on every rank */
  if (ds == t->train && idx == t->val_idx && out->n > 0 &&
      !(1.0 - out->acc >= t->best_val_error))
    t->best_val_error = 1.0 - out->acc;
  return NEST_OK;
}

nest_status nest_trainer_evaluate_sets(nest_trainer *t, int which, nest_eval *val,
                                       nest_eval *test) {
  if (val) *val = (nest_eval){NAN, NAN, 0, NAN};
  if (test) *test = (nest_eval){NAN, NAN, 0, NAN};
  if ((which & NEST_EVAL_VAL) && t->n_val > 0)
    NEST_CALL(nest_trainer_evaluate(t, t->train, t->val_idx, t->n_val, val));
  if ((which & NEST_EVAL_TEST) && t->test)
    NEST_CALL(nest_trainer_evaluate(t, t->test, t->test_idx, t->n_test, test));
  return NEST_OK;
}

/* buffers[lo, hi) = their mean over ranks: the by-construction sum (comm.h), so the averaged
 * statistics are bit-identical on every rank, as the pruning scores that read them assume;
 * then the same division everywhere. */
static nest_status average_buffers(nest_trainer *t, size_t lo, size_t hi) {
  if (hi <= lo) return NEST_OK;
  NEST_CALL(nest_comm_sum_same_f32(t->comm, t->net->buffers + lo, hi - lo));
  for (size_t i = lo; i < hi; ++i) t->net->buffers[i] /= (float)t->nranks;
  return NEST_OK;
}

/* Without sync BN each rank's running statistics drift apart: average them. */
nest_status nest_trainer_sync_buffers(nest_trainer *t) {
  if (t->cfg.sync_bn || t->nranks == 1 || t->net->nbuf == 0) return NEST_OK;
  /* Mask buffers (partial-area "area") are identical on every rank: average the stretches of
   * the arena between them (the whole arena in one call when there are none). */
  size_t lo = 0;
  for (int i = 0; i < t->net->nlayers; ++i) {
    const nest_layer *l = t->net->layers[i];
    for (int s = 0; s < l->nbuffers; ++s)
      if (l->buffer[s].mask) {
        NEST_CALL(average_buffers(t, lo, l->buffer[s].offset));
        lo = l->buffer[s].offset + l->buffer[s].count;
      }
  }
  return average_buffers(t, lo, t->net->nbuf);
}

/* ---- the epoch ---------------------------------------------------------------------------- */

void nest_trainer_model_input(const nest_trainer *t, nest_model_input *out) {
  nest_config_model_input(&t->cfg, t->train, out);
  if (!t->reduce) return;
  out->reduce = (nest_reduce *)t->reduce; /* borrowed: written, never freed through out */
  out->data_shape = (nest_shape){t->reduce->d, 1, 1};
}

nest_runlog *nest_trainer_log(nest_trainer *t) {
  return t->rank == 0 && !t->quiet ? &t->log : NULL;
}

void nest_trainer_clock(nest_trainer *t, int64_t fallback, char *out, size_t cap) {
  const int64_t left = t->steps_left ? t->steps_left(t->steps_left_arg) : fallback;
  nest_log_clock(&t->log, nest_comm_wtime() - t->t_start, t->step, left, out, cap);
}

int nest_trainer_has_top5(const nest_trainer *t) {
  return t->net->nclasses > NEST_TOP5_MIN_CLASSES;
}

double nest_trainer_val_margin(const nest_trainer *t, double e, double z) {
  if (!(z > 0) || t->n_val <= 0 || !(e >= 0)) return 0;
  return z * sqrt(e * (1.0 - e) / (double)t->n_val);
}

nest_status nest_trainer_need_val(const nest_trainer *t, const char *fix, const char *why, ...) {
  if (t->n_val > 0) return NEST_OK;
  char text[512];
  va_list ap;
  va_start(ap, why);
  vsnprintf(text, sizeof text, why, ap);
  va_end(ap);
  return NEST_ERR(NEST_ERR_CONFIG, "%s, but data.val_split = %g leaves no validation sample of "
                  "the %lld in %s: %s", text, t->cfg.val_split, (long long)t->train->n,
                  t->train->path, fix);
}

/* What a log point needs besides the trainer. */
typedef struct {
  const nest_epoch_plan *plan;
  char label[64];      /* "epoch 3/30", "grow 2, epoch 1/3", "fine-tuning 4/10" */
  int64_t s0;          /* the first step this call ran (a resumed epoch starts later) */
  double t_epoch, t_win;
} epoch_clock;

/* "<what> i/n" of an epoch's lines. */
static void epoch_label(const nest_epoch_plan *plan, char *out, size_t cap) {
  const char *what = plan->label                           ? plan->label
                     : strcmp(plan->phase, "train") == 0    ? "epoch"
                     : strcmp(plan->phase, "finetune") == 0 ? "fine-tuning"
                                                            : plan->phase;
  snprintf(out, cap, "%s %lld/%lld", what, (long long)plan->index + 1, (long long)plan->count);
}

/* Steps left in this loop of epochs after step s: the ETA when no driver estimates the run. */
static int64_t loop_steps_left(const nest_trainer *t, const nest_epoch_plan *plan, int64_t s) {
  const int64_t spe = t->steps_per_epoch;
  return (plan->count - plan->index - 1) * spe + (spe - s - 1);
}

/* A log point after step s: the window's sums over ranks (identical on every rank, so is the
 * NaN verdict), a progress line, the window into the epoch's sums. */
static nest_status log_point(nest_trainer *t, epoch_clock *k, int64_t s, double lr) {
  double *win = t->win;
  const int64_t spe = t->steps_per_epoch;
  NEST_CALL(nest_comm_sum_same_f64(t->comm, win, 3));
  const double mean = win[0] / win[2];
  if (!isfinite(mean))
    return NEST_ERR(NEST_ERR_NUMERIC,
                    "training loss is %g at epoch %lld step %lld: the run diverged; lower "
                    "optim.lr (now %g) or add optim.warmup_epochs",
                    mean, (long long)t->epoch + 1, (long long)s + 1, lr);
  const double now = nest_comm_wtime();
  const double ips = win[2] / (now - k->t_win);
  nest_runlog *log = nest_trainer_log(t);
  if (log && s + 1 < spe) { /* the epoch's last point: its summary line follows */
    char clock[96];
    nest_trainer_clock(t, loop_steps_left(t, k->plan, s), clock, sizeof clock);
    nest_log_progress(log, "%s  step %lld/%lld  loss %.4f  acc %.2f%%  lr %.4g  %.0f img/s | %s",
                      k->label, (long long)s + 1, (long long)spe, mean, 100.0 * win[1] / win[2],
                      lr, ips, clock);
  }
  for (int i = 0; i < 3; ++i) t->ep_acc[i] += win[i], win[i] = 0;
  k->t_win = nest_comm_wtime();
  return NEST_OK;
}

/* Rank 0, the epoch done: its summary line (errors, not accuracies: what the report and the
 * paper give) and metrics.csv row. */
static nest_status epoch_done(nest_trainer *t, const epoch_clock *k, double lr, double train_time,
                              const nest_eval *val, const nest_eval *test) {
  const nest_epoch_plan *plan = k->plan;
  const double *ep = t->ep_acc;
  int64_t aw, tw;
  nest_net_count(t->net, &aw, &tw, NULL);
  const double el = nest_comm_wtime() - t->t_start;
  const int top5 = nest_trainer_has_top5(t), show5 = t->net->nclasses > NEST_TOP5_SHOW_CLASSES;
  nest_runlog *log = nest_trainer_log(t);
  if (log) {
    char line[512], clock[96];
    int n = snprintf(line, sizeof line, "%s  train loss %.4f acc %.2f%%", k->label,
                     ep[0] / ep[2], 100.0 * ep[1] / ep[2]);
    if (!isnan(val->acc))
      n += snprintf(line + n, sizeof line - (size_t)n, " | val loss %.4f error %.2f%%", val->loss,
                    100.0 * (1.0 - val->acc));
    if (!isnan(val->acc5) && show5)
      n += snprintf(line + n, sizeof line - (size_t)n, " (top-5 %.2f%%)", 100.0 * (1.0 - val->acc5));
    if (!isnan(test->acc))
      n += snprintf(line + n, sizeof line - (size_t)n, " | test error %.2f%%",
                    100.0 * (1.0 - test->acc));
    if (!isnan(test->acc5) && show5)
      n += snprintf(line + n, sizeof line - (size_t)n, " (top-5 %.2f%%)",
                    100.0 * (1.0 - test->acc5));
    nest_trainer_clock(t, loop_steps_left(t, plan, t->steps_per_epoch - 1), clock, sizeof clock);
    nest_log_summary(log, plan->keep, "%s | %.1f s, %.0f img/s | %s", line, train_time,
                     ep[2] / train_time, clock);
  }
  if (!t->metrics) return NEST_OK;
  const nest_metrics_row row = {.epoch = t->epoch, .step = t->step, .lr = lr,
                                .train_loss = ep[0] / ep[2], .train_acc = ep[1] / ep[2],
                                .val_loss = val->loss, .val_acc = val->acc,
                                .test_loss = test->loss, .test_acc = test->acc,
                                .active = aw, .total = tw, .images_per_s = ep[2] / train_time,
                                .elapsed_s = el, .phase = plan->phase,
                                .val_top5_error = top5 ? 1.0 - val->acc5 : NAN,
                                .test_top5_error = top5 ? 1.0 - test->acc5 : NAN,
                                .iteration = plan->iteration};
  return nest_rundir_metrics_row(t->metrics, t->metrics_path, &row);
}

nest_status nest_trainer_epoch(nest_trainer *t, const nest_epoch_plan *plan, nest_eval *val,
                               nest_eval *test) {
  const nest_config *c = &t->cfg;
  const nest_train_hooks *h = plan->hooks;
  const int64_t spe = t->steps_per_epoch;
  const int log_every = c->log_every > 0 ? c->log_every : (int)(spe >= 10 ? spe / 10 : 1);
  epoch_clock k = {.plan = plan, .s0 = plan->resume ? plan->resume_step : 0};
  epoch_label(plan, k.label, sizeof k.label);
  k.t_epoch = k.t_win = nest_comm_wtime();
  nest_shard_permute(c->seed, t->epoch, t->train_idx, t->n_train, t->perm);
  t->data_key = t->epoch;
  /* The sums live in the trainer (a checkpoint between two steps saves them). */
  if (!plan->resume)
    for (int i = 0; i < 3; ++i) t->ep_acc[i] = t->win[i] = 0;
  double lr = 0;
  for (int64_t s = k.s0; s < spe; ++s) {
    if (h && h->before_step) NEST_CALL(h->before_step(h->arg, plan, s));
    lr = nest_optim_lr(plan->sched, plan->t0 + (double)s / (double)spe);
    double loss = 0;
    int64_t hits = 0, rows = 0;
    NEST_CALL(nest_trainer_step(t, t->perm, s, lr, &loss, &hits, &rows));
    t->win[0] += loss;
    t->win[1] += (double)hits;
    t->win[2] += (double)rows;
    if ((s + 1) % log_every == 0 || s + 1 == spe) NEST_CALL(log_point(t, &k, s, lr));
    /* Without sync BN the running statistics differ until the epoch-end average. */
    if (c->hash_every > 0 && t->step % c->hash_every == 0)
      NEST_CALL(nest_comm_check_same(
          t->comm,
          nest_net_hash(t->net, c->sync_bn ? NEST_HASH_ALL : NEST_HASH_PARAMS | NEST_HASH_MASKS),
          "weights and masks"));
    if (h && h->after_step) NEST_CALL(h->after_step(h->arg, plan, s));
  }
  NEST_CALL(nest_trainer_sync_buffers(t));
  if (h && h->after_epoch) NEST_CALL(h->after_epoch(h->arg, plan));
  const double train_time = nest_comm_wtime() - k.t_epoch;
  NEST_CALL(nest_trainer_evaluate_sets(t, plan->evaluate ? NEST_EVAL_BOTH : 0, val, test));
  t->epoch++;
  const nest_status st = t->rank == 0 ? epoch_done(t, &k, lr, train_time, val, test) : NEST_OK;
  return nest_comm_agree(t->comm, st);
}
