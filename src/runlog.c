/* runlog.c — the console log of a run: lines that stay, progress lines in place on a terminal
 * and at most every run.log_seconds elsewhere, the run's ETA (runlog.h). */
#define _GNU_SOURCE
#include "nest/runlog.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Is what `out` reaches a terminal a person watches? Open MPI gives every rank's stdout a
 * pseudo-terminal of its own, whatever mpirun's output goes to (a file, a pipe, a job log):
 * under Open MPI the answer is that of the launcher's (our parent's, mpirun or orted) stdout,
 * a character device other than /dev/null and its kin (major 1). */
static int is_terminal(FILE *out) {
  const char *force = getenv("NEST_LOG_TTY");
  if (force && (force[0] == '0' || force[0] == '1') && !force[1]) return force[0] == '1';
  if (!out || !isatty(fileno(out))) return 0;
  if (!getenv("OMPI_COMM_WORLD_SIZE")) return 1;
  char path[64];
  struct stat sb;
  snprintf(path, sizeof path, "/proc/%d/fd/1", (int)getppid());
  return stat(path, &sb) == 0 && S_ISCHR(sb.st_mode) && major(sb.st_rdev) != 1;
}

void nest_runlog_init(nest_runlog *l, FILE *out, double every) {
  memset(l, 0, sizeof *l);
  l->out = out;
  l->every = every;
  l->tty = is_terminal(out);
  l->last = l->last_kept = -1e300;
}

/* Terminal columns, 0 if unknown. */
static int columns(const nest_runlog *l) {
  struct winsize ws;
  if (ioctl(fileno(l->out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 0;
}

/* Clear the progress line showing (terminal). */
static void close_line(nest_runlog *l) {
  if (l->open) fputs("\r\033[K", l->out);
  l->open = 0;
}

static void put_kept(nest_runlog *l, const char *text) {
  close_line(l);
  fputs(text, l->out);
  fputc('\n', l->out);
  fflush(l->out);
  l->last = l->last_kept = now_s();
}

/* Seconds between progress lines kept (runlog.h). */
static double interval(const nest_runlog *l) {
  if (l->every <= 0) return 0;
  const double s = l->span / NEST_RUNLOG_LINES;
  return s > l->every ? s : l->every;
}

static void put_progress(nest_runlog *l, const char *text) {
  if (l->tty) {
    /* one terminal line: a wrapped line would not be replaced by the next '\r' */
    const int w = columns(l);
    const int n = (int)strlen(text);
    fputs("\r", l->out);
    fprintf(l->out, "%.*s\033[K", w > 1 && n > w - 1 ? w - 1 : n, text);
    fflush(l->out);
    l->open = 1;
    return;
  }
  const double t = now_s();
  if (t - l->last < interval(l)) return;
  fputs(text, l->out);
  fputc('\n', l->out);
  fflush(l->out);
  l->last = t;
}

/* Format a line, then keep it (keep > 0), draw it as progress (keep < 0), or keep it only when
 * the interval since the last kept line has passed (keep == 0). */
static void vlog(nest_runlog *l, int keep, const char *fmt, va_list ap) {
  char buf[2048];
  vsnprintf(buf, sizeof buf, fmt, ap);
  if (keep > 0 || (keep == 0 && now_s() - l->last_kept >= interval(l)))
    put_kept(l, buf);
  else
    put_progress(l, buf);
}

void nest_log_line(nest_runlog *l, const char *fmt, ...) {
  if (!l || !l->out) return;
  va_list ap;
  va_start(ap, fmt);
  vlog(l, 1, fmt, ap);
  va_end(ap);
}

void nest_log_progress(nest_runlog *l, const char *fmt, ...) {
  if (!l || !l->out) return;
  va_list ap;
  va_start(ap, fmt);
  vlog(l, -1, fmt, ap);
  va_end(ap);
}

void nest_log_summary(nest_runlog *l, int keep, const char *fmt, ...) {
  if (!l || !l->out) return;
  va_list ap;
  va_start(ap, fmt);
  vlog(l, keep, fmt, ap);
  va_end(ap);
}

void nest_log_break(nest_runlog *l) {
  if (!l || !l->out) return;
  close_line(l);
  fflush(l->out);
}

void nest_log_duration(double s, char *out, size_t cap) {
  if (!(s >= 0) || s > 1e8) {
    snprintf(out, cap, "--");
    return;
  }
  const long t = lround(s);
  if (t >= 3600)
    snprintf(out, cap, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60)
    snprintf(out, cap, "%ldm%02lds", t / 60, t % 60);
  else
    snprintf(out, cap, "%lds", t);
}

double nest_log_eta(nest_runlog *l, int64_t step, int64_t steps_left) {
  if (!l) return NAN;
  const double t = now_s();
  const int newest = (l->head + NEST_RUNLOG_SAMPLES - 1) % NEST_RUNLOG_SAMPLES;
  if (l->ns > 0 && step < l->ss[newest]) l->ns = 0; /* the count went back: start again */
  if (l->ns == 0 || t - l->st[newest] >= 2.0) {
    l->st[l->head] = t;
    l->ss[l->head] = step;
    l->head = (l->head + 1) % NEST_RUNLOG_SAMPLES;
    if (l->ns < NEST_RUNLOG_SAMPLES) l->ns++;
  }
  if (steps_left < 0) return NAN;
  if (steps_left == 0) return 0;
  /* the oldest sample (about a minute back once the ring is full): a rate over the recent
   * past, so a net that grew or a phase that evaluates more shows in it soon */
  const int oldest = (l->head + NEST_RUNLOG_SAMPLES - l->ns) % NEST_RUNLOG_SAMPLES;
  if (step <= l->ss[oldest] || t <= l->st[oldest]) return NAN;
  return (double)steps_left * (t - l->st[oldest]) / (double)(step - l->ss[oldest]);
}

void nest_log_clock(nest_runlog *l, double elapsed, int64_t step, int64_t steps_left, char *out,
                    size_t cap) {
  char el[32], eta[32];
  const double left = nest_log_eta(l, step, steps_left);
  if (l && left >= 0) l->span = elapsed + left;
  nest_log_duration(elapsed, el, sizeof el);
  nest_log_duration(left, eta, sizeof eta);
  snprintf(out, cap, "elapsed %s, ETA %s", el, eta);
}

void nest_log_count(int64_t n, char *out, size_t cap) {
  char digits[32];
  snprintf(digits, sizeof digits, "%lld", (long long)(n < 0 ? -n : n));
  const int len = (int)strlen(digits);
  char buf[48];
  int o = 0;
  if (n < 0) buf[o++] = '-';
  for (int i = 0; i < len; ++i) {
    if (i > 0 && (len - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = digits[i];
  }
  buf[o] = '\0';
  snprintf(out, cap, "%s", buf);
}
