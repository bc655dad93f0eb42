/* test_report.c — the model report (report.h) and the nest_report tool:
 * a run directory with seed / grown / final stages of a LeNet-300-100 at width 0.1 (the final
 * one relabelled "pruned" by its stage attribute) is checked layer by layer against the saved
 * nets and their masks as nest_model_read_masks sees them: active and total counts, FLOPs
 * (nest_net_layer_flops / nest_net_flops), FLOPs x in_frac, Act%, the base columns and the
 * compression figures against hand-computed LeNet-300-100 numbers; a LeNet-5 file for conv rows
 * (Conv%, base FLOPs worked out by hand); a dense-only run without info (unknown base); the text
 * and Markdown tables and the CSV; the tool's exit codes and one-line errors for a missing
 * directory, an empty one, a file that is not a model, a corrupt model, a bad base_arch and
 * usage mistakes. */
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
#include "nest/report.h"
#include "test_util.h"

#define REPORT NEST_BINARY_DIR "/nest_report"

static const nest_shape MLP_IN = {20, 1, 1};
enum { MLP_CLASSES = 4 };
/* LeNet-300-100 on 20 inputs and 4 classes, dense: 20x300 + 300x100 + 100x4 weights, each used
 * once per inference (2 FLOPs per MAC). */
static const int64_t L300_W[3] = {6000, 30000, 400};
#define L300_WEIGHTS 36400
#define L300_FLOPS 72800.0

/* ---- helpers ---------------------------------------------------------------------------------- */

/* `arch` at `width` (no BN, no dropout), `grow` extra units in fc1, seed masks at `density`. */
static nest_net *make_net(const char *arch, nest_shape in, int classes, double width, int grow,
                          double density, uint64_t seed) {
  nest_layer_spec *specs;
  int n;
  const nest_arch_opts o = {.width = width};
  assert_ok(nest_arch_build(arch, &o, in, classes, &specs, &n));
  if (grow) {
    assert_string_equal(specs[0].name, "fc1");
    specs[0].hp.units += grow;
  }
  nest_net *net;
  assert_ok(nest_net_create(specs, n, in, classes, 4, 1, &net));
  free(specs);
  assert_ok(nest_net_init(net, seed, density, -1));
  return net;
}

/* Info for `net`: act_frac / in_frac of its weight layers from `act` / `in` in layer order
 * (NaN for the rest); the arrays are owned by the caller. */
static nest_model_info make_info(const nest_net *net, const char *stage, const char *base,
                                 double verr, double terr, double *actbuf, double *inbuf,
                                 const double *act, const double *in) {
  nest_model_info info = {.val_error = verr, .test_error = terr, .nlayers = net->nlayers,
                          .act_frac = actbuf, .in_frac = inbuf};
  snprintf(info.stage, sizeof info.stage, "%s", stage);
  snprintf(info.base_arch, sizeof info.base_arch, "%s", base);
  for (int i = 0, k = 0; i < net->nlayers; ++i) {
    actbuf[i] = inbuf[i] = NAN;
    const nest_layer_kind kind = net->layers[i]->kind;
    if (kind != NEST_LAYER_DENSE && kind != NEST_LAYER_CONV2D) continue;
    actbuf[i] = act ? act[k] : NAN;
    inbuf[i] = in ? in[k] : NAN;
    ++k;
  }
  return info;
}

static const char *mkdir_in(const char *parent, const char *name) {
  const char *d = nest_test_path(parent, name);
  assert_int_equal(mkdir(d, 0755), 0);
  return d;
}

/* Active entries of every mask of the file with nest_model_read_masks, and of layer `layer`. */
static int64_t mask_count(const char *path, const char *layer) {
  nest_model_masks *m;
  assert_ok(nest_model_read_masks(path, &m));
  int64_t n = 0;
  for (int t = 0; t < m->ntensors; ++t) {
    if (layer && strcmp(m->tensors[t].layer, layer) != 0) continue;
    for (size_t i = 0; i < m->tensors[t].count; ++i) n += m->tensors[t].mask[i];
  }
  nest_model_masks_free(&m);
  return n;
}

static int64_t mask_total(const char *path, const char *layer) {
  nest_model_masks *m;
  assert_ok(nest_model_read_masks(path, &m));
  int64_t n = 0;
  for (int t = 0; t < m->ntensors; ++t)
    if (!layer || strcmp(m->tensors[t].layer, layer) == 0) n += (int64_t)m->tensors[t].count;
  nest_model_masks_free(&m);
  return n;
}

/* Every layer row and the totals of stage s against the saved net (already loaded) and its
 * file's masks. */
static void check_stage_counts(const nest_report_stage *s, const nest_net *net) {
  int k = 0;
  double flops = 0;
  for (int i = 0; i < net->nlayers; ++i) {
    const nest_layer *l = net->layers[i];
    if (l->kind != NEST_LAYER_DENSE && l->kind != NEST_LAYER_CONV2D) continue;
    assert_true(k < s->nlayers);
    const nest_report_layer *r = &s->layers[k++];
    assert_string_equal(r->name, l->name);
    assert_int_equal(r->kind, l->kind);
    assert_int_equal(r->active, mask_count(s->path, l->name));
    assert_int_equal(r->total, mask_total(s->path, l->name));
    assert_true(r->flops == nest_net_layer_flops(net, i));
    flops += r->flops;
    if (l->kind == NEST_LAYER_CONV2D) assert_true(r->conv_frac == nest_net_layer_conv_frac(net, i));
    else assert_true(isnan(r->conv_frac));
  }
  assert_int_equal(k, s->nlayers);
  assert_int_equal(s->active, mask_count(s->path, NULL));
  assert_int_equal(s->total, mask_total(s->path, NULL));
  int64_t aw, tw;
  nest_net_count(net, &aw, &tw, NULL);
  assert_int_equal(s->active, aw);
  assert_int_equal(s->total, tw);
  assert_true(s->flops == nest_net_flops(net));
  assert_true(s->flops == flops);
}

static char out_text[65536], err_text[8192];

static int run_tool(const char *args) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "'%s' %s", REPORT, args);
  const int code = nest_test_run(cmd, out_text, sizeof out_text, err_text, sizeof err_text);
  assert_true(code >= 0);
  return code;
}

/* The tool failed with exit code `rc` and exactly one stderr line
 * "nest_report: error: ...<word>...". */
static void expect_tool_error(const char *args, int rc, const char *word) {
  const int got = run_tool(args);
  if (got != rc || strncmp(err_text, "nest_report: error: ", 20) != 0 || !strstr(err_text, word))
    fail_msg("nest_report %s: expected exit %d and an error naming '%s', got %d: %s", args, rc,
             word, got, err_text);
  const char *nl = strchr(err_text, '\n');
  assert_non_null(nl);
  assert_int_equal(nl[1], '\0');
}

/* Split a CSV line (no quoted fields in these tests) into at most 32 fields. */
static int csv_fields(char *line, char **f) {
  int n = 0;
  for (char *p = line;; ++p) {
    f[n++] = p;
    p = strchr(p, ',');
    if (!p || n == 32) break;
    *p = '\0';
  }
  return n;
}

static const char *CSV_HEADER =
    "stage,file,layer,kind,base_weights,active_weights,total_weights,density,flops,flops_act,"
    "act_frac,in_frac,conv_frac,base_flops,weight_compression,flop_compression,val_error,"
    "test_error,val_top5_error,test_top5_error";

/* ---- a grow-and-prune run --------------------------------------------------------------------- */

typedef struct {
  const char *dir;
  char path[3][1024];
  nest_net *net[3];
} run3;

/* seed: LeNet-300-100 at width 0.1 (30-10), density 0.3; grown: fc1 + 5 units, density 0.6;
 * final: the grown net with every other active weight of fc1 and fc2 dropped, stage attribute
 * "pruned". Act% / in_frac known for the grown and final stages only; the final one lacks fc3's
 * in_frac. */
static void make_run3(run3 *r) {
  r->dir = mkdir_in(nest_test_tmpdir(), "run3");
  static const char *files[3] = {"model_seed.h5", "model_grown.h5", "model.h5"};
  for (int k = 0; k < 3; ++k) snprintf(r->path[k], sizeof r->path[k], "%s/%s", r->dir, files[k]);
  r->net[0] = make_net("lenet300", MLP_IN, MLP_CLASSES, 0.1, 0, 0.3, 1);
  r->net[1] = make_net("lenet300", MLP_IN, MLP_CLASSES, 0.1, 5, 0.6, 2);
  r->net[2] = make_net("lenet300", MLP_IN, MLP_CLASSES, 0.1, 5, 0.6, 2);
  for (int i = 0; i < r->net[2]->nlayers; ++i) {
    nest_layer *l = r->net[2]->layers[i];
    if (strcmp(l->name, "fc3") == 0 || l->kind != NEST_LAYER_DENSE) continue;
    int on = 0;
    for (size_t j = 0; j < l->param[0].count; ++j)
      if (l->m[0][j] != 0.0f && on++ % 2) l->m[0][j] = 0.0f;
  }
  nest_net_apply_masks(r->net[2]);
  double a[5], b[5];
  const double act1[3] = {0.5, 0.25, NAN}, in1[3] = {0.75, 0.5, 0.25};
  const double act2[3] = {0.375, 0.125, NAN}, in2[3] = {0.75, 0.375, NAN};
  nest_model_info i0 = make_info(r->net[0], "", "lenet300", 0.5, NAN, a, b, NULL, NULL);
  assert_ok(nest_model_save_info(r->net[0], &i0, r->path[0]));
  nest_model_info i1 = make_info(r->net[1], "", "lenet300", 0.0625, 0.125, a, b, act1, in1);
  assert_ok(nest_model_save_info(r->net[1], &i1, r->path[1]));
  nest_model_info i2 = make_info(r->net[2], "pruned", "lenet300", 0.03125, 0.046875, a, b, act2,
                                 in2);
  i2.has_top5 = 1, i2.val_top5_error = 0.015625, i2.test_top5_error = NAN;
  assert_ok(nest_model_save_info(r->net[2], &i2, r->path[2]));
}

static void free_run3(run3 *r) {
  for (int k = 0; k < 3; ++k) nest_net_destroy(&r->net[k]);
}

static void test_run_dir(void **state) {
  run3 r;
  make_run3(&r);
  nest_report *rep;
  assert_ok(nest_report_create(r.dir, &rep));
  assert_true(rep->is_dir);
  assert_int_equal(rep->nstages, 3);
  static const char *labels[3] = {"seed", "grown", "pruned"};
  for (int k = 0; k < 3; ++k) {
    const nest_report_stage *s = &rep->stages[k];
    assert_string_equal(s->label, labels[k]);
    assert_string_equal(s->path, r.path[k]);
    assert_string_equal(s->base_arch, "lenet300");
    assert_int_equal(s->nlayers, 3);
    check_stage_counts(s, r.net[k]);
    /* Base: LeNet-300-100 dense, by hand; layer names match, so every base column is known. */
    assert_int_equal(s->base_weights, L300_WEIGHTS);
    assert_true(s->base_flops == L300_FLOPS);
    for (int j = 0; j < 3; ++j) {
      assert_int_equal(s->layers[j].base_weights, L300_W[j]);
      assert_true(s->layers[j].base_flops == 2.0 * (double)L300_W[j]);
    }
    assert_true(s->weight_compression == (double)L300_WEIGHTS / (double)s->active);
    assert_true(s->flop_compression == L300_FLOPS / s->flops);
    assert_true(s->weight_compression > 1.0);
  }
  assert_string_equal(rep->stages[0].widths, "20-30-10-4");
  assert_string_equal(rep->stages[1].widths, "20-35-10-4");
  assert_int_equal(rep->stages[1].layers[0].total, 35 * 20);
  /* Pruning halved fc1 and fc2 (rounded up): strictly fewer weights than grown. */
  assert_true(rep->stages[2].active < rep->stages[1].active);
  assert_int_equal(rep->stages[2].layers[0].active, (rep->stages[1].layers[0].active + 1) / 2);

  /* Errors and activation figures. */
  assert_true(rep->stages[0].val_error == 0.5 && isnan(rep->stages[0].test_error));
  assert_true(rep->stages[2].test_error == 0.046875);
  assert_true(rep->stages[2].val_top5_error == 0.015625 && isnan(rep->stages[2].test_top5_error));
  assert_true(isnan(rep->stages[0].val_top5_error) && isnan(rep->stages[1].val_top5_error));
  const nest_report_stage *g = &rep->stages[1], *f = &rep->stages[2];
  assert_true(isnan(rep->stages[0].layers[0].act_frac));
  assert_true(isnan(rep->stages[0].flops_act));
  assert_true(g->layers[0].act_frac == 0.5 && g->layers[1].act_frac == 0.25);
  assert_true(isnan(g->layers[2].act_frac));
  double sum = 0;
  const double in1[3] = {0.75, 0.5, 0.25};
  for (int j = 0; j < 3; ++j) {
    assert_true(g->layers[j].in_frac == in1[j]);
    assert_true(g->layers[j].flops_act == g->layers[j].flops * in1[j]);
    sum += g->layers[j].flops_act;
  }
  assert_true(g->flops_act == sum);
  /* One layer without in_frac: its flops_act and the stage's are unknown. */
  assert_true(f->layers[1].flops_act == f->layers[1].flops * 0.375);
  assert_true(isnan(f->layers[2].flops_act));
  assert_true(isnan(f->flops_act));

  /* CSV: header, one row per stage x layer, a total row per stage, fields as the report. */
  const char *csv = nest_test_path(r.dir, "lib.csv");
  assert_ok(nest_report_write_csv(rep, csv));
  char text[16384];
  nest_test_slurp(csv, text, sizeof text);
  char *save = NULL, *line = strtok_r(text, "\n", &save);
  assert_non_null(line);
  assert_string_equal(line, CSV_HEADER);
  int rows = 0;
  while ((line = strtok_r(NULL, "\n", &save))) {
    char *fl[32];
    assert_int_equal(csv_fields(line, fl), 20);
    const nest_report_stage *s = &rep->stages[rows / 4];
    assert_string_equal(fl[0], s->label);
    assert_string_equal(fl[1], s->path);
    if (rows % 4 < 3) {
      const nest_report_layer *l = &s->layers[rows % 4];
      assert_string_equal(fl[2], l->name);
      assert_string_equal(fl[3], "dense");
      assert_int_equal(atoll(fl[4]), l->base_weights);
      assert_int_equal(atoll(fl[5]), l->active);
      assert_int_equal(atoll(fl[6]), l->total);
      assert_true(atof(fl[8]) == l->flops);
      assert_string_equal(fl[12], ""); /* Conv%: not a conv layer */
      if (isnan(l->in_frac)) assert_string_equal(fl[11], "");
      else assert_true(atof(fl[11]) == l->in_frac);
    } else {
      assert_string_equal(fl[2], "total");
      assert_int_equal(atoll(fl[4]), L300_WEIGHTS);
      assert_int_equal(atoll(fl[5]), s->active);
      assert_int_equal(atoll(fl[6]), s->total);
      assert_true(atof(fl[8]) == s->flops);
      assert_true(atof(fl[13]) == L300_FLOPS);
      assert_true(fabs(atof(fl[14]) - s->weight_compression) < 1e-8 * s->weight_compression);
      assert_true(fabs(atof(fl[15]) - s->flop_compression) < 1e-8 * s->flop_compression);
    }
    /* top-5 errors: only the pruned stage has one (validation) */
    if (rows / 4 == 2) assert_true(atof(fl[18]) == 0.015625);
    else assert_string_equal(fl[18], "");
    assert_string_equal(fl[19], "");
    ++rows;
  }
  assert_int_equal(rows, 12);

  /* Text table: a header, 12 rows, blank lines between stages; Markdown: the same rows, every
   * line with the same number of cells. */
  char *buf = NULL;
  size_t len = 0;
  FILE *mf = open_memstream(&buf, &len);
  assert_non_null(mf);
  nest_report_print(rep, mf, 0);
  fclose(mf);
  assert_non_null(strstr(buf, "pruned: "));
  assert_non_null(strstr(buf, "seed (untrained): "));
  assert_null(strstr(buf, "grown (untrained)"));
  assert_null(strstr(buf, "top-5")); /* 4 classes: the report leaves top-5 out */
  assert_non_null(strstr(buf, "base lenet300 (dense: 36400 weights, 72800 FLOPs)"));
  assert_non_null(strstr(buf, "FLOPs w/ Act%"));
  assert_non_null(strstr(buf, "N/A"));
  int text_rows = 0;
  for (char *p = strstr(buf, "\nseed "); p; p = strstr(p + 1, "\nseed ")) ++text_rows;
  assert_int_equal(text_rows, 4);
  free(buf);
  mf = open_memstream(&buf, &len);
  nest_report_print(rep, mf, 1);
  fclose(mf);
  int table_lines = 0;
  for (char *p = buf; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
    if (*p != '|') continue;
    int bars = 0;
    for (char *q = p; *q && *q != '\n'; ++q) bars += *q == '|';
    assert_int_equal(bars, 14);
    ++table_lines;
  }
  assert_int_equal(table_lines, 2 + 12);
  assert_non_null(strstr(buf, "- seed (untrained): `")); /* a seed's errors are not results */
  assert_non_null(strstr(buf, "- pruned: `"));
  free(buf);
  nest_report_destroy(&rep);
  assert_null(rep);

  /* The tool on the directory: the same table, report.csv beside the models, equal to the
   * library's CSV. */
  char args[4096], a[16384], b[16384];
  snprintf(args, sizeof args, "'%s'", r.dir);
  assert_int_equal(run_tool(args), 0);
  assert_non_null(strstr(out_text, "grown: "));
  assert_non_null(strstr(err_text, "report.csv"));
  nest_test_slurp(nest_test_path(r.dir, "report.csv"), a, sizeof a);
  nest_test_slurp(csv, b, sizeof b);
  assert_true(strlen(a) > 100);
  assert_string_equal(a, b);
  snprintf(args, sizeof args, "--markdown '%s' --csv '%s'", r.dir,
           nest_test_path(r.dir, "md.csv"));
  assert_int_equal(run_tool(args), 0);
  assert_non_null(strstr(out_text, "| stage"));
  assert_int_equal(access(nest_test_path(r.dir, "md.csv"), F_OK), 0);

  /* One model file: one stage labelled by its attribute; no CSV unless asked for. */
  const char *solo = mkdir_in(nest_test_tmpdir(), "solo");
  const char *copy = nest_test_path(solo, "grown-copy.h5");
  assert_ok(nest_model_save(r.net[1], copy));
  snprintf(args, sizeof args, "'%s'", r.path[1]);
  assert_int_equal(run_tool(args), 0);
  assert_non_null(strstr(out_text, "grown: "));
  snprintf(args, sizeof args, "'%s'", copy);
  assert_int_equal(run_tool(args), 0);
  assert_non_null(strstr(out_text, "model: "));
  assert_non_null(strstr(out_text, "base unknown"));
  assert_int_not_equal(access(nest_test_path(solo, "report.csv"), F_OK), 0);
  free_run3(&r);
}

/* ---- conv rows, a dense-only run ------------------------------------------------------------ */

static void test_conv_and_plain(void **state) {
  /* LeNet-5 at width 0.5 on 1x28x28, 10 classes. The dense Caffe LeNet-5 by hand: conv1 20x1x5x5
   * at 24x24 positions, conv2 50x20x5x5 at 8x8, fc1 500x800, fc2 10x500. */
  const char *dir = mkdir_in(nest_test_tmpdir(), "lenet5");
  const char *path = nest_test_path(dir, "model.h5");
  nest_net *net = make_net("lenet5", (nest_shape){1, 28, 28}, 10, 0.5, 0, 0.4, 3);
  double a[16], b[16];
  const double act[4] = {0.5, 0.5, 0.25, NAN}, in[4] = {1.0, 0.5, 0.5, 0.25};
  nest_model_info info = make_info(net, "", "lenet5", NAN, NAN, a, b, act, in);
  assert_ok(nest_model_save_info(net, &info, path));
  nest_report *rep;
  assert_ok(nest_report_create(path, &rep));
  assert_false(rep->is_dir);
  assert_int_equal(rep->nstages, 1);
  const nest_report_stage *s = &rep->stages[0];
  assert_string_equal(s->label, "final"); /* named model.h5, no stage attribute */
  assert_int_equal(s->nlayers, 4);
  check_stage_counts(s, net);
  static const int64_t w[4] = {500, 25000, 400000, 5000};
  static const double fl[4] = {2.0 * 500 * 576, 2.0 * 25000 * 64, 2.0 * 400000, 2.0 * 5000};
  for (int j = 0; j < 4; ++j) {
    assert_int_equal(s->layers[j].base_weights, w[j]);
    assert_true(s->layers[j].base_flops == fl[j]);
  }
  assert_int_equal(s->base_weights, 430500);
  assert_true(s->base_flops == 4586000.0);
  assert_true(s->layers[0].conv_frac == 1.0 && s->layers[1].conv_frac == 1.0);
  assert_true(isnan(s->layers[2].conv_frac));
  assert_true(s->layers[0].total == 10 * 1 * 25); /* width 0.5: 10 maps */
  assert_true(s->flops_act == s->layers[0].flops + 0.5 * (s->layers[1].flops + s->layers[2].flops)
                                  + 0.25 * s->layers[3].flops);
  assert_true(s->flop_compression == 4586000.0 / s->flops);
  char *buf = NULL;
  size_t len = 0;
  FILE *mf = open_memstream(&buf, &len);
  nest_report_print(rep, mf, 0);
  fclose(mf);
  assert_non_null(strstr(buf, "conv2d"));
  assert_non_null(strstr(buf, "100.0%")); /* Conv% of a conv layer without partial areas */
  free(buf);
  nest_report_destroy(&rep);
  nest_net_destroy(&net);

  /* A dense run: only model.h5, saved without info. One "final" stage, base unknown. */
  const char *plain = mkdir_in(nest_test_tmpdir(), "plain");
  net = make_net("mlp:20-12-4", MLP_IN, MLP_CLASSES, 1.0, 0, 1.0, 4);
  assert_ok(nest_model_save(net, nest_test_path(plain, "model.h5")));
  assert_ok(nest_report_create(plain, &rep));
  assert_int_equal(rep->nstages, 1);
  s = &rep->stages[0];
  assert_string_equal(s->label, "final");
  check_stage_counts(s, net);
  assert_int_equal(s->active, 20 * 12 + 12 * 4);
  assert_int_equal(s->base_weights, -1);
  assert_true(isnan(s->base_flops) && isnan(s->weight_compression));
  assert_int_equal(s->layers[0].base_weights, -1);
  assert_true(isnan(s->layers[0].act_frac) && isnan(s->flops_act));
  const char *csv = nest_test_path(plain, "r.csv");
  assert_ok(nest_report_write_csv(rep, csv));
  char text[4096];
  nest_test_slurp(csv, text, sizeof text);
  /* fc1: base, act, in, conv, base FLOPs, compressions, errors all unknown: empty fields. */
  char want[4400];
  snprintf(want, sizeof want, "final,%s,fc1,dense,,240,240,1,480,,,,,,,,,,,\n", s->path);
  assert_non_null(strstr(text, want));
  nest_report_destroy(&rep);
  nest_net_destroy(&net);

  /* More than 10 classes: the text shows the top-5 errors the file holds. */
  const char *many = mkdir_in(nest_test_tmpdir(), "classes12");
  net = make_net("mlp:20-12-12", MLP_IN, 12, 1.0, 0, 1.0, 5);
  double a12[8], b12[8];
  nest_model_info i12 = make_info(net, "final", "", 0.25, 0.375, a12, b12, NULL, NULL);
  i12.has_top5 = 1, i12.val_top5_error = 0.0625, i12.test_top5_error = 0.125;
  assert_ok(nest_model_save_info(net, &i12, nest_test_path(many, "model.h5")));
  assert_ok(nest_report_create(many, &rep));
  mf = open_memstream(&buf, &len);
  nest_report_print(rep, mf, 0);
  fclose(mf);
  assert_non_null(strstr(buf, "val error 25.00% (top-5 6.25%), test error 37.50% (top-5 12.50%)"));
  free(buf);
  nest_report_destroy(&rep);
  nest_net_destroy(&net);
}

/* ---- bad inputs ----------------------------------------------------------------------------- */

static void test_errors(void **state) {
  const char *tmp = nest_test_tmpdir();
  char args[4096];
  nest_report *rep = (nest_report *)1;

  /* Missing directory. */
  const char *missing = nest_test_path(tmp, "no-such-run");
  assert_int_equal(nest_report_create(missing, &rep), NEST_ERR_IO);
  assert_null(rep);
  assert_non_null(strstr(nest_error_message(), missing));
  snprintf(args, sizeof args, "'%s'", missing);
  expect_tool_error(args, 1, missing);

  /* A directory without any model file. */
  const char *empty = mkdir_in(tmp, "empty-run");
  assert_int_equal(nest_report_create(empty, &rep), NEST_ERR_IO);
  snprintf(args, sizeof args, "'%s'", empty);
  expect_tool_error(args, 1, "no model file");

  /* A file that is not a model (text), as the argument and as a run's model.h5. */
  const char *text = nest_test_path(tmp, "notes.txt");
  assert_int_equal(nest_test_write_file(text, "hello\n", 6), 0);
  assert_int_equal(nest_report_create(text, &rep), NEST_ERR_FORMAT);
  assert_non_null(strstr(nest_error_message(), text));
  snprintf(args, sizeof args, "'%s'", text);
  expect_tool_error(args, 1, text);
  const char *fake = mkdir_in(tmp, "fake-run");
  char fake_model[1100];
  snprintf(fake_model, sizeof fake_model, "%s/model.h5", fake);
  assert_int_equal(nest_test_write_file(fake_model, "hello\n", 6), 0);
  snprintf(args, sizeof args, "'%s'", fake);
  expect_tool_error(args, 1, fake_model);
  assert_int_not_equal(access(nest_test_path(fake, "report.csv"), F_OK), 0);

  /* A corrupt model: a good one cut in half, as a run's grown stage (the good seed before it
   * does not hide the error). */
  const char *cut = mkdir_in(tmp, "cut-run");
  char seed[1100], grown[1100];
  snprintf(seed, sizeof seed, "%s/model_seed.h5", cut);
  snprintf(grown, sizeof grown, "%s/model_grown.h5", cut);
  nest_net *net = make_net("lenet300", MLP_IN, MLP_CLASSES, 0.1, 0, 0.5, 9);
  assert_ok(nest_model_save(net, seed));
  char *bytes = malloc(1 << 20);
  assert_non_null(bytes);
  FILE *f = fopen(seed, "rb");
  assert_non_null(f);
  size_t n = fread(bytes, 1, 1 << 20, f);
  fclose(f);
  assert_true(n > 1000);
  assert_int_equal(nest_test_write_file(grown, bytes, n / 2), 0);
  free(bytes);
  assert_int_not_equal(nest_report_create(cut, &rep), NEST_OK);
  assert_null(rep);
  assert_non_null(strstr(nest_error_message(), grown));
  snprintf(args, sizeof args, "'%s'", cut);
  expect_tool_error(args, 1, grown);

  /* A base_arch that cannot describe the model's data (lenet5 needs an image). */
  const char *wrong = mkdir_in(tmp, "wrong-base");
  char wpath[1100];
  snprintf(wpath, sizeof wpath, "%s/model.h5", wrong);
  nest_model_info info = {.base_arch = "lenet5", .val_error = NAN, .test_error = NAN};
  assert_ok(nest_model_save_info(net, &info, wpath));
  assert_int_equal(nest_report_create(wrong, &rep), NEST_ERR_FORMAT);
  assert_non_null(strstr(nest_error_message(), "base_arch 'lenet5'"));
  snprintf(args, sizeof args, "'%s'", wrong);
  expect_tool_error(args, 1, wpath);

  /* A CSV that cannot be written: error naming it, after the table. */
  snprintf(args, sizeof args, "'%s' --csv '%s/no-dir/r.csv'", seed, tmp);
  assert_int_equal(run_tool(args), 1);
  assert_non_null(strstr(err_text, "nest_report: error: "));
  assert_non_null(strstr(err_text, "no-dir/r.csv"));

  /* Usage. */
  expect_tool_error("", 2, "expected one run directory or model file");
  snprintf(args, sizeof args, "'%s' '%s'", seed, seed);
  expect_tool_error(args, 2, "got 2");
  expect_tool_error("--bogus x", 2, "unknown option '--bogus'");
  snprintf(args, sizeof args, "'%s' --csv", seed);
  expect_tool_error(args, 2, "--csv needs a file name");
  assert_int_equal(run_tool("--help"), 0);
  assert_non_null(strstr(out_text, "usage: nest_report"));
  nest_net_destroy(&net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_run_dir),
      cmocka_unit_test(test_conv_and_plain),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
