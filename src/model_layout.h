/* model_layout.h — what the restart container (ckpt.c) shares with model.c: the model layout
 * (root attributes and /layers, docs/model-format.md) written under and read from any HDF5
 * location, so that a checkpoint is a model file plus extra state. Internal to the two
 * file-format modules (it exposes hid_t); everything else uses model.h / ckpt.h. */
#ifndef NEST_MODEL_LAYOUT_H
#define NEST_MODEL_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "nest/h5io.h"
#include "nest/model.h"

/* Refuse a net that could not be read back (a layer name with '/', a non-zero weight where
 * the mask is 0), before touching the file system; *maxmask = its largest maskable tensor (the
 * size of the u8 buffer nest_model_layout_write needs). */
nest_status nest_model_check(const nest_net *net, const char *path, size_t *maxmask);
/* The model layout of `net` under loc (the file or a group), with the info attributes when
 * info is not NULL and one "<param>_momentum" dataset per parameter when momentum = 1.
 * compress: 0 = none, 1 = masks deflated, 2 = masks and maskable weights deflated, 3 = the
 * compact form of model files (maskable parameters as active indices + values, 0/1 buffers as
 * uint8, all deflated; not with momentum). Restart checkpoints use CKPT_COMPRESS, chosen for
 * write speed, see bench_checkpoint. Every dataset carries the Fletcher-32 checksum. The input
 * record (info->input, when known) is written as /input and /labels under loc. Negative on
 * failure. */
herr_t nest_model_layout_write(hid_t loc, const nest_net *net, const nest_model_info *info,
                               uint8_t *u8, int momentum, int compress);
/* The input record `in` (nothing when NULL or not known) as /input and /labels under loc,
 * checked against the net first (NEST_ERR_ARG "PATH: /input: ..."); NEST_ERR_IO naming path if
 * HDF5 refuses. */
nest_status nest_model_layout_put_input(hid_t loc, const char *path, const nest_net *net,
                                        const nest_model_input *in);
/* The net stored under loc in the model layout, validated as nest_model_load does; momentum
 * = 1 also reads the "<param>_momentum" datasets (required then). */
nest_status nest_model_layout_read(hid_t loc, const char *path, int max_batch, int nthreads,
                                   int momentum, nest_net **out);
/* Open a model file read-only: a readable HDF5 file with format "nest-model" and a
 * format_version this build reads. */
nest_status nest_model_open_file(const char *path, hid_t *file);

#endif
