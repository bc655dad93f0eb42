/* grow.c — the growth phase and the policy driver: targets, the shared gradient pass, the
 * score/select/apply loop, mask-hash checks, events.csv and the growth phase's log lines (one
 * per iteration's growth, one per iteration's result; see grow.h). */
#define _GNU_SOURCE
#include "nest/grow.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/list.h"
#include "nest/rundir.h"
#include "nest/shard.h"

#define MAX_POLICIES 16

/* One event row, buffered until the iteration's validation error is known. */
typedef struct {
  int64_t iteration;
  char policy[32], layer[NEST_NAME_LEN];
  int64_t units, added, removed, active;
  double loss_before, loss_after, seconds;
  double at; /* seconds since the run started, when the event ended (events.csv's time_s) */
  char detail[160];
} event_row;

struct nest_grow {
  int npol;
  const nest_policy_ops *pol[MAX_POLICIES];
  uint8_t *chosen;  /* [nlayers]: layer named in grow.layers (all 1 when it is empty) */
  FILE *events;     /* rank 0 */
  char events_path[NEST_PATH_LEN + 16];
  int64_t *set_ids, n_set;     /* growth set of the current iteration */
  int64_t *score_ids, n_score; /* fixed scoring batch of the current iteration */
  nest_gradsum *pass;          /* shared gradient pass of the current iteration */
  event_row *rows;
  int nrows, caprows;
  int64_t hook_count; /* `count` of the hook being run (policy runs' r->count) */
  double fraction;    /* r->fraction of the pruning step being run (nest_grow_run_one) */
  double score_loss;  /* loss on the scoring batch of the current net, if score_loss_ok */
  int score_loss_ok;  /* cleared when a new scoring batch is drawn (training comes between) */
  char phase[16];     /* events.csv's phase column of the rows written next (grow.h) */
  double val_prev;    /* the validation error of the iteration before the last (ETA only;
                         NaN after a restart) */
  nest_grow_result res;
};

/* ---- set-up ------------------------------------------------------------------------------ */

/* Is layer l a target of policy ops? (chosen, and the policy accepts it) */
static int targets_layer(const nest_grow *g, const nest_net *net, const nest_policy_ops *ops,
                         int l) {
  const char *why = NULL;
  return g->chosen[l] && ops->accepts(net, l, &why);
}

nest_status nest_grow_create(const nest_trainer *t, int events, nest_grow **out) {
  *out = NULL;
  const nest_config *c = &t->cfg;
  char pol[NEST_LIST_MAX][NEST_LIST_ITEM], lay[NEST_LIST_MAX][NEST_LIST_ITEM];
  int npol = 0, nlay = 0;
  NEST_CALL(nest_list_split("grow.policy", c->grow_policy, pol, MAX_POLICIES, &npol));
  NEST_CALL(nest_list_split("grow.layers", c->grow_layers, lay, NEST_LIST_MAX, &nlay));
  if (npol == 0 && nlay > 0)
    return NEST_ERR(NEST_ERR_CONFIG, "grow.layers = %s is set but grow.policy is empty",
                    c->grow_layers);
  if (npol == 0 && !events) return NEST_OK;
  NEST_CALL(nest_policy_check_list(c->grow_policy));
  nest_grow *g;
  NEST_CALL(nest_calloc((void **)&g, 1, sizeof *g, "growth state"));
  nest_status st = NEST_OK;
  const nest_net *net = t->net;
  for (int i = 0; i < npol; ++i) g->pol[g->npol++] = nest_policy_find(pol[i]);
  NEST_CALL_GOTO(st, nest_calloc((void **)&g->chosen, net->nlayers, 1, "layer flags"), fail);
  /* grow.layers: every name must be a layer some listed policy can act on. */
  for (int k = 0; k < nlay; ++k) {
    const char *name = lay[k];
    const nest_layer *l = nest_net_find_layer(net, name);
    if (!l) {
      st = NEST_ERR(NEST_ERR_CONFIG, "grow.layers: the network has no layer '%s'", name);
      goto fail;
    }
    int ok = 0;
    const char *why = "";
    for (int i = 0; i < g->npol && !ok; ++i) ok = g->pol[i]->accepts(net, l->index, &why);
    if (!ok) {
      st = NEST_ERR(NEST_ERR_CONFIG, "grow.layers: %s (a %s layer) cannot grow by %s: %s", name,
                    l->ops->kind, c->grow_policy, why);
      goto fail;
    }
    g->chosen[l->index] = 1;
  }
  if (nlay == 0) memset(g->chosen, 1, (size_t)net->nlayers);
  /* Every policy needs at least one target. */
  for (int i = 0; i < g->npol; ++i) {
    int any = 0;
    for (int l = 0; l < net->nlayers && !any; ++l) any = targets_layer(g, net, g->pol[i], l);
    if (!any) {
      const char *why = "";
      for (int l = 0; l < net->nlayers; ++l)
        if (g->chosen[l]) g->pol[i]->accepts(net, l, &why);
      st = NEST_ERR(NEST_ERR_CONFIG, "grow.policy %s has no layer to act on in %s (%s)",
                    g->pol[i]->name, c->grow_layers[0] ? c->grow_layers : "the network", why);
      goto fail;
    }
  }
  int64_t aw = 0;
  nest_net_count(net, &aw, NULL, NULL);
  g->res.seed_weights = aw;
  g->res.val_error = g->res.test_error = g->val_prev = NAN;
  g->res.best_val = NAN;
  snprintf(g->phase, sizeof g->phase, "grow");
  if (c->grow_max_weights > 0 && c->grow_max_weights < aw) {
    st = NEST_ERR(NEST_ERR_CONFIG,
                  "grow.max_weights = %lld is below the seed's %lld active weights",
                  (long long)c->grow_max_weights, (long long)aw);
    goto fail;
  }
  const int64_t nscore = c->grow_score_batch < t->n_train ? c->grow_score_batch : t->n_train;
  NEST_CALL_GOTO(st, nest_malloc((void **)&g->set_ids, sizeof(int64_t) * (size_t)t->n_train,
                                 "growth set"),
                 fail);
  NEST_CALL_GOTO(st, nest_malloc((void **)&g->score_ids, sizeof(int64_t) * (size_t)t->n_train,
                                 "scoring batch"),
                 fail);
  g->n_score = nscore;
  *out = g;
  return NEST_OK;
fail:
  nest_grow_destroy(&g);
  return st;
}

nest_status nest_grow_open_events(nest_trainer *t, nest_grow *g, const char *run_dir) {
  if (!g) return NEST_OK;
  /* events.csv beside metrics.csv (rank 0); agree so no rank runs on without it. */
  nest_status st = NEST_OK;
  if (t->rank == 0 && run_dir[0]) {
    snprintf(g->events_path, sizeof g->events_path, "%s/events.csv", run_dir);
    g->events = fopen(g->events_path, "w");
    if (!g->events)
      st = NEST_ERR(NEST_ERR_IO, "%s: cannot create: %s", g->events_path, strerror(errno));
    else
      fprintf(g->events,
              "iteration,policy,layer,units_added,connections_added,connections_removed,"
              "active_weights,loss_before,loss_after,val_error,seconds,detail,phase,time_s\n");
  }
  return nest_comm_agree(t->comm, st);
}

void nest_grow_destroy(nest_grow **gp) {
  if (!gp || !*gp) return;
  nest_grow *g = *gp;
  if (g->events) fclose(g->events);
  nest_gradsum_destroy(&g->pass);
  free(g->chosen);
  free(g->set_ids);
  free(g->score_ids);
  free(g->rows);
  free(g);
  *gp = NULL;
}

int nest_grow_has_phase(const nest_grow *g) {
  for (int i = 0; g && i < g->npol; ++i)
    if (g->pol[i]->when == NEST_WHEN_GROWTH) return 1;
  return 0;
}

const nest_grow_result *nest_grow_result_of(const nest_grow *g) { return g ? &g->res : NULL; }

void nest_grow_set_phase(nest_grow *g, const char *phase) {
  if (g) snprintf(g->phase, sizeof g->phase, "%s", phase);
}

/* ---- events ------------------------------------------------------------------------------- */

/* Write the buffered rows with the validation error now known (NaN = not measured), flushed:
 * a crash loses at most the rows not yet written. Rank 0; the status is agreed by the caller. */
static nest_status flush_events(nest_trainer *t, nest_grow *g, double val_error) {
  nest_status st = NEST_OK;
  if (g->events) {
    for (int i = 0; i < g->nrows; ++i) {
      const event_row *e = &g->rows[i];
      fprintf(g->events, "%lld,%s,%s,%lld,%lld,%lld,%lld", (long long)e->iteration, e->policy,
              e->layer, (long long)e->units, (long long)e->added, (long long)e->removed,
              (long long)e->active);
      nest_rundir_csv_num(g->events, e->loss_before, "%.6g");
      nest_rundir_csv_num(g->events, e->loss_after, "%.6g");
      nest_rundir_csv_num(g->events, val_error, "%.6g");
      fprintf(g->events, ",%.3f,%s,%s", e->seconds, e->detail, g->phase);
      nest_rundir_csv_num(g->events, e->at, "%.2f");
      fputc('\n', g->events);
    }
    if (fflush(g->events) != 0 || ferror(g->events))
      st = NEST_ERR(NEST_ERR_IO, "%s: write failed: %s", g->events_path, strerror(errno));
  }
  g->nrows = 0;
  return nest_comm_agree(t->comm, st);
}

static nest_status push_row(nest_grow *g, event_row *e) {
  for (char *c = e->detail; *c; ++c) /* keep events.csv one field per comma */
    if (*c == ',' || *c == '\n') *c = ';';
  if (g->nrows == g->caprows) {
    int cap = g->caprows ? 2 * g->caprows : 64;
    event_row *r = realloc(g->rows, sizeof *r * (size_t)cap);
    if (!r) return NEST_ERR(NEST_ERR_NOMEM, "out of memory for growth events");
    g->rows = r;
    g->caprows = cap;
  }
  g->rows[g->nrows++] = *e;
  return NEST_OK;
}

/* ---- sample sets ---------------------------------------------------------------------------- */

/* Permutation keys far above any training epoch, so growth sets never repeat an epoch's order. */
#define GROWSET_KEY ((int64_t)1 << 40)
#define SCORESET_KEY ((int64_t)1 << 41)

static void draw_sets(nest_trainer *t, nest_grow *g, int64_t iteration) {
  const nest_config *c = &t->cfg;
  const int64_t want = (int64_t)c->grow_batches * c->batch;
  if (c->grow_batches == 0 || want >= t->n_train) {
    memcpy(g->set_ids, t->train_idx, sizeof(int64_t) * (size_t)t->n_train);
    g->n_set = t->n_train;
  } else {
    nest_shard_permute(c->seed, GROWSET_KEY + iteration, t->train_idx, t->n_train, g->set_ids);
    g->n_set = want;
  }
  nest_shard_permute(c->seed, SCORESET_KEY + iteration, t->train_idx, t->n_train, g->score_ids);
  g->score_loss_ok = 0;
}

/* ---- the driver ------------------------------------------------------------------------------ */

/* The target list of a policy: tensor indices (TENSOR) or layer indices (UNITS). */
static int list_targets(const nest_grow *g, const nest_net *net, const nest_policy_ops *ops,
                        int *targets) {
  int n = 0;
  if (ops->target == NEST_TARGET_UNITS) {
    for (int l = 0; l < net->nlayers; ++l)
      if (targets_layer(g, net, ops, l)) targets[n++] = l;
  } else {
    for (int i = 0; i < net->ntensors; ++i)
      if (net->tensors[i].param->maskable && targets_layer(g, net, ops, net->tensors[i].layer->index))
        targets[n++] = i;
  }
  return n;
}

/* Make g->pass current for t->net with everything policies pol[first..] need (growth phase)
 * or just `ops` (other hooks): one pass serves them all until a surgery changes the shapes. */
static nest_status ensure_pass(nest_trainer *t, nest_grow *g, const nest_policy_ops *const *pol,
                               int npol) {
  nest_net *net = t->net;
  if (g->pass && g->pass->generation == net->generation) return NEST_OK;
  nest_gradsum_destroy(&g->pass);
  uint8_t *tens = NULL, *brid = NULL;
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_calloc((void **)&tens, (size_t)net->ntensors, 1, "pass request"), done);
  NEST_CALL_GOTO(st, nest_calloc((void **)&brid, (size_t)net->nlayers, 1, "pass request"), done);
  int *targets = NULL;
  NEST_CALL_GOTO(st, nest_malloc((void **)&targets, sizeof(int) * (size_t)(net->ntensors + net->nlayers),
                                 "targets"),
                 done);
  for (int i = 0; i < npol; ++i) {
    if (!pol[i]->needs) continue;
    const int n = list_targets(g, net, pol[i], targets);
    for (int k = 0; k < n; ++k) {
      if (pol[i]->needs & NEST_NEED_GRAD) {
        if (pol[i]->target == NEST_TARGET_TENSOR) tens[targets[k]] = 1;
      }
      if (pol[i]->needs & NEST_NEED_BRIDGE) brid[targets[k]] = 1;
    }
  }
  nest_gradsum_req req = {tens, brid};
  NEST_CALL_GOTO(st, nest_gradpass(t, g->set_ids, g->n_set, &req, &g->pass), done);
done:
  free(targets);
  free(tens);
  free(brid);
  return st;
}

static int64_t active_weights(const nest_net *net) {
  int64_t aw = 0;
  nest_net_count(net, &aw, NULL, NULL);
  return aw;
}

/* Run pol[0] on targets[0..ntargets): score/select/apply per round, mask-hash check, one event
 * per target with the scoring-batch loss before and after. */
static nest_status run_targets(nest_trainer *t, nest_grow *g, const nest_policy_ops *const *pol,
                               int npol, int64_t iteration, const int *targets, int ntargets) {
  const nest_policy_ops *ops = pol[0];
  const nest_config *c = &t->cfg;
  const int rounds = ops->rounds ? ops->rounds(c) : 1;
  /* the previous policy's last "after" is this one's "before": the net has not changed since */
  if (!g->score_loss_ok) NEST_CALL(nest_gradpass_loss(t, g->score_ids, g->n_score, &g->score_loss));
  g->score_loss_ok = 1;
  double loss = g->score_loss;
  for (int k = 0; k < ntargets; ++k) {
    const double t0 = nest_comm_wtime();
    nest_policy_run r = {.ops = ops,
                         .t = t,
                         .target = targets[k],
                         .iteration = iteration,
                         .count = g->hook_count,
                         .fraction = g->fraction,
                         .score_ids = g->score_ids,
                         .n_score = g->n_score};
    r.layer = ops->target == NEST_TARGET_UNITS ? targets[k]
                                                : t->net->tensors[targets[k]].layer->index;
    char layer_name[NEST_NAME_LEN];
    snprintf(layer_name, sizeof layer_name, "%s", t->net->layers[r.layer]->name);
    event_row e = {.iteration = iteration, .loss_before = loss};
    snprintf(e.policy, sizeof e.policy, "%s", ops->name);
    snprintf(e.layer, sizeof e.layer, "%s", layer_name);
    for (int round = 0; round < rounds; ++round) {
      if (ops->needs) NEST_CALL(ensure_pass(t, g, pol, npol));
      r.pass = ops->needs ? g->pass : NULL;
      r.round = round;
      const int64_t aw = active_weights(t->net);
      r.room = c->grow_max_weights > 0 ? (c->grow_max_weights > aw ? c->grow_max_weights - aw : 0)
                                       : INT64_MAX;
      const nest_status st = nest_policy_step(&r);
      if (st != NEST_OK) { /* say where: "growth iteration 3, neuron on fc1: <what>" */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s %lld, %s on %s: %s",
                 ops->when == NEST_WHEN_GROWTH  ? "growth iteration"
                 : ops->when == NEST_WHEN_PRUNE ? "pruning iteration"
                 : ops->when == NEST_WHEN_EPOCH ? "epoch"
                                                : "step",
                 (long long)iteration, ops->name, layer_name, nest_error_message());
        nest_error_adopt(st, msg);
        nest_error_trace(__FILE__, __LINE__);
        return st;
      }
      if (c->check_masks) {
        char what[96];
        snprintf(what, sizeof what, "masks after %s on %s", ops->name, layer_name);
        NEST_CALL(nest_comm_check_same(t->comm, nest_net_hash(t->net, NEST_HASH_MASKS), what));
      }
    }
    /* a pruning step that changed nothing (no unit left to remove) is not an event */
    if (ops->when == NEST_WHEN_PRUNE && !r.units_added && !r.conns_added && !r.conns_removed)
      continue;
    NEST_CALL(nest_gradpass_loss(t, g->score_ids, g->n_score, &loss));
    g->score_loss = loss;
    e.units = r.units_added;
    e.added = r.conns_added;
    e.removed = r.conns_removed;
    e.active = active_weights(t->net);
    e.loss_after = loss;
    e.seconds = nest_comm_wtime() - t0;
    e.at = nest_comm_wtime() - t->t_start;
    snprintf(e.detail, sizeof e.detail, "%s", r.detail);
    NEST_CALL(push_row(g, &e));
  }
  return NEST_OK;
}

/* Run one policy on all its targets. pol[0] is it; pol[1..npol) the policies still to come in
 * this iteration (their needs join the shared pass). */
static nest_status run_policy(nest_trainer *t, nest_grow *g, const nest_policy_ops *const *pol,
                              int npol, int64_t iteration) {
  const nest_policy_ops *ops = pol[0];
  /* Targets are indices, stable across surgery (it resizes layers, never adds any). */
  int *targets = NULL;
  NEST_CALL(nest_malloc((void **)&targets,
                        sizeof(int) * (size_t)(t->net->ntensors + t->net->nlayers), "targets"));
  const int ntargets = list_targets(g, t->net, ops, targets);
  nest_status st = run_targets(t, g, pol, npol, iteration, targets, ntargets);
  free(targets);
  return st;
}

nest_status nest_grow_begin(nest_trainer *t, nest_grow *g, int64_t iteration) {
  (void)t;
  draw_sets(t, g, iteration);
  nest_gradsum_destroy(&g->pass);
  return NEST_OK;
}

nest_status nest_grow_run_one(nest_trainer *t, nest_grow *g, const nest_policy_ops *ops,
                              int target, int64_t iteration, double fraction,
                              nest_grow_event *done) {
  g->fraction = fraction;
  const int first = g->nrows;
  const nest_status st = run_targets(t, g, &ops, 1, iteration, &target, 1);
  g->fraction = 0;
  NEST_CALL(st);
  if (done) {
    *done = (nest_grow_event){0};
    if (g->nrows > first) {
      const event_row *e = &g->rows[g->nrows - 1];
      done->units = e->units;
      done->added = e->added;
      done->removed = e->removed;
      done->active = e->active;
    }
  }
  return NEST_OK;
}

nest_status nest_grow_note(nest_trainer *t, nest_grow *g, int64_t iteration, const char *what,
                           const char *layer, const char *detail) {
  event_row e = {.iteration = iteration, .loss_before = NAN, .loss_after = NAN};
  snprintf(e.policy, sizeof e.policy, "%s", what);
  snprintf(e.layer, sizeof e.layer, "%s", layer);
  snprintf(e.detail, sizeof e.detail, "%s", detail);
  e.active = active_weights(t->net);
  e.at = nest_comm_wtime() - t->t_start;
  return push_row(g, &e);
}

nest_status nest_grow_flush(nest_trainer *t, nest_grow *g, double val_error) {
  return flush_events(t, g, val_error);
}

nest_status nest_grow_hook(nest_trainer *t, nest_grow *g, nest_policy_when when, int64_t index,
                           int64_t count) {
  if (!g) return NEST_OK;
  for (int i = 0; i < g->npol; ++i) {
    const nest_policy_ops *ops = g->pol[i];
    if (ops->when != when) continue;
    if (when == NEST_WHEN_STEP && ops->due && !ops->due(&t->cfg, index, count)) continue;
    const int first = g->nrows;
    /* The scoring batch of a hook is keyed by its index too (epoch or step). */
    draw_sets(t, g, index);
    nest_gradsum_destroy(&g->pass);
    g->hook_count = count;
    const nest_status st = run_policy(t, g, &g->pol[i], 1, index);
    g->hook_count = 0;
    NEST_CALL(st);
    nest_runlog *log = nest_trainer_log(t);
    if (log && g->nrows > first) {
      int64_t added = 0;
      for (int k = first; k < g->nrows; ++k) added += g->rows[k].added;
      char n[32];
      nest_log_count(added, n, sizeof n);
      /* RigL acts every few hundred steps: a summary line, kept when due (runlog.h); epochs
       * are 0-based here and 1-based in every log line */
      nest_log_summary(log, 0, "%s after %s %lld: %s connections replaced over %d tensors, loss "
                       "%.4f -> %.4f (events.csv)",
                       ops->name, when == NEST_WHEN_EPOCH ? "epoch" : "step",
                       (long long)index + (when == NEST_WHEN_EPOCH), n, g->nrows - first,
                       g->rows[first].loss_before, g->rows[g->nrows - 1].loss_after);
    }
    NEST_CALL(flush_events(t, g, NAN));
  }
  return NEST_OK;
}

/* The patience rule after an iteration with validation error verr (identical on every rank:
 * integer counts): an improvement is an error below best - z SE(best), SE the binomial standard
 * error on the validation set; 1 when grow.patience iterations in a row brought none. */
static int patience(const nest_trainer *t, nest_grow *g, double verr) {
  const nest_config *c = &t->cfg;
  nest_grow_result *r = &g->res;
  if (c->grow_patience <= 0 || isnan(verr)) return 0;
  const double e = r->best_val;
  if (isnan(e) || verr < e - nest_trainer_val_margin(t, e, c->grow_patience_z)) {
    r->best_val = verr;
    r->stale = 0;
    return 0;
  }
  return ++r->stale >= c->grow_patience;
}

/* What growth iteration `it` grew (its event rows, g->rows[0..nrows)) into out: units per layer,
 * connections, the size and widths after it. */
static void growth_text(const nest_trainer *t, const nest_grow *g, char *out, size_t cap) {
  char units[2][512] = {"", ""};
  int64_t nu[2] = {0, 0}, added = 0, removed = 0;
  for (int k = 0; k < g->nrows; ++k) {
    const event_row *e = &g->rows[k];
    added += e->added, removed += e->removed;
    const nest_layer *l = nest_net_find_layer(t->net, e->layer);
    const int conv = l && l->kind == NEST_LAYER_CONV2D;
    if (!e->units) continue;
    char *u = units[conv];
    snprintf(u + strlen(u), sizeof units[0] - strlen(u), "%s%s +%lld", u[0] ? ", " : "",
             e->layer, (long long)e->units);
    nu[conv] += e->units;
  }
  char a[32], act[32], widths[256];
  int n = 0;
  out[0] = '\0';
  for (int k = 0; k < 2; ++k)
    if (nu[k])
      n += snprintf(out + n, cap - (size_t)n, "%s+%lld %s (%s)", n ? ", " : "", (long long)nu[k],
                    k ? "maps" : "neurons", units[k]);
  nest_log_count(added, a, sizeof a);
  n += snprintf(out + n, cap - (size_t)n, "%s+%s connections", n ? ", " : "", a);
  if (removed) {
    nest_log_count(removed, a, sizeof a);
    n += snprintf(out + n, cap - (size_t)n, ", -%s", a);
  }
  nest_log_count(active_weights(t->net), act, sizeof act);
  nest_net_widths_string(t->net, widths, sizeof widths);
  snprintf(out + n, cap - (size_t)n, " -> %s active weights, %s", act, widths);
}

/* The end of growth iteration `it`: its log line (what it grew, the errors after its epochs),
 * the events with its validation error, the result so far. Returns 1 in *stop when the target
 * error or the size cap is reached. */
static nest_status iteration_done(nest_trainer *t, nest_grow *g, int it, const nest_eval *val,
                                  const nest_eval *test, int *stop) {
  const nest_config *c = &t->cfg;
  const double verr = isnan(val->acc) ? NAN : 1.0 - val->acc;
  char grew[1400] = "";
  nest_runlog *log = nest_trainer_log(t);
  if (log) growth_text(t, g, grew, sizeof grew);
  NEST_CALL(flush_events(t, g, verr));
  g->val_prev = g->res.iterations == it - 1 ? g->res.val_error : NAN;
  g->res.iterations = it;
  g->res.val_error = verr;
  g->res.test_error = isnan(test->acc) ? NAN : 1.0 - test->acc;
  const int64_t aw = active_weights(t->net);
  *stop = 0;
  /* 1e-9 slack: 1 - 0.992 is 0.008000000000000007, and 0.80% must meet a target of 0.008 */
  const int stale = patience(t, g, verr);
  if (c->grow_target_error > 0 && !isnan(verr) && verr <= c->grow_target_error + 1e-9) {
    snprintf(g->res.stop, sizeof g->res.stop, "target error");
    *stop = 1;
  } else if (c->grow_max_weights > 0 && aw >= c->grow_max_weights) {
    snprintf(g->res.stop, sizeof g->res.stop, "size cap");
    *stop = 1;
  } else if (stale) {
    snprintf(g->res.stop, sizeof g->res.stop, "patience");
    *stop = 1;
  }
  if (log) {
    char errs[256] = "", clock[96];
    int n = 0;
    if (!isnan(verr))
      n += snprintf(errs + n, sizeof errs - (size_t)n, "; validation error %.2f%%", 100 * verr);
    if (!isnan(g->res.test_error))
      n += snprintf(errs + n, sizeof errs - (size_t)n, "%stest error %.2f%%", n ? ", " : "; ",
                    100 * g->res.test_error);
    if (*stop) snprintf(errs + n, sizeof errs - (size_t)n, " (%s reached)", g->res.stop);
    nest_trainer_clock(t, -1, clock, sizeof clock);
    nest_log_line(log, "grow %d: %s%s | %s", it, grew, errs, clock);
  }
  return NEST_OK;
}

int nest_grow_iterations_left(const nest_trainer *t, const nest_grow *g, int it) {
  const nest_config *c = &t->cfg;
  int left = c->grow_iterations - (it > 0 ? it : 0);
  if (!g || left <= 0 || it <= 0) return left > 0 ? left : 0;
  /* grow.target_error: the validation error falls roughly geometrically from one iteration to
   * the next; the latest ratio says how many more the target needs */
  const int m = g->res.iterations; /* the last iteration measured */
  const double e1 = g->res.val_error, e0 = g->val_prev, target = c->grow_target_error;
  if (target > 0 && m > 0 && e1 > target && e0 > e1) {
    const double k = m + ceil(log(target / e1) / log(e1 / e0)) - it;
    if (k < left) left = k > 0 ? (int)k : 0;
  }
  /* grow.max_weights: the weights grow roughly linearly, at the mean rate so far */
  const int64_t aw = active_weights(t->net), seed = g->res.seed_weights;
  if (c->grow_max_weights > 0 && aw > seed) {
    const double k = ceil((double)(c->grow_max_weights - aw) / ((double)(aw - seed) / it));
    if (k < left) left = k > 0 ? (int)k : 0;
  }
  return left;
}

/* The phase's first log line. */
static void print_start(nest_trainer *t, double lr) {
  const nest_config *c = &t->cfg;
  char stop[256] = "";
  if (c->grow_target_error > 0)
    snprintf(stop, sizeof stop, ", until validation error <= %.2f%%", 100 * c->grow_target_error);
  if (c->grow_max_weights > 0)
    snprintf(stop + strlen(stop), sizeof stop - strlen(stop), ", at most %lld weights",
             (long long)c->grow_max_weights);
  if (c->grow_patience > 0)
    snprintf(stop + strlen(stop), sizeof stop - strlen(stop),
             ", until %d iteration%s bring no gain over %g standard errors", c->grow_patience,
             c->grow_patience == 1 ? "" : "s", c->grow_patience_z);
  nest_log_line(nest_trainer_log(t),
                "nest: growth phase: %s, up to %d iterations of {grow, train %d epoch%s, lr %g "
                "%s}%s; one line per iteration, its events in events.csv",
                c->grow_policy, c->grow_iterations, c->grow_train_epochs,
                c->grow_train_epochs == 1 ? "" : "s", lr, c->grow_schedule, stop);
}

nest_status nest_grow_phase(nest_phase_ctx *x, nest_grow *g) {
  if (!nest_grow_has_phase(g)) return NEST_OK;
  nest_trainer *t = x->t;
  nest_cursor *cur = &x->cur;
  const nest_config *c = &t->cfg;
  const double t_start = t->t_start + x->phase_t0; /* survives a restart */
  const nest_policy_ops *growth[MAX_POLICIES];
  int ng = 0;
  for (int i = 0; i < g->npol; ++i)
    if (g->pol[i]->when == NEST_WHEN_GROWTH) growth[ng++] = g->pol[i];
  const double lr = c->grow_lr > 0 ? c->grow_lr : c->lr;
  /* Each iteration's epochs follow their own schedule (cosine: a warm restart from lr to
   * optim.min_lr), so the validation error after an iteration measures the architecture, not
   * where a long schedule happens to be; that is what the target-error stop compares. */
  nest_optim sched = t->optim;
  sched.lr = lr;
  sched.schedule = strcmp(c->grow_schedule, "cosine") == 0 ? NEST_SCHED_COSINE : NEST_SCHED_CONST;
  sched.warmup_epochs = 0;
  sched.total_epochs = c->grow_train_epochs;
  nest_grow_set_phase(g, "grow");
  if (!x->resuming) {
    print_start(t, lr);
    snprintf(g->res.stop, sizeof g->res.stop, "iterations");
    cur->iter = 1, cur->part = 0;
  }
  /* The cursor (phase.h): iteration cur.iter, part 0 = its policies next, 1 = in its epochs,
   * 2 = the loop is over. */
  if (x->resuming && cur->part == 2) x->resuming = 0;
  for (int it = cur->iter; it <= c->grow_iterations && cur->part != 2; ++it) {
    cur->iter = it;
    if (!(x->resuming && cur->part == 1)) {
      x->resuming = 0;
      cur->part = 0;
      draw_sets(t, g, it);
      nest_gradsum_destroy(&g->pass);
      for (int i = 0; i < ng; ++i) NEST_CALL(run_policy(t, g, &growth[i], ng - i, it));
      nest_gradsum_destroy(&g->pass); /* its memory is the size of the weights: free it to train */
      cur->part = 1, cur->epoch = 0, cur->step = 0;
    }
    nest_eval val = {NAN, NAN, 0, NAN}, test = {NAN, NAN, 0, NAN};
    char label[32];
    snprintf(label, sizeof label, "grow %d, epoch", it);
    /* the last epoch's summary is a progress line: iteration_done's line gives the result */
    const nest_phase_epochs loop = {.phase = "grow",
                                    .sched = &sched,
                                    .epochs = c->grow_train_epochs,
                                    .count = c->grow_train_epochs,
                                    .eval_every = c->grow_train_epochs,
                                    .label = label,
                                    .iteration = it,
                                    .keep_last = -1};
    NEST_CALL(nest_phase_run_epochs(x, &loop, &val, &test));
    if (c->grow_train_epochs == 0) NEST_CALL(nest_trainer_evaluate_sets(t, NEST_EVAL_BOTH, &val, &test));
    int stop = 0;
    NEST_CALL(iteration_done(t, g, it, &val, &test, &stop));
    /* the end of an iteration: always a checkpoint */
    cur->part = stop ? 2 : 0, cur->iter = stop ? it : it + 1;
    cur->epoch = cur->step = 0;
    NEST_CALL(nest_phase_point(x, 1));
  }
  x->resuming = 0; /* resumed after the last iteration (cursor iter > grow.iterations) */
  g->res.grown_weights = active_weights(t->net);
  g->res.seconds = nest_comm_wtime() - t_start;
  char a[32], b[32];
  nest_log_count(g->res.seed_weights, a, sizeof a);
  nest_log_count(g->res.grown_weights, b, sizeof b);
  nest_log_line(nest_trainer_log(t),
                "nest: growth phase done after %d iteration%s (%s) in %.1f s: %s -> %s active "
                "weights",
                g->res.iterations, g->res.iterations == 1 ? "" : "s", g->res.stop, g->res.seconds,
                a, b);
  return NEST_OK;
}

/* ---- checkpoints (restart.c) ----------------------------------------------------------------- */

nest_status nest_grow_save(const nest_grow *g, nest_ckpt *w) {
  if (!g) return NEST_OK;
  const int64_t gi[3] = {g->res.iterations, g->res.seed_weights, g->res.grown_weights};
  const double gv[3] = {g->res.val_error, g->res.test_error, g->res.seconds};
  NEST_CALL(nest_ckpt_put(w, "grow_result_counts", NEST_CK_I64, gi, 3));
  NEST_CALL(nest_ckpt_put(w, "grow_result_values", NEST_CK_F64, gv, 3));
  NEST_CALL(nest_ckpt_put_strs(w, "grow_result_stop", g->res.stop, 0, 1, sizeof g->res.stop));
  const double gp[2] = {g->res.best_val, (double)g->res.stale};
  NEST_CALL(nest_ckpt_put(w, "grow_patience", NEST_CK_F64, gp, 2));
  /* event rows not yet written (they wait for the iteration's validation error) */
  const size_t n = (size_t)g->nrows;
  int64_t *iv = NULL;
  double *fv = NULL;
  nest_status st = nest_malloc((void **)&iv, sizeof(int64_t) * 5 * (n ? n : 1), "event rows");
  if (st == NEST_OK) st = nest_malloc((void **)&fv, sizeof(double) * 4 * (n ? n : 1), "event rows");
  for (size_t i = 0; st == NEST_OK && i < n; ++i) {
    const event_row *e = &g->rows[i];
    const int64_t a[5] = {e->iteration, e->units, e->added, e->removed, e->active};
    memcpy(iv + 5 * i, a, sizeof a);
    fv[3 * i] = e->loss_before, fv[3 * i + 1] = e->loss_after, fv[3 * i + 2] = e->seconds;
    fv[3 * n + i] = e->at;
  }
  if (st == NEST_OK) st = nest_ckpt_put(w, "event_counts", NEST_CK_I64, iv, 5 * n);
  if (st == NEST_OK) st = nest_ckpt_put(w, "event_values", NEST_CK_F64, fv, 3 * n);
  /* the rows' time_s: a dataset of its own, so that a checkpoint without it (an older nest's)
   * still loads */
  if (st == NEST_OK) st = nest_ckpt_put(w, "event_times", NEST_CK_F64, fv + 3 * n, n);
  if (st == NEST_OK)
    st = nest_ckpt_put_strs(w, "event_policy", g->rows ? g->rows[0].policy : "", sizeof(event_row),
                            n, sizeof g->rows[0].policy);
  if (st == NEST_OK)
    st = nest_ckpt_put_strs(w, "event_layer", g->rows ? g->rows[0].layer : "", sizeof(event_row),
                            n, sizeof g->rows[0].layer);
  if (st == NEST_OK)
    st = nest_ckpt_put_strs(w, "event_detail", g->rows ? g->rows[0].detail : "", sizeof(event_row),
                            n, sizeof g->rows[0].detail);
  free(iv);
  free(fv);
  return st;
}

/* One string of a table read by nest_ckpt_get_strs into dst[cap]. */
static void copy_str(char *dst, size_t cap, const char *tab, size_t width, size_t i) {
  snprintf(dst, cap, "%.*s", (int)width, tab + i * width);
}

nest_status nest_grow_load(nest_grow *g, nest_ckpt *r) {
  if (!g) return NEST_OK;
  int64_t gi[3];
  double gv[3];
  NEST_CALL(nest_ckpt_get(r, "grow_result_counts", NEST_CK_I64, gi, 3));
  NEST_CALL(nest_ckpt_get(r, "grow_result_values", NEST_CK_F64, gv, 3));
  g->res.iterations = (int)gi[0];
  g->res.seed_weights = gi[1];
  g->res.grown_weights = gi[2];
  g->res.val_error = gv[0], g->res.test_error = gv[1], g->res.seconds = gv[2];
  double gp[2] = {NAN, 0}; /* absent in checkpoints of earlier versions */
  if (nest_ckpt_has(r, "grow_patience")) NEST_CALL(nest_ckpt_get(r, "grow_patience", NEST_CK_F64, gp, 2));
  g->res.best_val = gp[0], g->res.stale = (int)gp[1];
  char *tab[4] = {NULL, NULL, NULL, NULL};
  size_t n = 0, w[4], m;
  nest_status st = nest_ckpt_get_strs(r, "grow_result_stop", &tab[0], &m, &w[0]);
  if (st == NEST_OK && m == 1) copy_str(g->res.stop, sizeof g->res.stop, tab[0], w[0], 0);
  free(tab[0]);
  tab[0] = NULL;
  NEST_CALL(st);
  NEST_CALL(nest_ckpt_len(r, "event_values", &n));
  n /= 3;
  int64_t *iv = NULL;
  double *fv = NULL;
  st = nest_malloc((void **)&iv, sizeof(int64_t) * 5 * (n ? n : 1), "event rows");
  if (st == NEST_OK) st = nest_malloc((void **)&fv, sizeof(double) * 4 * (n ? n : 1), "event rows");
  if (st == NEST_OK) st = nest_ckpt_get(r, "event_counts", NEST_CK_I64, iv, 5 * n);
  if (st == NEST_OK) st = nest_ckpt_get(r, "event_values", NEST_CK_F64, fv, 3 * n);
  for (size_t i = 0; st == NEST_OK && i < n; ++i) fv[3 * n + i] = NAN;
  if (st == NEST_OK && nest_ckpt_has(r, "event_times"))
    st = nest_ckpt_get(r, "event_times", NEST_CK_F64, fv + 3 * n, n);
  const char *names[3] = {"event_policy", "event_layer", "event_detail"};
  for (int k = 0; k < 3 && st == NEST_OK; ++k) {
    st = nest_ckpt_get_strs(r, names[k], &tab[k], &m, &w[k]);
    if (st == NEST_OK && m != n)
      st = NEST_ERR(NEST_ERR_FORMAT, "checkpoint: /state/%s has %zu rows, expected %zu", names[k],
                    m, n);
  }
  g->nrows = 0;
  for (size_t i = 0; st == NEST_OK && i < n; ++i) {
    event_row e = {.iteration = iv[5 * i], .units = iv[5 * i + 1], .added = iv[5 * i + 2],
                   .removed = iv[5 * i + 3], .active = iv[5 * i + 4], .loss_before = fv[3 * i],
                   .loss_after = fv[3 * i + 1], .seconds = fv[3 * i + 2], .at = fv[3 * n + i]};
    copy_str(e.policy, sizeof e.policy, tab[0], w[0], i);
    copy_str(e.layer, sizeof e.layer, tab[1], w[1], i);
    copy_str(e.detail, sizeof e.detail, tab[2], w[2], i);
    st = push_row(g, &e);
  }
  for (int k = 0; k < 4; ++k) free(tab[k]);
  free(iv);
  free(fv);
  return st;
}

nest_status nest_grow_events_tell(nest_grow *g, int64_t *bytes) {
  *bytes = -1;
  if (!g || !g->events) return NEST_OK;
  if (fflush(g->events) != 0)
    return NEST_ERR(NEST_ERR_IO, "%s: write failed: %s", g->events_path, strerror(errno));
  *bytes = (int64_t)ftell(g->events);
  return NEST_OK;
}

nest_status nest_grow_events_reopen(nest_trainer *t, nest_grow *g, const char *run_dir,
                                    int64_t bytes) {
  if (!g) return NEST_OK;
  nest_status st = NEST_OK;
  if (t->rank == 0 && run_dir[0] && bytes >= 0) {
    snprintf(g->events_path, sizeof g->events_path, "%s/events.csv", run_dir);
    st = nest_rundir_truncate(g->events_path, bytes, &g->events);
  }
  return nest_comm_agree(t->comm, st);
}
