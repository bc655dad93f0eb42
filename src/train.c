/* train.c — data-parallel training: setup (data, split, normalisation, net, run directory),
 * the step, evaluation, logging and metrics. See train.h for the protocol. */
#define _GNU_SOURCE
#include "nest/train.h"

#include <errno.h>
#include <omp.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nest/arch.h"
#include "nest/atomic.h"
#include "nest/augment.h"
#include "nest/checkpoint.h"
#include "nest/gradpass.h"
#include "nest/grow.h"
#include "nest/prune.h"
#include "nest/report.h"
#include "nest/restart.h"
#include "nest/loss.h"
#include "nest/prefetch.h"
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

static nest_status mkdir_p(const char *path) {
  char buf[NEST_PATH_LEN];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; ++p) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0775) != 0 && errno != EEXIST)
      return NEST_ERR(NEST_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
    *p = '/';
  }
  if (mkdir(buf, 0775) != 0 && errno != EEXIST)
    return NEST_ERR(NEST_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
  return NEST_OK;
}

static void fmt_duration(double s, char *out, size_t cap) {
  if (!(s >= 0) || s > 1e7) {
    snprintf(out, cap, "--");
    return;
  }
  long t = lround(s);
  if (t >= 3600)
    snprintf(out, cap, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60)
    snprintf(out, cap, "%ldm%02lds", t / 60, t % 60);
  else
    snprintf(out, cap, "%lds", t);
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

/* Files a run writes into its directory: one of them there means the directory holds (part
 * of) a run, and it is not reused unless it also holds a checkpoint. */
static const char *const run_files[] = {"config.ini", "metrics.csv", "events.csv", "summary.txt",
                                        "model.h5", "model_seed.h5", "report.csv"};

/* The name of a new run directory under out_dir: NAME-job<id> (Slurm job), NAME-job<id>_<task>
 * (job array), else NAME-YYYYmmdd-HHMMSS. A requeued Slurm job gets its own directory again,
 * so it resumes; two runs started in the same second outside Slurm get -2, -3, ... */
static nest_status new_run_dir(nest_trainer *t, int *resume) {
  const nest_config *c = &t->cfg;
  const char *name = c->name[0] ? c->name : "run";
  char stamp[96];
  const char *job = getenv("SLURM_JOB_ID"), *ajob = getenv("SLURM_ARRAY_JOB_ID"),
             *task = getenv("SLURM_ARRAY_TASK_ID");
  const int slurm = job && *job;
  if (ajob && *ajob && task && *task)
    snprintf(stamp, sizeof stamp, "job%.32s_%.32s", ajob, task);
  else if (slurm)
    snprintf(stamp, sizeof stamp, "job%.32s", job);
  else {
    time_t now = time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tmv);
  }
  if (strlen(c->out_dir) > 900)
    return NEST_ERR(NEST_ERR_CONFIG, "run.out_dir '%.60s...' is too long", c->out_dir);
  NEST_CALL(mkdir_p(c->out_dir));
  for (int k = 1; k <= 1000; ++k) {
    if (k == 1)
      snprintf(t->run_dir, sizeof t->run_dir, "%s/%.100s-%s", c->out_dir, name, stamp);
    else
      snprintf(t->run_dir, sizeof t->run_dir, "%s/%.100s-%s-%d", c->out_dir, name, stamp, k);
    if (mkdir(t->run_dir, 0775) == 0) return NEST_OK; /* ours alone: mkdir is atomic */
    if (errno != EEXIST)
      return NEST_ERR(NEST_ERR_IO, "%s: cannot create directory: %s", t->run_dir, strerror(errno));
    if (slurm) { /* the same job again (requeued): its directory, resumed or refused below */
      *resume = -1;
      return NEST_OK;
    }
  }
  return NEST_ERR(NEST_ERR_IO, "%s/%s-%s: 1000 run directories of that name exist", c->out_dir,
                  name, stamp);
}

/* Rank 0: the run directory, and whether this run resumes the checkpoints in it. */
static nest_status choose_run_dir(nest_trainer *t, int *resume) {
  const nest_config *c = &t->cfg;
  *resume = 0;
  if (c->run_dir[0]) {
    if (strlen(c->run_dir) >= sizeof t->run_dir - 64)
      return NEST_ERR(NEST_ERR_CONFIG, "run.run_dir '%.60s...' is too long", c->run_dir);
    snprintf(t->run_dir, sizeof t->run_dir, "%s", c->run_dir);
    NEST_CALL(mkdir_p(t->run_dir));
    *resume = -1;
  } else {
    NEST_CALL(new_run_dir(t, resume));
  }
  if (*resume == 0) { /* a directory of our own */
    if (c->resume) return NEST_ERR(NEST_ERR_INTERNAL, "--resume without run.run_dir");
    return NEST_OK;
  }
  /* An existing directory: resume its checkpoints; refuse one that holds another run's files
   * without a checkpoint (nothing in it is touched). */
  char newest[NEST_PATH_LEN + 64];
  int any = 0;
  NEST_CALL(nest_restart_newest(t->run_dir, newest, sizeof newest, &any));
  if (any) {
    *resume = 1;
    return NEST_OK;
  }
  *resume = 0;
  if (c->resume)
    return NEST_ERR(NEST_ERR_IO, "%s: no checkpoint to resume from (no %s/checkpoints/ckpt-*.h5)",
                    t->run_dir, t->run_dir);
  /* A run killed before its first checkpoint (in its first second) left only its own
   * metrics.csv (empty or the header), maybe config.ini and events.csv: nothing to lose, start
   * over. (metrics.csv is only ever created by nest, first, after it checked the directory.) */
  char mpath[NEST_PATH_LEN + 32];
  snprintf(mpath, sizeof mpath, "%s/metrics.csv", t->run_dir);
  FILE *mf = fopen(mpath, "r");
  if (mf) {
    int lines = 0;
    for (int ch; (ch = fgetc(mf)) != EOF;) lines += ch == '\n';
    fclose(mf);
    if (lines <= 1) return NEST_OK;
  }
  for (size_t i = 0; i < sizeof run_files / sizeof run_files[0]; ++i) {
    char path[NEST_PATH_LEN + 32];
    snprintf(path, sizeof path, "%s/%s", t->run_dir, run_files[i]);
    if (access(path, F_OK) == 0)
      return NEST_ERR(NEST_ERR_IO,
                      "%s already holds a run (%s) but no checkpoint to resume: choose another "
                      "run.run_dir; nothing was overwritten",
                      t->run_dir, run_files[i]);
  }
  return NEST_OK;
}

static nest_status make_run_dir(nest_trainer *t) {
  nest_status st = NEST_OK;
  const nest_config *c = &t->cfg;
  /* No run directory at all (tests, benchmarks): both out_dir and run_dir empty. */
  if (!c->run_dir[0] && !c->out_dir[0]) {
    t->run_dir[0] = '\0';
    if (c->resume) return NEST_ERR(NEST_ERR_CONFIG, "--resume needs a run directory");
    return NEST_OK;
  }
  int resume = 0;
  if (t->rank == 0) {
    st = choose_run_dir(t, &resume);
    char path[NEST_PATH_LEN + 32];
    /* metrics.csv first (nest's own file: a directory with config.ini but no metrics.csv is
     * the user's), header flushed at once; then config.ini. */
    if (st == NEST_OK && !resume) {
      snprintf(path, sizeof path, "%s/metrics.csv", t->run_dir);
      t->metrics = fopen(path, "w");
      if (!t->metrics)
        st = NEST_ERR(NEST_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
      else if (fprintf(t->metrics,
                       "epoch,step,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,"
                       "active_weights,total_weights,density,images_per_s,elapsed_s,phase,"
                       "val_top5_error,test_top5_error\n") < 0 ||
               fflush(t->metrics) != 0)
        st = NEST_ERR(NEST_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    if (st == NEST_OK && !resume) {
      snprintf(path, sizeof path, "%s/config.ini", t->run_dir);
      st = nest_config_write(&t->cfg, path);
    }
  }
  NEST_CALL(nest_comm_agree(t->comm, st));
  NEST_CALL(nest_comm_bcast(t->comm, t->run_dir, sizeof t->run_dir, 0));
  NEST_CALL(nest_comm_bcast(t->comm, &resume, sizeof resume, 0));
  t->resuming = resume; /* 1: nest_restart_resume follows */
  return NEST_OK;
}

static nest_status setup(nest_trainer *t) {
  const nest_config *c = &t->cfg;
  /* Split and normalise with training statistics only. */
  NEST_CALL(nest_dataset_split(t->train->n, c->val_split, c->seed, &t->train_idx, &t->n_train,
                               &t->val_idx, &t->n_val));
  if (t->n_train < 1)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: no training samples left after data.val_split = %g",
                    t->train->path, c->val_split);
  /* The batch reader (prefetch.h); with image shards augment.crop sets the net's input shape. */
  NEST_CALL(nest_prefetch_from_config(c, t->train, t->test, (c->batch + t->nranks - 1) / t->nranks,
                                      t->nthreads, &t->pf));
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

  /* Network: built from model.arch and seeded, or a model file an earlier run wrote. */
  t->max_local = (c->batch + t->nranks - 1) / t->nranks;
  if (c->init_from[0]) {
    NEST_CALL(nest_model_load(c->init_from, t->max_local, t->nthreads, &t->net));
    const nest_shape in = t->net->in_shape, d = t->train->shape;
    if (in.c != d.c || in.h != d.h || in.w != d.w || t->net->nclasses != t->train->nclasses)
      return NEST_ERR(NEST_ERR_CONFIG,
                      "model.init_from = %s: the model takes %dx%dx%d inputs and %d classes, "
                      "%s has %dx%dx%d and %d",
                      c->init_from, in.c, in.h, in.w, t->net->nclasses, t->train->path, d.c, d.h,
                      d.w, t->train->nclasses);
  } else {
    nest_layer_spec *specs = NULL;
    int nspecs = 0;
    nest_arch_opts ao = {.width = c->width, .batchnorm = c->batchnorm, .dropout = c->dropout,
                         .widths = c->widths};
    NEST_CALL(nest_arch_build(c->arch, &ao, t->train->shape, t->train->nclasses, &specs, &nspecs));
    st = nest_net_create(specs, nspecs, t->train->shape, t->train->nclasses, t->max_local,
                         t->nthreads, &t->net);
    free(specs);
    NEST_CALL(st);
    int init = strcmp(c->init, "xavier") == 0 ? NEST_INIT_XAVIER : NEST_INIT_HE;
    NEST_CALL(nest_net_init(t->net, c->seed, c->density, init));
  }

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

/* ---- phases ---------------------------------------------------------------------------- */

static const char *const phase_names[NEST_PHASE_COUNT] = {"grow", "train", "prune", "area"};

/* synthesis.phases -> t->phases. Words are checked here (the config check only sees text). */
static nest_status parse_phases(nest_trainer *t) {
  const char *list = t->cfg.phases;
  t->nphases = 0;
  memset(t->phase_has, 0, sizeof t->phase_has);
  if (!list[0]) { /* the default: grow if there is a growth policy, then train */
    int growth = 0;
    for (const char *p = t->cfg.grow_policy; *p;) {
      const size_t len = strcspn(p, ",");
      char w[64];
      snprintf(w, sizeof w, "%.*s", (int)(len < sizeof w ? len : sizeof w - 1), p);
      const nest_policy_ops *ops = nest_policy_find(w);
      growth |= ops && ops->when == NEST_WHEN_GROWTH;
      p += len + (p[len] == ',');
    }
    if (growth) t->phases[t->nphases++] = NEST_PHASE_GROW;
    t->phases[t->nphases++] = NEST_PHASE_TRAIN;
  }
  for (const char *p = list; *p;) {
    while (*p == ' ') ++p;
    size_t len = strcspn(p, ",");
    size_t wl = len;
    while (wl > 0 && p[wl - 1] == ' ') --wl;
    int k = -1;
    for (int i = 0; i < NEST_PHASE_COUNT; ++i)
      if (strlen(phase_names[i]) == wl && strncmp(p, phase_names[i], wl) == 0) k = i;
    if (k < 0)
      return NEST_ERR(NEST_ERR_CONFIG,
                      "synthesis.phases = %s: unknown phase '%.*s' (known: grow, train, prune, area)",
                      list, (int)wl, p);
    if (t->phase_has[k])
      return NEST_ERR(NEST_ERR_CONFIG, "synthesis.phases = %s: phase '%s' is listed twice", list,
                      phase_names[k]);
    t->phases[t->nphases++] = (nest_phase)k;
    p += len + (p[len] == ',');
    t->phase_has[k] = 1;
  }
  for (int i = 0; i < t->nphases; ++i) t->phase_has[t->phases[i]] = 1;
  return NEST_OK;
}

/* The phases against the policies (after nest_grow_create parsed grow.policy). */
static nest_status check_phases(nest_trainer *t) {
  const int growth = nest_grow_has_phase(t->grow);
  if (t->phase_has[NEST_PHASE_GROW] && !growth)
    return NEST_ERR(NEST_ERR_CONFIG,
                    "synthesis.phases = %s lists grow, but grow.policy (%s) has no growth policy "
                    "(conn, neuron, fmap, strategic)",
                    t->cfg.phases, t->cfg.grow_policy[0] ? t->cfg.grow_policy : "empty");
  if (growth && !t->phase_has[NEST_PHASE_GROW])
    return NEST_ERR(NEST_ERR_CONFIG,
                    "grow.policy = %s lists growth policies, but synthesis.phases = %s has no "
                    "grow phase",
                    t->cfg.grow_policy, t->cfg.phases);
  return NEST_OK;
}

static nest_status trainer_alloc(const nest_config *cfg, nest_comm *comm, nest_trainer **out) {
  nest_trainer *t;
  NEST_CALL(nest_calloc((void **)&t, 1, sizeof *t, "trainer"));
  t->cfg = *cfg;
  t->comm = comm;
  t->rank = nest_comm_rank(comm);
  t->nranks = nest_comm_size(comm);
  t->nthreads = omp_get_max_threads();
  t->top5[0] = t->top5[1] = NAN;
  *out = t;
  return NEST_OK;
}

nest_status nest_trainer_create_with_data(const nest_config *cfg, nest_comm *comm,
                                          nest_dataset *train, nest_dataset *test,
                                          nest_trainer **out) {
  *out = NULL;
  nest_trainer *t;
  nest_status st = trainer_alloc(cfg, comm, &t);
  if (st != NEST_OK) {
    nest_dataset_destroy(&train);
    nest_dataset_destroy(&test);
    return st;
  }
  t->train = train;
  t->test = test;
  /* Setup depends only on shared data and config, so ranks decide alike; agree anyway, since an
   * allocation can fail on one rank only and the others must not wait for it. */
  st = setup(t);
  NEST_CALL_GOTO(st, nest_comm_agree(comm, st), fail);
  /* Growth configuration is checked against the built net before anything is written. */
  NEST_CALL_GOTO(st, parse_phases(t), fail);
  st = nest_grow_create(t, t->phase_has[NEST_PHASE_PRUNE] || t->phase_has[NEST_PHASE_AREA],
                        &t->grow);
  if (st == NEST_OK) st = check_phases(t);
  if (st == NEST_OK && t->phase_has[NEST_PHASE_PRUNE]) st = nest_prune_check(t, 0);
  if (st == NEST_OK && t->phase_has[NEST_PHASE_AREA]) st = nest_prune_check(t, 1);
  NEST_CALL_GOTO(st, nest_comm_agree(comm, st), fail);
  NEST_CALL_GOTO(st, make_run_dir(t), fail);
  if (!t->resuming) NEST_CALL_GOTO(st, nest_grow_open_events(t, t->grow), fail);
  NEST_CALL_GOTO(st, nest_restart_create(t), fail);
  if (t->resuming) NEST_CALL_GOTO(st, nest_restart_resume(t), fail);
  *out = t;
  return NEST_OK;
fail:
  nest_trainer_destroy(&t);
  return st;
}

nest_status nest_trainer_create(const nest_config *cfg, nest_comm *comm, nest_trainer **out) {
  *out = NULL;
  nest_dataset *train = NULL, *test = NULL;
  /* A file may be readable on one node and not another: agree on the outcome. */
  nest_status st = load_set(cfg, cfg->train, cfg->train_labels, cfg->max_train, NULL, &train);
  NEST_CALL(nest_comm_agree(comm, st));
  if (cfg->test[0]) {
    st = load_set(cfg, cfg->test, cfg->test_labels, cfg->max_test, train, &test);
    st = nest_comm_agree(comm, st);
    if (st != NEST_OK) {
      nest_dataset_destroy(&train);
      nest_error_trace(__FILE__, __LINE__);
      return st;
    }
  }
  return nest_trainer_create_with_data(cfg, comm, train, test, out);
}

void nest_trainer_destroy(nest_trainer **tp) {
  if (!tp || !*tp) return;
  nest_trainer *t = *tp;
  if (t->metrics) fclose(t->metrics);
  nest_restart_destroy(&t->rst);
  nest_net_destroy(&t->snap);
  free(t->pts);
  nest_grow_destroy(&t->grow);
  nest_augment_destroy(&t->aug);
  nest_net_destroy(&t->net);
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
                  .global_n = global_n};
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
  /* scale 1/global_rows: the allreduce SUM of per-rank gradients is the mean-loss gradient. */
  nest_loss_softmax_xent(logits, t->y, count, t->net->nclasses, 1.0f / (float)global_rows,
                         t->dlogits, loss_sum, correct);
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
    nest_status st2 = nest_comm_bucket_end(t->comm, &sum_s); /* also after an error */
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
  return NEST_OK;
}

/* buffers[lo, hi) = their mean over ranks. */
static nest_status average_buffers(nest_trainer *t, size_t lo, size_t hi) {
  if (hi <= lo) return NEST_OK;
  NEST_CALL(nest_comm_allreduce_f32(t->comm, t->net->buffers + lo, hi - lo));
  for (size_t i = lo; i < hi; ++i) t->net->buffers[i] /= (float)t->nranks;
  return NEST_OK;
}

/* Without sync BN each rank's running statistics drift apart: average them. */
static nest_status sync_buffers(nest_trainer *t) {
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

/* ---- the loop ---------------------------------------------------------------------------- */

static void csv_num(FILE *f, double v) {
  if (isnan(v))
    fputs(",", f);
  else
    fprintf(f, ",%.6g", v);
}

nest_status nest_trainer_epoch(nest_trainer *t, const nest_epoch_plan *plan, nest_eval *val,
                               nest_eval *test) {
  const nest_config *c = &t->cfg;
  const int64_t spe = t->steps_per_epoch, e = t->epoch;
  const int log_every = c->log_every > 0 ? c->log_every : (int)(spe >= 10 ? spe / 10 : 1);
  const int train_phase = strcmp(plan->phase, "train") == 0;
  const char *label = train_phase ? "epoch" : plan->phase; /* progress lines: "epoch 3/20" */
  const int64_t phase_steps = spe * plan->count;
  double t_epoch = nest_comm_wtime(), t_win = t_epoch;
  nest_shard_permute(c->seed, e, t->train_idx, t->n_train, t->perm);
  t->data_key = e;
  /* The sums live in the trainer (a checkpoint between two steps saves them). */
  double *ep_acc = t->ep_acc, *win = t->win; /* loss sum, correct, rows */
  int64_t s0 = 0;
  if (t->resuming) { /* a checkpoint taken before step cur.step of this epoch */
    s0 = t->cur.step;
    t->resuming = 0;
  } else {
    for (int k = 0; k < 3; ++k) ep_acc[k] = win[k] = 0;
  }
  double lr = 0;
  for (int64_t s = s0; s < spe; ++s) {
    t->cur.step = s;
    NEST_CALL(nest_restart_point(t, 0));
    lr = nest_optim_lr(plan->sched, plan->t0 + (double)s / (double)spe);
    double loss = 0;
    int64_t hits = 0, rows = 0;
    NEST_CALL(nest_trainer_step(t, t->perm, s, lr, &loss, &hits, &rows));
    win[0] += loss;
    win[1] += (double)hits;
    win[2] += (double)rows;
    if ((s + 1) % log_every == 0 || s + 1 == spe) {
      /* Sync point: the reduced loss is identical on every rank, so is the NaN verdict. */
      NEST_CALL(nest_comm_sum_same_f64(t->comm, win, 3));
      double mean = win[0] / win[2];
      if (!isfinite(mean))
        return NEST_ERR(NEST_ERR_NUMERIC,
                        "training loss is %g at epoch %lld step %lld: the run diverged; lower "
                        "optim.lr (now %g) or add optim.warmup_epochs",
                        mean, (long long)e + 1, (long long)s + 1, lr);
      double now = nest_comm_wtime();
      double ips = win[2] / (now - t_win);
      int64_t done = plan->index * spe + s + 1;
      double eta = (now - t_epoch) / (double)(s + 1 - s0) * (double)(phase_steps - done);
      if (t->rank == 0 && !t->quiet) {
        char eta_s[32], el_s[32];
        fmt_duration(eta, eta_s, sizeof eta_s);
        fmt_duration(now - t->t_start, el_s, sizeof el_s);
        printf("%s %3lld/%-3lld step %6lld/%-6lld loss %.4f  acc %6.2f%%  lr %.5f  %8.0f img/s"
               "  elapsed %s  ETA %s\n",
               label, (long long)plan->index + 1, (long long)plan->count, (long long)s + 1,
               (long long)spe, mean, 100.0 * win[1] / win[2], lr, ips, el_s, eta_s);
        fflush(stdout);
      }
      for (int k = 0; k < 3; ++k) ep_acc[k] += win[k], win[k] = 0;
      t_win = nest_comm_wtime();
    }
    /* Without sync BN the running statistics differ until the epoch-end average. */
    if (c->hash_every > 0 && t->step % c->hash_every == 0)
      NEST_CALL(nest_comm_check_same(
          t->comm,
          nest_net_hash(t->net, c->sync_bn ? NEST_HASH_ALL : NEST_HASH_PARAMS | NEST_HASH_MASKS),
          "weights and masks"));
    if (train_phase)
      NEST_CALL(nest_grow_hook(t, t->grow, NEST_WHEN_STEP, plan->index * spe + s + 1, phase_steps));
  }
  NEST_CALL(sync_buffers(t));
  if (train_phase) NEST_CALL(nest_grow_hook(t, t->grow, NEST_WHEN_EPOCH, plan->index, plan->count));
  const double train_time = nest_comm_wtime() - t_epoch;
  *val = (nest_eval){NAN, NAN, 0, NAN};
  *test = (nest_eval){NAN, NAN, 0, NAN};
  if (plan->evaluate) {
    if (t->n_val > 0) NEST_CALL(nest_trainer_evaluate(t, t->train, t->val_idx, t->n_val, val));
    if (t->test) NEST_CALL(nest_trainer_evaluate(t, t->test, t->test_idx, t->n_test, test));
  }
  t->cur.step = spe; /* the epoch's steps are done (no checkpoint point until the next) */
  t->epoch++;
  int64_t aw, tw;
  nest_net_count(t->net, &aw, &tw, NULL);
  nest_status st = NEST_OK;
  if (t->rank == 0) {
    double el = nest_comm_wtime() - t->t_start;
    if (!t->quiet) {
      printf("%s %3lld/%-3lld done: train loss %.4f acc %6.2f%%", label,
             (long long)plan->index + 1, (long long)plan->count, ep_acc[0] / ep_acc[2],
             100.0 * ep_acc[1] / ep_acc[2]);
      if (!isnan(val->acc)) printf(" | val loss %.4f acc %6.2f%%", val->loss, 100.0 * val->acc);
      if (!isnan(val->acc5) && t->net->nclasses > NEST_TOP5_MIN_CLASSES)
        printf(" top-5 %6.2f%%", 100.0 * val->acc5);
      if (!isnan(test->acc))
        printf(" | test acc %6.2f%% (error %.2f%%)", 100.0 * test->acc, 100.0 * (1.0 - test->acc));
      if (!isnan(test->acc5) && t->net->nclasses > NEST_TOP5_MIN_CLASSES)
        printf(" top-5 acc %6.2f%% (error %.2f%%)", 100.0 * test->acc5, 100.0 * (1.0 - test->acc5));
      printf(" | %.1f s\n", train_time);
      fflush(stdout);
    }
    if (t->metrics) {
      FILE *f = t->metrics;
      fprintf(f, "%lld,%lld,%.6g", (long long)t->epoch, (long long)t->step, lr);
      csv_num(f, ep_acc[0] / ep_acc[2]);
      csv_num(f, ep_acc[1] / ep_acc[2]);
      csv_num(f, val->loss);
      csv_num(f, val->acc);
      csv_num(f, test->loss);
      csv_num(f, test->acc);
      fprintf(f, ",%lld,%lld,%.6g,%.1f,%.2f,%s", (long long)aw, (long long)tw,
              (double)aw / (double)tw, ep_acc[2] / train_time, el, plan->phase);
      /* appended after phase: columns keep their positions in older readers */
      csv_num(f, 1.0 - val->acc5);
      csv_num(f, 1.0 - test->acc5);
      fputc('\n', f);
      /* Flushed per row: a crash or kill loses at most the row being written. */
      if (fflush(f) != 0 || ferror(f))
        st = NEST_ERR(NEST_ERR_IO, "%s/metrics.csv: write failed: %s", t->run_dir,
                      strerror(errno));
    }
  }
  NEST_CALL(nest_comm_agree(t->comm, st));
  return NEST_OK;
}

nest_status nest_trainer_sync_buffers(nest_trainer *t) { return sync_buffers(t); }

/* summary.txt, written atomically (atomic.h) by rank 0; agreed. */
static nest_status write_summary(nest_trainer *t, const nest_eval *val, const nest_eval *test,
                                 const nest_prune_result *pr, const nest_prune_result *ar) {
  const nest_config *c = &t->cfg;
  nest_status st = NEST_OK;
  int64_t aw, tw;
  nest_net_count(t->net, &aw, &tw, NULL);
  if (t->rank == 0 && t->run_dir[0]) {
    char path[NEST_PATH_LEN + 32], tmp[NEST_PATH_LEN + 48];
    snprintf(path, sizeof path, "%s/summary.txt", t->run_dir);
    FILE *f = NULL;
    st = nest_atomic_fopen(path, tmp, sizeof tmp, &f);
    if (st == NEST_OK) {
      double el = nest_comm_wtime() - t->t_start;
      char widths[512], arch[4096];
      nest_net_widths_string(t->net, widths, sizeof widths);
      nest_net_arch_string(t->net, arch, sizeof arch);
      fprintf(f, "arch = %s\nepochs = %lld\nranks = %d\nthreads = %d\nwall_s = %.1f\n", c->arch,
              (long long)t->epoch, t->nranks, t->nthreads, el);
      fprintf(f, "widths = %s\nlayers = %s\n", widths, arch);
      fprintf(f, "active_weights = %lld\ntotal_weights = %lld\nflops_per_sample = %.6g\n",
              (long long)aw, (long long)tw, nest_net_flops(t->net));
      const nest_grow_result *g = nest_grow_result_of(t->grow);
      if (g && nest_grow_has_phase(t->grow)) {
        fprintf(f, "grow_iterations = %d\ngrow_stop = %s\ngrow_wall_s = %.1f\n", g->iterations,
                g->stop, g->seconds);
        fprintf(f, "seed_weights = %lld\ngrown_weights = %lld\n", (long long)g->seed_weights,
                (long long)g->grown_weights);
        if (!isnan(g->val_error)) fprintf(f, "grow_val_error = %.6f\n", g->val_error);
        if (!isnan(g->test_error)) fprintf(f, "grow_test_error = %.6f\n", g->test_error);
      }
      for (int k = 0; k < 2; ++k) {
        const nest_prune_result *r = k ? ar : pr;
        if (!r) continue;
        const char *p = k ? "area" : "prune";
        fprintf(f, "%s_iterations = %d\n%s_steps_kept = %lld\n%s_steps_restored = %lld\n", p,
                r->iterations, p, (long long)r->steps_kept, p, (long long)r->steps_restored);
        fprintf(f, "%s_wall_s = %.1f\n%s_target_error = %.6f\n", p, r->seconds, p, r->target);
        fprintf(f, "%s_weights_before = %lld\n%s_weights_after = %lld\n", p,
                (long long)r->weights_before, p, (long long)r->weights_after);
        fprintf(f, "%s_flops_before = %.6g\n%s_flops_after = %.6g\n", p, r->flops_before, p,
                r->flops_after);
        fprintf(f, "%s_conv_flops_before = %.6g\n%s_conv_flops_after = %.6g\n", p,
                r->conv_flops_before, p, r->conv_flops_after);
        if (!isnan(r->val_error)) fprintf(f, "%s_val_error = %.6f\n", p, r->val_error);
        if (!isnan(r->test_error)) fprintf(f, "%s_test_error = %.6f\n", p, r->test_error);
      }
      if (!isnan(val->acc)) fprintf(f, "val_error = %.6f\n", 1.0 - val->acc);
      if (!isnan(test->acc)) fprintf(f, "test_error = %.6f\n", 1.0 - test->acc);
      /* top-5 of the final network, whatever the class count (1 - 1 = 0 below 5 classes) */
      if (!isnan(val->acc) && !isnan(t->top5[0]))
        fprintf(f, "val_top5_error = %.6f\n", 1.0 - t->top5[0]);
      if (!isnan(test->acc) && !isnan(t->top5[1]))
        fprintf(f, "test_top5_error = %.6f\n", 1.0 - t->top5[1]);
      st = nest_atomic_fclose(f, tmp, path);
    }
  }
  return nest_comm_agree(t->comm, st);
}

/* Save the current net as RUN_DIR/<file> with its stage and Act% over the validation set
 * (what nest_report shows). Collective (the statistics pass); rank 0 writes. */
static nest_status save_stage(nest_trainer *t, const char *file, const char *stage,
                              const nest_eval *val, const nest_eval *test) {
  if (!t->run_dir[0]) return NEST_OK;
  nest_actsum *a = NULL;
  if (t->n_val > 0) {
    const nest_actsum_req req = {.fractions = 1};
    NEST_CALL(nest_actpass(t, t->train, t->val_idx, t->n_val, &req, &a));
  }
  nest_status st = NEST_OK;
  if (t->rank == 0) {
    nest_model_info info = {.nlayers = a ? a->nlayers : 0,
                            .act_frac = a ? a->act_frac : NULL,
                            .in_frac = a ? a->in_frac : NULL,
                            .val_error = val && !isnan(val->acc) ? 1.0 - val->acc : NAN,
                            .test_error = test && !isnan(test->acc) ? 1.0 - test->acc : NAN,
                            /* the latest evaluation's: of the network being saved */
                            .has_top5 = 1,
                            .val_top5_error = val && !isnan(val->acc) ? 1.0 - t->top5[0] : NAN,
                            .test_top5_error = test && !isnan(test->acc) ? 1.0 - t->top5[1] : NAN};
    snprintf(info.stage, sizeof info.stage, "%s", stage);
    snprintf(info.base_arch, sizeof info.base_arch, "%s", t->cfg.arch);
    char path[NEST_PATH_LEN + 32];
    snprintf(path, sizeof path, "%s/%s", t->run_dir, file);
    st = nest_model_save_info(t->net, &info, path);
  }
  nest_actsum_destroy(&a);
  return nest_comm_agree(t->comm, st);
}

/* The training phase: `epochs` epochs of `sched` labelled `phase`. */
static nest_status train_epochs(nest_trainer *t, const char *phase, const nest_optim *sched,
                                int64_t epochs, nest_eval *val, nest_eval *test) {
  const nest_config *c = &t->cfg;
  for (int64_t e = t->resuming ? t->cur.epoch : 0; e < epochs; ++e) {
    if (!t->resuming) t->cur.epoch = e, t->cur.step = 0;
    const int last = e + 1 == epochs;
    nest_epoch_plan plan = {.phase = phase,
                            .sched = sched,
                            .t0 = (double)e,
                            .index = e,
                            .count = epochs,
                            .evaluate = (e + 1) % c->eval_every == 0 || last};
    NEST_CALL(nest_trainer_epoch(t, &plan, val, test));
  }
  return NEST_OK;
}

nest_status nest_trainer_run(nest_trainer *t) {
  const nest_config *c = &t->cfg;
  int64_t aw, tw;
  nest_net_count(t->net, &aw, &tw, NULL);
  if (t->rank == 0 && !t->quiet) {
    char ph[128] = "";
    for (int i = 0; i < t->nphases; ++i)
      snprintf(ph + strlen(ph), sizeof ph - strlen(ph), "%s%s", i ? ", " : "",
               phase_names[t->phases[i]]);
    printf("nest: %s on %lld training / %lld validation / %lld test samples, %d ranks x %d "
           "threads, global batch %d; phases: %s\n",
           c->init_from[0] ? c->init_from : c->arch, (long long)t->n_train, (long long)t->n_val,
           (long long)t->n_test, t->nranks, t->nthreads, c->batch, ph);
    nest_net_describe(t->net, stdout);
    printf("nest: %lld / %lld weights active (%.1f%%), %.3g MFLOP per sample forward; run "
           "directory %s\n",
           (long long)aw, (long long)tw, 100.0 * (double)aw / (double)tw,
           nest_net_flops(t->net) / 1e6, t->run_dir);
    fflush(stdout);
  }
  nest_eval *val = &t->last_val, *test = &t->last_test;
  const int synthesis = t->phase_has[NEST_PHASE_GROW] || t->phase_has[NEST_PHASE_PRUNE] ||
                        t->phase_has[NEST_PHASE_AREA];
  if (!t->resuming) { /* a new run: checkpoint 0 before anything else */
    t->t_start = nest_comm_wtime();
    *val = *test = (nest_eval){NAN, NAN, 0, NAN};
    t->cur = (nest_cursor){.phase = -1};
    NEST_CALL(nest_restart_point(t, 1));
  }
  if (t->cur.phase == -1) {
    t->resuming = 0; /* resumed at the seed stage: nothing to skip */
    if (synthesis) { /* the starting network, with its errors (the report's first stage) */
      nest_eval v0 = {NAN, NAN, 0, NAN}, t0 = {NAN, NAN, 0, NAN};
      if (t->n_val > 0) NEST_CALL(nest_trainer_evaluate(t, t->train, t->val_idx, t->n_val, &v0));
      if (t->test) NEST_CALL(nest_trainer_evaluate(t, t->test, t->test_idx, t->n_test, &t0));
      NEST_CALL(save_stage(t, "model_seed.h5", c->init_from[0] ? "start" : "seed", &v0, &t0));
    }
    t->cur = (nest_cursor){.phase = 0};
  }
  for (int i = t->cur.phase; i < t->nphases; ++i) {
    if (!t->resuming) {
      t->cur = (nest_cursor){.phase = i};
      t->phase_t0 = nest_comm_wtime() - t->t_start;
    }
    switch (t->phases[i]) {
    case NEST_PHASE_GROW: {
      NEST_CALL(nest_grow_phase(t, t->grow));
      const nest_grow_result *g = nest_grow_result_of(t->grow);
      val->acc = 1.0 - g->val_error;
      test->acc = 1.0 - g->test_error;
      NEST_CALL(save_stage(t, "model_grown.h5", "grown", val, test));
      break;
    }
    case NEST_PHASE_TRAIN:
      if (t->rank == 0 && !t->quiet && c->epochs > 0 && i > 0 && !t->resuming) {
        printf("nest: training phase: %d epochs (optim schedule)\n", c->epochs);
        nest_net_describe(t->net, stdout);
        fflush(stdout);
      }
      NEST_CALL(train_epochs(t, "train", &t->optim, c->epochs, val, test));
      break;
    case NEST_PHASE_PRUNE:
    case NEST_PHASE_AREA: {
      const int area = t->phases[i] == NEST_PHASE_AREA;
      nest_prune_result *r = &t->pres[area];
      /* resumed in the fine-tuning (cursor part 2): the phase itself is done */
      if (!(t->resuming && t->cur.part == 2)) {
        t->pran[area] = 1;
        NEST_CALL(nest_prune_phase(t, t->grow, area, r));
        val->acc = 1.0 - r->val_error;
        test->acc = 1.0 - r->test_error;
        t->cur.part = 2, t->cur.epoch = 0, t->cur.step = 0;
      }
      const int ft_epochs = area && c->prune_area_epochs >= 0 ? c->prune_area_epochs : c->prune_epochs;
      if (ft_epochs > 0) {
        /* fine-tuning: a cosine from prune.lr down to optim.min_lr */
        nest_optim ft = t->optim;
        ft.lr = c->prune_lr;
        ft.schedule = NEST_SCHED_COSINE;
        ft.warmup_epochs = 0;
        ft.total_epochs = ft_epochs;
        if (t->rank == 0 && !t->quiet && !t->resuming) {
          printf("nest: fine-tuning: %d epochs from lr %g\n", ft_epochs, c->prune_lr);
          fflush(stdout);
        }
        NEST_CALL(train_epochs(t, "finetune", &ft, ft_epochs, val, test));
      }
      break;
    }
    default:
      NEST_ASSERT(0);
    }
    NEST_ASSERT(!t->resuming); /* every phase consumes the cursor it was resumed at */
  }
  if (!t->resuming) { /* the last checkpoint: a requeued finished run only redoes the files */
    t->cur = (nest_cursor){.phase = t->nphases};
    NEST_CALL(nest_restart_point(t, 1));
  }
  t->resuming = 0;
  if (c->hash_every > 0)
    NEST_CALL(nest_comm_check_same(t->comm, nest_net_hash(t->net, NEST_HASH_ALL),
                                   "weights and masks"));
  /* t->top5 is the latest evaluation's, which every phase ends with; it is not in checkpoints,
   * so a run resumed after its last evaluation measures the final network again. */
  nest_eval again;
  if (!isnan(val->acc) && isnan(t->top5[0]) && t->n_val > 0)
    NEST_CALL(nest_trainer_evaluate(t, t->train, t->val_idx, t->n_val, &again));
  if (!isnan(test->acc) && isnan(t->top5[1]) && t->test)
    NEST_CALL(nest_trainer_evaluate(t, t->test, t->test_idx, t->n_test, &again));
  NEST_CALL(write_summary(t, val, test, t->pran[0] ? &t->pres[0] : NULL, t->pran[1] ? &t->pres[1] : NULL));
  /* The final network (architecture, weights, masks) for nest_report, nest_jaccard,
   * model.init_from and inspection. */
  NEST_CALL(save_stage(t, "model.h5", "final", val, test));
  /* The model report (report.h): every stage of this run, printed and in report.csv. */
  if (synthesis && t->run_dir[0]) {
    nest_status st = NEST_OK;
    if (t->rank == 0) {
      nest_report *rep = NULL;
      char path[NEST_PATH_LEN + 32];
      snprintf(path, sizeof path, "%s/report.csv", t->run_dir);
      st = nest_report_create(t->run_dir, &rep);
      if (st == NEST_OK) st = nest_report_write_csv(rep, path);
      if (st == NEST_OK && !t->quiet) {
        printf("\nnest: model report (%s):\n", path);
        nest_report_print(rep, stdout, 0);
        printf("\n");
      }
      nest_report_destroy(&rep);
    }
    NEST_CALL(nest_comm_agree(t->comm, st));
  }
  if (t->rank == 0 && !t->quiet) {
    printf("nest: finished %lld epochs in %.1f s", (long long)t->epoch,
           nest_comm_wtime() - t->t_start);
    if (!isnan(test->acc)) printf(", test error %.2f%%", 100.0 * (1.0 - test->acc));
    if (!isnan(test->acc) && !isnan(t->top5[1]) && t->net->nclasses > NEST_TOP5_MIN_CLASSES)
      printf(" (top-5 %.2f%%)", 100.0 * (1.0 - t->top5[1]));
    if (!isnan(val->acc)) printf(", validation error %.2f%%", 100.0 * (1.0 - val->acc));
    if (!isnan(val->acc) && !isnan(t->top5[0]) && t->net->nclasses > NEST_TOP5_MIN_CLASSES)
      printf(" (top-5 %.2f%%)", 100.0 * (1.0 - t->top5[0]));
    nest_net_count(t->net, &aw, &tw, NULL);
    printf(", %lld active weights; results in %s", (long long)aw, t->run_dir);
    if (t->run_dir[0]) printf(", final model %s/model.h5", t->run_dir);
    printf("\n");
    fflush(stdout);
  }
  return NEST_OK;
}
