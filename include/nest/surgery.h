/* surgery.h — physical surgery on a network: insert or delete output units (neurons of a dense
 * layer, feature maps of a conv layer) at run time. One module, used by growth now and by
 * pruning next. Call it at a sync point with the same arguments on every rank: it depends only
 * on the net and the arguments, so every rank builds the same new net.
 *
 * What a unit u of layer L touches, and what follows it:
 *   - L's weight slice (dense: row u of W[units, D]; conv: W[u, C, kh, kw]) and bias b[u];
 *   - the per-channel tensors of every layer between L and its CONSUMER (batch norm: gamma,
 *     beta, running mean and variance; relu, maxpool and dropout carry no state);
 *   - the rows of u in L's skip tensors (skip connections, net.h) and its columns in every skip
 *     tensor that reads L's output (the consumer's input, act[consumer]);
 *   - the consumer's input slice of u: the next dense or conv layer after L, reached through
 *     batchnorm / relu / maxpool / dropout only. Dense consumer: the block of h x w columns of
 *     channel u (h x w = the consumer's input plane; a single column when L is dense, the
 *     flattened map when L is a conv followed by pooling and a dense layer). Conv consumer:
 *     the input-channel slice W[:, u, :, :].
 * In every tensor above all four arenas follow (values, gradients, momentum, masks), and the
 * buffers (BN running statistics) too. A partial-area mask (the "area" buffer Msk[OC, C, P, Q]
 * of a conv layer with hp.area = 1) follows like a conv weight: along OC when L itself has
 * one (unit u's rows Msk[u, :, :, :]), along C when L's consumer has one (Msk[:, u, :, :]).
 *
 * The primitive is a remap: the new layer L has `count` units; new unit j is old unit src[j],
 * or a fresh unit when src[j] < 0. Every surviving value, mask bit and momentum is copied
 * exactly (bitwise). A fresh unit gets weights +0.0 with masks 0 (dormant) in L and in the
 * consumer, bias 0, momentum 0, BN gamma 1, beta 0, running mean 0 and running variance 1,
 * partial-area mask 1 (in L and in the consumer; the weights being 0 there, no signal):
 * the caller (a growth policy) then writes the values and masks it wants, so the network
 * computes the same function as before until the caller does (exactly in exact arithmetic;
 * the float forward may differ in the last bits, because BLAS rounding depends on the matrix
 * shapes, which a resize changes). Gradients are zeroed
 * (they belong to the old shape). The new net has the old max_batch and nthreads, the old
 * net's specs with L's width changed (dense hp.units / conv hp.out_c), and generation + 1.
 *
 * On success *net is the new net and the old one is destroyed (pointers into it, layer
 * pointers included, are stale: look layers up again by index). On failure *net is unchanged
 * and still valid. */
#ifndef NEST_SURGERY_H
#define NEST_SURGERY_H

#include "nest/net.h"

/* The index of the layer that consumes layer L's units (see above), or -1 if there is none:
 * L is the output layer, or the chain reaches a layer kind surgery cannot follow. */
int nest_surgery_consumer(const nest_net *net, int layer);

/* 1 if the units of layer L can be inserted / deleted: L is dense or conv2d and has a
 * consumer. Otherwise 0, with *why (if not NULL) set to a short static reason such as
 * "it is the output layer" or "it is a relu layer". */
int nest_surgery_can_resize(const nest_net *net, int layer, const char **why);

/* The remap primitive (see above). count >= 1; each old unit appears at most once in src;
 * entries are in [-1, old units). Errors (NEST_ERR_ARG) name the layer. */
nest_status nest_surgery_remap(nest_net **net, int layer, const int *src, int count);

/* Cell division (SCANN neuron growth): append a copy of unit u as the last unit — its weights,
 * masks, bias and momentum in every tensor that produces it (L's chain and skip rows), its
 * batch-norm entries, and its input slices in every tensor that consumes it (the consumer's
 * and every skip tensor reading the consumer's input) — then halve the outgoing weights (and
 * momentum) of both u and the copy, so the network computes the same function (exactly, in
 * exact arithmetic; halving is exact in floats). */
nest_status nest_surgery_split(nest_net **net, int layer, int unit);

/* Append `count` fresh units after the existing ones (old unit i stays unit i). */
nest_status nest_surgery_append(nest_net **net, int layer, int count);

/* Delete the listed units (distinct, any order); the survivors keep their relative order.
 * At least one unit must remain. */
nest_status nest_surgery_delete(nest_net **net, int layer, const int *units, int n);

/* Switch partial-area convolution (hp.area, NeST Algorithm 2) of conv layer L on (on = 1) or
 * off (on = 0) by rebuilding the net with L's hp.area changed. On: L gains the buffer "area"
 * [OC, C, P, Q], all ones, so the function is unchanged. Off: allowed only when L's mask is
 * all ones (else NEST_ERR_ARG: dropping it would change the function); the buffer is dropped.
 * Everything else is copied exactly — values, momentum, masks, every other buffer; gradients
 * are zeroed and the new net has generation + 1, like every surgery above. When hp.area
 * already equals `on`, nothing is rebuilt (NEST_OK, *net and its generation unchanged).
 * Errors (NEST_ERR_ARG) name the layer: not conv2d, no such layer, on not 0/1. */
nest_status nest_surgery_set_area(nest_net **net, int layer, int on);

#endif
