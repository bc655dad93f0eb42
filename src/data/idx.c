/* idx.c — MNIST IDX reader: an images file (magic 0x00000803, u8 [N, rows, cols]) plus a labels
 * file (magic 0x00000801, u8 [N]), each raw or gzip-compressed. Both are read through zlib's
 * gzopen/gzread, which passes non-gzip files through unchanged, so one code path serves both.
 *
 * Result: shape (1, rows, cols), u8 pixels with u8_scale 1/255, int32 labels.
 * nclasses = max(10, max label + 1): labels are bytes (<= 255), so every label is in range;
 * MNIST-style files always get at least 10 classes even if a subset lacks the 9s.
 * Checks: magic, non-zero dimensions, image/label count mismatch, truncation (of the
 * decompressed stream), corrupt gzip data, and trailing bytes after the last record (rejected:
 * a file longer than its header says is more likely a wrong file than a harmless pad). With
 * max_samples > 0 only the first records are read, so the rest is not checked. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "nest/data.h"

#include "data_internal.h"

#define IDX_IMAGES_MAGIC 0x00000803u
#define IDX_LABELS_MAGIC 0x00000801u
#define IDX_CHUNK (1 << 24) /* bytes per gzread call and first buffer size */

static uint32_t be32(const unsigned char *b) {
  return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

static nest_status idx_open(const char *path, gzFile *f) {
  errno = 0;
  *f = gzopen(path, "rb");
  if (!*f)
    return NEST_ERR(NEST_ERR_IO, "%s: cannot open: %s", path,
                    errno ? strerror(errno) : "out of memory");
  gzbuffer(*f, 1 << 18); /* larger than the 8 KiB default: fewer read() calls */
  return NEST_OK;
}

/* Read up to `bytes` bytes; *got = how many arrived before end of data. A gzip stream that
 * ends early counts as end of data (the caller reports truncation); corrupt data is an error. */
static nest_status idx_read(gzFile f, const char *path, void *buf, int64_t bytes, int64_t *got) {
  int64_t done = 0;
  while (done < bytes) {
    int64_t want = bytes - done < IDX_CHUNK ? bytes - done : IDX_CHUNK;
    int r = gzread(f, (char *)buf + done, (unsigned)want);
    if (r < 0) {
      int err;
      const char *msg = gzerror(f, &err);
      if (err == Z_BUF_ERROR) break; /* "unexpected end of file": truncated gzip stream */
      if (err == Z_ERRNO) return NEST_ERR(NEST_ERR_IO, "%s: read error: %s", path, strerror(errno));
      return NEST_ERR(NEST_ERR_FORMAT, "%s: corrupt gzip data: %s", path, msg);
    }
    if (r == 0) break;
    done += r;
  }
  *got = done;
  return NEST_OK;
}

/* Header of `hdr_bytes` bytes starting with the 4-byte magic. */
static nest_status idx_header(gzFile f, const char *path, uint32_t magic, const char *what,
                              unsigned char *hdr, int hdr_bytes) {
  int64_t got;
  NEST_CALL(idx_read(f, path, hdr, hdr_bytes, &got));
  if (got >= 4 && be32(hdr) != magic) {
    uint32_t m = be32(hdr);
    const char *hint = m == IDX_LABELS_MAGIC   ? " (this is an IDX labels file)"
                       : m == IDX_IMAGES_MAGIC ? " (this is an IDX images file)"
                                               : "";
    return NEST_ERR(NEST_ERR_FORMAT, "%s: bad magic 0x%08x, expected 0x%08x (IDX %s)%s", path, m,
                    magic, what, hint);
  }
  if (got < hdr_bytes)
    return NEST_ERR(NEST_ERR_FORMAT, "%s: truncated: expected %d header bytes, got %lld", path,
                    hdr_bytes, (long long)got);
  return NEST_OK;
}

/* The body: exactly `bytes` bytes after a `hdr`-byte header. The buffer grows as data arrives,
 * so a corrupt header claiming terabytes fails as "truncated", not as an absurd malloc. */
static nest_status idx_body(gzFile f, const char *path, int64_t hdr, int64_t bytes,
                            uint8_t **out) {
  int64_t cap = bytes < IDX_CHUNK ? bytes : IDX_CHUNK, done = 0;
  uint8_t *buf = NULL;
  NEST_CALL(nest_malloc((void **)&buf, (size_t)cap, "IDX data"));
  for (;;) {
    int64_t got;
    nest_status st = idx_read(f, path, buf + done, cap - done, &got);
    if (st != NEST_OK) {
      free(buf);
      nest_error_trace(__FILE__, __LINE__);
      return st;
    }
    done += got;
    if (done < cap) {
      free(buf);
      return NEST_ERR(NEST_ERR_FORMAT, "%s: truncated: expected %lld bytes, got %lld", path,
                      (long long)(hdr + bytes), (long long)(hdr + done));
    }
    if (done == bytes) break;
    int64_t ncap = cap * 2 < bytes ? cap * 2 : bytes;
    uint8_t *nb = realloc(buf, (size_t)ncap);
    if (!nb) {
      free(buf);
      return NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory growing the IDX buffer to %lld bytes",
                      path, (long long)ncap);
    }
    buf = nb;
    cap = ncap;
  }
  *out = buf;
  return NEST_OK;
}

/* After reading every record: anything left is rejected (see the file comment). */
static nest_status idx_expect_end(gzFile f, const char *path, int64_t records) {
  unsigned char extra[1];
  int64_t got;
  NEST_CALL(idx_read(f, path, extra, 1, &got));
  if (got)
    return NEST_ERR(NEST_ERR_FORMAT,
                    "%s: trailing data after the %lld records its header announces", path,
                    (long long)records);
  return NEST_OK;
}

nest_status nest_data_idx_read(const char *images_path, const char *labels_path,
                               int64_t max_samples, nest_dataset **out) {
  *out = NULL;
  if (!images_path) return NEST_ERR(NEST_ERR_ARG, "nest_data_idx_read: no images file");
  const int labelled = labels_path && *labels_path; /* else: images to predict, no labels */
  gzFile fi = NULL, fl = NULL;
  uint8_t *pix = NULL, *lab = NULL;
  nest_dataset *ds = NULL;
  nest_status st = NEST_OK;
  unsigned char hi[16], hl[8];

  NEST_CALL_GOTO(st, idx_open(images_path, &fi), done);
  if (labelled) NEST_CALL_GOTO(st, idx_open(labels_path, &fl), done);
  NEST_CALL_GOTO(st, idx_header(fi, images_path, IDX_IMAGES_MAGIC, "u8 images", hi, 16), done);
  if (labelled)
    NEST_CALL_GOTO(st, idx_header(fl, labels_path, IDX_LABELS_MAGIC, "u8 labels", hl, 8), done);

  uint32_t n = be32(hi + 4), rows = be32(hi + 8), cols = be32(hi + 12);
  uint32_t nl = labelled ? be32(hl + 4) : n;
  if (n == 0 || rows == 0 || cols == 0 || rows > (1u << 15) || cols > (1u << 15)) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: bad dimensions %u x %u x %u (count x rows x cols)",
                  images_path, n, rows, cols);
    goto done;
  }
  if (nl != n) {
    st = NEST_ERR(NEST_ERR_FORMAT, "%s: count mismatch: %u images but %s has %u labels",
                  images_path, n, labels_path, nl);
    goto done;
  }
  int64_t keep = (max_samples > 0 && max_samples < (int64_t)n) ? max_samples : (int64_t)n;
  int64_t dim = (int64_t)rows * cols;
  NEST_CALL_GOTO(st, idx_body(fi, images_path, 16, keep * dim, &pix), done);
  if (labelled) NEST_CALL_GOTO(st, idx_body(fl, labels_path, 8, keep, &lab), done);
  if (keep == (int64_t)n) {
    NEST_CALL_GOTO(st, idx_expect_end(fi, images_path, keep), done);
    if (labelled) NEST_CALL_GOTO(st, idx_expect_end(fl, labels_path, keep), done);
  }

  nest_shape shape = {1, (int)rows, (int)cols};
  NEST_CALL_GOTO(st, nest_data_new(images_path, keep, shape, 0, &ds), done);
  int maxl = 0;
  for (int64_t i = 0; i < keep; ++i) {
    ds->labels[i] = labelled ? lab[i] : 0;
    if (ds->labels[i] > maxl) maxl = ds->labels[i];
  }
  ds->nclasses = maxl + 1 > 10 ? maxl + 1 : 10;
  ds->unlabeled = !labelled;
  ds->u8 = pix;
  ds->u8_scale = 1.0f / 255.0f;
  pix = NULL;
  *out = ds;
  ds = NULL;

done:
  if (fi) gzclose(fi);
  if (fl) gzclose(fl);
  free(pix);
  free(lab);
  nest_dataset_destroy(&ds);
  return st;
}
