/* test_restart_kill.c — nest_mpi killed with SIGKILL (mpiexec's process group and every rank)
 * at 10 points of one run, each time restarted with the same command line (which resumes the
 * run directory's newest valid checkpoint), then run to the end: the final model, metrics.csv
 * and events.csv equal an uninterrupted run's bit for bit (timing columns aside).
 *
 * Kill points alternate between a seeded random delay (0.02 .. 0.52 s) after the restarted run
 * wrote its first checkpoint (so that start-up time, long on a loaded machine, does not eat the
 * kill points) and "during a checkpoint write": the moment a ckpt-*.h5.tmp appears in the
 * checkpoint directory (polled every 100 us; a fallback kill if none appears within 300 s). A second test kills runs before
 * their first checkpoint exists (during its write; right after the run directory was made)
 * and restarts them the same way.
 *
 * Same synthesis as test_restart_mpi (restart_util.c), longer (LONGER below) so that 10 kill
 * points fit into one run. Label slow. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "restart_util.h"
#include "test_util.h"

static const char *dir;
static char out[1 << 17], err[1 << 17];
static char ref_dir[1024];

/* Longer than test_restart_mpi's run (about 2,400 steps: 8 s at 2 ranks on an idle 2-core
 * machine, 60 s under heavy load) so that 10 kill points fit before its end even on an idle
 * machine (there the 10 kills below get about 1,300 steps far): a short growth phase (3
 * epochs per iteration), long pruning retraining rounds (60 steps, the guard's snapshot in
 * every checkpoint), 50 epochs of fine-tuning; only the newest 4 checkpoints are kept. */
#define LONGER                                                                              \
  "--set grow.train_epochs=3 --set prune.retrain_steps=60 --set prune.epochs=50 "            \
  "--set checkpoint.keep=4"
#define NKILLS 10
#define SEED 20261122u

static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
/* Uniform in [0, 1) from (SEED, counter). */
static double uniform(uint64_t counter) {
  return (double)(splitmix64(SEED * 0x100000001b3ull + counter) >> 11) * 0x1.0p-53;
}

static const char *run_path(const char *name) {
  static char b[1024];
  snprintf(b, sizeof b, "%s/runs/%s", dir, name);
  return b;
}

static void args_for(const char *name, int longer, char *args, size_t cap) {
  snprintf(args, cap, "synth.ini --set run.run_dir=runs/%s %s", name, longer ? LONGER : "");
}

/* A .tmp a kill left behind, as it was when the next run started. */
typedef struct {
  char name[256];
  struct timespec ctime;
} leftover;

/* Name of a ckpt-*.h5.tmp in ckdir into name ("" if none); 1 if found. A file that is `old`
 * unchanged (same name, same ctime: the resumed run has not removed or rewritten it yet) does
 * not count (old may be NULL). */
static int find_tmp(const char *ckdir, const leftover *old, char *name, size_t cap) {
  name[0] = '\0';
  DIR *d = opendir(ckdir);
  if (!d) return 0;
  int found = 0;
  for (struct dirent *e; (e = readdir(d));) {
    const size_t l = strlen(e->d_name);
    if (strncmp(e->d_name, "ckpt-", 5) != 0 || l <= 4 || strcmp(e->d_name + l - 4, ".tmp") != 0)
      continue;
    if (old && old->name[0] && strcmp(old->name, e->d_name) == 0) {
      char path[1400];
      struct stat sb;
      snprintf(path, sizeof path, "%s/%s", ckdir, e->d_name);
      if (stat(path, &sb) != 0 || (sb.st_ctim.tv_sec == old->ctime.tv_sec &&
                                   sb.st_ctim.tv_nsec == old->ctime.tv_nsec))
        continue;
    }
    snprintf(name, cap, "%s", e->d_name);
    found = 1;
    break;
  }
  closedir(d);
  return found;
}

static void remember_leftover(const char *ckdir, leftover *old) {
  memset(old, 0, sizeof *old);
  if (!find_tmp(ckdir, NULL, old->name, sizeof old->name)) return;
  char path[1400];
  struct stat sb;
  snprintf(path, sizeof path, "%s/%s", ckdir, old->name);
  if (stat(path, &sb) == 0) old->ctime = sb.st_ctim;
}

/* The "nest: resuming ..." line of a run's stdout (file LOG.out), "" if none. */
static void resumed_line(const char *log, char *line, size_t cap) {
  char path[1100];
  snprintf(path, sizeof path, "%s/%s.out", dir, log);
  nest_test_slurp(path, out, sizeof out);
  line[0] = '\0';
  const char *p = strstr(out, "nest: resuming ");
  if (!p) return;
  const char *e = strchr(p, '\n');
  snprintf(line, cap, "%.*s", (int)(e ? e - p : (long)strlen(p)), p);
}

/* Fail if a killed run had reported an error before it was killed. */
static void no_error_in(const char *log) {
  char path[1100];
  snprintf(path, sizeof path, "%s/%s.err", dir, log);
  nest_test_slurp(path, err, sizeof err);
  if (strstr(err, "nest_mpi: error"))
    fail_msg("run %s reported an error before it was killed:\n%s", log, err);
}

static char shm_dir[64];
static void remove_shm_dir(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", shm_dir);
  if (shm_dir[0] && system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", shm_dir);
}

/* A killed mpiexec cannot clean up: Open MPI's session directory and the shared-memory
 * segments of its ranks go to directories of this test (removed at exit), not /tmp and
 * /dev/shm. */
static void contain_open_mpi_files(void) {
  char path[1100];
  snprintf(path, sizeof path, "%s/ompi", dir);
  if (mkdir(path, 0700) == 0) setenv("OMPI_MCA_orte_tmpdir_base", path, 1);
  snprintf(shm_dir, sizeof shm_dir, "/dev/shm/nest_test_XXXXXX");
  if (access("/dev/shm", W_OK) == 0 && mkdtemp(shm_dir)) {
    setenv("OMPI_MCA_btl_vader_backing_directory", shm_dir, 1);
    atexit(remove_shm_dir);
  } else {
    shm_dir[0] = '\0';
  }
}

static int setup(void **state) {
  rt_become_subreaper(); /* ranks orphaned by a kill are ours to reap */
  dir = nest_test_tmpdir();
  contain_open_mpi_files();
  if (rt_make_data(dir) != 0 || rt_write_config(dir, "synth.ini", NULL) != 0) return -1;
  snprintf(ref_dir, sizeof ref_dir, "%s/runs/ref", dir);
  char args[1024];
  args_for("ref", 1, args, sizeof args);
  const double t0 = rt_now();
  const int code = rt_mpi(dir, 2, args, "ref", out, sizeof out, err, sizeof err);
  if (code != 0) {
    fprintf(stderr, "reference run: exit %d\n%s\n%s\n", code, out, err);
    return -1;
  }
  int64_t seqs[4096];
  printf("reference run (2 ranks): %.1f s, %d checkpoints\n", rt_now() - t0,
         rt_list_ckpts(ref_dir, seqs, 4096));
  fflush(stdout);
  return 0;
}

static void test_kill_ten_times(void **state) {
  const double t_start = rt_now();
  const char *rd = run_path("kill");
  char ckdir[1100], args[1024], line[2048];
  snprintf(ckdir, sizeof ckdir, "%s/checkpoints", rd);
  args_for("kill", 1, args, sizeof args);
  for (int i = 0; i < NKILLS; ++i) {
    char log[32];
    snprintf(log, sizeof log, "kill%d", i);
    const int during_write = i & 1;
    const double delay = 0.02 + 0.5 * uniform((uint64_t)i);
    leftover old;
    remember_leftover(ckdir, &old);
    const pid_t pid = rt_spawn(dir, 2, args, log);
    assert_true(pid > 0);
    const double t0 = rt_now();
    char tmp[256] = "", what[512];
    int code = 0, exited = 0;
    /* Start-up (MPI, data, the checkpoint read) takes 1 s on an idle machine and 10 s or more
     * on a loaded one: kill points are counted from the moment this run is under way, i.e.
     * it wrote a checkpoint of its own (every 5 steps), so every restart makes progress. */
    int64_t seqs0[4096];
    const int n0 = rt_list_ckpts(rd, seqs0, 4096);
    const int64_t newest0 = n0 > 0 ? seqs0[n0 - 1] : -1;
    if (!during_write) {
      double t1 = -1;
      while (!(exited = rt_exited(pid, &code))) {
        const double now = rt_now();
        if (t1 < 0) {
          int64_t sq[4096];
          const int n = rt_list_ckpts(rd, sq, 4096);
          if ((n > 0 && sq[n - 1] > newest0) || now - t0 > 300) t1 = now;
        } else if (now - t1 >= delay) {
          break;
        }
        usleep(1000);
      }
      snprintf(what, sizeof what, "random delay %.3f s after its first checkpoint", delay);
    } else {
      int polls = 0;
      while (!find_tmp(ckdir, &old, tmp, sizeof tmp) && rt_now() - t0 < 300.0) {
        if (++polls % 100 == 0 && (exited = rt_exited(pid, &code))) break;
        usleep(100);
      }
      if (tmp[0])
        snprintf(what, sizeof what, "during the write of %s", tmp);
      else
        snprintf(what, sizeof what, "no new .tmp within 300 s: fallback kill");
    }
    if (exited || (exited = rt_exited(pid, &code))) {
      char path[1100];
      snprintf(path, sizeof path, "%s/%s.err", dir, log);
      nest_test_slurp(path, err, sizeof err);
      if (code == 0)
        fail_msg("kill %d: the run finished before it was killed (lengthen the run)", i + 1);
      fail_msg("kill %d: the run exited with %d before it was killed:\n%s", i + 1, code, err);
    }
    const double at = rt_now() - t0;
    rt_kill_tree(pid);
    int64_t seqs[4096];
    const int n = rt_list_ckpts(rd, seqs, 4096);
    char left[256];
    const int has_tmp = find_tmp(ckdir, NULL, left, sizeof left);
    resumed_line(log, line, sizeof line);
    printf("kill %2d at %.3f s (%s): %s; checkpoints afterwards: %d (newest %lld)%s%s\n", i + 1,
           at, what, line[0] ? line : i == 0 ? "a new run" : "(killed before it resumed)",
           n > 0 ? n : 0,
           n > 0 ? (long long)seqs[n - 1] : -1LL, has_tmp ? "; left behind: " : "",
           has_tmp ? left : "");
    fflush(stdout);
    no_error_in(log);
  }
  /* the same command once more, to the end */
  const int code = rt_mpi(dir, 2, args, "kill_final", out, sizeof out, err, sizeof err);
  if (code != 0) fail_msg("final run: exit %d\n%s", code, err);
  resumed_line("kill_final", line, sizeof line);
  printf("final run: %s\n", line);
  assert_true(line[0] != '\0');
  char why[4096];
  if (rt_compare_runs(ref_dir, rd, why, sizeof why) != 0)
    fail_msg("the run killed %d times differs from the reference: %s", NKILLS, why);
  /* a resumed run removes the .tmp a kill left */
  if (rt_count_files(rd, ".tmp") != 0) fail_msg("a .tmp is left in %s after the final run", ckdir);
  printf("killed %d times, resumed each time: final model, metrics.csv and events.csv equal the "
         "reference (%.1f s)\n", NKILLS, rt_now() - t_start);
}

/* Killed before its first checkpoint exists: (a) the moment RUN_DIR/config.ini appears (the
 * run directory was just made), (b) the moment ckpt-00000000.h5.tmp appears (the first
 * checkpoint is being written). The directory then holds the run's own config.ini and
 * metrics.csv but no checkpoint; the same command must start the run over and end as the
 * reference (docs/restart.md: "a run killed before its first checkpoint ... is started
 * over"). */
static void kill_before_first(const char *short_ref, const char *name, const char *wait_for) {
  char args[1024], ckdir[1100], watch[1200], log[64];
  const char *rd = run_path(name);
  snprintf(ckdir, sizeof ckdir, "%s/checkpoints", rd);
  if (wait_for)
    snprintf(watch, sizeof watch, "%s/%s", rd, wait_for);
  args_for(name, 0, args, sizeof args);
  snprintf(log, sizeof log, "%s0", name);
  const pid_t pid = rt_spawn(dir, 2, args, log);
  assert_true(pid > 0);
  const double t0 = rt_now();
  int code = 0;
  char tmp[256] = "";
  for (;;) {
    if (wait_for ? access(watch, F_OK) == 0 : find_tmp(ckdir, NULL, tmp, sizeof tmp)) break;
    if (rt_exited(pid, &code)) fail_msg("%s: the run exited (%d) before the kill point", name, code);
    if (rt_now() - t0 > 120) {
      rt_kill_tree(pid);
      fail_msg("%s: kill point not reached after 120 s", name);
    }
    usleep(100);
  }
  const double at = rt_now() - t0;
  rt_kill_tree(pid);
  int64_t seqs[16];
  int n = rt_list_ckpts(rd, seqs, 16);
  if (n < 0) n = 0; /* no checkpoints directory yet */
  char left[256] = "", listing[4096] = "", cmd[1400];
  find_tmp(ckdir, NULL, left, sizeof left);
  snprintf(cmd, sizeof cmd, "cd '%s' && find . -type f -printf '%%p (%%s bytes) ' | sort", rd);
  nest_test_run(cmd, listing, sizeof listing, NULL, 0);
  printf("%s: killed when %s appeared (%.3f s): %d checkpoints; files: %s\n", name,
         wait_for ? wait_for : tmp, at, n, listing);
  snprintf(log, sizeof log, "%s1", name);
  code = rt_mpi(dir, 2, args, log, out, sizeof out, err, sizeof err);
  if (code != 0)
    fail_msg("%s: killed before its first checkpoint, the same command fails: exit %d\n%s", name,
             code, err);
  char why[4096];
  if (rt_compare_runs(short_ref, rd, why, sizeof why) != 0)
    fail_msg("%s: differs from the reference: %s", name, why);
  printf("%s: the same command started the run over; identical to the reference\n", name);
}

static void test_kill_before_first_checkpoint(void **state) {
  const double t_start = rt_now();
  char args[1024], short_ref[1100];
  /* the short run of test_restart_mpi is the reference here */
  args_for("ref_short", 0, args, sizeof args);
  if (rt_mpi(dir, 2, args, "ref_short", out, sizeof out, err, sizeof err) != 0)
    fail_msg("short reference run failed:\n%s", err);
  snprintf(short_ref, sizeof short_ref, "%s", run_path("ref_short"));
  kill_before_first(short_ref, "first_tmp", NULL);
  kill_before_first(short_ref, "first_cfg", "config.ini");
  printf("(%.1f s)\n", rt_now() - t_start);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kill_ten_times),
      cmocka_unit_test(test_kill_before_first_checkpoint),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
