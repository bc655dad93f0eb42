/* status.h — error codes and the NEST_CALL propagation macro.
 *
 * Every function that can fail returns nest_status. The function that detects the problem
 * records a one-line message with NEST_ERR(code, fmt, ...) (which also records file:line);
 * callers propagate with NEST_CALL(expr), which appends their file:line to a short trace.
 * Library code never exits; only main() turns a status into an exit code.
 * The message buffer is thread-local, so OpenMP workers may report errors too. */
#ifndef NEST_STATUS_H
#define NEST_STATUS_H

#include <stddef.h>

typedef enum {
  NEST_OK = 0,
  NEST_ERR_ARG = 1,      /* bad argument from the caller (a bug, or bad command line) */
  NEST_ERR_CONFIG = 2,   /* bad configuration file, key or value */
  NEST_ERR_IO = 3,       /* file cannot be opened, read or written */
  NEST_ERR_FORMAT = 4,   /* file contents are malformed (bad magic, truncated, bad value) */
  NEST_ERR_NOMEM = 5,    /* allocation failed */
  NEST_ERR_NUMERIC = 6,  /* NaN/Inf in loss or weights */
  NEST_ERR_MPI = 7,      /* an MPI call failed */
  NEST_ERR_MISMATCH = 8, /* ranks disagree (weight/mask hash) */
  NEST_ERR_INTERNAL = 9, /* an invariant broke: a bug in nest */
  NEST_STOPPED = 10,     /* not an error: a signal (SIGUSR1, SIGTERM, SIGINT) stopped the run
                            after a checkpoint was written; nest_mpi --resume continues it. Also
                            nest_mpi's exit code then (docs/restart.md) */
  NEST_ERR_COUNT
} nest_status;

/* Record an error message (printf-style) with its origin; returns `code` for chaining. */
nest_status nest_error_set(nest_status code, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Append a propagation frame (file:line) to the trace of the current error. */
void nest_error_trace(const char *file, int line);
/* The last recorded message ("" if none), its origin "src/x.c:12", and the trace. */
const char *nest_error_message(void);
const char *nest_error_origin(void);
const char *nest_error_backtrace(void);
/* Forget the current error (e.g. after it was reported or deliberately tolerated). */
void nest_error_clear(void);
/* Replace the current message (used when ranks agree on an error found on another rank). */
void nest_error_adopt(nest_status code, const char *message);
/* A short name for a code: "config", "io", ... */
const char *nest_status_name(nest_status s);

#define NEST_ERR(code, ...) nest_error_set((code), __FILE__, __LINE__, __VA_ARGS__)

#define NEST_CALL(expr)                                                                       \
  do {                                                                                        \
    nest_status nest_s_ = (expr);                                                             \
    if (nest_s_ != NEST_OK) {                                                                 \
      nest_error_trace(__FILE__, __LINE__);                                                   \
      return nest_s_;                                                                         \
    }                                                                                         \
  } while (0)

/* Like NEST_CALL but jumps to a cleanup label instead of returning; `st` receives the code. */
#define NEST_CALL_GOTO(st, expr, label)                                                       \
  do {                                                                                        \
    (st) = (expr);                                                                            \
    if ((st) != NEST_OK) {                                                                    \
      nest_error_trace(__FILE__, __LINE__);                                                   \
      goto label;                                                                             \
    }                                                                                         \
  } while (0)

/* Always-on assertion (ggml style): invariants are checked in release builds too. */
#define NEST_ASSERT(cond)                                                                     \
  do {                                                                                        \
    if (!(cond)) nest_assert_fail(#cond, __FILE__, __LINE__);                                 \
  } while (0)
void nest_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

/* Checked allocation helpers: return NEST_ERR_NOMEM with a message naming `what`. */
nest_status nest_malloc(void **p, size_t bytes, const char *what);
nest_status nest_calloc(void **p, size_t n, size_t size, const char *what);
/* 64-byte aligned (AVX-512 friendly) allocation; free with nest_free_aligned. */
nest_status nest_malloc_aligned(void **p, size_t bytes, const char *what);
void nest_free_aligned(void *p);

#endif
