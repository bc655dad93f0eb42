/* test_config.c — the configuration module: defaults, INI loading, --set overrides, error
 * messages (code + file, line, key), validation rules, atomic write -> load round trip, help. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nest/config.h"
#include "test_util.h"

/* ---- helpers ---- */

/* Write `text` to a fresh file in the test tmpdir; returns its path (static rotating buffer). */
static const char *write_ini(const char *name, const char *text) {
  const char *path = nest_test_path(nest_test_tmpdir(), name);
  assert_int_equal(nest_test_write_file(path, text, strlen(text)), 0);
  return path;
}

/* The status is `code` and the recorded message contains every string in `subs`. */
static void check_err(nest_status st, nest_status code, const char *const *subs, const char *file,
                      int line) {
  const char *msg = nest_error_message();
  if (st != code) {
    print_error("%s:%d: expected status %s, got %s (message: '%s')\n", file, line,
                nest_status_name(code), nest_status_name(st), msg);
    _fail(file, line);
  }
  for (; *subs; ++subs)
    if (!strstr(msg, *subs)) {
      print_error("%s:%d: message '%s' lacks '%s'\n", file, line, msg, *subs);
      _fail(file, line);
    }
  if (strchr(msg, '\n')) {
    print_error("%s:%d: message is not one line: '%s'\n", file, line, msg);
    _fail(file, line);
  }
}
#define EXPECT_ERR(st, code, ...)                                                                  \
  check_err((st), (code), (const char *const[]){__VA_ARGS__, NULL}, __FILE__, __LINE__)

#define EXPECT_OK(st)                                                                              \
  do {                                                                                             \
    nest_status s_ = (st);                                                                         \
    if (s_ != NEST_OK) {                                                                           \
      print_error("unexpected error %s: %s\n", nest_status_name(s_), nest_error_message());        \
      fail();                                                                                      \
    }                                                                                              \
  } while (0)

/* One non-default value for every key. The round-trip test applies all of them, and checks
 * that the written file has exactly this many keys, so a key added to the table without a
 * line here makes the test fail. */
static const char *const every_key[] = {
    "run.name=my run;v2", /* blank inside, ';' not after a blank: kept */
    "run.out_dir=/scratch/out put",
    "run.run_dir=#not a comment", /* '#' only comments at the start of a line */
    "run.seed=18446744073709551615",
    "run.threads=7",
    "run.log_every=25",
    "run.log_seconds=2.5",
    "run.hash_every=100",
    "run.check_masks=off",
    "data.dir=/data/été",
    "data.train=train-images-idx3-ubyte",
    "data.train_labels=train-labels-idx1-ubyte",
    "data.test=t10k=images", /* '=' inside a value */
    "data.test_labels=t10k-labels:idx1",
    "data.format=idx",
    "data.val_split=0.25",
    "data.test_split=0.125",
    "data.csv_label_col=-1",
    "data.csv_delim=tab",
    "data.csv_header=yes",
    "data.csv_drop_cols=0,3,17",
    "data.max_train=-9223372036854775807",
    "data.max_test=123456789012",
    "data.prefetch=0",
    "model.arch=mlp:784-300-100-10",
    "model.width=0.5",
    "model.widths=200,50",
    "model.density=0.03",
    "model.init=xavier",
    "model.batchnorm=on",
    "model.sync_bn=false",
    "model.dropout=0.5",
    "model.init_from=outputs/dense/model.h5",
    "augment.affine=1",
    "augment.rotate=15",
    "augment.scale=0.2",
    "augment.shear=0.3",
    "augment.translate=3",
    "augment.crop=224",
    "augment.flip=1",
    "synthesis.phases=grow,train,prune,area",
    "train.epochs=3",
    "train.batch=64",
    "train.eval_every=2",
    "train.bucket_mb=12.5",
    "optim.lr=0.30000000000000004",
    "optim.momentum=0.95",
    "optim.nesterov=TRUE",
    "optim.weight_decay=1e-300",
    "optim.schedule=step",
    "optim.warmup_epochs=1.5",
    "optim.step_epochs=30",
    "optim.step_gamma=0.9999999999999999",
    "optim.min_lr=-0",
    "grow.policy=conn,neuron,fmap",
    "grow.layers=fc1,conv2.x",
    "grow.iterations=7",
    "grow.train_epochs=3",
    "grow.lr=0.02",
    "grow.schedule=const",
    "grow.target_error=0.0125",
    "grow.max_weights=123456789",
    "grow.patience=3",
    "grow.patience_z=1.5",
    "grow.batches=50",
    "grow.score_batch=512",
    "grow.conn_ratio=0.1",
    "grow.conn_count=1000",
    "grow.conn_init=grad",
    "grow.conn_lr=0.5",
    "grow.beta=0.25",
    "grow.alpha=0.75",
    "grow.neurons=4",
    "grow.fmaps=3",
    "grow.fmap_candidates=20",
    "grow.capacity=0.8",
    "grow.top=0.2",
    "grow.tries=50",
    "grow.set_zeta=0.2",
    "grow.rigl_dt=50",
    "grow.rigl_end=0.5",
    "grow.rigl_alpha=0.4",
    "prune.layers=fc1,fc2",
    "prune.gamma=0.02",
    "prune.gamma_start=0.3",
    "prune.retrain_steps=100",
    "prune.retries=3",
    "prune.lr=0.005",
    "prune.target_error=0.02",
    "prune.tolerance=0.002",
    "prune.guard=best",
    "prune.guard_z=2.5",
    "prune.distill=0.6",
    "prune.distill_temp=3",
    "prune.dropout=0.1",
    "prune.target_weights=7800",
    "prune.floor=0.01",
    "prune.iterations=50",
    "prune.neuron_thresh=0.001",
    "prune.calib=512",
    "prune.area_gamma=0.02",
    "prune.area_gamma_start=0.2",
    "prune.area_tolerance=0.002",
    "prune.area_epochs=0",
    "checkpoint.every_steps=100",
    "checkpoint.every_minutes=5",
    "checkpoint.keep=2",
    "prune.epochs=2",
    "model.skips=in>fc2, fc1>fc3",
    "model.skip_density=0.1",
    "synthesis.scheme=B",
    "scann.iterations=4",
    "scann.epochs=3",
    "scann.lr=0.02",
    "scann.grow_percentile=90",
    "scann.grow_cap=0.5",
    "scann.prune_quantile=0.3",
    "scann.neurons=5",
    "scann.split_noise=0.02",
    "scann.prune_iterations=2",
    "scann.keep_tolerance=0.001",
    "dr.reduce=pca,sparse",
    "dr.k=8",
    "dr.ratio=2.5",
    "dr.baseline_epochs=3",
    "dr.shrink=0",
};
#define NEVERY (sizeof every_key / sizeof every_key[0])

static nest_config valid_config(void) {
  nest_config c;
  nest_config_defaults(&c);
  strcpy(c.train, "train.csv");
  return c;
}

/* ---- defaults ---- */

static void test_defaults(void **state) {
  (void)state;
  nest_config c;
  memset(&c, 0xAB, sizeof c);
  nest_config_defaults(&c);
  assert_string_equal(c.name, "");
  assert_string_equal(c.out_dir, "outputs");
  assert_string_equal(c.run_dir, "");
  assert_true(c.seed == 1);
  assert_int_equal(c.threads, 0);
  assert_int_equal(c.log_every, 0);
  assert_true(c.log_seconds == 10);
  assert_int_equal(c.hash_every, 0);
  assert_string_equal(c.dir, "");
  assert_string_equal(c.train, "");
  assert_string_equal(c.train_labels, "");
  assert_string_equal(c.test, "");
  assert_string_equal(c.test_labels, "");
  assert_string_equal(c.format, "auto");
  assert_true(c.val_split == 0.1);
  assert_int_equal(c.csv_label_col, 0);
  assert_string_equal(c.csv_delim, ",");
  assert_int_equal(c.csv_header, 0);
  assert_string_equal(c.csv_drop_cols, "");
  assert_true(c.max_train == 0 && c.max_test == 0);
  assert_string_equal(c.arch, "lenet300");
  assert_true(c.width == 1.0 && c.density == 1.0);
  assert_string_equal(c.init, "he");
  assert_int_equal(c.batchnorm, 0);
  assert_int_equal(c.sync_bn, 1);
  assert_true(c.dropout == 0);
  assert_int_equal(c.epochs, 20);
  assert_int_equal(c.batch, 128);
  assert_int_equal(c.eval_every, 1);
  assert_true(c.lr == 0.05);
  assert_true(c.momentum == 0.9);
  assert_int_equal(c.nesterov, 0);
  assert_true(c.weight_decay == 5e-4);
  assert_string_equal(c.schedule, "cosine");
  assert_true(c.warmup_epochs == 0);
  assert_true(c.step_epochs == 10);
  assert_true(c.step_gamma == 0.1);
  assert_true(c.min_lr == 0);

  /* Canonical bytes: two default structs compare equal whatever was there before. */
  nest_config d;
  memset(&d, 0x5A, sizeof d);
  nest_config_defaults(&d);
  assert_memory_equal(&c, &d, sizeof c);
  /* Defaults alone fail validation only for the required training file. */
  EXPECT_ERR(nest_config_validate(&c), NEST_ERR_CONFIG, "data.train is required",
             "--set data.train=PATH");
  strcpy(c.train, "x");
  EXPECT_OK(nest_config_validate(&c));
}

/* ---- loading ---- */

static void test_load_every_type(void **state) {
  (void)state;
  /* BOM, CRLF line ends, indentation, comments of both kinds, inline comments, a section
   * opened twice, bool words in any case, the ':' separator (accepted like '='). */
  const char *path = write_ini("types.ini", "\xEF\xBB\xBF; leading comment\r\n"
                                            "# another comment\r\n"
                                            "[run]\r\n"
                                            "  name = demo run   ; inline comment\r\n"
                                            "\tseed = 18446744073709551615\r\n"
                                            "threads=4\r\n"
                                            "\r\n"
                                            "[data]\n"
                                            "train = /data/a;b.csv\n"
                                            "format = csv\n"
                                            "val_split = 0.2\n"
                                            "csv_label_col = -1\n"
                                            "csv_delim = tab\n"
                                            "csv_header = Yes\n"
                                            "max_train = -5\n"
                                            "max_test = 9223372036854775807\n"
                                            "[model]\n"
                                            "arch: mlp:784-30-10\n"
                                            "density = 0.5 ; half\n"
                                            "init = xavier\n"
                                            "batchnorm = ON\n"
                                            "sync_bn = off\n"
                                            "[optim]\n"
                                            "lr = 1e-3\n"
                                            "nesterov = true\n"
                                            "schedule = step\n"
                                            "[run]\n"
                                            "hash_every = 10\n");
  nest_config c;
  nest_config_defaults(&c);
  EXPECT_OK(nest_config_load(&c, path));
  assert_string_equal(c.name, "demo run");
  assert_true(c.seed == UINT64_MAX);
  assert_int_equal(c.threads, 4);
  assert_int_equal(c.hash_every, 10);
  assert_string_equal(c.train, "/data/a;b.csv");
  assert_string_equal(c.format, "csv");
  assert_true(c.val_split == 0.2);
  assert_int_equal(c.csv_label_col, -1);
  assert_string_equal(c.csv_delim, "\t");
  assert_int_equal(c.csv_header, 1);
  assert_true(c.max_train == -5);
  assert_true(c.max_test == INT64_MAX);
  assert_string_equal(c.arch, "mlp:784-30-10");
  assert_true(c.density == 0.5);
  assert_string_equal(c.init, "xavier");
  assert_int_equal(c.batchnorm, 1);
  assert_int_equal(c.sync_bn, 0);
  assert_true(c.lr == 1e-3);
  assert_int_equal(c.nesterov, 1);
  assert_string_equal(c.schedule, "step");
  /* untouched keys keep their defaults */
  assert_string_equal(c.out_dir, "outputs");
  assert_int_equal(c.epochs, 20);
}

static void test_load_over_current_values(void **state) {
  (void)state;
  const char *path = write_ini("partial.ini", "[optim]\nmomentum = 0.5\n");
  nest_config c;
  nest_config_defaults(&c);
  c.lr = 0.3;
  c.epochs = 7;
  EXPECT_OK(nest_config_load(&c, path));
  assert_true(c.momentum == 0.5);
  assert_true(c.lr == 0.3);
  assert_int_equal(c.epochs, 7);

  /* an empty file (or only comments) changes nothing */
  nest_config d = c;
  EXPECT_OK(nest_config_load(&c, write_ini("empty.ini", "")));
  EXPECT_OK(nest_config_load(&c, write_ini("comments.ini", "; nothing\n\n# here\n")));
  assert_memory_equal(&c, &d, sizeof c);
}

static void test_load_error_leaves_config_unchanged(void **state) {
  (void)state;
  const char *path = write_ini("half.ini", "[optim]\nlr = 0.5\nmomentum = fast\n");
  nest_config c, d;
  nest_config_defaults(&c);
  d = c;
  EXPECT_ERR(nest_config_load(&c, path), NEST_ERR_CONFIG, "half.ini:3:", "momentum");
  assert_memory_equal(&c, &d, sizeof c); /* lr = 0.5 from line 2 was not applied */
}

static void test_long_values(void **state) {
  (void)state;
  /* Longest accepted values: name 127 bytes, a path 1023 bytes (far beyond the 200-byte line
   * limit of upstream inih's default build: the reader must not truncate or split the line). */
  char name[128], path[NEST_PATH_LEN], text[2 * NEST_PATH_LEN];
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  path[0] = '/';
  memset(path + 1, 'p', sizeof path - 2);
  path[sizeof path - 1] = '\0';
  snprintf(text, sizeof text, "[run]\nname = %s\n[data]\ntrain = %s\ntest = after\n", name, path);
  nest_config c;
  nest_config_defaults(&c);
  EXPECT_OK(nest_config_load(&c, write_ini("long.ini", text)));
  assert_string_equal(c.name, name);
  assert_string_equal(c.train, path);
  assert_string_equal(c.test, "after");
}

/* ---- load errors: code CONFIG, message naming file, line and key ---- */

typedef struct {
  const char *text;
  const char *where; /* ":LINE:" */
  const char *what1, *what2;
} bad_file;

static void test_load_errors(void **state) {
  (void)state;
  char longname[300], longline[6000];
  snprintf(longname, sizeof longname, "[run]\nname = %0200d\n", 0);
  snprintf(longline, sizeof longline, "[data]\ntrain = /%05000d\n", 0);
  const bad_file cases[] = {
      /* unknown section, reported at its header line even when the section is empty */
      {"[run]\nseed = 2\n[optm]\nlr = 1\n", ":3:", "unknown section [optm]",
       "did you mean [optim]"},
      {"[run]\n[bogus]\n", ":2:", "unknown section [bogus]", NULL},
      {"[ optim ]\nlr = 1\n", ":1:", "unknown section [ optim ]", NULL},
      /* unknown key, with hints */
      {"[optim]\nlr = 1\n\n\n\n\nlrr = 0.1\n", ":7:", "unknown key 'lrr' in section [optim]",
       "did you mean 'lr'"},
      {"[train]\nlr = 1\n", ":2:", "unknown key 'lr' in section [train]", "it is in [optim]"},
      {"lr = 1\n", ":1:", "key 'lr' before any [section]", NULL},
      /* ints */
      {"[train]\nepochs = ten\n", ":2:", "[train] epochs = 'ten'", "not an integer"},
      {"[train]\nepochs = 1.5\n", ":2:", "epochs", "not an integer"},
      {"[train]\nepochs = 0x10\n", ":2:", "epochs", "not an integer"},
      {"[train]\nepochs = 2147483648\n", ":2:", "epochs = '2147483648'", "out of range"},
      {"[train]\nbatch = -2147483649\n", ":2:", "batch", "out of range"},
      {"[data]\nmax_train = 9223372036854775808\n", ":2:", "max_train", "out of range"},
      {"[run]\nseed = 18446744073709551616\n", ":2:", "seed", "out of range"},
      {"[run]\nseed = -1\n", ":2:", "seed = '-1'", "not an unsigned integer"},
      {"[train]\nepochs =\n", ":2:", "epochs", "empty value for train.epochs"},
      /* doubles */
      {"[optim]\nlr = fast\n", ":2:", "[optim] lr = 'fast'", "not a number"},
      {"[optim]\nlr = 0.1x\n", ":2:", "lr", "not a number"},
      {"[optim]\nlr = 0,1\n", ":2:", "lr", "not a number"},
      {"[optim]\nlr = 0.1 # comment\n", ":2:", "lr", "not a number"},
      {"[optim]\nlr = nan\n", ":2:", "lr = 'nan'", "not a finite number"},
      {"[optim]\nlr = inf\n", ":2:", "lr = 'inf'", "not a finite number"},
      {"[optim]\nmomentum = -Infinity\n", ":2:", "momentum", "not a finite number"},
      {"[optim]\nlr = 1e999\n", ":2:", "lr = '1e999'", "out of range"},
      /* bools */
      {"[model]\nbatchnorm = maybe\n", ":2:", "batchnorm = 'maybe'", "not a bool"},
      {"[model]\nbatchnorm = 2\n", ":2:", "batchnorm", "not a bool"},
      /* enums (case-sensitive) */
      {"[optim]\nschedule = linear\n", ":2:", "schedule = 'linear'", "const|step|cosine"},
      {"[optim]\nschedule = Cosine\n", ":2:", "schedule", "not one of"},
      {"[data]\nformat = hdf5\n", ":2:", "format", "auto|idx|csv|h5"},
      {"[model]\ninit = glorot\n", ":2:", "init", "he|xavier"},
      /* strings */
      {longname, ":2:", "[run] name", "too long"},
      {"[run]\nname = \"quoted\"\n", ":2:", "name", "not quoted"},
      /* csv_delim */
      {"[data]\ncsv_delim = ab\n", ":2:", "csv_delim = 'ab'", "one printable character"},
      {"[data]\ncsv_delim = ;\n", ":2:", "csv_delim", "semicolon"},
      /* syntax */
      {"[optim]\nlr = 1\nnoequals\n", ":3:", "syntax error", "noequals"},
      {"[optim\nlr = 1\n", ":1:", "syntax error", "[optim"},
      {"[optim]\nlr = 0.1\nmomentum = 0.5\nlr = 0.2\n",
       ":4:", "duplicate key 'lr' in section [optim]", "line 2"},
      {longline, ":2:", "line too long", NULL},
  };
  char name[64];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
    const bad_file *b = &cases[i];
    snprintf(name, sizeof name, "bad%02zu.ini", i);
    const char *path = write_ini(name, b->text);
    nest_config c;
    nest_config_defaults(&c);
    if (b->what2)
      EXPECT_ERR(nest_config_load(&c, path), NEST_ERR_CONFIG, name, b->where, b->what1, b->what2);
    else
      EXPECT_ERR(nest_config_load(&c, path), NEST_ERR_CONFIG, name, b->where, b->what1);
  }
}

static void test_comment_only_value(void **state) {
  (void)state;
  /* "key = ;x": ';' after a blank starts a comment, so the value is empty (inih's rule, kept). */
  nest_config c;
  nest_config_defaults(&c);
  EXPECT_OK(nest_config_load(&c, write_ini("cmt.ini", "[run]\nname = ;x\n")));
  assert_string_equal(c.name, "");
  EXPECT_ERR(nest_config_load(&c, write_ini("cmt2.ini", "[optim]\nlr = ; no value\n")),
             NEST_ERR_CONFIG, "cmt2.ini:2:", "empty value for optim.lr");
}

/* The reader's own rules, which the libinih-based loader pinned through options that only
 * Debian's libinih has (upstream inih fixes them at its build time): no continuation lines,
 * the line limit is ours and exact, the first error stops the parse, comments in headers. */
static void test_load_dialect(void **state) {
  (void)state;
  nest_config c;
  nest_config_defaults(&c);
  /* An indented key after a key is a key of its own, not a continuation of the value above
   * (inih's multi-line mode would read "lr = 0.5\n  momentum = 0.25" as one value). A
   * section header may carry an inline comment; the last line needs no line end. */
  EXPECT_OK(nest_config_load(&c, write_ini("indent.ini", "[optim] ; the optimizer\n"
                                                         "lr = 0.5\n"
                                                         "  momentum = 0.25\n"
                                                         "\t \r\n"
                                                         "[run]\n"
                                                         "\tname = a:b ; c ;d")));
  assert_true(c.lr == 0.5);
  assert_true(c.momentum == 0.25);
  assert_string_equal(c.name, "a:b");

  /* A line of exactly the limit (4094 bytes without its line end, CRLF or LF) is read whole;
   * one byte more is an error naming the file and line, never a split line. */
  enum { LIMIT = 4094 };
  static char text[2 * LIMIT + 64], expect[NEST_PATH_LEN];
  /* "run_dir = /ppp...p ;" padded with blanks so the line is exactly LIMIT bytes. */
  memset(expect, 'p', sizeof expect - 1);
  expect[0] = '/';
  expect[sizeof expect - 1] = '\0';
  int head = snprintf(text, sizeof text, "[run]\r\nrun_dir = %s", expect);
  int line_start = (int)strlen("[run]\r\n");
  int pad = LIMIT - (head - line_start);
  assert_true(pad > 2);
  memset(text + head, ' ', (size_t)pad - 2);
  memcpy(text + head + pad - 2, ";x\r\n", 5);
  assert_int_equal((int)(strchr(text + line_start, '\r') - (text + line_start)), LIMIT);
  nest_config_defaults(&c);
  EXPECT_OK(nest_config_load(&c, write_ini("limit.ini", text)));
  assert_string_equal(c.run_dir, expect);
  /* one more blank: too long, with LF or CRLF line ends */
  memcpy(text + head + pad - 2, " ;x\n", 5);
  EXPECT_ERR(nest_config_load(&c, write_ini("over.ini", text)), NEST_ERR_CONFIG, "over.ini:2:",
             "line too long (4095 bytes; the limit is 4094)");
  EXPECT_ERR(nest_config_load_text(&c, text, "over-text"), NEST_ERR_CONFIG, "over-text:2:",
             "line too long");

  /* The first error stops the parse: a later, different error is never the one reported. */
  EXPECT_ERR(nest_config_load(&c, write_ini("first.ini", "[optim]\nlr = x\nno equals\n[bad]\n")),
             NEST_ERR_CONFIG, "first.ini:2:", "lr = 'x'");
  EXPECT_ERR(nest_config_load(&c, write_ini("first2.ini", "[optim]\nno equals\nlr = x\n")),
             NEST_ERR_CONFIG, "first2.ini:2:", "syntax error", "no equals");

  const bad_file cases[] = {
      /* an inline comment inside a header hides its ']' */
      {"[run ; x]\n", ":1:", "syntax error", "[run ; x]"},
      /* a byte-order mark only counts at the start of the file */
      {"[run]\n\xEF\xBB\xBF" "name = x\n", ":2:", "unknown key", NULL},
      /* no-value lines are rejected, with or without a comment after them */
      {"[optim]\nnesterov\n", ":2:", "syntax error", "nesterov"},
      {"[optim]\nnesterov ; = 1\n", ":2:", "syntax error", NULL},
      /* ';' not after a blank is part of the value */
      {"[optim]\nlr = 0.1;x\n", ":2:", "lr = '0.1;x'", "not a number"},
      /* an empty key name */
      {"[optim]\n= 1\n", ":2:", "unknown key ''", NULL},
      /* a key name stops at the first ':' or '=' */
      {"[optim]\nl:r = 1\n", ":2:", "unknown key 'l'", NULL},
  };
  char name[64];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
    const bad_file *b = &cases[i];
    snprintf(name, sizeof name, "dialect%02zu.ini", i);
    nest_config_defaults(&c);
    if (b->what2)
      EXPECT_ERR(nest_config_load(&c, write_ini(name, b->text)), NEST_ERR_CONFIG, name, b->where,
                 b->what1, b->what2);
    else
      EXPECT_ERR(nest_config_load(&c, write_ini(name, b->text)), NEST_ERR_CONFIG, name, b->where,
                 b->what1);
  }
}

static void test_load_file_errors(void **state) {
  (void)state;
  nest_config c;
  nest_config_defaults(&c);
  const char *missing = nest_test_path(nest_test_tmpdir(), "does-not-exist.ini");
  EXPECT_ERR(nest_config_load(&c, missing), NEST_ERR_CONFIG, "does-not-exist.ini", "cannot open",
             "No such file");
  EXPECT_ERR(nest_config_load(&c, nest_test_tmpdir()), NEST_ERR_CONFIG, "cannot read");
  const char nul[] = "[run]\nname = a\0b\n";
  const char *path = nest_test_path(nest_test_tmpdir(), "nul.ini");
  assert_int_equal(nest_test_write_file(path, nul, sizeof nul - 1), 0);
  EXPECT_ERR(nest_config_load(&c, path), NEST_ERR_CONFIG, "nul.ini:2:", "NUL");
  assert_int_equal(nest_config_load(NULL, path), NEST_ERR_ARG);
  assert_int_equal(nest_config_load(&c, NULL), NEST_ERR_ARG);
}

/* ---- --set ---- */

static void test_set_overrides_file(void **state) {
  (void)state;
  const char *path =
      write_ini("base.ini", "[optim]\nlr = 0.1\nschedule = step\n[data]\ntrain = a\n");
  nest_config c;
  nest_config_defaults(&c);
  EXPECT_OK(nest_config_load(&c, path));
  EXPECT_OK(nest_config_set(&c, "optim.lr=0.2", "--set"));
  EXPECT_OK(nest_config_set(&c, "  optim . schedule =  const  ", "--set")); /* blanks ignored */
  EXPECT_OK(nest_config_set(&c, "data.train=", "--set")); /* strings may be set empty */
  EXPECT_OK(nest_config_set(&c, "optim.lr=0.4", NULL));   /* the later override wins */
  EXPECT_OK(nest_config_set(&c, "data.csv_delim=semicolon", "--set"));
  EXPECT_OK(nest_config_set(&c, "data.test=a=b", "--set")); /* split at the first '=' */
  assert_true(c.lr == 0.4);
  assert_string_equal(c.schedule, "const");
  assert_string_equal(c.train, "");
  assert_string_equal(c.csv_delim, ";");
  assert_string_equal(c.test, "a=b");
}

static void test_set_errors(void **state) {
  (void)state;
  nest_config c, d;
  nest_config_defaults(&c);
  d = c;
  EXPECT_ERR(nest_config_set(&c, "optim.lr", "--set"), NEST_ERR_CONFIG, "--set optim.lr",
             "expected section.key=value");
  EXPECT_ERR(nest_config_set(&c, "lr=0.1", "--set"), NEST_ERR_CONFIG, "lr=0.1",
             "expected section.key=value");
  EXPECT_ERR(nest_config_set(&c, "optim.lrr=0.1", "--set"), NEST_ERR_CONFIG,
             "--set optim.lrr=0.1: unknown key 'lrr' in section [optim]");
  EXPECT_ERR(nest_config_set(&c, "optm.lr=0.1", "--set"), NEST_ERR_CONFIG, "optm.lr=0.1",
             "unknown section [optm]");
  EXPECT_ERR(nest_config_set(&c, "optim.lr=", "--set"), NEST_ERR_CONFIG,
             "--set optim.lr=: empty value for optim.lr");
  EXPECT_ERR(nest_config_set(&c, "optim.lr=fast", "--set"), NEST_ERR_CONFIG,
             "--set optim.lr=fast: not a number");
  EXPECT_ERR(nest_config_set(&c, "train.epochs=1e3", "override"), NEST_ERR_CONFIG,
             "override train.epochs=1e3", "not an integer");
  EXPECT_ERR(nest_config_set(&c, "run.seed=-3", NULL), NEST_ERR_CONFIG, "--set run.seed=-3");
  EXPECT_ERR(nest_config_set(&c, "model.init=HE", "--set"), NEST_ERR_CONFIG, "model.init");
  /* strings an INI file could not hold verbatim are refused */
  EXPECT_ERR(nest_config_set(&c, "run.name=a ;b", "--set"), NEST_ERR_CONFIG, "run.name", "comment");
  EXPECT_ERR(nest_config_set(&c, "run.name=;b", "--set"), NEST_ERR_CONFIG, "run.name", "comment");
  EXPECT_ERR(nest_config_set(&c, "run.name=a\tb", "--set"), NEST_ERR_CONFIG, "run.name", "control");
  EXPECT_ERR(nest_config_set(&c, "run.name='x'", "--set"), NEST_ERR_CONFIG, "run.name", "quoted");
  char big[300];
  snprintf(big, sizeof big, "run.name=%0150d", 0);
  EXPECT_ERR(nest_config_set(&c, big, "--set"), NEST_ERR_CONFIG, "run.name", "too long");
  assert_memory_equal(&c, &d, sizeof c); /* failed overrides change nothing */
  assert_int_equal(nest_config_set(NULL, "optim.lr=1", "--set"), NEST_ERR_ARG);
  assert_int_equal(nest_config_set(&c, NULL, "--set"), NEST_ERR_ARG);
}

/* ---- write -> load round trip ---- */

static void test_round_trip(void **state) {
  (void)state;
  nest_config c, prev, back;
  nest_config_defaults(&c);
  for (size_t i = 0; i < NEVERY; ++i) {
    prev = c;
    EXPECT_OK(nest_config_set(&c, every_key[i], "--set"));
    if (memcmp(&prev, &c, sizeof c) == 0) {
      print_error("'%s' does not change the struct: pick a non-default value\n", every_key[i]);
      fail();
    }
  }
  /* awkward doubles, set directly */
  c.width = 1.0 / 3.0;
  c.min_lr = -0.0;
  c.dropout = 4.9406564584124654e-324; /* smallest subnormal */
  c.step_epochs = 1e300;

  const char *path = nest_test_path(nest_test_tmpdir(), "effective.ini");
  char pathcopy[1024];
  snprintf(pathcopy, sizeof pathcopy, "%s", path);
  EXPECT_OK(nest_config_write(&c, pathcopy));
  nest_config_defaults(&back);
  EXPECT_OK(nest_config_load(&back, pathcopy));
  assert_memory_equal(&c, &back, sizeof c);
  assert_true(signbit(back.min_lr));

  /* the tmp file is gone; every key is written once, after its comment */
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", pathcopy);
  assert_int_equal(access(tmp, F_OK), -1);
  FILE *f = fopen(pathcopy, "r");
  assert_non_null(f);
  char line[2048], prevline[2048] = "";
  size_t nkeys = 0, nsections = 0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '[')
      ++nsections;
    else if (line[0] != ';' && line[0] != '\n') {
      ++nkeys;
      assert_non_null(strstr(line, " ="));
      assert_true(prevline[0] == ';');
      assert_non_null(strstr(prevline, "(default: "));
    }
    snprintf(prevline, sizeof prevline, "%s", line);
  }
  fclose(f);
  assert_int_equal(nkeys, NEVERY);
  assert_int_equal(nsections, 12);

  /* overwriting an existing file works; defaults round-trip too */
  nest_config_defaults(&c);
  EXPECT_OK(nest_config_write(&c, pathcopy));
  back = c;
  back.lr = 99;
  EXPECT_OK(nest_config_load(&back, pathcopy));
  assert_memory_equal(&c, &back, sizeof c);
}

static void test_write_errors(void **state) {
  (void)state;
  nest_config c = valid_config();
  const char *dir = nest_test_tmpdir();
  EXPECT_ERR(nest_config_write(&c, nest_test_path(dir, "no/such/dir/x.ini")), NEST_ERR_IO,
             "no/such/dir/x.ini");
  /* values set by code that a file could not hold are refused, and nothing is written */
  char path[1024];
  snprintf(path, sizeof path, "%s", nest_test_path(dir, "refused.ini"));
  strcpy(c.name, "x ;y");
  EXPECT_ERR(nest_config_write(&c, path), NEST_ERR_CONFIG, "run.name");
  c = valid_config();
  strcpy(c.out_dir, " lead");
  EXPECT_ERR(nest_config_write(&c, path), NEST_ERR_CONFIG, "run.out_dir");
  c = valid_config();
  c.lr = NAN;
  EXPECT_ERR(nest_config_write(&c, path), NEST_ERR_CONFIG, "optim.lr");
  c = valid_config();
  c.nesterov = 2;
  EXPECT_ERR(nest_config_write(&c, path), NEST_ERR_CONFIG, "optim.nesterov");
  c = valid_config();
  memset(c.name, 'x', sizeof c.name); /* unterminated */
  EXPECT_ERR(nest_config_write(&c, path), NEST_ERR_CONFIG, "run.name");
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(nest_config_write(NULL, path), NEST_ERR_ARG);
}

/* ---- validate ---- */

#define BAD(stmt, ...)                                                                             \
  do {                                                                                             \
    nest_config c = valid_config();                                                                \
    stmt;                                                                                          \
    EXPECT_ERR(nest_config_validate(&c), NEST_ERR_CONFIG, __VA_ARGS__);                            \
  } while (0)
#define GOOD(stmt)                                                                                 \
  do {                                                                                             \
    nest_config c = valid_config();                                                                \
    stmt;                                                                                          \
    EXPECT_OK(nest_config_validate(&c));                                                           \
  } while (0)

static void test_validate_rules(void **state) {
  (void)state;
  GOOD((void)0);
  BAD(c.train[0] = '\0', "data.train is required");
  BAD(c.density = 0, "model.density", "(0, 1]");
  BAD(c.density = 1.5, "model.density = 1.5", "(0, 1]");
  GOOD(c.density = 1);
  BAD(c.width = 0, "model.width");
  BAD(c.width = -1, "model.width");
  BAD(c.batch = 0, "train.batch");
  GOOD(c.batch = 1);
  BAD(c.epochs = -1, "train.epochs");
  GOOD(c.epochs = 0);
  BAD(c.val_split = 1, "data.val_split", "[0, 1)");
  BAD(c.val_split = -0.1, "data.val_split");
  GOOD(c.val_split = 0);
  /* data.test_split holds out part of data.train: only without a test file */
  BAD((strcpy(c.test, "t10k.idx"), c.test_split = 0.2), "data.test_split = 0.2",
      "0 when data.test names a test file");
  GOOD((c.test[0] = '\0', c.test_split = 0.2));
  BAD(c.test_split = 1, "data.test_split", "[0, 1)");
  BAD(c.lr = 0, "optim.lr");
  BAD(c.lr = -1, "optim.lr");
  BAD(c.momentum = 1, "optim.momentum");
  BAD(c.momentum = -0.1, "optim.momentum");
  GOOD(c.momentum = 0);
  BAD(c.weight_decay = -1e-4, "optim.weight_decay");
  GOOD(c.weight_decay = 0);
  BAD(c.threads = -1, "run.threads");
  BAD(c.eval_every = 0, "train.eval_every");
  BAD(c.dropout = 1, "model.dropout");
  BAD(c.dropout = -0.5, "model.dropout");
  BAD(c.warmup_epochs = -1, "optim.warmup_epochs");
  BAD((strcpy(c.schedule, "step"), c.step_epochs = 0), "optim.step_epochs", "step");
  GOOD(c.step_epochs = 0); /* only matters for the step schedule */
  BAD(c.step_gamma = 0, "optim.step_gamma");
  BAD(c.step_gamma = 1.5, "optim.step_gamma");
  GOOD(c.step_gamma = 1);
  BAD(c.min_lr = -1, "optim.min_lr");
  BAD(c.log_every = -1, "run.log_every");
  BAD(c.hash_every = -1, "run.hash_every");
  BAD(c.csv_label_col = -2, "data.csv_label_col");
  GOOD(c.csv_label_col = -1);
  BAD(c.max_train = -1, "data.max_train");
  BAD(c.max_test = -1, "data.max_test");
  /* fields set by code to values no file could give */
  BAD(c.lr = NAN, "optim.lr");
  BAD(c.width = INFINITY, "model.width");
  BAD(c.batchnorm = 2, "model.batchnorm");
  BAD(strcpy(c.schedule, "linear"), "optim.schedule");
  BAD(strcpy(c.csv_delim, "ab"), "data.csv_delim");
  BAD(memset(c.train, 'x', sizeof c.train), "data.train");
  assert_int_equal(nest_config_validate(NULL), NEST_ERR_ARG);
}

static void test_validate_arch(void **state) {
  (void)state;
  static const char *const good[] = {"lenet300", "lenet5",          "alexnet",
                                     "vgg16",    "mlp:784-10",      "mlp:784-300-100-10",
                                     "mlp:1-1",  "mlp:2147483647-1"};
  static const char *const bad[] = {"",
                                    "lenet",
                                    "LeNet300",
                                    "vgg19",
                                    "mlp",
                                    "mlp:",
                                    "mlp:784",
                                    "mlp:784-",
                                    "mlp:-784-10",
                                    "mlp:784--10",
                                    "mlp:784-0-10",
                                    "mlp:784-x-10",
                                    "mlp:784-10 ",
                                    "mlp:+784-10",
                                    "mlp:2147483648-10",
                                    "mlp 784-10"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; ++i) GOOD(strcpy(c.arch, good[i]));
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) BAD(strcpy(c.arch, bad[i]), "model.arch");
}

static void test_validate_widths(void **state) {
  (void)state;
  /* model.widths: one base width per hidden conv / dense layer of model.arch */
  GOOD((strcpy(c.arch, "alexnet"), strcpy(c.widths, "60,140,240,210,160,3200,1600")));
  GOOD((strcpy(c.arch, "vgg16"),
        strcpy(c.widths, "48,48,96,96,192,192,192,384,384,384,384,384,384,3200,1600")));
  GOOD((strcpy(c.arch, "lenet5"), strcpy(c.widths, "1,65536,7")));
  GOOD((strcpy(c.arch, "mlp:784-300-100-10"), strcpy(c.widths, "30,10")));
  GOOD((strcpy(c.arch, "mlp:784-10"), strcpy(c.widths, ""))); /* empty: the arch's own */
  /* the one comma-list parser: blanks around entries are ignored (issue 14) */
  GOOD((strcpy(c.arch, "lenet300"), strcpy(c.widths, "300, 100")));
  GOOD((strcpy(c.arch, "lenet300"), strcpy(c.widths, "300 ,100")));
  BAD((strcpy(c.arch, "alexnet"), strcpy(c.widths, "60,140,240,210,160,3200")), "model.widths",
      "6 entries", "alexnet has 7 hidden");
  BAD((strcpy(c.arch, "lenet300"), strcpy(c.widths, "300,100,10")), "3 entries", "has 2");
  BAD((strcpy(c.arch, "mlp:784-10"), strcpy(c.widths, "5")), "1 entries", "has 0");
  static const char *const bad[] = {"0,100",    "3e2,100",  "-300,100", "300,65537",
                                    "300;100",  "300 100",  "99999999999999,1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i)
    BAD((strcpy(c.arch, "lenet300"), strcpy(c.widths, bad[i])), "model.widths",
        "not an integer in [1, 65536]");
  static const char *const empty_item[] = {"300,", ",300", "300,,100", "300, ,100"};
  for (size_t i = 0; i < sizeof empty_item / sizeof empty_item[0]; ++i)
    BAD((strcpy(c.arch, "lenet300"), strcpy(c.widths, empty_item[i])), "model.widths",
        "empty item");
  /* a file and --set give it like any string key */
  nest_config c = valid_config();
  EXPECT_OK(nest_config_load(&c, write_ini("widths.ini", "[model]\narch = alexnet\n"
                                                         "widths = 60,140,240,210,160,3200,1600 ; NeST\n")));
  assert_string_equal(c.widths, "60,140,240,210,160,3200,1600");
  EXPECT_OK(nest_config_validate(&c));
  /* a file may write the list with blanks after the commas */
  c = valid_config();
  EXPECT_OK(nest_config_load(&c, write_ini("widths2.ini", "[model]\nwidths = 300, 100\n")));
  assert_string_equal(c.widths, "300, 100");
  EXPECT_OK(nest_config_validate(&c));
}

/* Every list-valued key takes blanks around its items (the one comma-list parser, list.h) and
 * refuses an empty item naming the key (issue 14: "grow.policy = conn, neuron" failed with
 * "unknown policy ' neuron'", "grow.layers = fc1, fc2" with "no layer ' fc2'"). What the items
 * name is the business of the modules that use them, so any words pass here. */
static void test_list_keys(void **state) {
  (void)state;
  static const struct {
    const char *key, *spaced;
  } lists[] = {{"synthesis.phases", "grow, train ,prune"}, {"grow.policy", "conn, neuron"},
               {"grow.layers", "fc1, fc2"},               {"prune.layers", " fc1 ,  fc2"},
               {"data.csv_drop_cols", "0, 3, 17"},         {"model.widths", "300, 100"}};
  for (size_t i = 0; i < sizeof lists / sizeof lists[0]; ++i) {
    char a[256];
    nest_config c = valid_config();
    snprintf(a, sizeof a, "%s=%s", lists[i].key, lists[i].spaced);
    EXPECT_OK(nest_config_set(&c, a, "--set"));
    EXPECT_OK(nest_config_validate(&c));
    static const char *const bad[] = {"a,,b", "a,", ",a", "a, ,b"};
    for (size_t j = 0; j < sizeof bad / sizeof bad[0]; ++j) {
      c = valid_config();
      snprintf(a, sizeof a, "%s=%s", lists[i].key, bad[j]);
      EXPECT_OK(nest_config_set(&c, a, "--set"));
      EXPECT_ERR(nest_config_validate(&c), NEST_ERR_CONFIG, lists[i].key, "empty item");
    }
  }
  /* written back as given, and read back the same */
  nest_config c = valid_config(), back;
  EXPECT_OK(nest_config_set(&c, "grow.layers=fc1, fc2", "--set"));
  char path[1024];
  snprintf(path, sizeof path, "%s", nest_test_path(nest_test_tmpdir(), "lists.ini"));
  EXPECT_OK(nest_config_write(&c, path));
  nest_config_defaults(&back);
  EXPECT_OK(nest_config_load(&back, path));
  assert_string_equal(back.grow_layers, "fc1, fc2");
}

/* Config parsing knows no policy names (config.c is below the policies): an unknown one passes
 * here and is refused by the pipeline (nest_policy_check_list, test_policies). */
static void test_policy_names_not_checked_here(void **state) {
  (void)state;
  nest_config c = valid_config();
  EXPECT_OK(nest_config_set(&c, "grow.policy=conn,sprout", "--set"));
  EXPECT_OK(nest_config_validate(&c));
}

/* The size limit (issue 14): --set model.widths=65536,65536 --set model.width=64 ended in
 * "out of memory allocating 70382098841664 bytes for parameter arena" naming neither key. */
static void test_model_size_limit(void **state) {
  (void)state;
  BAD((strcpy(c.widths, "65536,65536"), c.width = 64), "model.widths = 65536,65536",
      "model.width = 64", "2147483647");
  BAD(strcpy(c.arch, "mlp:784-100000-100000-10"), "model.arch = mlp:784-100000-100000-10",
      "2147483647");
  GOOD(strcpy(c.arch, "mlp:784-40000-40000-10")); /* 1.6e9 weights */
  GOOD((strcpy(c.widths, "65536,16384"), c.width = 1)); /* 1.07e9 */
}

/* ---- valid ranges of the numeric keys (issue 7) ---- */

/* The three reports: a width of 1e300 trained a net of 1-unit layers, 1.5e8 wrapped to a
 * negative channel count, a batch of 2^31-1 overflowed the trainer's int arithmetic. */
static void test_reported_out_of_range(void **state) {
  (void)state;
  nest_config c = valid_config();
  EXPECT_OK(nest_config_set(&c, "model.width=1e300", "--set"));
  EXPECT_ERR(nest_config_validate(&c), NEST_ERR_CONFIG, "model.width = 1e+300: must be in (0, 64]");
  c = valid_config();
  EXPECT_OK(nest_config_set(&c, "model.width=1.5e8", "--set"));
  EXPECT_ERR(nest_config_validate(&c), NEST_ERR_CONFIG,
             "model.width = 150000000: must be in (0, 64]");
  c = valid_config();
  EXPECT_OK(nest_config_set(&c, "train.batch=2147483647", "--set"));
  EXPECT_ERR(nest_config_validate(&c), NEST_ERR_CONFIG,
             "train.batch = 2147483647: must be in [1, 1048576]");
  /* Too large for the type: the parse error names the key and its range. */
  c = valid_config();
  EXPECT_ERR(nest_config_set(&c, "train.batch=99999999999", "--set"), NEST_ERR_CONFIG,
             "--set train.batch=99999999999: out of range (train.batch must be in [1, 1048576])");
  EXPECT_ERR(nest_config_load(&c, write_ini("bigbatch.ini", "[train]\nbatch = 99999999999\n")),
             NEST_ERR_CONFIG, "bigbatch.ini:2: [train] batch = '99999999999'",
             "train.batch must be in [1, 1048576]");
  EXPECT_ERR(nest_config_set(&c, "grow.max_weights=99999999999999999999", "--set"),
             NEST_ERR_CONFIG, "grow.max_weights must be in [0, 1000000000000]");
  EXPECT_ERR(nest_config_set(&c, "optim.lr=1e999", "--set"), NEST_ERR_CONFIG,
             "optim.lr must be in (0, 1000]");
  /* an mlp's hidden sizes x width: held to the model size limit (arch.h), which also keeps
   * every unit count inside an int */
  GOOD((strcpy(c.arch, "mlp:784-1000-10"), c.width = 64));
  BAD((strcpy(c.arch, "mlp:784-100000000-10"), c.width = 21.5), "model.width = 21.5",
      "mlp:784-100000000-10", "2147483647");
  GOOD((strcpy(c.arch, "mlp:2147483647-1"), c.width = 64)); /* input and output are not scaled */
}

/* Each numeric key, its field and its valid range (as the message prints it; '(' / ')' mark
 * an open end). Kept by hand, independently of src/config.c. */
typedef struct {
  const char *key;
  char type; /* 'i' int, 'l' int64, 'd' double */
  size_t off;
  double lo, hi;
  const char *range;
} range_case;

#define RI(k, f, lo, hi, r) {k, 'i', offsetof(nest_config, f), lo, hi, r}
#define RL(k, f, lo, hi, r) {k, 'l', offsetof(nest_config, f), lo, hi, r}
#define RD(k, f, lo, hi, r) {k, 'd', offsetof(nest_config, f), lo, hi, r}
static const range_case range_cases[] = {
    RI("run.threads", threads, 0, 1024, "[0, 1024]"),
    RI("run.log_every", log_every, 0, 1e9, "[0, 1000000000]"),
    RD("run.log_seconds", log_seconds, 0, 86400, "[0, 86400]"),
    RI("run.hash_every", hash_every, 0, 1e9, "[0, 1000000000]"),
    RD("data.val_split", val_split, 0, 1, "[0, 1)"),
    RD("data.test_split", test_split, 0, 1, "[0, 1)"),
    RI("data.csv_label_col", csv_label_col, -1, 1e6, "[-1, 1000000]"),
    RL("data.max_train", max_train, 0, 1e12, "[0, 1000000000000]"),
    RL("data.max_test", max_test, 0, 1e12, "[0, 1000000000000]"),
    RD("model.width", width, 0, 64, "(0, 64]"),
    RD("model.density", density, 0, 1, "(0, 1]"),
    RD("model.dropout", dropout, 0, 1, "[0, 1)"),
    RD("model.skip_density", skip_density, 0, 1, "[0, 1]"),
    RI("scann.iterations", scann_iterations, 0, 1e4, "[0, 10000]"),
    RI("scann.epochs", scann_epochs, 0, 1000, "[0, 1000]"),
    RD("scann.lr", scann_lr, 0, 1000, "[0, 1000]"),
    RD("scann.grow_percentile", scann_grow_percentile, 0, 100, "[0, 100)"),
    RD("scann.grow_cap", scann_grow_cap, 0, 1000, "[0, 1000]"),
    RD("scann.prune_quantile", scann_prune_quantile, 0, 1, "(0, 1)"),
    RI("scann.neurons", scann_neurons, 1, 1e4, "[1, 10000]"),
    RD("scann.split_noise", scann_split_noise, 0, 10, "[0, 10]"),
    RI("scann.prune_iterations", scann_prune_iterations, 0, 1e4, "[0, 10000]"),
    RD("scann.keep_tolerance", scann_keep_tolerance, 0, 1, "[0, 1]"),
    RI("dr.k", dr_k, 0, 1e6, "[0, 1000000]"),
    RD("dr.ratio", dr_ratio, 0, 1e6, "[0, 1000000]"),
    RI("dr.baseline_epochs", dr_baseline_epochs, 1, 1000, "[1, 1000]"),
    RD("augment.rotate", aug_rotate, 0, 180, "[0, 180]"),
    RD("augment.scale", aug_scale, 0, 1, "[0, 1)"),
    RD("augment.shear", aug_shear, 0, 1, "[0, 1)"),
    RD("augment.translate", aug_translate, 0, 1000, "[0, 1000]"),
    RI("augment.crop", aug_crop, 0, 65535, "[0, 65535]"),
    RI("train.epochs", epochs, 0, 1e5, "[0, 100000]"),
    RI("train.batch", batch, 1, 1048576, "[1, 1048576]"),
    RI("train.eval_every", eval_every, 1, 1e5, "[1, 100000]"),
    RD("train.bucket_mb", bucket_mb, 0, 4096, "[0, 4096]"),
    RD("optim.lr", lr, 0, 1000, "(0, 1000]"),
    RD("optim.momentum", momentum, 0, 1, "[0, 1)"),
    RD("optim.weight_decay", weight_decay, 0, 1, "[0, 1]"),
    RD("optim.warmup_epochs", warmup_epochs, 0, 1e5, "[0, 100000]"),
    RD("optim.step_epochs", step_epochs, 0, 1e5, "[0, 100000]"),
    RD("optim.step_gamma", step_gamma, 0, 1, "(0, 1]"),
    RD("optim.min_lr", min_lr, 0, 1000, "[0, 1000]"),
    RI("grow.iterations", grow_iterations, 0, 1e4, "[0, 10000]"),
    RI("grow.train_epochs", grow_train_epochs, 0, 1000, "[0, 1000]"),
    RD("grow.lr", grow_lr, 0, 1000, "[0, 1000]"),
    RD("grow.target_error", grow_target_error, 0, 1, "[0, 1)"),
    RL("grow.max_weights", grow_max_weights, 0, 1e12, "[0, 1000000000000]"),
    RI("grow.patience", grow_patience, 0, 1000, "[0, 1000]"),
    RD("grow.patience_z", grow_patience_z, 0, 100, "[0, 100]"),
    RI("grow.batches", grow_batches, 0, 1e6, "[0, 1000000]"),
    RI("grow.score_batch", grow_score_batch, 1, 1048576, "[1, 1048576]"),
    RD("grow.conn_ratio", grow_conn_ratio, 0, 1000, "(0, 1000]"),
    RL("grow.conn_count", grow_conn_count, 0, 1e12, "[0, 1000000000000]"),
    RD("grow.conn_lr", grow_conn_lr, 0, 1000, "(0, 1000]"),
    RD("grow.beta", grow_beta, 0, 1, "(0, 1]"),
    RD("grow.alpha", grow_alpha, 0, 1000, "(0, 1000]"),
    RI("grow.neurons", grow_neurons, 1, 1e4, "[1, 10000]"),
    RI("grow.fmaps", grow_fmaps, 1, 1000, "[1, 1000]"),
    RI("grow.fmap_candidates", grow_fmap_candidates, 1, 1000, "[1, 1000]"),
    RD("grow.capacity", grow_capacity, 0, 1, "(0, 1]"),
    RD("grow.top", grow_top, 0, 1, "(0, 1]"),
    RI("grow.tries", grow_tries, 1, 1e6, "[1, 1000000]"),
    RD("grow.set_zeta", grow_set_zeta, 0, 1, "(0, 1)"),
    RI("grow.rigl_dt", grow_rigl_dt, 1, 1e9, "[1, 1000000000]"),
    RD("grow.rigl_end", grow_rigl_end, 0, 1, "(0, 1]"),
    RD("grow.rigl_alpha", grow_rigl_alpha, 0, 1, "(0, 1)"),
    RD("prune.gamma", prune_gamma, 0, 1, "(0, 1)"),
    RD("prune.gamma_start", prune_gamma_start, 0, 1, "(0, 1)"),
    RI("prune.retrain_steps", prune_retrain_steps, 0, 1e6, "[0, 1000000]"),
    RI("prune.retries", prune_retries, 0, 100, "[0, 100]"),
    RD("prune.lr", prune_lr, 0, 1000, "(0, 1000]"),
    RD("prune.target_error", prune_target_error, 0, 1, "[0, 1)"),
    RD("prune.tolerance", prune_tolerance, 0, 1, "[0, 1]"),
    RD("prune.guard_z", prune_guard_z, 0, 100, "[0, 100]"),
    RD("prune.distill", prune_distill, 0, 1, "[0, 1]"),
    RD("prune.distill_temp", prune_distill_temp, 0, 100, "(0, 100]"),
    RD("prune.dropout", prune_dropout, -1, 1, "[-1, 1)"),
    RL("prune.target_weights", prune_target_weights, 0, 1e12, "[0, 1000000000000]"),
    RD("prune.floor", prune_floor, 0, 1, "[0, 1)"),
    RI("prune.iterations", prune_iterations, 0, 1e5, "[0, 100000]"),
    RD("prune.neuron_thresh", prune_neuron_thresh, 0, 1e6, "[0, 1000000]"),
    RI("prune.calib", prune_calib, 1, 1048576, "[1, 1048576]"),
    RD("prune.area_gamma", prune_area_gamma, 0, 1, "(0, 1)"),
    RD("prune.area_gamma_start", prune_area_gamma_start, 0, 1, "(0, 1)"),
    RD("prune.area_tolerance", prune_area_tolerance, 0, 1, "[0, 1]"),
    RI("prune.area_epochs", prune_area_epochs, -1, 1e5, "[-1, 100000]"),
    RI("prune.epochs", prune_epochs, 0, 1e5, "[0, 100000]"),
    RI("checkpoint.every_steps", ck_every_steps, 0, 1e9, "[0, 1000000000]"),
    RD("checkpoint.every_minutes", ck_every_minutes, 0, 1e6, "[0, 1000000]"),
    RI("checkpoint.keep", ck_keep, 1, 1e6, "[1, 1000000]"),
};
#define NRANGE (sizeof range_cases / sizeof range_cases[0])

static const range_case *find_range_case(const char *key, size_t len) {
  for (size_t i = 0; i < NRANGE; ++i)
    if (strlen(range_cases[i].key) == len && strncmp(range_cases[i].key, key, len) == 0)
      return &range_cases[i];
  return NULL;
}

/* Store v in the case's field, as set by code. Values beyond the field's type are clamped
 * to it (they are tested as text through --set instead). */
static void put_value(nest_config *c, const range_case *r, double v) {
  char *f = (char *)c + r->off;
  if (r->type == 'i') {
    int x = v >= 2147483647.0 ? INT32_MAX : v <= -2147483648.0 ? INT32_MIN : (int)v;
    memcpy(f, &x, sizeof x);
  } else if (r->type == 'l') {
    int64_t x = v >= 9.2e18 ? INT64_MAX : v <= -9.2e18 ? INT64_MIN : (int64_t)v;
    memcpy(f, &x, sizeof x);
  } else {
    memcpy(f, &v, sizeof v);
  }
}

/* "key=value" with the value written exactly (integers as integers, doubles round-trip). */
static const char *assignment(const range_case *r, double v, char *buf, size_t n) {
  if (r->type != 'd' && isfinite(v))
    snprintf(buf, n, "%s=%.0f", r->key, v);
  else
    snprintf(buf, n, "%s=%.17g", r->key, v);
  return buf;
}

/* v is refused with a one-line message naming the key and its range: set by code (then
 * validate), and as --set text (refused either when parsed or by validate). */
static void expect_refused(const range_case *r, double v) {
  char msg_key[96], a[400];
  snprintf(msg_key, sizeof msg_key, "%s", r->key);
  nest_config c = valid_config();
  if (!strcmp(r->key, "optim.step_epochs")) strcpy(c.schedule, "cosine"); /* no cross-key rule */
  nest_config d = c;
  put_value(&c, r, v);
  nest_status st = nest_config_validate(&c);
  if (st != NEST_ERR_CONFIG || !strstr(nest_error_message(), msg_key) ||
      !strstr(nest_error_message(), r->range)) {
    print_error("%s = %.17g set by code: expected an error naming the key and %s, got %s: '%s'\n",
                r->key, v, r->range, nest_status_name(st), nest_error_message());
    fail();
  }
  c = d;
  assignment(r, v, a, sizeof a);
  st = nest_config_set(&c, a, "--set");
  if (st == NEST_OK) st = nest_config_validate(&c);
  if (st != NEST_ERR_CONFIG || !strstr(nest_error_message(), msg_key) ||
      !strstr(nest_error_message(), r->range) || strchr(nest_error_message(), '\n')) {
    print_error("--set %s: expected a one-line error naming the key and %s, got %s: '%s'\n", a,
                r->range, nest_status_name(st), nest_error_message());
    fail();
  }
}

static void expect_accepted(const range_case *r, double v) {
  char a[400];
  nest_config c = valid_config();
  assignment(r, v, a, sizeof a);
  nest_status st = nest_config_set(&c, a, "--set");
  if (st == NEST_OK) st = nest_config_validate(&c);
  if (st != NEST_OK) {
    print_error("--set %s: expected it to be accepted, got %s: '%s'\n", a, nest_status_name(st),
                nest_error_message());
    fail();
  }
}

static void test_every_numeric_key_has_a_range(void **state) {
  (void)state;
  for (size_t i = 0; i < NRANGE; ++i) {
    const range_case *r = &range_cases[i];
    const int lo_open = r->range[0] == '(', hi_open = r->range[strlen(r->range) - 1] == ')';
    /* just outside each end, and far outside */
    if (r->type == 'd') {
      expect_refused(r, lo_open ? r->lo : nextafter(r->lo, -INFINITY));
      expect_refused(r, hi_open ? r->hi : nextafter(r->hi, INFINITY));
      expect_refused(r, -1e300);
      expect_refused(r, 1e300);
      expect_refused(r, -DBL_MAX);
      expect_refused(r, NAN);
      expect_refused(r, INFINITY);
      expect_refused(r, -INFINITY);
      expect_accepted(r, lo_open ? nextafter(r->lo, INFINITY) : r->lo);
      expect_accepted(r, hi_open ? nextafter(r->hi, -INFINITY) : r->hi);
    } else {
      expect_refused(r, r->lo - 1);
      expect_refused(r, r->hi + 1);
      expect_refused(r, r->type == 'i' ? 2147483647.0 : 9223372036854775807.0);
      expect_refused(r, r->type == 'i' ? -2147483648.0 : -9223372036854775808.0);
      expect_refused(r, 1e20); /* beyond the type: refused when parsed */
      expect_refused(r, -1e20);
      expect_accepted(r, r->lo);
      expect_accepted(r, r->hi);
    }
  }
  /* Every numeric key of the table has a case here: a key that refuses "x" as not a number
   * is numeric. run.seed (uint64) takes every value of its type. */
  nest_config c = valid_config();
  size_t numeric = 0;
  for (size_t i = 0; i < NEVERY; ++i) {
    size_t kl = strcspn(every_key[i], "=");
    char a[96];
    snprintf(a, sizeof a, "%.*s=x", (int)kl, every_key[i]);
    if (nest_config_set(&c, a, "--set") == NEST_OK) continue;
    const char *m = nest_error_message();
    if (!strstr(m, "not an integer") && !strstr(m, "not a number") &&
        !strstr(m, "not an unsigned integer"))
      continue;
    ++numeric;
    if (strncmp(every_key[i], "run.seed=", 9) == 0) continue;
    if (!find_range_case(every_key[i], kl)) {
      print_error("numeric key %.*s has no range case in test_config.c\n", (int)kl, every_key[i]);
      fail();
    }
  }
  assert_int_equal(numeric, NRANGE + 1);
  c = valid_config();
  EXPECT_OK(nest_config_set(&c, "run.seed=0", "--set"));
  EXPECT_OK(nest_config_validate(&c));
  EXPECT_OK(nest_config_set(&c, "run.seed=18446744073709551615", "--set"));
  EXPECT_OK(nest_config_validate(&c));
}

/* docs/config.md lists the same range in each numeric key's row. */
static void test_docs_list_ranges(void **state) {
  (void)state;
  FILE *f = fopen(NEST_SOURCE_DIR "/docs/config.md", "r");
  assert_non_null(f);
  static char text[1 << 17];
  size_t len = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[len] = '\0';
  for (size_t i = 0; i < NRANGE; ++i) {
    char row[128];
    snprintf(row, sizeof row, "| `%s` |", range_cases[i].key);
    const char *p = strstr(text, row);
    if (!p) {
      print_error("docs/config.md has no row '%s'\n", row);
      fail();
    }
    size_t ll = strcspn(p, "\n");
    char line[1024];
    snprintf(line, sizeof line, "%.*s", (int)(ll < sizeof line ? ll : sizeof line - 1), p);
    if (!strstr(line, range_cases[i].range)) {
      print_error("docs/config.md row of %s lacks its range %s: %s\n", range_cases[i].key,
                  range_cases[i].range, line);
      fail();
    }
  }
}

/* Every key's row in docs/config.md has the table's type and default (as --help prints them)
 * and starts its meaning column with the table's meaning (as the written config's comment has
 * it, without the range and enum words the comment appends): the page cannot drift. */
static char *row_field(char *row, int field) { /* field 0 = key: "| `a` | b |" split on " | " */
  char *p = row + 2;
  for (int i = 0; i < field && p; ++i) {
    p = strstr(p, " | ");
    while (p && p[-1] == '\\') p = strstr(p + 1, " | "); /* "\|" is a | inside a cell */
    if (p) p += 3;
  }
  return p;
}

static void test_docs_rows_match_table(void **state) {
  (void)state;
  FILE *f = fopen(NEST_SOURCE_DIR "/docs/config.md", "r");
  assert_non_null(f);
  static char docs[1 << 17];
  docs[fread(docs, 1, sizeof docs - 1, f)] = '\0';
  fclose(f);
  char *help = nest_test_capture(nest_config_print_help);
  assert_non_null(help);
  nest_config c;
  nest_config_defaults(&c);
  char path[1024];
  snprintf(path, sizeof path, "%s", nest_test_path(nest_test_tmpdir(), "docs-check.ini"));
  EXPECT_OK(nest_config_write(&c, path));
  f = fopen(path, "r");
  assert_non_null(f);
  char line[2048], comment[2048] = "", section[64] = "";
  size_t rows = 0;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = '\0';
    if (line[0] == ';') {
      snprintf(comment, sizeof comment, "%s", line + 2);
      continue;
    }
    if (line[0] == '[') {
      snprintf(section, sizeof section, "%.*s", (int)strcspn(line + 1, "]"), line + 1);
      continue;
    }
    if (!line[0]) continue;
    char key[128], type[32], def[64], hrow[160], drow[160], want[320];
    snprintf(key, sizeof key, "%s.%.*s", section, (int)strcspn(line, " "), line);
    /* --help: "  key  TYPE  DEFAULT  meaning" */
    snprintf(hrow, sizeof hrow, "\n  %s ", key); /* at a line start, not in a meaning */
    const char *h = strstr(help, hrow);
    assert_non_null(h);
    assert_int_equal(sscanf(h, "%*s %31s %63s", type, def), 2);
    /* the meaning, without " (default: X)", "; one of: ...", "; in [a, b]" */
    char *m = strstr(comment, " (default: ");
    assert_non_null(m);
    *m = '\0';
    if ((m = strstr(comment, "; one of:"))) *m = '\0';
    if ((m = strstr(comment, "; in [")) || (m = strstr(comment, "; in ("))) *m = '\0';
    snprintf(drow, sizeof drow, "| `%s` |", key);
    char *r = strstr(docs, drow);
    if (!r) fail_msg("docs/config.md has no row for %s", key);
    char row[2048];
    snprintf(row, sizeof row, "%.*s", (int)strcspn(r, "\n"), r);
    snprintf(want, sizeof want, "| `%s` | %s | `%s` | ", key, type, def);
    if (strncmp(row, want, strlen(want)) != 0)
      fail_msg("docs/config.md row of %s: want type and default '%s', got: %s", key, want, row);
    char mean[2048], *cell = row_field(row, 4);
    assert_non_null(cell);
    size_t k = 0; /* unescape "\|" */
    for (; *cell && k + 1 < sizeof mean; ++cell)
      if (!(cell[0] == '\\' && cell[1] == '|')) mean[k++] = *cell;
    mean[k] = '\0';
    if (strncmp(mean, comment, strlen(comment)) != 0)
      fail_msg("docs/config.md row of %s: the meaning should start with '%s', got '%s'", key,
               comment, mean);
    ++rows;
  }
  fclose(f);
  free(help);
  assert_int_equal(rows, NEVERY);
}

/* ---- help ---- */

/* Every shipped config (inputs/NAME.ini) loads and validates: a misspelt key or a value out of
 * range in a file users run as it is would otherwise show only when they run it. */
static void test_shipped_configs_load(void **state) {
  (void)state;
  char dirpath[1024];
  snprintf(dirpath, sizeof dirpath, "%s/inputs", NEST_SOURCE_DIR);
  DIR *d = opendir(dirpath);
  assert_non_null(d);
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    const size_t len = strlen(e->d_name);
    if (len < 5 || strcmp(e->d_name + len - 4, ".ini") != 0) continue;
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dirpath, e->d_name);
    nest_config c;
    nest_config_defaults(&c);
    if (nest_config_load(&c, path) != NEST_OK || nest_config_validate(&c) != NEST_OK)
      fail_msg("%s: %s", path, nest_error_message());
    ++n;
  }
  closedir(d);
  printf("%d shipped configs load and validate\n", n);
  assert_true(n >= 10);
}

static void test_help_mentions_every_key(void **state) {
  (void)state;
  char *text = nest_test_capture(nest_config_print_help);
  assert_non_null(text);
  for (size_t i = 0; i < NEVERY; ++i) {
    char key[64];
    size_t kl = strcspn(every_key[i], "=");
    snprintf(key, sizeof key, "  %.*s ", (int)kl, every_key[i]);
    if (!strstr(text, key)) {
      print_error("help lacks '%s'\n", key);
      fail();
    }
  }
  static const char *const words[] = {
      "const", "step",   "cosine",  "he",      "xavier",  "auto",     "idx",     "csv",  "h5",
      "[run]", "[data]", "[model]", "[train]", "[optim]", "[grow]", "lenet300", "outputs", "5e-4", "uint64"};
  for (size_t i = 0; i < sizeof words / sizeof words[0]; ++i)
    assert_non_null(strstr(text, words[i]));
  /* prune.epochs fine-tunes with a cosine from prune.lr, not the optim schedule (issue 14) */
  const char *pe = strstr(text, "  prune.epochs ");
  assert_non_null(pe);
  char row[512];
  snprintf(row, sizeof row, "%.*s", (int)strcspn(pe, "["), pe); /* up to the next section */
  for (char *p = row; *p; ++p)
    if (*p == '\n' || *p == ' ') *p = ' ';
  if (!strstr(row, "cosine") || !strstr(row, "prune.lr") || strstr(row, "(optim schedule)"))
    fail_msg("help of prune.epochs: %s", row);
  /* one line per key (plus wrapped continuations), and it fits an 80-column terminal */
  size_t nkeylines = 0;
  for (char *line = text; *line;) {
    size_t ll = strcspn(line, "\n");
    assert_true(ll <= 79);
    if (ll > 2 && line[0] == ' ' && line[1] == ' ' && line[2] != ' ' && strchr(line, '.') &&
        strncmp(line, "  KEY", 5) != 0)
      ++nkeylines;
    line += ll + (line[ll] == '\n');
  }
  assert_int_equal(nkeylines, NEVERY);
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_load_every_type),
      cmocka_unit_test(test_load_over_current_values),
      cmocka_unit_test(test_load_error_leaves_config_unchanged),
      cmocka_unit_test(test_long_values),
      cmocka_unit_test(test_load_errors),
      cmocka_unit_test(test_comment_only_value),
      cmocka_unit_test(test_load_dialect),
      cmocka_unit_test(test_load_file_errors),
      cmocka_unit_test(test_set_overrides_file),
      cmocka_unit_test(test_set_errors),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_write_errors),
      cmocka_unit_test(test_validate_rules),
      cmocka_unit_test(test_validate_arch),
      cmocka_unit_test(test_validate_widths),
      cmocka_unit_test(test_list_keys),
      cmocka_unit_test(test_policy_names_not_checked_here),
      cmocka_unit_test(test_model_size_limit),
      cmocka_unit_test(test_reported_out_of_range),
      cmocka_unit_test(test_every_numeric_key_has_a_range),
      cmocka_unit_test(test_docs_list_ranges),
      cmocka_unit_test(test_docs_rows_match_table),
      cmocka_unit_test(test_help_mentions_every_key),
      cmocka_unit_test(test_shipped_configs_load),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
