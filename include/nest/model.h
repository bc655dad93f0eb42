/* model.h — save and load a network as an HDF5 "model file" (docs/model-format.md).
 *
 * A model file holds everything needed to rebuild and run a (possibly grown or pruned)
 * network: the input shape, class count, the current layer specs (kind, name,
 * hyper-parameters), every declared parameter's values, the masks of maskable parameters
 * and the layers' buffers (BN running statistics); since format 2 also the input record
 * (nest_model_input: how data reach the net — sample shape, scale, normalisation, crop, class
 * names, the training CSV's options, the splits), and maskable parameters are stored
 * compactly (the active positions' indices and values; docs/model-format.md). Format 1 files
 * (dense tensors, no record) are read too. A restart checkpoint
 * (docs/checkpoint-format.md) is a model file plus momentum datasets, a /state group of named
 * 1-D datasets (the run's position, counters, accumulators, event rows, config) and an
 * optional second net (the pruning guard's snapshot): so every tool that reads model files
 * (nest_report, nest_jaccard, model.init_from) reads checkpoints too. The restart container is
 * ckpt.h.
 *
 * Contract:
 *   - nest_model_save writes PATH.tmp, fsyncs it and renames it over PATH, so PATH is either
 *     the previous file untouched or the complete new one; on failure the tmp is removed.
 *     It reads the net only (a rank-0 job; no MPI).
 *   - nest_model_load validates the whole file before handing out a net: format name and
 *     version, shapes, every dataset present with the dims the rebuilt layers declare, masks
 *     0/1 (compact: indices increasing and in range), values finite and exactly zero where the
 *     mask is 0, and the input record when there is one. Any problem is
 *     NEST_ERR_FORMAT "PATH: what is wrong" (NEST_ERR_IO if the file cannot be opened at all).
 *     The loaded net has generation, params, masks and buffers of the saved one (so
 *     nest_net_hash(…, NEST_HASH_ALL) is equal), momentum and gradients 0.
 *   - nest_model_read_masks reads only the masks (no net is built, no parameter storage): what
 *     mask comparison tools need, and cheap for any architecture. It validates the masks as
 *     the loader does: one per maskable parameter the file's layers declare, none missing.
 * HDF5 stays behind this header (src/model.c, on the helpers of h5io.h); callers never see it.
 * HDF5's own error printing is switched off; every failure is one nest message naming the
 * file. */
#ifndef NEST_MODEL_H
#define NEST_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "nest/data.h"
#include "nest/net.h"
#include "nest/status.h"

#define NEST_MODEL_FORMAT "nest-model"
#define NEST_MODEL_VERSION 2     /* written; format 1 files (no /input, dense tensors) are read */
#define NEST_MODEL_VERSION_MIN 1 /* oldest format_version read */

/* Write `net` to `path` atomically (see above). Fails with NEST_ERR_ARG for a layer name
 * that cannot be an HDF5 group name ('/'), NEST_ERR_INTERNAL if the net breaks its own
 * invariant (a non-zero weight where the mask is 0: the file could not be loaded), and
 * NEST_ERR_IO for anything the file system refuses. */
nest_status nest_model_save(const nest_net *net, const char *path);

/* How data reach the model (format 2, the /input group and /labels of docs/model-format.md):
 * what nest_infer, the ONNX export and a user's own code need to feed new data exactly as
 * training did. Raw value v of feature / pixel j of channel c becomes the net's input
 *   x = (v * scale - mean[c]) / std[c]        (no normalisation: x = v * scale)
 * after a centre crop of crop x crop when crop > 0 (image shards trained on random crops). */
typedef struct {
  int known;             /* 1: recorded; 0: unknown (format 1 files, or saved without it) */
  nest_shape data_shape; /* one sample as the data files hold it: images [c, h, w], tabular
                            (d, 1, 1); the net's input is data_shape, or (c, crop, crop) */
  int crop;              /* centre crop at inference; 0 = none */
  int is_u8;             /* 1: raw values are bytes (IDX, image shards, u8 .h5); 0: floats */
  float scale;           /* raw -> normalisation units (the dataset's u8_scale: 1/255 for bytes,
                            1 for float features) */
  nest_norm norm;        /* nch = data_shape.c (per channel; per feature for tabular), or 0 */
  int nlabels;           /* = the net's nclasses */
  char **labels;         /* [nlabels] class names as the data had them (CSV strings; "0".."9"
                            for IDX digits): logit k is class labels[k] */
  /* How the training data were read: nest_infer's defaults for data of the same layout. */
  char format[8];        /* "idx", "csv", "h5", "shards" */
  int csv_label_col;     /* -1 = last column */
  char csv_delim;
  int csv_header;
  char csv_drop_cols[256];
  /* The split of the training file (provenance): data.val_split, data.test_split, run.seed. */
  double val_split, test_split;
  uint64_t split_seed;
} nest_model_input;

/* The sample, normalisation, crop and labels of a training set as the trainer has prepared it
 * (norm set, crop applied): BORROWS ds's norm arrays and class names, so ds must outlive *out
 * and *out is not freed. A set without class names (IDX) leaves labels NULL: the writer then
 * records "0", "1", .... Reader options and splits get their defaults (format from the set,
 * ',' delimiter, label column 0, no header, no drops, no splits): a caller with a config sets
 * them from it (nest_config_model_input does). */
void nest_model_input_from_data(const nest_dataset *ds, nest_model_input *out);
/* Free what nest_model_read_input / nest_model_load_input allocated. */
void nest_model_input_free(nest_model_input *in);
/* The input record of `path` (a model file or checkpoint): out->known = 0 when it has none.
 * Validated as nest_model_load does it. */
nest_status nest_model_read_input(const char *path, nest_model_input *out);

/* Where a model came from (optional root and per-layer attributes, see model-format.md):
 * what nest_report needs besides the net itself. */
typedef struct {
  char stage[32];       /* "seed", "grown", "pruned", "final" or "" (unknown) */
  char base_arch[256];  /* model.arch of the run: compression is measured against it at
                           width 1, dense ("" = unknown) */
  double val_error, test_error; /* at save time; NaN = not measured */
  int nlayers;          /* entries of act_frac and in_frac (0 = none) */
  double *act_frac;     /* [nlayers] Act%: share of non-zero outputs of each dense / conv layer
                           (after its ReLU) over the validation set; NaN = not measured or no
                           ReLU (output layer) and for layers without weights */
  double *in_frac;      /* [nlayers] share of non-zero inputs of each dense / conv layer over
                           the validation set (what its MACs actually multiply); NaN likewise */
  /* Top-5 errors at save time, NaN = not measured; written only when has_top5 = 1 (so an info
   * initialised without them, all zero, records none). nest_model_read_info sets has_top5 when
   * the file holds either. */
  int has_top5;
  double val_top5_error, test_top5_error;
  /* How data reach the model (written as /input and /labels); NULL = not recorded. Not read
   * back by nest_model_read_info (nest_model_read_input does). */
  const nest_model_input *input;
} nest_model_info;

/* nest_model_save plus the info attributes (info may be NULL: same as nest_model_save). */
nest_status nest_model_save_info(const nest_net *net, const nest_model_info *info,
                                 const char *path);
/* Read the info attributes (absent ones: "" / NaN / nlayers 0). act_frac, in_frac allocated;
 * free with nest_model_info_free. */
nest_status nest_model_read_info(const char *path, nest_model_info *out);
void nest_model_info_free(nest_model_info *info);

/* Read `path`, rebuild the net with nest_net_create(specs, …, max_batch, nthreads) and
 * copy values, masks and buffers in. On failure *out is NULL. The input record, when the file
 * has one, is validated too (so a model whose /input is broken is refused by every tool). */
nest_status nest_model_load(const char *path, int max_batch, int nthreads, nest_net **out);
/* nest_model_load, and the input record into *in (in->known = 0 when the file has none; free
 * with nest_model_input_free). On failure *out is NULL and *in holds nothing. */
nest_status nest_model_load_input(const char *path, int max_batch, int nthreads, nest_net **out,
                                  nest_model_input *in);

/* The mask of one maskable tensor as stored in a model file. */
typedef struct {
  char layer[NEST_NAME_LEN]; /* layer name, e.g. "fc1" */
  char param[NEST_NAME_LEN]; /* parameter name, e.g. "W" */
  int layer_index;           /* position of the layer in the network */
  int ndims, dims[4];
  size_t count;              /* product of dims */
  uint8_t *mask;             /* [count], each 0 (dormant) or 1 (active) */
} nest_model_mask;

/* All masks of a model file, in layer order, plus its description. */
typedef struct {
  int ntensors;
  nest_model_mask *tensors;
  char *arch;   /* root attribute "arch" (nest_net_arch_string of the saved net) */
  char *widths; /* root attribute "widths" (nest_net_widths_string) */
} nest_model_masks;

/* Read the mask ("<param>_mask") of every maskable parameter of a model file, in layer order.
 * Checks the format name and version, that the layers form a valid network, that each mask is
 * present, uint8 0/1 and has the dims of its parameter (whose values must be present too, but
 * are not read); builds no net. Free with nest_model_masks_free. */
nest_status nest_model_read_masks(const char *path, nest_model_masks **out);
void nest_model_masks_free(nest_model_masks **m);

#endif
