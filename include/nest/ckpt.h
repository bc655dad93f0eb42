/* ckpt.h — the restart-checkpoint container (docs/checkpoint-format.md): a model file
 * (model.h's layout: root attributes, /layers) plus "<param>_momentum" datasets, a /state group
 * of named 1-D datasets, root string attributes and optional further nets in groups (the
 * pruning guard's snapshot). What goes in is restart.c's business; this module only stores
 * and checks. Every dataset is chunked with HDF5's Fletcher-32 checksum; writing is atomic
 * (PATH.tmp, fsync, rename: atomic.h). HDF5 stays behind this header (src/ckpt.c, on the
 * helpers of h5io.h); every failure is one nest message naming the file. */
#ifndef NEST_CKPT_H
#define NEST_CKPT_H

#include <stddef.h>

#include "nest/model.h"
#include "nest/net.h"
#include "nest/status.h"

#define NEST_CHECKPOINT_VERSION 1

typedef struct nest_ckpt nest_ckpt; /* a checkpoint file open for writing or reading */

/* Element types of /state datasets. */
typedef enum { NEST_CK_I64, NEST_CK_F64, NEST_CK_F32, NEST_CK_U8 } nest_ck_type;

/* Start writing `path`: creates PATH.tmp (nothing at PATH changes until commit). Every dataset
 * of a checkpoint is chunked with HDF5's Fletcher-32 checksum filter, and the file uses the
 * 1.10 object-header format, whose metadata (attributes included) carries checksums too. */
nest_status nest_ckpt_create(const char *path, nest_ckpt **out);
/* The net as a model file's layout (root attributes + /layers) under `group` (NULL = the root),
 * with one "<param>_momentum" dataset per parameter when momentum = 1. */
nest_status nest_ckpt_put_net(nest_ckpt *w, const char *group, const nest_net *net, int momentum);
/* How data reach the checkpoint's root net (model.h's input record, /input and /labels at the
 * root): so that a checkpoint is as self-contained as a model file (nest_export, nest_infer).
 * Checked against net (NEST_ERR_ARG); nothing written when in is NULL or not known. */
nest_status nest_ckpt_put_input(nest_ckpt *w, const nest_net *net, const nest_model_input *in);
/* /state/<name>: n elements (n may be 0) of type `type` from v. */
nest_status nest_ckpt_put(nest_ckpt *w, const char *name, nest_ck_type type, const void *v,
                          size_t n);
/* /state/<name>: n strings, each stored NUL-padded in `width` bytes (strings[i] at
 * base + i * stride, longer ones cut at width - 1). */
nest_status nest_ckpt_put_strs(nest_ckpt *w, const char *name, const char *base, size_t stride,
                               size_t n, size_t width);
/* A root attribute (string). */
nest_status nest_ckpt_put_attr(nest_ckpt *w, const char *name, const char *value);
/* Close, fsync, rename PATH.tmp over PATH, fsync the directory (atomic.h). On failure PATH is
 * untouched and the tmp removed. *w is freed either way. */
nest_status nest_ckpt_commit(nest_ckpt **w);
/* Give up a checkpoint being written (removes the tmp) or close one being read. */
void nest_ckpt_close(nest_ckpt **w);

/* 1 if path is a restart checkpoint, complete or not: an HDF5 file whose root has the
 * checkpoint_version attribute (any value). What must never be overwritten by anything but
 * the run that wrote it (nest_export refuses such an output). 0 otherwise, or if unreadable. */
int nest_ckpt_is_checkpoint(const char *path);
/* Open a checkpoint for reading: a model file (format, version) with a root attribute
 * checkpoint_version equal to NEST_CHECKPOINT_VERSION. NEST_ERR_FORMAT "PATH: why" otherwise. */
nest_status nest_ckpt_open(const char *path, nest_ckpt **out);
/* 1 if /state/<name> exists. */
int nest_ckpt_has(nest_ckpt *r, const char *name);
/* Element count of /state/<name> (error if missing). */
nest_status nest_ckpt_len(nest_ckpt *r, const char *name, size_t *n);
/* Read /state/<name>, which must hold exactly n elements of `type`, into v. A checksum
 * mismatch is NEST_ERR_FORMAT naming the file and dataset. */
nest_status nest_ckpt_get(nest_ckpt *r, const char *name, nest_ck_type type, void *v, size_t n);
/* Read a string dataset written by nest_ckpt_put_strs: *out = n * width bytes (malloc'd, each
 * string NUL-terminated within its width); *n and *width from the file. */
nest_status nest_ckpt_get_strs(nest_ckpt *r, const char *name, char **out, size_t *n,
                               size_t *width);
/* A root string attribute (malloc'd). */
nest_status nest_ckpt_get_attr(nest_ckpt *r, const char *name, char **out);
/* The net stored under `group` (NULL = the root), validated as nest_model_load does, with
 * momentum from the "<param>_momentum" datasets when momentum = 1 (required then). */
nest_status nest_ckpt_get_net(nest_ckpt *r, const char *group, int max_batch, int nthreads,
                              int momentum, nest_net **out);
/* 1 if `group` exists in the file. */
int nest_ckpt_has_group(nest_ckpt *r, const char *group);

#endif
