/* restart.c — checkpoint/restart of a whole run: when to write, what goes in, how a run
 * resumes (restart.h; layout in docs/checkpoint-format.md). HDF5 stays in checkpoint.c: this
 * file only names datasets. */
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
#include <unistd.h>

#include "nest/checkpoint.h"
#include "nest/grow.h"
#include "nest/rng.h"

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
}

int nest_restart_signal(void) { return got_signal; }

static const char *signal_name(int s) {
  return s == SIGUSR1 ? "SIGUSR1" : s == SIGTERM ? "SIGTERM" : s == SIGINT ? "SIGINT" : "a signal";
}

/* ---- the writer's state ------------------------------------------------------------------- */

struct nest_restart {
  char dir[NEST_PATH_LEN + 32]; /* RUN_DIR/checkpoints */
  int64_t seq;                  /* sequence number of the next checkpoint */
  int64_t last_step;            /* t->step at the last checkpoint */
  double last_time;             /* wall clock of the last checkpoint */
};

nest_status nest_restart_create(nest_trainer *t) {
  t->rst = NULL;
  if (!t->run_dir[0]) return NEST_OK;
  struct nest_restart *r;
  NEST_CALL(nest_calloc((void **)&r, 1, sizeof *r, "checkpoint state"));
  snprintf(r->dir, sizeof r->dir, "%s/checkpoints", t->run_dir);
  r->last_time = nest_comm_wtime();
  r->last_step = t->step;
  nest_status st = NEST_OK;
  if (t->rank == 0 && mkdir(r->dir, 0775) != 0 && errno != EEXIST)
    st = NEST_ERR(NEST_ERR_IO, "%s: cannot create directory: %s", r->dir, strerror(errno));
  st = nest_comm_agree(t->comm, st);
  if (st != NEST_OK) {
    free(r);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  t->rst = r;
  return NEST_OK;
}

void nest_restart_destroy(struct nest_restart **r) {
  if (!r || !*r) return;
  free(*r);
  *r = NULL;
}

/* ---- the checkpoint directory ------------------------------------------------------------ */

/* "ckpt-00000012.h5" -> 12; -1 for any other name. */
static int64_t name_seq(const char *name) {
  if (strncmp(name, "ckpt-", 5) != 0) return -1;
  const char *p = name + 5;
  int64_t v = 0;
  int digits = 0;
  for (; *p >= '0' && *p <= '9' && digits < 18; ++p, ++digits) v = v * 10 + (*p - '0');
  return digits >= 1 && strcmp(p, ".h5") == 0 ? v : -1;
}

static int cmp_desc(const void *a, const void *b) {
  const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* The sequence numbers in dir, newest first. */
static nest_status list_seqs(const char *dir, int64_t **out, int *n) {
  *out = NULL;
  *n = 0;
  DIR *d = opendir(dir);
  if (!d) {
    if (errno == ENOENT) return NEST_OK;
    return NEST_ERR(NEST_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
  }
  int cap = 0;
  int64_t *v = NULL;
  nest_status st = NEST_OK;
  for (struct dirent *e; (e = readdir(d));) {
    const int64_t s = name_seq(e->d_name);
    if (s < 0) continue;
    if (*n == cap) {
      cap = cap ? 2 * cap : 16;
      int64_t *nv = realloc(v, sizeof *v * (size_t)cap);
      if (!nv) {
        st = NEST_ERR(NEST_ERR_NOMEM, "out of memory listing %s", dir);
        break;
      }
      v = nv;
    }
    v[(*n)++] = s;
  }
  closedir(d);
  if (st != NEST_OK) {
    free(v);
    *n = 0;
    return st;
  }
  if (*n) qsort(v, (size_t)*n, sizeof *v, cmp_desc);
  *out = v;
  return NEST_OK;
}

static void ckpt_path(const char *dir, int64_t seq, char *out, size_t cap) {
  snprintf(out, cap, "%s/ckpt-%08lld.h5", dir, (long long)seq);
}

nest_status nest_restart_newest(const char *run_dir, char *path, size_t cap, int *any) {
  char dir[NEST_PATH_LEN + 32];
  snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
  int64_t *seqs;
  int n;
  NEST_CALL(list_seqs(dir, &seqs, &n));
  *any = n > 0;
  path[0] = '\0';
  if (n > 0) ckpt_path(dir, seqs[0], path, cap);
  free(seqs);
  return NEST_OK;
}

/* Remove all but the newest `keep` checkpoints (rank 0). */
static nest_status remove_old(const char *dir, int keep) {
  int64_t *seqs;
  int n;
  NEST_CALL(list_seqs(dir, &seqs, &n));
  nest_status st = NEST_OK;
  for (int i = keep; i < n && st == NEST_OK; ++i) {
    char p[NEST_PATH_LEN + 64];
    ckpt_path(dir, seqs[i], p, sizeof p);
    if (remove(p) != 0 && errno != ENOENT)
      st = NEST_ERR(NEST_ERR_IO, "%s: cannot remove an old checkpoint: %s", p, strerror(errno));
  }
  free(seqs);
  return st;
}

nest_status nest_restart_truncate(const char *path, int64_t bytes, FILE **f) {
  if (*f) fclose(*f);
  *f = NULL;
  struct stat sb;
  if (stat(path, &sb) != 0) {
    if (errno == ENOENT && bytes == 0) { /* the checkpoint came before the file's header */
      *f = fopen(path, "w");
      if (!*f) return NEST_ERR(NEST_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
      return NEST_OK;
    }
    return NEST_ERR(NEST_ERR_IO, "%s: cannot resume it: %s", path, strerror(errno));
  }
  if ((int64_t)sb.st_size < bytes)
    return NEST_ERR(NEST_ERR_IO, "%s: %lld bytes, but the checkpoint recorded %lld: the file "
                    "was cut or replaced since; restore it or start a new run", path,
                    (long long)sb.st_size, (long long)bytes);
  if (truncate(path, (off_t)bytes) != 0)
    return NEST_ERR(NEST_ERR_IO, "%s: cannot cut back to %lld bytes: %s", path, (long long)bytes,
                    strerror(errno));
  *f = fopen(path, "a");
  if (!*f) return NEST_ERR(NEST_ERR_IO, "%s: cannot append: %s", path, strerror(errno));
  return NEST_OK;
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
  fp[7] = t->test ? (int64_t)nest_hash_fnv1a(t->test->labels, sizeof(int32_t) * (size_t)t->test->n,
                                   h0 ^ t->test->source_hash)
                  : 0;
}

/* ---- writing ---------------------------------------------------------------------------------- */

/* Per-rank values go through nest_comm_sum_same with every other slot 0: exact. */
static int per_rank_buffers(const nest_trainer *t) {
  return !t->cfg.sync_bn && t->nranks > 1 && t->net->nbuf > 0;
}

#define NPRC 5 /* prune result counts */
#define NPRV 9 /* prune result values */

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

/* Rank 0: the file itself. sums / bufs: the gathered per-rank values. */
static nest_status write_file(nest_trainer *t, const char *path, const double *sums,
                              const float *bufs, int64_t seq) {
  const nest_cursor *c = &t->cur;
  int64_t files[2] = {-1, -1};
  if (t->metrics) {
    if (fflush(t->metrics) != 0)
      return NEST_ERR(NEST_ERR_IO, "%s/metrics.csv: write failed: %s", t->run_dir, strerror(errno));
    files[0] = (int64_t)ftell(t->metrics);
  }
  NEST_CALL(nest_grow_events_tell(t->grow, &files[1]));
  nest_ckpt *w;
  errno = 0;
  NEST_CALL(nest_ckpt_create(path, &w));
  nest_status st = NEST_OK;
  char *cfg = NULL;
  const int64_t cur[8] = {c->phase, c->part,  c->iter, c->target,
                          c->tries, c->epoch, c->step, c->live};
  const int64_t prog[5] = {t->epoch, t->step, t->data_key, seq, t->nranks};
  const int64_t rs[2] = {t->rkey, t->rpos};
  const double times[2] = {nest_comm_wtime() - t->t_start, t->phase_t0};
  const double evals[4] = {t->last_val.loss, t->last_val.acc, t->last_test.loss,
                           t->last_test.acc};
  int64_t pran[2] = {t->pran[0], t->pran[1]}, pc[2 * NPRC], fp[NFP];
  double pv[2 * NPRV];
  for (int k = 0; k < 2; ++k) prune_pack(&t->pres[k], pc + k * NPRC, pv + k * NPRV);
  data_fingerprint(t, fp);
  int64_t *pt = NULL;
  double *pg = NULL;
  const size_t np = (size_t)t->npts;
  NEST_CALL_GOTO(st, nest_malloc((void **)&pt, sizeof(int64_t) * 3 * (np ? np : 1), "targets"), done);
  NEST_CALL_GOTO(st, nest_malloc((void **)&pg, sizeof(double) * (np ? np : 1), "targets"), done);
  for (size_t i = 0; i < np; ++i) {
    pt[3 * i] = t->pts[i].target, pt[3 * i + 1] = t->pts[i].layer;
    pt[3 * i + 2] = t->pts[i].stopped, pg[i] = t->pts[i].gamma;
  }
  NEST_CALL_GOTO(st, nest_ckpt_put_net(w, NULL, t->net, 1), done);
  if (t->snap) NEST_CALL_GOTO(st, nest_ckpt_put_net(w, "snapshot", t->snap, 1), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "cursor", NEST_CK_I64, cur, 8), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "progress", NEST_CK_I64, prog, 5), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "retrain_stream", NEST_CK_I64, rs, 2), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "times", NEST_CK_F64, times, 2), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "epoch_sums", NEST_CK_F64, t->ep_acc, 3), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "rank_sums", NEST_CK_F64, sums, 6 * (size_t)t->nranks), done);
  if (bufs)
    NEST_CALL_GOTO(st, nest_ckpt_put(w, "rank_buffers", NEST_CK_F32, bufs,
                                     t->net->nbuf * (size_t)t->nranks), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "evals", NEST_CK_F64, evals, 4), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "prune_ran", NEST_CK_I64, pran, 2), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "prune_result_counts", NEST_CK_I64, pc, 2 * NPRC), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "prune_result_values", NEST_CK_F64, pv, 2 * NPRV), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "prune_targets", NEST_CK_I64, pt, 3 * np), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "prune_gamma", NEST_CK_F64, pg, np), done);
  NEST_CALL_GOTO(st, nest_grow_save(t->grow, w), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "files", NEST_CK_I64, files, 2), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "data", NEST_CK_I64, fp, NFP), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "norm_mean", NEST_CK_F32, t->train->norm.mean,
                                   (size_t)t->train->norm.nch), done);
  NEST_CALL_GOTO(st, nest_ckpt_put(w, "norm_std", NEST_CK_F32, t->train->norm.std,
                                   (size_t)t->train->norm.nch), done);
  NEST_CALL_GOTO(st, nest_config_text(&t->cfg, &cfg), done);
  NEST_CALL_GOTO(st, nest_ckpt_put_attr(w, "config", cfg), done);
  /* model-file info (docs/model-format.md): nest_report measures compression against it */
  NEST_CALL_GOTO(st, nest_ckpt_put_attr(w, "stage", "checkpoint"), done);
  NEST_CALL_GOTO(st, nest_ckpt_put_attr(w, "base_arch", t->cfg.init_from[0] ? "" : t->cfg.arch),
                 done);
  {
    char when[64];
    time_t now = time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S%z", &tmv);
    NEST_CALL_GOTO(st, nest_ckpt_put_attr(w, "written", when), done);
  }
  st = nest_ckpt_commit(&w);
done:
  if (st != NEST_OK && errno && (errno == ENOSPC || errno == EFBIG || errno == EDQUOT || errno == EIO)) {
    char msg[1200];
    snprintf(msg, sizeof msg, "%s (%s); the previous checkpoints are intact", nest_error_message(),
             strerror(errno));
    nest_error_adopt(st, msg);
  }
  nest_ckpt_close(&w);
  free(cfg);
  free(pt);
  free(pg);
  return st;
}

nest_status nest_restart_write(nest_trainer *t, const char *path) {
  /* Gather what differs between ranks: their loss windows and, without sync BN, their
   * running statistics. */
  double *sums = NULL;
  float *bufs = NULL;
  nest_status st = nest_calloc((void **)&sums, 6 * (size_t)t->nranks, sizeof(double), "rank sums");
  if (st == NEST_OK && per_rank_buffers(t))
    st = nest_calloc((void **)&bufs, t->net->nbuf * (size_t)t->nranks, sizeof(float), "buffers");
  NEST_CALL_GOTO(st, nest_comm_agree(t->comm, st), done);
  memcpy(sums + 6 * t->rank, t->win, sizeof t->win);
  memcpy(sums + 6 * t->rank + 3, t->racc, sizeof t->racc);
  NEST_CALL_GOTO(st, nest_comm_sum_same_f64(t->comm, sums, 6 * (size_t)t->nranks), done);
  if (bufs) {
    memcpy(bufs + t->net->nbuf * (size_t)t->rank, t->net->buffers, sizeof(float) * t->net->nbuf);
    NEST_CALL_GOTO(st, nest_comm_sum_same_f32(t->comm, bufs, t->net->nbuf * (size_t)t->nranks), done);
  }
  if (t->rank == 0) st = write_file(t, path, sums, bufs, t->rst ? t->rst->seq : 0);
  st = nest_comm_agree(t->comm, st);
done:
  free(sums);
  free(bufs);
  return st;
}

nest_status nest_restart_point(nest_trainer *t, int force) {
  const nest_config *c = &t->cfg;
  struct nest_restart *r = t->rst;
  /* Time and signals are local: one small allreduce makes them everyone's decision (the
   * signal's number, so that every rank names the same one). */
  int64_t flags[2] = {got_signal, 0};
  if (r && t->rank == 0 && c->ck_every_minutes > 0)
    flags[1] = nest_comm_wtime() - r->last_time >= 60.0 * c->ck_every_minutes;
  NEST_CALL(nest_comm_allreduce_max_i64(t->comm, flags, 2));
  const int step_due = r && c->ck_every_steps > 0 && t->step - r->last_step >= c->ck_every_steps;
  if (!r) {
    if (flags[0])
      return NEST_ERR(NEST_STOPPED, "stopped by %s; without a run directory nothing was saved",
                      signal_name((int)flags[0]));
    return NEST_OK;
  }
  if (!(force || step_due || flags[0] || flags[1])) return NEST_OK;
  char path[NEST_PATH_LEN + 64];
  ckpt_path(r->dir, r->seq, path, sizeof path);
  NEST_CALL(nest_restart_write(t, path));
  r->seq++;
  r->last_step = t->step;
  r->last_time = nest_comm_wtime();
  nest_status st = t->rank == 0 ? remove_old(r->dir, c->ck_keep) : NEST_OK;
  NEST_CALL(nest_comm_agree(t->comm, st));
  if (flags[0])
    return NEST_ERR(NEST_STOPPED, "stopped by %s after writing %s (step %lld); continue with: "
                    "nest_mpi --resume %s", signal_name((int)flags[0]), path,
                    (long long)t->step, t->run_dir);
  return NEST_OK;
}

/* ---- reading ---------------------------------------------------------------------------------- */

/* Everything read from a checkpoint before any of it is put into the trainer. */
typedef struct {
  nest_net *net, *snap;
  int64_t cur[8], prog[5], rs[2], pran[2], pc[2 * NPRC], files[2], fp[NFP];
  double times[2], ep_acc[3], evals[4], pv[2 * NPRV];
  double *sums;      /* [6 * saved ranks] */
  float *bufs;       /* [nbuf * saved ranks] or NULL */
  int64_t *pt;       /* [3 * npts] */
  double *pg;        /* [npts] */
  size_t npts;
  float *norm_mean, *norm_std;
  size_t nch;
  char *config;
} loaded;

static void loaded_free(loaded *L) {
  nest_net_destroy(&L->net);
  nest_net_destroy(&L->snap);
  free(L->sums);
  free(L->bufs);
  free(L->pt);
  free(L->pg);
  free(L->norm_mean);
  free(L->norm_std);
  free(L->config);
  memset(L, 0, sizeof *L);
}

/* Read a whole checkpoint (everything is read, so every checksum is checked). */
static nest_status read_file(nest_trainer *t, const char *path, loaded *L, nest_ckpt **rp) {
  nest_ckpt *r;
  NEST_CALL(nest_ckpt_open(path, &r));
  *rp = r;
  NEST_CALL(nest_ckpt_get_net(r, NULL, t->max_local, t->nthreads, 1, &L->net));
  if (nest_ckpt_has_group(r, "snapshot"))
    NEST_CALL(nest_ckpt_get_net(r, "snapshot", t->max_local, t->nthreads, 1, &L->snap));
  NEST_CALL(nest_ckpt_get(r, "cursor", NEST_CK_I64, L->cur, 8));
  NEST_CALL(nest_ckpt_get(r, "progress", NEST_CK_I64, L->prog, 5));
  if (L->prog[4] < 1 || L->prog[4] > (1 << 24))
    return NEST_ERR(NEST_ERR_FORMAT, "%s: /state/progress: %lld ranks is impossible", path,
                    (long long)L->prog[4]);
  const size_t saved = (size_t)L->prog[4];
  NEST_CALL(nest_ckpt_get(r, "retrain_stream", NEST_CK_I64, L->rs, 2));
  NEST_CALL(nest_ckpt_get(r, "times", NEST_CK_F64, L->times, 2));
  NEST_CALL(nest_ckpt_get(r, "epoch_sums", NEST_CK_F64, L->ep_acc, 3));
  NEST_CALL(nest_malloc((void **)&L->sums, sizeof(double) * 6 * saved, "rank sums"));
  NEST_CALL(nest_ckpt_get(r, "rank_sums", NEST_CK_F64, L->sums, 6 * saved));
  if (nest_ckpt_has(r, "rank_buffers")) {
    const size_t n = L->net->nbuf * saved;
    NEST_CALL(nest_malloc((void **)&L->bufs, sizeof(float) * (n ? n : 1), "buffers"));
    NEST_CALL(nest_ckpt_get(r, "rank_buffers", NEST_CK_F32, L->bufs, n));
  }
  NEST_CALL(nest_ckpt_get(r, "evals", NEST_CK_F64, L->evals, 4));
  NEST_CALL(nest_ckpt_get(r, "prune_ran", NEST_CK_I64, L->pran, 2));
  NEST_CALL(nest_ckpt_get(r, "prune_result_counts", NEST_CK_I64, L->pc, 2 * NPRC));
  NEST_CALL(nest_ckpt_get(r, "prune_result_values", NEST_CK_F64, L->pv, 2 * NPRV));
  NEST_CALL(nest_ckpt_len(r, "prune_gamma", &L->npts));
  NEST_CALL(nest_malloc((void **)&L->pt, sizeof(int64_t) * 3 * (L->npts + 1), "targets"));
  NEST_CALL(nest_malloc((void **)&L->pg, sizeof(double) * (L->npts + 1), "targets"));
  NEST_CALL(nest_ckpt_get(r, "prune_targets", NEST_CK_I64, L->pt, 3 * L->npts));
  NEST_CALL(nest_ckpt_get(r, "prune_gamma", NEST_CK_F64, L->pg, L->npts));
  NEST_CALL(nest_ckpt_get(r, "files", NEST_CK_I64, L->files, 2));
  NEST_CALL(nest_ckpt_get(r, "data", NEST_CK_I64, L->fp, NFP));
  NEST_CALL(nest_ckpt_len(r, "norm_mean", &L->nch));
  NEST_CALL(nest_malloc((void **)&L->norm_mean, sizeof(float) * (L->nch + 1), "norm"));
  NEST_CALL(nest_malloc((void **)&L->norm_std, sizeof(float) * (L->nch + 1), "norm"));
  NEST_CALL(nest_ckpt_get(r, "norm_mean", NEST_CK_F32, L->norm_mean, L->nch));
  NEST_CALL(nest_ckpt_get(r, "norm_std", NEST_CK_F32, L->norm_std, L->nch));
  NEST_CALL(nest_ckpt_get_attr(r, "config", &L->config));
  /* the cursor must name a place this run has */
  if (L->cur[0] < -1 || L->cur[0] > t->nphases || L->cur[1] < 0 || L->cur[1] > 2 ||
      L->cur[5] < 0 || L->cur[6] < 0 || L->prog[1] < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: /state/cursor names no place in this run", path);
  return NEST_OK;
}

/* Keys that may change between a run and its resumption: threads and logging, where files
 * live (the data fingerprint checks the data itself), the checkpoint schedule. */
#define RESUME_FREE "run.threads,run.log_every,run.hash_every,run.check_masks,run.name,run.out_dir," \
                    "run.run_dir,data.dir,data.train,data.train_labels,data.test,data.test_labels,"  \
                    "checkpoint.*"

/* Is the checkpoint this run's? Config and data must be the same. */
static nest_status check_compatible(nest_trainer *t, const char *path, const loaded *L) {
  nest_config saved;
  nest_config_defaults(&saved);
  char name[NEST_PATH_LEN + 128];
  snprintf(name, sizeof name, "%s (its config)", path);
  NEST_CALL(nest_config_load_text(&saved, L->config, name));
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
    if (fp[k] != L->fp[k])
      return NEST_ERR(NEST_ERR_CONFIG, "%s: written for other data: %s %lld, now %lld (%s)", path,
                      what[k], (long long)L->fp[k], (long long)fp[k], t->train->path);
  const nest_norm *nm = &t->train->norm;
  if ((size_t)nm->nch != L->nch ||
      memcmp(nm->mean, L->norm_mean, sizeof(float) * L->nch) != 0 ||
      memcmp(nm->std, L->norm_std, sizeof(float) * L->nch) != 0)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: written for other data: the normalisation statistics "
                    "of %s differ (other feature values)", path, t->train->path);
  const nest_shape in = L->net->in_shape, d = t->train->shape;
  if (in.c != d.c || in.h != d.h || in.w != d.w || L->net->nclasses != t->train->nclasses)
    return NEST_ERR(NEST_ERR_CONFIG, "%s: the network takes %dx%dx%d inputs and %d classes, the "
                    "data has %dx%dx%d and %d", path, in.c, in.h, in.w, L->net->nclasses, d.c,
                    d.h, d.w, t->train->nclasses);
  return NEST_OK;
}

/* Put a checked checkpoint into the trainer. */
static nest_status apply(nest_trainer *t, loaded *L, nest_ckpt *r, int64_t files[2]) {
  files[0] = L->files[0], files[1] = L->files[1];
  if (t->rst) {
    t->rst->seq = L->prog[3] + 1;
    t->rst->last_step = L->prog[1];
    t->rst->last_time = nest_comm_wtime();
  }
  t->t_start = nest_comm_wtime() - L->times[0];
  nest_net_destroy(&t->net);
  t->net = L->net, L->net = NULL;
  nest_net_destroy(&t->snap);
  t->snap = L->snap, L->snap = NULL;
  t->cur = (nest_cursor){(int32_t)L->cur[0], (int32_t)L->cur[1], (int32_t)L->cur[2],
                         (int32_t)L->cur[3], (int32_t)L->cur[4], L->cur[5], L->cur[6],
                         (int32_t)L->cur[7]};
  t->epoch = L->prog[0], t->step = L->prog[1], t->data_key = L->prog[2];
  t->rkey = L->rs[0], t->rpos = L->rs[1];
  t->phase_t0 = L->times[1];
  memcpy(t->ep_acc, L->ep_acc, sizeof t->ep_acc);
  const int saved = (int)L->prog[4];
  if (saved == t->nranks) {
    memcpy(t->win, L->sums + 6 * t->rank, sizeof t->win);
    memcpy(t->racc, L->sums + 6 * t->rank + 3, sizeof t->racc);
  } else { /* another rank count: the sums go to rank 0 (only their total matters) */
    memset(t->win, 0, sizeof t->win);
    memset(t->racc, 0, sizeof t->racc);
    if (t->rank == 0)
      for (int q = 0; q < saved; ++q)
        for (int k = 0; k < 3; ++k) t->win[k] += L->sums[6 * q + k], t->racc[k] += L->sums[6 * q + 3 + k];
  }
  if (L->bufs) {
    const size_t nb = t->net->nbuf;
    if (saved == t->nranks) {
      memcpy(t->net->buffers, L->bufs + nb * (size_t)t->rank, sizeof(float) * nb);
    } else { /* the mean over the saved ranks (what the epoch's end would have computed) */
      for (size_t i = 0; i < nb; ++i) {
        double s = 0;
        for (int q = 0; q < saved; ++q) s += L->bufs[nb * (size_t)q + i];
        t->net->buffers[i] = (float)(s / saved);
      }
    }
  }
  t->last_val = (nest_eval){L->evals[0], L->evals[1], 0, NAN};
  t->last_test = (nest_eval){L->evals[2], L->evals[3], 0, NAN};
  for (int k = 0; k < 2; ++k) {
    t->pran[k] = (int)L->pran[k];
    prune_unpack(&t->pres[k], L->pc + k * NPRC, L->pv + k * NPRV);
  }
  free(t->pts);
  t->pts = NULL;
  t->npts = (int)L->npts;
  if (L->npts) {
    NEST_CALL(nest_malloc((void **)&t->pts, sizeof *t->pts * L->npts, "pruning targets"));
    for (size_t i = 0; i < L->npts; ++i)
      t->pts[i] = (nest_prune_target){(int32_t)L->pt[3 * i], (int32_t)L->pt[3 * i + 1], L->pg[i],
                                      (int32_t)L->pt[3 * i + 2]};
  }
  NEST_CALL(nest_grow_load(t->grow, r));
  return NEST_OK;
}

nest_status nest_restart_resume(nest_trainer *t) {
  char dir[NEST_PATH_LEN + 32];
  snprintf(dir, sizeof dir, "%s/checkpoints", t->run_dir);
  /* rank 0 lists; everyone tries the same files in the same order */
  int64_t *seqs = NULL;
  int n = 0;
  nest_status st = t->rank == 0 ? list_seqs(dir, &seqs, &n) : NEST_OK;
  NEST_CALL(nest_comm_agree(t->comm, st));
  int64_t nn = n;
  NEST_CALL(nest_comm_bcast(t->comm, &nn, sizeof nn, 0));
  if (t->rank != 0) {
    n = (int)nn;
    NEST_CALL(nest_malloc((void **)&seqs, sizeof *seqs * (size_t)(n ? n : 1), "checkpoint list"));
  }
  st = nest_comm_bcast(t->comm, seqs, sizeof *seqs * (size_t)n, 0);
  char path[NEST_PATH_LEN + 64];
  int64_t files[2] = {-1, -1};
  loaded L;
  memset(&L, 0, sizeof L);
  int used = -1;
  for (int i = 0; i < n && st == NEST_OK; ++i) {
    ckpt_path(dir, seqs[i], path, sizeof path);
    nest_ckpt *r = NULL;
    nest_status rs = read_file(t, path, &L, &r);
    rs = nest_comm_agree(t->comm, rs);
    if (rs == NEST_OK) {
      rs = check_compatible(t, path, &L);
      if (rs == NEST_OK) rs = apply(t, &L, r, files);
      rs = nest_comm_agree(t->comm, rs);
      nest_ckpt_close(&r);
      loaded_free(&L);
      if (rs != NEST_OK) st = rs;
      used = i;
      break;
    }
    nest_ckpt_close(&r);
    loaded_free(&L);
    if (rs != NEST_ERR_FORMAT && rs != NEST_ERR_IO) {
      st = rs;
      break;
    }
    /* a damaged checkpoint: say so, keep it aside (never delete), try the previous one */
    if (t->rank == 0) {
      char bad[NEST_PATH_LEN + 160];
      snprintf(bad, sizeof bad, "%s.bad", path);
      const int moved = rename(path, bad) == 0;
      fprintf(stderr, "nest_mpi: warning: %s; %s; trying the previous checkpoint\n",
              nest_error_message(), moved ? "renamed to *.bad" : "left in place");
      fflush(stderr);
    }
    nest_error_clear();
    NEST_CALL(nest_comm_barrier(t->comm));
  }
  free(seqs);
  seqs = NULL;
  NEST_CALL(st);
  if (used < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: no valid checkpoint to resume from (%d tried)", dir, n);
  /* metrics.csv and events.csv continue where the checkpoint was taken */
  st = NEST_OK;
  if (t->rank == 0) { /* a kill during a write leaves a .tmp: incomplete by construction */
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
  if (t->rank == 0) {
    char p[NEST_PATH_LEN + 32];
    snprintf(p, sizeof p, "%s/metrics.csv", t->run_dir);
    if (files[0] >= 0) st = nest_restart_truncate(p, files[0], &t->metrics);
  }
  NEST_CALL(nest_comm_agree(t->comm, st));
  NEST_CALL(nest_grow_events_reopen(t, t->grow, files[1]));
  t->resuming = 1;
  if (t->rank == 0 && !t->quiet) {
    printf("nest: resuming %s from %s: phase %d, step %lld, epoch %lld\n", t->run_dir, path,
           t->cur.phase, (long long)t->step, (long long)t->epoch);
    fflush(stdout);
  }
  return NEST_OK;
}
