/* restart_util.c — helpers shared by the restart test executables (see restart_util.h). */
#define _GNU_SOURCE
#include "restart_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nest/ckpt.h"
#include "nest/model.h"
#include "nest/data.h"
#include "test_util.h"

double rt_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- data and config ---------------------------------------------------------------------- */

#define RT_NTRAIN 1000
#define RT_NTEST 300
/* Noise 1.5 (pattern values are N(0, 1)): the run ends near 2% test error, after 60-70% in
 * the seed, so growth, pruning and the guard see real changes. */
#define RT_NOISE 1.5f

int rt_make_data(const char *dir) {
  const nest_shape shape = {1, 28, 28};
  const int64_t dim = 28 * 28;
  /* one stream of samples: the first RT_NTRAIN train, the rest test (same class patterns) */
  nest_dataset *all = NULL, *test = NULL;
  if (nest_dataset_synthetic(RT_NTRAIN + RT_NTEST, shape, 4, RT_NOISE, 7, 1, &all) != NEST_OK)
    return -1;
  int rc = -1;
  if (nest_dataset_synthetic(RT_NTEST, shape, 4, RT_NOISE, 7, 1, &test) != NEST_OK) goto done;
  memcpy(test->labels, all->labels + RT_NTRAIN, sizeof(int32_t) * RT_NTEST);
  memcpy(test->u8, all->u8 + RT_NTRAIN * dim, (size_t)(RT_NTEST * dim));
  const int64_t n = all->n;
  all->n = RT_NTRAIN; /* the first RT_NTRAIN rows (labels and bytes are row-major) */
  nest_status st = nest_dataset_save_h5(all, nest_test_path(dir, "train.h5"));
  all->n = n;
  if (st != NEST_OK) goto done;
  if (nest_dataset_save_h5(test, nest_test_path(dir, "test.h5")) != NEST_OK) goto done;
  rc = 0;
done:
  if (rc) fprintf(stderr, "rt_make_data: %s\n", nest_error_message());
  nest_dataset_destroy(&all);
  nest_dataset_destroy(&test);
  return rc;
}

int rt_write_config(const char *dir, const char *name, const char *extra) {
  char text[8192];
  snprintf(text, sizeof text,
           "; restart tests: grow -> prune -> area on synthetic 28x28 images (restart_util.c)\n"
           /* the pruning phases distil from the grown net (its teacher in every checkpoint
            * from then on), with the dropout override; the guard's target is the best
            * validation error seen (checkpointed); growth has the patience rule */
           /* threads = 1: ranks x threads <= 2 cores; every_minutes = 0: the checkpoints
            * depend on the steps alone, so every run of this config writes the same ones */
           "[run]\nseed = 3\nthreads = 1\nout_dir = runs\n"
           "[data]\ntrain = train.h5\ntest = test.h5\nformat = h5\nval_split = 0.2\n"
           "[model]\narch = lenet5\nwidth = 0.25\ndensity = 0.3\ndropout = 0.2\n"
           "[synthesis]\nphases = grow, prune, area\n"
           "[train]\nbatch = 50\n"
           "[optim]\nlr = 0.02\nmomentum = 0.9\n"
           "[grow]\npolicy = conn\niterations = 2\ntrain_epochs = 1\npatience = 2\n"
           "[prune]\nretrain_steps = 6\niterations = 2\ntolerance = 0.05\n"
           "area_tolerance = 0.05\nepochs = 1\n"
           "distill = 0.5\ndistill_temp = 3\ndropout = 0.1\nguard = best\nguard_z = 1\n"
           "[checkpoint]\nevery_steps = 5\nkeep = 1000\nevery_minutes = 0\n"
           "%s",
           extra ? extra : "");
  return nest_test_write_file(nest_test_path(dir, name), text, strlen(text));
}

/* ---- running nest_mpi --------------------------------------------------------------------- */

void rt_mpi_command(char *cmd, size_t cap, int np, const char *args) {
  /* NEST_TEST_BIN_DIR: the nest_mpi of another build (to show a test failing on older code) */
  const char *bin = getenv("NEST_TEST_BIN_DIR");
  snprintf(cmd, cap, "mpiexec -n %d --oversubscribe %s/nest_mpi %s", np,
           bin && *bin ? bin : NEST_BINARY_DIR, args);
}

int rt_shell(const char *dir, const char *command, const char *log, char *out, size_t out_cap,
             char *err, size_t err_cap) {
  char cmd[8192];
  if (!log) log = "run";
  snprintf(cmd, sizeof cmd, "cd '%s' && timeout 600 %s >'%s.out' 2>'%s.err'", dir, command, log,
           log);
  const int rc = system(cmd);
  char path[1024];
  if (out) {
    snprintf(path, sizeof path, "%s/%s.out", dir, log);
    nest_test_slurp(path, out, out_cap);
  }
  if (err) {
    snprintf(path, sizeof path, "%s/%s.err", dir, log);
    nest_test_slurp(path, err, err_cap);
  }
  return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

int rt_mpi(const char *dir, int np, const char *args, const char *log, char *out, size_t out_cap,
           char *err, size_t err_cap) {
  char mpi[4096];
  rt_mpi_command(mpi, sizeof mpi, np, args);
  return rt_shell(dir, mpi, log, out, out_cap, err, err_cap);
}

long rt_ulimit_unit(void) {
  char out[4096] = "";
  if (nest_test_run("sh -c 'ulimit -f 8 && cat /proc/self/limits'", out, sizeof out, NULL, 0) != 0)
    return 0;
  const char *p = strstr(out, "Max file size");
  long long soft = 0;
  if (!p || sscanf(p, "Max file size %lld", &soft) != 1) return 0;
  return (long)(soft / 8);
}

/* ---- background runs ---------------------------------------------------------------------- */

pid_t rt_spawn(const char *dir, int np, const char *args, const char *log) {
  char mpi[4096], cmd[4200], out[1100], err[1100];
  rt_mpi_command(mpi, sizeof mpi, np, args);
  snprintf(cmd, sizeof cmd, "exec %s", mpi); /* sh execs mpiexec: the pid is mpiexec's */
  snprintf(out, sizeof out, "%s/%s.out", dir, log);
  snprintf(err, sizeof err, "%s/%s.err", dir, log);
  fflush(NULL);
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    setsid();
    const int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0 || chdir(dir) != 0) _exit(127);
    dup2(o, 1);
    dup2(e, 2);
    close(o);
    close(e);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  return pid;
}

static int decode_status(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

int rt_exited(pid_t pid, int *code) {
  int status;
  const pid_t r = waitpid(pid, &status, WNOHANG);
  if (r != pid) return 0;
  *code = decode_status(status);
  return 1;
}

int rt_wait(pid_t pid, double timeout) {
  const double t0 = rt_now();
  int code;
  while (rt_now() - t0 < timeout) {
    if (rt_exited(pid, &code)) return code;
    usleep(10000);
  }
  fprintf(stderr, "rt_wait: pid %d still running after %.0f s: killed\n", (int)pid, timeout);
  rt_kill_tree(pid);
  return -1;
}

/* Parent pid and state of pid from /proc; 0 if it does not exist. */
static int proc_stat(pid_t pid, pid_t *ppid, char *state) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  const size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *rp = strrchr(buf, ')'); /* the command name may hold spaces */
  int pp = 0;
  if (!rp || sscanf(rp + 1, " %c %d", state, &pp) != 2) return 0;
  *ppid = (pid_t)pp;
  return 1;
}

/* Direct children of pid from /proc/PID/task/TID/children (every thread's: a child belongs
 * to the thread that forked it); -1 if the kernel does not provide these files. */
static int children_fast(pid_t pid, pid_t *out, int cap) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (!d) return 0; /* gone */
  int n = 0, any = 0;
  for (struct dirent *e; (e = readdir(d));) {
    if (e->d_name[0] == '.') continue;
    char cpath[320];
    snprintf(cpath, sizeof cpath, "/proc/%d/task/%s/children", (int)pid, e->d_name);
    FILE *f = fopen(cpath, "r");
    if (!f) continue;
    any = 1;
    for (int c; n < cap && fscanf(f, "%d", &c) == 1;) out[n++] = (pid_t)c;
    fclose(f);
  }
  closedir(d);
  return any ? n : -1;
}

/* Direct children of pid by scanning every /proc/N/stat (slow: tens of ms on a busy node). */
static int children_scan(pid_t parent, pid_t *out, int cap) {
  int n = 0;
  DIR *d = opendir("/proc");
  if (!d) return 0;
  for (struct dirent *e; (e = readdir(d));) {
    char *end;
    const long v = strtol(e->d_name, &end, 10);
    if (*end || v <= 0) continue;
    pid_t pp;
    char st;
    if (proc_stat((pid_t)v, &pp, &st) && pp == parent && n < cap) out[n++] = (pid_t)v;
  }
  closedir(d);
  return n;
}

/* Every process whose parent chain reaches root (not root itself), at most cap. */
static int descendants(pid_t root, pid_t *out, int cap) {
  int n = 0, qh = 0, qt = 0;
  pid_t queue[256]; /* breadth first */
  queue[qt++] = root;
  while (qh < qt) {
    const pid_t parent = queue[qh++];
    pid_t kids[256];
    int nk = children_fast(parent, kids, 256);
    if (nk < 0) nk = children_scan(parent, kids, 256);
    for (int i = 0; i < nk && n < cap; ++i) {
      out[n++] = kids[i];
      if (qt < 256) queue[qt++] = kids[i];
    }
  }
  return n;
}

int rt_ranks(pid_t pid, pid_t *out, int cap) {
  pid_t all[256];
  const int n = descendants(pid, all, 256);
  int k = 0;
  for (int i = 0; i < n && k < cap; ++i) {
    char path[64], name[64] = "";
    snprintf(path, sizeof path, "/proc/%d/comm", (int)all[i]);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (!fgets(name, sizeof name, f)) name[0] = '\0';
    fclose(f);
    if (strncmp(name, "nest_mpi", 8) == 0) out[k++] = all[i];
  }
  return k;
}

int rt_guards_signal(pid_t pid, int sig) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  int yes = 0;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "SigBlk:", 7) == 0 || strncmp(line, "SigCgt:", 7) == 0)
      yes |= (int)((strtoull(line + 7, NULL, 16) >> (sig - 1)) & 1);
  fclose(f);
  return yes;
}

void rt_become_subreaper(void) { prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

void rt_kill_tree(pid_t pid) {
  pid_t kids[256];
  const int nk = descendants(pid, kids, 256);
  kill(-pid, SIGKILL);
  kill(pid, SIGKILL);
  for (int i = 0; i < nk; ++i) {
    kill(kids[i], SIGKILL);
    kill(-kids[i], SIGKILL); /* a rank's own process group (only if it leads one) */
  }
  int status;
  waitpid(pid, &status, 0);
  /* orphans reparented to us (subreaper): kill and reap; wait for the rest to vanish */
  const double t0 = rt_now();
  for (;;) {
    pid_t mine[256];
    const int nm = descendants(getpid(), mine, 256);
    for (int i = 0; i < nm; ++i) {
      kill(mine[i], SIGKILL);
      waitpid(mine[i], &status, WNOHANG);
    }
    int alive = 0;
    for (int i = 0; i < nk; ++i) {
      pid_t pp;
      char st;
      if (proc_stat(kids[i], &pp, &st) && st != 'Z') alive = 1;
      else if (proc_stat(kids[i], &pp, &st) && pp == getpid()) waitpid(kids[i], &status, WNOHANG);
    }
    if (!alive && nm == 0) break;
    if (rt_now() - t0 > 30) {
      fprintf(stderr, "rt_kill_tree: processes of run %d survive SIGKILL\n", (int)pid);
      break;
    }
    usleep(1000);
  }
}

/* ---- comparing runs ----------------------------------------------------------------------- */

/* Whole file, malloc'd (NULL if unreadable). */
static char *slurp_alloc(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  for (size_t got; buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
    n += got;
    if (cap - n - 1 == 0) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  fclose(f);
  if (buf) buf[n] = '\0';
  return buf;
}

/* A line without the 1-based columns skip[0..nskip) into out. */
static void drop_columns(const char *line, size_t len, const int *skip, int nskip, char *out,
                         size_t cap) {
  size_t o = 0;
  int col = 1;
  size_t start = 0;
  for (size_t i = 0; i <= len; ++i) {
    if (i == len || line[i] == ',') {
      int drop = 0;
      for (int k = 0; k < nskip; ++k) drop |= skip[k] == col;
      const size_t flen = i - start;
      if (o + flen + 2 < cap) {
        if (drop) {
          memcpy(out + o, "*", 1);
          o += 1;
        } else {
          memcpy(out + o, line + start, flen);
          o += flen;
        }
        if (i < len) out[o++] = ',';
      }
      start = i + 1;
      ++col;
    }
  }
  out[o] = '\0';
}

/* The clock columns of metrics.csv and events.csv: the only ones a resumed run may change. */
static const char *const clock_columns[] = {"images_per_s", "elapsed_s", "seconds", "time_s"};

/* The 1-based columns of the header line (the first len bytes of text) named in clock_columns,
 * into skip[]; returns how many. */
static int clock_cols(const char *text, size_t len, int *skip, int cap) {
  int n = 0, col = 1;
  size_t start = 0;
  for (size_t i = 0; i <= len; ++i) {
    if (i < len && text[i] != ',') continue;
    for (size_t k = 0; k < sizeof clock_columns / sizeof clock_columns[0]; ++k)
      if (i - start == strlen(clock_columns[k]) &&
          strncmp(text + start, clock_columns[k], i - start) == 0 && n < cap)
        skip[n++] = col;
    start = i + 1;
    ++col;
  }
  return n;
}

/* Compare two CSV files line by line with their clock columns (named in the reference's
 * header) blanked. */
static int compare_csv(const char *a_path, const char *b_path, char *why, size_t cap) {
  char *a = slurp_alloc(a_path), *b = slurp_alloc(b_path);
  int rc = 0;
  if (!a || !b) {
    snprintf(why, cap, "cannot read %s", !a ? a_path : b_path);
    rc = 1;
    goto done;
  }
  int skip[8];
  const char *eol = strchr(a, '\n');
  const int nskip = clock_cols(a, eol ? (size_t)(eol - a) : strlen(a), skip, 8);
  const char *pa = a, *pb = b;
  for (int line = 1; *pa || *pb; ++line) {
    const char *ea = strchr(pa, '\n'), *eb = strchr(pb, '\n');
    const size_t la = ea ? (size_t)(ea - pa) : strlen(pa), lb = eb ? (size_t)(eb - pb) : strlen(pb);
    char ca[4096], cb[4096];
    drop_columns(pa, la, skip, nskip, ca, sizeof ca);
    drop_columns(pb, lb, skip, nskip, cb, sizeof cb);
    if (strcmp(ca, cb) != 0 || (!*pa) != (!*pb)) {
      snprintf(why, cap, "%s line %d differs:\n  reference: %.1500s\n  resumed:   %.1500s", b_path,
               line, *pa ? ca : "(end of file)", *pb ? cb : "(end of file)");
      rc = 1;
      goto done;
    }
    pa = ea ? ea + 1 : pa + la;
    pb = eb ? eb + 1 : pb + lb;
  }
done:
  free(a);
  free(b);
  return rc;
}

int rt_compare_runs(const char *ref, const char *other, char *why, size_t cap) {
  why[0] = '\0';
  char pa[1024], pb[1024];
  snprintf(pa, sizeof pa, "%s/model.h5", ref);
  snprintf(pb, sizeof pb, "%s/model.h5", other);
  nest_net *na = NULL, *nb = NULL;
  int rc = 0;
  if (nest_model_load(pa, 8, 1, &na) != NEST_OK) {
    snprintf(why, cap, "reference: %s", nest_error_message());
    rc = 1;
  } else if (nest_model_load(pb, 8, 1, &nb) != NEST_OK) {
    snprintf(why, cap, "%s", nest_error_message());
    rc = 1;
  } else {
    char aa[4096], ab[4096];
    nest_net_arch_string(na, aa, sizeof aa);
    nest_net_arch_string(nb, ab, sizeof ab);
    const uint64_t ha = nest_net_hash(na, NEST_HASH_ALL), hb = nest_net_hash(nb, NEST_HASH_ALL);
    if (strcmp(aa, ab) != 0) {
      snprintf(why, cap, "%s: architecture differs:\n  reference: %.1800s\n  resumed:   %.1800s",
               pb, aa, ab);
      rc = 1;
    } else if (ha != hb) {
      snprintf(why, cap, "%s: nest_net_hash(ALL) %016llx, reference %016llx (params %s, masks %s, "
               "buffers %s)", pb, (unsigned long long)hb, (unsigned long long)ha,
               nest_net_hash(na, NEST_HASH_PARAMS) == nest_net_hash(nb, NEST_HASH_PARAMS) ? "same" : "differ",
               nest_net_hash(na, NEST_HASH_MASKS) == nest_net_hash(nb, NEST_HASH_MASKS) ? "same" : "differ",
               nest_net_hash(na, NEST_HASH_BUFFERS) == nest_net_hash(nb, NEST_HASH_BUFFERS) ? "same" : "differ");
      rc = 1;
    }
  }
  nest_net_destroy(&na);
  nest_net_destroy(&nb);
  if (rc) return rc;
  snprintf(pa, sizeof pa, "%s/metrics.csv", ref);
  snprintf(pb, sizeof pb, "%s/metrics.csv", other);
  if (compare_csv(pa, pb, why, cap)) return 1;
  snprintf(pa, sizeof pa, "%s/events.csv", ref);
  snprintf(pb, sizeof pb, "%s/events.csv", other);
  return compare_csv(pa, pb, why, cap);
}

/* ---- run directories and checkpoints ------------------------------------------------------ */

const char *rt_ckpt_path(const char *run_dir, int64_t seq) {
  static char bufs[8][1200];
  static int next;
  char *b = bufs[next++ & 7];
  snprintf(b, 1200, "%s/checkpoints/ckpt-%08lld.h5", run_dir, (long long)seq);
  return b;
}

static int cmp_i64(const void *a, const void *b) {
  const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

int rt_list_ckpts(const char *run_dir, int64_t *seqs, int cap) {
  char path[1100];
  snprintf(path, sizeof path, "%s/checkpoints", run_dir);
  DIR *d = opendir(path);
  if (!d) return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d));) {
    long long s;
    char tail[8];
    if (sscanf(e->d_name, "ckpt-%8lld%7s", &s, tail) == 2 && strcmp(tail, ".h5") == 0 &&
        strlen(e->d_name) == 16 && n < cap)
      seqs[n++] = s;
  }
  closedir(d);
  qsort(seqs, (size_t)n, sizeof *seqs, cmp_i64);
  return n;
}

int rt_count_files(const char *run_dir, const char *suffix) {
  char path[1100];
  snprintf(path, sizeof path, "%s/checkpoints", run_dir);
  DIR *d = opendir(path);
  if (!d) return -1;
  int n = 0;
  const size_t ls = strlen(suffix);
  for (struct dirent *e; (e = readdir(d));) {
    const size_t l = strlen(e->d_name);
    if (e->d_name[0] != '.' && l >= ls && strcmp(e->d_name + l - ls, suffix) == 0) ++n;
  }
  closedir(d);
  return n;
}

int rt_cut_copy(const char *src, const char *dst, int64_t k) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s' && rm -f '%s'/checkpoints/*.tmp "
           "'%s'/checkpoints/*.bad", dst, src, dst, dst, dst);
  if (system(cmd) != 0) return -1;
  int64_t seqs[4096];
  const int n = rt_list_ckpts(dst, seqs, 4096);
  if (n < 0) return -1;
  int kept = 0;
  for (int i = 0; i < n; ++i) {
    if (seqs[i] <= k) {
      ++kept;
      continue;
    }
    if (remove(rt_ckpt_path(dst, seqs[i])) != 0) return -1;
  }
  return kept > 0 ? 0 : -1;
}

int rt_read_info(const char *path, rt_ckpt_info *info) {
  memset(info, 0, sizeof *info);
  nest_ckpt *r = NULL;
  nest_net *net = NULL;
  int64_t cur[8], prog[5];
  int rc = -1;
  if (nest_ckpt_open(path, &r) != NEST_OK) goto done;
  if (nest_ckpt_get(r, "cursor", NEST_CK_I64, cur, 8) != NEST_OK) goto done;
  if (nest_ckpt_get(r, "progress", NEST_CK_I64, prog, 5) != NEST_OK) goto done;
  if (nest_ckpt_get_net(r, NULL, 8, 1, 0, &net) != NEST_OK) goto done;
  info->cur = (nest_cursor){(int32_t)cur[0], (int32_t)cur[1], (int32_t)cur[2], (int32_t)cur[3],
                            (int32_t)cur[4], cur[5], cur[6], (int32_t)cur[7]};
  info->epoch = prog[0];
  info->step = prog[1];
  info->nranks = (int)prog[4];
  info->has_snapshot = nest_ckpt_has_group(r, "snapshot");
  info->has_teacher = nest_ckpt_has_group(r, "teacher");
  for (int i = 0; i < net->nlayers; ++i)
    if (net->layers[i]->kind == NEST_LAYER_CONV2D && net->layers[i]->hp.area) info->has_area = 1;
  rc = 0;
done:
  if (rc) fprintf(stderr, "rt_read_info: %s\n", nest_error_message());
  nest_net_destroy(&net);
  nest_ckpt_close(&r);
  return rc;
}

double rt_summary_value(const char *run_dir, const char *key) {
  char path[1100], text[16384];
  snprintf(path, sizeof path, "%s/summary.txt", run_dir);
  nest_test_slurp(path, text, sizeof text);
  char pat[256];
  snprintf(pat, sizeof pat, "%s = ", key);
  for (const char *p = text; (p = strstr(p, pat)) != NULL; ++p)
    if (p == text || p[-1] == '\n') return strtod(p + strlen(pat), NULL);
  return NAN;
}

int rt_count_lines(const char *text, const char *needle) {
  int n = 0;
  for (const char *p = text; *p;) {
    const char *e = strchr(p, '\n');
    const size_t len = e ? (size_t)(e - p) : strlen(p);
    char line[8192];
    snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), p);
    if (strstr(line, needle)) ++n;
    p += len + (e ? 1 : 0);
  }
  return n;
}
