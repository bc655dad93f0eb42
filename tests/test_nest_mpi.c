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

#include "nest/model.h"
#include "nest/data.h"
#include "test_util.h"

static const char *dir;
static char out[65536], err[65536];

/* Run `ENV timeout 120 mpiexec -n 2 nest_mpi ARGS` (ENV: "VAR=value ..." or ""); capture
 * stdout/stderr; return the exit code (124 = timed out: a rank hung). */
static int run_env(const char *env, const char *args) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && %s timeout 120 mpiexec -n 2 --oversubscribe %s/nest_mpi %s >'%s/out.txt' "
           "2>'%s/err.txt'",
           dir, env, NEST_BINARY_DIR, args, dir, dir);
  int rc = system(cmd);
  int code = WIFEXITED(rc) ? WEXITSTATUS(rc) : 255;
  nest_test_slurp(nest_test_path(dir, "out.txt"), out, sizeof out);
  nest_test_slurp(nest_test_path(dir, "err.txt"), err, sizeof err);
  return code;
}

static int run(const char *args) { return run_env("", args); }

/* Lines of `text` that start with `prefix`. */
static int count_lines(const char *text, const char *prefix) {
  int n = 0;
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
    n += strncmp(p, prefix, strlen(prefix)) == 0;
  return n;
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
  /* the last epoch's summary line stays in the log, with the throughput */
  assert_non_null(strstr(out, "epoch 3/3  train loss"));
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
  assert_non_null(strstr(line, ",phase,val_top5_error,test_top5_error,iteration\n"));
  while (fgets(line, sizeof line, f)) {
    ++rows;
    /* 3 classes: no top-5 error (empty fields); a training epoch has no iteration */
    if (!strstr(line, ",train,,,\n")) fail_msg("metrics row: %s", line);
  }
  fclose(f);
  assert_int_equal(rows, 3);
  struct stat sb;
  snprintf(path, sizeof path, "%s/runs/r1/summary.txt", dir);
  assert_int_equal(stat(path, &sb), 0);
  char summary[4096];
  nest_test_slurp(path, summary, sizeof summary);
  assert_non_null(strstr(summary, "test_error = "));
  assert_null(strstr(summary, "top5")); /* top-5 of 3 classes says nothing */
  snprintf(path, sizeof path, "%s/runs/r1/config.ini", dir);
  assert_int_equal(stat(path, &sb), 0);
  /* The effective config reproduces the run: it loads and runs again. */
  code = run("runs/r1/config.ini --set run.run_dir=runs/r2 --set train.epochs=1");
  if (code != 0) fail_msg("rerun from effective config: exit %d\n%s", code, err);

  /* Same run directory again: it holds the finished run's last checkpoint, so the run is
   * resumed there: only the final files are redone, metrics.csv keeps its rows. */
  snprintf(path, sizeof path, "%s/runs/r1/metrics.csv", dir);
  stat(path, &sb);
  off_t before = sb.st_size;
  code = run("good.ini --set run.run_dir=runs/r1");
  if (code != 0) fail_msg("resuming a finished run: exit %d\n%s", code, err);
  assert_non_null(strstr(out, "resuming"));
  stat(path, &sb);
  assert_int_equal(sb.st_size, before);
  /* ... but not with another config: refused, naming the key */
  code = run("good.ini --set run.run_dir=runs/r1 --set optim.lr=0.07");
  expect_error(code, "optim.lr");
  stat(path, &sb);
  assert_int_equal(sb.st_size, before);

  /* A directory with a run's files but no checkpoint (here a config.ini only): refused, and
   * the user's config.ini is not overwritten. */
  snprintf(path, sizeof path, "%s/runs/r3", dir);
  mkdir(path, 0775);
  snprintf(path, sizeof path, "%s/runs/r3/config.ini", dir);
  f = fopen(path, "w");
  fputs("; mine\n", f);
  fclose(f);
  code = run("good.ini --set run.run_dir=runs/r3");
  expect_error(code, "already holds a run (config.ini)");
  char mine[64] = "";
  nest_test_slurp(path, mine, sizeof mine);
  assert_string_equal(mine, "; mine\n");
  /* --resume needs a checkpoint */
  expect_error(run("--resume runs/r3"), "no checkpoint to resume");
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
  /* Divergence is detected identically on every rank (1000 is the largest optim.lr the
   * config accepts; the run is seeded, so it diverges the same way every time). */
  expect_error(run("good.ini --set optim.lr=1000 --set run.run_dir=runs/nan"), "diverged");
  expect_error(run("good.ini --bogus"), "--bogus");
}

/* Run nest_mpi under mpiexec -n 2 through a wrapper that records each rank's exit code;
 * returns 1 if both ranks exited with `want`. */
static int same_code_on_every_rank(const char *args, int want) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && rm -f code.* && timeout 120 mpiexec -n 2 --oversubscribe sh -c "
           "'%s/nest_mpi \"$@\" 2>/dev/null >/dev/null; echo $? > code.$OMPI_COMM_WORLD_RANK' "
           "sh %s >/dev/null 2>&1",
           dir, NEST_BINARY_DIR, args);
  if (system(cmd) == -1) return 0;
  for (int r = 0; r < 2; ++r) {
    char name[16];
    snprintf(name, sizeof name, "code.%d", r);
    FILE *f = fopen(nest_test_path(dir, name), "r");
    int code = -1;
    if (!f || fscanf(f, "%d", &code) != 1) code = -1;
    if (f) fclose(f);
    if (code != want) {
      fprintf(stderr, "rank %d exited %d, want %d (%s)\n", r, code, want, args);
      return 0;
    }
  }
  return 1;
}

/* Growth: a bad [grow] setting is one clear error before training, the same exit code (2,
 * config) on every rank; a good growth run logs events, grows, and writes model.h5. */
static void test_growth(void **state) {
  const struct {
    const char *args, *want;
  } bad[] = {
      {"good.ini --set grow.policy=conn --set grow.beta=0", "grow.beta"},
      {"good.ini --set grow.policy=neuron --set grow.alpha=-1", "grow.alpha"},
      {"good.ini --set grow.policy=conn,sprout", "sprout"},
      {"good.ini --set grow.policy=neuron --set grow.layers=fc2", "fc2"},
      {"good.ini --set grow.policy=conn --set grow.max_weights=10", "below"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    char args[512];
    snprintf(args, sizeof args, "%s --set run.run_dir=runs/bad%zu", bad[i].args, i);
    expect_error(run(args), bad[i].want);
    assert_true(same_code_on_every_rank(args, 2));
    /* refused before anything was written */
    char path[1024];
    struct stat sb;
    snprintf(path, sizeof path, "%s/runs/bad%zu", dir, i);
    assert_int_not_equal(stat(path, &sb), 0);
  }

  int code = run("good.ini --set run.run_dir=runs/g1 --set grow.policy=conn,neuron "
                 "--set grow.iterations=2 --set grow.train_epochs=1 --set train.epochs=1 "
                 "--set grow.neurons=4");
  if (code != 0) fail_msg("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, err);
  assert_non_null(strstr(out, "growth phase done after 2 iterations"));
  char path[1024], line[1024];
  snprintf(path, sizeof path, "%s/runs/g1/events.csv", dir);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  assert_non_null(fgets(line, sizeof line, f));
  assert_non_null(strstr(line, "iteration,policy,layer,units_added,connections_added"));
  int rows = 0, neuron_rows = 0;
  while (fgets(line, sizeof line, f)) {
    ++rows;
    if (strstr(line, ",neuron,fc1,4,")) ++neuron_rows;
    /* the validation error column is filled (the 10th field is not empty) */
    int commas = 0;
    const char *c = line;
    for (; *c && commas < 9; ++c) commas += *c == ',';
    assert_true(*c != ',' && *c != '\0');
  }
  fclose(f);
  assert_int_equal(rows, 2 * (2 + 1)); /* conn on fc1, fc2; neuron on fc1; 2 iterations */
  assert_int_equal(neuron_rows, 2);
  snprintf(path, sizeof path, "%s/runs/g1/summary.txt", dir);
  char summary[4096];
  nest_test_slurp(path, summary, sizeof summary);
  assert_non_null(strstr(summary, "widths = 64-24-3"));
  assert_non_null(strstr(summary, "grow_iterations = 2"));
  assert_non_null(strstr(summary, "test_error = "));
  assert_non_null(strstr(summary, "active_weights = "));
  /* the final model: nest_jaccard of a run with itself is 1 */
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "%s/nest_jaccard '%s/runs/g1' '%s/runs/g1/model.h5'",
           NEST_BINARY_DIR, dir, dir);
  assert_int_equal(nest_test_run(cmd, summary, sizeof summary, NULL, 0), 0);
  assert_non_null(strstr(summary, "1.0000"));
}

/* Field `col` (0-based) of CSV line `line` into out ("" when absent). */
static void csv_field(const char *line, int col, char *out, size_t cap) {
  const char *p = line;
  for (int c = 0; c < col && p; ++c) p = strchr(p, ','), p = p ? p + 1 : NULL;
  size_t n = p ? strcspn(p, ",\n") : 0;
  snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), p ? p : "");
}

/* The 0-based column named `name` in a CSV header line, -1 if none. */
static int csv_col(const char *header, const char *name) {
  char f[64];
  for (int c = 0; c < 64; ++c) {
    csv_field(header, c, f, sizeof f);
    if (strcmp(f, name) == 0) return c;
    if (!f[0] && !strchr(header, ',')) break;
  }
  return -1;
}

/* A run's metrics.csv: one row per pruning iteration (phase prune, iteration 1..n, validation
 * and test error, active weights), after the epochs' rows; growth epochs carry their iteration. */
static void check_metrics_rows(const char *run_dir, int prune_iterations) {
  char path[1024], text[65536];
  snprintf(path, sizeof path, "%s/%s/metrics.csv", dir, run_dir);
  nest_test_slurp(path, text, sizeof text);
  const int cph = csv_col(text, "phase"), cit = csv_col(text, "iteration"),
            cva = csv_col(text, "val_acc"), cte = csv_col(text, "test_acc"),
            caw = csv_col(text, "active_weights");
  assert_true(cph >= 0 && cit >= 0 && cva >= 0 && cte >= 0 && caw >= 0);
  int prune_rows = 0, grow_rows = 0;
  for (const char *l = strchr(text, '\n'); l && l[1]; l = strchr(l + 1, '\n')) {
    char ph[32], it[32], va[32], te[32], aw[32];
    csv_field(l + 1, cph, ph, sizeof ph);
    csv_field(l + 1, cit, it, sizeof it);
    if (strcmp(ph, "grow") == 0) {
      ++grow_rows;
      assert_true(atoi(it) >= 1);
    }
    if (strcmp(ph, "prune") != 0) continue;
    ++prune_rows;
    csv_field(l + 1, cva, va, sizeof va);
    csv_field(l + 1, cte, te, sizeof te);
    csv_field(l + 1, caw, aw, sizeof aw);
    if (atoi(it) != prune_rows || !va[0] || !te[0] || atoll(aw) <= 0)
      fail_msg("pruning row %d: iteration '%s', val_acc '%s', test_acc '%s', active '%s'",
               prune_rows, it, va, te, aw);
  }
  assert_int_equal(prune_rows, prune_iterations);
  assert_true(grow_rows > 0);
}

/* A run's events.csv: a phase (grow or prune here) and a time since the run started that never
 * goes back, on every row. */
static void check_event_rows(const char *run_dir) {
  char path[1024], text[65536];
  snprintf(path, sizeof path, "%s/%s/events.csv", dir, run_dir);
  nest_test_slurp(path, text, sizeof text);
  assert_non_null(strstr(text, ",detail,phase,time_s\n"));
  const int cph = csv_col(text, "phase"), ct = csv_col(text, "time_s");
  double last = 0;
  int rows = 0, prune = 0;
  for (const char *l = strchr(text, '\n'); l && l[1]; l = strchr(l + 1, '\n')) {
    char ph[32], ts[32];
    csv_field(l + 1, cph, ph, sizeof ph);
    csv_field(l + 1, ct, ts, sizeof ts);
    if (strcmp(ph, "grow") != 0 && strcmp(ph, "prune") != 0) fail_msg("event phase '%s'", ph);
    prune += strcmp(ph, "prune") == 0;
    const double t = atof(ts);
    if (!ts[0] || t < last) fail_msg("event row %d: time_s '%s' after %g", rows + 1, ts, last);
    last = t;
    ++rows;
  }
  assert_true(rows > 0 && prune > 0);
}

/* The pipeline: bad [synthesis] / [prune] / init_from settings are one clear error with the
 * same exit code on every rank and nothing written; seed -> grow -> prune ends smaller than
 * after growth with the stage models, the report (totals = active mask entries) and summary
 * lines, a metrics.csv row per pruning iteration, events.csv with phases and times; a
 * pruning-only run starts from a dense run's model.h5. */
static void test_pipeline(void **state) {
  const struct {
    const char *args, *want;
    int code;
  } bad[] = {
      {"good.ini --set synthesis.phases=grow,shrink --set grow.policy=conn", "shrink", 2},
      {"good.ini --set synthesis.phases=grow,prune", "no growth policy", 2},
      {"good.ini --set synthesis.phases=prune --set prune.layers=fc9", "fc9", 2},
      {"good.ini --set synthesis.phases=prune --set prune.gamma=1.5", "prune.gamma", 2},
      {"good.ini --set synthesis.phases=prune --set model.init_from=nothere.h5", "nothere.h5", 3},
      {"good.ini --set synthesis.phases=prune --set model.init_from=synth.h5", "synth.h5", 0},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    char args[512];
    snprintf(args, sizeof args, "%s --set run.run_dir=runs/pbad%zu", bad[i].args, i);
    expect_error(run(args), bad[i].want);
    if (bad[i].code) assert_true(same_code_on_every_rank(args, bad[i].code));
    char path[1024];
    struct stat sb;
    snprintf(path, sizeof path, "%s/runs/pbad%zu", dir, i);
    assert_int_not_equal(stat(path, &sb), 0);
  }

  int code = run("good.ini --set run.run_dir=runs/p1 --set grow.policy=conn,neuron "
                 "--set synthesis.phases=grow,train,prune --set grow.iterations=2 "
                 "--set grow.train_epochs=1 --set train.epochs=1 --set grow.neurons=4 "
                 "--set prune.retrain_steps=5 --set prune.iterations=3 --set prune.tolerance=0.2 "
                 "--set prune.epochs=1");
  if (code != 0) fail_msg("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, err);
  assert_non_null(strstr(out, "prune phase done after"));
  assert_non_null(strstr(out, "model report"));
  assert_non_null(strstr(out, "seed (untrained): "));
  assert_non_null(strstr(out, "final model"));
  const char *files[] = {"model_seed.h5", "model_grown.h5", "model_trained.h5", "model.h5",
                         "report.csv", "events.csv", "summary.txt"};
  char path[1024];
  struct stat sb;
  for (size_t i = 0; i < sizeof files / sizeof files[0]; ++i) {
    snprintf(path, sizeof path, "%s/runs/p1/%s", dir, files[i]);
    if (stat(path, &sb) != 0) fail_msg("%s is missing", path);
  }
  char summary[8192];
  snprintf(path, sizeof path, "%s/runs/p1/summary.txt", dir);
  nest_test_slurp(path, summary, sizeof summary);
  long long grown = -1, after = -1, active = -1;
  const char *g = strstr(summary, "grown_weights = "), *a = strstr(summary, "prune_weights_after = "),
             *w = strstr(summary, "\nactive_weights = ");
  assert_non_null(g);
  assert_non_null(a);
  assert_non_null(w);
  sscanf(g, "grown_weights = %lld", &grown);
  sscanf(a, "prune_weights_after = %lld", &after);
  sscanf(w, "\nactive_weights = %lld", &active);
  if (!(after < grown)) fail_msg("pruned %lld, grown %lld", after, grown);
  assert_true(active == after);
  /* every stage file named, with its weights: the trained network is the grown one's size */
  long long trained = -1, final_w = -1;
  const char *tw = strstr(summary, "stage_trained_weights = "),
             *fw = strstr(summary, "stage_final_weights = ");
  assert_non_null(strstr(summary, "stage_seed_file = model_seed.h5"));
  assert_non_null(strstr(summary, "stage_grown_file = model_grown.h5"));
  assert_non_null(strstr(summary, "stage_trained_file = model_trained.h5"));
  assert_non_null(strstr(summary, "stage_trained_test_error = "));
  assert_non_null(strstr(summary, "stage_final_file = model.h5"));
  assert_non_null(tw);
  assert_non_null(fw);
  sscanf(tw, "stage_trained_weights = %lld", &trained);
  sscanf(fw, "stage_final_weights = %lld", &final_w);
  assert_true(trained == grown);
  assert_true(final_w == active);
  assert_non_null(strstr(summary, "wall_s = "));
  assert_non_null(strstr(summary, "test_error = "));
  int prune_its = -1;
  const char *pi = strstr(summary, "prune_iterations = ");
  assert_non_null(pi);
  sscanf(pi, "prune_iterations = %d", &prune_its);
  assert_true(prune_its >= 1);
  check_metrics_rows("runs/p1", prune_its);
  check_event_rows("runs/p1");
  /* events: pruning rows, and a guard row or kept steps */
  char events[65536];
  snprintf(path, sizeof path, "%s/runs/p1/events.csv", dir);
  nest_test_slurp(path, events, sizeof events);
  assert_non_null(strstr(events, ",magnitude,fc1,"));
  /* the report: its final total equals the active weights (the mask entries) */
  char csv[65536];
  snprintf(path, sizeof path, "%s/runs/p1/report.csv", dir);
  nest_test_slurp(path, csv, sizeof csv);
  char want[128];
  snprintf(want, sizeof want, "final,%s/runs/p1/model.h5,total,", dir);
  const char *tot = strstr(csv, "\nfinal,");
  assert_non_null(tot);
  tot = strstr(tot, ",total,");
  assert_non_null(tot);
  long long base = -1, act = -1;
  assert_int_equal(sscanf(tot, ",total,,%lld,%lld", &base, &act) == 2 ||
                       sscanf(tot, ",total,%*[^,],%lld,%lld", &base, &act) == 2,
                   1);
  if (act != active) fail_msg("report total %lld, summary %lld\n%s", act, active, tot);

  /* pruning only, from the dense model of the first test's run */
  code = run("good.ini --set run.run_dir=runs/p2 --set synthesis.phases=prune "
             "--set model.init_from=runs/r1/model.h5 --set prune.retrain_steps=5 "
             "--set prune.iterations=2 --set prune.tolerance=0.2");
  if (code != 0) fail_msg("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, err);
  snprintf(path, sizeof path, "%s/runs/p2/summary.txt", dir);
  nest_test_slurp(path, summary, sizeof summary);
  a = strstr(summary, "prune_weights_after = ");
  const char *b = strstr(summary, "prune_weights_before = ");
  assert_non_null(a);
  assert_non_null(b);
  long long before = -1;
  sscanf(b, "prune_weights_before = %lld", &before);
  sscanf(a, "prune_weights_after = %lld", &after);
  if (!(after < before)) fail_msg("pruning only: %lld -> %lld", before, after);
}

/* Lines of `text` (ending in '\n'). */
static int lines_of(const char *text) {
  int n = 0;
  for (const char *p = text; *p; ++p) n += *p == '\n';
  return n;
}

/* The run log, read by a person. Written to a file (not a terminal): no '\r' or escape
 * sequence, one line per growth iteration and per pruning iteration, the epochs' summary lines
 * only where a phase ends, the report at the end (the seed stage said to be untrained), and
 * progress lines only as often as run.log_seconds allows: none within 3600 s, all of them with
 * 0, so the log's length does not grow with the steps. On a terminal (NEST_LOG_TTY=1 stands for
 * one) progress is drawn in place and adds no line. NEST_RUN_DIR_FILE receives the run
 * directory. */
static void test_log(void **state) {
  const char *cfg = "good.ini --set grow.policy=conn,neuron --set synthesis.phases=grow,train,prune "
                    "--set grow.iterations=2 --set grow.train_epochs=2 --set train.epochs=3 "
                    "--set grow.neurons=4 --set prune.retrain_steps=5 --set prune.iterations=3 "
                    "--set prune.tolerance=0.2 --set prune.epochs=2 --set run.log_every=1";
  char args[2048], path[1024], text[4096];
  snprintf(args, sizeof args, "%s --set run.run_dir=runs/log1 --set run.log_seconds=3600", cfg);
  int code = run_env("NEST_RUN_DIR_FILE=rundir.txt", args);
  if (code != 0) fail_msg("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, err);
  nest_test_slurp(nest_test_path(dir, "rundir.txt"), text, sizeof text);
  assert_string_equal(text, "runs/log1\n");
  const int quiet = lines_of(out);
  if (strchr(out, '\r') || strchr(out, '\033')) fail_msg("terminal control in a file:\n%s", out);
  assert_int_equal(count_lines(out, "grow 1: +"), 1);
  assert_int_equal(count_lines(out, "grow 2: +"), 1);
  snprintf(path, sizeof path, "%s/runs/log1/summary.txt", dir);
  nest_test_slurp(path, text, sizeof text);
  int its = 0;
  const char *pi = strstr(text, "prune_iterations = ");
  assert_non_null(pi);
  sscanf(pi, "prune_iterations = %d", &its);
  assert_true(its >= 1);
  for (int k = 1; k <= its + 1; ++k) {
    char want[32];
    snprintf(want, sizeof want, "prune %d: ", k);
    assert_int_equal(count_lines(out, want), k <= its);
  }
  assert_null(strstr(out, "  step "));               /* no progress line */
  assert_int_equal(count_lines(out, "epoch "), 1);   /* the training phase's last epoch */
  assert_int_equal(count_lines(out, "epoch 3/3  train loss"), 1);
  assert_int_equal(count_lines(out, "fine-tuning 2/2  train loss"), 1);
  assert_int_equal(count_lines(out, "grow 1, epoch"), 0);
  assert_int_equal(count_lines(out, "seed (untrained): "), 1);
  const char *report = strstr(out, "nest: model report");
  assert_non_null(report);
  assert_int_equal(count_lines(report, "nest: finished "), 1);
  /* every line here is one of a fixed set: set-up (4 + the net's 3 layers), 4 phase starts and
   * 3 ends, 2 growth lines, at most 3 pruning lines, 2 epoch lines, the report (1 + 3 stages +
   * 2 x 3 x 3 layer rows + blank lines) and the last line */
  if (quiet > 45) fail_msg("%d lines:\n%s", quiet, out);

  /* run.log_seconds = 0: every progress line and epoch summary */
  snprintf(args, sizeof args, "%s --set run.run_dir=runs/log2 --set run.log_seconds=0", cfg);
  code = run(args);
  if (code != 0) fail_msg("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, err);
  assert_non_null(strstr(out, "  step "));
  assert_int_equal(count_lines(out, "grow 1, epoch 1/2  train loss"), 1);
  assert_true(lines_of(out) > quiet + 50);

  /* a terminal: progress in place ('\r', clear to the end of the line), no more lines */
  snprintf(args, sizeof args, "%s --set run.run_dir=runs/log3", cfg);
  code = run_env("NEST_LOG_TTY=1", args);
  if (code != 0) fail_msg("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, err);
  assert_non_null(strstr(out, "  step "));
  assert_non_null(strstr(out, "\r\033[K"));
  assert_true(lines_of(out) <= quiet + 6); /* epoch summaries may stay when due */
}

/* Count the entries of dir/sub whose names start with prefix. */
static int count_dirs(const char *sub, const char *prefix) {
  char cmd[2048], buf[64] = "";
  snprintf(cmd, sizeof cmd, "ls -d '%s/%s/%s'* 2>/dev/null | wc -l > '%s/count.txt'", dir, sub,
           prefix, dir);
  if (system(cmd) != 0) return -1;
  nest_test_slurp(nest_test_path(dir, "count.txt"), buf, sizeof buf);
  return atoi(buf);
}

/* Run directory names: unique without the user's help (two runs started in the same second),
 * and under Slurm named after the job, so a requeued job finds (and resumes) its own. */
static void test_run_dir_names(void **state) {
  char cmd[4096];
  /* two runs of the same config at once (what a job array does) */
  snprintf(cmd, sizeof cmd,
           "cd '%s' && { (timeout 120 mpiexec -n 1 %s/nest_mpi good.ini --set run.out_dir=same "
           "--set train.epochs=1 >/dev/null 2>&1; echo $? > rc1.txt) & "
           "(timeout 120 mpiexec -n 1 %s/nest_mpi good.ini --set run.out_dir=same "
           "--set train.epochs=1 >/dev/null 2>&1; echo $? > rc2.txt) & wait; }",
           dir, NEST_BINARY_DIR, NEST_BINARY_DIR);
  assert_int_equal(system(cmd), 0);
  char rc[16] = "";
  nest_test_slurp(nest_test_path(dir, "rc1.txt"), rc, sizeof rc);
  assert_string_equal(rc, "0\n");
  nest_test_slurp(nest_test_path(dir, "rc2.txt"), rc, sizeof rc);
  assert_string_equal(rc, "0\n");
  assert_int_equal(count_dirs("same", "good-"), 2);
  /* under Slurm: NAME-job<id>; the same job again resumes it instead of failing */
  snprintf(cmd, sizeof cmd,
           "cd '%s' && SLURM_JOB_ID=4242 timeout 120 mpiexec -n 2 %s/nest_mpi good.ini --set "
           "run.out_dir=slurm --set train.epochs=1 > slurm1.txt 2>&1 && SLURM_JOB_ID=4242 timeout "
           "120 mpiexec -n 2 %s/nest_mpi good.ini --set run.out_dir=slurm --set train.epochs=1 > "
           "slurm2.txt 2>&1",
           dir, NEST_BINARY_DIR, NEST_BINARY_DIR);
  assert_int_equal(system(cmd), 0);
  assert_int_equal(count_dirs("slurm", "good-job4242"), 1);
  nest_test_slurp(nest_test_path(dir, "slurm2.txt"), out, sizeof out);
  assert_non_null(strstr(out, "resuming slurm/good-job4242"));
}

/* A checkpoint is a model file: nest_report reads it, nest_export writes its network out. */
static void test_export(void **state) {
  int code = run("good.ini --set run.run_dir=runs/ex --set train.epochs=1");
  if (code != 0) fail_msg("exit %d\n%s", code, err);
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && %s/nest_export runs/ex ex.h5 > export.txt 2>&1 && %s/nest_report "
           "runs/ex/checkpoints/ckpt-00000001.h5 > report.txt 2>&1",
           dir, NEST_BINARY_DIR, NEST_BINARY_DIR);
  assert_int_equal(system(cmd), 0);
  nest_net *a = NULL, *b = NULL;
  assert_int_equal(nest_model_load(nest_test_path(dir, "ex.h5"), 4, 1, &a), NEST_OK);
  assert_int_equal(nest_model_load(nest_test_path(dir, "runs/ex/model.h5"), 4, 1, &b), NEST_OK);
  assert_true(nest_net_hash(a, NEST_HASH_ALL) == nest_net_hash(b, NEST_HASH_ALL));
  nest_net_destroy(&a);
  nest_net_destroy(&b);
  /* an existing output is not replaced without --force */
  snprintf(cmd, sizeof cmd, "cd '%s' && %s/nest_export runs/ex ex.h5 > export2.txt 2>&1", dir,
           NEST_BINARY_DIR);
  assert_int_not_equal(system(cmd), 0);
  nest_test_slurp(nest_test_path(dir, "export2.txt"), out, sizeof out);
  assert_non_null(strstr(out, "exists"));
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
      cmocka_unit_test(test_growth),
      cmocka_unit_test(test_pipeline),
      cmocka_unit_test(test_log),
      cmocka_unit_test(test_run_dir_names),
      cmocka_unit_test(test_export),
      cmocka_unit_test(test_help),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
