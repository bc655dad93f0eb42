/* csv.c — tabular CSV reader: one sample per line, one label column, float32 features; and
 * the CSV field writer (nest_csv_put_field).
 *
 * The whole file is read into memory (through zlib, so a gzip-compressed CSV also works when
 * the format is forced to "csv"), split into lines (LF or CRLF; the last line may lack its
 * newline; blank lines are skipped) and fields (the delimiter; spaces/tabs around a field and
 * one pair of surrounding double quotes are stripped; quoted delimiters are NOT supported).
 * The first non-blank line fixes the column count (the header, when csv_header = 1).
 *
 * Result: shape (D, 1, 1) with D = columns - 1 (label) - dropped columns, f32 [n, D]; with
 * no_labels (new rows to predict), D = columns - dropped columns and the set is unlabeled.
 * Label mapping (decided over ALL rows of the file, so max_samples never changes class ids):
 *   - every label a non-negative integer (digits only, <= NEST_CSV_MAX_INT_LABEL):
 *     class = that integer, nclasses = max + 1, class_names = "0", "1", ... (decimal);
 *   - otherwise: classes are the distinct label strings in strcmp order, class_names = them;
 *   - with label_ref (e.g. the test set): the reference's mapping is used — a label is looked
 *     up by exact string in ref->class_names (or, if the reference has no names, must be an
 *     integer < ref->nclasses); an unknown label is an error naming the line.
 * Errors name PATH:LINE (1-based) and, for fields, the column (0-based, like the options). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "nest/data.h"
#include "nest/list.h"

#include "data_internal.h"

#define NEST_CSV_MAX_INT_LABEL 65535 /* larger integer labels are almost surely a wrong column */

/* Whole file (decompressed if gzip) into a NUL-terminated buffer. */
static nest_status csv_slurp(const char *path, char **out, size_t *len) {
  errno = 0;
  gzFile f = gzopen(path, "rb");
  if (!f)
    return NEST_ERR(NEST_ERR_IO, "%s: cannot open: %s", path,
                    errno ? strerror(errno) : "out of memory");
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  if (!buf) {
    gzclose(f);
    return NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory reading the file", path);
  }
  for (;;) {
    if (cap - n < 2) {
      char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        gzclose(f);
        return NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory reading the file", path);
      }
      buf = nb;
      cap *= 2;
    }
    size_t want = cap - n - 1;
    if (want > (1u << 30)) want = 1u << 30;
    int r = gzread(f, buf + n, (unsigned)want);
    if (r < 0) {
      int err;
      const char *msg = gzerror(f, &err);
      nest_status st = err == Z_ERRNO
                           ? NEST_ERR(NEST_ERR_IO, "%s: read error: %s", path, strerror(errno))
                           : NEST_ERR(NEST_ERR_FORMAT, "%s: corrupt gzip data: %s", path, msg);
      free(buf);
      gzclose(f);
      return st;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  gzclose(f);
  buf[n] = '\0';
  if (memchr(buf, '\0', n)) {
    free(buf);
    return NEST_ERR(NEST_ERR_FORMAT, "%s: contains NUL bytes: not a text CSV file", path);
  }
  *out = buf;
  *len = n;
  return NEST_OK;
}

/* Strip blanks (except the delimiter itself) and one pair of surrounding quotes, in place. */
static char *csv_trim(char *s, char delim) {
  while ((*s == ' ' || *s == '\t') && *s != delim) ++s;
  char *e = s + strlen(s);
  while (e > s && (e[-1] == ' ' || e[-1] == '\t') && e[-1] != delim) *--e = '\0';
  if (e - s >= 2 && s[0] == '"' && e[-1] == '"') {
    e[-1] = '\0';
    ++s;
  }
  return s;
}

/* Split line (NUL-terminated, modified in place) into at most `max` fields; returns the
 * number of fields found (possibly > max: the extra ones are counted, not stored). */
static int csv_split(char *line, char delim, char **fields, int max) {
  int nf = 0;
  char *p = line;
  for (;;) {
    char *d = strchr(p, delim);
    if (d) *d = '\0';
    if (nf < max) fields[nf] = csv_trim(p, delim);
    ++nf;
    if (!d) break;
    p = d + 1;
  }
  return nf;
}

static int csv_blank(const char *s) {
  for (; *s; ++s)
    if (!isspace((unsigned char)*s)) return 0;
  return 1;
}

/* Non-negative decimal integer (digits only, <= limit) -> 1 and *v; else 0. */
static int csv_uint(const char *s, long limit, long *v) {
  if (!*s) return 0;
  long x = 0;
  for (; *s; ++s) {
    if (*s < '0' || *s > '9') return 0;
    x = x * 10 + (*s - '0');
    if (x > limit) x = limit + 1; /* saturate: still "an integer", flagged as too large */
  }
  *v = x;
  return 1;
}

/* "0, 3,5" -> drop[col] = 1, split by the one comma-list parser (list.h: blanks around an item
 * ignored, an empty item refused); columns must be in [0, ncols). */
static nest_status csv_drops(const char *path, const char *spec, int ncols, char *drop) {
  if (!spec || !spec[0]) return NEST_OK;
  const int cap = (int)(strlen(spec) / 2 + 1); /* items a string this long can hold */
  char(*items)[NEST_LIST_ITEM] = NULL;
  NEST_CALL(nest_malloc((void **)&items, (size_t)cap * NEST_LIST_ITEM, "CSV drop list"));
  int n = 0;
  nest_status st = nest_list_split("csv_drop_cols", spec, items, cap, &n);
  if (st != NEST_OK) {
    char why[512];
    snprintf(why, sizeof why, "%s", nest_error_message());
    st = NEST_ERR(NEST_ERR_ARG, "%s: %s", path, why);
  }
  for (int i = 0; st == NEST_OK && i < n; ++i) {
    long c = 0;
    const char *p = items[i];
    while (*p >= '0' && *p <= '9' && c <= INT_MAX) c = c * 10 + (*p++ - '0');
    if (*p || p == items[i])
      st = NEST_ERR(NEST_ERR_ARG, "%s: bad csv_drop_cols '%s': '%s' is not a 0-based column number",
                    path, spec, items[i]);
    else if (c >= ncols)
      st = NEST_ERR(NEST_ERR_ARG,
                    "%s: csv_drop_cols: column %ld out of range (file has %d columns)", path, c,
                    ncols);
    else
      drop[c] = 1;
  }
  free(items);
  return st;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct {
  const char *name;
  int cls;
} csv_name;

static int cmp_name(const void *a, const void *b) {
  return strcmp(((const csv_name *)a)->name, ((const csv_name *)b)->name);
}

/* Map label strings to class ids with the reference set's mapping (see the file comment). */
static nest_status csv_map_ref(const char *path, const nest_dataset *ref, int64_t n,
                               char **lab, const int64_t *lineno, int32_t *labels) {
  csv_name *tab = NULL;
  if (ref->class_names) {
    NEST_CALL(nest_malloc((void **)&tab, sizeof *tab * (size_t)ref->nclasses, "class map"));
    for (int k = 0; k < ref->nclasses; ++k) tab[k] = (csv_name){ref->class_names[k], k};
    qsort(tab, (size_t)ref->nclasses, sizeof *tab, cmp_name);
  }
  for (int64_t i = 0; i < n; ++i) {
    long v = -1;
    if (tab) {
      csv_name key = {lab[i], 0};
      const csv_name *hit = bsearch(&key, tab, (size_t)ref->nclasses, sizeof *tab, cmp_name);
      if (hit) v = hit->cls;
    } else if (!csv_uint(lab[i], INT_MAX - 1, &v) || v >= ref->nclasses) {
      v = -1;
    }
    if (v < 0) {
      free(tab);
      return NEST_ERR(NEST_ERR_FORMAT,
                      "%s:%lld: unknown label '%.64s': not one of the %d classes of %s", path,
                      (long long)lineno[i], lab[i], ref->nclasses, ref->path);
    }
    labels[i] = (int32_t)v;
  }
  free(tab);
  return NEST_OK;
}

/* Own mapping: integer labels as-is, else sorted distinct strings. Fills ds->labels,
 * ds->nclasses, ds->class_names. */
static nest_status csv_map_own(nest_dataset *ds, int64_t n, char **lab, const int64_t *lineno) {
  const char *path = ds->path;
  int all_int = 1;
  long maxv = -1;
  for (int64_t i = 0; i < n && all_int; ++i) {
    long v;
    if (!csv_uint(lab[i], NEST_CSV_MAX_INT_LABEL, &v)) all_int = 0;
    else if (v > maxv) maxv = v;
  }
  if (all_int) {
    if (maxv > NEST_CSV_MAX_INT_LABEL) {
      for (int64_t i = 0; i < n; ++i) {
        long v = 0;
        csv_uint(lab[i], NEST_CSV_MAX_INT_LABEL, &v);
        if (v > NEST_CSV_MAX_INT_LABEL)
          return NEST_ERR(NEST_ERR_FORMAT,
                          "%s:%lld: integer label '%.32s' too large (max %d): wrong label column?",
                          path, (long long)lineno[i], lab[i], NEST_CSV_MAX_INT_LABEL);
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      long v = 0;
      csv_uint(lab[i], NEST_CSV_MAX_INT_LABEL, &v);
      ds->labels[i] = (int32_t)v;
    }
    ds->nclasses = (int)maxv + 1;
    NEST_CALL(nest_calloc((void **)&ds->class_names, (size_t)ds->nclasses, sizeof(char *),
                          "class names"));
    for (int k = 0; k < ds->nclasses; ++k) {
      char num[16];
      snprintf(num, sizeof num, "%d", k);
      NEST_CALL(nest_data_strdup(num, &ds->class_names[k]));
    }
    return NEST_OK;
  }

  /* String labels: sort a copy of the pointers, keep distinct values. */
  char **sorted = NULL;
  NEST_CALL(nest_malloc((void **)&sorted, sizeof(char *) * (size_t)n, "label sort"));
  memcpy(sorted, lab, sizeof(char *) * (size_t)n);
  qsort(sorted, (size_t)n, sizeof(char *), cmp_str);
  int64_t nd = 0;
  for (int64_t i = 0; i < n; ++i)
    if (nd == 0 || strcmp(sorted[i], sorted[nd - 1]) != 0) sorted[nd++] = sorted[i];
  if (nd > INT32_MAX / 2) {
    free(sorted);
    return NEST_ERR(NEST_ERR_FORMAT, "%s: %lld distinct labels: wrong label column?", path,
                    (long long)nd);
  }
  for (int64_t i = 0; i < n; ++i) {
    char **hit = bsearch(&lab[i], sorted, (size_t)nd, sizeof(char *), cmp_str);
    ds->labels[i] = (int32_t)(hit - sorted);
  }
  nest_status st = nest_calloc((void **)&ds->class_names, (size_t)nd, sizeof(char *), "class names");
  if (st == NEST_OK) {
    ds->nclasses = (int)nd; /* set first: destroy frees exactly the names allocated so far */
    for (int64_t k = 0; k < nd && st == NEST_OK; ++k)
      st = nest_data_strdup(sorted[k], &ds->class_names[k]);
  }
  free(sorted);
  if (st != NEST_OK) nest_error_trace(__FILE__, __LINE__);
  return st;
}

/* What the rows of a CSV file become while it is parsed. */
typedef struct {
  int ncols, label_col, dim; /* columns, the label's, feature columns kept */
  char *drop;                /* [ncols] 1 = dropped column */
  char **fields;             /* [ncols] the current line's fields */
  char **lab;                /* [maxrows] label strings (pointing into the file buffer) */
  int64_t *lineno;           /* [maxrows] 1-based line of each row */
  float *feat;               /* [maxrows, dim] */
  int64_t n;                 /* rows so far */
} csv_rows;

static void csv_rows_free(csv_rows *r) {
  free(r->drop);
  free(r->fields);
  free(r->lab);
  free(r->lineno);
  free(r->feat);
  memset(r, 0, sizeof *r);
}

/* The first non-blank line fixes the layout: columns, the label column, dropped and feature
 * columns; buffers for up to maxrows rows. */
static nest_status csv_layout(const nest_data_opts *o, const char *text, char delim,
                              int64_t maxrows, csv_rows *r) {
  const char *path = o->path;
  int nf = 1;
  for (const char *t = text; *t; ++t) nf += *t == delim;
  r->ncols = nf;
  r->label_col = o->csv_label_col < 0 ? nf + o->csv_label_col : o->csv_label_col;
  if (o->no_labels) r->label_col = -1; /* every column not dropped is a feature */
  else if (r->label_col < 0 || r->label_col >= nf)
    return NEST_ERR(NEST_ERR_ARG, "%s: label column %d out of range (file has %d columns)", path,
                    o->csv_label_col, nf);
  NEST_CALL(nest_calloc((void **)&r->drop, (size_t)nf, 1, "CSV drop flags"));
  NEST_CALL(csv_drops(path, o->csv_drop_cols, nf, r->drop));
  if (r->label_col >= 0 && r->drop[r->label_col])
    return NEST_ERR(NEST_ERR_ARG, "%s: csv_drop_cols drops the label column %d", path,
                    r->label_col);
  for (int c = 0; c < nf; ++c) r->dim += c != r->label_col && !r->drop[c];
  if (r->dim == 0)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: no feature columns (%d columns, label column %d)", path,
                    nf, r->label_col);
  size_t fbytes;
  NEST_CALL(nest_data_bytes(path, "CSV features", maxrows, (size_t)r->dim, sizeof(float), &fbytes));
  NEST_CALL(nest_malloc((void **)&r->fields, sizeof(char *) * (size_t)nf, "CSV fields"));
  NEST_CALL(nest_malloc((void **)&r->lab, sizeof(char *) * (size_t)maxrows, "CSV labels"));
  NEST_CALL(nest_malloc((void **)&r->lineno, sizeof(int64_t) * (size_t)maxrows, "CSV line numbers"));
  NEST_CALL(nest_malloc((void **)&r->feat, fbytes, "CSV features"));
  return NEST_OK;
}

/* One data row (already split into r->fields): its label string and finite features. */
static nest_status csv_row(const char *path, int64_t line, csv_rows *r) {
  float *row = r->feat + r->n * r->dim;
  int k = 0;
  for (int c = 0; c < r->ncols; ++c) {
    char *s = r->fields[c];
    if (c == r->label_col) {
      if (!*s)
        return NEST_ERR(NEST_ERR_FORMAT, "%s:%lld: column %d: empty label", path, (long long)line,
                        c);
      r->lab[r->n] = s;
      continue;
    }
    if (r->drop[c]) continue;
    if (!*s)
      return NEST_ERR(NEST_ERR_FORMAT, "%s:%lld: column %d: empty feature", path, (long long)line,
                      c);
    char *e;
    errno = 0;
    float v = strtof(s, &e);
    if (e == s || *e)
      return NEST_ERR(NEST_ERR_FORMAT, "%s:%lld: column %d: non-numeric feature '%.32s'", path,
                      (long long)line, c, s);
    if (isnan(v))
      return NEST_ERR(NEST_ERR_FORMAT, "%s:%lld: column %d: feature is NaN ('%.32s')", path,
                      (long long)line, c, s);
    if (isinf(v))
      return NEST_ERR(NEST_ERR_FORMAT, "%s:%lld: column %d: feature '%.32s' is Inf or beyond "
                      "float range", path, (long long)line, c, s);
    row[k++] = v;
  }
  r->lineno[r->n] = line;
  ++r->n;
  return NEST_OK;
}

/* Split the file (NUL-terminated buffer, modified in place) into rows. */
static nest_status csv_parse(const nest_data_opts *o, char *buf, size_t len, csv_rows *r) {
  const char *path = o->path;
  const char delim = o->csv_delim ? o->csv_delim : ',';
  /* Upper bound on rows: number of line breaks + 1. */
  int64_t maxrows = 1;
  for (size_t i = 0; i < len; ++i) maxrows += buf[i] == '\n';
  int64_t line = 0;
  int header_pending = o->csv_header;
  char *p = buf, *end = buf + len;
  while (p < end) {
    char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) eol = end;
    char *le = eol;
    if (le > p && le[-1] == '\r') --le;
    *le = '\0';
    char *text = p;
    p = eol + 1;
    ++line;
    if (csv_blank(text)) continue;
    if (r->ncols == 0) NEST_CALL(csv_layout(o, text, delim, maxrows, r));
    const int nf = csv_split(text, delim, r->fields, r->ncols);
    if (nf != r->ncols)
      return NEST_ERR(NEST_ERR_FORMAT, "%s:%lld: expected %d columns, got %d", path,
                      (long long)line, r->ncols, nf);
    if (header_pending) {
      header_pending = 0;
      continue;
    }
    NEST_CALL(csv_row(path, line, r));
  }
  if (r->n == 0) return NEST_ERR(NEST_ERR_FORMAT, "%s: no data rows", path);
  return NEST_OK;
}

/* Class ids of the first ds->n rows (of r->n), mapped over ALL rows (see the file comment). */
static nest_status csv_labels(nest_dataset *ds, const nest_dataset *label_ref, const csv_rows *r) {
  const char *path = ds->path;
  const int64_t keep = ds->n;
  int32_t *all = NULL;
  NEST_CALL(nest_malloc((void **)&all, sizeof(int32_t) * (size_t)r->n, "CSV labels"));
  nest_status st;
  if (label_ref) {
    /* Map every row (not only the kept ones) so an unknown label anywhere is reported. */
    st = csv_map_ref(path, label_ref, r->n, r->lab, r->lineno, all);
    if (st == NEST_OK) memcpy(ds->labels, all, sizeof(int32_t) * (size_t)keep);
    free(all);
    NEST_CALL(st);
    ds->nclasses = label_ref->nclasses;
    if (!label_ref->class_names) return NEST_OK;
    NEST_CALL(nest_calloc((void **)&ds->class_names, (size_t)ds->nclasses, sizeof(char *),
                          "class names"));
    for (int c = 0; c < ds->nclasses; ++c)
      NEST_CALL(nest_data_strdup(label_ref->class_names[c], &ds->class_names[c]));
    return NEST_OK;
  }
  /* Decide the mapping over all rows, then keep the first `keep` labels. */
  int32_t *kept_labels = ds->labels;
  ds->labels = all;
  ds->n = r->n;
  st = csv_map_own(ds, r->n, r->lab, r->lineno);
  memcpy(kept_labels, all, sizeof(int32_t) * (size_t)keep);
  ds->labels = kept_labels;
  ds->n = keep;
  free(all);
  NEST_CALL(st);
  return NEST_OK;
}

nest_status nest_data_csv_read(const nest_data_opts *o, const nest_dataset *label_ref,
                               nest_dataset **out) {
  *out = NULL;
  const char *path = o->path;
  const char delim = o->csv_delim ? o->csv_delim : ',';
  if (delim == '\n' || delim == '\r' || delim == '"')
    return NEST_ERR(NEST_ERR_ARG, "%s: bad CSV delimiter '\\x%02x'", path, (unsigned char)delim);
  char *buf = NULL;
  size_t len = 0;
  NEST_CALL(csv_slurp(path, &buf, &len));
  csv_rows r;
  memset(&r, 0, sizeof r);
  nest_dataset *ds = NULL;
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, csv_parse(o, buf, len, &r), done);
  const int64_t keep = (o->max_samples > 0 && o->max_samples < r.n) ? o->max_samples : r.n;
  NEST_CALL_GOTO(st, nest_data_new(path, keep, (nest_shape){r.dim, 1, 1}, 0, &ds), done);
  ds->f32 = r.feat; /* [maxrows, dim] allocation, first keep rows used */
  r.feat = NULL;
  ds->u8_scale = 1.0f;
  if (o->no_labels) { /* labels all 0 (ds->unlabeled); the class list is the reference's */
    memset(ds->labels, 0, sizeof(int32_t) * (size_t)keep);
    ds->unlabeled = 1;
    ds->nclasses = label_ref ? label_ref->nclasses : 1;
  } else {
    NEST_CALL_GOTO(st, csv_labels(ds, label_ref, &r), done);
  }
  *out = ds;
  ds = NULL;
done:
  free(buf);
  csv_rows_free(&r);
  nest_dataset_destroy(&ds);
  return st;
}

void nest_csv_put_field(FILE *f, const char *s) {
  if (!strpbrk(s, ",\"\r\n")) {
    fputs(s, f);
    return;
  }
  fputc('"', f);
  for (; *s; ++s) {
    if (*s == '"') fputc('"', f);
    fputc(*s, f);
  }
  fputc('"', f);
}
