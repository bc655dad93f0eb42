/* report.h — the model report: per stage (seed, grown, final) and per dense / conv layer, the
 * active weights, FLOPs per inference with masks (and with activation sparsity), Act%, Conv%,
 * and compression versus the dense base architecture (ALGORITHMS.md §11; NeST Tables 2, 4,
 * 5). docs/model-format.md describes the table and the CSV.
 *
 * Input: a run directory — its model_seed.h5, model_grown.h5 and model.h5, those present, in
 * that order — or one model file. Each stage is labelled by its "stage" info attribute, else by
 * its file name (seed / grown / final; "model" for any other single file).
 *
 * Compression is measured against the stage's base_arch info attribute: nest_arch_build at
 * width 1, no batch norm, no dropout, the model's input shape and class count, every weight
 * active. Without base_arch the base columns are unknown (-1 / NaN).
 *
 * Library code: no MPI, no exit; the pipeline's main program calls it at the end of a run. It
 * loads one stage's net at a time (nest_model_load validates it), so memory peaks at one net. */
#ifndef NEST_REPORT_H
#define NEST_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "nest/layer.h"
#include "nest/status.h"

/* One dense / conv layer of one stage. NaN = unknown. */
typedef struct {
  char name[NEST_NAME_LEN];
  nest_layer_kind kind;   /* NEST_LAYER_DENSE or NEST_LAYER_CONV2D */
  int64_t active;         /* mask entries = 1 of the layer's maskable tensors */
  int64_t total;          /* positions of those tensors (active + dormant) */
  int64_t base_weights;   /* weights of the base layer with this name; -1 if none or unknown */
  double base_flops;      /* FLOPs of that base layer, dense; NaN if none or unknown */
  double flops;           /* per inference, with masks (nest_net_layer_flops) */
  double flops_act;       /* flops x in_frac: MACs that multiply a non-zero input; NaN if unknown */
  double act_frac;        /* Act%: non-zero share of the layer's outputs after its ReLU */
  double in_frac;         /* non-zero share of the layer's inputs */
  double conv_frac;       /* Conv%: active partial-area fraction; NaN for dense layers */
} nest_report_layer;

typedef struct {
  char label[32];          /* "seed", "grown", "final", the stage attribute, or "model" */
  char path[4096];         /* the model file */
  char widths[256];        /* nest_net_widths_string, e.g. "784-300-100-10" (may be cut) */
  char base_arch[256];     /* "" = unknown */
  double val_error, test_error; /* fractions; NaN = not measured */
  int nclasses;            /* of the model's output layer */
  int nlayers;             /* dense / conv layers only */
  nest_report_layer *layers;
  int64_t active, total;   /* sums over the layers: every active mask entry of the model */
  double flops, flops_act; /* sums; flops_act NaN unless every layer's is known */
  int64_t base_weights;    /* the dense base net: weights (-1 unknown) and FLOPs (NaN) */
  double base_flops;
  double weight_compression, flop_compression; /* base / stage; NaN if unknown or stage 0 */
  double val_top5_error, test_top5_error; /* fractions; NaN = not measured (appended: keeps the
                                             fields above in place) */
} nest_report_stage;

typedef struct nest_report {
  char source[4096]; /* what nest_report_create was given */
  int is_dir;
  int nstages;
  nest_report_stage *stages;
} nest_report;

/* Build the report of a run directory or a model file. Errors (NEST_ERR_IO / NEST_ERR_FORMAT,
 * one line naming the file): a missing path, a directory without any of the three model files,
 * a file that is not a valid model file, a base_arch that does not build for the model's input
 * shape and class count. On failure *out is NULL. */
nest_status nest_report_create(const char *run_dir_or_model, nest_report **out);

/* The table: one line per stage describing it (file, widths, errors — top-5 too for a model
 * with more than NEST_TOP5_SHOW_CLASSES classes (loss.h) — base; "seed (untrained)" for the
 * seed stage, whose errors are chance level), then one table with
 * a row per stage x layer and a total row per stage. markdown = 0: aligned plain text, stages
 * separated by a blank line; 1: a Markdown list and table (for docs/results.md). */
void nest_report_print(const nest_report *r, FILE *f, int markdown);

/* CSV (header line, one row per stage x layer, one "total" row per stage), written atomically.
 * Fractions as fractions (not %), unknown values as empty fields. NEST_ERR_IO naming path. */
nest_status nest_report_write_csv(const nest_report *r, const char *path);

void nest_report_destroy(nest_report **r);

#endif
