/* config.h — run configuration: INI file (nest's own reader, no library) + --set overrides.
 *
 * Every key has a type, a default, its valid range (numbers) and a one-line meaning in one
 * table (src/config.c); --help prints that table, the effective config is written back from
 * it. List-valued keys (type "list": synthesis.phases, grow.policy, grow.layers, prune.layers,
 * model.widths, data.csv_drop_cols) are split by the one comma-list parser (list.h), blanks
 * around items ignored. Unknown sections/keys and
 * bad values are NEST_ERR_CONFIG with a one-line message naming file, line and key, e.g.
 *   inputs/x.ini:12: [optim] lr = 'fast': not a number
 *   --set optim.lrr=0.1: unknown key 'lrr' in section [optim]
 * Parsing depends only on the file's bytes, so every rank decides identically. */
#ifndef NEST_CONFIG_H
#define NEST_CONFIG_H

#include <stdint.h>
#include <stdio.h>
#include "nest/data.h"
#include "nest/model.h"
#include "nest/status.h"

#define NEST_PATH_LEN 1024

typedef struct nest_config {
  /* [run] */
  char name[128];              /* run name; "" = config file's basename */
  char out_dir[NEST_PATH_LEN]; /* parent of run directories: "outputs" */
  char run_dir[NEST_PATH_LEN]; /* explicit run directory; "" = out_dir/name-YYYYmmdd-HHMMSS */
  uint64_t seed;               /* 1 */
  int threads;                 /* OpenMP/BLAS threads per rank; 0 = cores in affinity mask */
  int log_every;               /* steps between progress lines; 0 = about 10 per epoch */
  double log_seconds;          /* seconds between progress lines kept in a log that is not a
                                  terminal (runlog.h): 10 */
  int hash_every;              /* steps between cross-rank weight/mask hash checks; 0 = off */
  int check_masks;             /* 0/1: compare a mask hash across ranks after every architecture
                                  change (growth, pruning): 1 */
  /* [data] */
  char dir[NEST_PATH_LEN];          /* base directory for relative data paths; "" = cwd */
  char train[NEST_PATH_LEN];        /* training data file */
  char train_labels[NEST_PATH_LEN]; /* IDX label file for train ("" for CSV / HDF5) */
  char test[NEST_PATH_LEN];         /* test data file ("" = none) */
  char test_labels[NEST_PATH_LEN];  /* IDX label file for test */
  char format[16];                  /* auto | idx | csv | h5 */
  double val_split;                 /* fraction of train held out for validation: 0.1 */
  double test_split;                /* without data.test: fraction of the training file held
                                       out as the test set (seeded by run.seed): 0 */
  int csv_label_col;                /* 0-based; -1 = last column */
  char csv_delim[4];                /* one character (in files also tab|space|comma|semicolon) */
  int csv_header;                   /* 0/1 */
  char csv_drop_cols[256];          /* comma-separated 0-based columns to ignore */
  int64_t max_train;                /* > 0: use only the first N training samples */
  int64_t max_test;                 /* > 0: use only the first N test samples */
  int prefetch;                     /* 0/1: image shards: read the next batch in a background
                                       thread (prefetch.h): 1 */
  /* [model] */
  char arch[256];    /* lenet300 | lenet5 | alexnet | vgg16 | mlp:784-300-100-10 */
  double width;      /* width ratio r for hidden widths / channels: 1.0 */
  double density;    /* initial connection density d in (0, 1]: 1.0 */
  char init[16];     /* he | xavier */
  int batchnorm;     /* 0/1: batch norm after each hidden conv/dense layer */
  int sync_bn;       /* 0/1: batch statistics summed over ranks (results independent of P) */
  double dropout;    /* dropout rate after hidden dense layers (0 = off) */
  char init_from[NEST_PATH_LEN]; /* model file (HDF5) to start from instead of arch; "" = none */
  char widths[256];  /* "N,N,...,N": base width of each hidden conv / dense layer of arch, in
                        order, before the ratio (the NeST AlexNet / VGG-16 seeds); "" = arch's */
  char skips[512];   /* skip tensors (SCANN, net.h): "all" or "SRC>DEST, ..."; "" = none */
  double skip_density; /* seed density of the skip tensors in [0, 1]: 0 (all dormant) */
  /* [augment] affine distortion of training images (ALGORITHMS.md §12) */
  int aug_affine;        /* 0/1 */
  double aug_rotate;     /* degrees, uniform in +-rotate: 12 */
  double aug_scale;      /* per-axis scale uniform in [1 - scale, 1 + scale]: 0.1 */
  double aug_shear;      /* shear uniform in +-shear: 0.15 */
  double aug_translate;  /* pixels, uniform in +-translate: 2 */
  int aug_crop;          /* image shards: crop x crop input (train random, eval centre); 0 = none */
  int aug_flip;          /* 0/1: image shards: horizontal flip of training samples */
  /* [synthesis] */
  char phases[128];      /* comma-separated phases run in order: grow, train, prune, area;
                            "" = grow (if grow.policy lists a growth policy), then train */
  char scheme[8];        /* SCANN scheme: none | A | B | C (docs/scann.md); not none: the scann
                            phase runs it (synthesis.phases empty: train, scann) */
  /* [train] */
  int epochs;        /* 20 */
  int batch;         /* global batch size over all ranks: 128 */
  int eval_every;    /* epochs between validation/test evaluations: 1 */
  double bucket_mb;  /* MiB per gradient-sum bucket started during backward; 0 = fused: 25 */
  /* [optim] */
  double lr;            /* base learning rate: 0.05 */
  double momentum;      /* 0.9 */
  int nesterov;         /* 0/1 */
  double weight_decay;  /* L2 on weights (not biases / BN): 5e-4 */
  char schedule[16];    /* const | step | cosine */
  double warmup_epochs; /* linear warm-up from 0: 0 */
  double step_epochs;   /* step schedule: multiply by step_gamma every step_epochs */
  double step_gamma;    /* 0.1 */
  double min_lr;        /* floor of cosine: 0 */
  /* [grow] (docs/growth.md) */
  char grow_policy[256];   /* comma-separated policy names, applied in order; "" = none */
  char grow_layers[512];   /* comma-separated layer names; "" = every layer a policy can act on */
  int grow_iterations;     /* growth-phase iterations at most: 10 */
  int grow_train_epochs;   /* epochs trained after each growth step: 1 */
  double grow_lr;          /* peak learning rate of the growth phase; 0 = optim.lr */
  char grow_schedule[8];   /* cosine | const: each iteration's epochs anneal from grow.lr */
  double grow_target_error;/* stop growing at this validation error; 0 = never */
  int64_t grow_max_weights;/* stop growing at this many active weights; 0 = no cap */
  int grow_patience;       /* stop after this many iterations without improvement; 0 = off */
  double grow_patience_z;  /* improvement margin in standard errors of the best val error: 1 */
  int grow_batches;        /* growth set: this many global batches; 0 = the whole training set */
  int grow_score_batch;    /* samples of the fixed scoring batch (losses, feature-map candidates) */
  double grow_conn_ratio;  /* connection growth: k = ceil(ratio x active) per tensor: 0.25 */
  int64_t grow_conn_count; /* connection growth: explicit k per tensor; 0 = use the ratio */
  char grow_conn_init[8];  /* zero | grad: new connection weights 0 or -conn_lr x G */
  double grow_conn_lr;     /* lr_grow of conn_init = grad: 0.1 */
  double grow_beta;        /* neuron growth ratio beta in (0, 1]: 0.05 */
  double grow_alpha;       /* birth strength alpha > 0 (neurons and feature maps): 0.5 */
  int grow_neurons;        /* neurons added per dense layer per growth step (K): 10 */
  int grow_fmaps;          /* feature maps added per conv layer per growth step: 2 */
  int grow_fmap_candidates;/* random candidates scored per feature map: 10 */
  double grow_capacity;    /* strategic: grow a tensor while active < capacity x size: 0.5 */
  double grow_top;         /* strategic: origins from the top fraction of |w|: 0.1 */
  int grow_tries;          /* strategic: endpoint draws per connection at most: 20 */
  double grow_set_zeta;    /* SET: fraction of positive and of negative weights replaced: 0.3 */
  int grow_rigl_dt;        /* RigL: steps between updates: 100 */
  double grow_rigl_end;    /* RigL: stop updating after this fraction of training: 0.75 */
  double grow_rigl_alpha;  /* RigL: initial drop fraction: 0.3 */
  /* [prune] (docs/pruning.md) */
  char prune_layers[512];   /* comma-separated layers to prune (weights; units in the prune
                               phase); "" = every maskable layer */
  double prune_gamma;       /* smallest step: fraction of a layer's active weights: 0.01 */
  double prune_gamma_start; /* first step; halved on a guard trip until below gamma: 0.2 */
  int prune_retrain_steps;  /* optimizer steps of retraining after each step: 300 */
  int prune_retries;        /* guard: retrain this many more times before restoring: 1 */
  double prune_lr;          /* retraining learning rate (cosine to optim.min_lr): 0.01 */
  double prune_target_error;/* guard target; 0 = validation error at the start of the phase */
  double prune_tolerance;   /* guard: allowed validation error above the target: 0.001 */
  char prune_guard[8];      /* start | best: the guard's target error (docs/pruning.md) */
  double prune_guard_z;     /* guard margin in standard errors of the target: 0 */
  double prune_distill;     /* distillation weight alpha during retraining / fine-tuning: 0 */
  double prune_distill_temp;/* distillation temperature T: 4 */
  double prune_dropout;     /* dropout rate in the pruning phases; -1 = the model's */
  int64_t prune_target_weights; /* prune phase: stop at this many active weights; 0 = none */
  double prune_floor;       /* a layer stops at this density (active / size): 0 */
  int prune_iterations;     /* pruning iterations at most: 200 */
  double prune_neuron_thresh; /* remove units with mean |output| below this; 0 = only units
                                 without active inputs or outputs */
  int prune_calib;          /* samples of the calibration set (area scores): 2048 */
  double prune_area_gamma;  /* area phase: smallest step fraction of active area: 0.01 */
  double prune_area_gamma_start; /* area phase: first step: 0.1 */
  double prune_area_tolerance;   /* area phase: the guard's tolerance: 0.001 */
  int prune_epochs;         /* epochs of fine-tuning after the prune / area phase (a cosine
                               from prune.lr to optim.min_lr): 0 */
  int prune_area_epochs;    /* epochs of fine-tuning after the area phase; -1 = prune.epochs */
  /* [scann] SCANN's operations and schemes (docs/scann.md) */
  int scann_iterations;     /* scheme iterations: 10 */
  int scann_epochs;         /* epochs trained after each operation: 2 */
  double scann_lr;          /* peak learning rate of those epochs (cosine each); 0 = optim.lr */
  double scann_grow_percentile; /* connection growth: activate dormant positions whose score is
                                   above this percentile of the candidates' scores: 70 */
  double scann_grow_cap;    /* ... at most cap x active per tensor; 0 = no cap */
  double scann_prune_quantile; /* connection pruning: drop this share of active weights per
                                  tensor (the smallest |w|): 0.2 */
  int scann_neurons;        /* neuron growth: units split per layer per step: 1 */
  double scann_split_noise; /* std of the noise on a split unit's copy: 0.01 */
  int scann_prune_iterations; /* scheme A: {prune, train} iterations after the growth: 3 */
  double scann_keep_tolerance; /* best network: a smaller one within this validation error of
                                  the best replaces it: 0 */
  /* [dr] DR+SCANN: feature reduction before synthesis (docs/scann.md) */
  char dr_reduce[64];       /* candidate reductions: pca, gaussian, sparse; "" = none */
  int dr_k;                 /* output features; 0 = from dr.ratio */
  double dr_ratio;          /* feature compression d / k (k = round(d / ratio)); 0 = use dr.k */
  int dr_baseline_epochs;   /* epochs of the small baseline that chooses the reduction: 5 */
  int dr_shrink;            /* 0/1: hidden widths times k / d: 1 */
  /* [checkpoint] (docs/restart.md) */
  int ck_every_steps;       /* a restart checkpoint every this many optimizer steps; 0 = off */
  double ck_every_minutes;  /* ... and every this many minutes; 0 = off: 30 */
  int ck_keep;              /* checkpoints kept (the newest): 3 */
  /* Not a key: nest_mpi --resume RUN_DIR sets it, and then the run directory must hold a
   * checkpoint. */
  int resume;
} nest_config;

void nest_config_defaults(nest_config *c);
/* Parse an INI file over the current values. Missing file, syntax error, unknown section or
 * key, a key given twice, bad value: NEST_ERR_CONFIG "FILE:LINE: ..."; on failure *c is left
 * unchanged. */
nest_status nest_config_load(nest_config *c, const char *path);
/* Apply one "section.key=value" override; origin names it in messages (e.g. "--set").
 * On failure *c is left unchanged. */
nest_status nest_config_set(nest_config *c, const char *assignment, const char *origin);
/* Checks of the final values: every numeric key in its range, every list splits, the model
 * keys (nest_arch_check: name, widths, size limit), cross-key rules, train file given. What
 * grow.policy and synthesis.phases name is checked by the pipeline when it is created. */
nest_status nest_config_validate(const nest_config *c);
/* Write every key = value (with its meaning as a comment) to path, atomically (tmp+rename). */
nest_status nest_config_write(const nest_config *c, const char *path);
/* Parse INI text (the effective config a checkpoint stores) over the current values, as
 * nest_config_load does a file; `name` names it in messages. */
nest_status nest_config_load_text(nest_config *c, const char *text, const char *name);
/* Every key = value, by section, as INI text (malloc'd): what nest_config_load_text reads. */
nest_status nest_config_text(const nest_config *c, char **out);
/* Keys whose values differ between a and b, except those matched by `ignore` (comma-separated
 * "section.key" or "section.*"): their count, and "k = A (not B), ..." in out. */
int nest_config_diff(const nest_config *a, const nest_config *b, const char *ignore, char *out,
                     size_t cap);
/* The key table as help text: section.key, type, default, meaning. */
void nest_config_print_help(FILE *f);

/* ---- what the data keys mean to the readers ---------------------------------------------- */

/* The file names of one data set, resolved against data.dir (absolute names and an empty
 * data.dir: as given). */
typedef struct {
  char path[NEST_PATH_LEN];
  char labels[NEST_PATH_LEN]; /* "" = none */
} nest_config_paths;
/* The reader options of the training (test = 0: data.train, data.train_labels,
 * data.max_train) or test set (test = 1) from the data keys: what nest_dataset_load takes.
 * o points into paths and c. NEST_ERR_CONFIG for a path too long once data.dir is prefixed. */
nest_status nest_config_data_opts(const nest_config *c, int test, nest_config_paths *paths,
                                  nest_data_opts *o);
/* The input record a run's model files carry (model.h): nest_model_input_from_data(train) —
 * train as the trainer prepared it: normalisation set, crop applied — plus the CSV options,
 * data.val_split, data.test_split and run.seed of c. Borrows from train, like
 * nest_model_input_from_data. */
void nest_config_model_input(const nest_config *c, const nest_dataset *train,
                             nest_model_input *out);

/* Command line of nest_mpi: CONFIG.ini [--set section.key=value ...] [--help].
 * Starts from nest_config_defaults, then the file, then the overrides in order; an empty
 * run.name becomes the config file's base name; then validate.
 * On --help sets *help = 1 and returns NEST_OK without requiring a config.
 * Errors are NEST_ERR_ARG (usage) or NEST_ERR_CONFIG (the file / an override). */
nest_status nest_cli_parse(int argc, char **argv, nest_config *c, int *help);
/* One-paragraph usage text. */
void nest_cli_print_usage(FILE *f, const char *prog);

#endif
