/* pipeline.c — one synthesis run (pipeline.h): checks and set-up, the phases in order with
 * their checkpoint points and the training phase's growth hooks, the stage models,
 * summary.txt and the report. */
#define _GNU_SOURCE
#include "nest/pipeline.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nest/atomic.h"
#include "nest/model.h"
#include "nest/gradpass.h"
#include "nest/list.h"
#include "nest/loss.h"
#include "nest/report.h"
#include "nest/rundir.h"

static const char *const phase_names[NEST_PHASE_COUNT] = {"grow", "train", "prune", "area",
                                                          "scann"};

/* ---- set-up ----------------------------------------------------------------------------------- */

/* synthesis.phases -> p->phases. Without it: grow if grow.policy lists a growth policy, then
 * train, then scann if synthesis.scheme names one. The names were checked
 * (nest_policy_check_list) before. */
static nest_status parse_phases(nest_pipeline *p, const nest_config *c) {
  char w[NEST_LIST_MAX][NEST_LIST_ITEM];
  int n = 0;
  p->nphases = 0;
  memset(p->phase_has, 0, sizeof p->phase_has);
  NEST_CALL(nest_list_split("synthesis.phases", c->phases, w, NEST_MAX_PHASES, &n));
  if (n == 0) {
    char pol[NEST_LIST_MAX][NEST_LIST_ITEM];
    int np = 0, growth = 0;
    NEST_CALL(nest_list_split("grow.policy", c->grow_policy, pol, NEST_LIST_MAX, &np));
    for (int i = 0; i < np; ++i) {
      const nest_policy_ops *ops = nest_policy_find(pol[i]);
      growth |= ops && ops->when == NEST_WHEN_GROWTH;
    }
    if (growth) p->phases[p->nphases++] = NEST_PHASE_GROW;
    p->phases[p->nphases++] = NEST_PHASE_TRAIN;
    if (strcmp(c->scheme, "none") != 0) p->phases[p->nphases++] = NEST_PHASE_SCANN;
  }
  for (int i = 0; i < n; ++i) {
    int k = -1;
    for (int j = 0; j < NEST_PHASE_COUNT; ++j)
      if (strcmp(w[i], phase_names[j]) == 0) k = j;
    if (k < 0)
      return NEST_ERR(NEST_ERR_CONFIG,
                      "synthesis.phases = %s: unknown phase '%s' (known: grow, train, prune, area, "
                      "scann)",
                      c->phases, w[i]);
    if (p->phase_has[k])
      return NEST_ERR(NEST_ERR_CONFIG, "synthesis.phases = %s: phase '%s' is listed twice",
                      c->phases, phase_names[k]);
    p->phases[p->nphases++] = (nest_phase_kind)k;
    p->phase_has[k] = 1;
  }
  for (int i = 0; i < p->nphases; ++i) p->phase_has[p->phases[i]] = 1;
  return NEST_OK;
}

/* The phases against the policies (nest_grow_create parsed grow.policy), the net and the
 * data: the pruning guard and the growth target error judge a validation error. */
static nest_status check_phases(const nest_pipeline *p) {
  const nest_trainer *t = p->t;
  const nest_config *c = &t->cfg;
  const int growth = nest_grow_has_phase(p->grow);
  if (p->phase_has[NEST_PHASE_GROW] && !growth)
    return NEST_ERR(NEST_ERR_CONFIG,
                    "synthesis.phases = %s lists grow, but grow.policy (%s) has no growth policy "
                    "(conn, neuron, fmap, strategic)",
                    c->phases, c->grow_policy[0] ? c->grow_policy : "empty");
  if (growth && !p->phase_has[NEST_PHASE_GROW])
    return NEST_ERR(NEST_ERR_CONFIG,
                    "grow.policy = %s lists growth policies, but synthesis.phases = %s has no "
                    "grow phase",
                    c->grow_policy, c->phases);
  for (int area = 0; area < 2; ++area) {
    if (!p->phase_has[area ? NEST_PHASE_AREA : NEST_PHASE_PRUNE]) continue;
    NEST_CALL(nest_prune_check(t, area));
    NEST_CALL(nest_trainer_need_val(t, "raise data.val_split",
                                    "synthesis.phases = %s: the %s phase's guard checks the "
                                    "validation error after every step",
                                    c->phases[0] ? c->phases : "(default)",
                                    area ? "area" : "prune"));
  }
  if (p->phase_has[NEST_PHASE_SCANN]) NEST_CALL(nest_scann_check(t));
  else if (strcmp(c->scheme, "none") != 0)
    return NEST_ERR(NEST_ERR_CONFIG, "synthesis.scheme = %s, but synthesis.phases = %s has no "
                    "scann phase to run it (add scann, or leave synthesis.phases empty)",
                    c->scheme, c->phases);
  if (p->phase_has[NEST_PHASE_GROW] && c->grow_target_error > 0)
    NEST_CALL(nest_trainer_need_val(t, "raise data.val_split or set grow.target_error = 0",
                                    "grow.target_error = %g stops growth on the validation error",
                                    c->grow_target_error));
  if (p->phase_has[NEST_PHASE_GROW] && c->grow_patience > 0)
    NEST_CALL(nest_trainer_need_val(t, "raise data.val_split or set grow.patience = 0",
                                    "grow.patience = %d stops growth on the validation error",
                                    c->grow_patience));
  return NEST_OK;
}

/* The model file the engine's net comes from. A run that resumes takes it from its newest
 * checkpoint that loads (the resume then loads the checkpoint it chooses): model.init_from
 * seeded the run when it started and is not read again, so it may have moved since. NULL in
 * *file: as the config says. */
static nest_status net_source(const nest_config *c, nest_comm *comm, char *path, size_t cap,
                              const char **file) {
  *file = NULL;
  path[0] = '\0';
  if (!c->init_from[0]) return NEST_OK;
  nest_status st = NEST_OK;
  if (nest_comm_rank(comm) == 0) {
    char dir[NEST_PATH_LEN];
    int64_t *seqs = NULL;
    int n = 0;
    nest_rundir_existing(c, dir, sizeof dir);
    if (dir[0]) st = nest_rundir_checkpoints(dir, &seqs, &n);
    for (int i = 0; i < n && st == NEST_OK && !path[0]; ++i) {
      nest_net *net = NULL;
      nest_rundir_checkpoint(dir, seqs[i], path, cap);
      if (nest_model_load(path, 1, 1, &net) != NEST_OK) path[0] = '\0'; /* damaged: older */
      nest_error_clear();
      nest_net_destroy(&net);
    }
    free(seqs);
  }
  NEST_CALL(nest_comm_agree(comm, st));
  NEST_CALL(nest_comm_bcast(comm, path, cap, 0));
  if (path[0]) *file = path;
  return NEST_OK;
}

static nest_status point(void *arg, int force) {
  nest_pipeline *p = arg;
  return nest_restart_point(p->rst, force);
}

/* ---- the run's ETA ---------------------------------------------------------------------------- */

/* Optimizer steps phase i still takes: all of it before it began, the rest of it when it is the
 * cursor's phase. Growth iterations and pruning steps are not known in advance. Growth counts
 * the iterations grow.iterations allows, fewer once the validation error's fall or the weights'
 * growth says that grow.target_error or grow.max_weights comes sooner
 * (nest_grow_iterations_left); pruning counts the guard trips its targets have left, priced at
 * the kept steps per trip and retraining steps per step seen so far (nest_prune_steps_left).
 * Both refine as the run shows how it goes; the log's ETA is this times the seconds per step. */
static int64_t phase_steps_left(const nest_pipeline *p, int i) {
  const nest_trainer *t = p->t;
  const nest_config *c = &t->cfg;
  const nest_cursor *cur = &p->run.cur;
  const int64_t spe = t->steps_per_epoch;
  const int now = i == cur->phase;
  switch (p->phases[i]) {
  case NEST_PHASE_GROW: {
    const int64_t e = c->grow_train_epochs;
    if (!now) return nest_grow_iterations_left(t, p->grow, 0) * e * spe;
    if (cur->part == 2) return 0;
    const int64_t in_it = cur->part == 1 ? (e - cur->epoch) * spe - cur->step : e * spe;
    return in_it + nest_grow_iterations_left(t, p->grow, cur->iter) * e * spe;
  }
  case NEST_PHASE_TRAIN:
    return now ? (c->epochs - cur->epoch) * spe - cur->step : (int64_t)c->epochs * spe;
  case NEST_PHASE_PRUNE:
  case NEST_PHASE_AREA: {
    const int area = p->phases[i] == NEST_PHASE_AREA;
    const int64_t ft = area && c->prune_area_epochs >= 0 ? c->prune_area_epochs : c->prune_epochs;
    if (now && cur->part == 2) return (ft - cur->epoch) * spe - cur->step;
    return nest_prune_steps_left(t, &p->prune, area, now) + ft * spe;
  }
  case NEST_PHASE_SCANN: {
    const int64_t ops = nest_scann_operations(c), e = c->scann_epochs;
    if (!now) return ops * e * spe;
    if (cur->part == 2) return 0;
    const int64_t in_op = cur->part == 1 ? (e - cur->epoch) * spe - cur->step : e * spe;
    return in_op + (ops - cur->iter) * e * spe;
  }
  default: return 0;
  }
}

/* The engine's steps_left (train.h): every phase from the cursor's on. */
static int64_t run_steps_left(void *arg) {
  const nest_pipeline *p = arg;
  int64_t left = 0;
  for (int i = p->run.cur.phase > 0 ? p->run.cur.phase : 0; i < p->nphases; ++i)
    left += phase_steps_left(p, i);
  return left > 0 ? left : 0;
}

/* NEST_RUN_DIR_FILE=PATH in the environment: rank 0 writes the run directory into PATH (one
 * line), so that a script that let nest name the directory finds it (jobs/run_local.sh runs
 * nest_plot on it). */
static nest_status tell_run_dir(const nest_pipeline *p) {
  const char *file = getenv("NEST_RUN_DIR_FILE");
  nest_status st = NEST_OK;
  if (p->t->rank == 0 && file && file[0]) {
    FILE *f = fopen(file, "w");
    int bad = !f;
    if (f) bad = fprintf(f, "%s\n", p->run_dir) < 0, bad |= fclose(f) != 0;
    if (bad)
      st = NEST_ERR(NEST_ERR_IO, "NEST_RUN_DIR_FILE = %s: cannot write the run directory there: %s",
                    file, strerror(errno));
  }
  return nest_comm_agree(p->t->comm, st);
}

/* Everything after the engine: phases, checks, the run directory, checkpoints. */
static nest_status setup(nest_pipeline *p, const nest_config *cfg) {
  nest_trainer *t = p->t;
  nest_comm *comm = t->comm;
  p->run = (nest_phase_ctx){.t = t, .point = point, .point_arg = p};
  p->last_val = p->last_test = (nest_eval){NAN, NAN, 0, NAN};
  NEST_CALL(parse_phases(p, cfg));
  /* Growth and pruning configuration is checked against the built net before anything is
   * written. */
  nest_status st = nest_grow_create(t,
                                    p->phase_has[NEST_PHASE_PRUNE] ||
                                        p->phase_has[NEST_PHASE_AREA] ||
                                        p->phase_has[NEST_PHASE_SCANN],
                                    &p->grow);
  if (st == NEST_OK) st = check_phases(p);
  NEST_CALL(nest_comm_agree(comm, st));
  nest_rundir rd;
  NEST_CALL(nest_rundir_open(cfg, comm, &rd));
  snprintf(p->run_dir, sizeof p->run_dir, "%s", rd.path);
  t->metrics = rd.metrics;
  t->steps_left = run_steps_left, t->steps_left_arg = p;
  NEST_CALL(tell_run_dir(p));
  snprintf(t->metrics_path, sizeof t->metrics_path, "%s/metrics.csv", rd.path);
  if (!rd.resume) NEST_CALL(nest_grow_open_events(t, p->grow, p->run_dir));
  const nest_restart_src src = {.run = &p->run,
                                .grow = p->grow,
                                .prune = &p->prune,
                                .scann = &p->scann,
                                .last_val = &p->last_val,
                                .last_test = &p->last_test,
                                .nphases = p->nphases,
                                .run_dir = p->run_dir};
  NEST_CALL(nest_restart_create(&src, &p->rst));
  if (rd.resume) NEST_CALL(nest_restart_resume(p->rst));
  return NEST_OK;
}

nest_status nest_pipeline_create_with_data(const nest_config *cfg, nest_comm *comm,
                                           nest_dataset *train, nest_dataset *test,
                                           nest_pipeline **out) {
  *out = NULL;
  nest_pipeline *p = NULL;
  char from[NEST_PATH_LEN + 64];
  const char *net_file = NULL;
  /* the policy names first: config.c checks the words of no list against the registry */
  nest_status st = nest_policy_check_list(cfg->grow_policy);
  if (st == NEST_OK) st = nest_calloc((void **)&p, 1, sizeof *p, "pipeline");
  if (st == NEST_OK) st = net_source(cfg, comm, from, sizeof from, &net_file);
  if (st != NEST_OK) {
    free(p);
    nest_dataset_destroy(&train);
    nest_dataset_destroy(&test);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  nest_config c = *cfg; /* dr.shrink changes model.width */
  st = nest_dr_prepare(&c, comm, &train, &test, &p->dr);
  if (st != NEST_OK) {
    nest_dataset_destroy(&train);
    nest_dataset_destroy(&test);
    free(p);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  st = nest_trainer_create_from(&c, net_file, comm, train, test, &p->t);
  if (st == NEST_OK) p->t->reduce = p->dr.reduce;
  if (st == NEST_OK) st = setup(p, &c);
  if (st != NEST_OK) {
    nest_pipeline_destroy(&p);
    nest_error_trace(__FILE__, __LINE__);
    return st;
  }
  *out = p;
  return NEST_OK;
}

nest_status nest_pipeline_create(const nest_config *cfg, nest_comm *comm, nest_pipeline **out) {
  *out = NULL;
  /* before reading any data: a misspelt policy fails at once */
  NEST_CALL(nest_policy_check_list(cfg->grow_policy));
  nest_dataset *train = NULL, *test = NULL;
  NEST_CALL(nest_trainer_load_data(cfg, comm, &train, &test));
  return nest_pipeline_create_with_data(cfg, comm, train, test, out);
}

void nest_pipeline_destroy(nest_pipeline **pp) {
  if (!pp || !*pp) return;
  nest_pipeline *p = *pp;
  nest_restart_destroy(&p->rst);
  nest_prune_state_free(&p->prune);
  nest_scann_state_free(&p->scann);
  nest_dr_result_free(&p->dr);
  nest_grow_destroy(&p->grow);
  nest_trainer_destroy(&p->t);
  free(p);
  *pp = NULL;
}

/* ---- the run's files ---------------------------------------------------------------------- */

static void summary_prune(FILE *f, const char *p, const nest_prune_result *r) {
  fprintf(f, "%s_iterations = %d\n%s_steps_kept = %lld\n%s_steps_restored = %lld\n", p,
          r->iterations, p, (long long)r->steps_kept, p, (long long)r->steps_restored);
  fprintf(f, "%s_wall_s = %.1f\n%s_target_error = %.6f\n", p, r->seconds, p, r->target);
  fprintf(f, "%s_weights_before = %lld\n%s_weights_after = %lld\n", p,
          (long long)r->weights_before, p, (long long)r->weights_after);
  fprintf(f, "%s_flops_before = %.6g\n%s_flops_after = %.6g\n", p, r->flops_before, p,
          r->flops_after);
  fprintf(f, "%s_conv_flops_before = %.6g\n%s_conv_flops_after = %.6g\n", p,
          r->conv_flops_before, p, r->conv_flops_after);
  if (!isnan(r->val_error)) fprintf(f, "%s_val_error = %.6f\n", p, r->val_error);
  if (!isnan(r->test_error)) fprintf(f, "%s_test_error = %.6f\n", p, r->test_error);
}

/* One line group per stage model in the run directory (stage_<label>_file, _val_error,
 * _test_error, _weights): read back from the files, so that a resumed run lists the stages
 * saved before the resume too. The final stage (model.h5, written after summary.txt) is the
 * network now. */
static void summary_stages(const nest_pipeline *p, FILE *f, int64_t final_weights) {
  static const char *const files[] = {"model_seed.h5", "model_grown.h5", "model_trained.h5"};
  static const char *const labels[] = {"seed", "grown", "trained"};
  for (int k = 0; k < 3; ++k) {
    char path[NEST_PATH_LEN + 32];
    snprintf(path, sizeof path, "%s/%s", p->run_dir, files[k]);
    nest_model_info info;
    nest_model_masks *m = NULL;
    if (access(path, F_OK) != 0 || nest_model_read_info(path, &info) != NEST_OK) {
      nest_error_clear();
      continue;
    }
    int64_t active = -1;
    if (nest_model_read_masks(path, &m) == NEST_OK) {
      active = 0;
      for (int i = 0; i < m->ntensors; ++i)
        for (size_t j = 0; j < m->tensors[i].count; ++j) active += m->tensors[i].mask[j];
    }
    nest_error_clear();
    nest_model_masks_free(&m);
    fprintf(f, "stage_%s_file = %s\n", labels[k], files[k]);
    if (!isnan(info.val_error)) fprintf(f, "stage_%s_val_error = %.6f\n", labels[k], info.val_error);
    if (!isnan(info.test_error)) fprintf(f, "stage_%s_test_error = %.6f\n", labels[k], info.test_error);
    if (active >= 0) fprintf(f, "stage_%s_weights = %lld\n", labels[k], (long long)active);
    nest_model_info_free(&info);
  }
  fprintf(f, "stage_final_file = model.h5\n");
  if (!isnan(p->last_val.acc)) fprintf(f, "stage_final_val_error = %.6f\n", 1.0 - p->last_val.acc);
  if (!isnan(p->last_test.acc)) fprintf(f, "stage_final_test_error = %.6f\n", 1.0 - p->last_test.acc);
  fprintf(f, "stage_final_weights = %lld\n", (long long)final_weights);
}

/* summary.txt's lines into f. */
static void summary_lines(const nest_pipeline *p, FILE *f) {
  const nest_trainer *t = p->t;
  const nest_config *c = &t->cfg;
  const nest_eval *val = &p->last_val, *test = &p->last_test;
  int64_t aw, tw;
  nest_net_count(t->net, &aw, &tw, NULL);
  const double el = nest_comm_wtime() - t->t_start;
  char widths[512], arch[4096];
  nest_net_widths_string(t->net, widths, sizeof widths);
  nest_net_arch_string(t->net, arch, sizeof arch);
  fprintf(f, "arch = %s\nepochs = %lld\nranks = %d\nthreads = %d\nwall_s = %.1f\n", c->arch,
          (long long)t->epoch, t->nranks, t->nthreads, el);
  fprintf(f, "widths = %s\nlayers = %s\n", widths, arch);
  if (!c->test[0] && c->test_split > 0)
    fprintf(f, "test_split = %g\ntest_samples = %lld\n", c->test_split, (long long)t->n_test);
  fprintf(f, "active_weights = %lld\ntotal_weights = %lld\nflops_per_sample = %.6g\n",
          (long long)aw, (long long)tw, nest_net_flops(t->net));
  const nest_grow_result *g = nest_grow_result_of(p->grow);
  if (g && nest_grow_has_phase(p->grow)) {
    fprintf(f, "grow_iterations = %d\ngrow_stop = %s\ngrow_wall_s = %.1f\n", g->iterations,
            g->stop, g->seconds);
    fprintf(f, "seed_weights = %lld\ngrown_weights = %lld\n", (long long)g->seed_weights,
            (long long)g->grown_weights);
    if (!isnan(g->val_error)) fprintf(f, "grow_val_error = %.6f\n", g->val_error);
    if (!isnan(g->test_error)) fprintf(f, "grow_test_error = %.6f\n", g->test_error);
  }
  if (p->prune.ran[0]) summary_prune(f, "prune", &p->prune.res[0]);
  if (p->prune.ran[1]) summary_prune(f, "area", &p->prune.res[1]);
  if (p->dr.reduce) {
    fprintf(f, "dr_reduce = %s\ndr_features_before = %d\ndr_features_after = %d\n",
            nest_reduce_kind_name(p->dr.reduce->kind), p->dr.d, p->dr.k);
    fprintf(f, "dr_width = %g\ndr_wall_s = %.1f\n", c->width, p->dr.seconds);
  }
  if (p->scann.ran) {
    const nest_scann_result *r = &p->scann.res;
    fprintf(f, "scann_scheme = %s\nscann_operations = %d\nscann_best_operation = %d\n",
            c->scheme, r->operations, r->best_op);
    fprintf(f, "scann_wall_s = %.1f\nscann_weights_before = %lld\nscann_weights_after = %lld\n",
            r->seconds, (long long)r->weights_before, (long long)r->weights_after);
    if (!isnan(r->val_error)) fprintf(f, "scann_val_error = %.6f\n", r->val_error);
    if (!isnan(r->test_error)) fprintf(f, "scann_test_error = %.6f\n", r->test_error);
  }
  if (!isnan(val->acc)) fprintf(f, "val_error = %.6f\n", 1.0 - val->acc);
  if (!isnan(test->acc)) fprintf(f, "test_error = %.6f\n", 1.0 - test->acc);
  /* top-5 of the final network, with more than 5 classes (loss.h) */
  const int top5 = nest_trainer_has_top5(t);
  if (top5 && !isnan(val->acc) && !isnan(t->top5[0]))
    fprintf(f, "val_top5_error = %.6f\n", 1.0 - t->top5[0]);
  if (top5 && !isnan(test->acc) && !isnan(t->top5[1]))
    fprintf(f, "test_top5_error = %.6f\n", 1.0 - t->top5[1]);
  summary_stages(p, f, aw);
}

/* summary.txt, written atomically (atomic.h) by rank 0; agreed. */
static nest_status write_summary(const nest_pipeline *p) {
  nest_status st = NEST_OK;
  if (p->t->rank == 0 && p->run_dir[0]) {
    char path[NEST_PATH_LEN + 32], tmp[NEST_PATH_LEN + 48];
    snprintf(path, sizeof path, "%s/summary.txt", p->run_dir);
    FILE *f = NULL;
    st = nest_atomic_fopen(path, tmp, sizeof tmp, &f);
    if (st == NEST_OK) {
      summary_lines(p, f);
      st = nest_atomic_fclose(f, tmp, path);
    }
  }
  return nest_comm_agree(p->t->comm, st);
}

/* Save the current net as RUN_DIR/<file> with its stage and Act% over the validation set
 * (what nest_report shows). Collective (the statistics pass); rank 0 writes. */
static nest_status save_stage(nest_pipeline *p, const char *file, const char *stage,
                              const nest_eval *val, const nest_eval *test) {
  nest_trainer *t = p->t;
  if (!p->run_dir[0]) return NEST_OK;
  nest_actsum *a = NULL;
  if (t->n_val > 0) {
    const nest_actsum_req req = {.fractions = 1};
    NEST_CALL(nest_actpass(t, t->train, t->val_idx, t->n_val, &req, &a));
  }
  nest_status st = NEST_OK;
  if (t->rank == 0) {
    nest_model_info info = {.nlayers = a ? a->nlayers : 0,
                            .act_frac = a ? a->act_frac : NULL,
                            .in_frac = a ? a->in_frac : NULL,
                            .val_error = val && !isnan(val->acc) ? 1.0 - val->acc : NAN,
                            .test_error = test && !isnan(test->acc) ? 1.0 - test->acc : NAN,
                            /* the latest evaluation's: of the network being saved (only
                             * with more than 5 classes, loss.h) */
                            .has_top5 = nest_trainer_has_top5(t),
                            .val_top5_error = val && !isnan(val->acc) ? 1.0 - t->top5[0] : NAN,
                            .test_top5_error = test && !isnan(test->acc) ? 1.0 - t->top5[1] : NAN};
    snprintf(info.stage, sizeof info.stage, "%s", stage);
    snprintf(info.base_arch, sizeof info.base_arch, "%s", t->cfg.arch);
    nest_model_input in; /* what a user of the file needs to feed it raw data (model.h) */
    nest_trainer_model_input(t, &in);
    info.input = &in;
    char path[NEST_PATH_LEN + 32];
    snprintf(path, sizeof path, "%s/%s", p->run_dir, file);
    st = nest_model_save_info(t->net, &info, path);
  }
  nest_actsum_destroy(&a);
  return nest_comm_agree(t->comm, st);
}

/* The model report (report.h): every stage of this run, printed and in report.csv. */
static nest_status write_report(nest_pipeline *p) {
  nest_trainer *t = p->t;
  nest_status st = NEST_OK;
  if (t->rank == 0) {
    nest_report *rep = NULL;
    char path[NEST_PATH_LEN + 32];
    snprintf(path, sizeof path, "%s/report.csv", p->run_dir);
    st = nest_report_create(p->run_dir, &rep);
    if (st == NEST_OK) st = nest_report_write_csv(rep, path);
    nest_runlog *log = nest_trainer_log(t);
    if (st == NEST_OK && log) {
      nest_log_line(log, "\nnest: model report (%s):", path);
      nest_report_print(rep, log->out, 0);
      fflush(log->out);
    }
    nest_report_destroy(&rep);
  }
  return nest_comm_agree(t->comm, st);
}

/* ---- the phases ----------------------------------------------------------------------------- */

/* The training phase's growth policies (set: after every epoch; rigl: after the steps it is
 * due), through the engine's hooks. */
static nest_status grow_after_step(void *arg, const nest_epoch_plan *plan, int64_t s) {
  nest_pipeline *p = arg;
  const int64_t spe = p->t->steps_per_epoch;
  return nest_grow_hook(p->t, p->grow, NEST_WHEN_STEP, plan->index * spe + s + 1,
                        spe * plan->count);
}

static nest_status grow_after_epoch(void *arg, const nest_epoch_plan *plan) {
  nest_pipeline *p = arg;
  return nest_grow_hook(p->t, p->grow, NEST_WHEN_EPOCH, plan->index, plan->count);
}

/* The training phase: train.epochs epochs of the optim schedule. */
static nest_status train_phase(nest_pipeline *p, int first) {
  nest_trainer *t = p->t;
  const nest_config *c = &t->cfg;
  nest_grow_set_phase(p->grow, "train"); /* its SET / RigL events */
  if (c->epochs > 0 && !first && !p->run.resuming) {
    int64_t aw = 0;
    char widths[256], a[32];
    nest_net_count(t->net, &aw, NULL, NULL);
    nest_net_widths_string(t->net, widths, sizeof widths);
    nest_log_count(aw, a, sizeof a);
    nest_log_line(nest_trainer_log(t),
                  "nest: training phase: %d epochs (optim schedule) of %s, %s active weights",
                  c->epochs, widths, a);
  }
  const nest_train_hooks hooks = {.arg = p, .after_step = grow_after_step,
                                  .after_epoch = grow_after_epoch};
  const nest_phase_epochs loop = {.phase = "train", .sched = &t->optim, .epochs = c->epochs,
                                  .count = c->epochs, .eval_every = c->eval_every,
                                  .hooks = &hooks, .keep_last = 1};
  return nest_phase_run_epochs(&p->run, &loop, &p->last_val, &p->last_test);
}

/* The pruning phases' training: distillation from the network the first pruning phase starts
 * from (captured once; a resumed run has it back from its checkpoint), the dropout override. */
static nest_status prune_training(nest_pipeline *p) {
  nest_trainer *t = p->t;
  const nest_config *c = &t->cfg;
  if (c->prune_distill > 0 && !t->teacher) NEST_CALL(nest_prune_teacher(t));
  t->distill = c->prune_distill > 0;
  t->dropout_set = c->prune_dropout >= 0;
  t->dropout_rate = (float)c->prune_dropout;
  return NEST_OK;
}

/* A pruning phase (area = 0: prune, 1: area), then its fine-tuning epochs: a cosine from
 * prune.lr down to optim.min_lr. */
static nest_status prune_phase(nest_pipeline *p, int area) {
  nest_trainer *t = p->t;
  const nest_config *c = &t->cfg;
  nest_cursor *cur = &p->run.cur;
  NEST_CALL(prune_training(p));
  /* resumed in the fine-tuning (cursor part 2): the phase itself is done */
  if (!(p->run.resuming && cur->part == 2)) {
    NEST_CALL(nest_prune_phase(&p->run, p->grow, &p->prune, area));
    const nest_prune_result *r = &p->prune.res[area];
    p->last_val.acc = 1.0 - r->val_error;
    p->last_test.acc = 1.0 - r->test_error;
    cur->part = 2, cur->epoch = 0, cur->step = 0;
  }
  const int epochs = area && c->prune_area_epochs >= 0 ? c->prune_area_epochs : c->prune_epochs;
  if (epochs <= 0) return NEST_OK;
  nest_optim ft = t->optim;
  ft.lr = c->prune_lr;
  ft.schedule = NEST_SCHED_COSINE;
  ft.warmup_epochs = 0;
  ft.total_epochs = epochs;
  if (!p->run.resuming)
    nest_log_line(nest_trainer_log(t), "nest: fine-tuning: %d epoch%s from lr %g", epochs,
                  epochs == 1 ? "" : "s", c->prune_lr);
  const nest_phase_epochs loop = {.phase = "finetune", .sched = &ft, .epochs = epochs,
                                  .count = epochs, .eval_every = c->eval_every, .keep_last = 1};
  return nest_phase_run_epochs(&p->run, &loop, &p->last_val, &p->last_test);
}

static nest_status run_phase(nest_pipeline *p, int i) {
  switch (p->phases[i]) {
  case NEST_PHASE_GROW: {
    NEST_CALL(nest_grow_phase(&p->run, p->grow));
    const nest_grow_result *g = nest_grow_result_of(p->grow);
    p->last_val.acc = 1.0 - g->val_error;
    p->last_test.acc = 1.0 - g->test_error;
    return save_stage(p, "model_grown.h5", "grown", &p->last_val, &p->last_test);
  }
  case NEST_PHASE_TRAIN:
    NEST_CALL(train_phase(p, i == 0));
    /* The network after training is usually the run's most accurate: kept when pruning
     * follows (model.h5 is the trained network otherwise). */
    for (int k = i + 1; k < p->nphases; ++k)
      if (p->phases[k] == NEST_PHASE_PRUNE || p->phases[k] == NEST_PHASE_AREA ||
          p->phases[k] == NEST_PHASE_SCANN)
        return save_stage(p, "model_trained.h5", "trained", &p->last_val, &p->last_test);
    return NEST_OK;
  case NEST_PHASE_PRUNE:
  case NEST_PHASE_AREA: {
    const nest_status st = prune_phase(p, p->phases[i] == NEST_PHASE_AREA);
    p->t->distill = p->t->dropout_set = 0; /* a later phase trains as configured */
    return st;
  }
  case NEST_PHASE_SCANN: {
    nest_grow_set_phase(p->grow, "scann");
    NEST_CALL(nest_scann_phase(&p->run, p->grow, &p->scann));
    p->last_val.acc = 1.0 - p->scann.res.val_error;
    p->last_test.acc = 1.0 - p->scann.res.test_error;
    return NEST_OK;
  }
  default: NEST_ASSERT(0);
  }
  return NEST_OK;
}

/* ---- the run -------------------------------------------------------------------------------- */

static int synthesis(const nest_pipeline *p) {
  return p->phase_has[NEST_PHASE_GROW] || p->phase_has[NEST_PHASE_PRUNE] ||
         p->phase_has[NEST_PHASE_AREA] || p->phase_has[NEST_PHASE_SCANN];
}

static void print_start(nest_pipeline *p) {
  nest_trainer *t = p->t;
  const nest_config *c = &t->cfg;
  nest_runlog *log = nest_trainer_log(t);
  if (!log) return;
  int64_t aw, tw;
  nest_net_count(t->net, &aw, &tw, NULL);
  char ph[128] = "";
  for (int i = 0; i < p->nphases; ++i)
    snprintf(ph + strlen(ph), sizeof ph - strlen(ph), "%s%s", i ? ", " : "",
             phase_names[p->phases[i]]);
  nest_log_line(log,
                "nest: %s on %lld training / %lld validation / %lld test samples, %d ranks x %d "
                "threads, global batch %d; phases: %s",
                c->init_from[0] ? c->init_from : c->arch, (long long)t->n_train,
                (long long)t->n_val, (long long)t->n_test, t->nranks, t->nthreads, c->batch, ph);
  if (t->train->class_names) { /* CSV labels: which class id each name became */
    char map[1024];
    nest_dataset_label_map(t->train, 20, map, sizeof map);
    nest_log_line(log, "nest: classes (label in the data -> class): %s", map);
  }
  if (!c->test[0] && c->test_split > 0)
    nest_log_line(log, "nest: test set: data.test_split = %g of %s (run.seed %llu)", c->test_split,
                  c->train, (unsigned long long)c->seed);
  if (p->dr.reduce) {
    char sc[256] = "";
    for (int i = 0; i < p->dr.ncand && p->dr.ncand > 1; ++i)
      snprintf(sc + strlen(sc), sizeof sc - strlen(sc), "%s%.2f%%", i ? ", " : "; baseline "
               "validation errors (dr.reduce order): ", 100 * (1 - p->dr.val_acc[i]));
    nest_log_line(log, "nest: DR+SCANN: %d features -> %d by %s (fitted on the training split; "
                  "fits and baselines %.1f s), model.width %g%s", p->dr.d, p->dr.k,
                  nest_reduce_kind_name(p->dr.reduce->kind), p->dr.seconds, c->width, sc);
  }
  nest_net_describe(t->net, log->out);
  nest_log_line(log,
                "nest: %lld / %lld weights active (%.1f%%), %.3g MFLOP per sample forward; run "
                "directory %s",
                (long long)aw, (long long)tw, 100.0 * (double)aw / (double)tw,
                nest_net_flops(t->net) / 1e6, p->run_dir);
}

static void print_end(nest_pipeline *p) {
  nest_trainer *t = p->t;
  const nest_eval *val = &p->last_val, *test = &p->last_test;
  nest_runlog *log = nest_trainer_log(t);
  if (!log) return;
  const int top5 = t->net->nclasses > NEST_TOP5_SHOW_CLASSES;
  char line[4096], el[32], a[32];
  nest_log_duration(nest_comm_wtime() - t->t_start, el, sizeof el);
  int n = snprintf(line, sizeof line, "nest: finished %lld epochs in %s", (long long)t->epoch, el);
  if (!isnan(test->acc))
    n += snprintf(line + n, sizeof line - (size_t)n, ", test error %.2f%%", 100.0 * (1.0 - test->acc));
  if (!isnan(test->acc) && !isnan(t->top5[1]) && top5)
    n += snprintf(line + n, sizeof line - (size_t)n, " (top-5 %.2f%%)", 100.0 * (1.0 - t->top5[1]));
  if (!isnan(val->acc))
    n += snprintf(line + n, sizeof line - (size_t)n, ", validation error %.2f%%",
                  100.0 * (1.0 - val->acc));
  if (!isnan(val->acc) && !isnan(t->top5[0]) && top5)
    n += snprintf(line + n, sizeof line - (size_t)n, " (top-5 %.2f%%)", 100.0 * (1.0 - t->top5[0]));
  int64_t aw, tw;
  nest_net_count(t->net, &aw, &tw, NULL);
  nest_log_count(aw, a, sizeof a);
  n += snprintf(line + n, sizeof line - (size_t)n, ", %s active weights", a);
  if (p->run_dir[0])
    snprintf(line + n, sizeof line - (size_t)n, "; results in %s, final model %s/model.h5",
             p->run_dir, p->run_dir);
  nest_log_line(log, "%s", line);
}

/* The seed stage (cursor phase -1): checkpoint 0 of a new run, the starting network with its
 * errors as the report's first stage. */
static nest_status seed_stage(nest_pipeline *p) {
  nest_trainer *t = p->t;
  nest_phase_ctx *x = &p->run;
  if (!x->resuming) { /* a new run: checkpoint 0 before anything else */
    t->t_start = nest_comm_wtime();
    p->last_val = p->last_test = (nest_eval){NAN, NAN, 0, NAN};
    x->cur = (nest_cursor){.phase = -1};
    NEST_CALL(nest_phase_point(x, 1));
  }
  if (x->cur.phase != -1) return NEST_OK;
  x->resuming = 0; /* resumed at the seed stage: nothing to skip */
  if (synthesis(p)) {
    nest_eval v0, t0;
    NEST_CALL(nest_trainer_evaluate_sets(t, NEST_EVAL_BOTH, &v0, &t0));
    NEST_CALL(save_stage(p, "model_seed.h5", t->cfg.init_from[0] ? "start" : "seed", &v0, &t0));
  }
  x->cur = (nest_cursor){.phase = 0};
  return NEST_OK;
}

/* After the phases: the last checkpoint, summary.txt, model.h5, the report. */
static nest_status finish(nest_pipeline *p) {
  nest_trainer *t = p->t;
  nest_phase_ctx *x = &p->run;
  if (!x->resuming) { /* the last checkpoint: a requeued finished run only redoes the files */
    x->cur = (nest_cursor){.phase = p->nphases};
    NEST_CALL(nest_phase_point(x, 1));
  }
  x->resuming = 0;
  if (t->cfg.hash_every > 0)
    NEST_CALL(nest_comm_check_same(t->comm, nest_net_hash(t->net, NEST_HASH_ALL),
                                   "weights and masks"));
  /* t->top5 is the latest evaluation's, which every phase ends with; it is not in checkpoints,
   * so a run resumed after its last evaluation measures the final network again. */
  const int again = (!isnan(p->last_val.acc) && isnan(t->top5[0]) ? NEST_EVAL_VAL : 0) |
                    (!isnan(p->last_test.acc) && isnan(t->top5[1]) ? NEST_EVAL_TEST : 0);
  nest_eval v, te;
  if (again) NEST_CALL(nest_trainer_evaluate_sets(t, again, &v, &te));
  NEST_CALL(write_summary(p));
  /* The final network (architecture, weights, masks) for nest_report, nest_jaccard,
   * model.init_from and inspection. */
  NEST_CALL(save_stage(p, "model.h5", "final", &p->last_val, &p->last_test));
  if (synthesis(p) && p->run_dir[0]) NEST_CALL(write_report(p));
  print_end(p);
  return NEST_OK;
}

nest_status nest_pipeline_run(nest_pipeline *p) {
  nest_phase_ctx *x = &p->run;
  print_start(p);
  NEST_CALL(seed_stage(p));
  for (int i = x->cur.phase; i < p->nphases; ++i) {
    if (!x->resuming) {
      x->cur = (nest_cursor){.phase = i};
      x->phase_t0 = nest_comm_wtime() - p->t->t_start;
    }
    NEST_CALL(run_phase(p, i));
    NEST_ASSERT(!x->resuming); /* every phase consumes the cursor it was resumed at */
  }
  return finish(p);
}
