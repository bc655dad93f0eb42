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
 * the ratio: the NeST AlexNet seed is alexnet with widths 60,140,240,210,160,3200,1600. With batchnorm, a BN layer follows every hidden
 * conv/dense layer (before its ReLU); with dropout > 0, a dropout layer follows every hidden
 * dense ReLU. */
#ifndef NEST_ARCH_H
#define NEST_ARCH_H

#include "nest/net.h"

typedef struct {
  double width;   /* r */
  int batchnorm;  /* 0/1 */
  double dropout; /* rate, 0 = none */
  const char *widths; /* "N,N,...,N": base width of every hidden conv / dense layer, in order
                         (as many as nest_arch_hidden_layers); NULL or "" = the arch's own */
} nest_arch_opts;

/* Hidden conv / dense layers of `arch` (those model.widths lists): alexnet 7, vgg16 15,
 * lenet300 2, lenet5 3, mlp:A-...-Z its sizes minus 2; -1 for an unknown name. */
int nest_arch_hidden_layers(const char *arch);

/* Parse a widths list "N,N,...,N" (positive integers up to NEST_ARCH_MAX_WIDTH, no blanks) into
 * out[cap]; the count, or -1 if the syntax is wrong, an entry is out of range, or there are
 * more than cap. */
#define NEST_ARCH_MAX_WIDTH 65536
int nest_arch_parse_widths(const char *list, int *out, int cap);

/* Build the spec list for `arch` given the data's sample shape and class count. The list is
 * allocated (free()). Errors name the architecture and the problem (NEST_ERR_CONFIG, also for
 * a widths list of the wrong length). */
nest_status nest_arch_build(const char *arch, const nest_arch_opts *opts, nest_shape in,
                            int nclasses, nest_layer_spec **specs, int *nspecs);

#endif
