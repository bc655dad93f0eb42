/* test_shards_run.c — nest_mpi end to end on synthetic image shards at 2 ranks: a grow ->
 * prune run (LeNet-5 at width 0.25 on 3x32x32 shards, crop 28 + flip, the prefetch thread, the
 * growth and pruning passes reading shards) completes; the same run resumed with --resume from
 * a checkpoint in its middle ends bit-identical to it (restart_util.c's comparison: final
 * model, metrics.csv, events.csv). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "nest/data.h"
#include "restart_util.h"
#include "test_util.h"

static char out[1 << 16], err[1 << 14];

static void expect_ok(int code, const char *what) {
  if (code != 0)
    fail_msg("%s: exit %d\nstdout (tail):\n%s\nstderr:\n%s", what, code,
             strlen(out) > 3000 ? out + strlen(out) - 3000 : out, err);
}

static void test_run_and_resume(void **state) {
  const char *dir = nest_test_tmpdir();
  char p[2048];
  snprintf(p, sizeof p, "%s/train", dir);
  assert_ok(nest_shards_synthetic(p, 400, (nest_shape){3, 32, 32}, 4, 100, 7, 0, NULL));
  snprintf(p, sizeof p, "%s/test", dir);
  assert_ok(nest_shards_synthetic(p, 100, (nest_shape){3, 32, 32}, 4, 100, 7, 400, NULL));
  const char *ini =
      "[run]\nseed = 3\nthreads = 1\nout_dir = runs\n"
      "[data]\ntrain = train-*.h5\ntest = test-*.h5\nval_split = 0.2\n"
      "[model]\narch = lenet5\nwidth = 0.25\ndensity = 0.3\n"
      "[augment]\ncrop = 28\nflip = 1\n"
      "[synthesis]\nphases = grow, prune\n"
      "[train]\nbatch = 40\n"
      "[optim]\nlr = 0.01\nmomentum = 0.9\n"
      "[grow]\npolicy = conn\niterations = 1\ntrain_epochs = 1\n"
      "[prune]\nretrain_steps = 4\niterations = 1\ntolerance = 0.05\nepochs = 1\n"
      "[checkpoint]\nevery_steps = 3\nkeep = 1000\nevery_minutes = 0\n";
  assert_int_equal(nest_test_write_file(nest_test_path(dir, "shards.ini"), ini, strlen(ini)), 0);
  const double t0 = rt_now();
  expect_ok(rt_mpi(dir, 2, "shards.ini --set run.run_dir=runs/ref", "ref", out, sizeof out, err,
                   sizeof err), "reference run");
  char ref[2048];
  snprintf(ref, sizeof ref, "%s/runs/ref", dir);
  int64_t seq[512];
  const int n = rt_list_ckpts(ref, seq, 512);
  printf("reference run (2 ranks): %.1f s, %d checkpoints, test error %.4f\n", rt_now() - t0, n,
         rt_summary_value(ref, "test_error"));
  assert_true(n >= 4);
  const int64_t k = seq[n / 2];
  char mid[2048];
  snprintf(mid, sizeof mid, "%s/runs/mid", dir);
  assert_int_equal(rt_cut_copy(ref, mid, k), 0);
  expect_ok(rt_mpi(dir, 2, "--resume runs/mid", "mid", out, sizeof out, err, sizeof err), "resume");
  char want[256];
  snprintf(want, sizeof want, "from runs/mid/checkpoints/ckpt-%08lld.h5", (long long)k);
  if (!strstr(out, want)) fail_msg("stdout does not say it resumed %s:\n%.3000s", want, out);
  char why[1024];
  if (rt_compare_runs(ref, mid, why, sizeof why) != 0)
    fail_msg("resumed from checkpoint %lld: differs from the reference: %s", (long long)k, why);
  printf("resumed from checkpoint %lld: identical to the reference\n", (long long)k);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_run_and_resume)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
