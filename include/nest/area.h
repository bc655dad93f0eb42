/* area.h — scores for partial-area convolution (NeST Algorithm 2; ALGORITHMS.md §8).
 *
 * A conv2d layer with hp.area = 1 carries a 0/1 buffer "area" Msk[OC, C, P, Q] (P x Q = its
 * output plane; layer.h, src/layers/conv2d.c). Its forward pass is
 *   y[i, o, p, q] = b[o] + sum_m Msk[o, m, p, q] * C[i, o, m, p, q],
 *   C[i, o, m, p, q] = sum_{kh,kw} W[o, m, kh, kw] * x[i, m, p*s + kh - pad, q*s + kw - pad]
 * (the contribution of input map m through kernel (o, m) at output position (p, q)). The
 * pruning policy ranks the entries of Msk by the mean |C| over a calibration set; this module
 * computes the sums. */
#ifndef NEST_AREA_H
#define NEST_AREA_H

#include "nest/layer.h"
#include "nest/status.h"

/* acc[o, m, p, q] += sum over the n samples of x[n, C, H, W] of |C[i, o, m, p, q]|, for every
 * (o, m, p, q): acc has out_c * in_c * P * Q doubles, laid out like the "area" buffer.
 * C is computed from the layer's weights as they are (dormant weights are 0) and for every
 * entry, masked or not, whether or not hp.area is on (the caller selects among the entries it
 * wants). Each C is summed over (kh, kw) in float, in that fixed order, then |C| is added to
 * acc in double, samples in order: the result does not depend on the OpenMP thread count
 * (threads split the (o, m) pairs; nothing is summed across threads) and it is the same on
 * every rank for the same x. Uses up to omp_get_max_threads() threads; allocates its own
 * scratch (not a forward/backward call). Errors: NEST_ERR_ARG (not a conv2d layer, n < 0,
 * missing pointers), NEST_ERR_NOMEM. */
nest_status nest_conv2d_area_accumulate(const nest_layer *l, const float *x, int n, double *acc);

#endif
