#!/usr/bin/env python3
"""model_storage.py - how large a model file is in each way of storing its masked tensors
(docs/model-format.md, "Compact storage"). For each model file (format 1 or 2) it rewrites the
layers two ways with h5py, with the filters nest uses (Fletcher-32, deflate level 4, shuffle for
multi-byte values), and prints the bytes of each next to the file's own and the dense size:

  dense+deflate  W float32 and W_mask uint8 at their full shapes, deflated (format 1 did this,
                 but kept area masks as raw float32), area masks uint8 deflated
  compact        W_index uint32 + W_value float32 of the active positions only, deflated;
                 area masks uint8 deflated (what format 2 writes)
  dense float32  every parameter as float32 at its full shape: what a dense file or an ONNX
                 export holds

    /usr/bin/python3 tests/bench/model_storage.py RUN/model_seed.h5 RUN/model_grown.h5 RUN/model.h5
"""
import os
import sys
import tempfile

import h5py
import numpy as np

FILTERS = dict(fletcher32=True, compression="gzip", compression_opts=4)


def param(g, name):
    if name + "_value" in g:
        v = g[name + "_value"]
        w = np.zeros(int(np.prod(v.attrs["shape"])), np.float32)
        idx = g[name + "_index"][()]
        w[idx] = v[()]
        m = np.zeros(w.size, np.uint8)
        m[idx] = 1
        return w.reshape(v.attrs["shape"]), m.reshape(v.attrs["shape"])
    return g[name][()], (g[name + "_mask"][()] if name + "_mask" in g else None)


def put(g, name, a):
    if a.size:
        g.create_dataset(name, data=a, chunks=a.shape, shuffle=a.dtype.itemsize > 1, **FILTERS)
    else:
        g.create_dataset(name, data=a)


def rewrite(src, path, compact):
    with h5py.File(src, "r") as f, h5py.File(path, "w", libver=("v110", "latest")) as out:
        for ln, g in f["layers"].items():
            o = out.create_group(ln)
            for name in sorted({k.rsplit("_", 1)[0] if k.endswith(("_mask", "_index", "_value"))
                                else k for k in g}):
                if name == "area":
                    put(o, "area", g["area"][()].astype(np.uint8))
                    continue
                w, m = param(g, name)
                if m is None:
                    put(o, name, w)
                elif compact:
                    idx = np.flatnonzero(m).astype(np.uint32)
                    put(o, name + "_index", idx)
                    put(o, name + "_value", w.ravel()[idx])
                else:
                    put(o, name, w)
                    put(o, name + "_mask", m)
    return os.path.getsize(path)


def main(paths):
    tmp = tempfile.mkdtemp()
    print(f"{'file':48} {'active':>8} {'dense f32':>10} {'file':>9} {'dense+deflate':>14} "
          f"{'compact':>9}")
    for p in paths:
        with h5py.File(p, "r") as f:
            active = dense = 0
            for g in f["layers"].values():
                for k in g:
                    if k.endswith(("_mask", "_index", "area", "running_mean", "running_var")):
                        continue
                    w, m = param(g, k.rsplit("_", 1)[0] if k.endswith("_value") else k)
                    dense += 4 * w.size
                    active += int(m.sum()) if m is not None else 0
        d = rewrite(p, os.path.join(tmp, "d.h5"), False)
        c = rewrite(p, os.path.join(tmp, "c.h5"), True)
        print(f"{p:48} {active:8d} {dense:10d} {os.path.getsize(p):9d} {d:14d} {c:9d}")


if __name__ == "__main__":
    main(sys.argv[1:])
