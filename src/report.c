/* report.c — the model report (report.h): reads the stages of a run, counts per dense / conv
 * layer, compares with the dense base architecture, prints a text or Markdown table and writes
 * a CSV. Reads model files through model.h only (no HDF5 here) and never calls MPI. */
#define _POSIX_C_SOURCE 200809L
#include "nest/report.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nest/arch.h"
#include "nest/atomic.h"
#include "nest/model.h"
#include "nest/loss.h"
#include "nest/net.h"
#include "nest/rundir.h"

/* The files of a run directory, in stage order, and the label each gets without a stage
 * attribute. */
static const char *const run_files[] = {"model_seed.h5", "model_grown.h5", "model_trained.h5",
                                        "model.h5"};
static const char *const run_labels[] = {"seed", "grown", "trained", "final"};
enum { NRUN_FILES = 4 };

/* ---- the dense base net --------------------------------------------------------------------- */

/* What compression is measured against: per-layer weights and FLOPs of the base architecture,
 * built for one (arch, input shape, classes); kept while consecutive stages share them. */
typedef struct {
  char arch[256];
  nest_shape in;
  int nclasses;
  int nlayers;
  char (*names)[NEST_NAME_LEN];
  int64_t *weights;
  double *flops;
  int64_t total_weights;
  double total_flops;
} base_net;

static void base_free(base_net *b) {
  free(b->names);
  free(b->weights);
  free(b->flops);
  memset(b, 0, sizeof *b);
}

/* Build the base net for `arch` (width 1, no BN, no dropout, every weight active — the state
 * nest_net_create leaves the masks in) and record its counts. `path` names the model file whose
 * base_arch it is, for the message. */
static nest_status base_build(const char *path, const char *arch, nest_shape in, int nclasses,
                              base_net *b) {
  if (b->names && strcmp(b->arch, arch) == 0 && b->in.c == in.c && b->in.h == in.h &&
      b->in.w == in.w && b->nclasses == nclasses)
    return NEST_OK;
  base_free(b);
  const nest_arch_opts o = {.width = 1.0, .batchnorm = 0, .dropout = 0.0};
  nest_layer_spec *specs = NULL;
  int n = 0;
  nest_net *net = NULL;
  nest_status st = nest_arch_build(arch, &o, in, nclasses, &specs, &n);
  if (st == NEST_OK) st = nest_net_create(specs, n, in, nclasses, 1, 1, &net);
  free(specs);
  if (st == NEST_ERR_NOMEM) {
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  if (st != NEST_OK) {
    char why[512];
    snprintf(why, sizeof why, "%s", nest_error_message());
    return NEST_ERR(NEST_ERR_FORMAT, "%s: base_arch '%.200s' does not build for this model: %s",
                    path, arch, why);
  }
  NEST_CALL_GOTO(st, nest_calloc((void **)&b->names, (size_t)net->nlayers, sizeof *b->names,
                                 "base layer names"), fail);
  NEST_CALL_GOTO(st, nest_calloc((void **)&b->weights, (size_t)net->nlayers, sizeof *b->weights,
                                 "base layer weights"), fail);
  NEST_CALL_GOTO(st, nest_calloc((void **)&b->flops, (size_t)net->nlayers, sizeof *b->flops,
                                 "base layer FLOPs"), fail);
  b->nlayers = net->nlayers;
  for (int i = 0; i < net->nlayers; ++i) {
    const nest_layer *l = net->layers[i];
    snprintf(b->names[i], sizeof b->names[i], "%s", l->name);
    for (int s = 0; s < l->nparams; ++s)
      if (l->param[s].maskable) b->weights[i] += (int64_t)l->param[s].count;
    b->flops[i] = nest_net_layer_flops(net, i);
    b->total_weights += b->weights[i];
    b->total_flops += b->flops[i];
  }
  snprintf(b->arch, sizeof b->arch, "%s", arch);
  b->in = in;
  b->nclasses = nclasses;
  nest_net_destroy(&net);
  return NEST_OK;
fail:
  nest_net_destroy(&net);
  base_free(b);
  return st;
}

/* ---- one stage ------------------------------------------------------------------------------ */

/* A row of the report: dense and conv layers, and any other layer that has a mask (so the
 * totals are every active mask entry of the model whatever kinds come later). */
static int reported(const nest_layer *l) {
  if (l->kind == NEST_LAYER_DENSE || l->kind == NEST_LAYER_CONV2D) return 1;
  for (int s = 0; s < l->nparams; ++s)
    if (l->param[s].maskable) return 1;
  return 0;
}

static double ratio(double base, double stage) {
  return base >= 0 && !isnan(base) && stage > 0 ? base / stage : NAN;
}

static nest_status stage_read(const char *path, const char *label, nest_report_stage *s,
                              base_net *base) {
  nest_model_info info;
  nest_net *net = NULL;
  nest_status st = NEST_OK;
  NEST_CALL(nest_model_read_info(path, &info));
  NEST_CALL_GOTO(st, nest_model_load(path, 1, 1, &net), done);
  snprintf(s->path, sizeof s->path, "%s", path);
  snprintf(s->label, sizeof s->label, "%s", info.stage[0] ? info.stage : label);
  snprintf(s->base_arch, sizeof s->base_arch, "%s", info.base_arch);
  s->val_error = info.val_error;
  s->test_error = info.test_error;
  s->val_top5_error = info.val_top5_error;
  s->test_top5_error = info.test_top5_error;
  s->nclasses = net->nclasses;
  nest_net_widths_string(net, s->widths, sizeof s->widths);
  int n = 0;
  for (int i = 0; i < net->nlayers; ++i) n += reported(net->layers[i]);
  NEST_CALL_GOTO(st, nest_calloc((void **)&s->layers, n ? (size_t)n : 1, sizeof *s->layers,
                                 "report layers"), done);
  s->flops_act = 0;
  for (int i = 0; i < net->nlayers; ++i) {
    const nest_layer *l = net->layers[i];
    if (!reported(l)) continue;
    nest_report_layer *r = &s->layers[s->nlayers++];
    snprintf(r->name, sizeof r->name, "%s", l->name);
    r->kind = l->kind;
    for (int p = 0; p < l->nparams; ++p) {
      if (!l->param[p].maskable) continue;
      for (size_t k = 0; k < l->param[p].count; ++k) r->active += l->m[p][k] != 0.0f;
      r->total += (int64_t)l->param[p].count;
    }
    r->flops = nest_net_layer_flops(net, i);
    /* info.nlayers is 0 (nothing measured) or the file's layer count, which is net's. */
    r->act_frac = info.nlayers && info.act_frac ? info.act_frac[i] : NAN;
    r->in_frac = info.nlayers && info.in_frac ? info.in_frac[i] : NAN;
    r->flops_act = r->flops * r->in_frac;
    r->conv_frac = l->kind == NEST_LAYER_CONV2D ? nest_net_layer_conv_frac(net, i) : NAN;
    r->base_weights = -1;
    r->base_flops = NAN;
    s->active += r->active;
    s->total += r->total;
    s->flops += r->flops;
    s->flops_act += r->flops_act; /* NaN as soon as one layer is unknown */
  }
  if (s->nlayers == 0) s->flops_act = NAN;
  const nest_shape in = net->in_shape;
  const int nclasses = net->nclasses;
  /* One net at a time: the stage's goes before the base net is built. */
  nest_net_destroy(&net);
  s->base_weights = -1;
  s->base_flops = s->weight_compression = s->flop_compression = NAN;
  if (s->base_arch[0]) {
    NEST_CALL_GOTO(st, base_build(path, s->base_arch, in, nclasses, base), done);
    s->base_weights = base->total_weights;
    s->base_flops = base->total_flops;
    s->weight_compression = ratio((double)s->base_weights, (double)s->active);
    s->flop_compression = ratio(s->base_flops, s->flops);
    for (int k = 0; k < s->nlayers; ++k)
      for (int j = 0; j < base->nlayers; ++j)
        if (strcmp(s->layers[k].name, base->names[j]) == 0) {
          s->layers[k].base_weights = base->weights[j];
          s->layers[k].base_flops = base->flops[j];
          break;
        }
  }
done:
  nest_net_destroy(&net);
  nest_model_info_free(&info);
  return st;
}

/* ---- create / destroy ----------------------------------------------------------------------- */

void nest_report_destroy(nest_report **rp) {
  if (!rp || !*rp) return;
  nest_report *r = *rp;
  for (int i = 0; i < r->nstages; ++i) free(r->stages[i].layers);
  free(r->stages);
  free(r);
  *rp = NULL;
}

/* The label of a single file: its run-directory role if it has one of those names. */
static const char *label_of_file(const char *path) {
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  for (int k = 0; k < NRUN_FILES; ++k)
    if (strcmp(base, run_files[k]) == 0) return run_labels[k];
  return "model";
}

nest_status nest_report_create(const char *src, nest_report **out) {
  if (out) *out = NULL;
  if (!src || !*src || !out) return NEST_ERR(NEST_ERR_ARG, "nest_report_create: no path");
  struct stat sb;
  if (stat(src, &sb) != 0) return NEST_ERR(NEST_ERR_IO, "%s: cannot open: %s", src, strerror(errno));
  nest_report *r;
  NEST_CALL(nest_calloc((void **)&r, 1, sizeof *r, "report"));
  nest_status st = NEST_OK;
  base_net base = {0};
  snprintf(r->source, sizeof r->source, "%s", src);
  r->is_dir = S_ISDIR(sb.st_mode);
  NEST_CALL_GOTO(st, nest_calloc((void **)&r->stages, NRUN_FILES, sizeof *r->stages, "stages"),
                 done);
  if (!r->is_dir) {
    NEST_CALL_GOTO(st, stage_read(src, label_of_file(src), &r->stages[0], &base), done);
    r->nstages = 1;
    goto done;
  }
  const size_t len = strlen(src);
  const char *sep = len && src[len - 1] == '/' ? "" : "/";
  for (int k = 0; k < NRUN_FILES; ++k) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s%s%s", src, sep, run_files[k]) >= (int)sizeof path) {
      st = NEST_ERR(NEST_ERR_ARG, "%s: path too long", src);
      goto done;
    }
    /* Absent stages are normal (a dense run has only model.h5); anything present must load. */
    if (stat(path, &sb) != 0 && errno == ENOENT) continue;
    NEST_CALL_GOTO(st, stage_read(path, run_labels[k], &r->stages[r->nstages], &base), done);
    ++r->nstages;
  }
  /* A run stopped before its end has no model.h5: its newest checkpoint is the last stage. */
  if (r->nstages < NRUN_FILES && stat(src, &sb) == 0) {
    char ck[4096], fin[4096];
    int any = 0;
    snprintf(fin, sizeof fin, "%s%smodel.h5", src, sep);
    if (stat(fin, &sb) != 0 && nest_rundir_newest(src, ck, sizeof ck, &any) == NEST_OK && any) {
      NEST_CALL_GOTO(st, stage_read(ck, "latest", &r->stages[r->nstages], &base), done);
      ++r->nstages;
    }
  }
  if (r->nstages == 0)
    st = NEST_ERR(NEST_ERR_IO, "%s: no model file in this run directory (expected model.h5, "
                  "model_seed.h5 or model_grown.h5)", src);
done:
  base_free(&base);
  if (st != NEST_OK) {
    /* The stage being read when it failed may hold layers too. */
    if (r->stages) r->nstages = NRUN_FILES;
    nest_report_destroy(&r);
    return st;
  }
  *out = r;
  return NEST_OK;
}

/* ---- the table -------------------------------------------------------------------------------- */

enum { NCOLS = 13, CELL = 32 };
static const char *const col_head[NCOLS] = {
    "stage", "layer", "kind", "base weights", "active", "total", "density", "FLOPs",
    "FLOPs w/ Act%", "Act%", "Conv%", "weights x", "FLOPs x"};
/* Text columns left-aligned; the rest are numbers, right-aligned. */
static int col_left(int c) { return c < 3; }

typedef struct {
  int nrows;
  char (*cell)[NCOLS][CELL];
  int *blank_before; /* text mode: a blank line before this row (a new stage) */
} grid;

static void fmt_int(char *b, int64_t v) {
  if (v < 0) snprintf(b, CELL, "-");
  else snprintf(b, CELL, "%lld", (long long)v);
}
static void fmt_num(char *b, double v) {
  if (isnan(v)) snprintf(b, CELL, "-");
  else snprintf(b, CELL, "%.0f", v);
}
static void fmt_pct(char *b, double v, int digits) {
  if (isnan(v)) snprintf(b, CELL, "-");
  else snprintf(b, CELL, "%.*f%%", digits, 100.0 * v);
}
static void fmt_x(char *b, double v) {
  if (isnan(v)) snprintf(b, CELL, "-");
  else snprintf(b, CELL, "%.1fx", v);
}

static void fill_row(char (*row)[CELL], const char *stage, const char *layer, const char *kind,
                     int64_t base_w, int64_t active, int64_t total, double flops,
                     double flops_act, double act, double conv, int conv_na, double base_flops) {
  snprintf(row[0], CELL, "%s", stage);
  snprintf(row[1], CELL, "%s", layer);
  snprintf(row[2], CELL, "%s", kind);
  fmt_int(row[3], base_w);
  fmt_int(row[4], active);
  fmt_int(row[5], total);
  fmt_pct(row[6], total > 0 ? (double)active / (double)total : NAN, 2);
  fmt_num(row[7], flops);
  fmt_num(row[8], flops_act);
  fmt_pct(row[9], act, 1);
  if (conv_na) snprintf(row[10], CELL, "N/A");
  else fmt_pct(row[10], conv, 1);
  fmt_x(row[11], ratio((double)base_w, (double)active));
  fmt_x(row[12], ratio(base_flops, flops));
}

static int grid_build(const nest_report *r, grid *g) {
  int n = 0;
  for (int i = 0; i < r->nstages; ++i) n += r->stages[i].nlayers + 1;
  g->nrows = n;
  g->cell = calloc((size_t)n + 1, sizeof *g->cell);
  g->blank_before = calloc((size_t)n + 1, sizeof *g->blank_before);
  if (!g->cell || !g->blank_before) return -1;
  int k = 0;
  for (int i = 0; i < r->nstages; ++i) {
    const nest_report_stage *s = &r->stages[i];
    g->blank_before[k] = i > 0;
    for (int j = 0; j < s->nlayers; ++j, ++k) {
      const nest_report_layer *l = &s->layers[j];
      fill_row(g->cell[k], s->label, l->name, nest_layer_kind_name(l->kind), l->base_weights,
               l->active, l->total, l->flops, l->flops_act, l->act_frac, l->conv_frac,
               l->kind != NEST_LAYER_CONV2D, l->base_flops);
    }
    fill_row(g->cell[k], s->label, "total", "", s->base_weights, s->active, s->total, s->flops,
             s->flops_act, NAN, NAN, 0, s->base_flops);
    /* Act% and Conv% are per layer; a total of them would be a made-up average. */
    snprintf(g->cell[k][9], CELL, " ");
    snprintf(g->cell[k][10], CELL, " ");
    ++k;
  }
  return 0;
}

static void print_cell(FILE *f, const char *s, int width, int left) {
  if (left) fprintf(f, "%-*s", width, s);
  else fprintf(f, "%*s", width, s);
}

void nest_report_print(const nest_report *r, FILE *f, int markdown) {
  if (!r || !f) return;
  for (int i = 0; i < r->nstages; ++i) {
    const nest_report_stage *s = &r->stages[i];
    const char *q = markdown ? "`" : "";
    /* a "seed" stage is the network as initialised, before any training: its errors are
     * chance level, not a result */
    fprintf(f, "%s%s%s: %s%s%s, %s", markdown ? "- " : "", s->label,
            strcmp(s->label, "seed") == 0 ? " (untrained)" : "", q, s->path, q, s->widths);
    const int top5 = s->nclasses > NEST_TOP5_SHOW_CLASSES;
    if (!isnan(s->val_error)) fprintf(f, ", val error %.2f%%", 100.0 * s->val_error);
    if (top5 && !isnan(s->val_top5_error)) fprintf(f, " (top-5 %.2f%%)", 100.0 * s->val_top5_error);
    if (!isnan(s->test_error)) fprintf(f, ", test error %.2f%%", 100.0 * s->test_error);
    if (top5 && !isnan(s->test_top5_error))
      fprintf(f, " (top-5 %.2f%%)", 100.0 * s->test_top5_error);
    if (s->base_arch[0])
      fprintf(f, ", base %s%s%s (dense: %lld weights, %.0f FLOPs)", q, s->base_arch, q,
              (long long)s->base_weights, s->base_flops);
    else fprintf(f, ", base unknown (no base_arch attribute)");
    fprintf(f, "\n");
  }
  fprintf(f, "\n");
  grid g = {0};
  if (grid_build(r, &g) != 0) {
    fprintf(f, "(out of memory for the report table)\n");
    goto done;
  }
  int width[NCOLS];
  for (int c = 0; c < NCOLS; ++c) {
    width[c] = (int)strlen(col_head[c]);
    for (int k = 0; k < g.nrows; ++k) {
      const int w = (int)strlen(g.cell[k][c]);
      if (w > width[c]) width[c] = w;
    }
  }
  const char *lead = markdown ? "| " : "", *sep = markdown ? " | " : "  ",
             *tail = markdown ? " |" : "";
  fputs(lead, f);
  for (int c = 0; c < NCOLS; ++c) {
    if (c) fputs(sep, f);
    print_cell(f, col_head[c], width[c], col_left(c));
  }
  fprintf(f, "%s\n", tail);
  if (markdown) {
    /* The alignment row: numbers right-aligned where Markdown renders them. */
    fputs("|", f);
    for (int c = 0; c < NCOLS; ++c) {
      fputc(col_left(c) ? ':' : '-', f);
      for (int k = 0; k < width[c]; ++k) fputc('-', f);
      fputs(col_left(c) ? "-|" : ":|", f);
    }
    fputc('\n', f);
  }
  for (int k = 0; k < g.nrows; ++k) {
    if (g.blank_before[k] && !markdown) fputc('\n', f);
    fputs(lead, f);
    for (int c = 0; c < NCOLS; ++c) {
      if (c) fputs(sep, f);
      print_cell(f, g.cell[k][c], width[c], col_left(c));
    }
    fprintf(f, "%s\n", tail);
  }
done:
  free(g.cell);
  free(g.blank_before);
}

/* ---- CSV ------------------------------------------------------------------------------------ */

/* A text field, quoted when it holds a separator, quote or line break (RFC 4180). */
static void csv_str(FILE *f, const char *s) {
  if (!strpbrk(s, ",\"\r\n")) {
    fputs(s, f);
    return;
  }
  fputc('"', f);
  for (; *s; ++s) {
    if (*s == '"') fputc('"', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

static void csv_int(FILE *f, int64_t v) {
  fputc(',', f);
  if (v >= 0) fprintf(f, "%lld", (long long)v);
}

static void csv_row(FILE *f, const nest_report_stage *s, const char *layer, const char *kind,
                    int64_t base_w, int64_t active, int64_t total, double flops, double flops_act,
                    double act, double in, double conv, double base_flops) {
  csv_str(f, s->label);
  fputc(',', f);
  csv_str(f, s->path);
  fputc(',', f);
  csv_str(f, layer);
  fputc(',', f);
  csv_str(f, kind);
  csv_int(f, base_w);
  csv_int(f, active);
  csv_int(f, total);
  nest_rundir_csv_num(f, total > 0 ? (double)active / (double)total : NAN, "%.10g");
  nest_rundir_csv_num(f, flops, "%.0f");
  nest_rundir_csv_num(f, flops_act, "%.10g");
  nest_rundir_csv_num(f, act, "%.10g");
  nest_rundir_csv_num(f, in, "%.10g");
  nest_rundir_csv_num(f, conv, "%.10g");
  nest_rundir_csv_num(f, base_flops, "%.0f");
  nest_rundir_csv_num(f, ratio((double)base_w, (double)active), "%.10g");
  nest_rundir_csv_num(f, ratio(base_flops, flops), "%.10g");
  nest_rundir_csv_num(f, s->val_error, "%.10g");
  nest_rundir_csv_num(f, s->test_error, "%.10g");
  nest_rundir_csv_num(f, s->val_top5_error, "%.10g");
  nest_rundir_csv_num(f, s->test_top5_error, "%.10g");
  fputc('\n', f);
}

nest_status nest_report_write_csv(const nest_report *r, const char *path) {
  if (!r || !path || !*path) return NEST_ERR(NEST_ERR_ARG, "nest_report_write_csv: no path");
  char tmp[4096];
  FILE *f;
  NEST_CALL(nest_atomic_fopen(path, tmp, sizeof tmp, &f));
  fputs("stage,file,layer,kind,base_weights,active_weights,total_weights,density,flops,"
        "flops_act,act_frac,in_frac,conv_frac,base_flops,weight_compression,flop_compression,"
        "val_error,test_error,val_top5_error,test_top5_error\n", f);
  for (int i = 0; i < r->nstages; ++i) {
    const nest_report_stage *s = &r->stages[i];
    for (int j = 0; j < s->nlayers; ++j) {
      const nest_report_layer *l = &s->layers[j];
      csv_row(f, s, l->name, nest_layer_kind_name(l->kind), l->base_weights, l->active, l->total,
              l->flops, l->flops_act, l->act_frac, l->in_frac, l->conv_frac, l->base_flops);
    }
    csv_row(f, s, "total", "", s->base_weights, s->active, s->total, s->flops, s->flops_act, NAN,
            NAN, NAN, s->base_flops);
  }
  NEST_CALL(nest_atomic_fclose(f, tmp, path));
  return NEST_OK;
}
