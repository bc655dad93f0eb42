/* nest_plot.c — the NeST paper's figures for a run directory, drawn by gnuplot (PNG).
 * Serial tool: no MPI. It reads the run's files, writes one gnuplot script per figure with
 * the data inline (datablocks) and pipes it to gnuplot, which renders PNG.tmp; the PNG then
 * replaces OUT/NAME.png atomically (atomic.h). No pixel is drawn here.
 *
 *   nest_plot RUN_DIR [--out DIR] [--only LIST]        DIR default: RUN_DIR/plots
 *   nest_plot --sweep RUN_DIR... [--out DIR]            DIR default: PARENT/sweep-plots
 *
 * Figures (docs/plots.md):
 *   connections.png  active connections vs synthesis iteration (Fig. 8), from events.csv
 *   errors.png       validation / test error vs epoch, from metrics.csv
 *   density.png      share of first-layer units each input pixel feeds (Fig. 3), from the
 *                    first dense layer's mask in model_grown.h5 (and model.h5) when that layer
 *                    reads the image itself; skipped for a convolutional first layer
 *   area.png         the first conv layer's area-of-interest masks (Fig. 5), from model.h5
 *                    (a live run: from its newest checkpoint, a model file too)
 *   sweep_growth.png post-growth size and growth time vs seed width ratio r (Fig. 6)
 *   sweep_final.png  final size and pruning compression vs r (Fig. 7)
 * CSV columns are found by header name, so columns added later (a phase column in events.csv,
 * rows per pruning iteration in metrics.csv) or missing ones change nothing.
 *
 * Exit codes: 0 success (a figure whose inputs are absent is skipped with a one-line note;
 * without gnuplot nothing is drawn and a note says so), 1 a malformed input file, a model
 * that does not load, gnuplot failing or an output that cannot be written (one line
 * "nest_plot: error: <file>: <problem>" each; the other figures are still drawn), 2 usage. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nest/atomic.h"
#include "nest/model.h"
#include "nest/list.h"
#include "nest/net.h"
#include "nest/policy.h"
#include "nest/status.h"

#define PATH_CAP 4096
#define MAX_SEGS 32   /* phase segments drawn in one figure */
#define MAX_RUNS 1024 /* runs of a sweep */
#define AREA_MAX_MAPS 64
#define AREA_GAP_X 2 /* mask pixels between area tiles side by side */
#define AREA_GAP_Y 6 /* and between rows of tiles (room for the kernel labels) */

static const char *usage_line =
    "usage: nest_plot RUN_DIR [--out DIR] [--only LIST] [--script]\n"
    "       nest_plot --sweep RUN_DIR... [--out DIR] [--script]\n";

static void print_help(void) {
  printf("%s", usage_line);
  printf(
      "\nDraw the NeST paper's figures for a nest run as PNG files, through gnuplot\n"
      "(Debian: gnuplot-nox, installed by jobs/setup.sh). docs/plots.md shows each one.\n"
      "  connections.png  active connections vs synthesis iteration, growth then pruning\n"
      "                   (Fig. 8; events.csv)\n"
      "  errors.png       validation and test error vs epoch, phases marked (metrics.csv)\n"
      "  density.png      per input pixel, the share of first-layer units it feeds, after\n"
      "                   growth and at the end (Fig. 3; model_grown.h5, model.h5; only when\n"
      "                   the first weight layer is dense and reads the image)\n"
      "  area.png         the first conv layer's area-of-interest masks, one tile per kernel\n"
      "                   (Fig. 5; model.h5 of a run with partial-area convolution, or its\n"
      "                   newest checkpoint while it runs)\n"
      "With --sweep, from several runs of a width-ratio sweep (model.width = r):\n"
      "  sweep_growth.png post-growth size and growth time vs r (Fig. 6)\n"
      "  sweep_final.png  final size and pruning compression vs r (Fig. 7; pruned runs)\n"
      "Options:\n"
      "  --out DIR        where the PNGs go (created; default RUN_DIR/plots, with --sweep\n"
      "                   sweep-plots/ beside the first run directory)\n"
      "  --only LIST      comma-separated subset of connections, errors, density, area\n"
      "  --sweep          the arguments are the run directories of a sweep\n"
      "  --script         also write NAME.gp beside each NAME.png: the gnuplot script with\n"
      "                   its data, to restyle a figure (gnuplot NAME.gp redraws it)\n"
      "  -h, --help       this help\n"
      "Env: NEST_GNUPLOT (the gnuplot program; default gnuplot on PATH).\n"
      "A figure whose input files are absent is skipped with a note. Each PNG is written as\n"
      "NAME.png.tmp and renamed, so an existing plot is never left half-written.\n"
      "\nExit codes: 0 success (also when figures or gnuplot are missing), 1 a malformed\n"
      "input, a failed gnuplot or an unwritable output, 2 usage error.\n"
      "\nExamples:\n"
      "  nest_plot outputs/mnist_lenet300_nest-20250101-120000\n"
      "  nest_plot --sweep outputs/lenet300_width_sweep-job7_* --out docs/img\n");
}

static int nerrors; /* errors reported so far (exit code 1 at the end) */

static void report_error(const char *msg) {
  fprintf(stderr, "nest_plot: error: %s\n", msg);
  ++nerrors;
}

static void note_skip(const char *png, const char *why) {
  printf("nest_plot: skipped %s: %s\n", png, why);
}

static int file_exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static void join(char *buf, size_t cap, const char *dir, const char *name) {
  size_t n = strlen(dir);
  snprintf(buf, cap, "%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", name);
}

/* The last path component of a directory (for titles): "outputs/run/" -> "run". */
static void base_name(const char *dir, char *buf, size_t cap) {
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/') --n;
  size_t b = n;
  while (b > 0 && dir[b - 1] != '/') --b;
  snprintf(buf, cap, "%.*s", (int)(n - b), dir + b);
}

/* 12345 -> "12,345" (figure labels). */
static void fmt_count(double v, char *buf, size_t cap) {
  char raw[32];
  snprintf(raw, sizeof raw, "%.0f", v);
  size_t n = strlen(raw), o = 0, lead = raw[0] == '-';
  for (size_t i = 0; i < n && o + 2 < cap; ++i) {
    if (i > lead && (n - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = raw[i];
  }
  buf[o] = '\0';
}

/* ---- CSV tables read by header name ---------------------------------------------------- */

typedef struct {
  char path[PATH_CAP];
  char *buf;    /* the file, cut into NUL-terminated fields */
  int ncols;
  char **names; /* [ncols] header names */
  int nrows;
  char **cells; /* [nrows * ncols] */
} csv_table;

static void csv_free(csv_table *t) {
  free(t->buf);
  free(t->names);
  free(t->cells);
  memset(t, 0, sizeof *t);
}

static nest_status slurp(const char *path, char **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NEST_ERR(NEST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  size_t cap = 65536, n = 0, k;
  char *buf = malloc(cap + 1);
  while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
    n += k;
    if (n == cap) {
      char *b2 = realloc(buf, 2 * cap + 1);
      if (!b2) break;
      buf = b2;
      cap *= 2;
    }
  }
  const int bad = ferror(f) || !buf || n == cap;
  fclose(f);
  if (bad) {
    free(buf);
    return NEST_ERR(NEST_ERR_IO, "%s: cannot read", path);
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return NEST_OK;
}

/* Split one line (NUL-terminated, modified in place) at commas; a field may be quoted
 * ("a,b", "" for a quote). Blanks around fields are trimmed. Returns the field count; at most
 * `cap` fields are stored, more are counted. */
static int split_fields(char *line, char **f, int cap) {
  int n = 0;
  char *p = line;
  for (;;) {
    while (*p == ' ' || *p == '\t') ++p;
    char *start = p, *w = p;
    if (*p == '"') {
      start = w = ++p;
      while (*p && !(p[0] == '"' && p[1] != '"')) {
        if (p[0] == '"') ++p; /* "" -> " */
        *w++ = *p++;
      }
      if (*p == '"') ++p;
      while (*p && *p != ',') ++p;
    } else {
      while (*p && *p != ',') ++p;
      w = p;
      while (w > start && (w[-1] == ' ' || w[-1] == '\t')) --w;
    }
    const int more = *p == ',';
    *w = '\0';
    if (n < cap) f[n] = start;
    ++n;
    if (!more) break;
    ++p;
  }
  return n;
}

/* Read a CSV file: header line, then rows with exactly as many fields. A last line without
 * its newline and with too few fields is a row being written (a live run): left out. */
static nest_status csv_read(const char *path, csv_table *t) {
  memset(t, 0, sizeof *t);
  snprintf(t->path, sizeof t->path, "%s", path);
  size_t len = 0;
  NEST_CALL(slurp(path, &t->buf, &len));
  size_t nlines = 1;
  for (size_t i = 0; i < len; ++i) nlines += t->buf[i] == '\n';
  char **lines = calloc(nlines, sizeof *lines);
  if (!lines) return NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory", path);
  size_t nl = 0;
  for (char *p = t->buf; *p || p == t->buf;) {
    char *e = strchr(p, '\n');
    if (e) *e = '\0';
    if (e && e > p && e[-1] == '\r') e[-1] = '\0';
    lines[nl++] = p;
    if (!e) break;
    p = e + 1;
  }
  const int last_complete = len > 0 && t->buf[len - 1] == '\0'; /* ended with '\n' */
  nest_status st = NEST_OK;
  if (nl == 0 || lines[0][0] == '\0') {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: empty file (no header line)", path);
    goto done;
  }
  int commas = 0; /* an upper bound of the header's fields (a quoted name may hold one) */
  for (const char *c = lines[0]; *c; ++c) commas += *c == ',';
  t->names = calloc((size_t)commas + 1, sizeof *t->names);
  if (t->names) t->ncols = split_fields(lines[0], t->names, commas + 1);
  t->cells = t->names ? calloc((nl - 1) * (size_t)t->ncols + 1, sizeof *t->cells) : NULL;
  if (!t->names || !t->cells) {
    st = NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory", path);
    goto done;
  }
  for (size_t i = 1; i < nl; ++i) {
    if (lines[i][0] == '\0') continue;
    char **row = t->cells + (size_t)t->nrows * t->ncols;
    const int k = split_fields(lines[i], row, t->ncols);
    if (k < t->ncols && i == nl - 1 && !last_complete) break;
    if (k != t->ncols) {
      st = NEST_ERR(NEST_ERR_FORMAT, "%s: line %zu has %d fields, the header has %d", path,
                    i + 1, k, t->ncols);
      goto done;
    }
    ++t->nrows;
  }
done:
  free(lines);
  if (st != NEST_OK) csv_free(t);
  return st;
}

static int csv_col(const csv_table *t, const char *name) {
  for (int c = 0; c < t->ncols; ++c)
    if (strcmp(t->names[c], name) == 0) return c;
  return -1;
}

static const char *csv_cell(const csv_table *t, int row, int col) {
  return col < 0 ? "" : t->cells[(size_t)row * t->ncols + col];
}

/* The number in (row, col): NaN when the column is absent or the field empty; a field that is
 * not a number is NEST_ERR_FORMAT naming the file, line and column. */
static nest_status csv_num(const csv_table *t, int row, int col, double *v) {
  const char *s = csv_cell(t, row, col);
  *v = NAN;
  if (!*s) return NEST_OK;
  char *end;
  errno = 0;
  const double x = strtod(s, &end);
  if (end == s || *end) {
    return NEST_ERR(NEST_ERR_FORMAT, "%s: line %d, column '%s': '%s' is not a number", t->path,
                    row + 2, t->names[col], s);
  }
  *v = x;
  return NEST_OK;
}

/* ---- key = value files: summary.txt, config.ini ----------------------------------------- */

/* The value of `key` in section `section` ("" = any section) of a key = value file, copied to
 * out. 1 found, 0 not found, -1 unreadable (message set). A ';' after a blank starts a
 * comment (config.ini's syntax). */
static int kv_get(const char *path, const char *section, const char *key, char *out, size_t cap) {
  FILE *f = fopen(path, "r");
  if (!f) {
    NEST_ERR(NEST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  char line[4096], sec[128] = "";
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) {
    char *p = line;
    while (*p == ' ' || *p == '\t') ++p;
    p[strcspn(p, "\r\n")] = '\0';
    if (*p == '[') {
      snprintf(sec, sizeof sec, "%.*s", (int)strcspn(p + 1, "]"), p + 1);
      continue;
    }
    if (*p == ';' || *p == '#' || !*p) continue;
    char *eq = strchr(p, '=');
    if (!eq || (section[0] && strcmp(sec, section) != 0)) continue;
    char *ke = eq;
    while (ke > p && (ke[-1] == ' ' || ke[-1] == '\t')) --ke;
    if ((size_t)(ke - p) != strlen(key) || strncmp(p, key, (size_t)(ke - p)) != 0) continue;
    char *v = eq + 1;
    while (*v == ' ' || *v == '\t') ++v;
    for (char *c = v; *c; ++c)
      if (*c == ';' && (c == v || c[-1] == ' ' || c[-1] == '\t')) {
        *c = '\0';
        break;
      }
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) v[--n] = '\0';
    snprintf(out, cap, "%s", v);
    found = 1;
  }
  fclose(f);
  return found;
}

/* A number from a key = value file: NaN when absent; an unparsable value is NEST_ERR_FORMAT. */
static nest_status kv_num(const char *path, const char *section, const char *key, double *v) {
  char s[256];
  *v = NAN;
  const int r = kv_get(path, section, key, s, sizeof s);
  if (r < 0) return NEST_ERR_IO;
  if (r == 0) return NEST_OK;
  char *end;
  const double x = strtod(s, &end);
  if (end == s || *end)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %s = '%s' is not a number", path, key, s);
  *v = x;
  return NEST_OK;
}

/* ---- gnuplot ----------------------------------------------------------------------------- */

typedef struct {
  char prog[PATH_CAP]; /* the gnuplot program */
  const char *term;    /* "pngcairo" or "png" */
  char outdir[PATH_CAP];
  int keep_script;     /* --script: also write NAME.gp, the script that draws NAME.png */
} plotter;

/* `name` as given when it holds a '/', else the first executable PATH entry; 0 if none. */
static int find_program(const char *name, char *out, size_t cap) {
  if (strchr(name, '/')) {
    snprintf(out, cap, "%s", name);
    return access(name, X_OK) == 0;
  }
  const char *path = getenv("PATH");
  if (!path) path = "/usr/bin:/bin";
  while (*path) {
    size_t n = strcspn(path, ":");
    snprintf(out, cap, "%.*s/%s", (int)n, n ? path : ".", name);
    struct stat sb;
    if (stat(out, &sb) == 0 && S_ISREG(sb.st_mode) && access(out, X_OK) == 0) return 1;
    path += n + (path[n] == ':');
  }
  return 0;
}

/* Feed `script` to gnuplot on its standard input; its stdout is dropped, its stderr kept in
 * a temporary file whose last non-blank line (gnuplot's error) goes to err. Exit status. */
static int run_gnuplot(const plotter *pl, const char *script, size_t len, char *err,
                       size_t cap) {
  err[0] = '\0';
  FILE *ef = tmpfile();
  int fd[2];
  if (!ef || pipe(fd) != 0) {
    snprintf(err, cap, "cannot start gnuplot: %s", strerror(errno));
    if (ef) fclose(ef);
    return -1;
  }
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fd[0], 0);
    close(fd[0]);
    close(fd[1]);
    dup2(fileno(ef), 2);
    const int dn = open("/dev/null", O_WRONLY);
    if (dn >= 0) dup2(dn, 1);
    execl(pl->prog, pl->prog, (char *)NULL);
    _exit(127);
  }
  close(fd[0]);
  for (size_t off = 0; pid > 0 && off < len;) {
    const ssize_t k = write(fd[1], script + off, len - off);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break; /* gnuplot died (EPIPE): its status says why */
    off += (size_t)k;
  }
  close(fd[1]);
  int status = 0, rc = -1;
  if (pid > 0 && waitpid(pid, &status, 0) == pid)
    rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  char line[512];
  rewind(ef);
  while (fgets(line, sizeof line, ef)) {
    char *p = line;
    while (*p == ' ' || *p == '\t') ++p;
    p[strcspn(p, "\r\n")] = '\0';
    if (*p && strcmp(p, "^") != 0 && strncmp(p, "gnuplot>", 8) != 0) snprintf(err, cap, "%s", p);
  }
  fclose(ef);
  if (pid < 0) snprintf(err, cap, "cannot start gnuplot: fork failed");
  else if (rc == 127 && !err[0]) snprintf(err, cap, "cannot run %.400s", pl->prog);
  return rc;
}

/* gnuplot single-quoted string: '' stands for one quote. */
static void put_quoted(FILE *f, const char *s) {
  fputc('\'', f);
  for (; *s; ++s) {
    if (*s == '\'') fputc('\'', f);
    fputc(*s, f);
  }
  fputc('\'', f);
}

/* The whole script: terminal, output file, body. */
static char *script_for(const plotter *pl, int width, int height, const char *out,
                        const char *body, size_t *len) {
  char *script = NULL;
  FILE *f = open_memstream(&script, len);
  if (!f) return NULL;
  fprintf(f, "set encoding utf8\nset terminal %s noenhanced size %d,%d font 'DejaVu Sans,11'\n",
          pl->term, width, height);
  fputs("set output ", f);
  put_quoted(f, out);
  fprintf(f, "\n%s\nunset output\n", body);
  return fclose(f) == 0 ? script : NULL;
}

/* --script: OUT/NAME.gp, the script that redraws OUT/NAME.png (to restyle a figure). */
static void save_script(const plotter *pl, const char *png, int width, int height,
                        const char *body) {
  char path[PATH_CAP], tmp[PATH_CAP + 8];
  snprintf(path, sizeof path, "%.*s.gp", (int)(strlen(png) - 4), png);
  size_t len;
  char *script = script_for(pl, width, height, png, body, &len);
  FILE *f;
  if (!script || nest_atomic_fopen(path, tmp, sizeof tmp, &f) != NEST_OK) {
    report_error(script ? nest_error_message() : "out of memory");
    nest_error_clear();
    free(script);
    return;
  }
  fwrite(script, 1, len, f);
  free(script);
  if (nest_atomic_fclose(f, tmp, path) != NEST_OK) {
    report_error(nest_error_message());
    nest_error_clear();
  }
}

/* 1 if the file is a whole PNG: the signature first and the IEND chunk last (a gnuplot that
 * hit a full disk may still exit 0 with a cut file, which must not replace a good figure). */
static int whole_png(const char *path) {
  static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  static const unsigned char iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};
  unsigned char head[8], tail[12];
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  const int ok = fread(head, 1, 8, f) == 8 && fseek(f, -12, SEEK_END) == 0 &&
                 fread(tail, 1, 12, f) == 12 && memcmp(head, sig, 8) == 0 &&
                 memcmp(tail, iend, 12) == 0;
  fclose(f);
  return ok;
}

/* Render `body` (gnuplot commands) as OUT/name (width x height px): gnuplot writes
 * OUT/name.tmp, which replaces OUT/name only when it is a whole PNG (atomic.h). */
static void render(const plotter *pl, const char *name, int width, int height,
                   const char *body, const char *what) {
  char path[PATH_CAP], tmp[PATH_CAP + 8], err[600], msg[PATH_CAP + 700];
  join(path, sizeof path, pl->outdir, name);
  if (pl->keep_script) save_script(pl, path, width, height, body);
  if (nest_atomic_begin(path, tmp, sizeof tmp) != NEST_OK) {
    report_error(nest_error_message());
    nest_error_clear();
    return;
  }
  size_t len;
  char *script = script_for(pl, width, height, tmp, body, &len);
  const int rc = script ? run_gnuplot(pl, script, len, err, sizeof err) : -1;
  if (!script) snprintf(err, sizeof err, "out of memory");
  free(script);
  const int ok = rc == 0 && whole_png(tmp);
  if (!ok) {
    snprintf(msg, sizeof msg, "%s: gnuplot %s: %s", path,
             rc == 0 ? "wrote no complete PNG" : "failed", err[0] ? err : "(no message)");
    report_error(msg);
    nest_atomic_abort(tmp);
    return;
  }
  if (nest_atomic_commit(tmp, path) != NEST_OK) {
    report_error(nest_error_message());
    nest_error_clear();
    return;
  }
  printf("nest_plot: wrote %s (%s)\n", path, what);
}

/* One terminal check at start: pngcairo (anti-aliased, UTF-8 text) if this gnuplot has it,
 * else libgd's png. */
static void pick_terminal(plotter *pl) {
  static const char probe[] = "set terminal pngcairo\n";
  char err[256];
  pl->term = run_gnuplot(pl, probe, sizeof probe - 1, err, sizeof err) == 0 ? "pngcairo" : "png";
}

/* Phase boundaries (dashed lines at x) and phase names centred over [from, to]. */
typedef struct {
  char name[24];
  double from, to;
} segment;

static const char *phase_title(const char *p) {
  if (strcmp(p, "grow") == 0) return "growth";
  if (strcmp(p, "prune") == 0) return "pruning";
  if (strcmp(p, "area") == 0) return "area pruning";
  if (strcmp(p, "train") == 0) return "training";
  if (strcmp(p, "finetune") == 0) return "fine-tuning";
  return p;
}

static void put_segments(FILE *f, const segment *s, int n) {
  for (int i = 0; i < n; ++i) {
    if (i > 0) {
      const double x = 0.5 * (s[i - 1].to + s[i].from);
      fprintf(f, "set arrow from %.9g, graph 0 to %.9g, graph 1 nohead dt 2 lc rgb 'gray50'\n",
              x, x);
      /* metrics.csv without rows of the pruning phase: it happened at this line */
      if (strcmp(s[i].name, "finetune") == 0 && strcmp(s[i - 1].name, "prune") != 0 &&
          strcmp(s[i - 1].name, "area") != 0)
        fprintf(f, "set label 'pruning' at %.9g, graph 0.5 center rotate by 90 offset -0.8,0 "
                   "font ',9' tc rgb 'gray40'\n", x);
    }
    fputs("set label ", f);
    put_quoted(f, phase_title(s[i].name));
    fprintf(f, " at %.9g, graph 1.03 center font ',10' tc rgb 'gray30'\n",
            0.5 * (s[i].from + s[i].to));
  }
}

/* Segment bookkeeping: start a new segment when the phase changes. */
static void seg_add(segment *s, int *n, const char *phase, double x) {
  if (*n > 0 && strcmp(s[*n - 1].name, phase) == 0) {
    s[*n - 1].to = x;
    return;
  }
  if (*n == MAX_SEGS) {
    s[*n - 1].to = x;
    return;
  }
  snprintf(s[*n].name, sizeof s[*n].name, "%s", phase);
  s[*n].from = s[*n].to = x;
  ++*n;
}

static const char *const seg_colors[] = {"#1b7837", "#b2182b", "#2166ac", "#e08214", "#762a83"};

/* Read RUN/file and collect a figure's series from it: 1 collected, 0 skipped (the file is
 * absent: note `absent`), -1 error (reported; what collect allocated is for the caller to
 * free either way). */
static int load_series(const char *run, const char *file, const char *png, const char *absent,
                       nest_status (*collect)(const csv_table *, void *), void *series) {
  char path[PATH_CAP];
  join(path, sizeof path, run, file);
  if (!file_exists(path)) {
    note_skip(png, absent);
    return 0;
  }
  csv_table t;
  nest_status st = csv_read(path, &t);
  if (st == NEST_OK) {
    st = collect(&t, series);
    csv_free(&t);
  }
  if (st != NEST_OK) {
    report_error(nest_error_message());
    nest_error_clear();
    return -1;
  }
  return 1;
}

/* A figure's gnuplot commands are written to a memory stream, starting with its title. */
static FILE *begin_body(char **body, size_t *len, const char *title) {
  FILE *f = open_memstream(body, len);
  if (!f) return NULL;
  fputs("set title ", f);
  put_quoted(f, title);
  fputs("\nset title offset 0,1\nset grid\nset tmargin 4\n", f);
  return f;
}

/* ---- Fig. 8: active connections vs synthesis iteration (events.csv) --------------------- */

/* The phase of an events.csv row without a phase column: from the policy registry (growth,
 * training-phase SET / RigL, pruning); area-phase iterations are numbered from 100001;
 * guard and stop rows belong to the step before them. */
static const char *event_phase(const char *policy, double it, const char *prev) {
  const nest_policy_ops *ops = nest_policy_find(policy);
  if (ops && ops->when == NEST_WHEN_GROWTH) return "grow";
  if (ops && (ops->when == NEST_WHEN_EPOCH || ops->when == NEST_WHEN_STEP)) return "train";
  if ((ops && strcmp(ops->name, "area") == 0) || it > 100000) return "area";
  if (ops) return "prune";
  return prev[0] ? prev : "grow";
}

typedef struct {
  double *x, *y;
  int *seg; /* segment of each point */
  int n;
  segment segs[MAX_SEGS];
  int nsegs;
  double seed; /* active weights before the first event (NaN = unknown) */
} conn_series;

static void conn_free(conn_series *c) {
  free(c->x);
  free(c->y);
  free(c->seg);
}

/* One point per (phase, iteration) of events.csv, in file order: the active weights after
 * its last event. */
static nest_status conn_collect(const csv_table *t, void *out) {
  conn_series *c = out;
  const int ci = csv_col(t, "iteration"), ca = csv_col(t, "active_weights");
  const int cp = csv_col(t, "policy"), cph = csv_col(t, "phase");
  const int cadd = csv_col(t, "connections_added"), crem = csv_col(t, "connections_removed");
  if (ci < 0 || ca < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: no '%s' column in the header", t->path,
                    ci < 0 ? "iteration" : "active_weights");
  memset(c, 0, sizeof *c);
  c->seed = NAN;
  c->x = calloc((size_t)t->nrows + 1, sizeof *c->x);
  c->y = calloc((size_t)t->nrows + 1, sizeof *c->y);
  c->seg = calloc((size_t)t->nrows + 1, sizeof *c->seg);
  if (!c->x || !c->y || !c->seg) return NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory", t->path);
  char prev[24] = "";
  double prev_it = NAN;
  for (int r = 0; r < t->nrows; ++r) {
    double it, act, add, rem;
    NEST_CALL(csv_num(t, r, ci, &it));
    NEST_CALL(csv_num(t, r, ca, &act));
    NEST_CALL(csv_num(t, r, cadd, &add));
    NEST_CALL(csv_num(t, r, crem, &rem));
    if (isnan(act)) continue;
    const char *ph = csv_cell(t, r, cph);
    if (!*ph) ph = event_phase(csv_cell(t, r, cp), it, prev);
    if (c->n == 0 && !isnan(add) && !isnan(rem)) c->seed = act - add + rem;
    if (c->n == 0 || strcmp(ph, prev) != 0 || !(it == prev_it)) {
      c->x[c->n] = c->n + 1;
      seg_add(c->segs, &c->nsegs, ph, c->x[c->n]);
      c->seg[c->n] = c->nsegs - 1;
      ++c->n;
    }
    c->y[c->n - 1] = act;
    snprintf(prev, sizeof prev, "%s", ph);
    prev_it = it;
  }
  return NEST_OK;
}

/* Seed, peak and last counts; the last is "final" once the run wrote summary.txt. */
static void conn_labels(FILE *f, const conn_series *c, int finished) {
  char a[32];
  int peak = 0;
  for (int i = 1; i < c->n; ++i)
    if (c->y[i] > c->y[peak]) peak = i;
  if (!isnan(c->seed)) {
    fmt_count(c->seed, a, sizeof a);
    fprintf(f, "set label 'seed: %s' at 0, %.9g offset 1,-0.8 font ',10'\n", a, c->seed);
  }
  fmt_count(c->y[peak], a, sizeof a);
  /* near the right edge the label goes left of its point, so it is not cut off */
  const int right = c->x[peak] > 0.7 * c->x[c->n - 1];
  fprintf(f, "set label 'peak: %s' at %.9g, %.9g %s font ',10'\n", a, c->x[peak], c->y[peak],
          right ? "right offset -1,0.6" : "offset 1,0.6");
  if (peak != c->n - 1) {
    fmt_count(c->y[c->n - 1], a, sizeof a);
    fprintf(f, "set label '%s: %s' at %.9g, %.9g right offset 0,1.2 font ',10'\n",
            finished ? "final" : "so far", a, c->x[c->n - 1], c->y[c->n - 1]);
  }
}

static void plot_connections(const plotter *pl, const char *run, const char *title) {
  conn_series c = {0};
  const int r = load_series(run, "events.csv", "connections.png",
                            "no events.csv (the run neither grew nor pruned)", conn_collect,
                            &c);
  if (r > 0 && c.n == 0) note_skip("connections.png", "events.csv has no rows yet");
  char *body = NULL;
  size_t len = 0;
  FILE *f = r > 0 && c.n > 0 ? begin_body(&body, &len, title) : NULL;
  if (!f) {
    conn_free(&c);
    return;
  }
  fputs("set xlabel 'synthesis iteration (0 = the seed)'\n"
        "set ylabel 'active connections (weights)'\nset key top left\n"
        "set format y '%.0f'\nset yrange [0:*]\nset offsets 0, 0, graph 0.08, 0\n", f);
  fprintf(f, "set xrange [%g:%.9g]\n", isnan(c.seed) ? 0.5 : -0.5, c.x[c.n - 1] + 0.5);
  put_segments(f, c.segs, c.nsegs);
  char sum[PATH_CAP];
  join(sum, sizeof sum, run, "summary.txt");
  conn_labels(f, &c, file_exists(sum));
  /* One datablock per segment; each starts at the previous segment's last point so the
   * curve stays connected. */
  for (int s = 0; s < c.nsegs; ++s) {
    fprintf(f, "$s%d << EOD\n", s);
    if (s == 0 && !isnan(c.seed)) fprintf(f, "0 %.9g\n", c.seed);
    for (int i = 0; i < c.n; ++i)
      if (c.seg[i] == s || (c.seg[i] == s - 1 && (i + 1 == c.n || c.seg[i + 1] == s)))
        fprintf(f, "%.9g %.9g\n", c.x[i], c.y[i]);
    fputs("EOD\n", f);
  }
  fputs("plot ", f);
  for (int s = 0; s < c.nsegs; ++s) {
    fprintf(f, "%s$s%d using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '%s' title ",
            s ? ", " : "", s, seg_colors[s % 5]);
    put_quoted(f, phase_title(c.segs[s].name));
  }
  fputc('\n', f);
  fclose(f);
  render(pl, "connections.png", 900, 560, body,
         "Fig. 8: active connections vs synthesis iteration");
  free(body);
  conn_free(&c);
}

/* ---- validation / test error vs epoch (metrics.csv) ------------------------------------- */

/* The error in %, from an *_error column or else 1 - *_acc. */
static nest_status error_pct(const csv_table *t, int r, int cerr, int cacc, double *v) {
  NEST_CALL(csv_num(t, r, cerr >= 0 ? cerr : cacc, v));
  if (cerr < 0) *v = 1.0 - *v;
  *v *= 100.0;
  return NEST_OK;
}

typedef struct {
  double *x, *val, *test;
  int n, by_epoch;
  segment segs[MAX_SEGS];
  int nsegs;
} err_series;

static void err_free(err_series *e) {
  free(e->x);
  free(e->val);
  free(e->test);
}

/* Rows with a validation or test error; x = the epoch when every such row has one and they
 * increase, else the row's position (rows per pruning iteration share an epoch). */
static nest_status err_collect(const csv_table *t, void *out) {
  err_series *e = out;
  const int cve = csv_col(t, "val_error"), cva = csv_col(t, "val_acc");
  const int cte = csv_col(t, "test_error"), cta = csv_col(t, "test_acc");
  const int cep = csv_col(t, "epoch"), cph = csv_col(t, "phase");
  if (cve < 0 && cva < 0 && cte < 0 && cta < 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: no val_acc, val_error, test_acc or test_error column",
                    t->path);
  memset(e, 0, sizeof *e);
  e->x = calloc((size_t)t->nrows + 1, sizeof *e->x);
  e->val = calloc((size_t)t->nrows + 1, sizeof *e->val);
  e->test = calloc((size_t)t->nrows + 1, sizeof *e->test);
  if (!e->x || !e->val || !e->test) return NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory", t->path);
  e->by_epoch = cep >= 0;
  char (*phase)[24] = calloc((size_t)t->nrows + 1, sizeof *phase);
  if (!phase) return NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory", t->path);
  for (int r = 0; r < t->nrows; ++r) {
    double v, ts, ep;
    if (error_pct(t, r, cve, cva, &v) != NEST_OK || error_pct(t, r, cte, cta, &ts) != NEST_OK ||
        csv_num(t, r, cep, &ep) != NEST_OK) {
      free(phase);
      return NEST_ERR_FORMAT;
    }
    if (isnan(v) && isnan(ts)) continue;
    if (isnan(ep) || (e->n > 0 && !(ep > e->x[e->n - 1]))) e->by_epoch = 0;
    e->x[e->n] = ep;
    e->val[e->n] = v;
    e->test[e->n] = ts;
    snprintf(phase[e->n], sizeof phase[0], "%s", csv_cell(t, r, cph));
    ++e->n;
  }
  for (int i = 0; i < e->n; ++i) {
    if (!e->by_epoch) e->x[i] = i + 1;
    if (phase[i][0]) seg_add(e->segs, &e->nsegs, phase[i], e->x[i]);
  }
  free(phase);
  return NEST_OK;
}

/* y tics of a log axis in %: 0.1 0.15 0.2 0.3 0.5 0.7 1 ... (gnuplot shows those in range). */
static void log_pct_tics(FILE *f) {
  fputs("set logscale y\nset ytics (", f);
  static const double m[6] = {1, 1.5, 2, 3, 5, 7};
  for (int d = -2; d <= 2; ++d)
    for (int k = 0; k < 6; ++k) fprintf(f, "%s'%g' %g", d == -2 && k == 0 ? "" : ", ",
                                        m[k] * pow(10, d), m[k] * pow(10, d));
  fputs(")\n", f);
}

static void plot_errors(const plotter *pl, const char *run, const char *title) {
  err_series e = {0};
  const int r = load_series(run, "metrics.csv", "errors.png", "no metrics.csv",
                            err_collect, &e);
  if (r > 0 && e.n == 0) note_skip("errors.png", "metrics.csv has no evaluated row yet");
  char *body = NULL;
  size_t len = 0;
  FILE *f = r > 0 && e.n > 0 ? begin_body(&body, &len, title) : NULL;
  if (!f) {
    err_free(&e);
    return;
  }
  fprintf(f, "set xlabel '%s'\nset ylabel 'error (%%, log scale)'\nset key top right\n"
             "set autoscale yfix\nset offsets 0.5, 0.5, graph 0.05, graph 0.05\n",
          e.by_epoch ? "epoch" : "evaluation (metrics.csv row)");
  log_pct_tics(f);
  put_segments(f, e.segs, e.nsegs);
  fputs("$e << EOD\n", f);
  for (int i = 0; i < e.n; ++i) fprintf(f, "%.9g %.9g %.9g\n", e.x[i], e.val[i], e.test[i]);
  fputs("EOD\nplot $e using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#2166ac' "
        "title 'validation error', "
        "$e using 1:3 with linespoints pt 5 ps 0.4 lw 1.5 lc rgb '#b2182b' title 'test error'\n",
        f);
  fclose(f);
  render(pl, "errors.png", 900, 560, body, "validation and test error");
  free(body);
  err_free(&e);
}

/* ---- Fig. 3: input -> first-layer connection density (model_grown.h5, model.h5) --------- */

typedef struct {
  const char *label; /* "after growth", "final" */
  char file[64];
  char layer[NEST_NAME_LEN];
  int h, w, units;
  int64_t active, total;
  double *dens; /* [h * w] share of the units each pixel feeds */
} density_map;

/* Why a model has no input density map (NULL = it has one, filled in). */
static const char *density_of(const nest_net *net, density_map *d) {
  const nest_layer *l = NULL;
  for (int i = 0; i < net->nlayers && !l; ++i)
    if (net->layers[i]->nparams > 0) l = net->layers[i];
  if (!l) return "the model has no weight layer";
  if (l->kind != NEST_LAYER_DENSE)
    return "the first weight layer is a convolution; the map is drawn for a dense first layer "
           "that reads the image (LeNet-300-100), and a CNN's first dense layer reads feature "
           "maps";
  int c = l->in.c, h = l->in.h, w = l->in.w;
  if (h == 1 && w == 1) { /* a flat image (MNIST: 784 x 1 x 1): square, at least 8 x 8 */
    int side = (int)lround(sqrt((double)c));
    if (side < 8 || side * side != c) return "the first layer's input is not an image";
    h = w = side;
    c = 1;
  }
  const size_t in = nest_shape_size(l->in), units = (size_t)l->out.c;
  d->dens = calloc((size_t)h * w, sizeof *d->dens);
  if (!d->dens) return "out of memory";
  const float *m = l->m[0];
  for (size_t u = 0; u < units; ++u)
    for (size_t i = 0; i < in; ++i) d->dens[i % ((size_t)h * w)] += m[u * in + i];
  d->active = 0;
  for (int i = 0; i < h * w; ++i) {
    d->active += (int64_t)d->dens[i];
    d->dens[i] /= (double)units * c;
  }
  d->h = h;
  d->w = w;
  d->units = (int)units;
  d->total = (int64_t)(in * units);
  snprintf(d->layer, sizeof d->layer, "%s", l->name);
  return NULL;
}

/* 1 loaded, 0 skipped (why set), -1 error (reported). */
static int density_load(const char *run, density_map *d, const char **why) {
  char path[PATH_CAP];
  join(path, sizeof path, run, d->file);
  if (!file_exists(path)) return 0;
  nest_net *net = NULL;
  if (nest_model_load(path, 1, 1, &net) != NEST_OK) {
    report_error(nest_error_message());
    nest_error_clear();
    return -1;
  }
  *why = density_of(net, d);
  nest_net_destroy(&net);
  return *why ? 0 : 1;
}

static void density_panel(FILE *f, const density_map *d, int k, double cbmax) {
  char a[32], b[32];
  fmt_count((double)d->active, a, sizeof a);
  fmt_count((double)d->total, b, sizeof b);
  fprintf(f, "set title '%s (%s): %s of %s input connections of %s active, %d units'\n",
          d->label, d->file, a, b, d->layer, d->units);
  fprintf(f, "set xrange [-0.5:%d.5]\nset yrange [%d.5:-0.5]\nset cbrange [0:%.9g]\n", d->w - 1,
          d->h - 1, cbmax);
  fprintf(f, "$d%d << EOD\n", k);
  for (int y = 0; y < d->h; ++y)
    for (int x = 0; x < d->w; ++x)
      fprintf(f, "%.6g%c", d->dens[y * d->w + x], x + 1 == d->w ? '\n' : ' ');
  fprintf(f, "EOD\nplot $d%d matrix with image notitle\n", k);
}

static void plot_density(const plotter *pl, const char *run, const char *title) {
  density_map d[2] = {{.label = "after growth", .file = "model_grown.h5"},
                      {.label = "final", .file = "model.h5"}};
  const char *why = NULL;
  int n = 0, err = 0;
  for (int k = 0; k < 2; ++k) {
    const int r = density_load(run, &d[n], &why);
    if (r < 0) err = 1;
    if (r > 0) ++n;
    if (k == 0 && n == 0) d[0] = (density_map){.label = "final", .file = "model.h5"};
    if (why) break; /* the same architecture: the other file says the same */
  }
  if (err || n == 0) {
    if (!err) note_skip("density.png", why ? why : "no model_grown.h5 or model.h5");
    for (int k = 0; k < 2; ++k) free(d[k].dens);
    return;
  }
  char *body = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&body, &len);
  if (!f) {
    report_error("out of memory");
    for (int k = 0; k < 2; ++k) free(d[k].dens);
    return;
  }
  fprintf(f, "set multiplot layout 1,%d title ", n);
  put_quoted(f, title);
  fputs(" font ',13'\nset size ratio -1\nset palette defined (0 '#ffffff', 0.15 '#c6dbef', "
        "0.4 '#6baed6', 0.7 '#2171b5', 1 '#08306b')\n"
        "set cblabel 'share of first-layer units connected'\nset xlabel 'pixel column'\n"
        "set ylabel 'pixel row'\nset xtics 0, 7 out nomirror\nset ytics 0, 7 out nomirror\n"
        "set title font ',10'\n", f);
  for (int k = 0; k < n; ++k) {
    /* each panel on its own scale: the final net is ~10x sparser than the grown one */
    double cbmax = 0;
    for (int i = 0; i < d[k].h * d[k].w; ++i) cbmax = fmax(cbmax, d[k].dens[i]);
    density_panel(f, &d[k], k, cbmax > 0 ? cbmax : 1);
  }
  fputs("unset multiplot\n", f);
  fclose(f);
  render(pl, "density.png", n == 2 ? 1300 : 720, 600, body,
         "Fig. 3: input -> first-layer connection density");
  free(body);
  for (int k = 0; k < 2; ++k) free(d[k].dens);
}

/* ---- Fig. 5: area-of-interest masks of the first conv layer (model.h5) ------------------ */

/* The tile grid: kernels of the first conv layer side by side, NaN gaps between tiles, and
 * each tile's label above it. */
static void area_grid(FILE *f, const nest_layer *l, const float *area, int nmaps, int cols) {
  const int C = l->in.c, P = l->out.h, Q = l->out.w, gx_ = AREA_GAP_X, gy_ = AREA_GAP_Y;
  const int rows = (nmaps + cols - 1) / cols, width = cols * (Q + gx_) - gx_;
  fputs("$a << EOD\n", f);
  for (int gy = 0; gy < rows * (P + gy_) - gy_; ++gy) {
    for (int gx = 0; gx < width; ++gx) {
      const int ty = gy / (P + gy_), py = gy % (P + gy_), tx = gx / (Q + gx_), qx = gx % (Q + gx_);
      const int o = ty * cols + tx;
      double v = NAN;
      if (py < P && qx < Q && o < nmaps) {
        v = 0; /* with several input maps: the share of them kept at (p, q) */
        for (int m = 0; m < C; ++m) v += area[(((size_t)o * C + m) * P + py) * Q + qx];
        v /= C;
      }
      const char sep = gx + 1 == width ? '\n' : ' ';
      if (isnan(v)) fprintf(f, "NaN%c", sep);
      else fprintf(f, "%.3g%c", v, sep);
    }
  }
  fputs("EOD\n", f);
  for (int o = 0; o < nmaps; ++o)
    fprintf(f, "set label 'kernel %d' at %d, %g center font ',8' front\n", o,
            (o % cols) * (Q + gx_) + Q / 2, (o / cols) * (P + gy_) - 0.5 * gy_);
}

static int newest_checkpoint(const char *run, char *path, size_t cap) {
  char dir[PATH_CAP], best[256] = "";
  join(dir, sizeof dir, run, "checkpoints");
  DIR *d = opendir(dir);
  if (!d) return 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    const size_t n = strlen(e->d_name);
    if (n < sizeof best && strncmp(e->d_name, "ckpt-", 5) == 0 && n > 8 &&
        strcmp(e->d_name + n - 3, ".h5") == 0 && strcmp(e->d_name, best) > 0)
      snprintf(best, sizeof best, "%s", e->d_name);
  }
  closedir(d);
  if (!best[0]) return 0;
  return snprintf(path, cap, "%s/%s", dir, best) < (int)cap;
}

static void plot_area(const plotter *pl, const char *run, const char *title) {
  char path[PATH_CAP];
  join(path, sizeof path, run, "model.h5");
  /* a live run has no model.h5 yet: its newest checkpoint is a model file too */
  if (!file_exists(path) && !newest_checkpoint(run, path, sizeof path)) {
    note_skip("area.png", "no model.h5 or checkpoint (the run has not finished)");
    return;
  }
  nest_net *net = NULL;
  if (nest_model_load(path, 1, 1, &net) != NEST_OK) {
    report_error(nest_error_message());
    nest_error_clear();
    return;
  }
  const nest_layer *l = NULL;
  for (int i = 0; i < net->nlayers && !l; ++i)
    if (net->layers[i]->kind == NEST_LAYER_CONV2D) l = net->layers[i];
  const float *area = NULL;
  for (int b = 0; l && b < l->nbuffers; ++b)
    if (strcmp(l->buffer[b].name, "area") == 0) area = l->buf[b];
  const char *src = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  const int live = strcmp(src, "model.h5") != 0;
  if (!l || !l->hp.area || !area) {
    char why[512];
    snprintf(why, sizeof why, "%.200s: %s%s", src,
             !l ? "no convolution layer"
                : "the first conv layer is not a partial-area convolution (no area mask)",
             live ? " (yet: the run has not finished)" : "");
    note_skip("area.png", why);
    nest_net_destroy(&net);
    return;
  }
  const int maps = l->hp.out_c, nmaps = maps < AREA_MAX_MAPS ? maps : AREA_MAX_MAPS;
  const int P = l->out.h, Q = l->out.w;
  int cols = (int)ceil(sqrt(nmaps * 1.6));
  if (cols > nmaps) cols = nmaps;
  const int rows = (nmaps + cols - 1) / cols;
  size_t kept = 0, all = (size_t)maps * l->in.c * P * Q;
  for (size_t i = 0; i < all; ++i) kept += area[i] != 0;
  char *body = NULL;
  size_t len = 0;
  FILE *f = begin_body(&body, &len, title);
  if (!f) {
    report_error("out of memory");
    nest_net_destroy(&net);
    return;
  }
  const int C = l->in.c;
  if (live)
    fprintf(f, "set label 'from %s: the run has not finished' at screen 0.5, screen 0.91 "
               "center font ',10' tc rgb '#b2182b'\n", src);
  fprintf(f, "unset grid\nset label '%s: %d kernels%s, %dx%d output positions, %.1f%% of the area kept%s' "
             "at screen 0.5, screen 0.06 center font ',11'\n",
          l->name, maps, nmaps < maps ? " (the first 64 shown)" : "", P, Q,
          100.0 * (double)kept / (double)(all ? all : 1),
          C == 1 ? " (blue: kept, grey: pruned)" : "");
  fprintf(f, "set label 'each tile: the output positions (p, q) where %s through that kernel "
             "counts' "
             "at screen 0.5, screen 0.025 center font ',10' tc rgb 'gray30'\n",
          C == 1 ? "the image contributes" : "a share of the input maps contributes");
  area_grid(f, l, area, nmaps, cols);
  fprintf(f, "set size ratio -1\nunset xtics\nunset ytics\nunset border\nset cbrange [0:1]\n"
             "set palette defined (0 '#d9d9d9', 1 '#08306b')\nset bmargin 4\n"
             "set xrange [-0.5:%d.5]\nset yrange [%d.5:-%d]\n",
          cols * (Q + AREA_GAP_X) - AREA_GAP_X - 1, rows * (P + AREA_GAP_Y) - AREA_GAP_Y - 1,
          AREA_GAP_Y);
  /* one input map: a tile is a 0/1 mask, no colour scale needed; several: the share kept */
  if (C == 1) fputs("unset colorbox\n", f);
  else fputs("set cblabel 'share of input maps kept'\n", f);
  fputs("plot $a matrix with image notitle\n", f);
  fclose(f);
  const int wpx = 1000,
            hpx = (int)(120 + (wpx - 150) * (double)rows * (P + AREA_GAP_Y) /
                                  (cols * (Q + AREA_GAP_X)));
  render(pl, "area.png", wpx, hpx, body, "Fig. 5: area-of-interest masks");
  free(body);
  nest_net_destroy(&net);
}

/* ---- Figs. 6-7: a width-ratio sweep ------------------------------------------------------- */

typedef struct {
  double r, grown, final, grow_s, test;
} sweep_run;

/* One run's figures; 0 skipped (note printed), 1 read, -1 error (reported). */
static int sweep_read(const char *dir, sweep_run *s) {
  char sum[PATH_CAP], cfg[PATH_CAP], msg[PATH_CAP + 128];
  join(sum, sizeof sum, dir, "summary.txt");
  join(cfg, sizeof cfg, dir, "config.ini");
  if (!file_exists(sum) || !file_exists(cfg)) {
    snprintf(msg, sizeof msg, "%s: no %s (unfinished run?)", dir,
             file_exists(sum) ? "config.ini" : "summary.txt");
    note_skip("a sweep run", msg);
    return 0;
  }
  double prune_after;
  if (kv_num(cfg, "model", "width", &s->r) != NEST_OK ||
      kv_num(sum, "", "grown_weights", &s->grown) != NEST_OK ||
      kv_num(sum, "", "prune_weights_after", &prune_after) != NEST_OK ||
      kv_num(sum, "", "active_weights", &s->final) != NEST_OK ||
      kv_num(sum, "", "grow_wall_s", &s->grow_s) != NEST_OK ||
      kv_num(sum, "", "test_error", &s->test) != NEST_OK) {
    report_error(nest_error_message());
    nest_error_clear();
    return -1;
  }
  if (isnan(s->r)) s->r = 1.0; /* model.width's default */
  if (isnan(s->grown)) {
    snprintf(msg, sizeof msg, "%s: no grown_weights in summary.txt (not a growth run)", dir);
    note_skip("a sweep run", msg);
    return 0;
  }
  if (isnan(prune_after)) s->final = NAN; /* growth only: no final size */
  return 1;
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median, min and max of field `off` (a double in sweep_run) over the runs with ratio r,
 * NaN values left out; returns how many. */
static int sweep_stats(const sweep_run *s, int n, double r, size_t off, double *med, double *lo,
                       double *hi) {
  double v[MAX_RUNS];
  int k = 0;
  for (int i = 0; i < n; ++i) {
    const double x = *(const double *)((const char *)&s[i] + off);
    if (s[i].r == r && !isnan(x)) v[k++] = x;
  }
  if (k == 0) return 0;
  qsort(v, (size_t)k, sizeof *v, cmp_double);
  *med = k % 2 ? v[k / 2] : 0.5 * (v[k / 2 - 1] + v[k / 2]);
  *lo = v[0];
  *hi = v[k - 1];
  return k;
}

/* Datablock $NAME: r, median, min, max of two fields (y1 and y2), one line per ratio with
 * values; y2 may be a ratio grown / final (ratio = 1). */
static int sweep_block(FILE *f, const char *name, const sweep_run *s, int n, size_t off1,
                       size_t off2, int ratio, double top[2]) {
  double rs[MAX_RUNS];
  int nr = 0, lines = 0;
  top[0] = top[1] = 0;
  for (int i = 0; i < n; ++i) rs[nr++] = s[i].r;
  qsort(rs, (size_t)nr, sizeof *rs, cmp_double);
  fprintf(f, "$%s << EOD\n", name);
  for (int i = 0; i < nr; ++i) {
    if (i > 0 && rs[i] == rs[i - 1]) continue;
    double m1, l1, h1, m2 = NAN, l2 = NAN, h2 = NAN;
    if (!sweep_stats(s, n, rs[i], off1, &m1, &l1, &h1)) continue;
    if (ratio) { /* compression grown / final per run */
      sweep_run t[MAX_RUNS];
      int k = 0;
      for (int j = 0; j < n; ++j)
        if (s[j].r == rs[i] && !isnan(s[j].final) && s[j].final > 0)
          t[k++] = (sweep_run){.r = s[j].r, .grown = s[j].grown / s[j].final};
      sweep_stats(t, k, rs[i], offsetof(sweep_run, grown), &m2, &l2, &h2);
    } else {
      sweep_stats(s, n, rs[i], off2, &m2, &l2, &h2);
    }
    fprintf(f, "%.9g %.9g %.9g %.9g %.9g %.9g %.9g\n", rs[i], m1, l1, h1, m2, l2, h2);
    top[0] = fmax(top[0], h1);
    if (!isnan(h2)) top[1] = fmax(top[1], h2);
    ++lines;
  }
  fputs("EOD\n", f);
  return lines;
}

static void sweep_plot(const plotter *pl, const sweep_run *s, int n, int fig7) {
  char *body = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&body, &len);
  if (!f) {
    report_error("out of memory");
    return;
  }
  const size_t o1 = fig7 ? offsetof(sweep_run, final) : offsetof(sweep_run, grown);
  double top[2];
  const int lines = sweep_block(f, "s", s, n, o1, offsetof(sweep_run, grow_s), fig7, top);
  /* room above the highest bar on both axes; the key goes under the plot */
  fprintf(f, "set yrange [0:%.9g]\nset y2range [0:%.9g]\n", top[0] > 0 ? 1.1 * top[0] : 1,
          top[1] > 0 ? 1.1 * top[1] : 1);
  fprintf(f, "set title '%s vs seed width ratio r (NeST Fig. %d): medians over seeds (%d runs), "
             "bars min-max'\n",
          fig7 ? "Final size and pruning compression" : "Post-growth size and growth time",
          fig7 ? 7 : 6, n);
  fprintf(f, "set xlabel 'seed width ratio r (model.width)'\nset ylabel '%s'\n"
             "set y2label '%s'\nset ytics nomirror\nset y2tics\nset grid\n"
             "set key below\nset offsets 0.05, 0.05, 0, 0\n"
             "set format y '%%.0f'\n",
          fig7 ? "final active weights" : "post-growth active weights",
          fig7 ? "compression (post-growth / final weights)" : "growth time (s)");
  fprintf(f, "plot $s using 1:2:3:4 with yerrorlines pt 7 lw 2 lc rgb '#2166ac' title '%s', "
             "$s using 1:5:6:7 axes x1y2 with yerrorlines pt 5 lw 1.5 dt 2 lc rgb '#b2182b' "
             "title '%s'\n",
          fig7 ? "final size" : "post-growth size",
          fig7 ? "compression (right axis)" : "growth time (right axis)");
  fclose(f);
  if (lines > 0)
    render(pl, fig7 ? "sweep_final.png" : "sweep_growth.png", 900, 560, body,
           fig7 ? "Fig. 7: final size vs r" : "Fig. 6: post-growth size and growth time vs r");
  else
    note_skip(fig7 ? "sweep_final.png" : "sweep_growth.png", "no run to plot");
  free(body);
}

static void plot_sweep(const plotter *pl, char **dirs, int ndirs) {
  static sweep_run s[MAX_RUNS];
  int n = 0, pruned = 0;
  for (int i = 0; i < ndirs && n < MAX_RUNS; ++i) {
    struct stat sb;
    if (stat(dirs[i], &sb) != 0 || !S_ISDIR(sb.st_mode)) {
      char msg[PATH_CAP + 64];
      snprintf(msg, sizeof msg, "%s: not a run directory", dirs[i]);
      report_error(msg);
      continue;
    }
    if (sweep_read(dirs[i], &s[n]) > 0) pruned += !isnan(s[n++].final);
  }
  if (ndirs > MAX_RUNS && n == MAX_RUNS)
    printf("nest_plot: only the first %d finished runs of the sweep are plotted\n", MAX_RUNS);
  if (n == 0) {
    note_skip("sweep_growth.png", "no finished growth run among the directories");
    return;
  }
  sweep_plot(pl, s, n, 0);
  if (pruned) sweep_plot(pl, s, n, 1);
  else note_skip("sweep_final.png", "no run was pruned (a growth-only sweep, such as "
                                    "jobs/lenet300_width_sweep.slurm)");
}

/* ---- main -------------------------------------------------------------------------------- */

static int mkdir_p(const char *dir) {
  char buf[PATH_CAP];
  snprintf(buf, sizeof buf, "%s", dir);
  for (char *p = buf + 1; *p; ++p) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return mkdir(buf, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

enum { FIG_CONN = 1, FIG_ERR = 2, FIG_DENS = 4, FIG_AREA = 8, FIG_ALL = 15 };

static int parse_only(const char *s, unsigned *mask) {
  static const char *const names[] = {"connections", "errors", "density", "area"};
  char items[NEST_LIST_MAX][NEST_LIST_ITEM];
  int n;
  if (nest_list_split("--only", s, items, NEST_LIST_MAX, &n) != NEST_OK) {
    fprintf(stderr, "nest_plot: error: %s\n", nest_error_message());
    return -1;
  }
  *mask = 0;
  for (int i = 0; i < n; ++i) {
    int k = 0;
    while (k < 4 && strcmp(items[i], names[k]) != 0) ++k;
    if (k == 4) {
      fprintf(stderr, "nest_plot: error: --only %s: unknown figure '%s' (known: connections, "
                      "errors, density, area)\n", s, items[i]);
      return -1;
    }
    *mask |= 1u << k;
  }
  return 0;
}

typedef struct {
  char **pos;
  int npos, sweep;
  const char *out;
  unsigned figs;
  int script;
} options;

/* 0 ok, 1 help printed, 2 usage error (printed). */
static int parse_args(int argc, char **argv, options *o) {
  o->pos = calloc((size_t)argc, sizeof *o->pos);
  o->figs = FIG_ALL;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      print_help();
      return 1;
    } else if (strcmp(a, "--sweep") == 0) {
      o->sweep = 1;
    } else if (strcmp(a, "--script") == 0) {
      o->script = 1;
    } else if (strcmp(a, "--out") == 0 || strcmp(a, "--only") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "nest_plot: error: %s needs a value (try --help)\n", a);
        return 2;
      }
      if (strcmp(a, "--out") == 0) o->out = argv[++i];
      else if (parse_only(argv[++i], &o->figs) != 0) return 2;
    } else if (strcmp(a, "--") == 0) {
      while (++i < argc) o->pos[o->npos++] = argv[i];
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "nest_plot: error: unknown option '%s' (try --help)\n", a);
      return 2;
    } else {
      o->pos[o->npos++] = argv[i];
    }
  }
  if (o->npos == 0 || (!o->sweep && o->npos > 1)) {
    fprintf(stderr, "nest_plot: error: %s (try --help)\n",
            o->npos == 0 ? "expected a run directory" : "expected one run directory (several: --sweep)");
    return 2;
  }
  return 0;
}

int main(int argc, char **argv) {
  options o = {0};
  const int pa = parse_args(argc, argv, &o);
  if (pa != 0) {
    free(o.pos);
    return pa == 1 ? 0 : 2;
  }
  signal(SIGPIPE, SIG_IGN); /* a gnuplot that dies early must not kill us mid-write */
  plotter pl = {.keep_script = o.script};
  const char *run = o.pos[0];
  struct stat sb;
  if (!o.sweep && (stat(run, &sb) != 0 || !S_ISDIR(sb.st_mode))) {
    fprintf(stderr, "nest_plot: error: %s: not a run directory\n", run);
    free(o.pos);
    return 1;
  }
  if (o.out) {
    snprintf(pl.outdir, sizeof pl.outdir, "%s", o.out);
  } else if (o.sweep) {
    char parent[PATH_CAP];
    snprintf(parent, sizeof parent, "%s", run);
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/') parent[--n] = '\0';
    char *slash = strrchr(parent, '/');
    if (slash) slash[1] = '\0';
    snprintf(pl.outdir, sizeof pl.outdir, "%ssweep-plots", slash ? parent : "");
  } else {
    join(pl.outdir, sizeof pl.outdir, run, "plots");
  }
  const char *env = getenv("NEST_GNUPLOT");
  if (!find_program(env && *env ? env : "gnuplot", pl.prog, sizeof pl.prog)) {
    printf("nest_plot: %s not found (install gnuplot-nox; jobs/setup.sh does): no plots drawn\n",
           env && *env ? env : "gnuplot");
    free(o.pos);
    return 0;
  }
  if (mkdir_p(pl.outdir) != 0) {
    fprintf(stderr, "nest_plot: error: %s: cannot create: %s\n", pl.outdir, strerror(errno));
    free(o.pos);
    return 1;
  }
  pick_terminal(&pl);
  if (o.sweep) {
    plot_sweep(&pl, o.pos, o.npos);
  } else {
    char name[256], title[512];
    base_name(run, name, sizeof name);
    snprintf(title, sizeof title, "%s", name);
    if (o.figs & FIG_CONN) {
      char t[600];
      snprintf(t, sizeof t, "Active connections vs synthesis iteration (NeST Fig. 8): %s", title);
      plot_connections(&pl, run, t);
    }
    if (o.figs & FIG_ERR) {
      char t[600];
      snprintf(t, sizeof t, "Validation and test error: %s", title);
      plot_errors(&pl, run, t);
    }
    if (o.figs & FIG_DENS) {
      char t[600];
      snprintf(t, sizeof t, "Input -> first layer connection density (NeST Fig. 3): %s", title);
      plot_density(&pl, run, t);
    }
    if (o.figs & FIG_AREA) {
      char t[600];
      snprintf(t, sizeof t, "First conv layer: areas of interest (NeST Fig. 5): %s", title);
      plot_area(&pl, run, t);
    }
  }
  free(o.pos);
  return nerrors ? 1 : 0;
}
