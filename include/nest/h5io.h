/* h5io.h — the HDF5 helper module: the small HDF5 helpers every nest file format needs, written
 * once (attributes, datasets, groups, files, quiet error stack, closing).
 *
 * Who calls HDF5: this module and the file-format modules built on it, and nobody else —
 *   src/model.c       model files (model.h, docs/model-format.md),
 *   src/ckpt.c        the restart-checkpoint container (ckpt.h, docs/checkpoint-format.md),
 *   src/data/h5.c     nest's HDF5 dataset format (docs/data-format.md),
 *   src/data/shards.c image shards (docs/data-format.md; images themselves are read with
 *                     pread, see shards.c).
 * Everything else reaches HDF5 files through those modules' nest_* functions and never sees an
 * hid_t; this header includes <hdf5.h> and is only for them (and for tests that craft files).
 *
 * Conventions: readers return nest_status with one FORMAT/IO message naming the file (PATH),
 * the object ("WHERE/NAME", WHERE = "" for the root, "/layers/000_fc1" for a layer group) and
 * the problem; writers return HDF5's herr_t (negative on failure) so that a format module can
 * chain a sequence of writes and report one "PATH: writing ... failed (disk full?)".
 * HDF5's own error printing is switched off by nest_h5_quiet (every entry point of the format
 * modules calls it). Serial HDF5 only: no MPI here. */
#ifndef NEST_H5IO_H
#define NEST_H5IO_H

#include <hdf5.h>
#include <stddef.h>

#include "nest/status.h"

/* Longest string attribute or fixed-length string nest reads (arch strings of very deep nets
 * stay far below it). */
#define NEST_H5_MAX_STR 65536

/* Silence HDF5's own error-stack printing: nest reports its own one-line errors. */
void nest_h5_quiet(void);
/* Close *id with `close` if it is open, and mark it closed (-1). */
void nest_h5_close(hid_t *id, herr_t (*close)(hid_t));

/* ---- files ------------------------------------------------------------------------------- */

/* Open an existing file read-only. `what` says what it should be ("a nest model file"):
 *   NEST_ERR_IO     "PATH: cannot open: <strerror>" (missing, unreadable), "PATH: is a
 *                   directory, not WHAT";
 *   NEST_ERR_FORMAT "PATH: not an HDF5 file (WHAT was expected)", "PATH: cannot open as HDF5
 *                   (truncated or corrupt file?)". */
nest_status nest_h5_open_read(const char *path, const char *what, hid_t *file);
/* Open an existing file read-only without a word (HDF5's errors silenced): -1 if it is not an
 * HDF5 file or cannot be opened. For probes ("is this a shard / a checkpoint?"). */
hid_t nest_h5_probe(const char *path);
/* Create (truncate) a file with object headers of at least format `low` (H5F_LIBVER_V18 or
 * H5F_LIBVER_V110); negative on failure. */
hid_t nest_h5_create(const char *path, H5F_libver_t low);
/* Start writing `path` atomically (atomic.h): *file = a new HDF5 file (nest_h5_create) at
 * tmp = "PATH.tmp" (cap bytes). NEST_ERR_IO naming the file otherwise, nothing left behind. */
nest_status nest_h5_begin(const char *path, char *tmp, size_t cap, H5F_libver_t low,
                          hid_t *file);
/* Close the complete *file (-1 after) and rename tmp over path (atomic.h). On failure ("TMP:
 * closing the HDF5 file failed (disk full?)" or the rename's error) tmp is removed and path is
 * untouched. */
nest_status nest_h5_commit(hid_t *file, const char *tmp, const char *path);
/* Give up a file being written: close it if open, remove tmp. */
void nest_h5_abort(hid_t *file, const char *tmp);

/* ---- groups ------------------------------------------------------------------------------- */

/* Open group WHERE/NAME of loc: NEST_ERR_FORMAT "PATH: missing group WHERE/NAME" when there is
 * no such link, "PATH: WHERE/NAME is not a group" when it is something else (a dataset, a
 * dangling link). */
nest_status nest_h5_group_open(hid_t loc, const char *path, const char *where, const char *name,
                               hid_t *g);

/* ---- attributes --------------------------------------------------------------------------- */

/* Attribute NAME of obj (WHERE names obj in messages, "/" for the root): it must exist, be of
 * type class `cls` and hold `n` elements (0: a scalar or one element). */
nest_status nest_h5_attr_open(hid_t obj, const char *path, const char *where, const char *name,
                              H5T_class_t cls, int n, hid_t *attr);
/* nest_h5_attr_open, then read it as memory type `mtype` into v. */
nest_status nest_h5_attr_read(hid_t obj, const char *path, const char *where, const char *name,
                              H5T_class_t cls, int n, hid_t mtype, void *v);
/* One integer. */
nest_status nest_h5_attr_int(hid_t obj, const char *path, const char *where, const char *name,
                             int *v);
/* A scalar string (variable- or fixed-length, at most NEST_H5_MAX_STR bytes) as a malloc'd C
 * string. */
nest_status nest_h5_attr_str(hid_t obj, const char *path, const char *where, const char *name,
                             char **out);

/* Scalar (n = 0) or 1-D [n] attribute of file type ftype from v (memory type mtype). */
herr_t nest_h5_put_attr(hid_t obj, const char *name, hid_t ftype, hid_t mtype, int n,
                        const void *v);
/* Scalar int32. */
herr_t nest_h5_put_int(hid_t obj, const char *name, int v);
/* Scalar variable-length UTF-8 string (what h5py reads back as str). */
herr_t nest_h5_put_str(hid_t obj, const char *name, const char *s);
/* Scalar fixed-length ASCII string of strlen(s) bytes. */
herr_t nest_h5_put_fixed_str(hid_t obj, const char *name, const char *s);

/* ---- datasets and attributes of small arrays --------------------------------------------- */

/* [n] variable-length UTF-8 strings as an attribute (as_attr = 1) or a 1-D dataset. */
herr_t nest_h5_put_strs(hid_t loc, const char *name, char *const *s, int n, int as_attr);
/* [n] strings as a 1-D dataset of fixed-length UTF-8 strings, NUL-padded to the longest (at
 * least 1 byte): no global heap (a variable-length string dataset costs a 4 KiB heap collection
 * of its own; h5py reads these as bytes). */
herr_t nest_h5_put_fixed_strs(hid_t loc, const char *name, char *const *s, int n);
/* Read `n` strings (variable- or fixed-length) of attribute (is_attr) or dataset NAME of loc,
 * each malloc'd, into a malloc'd array (*out, free both). FORMAT "PATH: <object> must be N
 * strings" otherwise. */
nest_status nest_h5_read_strs(hid_t loc, const char *path, const char *name, int is_attr, int n,
                              char ***out);
/* Read exactly `len` finite floats (positive = 1: each > 0 too) of attribute (is_attr) or 1-D
 * dataset NAME of loc into a malloc'd array. */
nest_status nest_h5_read_floats(hid_t loc, const char *path, const char *name, int is_attr,
                                int len, int positive, float **out);

/* ---- datasets ----------------------------------------------------------------------------- */

/* Dataset creation flags of nest_h5_put_dataset. */
enum {
  NEST_H5_DEFLATE = 1,    /* deflate level 4 (when the filter is available) */
  NEST_H5_SHUFFLE = 2,    /* byte shuffle before deflate (multi-byte elements) */
  NEST_H5_FLETCHER32 = 4, /* Fletcher-32 checksum of every chunk, verified on every read */
  NEST_H5_CONTIGUOUS = 8  /* no chunks, no filters (small datasets, pread-able images) */
};
/* Dataset NAME of loc holding all of buf (rank <= 4, elem = bytes per element). Unless
 * NEST_H5_CONTIGUOUS, a dataset with elements is chunked in about 1 MiB pieces along its first
 * dimension (whole rows; a row of 4 GB or more, HDF5's chunk limit, stays contiguous and
 * unfiltered) with the filters `flags` asks for, in the order shuffle, deflate, checksum (the
 * checksum covers the bytes as stored). An empty dataset is contiguous and not written. */
herr_t nest_h5_put_dataset(hid_t loc, const char *name, int rank, const hsize_t *dims,
                           hid_t ftype, hid_t mtype, size_t elem, unsigned flags,
                           const void *buf);
/* Open dataset WHERE/NAME of loc (WHERE = "" for the root): NEST_ERR_FORMAT "PATH: missing
 * dataset WHERE/NAME", "... is not a readable dataset", "... has rank R, expected MIN to MAX"
 * (MAX <= 4). Its dims, and its type if type is not NULL (the caller closes it). */
nest_status nest_h5_dset_open(hid_t loc, const char *path, const char *where, const char *name,
                              int min_rank, int max_rank, hid_t *d, int *rank, hsize_t dims[4],
                              hid_t *type);
/* 1 if `type` is an 8-bit unsigned integer. */
int nest_h5_is_u8(hid_t type);
/* Read rows [first, first + count) of dataset d (rank, dims as nest_h5_dset_open gave them)
 * as memory type mtype into buf. FORMAT "PATH: cannot read WHAT (corrupt or truncated file?)". */
nest_status nest_h5_read_rows(hid_t d, const char *path, const char *what, int rank,
                              const hsize_t *dims, hsize_t first, hsize_t count, hid_t mtype,
                              void *buf);

#endif
