/* nest_jaccard.c — how similar are the final masks of two runs? For every maskable tensor
 * present in both model files (matched by layer and parameter name) it prints the active
 * counts, |A∩B|, |A∪B| and the Jaccard similarity |A∩B| / |A∪B|, then the total over all
 * comparable tensors. Strategic synthesis (Finlinson et al.) reports this across seeds.
 * Serial tool: reads only the masks (model.h), never builds a net, never calls MPI.
 *
 *   nest_jaccard outputs/run-seed1 outputs/run-seed2/model.h5
 *
 * Tensors whose shapes differ (neuron growth or pruning resized them) or that exist in one
 * file only are listed on their own line and left out of the total: position i means a
 * different connection once a layer was resized.
 * Exit codes: 0 success, 1 data error (unreadable file, not a model file, nothing to
 * compare), 2 usage error; every error is one line "nest_jaccard: error: ..." on stderr. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nest/model.h"

static const char *usage_line = "usage: nest_jaccard RUN_A[/model.h5] RUN_B[/model.h5]\n";

static void print_help(void) {
  printf("%s", usage_line);
  printf("\nCompare the connectivity masks of two nest model files (docs/model-format.md).\n"
         "A run directory stands for DIR/model.h5. For each maskable tensor present in both\n"
         "files with the same shape it prints the active counts in A and B, |A&B|, |A|B| and\n"
         "the Jaccard similarity |A&B| / |A|B|; then the total over those tensors. Tensors\n"
         "whose shapes differ (growth resized them) or that exist in one file only are\n"
         "reported on their own line and left out of the total.\n"
         "  -h, --help   this help\n"
         "\nExit codes: 0 success, 1 file error or nothing comparable, 2 usage error.\n"
         "\nExample:\n"
         "  nest_jaccard outputs/lenet300-seed1 outputs/lenet300-seed2\n");
}

/* A directory stands for DIR/model.h5 (users pass run directories). */
static void resolve(const char *arg, char *buf, size_t cap) {
  struct stat sb;
  size_t n = strlen(arg);
  if (stat(arg, &sb) == 0 && S_ISDIR(sb.st_mode))
    snprintf(buf, cap, "%s%smodel.h5", arg, n && arg[n - 1] == '/' ? "" : "/");
  else
    snprintf(buf, cap, "%s", arg);
}

static const nest_model_mask *find(const nest_model_masks *m, const nest_model_mask *t) {
  for (int i = 0; i < m->ntensors; ++i)
    if (strcmp(m->tensors[i].layer, t->layer) == 0 && strcmp(m->tensors[i].param, t->param) == 0)
      return &m->tensors[i];
  return NULL;
}

static void shape_str(const nest_model_mask *t, char *buf, size_t cap) {
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; i < t->ndims && used < cap; ++i) {
    int k = snprintf(buf + used, cap - used, "%s%d", i ? "x" : "", t->dims[i]);
    if (k < 0) break;
    used += (size_t)k;
  }
}

static int64_t active(const nest_model_mask *t) {
  int64_t a = 0;
  for (size_t i = 0; i < t->count; ++i) a += t->mask[i];
  return a;
}

static void print_jaccard(int64_t inter, int64_t uni) {
  /* Two empty masks: the similarity is undefined, not 0 or 1. */
  if (uni == 0) printf(" %9s\n", "n/a");
  else printf(" %9.6f\n", (double)inter / (double)uni);
}

int main(int argc, char **argv) {
  const char *args[2];
  int npos = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      print_help();
      return 0;
    }
    if (argv[i][0] == '-' && argv[i][1] && strcmp(argv[i], "--") != 0) {
      fprintf(stderr, "nest_jaccard: error: unknown option '%s' (try --help)\n", argv[i]);
      return 2;
    }
    if (strcmp(argv[i], "--") == 0) {
      for (++i; i < argc; ++i)
        if (npos < 2) args[npos++] = argv[i];
        else npos = 3;
      break;
    }
    if (npos < 2) args[npos++] = argv[i];
    else npos = 3;
  }
  if (npos != 2) {
    fprintf(stderr, "nest_jaccard: error: expected two model files or run directories, got %s "
                    "(try --help)\n", npos < 2 ? "fewer" : "more");
    return 2;
  }

  char path[2][4096];
  nest_model_masks *m[2] = {NULL, NULL};
  for (int k = 0; k < 2; ++k) {
    resolve(args[k], path[k], sizeof path[k]);
    if (nest_model_read_masks(path[k], &m[k]) != NEST_OK) {
      /* The library message already starts with the file name. */
      fprintf(stderr, "nest_jaccard: error: %s\n", nest_error_message());
      nest_model_masks_free(&m[0]);
      return 1;
    }
  }

  printf("A: %s (%s)\nB: %s (%s)\n", path[0], m[0]->widths, path[1], m[1]->widths);
  printf("%-12s %-6s %-14s %10s %10s %10s %10s %9s\n", "layer", "param", "shape", "active_A",
         "active_B", "A&B", "A|B", "jaccard");
  int64_t tot_a = 0, tot_b = 0, tot_i = 0, tot_u = 0;
  int ncomp = 0;
  for (int i = 0; i < m[0]->ntensors; ++i) {
    const nest_model_mask *ta = &m[0]->tensors[i], *tb = find(m[1], ta);
    char sa[64], sb[64];
    shape_str(ta, sa, sizeof sa);
    if (!tb) {
      printf("%-12s %-6s %-14s only in A: not compared (%lld active)\n", ta->layer, ta->param,
             sa, (long long)active(ta));
      continue;
    }
    shape_str(tb, sb, sizeof sb);
    if (strcmp(sa, sb) != 0) {
      printf("%-12s %-6s %-14s not comparable: shape %s in A, %s in B\n", ta->layer, ta->param,
             sa, sa, sb);
      continue;
    }
    int64_t a = 0, b = 0, in = 0, un = 0;
    for (size_t j = 0; j < ta->count; ++j) {
      a += ta->mask[j];
      b += tb->mask[j];
      in += ta->mask[j] & tb->mask[j];
      un += ta->mask[j] | tb->mask[j];
    }
    printf("%-12s %-6s %-14s %10lld %10lld %10lld %10lld", ta->layer, ta->param, sa,
           (long long)a, (long long)b, (long long)in, (long long)un);
    print_jaccard(in, un);
    tot_a += a, tot_b += b, tot_i += in, tot_u += un;
    ++ncomp;
  }
  for (int i = 0; i < m[1]->ntensors; ++i) {
    const nest_model_mask *tb = &m[1]->tensors[i];
    if (find(m[0], tb)) continue;
    char sb[64];
    shape_str(tb, sb, sizeof sb);
    printf("%-12s %-6s %-14s only in B: not compared (%lld active)\n", tb->layer, tb->param, sb,
           (long long)active(tb));
  }
  int rc = 0;
  if (ncomp == 0) {
    fprintf(stderr, "nest_jaccard: error: %s: no maskable tensor with the same name and shape "
                    "in %s\n", path[0], path[1]);
    rc = 1;
  } else {
    char label[32];
    snprintf(label, sizeof label, "%d tensor%s", ncomp, ncomp == 1 ? "" : "s");
    printf("%-12s %-6s %-14s %10lld %10lld %10lld %10lld", "total", "", label, (long long)tot_a,
           (long long)tot_b, (long long)tot_i, (long long)tot_u);
    print_jaccard(tot_i, tot_u);
  }
  nest_model_masks_free(&m[0]);
  nest_model_masks_free(&m[1]);
  return rc;
}
