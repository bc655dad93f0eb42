/* scann.c — the scann phase: SCANN's schemes as sequences of policy steps with training in
 * between, keeping the best validation network (see scann.h). The operations themselves are
 * policies (src/policies/: connection_growth.c in percentile mode, cell_division.c,
 * magnitude_pruning.c, neuron_pruning.c) run through the driver of grow.h. */
#define _GNU_SOURCE
#include "nest/scann.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/list.h"
#include "nest/prune.h"

enum { OP_GROW, OP_SPLIT, OP_PRUNE };
static const char *const op_names[] = {"connection growth", "neuron growth", "connection pruning"};

void nest_scann_state_free(nest_scann_state *s) { nest_net_destroy(&s->best); }

int nest_scann_operations(const nest_config *c) {
  if (strcmp(c->scheme, "none") == 0) return 0;
  return 2 * c->scann_iterations + (c->scheme[0] == 'A' ? c->scann_prune_iterations : 0);
}

/* Operation k (0-based) of the scheme. */
static int op_of(const nest_config *c, int k) {
  switch (c->scheme[0]) {
    case 'A': return k >= 2 * c->scann_iterations ? OP_PRUNE : k % 2 ? OP_SPLIT : OP_GROW;
    case 'B': return k % 2 ? OP_PRUNE : OP_GROW;
    default: return k % 2 ? OP_GROW : OP_PRUNE; /* C: dense-sparse-dense */
  }
}

/* Is layer `name` in prune.layers ("" = all)? */
static int prune_chosen(const nest_config *c, const char *name) {
  const char *l = c->prune_layers;
  return l[strspn(l, " \t")] == '\0' || nest_list_has(l, name);
}

static int any_split_layer(const nest_net *net) {
  const char *why = NULL;
  for (int l = 0; l < net->nlayers; ++l)
    if (nest_policy_split.accepts(net, l, &why)) return 1;
  return 0;
}

nest_status nest_scann_check(const nest_trainer *t) {
  const nest_config *c = &t->cfg;
  if (strcmp(c->scheme, "none") == 0)
    return NEST_ERR(NEST_ERR_CONFIG, "synthesis.phases = %s lists scann, but synthesis.scheme = "
                    "none (set A, B or C)", c->phases);
  if (nest_scann_operations(c) == 0)
    return NEST_ERR(NEST_ERR_CONFIG, "synthesis.scheme = %s: scann.iterations = 0%s leaves no "
                    "operation to run", c->scheme,
                    c->scheme[0] == 'A' ? " and scann.prune_iterations = 0" : "");
  NEST_CALL(nest_trainer_need_val(t, "raise data.val_split",
                                  "synthesis.scheme = %s keeps the best validation network",
                                  c->scheme));
  NEST_CALL(nest_prune_check(t, 0));
  if (c->scheme[0] == 'C' && c->skips[0])
    return NEST_ERR(NEST_ERR_CONFIG, "synthesis.scheme = C keeps adjacent layers only, but "
                    "model.skips = %s adds skip tensors (unset it, or use scheme A or B)",
                    c->skips);
  if (c->scheme[0] == 'A' && c->scann_iterations > 0 && !any_split_layer(t->net))
    return NEST_ERR(NEST_ERR_CONFIG, "synthesis.scheme = A grows neurons, but %s has no hidden "
                    "dense or conv2d layer followed by a ReLU", c->arch);
  return NEST_OK;
}

/* ---- one operation ---------------------------------------------------------------------- */

static nest_status run_op(nest_trainer *t, nest_grow *g, int op, int64_t key) {
  const nest_config *c = &t->cfg;
  NEST_CALL(nest_grow_begin(t, g, key));
  const char *why = NULL;
  if (op == OP_GROW) {
    const double share = 1.0 - c->scann_grow_percentile / 100.0;
    for (int i = 0; i < t->net->ntensors; ++i) {
      const nest_tensor_ref *r = &t->net->tensors[i];
      if (r->param->maskable && nest_policy_conn.accepts(t->net, r->layer->index, &why))
        NEST_CALL(nest_grow_run_one(t, g, &nest_policy_conn, i, key, share, NULL));
    }
  } else if (op == OP_SPLIT) {
    for (int l = 0; l < t->net->nlayers; ++l)
      if (nest_policy_split.accepts(t->net, l, &why))
        NEST_CALL(nest_grow_run_one(t, g, &nest_policy_split, l, key, 0, NULL));
  } else {
    for (int i = 0; i < t->net->ntensors; ++i) {
      const nest_tensor_ref *r = &t->net->tensors[i];
      if (r->param->maskable && prune_chosen(c, r->layer->name))
        NEST_CALL(nest_grow_run_one(t, g, &nest_policy_magnitude, i, key,
                                    c->scann_prune_quantile, NULL));
    }
    /* the units left without active inputs or outputs go (surgery; indices stay valid) */
    for (int l = 0; l < t->net->nlayers; ++l)
      if (prune_chosen(c, t->net->layers[l]->name) &&
          nest_policy_neurons.accepts(t->net, l, &why))
        NEST_CALL(nest_grow_run_one(t, g, &nest_policy_neurons, l, key, 0, NULL));
  }
  return NEST_OK;
}

/* ---- the best network ---------------------------------------------------------------------- */

static int64_t active_weights(const nest_net *net) {
  int64_t aw = 0;
  nest_net_count(net, &aw, NULL, NULL);
  return aw;
}

/* Does the current network (validation error err, w active weights) replace the best? The
 * lowest error seen moves first; the best must stay within keep_tolerance of it. */
static int better(nest_scann_state *s, double err, int64_t w, double tol) {
  if (err < s->min_val) s->min_val = err;
  const double limit = s->min_val + tol + 1e-12;
  if (!(s->best_val <= limit)) return 1; /* err is the new lowest, the best fell behind */
  if (!(err <= limit)) return 0;
  return w < s->best_weights || (w == s->best_weights && err < s->best_val);
}

static nest_status consider(nest_trainer *t, nest_scann_state *s, const nest_eval *val,
                            const nest_eval *test, int op) {
  const double err = 1.0 - val->acc;
  const int64_t w = active_weights(t->net);
  if (s->best && !better(s, err, w, t->cfg.scann_keep_tolerance)) return NEST_OK;
  if (!s->best) s->min_val = err;
  nest_net_destroy(&s->best);
  NEST_CALL(nest_net_clone(t->net, &s->best));
  s->best_val = err;
  s->best_test = isnan(test->acc) ? NAN : 1.0 - test->acc;
  s->best_weights = w;
  s->res.best_op = op;
  return NEST_OK;
}

/* ---- the phase -------------------------------------------------------------------------------- */

/* The training after operation k: scann.epochs epochs, a cosine from scann.lr each time. */
static nest_status train_after(nest_phase_ctx *x, int k, int nops, nest_eval *val,
                               nest_eval *test) {
  nest_trainer *t = x->t;
  const nest_config *c = &t->cfg;
  nest_optim sched = t->optim;
  sched.lr = c->scann_lr > 0 ? c->scann_lr : c->lr;
  sched.schedule = NEST_SCHED_COSINE;
  sched.warmup_epochs = 0;
  sched.total_epochs = c->scann_epochs;
  *val = *test = (nest_eval){NAN, NAN, 0, NAN};
  const nest_phase_epochs loop = {.phase = "scann",
                                  .sched = &sched,
                                  .epochs = c->scann_epochs,
                                  .index0 = (int64_t)k * c->scann_epochs,
                                  .count = (int64_t)nops * c->scann_epochs,
                                  .eval_every = c->scann_epochs};
  NEST_CALL(nest_phase_run_epochs(x, &loop, val, test));
  if (c->scann_epochs == 0) NEST_CALL(nest_trainer_evaluate_sets(t, NEST_EVAL_BOTH, val, test));
  return NEST_OK;
}

static void print_op(nest_trainer *t, const nest_scann_state *s, int k, int nops, int op,
                     const nest_eval *val) {
  nest_runlog *log = nest_trainer_log(t);
  if (!log) return;
  char widths[256], a[32], b[32];
  nest_net_widths_string(t->net, widths, sizeof widths);
  nest_log_count(active_weights(t->net), a, sizeof a);
  nest_log_count(s->best_weights, b, sizeof b);
  nest_log_line(log,
                "scann %d/%d (scheme %s) %s: %s active weights, widths %s, validation error "
                "%.2f%% | best %.2f%% with %s weights (after operation %d)",
                k + 1, nops, t->cfg.scheme, op_names[op], a, widths, 100 * (1.0 - val->acc),
                100 * s->best_val, b, s->res.best_op);
}

/* A fresh phase: the starting network is the first best. */
static nest_status phase_start(nest_phase_ctx *x, nest_scann_state *s, int nops) {
  nest_trainer *t = x->t;
  const nest_config *c = &t->cfg;
  nest_scann_state_free(s);
  memset(s, 0, sizeof *s);
  s->res.val_error = s->res.test_error = NAN;
  s->res.weights_before = active_weights(t->net);
  nest_eval v, te;
  NEST_CALL(nest_trainer_evaluate_sets(t, NEST_EVAL_BOTH, &v, &te));
  NEST_CALL(consider(t, s, &v, &te, 0));
  nest_log_line(nest_trainer_log(t),
                "nest: scann phase: scheme %s, %d operations, each followed by %d epoch%s from "
                "lr %g; growth above the %gth percentile%s, pruning %g per tensor; start: %lld "
                "active weights, validation error %.2f%%",
                c->scheme, nops, c->scann_epochs, c->scann_epochs == 1 ? "" : "s",
                c->scann_lr > 0 ? c->scann_lr : c->lr, c->scann_grow_percentile,
                c->scann_grow_cap > 0 ? " (capped)" : "", c->scann_prune_quantile,
                (long long)s->res.weights_before, 100 * s->best_val);
  x->cur.iter = 1, x->cur.part = 0, x->cur.epoch = 0, x->cur.step = 0;
  return NEST_OK;
}

/* The loop is over: the best network becomes the run's (a new generation). */
static nest_status phase_end(nest_phase_ctx *x, nest_scann_state *s, double t0) {
  nest_trainer *t = x->t;
  if (s->best) {
    s->best->generation = t->net->generation + 1;
    nest_net_destroy(&t->net);
    t->net = s->best;
    s->best = NULL;
  }
  nest_eval v, te;
  NEST_CALL(nest_trainer_evaluate_sets(t, NEST_EVAL_BOTH, &v, &te));
  s->res.val_error = isnan(v.acc) ? NAN : 1.0 - v.acc;
  s->res.test_error = isnan(te.acc) ? NAN : 1.0 - te.acc;
  s->res.weights_after = active_weights(t->net);
  s->res.seconds = nest_comm_wtime() - t0;
  char widths[256], errs[64] = "";
  nest_net_widths_string(t->net, widths, sizeof widths);
  if (!isnan(s->res.test_error))
    snprintf(errs, sizeof errs, ", test error %.2f%%", 100 * s->res.test_error);
  nest_log_line(nest_trainer_log(t),
                "nest: scann phase done after %d operations in %.1f s: kept the network of "
                "operation %d: %lld -> %lld active weights, widths %s, validation error %.2f%%%s",
                s->res.operations, s->res.seconds, s->res.best_op,
                (long long)s->res.weights_before, (long long)s->res.weights_after, widths,
                100 * s->res.val_error, errs);
  return NEST_OK;
}

nest_status nest_scann_phase(nest_phase_ctx *x, nest_grow *g, nest_scann_state *s) {
  nest_trainer *t = x->t;
  nest_cursor *cur = &x->cur;
  const nest_config *c = &t->cfg;
  const int nops = nest_scann_operations(c);
  const double t0 = t->t_start + x->phase_t0; /* survives a restart */
  if (!x->resuming) NEST_CALL(phase_start(x, s, nops));
  s->ran = 1;
  if (x->resuming && cur->part == 2) x->resuming = 0;
  for (int k = cur->iter - 1; k < nops && cur->part != 2; ++k) {
    cur->iter = k + 1;
    const int op = op_of(c, k);
    if (!(x->resuming && cur->part == 1)) {
      x->resuming = 0;
      cur->part = 0;
      NEST_CALL(run_op(t, g, op, k + 1));
      cur->part = 1, cur->epoch = 0, cur->step = 0;
    }
    nest_eval val, test;
    NEST_CALL(train_after(x, k, nops, &val, &test));
    NEST_CALL(nest_grow_flush(t, g, isnan(val.acc) ? NAN : 1.0 - val.acc));
    NEST_CALL(consider(t, s, &val, &test, k + 1));
    s->res.operations = k + 1;
    print_op(t, s, k, nops, op, &val);
    /* the end of an operation: always a checkpoint */
    cur->iter = k + 2, cur->part = k + 1 == nops ? 2 : 0, cur->epoch = cur->step = 0;
    NEST_CALL(nest_phase_point(x, 1));
  }
  x->resuming = 0;
  return phase_end(x, s, t0);
}
