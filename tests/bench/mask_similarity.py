#!/usr/bin/env python3
"""mask_similarity.py - how alike the networks of two runs are, read several ways (docs/growth.md,
"Strategic synthesis: which similarity?"). The strategic-synthesis abstract reports "common
sub-networks with similarities up to ~90%" without saying of what; each reading below is one
candidate, printed next to what two independent uniform masks of the same densities share
(p q / (p + q - p q)):

  masks     Jaccard |A n B| / |A u B| of the active masks, per weight tensor
  top f     the residual after magnitude pruning to density f (the f |w| largest of each tensor,
            ties to the lower index): a pruned sub-network without retraining
  pixels    input pixels that keep fc1 connections, and the 25% with the most (fc1's W is
            [units, 784]: the pixel axis is shared even when pruning removed different units)
  grown     with SEED.h5 (the seed network both runs started from): the connections growth added
            (outside the seed mask), and the share of each residual that lies in the seed mask

  pruned    when pruning removed units, each pruned network is mapped back onto its run's
            model_trained.h5 (surgery keeps the order of the units left and pruning only clears
            mask bits, so the kept units are the earliest rows whose masks contain the pruned
            rows): the surviving units per layer and the pruned masks at the trained shapes

Hidden units are comparable only between runs that started from the same seed network (a
network's units can be permuted); the per-tensor readings need equal shapes.

    /usr/bin/python3 tests/bench/mask_similarity.py RUN_A/model.h5 RUN_B/model.h5 [SEED.h5]
"""
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                                "examples"))
from infer_numpy import param  # noqa: E402  (the documented reader of both storage forms)


def load(path):
    """{layer: (masked W, mask)} of the weight tensors of a model file, in layer order."""
    out = {}
    with h5py.File(path, "r") as f:
        for ln, g in sorted(f["layers"].items()):
            if "W_value" in g:  # compact form: the active positions are the listed ones
                w = param(g, "W")
                m = np.zeros(w.size, bool)
                m[g["W_index"][()]] = True
                m = m.reshape(w.shape)
            elif "W_mask" in g:  # dense form (format 1)
                m = param(g, "W_mask") != 0
                w = param(g, "W")
            else:
                continue
            out[ln.split("_", 1)[1]] = (w * m, m)
    return out


def jac(a, b):
    u = np.logical_or(a, b).sum()
    return np.logical_and(a, b).sum() / u if u else 1.0


def chance(p, q):
    return p * q / (p + q - p * q) if p + q > 0 else 1.0


def top(w, f):
    """Mask of the round(f * size) largest |w| (at least 1), ties to the lower index."""
    k = max(1, int(round(f * w.size)))
    m = np.zeros(w.size, bool)
    m[np.argsort(-np.abs(w).ravel(), kind="stable")[:k]] = True
    return m.reshape(w.shape)


def pixels(a, b):
    ma, mb = a["fc1"][1], b["fc1"][1]
    pa, pb = ma.any(0), mb.any(0)
    print("units per layer: %s vs %s" % ([a[n][1].shape[0] for n in a],
                                         [b[n][1].shape[0] for n in b]))
    print("input pixels with an active fc1 connection: %d, %d: Jaccard %.3f (chance %.3f)"
          % (pa.sum(), pb.sum(), jac(pa, pb), chance(pa.mean(), pb.mean())))
    da, db = ma.sum(0), mb.sum(0)
    ka, kb = top(da.astype(float), 0.25), top(db.astype(float), 0.25)
    print("the 25%% of pixels with the most active fc1 connections: Jaccard %.3f (chance %.3f);"
          " degree correlation %.3f" % (jac(ka, kb), chance(0.25, 0.25),
                                         np.corrcoef(da, db)[0, 1]))


def tensors(a, b):
    print("%-5s %8s %8s | %8s %8s | %8s %8s" % ("layer", "masks", "chance", "top3%", "chance",
                                                "top1%", "chance"))
    for n in a:
        (wa, ma), (wb, mb) = a[n], b[n]
        r = [n, jac(ma, mb), chance(ma.mean(), mb.mean())]
        for f in (0.03, 0.01):
            r += [jac(top(wa, f), top(wb, f)), chance(f, f)]
        print("%-5s %8.3f %8.3f | %8.3f %8.3f | %8.3f %8.3f" % tuple(r))
    for f in (0.03, 0.01):
        da, db = top(a["fc1"][0], f).sum(0), top(b["fc1"][0], f).sum(0)
        ka, kb = top(da.astype(float), 0.25), top(db.astype(float), 0.25)
        print("the 25%% of pixels with the most fc1 connections in the top-%g%% residual: Jaccard"
              " %.3f (chance %.3f); degree correlation %.3f"
              % (100 * f, jac(ka, kb), chance(0.25, 0.25), np.corrcoef(da, db)[0, 1]))


def grown(a, b, seed):
    for f in (0.03, 0.01):
        share = lambda r: " ".join("%.2f" % (np.logical_and(top(r[n][0], f), seed[n][1]).sum() /
                                             top(r[n][0], f).sum()) for n in r)
        print("share of the top-%g%% residual inside the seed mask: A %s, B %s"
              % (100 * f, share(a), share(b)))
    for n in a:
        dorm = ~seed[n][1]
        ga, gb = a[n][1] & dorm, b[n][1] & dorm
        print("%s: grown connections (outside the seed mask) %d, %d: Jaccard %.3f (chance %.3f)"
              % (n, ga.sum(), gb.sum(), jac(ga, gb),
                 chance(ga.sum() / dorm.sum(), gb.sum() / dorm.sum())))


def expand(pruned, trained):
    """The pruned net's masks at the trained net's shapes, and the kept unit indices per layer."""
    cols, out, kept = None, {}, {}
    for n in trained:
        tm, pm = trained[n][1], pruned[n][1]
        t = tm if cols is None else tm[:, cols]
        rows, j = [], 0
        for i in range(pm.shape[0]):  # the earliest trained row containing pruned row i
            while j < t.shape[0] and not np.all(t[j] >= pm[i]):
                j += 1
            if j == t.shape[0]:
                sys.exit("mask_similarity: %s: pruned row %d matches no trained row" % (n, i))
            rows.append(j)
            j += 1
        full = np.zeros(tm.shape, bool)
        full[np.ix_(rows, cols if cols is not None else np.arange(tm.shape[1]))] = pm
        out[n], kept[n], cols = (full, full), np.array(rows), np.array(rows)
    return out, kept


def pruned_readings(path_a, path_b, a, b, seed=None):
    ta = os.path.join(os.path.dirname(path_a), "model_trained.h5")
    tb = os.path.join(os.path.dirname(path_b), "model_trained.h5")
    if not (os.path.exists(ta) and os.path.exists(tb)):
        return
    ta, tb = load(ta), load(tb)
    if any(ta[n][1].shape != tb[n][1].shape for n in ta):
        return
    (ea, ka), (eb, kb) = expand(a, ta), expand(b, tb)
    for n in ea:
        units = ta[n][1].shape[0]
        ua, ub = np.isin(np.arange(units), ka[n]), np.isin(np.arange(units), kb[n])
        ma, mb = ea[n][1], eb[n][1]
        print("%s pruned: units kept %d, %d of %d: Jaccard %.3f (chance %.3f); masks %d, %d: "
              "Jaccard %.3f (chance %.3f)" % (n, ua.sum(), ub.sum(), units, jac(ua, ub),
                                              chance(ua.mean(), ub.mean()), ma.sum(), mb.sum(),
                                              jac(ma, mb), chance(ma.mean(), mb.mean())))
        if seed is not None and seed[n][1].shape == ma.shape:
            print("%s pruned: share inside the seed mask: A %.2f, B %.2f" % (
                n, (ma & seed[n][1]).sum() / ma.sum(), (mb & seed[n][1]).sum() / mb.sum()))


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    a, b = load(sys.argv[1]), load(sys.argv[2])
    if list(a) != list(b) or "fc1" not in a:
        sys.exit("mask_similarity: %s and %s do not have the same weight layers (with fc1)"
                 % (sys.argv[1], sys.argv[2]))
    pixels(a, b)
    if any(a[n][1].shape != b[n][1].shape for n in a):
        seed = load(sys.argv[3]) if len(sys.argv) == 4 else None
        pruned_readings(sys.argv[1], sys.argv[2], a, b, seed)
        return
    tensors(a, b)
    if len(sys.argv) == 4:
        seed = load(sys.argv[3])
        if all(seed[n][1].shape == a[n][1].shape for n in a):
            grown(a, b, seed)


if __name__ == "__main__":
    main()
