/* prune.h — the pruning phases of the NeST pipeline (ALGORITHMS.md §7, §8; docs/pruning.md).
 *
 * Both phases are one guarded loop over targets; each target has its own step size gamma:
 *   for iteration = 1 .. prune.iterations, for every target still pruning:
 *     snapshot the network (weights, masks, momentum, buffers, shapes);
 *     one policy step on the target with fraction gamma (an event in events.csv);
 *     prune phase only: remove the neurons / feature maps left without active inputs or
 *       outputs, or quieter than prune.neuron_thresh (policy "neurons", every hidden layer);
 *     retrain prune.retrain_steps steps, a cosine from prune.lr to optim.min_lr;
 *     while validation error > target + prune.tolerance and retries are left (prune.retries):
 *       retrain prune.retrain_steps more steps;
 *     still above  =>  restore the snapshot bit for bit and halve the target's gamma; once
 *       gamma falls below the smallest step the target stops.
 *   The phase ends when every target has stopped (guard or floor) or the iterations run out.
 * prune phase: targets = the weight tensors of prune.layers, policy "magnitude", gamma from
 *   prune.gamma_start down to prune.gamma.
 * area phase (partial-area convolution): every conv layer of prune.layers first gets an
 *   all-ones area mask (surgery), then targets = those layers, policy "area", gamma from
 *   prune.area_gamma_start down to prune.area_gamma, scores over prune.calib samples.
 * The target error is prune.target_error, or the validation error at the start of the phase.
 * Large steps first, halving on failure: a layer that tolerates a lot loses 20% per step, and
 * the 1% steps the paper takes are only spent near each layer's limit.
 * Every decision comes from values identical on every rank (select.h, by-construction sums,
 * averaged BN statistics), and masks are compared across ranks after every step. */
#ifndef NEST_PRUNE_H
#define NEST_PRUNE_H

#include "nest/grow.h"

/* nest_prune_result (what a phase did) is declared in train.h: the trainer keeps both phases'
 * results for summary.txt and checkpoints. */

/* Check prune.layers against t->net for the prune (area = 0) or area phase: names exist and
 * have weights (prune) / there is a conv layer (area). NEST_ERR_CONFIG naming the key; called
 * when the run is set up, before anything is written. */
nest_status nest_prune_check(const nest_trainer *t, int area);
/* Run the prune phase (area = 0) or the area phase (area = 1) on t->net, logging through g
 * (events.csv). Collective. */
nest_status nest_prune_phase(nest_trainer *t, nest_grow *g, int area, nest_prune_result *res);

#endif
