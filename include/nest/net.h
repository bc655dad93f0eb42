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

/* Skip tensors into one dense layer at most (SCANN, docs/scann.md). */
#define NEST_MAX_SKIPS 8

/* One layer of an architecture, before shapes are known. */
typedef struct {
  nest_layer_kind kind;
  char name[NEST_NAME_LEN];
  nest_layer_hparams hp;
  /* Skip tensors INTO this layer (dense only): one maskable weight tensor per source, from the
   * output of an earlier layer to this layer's pre-activation (see "Skip connections" below).
   * skip_from[k] names the source: "in" (the net's input) or a layer. */
  int nskips;
  char skip_from[NEST_MAX_SKIPS][NEST_NAME_LEN];
} nest_layer_spec;

/* A trainable tensor of the net: (layer, slot) and where it sits in the arenas. */
typedef struct {
  nest_layer *layer;
  int slot;              /* index into layer->param[] */
  const nest_param *param;
} nest_tensor_ref;

/* A skip tensor of the net (resolved from the specs at create). */
typedef struct {
  int layer;            /* the destination: a dense layer */
  int slot;             /* its parameter slot ("skip_<from>", after W and b) */
  int src;              /* index into act[] of what it reads: 0 = the input, else the input of
                           the first dense layer after the source layer */
  char from[NEST_NAME_LEN]; /* the source's canonical name (nest_skip_source) */
} nest_skip;

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

  int nskips;
  nest_skip *skips;    /* [nskips] by destination layer, then slot */

  float **act, **dact; /* [nlayers + 1] */
  float **sdact;       /* [nlayers + 1]: per skip source act index j > 0, the skip tensors' share
                          of dL/dact[j] (own buffers; NULL where no skip reads act[j]) */
  int *sd_used;        /* [nlayers + 1] backward's marks: sdact[j] holds a first term */
  float *act_mem, *scratch_mem;
  /* Bytes of the allocations above (docs/memory.md; bench_step prints them): activations,
   * their gradients, the shared per-call workspace and the layers' forward-to-backward caches. */
  size_t act_bytes, dact_bytes, ws_bytes, cache_bytes;
} nest_net;

/* ---- Skip connections (SCANN, ALGORITHMS.md §10) --------------------------------------------
 * A dense layer D may hold, besides its chain tensor W [units, in], one maskable tensor per skip
 * source S: "skip_<from>" [units, |act[S]|] in its parameter slots 2.. (so it lies in D's part of
 * the arenas, is saved, checkpointed, summed and hashed with D, and is one more maskable tensor
 * in net->tensors for every growth and pruning policy). Forward adds act[S] · skipᵀ to D's output
 * before whatever follows D (its ReLU); backward writes the dense gradient dyᵀ · act[S] (dormant
 * positions included: connection growth ranks them) and adds dy · skip into its own buffer
 * sdact[S], which is added to dact[S] right after layer S's backward has written it — so the
 * chain's two alternating gradient buffers stay valid, and the sums run in a fixed order
 * (destinations from the top, slots in order): the same bits for any thread count.
 * Sources: "in" = act[0]; a layer X = act[j], j the first dense / conv layer after X (what the
 * chain's next weight layer reads: after X's ReLU, batch norm, dropout, pooling). The canonical
 * name of act[j] is "in" or the layer that produces it, walking back past relu / batchnorm /
 * dropout ("fc1" for an MLP's fc1, "pool2" for LeNet-5's flattened features). Valid: D is
 * dense, j < D (j == D is the chain tensor, j > D points backwards), and no conv layer reads
 * act[j] or anything after it (for conv bases, skips start at the flattened features). */

/* The act index of source `from` in specs[0..n), its canonical name into canon (may be NULL);
 * -1 when no such layer or it has no output a later weight layer reads. */
int nest_skip_source(const nest_layer_spec *specs, int n, const char *from,
                     char canon[NEST_NAME_LEN]);
/* May a skip from `from` feed layer `dest`? 1, or 0 with *why (a static reason). */
int nest_skip_valid(const nest_layer_spec *specs, int n, const char *from, int dest,
                    const char **why);
/* Declare layer specs[i]'s skip tensors on l (created from specs[i], before binding): acts[j]
 * is the shape of act[j] for j <= i. Used by nest_net_create and by readers that build layers
 * one at a time. Errors (NEST_ERR_CONFIG) name the layer and the source. */
nest_status nest_skip_declare(nest_layer *l, const nest_layer_spec *specs, int n, int i,
                              const nest_shape *acts);
/* The skip tensor in (layer, slot), or NULL (a chain tensor). */
const nest_skip *nest_net_skip(const nest_net *net, int layer, int slot);

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
/* A deep copy: the same specs (skips included), every arena copied (values, masks, momentum,
 * buffers; gradients are not state: zero), the same generation. */
nest_status nest_net_clone(const nest_net *src, nest_net **out);

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
/* The same with skip tensors seeded at skip_density in [0, 1] (0: all dormant, growth
 * candidates): each skip weight active with that probability from a stream keyed by
 * (destination, source) names, no repair (the chain connects every unit). With skips, every
 * tensor into a dense layer D is initialised with the fan-in of all of them: std sqrt(2 /
 * sum of fan_in x density) over D's chain and skip tensors. nest_net_init uses
 * skip_density = density; a net without skips is initialised exactly as before. */
nest_status nest_net_init_ex(nest_net *net, uint64_t seed, double density, double skip_density,
                             int init_override);

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
