/* nest_prep.c — convert MNIST IDX (images + labels, raw or .gz) or a CSV table into nest's
 * HDF5 dataset format (docs/data-format.md), so training runs read one validated file; write
 * image shards (ImageNet-format, read from disk batch by batch) of synthetic images.
 * Serial tool: uses the data module only, never MPI.
 *
 *   nest_prep -o mnist-train.h5 train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
 *   nest_prep -o wdbc.h5 --label-col 1 --drop-cols 0 wdbc.data
 *   nest_prep --synthetic-images 2000 -o synth/train --classes 10 --size 256
 *
 * The output is never one of the inputs (not even with --force), and an existing output is
 * kept unless --force is given.
 *
 * Exit codes: 0 success (one summary line on stdout), 1 data or file error (including a
 * refused output), 2 usage error; every error is one line "nest_prep: <message>" on stderr. */
#define _GNU_SOURCE /* getopt_long */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nest/data.h"

static const char *usage_line =
    "usage: nest_prep -o OUT.h5 [--format auto|idx|csv|h5] [--label-col N] [--delim C]\n"
    "                 [--header] [--drop-cols LIST] [--max N] [--force] INPUT [LABELS]\n"
    "       nest_prep --synthetic-images N -o PREFIX [--classes C] [--size S] [--channels K]\n"
    "                 [--shard-size K] [--seed X] [--first N] [--force]\n";

static void print_help(void) {
  printf("%s", usage_line);
  printf("\nConvert a dataset into nest's HDF5 format (see docs/data-format.md).\n"
         "  INPUT [LABELS]      IDX images + IDX labels (raw or .gz), or one CSV file\n"
         "                      (an existing nest .h5 is re-written to OUT, e.g. with --max)\n"
         "  -o, --output FILE   output .h5 (written to FILE.tmp, then renamed); never one\n"
         "                      of the input files, and not an existing file unless --force\n"
         "  --format F          auto (default: by magic bytes / extension), idx, csv, h5\n"
         "  --label-col N       CSV: 0-based label column, -1 = last (default 0)\n"
         "  --delim C           CSV: field delimiter, one character or 'tab' (default ',')\n"
         "  --header            CSV: the first line is a header and is skipped\n"
         "  --drop-cols LIST    CSV: comma-separated 0-based columns to ignore, e.g. 0\n"
         "  --max N             keep only the first N samples\n"
         "  --force             overwrite an existing output file (never an input)\n"
         "  -h, --help          this help\n"
         "\nImage shards (PREFIX-00000.h5, PREFIX-00001.h5, ...; data.train = PREFIX-*.h5):\n"
         "  --synthetic-images N  N learnable synthetic images (class colour + grating + noise)\n"
         "  --classes C         classes (default 10)\n"
         "  --size S            images are S x S (default 256)\n"
         "  --channels K        channels (default 3)\n"
         "  --shard-size K      images per shard file (default 1024)\n"
         "  --seed X            seed of the synthetic images (default 1)\n"
         "  --first N           number the images from N (default 0): a test set of the same\n"
         "                      classes is --first <training count> with the same --seed\n"
         "\nExamples:\n"
         "  nest_prep -o mnist-train.h5 train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz\n"
         "  nest_prep -o wdbc.h5 --label-col 1 --drop-cols 0 wdbc.data\n"
         "  nest_prep -o letters.h5 letter-recognition.data\n"
         "  nest_prep --synthetic-images 5000 -o synth/train --classes 100\n"
         "  nest_prep --synthetic-images 500 -o synth/test --classes 100 --first 5000\n");
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "nest_prep: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (try --help)\n");
  return 2;
}

/* The same file by device and inode, so another spelling of a path, a symlink or a hard link
 * to it counts too. */
static int same_file(const struct stat *a, const struct stat *b) {
  return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* 0 if outpath may be written, else 1 after a one-line message. An input is never
 * overwritten: the conversion would destroy its own source (the atomic write replaces OUT
 * after reading, and truncates OUT.tmp before, so neither may be an input). An existing
 * output is only replaced with --force. Checked before reading anything; a file created in
 * between is not caught, this guards against mistakes, not against races. */
static int check_output(const char *outpath, const char *const inputs[2],
                        const char *const roles[2], int force) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", outpath);
  struct stat out, out_tmp, in;
  const int have_out = stat(outpath, &out) == 0, have_tmp = stat(tmp, &out_tmp) == 0;
  for (int i = 0; i < 2; ++i) {
    if (!inputs[i] || stat(inputs[i], &in) != 0) continue; /* a missing input: the loader says */
    if (have_out && same_file(&out, &in)) {
      fprintf(stderr,
              "nest_prep: %s: the output is the same file as the %s %s; refusing to overwrite "
              "an input (--force does not allow that)\n",
              outpath, roles[i], inputs[i]);
      return 1;
    }
    if (have_tmp && same_file(&out_tmp, &in)) {
      fprintf(stderr,
              "nest_prep: %s: the output's temporary file %s is the %s %s; refusing to "
              "overwrite an input (--force does not allow that)\n",
              outpath, tmp, roles[i], inputs[i]);
      return 1;
    }
  }
  struct stat any;
  if (!force && lstat(outpath, &any) == 0) { /* lstat: a dangling symlink would be replaced too */
    fprintf(stderr, "nest_prep: %s: the output file exists; refusing to overwrite it (use --force)\n",
            outpath);
    return 1;
  }
  return 0;
}

static int parse_long(const char *s, long lo, long hi, long *v) {
  char *end;
  errno = 0;
  long x = strtol(s, &end, 10);
  if (end == s || *end || errno || x < lo || x > hi) return 0;
  *v = x;
  return 1;
}

/* Shards: refuse to replace an existing set (its first shard) unless --force; with --force,
 * shards of the old set beyond the new count are removed after the new set is complete, so
 * that PREFIX-*.h5 names exactly the new set. */
static int check_shard_output(const char *prefix, int force) {
  char path[4096];
  if (nest_shard_path(prefix, 0, path, sizeof path) != NEST_OK) {
    fprintf(stderr, "nest_prep: %s\n", nest_error_message());
    return 1;
  }
  struct stat any;
  if (!force && lstat(path, &any) == 0) {
    fprintf(stderr, "nest_prep: %s: the output shard exists; refusing to overwrite the set (use "
            "--force)\n", path);
    return 1;
  }
  return 0;
}

static void remove_stale_shards(const char *prefix, int from) {
  char path[4096];
  struct stat any;
  for (int k = from; nest_shard_path(prefix, k, path, sizeof path) == NEST_OK &&
                     lstat(path, &any) == 0; ++k)
    if (unlink(path) == 0) printf("nest_prep: removed %s (left from an earlier, larger set)\n", path);
}

typedef struct {
  long n, classes, size, channels, shard_size, first;
  unsigned long long seed;
} shard_opts;

static int run_synthetic(const char *prefix, const shard_opts *so, int force) {
  if (check_shard_output(prefix, force)) return 1;
  const nest_shape shape = {(int)so->channels, (int)so->size, (int)so->size};
  int nfiles = 0;
  nest_status st = nest_shards_synthetic(prefix, so->n, shape, (int)so->classes, so->shard_size,
                                         so->seed, so->first, &nfiles);
  if (st != NEST_OK) {
    fprintf(stderr, "nest_prep: %s\n", nest_error_message());
    return 1;
  }
  if (force) remove_stale_shards(prefix, nfiles);
  printf("nest_prep: wrote %s-00000.h5 .. %s-%05d.h5: %ld synthetic images, shape %ldx%ldx%ld "
         "(uint8), %ld classes, %d shard%s\n", prefix, prefix, nfiles - 1, so->n, so->channels,
         so->size, so->size, so->classes, nfiles, nfiles == 1 ? "" : "s");
  return 0;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"synthetic-images", required_argument, NULL, 'S'}, {"classes", required_argument, NULL, 'C'},
      {"size", required_argument, NULL, 'z'},    {"channels", required_argument, NULL, 'k'},
      {"shard-size", required_argument, NULL, 'K'}, {"seed", required_argument, NULL, 's'},
      {"first", required_argument, NULL, 'T'},
      {"output", required_argument, NULL, 'o'},    {"format", required_argument, NULL, 'f'},
      {"label-col", required_argument, NULL, 'l'}, {"delim", required_argument, NULL, 'd'},
      {"header", no_argument, NULL, 'H'},          {"drop-cols", required_argument, NULL, 'x'},
      {"max", required_argument, NULL, 'm'},       {"help", no_argument, NULL, 'h'},
      {"force", no_argument, NULL, 'F'},           {NULL, 0, NULL, 0}};
  nest_data_opts o;
  nest_data_opts_default(&o);
  const char *outpath = NULL;
  int force = 0, synthetic = 0;
  shard_opts so = {.classes = 10, .size = 256, .channels = 3, .shard_size = 1024, .seed = 1};
  long v;
  opterr = 0; /* we print our own one-line messages */
  int c;
  while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'o': outpath = optarg; break;
    case 'f':
      if (strcmp(optarg, "auto") && strcmp(optarg, "idx") && strcmp(optarg, "csv") &&
          strcmp(optarg, "h5"))
        return usage_error("--format '%s': expected auto, idx, csv or h5", optarg);
      o.format = optarg;
      break;
    case 'l':
      if (!parse_long(optarg, -1, INT_MAX, &v))
        return usage_error("--label-col '%s': expected a column number >= -1", optarg);
      o.csv_label_col = (int)v;
      break;
    case 'd':
      if (strcmp(optarg, "tab") == 0 || strcmp(optarg, "\\t") == 0) o.csv_delim = '\t';
      else if (strlen(optarg) == 1) o.csv_delim = optarg[0];
      else return usage_error("--delim '%s': expected one character or 'tab'", optarg);
      break;
    case 'H': o.csv_header = 1; break;
    case 'F': force = 1; break;
    case 'x': o.csv_drop_cols = optarg; break;
    case 'm':
      if (!parse_long(optarg, 1, LONG_MAX, &v))
        return usage_error("--max '%s': expected a positive sample count", optarg);
      o.max_samples = v;
      break;
    case 'S':
      if (!parse_long(optarg, 1, 1L << 40, &v))
        return usage_error("--synthetic-images '%s': expected a positive image count", optarg);
      so.n = v, synthetic = 1;
      break;
    case 'C':
      if (!parse_long(optarg, 1, 1 << 20, &v))
        return usage_error("--classes '%s': expected 1 .. 1048576", optarg);
      so.classes = v;
      break;
    case 'z':
      if (!parse_long(optarg, 1, 4096, &v)) return usage_error("--size '%s': expected 1 .. 4096", optarg);
      so.size = v;
      break;
    case 'k':
      if (!parse_long(optarg, 1, 64, &v)) return usage_error("--channels '%s': expected 1 .. 64", optarg);
      so.channels = v;
      break;
    case 'K':
      if (!parse_long(optarg, 1, 1L << 30, &v))
        return usage_error("--shard-size '%s': expected a positive image count", optarg);
      so.shard_size = v;
      break;
    case 'T':
      if (!parse_long(optarg, 0, 1L << 50, &v))
        return usage_error("--first '%s': expected a non-negative image number", optarg);
      so.first = v;
      break;
    case 's': {
      char *end;
      errno = 0;
      so.seed = strtoull(optarg, &end, 10);
      if (end == optarg || *end || errno || optarg[0] == '-')
        return usage_error("--seed '%s': expected a non-negative integer", optarg);
      break;
    }
    case 'h': print_help(); return 0;
    case ':': return usage_error("option %s needs a value", argv[optind - 1]);
    default: return usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  int npos = argc - optind;
  if (synthetic) {
    if (!outpath || !*outpath) return usage_error("%s", "missing -o PREFIX");
    if (npos > 0) return usage_error("unexpected argument '%s' with --synthetic-images", argv[optind]);
    return run_synthetic(outpath, &so, force);
  }
  if (!outpath || !*outpath) return usage_error("%s", "missing -o OUT.h5");
  if (npos < 1 || npos > 2)
    return usage_error("%s", npos < 1 ? "missing INPUT file" : "too many input files");
  o.path = argv[optind];
  o.labels_path = npos == 2 ? argv[optind + 1] : NULL;
  const char *const inputs[2] = {o.path, o.labels_path};
  const char *const roles[2] = {"input", "labels file"};
  if (check_output(outpath, inputs, roles, force)) return 1;

  nest_dataset *ds = NULL;
  nest_status st = nest_dataset_load(&o, NULL, &ds);
  if (st == NEST_OK) st = nest_dataset_save_h5(ds, outpath);
  if (st != NEST_OK) {
    fprintf(stderr, "nest_prep: %s\n", nest_error_message());
    nest_dataset_destroy(&ds);
    return 1;
  }
  printf("nest_prep: wrote %s: %lld samples, shape %dx%dx%d (%s), %d classes\n", outpath,
         (long long)ds->n, ds->shape.c, ds->shape.h, ds->shape.w, ds->u8 ? "uint8" : "float32",
         ds->nclasses);
  nest_dataset_destroy(&ds);
  return 0;
}
