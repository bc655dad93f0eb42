/* data_internal.h — helpers shared by the files of src/data (not part of the public API). */
#ifndef NEST_DATA_INTERNAL_H
#define NEST_DATA_INTERNAL_H

#include <hdf5.h>

#include "nest/data.h"

/* HDF5 helpers shared by h5.c (nest .h5 sets) and shards.c (image shards). */
/* Silence HDF5's own error stack printing: nest reports its own one-line errors. */
static inline void nest_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
/* Close *id with `close` if it is open, and mark it closed (-1). */
static inline void nest_h5_close(hid_t *id, herr_t (*close)(hid_t)) {
  if (*id >= 0) close(*id);
  *id = -1;
}
/* A scalar int32 attribute `name` = v on loc (h5.c). Negative on failure. */
herr_t nest_h5_put_int_attr(hid_t loc, const char *name, int v);

/* A dataset with n samples of `shape`: labels [n] allocated; kind 1 also allocates u8 [n, D],
 * kind 2 f32 [n, D], kind 0 neither (the reader attaches its own buffer). */
nest_status nest_data_new(const char *path, int64_t n, nest_shape shape, int kind,
                          nest_dataset **out);
nest_status nest_data_strdup(const char *s, char **out);
void nest_data_free_names(char **names, int n);

/* The readers behind nest_dataset_load. */
nest_status nest_data_idx_read(const char *images_path, const char *labels_path,
                               int64_t max_samples, nest_dataset **out);
nest_status nest_data_csv_read(const nest_data_opts *o, const nest_dataset *label_ref,
                               nest_dataset **out);
nest_status nest_data_h5_read(const char *path, int64_t max_samples, nest_dataset **out);

/* Image shards (shards.c). 1 if path is an HDF5 file with nest_format = "image-shard". */
int nest_data_is_shard(const char *path);
/* Open image shards: `pattern` (contains '*' or '?') is expanded with glob(3), sorted, and
 * must match a whole set; otherwise it names one shard file. Labels are read, images not. */
nest_status nest_data_shards_open(const char *pattern, int64_t max_samples, nest_dataset **out);
void nest_data_shards_free(struct nest_shards *s);

#endif
