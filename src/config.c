/* config.c — the run configuration: one key table drives defaults, INI parsing (our own
 * reader, no library), --set overrides, validation, writing the effective config back, --help,
 * and the command line of nest_mpi.
 *
 * Dialect (see docs/config.md and "loading a file" below):
 *   - "[section]" headers, "key = value" lines; ';' or '#' at the start of a line is a comment;
 *     ';' after whitespace ends the value (inline comment); leading/trailing blanks are stripped.
 *   - Values are never quoted. Strings that an INI line cannot hold verbatim (control characters,
 *     a leading quote or ';', " ;" inside, leading/trailing blanks) are rejected on input, so
 *     whatever is accepted is written back byte-exactly: write -> load is the identity.
 *   - A key given twice in one file is an error (the first one would silently be dead);
 *     overriding is what --set is for. A section may be opened more than once.
 *   - Keys and section names are case-sensitive; enum words too; bool words are not.
 *   - Parsing depends only on the file's bytes (C locale for numbers), so ranks agree. */
#define _POSIX_C_SOURCE 200809L
#include "nest/config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <unistd.h>

/* Layering: config sits below the training engine and beside the net-level arch module, whose
 * nest_arch_check validates the model keys (arch.h never includes config.h); list.h and
 * atomic.h are leaves. config.c knows nothing of policies, phases or the trainer: the pipeline
 * checks that grow.policy / synthesis.phases name things that exist. */
#include "nest/arch.h"
#include "nest/atomic.h"
#include "nest/list.h"

/* ---- the key table ---- */

typedef enum {
  KT_STRING, /* char[N], NUL-terminated */
  KT_INT,    /* int */
  KT_INT64,  /* int64_t */
  KT_UINT64, /* uint64_t */
  KT_DOUBLE, /* double, finite */
  KT_BOOL,   /* int, 0 or 1 */
  KT_ENUM,   /* char[N] holding one of the '|'-separated allowed words */
  KT_CHAR,   /* char[N] holding exactly one character (CSV delimiter) */
  KT_LIST    /* char[N]: a comma-separated list, split by nest_list_split (list.h) */
} key_type;

static const char *const type_names[] = {"string", "int",  "int64", "uint64", "double",
                                         "bool",   "enum", "char",  "list"};

/* The valid range of a numeric key: "[lo, hi]", '(' / ')' for an open end; lo_br 0 = none. */
typedef struct {
  char lo_br;
  double lo, hi;
  char hi_br;
} key_range;

typedef struct {
  const char *section;
  const char *key; /* also the nest_config field name */
  key_type type;
  size_t offset, size;
  const char *def;     /* default as text: parsed by the same code as a file value */
  const char *allowed; /* KT_ENUM: "a|b|c" */
  key_range range;     /* int, int64 and double keys: the valid values; others ANY */
  const char *meaning; /* one line */
} key_def;

#define IN(lo_br, lo, hi, hi_br) { lo_br, lo, hi, hi_br }
#define ANY { 0, 0, 0, 0 }
#define FIELD_(f) offsetof(nest_config, f), sizeof(((nest_config *)0)->f)
#define KEY(sec, f, type, def, range, meaning)                                                     \
  { #sec, #f, type, FIELD_(f), def, NULL, range, meaning }
#define ENUM(sec, f, def, allowed, meaning)                                                        \
  { #sec, #f, KT_ENUM, FIELD_(f), def, allowed, ANY, meaning }
/* [grow] keys live in fields named grow_<key>. */
#define GKEY(k, type, def, range, meaning)                                                         \
  { "grow", #k, type, FIELD_(grow_##k), def, NULL, range, meaning }
#define GENUM(k, def, allowed, meaning)                                                            \
  { "grow", #k, KT_ENUM, FIELD_(grow_##k), def, allowed, ANY, meaning }
/* [prune] keys live in fields named prune_<key>, [augment] keys in aug_<key>. */
#define PKEY(k, type, def, range, meaning)                                                         \
  { "prune", #k, type, FIELD_(prune_##k), def, NULL, range, meaning }
#define AKEY(k, type, def, range, meaning)                                                         \
  { "augment", #k, type, FIELD_(aug_##k), def, NULL, range, meaning }
/* [scann] keys live in fields named scann_<key>, [dr] keys in dr_<key>. */
#define SKEY(k, type, def, range, meaning)                                                         \
  { "scann", #k, type, FIELD_(scann_##k), def, NULL, range, meaning }
#define DKEY(k, type, def, range, meaning)                                                         \
  { "dr", #k, type, FIELD_(dr_##k), def, NULL, range, meaning }
/* [checkpoint] keys live in fields named ck_<key>. */
#define CKEY(k, type, def, range, meaning)                                                         \
  { "checkpoint", #k, type, FIELD_(ck_##k), def, NULL, range, meaning }

/* Adding a key: one line here (plus the field in config.h and a row in docs/config.md, which
 * test_config checks against this table). Every int, int64 and double key has its valid range
 * on its line, checked by nest_config_validate and quoted when a value does not even fit its
 * type. The bounds are chosen so that nothing downstream can overflow or misbehave on an
 * accepted value: a width ratio times a layer size fits an int, a batch fits the int
 * arithmetic and buffers of batch x sample size, products of epoch / iteration / step counts
 * stay far inside int64, fractions are fractions, rates are finite; a comment above a line
 * gives a reason that is not obvious. run.seed (uint64) accepts every value of its type. */
/* clang-format off */
static const key_def keys[] = {
    KEY(run, name, KT_STRING, "", ANY, "run name; empty = the config file's basename"),
    KEY(run, out_dir, KT_STRING, "outputs", ANY, "parent directory of run directories"),
    KEY(run, run_dir, KT_STRING, "", ANY, "explicit run directory; empty = out_dir/NAME-YYYYmmdd-HHMMSS"),
    KEY(run, seed, KT_UINT64, "1", ANY, "seed of every random choice"),
    /* threads per rank: more than any node has cores (buffers are allocated per thread) */
    KEY(run, threads, KT_INT, "0", IN('[', 0, 1024, ']'), "OpenMP/BLAS threads per rank; 0 = cores in the affinity mask"),
    /* steps between events: int fields compared with int64 step counters */
    KEY(run, log_every, KT_INT, "0", IN('[', 0, 1e9, ']'), "steps between progress lines; 0 = about 10 per epoch"),
    KEY(run, log_seconds, KT_DOUBLE, "10", IN('[', 0, 86400, ']'), "seconds between progress lines kept in a log that is not a terminal (a terminal shows them in place); 0 = every one"),
    KEY(run, hash_every, KT_INT, "0", IN('[', 0, 1e9, ']'), "steps between cross-rank weight/mask hash checks; 0 = off"),
    KEY(run, check_masks, KT_BOOL, "1", ANY, "compare a hash of the masks across ranks after every architecture change"),

    KEY(data, dir, KT_STRING, "", ANY, "base directory for relative data paths; empty = current directory"),
    KEY(data, train, KT_STRING, "", ANY, "training data file; required"),
    KEY(data, train_labels, KT_STRING, "", ANY, "IDX label file for data.train (empty for CSV / HDF5)"),
    KEY(data, test, KT_STRING, "", ANY, "test data file; empty = no test set"),
    KEY(data, test_labels, KT_STRING, "", ANY, "IDX label file for data.test"),
    ENUM(data, format, "auto", "auto|idx|csv|h5", "data file format; auto = detect"),
    KEY(data, val_split, KT_DOUBLE, "0.1", IN('[', 0, 1, ')'), "fraction of the training set held out for validation, in [0, 1)"),
    KEY(data, test_split, KT_DOUBLE, "0", IN('[', 0, 1, ')'), "without data.test: fraction of the training file held out as the test set (seeded by run.seed), in [0, 1)"),
    KEY(data, csv_label_col, KT_INT, "0", IN('[', -1, 1e6, ']'), "CSV: 0-based label column; -1 = last column"),
    KEY(data, csv_delim, KT_CHAR, ",", ANY, "CSV: field delimiter: one character, or tab, space, comma, semicolon"),
    KEY(data, csv_header, KT_BOOL, "0", ANY, "CSV: the first line is a header (skipped)"),
    KEY(data, csv_drop_cols, KT_LIST, "", ANY, "CSV: 0-based columns to ignore"),
    /* sample counts: more than any data set held in memory (0 = all) */
    KEY(data, max_train, KT_INT64, "0", IN('[', 0, 1e12, ']'), "use only the first N training samples; 0 = all"),
    KEY(data, max_test, KT_INT64, "0", IN('[', 0, 1e12, ']'), "use only the first N test samples; 0 = all"),
    KEY(data, prefetch, KT_BOOL, "1", ANY, "image shards: read the next batch in a background thread while this one computes"),

    KEY(model, arch, KT_STRING, "lenet300", ANY, "lenet300, lenet5, alexnet, vgg16 or mlp:N-N-...-N (layer sizes)"),
    /* 64 x the widest named layer (4096) is 262144 units; the sizes that result with
     * model.arch and model.widths are held to the model size limit (arch.h) */
    KEY(model, width, KT_DOUBLE, "1.0", IN('(', 0, 64, ']'), "width ratio applied to hidden widths / channels"),
    KEY(model, widths, KT_LIST, "", ANY, "base widths of the hidden conv / dense layers in order, each in [1, 65536], replacing the architecture's (then times model.width); empty = the architecture's own"),
    KEY(model, density, KT_DOUBLE, "1.0", IN('(', 0, 1, ']'), "initial connection density, in (0, 1]"),
    ENUM(model, init, "he", "he|xavier", "weight initialisation"),
    KEY(model, batchnorm, KT_BOOL, "0", ANY, "batch norm after each hidden conv/dense layer"),
    KEY(model, sync_bn, KT_BOOL, "1", ANY, "batch-norm statistics summed over ranks (results independent of P)"),
    KEY(model, dropout, KT_DOUBLE, "0", IN('[', 0, 1, ')'), "dropout rate after hidden dense layers, in [0, 1)"),
    KEY(model, init_from, KT_STRING, "", ANY, "model file (model.h5 of an earlier run) to start from instead of model.arch; empty = none"),
    KEY(model, skips, KT_LIST, "", ANY, "skip connections (SCANN): all, or SOURCE>DEST pairs (in or a layer > a later dense layer); empty = none"),
    KEY(model, skip_density, KT_DOUBLE, "0", IN('[', 0, 1, ']'), "seed density of the skip tensors, in [0, 1]; 0 = all dormant (growth candidates)"),

    AKEY(affine, KT_BOOL, "0", ANY, "affine distortion of training images (rotation, scale, shear, translation per sample and epoch)"),
    AKEY(rotate, KT_DOUBLE, "12", IN('[', 0, 180, ']'), "rotation uniform in +-rotate degrees; 0 = none"),
    AKEY(scale, KT_DOUBLE, "0.1", IN('[', 0, 1, ')'), "scale per axis uniform in [1 - scale, 1 + scale], in [0, 1); 0 = none"),
    AKEY(shear, KT_DOUBLE, "0.15", IN('[', 0, 1, ')'), "shear uniform in +-shear; 0 = none"),
    AKEY(translate, KT_DOUBLE, "2", IN('[', 0, 1000, ']'), "translation uniform in +-translate pixels per axis; 0 = none"),
    /* a crop side: image shards store at most 65535 x 65535 */
    AKEY(crop, KT_INT, "0", IN('[', 0, 65535, ']'), "image shards: the net sees crop x crop inputs, a random window for training, the centre for evaluation; 0 = the stored size"),
    AKEY(flip, KT_BOOL, "0", ANY, "image shards: mirror training samples left-right with probability 1/2"),

    KEY(synthesis, phases, KT_LIST, "", ANY, "phases run in order: grow, train, prune, area, scann; empty = grow (if grow.policy lists a growth policy), then train (with synthesis.scheme: train, scann)"),
    ENUM(synthesis, scheme, "none", "none|A|B|C", "SCANN scheme run by the scann phase (docs/scann.md); none = no scann phase"),

    /* epochs: 1e5 x steps per epoch (at most the sample count) is far inside int64 */
    KEY(train, epochs, KT_INT, "20", IN('[', 0, 1e5, ']'), "training epochs"),
    /* 2^20: the trainer computes batch + ranks - 1 in int and allocates batch x sample size */
    KEY(train, batch, KT_INT, "128", IN('[', 1, 1048576, ']'), "global batch size, summed over all ranks"),
    KEY(train, eval_every, KT_INT, "1", IN('[', 1, 1e5, ']'), "epochs between validation/test evaluations"),
    /* MiB: a bucket's element count fits the int counts of MPI */
    KEY(train, bucket_mb, KT_DOUBLE, "25", IN('[', 0, 4096, ']'), "MiB per bucket of the gradient sum started during backward (overlap); 0 = one sum after backward"),

    /* learning rates: finite, and far above any rate that trains */
    KEY(optim, lr, KT_DOUBLE, "0.05", IN('(', 0, 1000, ']'), "base learning rate"),
    KEY(optim, momentum, KT_DOUBLE, "0.9", IN('[', 0, 1, ')'), "SGD momentum, in [0, 1)"),
    KEY(optim, nesterov, KT_BOOL, "0", ANY, "Nesterov momentum"),
    KEY(optim, weight_decay, KT_DOUBLE, "5e-4", IN('[', 0, 1, ']'), "L2 penalty on weights (not biases or batch norm)"),
    ENUM(optim, schedule, "cosine", "const|step|cosine", "learning-rate schedule after warm-up"),
    KEY(optim, warmup_epochs, KT_DOUBLE, "0", IN('[', 0, 1e5, ']'), "epochs of linear warm-up from 0 to optim.lr"),
    /* and > 0 for the step schedule */
    KEY(optim, step_epochs, KT_DOUBLE, "10", IN('[', 0, 1e5, ']'), "step schedule: epochs between multiplications by step_gamma"),
    KEY(optim, step_gamma, KT_DOUBLE, "0.1", IN('(', 0, 1, ']'), "step schedule: factor, in (0, 1]"),
    KEY(optim, min_lr, KT_DOUBLE, "0", IN('[', 0, 1000, ']'), "cosine schedule: floor of the learning rate"),

    GKEY(policy, KT_LIST, "", ANY, "growth policies, applied in order: conn, neuron, fmap, strategic, set, rigl; empty = no growth"),
    GKEY(layers, KT_LIST, "", ANY, "layers to grow; empty = every layer each policy can act on"),
    /* growth phase: iterations x train_epochs x steps per epoch is far inside int64, and
     * iterations x grow.neurons new units on a layer fit an int */
    GKEY(iterations, KT_INT, "10", IN('[', 0, 1e4, ']'), "growth phase: iterations of {grow, train} at most"),
    GKEY(train_epochs, KT_INT, "1", IN('[', 0, 1000, ']'), "growth phase: epochs trained after each growth step"),
    GKEY(lr, KT_DOUBLE, "0", IN('[', 0, 1000, ']'), "growth phase: learning rate (the peak of each iteration's cosine); 0 = optim.lr"),
    GENUM(schedule, "cosine", "cosine|const", "growth phase: each iteration's epochs anneal from grow.lr to optim.min_lr (cosine) or keep it (const)"),
    GKEY(target_error, KT_DOUBLE, "0", IN('[', 0, 1, ')'), "growth phase: stop at this validation error (fraction); 0 = never"),
    GKEY(max_weights, KT_INT64, "0", IN('[', 0, 1e12, ']'), "growth phase: stop at this many active weights; 0 = no cap"),
    GKEY(patience, KT_INT, "0", IN('[', 0, 1000, ']'), "growth phase: stop when this many iterations in a row did not lower the best validation error by more than the margin (grow.patience_z); 0 = off"),
    GKEY(patience_z, KT_DOUBLE, "1", IN('[', 0, 100, ']'), "growth phase: the patience margin in standard errors of the best validation error, z x sqrt(e (1 - e) / validation samples)"),
    GKEY(batches, KT_INT, "0", IN('[', 0, 1e6, ']'), "growth set: this many global batches; 0 = the whole training set"),
    GKEY(score_batch, KT_INT, "1024", IN('[', 1, 1048576, ']'), "samples of the fixed scoring batch (event losses, feature-map candidates)"),
    /* ceil(ratio x active weights) must fit an int64 */
    GKEY(conn_ratio, KT_DOUBLE, "0.25", IN('(', 0, 1000, ']'), "conn/strategic: new connections per tensor = ceil(ratio x active)"),
    GKEY(conn_count, KT_INT64, "0", IN('[', 0, 1e12, ']'), "conn/strategic: explicit new connections per tensor; 0 = use conn_ratio"),
    GENUM(conn_init, "zero", "zero|grad", "conn: new weights 0, or -conn_lr x G"),
    GKEY(conn_lr, KT_DOUBLE, "0.1", IN('(', 0, 1000, ']'), "conn: lr_grow of conn_init = grad"),
    GKEY(beta, KT_DOUBLE, "0.05", IN('(', 0, 1, ']'), "neuron: growth ratio beta, in (0, 1]: the top beta x M x N bridging gradients"),
    GKEY(alpha, KT_DOUBLE, "0.5", IN('(', 0, 1000, ']'), "neuron/fmap: birth strength alpha"),
    GKEY(neurons, KT_INT, "10", IN('[', 1, 1e4, ']'), "neuron: neurons added per dense layer per growth step (K)"),
    GKEY(fmaps, KT_INT, "2", IN('[', 1, 1000, ']'), "fmap: feature maps added per conv layer per growth step"),
    GKEY(fmap_candidates, KT_INT, "10", IN('[', 1, 1000, ']'), "fmap: random candidates scored per feature map"),
    GKEY(capacity, KT_DOUBLE, "0.5", IN('(', 0, 1, ']'), "strategic: grow a tensor while active < capacity x size, in (0, 1]"),
    GKEY(top, KT_DOUBLE, "0.1", IN('(', 0, 1, ']'), "strategic: origins are drawn from the top fraction of |w|, in (0, 1]"),
    GKEY(tries, KT_INT, "20", IN('[', 1, 1e6, ']'), "strategic: endpoint draws per new connection at most"),
    GKEY(set_zeta, KT_DOUBLE, "0.3", IN('(', 0, 1, ')'), "set: fraction of positive and of negative weights replaced each epoch, in (0, 1)"),
    GKEY(rigl_dt, KT_INT, "100", IN('[', 1, 1e9, ']'), "rigl: steps between connection updates"),
    GKEY(rigl_end, KT_DOUBLE, "0.75", IN('(', 0, 1, ']'), "rigl: last update at this fraction of the training phase, in (0, 1]"),
    GKEY(rigl_alpha, KT_DOUBLE, "0.3", IN('(', 0, 1, ')'), "rigl: initial drop fraction, in (0, 1)"),

    PKEY(layers, KT_LIST, "", ANY, "layers to prune (their weights, and in the prune phase their dead or quiet units); empty = every layer with a weight mask"),
    PKEY(gamma, KT_DOUBLE, "0.01", IN('(', 0, 1, ')'), "smallest pruning step: fraction of a layer's active weights, in (0, 1)"),
    PKEY(gamma_start, KT_DOUBLE, "0.2", IN('(', 0, 1, ')'), "first pruning step of each layer; halved at each guard trip until below prune.gamma, in (0, 1)"),
    /* the pruning phase prints retrain_steps x (1 + retries) as an int */
    PKEY(retrain_steps, KT_INT, "300", IN('[', 0, 1e6, ']'), "optimizer steps of retraining after each pruning step"),
    PKEY(retries, KT_INT, "1", IN('[', 0, 100, ']'), "guard: before restoring, retrain prune.retrain_steps more steps this many times and check again"),
    PKEY(lr, KT_DOUBLE, "0.01", IN('(', 0, 1000, ']'), "retraining learning rate: each retraining anneals from it to optim.min_lr with a cosine"),
    PKEY(target_error, KT_DOUBLE, "0", IN('[', 0, 1, ')'), "guard: target validation error; 0 = the validation error at the start of the phase"),
    PKEY(tolerance, KT_DOUBLE, "0.001", IN('[', 0, 1, ']'), "guard: validation error allowed above the target"),
    {"prune", "guard", KT_ENUM, FIELD_(prune_guard), "start", "start|best", ANY, "guard: the target is the validation error at the start of the phase (start) or the best one the run has seen before it (best); prune.target_error > 0 overrides both"},
    PKEY(guard_z, KT_DOUBLE, "0", IN('[', 0, 100, ']'), "guard: a margin of this many standard errors of the target, z x sqrt(e (1 - e) / validation samples), added to prune.tolerance (prune phase) or prune.area_tolerance (area phase)"),
    PKEY(distill, KT_DOUBLE, "0", IN('[', 0, 1, ']'), "weight alpha of distillation from the network at the start of the first pruning phase during retraining and fine-tuning: loss (1 - alpha) CE + alpha T^2 KL; 0 = off"),
    PKEY(distill_temp, KT_DOUBLE, "4", IN('(', 0, 100, ']'), "distillation temperature T of the teacher's and the student's softmax"),
    PKEY(dropout, KT_DOUBLE, "-1", IN('[', -1, 1, ')'), "dropout rate of the model's dropout layers during the pruning phases and their fine-tuning; -1 = the model's rates"),
    PKEY(target_weights, KT_INT64, "0", IN('[', 0, 1e12, ']'), "prune phase: stop once the network has this many active weights (the step that reaches it is cut to land on it); 0 = no size target"),
    PKEY(floor, KT_DOUBLE, "0", IN('[', 0, 1, ')'), "a layer stops pruning at this density (active / all weights), in [0, 1)"),
    PKEY(iterations, KT_INT, "200", IN('[', 0, 1e5, ']'), "pruning (and area) phase: iterations at most"),
    PKEY(neuron_thresh, KT_DOUBLE, "0", IN('[', 0, 1e6, ']'), "prune phase: remove units of the prune.layers whose mean |output| over the validation set is below this; 0 = only units without active inputs or outputs"),
    PKEY(calib, KT_INT, "2048", IN('[', 1, 1048576, ']'), "area phase: samples of the calibration set for the contribution scores"),
    PKEY(area_gamma, KT_DOUBLE, "0.01", IN('(', 0, 1, ')'), "area phase: smallest step, fraction of a layer's active area, in (0, 1)"),
    PKEY(area_gamma_start, KT_DOUBLE, "0.1", IN('(', 0, 1, ')'), "area phase: first step of each layer; halved at each guard trip, in (0, 1)"),
    PKEY(area_tolerance, KT_DOUBLE, "0.001", IN('[', 0, 1, ']'), "area phase: validation error allowed above the target (the prune phase uses prune.tolerance)"),
    PKEY(area_epochs, KT_INT, "-1", IN('[', -1, 1e5, ']'), "epochs of fine-tuning after the area phase; -1 = prune.epochs"),
    PKEY(epochs, KT_INT, "0", IN('[', 0, 1e5, ']'), "epochs of fine-tuning after the prune / area phase, the learning rate a cosine from prune.lr down to optim.min_lr (not the optim schedule)"),

    /* [scann]: counts bounded like the growth phase's */
    SKEY(iterations, KT_INT, "10", IN('[', 0, 1e4, ']'), "scann phase: scheme iterations"),
    SKEY(epochs, KT_INT, "2", IN('[', 0, 1000, ']'), "scann phase: epochs trained after each operation"),
    SKEY(lr, KT_DOUBLE, "0", IN('[', 0, 1000, ']'), "scann phase: peak learning rate of each operation's epochs (a cosine to optim.min_lr); 0 = optim.lr"),
    SKEY(grow_percentile, KT_DOUBLE, "70", IN('[', 0, 100, ')'), "connection growth: activate the dormant positions whose |x^T dL/du| is above this percentile of the dormant positions' scores, in [0, 100)"),
    SKEY(grow_cap, KT_DOUBLE, "0", IN('[', 0, 1000, ']'), "connection growth: at most cap x active new connections per tensor; 0 = no cap"),
    SKEY(prune_quantile, KT_DOUBLE, "0.2", IN('(', 0, 1, ')'), "connection pruning: share of each tensor's active weights dropped (the smallest |w|), in (0, 1)"),
    SKEY(neurons, KT_INT, "1", IN('[', 1, 1e4, ']'), "neuron growth: units split (cell division) per layer per step, the most active first"),
    SKEY(split_noise, KT_DOUBLE, "0.01", IN('[', 0, 10, ']'), "neuron growth: standard deviation of the noise on the copy's input weights"),
    SKEY(prune_iterations, KT_INT, "3", IN('[', 0, 1e4, ']'), "scheme A: iterations of {connection pruning, train} after the growth iterations"),
    SKEY(keep_tolerance, KT_DOUBLE, "0", IN('[', 0, 1, ']'), "best network: a smaller one whose validation error is within this of the best so far replaces it"),

    /* [dr] */
    DKEY(reduce, KT_LIST, "", ANY, "DR+SCANN: candidate feature reductions (pca, gaussian, sparse), the best by a small baseline's validation accuracy; empty = none"),
    DKEY(k, KT_INT, "0", IN('[', 0, 1e6, ']'), "DR+SCANN: features after the reduction, below the data's; 0 = from dr.ratio"),
    DKEY(ratio, KT_DOUBLE, "0", IN('[', 0, 1e6, ']'), "DR+SCANN: feature compression d / k (k = round(d / ratio), at least 1); 0 = use dr.k"),
    DKEY(baseline_epochs, KT_INT, "5", IN('[', 1, 1000, ']'), "DR+SCANN: epochs of the small dense baseline that scores each candidate"),
    DKEY(shrink, KT_BOOL, "1", ANY, "DR+SCANN: multiply the hidden widths by k / d (the feature compression)"),

    /* steps between checkpoints, like run.hash_every; minutes and kept count as before */
    CKEY(every_steps, KT_INT, "0", IN('[', 0, 1e9, ']'), "write a restart checkpoint every this many optimizer steps; 0 = off"),
    CKEY(every_minutes, KT_DOUBLE, "30", IN('[', 0, 1e6, ']'), "write a restart checkpoint every this many minutes (rank 0's clock); 0 = off"),
    CKEY(keep, KT_INT, "3", IN('[', 1, 1e6, ']'), "restart checkpoints kept in RUN_DIR/checkpoints (the newest ones), at least 1"),
};
/* clang-format on */

#define NKEYS (sizeof keys / sizeof keys[0])

/* The longest line the loader accepts, in bytes without the line end: room for a path
 * (NEST_PATH_LEN) and more; the limit the libinih-based loader had. */
#define CONFIG_MAX_LINE 4094

static void *field_ptr(nest_config *c, const key_def *k) { return (char *)c + k->offset; }
static const void *field_cptr(const nest_config *c, const key_def *k) {
  return (const char *)c + k->offset;
}

/* ---- small string helpers ---- */

/* A copy of s for quoting in a message: at most n-1 bytes, "..." marks a cut. */
static const char *shorten(const char *s, size_t len, char *buf, size_t n) {
  if (len < n) {
    memcpy(buf, s, len);
    buf[len] = '\0';
  } else {
    memcpy(buf, s, n - 4);
    memcpy(buf + n - 4, "...", 4);
  }
  return buf;
}
#define SHORT_LEN 72

static int is_blank(int ch) {
  return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\v' || ch == '\f';
}

static int words_match(const char *word, size_t wlen, const char *s) {
  return strlen(s) == wlen && memcmp(word, s, wlen) == 0;
}

/* Edit distance of two short strings (for "did you mean" hints); large if either is long. */
static size_t edit_distance(const char *a, size_t na, const char *b, size_t nb) {
  enum { MAXW = 40 };
  if (na >= MAXW || nb >= MAXW) return SIZE_MAX;
  size_t row[MAXW + 1];
  for (size_t j = 0; j <= nb; ++j) row[j] = j;
  for (size_t i = 1; i <= na; ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= nb; ++j) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[nb];
}

/* ---- table lookups ---- */

static int section_known(const char *s, size_t len) {
  for (size_t i = 0; i < NKEYS; ++i)
    if (words_match(s, len, keys[i].section)) return 1;
  return 0;
}

static const key_def *find_key(const char *sec, size_t slen, const char *key, size_t klen) {
  for (size_t i = 0; i < NKEYS; ++i)
    if (words_match(sec, slen, keys[i].section) && words_match(key, klen, keys[i].key))
      return &keys[i];
  return NULL;
}

/* " (did you mean [optim]?)" or "" */
static const char *section_hint(const char *s, size_t len, char *buf, size_t n) {
  const char *best = NULL;
  size_t bestd = 3;
  for (size_t i = 0; i < NKEYS; ++i) {
    size_t d = edit_distance(s, len, keys[i].section, strlen(keys[i].section));
    if (d < bestd) bestd = d, best = keys[i].section;
  }
  if (best)
    snprintf(buf, n, " (did you mean [%s]?)", best);
  else
    buf[0] = '\0';
  return buf;
}

/* " (it is in [optim])", " (did you mean 'lr'?)" or "" */
static const char *key_hint(const char *sec, size_t slen, const char *key, size_t klen, char *buf,
                            size_t n) {
  for (size_t i = 0; i < NKEYS; ++i)
    if (words_match(key, klen, keys[i].key)) {
      snprintf(buf, n, " (it is in [%s])", keys[i].section);
      return buf;
    }
  const char *best = NULL;
  size_t bestd = klen > 3 ? 3 : 2;
  for (size_t i = 0; i < NKEYS; ++i) {
    if (!words_match(sec, slen, keys[i].section)) continue;
    size_t d = edit_distance(key, klen, keys[i].key, strlen(keys[i].key));
    if (d < bestd) bestd = d, best = keys[i].key;
  }
  if (best)
    snprintf(buf, n, " (did you mean '%s'?)", best);
  else
    buf[0] = '\0';
  return buf;
}

/* ---- valid ranges ---- */

static void format_double(double v, char *buf, size_t n);

static const key_range *find_range(const key_def *k) { return k->range.lo_br ? &k->range : NULL; }

/* "(0, 64]" */
static const char *range_text(const key_range *r, char *buf, size_t n) {
  char lo[40], hi[40];
  format_double(r->lo, lo, sizeof lo);
  format_double(r->hi, hi, sizeof hi);
  snprintf(buf, n, "%c%s, %s%c", r->lo_br, lo, hi, r->hi_br);
  return buf;
}

static int in_range(const key_range *r, double v) {
  /* NaN fails every comparison, so it is out of range too. */
  return (r->lo_br == '[' ? v >= r->lo : v > r->lo) && (r->hi_br == ']' ? v <= r->hi : v < r->hi);
}

/* why = "<what> (train.batch must be in [1, 1048576])", or "<what> (<type_limits>)" for a key
 * without a range (or "<what>" alone if type_limits is NULL). */
static int fail_range(const key_def *k, const char *what, const char *type_limits, char *why,
                      size_t n) {
  const key_range *r = find_range(k);
  char rb[96];
  if (r)
    snprintf(why, n, "%s (%s.%s must be in %s)", what, k->section, k->key,
             range_text(r, rb, sizeof rb));
  else if (type_limits)
    snprintf(why, n, "%s (%s)", what, type_limits);
  else
    snprintf(why, n, "%s", what);
  return -1;
}

/* ---- value parsing (text -> field) ---- */

static int fail(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *why, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, n, fmt, ap);
  va_end(ap);
  return -1;
}

/* strtoll & co. skip leading blanks; we want the whole text to be the number. Too large for
 * 64 bits is reported with the key's valid range: what the user needs is the range. */
static int parse_ll(const key_def *k, const char *s, long long *out, char *why, size_t n) {
  if (is_blank((unsigned char)s[0])) return fail(why, n, "%s", "not an integer");
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end) return fail(why, n, "%s", "not an integer");
  if (errno == ERANGE)
    return fail_range(k, "out of range", "must fit a 64-bit signed integer", why, n);
  *out = v;
  return 0;
}

static int parse_double(const key_def *k, const char *s, double *out, char *why, size_t n) {
  if (is_blank((unsigned char)s[0])) return fail(why, n, "%s", "not a number");
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end) return fail(why, n, "%s", "not a number");
  if (isnan(v) || isinf(v)) {
    /* strtod says ERANGE for 1e999 but not for a literal "inf"/"nan". */
    if (errno == ERANGE) return fail_range(k, "out of range", "must fit a double", why, n);
    return fail_range(k, "not a finite number", NULL, why, n);
  }
  *out = v; /* underflow (ERANGE with a tiny result) is accepted: the value round-trips */
  return 0;
}

/* Why a string cannot be held verbatim by an INI line, or NULL if it can. */
static const char *string_problem(const char *s) {
  size_t len = strlen(s);
  for (size_t i = 0; i < len; ++i) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x20 || ch == 0x7f) return "contains a control character";
  }
  if (len && (is_blank((unsigned char)s[0]) || is_blank((unsigned char)s[len - 1])))
    return "has leading or trailing blanks, which an INI file strips";
  if (s[0] == '"' || s[0] == '\'')
    return "values are not quoted: write 'key = value' ('key =' for an empty value)";
  if (s[0] == ';') return "starts with ';', which an INI file reads as a comment";
  for (size_t i = 1; i < len; ++i)
    if (s[i] == ';' && is_blank((unsigned char)s[i - 1]))
      return "contains ';' after a blank, which an INI file reads as a comment";
  return NULL;
}

/* Names for CSV delimiters that a bare INI value cannot hold (or that read better). */
static const struct {
  const char *word;
  char ch;
} delim_words[] = {{"tab", '\t'}, {"space", ' '}, {"comma", ','}, {"semicolon", ';'}};

/* Parse `text` for key k into `field` (only on success). On failure, a reason into why. */
static int parse_value(const key_def *k, const char *text, void *field, char *why, size_t n) {
  char full[96];
  snprintf(full, sizeof full, "%s.%s", k->section, k->key);
  if (!text[0] && k->type != KT_STRING && k->type != KT_LIST) {
    if (k->type == KT_CHAR)
      return fail(why, n, "empty value for %s (write tab, space or semicolon for those characters)",
                  full);
    return fail(why, n, "empty value for %s", full);
  }
  switch (k->type) {
  case KT_STRING:
  case KT_LIST: { /* a list's items are checked by nest_config_validate */
    size_t len = strlen(text);
    if (len >= k->size) {
      snprintf(why, n, "too long (%zu bytes; at most %zu)", len, k->size - 1);
      return -1;
    }
    const char *p = string_problem(text);
    if (p) return fail(why, n, "%s", p);
    memset(field, 0, k->size); /* canonical bytes: structs compare equal with memcmp */
    memcpy(field, text, len);
    return 0;
  }
  case KT_BOOL: {
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; ++i) {
      int v = strcasecmp(text, yes[i]) == 0 ? 1 : strcasecmp(text, no[i]) == 0 ? 0 : -1;
      if (v >= 0) {
        memcpy(field, &v, sizeof v);
        return 0;
      }
    }
    return fail(why, n, "%s", "not a bool (use 0/1, true/false, yes/no or on/off)");
  }
  case KT_INT: {
    long long v = 0;
    if (parse_ll(k, text, &v, why, n)) return -1;
    if (v < INT_MIN || v > INT_MAX) {
      char lim[64];
      snprintf(lim, sizeof lim, "must be between %d and %d", INT_MIN, INT_MAX);
      return fail_range(k, "out of range", lim, why, n);
    }
    int x = (int)v;
    memcpy(field, &x, sizeof x);
    return 0;
  }
  case KT_INT64: {
    long long v = 0;
    if (parse_ll(k, text, &v, why, n)) return -1;
    int64_t x = (int64_t)v;
    memcpy(field, &x, sizeof x);
    return 0;
  }
  case KT_UINT64: {
    /* strtoull would quietly wrap "-1" to 2^64-1. */
    if (is_blank((unsigned char)text[0]) || text[0] == '-')
      return fail(why, n, "%s", "not an unsigned integer");
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || *end) return fail(why, n, "%s", "not an unsigned integer");
    if (errno == ERANGE)
      return fail(why, n, "%s", "out of range (must be between 0 and 18446744073709551615)");
    uint64_t x = (uint64_t)v;
    memcpy(field, &x, sizeof x);
    return 0;
  }
  case KT_DOUBLE: {
    double v = 0;
    if (parse_double(k, text, &v, why, n)) return -1;
    memcpy(field, &v, sizeof v);
    return 0;
  }
  case KT_ENUM: {
    for (const char *w = k->allowed; *w;) {
      size_t wl = strcspn(w, "|");
      if (words_match(w, wl, text) && wl < k->size) {
        memset(field, 0, k->size);
        memcpy(field, text, wl);
        return 0;
      }
      w += wl + (w[wl] == '|');
    }
    return fail(why, n, "not one of %s", k->allowed);
  }
  case KT_CHAR: {
    char ch = 0;
    for (size_t i = 0; i < sizeof delim_words / sizeof delim_words[0]; ++i)
      if (strcmp(text, delim_words[i].word) == 0) ch = delim_words[i].ch;
    if (!ch) {
      if (text[1] || (unsigned char)text[0] < 0x21 || (unsigned char)text[0] > 0x7e)
        return fail(why, n, "%s",
                    "expected one printable character or tab, space, comma, semicolon");
      ch = text[0];
    }
    memset(field, 0, k->size);
    ((char *)field)[0] = ch;
    return 0;
  }
  }
  return fail(why, n, "%s", "internal: bad key type");
}

/* ---- value formatting (field -> text) ---- */

/* The shortest %.Ng that reads back to exactly v (so 0.05 is written "0.05", not
 * "0.050000000000000003"); %.17g always does. */
static void format_double(double v, char *buf, size_t n) {
  for (int prec = 15; prec <= 17; ++prec) {
    snprintf(buf, n, "%.*g", prec, v);
    if (strtod(buf, NULL) == v && signbit(strtod(buf, NULL)) == signbit(v)) return;
  }
}

/* Text for the field's value; -1 if it cannot be formatted (unterminated string). */
static int format_value(const key_def *k, const nest_config *c, char *buf, size_t n) {
  const void *f = field_cptr(c, k);
  switch (k->type) {
  case KT_STRING:
  case KT_LIST:
  case KT_ENUM:
  case KT_CHAR: {
    size_t len = strnlen((const char *)f, k->size);
    if (len == k->size || len >= n) return -1;
    if (k->type == KT_CHAR)
      for (size_t i = 0; i < sizeof delim_words / sizeof delim_words[0]; ++i)
        if (len == 1 && ((const char *)f)[0] == delim_words[i].ch && delim_words[i].ch != ',') {
          snprintf(buf, n, "%s", delim_words[i].word);
          return 0;
        }
    memcpy(buf, f, len);
    buf[len] = '\0';
    return 0;
  }
  case KT_INT:
  case KT_BOOL: {
    int v;
    memcpy(&v, f, sizeof v);
    snprintf(buf, n, "%d", v);
    return 0;
  }
  case KT_INT64: {
    int64_t v;
    memcpy(&v, f, sizeof v);
    snprintf(buf, n, "%" PRId64, v);
    return 0;
  }
  case KT_UINT64: {
    uint64_t v;
    memcpy(&v, f, sizeof v);
    snprintf(buf, n, "%" PRIu64, v);
    return 0;
  }
  case KT_DOUBLE: {
    double v = 0;
    memcpy(&v, f, sizeof v);
    format_double(v, buf, n);
    return 0;
  }
  }
  return -1;
}

/* ---- defaults ---- */

void nest_config_defaults(nest_config *c) {
  NEST_ASSERT(c != NULL);
  memset(c, 0, sizeof *c);
  for (size_t i = 0; i < NKEYS; ++i) {
    const key_def *k = &keys[i];
    /* A table typo (wrong type for the field, bad default) is a bug: fail loudly. */
    switch (k->type) {
    case KT_INT:
    case KT_BOOL:
      NEST_ASSERT(k->size == sizeof(int));
      break;
    case KT_INT64:
    case KT_UINT64:
    case KT_DOUBLE:
      NEST_ASSERT(k->size == 8);
      break;
    case KT_STRING:
    case KT_LIST:
    case KT_ENUM:
    case KT_CHAR:
      NEST_ASSERT(k->size >= 2 && k->size <= NEST_PATH_LEN);
      break;
    }
    /* exactly the numeric keys have a range */
    NEST_ASSERT((k->range.lo_br != 0) ==
                (k->type == KT_INT || k->type == KT_INT64 || k->type == KT_DOUBLE));
    char why[160];
    NEST_ASSERT(parse_value(k, k->def, field_ptr(c, k), why, sizeof why) == 0);
  }
}

/* ---- loading a file ---- */

/* The loader reads the INI text itself, line by line (no INI library): the dialect above is
 * the whole grammar, and a library would impose its own build-time choices (upstream inih's
 * line limit, multi-line values and error handling are compile-time options that differ
 * between distributions and Spack builds). The rules are inih's defaults as nest pinned them
 * when it used libinih, so every file that loaded then loads the same now:
 *   - a UTF-8 byte-order mark at the start of line 1 is skipped; then leading and trailing
 *     blanks of the line are stripped; an empty line, or one starting with ';' or '#', is
 *     skipped;
 *   - '[' starts a section header: the name runs to the first ']' (an inline comment before
 *     it is a syntax error); text after the ']' is ignored; the name is not stripped;
 *   - otherwise the key runs to the first '=' or ':' (a line with neither is a syntax error),
 *     the value after it up to an inline comment (';' right after a blank); both stripped;
 *   - no continuation lines: an indented "key = value" is a key like any other;
 *   - the first error stops the parse; lines longer than CONFIG_MAX_LINE are an error (never
 *     split), and so is a NUL byte. */

typedef struct {
  const char *path;
  nest_config *c;      /* the copy being filled (committed by the caller on success) */
  const char *section; /* the current section's name in keys[]; NULL before the first header */
  int seen[NKEYS];     /* line of each key's first occurrence in this file; 0 = not seen */
} load_ctx;

/* Leading and trailing blanks removed (the trailing ones in place). */
static char *strip(char *s) {
  while (is_blank((unsigned char)*s)) ++s;
  size_t len = strlen(s);
  while (len && is_blank((unsigned char)s[len - 1])) s[--len] = '\0';
  return s;
}

/* The first character of s that is in `stops` or starts an inline comment (';' right after a
 * blank), or the terminating NUL. */
static char *find_stop(char *s, const char *stops) {
  int after_blank = 0;
  for (; *s; ++s) {
    if ((stops && strchr(stops, *s)) || (after_blank && *s == ';')) break;
    after_blank = is_blank((unsigned char)*s);
  }
  return s;
}

static nest_status syntax_error(const load_ctx *x, int lineno, const char *text) {
  char lb[SHORT_LEN];
  return NEST_ERR(NEST_ERR_CONFIG,
                  "%s:%d: syntax error: expected '[section]' or 'key = value', got '%s'", x->path,
                  lineno, shorten(text, strlen(text), lb, sizeof lb));
}

/* One line (its line end removed; modified in place). */
static nest_status load_line(load_ctx *x, int lineno, char *line) {
  char nb[SHORT_LEN], sb[SHORT_LEN], vb[SHORT_LEN], hb[96];
  if (lineno == 1 && strncmp(line, "\xEF\xBB\xBF", 3) == 0) line += 3;
  char *s = strip(line);
  if (!*s || *s == ';' || *s == '#') return NEST_OK;
  if (*s == '[') {
    char *close = find_stop(s + 1, "]");
    if (*close != ']') return syntax_error(x, lineno, s);
    size_t len = (size_t)(close - s - 1);
    x->section = NULL;
    for (size_t i = 0; i < NKEYS && !x->section; ++i)
      if (words_match(s + 1, len, keys[i].section)) x->section = keys[i].section;
    if (!x->section)
      return NEST_ERR(NEST_ERR_CONFIG, "%s:%d: unknown section [%s]%s", x->path, lineno,
                      shorten(s + 1, len, sb, sizeof sb), section_hint(s + 1, len, hb, sizeof hb));
    return NEST_OK;
  }
  char *sep = find_stop(s, "=:");
  if (*sep != '=' && *sep != ':') return syntax_error(x, lineno, s);
  *sep = '\0';
  char *name = strip(s), *value = sep + 1;
  *find_stop(value, NULL) = '\0';
  value = strip(value);
  size_t nlen = strlen(name);
  if (!x->section)
    return NEST_ERR(NEST_ERR_CONFIG, "%s:%d: key '%s' before any [section]", x->path, lineno,
                    shorten(name, nlen, nb, sizeof nb));
  size_t slen = strlen(x->section);
  const key_def *k = find_key(x->section, slen, name, nlen);
  if (!k)
    return NEST_ERR(NEST_ERR_CONFIG, "%s:%d: unknown key '%s' in section [%s]%s", x->path, lineno,
                    shorten(name, nlen, nb, sizeof nb), x->section,
                    key_hint(x->section, slen, name, nlen, hb, sizeof hb));
  size_t idx = (size_t)(k - keys);
  if (x->seen[idx])
    return NEST_ERR(NEST_ERR_CONFIG,
                    "%s:%d: duplicate key '%s' in section [%s] (first given on line %d; use "
                    "--set to override)",
                    x->path, lineno, k->key, k->section, x->seen[idx]);
  char why[160];
  if (parse_value(k, value, field_ptr(x->c, k), why, sizeof why))
    return NEST_ERR(NEST_ERR_CONFIG, "%s:%d: [%s] %s = '%s': %s", x->path, lineno, k->section,
                    k->key, shorten(value, strlen(value), vb, sizeof vb), why);
  x->seen[idx] = lineno;
  return NEST_OK;
}

/* Every line of f, stopping at the first error. */
static nest_status load_stream(load_ctx *x, FILE *f) {
  char *line = NULL;
  size_t cap = 0;
  nest_status st = NEST_OK;
  for (int lineno = 1; st == NEST_OK; ++lineno) {
    errno = 0;
    ssize_t n = getline(&line, &cap, f);
    if (n < 0) {
      if (ferror(f))
        st = NEST_ERR(NEST_ERR_CONFIG, "%s: cannot read: %s", x->path,
                      strerror(errno ? errno : EIO));
      else if (errno == ENOMEM)
        st = NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory reading line %d", x->path, lineno);
      break;
    }
    if (memchr(line, '\0', (size_t)n)) {
      st = NEST_ERR(NEST_ERR_CONFIG, "%s:%d: NUL byte in line (not a text file?)", x->path,
                    lineno);
      break;
    }
    size_t len = (size_t)n;
    if (len && line[len - 1] == '\n') line[--len] = '\0';
    if (len && line[len - 1] == '\r') line[--len] = '\0';
    if (len > CONFIG_MAX_LINE) {
      st = NEST_ERR(NEST_ERR_CONFIG, "%s:%d: line too long (%zu bytes; the limit is %d)",
                    x->path, lineno, len, CONFIG_MAX_LINE);
      break;
    }
    st = load_line(x, lineno, line);
  }
  free(line);
  return st;
}

static nest_status load_impl(nest_config *c, const char *path, const char *text);

nest_status nest_config_load(nest_config *c, const char *path) {
  return load_impl(c, path, NULL);
}

nest_status nest_config_load_text(nest_config *c, const char *text, const char *name) {
  if (!text) return NEST_ERR(NEST_ERR_ARG, "nest_config_load_text: NULL text");
  return load_impl(c, name, text);
}

/* text == NULL: read the file `path`; else parse text, named `path` in messages. */
static nest_status load_impl(nest_config *c, const char *path, const char *text) {
  if (!c || !path) return NEST_ERR(NEST_ERR_ARG, "nest_config_load: NULL argument");
  load_ctx *x = calloc(1, sizeof *x);
  nest_config *work = malloc(sizeof *work); /* ~8 KB each: keep them off the stack */
  if (!x || !work) {
    free(x);
    free(work);
    return NEST_ERR(NEST_ERR_NOMEM, "%s: out of memory", path);
  }
  /* Parse into a copy and commit only on success: a bad file leaves *c untouched. */
  *work = *c;
  x->c = work;
  x->path = path;
  FILE *f = text ? fmemopen((void *)text, strlen(text), "r") : fopen(path, "r");
  nest_status st;
  if (!f) {
    st = NEST_ERR(NEST_ERR_CONFIG, "%s: cannot open: %s", path, strerror(errno));
  } else {
    st = load_stream(x, f);
    fclose(f);
    if (st == NEST_OK) *c = *work;
  }
  free(work);
  free(x);
  return st;
}

/* ---- --set ---- */

nest_status nest_config_set(nest_config *c, const char *assignment, const char *origin) {
  if (!c || !assignment) return NEST_ERR(NEST_ERR_ARG, "nest_config_set: NULL argument");
  if (!origin) origin = "--set";
  char ab[SHORT_LEN * 2], nb[SHORT_LEN], hb[96];
  const char *shown = shorten(assignment, strlen(assignment), ab, sizeof ab);
  const char *eq = strchr(assignment, '=');
  const char *dot = memchr(assignment, '.', eq ? (size_t)(eq - assignment) : strlen(assignment));
  if (!eq || !dot)
    return NEST_ERR(NEST_ERR_CONFIG, "%s %s: expected section.key=value", origin, shown);
  /* Blanks around the names and the value are ignored, as in a file. */
  const char *s = assignment, *se = dot, *kb = dot + 1, *ke = eq;
  while (s < se && is_blank((unsigned char)*s)) ++s;
  while (se > s && is_blank((unsigned char)se[-1])) --se;
  while (kb < ke && is_blank((unsigned char)*kb)) ++kb;
  while (ke > kb && is_blank((unsigned char)ke[-1])) --ke;
  size_t slen = (size_t)(se - s), klen = (size_t)(ke - kb);
  if (!section_known(s, slen))
    return NEST_ERR(NEST_ERR_CONFIG, "%s %s: unknown section [%s]%s", origin, shown,
                    shorten(s, slen, nb, sizeof nb), section_hint(s, slen, hb, sizeof hb));
  const key_def *k = find_key(s, slen, kb, klen);
  if (!k) {
    char sec[SHORT_LEN];
    shorten(s, slen, sec, sizeof sec);
    return NEST_ERR(NEST_ERR_CONFIG, "%s %s: unknown key '%s' in section [%s]%s", origin, shown,
                    shorten(kb, klen, nb, sizeof nb), sec,
                    key_hint(s, slen, kb, klen, hb, sizeof hb));
  }
  const char *v = eq + 1, *ve = v + strlen(v);
  while (v < ve && is_blank((unsigned char)*v)) ++v;
  while (ve > v && is_blank((unsigned char)ve[-1])) --ve;
  size_t vlen = (size_t)(ve - v);
  char *value = malloc(vlen + 1);
  if (!value) return NEST_ERR(NEST_ERR_NOMEM, "%s %s: out of memory", origin, shown);
  memcpy(value, v, vlen);
  value[vlen] = '\0';
  char why[160];
  int bad = parse_value(k, value, field_ptr(c, k), why, sizeof why);
  free(value);
  if (bad) return NEST_ERR(NEST_ERR_CONFIG, "%s %s: %s", origin, shown, why);
  return NEST_OK;
}

/* ---- validation ---- */

/* Every field holds a value its own parser accepts (catches unterminated strings, bools other
 * than 0/1, unknown enum words, non-finite doubles set by code). */
static nest_status check_fields(const nest_config *c) {
  char text[NEST_PATH_LEN + 64], vb[SHORT_LEN], scratch[NEST_PATH_LEN], why[160];
  for (size_t i = 0; i < NKEYS; ++i) {
    const key_def *k = &keys[i];
    if (format_value(k, c, text, sizeof text))
      return NEST_ERR(NEST_ERR_CONFIG, "%s.%s: not a terminated string of at most %zu bytes",
                      k->section, k->key, k->size - 1);
    /* (a bool holding 2 is formatted "2", which is not a bool word) */
    if (parse_value(k, text, scratch, why, sizeof why))
      return NEST_ERR(NEST_ERR_CONFIG, "%s.%s = '%s': %s", k->section, k->key,
                      shorten(text, strlen(text), vb, sizeof vb), why);
  }
  return NEST_OK;
}

/* Every numeric key within the range on its table line, in table order. */
static nest_status check_ranges(const nest_config *c) {
  for (size_t i = 0; i < NKEYS; ++i) {
    const key_def *k = &keys[i];
    const key_range *r = find_range(k);
    if (!r) continue;
    const void *f = field_cptr(c, k);
    double v;
    if (k->type == KT_INT) {
      int x;
      memcpy(&x, f, sizeof x);
      v = x;
    } else if (k->type == KT_INT64) {
      int64_t x; /* inexact above 2^53, but monotonic: the comparison with a bound holds */
      memcpy(&x, f, sizeof x);
      v = (double)x;
    } else {
      memcpy(&v, f, sizeof v);
    }
    if (!in_range(r, v)) {
      char text[64], rb[96];
      format_value(k, c, text, sizeof text);
      return NEST_ERR(NEST_ERR_CONFIG, "%s.%s = %s: must be in %s", k->section, k->key, text,
                      range_text(r, rb, sizeof rb));
    }
  }
  return NEST_OK;
}

/* Every list key splits (list.h): no empty items, none too long. What the items must name
 * (policies, phases, layers, columns) is checked by the modules that use them. */
static nest_status check_lists(const nest_config *c) {
  for (size_t i = 0; i < NKEYS; ++i) {
    const key_def *k = &keys[i];
    if (k->type != KT_LIST) continue;
    const int cap = (int)(k->size / 2 + 1); /* items a value of this size can hold */
    char(*items)[NEST_LIST_ITEM];
    NEST_CALL(nest_malloc((void **)&items, (size_t)cap * NEST_LIST_ITEM, "list items"));
    char name[96];
    snprintf(name, sizeof name, "%s.%s", k->section, k->key);
    int n = 0;
    const nest_status st = nest_list_split(name, (const char *)field_cptr(c, k), items, cap, &n);
    free(items);
    NEST_CALL(st);
  }
  return NEST_OK;
}

/* A cross-key rule (single-key ranges are on the table's lines). */
#define RULE(cond, name, valtext, rule)                                                            \
  do {                                                                                             \
    if (!(cond)) return NEST_ERR(NEST_ERR_CONFIG, "%s = %s: must be %s", name, valtext, rule);     \
  } while (0)

nest_status nest_config_validate(const nest_config *c) {
  if (!c) return NEST_ERR(NEST_ERR_ARG, "nest_config_validate: NULL argument");
  NEST_CALL(check_fields(c));
  if (!c->train[0])
    return NEST_ERR(NEST_ERR_CONFIG,
                    "data.train is required: set it in the config or with --set data.train=PATH");
  NEST_CALL(check_ranges(c));
  NEST_CALL(check_lists(c));
  /* The architecture's name, widths list and size limit, as far as they do not depend on the
   * data (nest_arch_build checks the rest when the model is built). */
  const nest_arch_opts ao = {.width = c->width, .batchnorm = c->batchnorm, .dropout = c->dropout,
                             .widths = c->widths};
  NEST_CALL(nest_arch_check(c->arch, &ao));
  char d[40];
  if (c->test[0])
    RULE(c->test_split == 0, "data.test_split", (format_double(c->test_split, d, sizeof d), d),
         "0 when data.test names a test file");
  if (strcmp(c->schedule, "step") == 0)
    RULE(c->step_epochs > 0, "optim.step_epochs", (format_double(c->step_epochs, d, sizeof d), d),
         "> 0 when optim.schedule = step");
  return NEST_OK;
}

/* ---- writing the effective config ---- */

static void print_default(FILE *f, const key_def *k) {
  if (!k->def[0])
    fputs("\"\"", f);
  else
    fputs(k->def, f);
}

/* A key's meaning, plus "; one of: a, b, c" for an enum ("a|b|c" in the table), or
 * "; in [1, 1048576]" for a numeric key whose meaning does not state its range already. */
static const char *full_meaning(const key_def *k, char *buf, size_t n) {
  const key_range *r = find_range(k);
  char rb[96];
  if (k->type != KT_ENUM && !r) return k->meaning;
  size_t used = (size_t)snprintf(buf, n, "%s", k->meaning);
  if (r && !strstr(k->meaning, range_text(r, rb, sizeof rb)) && used < n)
    used += (size_t)snprintf(buf + used, n - used, "; in %s", rb);
  if (k->type == KT_ENUM && used < n) used += (size_t)snprintf(buf + used, n - used, "; one of:");
  for (const char *w = k->allowed; k->type == KT_ENUM && *w && used < n;) {
    size_t wl = strcspn(w, "|");
    used += (size_t)snprintf(buf + used, n - used, " %.*s%s", (int)wl, w, w[wl] ? "," : "");
    w += wl + (w[wl] == '|');
  }
  return buf;
}

nest_status nest_config_write(const nest_config *c, const char *path) {
  if (!c || !path || !path[0]) return NEST_ERR(NEST_ERR_ARG, "nest_config_write: bad argument");
  char text[NEST_PATH_LEN + 64], scratch[NEST_PATH_LEN], why[160], vb[SHORT_LEN];
  /* Refuse before touching the disk if some value would not load back identically. */
  for (size_t i = 0; i < NKEYS; ++i) {
    const key_def *k = &keys[i];
    if (format_value(k, c, text, sizeof text))
      return NEST_ERR(NEST_ERR_CONFIG, "%s: cannot write %s.%s: not a terminated string", path,
                      k->section, k->key);
    memset(scratch, 0, sizeof scratch);
    int bad = parse_value(k, text, scratch, why, sizeof why);
    const void *f = field_cptr(c, k);
    if (!bad) {
      int same = (k->type == KT_STRING || k->type == KT_LIST || k->type == KT_ENUM ||
                  k->type == KT_CHAR)
                     ? strcmp(scratch, f) == 0
                     : memcmp(scratch, f, k->size) == 0;
      if (!same) snprintf(why, sizeof why, "would not read back identically"), bad = 1;
    }
    if (bad)
      return NEST_ERR(NEST_ERR_CONFIG, "%s: cannot write %s.%s = '%s': %s", path, k->section,
                      k->key, shorten(text, strlen(text), vb, sizeof vb), why);
  }

  char tmp[NEST_PATH_LEN + 16];
  FILE *f;
  NEST_CALL(nest_atomic_fopen(path, tmp, sizeof tmp, &f));
  fputs("; nest configuration: every key with its effective value.\n"
        "; Values are unquoted; ';' after a blank starts a comment.\n",
        f);
  const char *section = NULL;
  for (size_t i = 0; i < NKEYS; ++i) {
    const key_def *k = &keys[i];
    if (!section || strcmp(section, k->section) != 0) {
      section = k->section;
      fprintf(f, "\n[%s]\n", section);
    }
    char mb[512];
    fprintf(f, "; %s (default: ", full_meaning(k, mb, sizeof mb));
    print_default(f, k);
    fputs(")\n", f);
    format_value(k, c, text, sizeof text); /* checked above */
    fprintf(f, "%s =%s%s\n", k->key, text[0] ? " " : "", text);
  }
  return nest_atomic_fclose(f, tmp, path);
}

/* ---- help ---- */

/* Wrap help text to the terminal when printing to one (meanings then fit on one line in a
 * wide terminal), else to 79 columns so files and pipes get stable output. */
static int help_width(FILE *f) {
  int fd = fileno(f);
  struct winsize ws;
  if (fd >= 0 && isatty(fd) && ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 60)
    return ws.ws_col > 140 ? 139 : ws.ws_col - 1;
  return 79;
}

/* Print words of s starting at column `col`, wrapping to `indent` at `width`. */
static void print_wrapped(FILE *f, const char *s, int col, int indent, int width) {
  while (*s) {
    while (*s == ' ') ++s;
    int wl = (int)strcspn(s, " ");
    if (!wl) break;
    /* A range "[0, 1024]" stays on one line. */
    if ((s[0] == '[' || s[0] == '(') && s[wl - 1] == ',' && s[wl] == ' ')
      wl += 1 + (int)strcspn(s + wl + 1, " ");
    if (col > indent && col + 1 + wl > width) {
      fprintf(f, "\n%*s", indent, "");
      col = indent;
    } else if (col > indent) {
      fputc(' ', f);
      ++col;
    }
    fprintf(f, "%.*s", wl, s);
    col += wl;
    s += wl;
  }
  fputc('\n', f);
}

void nest_config_print_help(FILE *f) {
  if (!f) return;
  int wkey = 3, wtype = 4, wdef = 7;
  for (size_t i = 0; i < NKEYS; ++i) {
    int kl = (int)(strlen(keys[i].section) + 1 + strlen(keys[i].key));
    int tl = (int)strlen(type_names[keys[i].type]);
    int dl = keys[i].def[0] ? (int)strlen(keys[i].def) : 2;
    if (kl > wkey) wkey = kl;
    if (tl > wtype) wtype = tl;
    if (dl > wdef) wdef = dl;
  }
  int indent = 2 + wkey + 2 + wtype + 2 + wdef + 2, width = help_width(f);
  fputs("Configuration keys. In CONFIG.ini write 'key = value' under '[section]';\n"
        "values are unquoted and ';' after a blank starts a comment. On the command\n"
        "line, --set section.key=value overrides the file.\n"
        "Bools: 0/1, true/false, yes/no, on/off. Lists: comma-separated items, blanks\n"
        "around an item ignored ('fc1, fc2' = 'fc1,fc2').\n\n",
        f);
  fprintf(f, "  %-*s  %-*s  %-*s  %s\n", wkey, "KEY", wtype, "TYPE", wdef, "DEFAULT", "MEANING");
  const char *section = NULL;
  for (size_t i = 0; i < NKEYS; ++i) {
    const key_def *k = &keys[i];
    if (!section || strcmp(section, k->section) != 0) {
      section = k->section;
      fprintf(f, "[%s]\n", section);
    }
    char name[96];
    snprintf(name, sizeof name, "%s.%s", k->section, k->key);
    fprintf(f, "  %-*s  %-*s  %-*s  ", wkey, name, wtype, type_names[k->type], wdef,
            k->def[0] ? k->def : "\"\"");
    char mb[512];
    print_wrapped(f, full_meaning(k, mb, sizeof mb), indent, indent, width);
  }
}

/* ---- command line ---- */

void nest_cli_print_usage(FILE *f, const char *prog) {
  if (!f) return;
  if (!prog || !prog[0]) prog = "nest_mpi";
  fprintf(f,
          "usage: %s CONFIG.ini [--set section.key=value ...] [--help]\n"
          "       %s --resume RUN_DIR [--set section.key=value ...]\n"
          "\n"
          "Trains a sparse network data-parallel over the MPI ranks, growing and\n"
          "pruning it, as configured by CONFIG.ini, whose sections are\n",
          prog, prog);
  /* the sections of the key table, in its order */
  char sections[256];
  size_t used = 0;
  for (size_t i = 0; i < NKEYS; ++i)
    if ((i == 0 || strcmp(keys[i].section, keys[i - 1].section) != 0) && used < sizeof sections)
      used += (size_t)snprintf(sections + used, sizeof sections - used, "%s[%s]", used ? " " : "",
                               keys[i].section);
  fputs("  ", f);
  print_wrapped(f, sections, 2, 2, 79);
  fputs("Each --set section.key=value (or --set=section.key=value) overrides one key\n"
        "after the file is read, in command-line order, e.g. --set optim.lr=0.1.\n"
        "--help (-h) lists every key with its type, default and meaning.\n"
        "--resume RUN_DIR continues a run from its newest checkpoint with its own config;\n"
        "a run directory that holds checkpoints is also resumed by the original command.\n"
        "SIGUSR1, SIGTERM or SIGINT: checkpoint after the current step, exit code 10.\n",
        f);
}

static int is_help(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0; }

/* run.name left empty = the config file's base name without extension, reduced to
 * [A-Za-z0-9._-] since it becomes a directory name and a config value. */
static void default_run_name(const char *config, char *name, size_t cap) {
  const char *b = strrchr(config, '/');
  snprintf(name, cap, "%s", b ? b + 1 : config);
  char *dot = strrchr(name, '.');
  if (dot && dot != name) *dot = '\0';
  for (char *ch = name; *ch; ++ch)
    if (!((*ch >= 'a' && *ch <= 'z') || (*ch >= 'A' && *ch <= 'Z') || (*ch >= '0' && *ch <= '9') ||
          *ch == '-' || *ch == '_' || *ch == '.'))
      *ch = '_';
}

nest_status nest_cli_parse(int argc, char **argv, nest_config *c, int *help) {
  if (!c || !help || argc < 0 || (argc > 0 && !argv))
    return NEST_ERR(NEST_ERR_ARG, "nest_cli_parse: bad argument");
  *help = 0;
  /* --help wins over everything else, including a missing or broken config. */
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--") == 0) break;
    if (strcmp(argv[i], "--set") == 0) {
      ++i;
      continue;
    }
    if (is_help(argv[i])) {
      *help = 1;
      return NEST_OK;
    }
  }
  const char *config = NULL;
  int nsets = 0, options_done = 0;
  /* First pass: syntax only, so usage errors are reported before any file is read. */
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    if (!options_done && strcmp(a, "--") == 0) {
      options_done = 1;
    } else if (!options_done && strcmp(a, "--set") == 0) {
      if (i + 1 >= argc || argv[i + 1][0] == '\0')
        return NEST_ERR(NEST_ERR_ARG,
                        "missing value after --set (expected --set section.key=value)");
      ++i, ++nsets;
    } else if (!options_done && strncmp(a, "--set=", 6) == 0) {
      if (!a[6])
        return NEST_ERR(NEST_ERR_ARG,
                        "missing value after --set= (expected --set=section.key=value)");
      ++nsets;
    } else if (!options_done && a[0] == '-' && a[1] != '\0') {
      char ab[SHORT_LEN];
      return NEST_ERR(NEST_ERR_ARG, "unknown option '%s' (see --help)",
                      shorten(a, strlen(a), ab, sizeof ab));
    } else if (config) {
      char b1[SHORT_LEN], b2[SHORT_LEN];
      return NEST_ERR(NEST_ERR_ARG, "more than one config file: '%s' and '%s' (see --help)",
                      shorten(config, strlen(config), b1, sizeof b1),
                      shorten(a, strlen(a), b2, sizeof b2));
    } else {
      config = a;
    }
  }
  if (!config)
    return NEST_ERR(
        NEST_ERR_ARG,
        "missing CONFIG.ini (usage: %s CONFIG.ini [--set section.key=value ...]; see --help)",
        argc > 0 && argv[0] ? argv[0] : "nest_mpi");
  /* Defaults < file < --set in command-line order. */
  nest_config_defaults(c);
  NEST_CALL(nest_config_load(c, config));
  options_done = 0;
  for (int i = 1; i < argc && nsets > 0; ++i) {
    const char *a = argv[i];
    if (options_done) break;
    if (strcmp(a, "--") == 0)
      options_done = 1;
    else if (strcmp(a, "--set") == 0)
      NEST_CALL(nest_config_set(c, argv[++i], "--set"));
    else if (strncmp(a, "--set=", 6) == 0)
      NEST_CALL(nest_config_set(c, a + 6, "--set"));
  }
  if (!c->name[0]) default_run_name(config, c->name, sizeof c->name);
  NEST_CALL(nest_config_validate(c));
  return NEST_OK;
}

/* ---- the effective config as text, and differences (restart checkpoints) ---- */

nest_status nest_config_text(const nest_config *c, char **out) {
  *out = NULL;
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return NEST_ERR(NEST_ERR_NOMEM, "out of memory for the config text");
  char text[NEST_PATH_LEN + 64];
  const char *section = NULL;
  for (size_t i = 0; i < NKEYS; ++i) {
    const key_def *k = &keys[i];
    if (!section || strcmp(section, k->section) != 0) {
      section = k->section;
      fprintf(f, "%s[%s]\n", i ? "\n" : "", section);
    }
    format_value(k, c, text, sizeof text);
    fprintf(f, "%s =%s%s\n", k->key, text[0] ? " " : "", text);
  }
  if (fclose(f) != 0 || !buf) {
    free(buf);
    return NEST_ERR(NEST_ERR_NOMEM, "out of memory for the config text");
  }
  *out = buf;
  return NEST_OK;
}

/* Is "section.key" matched by the comma-separated patterns ("run.threads, checkpoint.*")?
 * The patterns come from code (restart.c), so a list that does not split is a bug. */
static int key_listed(const key_def *k, const char *patterns) {
  char items[NEST_LIST_MAX][NEST_LIST_ITEM];
  int n = 0;
  NEST_ASSERT(nest_list_split("nest_config_diff ignore", patterns, items, NEST_LIST_MAX, &n) ==
              NEST_OK);
  for (int i = 0; i < n; ++i) {
    const size_t len = strlen(items[i]);
    if (len >= 2 && strcmp(items[i] + len - 2, ".*") == 0) {
      if (strlen(k->section) == len - 2 && strncmp(items[i], k->section, len - 2) == 0) return 1;
    } else if (strncmp(items[i], k->section, strlen(k->section)) == 0 &&
               items[i][strlen(k->section)] == '.' &&
               strcmp(items[i] + strlen(k->section) + 1, k->key) == 0) {
      return 1;
    }
  }
  return 0;
}

int nest_config_diff(const nest_config *a, const nest_config *b, const char *ignore, char *out,
                     size_t cap) {
  int n = 0;
  size_t used = 0;
  if (cap) out[0] = '\0';
  char ta[NEST_PATH_LEN + 64], tb[NEST_PATH_LEN + 64], sa[SHORT_LEN], sb[SHORT_LEN];
  for (size_t i = 0; i < NKEYS; ++i) {
    const key_def *k = &keys[i];
    if (key_listed(k, ignore)) continue;
    format_value(k, a, ta, sizeof ta);
    format_value(k, b, tb, sizeof tb);
    if (strcmp(ta, tb) == 0) continue;
    if (used < cap) {
      int w = snprintf(out + used, cap - used, "%s%s.%s = %s (not %s)", n ? ", " : "",
                       k->section, k->key, shorten(ta, strlen(ta), sa, sizeof sa),
                       shorten(tb, strlen(tb), sb, sizeof sb));
      if (w > 0) used += (size_t)w;
    }
    ++n;
  }
  return n;
}

/* ---- what the data keys mean to the readers ---------------------------------------------- */

static nest_status resolve_path(const char *dir, const char *path, char *out, size_t cap) {
  const int n = !path[0] || path[0] == '/' || !dir[0] ? snprintf(out, cap, "%s", path)
                                                      : snprintf(out, cap, "%s/%s", dir, path);
  if (n < 0 || (size_t)n >= cap)
    return NEST_ERR(NEST_ERR_CONFIG, "data path '%s/%s' is longer than %zu characters", dir, path,
                    cap - 1);
  return NEST_OK;
}

nest_status nest_config_data_opts(const nest_config *c, int test, nest_config_paths *paths,
                                  nest_data_opts *o) {
  NEST_CALL(resolve_path(c->dir, test ? c->test : c->train, paths->path, sizeof paths->path));
  NEST_CALL(resolve_path(c->dir, test ? c->test_labels : c->train_labels, paths->labels,
                         sizeof paths->labels));
  nest_data_opts_default(o);
  o->path = paths->path;
  o->labels_path = paths->labels[0] ? paths->labels : NULL;
  o->format = c->format;
  o->csv_label_col = c->csv_label_col;
  o->csv_delim = c->csv_delim[0];
  o->csv_header = c->csv_header;
  o->csv_drop_cols = c->csv_drop_cols;
  o->max_samples = test ? c->max_test : c->max_train;
  return NEST_OK;
}

void nest_config_model_input(const nest_config *c, const nest_dataset *train,
                             nest_model_input *out) {
  nest_model_input_from_data(train, out);
  out->csv_label_col = c->csv_label_col;
  out->csv_delim = c->csv_delim[0] ? c->csv_delim[0] : ',';
  out->csv_header = c->csv_header;
  snprintf(out->csv_drop_cols, sizeof out->csv_drop_cols, "%s", c->csv_drop_cols);
  out->val_split = c->val_split;
  out->test_split = c->test[0] ? 0.0 : c->test_split;
  out->split_seed = c->seed;
}
