#!/usr/bin/env python3
"""infer_numpy.py - run a nest model file with h5py and numpy alone (docs/model-format.md):
conv, pooling, batch norm, partial-area masks, SCANN skip tensors and a DR+SCANN reduction.

    python3 infer_numpy.py RUN/model.h5 t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
    python3 infer_numpy.py RUN/model.h5 new-rows.csv          # CSV read as the training CSV was

Prints "test_error = E (W / N)" when the data have labels, and with --predictions one line
"index,label" per sample (the class names the model file records).
"""
import gzip
import sys

import h5py
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def param(g, name):
    """A parameter as a dense float32 array: compact (active indices + values) or dense form."""
    if name + "_value" in g:
        v = g[name + "_value"]
        w = np.zeros(int(np.prod(v.attrs["shape"])), np.float32)
        w[g[name + "_index"][()]] = v[()]
        return w.reshape(v.attrs["shape"])
    return g[name][()].astype(np.float32)


def windows(x, kh, kw, stride, pad, fill):
    """[N, C, H, W] -> [N, C, P, Q, kh, kw]: the input window of each output position."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    p = (x.shape[2] - kh) // stride + 1
    q = (x.shape[3] - kw) // stride + 1
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :p, :q]


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def skip_input(order, inputs, src):
    """What a skip tensor from `src` reads: the net's input ("in"), else the input of the first
    dense / conv layer after layer `src` (its ReLU's output, after any dropout)."""
    if src == "in":
        return inputs[-1]
    names = [n.split("_", 1)[1] for n in order]
    after = [i for i in range(names.index(src) + 1, len(order)) if i in inputs]
    return inputs[after[0]]


def forward(layers, x):
    """Logits [N, classes] of normalised inputs x [N, C, H, W], the layers in index order."""
    order = sorted(layers)  # "000_fc1", "001_fc1.relu", ...
    inputs = {-1: x.reshape(len(x), -1)}  # flattened inputs of the dense / conv layers so far
    for i, name in enumerate(order):
        g, a = layers[name], layers[name].attrs
        kind = a["kind"]
        if kind in ("dense", "conv2d"):
            inputs[i] = x.reshape(len(x), -1)
        if kind == "dense":  # y = x W^T + b, x flattened in C, H, W order
            x = x.reshape(len(x), -1) @ param(g, "W").T + param(g, "b")
            for src in filter(None, (s.strip() for s in text(a.get("skips", "")).split(","))):
                x = x + skip_input(order, inputs, src) @ param(g, "skip_" + src).T  # SCANN
        elif kind == "conv2d":  # y[o] = b[o] + sum_m area[o, m] * (W[o, m] correlated with x[m])
            W, b = param(g, "W"), param(g, "b")
            (oc, c, kh, kw), n = W.shape, len(x)
            win = windows(x, kh, kw, a["stride"], a["pad"], 0.0)
            p, q = win.shape[2:4]
            cols = win.reshape(n, c, p * q, kh * kw)  # im2col: [N, C, PQ, kh*kw]
            if a.get("area", 0):  # per input map m, gated by the area mask [OC, C, P, Q]
                t = cols.transpose(1, 0, 2, 3).reshape(c, n * p * q, kh * kw) \
                    @ W.reshape(oc, c, kh * kw).transpose(1, 2, 0)  # [C, N*PQ, OC]
                area = g["area"][()].astype(np.float32).reshape(oc, c, p * q)
                y = (t.reshape(c, n, p * q, oc) * area.transpose(1, 2, 0)[:, None]).sum(axis=0)
            else:
                y = cols.transpose(0, 2, 1, 3).reshape(n, p * q, -1) @ W.reshape(oc, -1).T
            x = y.transpose(0, 2, 1).reshape(n, oc, p, q) + b[None, :, None, None]
        elif kind == "maxpool":  # padding never wins
            x = windows(x, a["kh"], a["kw"], a["stride"], a["pad"], -np.inf).max(axis=(4, 5))
        elif kind == "relu":
            x = np.maximum(x, 0)
        elif kind == "batchnorm":  # eval: running statistics, per channel (axis 1)
            shape = (1, -1) + (1,) * (x.ndim - 2)
            rm, rv = g["running_mean"][()].reshape(shape), g["running_var"][()].reshape(shape)
            x = param(g, "gamma").reshape(shape) * (x - rm) / np.sqrt(rv + a["eps"]) \
                + param(g, "beta").reshape(shape)
        elif kind != "dropout":  # dropout: the identity at inference
            raise SystemExit(f"unknown layer kind {kind}")
    return x


def prepare(f, raw):
    """Raw samples [N, C, H, W] as the data files hold them -> the net's inputs."""
    inp = f["input"]
    crop = int(inp.attrs["crop"])
    if crop:  # image shards: the centre crop x crop window
        top, left = (raw.shape[2] - crop) // 2, (raw.shape[3] - crop) // 2
        raw = raw[:, :, top:top + crop, left:left + crop]
    x = raw.astype(np.float32) * np.float32(inp.attrs["scale"])
    if "reduce" in inp:  # DR+SCANN: y = components ((x - min) s - mean), s = 1 / (max - min)
        r = inp["reduce"]
        lo, hi = r["min"][()], r["max"][()]
        span = hi.astype(np.float64) - lo.astype(np.float64)  # 1 / span in double, as nest
        s = np.where(hi > lo, 1.0 / np.where(hi > lo, span, 1.0), 0.0).astype(np.float32)
        z = (x.reshape(len(x), -1) - lo) * s - r["mean"][()]
        comps = r["components"][()].reshape(int(r.attrs["k"]), -1)  # [k, d] row-major
        x = (z @ comps.T).reshape(len(x), -1, 1, 1)
    if inp.attrs["normalization"] != "none":  # per channel (per feature for tabular data)
        shape = (1, -1, 1, 1)
        x = (x - inp["mean"][()].reshape(shape)) / inp["std"][()].reshape(shape)
    return x


def read_idx(path):
    data = (gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open)(path, "rb").read()
    ndim = data[3]
    dims = np.frombuffer(data, ">u4", ndim, 4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_csv(f, path):
    """Features [N, D, 1, 1] and label strings (None if the file has no label column)."""
    a = f["input"].attrs
    rows = [r.split(a["csv_delim"]) for r in open(path).read().splitlines() if r.strip()]
    rows = rows[int(a["csv_header"]):]
    drop = {int(c) for c in a["csv_drop_cols"].split(",") if c.strip()}
    d = int(a["data_shape"][0])
    lab = int(a["csv_label_col"]) % len(rows[0])
    keep = [c for c in range(len(rows[0])) if c not in drop and c != lab]
    if len(keep) != d:  # no label column: every column not dropped is a feature
        keep, lab = [c for c in range(len(rows[0])) if c not in drop], None
    x = np.array([[float(r[c].strip().strip('"')) for c in keep] for r in rows], np.float32)
    labels = [r[lab].strip().strip('"') for r in rows] if lab is not None else None
    return x.reshape(len(x), d, 1, 1), labels


def main(argv):
    show = "--predictions" in argv
    argv = [a for a in argv if a != "--predictions"]
    f = h5py.File(argv[1], "r")
    names = [s.decode() if isinstance(s, bytes) else s for s in f["labels"][()]]
    if len(argv) > 3:  # IDX images + labels
        raw = read_idx(argv[2]).astype(np.float32)
        raw = raw.reshape(len(raw), *f["input"].attrs["data_shape"])
        y = read_idx(argv[3]).astype(np.int64)
    else:  # CSV: labels mapped by the model's class names
        raw, labels = read_csv(f, argv[2])
        y = None if labels is None else np.array([names.index(s) for s in labels])
    pred = np.concatenate([forward(f["layers"], prepare(f, raw[i:i + 500])).argmax(axis=1)
                           for i in range(0, len(raw), 500)])  # argmax: ties to the lower index
    if show:
        print("\n".join(f"{i},{names[k]}" for i, k in enumerate(pred)))
    if y is not None:
        wrong = int((pred != y).sum())
        print(f"test_error = {wrong / len(y):.6f} ({wrong} / {len(y)})")


if __name__ == "__main__":
    main(sys.argv)
