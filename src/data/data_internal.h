/* data_internal.h — helpers shared by the files of src/data (not part of the public API). */
#ifndef NEST_DATA_INTERNAL_H
#define NEST_DATA_INTERNAL_H

#include "nest/data.h"

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
