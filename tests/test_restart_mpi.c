/* test_restart_mpi.c — checkpoint/restart of nest_mpi as a user runs it (under mpiexec, runs
 * started from inside the test like test_nest_mpi.c), on a grow -> prune -> area synthesis of
 * a small LeNet-5 over synthetic 28x28 images (restart_util.c).
 *
 * One uninterrupted 2-rank run is the reference; every resumed 2-rank run must end with the
 * same final model (nest_net_hash over weights, masks and buffers, and the architecture),
 * metrics.csv (timing columns aside) and events.csv (its seconds column aside):
 *   - round trip of checkpoints through nest_ckpt_* (net, momentum, snapshot, area masks);
 *   - the distillation teacher (prune.distill) in every checkpoint from the prune phase on,
 *     equal to the grown model (the resumes below then check that it is used as saved);
 *   - resume from checkpoints all over the run (mid-growth, end of a growth iteration,
 *     mid-pruning with the guard's snapshot, mid-area, fine-tuning, the final one);
 *   - SIGUSR1: checkpoint, exit 10, --resume; also at the moment the ranks start, 50 ms and
 *     200 ms after (before a run directory exists): exit 10 with the stop message;
 *   - a run started with model.init_from resumes after that file moved;
 *   - damaged newest checkpoints (truncated, flipped bytes, missing dataset, other version):
 *     reported, renamed *.bad, the previous one used; none valid: one clear error;
 *   - a newest checkpoint that cannot be opened (an I/O error, not damage): an error, the file
 *     not renamed; once readable again, the run resumes from it;
 *   - a file size limit during a checkpoint write: one error line, earlier checkpoints intact;
 *   - rank changes (1 -> 2 -> 4): the run completes with a comparable test error;
 *   - h5dump shows the documented layout. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nest/ckpt.h"
#include "nest/model.h"
#include "restart_util.h"
#include "test_util.h"

static const char *dir;
static char out[1 << 17], err[1 << 17];

/* The reference run (2 ranks) and what each of its checkpoints holds. */
#define MAXCK 1024
static int64_t ref_seq[MAXCK];
static rt_ckpt_info ref_info[MAXCK];
static int nref;
static char ref_dir[1024];

/* Phase indices of synthesis.phases = grow, prune, area. */
enum { GROW = 0, PRUNE = 1, AREA = 2, DONE = 3 };

static double t_test;
static void begin(const char *name) {
  t_test = rt_now();
  printf("[%s]\n", name);
  fflush(stdout);
}
static void end(const char *name) {
  printf("[%s] %.1f s\n", name, rt_now() - t_test);
  fflush(stdout);
}

static const char *run_path(const char *name) {
  static char bufs[4][1024];
  static int next;
  char *b = bufs[next++ & 3];
  snprintf(b, 1024, "%s/runs/%s", dir, name);
  return b;
}

/* The same command line as the reference run, in runs/NAME. */
static int run_named(int np, const char *name, const char *more) {
  char args[2048];
  snprintf(args, sizeof args, "synth.ini --set run.run_dir=runs/%s%s%s", name, more ? " " : "",
           more ? more : "");
  return rt_mpi(dir, np, args, name, out, sizeof out, err, sizeof err);
}

static void expect_ok(int code, const char *what) {
  if (code != 0) fail_msg("%s: exit %d\nstdout (tail):\n%s\nstderr:\n%s", what, code,
                          strlen(out) > 3000 ? out + strlen(out) - 3000 : out, err);
}

static void expect_same_as_reference(const char *name) {
  char why[4096];
  if (rt_compare_runs(ref_dir, run_path(name), why, sizeof why) != 0)
    fail_msg("runs/%s differs from the reference run: %s", name, why);
}

/* Sequence number of a reference checkpoint matching pred: the first (which = 0), the middle
 * (1) or the last (2) of those that match; -1 if none. */
static int64_t pick(int (*pred)(const rt_ckpt_info *), int which) {
  int idx[MAXCK], n = 0;
  for (int i = 0; i < nref; ++i)
    if (pred(&ref_info[i])) idx[n++] = i;
  if (n == 0) return -1;
  return ref_seq[idx[which == 0 ? 0 : which == 1 ? n / 2 : n - 1]];
}
static const rt_ckpt_info *info_of(int64_t seq) {
  for (int i = 0; i < nref; ++i)
    if (ref_seq[i] == seq) return &ref_info[i];
  return NULL;
}

static int is_mid_growth(const rt_ckpt_info *c) {
  return c->cur.phase == GROW && c->cur.part == 1 && c->cur.step > 0;
}
static int is_growth_iteration_end(const rt_ckpt_info *c) {
  return c->cur.phase == GROW && c->cur.part == 0 && c->cur.iter >= 2;
}
static int is_mid_pruning(const rt_ckpt_info *c) {
  return c->cur.phase == PRUNE && c->cur.part == 1 && c->has_snapshot;
}
static int is_mid_area(const rt_ckpt_info *c) {
  return c->cur.phase == AREA && c->cur.part == 1 && c->has_snapshot && c->has_area;
}
static int is_finetune(const rt_ckpt_info *c) {
  return c->cur.phase == PRUNE && c->cur.part == 2 && c->cur.step > 0;
}
static int is_any(const rt_ckpt_info *c) { return c != NULL; }

static int64_t must_pick(int (*pred)(const rt_ckpt_info *), int which, const char *what) {
  const int64_t s = pick(pred, which);
  if (s < 0) fail_msg("the reference run has no checkpoint %s (config too small?)", what);
  return s;
}

static int file_exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0;
}
static long long file_size(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* The one "nest_mpi: warning: " line of err containing `file`, into line (asserts there is
 * exactly one warning line). */
static void warning_line(const char *file, char *line, size_t cap) {
  const int n = rt_count_lines(err, "nest_mpi: warning: ");
  if (n != 1) fail_msg("expected one warning line, got %d:\n%s", n, err);
  const char *w = strstr(err, "nest_mpi: warning: ");
  const char *e = strchr(w, '\n');
  snprintf(line, cap, "%.*s", (int)(e ? e - w : (long)strlen(w)), w);
  if (!strstr(line, file)) fail_msg("the warning does not name %s: %s", file, line);
}

/* The one "nest_mpi: error: " line, into line (asserts exactly one). */
static void error_line(char *line, size_t cap) {
  const int n = rt_count_lines(err, "nest_mpi: error: ");
  if (n != 1) fail_msg("expected one error line, got %d:\n%s", n, err);
  const char *w = strstr(err, "nest_mpi: error: ");
  const char *e = strchr(w, '\n');
  snprintf(line, cap, "%.*s", (int)(e ? e - w : (long)strlen(w)), w);
}

static int setup(void **state) {
  dir = nest_test_tmpdir();
  if (rt_make_data(dir) != 0 || rt_write_config(dir, "synth.ini", NULL) != 0) return -1;
  snprintf(ref_dir, sizeof ref_dir, "%s/runs/ref", dir);
  const double t0 = rt_now();
  const int code = run_named(2, "ref", NULL);
  if (code != 0) {
    fprintf(stderr, "reference run: exit %d\n%s\n%s\n", code, out, err);
    return -1;
  }
  nref = rt_list_ckpts(ref_dir, ref_seq, MAXCK);
  for (int i = 0; i < nref; ++i)
    if (rt_read_info(rt_ckpt_path(ref_dir, ref_seq[i]), &ref_info[i]) != 0) return -1;
  printf("reference run (2 ranks): %.1f s, %d checkpoints, test error %.4f\n", rt_now() - t0, nref,
         rt_summary_value(ref_dir, "test_error"));
  for (int i = 0; i < nref; ++i) {
    const rt_ckpt_info *c = &ref_info[i];
    printf("  ckpt %3lld: phase %2d part %d iter %d target %d round %d epoch %lld step %lld | "
           "global step %lld%s%s\n", (long long)ref_seq[i], c->cur.phase, c->cur.part, c->cur.iter,
           c->cur.target, c->cur.tries, (long long)c->cur.epoch, (long long)c->cur.step,
           (long long)c->step, c->has_snapshot ? " snapshot" : "", c->has_area ? " area" : "");
  }
  fflush(stdout);
  return nref > 0 ? 0 : -1;
}

/* ---- round trip through nest_ckpt_* -------------------------------------------------------- */

static void same_net(const nest_net *a, const nest_net *b, const char *what) {
  char sa[4096], sb[4096];
  nest_net_arch_string(a, sa, sizeof sa);
  nest_net_arch_string(b, sb, sizeof sb);
  if (strcmp(sa, sb) != 0) fail_msg("%s: arch '%s' != '%s'", what, sa, sb);
  if (nest_net_hash(a, NEST_HASH_ALL) != nest_net_hash(b, NEST_HASH_ALL))
    fail_msg("%s: nest_net_hash(ALL) differs", what);
  assert_int_equal(a->nparams, b->nparams);
  if (memcmp(a->mom, b->mom, sizeof(float) * a->nparams) != 0) fail_msg("%s: momentum differs", what);
  assert_int_equal(a->generation, b->generation);
}

static int has_area_buffer(const nest_net *net) {
  for (int i = 0; i < net->nlayers; ++i) {
    const nest_layer *l = net->layers[i];
    if (l->kind != NEST_LAYER_CONV2D || !l->hp.area) continue;
    for (int s = 0; s < l->nbuffers; ++s)
      if (strcmp(l->buffer[s].name, "area") == 0 && l->buffer[s].mask) return 1;
  }
  return 0;
}

static void round_trip(int64_t seq, int want_snapshot, int want_area) {
  const char *src = rt_ckpt_path(ref_dir, seq);
  nest_ckpt *r = NULL;
  nest_net *net = NULL, *snap = NULL, *net2 = NULL, *snap2 = NULL, *plain = NULL;
  assert_ok(nest_ckpt_open(src, &r));
  assert_ok(nest_ckpt_get_net(r, NULL, 16, 1, 1, &net));
  assert_int_equal(nest_ckpt_has_group(r, "snapshot"), want_snapshot);
  if (want_snapshot) assert_ok(nest_ckpt_get_net(r, "snapshot", 16, 1, 1, &snap));
  int64_t cur[8];
  assert_ok(nest_ckpt_get(r, "cursor", NEST_CK_I64, cur, 8));
  char *arch = NULL;
  assert_ok(nest_ckpt_get_attr(r, "arch", &arch));
  nest_ckpt_close(&r);
  if (want_area && !has_area_buffer(net))
    fail_msg("%s: no conv layer with hp.area = 1 and an \"area\" mask buffer", src);
  /* momentum is really there: some non-zero value after training steps */
  int nonzero = 0;
  for (size_t i = 0; i < net->nparams && !nonzero; ++i) nonzero = net->mom[i] != 0.0f;
  if (!nonzero && seq > 0) fail_msg("%s: momentum all zero", src);
  char buf[4096];
  nest_net_arch_string(net, buf, sizeof buf);
  assert_string_equal(arch, buf); /* the root attribute is the net's arch string */
  free(arch);

  /* write them into a new checkpoint and read it back */
  char dst[1024];
  snprintf(dst, sizeof dst, "%s/roundtrip-%lld.h5", dir, (long long)seq);
  nest_ckpt *w = NULL;
  assert_ok(nest_ckpt_create(dst, &w));
  assert_ok(nest_ckpt_put_net(w, NULL, net, 1));
  if (snap) assert_ok(nest_ckpt_put_net(w, "snapshot", snap, 1));
  assert_ok(nest_ckpt_put(w, "cursor", NEST_CK_I64, cur, 8));
  assert_ok(nest_ckpt_commit(&w));
  assert_null(w);
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", dst);
  assert_false(file_exists(tmp));

  assert_ok(nest_ckpt_open(dst, &r));
  assert_ok(nest_ckpt_get_net(r, NULL, 16, 1, 1, &net2));
  assert_int_equal(nest_ckpt_has_group(r, "snapshot"), want_snapshot);
  if (want_snapshot) assert_ok(nest_ckpt_get_net(r, "snapshot", 16, 1, 1, &snap2));
  int64_t cur2[8];
  assert_ok(nest_ckpt_get(r, "cursor", NEST_CK_I64, cur2, 8));
  assert_memory_equal(cur, cur2, sizeof cur);
  nest_ckpt_close(&r);
  char what[1200];
  snprintf(what, sizeof what, "checkpoint %lld net", (long long)seq);
  same_net(net, net2, what);
  if (want_snapshot) {
    snprintf(what, sizeof what, "checkpoint %lld snapshot", (long long)seq);
    same_net(snap, snap2, what);
  }
  if (want_area) assert_true(has_area_buffer(net2));
  /* a checkpoint is a model file: nest_model_load reads the same net (no momentum) */
  assert_ok(nest_model_load(src, 16, 1, &plain));
  assert_true(nest_net_hash(plain, NEST_HASH_ALL) == nest_net_hash(net, NEST_HASH_ALL));
  printf("  round trip of checkpoint %lld: net%s%s equal (hash %016llx)\n", (long long)seq,
         want_snapshot ? " + snapshot" : "", want_area ? " with area masks" : "",
         (unsigned long long)nest_net_hash(net, NEST_HASH_ALL));
  nest_net_destroy(&net);
  nest_net_destroy(&snap);
  nest_net_destroy(&net2);
  nest_net_destroy(&snap2);
  nest_net_destroy(&plain);
}

static void test_round_trip(void **state) {
  begin("round_trip");
  round_trip(must_pick(is_mid_growth, 1, "mid-growth"), 0, 0);
  round_trip(must_pick(is_mid_pruning, 1, "mid-pruning"), 1, 0);
  round_trip(must_pick(is_mid_area, 1, "mid-area"), 1, 1);
  end("round_trip");
}

/* prune.distill: the teacher is the network the prune phase started from — here the grown one
 * (phases grow, prune, area), model_grown.h5 — bit for bit in every checkpoint from the prune
 * phase on, through the area phase and the final checkpoint; none before. */
static void test_teacher(void **state) {
  begin("teacher");
  char path[1100];
  snprintf(path, sizeof path, "%s/model_grown.h5", ref_dir);
  nest_net *grown = NULL;
  assert_ok(nest_model_load(path, 16, 1, &grown));
  const uint64_t want = nest_net_hash(grown, NEST_HASH_ALL);
  int with = 0;
  for (int i = 0; i < nref; ++i) {
    const rt_ckpt_info *c = &ref_info[i];
    const int due = c->cur.phase >= PRUNE;
    if (c->has_teacher != due)
      fail_msg("checkpoint %lld (phase %d): teacher %s", (long long)ref_seq[i], c->cur.phase,
               due ? "missing" : "present before the prune phase");
    if (!due) continue;
    nest_ckpt *r = NULL;
    nest_net *teacher = NULL;
    assert_ok(nest_ckpt_open(rt_ckpt_path(ref_dir, ref_seq[i]), &r));
    assert_ok(nest_ckpt_get_net(r, "teacher", 16, 1, 0, &teacher));
    nest_ckpt_close(&r);
    if (nest_net_hash(teacher, NEST_HASH_ALL) != want)
      fail_msg("checkpoint %lld: the teacher is not model_grown.h5", (long long)ref_seq[i]);
    nest_net_destroy(&teacher);
    ++with;
  }
  /* the final model was trained away from its teacher */
  snprintf(path, sizeof path, "%s/model.h5", ref_dir);
  nest_net *final = NULL;
  assert_ok(nest_model_load(path, 16, 1, &final));
  assert_true(nest_net_hash(final, NEST_HASH_ALL) != want);
  nest_net_destroy(&final);
  nest_net_destroy(&grown);
  printf("  %d checkpoints hold the teacher, equal to model_grown.h5\n", with);
  end("teacher");
}

/* ---- resume from anywhere ------------------------------------------------------------------ */

static void resume_from(int64_t k, const char *what, int use_resume_flag) {
  char name[64];
  snprintf(name, sizeof name, "at%lld", (long long)k);
  assert_int_equal(rt_cut_copy(ref_dir, run_path(name), k), 0);
  const double t0 = rt_now();
  int code;
  if (use_resume_flag) {
    char args[256];
    snprintf(args, sizeof args, "--resume runs/%s", name);
    code = rt_mpi(dir, 2, args, name, out, sizeof out, err, sizeof err);
  } else {
    code = run_named(2, name, NULL);
  }
  expect_ok(code, name);
  char want[256];
  snprintf(want, sizeof want, "from runs/%s/checkpoints/ckpt-%08lld.h5", name, (long long)k);
  if (!strstr(out, want)) fail_msg("runs/%s: stdout does not say it resumed %s:\n%.3000s", name, want, out);
  expect_same_as_reference(name);
  printf("  resumed from checkpoint %lld (%s, %s) in %.1f s: identical to the reference\n",
         (long long)k, what, use_resume_flag ? "--resume" : "same command", rt_now() - t0);
  fflush(stdout);
}

static void test_resume_everywhere(void **state) {
  begin("resume_everywhere");
  const struct {
    int (*pred)(const rt_ckpt_info *);
    int which;
    const char *what;
  } at[] = {
      {is_mid_growth, 0, "mid-growth epoch"},
      {is_growth_iteration_end, 0, "end of a growth iteration"},
      {is_mid_pruning, 1, "mid-pruning retraining, with snapshot"},
      {is_mid_area, 1, "mid-area retraining, with snapshot and area masks"},
      {is_finetune, 1, "fine-tuning after pruning"},
      {is_any, 2, "the final checkpoint"},
  };
  for (size_t i = 0; i < sizeof at / sizeof at[0]; ++i)
    resume_from(must_pick(at[i].pred, at[i].which, at[i].what), at[i].what, (int)(i & 1));
  end("resume_everywhere");
}

/* ---- SIGUSR1 -------------------------------------------------------------------------------- */

static void test_sigusr1(void **state) {
  begin("sigusr1");
  const char *rd = run_path("sig");
  const pid_t pid = rt_spawn(dir, 2, "synth.ini --set run.run_dir=runs/sig", "sig");
  assert_true(pid > 0);
  const double t0 = rt_now();
  int code = -1;
  while (rt_count_files(rd, ".h5") < 3) {
    if (rt_exited(pid, &code)) {
      nest_test_slurp(nest_test_path(dir, "sig.err"), err, sizeof err);
      fail_msg("the run ended (exit %d) before its third checkpoint:\n%s", code, err);
    }
    if (rt_now() - t0 > 300) {
      rt_kill_tree(pid);
      fail_msg("no third checkpoint after 300 s");
    }
    usleep(2000);
  }
  assert_int_equal(kill(pid, SIGUSR1), 0);
  code = rt_wait(pid, 300);
  nest_test_slurp(nest_test_path(dir, "sig.err"), err, sizeof err);
  nest_test_slurp(nest_test_path(dir, "sig.out"), out, sizeof out);
  if (code != 10) fail_msg("stopped run: exit %d, want 10 (NEST_STOPPED)\n%s", code, err);
  if (rt_count_lines(err, "nest_mpi: stopped by SIGUSR1 after writing runs/sig/checkpoints/ckpt-") != 1)
    fail_msg("no 'stopped by SIGUSR1' line:\n%s", err);
  assert_non_null(strstr(err, "continue with: nest_mpi --resume runs/sig"));
  assert_int_equal(rt_count_lines(err, "nest_mpi: error"), 0);
  /* stopped before the end: no final model */
  char path[1100];
  snprintf(path, sizeof path, "%s/model.h5", rd);
  assert_false(file_exists(path));
  int64_t seqs[MAXCK];
  const int n = rt_list_ckpts(rd, seqs, MAXCK);
  printf("  SIGUSR1 after %d checkpoints: exit 10, newest checkpoint %lld\n", n,
         (long long)seqs[n - 1]);
  code = rt_mpi(dir, 2, "--resume runs/sig", "sig2", out, sizeof out, err, sizeof err);
  expect_ok(code, "--resume runs/sig");
  expect_same_as_reference("sig");
  end("sigusr1");
}

/* SIGUSR1 in the first moments of a run, sent to both ranks: at rank start — the moment the
 * ranks' own code has begun, i.e. the launcher (src/launch.c) has blocked the signal, before
 * nest_mpi.bin and its libraries are even loaded — and 50 ms and 200 ms after the rank processes
 * appeared (libraries loading, MPI starting; no run directory yet). Each run must stop cleanly at
 * its first checkpoint point — exit 10, the stop message, no rank killed by the signal — and the
 * one stopped at rank start resumes to the reference. (Between exec and a program's first
 * instruction no program can guard itself: a signal there takes the default action. The
 * launcher makes that window microseconds, where the libraries' loading made it 100-300 ms.) */
static void test_sigusr1_early(void **state) {
  begin("sigusr1_early");
  const int delay_ms[3] = {0, 50, 200};
  for (int i = 0; i < 3; ++i) {
    char name[32], args[256], log_err[64];
    snprintf(name, sizeof name, "sigearly%d", delay_ms[i]);
    snprintf(args, sizeof args, "synth.ini --set run.run_dir=runs/%s", name);
    const pid_t pid = rt_spawn(dir, 2, args, name);
    assert_true(pid > 0);
    pid_t ranks[8];
    int n = 0, code = -1;
    const double t0 = rt_now();
    while ((n = rt_ranks(pid, ranks, 8)) < 2) {
      if (rt_exited(pid, &code)) fail_msg("%s: the run ended (exit %d) before its ranks started", name, code);
      if (rt_now() - t0 > 120) {
        rt_kill_tree(pid);
        fail_msg("%s: no 2 ranks after 120 s", name);
      }
    }
    const double started = rt_now();
    if (delay_ms[i] == 0) /* rank start: both ranks guard the signal (blocked or caught) */
      for (int r = 0; r < n; ++r)
        while (!rt_guards_signal(ranks[r], SIGUSR1)) {
          if (rt_now() - started > 60) {
            rt_kill_tree(pid);
            fail_msg("%s: rank %d does not block or catch SIGUSR1 after 60 s", name, (int)ranks[r]);
          }
        }
    while (rt_now() - started < delay_ms[i] / 1000.0) usleep(200);
    for (int r = 0; r < n; ++r) kill(ranks[r], SIGUSR1);
    const double at = rt_now() - started;
    code = rt_wait(pid, 300);
    snprintf(log_err, sizeof log_err, "%s.err", name);
    nest_test_slurp(nest_test_path(dir, log_err), err, sizeof err);
    if (code != 10 || strstr(err, "exited on signal"))
      fail_msg("%s: SIGUSR1 %.1f ms after the ranks appeared: exit %d, want 10 (stopped)\n%s",
               name, 1000 * at, code, err);
    char want[256];
    snprintf(want, sizeof want, "nest_mpi: stopped by SIGUSR1 after writing runs/%s/checkpoints/ckpt-", name);
    if (rt_count_lines(err, want) != 1) fail_msg("%s: no '%s' line:\n%s", name, want, err);
    assert_int_equal(rt_count_lines(err, "nest_mpi: error"), 0);
    const char *line = strstr(err, "nest_mpi: stopped");
    printf("  SIGUSR1 to both ranks %s, %.1f ms after they appeared: exit 10: %.*s\n",
           delay_ms[i] ? "later" : "at rank start", 1000 * at,
           (int)(strchr(line, '\n') ? strchr(line, '\n') - line : (long)strlen(line)), line);
  }
  const int code = rt_mpi(dir, 2, "--resume runs/sigearly0", "sigearly0b", out, sizeof out, err,
                          sizeof err);
  expect_ok(code, "--resume runs/sigearly0");
  expect_same_as_reference("sigearly0");
  end("sigusr1_early");
}

/* ---- model.init_from ---------------------------------------------------------------------------- */

/* A run seeded from a model file (model.init_from) resumes after that file moved: the checkpoint
 * holds the network, and the file only seeded the run when it started. */
static void test_init_from_moved(void **state) {
  begin("init_from_moved");
  /* the file to start from: the seed network of a run that trains no epoch */
  expect_ok(run_named(1, "initseed", "--set synthesis.phases=train --set grow.policy= "
                                     "--set train.epochs=0"),
            "seed model run");
  char src[1100], from_dir[1100], moved[1100], cmd[4000];
  snprintf(src, sizeof src, "%s/model.h5", run_path("initseed"));
  snprintf(from_dir, sizeof from_dir, "%s/initdir", dir);
  snprintf(moved, sizeof moved, "%s/initdir.moved", dir);
  snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s' '%s/start.h5'", from_dir, src, from_dir);
  assert_int_equal(system(cmd), 0);
  expect_ok(run_named(2, "initref", "--set model.init_from=initdir/start.h5"), "init_from run");
  /* cut back to a checkpoint mid-pruning; the file moves away; --resume */
  int64_t seqs[MAXCK], k = -1;
  const int n = rt_list_ckpts(run_path("initref"), seqs, MAXCK);
  for (int i = 0; i < n; ++i) {
    rt_ckpt_info c;
    assert_int_equal(rt_read_info(rt_ckpt_path(run_path("initref"), seqs[i]), &c), 0);
    if (k < 0 && is_mid_pruning(&c)) k = seqs[i];
  }
  assert_true(k > 0);
  assert_int_equal(rt_cut_copy(run_path("initref"), run_path("initcut"), k), 0);
  assert_int_equal(rename(from_dir, moved), 0);
  const int code = rt_mpi(dir, 2, "--resume runs/initcut", "initcut", out, sizeof out, err, sizeof err);
  assert_int_equal(rename(moved, from_dir), 0);
  expect_ok(code, "--resume of an init_from run whose file moved");
  char want[256];
  snprintf(want, sizeof want, "from runs/initcut/checkpoints/ckpt-%08lld.h5", (long long)k);
  if (!strstr(out, want)) fail_msg("did not resume %s:\n%.3000s", want, out);
  char why[4096];
  if (rt_compare_runs(run_path("initref"), run_path("initcut"), why, sizeof why) != 0)
    fail_msg("runs/initcut differs from the uninterrupted init_from run: %s", why);
  printf("  model.init_from moved away: resumed checkpoint %lld, same final model as the "
         "uninterrupted run\n", (long long)k);
  end("init_from_moved");
}

/* ---- damaged checkpoints ------------------------------------------------------------------- */

/* Truncate to half. */
static void damage_truncate(const char *path) {
  const long long size = file_size(path);
  assert_true(size > 0);
  assert_int_equal(truncate(path, size / 2), 0);
}

/* Flip bytes inside the first chunk of the first layer's W (HDF5 says where it is). */
static void damage_flip(const char *path) {
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  assert_true(f >= 0);
  hid_t layers = H5Gopen2(f, "layers", H5P_DEFAULT);
  assert_true(layers >= 0);
  char first[256] = "";
  H5G_info_t gi;
  assert_true(H5Gget_info(layers, &gi) >= 0 && gi.nlinks > 0);
  /* groups are named NNN_<name>: the smallest name is layer 0 */
  for (hsize_t i = 0; i < gi.nlinks; ++i) {
    char name[256];
    H5Lget_name_by_idx(layers, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
    if (!first[0] || strcmp(name, first) < 0) snprintf(first, sizeof first, "%s", name);
  }
  char dpath[512];
  snprintf(dpath, sizeof dpath, "%s/W", first);
  hid_t d = H5Dopen2(layers, dpath, H5P_DEFAULT);
  assert_true(d >= 0);
  hid_t sp = H5Dget_space(d);
  hsize_t nchunks = 0;
  assert_true(H5Dget_num_chunks(d, sp, &nchunks) >= 0);
  assert_true(nchunks >= 1);
  hsize_t offset[4];
  unsigned mask = 0;
  haddr_t addr = 0;
  hsize_t size = 0;
  assert_true(H5Dget_chunk_info(d, sp, 0, offset, &mask, &addr, &size) >= 0);
  H5Sclose(sp);
  H5Dclose(d);
  H5Gclose(layers);
  H5Fclose(f);
  assert_true(size >= 8);
  const int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  unsigned char b[4];
  const off_t at = (off_t)addr + (off_t)(size / 2);
  assert_int_equal(pread(fd, b, 4, at), 4);
  for (int i = 0; i < 4; ++i) b[i] ^= 0x5a;
  assert_int_equal(pwrite(fd, b, 4, at), 4);
  close(fd);
  printf("  flipped 4 bytes of /layers/%s/W at file offset %lld (chunk of %llu bytes)\n", first,
         (long long)at, (unsigned long long)size);
}

static void damage_unlink_cursor(const char *path) {
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  assert_true(f >= 0);
  assert_true(H5Ldelete(f, "/state/cursor", H5P_DEFAULT) >= 0);
  assert_true(H5Fclose(f) >= 0);
}

static void damage_version(const char *path) {
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  assert_true(f >= 0);
  hid_t a = H5Aopen(f, "checkpoint_version", H5P_DEFAULT);
  assert_true(a >= 0);
  const int v = 99;
  assert_true(H5Awrite(a, H5T_NATIVE_INT, &v) >= 0);
  H5Aclose(a);
  assert_true(H5Fclose(f) >= 0);
}

static void corrupt_and_resume(const char *name, int64_t k, void (*damage)(const char *),
                               const char *problem) {
  const char *rd = run_path(name);
  assert_int_equal(rt_cut_copy(ref_dir, rd, k), 0);
  char ck[1100], bad[1200];
  snprintf(ck, sizeof ck, "%s", rt_ckpt_path(rd, k));
  snprintf(bad, sizeof bad, "%s.bad", ck);
  damage(ck);
  const int code = run_named(2, name, NULL);
  expect_ok(code, name);
  char line[4096], file[256];
  snprintf(file, sizeof file, "runs/%s/checkpoints/ckpt-%08lld.h5", name, (long long)k);
  warning_line(file, line, sizeof line);
  if (!strstr(line, problem)) fail_msg("%s: the warning does not say '%s': %s", name, problem, line);
  assert_non_null(strstr(line, "renamed to *.bad; trying the previous checkpoint"));
  if (!file_exists(bad)) fail_msg("%s is missing", bad);
  char want[256];
  snprintf(want, sizeof want, "from runs/%s/checkpoints/ckpt-%08lld.h5", name, (long long)(k - 1));
  if (!strstr(out, want)) fail_msg("%s: did not resume %s:\n%.3000s", name, want, out);
  expect_same_as_reference(name);
  printf("  %s: %s\n", name, line);
  fflush(stdout);
}

/* Every file under dir (recursively): "path size mtime" lines, sorted. */
static void listing(const char *rd, char *buf, size_t cap) {
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "cd '%s' && find . -type f -printf '%%p %%s %%T@\\n' | sort", rd);
  assert_int_equal(nest_test_run(cmd, buf, cap, NULL, 0), 0);
}

static void test_corruption(void **state) {
  begin("corruption");
  /* k: mid-pruning (its predecessor is a checkpoint of the same retraining or the iteration
   * start); k - 1 must exist in the reference run */
  const int64_t k = must_pick(is_mid_pruning, 1, "mid-pruning");
  assert_non_null(info_of(k - 1));
  corrupt_and_resume("trunc", k, damage_truncate, "truncated or corrupt");
  corrupt_and_resume("flip", k, damage_flip, "cannot read /layers/");
  corrupt_and_resume("nocursor", k, damage_unlink_cursor, "missing dataset /state/cursor");
  corrupt_and_resume("version", k, damage_version, "checkpoint_version 99 not supported");

  /* (e) the only checkpoint is damaged: one clear error, nothing written */
  const char *rd = run_path("onlybad");
  assert_int_equal(rt_cut_copy(ref_dir, rd, 0), 0);
  int64_t seqs[4];
  assert_int_equal(rt_list_ckpts(rd, seqs, 4), 1);
  damage_truncate(rt_ckpt_path(rd, 0));
  static char before[1 << 14], after[1 << 14];
  listing(rd, before, sizeof before);
  const int code = run_named(2, "onlybad", NULL);
  if (code == 0 || code >= 124) fail_msg("only a damaged checkpoint: exit %d\n%s", code, err);
  char line[4096];
  error_line(line, sizeof line);
  if (!strstr(line, "no valid checkpoint")) fail_msg("error line: %s", line);
  assert_non_null(strstr(line, "runs/onlybad/checkpoints"));
  printf("  onlybad: exit %d: %s\n", code, line);
  listing(rd, after, sizeof after);
  /* the damaged file was renamed *.bad (same size and time), nothing else changed */
  static char expect[1 << 14];
  const char *from = "./checkpoints/ckpt-00000000.h5 ", *p = strstr(before, from);
  assert_non_null(p);
  snprintf(expect, sizeof expect, "%.*s./checkpoints/ckpt-00000000.h5.bad %s", (int)(p - before),
           before, p + strlen(from));
  if (strcmp(expect, after) != 0)
    fail_msg("the run directory changed:\nbefore (with the rename):\n%s\nafter:\n%s", expect, after);
  end("corruption");
}

/* The newest checkpoint cannot be opened — a symbolic link into a file system that is not
 * mounted (stat: ENOENT), as an unavailable file looks from a rank. That is no proof of damage:
 * the run must stop with an I/O error naming it and leave it in place (not renamed *.bad, the
 * older ones not used); once the file is back, the same command resumes from it. */
static void test_io_error_not_damage(void **state) {
  begin("io_error_not_damage");
  const int64_t k = must_pick(is_mid_pruning, 1, "mid-pruning");
  const char *rd = run_path("ioerr");
  assert_int_equal(rt_cut_copy(ref_dir, rd, k), 0);
  char ck[1100], mnt[1100], off[1100], target[1200], cmd[8192];
  snprintf(ck, sizeof ck, "%s", rt_ckpt_path(rd, k));
  snprintf(mnt, sizeof mnt, "%s/mnt", dir);
  snprintf(off, sizeof off, "%s/mnt.off", dir);
  snprintf(target, sizeof target, "%s/ckpt.h5", mnt);
  snprintf(cmd, sizeof cmd, "mkdir -p '%s' && mv '%s' '%s' && ln -s '%s' '%s' && mv '%s' '%s'", mnt,
           ck, target, target, ck, mnt, off);
  assert_int_equal(system(cmd), 0);
  int code = run_named(2, "ioerr", NULL);
  if (code != 3) fail_msg("unreadable newest checkpoint: exit %d, want 3 (I/O error)\n%s\n%s", code,
                          out, err);
  char line[4096];
  error_line(line, sizeof line);
  char file[256];
  snprintf(file, sizeof file, "runs/ioerr/checkpoints/ckpt-%08lld.h5", (long long)k);
  if (!strstr(line, file) || !strstr(line, "not renamed"))
    fail_msg("the error line does not name %s and say it was not renamed: %s", file, line);
  assert_int_equal(rt_count_files(rd, ".bad"), 0);
  struct stat sb;
  assert_int_equal(lstat(ck, &sb), 0);
  assert_true(S_ISLNK(sb.st_mode));
  printf("  newest checkpoint unreadable: exit 3: %s\n", line);
  assert_int_equal(rename(off, mnt), 0); /* mounted again */
  code = run_named(2, "ioerr", NULL);
  expect_ok(code, "resume once the checkpoint is readable");
  char want[256];
  snprintf(want, sizeof want, "from runs/ioerr/checkpoints/ckpt-%08lld.h5", (long long)k);
  if (!strstr(out, want)) fail_msg("did not resume %s:\n%.3000s", want, out);
  expect_same_as_reference("ioerr");
  end("io_error_not_damage");
}

/* ---- a file size limit ---------------------------------------------------------------------- */

static void test_disk_full(void **state) {
  begin("disk_full");
  /* the first checkpoint with a snapshot, and the largest before it */
  const int64_t first_snap = must_pick(is_mid_pruning, 0, "mid-pruning");
  long long before_max = 0;
  for (int i = 0; i < nref && ref_seq[i] < first_snap; ++i) {
    const long long s = file_size(rt_ckpt_path(ref_dir, ref_seq[i]));
    if (s > before_max) before_max = s;
  }
  const long long snap_size = file_size(rt_ckpt_path(ref_dir, first_snap));
  if (!(snap_size > before_max + 4096))
    fail_msg("checkpoint %lld (%lld bytes, snapshot) is not larger than the earlier ones (%lld)",
             (long long)first_snap, snap_size, before_max);
  const long unit = rt_ulimit_unit();
  assert_true(unit > 0);
  const long long limit = (before_max + snap_size) / 2 / unit;
  printf("  largest checkpoint before %lld: %lld bytes; checkpoint %lld: %lld bytes; "
         "ulimit -f %lld (x %ld bytes)\n", (long long)first_snap, before_max,
         (long long)first_snap, snap_size, limit, unit);
  /* The limit is set inside each rank (mpiexec and Open MPI's shared memory need larger
   * files), and the ranks talk over TCP: the vader BTL's shared-memory segment is a file. */
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "mpiexec -n 2 --oversubscribe --mca btl self,tcp sh -c 'ulimit -f %lld && exec "
           "%s/nest_mpi \"$@\"' sh synth.ini --set run.run_dir=runs/full", limit, NEST_BINARY_DIR);
  int code = rt_shell(dir, cmd, "full", out, sizeof out, err, sizeof err);
  const char *rd = run_path("full");
  printf("  limited run: exit %d\n", code);
  if (code == 0) fail_msg("the run under ulimit -f %lld succeeded:\n%s", limit, err);
  char line[4096];
  error_line(line, sizeof line);
  char want[256];
  snprintf(want, sizeof want, "runs/full/checkpoints/ckpt-%08lld.h5", (long long)first_snap);
  if (!strstr(line, want)) fail_msg("the error does not name %s: %s", want, line);
  if (!strstr(line, "File too large")) fail_msg("the error does not say 'File too large': %s", line);
  printf("  %s\n", line);
  /* every earlier checkpoint is intact and loads */
  int64_t seqs[MAXCK];
  const int n = rt_list_ckpts(rd, seqs, MAXCK);
  assert_int_equal(n, (int)first_snap); /* 0 .. first_snap - 1 */
  for (int i = 0; i < n; ++i) {
    nest_ckpt *r = NULL;
    nest_net *net = NULL;
    assert_ok(nest_ckpt_open(rt_ckpt_path(rd, seqs[i]), &r));
    assert_ok(nest_ckpt_get_net(r, NULL, 16, 1, 1, &net));
    nest_net_destroy(&net);
    nest_ckpt_close(&r);
  }
  const int tmps = rt_count_files(rd, ".tmp");
  printf("  %d earlier checkpoints load; %d .tmp file(s) left\n", n, tmps);
  if (tmps != 0 && !strstr(err, ".tmp")) fail_msg("a .tmp was left behind and not reported");
  /* nest_mpi's own error exit (NEST_ERR_IO), not a crash; checked after the resume below so
   * that a failure here still shows whether the run can be continued */
  char crash[1 << 12] = "";
  if (code != 3 || strstr(err, "Segmentation fault") || strstr(err, "exited on signal"))
    snprintf(crash, sizeof crash, "the limited run should end with nest's I/O error (exit 3) on "
             "every rank; got exit %d:\n%.3000s", code, err);
  /* without the limit the same command resumes and ends as the reference */
  code = run_named(2, "full", NULL);
  expect_ok(code, "resume after the size limit");
  expect_same_as_reference("full");
  printf("  resumed without the limit: identical to the reference\n");
  if (crash[0]) fail_msg("%s", crash);
  end("disk_full");
}

/* ---- another rank count ----------------------------------------------------------------------- */

static void test_rank_change(void **state) {
  begin("rank_change");
  expect_ok(run_named(1, "np1", NULL), "1-rank run");
  const double err1 = rt_summary_value(run_path("np1"), "test_error");
  /* cut back to an early checkpoint (mid-growth), resume at 2 ranks */
  int64_t seqs[MAXCK];
  int n = rt_list_ckpts(run_path("np1"), seqs, MAXCK);
  int64_t early = -1;
  for (int i = 0; i < n && early < 0; ++i) {
    rt_ckpt_info c;
    assert_int_equal(rt_read_info(rt_ckpt_path(run_path("np1"), seqs[i]), &c), 0);
    if (is_mid_growth(&c)) early = seqs[i];
  }
  assert_true(early >= 0);
  assert_int_equal(rt_cut_copy(run_path("np1"), run_path("np2"), early), 0);
  expect_ok(run_named(2, "np2", NULL), "resume at 2 ranks");
  char want[128];
  snprintf(want, sizeof want, "ckpt-%08lld.h5", (long long)early);
  if (!strstr(out, want)) fail_msg("the 2-rank run did not resume %s:\n%.3000s", want, out);
  /* cut that back to a checkpoint the 2-rank part wrote mid-pruning, resume at 4 ranks */
  n = rt_list_ckpts(run_path("np2"), seqs, MAXCK);
  int64_t later = -1;
  for (int i = 0; i < n && later < 0; ++i) {
    rt_ckpt_info c;
    assert_int_equal(rt_read_info(rt_ckpt_path(run_path("np2"), seqs[i]), &c), 0);
    if (c.nranks == 2 && is_mid_pruning(&c)) later = seqs[i];
  }
  assert_true(later >= 0);
  assert_int_equal(rt_cut_copy(run_path("np2"), run_path("np4"), later), 0);
  expect_ok(run_named(4, "np4", NULL), "resume at 4 ranks");
  snprintf(want, sizeof want, "ckpt-%08lld.h5", (long long)later);
  if (!strstr(out, want)) fail_msg("the 4-rank run did not resume %s:\n%.3000s", want, out);
  const double err2 = rt_summary_value(run_path("np2"), "test_error");
  const double err4 = rt_summary_value(run_path("np4"), "test_error");
  printf("  test error: 1 rank %.4f; 1 -> 2 ranks at checkpoint %lld: %.4f; -> 4 ranks at "
         "checkpoint %lld: %.4f\n", err1, (long long)early, err2, (long long)later, err4);
  assert_false(isnan(err1) || isnan(err2) || isnan(err4));
  if (fabs(err4 - err1) > 0.05 || fabs(err2 - err1) > 0.05)
    fail_msg("test error after rank changes %.4f / %.4f, 1-rank run %.4f", err2, err4, err1);
  end("rank_change");
}

/* ---- h5dump ------------------------------------------------------------------------------------ */

static void test_h5dump(void **state) {
  begin("h5dump");
  if (system("command -v h5dump >/dev/null 2>&1") != 0) {
    printf("SKIP: h5dump not found (hdf5-tools)\n");
    skip();
  }
  const int64_t k = must_pick(is_mid_pruning, 1, "mid-pruning");
  char cmd[2048];
  static char dump[1 << 20];
  snprintf(cmd, sizeof cmd, "h5dump -H -p '%s'", rt_ckpt_path(ref_dir, k));
  assert_int_equal(nest_test_run(cmd, dump, sizeof dump, NULL, 0), 0);
  const char *want[] = {"GROUP \"layers\"", "GROUP \"state\"", "DATASET \"cursor\"",
                        "DATASET \"W_momentum\"", "DATASET \"W_mask\"", "GROUP \"snapshot\"",
                        "FLETCHER32", "ATTRIBUTE \"checkpoint_version\"", "DATASET \"progress\"",
                        "ATTRIBUTE \"config\""};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; ++i)
    if (!strstr(dump, want[i])) fail_msg("h5dump -H -p of checkpoint %lld lacks %s", (long long)k, want[i]);
  end("h5dump");
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),   cmocka_unit_test(test_teacher),
      cmocka_unit_test(test_h5dump),
      cmocka_unit_test(test_resume_everywhere), cmocka_unit_test(test_sigusr1),
      cmocka_unit_test(test_sigusr1_early), cmocka_unit_test(test_init_from_moved),
      cmocka_unit_test(test_corruption),   cmocka_unit_test(test_io_error_not_damage),
      cmocka_unit_test(test_disk_full),    cmocka_unit_test(test_rank_change),
  };
  /* NEST_TEST_FILTER=test_sigusr1* runs only the matching tests (after the reference run) */
  if (getenv("NEST_TEST_FILTER")) cmocka_set_test_filter(getenv("NEST_TEST_FILTER"));
  return cmocka_run_group_tests(tests, setup, NULL);
}
