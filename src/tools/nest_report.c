/* nest_report.c — print the model report of a run (report.h): per stage (seed, grown, final)
 * and per dense / conv layer the active weights, FLOPs, Act%, Conv% and compression versus the
 * dense base architecture, as a text or Markdown table, and write it as CSV.
 * Serial tool: no MPI.
 *
 *   nest_report outputs/lenet300-nest            table; writes outputs/lenet300-nest/report.csv
 *   nest_report outputs/run/model.h5 --csv r.csv one model file; CSV only when asked for
 *
 * Exit codes: 0 success, 1 data error (missing directory, no model file, not a model file,
 * corrupt file, CSV not writable), 2 usage error; every error is one line
 * "nest_report: error: ..." on stderr. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>

#include "nest/report.h"

static const char *usage_line = "usage: nest_report RUN_DIR_OR_MODEL [--csv PATH] [--markdown]\n";

static void print_help(void) {
  printf("%s", usage_line);
  printf("\nReport a nest run's networks (docs/model-format.md): for each stage present in a\n"
         "run directory (model_seed.h5, model_grown.h5, model.h5) or for one model file, and\n"
         "for each dense / conv layer: active weights, weight positions, density, FLOPs per\n"
         "inference with masks, FLOPs times the layer's non-zero input share (with Act%%),\n"
         "Act%%, Conv%%, and compression versus the dense base architecture (base_arch at\n"
         "width 1). One total row per stage.\n"
         "  --csv PATH    write the table as CSV to PATH (default for a run directory:\n"
         "                RUN_DIR/report.csv; for a single file: no CSV)\n"
         "  --markdown    print a Markdown table (for docs/results.md) instead of plain text\n"
         "  -h, --help    this help\n"
         "\nExit codes: 0 success, 1 file error, 2 usage error.\n"
         "\nExample:\n"
         "  nest_report outputs/lenet300-nest --markdown\n");
}

int main(int argc, char **argv) {
  const char *src = NULL, *csv = NULL;
  int markdown = 0, npos = 0, dashdash = 0;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    if (!dashdash && (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)) {
      print_help();
      return 0;
    }
    if (!dashdash && strcmp(a, "--") == 0) {
      dashdash = 1;
    } else if (!dashdash && strcmp(a, "--markdown") == 0) {
      markdown = 1;
    } else if (!dashdash && strcmp(a, "--csv") == 0) {
      if (i + 1 >= argc || !argv[i + 1][0]) {
        fprintf(stderr, "nest_report: error: --csv needs a file name (try --help)\n");
        return 2;
      }
      csv = argv[++i];
    } else if (!dashdash && strncmp(a, "--csv=", 6) == 0) {
      csv = a + 6;
      if (!*csv) {
        fprintf(stderr, "nest_report: error: --csv needs a file name (try --help)\n");
        return 2;
      }
    } else if (!dashdash && a[0] == '-' && a[1]) {
      fprintf(stderr, "nest_report: error: unknown option '%s' (try --help)\n", a);
      return 2;
    } else {
      if (npos++ == 0) src = a;
    }
  }
  if (npos != 1) {
    fprintf(stderr, "nest_report: error: expected one run directory or model file, got %d "
                    "(try --help)\n", npos);
    return 2;
  }

  nest_report *r = NULL;
  if (nest_report_create(src, &r) != NEST_OK) {
    /* The library message already starts with the file name. */
    fprintf(stderr, "nest_report: error: %s\n", nest_error_message());
    return 1;
  }
  char def[4200];
  if (!csv && r->is_dir) {
    const size_t n = strlen(src);
    if (snprintf(def, sizeof def, "%s%sreport.csv", src, n && src[n - 1] == '/' ? "" : "/") >=
        (int)sizeof def) {
      fprintf(stderr, "nest_report: error: %s: path too long\n", src);
      nest_report_destroy(&r);
      return 1;
    }
    csv = def;
  }
  nest_report_print(r, stdout, markdown);
  int rc = 0;
  if (csv) {
    if (nest_report_write_csv(r, csv) != NEST_OK) {
      fprintf(stderr, "nest_report: error: %s\n", nest_error_message());
      rc = 1;
    } else {
      /* stderr: stdout stays exactly the table, pasteable as it is. */
      fprintf(stderr, "nest_report: wrote %s\n", csv);
    }
  }
  nest_report_destroy(&r);
  return rc;
}
