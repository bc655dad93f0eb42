/* nest_infer.c — run a model on data: the class of every sample, the error and top-5 error when
 * the data have labels, per-sample predictions as CSV with the model's own class names.
 *
 *   nest_infer outputs/run/model.h5 t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
 *   nest_infer outputs/wdbc-run new-rows.csv --no-labels --out predictions.csv
 *
 * The data go through the readers training uses (nest_dataset_load: IDX, CSV, nest .h5, image
 * shards) and the batch reader (prefetch.h, centre crop for image shards), with the input
 * record of the model file (model.h: the sample shape, the scale, the normalisation, the crop,
 * the class names and how the training CSV was read, which are the defaults of the CSV
 * options). One process, OpenMP threads, no MPI.
 *
 * The forward path is one function pointer: by default the compact sparse program (sparse.h:
 * units that cannot matter removed, CSR dense layers (SCANN skip tensors included), sparse and
 * partial-area convolutions; its logits are the same bits for any thread count and batch size), with --dense the dense
 * masked path it is tested against (nest_net_forward in evaluation mode).
 *
 * Exit codes: 0 success, 1 a model or data error, 2 usage error; every error is one line
 * "nest_infer: error: ..." on stderr. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "nest/atomic.h"
#include "nest/data.h"
#include "nest/dr.h"
#include "nest/loss.h"
#include "nest/model.h"
#include "nest/prefetch.h"
#include "nest/sparse.h"

static const char *usage_line =
    "usage: nest_infer MODEL DATA [IDX_LABELS] [--out FILE] [--no-labels] [options]\n";

static void print_help(void) {
  printf("%s", usage_line);
  printf(
      "\nRun a nest model on data and report its predictions (docs/model-format.md).\n"
      "MODEL is a model file, a run directory (its model.h5) or a restart checkpoint; its\n"
      "input record supplies the normalisation, crop and class names. DATA is read as in\n"
      "training: IDX images (with IDX_LABELS or --labels), CSV, a nest .h5 set or image\n"
      "shards (a file or a quoted glob pattern).\n"
      "  --out FILE         write index,label,score[,true_label] per sample (score: softmax\n"
      "                     probability of the predicted class); FILE must not exist\n"
      "                     unless --force, which replaces it atomically\n"
      "  --no-labels        the data have no labels (CSV without a label column, IDX\n"
      "                     images alone): predictions only\n"
      "  --labels FILE      IDX labels file (same as the second positional argument)\n"
      "  --format F         auto, idx, csv or h5 (default auto: detected)\n"
      "  --label-col N      CSV label column, 0-based, -1 = last     (default: the model's)\n"
      "  --delim C          CSV delimiter: one character, tab, space, comma, semicolon\n"
      "  --header, --no-header   CSV first line is / is not a header (default: the model's)\n"
      "  --drop-cols LIST   CSV columns to ignore, e.g. 0 or 0,3     (default: the model's)\n"
      "  --max N            only the first N samples\n"
      "  --threads N        OpenMP threads (default: OMP_NUM_THREADS or all cores)\n"
      "  --batch N          samples per forward pass (default 256)\n"
      "  --dense            the dense masked forward path (the reference) instead of the\n"
      "                     compact sparse program\n"
      "  --force            replace an existing --out file\n"
      "  -h, --help         this help\n"
      "\nPrints the error and, with more than 5 classes, the top-5 error when the data have\n"
      "labels. Exit codes: 0 success, 1 model or data error, 2 usage error.\n");
}

/* ---- options -------------------------------------------------------------------------------- */

typedef struct {
  const char *model, *data, *labels, *out, *format, *drop_cols;
  int label_col, has_label_col, header, delim, no_labels, dense, force;
  int threads, batch;
  int64_t max;
} opts;

static int usage(const char *fmt, const char *arg) {
  fprintf(stderr, "nest_infer: error: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (try --help)\n");
  return 2;
}

/* A whole-string integer in [lo, hi]. */
static int parse_int(const char *s, long long lo, long long hi, long long *v) {
  char *end;
  errno = 0;
  const long long x = strtoll(s, &end, 10);
  if (end == s || *end || errno || x < lo || x > hi) return 0;
  *v = x;
  return 1;
}

static int parse_delim(const char *s) {
  if (strcmp(s, "tab") == 0) return '\t';
  if (strcmp(s, "space") == 0) return ' ';
  if (strcmp(s, "comma") == 0) return ',';
  if (strcmp(s, "semicolon") == 0) return ';';
  if (strlen(s) == 1 && s[0] != '\n' && s[0] != '\r' && s[0] != '"') return (unsigned char)s[0];
  return -1;
}

static const char *const value_opts[] = {"--out",   "--labels",  "--format", "--label-col",
                                         "--delim", "--drop-cols", "--max",  "--threads",
                                         "--batch"};

/* The value of option `name` at argv[i] ("--name V" or "--name=V"): NULL if a is not it. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, int *missing) {
  const char *a = argv[*i];
  const size_t n = strlen(name);
  if (strncmp(a, name, n) != 0) return NULL;
  if (a[n] == '=') return a + n + 1;
  if (a[n]) return NULL;
  if (*i + 1 >= argc) {
    *missing = 1;
    return NULL;
  }
  return argv[++*i];
}

/* One option with a value into o; 0 = done, 2 = usage error. */
static int set_value(opts *o, const char *name, const char *v) {
  long long x;
  if (!v[0]) return usage("%s needs a value", name);
  if (strcmp(name, "--out") == 0) o->out = v;
  else if (strcmp(name, "--labels") == 0) o->labels = v;
  else if (strcmp(name, "--format") == 0) {
    if (strcmp(v, "auto") && strcmp(v, "idx") && strcmp(v, "csv") && strcmp(v, "h5"))
      return usage("--format %s: not auto, idx, csv or h5", v);
    o->format = v;
  } else if (strcmp(name, "--label-col") == 0) {
    if (!parse_int(v, -1, 1000000, &x)) return usage("--label-col %s: not a column in [-1, 1000000]", v);
    o->label_col = (int)x, o->has_label_col = 1;
  } else if (strcmp(name, "--delim") == 0) {
    if ((o->delim = parse_delim(v)) < 0) return usage("--delim %s: not one character", v);
  } else if (strcmp(name, "--drop-cols") == 0) o->drop_cols = v;
  else if (strcmp(name, "--max") == 0) {
    if (!parse_int(v, 1, (long long)1e12, &x)) return usage("--max %s: not a count >= 1", v);
    o->max = x;
  } else if (strcmp(name, "--threads") == 0) {
    if (!parse_int(v, 1, 1024, &x)) return usage("--threads %s: not in [1, 1024]", v);
    o->threads = (int)x;
  } else if (strcmp(name, "--batch") == 0) {
    if (!parse_int(v, 1, 65536, &x)) return usage("--batch %s: not in [1, 65536]", v);
    o->batch = (int)x;
  }
  return 0;
}

/* -1: help printed (exit 0); 0: ok; 2: usage error (printed). */
static int parse_args(int argc, char **argv, opts *o) {
  memset(o, 0, sizeof *o);
  o->header = -1, o->delim = -1, o->batch = 256;
  const char *pos[3];
  int npos = 0;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return print_help(), -1;
    int matched = 0, missing = 0;
    for (size_t k = 0; k < sizeof value_opts / sizeof *value_opts && !matched; ++k) {
      const char *v = opt_value(argc, argv, &i, value_opts[k], &missing);
      if (missing) return usage("%s needs a value", value_opts[k]);
      if (!v) continue;
      matched = 1;
      if (set_value(o, value_opts[k], v)) return 2;
    }
    if (matched) continue;
    if (strcmp(a, "--header") == 0) o->header = 1;
    else if (strcmp(a, "--no-header") == 0) o->header = 0;
    else if (strcmp(a, "--no-labels") == 0) o->no_labels = 1;
    else if (strcmp(a, "--dense") == 0) o->dense = 1;
    else if (strcmp(a, "--force") == 0) o->force = 1;
    else if (a[0] == '-' && a[1]) return usage("unknown option '%s'", a);
    else if (npos < 3) pos[npos++] = a;
    else return usage("unexpected argument '%s'", a);
  }
  if (npos < 2) {
    fprintf(stderr, "nest_infer: error: need a model and data\n%s", usage_line);
    return 2;
  }
  o->model = pos[0], o->data = pos[1];
  if (npos == 3) {
    if (o->labels) return usage("two labels files: %s and --labels", pos[2]);
    o->labels = pos[2];
  }
  if (o->labels && o->no_labels) return usage("%s", "--no-labels with a labels file");
  return 0;
}

/* ---- the forward path ------------------------------------------------------------------------- */

/* One forward path: logits[n, nclasses] of normalised inputs x[n, in]. */
typedef struct engine {
  const char *name;
  nest_status (*forward)(struct engine *e, int n, const float *x, float *logits);
  nest_net *net;      /* the model, as loaded */
  nest_sparse *sparse; /* its compact program (the sparse path) */
  int nthreads;
} engine;

/* The compact sparse program, compiled from the net at start. */
static nest_status engine_sparse(engine *e, int n, const float *x, float *logits) {
  return nest_sparse_forward(e->sparse, n, e->nthreads, x, logits);
}

/* The dense masked path: nest_net_forward in eval mode (dropout the identity, batch norm with
 * its running statistics). */
static nest_status engine_dense(engine *e, int n, const float *x, float *logits) {
  const nest_ctx ctx = {.n = n, .train = 0, .nthreads = e->nthreads};
  const float *out = NULL;
  NEST_CALL(nest_net_forward(e->net, &ctx, x, &out));
  memcpy(logits, out, sizeof(float) * (size_t)n * (size_t)e->net->nclasses);
  return NEST_OK;
}

/* ---- model and data ----------------------------------------------------------------------------- */

/* A run directory stands for its model.h5. */
static int model_path(const char *arg, char *out, size_t cap) {
  struct stat sb;
  if (stat(arg, &sb) == 0 && S_ISDIR(sb.st_mode)) {
    const size_t n = strlen(arg);
    snprintf(out, cap, "%s%smodel.h5", arg, n && arg[n - 1] == '/' ? "" : "/");
    if (stat(out, &sb) != 0) {
      fprintf(stderr, "nest_infer: error: %s: no model.h5 in this run directory (a run that did "
                      "not finish: nest_export %s OUT.h5 writes its newest checkpoint's "
                      "network)\n", arg, arg);
      return 0;
    }
    return 1;
  }
  snprintf(out, cap, "%s", arg);
  return 1;
}

/* DR+SCANN models (model.h: /input/reduce): the raw rows reduced as training reduced them
 * (dr.h). *ds is replaced. */
static nest_status reduce_rows(const nest_reduce *r, nest_dataset **ds) {
  nest_dataset *nd = NULL;
  NEST_CALL(nest_dr_reduce_set(*ds, r, &nd));
  nest_dataset_destroy(ds);
  *ds = nd;
  return NEST_OK;
}

/* The data as the model expects them: same sample shape, the model's scale, normalisation and
 * crop; labels mapped onto the model's classes. */
static nest_status load_data(const opts *o, const char *mpath, const nest_model_input *in,
                             nest_dataset **out) {
  nest_data_opts d;
  nest_data_opts_default(&d);
  d.path = o->data;
  d.labels_path = o->labels;
  d.format = o->format ? o->format : "auto";
  d.csv_label_col = o->has_label_col ? o->label_col : in->csv_label_col;
  d.csv_delim = (char)(o->delim >= 0 ? o->delim : in->csv_delim);
  d.csv_header = o->header >= 0 ? o->header : in->csv_header;
  d.csv_drop_cols = o->drop_cols ? o->drop_cols : in->csv_drop_cols;
  d.max_samples = o->max;
  d.no_labels = o->no_labels;
  nest_dataset ref; /* the model's classes, for the label mapping */
  memset(&ref, 0, sizeof ref);
  snprintf(ref.path, sizeof ref.path, "%.1000s", mpath);
  ref.nclasses = in->nlabels;
  ref.class_names = in->labels;
  NEST_CALL(nest_dataset_load(&d, &ref, out));
  nest_dataset *ds = *out;
  const nest_shape s = nest_dataset_stored_shape(ds), m = in->data_shape;
  nest_status st = NEST_OK;
  if (s.c != m.c || s.h != m.h || s.w != m.w) {
    if (s.h * s.w == 1 && m.h * m.w == 1)
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: rows have %d features but the model %s takes %d (check "
                    "--label-col, --drop-cols, --no-labels)", ds->path, s.c, mpath, m.c);
    else
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: samples are %dx%dx%d but the model %s takes %dx%dx%d",
                    ds->path, s.c, s.h, s.w, mpath, m.c, m.h, m.w);
  }
  if (st == NEST_OK && in->crop > 0 && !nest_dataset_is_sharded(ds))
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: the model %s takes image shards centre-cropped to %d (its "
                  "training data): give image shards", ds->path, mpath, in->crop);
  if (st == NEST_OK && in->crop > 0) st = nest_dataset_set_crop(ds, in->crop);
  /* Raw values in the units of the training data's raw values (bytes or floats). */
  ds->u8_scale = in->scale;
  if (st == NEST_OK && ds->f32 && in->scale != 1.0f)
    for (int64_t i = 0; i < ds->n * nest_dataset_dim(ds); ++i) ds->f32[i] *= in->scale;
  if (st == NEST_OK && in->reduce) st = reduce_rows(in->reduce, out);
  if (st == NEST_OK) st = nest_dataset_set_norm(*out, &in->norm);
  if (st != NEST_OK) {
    nest_dataset_destroy(out);
    nest_error_trace(__FILE__, __LINE__);
  }
  return st;
}

/* ---- predictions --------------------------------------------------------------------------------- */

typedef struct {
  int64_t n, wrong, top5_hits;
  double seconds;
} tally;

/* Per row of a batch: argmax (ties by lowest index, as training's accuracy), softmax
 * probability of it, the CSV line. */
static void score_batch(const float *logits, const int32_t *y, int rows, int k, int64_t first,
                        char *const *labels, int labelled, FILE *f, tally *t) {
  for (int i = 0; i < rows; ++i) {
    const float *z = logits + (size_t)i * k;
    int best = 0;
    for (int j = 1; j < k; ++j)
      if (z[j] > z[best]) best = j;
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += exp((double)z[j] - z[best]);
    if (labelled) t->wrong += best != y[i];
    if (!f) continue;
    fprintf(f, "%lld,", (long long)(first + i));
    nest_csv_put_field(f, labels[best]);
    fprintf(f, ",%.6g", 1.0 / sum);
    if (labelled) {
      fputc(',', f);
      nest_csv_put_field(f, labels[y[i]]);
    }
    fputc('\n', f);
  }
  if (labelled && k > 5) t->top5_hits += nest_loss_topk_hits(logits, y, rows, k, 5);
  t->n += rows;
}

/* Every sample through the engine, batch by batch (the next batch read ahead for image
 * shards); predictions to f when not NULL. */
static nest_status run(engine *e, const nest_dataset *ds, int batch, char *const *labels,
                       FILE *f, tally *t) {
  const int k = e->net->nclasses, labelled = !ds->unlabeled;
  const size_t dim = (size_t)nest_dataset_dim(ds);
  const nest_shape st_shape = nest_dataset_stored_shape(ds);
  const size_t img = nest_dataset_is_sharded(ds) ? nest_shape_size(st_shape) : 0;
  nest_prefetch *pf = NULL;
  float *x = NULL, *logits = NULL;
  int32_t *y = NULL;
  int64_t *ids[2] = {NULL, NULL};
  nest_status s = NEST_OK;
  NEST_CALL_GOTO(s, nest_prefetch_create(0, 0, batch, dim, img, e->nthreads, img > 0, &pf), done);
  NEST_CALL_GOTO(s, nest_malloc_aligned((void **)&x, sizeof(float) * dim * batch, "batch"), done);
  NEST_CALL_GOTO(s, nest_malloc((void **)&y, sizeof(int32_t) * batch, "labels"), done);
  NEST_CALL_GOTO(s, nest_malloc((void **)&logits, sizeof(float) * (size_t)k * batch, "logits"),
                 done);
  for (int b = 0; b < 2; ++b)
    NEST_CALL_GOTO(s, nest_malloc((void **)&ids[b], sizeof(int64_t) * batch, "ids"), done);
  if (f) fprintf(f, labelled ? "index,label,score,true_label\n" : "index,label,score\n");
  const double t0 = omp_get_wtime();
  for (int64_t i0 = 0, b = 0; i0 < ds->n; i0 += batch, b ^= 1) {
    const int rows = (int)(ds->n - i0 < batch ? ds->n - i0 : batch);
    for (int i = 0; i < rows; ++i) ids[b][i] = i0 + i;
    const nest_batch_req req = {.ds = ds, .ids = ids[b], .n = rows};
    NEST_CALL_GOTO(s, nest_prefetch_get(pf, &req, &x, &y), done);
    const int64_t n1 = i0 + batch;
    if (n1 < ds->n) {
      const int r1 = (int)(ds->n - n1 < batch ? ds->n - n1 : batch);
      for (int i = 0; i < r1; ++i) ids[b ^ 1][i] = n1 + i;
      const nest_batch_req next = {.ds = ds, .ids = ids[b ^ 1], .n = r1};
      nest_prefetch_ahead(pf, &next);
    }
    NEST_CALL_GOTO(s, e->forward(e, rows, x, logits), done);
    score_batch(logits, y, rows, k, i0, labels, labelled, f, t);
  }
  t->seconds = omp_get_wtime() - t0;
done:
  nest_prefetch_destroy(&pf); /* before the buffers: after swaps either pair may be its */
  free(x);
  free(y);
  free(logits);
  free(ids[0]);
  free(ids[1]);
  return s;
}

/* ---- main --------------------------------------------------------------------------------------- */

static int fail(void) {
  fprintf(stderr, "nest_infer: error: %s\n", nest_error_message());
  return 1;
}

static void print_result(const opts *o, const char *mpath, const nest_net *net,
                         const nest_dataset *ds, const engine *e, const tally *t) {
  int64_t act, tot;
  nest_net_count(net, &act, &tot, NULL);
  char widths[512];
  nest_net_widths_string(net, widths, sizeof widths);
  printf("nest_infer: %s (%s, %lld of %lld weights active) on %s: %lld samples, %d classes, "
         "%s path, %d thread%s, %.0f samples/s\n", mpath, widths, (long long)act, (long long)tot,
         o->data, (long long)t->n, net->nclasses, e->name, e->nthreads, e->nthreads > 1 ? "s" : "",
         t->seconds > 0 ? (double)t->n / t->seconds : 0.0);
  if (ds->unlabeled) {
    printf("no labels: predictions only\n");
  } else {
    printf("error %.2f%% (%lld / %lld)", 100.0 * (double)t->wrong / (double)t->n,
           (long long)t->wrong, (long long)t->n);
    if (net->nclasses > 5)
      printf(", top-5 error %.2f%% (%lld / %lld)",
             100.0 * (double)(t->n - t->top5_hits) / (double)t->n,
             (long long)(t->n - t->top5_hits), (long long)t->n);
    printf("\n");
  }
  if (o->out) printf("predictions: %s\n", o->out);
}

int main(int argc, char **argv) {
  opts o;
  const int pr = parse_args(argc, argv, &o);
  if (pr) return pr < 0 ? 0 : pr;
  struct stat sb;
  if (o.out && !o.force && stat(o.out, &sb) == 0) {
    fprintf(stderr, "nest_infer: error: %s: exists (use --force to replace it)\n", o.out);
    return 1;
  }
  if (o.threads > 0) omp_set_num_threads(o.threads);
  char mpath[4200];
  if (!model_path(o.model, mpath, sizeof mpath)) return 1;
  engine e = {.name = "sparse", .forward = engine_sparse, .nthreads = omp_get_max_threads()};
  if (o.dense) e.name = "dense", e.forward = engine_dense;
  nest_model_input in;
  if (nest_model_load_input(mpath, o.batch, e.nthreads, &e.net, &in) != NEST_OK) return fail();
  if (!o.dense && nest_sparse_create(e.net, o.batch, e.nthreads, NULL, &e.sparse) != NEST_OK) {
    nest_model_input_free(&in);
    nest_net_destroy(&e.net);
    return fail();
  }
  int rc = 0;
  nest_dataset *ds = NULL;
  FILE *f = NULL;
  char tmp[4200];
  if (!in.known) {
    fprintf(stderr, "nest_infer: error: %s: the file records no input normalisation and no class "
                    "names (format 1, from before nest 2): write a copy that does with "
                    "nest_export --config RUN/config.ini %s NEW.h5\n", mpath, mpath);
    rc = 1;
  } else if (load_data(&o, mpath, &in, &ds) != NEST_OK ||
             (o.out && nest_atomic_fopen(o.out, tmp, sizeof tmp, &f) != NEST_OK)) {
    rc = fail();
  } else {
    tally t = {0};
    nest_status st = run(&e, ds, o.batch, in.labels, f, &t);
    if (f) {
      if (st == NEST_OK) st = nest_atomic_fclose(f, tmp, o.out);
      else fclose(f), nest_atomic_abort(tmp);
    }
    if (st != NEST_OK) rc = fail();
    else print_result(&o, mpath, e.net, ds, &e, &t);
  }
  nest_dataset_destroy(&ds);
  nest_model_input_free(&in);
  nest_sparse_destroy(&e.sparse);
  nest_net_destroy(&e.net);
  return rc;
}
