/* test_plot.c — the nest_plot tool (src/tools/nest_plot.c) on small run directories made here:
 * handwritten metrics.csv / events.csv in today's layout and in a later one (a phase column,
 * a global iteration, a timestamp, columns reordered, metrics rows per pruning iteration
 * without an epoch), model files written by nest's own writer (an MLP whose first-layer mask
 * is set by hand, a LeNet-5 with a partial-area conv1 whose area masks are set by hand), and
 * width-sweep run directories (config.ini + summary.txt). Checked: every PNG exists and is a
 * PNG; the data each figure plots, read back from the --script copy of its gnuplot script
 * (seed point, one point per (phase, iteration), per-pixel density, area tiles, sweep medians
 * and ranges); figures without inputs are skipped with a note (exit 0); no gnuplot: a note,
 * exit 0, nothing written; a malformed metrics.csv: one error line naming it, exit 1, the
 * other figures still drawn; a failing gnuplot leaves an existing PNG untouched and no .tmp;
 * usage errors exit 2. Tests that need gnuplot skip with a message when it is not installed. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nest/arch.h"
#include "nest/model.h"
#include "nest/net.h"
#include "test_util.h"

#define PLOT NEST_BINARY_DIR "/nest_plot"

static char out_text[65536], err_text[16384];

static int run_plot(const char *env, const char *args) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "%s '%s' %s", env ? env : "", PLOT, args);
  const int code = nest_test_run(cmd, out_text, sizeof out_text, err_text, sizeof err_text);
  assert_true(code >= 0);
  return code;
}

static int have_gnuplot(void) {
  if (system("command -v gnuplot >/dev/null 2>&1") == 0) return 1;
  printf("SKIP: gnuplot not installed (Debian gnuplot-nox; jobs/setup.sh installs it)\n");
  return 0;
}

/* parent/name, created; the path stays valid for the whole test (nest_test_path's buffers
 * rotate). */
static const char *mkdir_in(const char *parent, const char *name) {
  static char paths[64][1024];
  static int next;
  char tmp[1024];
  snprintf(tmp, sizeof tmp, "%s/%s", parent, name);
  char *d = memcpy(paths[next++ & 63], tmp, sizeof tmp);
  assert_true(mkdir(d, 0777) == 0 || access(d, F_OK) == 0);
  return d;
}

static void write_text(const char *path, const char *text) {
  assert_int_equal(nest_test_write_file(path, text, strlen(text)), 0);
}

/* The file is a PNG of some size (8-byte signature, more than the header). */
static void assert_png(const char *dir, const char *name) {
  const char *p = nest_test_path(dir, name);
  FILE *f = fopen(p, "rb");
  if (!f) fail_msg("%s was not written; stdout: %s stderr: %s", p, out_text, err_text);
  unsigned char b[8];
  assert_int_equal(fread(b, 1, 8, f), 8);
  fseek(f, 0, SEEK_END);
  const long size = ftell(f);
  fclose(f);
  assert_memory_equal(b, "\x89PNG\r\n\x1a\n", 8);
  assert_true(size > 2000);
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", p);
  assert_int_not_equal(access(tmp, F_OK), 0);
}

static int exists(const char *dir, const char *name) {
  return access(nest_test_path(dir, name), F_OK) == 0;
}

/* The lines of datablock $name in dir/file (a --script copy), into buf. */
static void datablock(const char *dir, const char *file, const char *name, char *buf,
                      size_t cap) {
  static char gp[1 << 20];
  nest_test_slurp(nest_test_path(dir, file), gp, sizeof gp);
  char head[64];
  snprintf(head, sizeof head, "$%s << EOD\n", name);
  const char *s = strstr(gp, head);
  if (!s) fail_msg("%s: no datablock %s", file, name);
  s += strlen(head);
  const char *e = strstr(s, "EOD\n");
  assert_non_null(e);
  snprintf(buf, cap, "%.*s", (int)(e - s), s);
}

/* One line on stderr: "nest_plot: error: ...word...". */
static void assert_one_error(const char *word) {
  if (strncmp(err_text, "nest_plot: error: ", 18) != 0 || !strstr(err_text, word))
    fail_msg("expected one error naming '%s', got: %s", word, err_text);
  const char *nl = strchr(err_text, '\n');
  assert_non_null(nl);
  assert_int_equal(nl[1], '\0');
}

/* ---- run directories ------------------------------------------------------------------- */

static const char *METRICS_HEAD =
    "epoch,step,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,active_weights,"
    "total_weights,density,images_per_s,elapsed_s,phase,val_top5_error,test_top5_error\n";

/* Growth (epoch 1 unevaluated), training, fine-tuning. */
static void write_metrics(const char *dir) {
  char text[2048];
  snprintf(text, sizeof text,
           "%s1,10,0.1,1.2,0.5,,,,,1100,2000,0.55,100,1,grow,,\n"
           "2,20,0.1,1.0,0.6,0.5,0.9,0.5,0.91,1350,2000,0.675,100,2,grow,0.01,0.01\n"
           "3,30,0.1,0.8,0.7,0.3,0.95,0.3,0.96,1350,2000,0.675,100,3,train,0.01,0.01\n"
           "4,40,0.1,0.7,0.8,0.2,0.97,0.2,0.975,1240,1900,0.65,100,4,finetune,0.01,0.01\n",
           METRICS_HEAD);
  write_text(nest_test_path(dir, "metrics.csv"), text);
}

/* Today's events.csv: growth iterations 1-2, then pruning iterations numbered from 1 again, a
 * guard row restoring a step. */
static void write_events(const char *dir) {
  write_text(nest_test_path(dir, "events.csv"),
             "iteration,policy,layer,units_added,connections_added,connections_removed,"
             "active_weights,loss_before,loss_after,val_error,seconds,detail\n"
             "1,conn,fc1,0,100,0,1100,2.3,2.3,0.1,0.1,|G| >= 0.1\n"
             "1,neuron,fc1,5,50,0,1150,2.3,2.1,0.1,0.1,20 pairs\n"
             "2,conn,fc1,0,200,0,1350,2.0,2.0,0.09,0.1,|G| >= 0.2\n"
             "1,magnitude,fc1,0,0,300,1050,0.5,0.6,0.12,0.1,gamma 0.2\n"
             "1,guard,fc1,0,0,0,1350,,,0.12,0.0,restored\n"
             "2,magnitude,fc1,0,0,100,1250,0.5,0.5,0.1,0.1,gamma 0.1\n"
             "2,neurons,fc1,1,0,10,1240,0.5,0.5,0.1,0.1,1 without inputs\n");
}

/* The same events as nest writes them now: a phase column and the time since the run started
 * after detail; metrics.csv with its iteration column and a row per pruning iteration (which
 * repeat the epoch count and leave lr, training loss and images/s empty). */
static void write_run_now(const char *dir) {
  write_text(nest_test_path(dir, "events.csv"),
             "iteration,policy,layer,units_added,connections_added,connections_removed,"
             "active_weights,loss_before,loss_after,val_error,seconds,detail,phase,time_s\n"
             "1,conn,fc1,0,100,0,1100,2.3,2.3,0.1,0.1,|G| >= 0.1,grow,1.50\n"
             "1,neuron,fc1,5,50,0,1150,2.3,2.1,0.1,0.1,20 pairs,grow,1.61\n"
             "2,conn,fc1,0,200,0,1350,2.0,2.0,0.09,0.1,|G| >= 0.2,grow,9.20\n"
             "1,magnitude,fc1,0,0,300,1050,0.5,0.6,0.12,0.1,gamma 0.2,prune,30.02\n"
             "1,guard,fc1,0,0,0,1350,,,0.12,0.0,restored,prune,35.40\n"
             "2,magnitude,fc1,0,0,100,1250,0.5,0.5,0.1,0.1,gamma 0.1,prune,35.41\n"
             "2,neurons,fc1,1,0,10,1240,0.5,0.5,0.1,0.1,1 without inputs,prune,35.43\n");
  char text[4096];
  snprintf(text, sizeof text,
           "%s1,10,0.1,1.2,0.5,,,,,1100,2000,0.55,100,1,grow,,,1\n"
           "2,20,0.1,1.0,0.6,0.5,0.9,0.5,0.91,1350,2000,0.675,100,2,grow,0.01,0.01,2\n"
           "3,30,0.1,0.8,0.7,0.3,0.95,0.3,0.96,1350,2000,0.675,100,3,train,0.01,0.01,\n"
           "3,90,,,,0.3,0.94,0.3,0.95,1350,2000,0.675,,4,prune,0.01,0.01,1\n"
           "3,150,,,,0.3,0.93,0.3,0.94,1240,1900,0.65,,5,prune,0.01,0.01,2\n"
           "4,160,0.1,0.7,0.8,0.2,0.97,0.2,0.975,1240,1900,0.65,100,6,finetune,0.01,0.01,\n",
           "epoch,step,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,active_weights,"
           "total_weights,density,images_per_s,elapsed_s,phase,val_top5_error,test_top5_error,"
           "iteration\n");
  write_text(nest_test_path(dir, "metrics.csv"), text);
}

/* The same events in a later layout: a phase column, one global iteration counter, a
 * timestamp, columns in another order, fewer of them. */
static void write_events_future(const char *dir) {
  write_text(nest_test_path(dir, "events.csv"),
             "timestamp,phase,iteration,policy,layer,active_weights,connections_removed,"
             "connections_added,val_error,detail\n"
             "2025-01-01T10:00:00,grow,1,conn,fc1,1100,0,100,0.1,\"|G| >= 0.1, first\"\n"
             "2025-01-01T10:00:01,grow,1,neuron,fc1,1150,0,50,0.1,x\n"
             "2025-01-01T10:00:02,grow,2,conn,fc1,1350,0,200,0.09,x\n"
             "2025-01-01T10:00:03,prune,3,magnitude,fc1,1050,300,0,0.12,x\n"
             "2025-01-01T10:00:04,prune,3,guard,fc1,1350,0,0,0.12,x\n"
             "2025-01-01T10:00:05,prune,4,magnitude,fc1,1250,100,0,0.1,x\n"
             "2025-01-01T10:00:06,prune,4,neurons,fc1,1240,10,0,0.1,x\n");
}

/* An MLP 784-30-10 whose fc1 mask is: pixel 0 feeds every unit, pixel 1 none, every other
 * pixel unit 0 only (densities 1, 0, 1/30). */
static void write_mlp(const char *path, int fc1_units) {
  nest_layer_spec *specs;
  int n;
  const nest_arch_opts o = {.width = 1};
  char arch[64];
  snprintf(arch, sizeof arch, "mlp:784-%d-10", fc1_units);
  const nest_shape in = {784, 1, 1};
  assert_ok(nest_arch_build(arch, &o, in, 10, &specs, &n));
  nest_net *net;
  assert_ok(nest_net_create(specs, n, in, 10, 4, 1, &net));
  free(specs);
  assert_ok(nest_net_init(net, 7, 1.0, -1));
  nest_layer *l = net->layers[0];
  for (int u = 0; u < fc1_units; ++u)
    for (int i = 0; i < 784; ++i) l->m[0][u * 784 + i] = i == 0 || (i >= 2 && u == 0);
  nest_net_apply_masks(net);
  assert_ok(nest_model_save(net, path));
  nest_net_destroy(&net);
}

/* LeNet-5 at width 0.2 (conv1: 4 kernels, 24 x 24 outputs) with partial-area conv1: kernel 0
 * keeps every position, kernel 1 the top half, kernel 2 none, kernel 3 even columns. */
static void write_lenet5_area(const char *path) {
  nest_layer_spec *specs;
  int n;
  const nest_arch_opts o = {.width = 0.2};
  const nest_shape in = {1, 28, 28};
  assert_ok(nest_arch_build("lenet5", &o, in, 10, &specs, &n));
  assert_string_equal(specs[0].name, "conv1");
  specs[0].hp.area = 1;
  nest_net *net;
  assert_ok(nest_net_create(specs, n, in, 10, 4, 1, &net));
  free(specs);
  assert_ok(nest_net_init(net, 7, 0.5, -1));
  nest_layer *l = net->layers[0];
  assert_int_equal(l->hp.out_c, 4);
  assert_int_equal(l->out.h, 24);
  float *area = NULL;
  for (int b = 0; b < l->nbuffers; ++b)
    if (strcmp(l->buffer[b].name, "area") == 0) area = l->buf[b];
  assert_non_null(area);
  for (int o2 = 0; o2 < 4; ++o2)
    for (int p = 0; p < 24; ++p)
      for (int q = 0; q < 24; ++q)
        area[(o2 * 24 + p) * 24 + q] = o2 == 0 || (o2 == 1 && p < 12) || (o2 == 3 && q % 2 == 0);
  assert_ok(nest_model_save(net, path));
  nest_net_destroy(&net);
}

/* ---- tests ----------------------------------------------------------------------------- */

/* nest_plot RUN OPTIONS must succeed; RUN/plots, where the figures went. */
static const char *plot_ok(const char *run, const char *options) {
  char args[2048];
  snprintf(args, sizeof args, "'%s' %s", run, options);
  if (run_plot(NULL, args) != 0) fail_msg("nest_plot %s failed: %s", args, err_text);
  return mkdir_in(run, "plots");
}

/* Fig. 8 of write_events / write_events_future: the seed (1100 - 100 + 0), one point per
 * (phase, iteration), the guard's restore ends pruning iteration 1; the pruning curve starts at
 * growth's last point. */
static void check_fig8(const char *out, const char *last_label) {
  static char gp[65536];
  nest_test_slurp(nest_test_path(out, "connections.gp"), gp, sizeof gp);
  assert_non_null(strstr(gp, "set label 'seed: 1,000' at 0, 1000"));
  assert_non_null(strstr(gp, last_label));
  char b[4096];
  datablock(out, "connections.gp", "s0", b, sizeof b);
  assert_string_equal(b, "0 1000\n1 1150\n2 1350\n");
  datablock(out, "connections.gp", "s1", b, sizeof b);
  assert_string_equal(b, "2 1350\n3 1350\n4 1240\n");
}

/* errors.png's data (x, validation %, test %) and two phrases of its script. */
static void check_errors(const char *out, const char *data, const char *has1, const char *has2) {
  static char gp[65536];
  char b[4096];
  datablock(out, "errors.gp", "e", b, sizeof b);
  assert_string_equal(b, data);
  nest_test_slurp(nest_test_path(out, "errors.gp"), gp, sizeof gp);
  assert_non_null(strstr(gp, has1));
  assert_non_null(strstr(gp, has2));
}

static void test_run_dir(void **state) {
  (void)state;
  if (!have_gnuplot()) skip();
  const char *run = mkdir_in(nest_test_tmpdir(), "mlp_run");
  write_metrics(run);
  write_events(run);
  write_mlp(nest_test_path(run, "model_grown.h5"), 30);
  write_mlp(nest_test_path(run, "model.h5"), 20);
  const char *out = plot_ok(run, "--script");
  assert_png(out, "connections.png");
  assert_png(out, "errors.png");
  assert_png(out, "density.png");
  assert_false(exists(out, "area.png"));
  assert_non_null(strstr(out_text, "skipped area.png"));
  check_fig8(out, "set label 'so far: 1,240' at 4, 1240"); /* no summary.txt yet */
  /* errors in %, by epoch, epoch 1 (not evaluated) left out */
  check_errors(out, "2 10 9\n3 5 4\n4 3 2.5\n", "set xlabel 'epoch'", "'fine-tuning'");
  char b[65536];
  /* Fig. 3: pixel 0 feeds every unit, pixel 1 none, pixel 2 unit 0 of 30 (grown) / 20 */
  datablock(out, "density.gp", "d0", b, sizeof b);
  assert_int_equal(strncmp(b, "1 0 0.0333333 0.0333333 ", 24), 0);
  datablock(out, "density.gp", "d1", b, sizeof b);
  assert_int_equal(strncmp(b, "1 0 0.05 0.05 ", 14), 0);
  int rows = 0;
  for (const char *c = b; *c; ++c) rows += *c == '\n';
  assert_int_equal(rows, 28);

  /* Drawn again over existing files (atomic replace), only two figures. */
  char args[2048];
  snprintf(args, sizeof args, "'%s' --only 'errors, density' --out '%s/again'", run, run);
  assert_int_equal(run_plot(NULL, args), 0);
  assert_png(mkdir_in(run, "again"), "errors.png");
  assert_false(exists(mkdir_in(run, "again"), "connections.png"));
}

/* A later layout of events.csv and metrics.csv gives the same curve. */
static void test_future_columns(void **state) {
  (void)state;
  if (!have_gnuplot()) skip();
  const char *run = mkdir_in(nest_test_tmpdir(), "future_run");
  write_events_future(run);
  char text[4096];
  snprintf(text, sizeof text,
           "phase,epoch,val_error,test_error,active_weights,timestamp\n"
           "grow,1,0.1,0.09,1150,t\ngrow,2,0.08,0.07,1350,t\n"
           "prune,,0.09,0.085,1050,t\nprune,,0.085,0.08,1240,t\n"
           "finetune,3,0.07,0.065,1240,t\n"
           "finetune,4,0.06"); /* a row being written: left out */
  write_text(nest_test_path(run, "metrics.csv"), text);
  write_text(nest_test_path(run, "summary.txt"), "test_error = 0.065\n"); /* finished */
  const char *out = plot_ok(run, "--script --only connections,errors");
  assert_png(out, "connections.png");
  assert_png(out, "errors.png");
  check_fig8(out, "set label 'final: 1,240' at 4, 1240");
  /* rows without an epoch: x is the row's position */
  check_errors(out, "1 10 9\n2 8 7\n3 9 8.5\n4 8.5 8\n5 7 6.5\n",
               "evaluation (metrics.csv row)", "'pruning'");
}

/* The files as nest writes them now give the same Fig. 8, and errors.png with the pruning
 * iterations between training and fine-tuning (x: the row's position, the epochs repeat). */
static void test_nest_layout(void **state) {
  (void)state;
  if (!have_gnuplot()) skip();
  const char *run = mkdir_in(nest_test_tmpdir(), "now_run");
  write_run_now(run);
  const char *out = plot_ok(run, "--script --only connections,errors");
  assert_png(out, "connections.png");
  assert_png(out, "errors.png");
  check_fig8(out, "set label 'so far: 1,240' at 4, 1240");
  check_errors(out, "1 10 9\n2 5 4\n3 6 5\n4 7 6\n5 3 2.5\n",
               "evaluation (metrics.csv row)", "'pruning'");
}

static void test_area(void **state) {
  (void)state;
  if (!have_gnuplot()) skip();
  const char *run = mkdir_in(nest_test_tmpdir(), "cnn_run");
  write_lenet5_area(nest_test_path(run, "model.h5"));
  const char *out = plot_ok(run, "--script");
  assert_png(out, "area.png");
  assert_false(exists(out, "density.png"));
  assert_non_null(strstr(out_text, "skipped density.png: the first weight layer is a convolution"));
  assert_non_null(strstr(out_text, "skipped connections.png: no events.csv"));
  assert_non_null(strstr(out_text, "skipped errors.png: no metrics.csv"));
  /* 4 tiles of 24 x 24 in 3 columns, NaN gaps of 2 columns and 6 rows: kernel 1 keeps its
   * top half, kernel 2 nothing; the fourth tile starts the second row of tiles (row 30). */
  static char b[1 << 16];
  datablock(out, "area.gp", "a", b, sizeof b);
  char *rows[64];
  int n = 0;
  for (char *s = strtok(b, "\n"); s && n < 64; s = strtok(NULL, "\n")) rows[n++] = s;
  assert_int_equal(n, 2 * 30 - 6);
  double v[80];
  static const int sample[] = {0, 11, 12, 23, 24, 29, 30, 37, 53};
  for (size_t i = 0; i < sizeof sample / sizeof *sample; ++i) {
    const int r = sample[i];
    int k = 0;
    for (char *s = strtok(rows[r], " "); s && k < 80; s = strtok(NULL, " ")) v[k++] = strtod(s, NULL);
    assert_int_equal(k, 3 * 26 - 2);
    if (r < 24) {
      assert_true(v[0] == 1 && v[23] == 1);              /* kernel 0 */
      assert_true(v[26] == (r < 12 ? 1 : 0));            /* kernel 1 */
      assert_true(v[52] == 0 && v[75] == 0);             /* kernel 2 */
      assert_true(isnan(v[24]) && isnan(v[51]));         /* gaps */
    } else if (r >= 30) {
      assert_true(v[0] == 1 && v[1] == 0);               /* kernel 3: even columns */
      assert_true(isnan(v[26]));                         /* no fifth kernel */
    } else {
      assert_true(isnan(v[0]));                          /* the gap between tile rows */
    }
  }
  char gp[1 << 16];
  nest_test_slurp(nest_test_path(out, "area.gp"), gp, sizeof gp);
  assert_non_null(strstr(gp, "set label 'kernel 3' at 12, 27 "));
  assert_null(strstr(gp, "the run has not finished"));

  /* A live run (no model.h5 yet): its newest checkpoint, not a damaged one, not an older one
   * (an MLP here, which has no conv layer). */
  const char *live = mkdir_in(nest_test_tmpdir(), "live_run");
  const char *ck = mkdir_in(live, "checkpoints");
  write_mlp(nest_test_path(ck, "ckpt-00000001.h5"), 10);
  write_lenet5_area(nest_test_path(ck, "ckpt-00000002.h5"));
  write_text(nest_test_path(ck, "ckpt-00000003.h5.bad"), "damaged");
  out = plot_ok(live, "--script --only area");
  assert_png(out, "area.png");
  nest_test_slurp(nest_test_path(out, "area.gp"), gp, sizeof gp);
  assert_non_null(strstr(gp, "from ckpt-00000002.h5: the run has not finished"));
}

static void test_missing_and_no_gnuplot(void **state) {
  (void)state;
  const char *run = mkdir_in(nest_test_tmpdir(), "bare_run");
  write_metrics(run);
  char args[2048];
  /* No gnuplot: a note, exit 0, nothing written (NEST_GNUPLOT, then PATH without it). */
  snprintf(args, sizeof args, "'%s' --out '%s/p1'", run, run);
  assert_int_equal(run_plot("NEST_GNUPLOT=/nonexistent/gnuplot", args), 0);
  assert_non_null(strstr(out_text, "/nonexistent/gnuplot not found"));
  assert_false(exists(run, "p1"));
  assert_int_equal(run_plot("PATH=/nonexistent", args), 0);
  assert_non_null(strstr(out_text, "gnuplot not found"));
  assert_string_equal(err_text, "");
  if (!have_gnuplot()) skip();
  /* Only metrics.csv: errors.png, the rest skipped with a note each. */
  snprintf(args, sizeof args, "'%s'", run);
  assert_int_equal(run_plot(NULL, args), 0);
  assert_png(nest_test_path(run, "plots"), "errors.png");
  assert_non_null(strstr(out_text, "skipped connections.png"));
  assert_non_null(strstr(out_text, "skipped density.png: no model_grown.h5 or model.h5"));
  assert_non_null(strstr(out_text, "skipped area.png"));
  assert_string_equal(err_text, "");
}

static void test_malformed(void **state) {
  (void)state;
  if (!have_gnuplot()) skip();
  const char *run = mkdir_in(nest_test_tmpdir(), "bad_run");
  write_events(run);
  char text[2048];
  snprintf(text, sizeof text, "%s1,10,0.1,1.2,0.5\n", METRICS_HEAD);
  write_text(nest_test_path(run, "metrics.csv"), text);
  char args[2048];
  snprintf(args, sizeof args, "'%s'", run);
  assert_int_equal(run_plot(NULL, args), 1);
  assert_one_error("metrics.csv: line 2 has 5 fields, the header has 17");
  assert_png(nest_test_path(run, "plots"), "connections.png"); /* the others still drawn */
  assert_false(exists(nest_test_path(run, "plots"), "errors.png"));

  snprintf(text, sizeof text, "%s1,10,0.1,1.2,0.5,0.3,abc,0.3,0.9,1,1,1,1,1,grow,,\n",
           METRICS_HEAD);
  write_text(nest_test_path(run, "metrics.csv"), text);
  snprintf(args, sizeof args, "'%s' --only errors", run);
  assert_int_equal(run_plot(NULL, args), 1);
  assert_one_error("metrics.csv: line 2, column 'val_acc': 'abc' is not a number");

  write_text(nest_test_path(run, "metrics.csv"), "");
  assert_int_equal(run_plot(NULL, args), 1);
  assert_one_error("metrics.csv: empty file");

  write_text(nest_test_path(run, "metrics.csv"), "epoch,step,lr\n1,2,3\n");
  assert_int_equal(run_plot(NULL, args), 1);
  assert_one_error("metrics.csv: no val_acc");

  /* A corrupt model file: one error naming it. */
  write_text(nest_test_path(run, "model.h5"), "not an HDF5 file");
  snprintf(args, sizeof args, "'%s' --only density", run);
  assert_int_equal(run_plot(NULL, args), 1);
  assert_one_error("model.h5");
}

/* A gnuplot that fails or writes no PNG: an error, and the PNG already there is untouched. */
static void test_gnuplot_fails(void **state) {
  (void)state;
  const char *run = mkdir_in(nest_test_tmpdir(), "fail_run");
  write_metrics(run);
  const char *out = mkdir_in(run, "plots");
  write_text(nest_test_path(out, "errors.png"), "old figure");
  const char *fake = nest_test_path(run, "fake_gnuplot.sh");
  /* writes a cut PNG (its signature and a few bytes) to the output it is given, exits 0 */
  write_text(fake, "#!/bin/sh\nout=$(sed -n \"s/^set output '\\(.*\\)'$/\\1/p\")\n"
                   "printf '\\211PNG\\r\\n\\032\\n0000IHDR' > \"$out\"\nexit 0\n");
  assert_int_equal(chmod(fake, 0755), 0);
  char args[2048], env[1200], buf[64];
  snprintf(args, sizeof args, "'%s' --only errors", run);
  assert_int_equal(run_plot("NEST_GNUPLOT=/bin/false", args), 1);
  assert_one_error("errors.png: gnuplot failed");
  snprintf(env, sizeof env, "NEST_GNUPLOT='%s'", fake);
  assert_int_equal(run_plot(env, args), 1);
  assert_one_error("errors.png: gnuplot wrote no complete PNG");
  nest_test_slurp(nest_test_path(out, "errors.png"), buf, sizeof buf);
  assert_string_equal(buf, "old figure");
  assert_false(exists(out, "errors.png.tmp"));
  if (!have_gnuplot()) skip();
  /* a real gnuplot stopped by a file-size limit (as by a full disk) half-way through the PNG */
  assert_int_equal(run_plot("ulimit -f 4;", args), 1);
  assert_one_error("errors.png: gnuplot failed");
  nest_test_slurp(nest_test_path(out, "errors.png"), buf, sizeof buf);
  assert_string_equal(buf, "old figure");
  assert_false(exists(out, "errors.png.tmp"));
}

/* A width sweep: r = 0.5 three seeds, r = 1.0 two (one growth-only), one unfinished run. */
static void sweep_run(const char *parent, const char *name, double r, int seed, double grown,
                      double final, double grow_s) {
  const char *d = mkdir_in(parent, name);
  char text[1024];
  snprintf(text, sizeof text, "; config\n[run]\nseed = %d\n\n[model]\narch = lenet300\n"
                              "; width ratio\nwidth = %g ; r\n", seed, r);
  write_text(nest_test_path(d, "config.ini"), text);
  if (grown < 0) return; /* unfinished: no summary.txt */
  int k = snprintf(text, sizeof text, "arch = lenet300\nwall_s = 99\ngrown_weights = %.0f\n"
                   "grow_wall_s = %g\ntest_error = 0.015\n", grown, grow_s);
  if (final > 0)
    snprintf(text + k, sizeof text - (size_t)k, "prune_weights_after = %.0f\n"
             "active_weights = %.0f\n", final, final);
  else
    snprintf(text + k, sizeof text - (size_t)k, "active_weights = %.0f\n", grown);
  write_text(nest_test_path(d, "summary.txt"), text);
}

static void test_sweep(void **state) {
  (void)state;
  if (!have_gnuplot()) skip();
  const char *sw = mkdir_in(nest_test_tmpdir(), "sweep");
  sweep_run(sw, "a-r0.5-s1", 0.5, 1, 100, 10, 10);
  sweep_run(sw, "a-r0.5-s2", 0.5, 2, 900, 90, 30);
  sweep_run(sw, "a-r0.5-s3", 0.5, 3, 200, 20, 20);
  sweep_run(sw, "a-r1-s1", 1.0, 1, 400, 100, 5);
  sweep_run(sw, "a-r1-s2", 1.0, 2, 600, -1, 7); /* growth only */
  sweep_run(sw, "a-r1-s3", 1.0, 3, -1, -1, 0);  /* unfinished */
  char args[4096];
  snprintf(args, sizeof args,
           "--sweep --script '%s/a-r1-s1' '%s/a-r0.5-s1' '%s/a-r0.5-s2' '%s/a-r0.5-s3' "
           "'%s/a-r1-s2' '%s/a-r1-s3'",
           sw, sw, sw, sw, sw, sw);
  if (run_plot(NULL, args) != 0) fail_msg("nest_plot --sweep failed: %s", err_text);
  assert_non_null(strstr(out_text, "a-r1-s3: no summary.txt"));
  const char *out = mkdir_in(sw, "sweep-plots");
  assert_png(out, "sweep_growth.png");
  assert_png(out, "sweep_final.png");
  char b[4096];
  /* r, median, min, max of the post-growth size, then of the growth time */
  datablock(out, "sweep_growth.gp", "s", b, sizeof b);
  assert_string_equal(b, "0.5 200 100 900 20 10 30\n1 500 400 600 6 5 7\n");
  /* final size and compression post-growth / final (growth-only run left out) */
  datablock(out, "sweep_final.gp", "s", b, sizeof b);
  assert_string_equal(b, "0.5 20 10 90 10 10 10\n1 100 100 100 4 4 4\n");

  /* A malformed summary.txt: one error naming it, the other runs still plotted. */
  write_text(nest_test_path(mkdir_in(sw, "a-r0.5-s3"), "summary.txt"),
             "grown_weights = lots\n");
  snprintf(args, sizeof args, "--sweep '%s/a-r0.5-s1' '%s/a-r0.5-s3' --out '%s/o2'", sw, sw, sw);
  assert_int_equal(run_plot(NULL, args), 1);
  assert_one_error("a-r0.5-s3/summary.txt: grown_weights = 'lots' is not a number");
  assert_png(mkdir_in(sw, "o2"), "sweep_growth.png");
}

static void test_usage(void **state) {
  (void)state;
  assert_int_equal(run_plot(NULL, ""), 2);
  assert_non_null(strstr(err_text, "expected a run directory"));
  assert_int_equal(run_plot(NULL, "--bogus x"), 2);
  assert_non_null(strstr(err_text, "unknown option '--bogus'"));
  assert_int_equal(run_plot(NULL, ". --only errors,,area"), 2);
  assert_int_equal(run_plot(NULL, ". --only errors,pictures"), 2);
  assert_non_null(strstr(err_text, "unknown figure 'pictures'"));
  assert_int_equal(run_plot(NULL, "a b"), 2);
  assert_int_equal(run_plot(NULL, "--out"), 2);
  assert_int_equal(run_plot(NULL, "/nonexistent/run"), 1);
  assert_one_error("/nonexistent/run: not a run directory");
  assert_int_equal(run_plot(NULL, "--help"), 0);
  assert_non_null(strstr(out_text, "usage: nest_plot"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_run_dir),
      cmocka_unit_test(test_future_columns),
      cmocka_unit_test(test_nest_layout),
      cmocka_unit_test(test_area),
      cmocka_unit_test(test_missing_and_no_gnuplot),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_gnuplot_fails),
      cmocka_unit_test(test_sweep),
      cmocka_unit_test(test_usage),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
