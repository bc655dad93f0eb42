/* arch.c — the named base architectures as layer spec lists, and the checks of the model keys
 * that choose them (see arch.h): the mlp syntax, the widths list, the size limit. */
#include "nest/arch.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/list.h"

/* Every hidden layer pushes at most 4 specs (layer, bn, relu, dropout); vgg16 adds 5 pools. */
#define MAX_SPECS (4 * NEST_ARCH_MAX_SIZES + 8)

typedef struct {
  nest_layer_spec *s;       /* [MAX_SPECS] */
  double units[MAX_SPECS];  /* conv / dense specs: out channels / units as a double (exact
                               even where size x r would not fit the int of hp) */
  int n;
  const nest_arch_opts *o;
  int widths[NEST_ARCH_MAX_SIZES], nwidths; /* opts->widths parsed; nwidths 0 = none */
  int hidden;                               /* hidden conv / dense layers built so far */
} builder;

static nest_layer_spec *push(builder *b, nest_layer_kind kind, const char *fmt, const char *base) {
  NEST_ASSERT(b->n < MAX_SPECS);
  b->units[b->n] = 0;
  nest_layer_spec *s = &b->s[b->n++];
  memset(s, 0, sizeof *s);
  s->kind = kind;
  snprintf(s->name, sizeof s->name, fmt, base);
  return s;
}

/* The next hidden layer's width: its base width (the list's entry if one was given) times r,
 * rounded, at least 1. *exact gets the same as a double; the int is clamped to INT_MAX (the
 * size limit refuses such a layer before anything uses it). */
static int next_width(builder *b, int base, double *exact) {
  const int i = b->hidden++;
  if (b->nwidths && i < b->nwidths) base = b->widths[i];
  double v = round(base * b->o->width);
  if (v < 1) v = 1;
  *exact = v;
  return v > INT_MAX ? INT_MAX : (int)v;
}

/* Sizes of "mlp:A-B-...-Z" into out[NEST_ARCH_MAX_SIZES]: decimal digits only, each in
 * [1, INT_MAX], at least 2; the count, or -1. */
static int mlp_sizes(const char *arch, int *out) {
  if (strncmp(arch, "mlp:", 4) != 0) return -1;
  int n = 0;
  for (const char *p = arch + 4;;) {
    if (*p < '0' || *p > '9' || n == NEST_ARCH_MAX_SIZES) return -1;
    long long v = 0;
    while (*p >= '0' && *p <= '9') {
      v = v * 10 + (*p++ - '0');
      if (v > INT_MAX) return -1;
    }
    if (v < 1) return -1;
    out[n++] = (int)v;
    if (!*p) return n >= 2 ? n : -1;
    if (*p++ != '-') return -1;
  }
}

int nest_arch_hidden_layers(const char *arch) {
  if (strcmp(arch, "lenet300") == 0) return 2;
  if (strcmp(arch, "lenet5") == 0) return 3;
  if (strcmp(arch, "alexnet") == 0) return 7;
  if (strcmp(arch, "vgg16") == 0) return 15;
  int sizes[NEST_ARCH_MAX_SIZES];
  const int n = mlp_sizes(arch, sizes);
  return n < 0 ? -1 : n - 2;
}

nest_status nest_arch_parse_widths(const char *list, int *out, int cap, int *n) {
  char items[NEST_ARCH_MAX_SIZES][NEST_LIST_ITEM];
  *n = 0;
  if (cap > NEST_ARCH_MAX_SIZES) cap = NEST_ARCH_MAX_SIZES;
  int count = 0;
  NEST_CALL(nest_list_split("model.widths", list, items, cap, &count));
  for (int i = 0; i < count; ++i) {
    long v = 0;
    const char *p = items[i];
    while (*p >= '0' && *p <= '9' && v <= NEST_ARCH_MAX_WIDTH) v = v * 10 + (*p++ - '0');
    if (*p || v < 1 || v > NEST_ARCH_MAX_WIDTH)
      return NEST_ERR(NEST_ERR_CONFIG,
                      "model.widths = %s: '%s' is not an integer in [1, %d] (expected N,N,...,N)",
                      list, items[i], NEST_ARCH_MAX_WIDTH);
    out[i] = (int)v;
  }
  *n = count;
  return NEST_OK;
}

/* A hidden conv or dense layer followed by [BN] and ReLU [and dropout for dense]. */
static void hidden(builder *b, nest_layer_kind kind, const char *name, nest_layer_hparams hp,
                   double units) {
  nest_layer_spec *s = push(b, kind, "%s", name);
  s->hp = hp;
  b->units[b->n - 1] = units;
  if (b->o->batchnorm) push(b, NEST_LAYER_BATCHNORM, "%s.bn", name);
  push(b, NEST_LAYER_RELU, "%s.relu", name);
  if (kind == NEST_LAYER_DENSE && b->o->dropout > 0)
    push(b, NEST_LAYER_DROPOUT, "%s.drop", name)->hp.rate = (float)b->o->dropout;
}

static void conv(builder *b, const char *name, int out_c, int k, int stride, int pad) {
  double u;
  const int c = next_width(b, out_c, &u);
  hidden(b, NEST_LAYER_CONV2D, name,
         (nest_layer_hparams){.out_c = c, .kh = k, .kw = k, .stride = stride, .pad = pad}, u);
}

static void pool(builder *b, const char *name, int k, int stride) {
  push(b, NEST_LAYER_MAXPOOL, "%s", name)->hp =
      (nest_layer_hparams){.kh = k, .kw = k, .stride = stride, .pad = 0};
}

static void fc(builder *b, const char *name, int units) {
  double u;
  const int w = next_width(b, units, &u);
  hidden(b, NEST_LAYER_DENSE, name, (nest_layer_hparams){.units = w}, u);
}

static void output(builder *b, const char *name, int nclasses) {
  push(b, NEST_LAYER_DENSE, "%s", name)->hp.units = nclasses;
  b->units[b->n - 1] = nclasses;
}

/* Caffe's LeNet: no nonlinearity after the convolutions, only after ip1. */
static void lenet5_conv(builder *b, const char *name, const char *pool_name, int out_c) {
  double u;
  const int c = next_width(b, out_c, &u);
  push(b, NEST_LAYER_CONV2D, "%s", name)->hp =
      (nest_layer_hparams){.out_c = c, .kh = 5, .kw = 5, .stride = 1};
  b->units[b->n - 1] = u;
  if (b->o->batchnorm) push(b, NEST_LAYER_BATCHNORM, "%s.bn", name);
  pool(b, pool_name, 2, 2);
}

/* arch's specs into b; `mlp` its sizes (nmlp > 0) for an mlp. The output layer has nclasses
 * units. The name was checked (check_keys). */
static void push_arch(builder *b, const char *arch, const int *mlp, int nmlp, int nclasses) {
  char name[16];
  if (nmlp > 0) {
    for (int i = 1; i < nmlp - 1; ++i) {
      snprintf(name, sizeof name, "fc%d", i);
      fc(b, name, mlp[i]);
    }
    snprintf(name, sizeof name, "fc%d", nmlp - 1);
    output(b, name, nclasses);
  } else if (strcmp(arch, "lenet300") == 0) {
    fc(b, "fc1", 300);
    fc(b, "fc2", 100);
    output(b, "fc3", nclasses);
  } else if (strcmp(arch, "lenet5") == 0) {
    lenet5_conv(b, "conv1", "pool1", 20);
    lenet5_conv(b, "conv2", "pool2", 50);
    fc(b, "fc1", 500);
    output(b, "fc2", nclasses);
  } else if (strcmp(arch, "alexnet") == 0) {
    conv(b, "conv1", 96, 11, 4, 2);
    pool(b, "pool1", 3, 2);
    conv(b, "conv2", 256, 5, 1, 2);
    pool(b, "pool2", 3, 2);
    conv(b, "conv3", 384, 3, 1, 1);
    conv(b, "conv4", 384, 3, 1, 1);
    conv(b, "conv5", 256, 3, 1, 1);
    pool(b, "pool5", 3, 2);
    fc(b, "fc6", 4096);
    fc(b, "fc7", 4096);
    output(b, "fc8", nclasses);
  } else { /* vgg16 */
    static const int cfg[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0,
                              512, 512, 512, 0, 512, 512, 512, 0};
    int ci = 0, pi = 0;
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; ++i) {
      if (cfg[i] == 0) {
        snprintf(name, sizeof name, "pool%d", ++pi);
        pool(b, name, 2, 2);
      } else {
        snprintf(name, sizeof name, "conv%d", ++ci);
        conv(b, name, cfg[i], 3, 1, 1);
      }
    }
    fc(b, "fc14", 4096);
    fc(b, "fc15", 4096);
    output(b, "fc16", nclasses);
  }
}

/* "model.arch = lenet300, model.width = 64, model.widths = 65536,65536": the keys that chose
 * the sizes, for messages. */
static const char *keys_text(const char *arch, const nest_arch_opts *o, char *buf, size_t cap) {
  const int n = snprintf(buf, cap, "model.arch = %.64s, model.width = %g", arch, o->width);
  if (o->widths && o->widths[0] && n > 0 && (size_t)n < cap)
    snprintf(buf + n, cap - (size_t)n, ", model.widths = %.160s", o->widths);
  return buf;
}

/* The name, the widths list, the width ratio; mlp sizes into mlp[] (*nmlp = 0 for a named
 * architecture). */
static nest_status check_keys(const char *arch, const nest_arch_opts *o, builder *b, int *mlp,
                              int *nmlp) {
  *nmlp = 0;
  const int hidden = nest_arch_hidden_layers(arch);
  if (hidden < 0)
    return NEST_ERR(NEST_ERR_CONFIG,
                    "model.arch = '%.64s': expected lenet300, lenet5, alexnet, vgg16 or "
                    "mlp:N-N-...-N (2 to %d sizes, each in [1, %d])",
                    arch, NEST_ARCH_MAX_SIZES, INT_MAX);
  if (strncmp(arch, "mlp:", 4) == 0) *nmlp = mlp_sizes(arch, mlp);
  if (!(o->width > 0) || !isfinite(o->width))
    return NEST_ERR(NEST_ERR_CONFIG, "model.width = %g: must be positive and finite", o->width);
  b->nwidths = 0;
  if (o->widths && o->widths[0]) {
    NEST_CALL(nest_arch_parse_widths(o->widths, b->widths, NEST_ARCH_MAX_SIZES, &b->nwidths));
    if (b->nwidths != hidden)
      return NEST_ERR(NEST_ERR_CONFIG,
                      "model.widths = %.160s: %d entries, but model.arch = %.64s has %d hidden "
                      "conv / dense layers",
                      o->widths, b->nwidths, arch, hidden);
  }
  return NEST_OK;
}

/* Parameters of b's specs whatever the data: each weight layer's input counted as the outputs
 * of the weight layer before it (1 for the first: a sample has at least one value; a dense
 * layer after convolutions has at least as many inputs as channels), plus biases and
 * batch-norm scales and shifts. A lower bound of what count_params finds. */
static double least_params(const builder *b, int *worst, double *most) {
  double total = 0, in = 1;
  *most = -1;
  for (int i = 0; i < b->n; ++i) {
    const nest_layer_spec *s = &b->s[i];
    double p = 0;
    if (s->kind == NEST_LAYER_CONV2D || s->kind == NEST_LAYER_DENSE) {
      const double k = s->kind == NEST_LAYER_CONV2D ? (double)s->hp.kh * s->hp.kw : 1;
      p = b->units[i] * in * k + b->units[i];
      in = b->units[i];
    } else if (s->kind == NEST_LAYER_BATCHNORM) {
      p = 2 * in;
    }
    total += p;
    if (p > *most) *most = p, *worst = i;
  }
  return total;
}

/* The exact parameter count for input shape `in`, from each layer's own setup (layer.h: it
 * only declares its tensors). A layer that cannot take its input shape ends the count: that
 * is nest_net_create's error to report, naming the layer. */
static double count_params(const builder *b, nest_shape in, int *worst, double *most) {
  double total = 0;
  *most = -1;
  nest_shape shape = in;
  for (int i = 0; i < b->n; ++i) {
    nest_layer *l = NULL;
    if (nest_layer_create(nest_layer_ops_of(b->s[i].kind), b->s[i].name, shape, &b->s[i].hp, 1,
                          1, &l) != NEST_OK) {
      nest_error_clear();
      break;
    }
    double p = 0;
    for (int t = 0; t < l->nparams; ++t) p += (double)l->param[t].count;
    total += p;
    if (p > *most) *most = p, *worst = i;
    shape = l->out;
    nest_layer_destroy(&l);
  }
  return total;
}

/* The size limit's message: the keys, the count, the largest layer. */
static nest_status too_big(const char *arch, const nest_arch_opts *o, const builder *b,
                           double total, int worst, double most, const char *least) {
  char keys[320];
  return NEST_ERR(NEST_ERR_CONFIG,
                  "%s: the network would have %s%.4g trainable parameters (%s %s%.4g), more "
                  "than the limit of %lld (docs/config.md, \"Model size limit\")",
                  keys_text(arch, o, keys, sizeof keys), least, total, b->s[worst].name, least,
                  most, NEST_ARCH_MAX_PARAMS);
}

/* The size limit on what the specs have whatever the data (least_params). */
static nest_status check_least(const char *arch, const nest_arch_opts *o, const builder *b) {
  int worst = 0;
  double most = 0;
  const double least = least_params(b, &worst, &most);
  if (least > (double)NEST_ARCH_MAX_PARAMS)
    return too_big(arch, o, b, least, worst, most, "at least ");
  return NEST_OK;
}

nest_status nest_arch_check(const char *arch, const nest_arch_opts *opts) {
  builder b = {.o = opts};
  int mlp[NEST_ARCH_MAX_SIZES], nmlp = 0;
  NEST_CALL(check_keys(arch, opts, &b, mlp, &nmlp));
  NEST_CALL(nest_calloc((void **)&b.s, MAX_SPECS, sizeof *b.s, "layer specs"));
  /* the class count at its least: an mlp names it, the data of a named one has >= 2 */
  push_arch(&b, arch, mlp, nmlp, nmlp ? mlp[nmlp - 1] : 2);
  const nest_status st = check_least(arch, opts, &b);
  free(b.s);
  return st;
}

nest_status nest_arch_build(const char *arch, const nest_arch_opts *opts, nest_shape in,
                            int nclasses, nest_layer_spec **specs, int *nspecs) {
  *specs = NULL;
  *nspecs = 0;
  if (nclasses < 2)
    return NEST_ERR(NEST_ERR_CONFIG, "the data has %d classes; need at least 2", nclasses);
  builder b = {.o = opts};
  int mlp[NEST_ARCH_MAX_SIZES], nmlp = 0;
  NEST_CALL(check_keys(arch, opts, &b, mlp, &nmlp));
  if (nmlp && (size_t)mlp[0] != nest_shape_size(in))
    return NEST_ERR(NEST_ERR_CONFIG, "model.arch '%s': input size %d but the data has %zu features",
                    arch, mlp[0], nest_shape_size(in));
  if (nmlp && mlp[nmlp - 1] != nclasses)
    return NEST_ERR(NEST_ERR_CONFIG, "model.arch '%s': output size %d but the data has %d classes",
                    arch, mlp[nmlp - 1], nclasses);
  NEST_CALL(nest_calloc((void **)&b.s, MAX_SPECS, sizeof *b.s, "layer specs"));
  push_arch(&b, arch, mlp, nmlp, nclasses);
  /* The bound first: it never creates a layer, and it refuses every layer whose width was
   * clamped to fit hp's int. */
  nest_status st = check_least(arch, opts, &b);
  int worst = 0;
  double most = 0;
  double total = 0;
  if (st == NEST_OK) total = count_params(&b, in, &worst, &most);
  if (st == NEST_OK && total > (double)NEST_ARCH_MAX_PARAMS)
    st = too_big(arch, opts, &b, total, worst, most, "");
  if (st != NEST_OK) {
    free(b.s);
    return st;
  }
  *specs = b.s;
  *nspecs = b.n;
  return NEST_OK;
}

/* ---- skip connections (model.skips) --------------------------------------------------------- */

/* Add skip `from` > specs[dest] (canonical source name), in the caller's order. */
static nest_status add_skip(nest_layer_spec *specs, int n, const char *list, const char *from,
                            int dest) {
  nest_layer_spec *d = &specs[dest];
  char canon[NEST_NAME_LEN];
  const int j = nest_skip_source(specs, n, from, canon);
  for (int k = 0; k < d->nskips; ++k)
    if (nest_skip_source(specs, n, d->skip_from[k], NULL) == j)
      return NEST_ERR(NEST_ERR_CONFIG, "model.skips = %s: %s>%s is listed twice (%s names the "
                      "same output as %s)", list, from, d->name, from, d->skip_from[k]);
  if (d->nskips == NEST_MAX_SKIPS)
    return NEST_ERR(NEST_ERR_CONFIG, "model.skips = %s: more than %d skip tensors into %s", list,
                    NEST_MAX_SKIPS, d->name);
  snprintf(d->skip_from[d->nskips++], NEST_NAME_LEN, "%s", canon);
  return NEST_OK;
}

nest_status nest_arch_skips(nest_layer_spec *specs, int n, const char *list) {
  char items[NEST_LIST_MAX][NEST_LIST_ITEM];
  int m = 0;
  NEST_CALL(nest_list_split("model.skips", list, items, NEST_LIST_MAX, &m));
  if (m == 1 && strcmp(items[0], "all") == 0) {
    /* every source of the dense part (the input, the flattened features, every hidden dense
     * layer's output) into every later dense layer it is not the chain input of */
    int any = 0;
    for (int dest = 0; dest < n; ++dest)
      for (int j = 0; j < dest; ++j) {
        char from[NEST_NAME_LEN];
        if (j > 0 && specs[j].kind != NEST_LAYER_DENSE && specs[j].kind != NEST_LAYER_CONV2D)
          continue;
        if (j == 0) snprintf(from, sizeof from, "in");
        else nest_skip_source(specs, n, specs[j - 1].name, from); /* act[j]'s name */
        /* a name that means another act (a batch norm on the input: act[1] is named "in" like
         * act[0], which "in" reads) is that act's source, already listed */
        if (j > 0 && nest_skip_source(specs, n, from, NULL) != j) continue;
        if (!nest_skip_valid(specs, n, from, dest, NULL)) continue;
        NEST_CALL(add_skip(specs, n, list, from, dest));
        any = 1;
      }
    if (!any)
      return NEST_ERR(NEST_ERR_CONFIG, "model.skips = all: the network has no two dense layers "
                      "a skip could join");
    return NEST_OK;
  }
  for (int i = 0; i < m; ++i) {
    char *gt = strchr(items[i], '>');
    if (strcmp(items[i], "all") == 0)
      return NEST_ERR(NEST_ERR_CONFIG, "model.skips = %s: 'all' stands alone", list);
    if (!gt || gt == items[i] || !gt[1] || strchr(gt + 1, '>'))
      return NEST_ERR(NEST_ERR_CONFIG, "model.skips = %s: '%s' is not SOURCE>DEST (e.g. in>fc2, "
                      "fc1>fc3) or all", list, items[i]);
    *gt = '\0';
    /* blanks around '>' are fine: "fc1 > fc3" */
    char *from = items[i], *to = gt + 1;
    for (char *e = gt; e > from && (e[-1] == ' ' || e[-1] == '\t');) *--e = '\0';
    to += strspn(to, " \t");
    if (!*from || !*to)
      return NEST_ERR(NEST_ERR_CONFIG, "model.skips = %s: '%s>%s' is not SOURCE>DEST", list,
                      from, to);
    int dest = -1;
    for (int k = 0; k < n; ++k)
      if (strcmp(specs[k].name, to) == 0) dest = k;
    const char *why = NULL;
    if (dest < 0)
      return NEST_ERR(NEST_ERR_CONFIG, "model.skips = %s: the network has no layer '%s'", list,
                      to);
    if (strcmp(from, "in") != 0 && nest_skip_source(specs, n, from, NULL) < 0) {
      int known = 0;
      for (int k = 0; k < n; ++k) known |= strcmp(specs[k].name, from) == 0;
      return NEST_ERR(NEST_ERR_CONFIG, "model.skips = %s: %s>%s: %s", list, from, to,
                      known ? "no later dense or conv2d layer reads its output"
                            : "the network has no such source layer (names: in or a layer)");
    }
    if (!nest_skip_valid(specs, n, from, dest, &why))
      return NEST_ERR(NEST_ERR_CONFIG, "model.skips = %s: %s>%s: %s", list, from, to, why);
    NEST_CALL(add_skip(specs, n, list, from, dest));
  }
  return NEST_OK;
}
