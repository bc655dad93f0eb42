/* runlog.h — the console log of a run (rank 0's stdout), written for a person to read: lines
 * that stay (the run's set-up, phases, one line per growth or pruning event, epoch summaries
 * when due, the report) and progress lines, which a terminal shows in place ('\r') and a file
 * or pipe gets at most every run.log_seconds — so a log of a long run stays short, a job log
 * still shows that the run moves. Also the run's ETA: the steps the run has left (an estimate
 * its driver gives) times the seconds per optimizer step measured over the last minute.
 *
 * Every function takes NULL for "print nothing" (quiet runs, ranks other than 0). Nothing here
 * calls MPI or knows what a phase is. */
#ifndef NEST_RUNLOG_H
#define NEST_RUNLOG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define NEST_RUNLOG_SAMPLES 32
/* Progress lines a run's log gets at most, about: their interval grows with the run's length
 * (a run of hours does not print a line every few seconds). */
#define NEST_RUNLOG_LINES 20

typedef struct {
  FILE *out;
  int tty;          /* out is a terminal: progress lines in place */
  double every;     /* seconds between progress lines (and epoch summaries) kept in the log, at
                       least; 0 = all of them */
  double span;      /* the run's expected length (elapsed + ETA) at the latest nest_log_clock:
                       the interval is at least span / NEST_RUNLOG_LINES */
  double last;      /* wall clock of the last line printed, kept or progress (not a terminal) */
  double last_kept; /* wall clock of the last line kept */
  int open;         /* terminal: a progress line is showing; the next output replaces it */
  /* ETA: (wall clock, optimizer step) samples at least 2 s apart, a ring */
  double st[NEST_RUNLOG_SAMPLES];
  int64_t ss[NEST_RUNLOG_SAMPLES];
  int ns, head;
} nest_runlog;

/* out (stdout), every = run.log_seconds. A terminal is recognised by isatty() — under Open
 * MPI, whose ranks always write to a pseudo-terminal, by mpirun's own stdout; NEST_LOG_TTY=0
 * or 1 in the environment overrides that. */
void nest_runlog_init(nest_runlog *l, FILE *out, double every);

/* A line that stays: set-up, phase starts and ends, events, the final lines. On a terminal it
 * replaces the progress line showing. A trailing newline is added. */
void nest_log_line(nest_runlog *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A progress line: on a terminal drawn in place (cut to the terminal's width); otherwise
 * printed when the interval — `every` seconds, or span / NEST_RUNLOG_LINES if longer — passed
 * since the last line printed, else dropped. */
void nest_log_progress(nest_runlog *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A summary line (an epoch's): kept when keep > 0 (the last epoch of a phase) or, keep = 0,
 * when due: the interval passed since the last line kept; else a progress line. */
void nest_log_summary(nest_runlog *l, int keep, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* End a progress line showing on a terminal (before other output to the same stream: the
 * report, a child's output), and flush. */
void nest_log_break(nest_runlog *l);

/* "12s", "3m05s", "1h02m"; "--" for a negative, NaN or absurd value. */
void nest_log_duration(double seconds, char *out, size_t cap);
/* The run's remaining seconds: steps_left times the seconds per optimizer step since the
 * oldest sample of about the last minute (the rate includes evaluations, growth passes and
 * checkpoints in proportion); NaN while there is no measured step or steps_left < 0. `step` is
 * the optimizer steps taken so far (any origin). Rank 0's clock only: never a decision. */
double nest_log_eta(nest_runlog *l, int64_t step, int64_t steps_left);
/* "elapsed 1m46s, ETA 3m10s" (ETA "--" when unknown) into out. */
void nest_log_clock(nest_runlog *l, double elapsed, int64_t step, int64_t steps_left, char *out,
                    size_t cap);
/* n with thousands separators: 101633 -> "101,633". */
void nest_log_count(int64_t n, char *out, size_t cap);

#endif
