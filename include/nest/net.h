/* net.h — a network: a chain of layers whose trainable tensors live in flat arenas.
 *
 * Arenas (one contiguous float array each, same layout, length nparams):
 *   params  — values, every layer's tensors back to back (offsets in nest_param.offset)
 *   grads   — dL/dparams of the current step (dense: dormant positions included)
 *   mom     — optimizer momentum
 *   masks   — 1 active / 0 dormant; all ones for non-maskable tensors (biases, BN)
 * plus `buffers` (non-trained state such as BN running statistics). One allreduce sums
 * `grads`; one checkpoint dataset per arena stores the whole state. The network keeps
 * params == params ⊙ masks (dormant weights exactly 0) at all times.
 *
 * Activations: act[i] is the input of layer i ([max_batch, in_i]), act[nlayers] the logits
 * ([max_batch, nclasses]); dact[i] = dL/dact[i]. Everything is allocated at create time —
 * nothing in forward/backward allocates. A relu layer works in place (act[i + 1] == act[i],
 * dact[i] == dact[i + 1]), and the activation gradients share two alternating buffers, so
 * after backward only dact[nlayers] and the gradients of dense layers' outputs still hold
 * their values (the others were overwritten by lower layers); dact[0] is NULL (net.c).
 *
 * Changing the architecture (growth/pruning of neurons) = build a new net from new specs at a
 * sync point (identical on every rank) and copy the surviving values across (surgery.h). The
 * net keeps its current specs, so a grown net can always be described, saved and rebuilt:
 * cfg.arch only names the seed. */
#ifndef NEST_NET_H
#define NEST_NET_H

#include <stdint.h>
#include "nest/layer.h"
#include "nest/status.h"

/* One layer of an architecture, before shapes are known. */
typedef struct {
  nest_layer_kind kind;
  char name[NEST_NAME_LEN];
  nest_layer_hparams hp;
} nest_layer_spec;

/* A trainable tensor of the net: (layer, slot) and where it sits in the arenas. */
typedef struct {
  nest_layer *layer;
  int slot;              /* index into layer->param[] */
  const nest_param *param;
} nest_tensor_ref;

typedef struct nest_net {
  int nlayers;
  nest_layer **layers;
  nest_layer_spec *specs; /* [nlayers] the current architecture (hp with setup defaults) */
  uint64_t generation;    /* 0 at create; surgery gives the new net generation + 1 */
  nest_shape in_shape;
  int nclasses;
  int max_batch;  /* rows the activation buffers hold */
  int nthreads;   /* OpenMP threads the scratch is sized for */

  size_t nparams; /* arena length */
  float *params, *grads, *mom, *masks;
  size_t nbuf;
  float *buffers;

  int ntensors;
  nest_tensor_ref *tensors;

  float **act, **dact; /* [nlayers + 1] */
  float *act_mem, *scratch_mem;
  /* Bytes of the allocations above (docs/memory.md; bench_step prints them): activations,
   * their gradients, the shared per-call workspace and the layers' forward-to-backward caches. */
  size_t act_bytes, dact_bytes, ws_bytes, cache_bytes;
} nest_net;

/* Build the layers from specs, check shapes, lay out and allocate the arenas (zeroed, masks
 * all ones). The last layer must output nclasses features. */
nest_status nest_net_create(const nest_layer_spec *specs, int nspecs, nest_shape in, int nclasses,
                            int max_batch, int nthreads, nest_net **out);
/* Memory layout options (net.c, "activations"); NULL or all zero = the default: in-place ReLU
 * and two shared activation-gradient buffers. The alternatives exist for tests comparing the
 * layouts (the same bits) and for docs/memory.md's figures. */
typedef struct {
  int no_inplace_relu; /* 1: every relu layer writes its own output buffer */
  int separate_grads;  /* 1: every dact[j] has its own buffer (dact[0] too) */
} nest_net_opts;
nest_status nest_net_create_ex(const nest_layer_spec *specs, int nspecs, nest_shape in,
                               int nclasses, int max_batch, int nthreads,
                               const nest_net_opts *opts, nest_net **out);
void nest_net_destroy(nest_net **net);

/* Seed connectivity and initial values, identical on every rank for the same seed:
 * masks — each weight active with probability `density` (counter RNG keyed by layer), then
 *   repaired so every neuron / feature map has at least one active input and one active
 *   output connection (ALGORITHMS.md §1); density >= 1 gives all ones.
 * values — He (std sqrt(2 / fan_in_active)) or Xavier (std sqrt(2 / (fan_in_active +
 *   fan_out_active))) normal, where fan_*_active = fan * actual density of the tensor, so a
 *   sparse seed starts with the same signal variance as a dense one; biases 0, BN gamma 1.
 * init_override: -1 keeps each tensor's declared init, else NEST_INIT_HE / NEST_INIT_XAVIER
 * for every maskable tensor. Buffers get their init values; momentum and grads 0. */
nest_status nest_net_init(nest_net *net, uint64_t seed, double density, int init_override);

/* Forward pass over ctx->n rows of x ([n, in]); returns the logits (net->act[nlayers]). */
nest_status nest_net_forward(nest_net *net, const nest_ctx *ctx, const float *x,
                             const float **logits);
/* Backward pass from dL/dlogits ([n, nclasses]); overwrites net->grads. Call after forward
 * with the same ctx. */
nest_status nest_net_backward(nest_net *net, const nest_ctx *ctx, const float *dlogits);
/* The same, calling ready(arg, lo) after each layer that has parameters, once its backward
 * has returned: grads[lo, nparams) are then final (layers lie in the arenas in layer order, and
 * backward runs from the last layer to the first), so the caller may start summing them over
 * ranks while the remaining layers run (train.bucket_mb). lo decreases from call to call; the
 * first layer with parameters reports lo = 0. An error from ready stops the pass. */
typedef nest_status (*nest_grads_ready_fn)(void *arg, size_t lo);
nest_status nest_net_backward_ready(nest_net *net, const nest_ctx *ctx, const float *dlogits,
                                   nest_grads_ready_fn ready, void *arg);

/* params = masks ? params : 0, momentum likewise (restores the invariant after masks change;
 * a select, so dormant values become +0.0 whatever they held). */
void nest_net_apply_masks(nest_net *net);
/* Active / total weights over maskable tensors (what "active parameters" reports), and the
 * total count of all trainable parameters (weights, biases, BN) that are active. */
void nest_net_count(const nest_net *net, int64_t *active_weights, int64_t *total_weights,
                    int64_t *active_params);
/* Forward FLOPs per sample with masks (2 x active MACs for dense/conv layers; a conv layer
 * with partial-area masks counts only the (n, m, p, q) its area mask keeps). */
double nest_net_flops(const nest_net *net);
/* The same for one layer (0 for layers without weights). With an area mask:
 * 2 x sum over (o, m, p, q) with Msk = 1 of the active weights of kernel (o, m). */
double nest_net_layer_flops(const nest_net *net, int layer);
/* Conv%: the active fraction of a conv layer's partial-area mask (1.0 without one, or for a
 * layer that is not conv2d). */
double nest_net_layer_conv_frac(const nest_net *net, int layer);
/* 64-bit hash of the chosen arenas (cross-rank identity checks). Buffers (BN running
 * statistics) legitimately differ between ranks mid-epoch when model.sync_bn = 0.
 * NEST_HASH_MASKS covers the masks arena and every buffer declared with mask = 1 (the
 * partial-area "area" masks). */
enum { NEST_HASH_PARAMS = 1, NEST_HASH_MASKS = 2, NEST_HASH_BUFFERS = 4, NEST_HASH_ALL = 7 };
uint64_t nest_net_hash(const nest_net *net, unsigned parts);
/* The current architecture on one line, e.g. "fc1 dense 137 | fc1.relu relu | fc2 dense 52 |
 * fc3 dense 10" (conv: "conv1 conv2d 12 5x5/1 p0"). Returns the length it needed (snprintf). */
int nest_net_arch_string(const nest_net *net, char *buf, size_t cap);
/* Hidden widths only, e.g. "784-137-52-10" for an MLP or "12c-31c-500-10" with conv layers
 * (c = feature maps): input size, then every dense/conv layer's units/maps. */
int nest_net_widths_string(const nest_net *net, char *buf, size_t cap);
/* Find a layer by name (NULL if none). */
nest_layer *nest_net_find_layer(const nest_net *net, const char *name);
/* One line per layer ("fc1 dense 784 -> 300, 235200 weights, 100.0% active") to f. */
void nest_net_describe(const nest_net *net, void *file);

#endif
