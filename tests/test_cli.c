/* test_cli.c — the nest_mpi command line: CONFIG.ini [--set section.key=value ...] [--help].
 * Usage errors are NEST_ERR_ARG; problems in the file or an override are NEST_ERR_CONFIG; the
 * order is defaults < file < --set (in command-line order), then validation. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nest/config.h"
#include "test_util.h"

static char config_path[1024]; /* a valid config: [data] train, [optim] lr = 0.1 */
static char broken_path[1024]; /* a config with a bad value */
/* a valid config "-dashed.ini" in the tmpdir, which setup makes the working directory */

static int setup(void **state) {
  (void)state;
  const char *dir = nest_test_tmpdir();
  const char *ok = "[data]\ntrain = train.csv\n[optim]\nlr = 0.1\nschedule = step\n";
  snprintf(config_path, sizeof config_path, "%s", nest_test_path(dir, "run.ini"));
  snprintf(broken_path, sizeof broken_path, "%s", nest_test_path(dir, "broken.ini"));
  const char *bad = "[data]\ntrain = train.csv\n[train]\nepochs = many\n";
  if (nest_test_write_file(config_path, ok, strlen(ok)) ||
      nest_test_write_file(broken_path, bad, strlen(bad)) ||
      nest_test_write_file(nest_test_path(dir, "-dashed.ini"), ok, strlen(ok)) || chdir(dir))
    return -1;
  return 0;
}

/* Run nest_cli_parse on a NULL-terminated argument list (argv[0] = "nest_mpi"). */
#define MAXARGS 16
static nest_status run_cli(nest_config *c, int *help, const char *const *args) {
  char *argv[MAXARGS + 2];
  int argc = 0;
  argv[argc++] = "nest_mpi";
  for (; *args && argc <= MAXARGS; ++args) argv[argc++] = (char *)*args;
  argv[argc] = NULL;
  return nest_cli_parse(argc, argv, c, help);
}
#define CLI(c, help, ...) run_cli((c), (help), (const char *const[]){__VA_ARGS__, NULL})
#define CLI0(c, help) run_cli((c), (help), (const char *const[]){NULL})

static void expect(nest_status st, nest_status code, const char *sub, const char *file, int line) {
  const char *msg = nest_error_message();
  if (st != code || (sub && !strstr(msg, sub))) {
    print_error("%s:%d: expected %s with '%s', got %s: '%s'\n", file, line, nest_status_name(code),
                sub ? sub : "", nest_status_name(st), msg);
    _fail(file, line);
  }
}
#define EXPECT(st, code, sub) expect((st), (code), (sub), __FILE__, __LINE__)

static void test_help(void **state) {
  (void)state;
  nest_config c;
  int help = 0;
  EXPECT(CLI(&c, &help, "--help"), NEST_OK, NULL);
  assert_int_equal(help, 1);
  help = 0;
  EXPECT(CLI(&c, &help, "-h"), NEST_OK, NULL);
  assert_int_equal(help, 1);
  /* --help wins over a broken config, unknown options and a missing --set value */
  help = 0;
  EXPECT(CLI(&c, &help, broken_path, "--bogus", "--help", "--set"), NEST_OK, NULL);
  assert_int_equal(help, 1);
  help = 0;
  EXPECT(CLI(&c, &help, "nonexistent.ini", "-h"), NEST_OK, NULL);
  assert_int_equal(help, 1);
}

static void test_usage_errors(void **state) {
  (void)state;
  nest_config c;
  int help = 7;
  EXPECT(CLI0(&c, &help), NEST_ERR_ARG, "missing CONFIG.ini");
  assert_int_equal(help, 0);
  EXPECT(CLI(&c, &help, "--set", "optim.lr=0.1"), NEST_ERR_ARG, "missing CONFIG.ini");
  EXPECT(CLI(&c, &help, config_path, config_path), NEST_ERR_ARG, "more than one config file");
  EXPECT(CLI(&c, &help, "a.ini", "b.ini"), NEST_ERR_ARG, "'a.ini' and 'b.ini'");
  EXPECT(CLI(&c, &help, config_path, "--foo"), NEST_ERR_ARG, "unknown option '--foo' (see --help)");
  EXPECT(CLI(&c, &help, "-x", config_path), NEST_ERR_ARG, "unknown option '-x'");
  EXPECT(CLI(&c, &help, config_path, "--setx=a.b=c"), NEST_ERR_ARG,
         "unknown option '--setx=a.b=c'");
  EXPECT(CLI(&c, &help, config_path, "--set"), NEST_ERR_ARG, "missing value after --set");
  EXPECT(CLI(&c, &help, config_path, "--set", ""), NEST_ERR_ARG, "missing value after --set");
  EXPECT(CLI(&c, &help, config_path, "--set="), NEST_ERR_ARG, "missing value after --set");
  /* usage errors are found before the (nonexistent) file would be opened */
  EXPECT(CLI(&c, &help, "nonexistent.ini", "--foo"), NEST_ERR_ARG, "--foo");
  assert_int_equal(nest_cli_parse(1, NULL, &c, &help), NEST_ERR_ARG);
}

static void test_config_and_overrides(void **state) {
  (void)state;
  nest_config c;
  int help = 1;
  memset(&c, 0xAB, sizeof c); /* the CLI starts from the defaults, whatever *c held */
  EXPECT(CLI(&c, &help, config_path), NEST_OK, NULL);
  assert_int_equal(help, 0);
  assert_string_equal(c.train, "train.csv");
  assert_true(c.lr == 0.1);
  assert_int_equal(c.epochs, 20);
  assert_string_equal(c.out_dir, "outputs");

  /* both --set forms; overrides come after the file wherever they appear; later wins */
  EXPECT(CLI(&c, &help, "--set", "optim.lr=0.2", config_path, "--set=train.epochs=3", "--set",
             "optim.lr=0.3", "--set=data.test=t=1.csv"),
         NEST_OK, NULL);
  assert_true(c.lr == 0.3);
  assert_int_equal(c.epochs, 3);
  assert_string_equal(c.test, "t=1.csv");
  assert_string_equal(c.schedule, "step"); /* from the file, untouched */

  /* after "--", everything is a file name */
  EXPECT(CLI(&c, &help, "-dashed.ini"), NEST_ERR_ARG, "unknown option '-dashed.ini'");
  EXPECT(CLI(&c, &help, "--", "-dashed.ini"), NEST_OK, NULL);
  assert_string_equal(c.train, "train.csv");
  EXPECT(CLI(&c, &help, "--set=optim.lr=0.5", "--", "-dashed.ini"), NEST_OK, NULL);
  assert_true(c.lr == 0.5);
  EXPECT(CLI(&c, &help, config_path, "--", "--set"), NEST_ERR_ARG, "more than one config file");
}

static void test_config_errors(void **state) {
  (void)state;
  nest_config c;
  int help;
  EXPECT(CLI(&c, &help, broken_path), NEST_ERR_CONFIG, "broken.ini:4:");
  EXPECT(CLI(&c, &help, broken_path), NEST_ERR_CONFIG, "epochs");
  EXPECT(CLI(&c, &help, "nonexistent.ini"), NEST_ERR_CONFIG, "nonexistent.ini: cannot open");
  EXPECT(CLI(&c, &help, config_path, "--set", "optim.lrr=1"), NEST_ERR_CONFIG,
         "--set optim.lrr=1: unknown key 'lrr' in section [optim]");
  EXPECT(CLI(&c, &help, config_path, "--set=optim.lr"), NEST_ERR_CONFIG,
         "expected section.key=value");
  EXPECT(CLI(&c, &help, config_path, "--set", "optim.lr="), NEST_ERR_CONFIG,
         "empty value for optim.lr");
  /* validation runs last: on the file plus overrides */
  EXPECT(CLI(&c, &help, config_path, "--set", "data.train="), NEST_ERR_CONFIG,
         "data.train is required");
  EXPECT(CLI(&c, &help, config_path, "--set", "model.density=1.5"), NEST_ERR_CONFIG,
         "model.density");
  EXPECT(CLI(&c, &help, config_path, "--set", "optim.step_epochs=0"), NEST_ERR_CONFIG,
         "optim.step_epochs");
  EXPECT(
      CLI(&c, &help, config_path, "--set", "optim.step_epochs=0", "--set", "optim.schedule=cosine"),
      NEST_OK, NULL);
}

/* Issue 7: out-of-range values from --set are errors naming the key and its valid range,
 * before anything is built (a width of 1e300 used to train 1-unit layers, 1.5e8 wrapped to
 * a negative channel count, a batch of 2^31-1 overflowed the trainer's int arithmetic). */
static void test_out_of_range_overrides(void **state) {
  (void)state;
  nest_config c;
  int help;
  EXPECT(CLI(&c, &help, config_path, "--set", "model.width=1e300"), NEST_ERR_CONFIG,
         "model.width = 1e+300: must be in (0, 64]");
  EXPECT(CLI(&c, &help, config_path, "--set", "model.width=1.5e8"), NEST_ERR_CONFIG,
         "model.width = 150000000: must be in (0, 64]");
  EXPECT(CLI(&c, &help, config_path, "--set=train.batch=2147483647"), NEST_ERR_CONFIG,
         "train.batch = 2147483647: must be in [1, 1048576]");
  EXPECT(CLI(&c, &help, config_path, "--set", "train.batch=99999999999"), NEST_ERR_CONFIG,
         "--set train.batch=99999999999: out of range (train.batch must be in [1, 1048576])");
  EXPECT(CLI(&c, &help, config_path, "--set", "model.width=nan"), NEST_ERR_CONFIG,
         "--set model.width=nan: not a finite number (model.width must be in (0, 64])");
  EXPECT(CLI(&c, &help, config_path, "--set", "optim.lr=-inf"), NEST_ERR_CONFIG,
         "optim.lr must be in (0, 1000]");
  /* the range applies to the final value: a later override may bring it back */
  EXPECT(CLI(&c, &help, config_path, "--set", "train.batch=2147483647", "--set", "train.batch=64"),
         NEST_OK, NULL);
  assert_int_equal(c.batch, 64);
  EXPECT(CLI(&c, &help, config_path, "--set", "train.batch=1048576", "--set", "model.width=64"),
         NEST_OK, NULL);
}

static void test_usage_text(void **state) {
  (void)state;
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  assert_non_null(f);
  nest_cli_print_usage(f, "nest_mpi");
  fclose(f);
  assert_non_null(strstr(text, "usage: nest_mpi CONFIG.ini"));
  assert_non_null(strstr(text, "--set section.key=value"));
  assert_non_null(strstr(text, "--help"));
  /* The intro names every section of the key table (it named 6 of 10): the sections are the
   * "[section]" lines of the key help. */
  char *help = nest_test_capture(nest_config_print_help);
  assert_non_null(help);
  int nsections = 0;
  for (const char *line = help; *line; line += strcspn(line, "\n") + (line[strcspn(line, "\n")] != 0)) {
    if (line[0] != '[') continue;
    char sec[64];
    snprintf(sec, sizeof sec, "%.*s", (int)strcspn(line, "\n"), line);
    ++nsections;
    if (!strstr(text, sec)) fail_msg("usage text lacks the section %s:\n%s", sec, text);
  }
  /* run data model augment synthesis train optim grow prune scann dr checkpoint */
  assert_int_equal(nsections, 12);
  free(help);
  free(text);
}

/* The size limit: the reported command line is a config error naming the keys, before any
 * data is read (it ended in "out of memory allocating 70382098841664 bytes for parameter
 * arena"). */
static void test_model_size_limit(void **state) {
  (void)state;
  nest_config c;
  int help = 0;
  EXPECT(CLI(&c, &help, config_path, "--set", "model.widths=65536,65536", "--set",
             "model.width=64"),
         NEST_ERR_CONFIG, "model.widths = 65536,65536");
  assert_non_null(strstr(nest_error_message(), "model.width = 64"));
  assert_non_null(strstr(nest_error_message(), "limit"));
  EXPECT(CLI(&c, &help, config_path, "--set", "model.widths=300, 100"), NEST_OK, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_help),
      cmocka_unit_test(test_usage_errors),
      cmocka_unit_test(test_config_and_overrides),
      cmocka_unit_test(test_config_errors),
      cmocka_unit_test(test_out_of_range_overrides),
      cmocka_unit_test(test_usage_text),
      cmocka_unit_test(test_model_size_limit),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
