/* nest_export.c — the network of a restart checkpoint (or of any model file) as a plain model
 * file: what nest_report, nest_jaccard and model.init_from take, and what a run that was
 * stopped or killed before its end leaves the user to work with.
 * Serial tool: no MPI, no HDF5 of its own (model.h, ckpt.h).
 *
 *   nest_export outputs/run/checkpoints/ckpt-00000042.h5 grown.h5
 *   nest_export outputs/run grown.h5          the run's newest checkpoint
 *
 * The output is written atomically (PATH.tmp, fsync, rename: atomic.h), so --force never leaves
 * a half-written file; and it is never a checkpoint of a run, --force or not: not a file in a
 * directory named checkpoints/ (where runs keep them; symlinks resolved), not a file that is a
 * restart checkpoint wherever it lies (a copy, a hard link), not the input itself. Replacing
 * the newest checkpoint with a model file would make the next resume lose the progress since
 * the previous one.
 * Exit codes: 0 success (one line on stdout), 1 file error, 2 usage error; every error is one
 * line "nest_export: error: ..." on stderr. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nest/ckpt.h"
#include "nest/model.h"
#include "nest/restart.h"

static const char *usage_line = "usage: nest_export CHECKPOINT_OR_RUN_DIR OUT.h5 [--force]\n";

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

int main(int argc, char **argv) {
  const char *pos[2] = {NULL, NULL};
  int npos = 0, force = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      printf("%s\nWrite the network of a restart checkpoint (a run directory: its newest\n"
             "checkpoint) as a model file (docs/model-format.md): weights, masks, partial-area\n"
             "masks and batch-norm statistics, without the training state. OUT.h5 must not\n"
             "exist unless --force, which replaces it atomically; OUT.h5 is never a restart\n"
             "checkpoint, nor in a run's checkpoints/ directory, nor the input.\n", usage_line);
      return 0;
    }
    if (strcmp(argv[i], "--force") == 0) {
      force = 1;
    } else if (npos < 2) {
      pos[npos++] = argv[i];
    } else {
      fprintf(stderr, "nest_export: error: unexpected argument '%s'\n%s", argv[i], usage_line);
      return 2;
    }
  }
  if (npos != 2) {
    fprintf(stderr, "nest_export: error: need a checkpoint (or run directory) and an output\n%s",
            usage_line);
    return 2;
  }
  char src[4096];
  snprintf(src, sizeof src, "%s", pos[0]);
  struct stat sb;
  if (stat(src, &sb) == 0 && S_ISDIR(sb.st_mode)) {
    int any = 0;
    if (nest_restart_newest(pos[0], src, sizeof src, &any) != NEST_OK || !any) {
      fprintf(stderr, "nest_export: error: %s: no checkpoint in %s/checkpoints\n", pos[0], pos[0]);
      return 1;
    }
  }
  if (!output_allowed(src, pos[1])) return 1;
  if (!force && stat(pos[1], &sb) == 0) {
    fprintf(stderr, "nest_export: error: %s: exists (use --force to replace it)\n", pos[1]);
    return 1;
  }
  nest_net *net = NULL;
  nest_model_info info;
  nest_status st = nest_model_load(src, 1, 1, &net);
  if (st == NEST_OK) st = nest_model_read_info(src, &info);
  if (st == NEST_OK) {
    st = nest_model_save_info(net, &info, pos[1]);
    nest_model_info_free(&info);
  }
  if (st != NEST_OK) {
    fprintf(stderr, "nest_export: error: %s\n", nest_error_message());
    nest_net_destroy(&net);
    return 1;
  }
  int64_t aw, tw;
  nest_net_count(net, &aw, &tw, NULL);
  char widths[512];
  nest_net_widths_string(net, widths, sizeof widths);
  printf("nest_export: %s -> %s: %s, %lld / %lld weights active\n", src, pos[1], widths,
         (long long)aw, (long long)tw);
  nest_net_destroy(&net);
  return 0;
}
