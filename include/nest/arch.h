/* arch.h — named base architectures → layer specs (ALGORITHMS.md §1).
 *
 *   mlp:A-B-...-Z  dense layers; A must equal the input size, Z the class count
 *   lenet300       mlp:<input>-300-100-<classes>
 *   lenet5         Caffe LeNet-5: conv 20 5x5, maxpool 2, conv 50 5x5, maxpool 2, fc 500, relu, fc
 *   alexnet        conv 96 11x11/4 p2, pool 3/2, conv 256 5x5 p2, pool 3/2, conv 384, 384, 256 3x3
 *                  p1, pool 3/2, fc 4096, 4096, classes (ReLU after each hidden layer)
 *   vgg16          13 conv 3x3 p1 (64,64,M,128,128,M,256x3,M,512x3,M,512x3,M), fc 4096, 4096
 * Hidden widths and channel counts are multiplied by the width ratio r (rounded, at least 1);
 * input and output sizes never change. Per-layer base widths (opts.widths, config key
 * model.widths) replace the architecture's own, hidden layer by hidden layer in order, before
 * the ratio: the NeST AlexNet seed is alexnet with widths 60,140,240,210,160,3200,1600. With
 * batchnorm, a BN layer follows every hidden conv/dense layer (before its ReLU); with
 * dropout > 0, a dropout layer follows every hidden dense ReLU.
 *
 * Size limit: a network built here has at most NEST_ARCH_MAX_PARAMS trainable parameters
 * (weights, biases, batch-norm scales and shifts). Then every tensor's element count fits an
 * int (BLAS dimensions, MPI counts), and the four arenas of net.h (values, gradients, momentum,
 * masks) take at most 32 GiB per rank. Errors are NEST_ERR_CONFIG naming the config keys that
 * chose the sizes (model.arch, model.width, model.widths) before anything is allocated.
 *
 * Layering: arch sits at the net level (it uses net.h's spec type and layer.h's setup to size
 * layers) and knows nothing of config.h; config.c calls nest_arch_check to validate the model
 * keys. */
#ifndef NEST_ARCH_H
#define NEST_ARCH_H

#include "nest/net.h"

typedef struct {
  double width;   /* r */
  int batchnorm;  /* 0/1 */
  double dropout; /* rate, 0 = none */
  const char *widths; /* "N,N,...,N" (blanks around entries allowed): base width of every hidden
                         conv / dense layer, in order (as many as nest_arch_hidden_layers);
                         NULL or "" = the arch's own */
} nest_arch_opts;

#define NEST_ARCH_MAX_PARAMS 2147483647LL /* 2^31 - 1 trainable parameters per network */
#define NEST_ARCH_MAX_WIDTH 65536         /* largest entry of a widths list */
#define NEST_ARCH_MAX_SIZES 64            /* sizes of an mlp:..., entries of a widths list */

/* Hidden conv / dense layers of `arch` (those model.widths lists): alexnet 7, vgg16 15,
 * lenet300 2, lenet5 3, mlp:A-...-Z its sizes minus 2; -1 for an unknown name or a malformed
 * mlp. */
int nest_arch_hidden_layers(const char *arch);

/* Parse a widths list "N, N, ..., N" (the one comma-list parser, list.h: blanks around entries
 * ignored; integers in [1, NEST_ARCH_MAX_WIDTH]) into out[cap]; *n = the count. Errors
 * (NEST_ERR_CONFIG) name model.widths. */
nest_status nest_arch_parse_widths(const char *list, int *out, int cap, int *n);

/* Everything about the model keys that does not need the data: the name (or mlp syntax: 2 to
 * NEST_ARCH_MAX_SIZES sizes, each in [1, 2147483647]), the widths list and its length, and the
 * size limit on the parameters the network has whatever the data (the input layer's and the
 * class count's share are counted at their least). NEST_ERR_CONFIG naming the keys. */
nest_status nest_arch_check(const char *arch, const nest_arch_opts *opts);

/* Build the spec list for `arch` given the data's sample shape and class count. The list is
 * allocated (free()). Errors name the architecture and the problem (NEST_ERR_CONFIG): those of
 * nest_arch_check, an mlp whose first / last size does not match the data, and more than
 * NEST_ARCH_MAX_PARAMS parameters with this input shape and class count. Shapes a layer cannot
 * take (e.g. alexnet on 28x28 images) are left to nest_net_create, which names the layer. */
nest_status nest_arch_build(const char *arch, const nest_arch_opts *opts, nest_shape in,
                            int nclasses, nest_layer_spec **specs, int *nspecs);

/* Skip connections (SCANN; net.h "Skip connections") from the model.skips list onto specs:
 * "all" — every source of the dense part (the input of an MLP, the flattened features of a
 * conv base, every hidden dense layer's output) into every later dense layer it does not
 * already feed through the chain; or "SOURCE>DEST, ..." with SOURCE "in" or a layer name
 * (its output as the next weight layer reads it) and DEST a dense layer. Names are stored
 * canonical (net.h). Errors (NEST_ERR_CONFIG) quote model.skips and the pair: no such layer,
 * the destination is not dense, the skip points backwards or joins adjacent layers, a conv2d
 * layer reads the source, listed twice, more than NEST_MAX_SKIPS into one layer. "" = none. */
nest_status nest_arch_skips(nest_layer_spec *specs, int n, const char *list);

#endif
