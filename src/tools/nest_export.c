/* nest_export.c — the network of a model file, a restart checkpoint or a run as a model file
 * (what nest_report, nest_jaccard, nest_infer and model.init_from take; what a run that was
 * stopped or killed before its end leaves the user to work with), or as an ONNX model.
 * Serial tool: no MPI, no HDF5 of its own (model.h, ckpt.h, onnx.h).
 *
 *   nest_export outputs/run/checkpoints/ckpt-00000042.h5 grown.h5
 *   nest_export outputs/run grown.h5          the run's model.h5, else its newest checkpoint
 *   nest_export --onnx outputs/run model.onnx the same network as ONNX, scale, DR+SCANN
 *                                             reduction, normalisation and class names from
 *                                             the model's input record
 *   nest_export --config outputs/old/config.ini outputs/old/model.h5 new.h5
 *                                             a file from before format 2 with its input record
 *                                             recomputed from the run's data, as training did
 *
 * The output is written atomically (PATH.tmp, fsync, rename: atomic.h), so --force never leaves
 * a half-written file; and it is never a checkpoint of a run, --force or not: not a file in a
 * directory named checkpoints/ (where runs keep them; symlinks resolved), not a file that is a
 * restart checkpoint wherever it lies (a copy, a hard link), not the input itself. Replacing
 * the newest checkpoint with a model file would make the next resume lose the progress since
 * the previous one. With --onnx the output name ends in .onnx; without, it does not.
 * Exit codes: 0 success (one line on stdout), 1 file error, 2 usage error; every error is one
 * line "nest_export: error: ..." on stderr. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nest/ckpt.h"
#include "nest/config.h"
#include "nest/data.h"
#include "nest/model.h"
#include "nest/onnx.h"
#include "nest/restart.h"

static const char *usage_line =
    "usage: nest_export [--onnx] MODEL_OR_RUN OUT.h5|OUT.onnx [--force] [--config CONFIG.ini]\n";

/* 1 if the directory `dir` resolves to one named "checkpoints". */
static int is_checkpoints_dir(const char *dir) {
  char real[PATH_MAX];
  if (!realpath(dir, real)) return 0;
  const char *base = strrchr(real, '/');
  return strcmp(base ? base + 1 : real, "checkpoints") == 0;
}

/* 1 if path lies in a directory named checkpoints/ (its own directory; for a symlink, also the
 * directory of what it points to). */
static int in_checkpoints_dir(const char *path) {
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash) snprintf(dir, sizeof dir, ".");
  else if (slash == dir) dir[1] = '\0';
  else *slash = '\0';
  if (is_checkpoints_dir(dir)) return 1;
  struct stat sb;
  char target[PATH_MAX];
  if (lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode) && realpath(path, target))
    return in_checkpoints_dir(target);
  return 0;
}

/* The output may be written (see the top of the file); else one error line. */
static int output_allowed(const char *src, const char *out) {
  if (in_checkpoints_dir(out)) {
    fprintf(stderr, "nest_export: error: %s: lies in a run's checkpoints/ directory: nest_export "
                    "never writes there (restart checkpoints live there)\n", out);
    return 0;
  }
  struct stat so, si;
  if (stat(out, &so) != 0) return 1; /* nothing there yet */
  if (stat(src, &si) == 0 && so.st_dev == si.st_dev && so.st_ino == si.st_ino) {
    fprintf(stderr, "nest_export: error: %s: is the input (%s): choose another output\n", out,
            src);
    return 0;
  }
  if (nest_ckpt_is_checkpoint(out)) {
    fprintf(stderr, "nest_export: error: %s: is a restart checkpoint: nest_export never replaces "
                    "one, --force or not\n", out);
    return 0;
  }
  return 1;
}

/* ---- the input record from a run's config (files from before format 2) ------------------------- */

/* What training fed the net, recomputed as the trainer's setup does it: the training file
 * (data.max_train), data.test_split, the data.val_split / run.seed split, the statistics over
 * the training part (nest_dataset_train_norm), augment.crop for image shards. *train holds what
 * *in borrows. */
static nest_status input_from_config(const char *cfg_path, nest_dataset **train,
                                     nest_model_input *in) {
  nest_config c;
  nest_config_defaults(&c);
  NEST_CALL(nest_config_load(&c, cfg_path));
  NEST_CALL(nest_config_validate(&c));
  nest_config_paths paths;
  nest_data_opts o;
  NEST_CALL(nest_config_data_opts(&c, 0, &paths, &o));
  NEST_CALL(nest_dataset_load(&o, NULL, train));
  nest_dataset *test = NULL;
  nest_status st = NEST_OK;
  if (!c.test[0]) st = nest_dataset_take_test(train, c.test_split, c.seed, &test);
  nest_dataset_destroy(&test);
  int64_t *tr = NULL, *va = NULL, ntr = 0, nva = 0;
  if (st == NEST_OK) st = nest_dataset_split((*train)->n, c.val_split, c.seed, &tr, &ntr, &va, &nva);
  if (st == NEST_OK && c.aug_crop > 0) st = nest_dataset_set_crop(*train, c.aug_crop);
  nest_norm norm = {0};
  if (st == NEST_OK) st = nest_dataset_train_norm(*train, tr, ntr, &norm);
  if (st == NEST_OK) st = nest_dataset_set_norm(*train, &norm);
  nest_norm_free(&norm);
  free(tr);
  free(va);
  if (st == NEST_OK) nest_config_model_input(&c, *train, in);
  return st;
}

/* "" if a and b describe the same input, else what differs. */
static const char *input_diff(const nest_model_input *a, const nest_model_input *b) {
  if (memcmp(&a->data_shape, &b->data_shape, sizeof a->data_shape) || a->crop != b->crop)
    return "sample shape or crop";
  if (a->is_u8 != b->is_u8 || a->scale != b->scale) return "value type or scale";
  if (a->norm.nch != b->norm.nch) return "normalisation";
  for (int k = 0; k < a->norm.nch; ++k)
    if (a->norm.mean[k] != b->norm.mean[k] || a->norm.std[k] != b->norm.std[k])
      return "normalisation statistics";
  if (a->nlabels != b->nlabels) return "class count";
  for (int k = 0; k < a->nlabels; ++k) {
    char na[16], nb[16];
    snprintf(na, sizeof na, "%d", k);
    snprintf(nb, sizeof nb, "%d", k);
    if (strcmp(a->labels ? a->labels[k] : na, b->labels ? b->labels[k] : nb) != 0)
      return "class names";
  }
  return "";
}

/* ---- main ---------------------------------------------------------------------------------------- */

typedef struct {
  const char *src_arg, *out, *config;
  int onnx, force;
} opts;

static int ends_with(const char *s, const char *suffix) {
  const size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* 0 ok, 1 help printed, 2 usage error. */
static int parse_args(int argc, char **argv, opts *o) {
  memset(o, 0, sizeof *o);
  const char *pos[2] = {NULL, NULL};
  int npos = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      printf("%s\nWrite the network of a model file, a restart checkpoint or a run directory\n"
             "(its model.h5; a run that has not finished: its newest checkpoint) as a model\n"
             "file (docs/model-format.md), or with --onnx as an ONNX model (docs/onnx.md) whose\n"
             "graph starts with the model's input scale, DR+SCANN reduction (if any) and\n"
             "normalisation, and whose metadata holds its class names. OUT must not exist\n"
             "unless --force, which replaces it atomically; OUT is never a restart checkpoint,\n"
             "nor in a run's checkpoints/ directory, nor the input. --onnx needs an OUT ending\n"
             "in .onnx; without --onnx OUT must not end so. --config RUN/config.ini recomputes\n"
             "the input record (normalisation, class names) from the run's data as training\n"
             "did, for files from before format 2; for a file that has one, it must agree.\n"
             "Data paths are relative to the current directory, as for the run.\n", usage_line);
      return 1;
    }
    if (strcmp(argv[i], "--force") == 0) {
      o->force = 1;
    } else if (strcmp(argv[i], "--onnx") == 0) {
      o->onnx = 1;
    } else if (strcmp(argv[i], "--config") == 0 || strncmp(argv[i], "--config=", 9) == 0) {
      o->config = argv[i][8] == '=' ? argv[i] + 9 : i + 1 < argc ? argv[++i] : "";
      if (!o->config[0]) {
        fprintf(stderr, "nest_export: error: --config needs a file\n%s", usage_line);
        return 2;
      }
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "nest_export: error: unknown option '%s'\n%s", argv[i], usage_line);
      return 2;
    } else if (npos < 2) {
      pos[npos++] = argv[i];
    } else {
      fprintf(stderr, "nest_export: error: unexpected argument '%s'\n%s", argv[i], usage_line);
      return 2;
    }
  }
  if (npos != 2) {
    fprintf(stderr, "nest_export: error: need a model, checkpoint or run directory and an "
                    "output\n%s", usage_line);
    return 2;
  }
  o->src_arg = pos[0], o->out = pos[1];
  if (o->onnx != ends_with(o->out, ".onnx")) {
    fprintf(stderr, "nest_export: error: %s: %s\n%s", o->out,
            o->onnx ? "--onnx writes an ONNX model: the name must end in .onnx"
                    : "an .onnx name needs --onnx (without it nest_export writes HDF5)",
            usage_line);
    return 2;
  }
  return 0;
}

/* A run directory stands for its model.h5, or for a run that has not finished its newest
 * checkpoint. */
static int source_path(const char *arg, char *src, size_t cap) {
  snprintf(src, cap, "%s", arg);
  struct stat sb;
  if (stat(arg, &sb) != 0 || !S_ISDIR(sb.st_mode)) return 1;
  const size_t n = strlen(arg);
  snprintf(src, cap, "%s%smodel.h5", arg, n && arg[n - 1] == '/' ? "" : "/");
  if (stat(src, &sb) == 0) return 1;
  int any = 0;
  if (nest_restart_newest(arg, src, cap, &any) != NEST_OK || !any) {
    fprintf(stderr, "nest_export: error: %s: no model.h5 and no checkpoint in %s/checkpoints\n",
            arg, arg);
    return 0;
  }
  return 1;
}

/* The input record to write: the file's, or recomputed from --config (then checked against the
 * file's when it has one). */
static nest_status choose_input(const opts *o, const char *src, nest_model_input *file_in,
                                nest_dataset **train, nest_model_input *cfg_in,
                                const nest_model_input **use) {
  *use = file_in;
  if (!o->config) return NEST_OK;
  if (file_in->known && file_in->reduce) /* fitted during the run: no config recomputes it */
    return NEST_ERR(NEST_ERR_ARG, "%s: its input record holds a DR+SCANN reduction, which "
                    "--config cannot recompute; export it without --config", src);
  NEST_CALL(input_from_config(o->config, train, cfg_in));
  if (file_in->known) {
    const char *d = input_diff(file_in, cfg_in);
    if (d[0])
      return NEST_ERR(NEST_ERR_FORMAT, "%s: its input record differs from what %s gives (%s): "
                      "not the run this model came from?", src, o->config, d);
  }
  *use = cfg_in;
  return NEST_OK;
}

static nest_status write_onnx(const nest_net *net, const nest_model_input *in, const char *src,
                              const char *out) {
  if (!in->known)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: records no input normalisation and no class names "
                    "(format 1): add --config RUN/config.ini to recompute them", src);
  char crop[16], shape[64];
  snprintf(crop, sizeof crop, "%d", in->crop);
  snprintf(shape, sizeof shape, "%dx%dx%d", in->data_shape.c, in->data_shape.h, in->data_shape.w);
  const nest_onnx_prop props[] = {{"nest.source", src}, {"nest.data_shape", shape},
                                  {"nest.center_crop", crop}};
  const nest_onnx_meta meta = {.norm = in->norm.nch ? &in->norm : NULL,
                               .input_scale = in->scale,
                               .labels = in->labels,
                               .reduce = in->reduce,
                               .nprops = 3,
                               .props = props};
  return nest_onnx_write(net, &meta, out);
}

int main(int argc, char **argv) {
  opts o;
  const int pr = parse_args(argc, argv, &o);
  if (pr) return pr == 1 ? 0 : pr;
  char src[4096];
  if (!source_path(o.src_arg, src, sizeof src)) return 1;
  if (!output_allowed(src, o.out)) return 1;
  struct stat sb;
  if (!o.force && stat(o.out, &sb) == 0) {
    fprintf(stderr, "nest_export: error: %s: exists (use --force to replace it)\n", o.out);
    return 1;
  }
  nest_net *net = NULL;
  nest_model_info info;
  nest_model_input file_in, cfg_in;
  memset(&info, 0, sizeof info);
  memset(&cfg_in, 0, sizeof cfg_in);
  const nest_model_input *use = NULL;
  nest_dataset *train = NULL;
  nest_status st = nest_model_load_input(src, 1, 1, &net, &file_in);
  if (st == NEST_OK) st = nest_model_read_info(src, &info);
  if (st == NEST_OK) st = choose_input(&o, src, &file_in, &train, &cfg_in, &use);
  if (st == NEST_OK && o.onnx) {
    st = write_onnx(net, use, src, o.out);
  } else if (st == NEST_OK) {
    info.input = use;
    st = nest_model_save_info(net, &info, o.out);
  }
  if (st == NEST_OK) {
    int64_t aw, tw;
    nest_net_count(net, &aw, &tw, NULL);
    char widths[512];
    nest_net_widths_string(net, widths, sizeof widths);
    printf("nest_export: %s -> %s: %s, %lld / %lld weights active%s\n", src, o.out, widths,
           (long long)aw, (long long)tw,
           use->known ? (o.config ? ", input record from the run's data" : ", input record")
                      : ", no input record (format 1)");
  } else {
    fprintf(stderr, "nest_export: error: %s\n", nest_error_message());
  }
  nest_model_info_free(&info);
  nest_model_input_free(&file_in);
  nest_dataset_destroy(&train); /* cfg_in borrows from it: nothing to free */
  nest_net_destroy(&net);
  return st == NEST_OK ? 0 : 1;
}
