/* policy.h — growth and pruning policies behind one small interface, chosen by name (growth:
 * grow.policy; pruning: the prune and area phases of synthesis.phases, prune.h).
 * A new policy is one new file in src/policies/ plus one line in the registry (src/policy.c).
 *
 * WHEN a policy runs (ops->when):
 *   NEST_WHEN_GROWTH — at every iteration of the growth phase (conn, neuron, fmap, strategic);
 *   NEST_WHEN_EPOCH  — after every epoch of the training phase (set);
 *   NEST_WHEN_STEP   — after the training-phase steps for which ops->due says so (rigl);
 *   NEST_WHEN_PRUNE  — in the pruning phases (prune.h): magnitude, neurons, area. The phase
 *     driver sets r->fraction (the step size gamma of the target) and runs the guard.
 * WHAT it acts on (ops->target):
 *   NEST_TARGET_TENSOR — every maskable tensor of the chosen layers. Connection policies work
 *     over the net's list of maskable tensors and never assume adjacent layers, so a tensor
 *     added later (SCANN's skip connections) is one more target;
 *   NEST_TARGET_UNITS — the units of each chosen layer (neuron growth: hidden dense layers;
 *     feature-map growth: hidden conv layers), resized through surgery.h. These are the
 *     algorithms that are about adjacent layers themselves.
 *
 * For each target the driver (grow.c) calls  score -> select -> apply  (ops->rounds times for
 * unit policies that add units one at a time), then compares a hash of the masks across
 * ranks (run.check_masks) and logs one event:
 *   score  — the target's scores: from the shared gradient pass (r->pass; the driver runs one
 *            pass per iteration for all the `needs` of the policies still to run, and again
 *            after a surgery made it stale) or from the policy's own evaluations;
 *   select — choose positions / pairs / candidates, with select.h wherever it is a top-k;
 *   apply  — change masks and weights (dormant -> active with the value the policy gives,
 *            momentum 0), or resize the layer; fill r->units_added / conns_added /
 *            conns_removed and optionally r->detail.
 * Everything a decision depends on is identical on every rank by construction (by-construction
 * sums, exact integer histograms, random streams keyed by (seed, policy, target, iteration)),
 * so every rank takes the same decision and no policy communicates except through select.h,
 * gradpass.h and the comm sums. */
#ifndef NEST_POLICY_H
#define NEST_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "nest/gradpass.h"
#include "nest/rng.h"
#include "nest/train.h"

typedef enum { NEST_WHEN_GROWTH, NEST_WHEN_EPOCH, NEST_WHEN_STEP, NEST_WHEN_PRUNE } nest_policy_when;
typedef enum { NEST_TARGET_TENSOR, NEST_TARGET_UNITS } nest_policy_target;

/* What the shared gradient pass must accumulate for a policy (gradpass.h). */
enum { NEST_NEED_GRAD = 1, NEST_NEED_BRIDGE = 2 };

typedef struct nest_policy_ops nest_policy_ops;

/* One (policy, target) step. */
typedef struct {
  const nest_policy_ops *ops;
  nest_trainer *t;          /* the run: t->net (replaced by surgery), t->comm, t->cfg */
  int target;               /* TENSOR: index into t->net->tensors; UNITS: layer index */
  int layer;                /* the target's layer index */
  int64_t iteration;        /* growth iteration, epoch or step: keys the random streams */
  int64_t count;            /* EPOCH: epochs of the training phase; STEP: its steps; else 0 */
  int round;                /* 0 .. rounds-1 */
  const nest_gradsum *pass; /* the shared pass, current for t->net (NULL if not needed) */
  const int64_t *score_ids; /* the fixed scoring batch of this iteration (indices into t->train) */
  int64_t n_score;
  int64_t room;             /* connections the size cap still allows (INT64_MAX = no cap) */
  double fraction;          /* PRUNE: the step, a fraction of the target's active entries;
                               conn growth run by the scann phase: the share of dormant
                               positions to activate (percentile mode); else 0 */
  void *state;              /* ops->state_size zeroed bytes; ops->release frees inside */
  /* filled by apply (summed over rounds into the event) */
  int64_t units_added, conns_added, conns_removed;
  char detail[160];
} nest_policy_run;

struct nest_policy_ops {
  const char *name;    /* grow.policy word */
  const char *summary; /* one line: what it does (docs, --help) */
  nest_policy_when when;
  nest_policy_target target;
  unsigned needs;      /* NEST_NEED_* of the shared gradient pass */
  /* May the policy act on layer l of net? If not, *why says on what it acts. */
  int (*accepts)(const nest_net *net, int layer, const char **why);
  /* STEP policies: act after training-phase step `step` (1-based) of `steps`? NULL = always. */
  int (*due)(const nest_config *c, int64_t step, int64_t steps);
  /* Rounds of score/select/apply per target (NULL = 1). */
  int (*rounds)(const nest_config *c);
  size_t state_size;
  void (*release)(void *state); /* free what score/select allocated in state; NULL = nothing */
  nest_status (*score)(nest_policy_run *r);
  nest_status (*select)(nest_policy_run *r);
  nest_status (*apply)(nest_policy_run *r);
};

/* The registry. */
const nest_policy_ops *nest_policy_find(const char *name);
/* Check a grow.policy list (a comma list, list.h: blanks around names are fine): known names,
 * growth policies only, no repeats. NEST_ERR_CONFIG naming grow.policy, the bad word and the
 * known names. "" is fine (no growth). */
nest_status nest_policy_check_list(const char *list);

/* One round on one target: allocate r->state, score -> select -> apply, release. The driver
 * (grow.c) sets up r (ops, t, target, layer, iteration, pass, scoring batch, room) and calls
 * this; so do the tests, with hand-made passes. Collective. */
nest_status nest_policy_step(nest_policy_run *r);

/* ---- helpers shared by the policies ---------------------------------------------------- */

/* The random stream `stream` of this run: keyed by (run seed, policy, target, iteration), so
 * it is identical on every rank and independent of what ran before. */
void nest_policy_rng(const nest_policy_run *r, uint64_t stream, nest_rng *out);
/* Element i of that stream, stateless (for OpenMP loops: any order, same numbers). */
uint32_t nest_policy_rng_at(const nest_policy_run *r, uint64_t stream, uint64_t i);
/* The tensor of a TENSOR run. */
const nest_tensor_ref *nest_policy_tensor(const nest_policy_run *r);
/* Active (mask != 0) count and mean |w| over the active positions of a tensor, summed in index
 * order in double (the same on every rank whatever the thread count). */
int64_t nest_tensor_active(const float *mask, size_t n);
double nest_tensor_mean_abs(const float *w, const float *mask, size_t n);
/* Positions idx[0..n) of tensor p become active with weight 0 (on = 1) or dormant (on = 0);
 * their momentum is 0 either way. */
void nest_policy_set_positions(nest_net *net, const nest_param *p, const int64_t *idx, int64_t n,
                               int on);
/* The weight tensor (slot 0) of a dense / conv layer and its sizes. */
const nest_param *nest_layer_weight(const nest_layer *l);
/* 1 for a layer with a maskable tensor (connection policies); else 0 with *why. */
int nest_policy_accepts_masked(const nest_net *net, int layer, const char **why);
/* 1 for a dense/conv layer whose units can be resized (a hidden layer); else 0 with *why. */
int nest_policy_accepts_hidden(const nest_net *net, int layer, nest_layer_kind kind,
                               const char **why);
/* Connections to add to a tensor with `active` active and `dormant` dormant positions:
 * grow.conn_count, or ceil(grow.conn_ratio x active), capped by dormant and by room. */
int64_t nest_policy_conn_k(const nest_config *c, int64_t active, int64_t dormant, int64_t room);
/* Percentile mode (SCANN): ceil(share x dormant) with select.h's rounding, capped by
 * scann.grow_cap x active (when > 0) and by room. */
int64_t nest_policy_conn_share(const nest_config *c, double share, int64_t active, int64_t dormant,
                               int64_t room);

/* The policies (src/policies/<file>.c). */
extern const nest_policy_ops nest_policy_conn;      /* connection_growth.c */
extern const nest_policy_ops nest_policy_neuron;    /* neuron_growth.c */
extern const nest_policy_ops nest_policy_fmap;      /* feature_map_growth.c */
extern const nest_policy_ops nest_policy_strategic; /* strategic_synthesis.c */
extern const nest_policy_ops nest_policy_set;       /* set.c */
extern const nest_policy_ops nest_policy_rigl;      /* rigl.c */
extern const nest_policy_ops nest_policy_magnitude; /* magnitude_pruning.c */
extern const nest_policy_ops nest_policy_neurons;   /* neuron_pruning.c */
extern const nest_policy_ops nest_policy_area;      /* partial_area.c */
extern const nest_policy_ops nest_policy_split;     /* cell_division.c */

#endif
