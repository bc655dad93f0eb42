/* restart.c — checkpoint/restart of a whole run: when to write, what goes in, how a run
 * resumes (restart.h; layout in docs/checkpoint-format.md). HDF5 stays in ckpt.c (over h5io.c): this
 * file only names datasets — in one table (state_table), which the writer, the reader and the
 * reader's size checks all walk. */
#define _GNU_SOURCE
#include "nest/restart.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "nest/ckpt.h"
#include "nest/rng.h"
#include "nest/rundir.h"

/* ---- signals ------------------------------------------------------------------------------ */

static volatile sig_atomic_t got_signal;

static void on_signal(int s) {
  if (!got_signal) got_signal = s; /* a second signal changes nothing */
}

void nest_restart_signals_install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART; /* reads and writes in progress carry on */
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  /* the launcher (src/launch.c) blocked them before this program loaded: one that arrived
   * since is pending and reaches on_signal now */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGUSR1);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigprocmask(SIG_UNBLOCK, &stop, NULL);
}

static const char *signal_name(int s) {
  return s == SIGUSR1 ? "SIGUSR1" : s == SIGTERM ? "SIGTERM" : s == SIGINT ? "SIGINT" : "a signal";
}

nest_status nest_restart_newest(const char *run_dir, char *path, size_t cap, int *any) {
  return nest_rundir_newest(run_dir, path, cap, any);
}

/* ---- the writer's state ------------------------------------------------------------------- */

struct nest_restart {
  nest_restart_src src;
  char run_dir[NEST_PATH_LEN];  /* "" = none */
  int64_t seq;                  /* sequence number of the next checkpoint */
  int64_t last_step;            /* t->step at the last checkpoint */
  double last_time;             /* wall clock of the last checkpoint */
};

nest_status nest_restart_create(const nest_restart_src *src, nest_restart **out) {
  *out = NULL;
  nest_trainer *t = src->run->t;
  nest_restart *r;
  NEST_CALL(nest_calloc((void **)&r, 1, sizeof *r, "checkpoint state"));
  r->src = *src;
  snprintf(r->run_dir, sizeof r->run_dir, "%s", src->run_dir ? src->run_dir : "");
  r->src.run_dir = r->run_dir;
  r->last_time = nest_comm_wtime();
  r->last_step = t->step;
  if (r->run_dir[0]) {
    nest_status st = NEST_OK;
    char dir[NEST_PATH_LEN + 32];
    snprintf(dir, sizeof dir, "%s/checkpoints", r->run_dir);
    if (t->rank == 0 && mkdir(dir, 0775) != 0 && errno != EEXIST)
      st = NEST_ERR(NEST_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    st = nest_comm_agree(t->comm, st);
    if (st != NEST_OK) {
      free(r);
      nest_error_trace(__FILE__, __LINE__);
      return st;
    }
  }
  *out = r;
  return NEST_OK;
}

void nest_restart_destroy(nest_restart **r) {
  if (!r || !*r) return;
  free(*r);
  *r = NULL;
}

/* Remove all but the newest `keep` checkpoints (rank 0). */
static nest_status remove_old(const char *run_dir, int keep) {
  int64_t *seqs;
  int n;
  NEST_CALL(nest_rundir_checkpoints(run_dir, &seqs, &n));
  nest_status st = NEST_OK;
  for (int i = keep; i < n && st == NEST_OK; ++i) {
    char p[NEST_PATH_LEN + 64];
    nest_rundir_checkpoint(run_dir, seqs[i], p, sizeof p);
    if (remove(p) != 0 && errno != ENOENT)
      st = NEST_ERR(NEST_ERR_IO, "%s: cannot remove an old checkpoint: %s", p, strerror(errno));
  }
  free(seqs);
  return st;
}

/* ---- fingerprints --------------------------------------------------------------------------- */

#define NFP 8
/* What identifies the data a run trains on: sizes, shape, classes, hashes of the labels (the
 * normalisation statistics, saved beside, cover the feature values). Image shards add their
 * files' base names, sizes and sample counts (source_hash, data.h; 0 in memory, which leaves
 * the label hashes as they were): metadata only, no pixel is read for it. */
static void data_fingerprint(const nest_trainer *t, int64_t fp[NFP]) {
  const uint64_t h0 = NEST_FNV1A_INIT;
  fp[0] = t->train->n;
  fp[1] = t->n_train;
  fp[2] = t->n_val;
  fp[3] = t->n_test;
  fp[4] = t->train->nclasses;
  fp[5] = nest_dataset_dim(t->train);
  fp[6] = (int64_t)nest_hash_fnv1a(t->train->labels, sizeof(int32_t) * (size_t)t->train->n,
                                   h0 ^ t->train->source_hash);
  fp[7] = t->test ? (int64_t)nest_hash_fnv1a(t->test->labels,
                                             sizeof(int32_t) * (size_t)t->test->n,
                                             h0 ^ t->test->source_hash)
                  : 0;
}

/* ---- the state table ------------------------------------------------------------------------ */

#define NPRC 5 /* prune result counts */
#define NPRV 9 /* prune result values */
#define NSCC 6 /* scann state counts */
#define NSCV 6 /* scann state values */

/* A checkpoint's contents as arrays: filled from the run before writing (pack), read from the
 * file before any of it is put into the run (unpack, after the checks). */
typedef struct {
  nest_net *net, *snap, *best, *teacher; /* loaded: owned; packed: the run's (best: scann's) */
  int64_t cur[8], prog[5], rs[2], pran[2], pc[2 * NPRC], files[2], fp[NFP];
  double times[2], ep_acc[3], evals[4], pv[2 * NPRV], bestval[1];
  int64_t sc[NSCC];     /* the scann phase's counts and values (scann.h) */
  double sv[NSCV];
  double *sums;         /* [6 x ranks]: per rank the epoch window and the retraining sums */
  float *bufs;          /* [nbuf x ranks] or NULL: per rank the BN statistics (no sync BN) */
  int64_t *pt;          /* [3 x npts] */
  double *pg;           /* [npts] */
  float *norm_mean, *norm_std; /* [nch] */
  size_t npts, nch;
  char *config;
  int owned;            /* 1: everything above belongs to the image (loaded) */
} image;

static void image_free(image *m) {
  if (m->owned) {
    nest_net_destroy(&m->net);
    nest_net_destroy(&m->snap);
    nest_net_destroy(&m->best);
    nest_net_destroy(&m->teacher);
    free(m->norm_mean);
    free(m->norm_std);
  }
  free(m->sums);
  free(m->bufs);
  free(m->pt);
  free(m->pg);
  free(m->config);
  memset(m, 0, sizeof *m);
}

enum { K_ARRAY, K_NET, K_SNAPSHOT, K_TEACHER, K_GROW, K_BEST }; /* what an entry is */
enum { V_FIXED, V_RANKS, V_BUFFERS, V_TARGETS, V_CHANNELS }; /* what its length is */

/* One object of a checkpoint, in file order: a /state dataset of `type` holding per x (the
 * variable `var`) elements, in a fixed array of the image or in an allocated one (*alloc); or
 * the net, the snapshot, the growth driver's datasets (grow.c) at that position. */
typedef struct {
  int kind;
  const char *name;
  nest_ck_type type;
  void *fixed;
  void **alloc;
  size_t per;
  int var;
  int optional; /* written only when there is something; may be absent */
} state_entry;

#define FIXED(n, ty, a) {K_ARRAY, n, ty, a, NULL, sizeof(a) / sizeof(a[0]), V_FIXED, 0}
#define VAR(n, ty, p, per, v, opt) {K_ARRAY, n, ty, NULL, (void **)(p), per, v, opt}
/* a fixed array that checkpoints of earlier versions lack (the reader keeps its preset) */
#define FIXED_OPT(n, ty, a) {K_ARRAY, n, ty, a, NULL, sizeof(a) / sizeof(a[0]), V_FIXED, 1}
#define NSTATE 25

/* THE table: every object of a checkpoint, in the order of the file. */
static void state_table(image *m, state_entry e[NSTATE]) {
  const state_entry tab[NSTATE] = {
      {K_NET, NULL, 0, NULL, NULL, 0, 0, 0},
      {K_SNAPSHOT, "snapshot", 0, NULL, NULL, 0, 0, 1},
      /* the distillation teacher (prune.distill), once the first pruning phase captured it */
      {K_TEACHER, "teacher", 0, NULL, NULL, 0, 0, 1},
      FIXED("cursor", NEST_CK_I64, m->cur),
      FIXED("progress", NEST_CK_I64, m->prog),
      FIXED("retrain_stream", NEST_CK_I64, m->rs),
      FIXED("times", NEST_CK_F64, m->times),
      FIXED("epoch_sums", NEST_CK_F64, m->ep_acc),
      VAR("rank_sums", NEST_CK_F64, &m->sums, 6, V_RANKS, 0),
      VAR("rank_buffers", NEST_CK_F32, &m->bufs, 1, V_BUFFERS, 1),
      FIXED("evals", NEST_CK_F64, m->evals),
      FIXED_OPT("best_val_error", NEST_CK_F64, m->bestval),
      FIXED("prune_ran", NEST_CK_I64, m->pran),
      FIXED("prune_result_counts", NEST_CK_I64, m->pc),
      FIXED("prune_result_values", NEST_CK_F64, m->pv),
      VAR("prune_targets", NEST_CK_I64, &m->pt, 3, V_TARGETS, 0),
      VAR("prune_gamma", NEST_CK_F64, &m->pg, 1, V_TARGETS, 0),
      {K_GROW, NULL, 0, NULL, NULL, 0, 0, 0},
      FIXED("files", NEST_CK_I64, m->files),
      FIXED("data", NEST_CK_I64, m->fp),
      VAR("norm_mean", NEST_CK_F32, &m->norm_mean, 1, V_CHANNELS, 0),
      VAR("norm_std", NEST_CK_F32, &m->norm_std, 1, V_CHANNELS, 0),
      /* the scann phase (scann.h); absent in checkpoints of runs before it existed */
      {K_BEST, "scann_best", 0, NULL, NULL, 0, 0, 1},
      FIXED_OPT("scann_counts", NEST_CK_I64, m->sc),
      FIXED_OPT("scann_values", NEST_CK_F64, m->sv),
  };
  memcpy(e, tab, sizeof tab);
}

/* The element count of an array entry (the writer's rank count is progress[4], checked here:
 * the sizes of the per-rank datasets follow from it). */
static nest_status entry_count(const image *m, const state_entry *e, const char *path,
                               size_t *n) {
  if (e->var == V_RANKS || e->var == V_BUFFERS) {
    if (m->prog[4] < 1 || m->prog[4] > (1 << 24))
      return NEST_ERR(NEST_ERR_FORMAT, "%s: /state/progress: %lld ranks is impossible", path,
                      (long long)m->prog[4]);
  }
  const size_t ranks = (size_t)m->prog[4];
  switch (e->var) {
  case V_RANKS: *n = e->per * ranks; break;
  case V_BUFFERS: *n = e->per * m->net->nbuf * ranks; break;
  case V_TARGETS: *n = e->per * m->npts; break;
  case V_CHANNELS: *n = e->per * m->nch; break;
  default: *n = e->per;
  }
  return NEST_OK;
}

/* ---- writing ---------------------------------------------------------------------------------- */

/* Per-rank values go through nest_comm_sum_same with every other slot 0: exact. */
static int per_rank_buffers(const nest_trainer *t) {
  return !t->cfg.sync_bn && t->nranks > 1 && t->net->nbuf > 0;
}

static void prune_pack(const nest_prune_result *r, int64_t *c, double *v) {
  c[0] = r->iterations, c[1] = r->steps_kept, c[2] = r->steps_restored;
  c[3] = r->weights_before, c[4] = r->weights_after;
  const double x[NPRV] = {r->flops_before, r->flops_after, r->conv_flops_before,
                          r->conv_flops_after, r->target, r->limit, r->val_error,
                          r->test_error, r->seconds};
  memcpy(v, x, sizeof x);
}

static void prune_unpack(nest_prune_result *r, const int64_t *c, const double *v) {
  r->iterations = (int)c[0], r->steps_kept = c[1], r->steps_restored = c[2];
  r->weights_before = c[3], r->weights_after = c[4];
  r->flops_before = v[0], r->flops_after = v[1], r->conv_flops_before = v[2];
  r->conv_flops_after = v[3], r->target = v[4], r->limit = v[5], r->val_error = v[6];
  r->test_error = v[7], r->seconds = v[8];
}

/* The run's state into m (borrowing the nets and the normalisation statistics). */
static nest_status pack(const nest_restart *r, int64_t seq, image *m) {
  const nest_phase_ctx *x = r->src.run;
  const nest_trainer *t = x->t;
  const nest_prune_state *ps = r->src.prune;
  const nest_cursor *c = &x->cur;
  const int64_t cur[8] = {c->phase, c->part, c->iter, c->target, c->tries, c->epoch, c->step,
                          c->live};
  const int64_t prog[5] = {t->epoch, t->step, t->data_key, seq, t->nranks};
  memcpy(m->cur, cur, sizeof cur);
  memcpy(m->prog, prog, sizeof prog);
  m->rs[0] = ps->rkey, m->rs[1] = ps->rpos;
  m->times[0] = nest_comm_wtime() - t->t_start, m->times[1] = x->phase_t0;
  memcpy(m->ep_acc, t->ep_acc, sizeof m->ep_acc);
  const double evals[4] = {r->src.last_val->loss, r->src.last_val->acc, r->src.last_test->loss,
                           r->src.last_test->acc};
  memcpy(m->evals, evals, sizeof evals);
  m->bestval[0] = t->best_val_error;
  for (int k = 0; k < 2; ++k) {
    m->pran[k] = ps->ran[k];
    prune_pack(&ps->res[k], m->pc + k * NPRC, m->pv + k * NPRV);
  }
  m->npts = (size_t)ps->npts;
  NEST_CALL(nest_malloc((void **)&m->pt, sizeof(int64_t) * 3 * (m->npts + 1), "targets"));
  NEST_CALL(nest_malloc((void **)&m->pg, sizeof(double) * (m->npts + 1), "targets"));
  for (size_t i = 0; i < m->npts; ++i) {
    m->pt[3 * i] = ps->pts[i].target, m->pt[3 * i + 1] = ps->pts[i].layer;
    m->pt[3 * i + 2] = ps->pts[i].stopped, m->pg[i] = ps->pts[i].gamma;
  }
  data_fingerprint(t, m->fp);
  m->net = t->net;
  m->snap = ps->snap;
  const nest_scann_state *sc = r->src.scann;
  if (sc) {
    const int64_t cnt[NSCC] = {sc->ran, sc->res.operations, sc->res.best_op, sc->best_weights,
                               sc->res.weights_before, sc->res.weights_after};
    const double val[NSCV] = {sc->best_val, sc->best_test, sc->min_val, sc->res.val_error,
                              sc->res.test_error, sc->res.seconds};
    memcpy(m->sc, cnt, sizeof cnt);
    memcpy(m->sv, val, sizeof val);
    m->best = sc->best;
  }
  m->teacher = t->teacher;
  m->norm_mean = t->train->norm.mean;
  m->norm_std = t->train->norm.std;
  m->nch = (size_t)t->train->norm.nch;
  return NEST_OK;
}

/* The table's objects into w. */
static nest_status put_all(const nest_restart *r, image *m, nest_ckpt *w, const char *path) {
  state_entry tab[NSTATE];
  state_table(m, tab);
  for (int i = 0; i < NSTATE; ++i) {
    const state_entry *e = &tab[i];
    switch (e->kind) {
    case K_NET: {
      NEST_CALL(nest_ckpt_put_net(w, NULL, m->net, 1));
      /* the input record too, so that a checkpoint is as usable as a model file (model.h) */
      const nest_trainer *t = r->src.run->t;
      nest_model_input in;
      nest_trainer_model_input(t, &in);
      NEST_CALL(nest_ckpt_put_input(w, m->net, &in));
      break;
    }
    case K_SNAPSHOT:
      if (m->snap) NEST_CALL(nest_ckpt_put_net(w, e->name, m->snap, 1));
      break;
    case K_BEST:
      if (m->best) NEST_CALL(nest_ckpt_put_net(w, e->name, m->best, 1));
      break;
    case K_TEACHER: /* inference only: no momentum */
      if (m->teacher) NEST_CALL(nest_ckpt_put_net(w, e->name, m->teacher, 0));
      break;
    case K_GROW: NEST_CALL(nest_grow_save(r->src.grow, w)); break;
    default: {
      const void *v = e->fixed ? e->fixed : *e->alloc;
      if (e->optional && !v) break;
      size_t n;
      NEST_CALL(entry_count(m, e, path, &n));
      NEST_CALL(nest_ckpt_put(w, e->name, e->type, v, n));
    }
    }
  }
  return NEST_OK;
}

/* The root attributes: the config, model-file info (docs/model-format.md: nest_report measures
 * compression against base_arch), when. */
static nest_status put_attrs(const nest_config *cfg, nest_ckpt *w) {
  char *text = NULL;
  NEST_CALL(nest_config_text(cfg, &text));
  nest_status st = nest_ckpt_put_attr(w, "config", text);
  free(text);
  NEST_CALL(st);
  NEST_CALL(nest_ckpt_put_attr(w, "stage", "checkpoint"));
  NEST_CALL(nest_ckpt_put_attr(w, "base_arch", cfg->init_from[0] ? "" : cfg->arch));
  char when[64];
  time_t now = time(NULL);
  struct tm tmv;
  localtime_r(&now, &tmv);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S%z", &tmv);
  return nest_ckpt_put_attr(w, "written", when);
}

/* Rank 0: the file itself. m: packed, with the gathered per-rank values. */
static nest_status write_file(nest_restart *r, const char *path, image *m) {
  nest_trainer *t = r->src.run->t;
  m->files[0] = m->files[1] = -1;
  if (t->metrics) {
    if (fflush(t->metrics) != 0)
      return NEST_ERR(NEST_ERR_IO, "%s: write failed: %s", t->metrics_path, strerror(errno));
    m->files[0] = (int64_t)ftell(t->metrics);
  }
  NEST_CALL(nest_grow_events_tell(r->src.grow, &m->files[1]));
  nest_ckpt *w;
  errno = 0;
  NEST_CALL(nest_ckpt_create(path, &w));
  nest_status st = put_all(r, m, w, path);
  if (st == NEST_OK) st = put_attrs(&t->cfg, w);
  if (st == NEST_OK) st = nest_ckpt_commit(&w);
  if (st != NEST_OK && errno && (errno == ENOSPC || errno == EFBIG || errno == EDQUOT || errno == EIO)) {
    char msg[1200];
    snprintf(msg, sizeof msg, "%s (%s); the previous checkpoints are intact", nest_error_message(),
             strerror(errno));
    nest_error_adopt(st, msg);
  }
  nest_ckpt_close(&w);
  return st;
}

nest_status nest_restart_write(nest_restart *r, const char *path) {
  nest_trainer *t = r->src.run->t;
  image m;
  memset(&m, 0, sizeof m);
  /* Gather what differs between ranks: their loss windows and, without sync BN, their
   * running statistics. */
  nest_status st = nest_calloc((void **)&m.sums, 6 * (size_t)t->nranks, sizeof(double), "rank sums");
  if (st == NEST_OK && per_rank_buffers(t))
    st = nest_calloc((void **)&m.bufs, t->net->nbuf * (size_t)t->nranks, sizeof(float), "buffers");
  if (st == NEST_OK) st = pack(r, r->seq, &m);
  NEST_CALL_GOTO(st, nest_comm_agree(t->comm, st), done);
  memcpy(m.sums + 6 * t->rank, t->win, sizeof t->win);
  memcpy(m.sums + 6 * t->rank + 3, r->src.prune->racc, sizeof r->src.prune->racc);
  NEST_CALL_GOTO(st, nest_comm_sum_same_f64(t->comm, m.sums, 6 * (size_t)t->nranks), done);
  if (m.bufs) {
    memcpy(m.bufs + t->net->nbuf * (size_t)t->rank, t->net->buffers, sizeof(float) * t->net->nbuf);
    NEST_CALL_GOTO(st, nest_comm_sum_same_f32(t->comm, m.bufs, t->net->nbuf * (size_t)t->nranks),
                   done);
  }
  if (t->rank == 0) st = write_file(r, path, &m);
  st = nest_comm_agree(t->comm, st);
done:
  image_free(&m); /* not owned: the nets and statistics stay the run's */
  return st;
}

nest_status nest_restart_point(nest_restart *r, int force) {
  nest_trainer *t = r->src.run->t;
  const nest_config *c = &t->cfg;
  /* Time and signals are local: one small allreduce makes them everyone's decision (the
   * signal's number, so that every rank names the same one). */
  int64_t flags[2] = {got_signal, 0};
  if (r->run_dir[0] && t->rank == 0 && c->ck_every_minutes > 0)
    flags[1] = nest_comm_wtime() - r->last_time >= 60.0 * c->ck_every_minutes;
  NEST_CALL(nest_comm_allreduce_max_i64(t->comm, flags, 2));
  if (!r->run_dir[0]) {
    if (flags[0])
      return NEST_ERR(NEST_STOPPED, "stopped by %s; without a run directory nothing was saved",
                      signal_name((int)flags[0]));
    return NEST_OK;
  }
  const int step_due = c->ck_every_steps > 0 && t->step - r->last_step >= c->ck_every_steps;
  if (!(force || step_due || flags[0] || flags[1])) return NEST_OK;
  char path[NEST_PATH_LEN + 64];
  nest_rundir_checkpoint(r->run_dir, r->seq, path, sizeof path);
  NEST_CALL(nest_restart_write(r, path));
  r->seq++;
  r->last_step = t->step;
  r->last_time = nest_comm_wtime();
  nest_status st = t->rank == 0 ? remove_old(r->run_dir, c->ck_keep) : NEST_OK;
  NEST_CALL(nest_comm_agree(t->comm, st));
  if (flags[0])
    return NEST_ERR(NEST_STOPPED, "stopped by %s after writing %s (step %lld); continue with: "
                    "nest_mpi --resume %s", signal_name((int)flags[0]), path,
                    (long long)t->step, r->run_dir);
  return NEST_OK;
}

/* ---- reading ---------------------------------------------------------------------------------- */

/* Read a whole checkpoint into m (everything is read, so every checksum is checked), the
 * growth rows excepted (nest_grow_load in unpack, after the checks). */
static nest_status read_file(const nest_restart *r, const char *path, image *m, nest_ckpt **rp) {
  const nest_trainer *t = r->src.run->t;
  m->owned = 1;
  nest_ckpt *ck;
  NEST_CALL(nest_ckpt_open(path, &ck));
  *rp = ck;
  NEST_CALL(nest_ckpt_len(ck, "prune_gamma", &m->npts));
  NEST_CALL(nest_ckpt_len(ck, "norm_mean", &m->nch));
  m->bestval[0] = NAN; /* none measured, or a checkpoint without it */
  state_entry tab[NSTATE];
  state_table(m, tab);
  for (int i = 0; i < NSTATE; ++i) {
    const state_entry *e = &tab[i];
    if (e->kind == K_NET)
      NEST_CALL(nest_ckpt_get_net(ck, NULL, t->max_local, t->nthreads, 1, &m->net));
    if (e->kind == K_SNAPSHOT && nest_ckpt_has_group(ck, e->name))
      NEST_CALL(nest_ckpt_get_net(ck, e->name, t->max_local, t->nthreads, 1, &m->snap));
    if (e->kind == K_BEST && nest_ckpt_has_group(ck, e->name))
      NEST_CALL(nest_ckpt_get_net(ck, e->name, t->max_local, t->nthreads, 1, &m->best));
    if (e->kind == K_TEACHER && nest_ckpt_has_group(ck, e->name))
      NEST_CALL(nest_ckpt_get_net(ck, e->name, t->max_local, t->nthreads, 0, &m->teacher));
    if (e->kind != K_ARRAY || (e->optional && !nest_ckpt_has(ck, e->name))) continue;
    size_t n;
    NEST_CALL(entry_count(m, e, path, &n));
    void *v = e->fixed;
    if (!v) {
      const size_t esize = e->type == NEST_CK_I64 || e->type == NEST_CK_F64 ? 8
                           : e->type == NEST_CK_F32                         ? 4
                                                                            : 1;
      NEST_CALL(nest_malloc(e->alloc, esize * (n ? n : 1), e->name));
      v = *e->alloc;
    }
    NEST_CALL(nest_ckpt_get(ck, e->name, e->type, v, n));
  }
  NEST_CALL(nest_ckpt_get_attr(ck, "config", &m->config));
  /* the cursor must name a place this run has */
  if (m->cur[0] < -1 || m->cur[0] > r->src.nphases || m->cur[1] < 0 || m->cur[1] > 2 ||
      m->cur[5] < 0 || m->cur[6] < 0 || m->prog[1] < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: /state/cursor names no place in this run", path);
  return NEST_OK;
}

/* Keys that may change between a run and its resumption: threads and logging, where files
 * live (the data fingerprint checks the data itself; model.init_from only seeds a run that
 * starts), the checkpoint schedule. */
#define RESUME_FREE "run.threads,run.log_every,run.log_seconds,run.hash_every,run.check_masks,run.name,run.out_dir," \
                    "run.run_dir,data.dir,data.train,data.train_labels,data.test,data.test_labels,"  \
                    "checkpoint.*"

/* Is the checkpoint this run's? Config and data must be the same. */
static nest_status check_compatible(const nest_trainer *t, const char *path, const image *m) {
  nest_config saved;
  nest_config_defaults(&saved);
  char name[NEST_PATH_LEN + 128];
  snprintf(name, sizeof name, "%s (its config)", path);
  NEST_CALL(nest_config_load_text(&saved, m->config, name));
  char diff[1024];
  const int nd = nest_config_diff(&t->cfg, &saved, RESUME_FREE, diff, sizeof diff);
  if (nd > 0)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: written with a different config; %d key%s differ: %s "
                    "(nest_mpi --resume RUN_DIR uses the run's own config)",
                    path, nd, nd == 1 ? "" : "s", diff);
  int64_t fp[NFP];
  data_fingerprint(t, fp);
  static const char *const what[NFP] = {"samples in data.train", "training samples",
                                        "validation samples", "test samples", "classes",
                                        "features per sample",
                                        "hash of the training labels (and shard files)",
                                        "hash of the test labels (and shard files)"};
  for (int k = 0; k < NFP; ++k)
    if (fp[k] != m->fp[k])
      return NEST_ERR(NEST_ERR_CONFIG, "%s: written for other data: %s %lld, now %lld (%s)", path,
                      what[k], (long long)m->fp[k], (long long)fp[k], t->train->path);
  const nest_norm *nm = &t->train->norm;
  if ((size_t)nm->nch != m->nch || memcmp(nm->mean, m->norm_mean, sizeof(float) * m->nch) != 0 ||
      memcmp(nm->std, m->norm_std, sizeof(float) * m->nch) != 0)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: written for other data: the normalisation statistics "
                    "of %s differ (other feature values)", path, t->train->path);
  const nest_shape in = m->net->in_shape, d = t->train->shape;
  if (in.c != d.c || in.h != d.h || in.w != d.w || m->net->nclasses != t->train->nclasses)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: the network takes %dx%dx%d inputs and %d classes, the "
                    "data has %dx%dx%d and %d", path, in.c, in.h, in.w, m->net->nclasses, d.c,
                    d.h, d.w, t->train->nclasses);
  return NEST_OK;
}

/* The per-rank sums and buffers of a checkpoint into this rank's (another rank count: the
 * sums go to rank 0, since only their total matters, and the buffers are the saved ranks'
 * mean, what the epoch's end would have computed). */
static void unpack_ranks(nest_trainer *t, nest_prune_state *ps, const image *m) {
  const int saved = (int)m->prog[4];
  if (saved == t->nranks) {
    memcpy(t->win, m->sums + 6 * t->rank, sizeof t->win);
    memcpy(ps->racc, m->sums + 6 * t->rank + 3, sizeof ps->racc);
  } else {
    memset(t->win, 0, sizeof t->win);
    memset(ps->racc, 0, sizeof ps->racc);
    if (t->rank == 0)
      for (int q = 0; q < saved; ++q)
        for (int k = 0; k < 3; ++k) t->win[k] += m->sums[6 * q + k], ps->racc[k] += m->sums[6 * q + 3 + k];
  }
  if (!m->bufs) return;
  const size_t nb = t->net->nbuf;
  if (saved == t->nranks) {
    memcpy(t->net->buffers, m->bufs + nb * (size_t)t->rank, sizeof(float) * nb);
  } else {
    for (size_t i = 0; i < nb; ++i) {
      double s = 0;
      for (int q = 0; q < saved; ++q) s += m->bufs[nb * (size_t)q + i];
      t->net->buffers[i] = (float)(s / saved);
    }
  }
}

/* Put a checked checkpoint into the run. */
static nest_status unpack(nest_restart *r, image *m, nest_ckpt *ck, int64_t files[2]) {
  nest_phase_ctx *x = r->src.run;
  nest_trainer *t = x->t;
  nest_prune_state *ps = r->src.prune;
  files[0] = m->files[0], files[1] = m->files[1];
  r->seq = m->prog[3] + 1;
  r->last_step = m->prog[1];
  r->last_time = nest_comm_wtime();
  t->t_start = nest_comm_wtime() - m->times[0];
  nest_net_destroy(&t->net);
  t->net = m->net, m->net = NULL;
  nest_net_destroy(&ps->snap);
  ps->snap = m->snap, m->snap = NULL;
  nest_scann_state *sc = r->src.scann;
  if (sc) {
    nest_net_destroy(&sc->best);
    sc->best = m->best, m->best = NULL;
    sc->ran = (int)m->sc[0], sc->res.operations = (int)m->sc[1], sc->res.best_op = (int)m->sc[2];
    sc->best_weights = m->sc[3], sc->res.weights_before = m->sc[4];
    sc->res.weights_after = m->sc[5];
    sc->best_val = m->sv[0], sc->best_test = m->sv[1], sc->min_val = m->sv[2];
    sc->res.val_error = m->sv[3], sc->res.test_error = m->sv[4], sc->res.seconds = m->sv[5];
  }
  nest_net_destroy(&t->teacher);
  t->teacher = m->teacher, m->teacher = NULL;
  t->best_val_error = m->bestval[0];
  x->cur = (nest_cursor){(int32_t)m->cur[0], (int32_t)m->cur[1], (int32_t)m->cur[2],
                         (int32_t)m->cur[3], (int32_t)m->cur[4], m->cur[5], m->cur[6],
                         (int32_t)m->cur[7]};
  t->epoch = m->prog[0], t->step = m->prog[1], t->data_key = m->prog[2];
  ps->rkey = m->rs[0], ps->rpos = m->rs[1];
  x->phase_t0 = m->times[1];
  memcpy(t->ep_acc, m->ep_acc, sizeof t->ep_acc);
  unpack_ranks(t, ps, m);
  *r->src.last_val = (nest_eval){m->evals[0], m->evals[1], 0, NAN};
  *r->src.last_test = (nest_eval){m->evals[2], m->evals[3], 0, NAN};
  for (int k = 0; k < 2; ++k) {
    ps->ran[k] = (int)m->pran[k];
    prune_unpack(&ps->res[k], m->pc + k * NPRC, m->pv + k * NPRV);
  }
  free(ps->pts);
  ps->pts = NULL;
  ps->npts = (int)m->npts;
  if (m->npts) {
    NEST_CALL(nest_malloc((void **)&ps->pts, sizeof *ps->pts * m->npts, "pruning targets"));
    for (size_t i = 0; i < m->npts; ++i)
      ps->pts[i] = (nest_prune_target){(int32_t)m->pt[3 * i], (int32_t)m->pt[3 * i + 1], m->pg[i],
                                       (int32_t)m->pt[3 * i + 2]};
  }
  return nest_grow_load(r->src.grow, ck);
}

/* ---- resuming --------------------------------------------------------------------------------- */

/* Try checkpoint `path` on every rank. *verdict: 0 = loaded into the run; 1 = damaged (every
 * failing rank found its contents malformed: set it aside, try the previous one); 2 = an error
 * to return (an I/O error on some rank, a checkpoint of another run, ...). */
static nest_status try_one(nest_restart *r, const char *path, int64_t files[2], int *verdict) {
  nest_trainer *t = r->src.run->t;
  image m;
  memset(&m, 0, sizeof m);
  nest_ckpt *ck = NULL;
  nest_status rs = read_file(r, path, &m, &ck);
  /* [0]: a rank failed otherwise than on malformed contents; [1]: a rank found them malformed */
  int64_t kind[2] = {rs != NEST_OK && rs != NEST_ERR_FORMAT, rs == NEST_ERR_FORMAT};
  nest_status st = nest_comm_allreduce_max_i64(t->comm, kind, 2);
  if (st != NEST_OK) kind[0] = 1; /* no verdict without agreement */
  else /* the message of a rank that could not read it, before any damage's */
    st = nest_comm_agree(t->comm, kind[0] && rs == NEST_ERR_FORMAT ? NEST_OK : rs);
  if (st == NEST_OK) {
    st = check_compatible(t, path, &m);
    if (st == NEST_OK) st = unpack(r, &m, ck, files);
    st = nest_comm_agree(t->comm, st);
    *verdict = st == NEST_OK ? 0 : 2;
  } else if (kind[0]) {
    *verdict = 2;
    if (st == NEST_ERR_IO) {
      char msg[1400];
      snprintf(msg, sizeof msg, "%s; not renamed (an I/O error is not damage: only a checkpoint "
               "whose contents are malformed is set aside): make it readable and resume again",
               nest_error_message());
      nest_error_adopt(st, msg);
    }
  } else {
    *verdict = st == NEST_ERR_FORMAT ? 1 : 2;
  }
  nest_ckpt_close(&ck);
  image_free(&m);
  return st;
}

/* Rank 0: remove the *.h5.tmp files a kill during a write left (incomplete by construction). */
static void remove_tmp(const char *run_dir) {
  char dir[NEST_PATH_LEN + 32];
  snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
  DIR *d = opendir(dir);
  for (struct dirent *e; d && (e = readdir(d));) {
    const size_t len = strlen(e->d_name);
    if (strncmp(e->d_name, "ckpt-", 5) == 0 && len > 7 && strcmp(e->d_name + len - 7, ".h5.tmp") == 0) {
      char p[NEST_PATH_LEN + 300];
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      remove(p);
    }
  }
  if (d) closedir(d);
}

/* The checkpoint list of rank 0, on every rank. */
static nest_status list_all(nest_restart *r, int64_t **seqs, int *n) {
  nest_trainer *t = r->src.run->t;
  *seqs = NULL;
  *n = 0;
  nest_status st = t->rank == 0 ? nest_rundir_checkpoints(r->run_dir, seqs, n) : NEST_OK;
  NEST_CALL(nest_comm_agree(t->comm, st));
  int64_t nn = *n;
  NEST_CALL(nest_comm_bcast(t->comm, &nn, sizeof nn, 0));
  if (t->rank != 0) {
    *n = (int)nn;
    st = nest_malloc((void **)seqs, sizeof **seqs * (size_t)(*n ? *n : 1), "checkpoint list");
  }
  NEST_CALL(nest_comm_agree(t->comm, st));
  return nest_comm_bcast(t->comm, *seqs, sizeof **seqs * (size_t)*n, 0);
}

nest_status nest_restart_resume(nest_restart *r) {
  nest_phase_ctx *x = r->src.run;
  nest_trainer *t = x->t;
  int64_t *seqs = NULL;
  int n = 0;
  nest_status st = list_all(r, &seqs, &n);
  char path[NEST_PATH_LEN + 64];
  int64_t files[2] = {-1, -1};
  int used = -1;
  for (int i = 0; i < n && st == NEST_OK; ++i) {
    nest_rundir_checkpoint(r->run_dir, seqs[i], path, sizeof path);
    int verdict = 2;
    st = try_one(r, path, files, &verdict);
    if (verdict == 0) used = i;
    if (verdict != 1) break;
    /* verified damaged: say so, keep it aside (never delete), try the previous one */
    if (t->rank == 0) {
      char bad[NEST_PATH_LEN + 160];
      snprintf(bad, sizeof bad, "%s.bad", path);
      const int moved = rename(path, bad) == 0;
      fprintf(stderr, "nest_mpi: warning: %s; %s; trying the previous checkpoint\n",
              nest_error_message(), moved ? "renamed to *.bad" : "left in place");
      fflush(stderr);
    }
    nest_error_clear();
    st = nest_comm_barrier(t->comm);
  }
  free(seqs);
  NEST_CALL(st);
  if (used < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s/checkpoints: no valid checkpoint to resume from (%d "
                    "tried)", r->run_dir, n);
  /* metrics.csv and events.csv continue where the checkpoint was taken */
  st = NEST_OK;
  if (t->rank == 0) {
    remove_tmp(r->run_dir);
    char p[NEST_PATH_LEN + 32];
    snprintf(p, sizeof p, "%s/metrics.csv", r->run_dir);
    snprintf(t->metrics_path, sizeof t->metrics_path, "%s", p);
    if (files[0] >= 0) st = nest_rundir_truncate(p, files[0], &t->metrics);
  }
  NEST_CALL(nest_comm_agree(t->comm, st));
  NEST_CALL(nest_grow_events_reopen(t, r->src.grow, r->run_dir, files[1]));
  x->resuming = 1;
  if (t->rank == 0 && !t->quiet) {
    printf("nest: resuming %s from %s: phase %d, step %lld, epoch %lld\n", r->run_dir, path,
           x->cur.phase, (long long)t->step, (long long)t->epoch);
    fflush(stdout);
  }
  return NEST_OK;
}
