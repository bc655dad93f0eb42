/* arch.c — the named base architectures as layer spec lists (see arch.h). */
#include "nest/arch.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SPECS 128

#define MAX_WIDTHS 64

typedef struct {
  nest_layer_spec *s;
  int n;
  const nest_arch_opts *o;
  int widths[MAX_WIDTHS], nwidths; /* opts->widths parsed; nwidths 0 = none */
  int hidden;                      /* hidden conv / dense layers built so far */
} builder;

static nest_layer_spec *push(builder *b, nest_layer_kind kind, const char *fmt, const char *base) {
  NEST_ASSERT(b->n < MAX_SPECS);
  nest_layer_spec *s = &b->s[b->n++];
  memset(s, 0, sizeof *s);
  s->kind = kind;
  snprintf(s->name, sizeof s->name, fmt, base);
  return s;
}

static int scaled(int width, double r) {
  long v = lround(width * r);
  return v < 1 ? 1 : (int)v;
}

/* The next hidden layer's width: its base width (the list's entry if one was given) times r. */
static int next_width(builder *b, int base) {
  const int i = b->hidden++;
  if (b->nwidths && i < b->nwidths) base = b->widths[i];
  return scaled(base, b->o->width);
}

int nest_arch_parse_widths(const char *list, int *out, int cap) {
  int n = 0;
  for (const char *p = list;;) {
    if (*p < '0' || *p > '9') return -1;
    long v = 0;
    while (*p >= '0' && *p <= '9') {
      v = v * 10 + (*p++ - '0');
      if (v > NEST_ARCH_MAX_WIDTH) return -1;
    }
    if (v < 1 || n == cap) return -1;
    out[n++] = (int)v;
    if (!*p) return n;
    if (*p++ != ',') return -1;
  }
}

int nest_arch_hidden_layers(const char *arch) {
  if (strcmp(arch, "lenet300") == 0) return 2;
  if (strcmp(arch, "lenet5") == 0) return 3;
  if (strcmp(arch, "alexnet") == 0) return 7;
  if (strcmp(arch, "vgg16") == 0) return 15;
  if (strncmp(arch, "mlp:", 4) == 0) {
    int sizes = 1;
    for (const char *p = arch + 4; *p; ++p) sizes += *p == '-';
    return sizes - 2;
  }
  return -1;
}

/* A hidden conv or dense layer followed by [BN] and ReLU [and dropout for dense]. */
static void hidden(builder *b, nest_layer_kind kind, const char *name, nest_layer_hparams hp) {
  nest_layer_spec *s = push(b, kind, "%s", name);
  s->hp = hp;
  if (b->o->batchnorm) push(b, NEST_LAYER_BATCHNORM, "%s.bn", name);
  push(b, NEST_LAYER_RELU, "%s.relu", name);
  if (kind == NEST_LAYER_DENSE && b->o->dropout > 0)
    push(b, NEST_LAYER_DROPOUT, "%s.drop", name)->hp.rate = (float)b->o->dropout;
}

static void conv(builder *b, const char *name, int out_c, int k, int stride, int pad) {
  hidden(b, NEST_LAYER_CONV2D, name,
         (nest_layer_hparams){.out_c = next_width(b, out_c), .kh = k, .kw = k,
                              .stride = stride, .pad = pad});
}

static void pool(builder *b, const char *name, int k, int stride) {
  push(b, NEST_LAYER_MAXPOOL, "%s", name)->hp =
      (nest_layer_hparams){.kh = k, .kw = k, .stride = stride, .pad = 0};
}

static void fc(builder *b, const char *name, int units) {
  hidden(b, NEST_LAYER_DENSE, name, (nest_layer_hparams){.units = next_width(b, units)});
}

static void output(builder *b, const char *name, int nclasses) {
  push(b, NEST_LAYER_DENSE, "%s", name)->hp.units = nclasses;
}

static nest_status build_mlp(builder *b, const char *arch, const char *list, nest_shape in,
                             int nclasses) {
  int widths[64], n = 0;
  const char *p = list;
  while (*p) {
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (end == p || errno || v <= 0 || v > 1000000000L || n == 64 || (*end && *end != '-'))
      return NEST_ERR(NEST_ERR_CONFIG,
                      "model.arch '%s': expected mlp:N-N-...-N with positive integers", arch);
    widths[n++] = (int)v;
    p = *end ? end + 1 : end;
  }
  if (n < 2)
    return NEST_ERR(NEST_ERR_CONFIG, "model.arch '%s': an mlp needs at least input and output sizes",
                    arch);
  if ((size_t)widths[0] != nest_shape_size(in))
    return NEST_ERR(NEST_ERR_CONFIG, "model.arch '%s': input size %d but the data has %zu features",
                    arch, widths[0], nest_shape_size(in));
  if (widths[n - 1] != nclasses)
    return NEST_ERR(NEST_ERR_CONFIG, "model.arch '%s': output size %d but the data has %d classes",
                    arch, widths[n - 1], nclasses);
  char name[16];
  for (int i = 1; i < n - 1; ++i) {
    snprintf(name, sizeof name, "fc%d", i);
    fc(b, name, widths[i]);
  }
  snprintf(name, sizeof name, "fc%d", n - 1);
  output(b, name, nclasses);
  return NEST_OK;
}

nest_status nest_arch_build(const char *arch, const nest_arch_opts *opts, nest_shape in,
                            int nclasses, nest_layer_spec **specs, int *nspecs) {
  *specs = NULL;
  *nspecs = 0;
  if (!(opts->width > 0)) return NEST_ERR(NEST_ERR_CONFIG, "model.width must be positive");
  if (nclasses < 2) return NEST_ERR(NEST_ERR_CONFIG, "the data has %d classes; need at least 2", nclasses);
  builder b = {.o = opts};
  if (opts->widths && opts->widths[0]) {
    b.nwidths = nest_arch_parse_widths(opts->widths, b.widths, MAX_WIDTHS);
    if (b.nwidths < 0)
      return NEST_ERR(NEST_ERR_CONFIG,
                      "model.widths '%.64s': expected N,N,...,N with integers in [1, %d] (at most "
                      "%d)", opts->widths, NEST_ARCH_MAX_WIDTH, MAX_WIDTHS);
    const int want = nest_arch_hidden_layers(arch);
    if (want >= 0 && b.nwidths != want)
      return NEST_ERR(NEST_ERR_CONFIG,
                      "model.widths has %d entries but model.arch = %.64s has %d hidden conv / "
                      "dense layers", b.nwidths, arch, want);
  }
  NEST_CALL(nest_calloc((void **)&b.s, MAX_SPECS, sizeof *b.s, "layer specs"));
  nest_status st = NEST_OK;
  if (strncmp(arch, "mlp:", 4) == 0) {
    st = build_mlp(&b, arch, arch + 4, in, nclasses);
  } else if (strcmp(arch, "lenet300") == 0) {
    fc(&b, "fc1", 300);
    fc(&b, "fc2", 100);
    output(&b, "fc3", nclasses);
  } else if (strcmp(arch, "lenet5") == 0) {
    /* Caffe's LeNet: no nonlinearity after the convolutions, only after ip1. */
    nest_layer_spec *s = push(&b, NEST_LAYER_CONV2D, "%s", "conv1");
    s->hp = (nest_layer_hparams){.out_c = next_width(&b, 20), .kh = 5, .kw = 5, .stride = 1};
    if (opts->batchnorm) push(&b, NEST_LAYER_BATCHNORM, "%s.bn", "conv1");
    pool(&b, "pool1", 2, 2);
    s = push(&b, NEST_LAYER_CONV2D, "%s", "conv2");
    s->hp = (nest_layer_hparams){.out_c = next_width(&b, 50), .kh = 5, .kw = 5, .stride = 1};
    if (opts->batchnorm) push(&b, NEST_LAYER_BATCHNORM, "%s.bn", "conv2");
    pool(&b, "pool2", 2, 2);
    fc(&b, "fc1", 500);
    output(&b, "fc2", nclasses);
  } else if (strcmp(arch, "alexnet") == 0) {
    conv(&b, "conv1", 96, 11, 4, 2);
    pool(&b, "pool1", 3, 2);
    conv(&b, "conv2", 256, 5, 1, 2);
    pool(&b, "pool2", 3, 2);
    conv(&b, "conv3", 384, 3, 1, 1);
    conv(&b, "conv4", 384, 3, 1, 1);
    conv(&b, "conv5", 256, 3, 1, 1);
    pool(&b, "pool5", 3, 2);
    fc(&b, "fc6", 4096);
    fc(&b, "fc7", 4096);
    output(&b, "fc8", nclasses);
  } else if (strcmp(arch, "vgg16") == 0) {
    static const int cfg[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0,
                              512, 512, 512, 0, 512, 512, 512, 0};
    int ci = 0, pi = 0;
    char name[16];
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; ++i) {
      if (cfg[i] == 0) {
        snprintf(name, sizeof name, "pool%d", ++pi);
        pool(&b, name, 2, 2);
      } else {
        snprintf(name, sizeof name, "conv%d", ++ci);
        conv(&b, name, cfg[i], 3, 1, 1);
      }
    }
    fc(&b, "fc14", 4096);
    fc(&b, "fc15", 4096);
    output(&b, "fc16", nclasses);
  } else {
    st = NEST_ERR(NEST_ERR_CONFIG,
                  "model.arch '%s' is unknown: use lenet300, lenet5, alexnet, vgg16 or mlp:N-N-...-N",
                  arch);
  }
  if (st != NEST_OK) {
    free(b.s);
    return st;
  }
  *specs = b.s;
  *nspecs = b.n;
  return NEST_OK;
}
