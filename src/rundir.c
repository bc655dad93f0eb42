/* rundir.c — a run's directory: choosing, creating or resuming it, its checkpoint files, cutting
 * logs back on resume, the metrics.csv format (rundir.h). */
#define _GNU_SOURCE
#include "nest/rundir.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- checkpoint files ------------------------------------------------------------------------ */

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

nest_status nest_rundir_checkpoints(const char *run_dir, int64_t **out, int *n) {
  *out = NULL;
  *n = 0;
  char dir[NEST_PATH_LEN + 32];
  snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
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

void nest_rundir_checkpoint(const char *run_dir, int64_t seq, char *out, size_t cap) {
  snprintf(out, cap, "%s/checkpoints/ckpt-%08lld.h5", run_dir, (long long)seq);
}

nest_status nest_rundir_newest(const char *run_dir, char *path, size_t cap, int *any) {
  int64_t *seqs;
  int n;
  NEST_CALL(nest_rundir_checkpoints(run_dir, &seqs, &n));
  *any = n > 0;
  path[0] = '\0';
  if (n > 0) nest_rundir_checkpoint(run_dir, seqs[0], path, cap);
  free(seqs);
  return NEST_OK;
}

nest_status nest_rundir_truncate(const char *path, int64_t bytes, FILE **f) {
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

/* ---- CSV ----------------------------------------------------------------------------------- */

void nest_rundir_csv_num(FILE *f, double v, const char *fmt) {
  fputc(',', f);
  if (!isnan(v)) fprintf(f, fmt, v);
}

nest_status nest_rundir_metrics_row(FILE *f, const char *path, const nest_metrics_row *r) {
  fprintf(f, "%lld,%lld", (long long)r->epoch, (long long)r->step);
  nest_rundir_csv_num(f, r->lr, "%.6g");
  nest_rundir_csv_num(f, r->train_loss, "%.6g");
  nest_rundir_csv_num(f, r->train_acc, "%.6g");
  nest_rundir_csv_num(f, r->val_loss, "%.6g");
  nest_rundir_csv_num(f, r->val_acc, "%.6g");
  nest_rundir_csv_num(f, r->test_loss, "%.6g");
  nest_rundir_csv_num(f, r->test_acc, "%.6g");
  fprintf(f, ",%lld,%lld,%.6g", (long long)r->active, (long long)r->total,
          (double)r->active / (double)r->total);
  nest_rundir_csv_num(f, r->images_per_s, "%.1f");
  fprintf(f, ",%.2f,%s", r->elapsed_s, r->phase);
  /* appended after phase: columns keep their positions in older readers */
  nest_rundir_csv_num(f, r->val_top5_error, "%.6g");
  nest_rundir_csv_num(f, r->test_top5_error, "%.6g");
  if (r->iteration > 0)
    fprintf(f, ",%lld\n", (long long)r->iteration);
  else
    fputs(",\n", f);
  /* Flushed per row: a crash or kill loses at most the row being written. */
  if (fflush(f) != 0 || ferror(f))
    return NEST_ERR(NEST_ERR_IO, "%s: write failed: %s", path, strerror(errno));
  return NEST_OK;
}

static const char metrics_header[] =
    "epoch,step,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,active_weights,"
    "total_weights,density,images_per_s,elapsed_s,phase,val_top5_error,test_top5_error,iteration\n";

/* ---- choosing the directory ---------------------------------------------------------------- */

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

/* Files a run writes into its directory: one of them there means the directory holds (part
 * of) a run, and it is not reused unless it also holds a checkpoint. */
static const char *const run_files[] = {"config.ini", "metrics.csv", "events.csv", "summary.txt",
                                        "model.h5", "model_seed.h5", "report.csv"};

/* The stamp of a new run directory's name: job<id> (Slurm job), job<id>_<task> (job array),
 * else YYYYmmdd-HHMMSS. Returns 1 under Slurm. */
static int dir_stamp(char *stamp, size_t cap) {
  const char *job = getenv("SLURM_JOB_ID"), *ajob = getenv("SLURM_ARRAY_JOB_ID"),
             *task = getenv("SLURM_ARRAY_TASK_ID");
  const int slurm = job && *job;
  if (ajob && *ajob && task && *task)
    snprintf(stamp, cap, "job%.32s_%.32s", ajob, task);
  else if (slurm)
    snprintf(stamp, cap, "job%.32s", job);
  else {
    time_t now = time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    strftime(stamp, cap, "%Y%m%d-%H%M%S", &tmv);
  }
  return slurm;
}

void nest_rundir_existing(const nest_config *c, char *out, size_t cap) {
  char stamp[96];
  out[0] = '\0';
  if (c->run_dir[0])
    snprintf(out, cap, "%s", c->run_dir);
  else if (c->out_dir[0] && dir_stamp(stamp, sizeof stamp))
    snprintf(out, cap, "%s/%.100s-%s", c->out_dir, c->name[0] ? c->name : "run", stamp);
}

/* The name of a new run directory under out_dir: NAME-<stamp> (above). A requeued Slurm job
 * gets its own directory again, so it resumes; two runs started in the same second outside
 * Slurm get -2, -3, ... */
static nest_status new_run_dir(const nest_config *c, nest_rundir *rd, int *resume) {
  const char *name = c->name[0] ? c->name : "run";
  char stamp[96];
  const int slurm = dir_stamp(stamp, sizeof stamp);
  if (strlen(c->out_dir) > 900)
    return NEST_ERR(NEST_ERR_CONFIG, "run.out_dir '%.60s...' is too long", c->out_dir);
  NEST_CALL(mkdir_p(c->out_dir));
  for (int k = 1; k <= 1000; ++k) {
    if (k == 1)
      snprintf(rd->path, sizeof rd->path, "%s/%.100s-%s", c->out_dir, name, stamp);
    else
      snprintf(rd->path, sizeof rd->path, "%s/%.100s-%s-%d", c->out_dir, name, stamp, k);
    if (mkdir(rd->path, 0775) == 0) return NEST_OK; /* ours alone: mkdir is atomic */
    if (errno != EEXIST)
      return NEST_ERR(NEST_ERR_IO, "%s: cannot create directory: %s", rd->path, strerror(errno));
    if (slurm) { /* the same job again (requeued): its directory, resumed or refused below */
      *resume = -1;
      return NEST_OK;
    }
  }
  return NEST_ERR(NEST_ERR_IO, "%s/%s-%s: 1000 run directories of that name exist", c->out_dir,
                  name, stamp);
}

/* An existing directory without a checkpoint: may a new run start in it? Only if it holds no
 * run's files, or just what a run killed in its first second left (metrics.csv with at most
 * its header, maybe config.ini and events.csv: nothing to lose). metrics.csv is only ever
 * created by nest, first, after it checked the directory. */
static nest_status check_reusable(const char *dir) {
  char mpath[NEST_PATH_LEN + 32];
  snprintf(mpath, sizeof mpath, "%s/metrics.csv", dir);
  FILE *mf = fopen(mpath, "r");
  if (mf) {
    int lines = 0;
    for (int ch; (ch = fgetc(mf)) != EOF;) lines += ch == '\n';
    fclose(mf);
    if (lines <= 1) return NEST_OK;
  }
  for (size_t i = 0; i < sizeof run_files / sizeof run_files[0]; ++i) {
    char path[NEST_PATH_LEN + 32];
    snprintf(path, sizeof path, "%s/%s", dir, run_files[i]);
    if (access(path, F_OK) == 0)
      return NEST_ERR(NEST_ERR_IO,
                      "%s already holds a run (%s) but no checkpoint to resume: choose another "
                      "run.run_dir; nothing was overwritten",
                      dir, run_files[i]);
  }
  return NEST_OK;
}

/* Rank 0: the run directory, and whether this run resumes the checkpoints in it. */
static nest_status choose(const nest_config *c, nest_rundir *rd) {
  int resume = 0;
  rd->resume = 0;
  if (c->run_dir[0]) {
    if (strlen(c->run_dir) >= sizeof rd->path - 64)
      return NEST_ERR(NEST_ERR_CONFIG, "run.run_dir '%.60s...' is too long", c->run_dir);
    snprintf(rd->path, sizeof rd->path, "%s", c->run_dir);
    NEST_CALL(mkdir_p(rd->path));
    resume = -1;
  } else {
    NEST_CALL(new_run_dir(c, rd, &resume));
  }
  if (resume == 0) { /* a directory of our own */
    if (c->resume) return NEST_ERR(NEST_ERR_INTERNAL, "--resume without run.run_dir");
    return NEST_OK;
  }
  /* An existing directory: resume its checkpoints; refuse one that holds another run's files
   * without a checkpoint (nothing in it is touched). */
  char newest[NEST_PATH_LEN + 64];
  int any = 0;
  NEST_CALL(nest_rundir_newest(rd->path, newest, sizeof newest, &any));
  if (any) {
    rd->resume = 1;
    return NEST_OK;
  }
  if (c->resume)
    return NEST_ERR(NEST_ERR_IO, "%s: no checkpoint to resume from (no %s/checkpoints/ckpt-*.h5)",
                    rd->path, rd->path);
  return check_reusable(rd->path);
}

/* Rank 0, a new run: metrics.csv first (nest's own file: a directory with config.ini but no
 * metrics.csv is the user's), header flushed at once; then config.ini. */
static nest_status start_files(const nest_config *c, nest_rundir *rd) {
  char path[NEST_PATH_LEN + 32];
  snprintf(path, sizeof path, "%s/metrics.csv", rd->path);
  rd->metrics = fopen(path, "w");
  if (!rd->metrics) return NEST_ERR(NEST_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
  if (fputs(metrics_header, rd->metrics) < 0 || fflush(rd->metrics) != 0)
    return NEST_ERR(NEST_ERR_IO, "%s: write failed: %s", path, strerror(errno));
  snprintf(path, sizeof path, "%s/config.ini", rd->path);
  return nest_config_write(c, path);
}

nest_status nest_rundir_open(const nest_config *c, nest_comm *comm, nest_rundir *rd) {
  memset(rd, 0, sizeof *rd);
  /* No run directory at all (tests, benchmarks): both out_dir and run_dir empty. */
  if (!c->run_dir[0] && !c->out_dir[0]) {
    if (c->resume) return NEST_ERR(NEST_ERR_CONFIG, "--resume needs a run directory");
    return NEST_OK;
  }
  nest_status st = NEST_OK;
  if (nest_comm_rank(comm) == 0) {
    st = choose(c, rd);
    if (st == NEST_OK && !rd->resume) st = start_files(c, rd);
  }
  st = nest_comm_agree(comm, st);
  if (st == NEST_OK) st = nest_comm_bcast(comm, rd->path, sizeof rd->path, 0);
  if (st == NEST_OK) st = nest_comm_bcast(comm, &rd->resume, sizeof rd->resume, 0);
  if (st != NEST_OK) {
    if (rd->metrics) fclose(rd->metrics);
    rd->metrics = NULL;
    nest_error_trace(__FILE__, __LINE__);
  }
  return st;
}
