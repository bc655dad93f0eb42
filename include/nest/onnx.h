/* onnx.h — export a network as a standard ONNX model (docs/onnx.md).
 *
 * The file is an ONNX ModelProto (opset NEST_ONNX_OPSET of the default domain, the IR version
 * of the onnx.proto nest was built with), written with protobuf-c from the onnx.proto the
 * system's ONNX package installs (Debian: libonnx-dev); the C code is generated at build time.
 * Graph (N = the symbolic batch dimension "N"):
 *   input  "input"  float [N, C, H, W] (images) or [N, D] (tabular: an input of shape (D, 1, 1)
 *                   and no conv2d / maxpool layer), the raw values as the data hold them
 *                   (pixels 0..255 for IDX / image data: meta->input_scale takes them to the
 *                   units the normalisation was computed in); with meta->reduce [N, d], the d
 *                   raw features the reduction takes (D = reduce->k is then the net's input)
 *   "input.scale"   Mul by input_scale (only when it is not 1)
 *   "reduce.*"      with meta->reduce (DR+SCANN, reduce.h), on the scaled rows [N, d]: Sub min,
 *                   Mul s (s = 1 / (max - min), 0 for a constant feature), Sub mean (all [d]),
 *                   MatMul componentsᵀ [d, k] -> [N, k]: nest_reduce_apply's float steps, in its
 *                   order (scale, reduce, normalise: what nest_infer does, model.h)
 *   "input.norm"    Sub mean[c], Div std[c] (per channel [C, 1, 1] or per feature [D]), when
 *                   meta->norm is given: exactly nest's (v * u8_scale - mean) / std (data.h)
 *   then per layer, in order:
 *     dense      Flatten (when its input is [N, C, H, W]) + Gemm(x, W, b, transB = 1)
 *     conv2d     Conv(x, W, b; strides, pads), or, with partial-area masks that are not all
 *                ones, the masked sum of per-kernel contributions (below)
 *     maxpool    MaxPool(kernel, strides, pads; floor mode)
 *     relu       Relu
 *     batchnorm  BatchNormalization (eval: running mean / variance, nest's epsilon)
 *     dropout    nothing (the identity at inference)
 *   output "logits" float [N, classes].
 * Pruned weights are stored as zeros (dense initializers: the network keeps W == W ⊙ mask).
 * Partial-area convolution (layer.h, area.h): y[o] = b[o] + sum_m Msk[o, m] ⊙ C[o, m] with
 * C[o, m] = W[o, m] ⋆ x[m]. Input maps m whose mask is all ones for every (o, p, q) go through
 * one plain Conv (weights of the other maps zeroed); the maps with a mixed mask go through a
 * grouped Conv (group = their count, one [OC, 1, kh, kw] kernel stack per map) giving every
 * C[o, m] as its own channel, times the mask Msk[m, o, P, Q] (a constant), reshaped to
 * [N, maps, OC, P, Q] and summed over maps (ReduceSum); all-zero maps contribute nothing.
 * Exact up to float summation order; costs maps * OC * P * Q floats per sample.
 * Metadata (metadata_props): nest.format, nest.format_version, nest.labels (a JSON array of the
 * class names, index = logit), nest.input_layout ("NCHW" / "NF"), nest.input_shape,
 * nest.input_scale, nest.normalization ("per_channel", "per_feature", "none"), nest.norm_mean,
 * nest.norm_std (JSON arrays), with a reduction nest.reduce (its kind) and nest.reduce_k,
 * nest.arch, nest.widths, nest.active_weights, nest.total_weights, then the caller's own
 * (meta->props).
 * Errors: NEST_ERR_ARG for what cannot be exported (an unknown layer kind, a model over the
 * 2 GiB a single protobuf may hold, a normalisation whose channel count is not the input's,
 * a reduction whose k is not the net's input features or on a net that is not tabular, a
 * missing label, a duplicate metadata key) naming the layer or the key; NEST_ERR_FORMAT for a
 * reduction whose arrays fail nest_reduce_validate; NEST_ERR_NUMERIC for
 * a NaN / Inf value naming the layer and tensor; NEST_ERR_IO naming the file. */
#ifndef NEST_ONNX_H
#define NEST_ONNX_H

#include <stddef.h>
#include <stdint.h>

#include "nest/data.h"
#include "nest/net.h"
#include "nest/reduce.h"
#include "nest/status.h"

#define NEST_ONNX_OPSET 13
#define NEST_ONNX_FORMAT "nest-onnx" /* metadata nest.format */
#define NEST_ONNX_FORMAT_VERSION 1   /* metadata nest.format_version */

/* One extra metadata entry (key, value), e.g. {"nest.source", "outputs/run/model.h5"}. */
typedef struct {
  const char *key, *value;
} nest_onnx_prop;

/* What the network alone does not know. A zero-initialised struct (or NULL) is valid: no
 * normalisation, input scale 1, labels "0", "1", .... */
typedef struct {
  const nest_norm *norm;      /* applied to the scaled input, per channel (images) or per
                                 feature (tabular); NULL or nch 0: none; else nch = input c */
  float input_scale;          /* raw -> normalisation units, e.g. 1/255 for IDX pixels (the
                                 dataset's u8_scale); 0 = 1 */
  char *const *labels;        /* [net->nclasses] class names (the dataset's class_names) or
                                 NULL: the class indices "0", "1", ... */
  const nest_reduce *reduce;  /* DR+SCANN: raw [d] features -> the net's reduce->k, applied to
                                 the scaled input before the normalisation (whose nch is then
                                 k); NULL: none. Needs a tabular net (input (k, 1, 1)) */
  const char *doc;            /* the model's doc_string, or NULL */
  int nprops;                 /* extra metadata entries; keys must not repeat nest's own */
  const nest_onnx_prop *props;
} nest_onnx_meta;

/* 1: the model's input is [N, D] (tabular: an input of shape (D, 1, 1) and no conv2d or maxpool
 * layer); 0: [N, C, H, W]. */
int nest_onnx_input_is_tabular(const nest_net *net);

/* Serialise `net` (read only: its params, masks and buffers) as an ONNX model into a malloc'd
 * buffer *out of *len bytes; free() it. On failure *out is NULL. */
nest_status nest_onnx_encode(const nest_net *net, const nest_onnx_meta *meta, uint8_t **out,
                             size_t *len);

/* nest_onnx_encode, then write `path` atomically (atomic.h): PATH is either untouched or the
 * complete new model. Whether an existing PATH may be replaced is the caller's decision. */
nest_status nest_onnx_write(const nest_net *net, const nest_onnx_meta *meta, const char *path);

#endif
