/* test_scann_restart.c — checkpoint/restart of a SCANN run with skip connections, nest_mpi as a
 * user runs it (restart_util.c): LeNet-5 at width 0.25 on synthetic 28x28 images with the skip
 * pool2 > fc2 at 10% seed density, train -> scann (scheme B, 3 iterations of 1 epoch), a
 * checkpoint every 5 steps. One uninterrupted 2-rank run is the reference; then
 *   - round trip: a checkpoint inside the scann phase holds the network with its skip tensor and
 *     the best network so far (scann_best), both loadable, with the mask hashes of the run;
 *   - resume from checkpoints inside an operation's training, at the end of an operation and
 *     the final one: final model, metrics.csv and events.csv identical to the reference;
 *   - killed (SIGKILL) four times at random moments and restarted with the same command:
 *     identical to the reference;
 *   - DR+SCANN (dr.h): a run that reduces a synthetic 12-feature CSV to 4 (PCA or a sparse
 *     projection, the better by the baseline) before scheme C, resumed from checkpoints inside
 *     the scann phase, identical to its uninterrupted run (the reduction is the same one). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nest/ckpt.h"
#include "nest/model.h"
#include "restart_util.h"
#include "test_util.h"

static const char *dir;
static char out[1 << 17], err[1 << 17];
static char ref_dir[1024];
#define MAXCK 1024
static int64_t ref_seq[MAXCK];
static rt_ckpt_info ref_info[MAXCK];
static int nref;
enum { TRAIN = 0, SCANN = 1 };

#define SCANN_ARGS                                                                             \
  "--set synthesis.phases=train,scann --set synthesis.scheme=B --set grow.policy= "            \
  "--set model.skips=all --set model.skip_density=0.1 --set train.epochs=1 "                   \
  "--set scann.iterations=3 --set scann.epochs=1 --set scann.keep_tolerance=0.05"

static const char *run_path(const char *name) {
  static char bufs[4][1024];
  static int next;
  char *b = bufs[next++ & 3];
  snprintf(b, 1024, "%s/runs/%s", dir, name);
  return b;
}

static void args_for(const char *name, char *args, size_t cap) {
  snprintf(args, cap, "synth.ini --set run.run_dir=runs/%s " SCANN_ARGS, name);
}

static int setup(void **state) {
  (void)state;
  rt_become_subreaper();
  dir = nest_test_tmpdir();
  if (rt_make_data(dir) != 0 || rt_write_config(dir, "synth.ini", NULL) != 0) return -1;
  snprintf(ref_dir, sizeof ref_dir, "%s/runs/ref", dir);
  char args[1024];
  args_for("ref", args, sizeof args);
  const double t0 = rt_now();
  const int code = rt_mpi(dir, 2, args, "ref", out, sizeof out, err, sizeof err);
  if (code != 0) {
    fprintf(stderr, "reference run: exit %d\n%s\n%s\n", code, out, err);
    return -1;
  }
  nref = rt_list_ckpts(ref_dir, ref_seq, MAXCK);
  for (int i = 0; i < nref; ++i)
    if (rt_read_info(rt_ckpt_path(ref_dir, ref_seq[i]), &ref_info[i]) != 0) return -1;
  printf("reference run (2 ranks): %.1f s, %d checkpoints\n", rt_now() - t0, nref);
  fflush(stdout);
  return 0;
}

static int64_t pick(int phase, int part, int mid_epoch) {
  int idx[MAXCK], n = 0;
  for (int i = 0; i < nref; ++i) {
    const nest_cursor *c = &ref_info[i].cur;
    if (c->phase == phase && c->part == part && (mid_epoch ? c->step > 0 : c->iter >= 2))
      idx[n++] = i;
  }
  if (n == 0) fail_msg("no reference checkpoint in phase %d part %d", phase, part);
  return ref_seq[idx[n / 2]];
}

static void test_round_trip(void **state) {
  (void)state;
  const int64_t k = pick(SCANN, 1, 1);
  nest_ckpt *ck = NULL;
  if (nest_ckpt_open(rt_ckpt_path(ref_dir, k), &ck) != NEST_OK)
    fail_msg("open: %s", nest_error_message());
  nest_net *net = NULL, *best = NULL;
  assert_int_equal(nest_ckpt_get_net(ck, NULL, 8, 1, 1, &net), NEST_OK);
  assert_true(net->nskips > 0);
  assert_true(nest_ckpt_has_group(ck, "scann_best"));
  assert_int_equal(nest_ckpt_get_net(ck, "scann_best", 8, 1, 1, &best), NEST_OK);
  assert_true(best->nskips > 0);
  /* the file holds what was written: the model loader reads the same net and masks */
  nest_net *again = NULL;
  assert_int_equal(nest_model_load(rt_ckpt_path(ref_dir, k), 8, 1, &again), NEST_OK);
  assert_true(nest_net_hash(again, NEST_HASH_ALL) == nest_net_hash(net, NEST_HASH_ALL));
  nest_net_destroy(&again);
  nest_net_destroy(&net);
  nest_net_destroy(&best);
  nest_ckpt_close(&ck);
}

static void resume_from(int64_t k, const char *what) {
  char name[64], args[1024], why[4096];
  snprintf(name, sizeof name, "at%lld", (long long)k);
  assert_int_equal(rt_cut_copy(ref_dir, run_path(name), k), 0);
  args_for(name, args, sizeof args);
  const int code = rt_mpi(dir, 2, args, name, out, sizeof out, err, sizeof err);
  if (code != 0) fail_msg("%s: exit %d\n%s", name, code, err);
  if (rt_compare_runs(ref_dir, run_path(name), why, sizeof why) != 0)
    fail_msg("resumed from checkpoint %lld (%s): differs from the reference: %s", (long long)k,
             what, why);
  printf("  resumed from checkpoint %lld (%s): identical to the reference\n", (long long)k, what);
  fflush(stdout);
}

static void test_resume(void **state) {
  (void)state;
  resume_from(pick(SCANN, 1, 1), "inside an operation's training");
  resume_from(pick(SCANN, 0, 0), "at the end of an operation");
  resume_from(ref_seq[nref - 1], "the final checkpoint");
}

static void test_kills(void **state) {
  (void)state;
  const char *rd = run_path("kill");
  char args[1024], why[4096];
  args_for("kill", args, sizeof args);
  for (int i = 0; i < 4; ++i) {
    char log[32];
    snprintf(log, sizeof log, "kill%d", i);
    int64_t s0[MAXCK];
    const int n0 = rt_list_ckpts(rd, s0, MAXCK);
    const int64_t newest0 = n0 > 0 ? s0[n0 - 1] : -1;
    const pid_t pid = rt_spawn(dir, 2, args, log);
    assert_true(pid > 0);
    const double delay = 0.05 + 0.1 * i, t0 = rt_now();
    double t1 = -1;
    int code = 0;
    while (!rt_exited(pid, &code)) { /* a kill counted from this run's first checkpoint */
      const double now = rt_now();
      if (t1 < 0) {
        int64_t sq[MAXCK];
        const int n = rt_list_ckpts(rd, sq, MAXCK);
        if ((n > 0 && sq[n - 1] > newest0) || now - t0 > 300) t1 = now;
      } else if (now - t1 >= delay) {
        break;
      }
      usleep(1000);
    }
    if (rt_exited(pid, &code)) fail_msg("kill %d: the run ended (%d) before the kill", i + 1, code);
    rt_kill_tree(pid);
    printf("  kill %d after %.2f s\n", i + 1, rt_now() - t0);
    fflush(stdout);
  }
  const int code = rt_mpi(dir, 2, args, "kill_final", out, sizeof out, err, sizeof err);
  if (code != 0) fail_msg("final run: exit %d\n%s", code, err);
  if (rt_compare_runs(ref_dir, rd, why, sizeof why) != 0)
    fail_msg("the run killed 4 times differs from the reference: %s", why);
}

/* DR+SCANN on a CSV: reduce 12 -> 4 features, then train -> scann (scheme C) */
static const char dr_ini[] =
    "[run]\nseed = 2\nthreads = 1\nout_dir = runs\n"
    "[data]\ntrain = train.csv\ntest = test.csv\nformat = csv\ncsv_label_col = 0\n"
    "val_split = 0.2\n"
    "[model]\narch = mlp:12-16-8-3\n"
    "[dr]\nreduce = pca, sparse\nk = 4\nbaseline_epochs = 2\n"
    "[synthesis]\nscheme = C\n"
    "[scann]\niterations = 3\nepochs = 1\nkeep_tolerance = 0.05\n"
    "[train]\nepochs = 2\nbatch = 20\n"
    "[optim]\nlr = 0.05\nmomentum = 0.9\n"
    "[checkpoint]\nevery_steps = 5\nkeep = 1000\nevery_minutes = 0\n";

static void test_dr_resume(void **state) {
  (void)state;
  assert_int_equal(nest_test_write_factor_csv(nest_test_path(dir, "train.csv"), 400, 1), 0);
  assert_int_equal(nest_test_write_factor_csv(nest_test_path(dir, "test.csv"), 120, 2), 0);
  assert_int_equal(nest_test_write_file(nest_test_path(dir, "dr.ini"), dr_ini, strlen(dr_ini)), 0);
  const char *ref = run_path("dr_ref");
  int code = rt_mpi(dir, 2, "dr.ini --set run.run_dir=runs/dr_ref", "dr_ref", out, sizeof out,
                    err, sizeof err);
  if (code != 0) fail_msg("DR reference run: exit %d\n%s", code, err);
  { /* the run did reduce: its model applies a 12 -> 4 reduction to raw rows */
    char mp[1100];
    snprintf(mp, sizeof mp, "%s/model.h5", ref);
    nest_model_input in;
    assert_int_equal(nest_model_read_input(mp, &in), NEST_OK);
    assert_non_null(in.reduce);
    assert_int_equal(in.reduce->k, 4);
    nest_model_input_free(&in);
  }
  int64_t seq[MAXCK], picks[2] = {-1, -1};
  const int n = rt_list_ckpts(ref, seq, MAXCK);
  for (int i = 0; i < n; ++i) { /* the first mid-epoch and the last end-of-operation one */
    rt_ckpt_info info;
    assert_int_equal(rt_read_info(rt_ckpt_path(ref, seq[i]), &info), 0);
    if (info.cur.phase != SCANN) continue;
    if (info.cur.step > 0 && picks[0] < 0) picks[0] = seq[i];
    if (info.cur.step == 0 && i < n - 1) picks[1] = seq[i];
  }
  for (int j = 0; j < 2; ++j) {
    if (picks[j] < 0) fail_msg("DR run: no checkpoint %s in the scann phase",
                               j ? "at an operation's end" : "inside an operation");
    char name[64], args[256], why[4096];
    snprintf(name, sizeof name, "dr_at%lld", (long long)picks[j]);
    assert_int_equal(rt_cut_copy(ref, run_path(name), picks[j]), 0);
    snprintf(args, sizeof args, "dr.ini --set run.run_dir=runs/%s", name);
    code = rt_mpi(dir, 2, args, name, out, sizeof out, err, sizeof err);
    if (code != 0) fail_msg("%s: exit %d\n%s", name, code, err);
    if (rt_compare_runs(ref, run_path(name), why, sizeof why) != 0)
      fail_msg("DR run resumed from checkpoint %lld differs: %s", (long long)picks[j], why);
    printf("  DR+SCANN resumed from checkpoint %lld (%s): identical to the reference\n",
           (long long)picks[j], j ? "at an operation's end" : "inside an operation");
    fflush(stdout);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_resume),
      cmocka_unit_test(test_kills),
      cmocka_unit_test(test_dr_resume),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
