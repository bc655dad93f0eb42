/* data_internal.h — helpers shared by the files of src/data (not part of the public API). */
#ifndef NEST_DATA_INTERNAL_H
#define NEST_DATA_INTERNAL_H

#include "nest/data.h"

/* The HDF5 helpers h5.c (nest .h5 sets) and shards.c (image shards) use are those of the one
 * HDF5 helper module, nest/h5io.h. */

/* A dataset with n samples of `shape` read from `path`: labels [n] allocated; kind 1 also
 * allocates u8 [n, D], kind 2 f32 [n, D], kind 0 neither (the reader attaches its own buffer).
 * n and D usually come from the file: their product is checked before it becomes an
 * allocation (a size that cannot be addressed is NEST_ERR_FORMAT, an allocation that fails
 * NEST_ERR_NOMEM, both "PATH: ..." naming the sizes). */
nest_status nest_data_new(const char *path, int64_t n, nest_shape shape, int kind,
                          nest_dataset **out);
/* *bytes = n * d * elem, or NEST_ERR_FORMAT "PATH: N samples of D values (WHAT) ..." if that
 * does not fit in a size_t (n < 0 included). */
nest_status nest_data_bytes(const char *path, const char *what, int64_t n, size_t d, size_t elem,
                            size_t *bytes);
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
