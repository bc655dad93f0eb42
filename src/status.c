/* status.c — the thread-local error record behind NEST_ERR / NEST_CALL, and checked malloc. */
#include "nest/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char err_msg[1024];
static _Thread_local char err_origin[256];
static _Thread_local char err_trace[512];

/* Strip the build-tree prefix so messages say "src/x.c:12", not an absolute path. */
static const char *short_path(const char *file) {
  const char *p = strstr(file, "/src/");
  if (!p) p = strstr(file, "/tests/");
  return p ? p + 1 : file;
}

nest_status nest_error_set(nest_status code, const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err_msg, sizeof err_msg, fmt, ap);
  va_end(ap);
  /* Keep it one line: a newline inside a message would break log parsing. */
  for (char *c = err_msg; *c; ++c)
    if (*c == '\n' || *c == '\r') *c = ' ';
  snprintf(err_origin, sizeof err_origin, "%s:%d", short_path(file), line);
  err_trace[0] = '\0';
  return code;
}

void nest_error_trace(const char *file, int line) {
  size_t len = strlen(err_trace);
  if (len + 64 >= sizeof err_trace) return;
  snprintf(err_trace + len, sizeof err_trace - len, "%s%s:%d", len ? " <- " : "",
           short_path(file), line);
}

const char *nest_error_message(void) { return err_msg; }
const char *nest_error_origin(void) { return err_origin; }
const char *nest_error_backtrace(void) { return err_trace; }

void nest_error_clear(void) {
  err_msg[0] = '\0';
  err_origin[0] = '\0';
  err_trace[0] = '\0';
}

void nest_error_adopt(nest_status code, const char *message) {
  (void)code;
  snprintf(err_msg, sizeof err_msg, "%s", message ? message : "");
}

const char *nest_status_name(nest_status s) {
  static const char *names[NEST_ERR_COUNT] = {"ok",      "argument", "config",   "io",
                                              "format",  "memory",   "numeric",  "mpi",
                                              "mismatch", "internal", "stopped"};
  return (s >= 0 && s < NEST_ERR_COUNT) ? names[s] : "unknown";
}

void nest_assert_fail(const char *expr, const char *file, int line) {
  fprintf(stderr, "nest: assertion failed: %s (%s:%d)\n", expr, short_path(file), line);
  fflush(stderr);
  abort();
}

nest_status nest_malloc(void **p, size_t bytes, const char *what) {
  *p = malloc(bytes ? bytes : 1);
  if (!*p) return NEST_ERR(NEST_ERR_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
  return NEST_OK;
}

nest_status nest_calloc(void **p, size_t n, size_t size, const char *what) {
  *p = calloc(n ? n : 1, size ? size : 1);
  if (!*p)
    return NEST_ERR(NEST_ERR_NOMEM, "out of memory allocating %zu x %zu bytes for %s", n, size,
                    what);
  return NEST_OK;
}

nest_status nest_malloc_aligned(void **p, size_t bytes, const char *what) {
  size_t rounded = (bytes + 63) / 64 * 64;
  *p = aligned_alloc(64, rounded ? rounded : 64);
  if (!*p) return NEST_ERR(NEST_ERR_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
  return NEST_OK;
}

void nest_free_aligned(void *p) { free(p); }
