/* gradpass.h — gradient-only passes: quantities summed over a set of training samples (the
 * growth set) without changing the network. The one gradient-pass function every policy uses.
 *
 * The set ids[0..n) is walked in global batches of train.batch, each sharded over the ranks
 * exactly like a training step (shard.h), so the sums do not depend on the rank count; batch
 * norm's batch statistics do not either with model.sync_bn = 1 (the default: summed over the
 * ranks' rows), while with sync_bn = 0 each rank normalises by its own rows, so the sums then
 * depend on the rank count. Each batch runs forward and backward with a gradient-only context
 * (layer.h: training-mode batch norm that does not touch its running statistics, no dropout),
 * with the loss scaled by 1/n, so the sums are gradients of the MEAN loss over the set.
 * Nothing in the net changes except the grads arena and the activation buffers.
 *
 * Accumulated, per request:
 *   grad[t]   = sum over the set of dL/dW of maskable tensor t — the dense gradient, dormant
 *               positions included (NeST Policy 1 ranks |grad| at dormant positions);
 *   bridge[l] = sum over the set of dL/du^{l+1} (x^{l-1})^T, the bridging gradient around dense
 *               layer l (NeST Algorithm 1): u^{l+1} is the output of l's consumer (the next
 *               dense layer, before its batch norm), x^{l-1} the input of l; [M, N] row-major
 *               with M = consumer units and N = l's input size; one GEMM per batch.
 *
 * Precision: the per-batch float products are added into DOUBLE accumulators. Double costs
 * what float plus a Kahan compensation term would (8 bytes per weight), but the sums can be
 * reduced over ranks directly (a compensated pair cannot), and 2^-53 relative error per add
 * keeps the sum of ~10^3 batch terms far below the float resolution the scores are ranked in.
 * Memory: 8 bytes per accumulated weight (docs/growth.md gives AlexNet and VGG-16).
 *
 * After the last batch, ONE nest_comm_sum_same_f64 over all accumulators (plus the loss) makes
 * every value bit-identical on every rank by construction. */
#ifndef NEST_GRADPASS_H
#define NEST_GRADPASS_H

#include <stdint.h>

#include "nest/train.h"

/* What to accumulate: flags per maskable tensor / per layer (NULL = none). */
typedef struct {
  const uint8_t *tensors; /* [net->ntensors]: 1 = sum dL/dW of this tensor (maskable only) */
  const uint8_t *bridges; /* [net->nlayers]: 1 = bridging gradient around this dense layer */
} nest_gradsum_req;

typedef struct {
  uint64_t generation;  /* the net generation the sums belong to (surgery makes them stale) */
  int ntensors, nlayers;
  int64_t n;            /* samples in the set */
  double loss;          /* mean loss over the set (from the same forward passes) */
  double **grad;        /* [ntensors]: NULL or [param count] */
  double **bridge;      /* [nlayers]: NULL or [bridge_m[l] * bridge_n[l]] */
  int *bridge_m, *bridge_n;
  double *mem;          /* every accumulator back to back, then the loss: one reduction */
  size_t nmem;
} nest_gradsum;

/* Run the pass over ids[0..n) (indices into t->train) and return the sums. Collective. */
nest_status nest_gradpass(nest_trainer *t, const int64_t *ids, int64_t n,
                          const nest_gradsum_req *req, nest_gradsum **out);
void nest_gradsum_destroy(nest_gradsum **g);

/* Forward only, same batching and context: the mean loss over ids[0..n), identical on every
 * rank by construction. Used for event losses and feature-map candidate scores. Collective. */
nest_status nest_gradpass_loss(nest_trainer *t, const int64_t *ids, int64_t n, double *loss);

/* ---- activation statistics ----------------------------------------------------------------
 * Forward-only passes in INFERENCE mode (running batch-norm statistics, no dropout: the network
 * the user takes home) over ds[ids[0..n)], each rank a contiguous slice, local sums in double
 * in a fixed order, then ONE nest_comm_sum_same_f64: every value is identical on every rank by
 * construction. What the pruning phases decide from and what the model report shows.
 *
 * "Output" of a dense / conv layer L is what its consumer sees: the output of the ReLU that
 * follows L (through batch norm / dropout); layers without a ReLU after them (the output
 * layer) have no output statistics. */
typedef struct {
  const uint8_t *units; /* [nlayers]: 1 = per-unit sum of |output| (dense: units; conv: maps,
                           summed over positions too) */
  const uint8_t *area;  /* [nlayers]: 1 = per-(n, m, p, q) sum of |C| of a conv layer with
                           partial-area masks (nest_conv2d_area_accumulate) */
  int fractions;        /* 1 = non-zero shares of every dense / conv layer's input and output */
} nest_actsum_req;

typedef struct {
  uint64_t generation;
  int nlayers;
  int64_t n;                 /* samples in the set */
  double **unit_abs;         /* [nlayers]: NULL or [units] sum of |output| */
  int64_t *positions;        /* [nlayers]: output positions per sample (P x Q; 1 for dense) */
  double **area;             /* [nlayers]: NULL or [out_c * in_c * P * Q] sum of |C| */
  double *act_frac, *in_frac;/* [nlayers]: non-zero shares (NaN: not requested / no output) */
  double *mem;
  size_t nmem;
} nest_actsum;

/* Index (into net->act) of layer L's output as its consumer sees it, or -1 (see above). */
int nest_actpass_output(const nest_net *net, int layer);
nest_status nest_actpass(nest_trainer *t, const nest_dataset *ds, const int64_t *ids, int64_t n,
                         const nest_actsum_req *req, nest_actsum **out);
void nest_actsum_destroy(nest_actsum **a);

#endif
