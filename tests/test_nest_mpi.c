/* test_nest_mpi.c — nest_mpi as a user runs it, under `mpiexec -n 2`: every bad input gives a
 * one-line error naming the file and a non-zero exit on every rank, with no rank left hanging
 * (each run is under `timeout`); a good run writes a complete run directory; an existing run
 * is never overwritten. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "nest/data.h"
#include "test_util.h"

static const char *dir;
static char out[65536], err[65536];

/* Run `timeout 120 mpiexec -n 2 nest_mpi ARGS`; capture stdout/stderr; return the exit code
 * (124 = timed out: a rank hung). */
static int run(const char *args) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && timeout 120 mpiexec -n 2 --oversubscribe %s/nest_mpi %s >'%s/out.txt' "
           "2>'%s/err.txt'",
           dir, NEST_BINARY_DIR, args, dir, dir);
  int rc = system(cmd);
  int code = WIFEXITED(rc) ? WEXITSTATUS(rc) : 255;
  FILE *f = fopen(nest_test_path(dir, "out.txt"), "r");
  size_t n = f ? fread(out, 1, sizeof out - 1, f) : 0;
  out[n] = 0;
  if (f) fclose(f);
  f = fopen(nest_test_path(dir, "err.txt"), "r");
  n = f ? fread(err, 1, sizeof err - 1, f) : 0;
  err[n] = 0;
  if (f) fclose(f);
  return code;
}

/* Our error line (Open MPI may add its own notice after it): exactly one, containing `want`. */
static void expect_error(int code, const char *want) {
  if (code == 0 || code == 124) fail_msg("exit code %d; stderr:\n%s", code, err);
  int lines = 0;
  const char *p = err, *line = NULL;
  while ((p = strstr(p, "nest_mpi: error: ")) != NULL) {
    if (!line) line = p;
    ++lines;
    ++p;
  }
  if (lines != 1) fail_msg("expected one error line, got %d:\n%s", lines, err);
  const char *eol = strchr(line, '\n');
  char buf[2048];
  snprintf(buf, sizeof buf, "%.*s", (int)(eol ? eol - line : (long)strlen(line)), line);
  if (!strstr(buf, want)) fail_msg("error line lacks '%s': %s", want, buf);
}

static void write_text(const char *name, const char *text) {
  assert_int_equal(nest_test_write_file(nest_test_path(dir, name), text, strlen(text)), 0);
}

static int setup(void **state) {
  dir = nest_test_tmpdir();
  /* A small learnable dataset in nest's HDF5 format. */
  nest_dataset *ds;
  if (nest_dataset_synthetic(600, (nest_shape){1, 8, 8}, 3, 0.3f, 4, 1, &ds) != NEST_OK) return -1;
  nest_status st = nest_dataset_save_h5(ds, nest_test_path(dir, "synth.h5"));
  nest_dataset_destroy(&ds);
  if (st != NEST_OK) return -1;
  write_text("good.ini",
             "[data]\ntrain = synth.h5\ntest = synth.h5\nval_split = 0.2\n"
             "[model]\narch = mlp:64-16-3\ndensity = 0.5\n"
             "[train]\nepochs = 3\nbatch = 30\n[optim]\nlr = 0.1\n[run]\nout_dir = runs\n"
             "hash_every = 5\n");
  return 0;
}

static void test_good_run_and_no_overwrite(void **state) {
  int code = run("good.ini --set run.run_dir=runs/r1");
  if (code != 0) fail_msg("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, err);
  assert_non_null(strstr(out, "epoch   3/3"));
  assert_non_null(strstr(out, "img/s"));
  /* Run directory: effective config, one metrics row per epoch, summary. */
  char path[1024];
  snprintf(path, sizeof path, "%s/runs/r1/metrics.csv", dir);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char line[1024];
  int rows = 0;
  assert_non_null(fgets(line, sizeof line, f));
  assert_non_null(strstr(line, "val_acc"));
  while (fgets(line, sizeof line, f)) ++rows;
  fclose(f);
  assert_int_equal(rows, 3);
  struct stat sb;
  snprintf(path, sizeof path, "%s/runs/r1/summary.txt", dir);
  assert_int_equal(stat(path, &sb), 0);
  snprintf(path, sizeof path, "%s/runs/r1/config.ini", dir);
  assert_int_equal(stat(path, &sb), 0);
  /* The effective config reproduces the run: it loads and runs again. */
  code = run("runs/r1/config.ini --set run.run_dir=runs/r2 --set train.epochs=1");
  if (code != 0) fail_msg("rerun from effective config: exit %d\n%s", code, err);

  /* Same run directory again: refused, and the earlier results stay intact. */
  snprintf(path, sizeof path, "%s/runs/r1/metrics.csv", dir);
  stat(path, &sb);
  off_t before = sb.st_size;
  code = run("good.ini --set run.run_dir=runs/r1");
  expect_error(code, "already holds a run");
  stat(path, &sb);
  assert_int_equal(sb.st_size, before);
}

static void test_bad_inputs(void **state) {
  expect_error(run("missing.ini"), "missing.ini");
  write_text("badkey.ini", "[optim]\nlr = 0.1\nlrr = 0.2\n");
  expect_error(run("badkey.ini"), "badkey.ini:3");
  write_text("badval.ini", "[data]\ntrain = synth.h5\n[train]\nbatch = many\n");
  expect_error(run("badval.ini"), "batch");
  expect_error(run("good.ini --set optim.lr=fast"), "optim.lr");
  expect_error(run("good.ini --set data.train=nothere.h5"), "nothere.h5");
  /* A truncated gzip IDX file and a corrupt HDF5 file. */
  write_text("bad.idx.gz", "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03");
  expect_error(run("good.ini --set data.train=bad.idx.gz --set data.train_labels=bad.idx.gz"),
               "bad.idx.gz");
  write_text("bad.h5", "\x89HDF\r\n\x1a\n garbage");
  expect_error(run("good.ini --set data.train=bad.h5"), "bad.h5");
  /* Wrong architecture for the data. */
  expect_error(run("good.ini --set model.arch=mlp:10-3"), "64");
  /* Divergence is detected identically on every rank. */
  expect_error(run("good.ini --set optim.lr=1e30 --set run.run_dir=runs/nan"), "diverged");
  expect_error(run("good.ini --bogus"), "--bogus");
}

static void test_help(void **state) {
  int code = run("--help");
  assert_int_equal(code, 0);
  assert_non_null(strstr(out, "optim.lr"));
  assert_non_null(strstr(out, "model.density"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good_run_and_no_overwrite),
      cmocka_unit_test(test_bad_inputs),
      cmocka_unit_test(test_help),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
