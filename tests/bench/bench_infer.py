#!/usr/bin/python3
"""bench_infer.py — nest's sparse inference against PyTorch, alternated in one run.

A benchmark, never a test (docs/performance.md, "Sparse inference"). Run with Debian's Python,
which has python3-torch and python3-numpy (`python3` on PATH may be another interpreter):

  /usr/bin/python3 tests/bench/bench_infer.py [--bench build/bench_infer] [--rounds 7]
      [--reps 400,40] [--threads 1,2] [--batches 1,256] MODEL.h5...

Contenders, each on the same compact network (the program nest_sparse_create builds from the
model file, exported by `bench_infer --export`):
  nest_sparse   nest's sparse program (sparse.h)                  } both timed inside one
  nest_dense    nest's dense masked path (nest_net_forward, eval) } bench_infer process
  torch_eager   PyTorch CPU, the compact layer shapes as a dense nn.Sequential (Linear / Conv2d /
                MaxPool2d / ReLU, the pruned weights as zeros), torch.set_num_threads(t),
                torch.inference_mode()
  torch_script  the same traced, frozen and torch.jit.optimize_for_inference'd (the ratio
                "vs PyTorch dense" uses the faster of the two, case by case)
  torch_sparse  PyTorch's torch.sparse: every dense / conv weight a CSR tensor (the same
                nonzeros), torch.addmm on activations kept feature-major (the input transposed
                once per call, counted), conv as unfold + CSR matmul
Partial-area masks are executed by nest only; the PyTorch models compute the conv layers
ungated (the same shapes, less work), so they are never slower because of them.

Protocol: R rounds; each round runs bench_infer once (nest_sparse and nest_dense alternated
call by call, every case) and then the PyTorch contenders (alternated call by call, every
case). Every call is timed; the table gives the median over all rounds' calls, and the range
of the per-round medians. Before timing, every model's outputs are checked: nest's exported
logits against a float64 reference of the compact program (area gating included), and both
PyTorch models against the same reference without gating.
Memory: the resident set (VmRSS, VmHWM) of a process running only one contender at batch 256.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F


# ---- the exported program ------------------------------------------------------------------

def load_program(d):
    prog = {"ops": [], "dir": d}
    with open(os.path.join(d, "manifest.txt")) as f:
        for line in f:
            key, _, rest = line.strip().partition(" ")
            if key == "model":
                prog["name"] = rest
            elif key == "file_bytes":
                prog["file_bytes"] = int(rest)
            elif key == "input":
                prog["input"] = tuple(int(v) for v in rest.split())
            elif key == "nclasses":
                prog["nclasses"] = int(rest)
            elif key == "stats":
                prog["stats"] = {k: float(v) for k, v in (kv.split("=") for kv in rest.split())}
            elif key == "op":
                idx, _, kvs = rest.partition(" ")
                op = {"index": int(idx)}
                for kv in kvs.split():
                    k, v = kv.split("=")
                    op[k] = v if k in ("kind", "name") else tuple(int(x) for x in v.split(","))
                for k in ("relu", "stride", "pad", "rows", "cols", "nnz", "bias_plane", "area"):
                    op[k] = op[k][0]
                for arr in ("rowptr", "colidx", "values", "bias", "bias_plane", "area", "scale",
                            "shift"):
                    p = os.path.join(d, "op%d_%s.npy" % (op["index"], arr))
                    if os.path.exists(p):
                        op[arr + "_a"] = np.load(p)
                prog["ops"].append(op)
    for k in ("inputs", "logits_sparse", "logits_dense"):
        prog[k] = np.load(os.path.join(d, k + ".npy"))
    return prog


def dense_weight(op):
    """The op's weights as a dense [rows, cols] float32 matrix (pruned entries zero)."""
    w = np.zeros((op["rows"], op["cols"]), dtype=np.float32)
    rp, ci, v = op["rowptr_a"], op["colidx_a"], op["values_a"]
    for r in range(op["rows"]):
        w[r, ci[rp[r]:rp[r + 1]]] = v[rp[r]:rp[r + 1]]
    return w


def conv_shape(op):
    return (op["rows"], op["in"][0], op["k"][0], op["k"][1])


# ---- float64 reference of the compact program -----------------------------------------------

def reference(prog, x, gated):
    h = torch.from_numpy(x).double()
    for op in prog["ops"]:
        kind = op["kind"]
        if kind == "dense":
            w = torch.from_numpy(dense_weight(op)).double()
            h = h.reshape(h.shape[0], -1) @ w.T + torch.from_numpy(op["bias_a"]).double()
        elif kind == "conv":
            oc, c, kh, kw = conv_shape(op)
            w = torch.from_numpy(dense_weight(op)).double().reshape(oc, c, kh * kw)
            n = h.shape[0]
            col = F.unfold(h, (kh, kw), padding=op["pad"], stride=op["stride"])
            col = col.reshape(n, c, kh * kw, -1)
            if gated and "area_a" in op:
                contrib = torch.einsum("omk,nmkl->noml", w, col)
                y = (contrib * torch.from_numpy(op["area_a"]).double()[None]).sum(2)
            else:
                y = torch.einsum("omk,nmkl->nol", w, col)
            y = y + torch.from_numpy(op["bias_a"]).double()[None, :, None]
            if "bias_plane_a" in op:
                y = y + torch.from_numpy(op["bias_plane_a"]).double()[None]
            h = y.reshape(n, oc, op["out"][1], op["out"][2])
        elif kind == "pool":
            h = F.max_pool2d(h, (op["k"][0], op["k"][1]), op["stride"], op["pad"])
        elif kind == "affine":
            h = h * torch.from_numpy(op["scale_a"]).double()[None, :, None, None] \
                + torch.from_numpy(op["shift_a"]).double()[None, :, None, None]
        if op["relu"]:
            h = torch.relu(h)
    return h.reshape(h.shape[0], -1).numpy()


# ---- the PyTorch contenders ---------------------------------------------------------------

class BiasPlane(torch.nn.Module):
    """Adds a per-position bias [1, C, H, W] (a conv whose folded constants vary)."""

    def __init__(self, plane):
        super().__init__()
        self.register_buffer("plane", plane)

    def forward(self, x):
        return x + self.plane


class Affine(torch.nn.Module):
    """y = x * scale[c] + shift[c] (a batch norm nest could not fold)."""

    def __init__(self, scale, shift):
        super().__init__()
        self.register_buffer("scale", scale.reshape(1, -1, 1, 1))
        self.register_buffer("shift", shift.reshape(1, -1, 1, 1))

    def forward(self, x):
        return x * self.scale + self.shift


def torch_dense(prog):
    """The compact layer shapes as an idiomatic dense nn.Sequential (zeros where pruned)."""
    layers, flat = [], False
    for op in prog["ops"]:
        kind = op["kind"]
        if kind == "dense":
            if not flat:
                layers.append(torch.nn.Flatten())
                flat = True
            m = torch.nn.Linear(op["cols"], op["rows"])
            m.weight.data = torch.from_numpy(dense_weight(op))
            m.bias.data = torch.from_numpy(op["bias_a"])
            layers.append(m)
        elif kind == "conv":
            oc, c, kh, kw = conv_shape(op)
            m = torch.nn.Conv2d(c, oc, (kh, kw), stride=op["stride"], padding=op["pad"])
            m.weight.data = torch.from_numpy(dense_weight(op)).reshape(oc, c, kh, kw)
            m.bias.data = torch.from_numpy(op["bias_a"])
            layers.append(m)
            if "bias_plane_a" in op:
                layers.append(BiasPlane(torch.from_numpy(op["bias_plane_a"]).reshape(
                    1, oc, op["out"][1], op["out"][2])))
        elif kind == "pool":
            layers.append(torch.nn.MaxPool2d((op["k"][0], op["k"][1]), op["stride"], op["pad"]))
        elif kind == "affine":
            layers.append(Affine(torch.from_numpy(op["scale_a"]), torch.from_numpy(op["shift_a"])))
        if op["relu"]:
            layers.append(torch.nn.ReLU())
    if not flat:
        layers.append(torch.nn.Flatten())
    return torch.nn.Sequential(*layers).eval()


def torch_script(model, prog):
    """The same model traced, frozen and optimize_for_inference'd (TorchScript)."""
    c, h, w = prog["input"]
    with torch.no_grad():
        tr = torch.jit.trace(model, torch.zeros(1, c, h, w))
        return torch.jit.optimize_for_inference(torch.jit.freeze(tr.eval()))


class TorchSparse:
    """torch.sparse CSR weights; dense layers on feature-major activations [features, n]."""

    def __init__(self, prog):
        self.steps = []
        self.csr_bytes = 0
        for op in prog["ops"]:
            kind = op["kind"]
            if kind in ("dense", "conv"):
                w = torch.sparse_csr_tensor(torch.from_numpy(op["rowptr_a"].astype(np.int64)),
                                            torch.from_numpy(op["colidx_a"].astype(np.int64)),
                                            torch.from_numpy(op["values_a"]),
                                            size=(op["rows"], op["cols"]))
                self.csr_bytes += (op["rows"] + 1) * 8 + op["nnz"] * (8 + 4)
                b = torch.from_numpy(op["bias_a"]).reshape(-1, 1)
                if kind == "dense":
                    self.steps.append(("dense", w, b))
                else:
                    plane = None
                    if "bias_plane_a" in op:
                        plane = torch.from_numpy(op["bias_plane_a"]).reshape(
                            op["rows"], 1, op["out"][1] * op["out"][2])
                    self.steps.append(("conv", w, (b, plane, op)))
            elif kind == "pool":
                self.steps.append(("pool", (op["k"][0], op["k"][1]), (op["stride"], op["pad"])))
            elif kind == "affine":
                self.steps.append(("affine", torch.from_numpy(op["scale_a"]).reshape(1, -1, 1, 1),
                                   torch.from_numpy(op["shift_a"]).reshape(1, -1, 1, 1)))
            if op["relu"]:
                self.steps.append(("relu", None, None))

    def __call__(self, x):
        n = x.shape[0]
        fm = False  # activations feature-major [features, n]
        for kind, w, extra in self.steps:
            if kind == "dense":
                if not fm:
                    x = x.reshape(n, -1).t().contiguous()
                    fm = True
                x = torch.addmm(extra, w, x)
                continue
            if fm:
                x = x.t()
                fm = False
            if kind == "conv":
                b, plane, op = extra
                col = F.unfold(x, (op["k"][0], op["k"][1]), padding=op["pad"],
                               stride=op["stride"])                      # [n, K, L]
                L = col.shape[2]
                col = col.transpose(0, 1).reshape(col.shape[1], n * L)   # [K, n*L]
                y = torch.addmm(b, w, col).reshape(op["rows"], n, L)
                if plane is not None:
                    y = y + plane
                x = y.transpose(0, 1).reshape(n, op["rows"], op["out"][1], op["out"][2])
            elif kind == "pool":
                x = F.max_pool2d(x, w, extra[0], extra[1])
            elif kind == "affine":
                x = x * w + extra
            else:
                x = torch.relu(x)
        return x.t() if fm else x.reshape(n, -1)


# ---- checks ----------------------------------------------------------------------------------

def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def check(prog, fns):
    x = prog["inputs"]
    ref = reference(prog, x, gated=True)
    e_nest = rel_err(prog["logits_sparse"].astype(np.float64), ref)
    e_nest_dense = rel_err(prog["logits_dense"].astype(np.float64), ref)
    ung = reference(prog, x, gated=False)
    errs = []
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        for name, f in fns:
            errs.append((name, rel_err(f(xt).numpy().astype(np.float64), ung)))
    ok = max(e_nest, e_nest_dense) < 1e-4 and max(e for _, e in errs) < 1e-4
    print("check %s: nest sparse %.1e, nest dense %.1e against the float64 program; %s against "
          "it ungated -> %s" % (prog["name"], e_nest, e_nest_dense,
                               ", ".join("%s %.1e" % ne for ne in errs),
                               "ok" if ok else "MISMATCH"))
    return ok


# ---- timing ------------------------------------------------------------------------------------

def time_torch(models, threads, batches, reps, samples):
    with torch.inference_mode():
        for prog, fns in models:
            c, h, w = prog["input"]
            for t in threads:
                torch.set_num_threads(t)
                for n in batches:
                    x = torch.from_numpy(np.random.default_rng(1).standard_normal(
                        (n, c, h, w)).astype(np.float32))
                    r = reps[0] if n == 1 else reps[1]
                    for _, f in fns:
                        for _ in range(3):
                            f(x)
                    got = {k: [] for k, _ in fns}
                    for i in range(r):
                        for j in range(len(fns)):
                            k, f = fns[(i + j) % len(fns)]
                            t0 = time.perf_counter()
                            f(x)
                            got[k].append(1e6 * (time.perf_counter() - t0))
                    for k, v in got.items():
                        samples.setdefault((prog["name"], k, t, n), []).append(v)


def run_c(bench, models, threads, batches, reps, samples):
    cmd = [bench, "--quiet", "--threads", ",".join(map(str, threads)), "--batches",
           ",".join(map(str, batches)), "--reps", "%d,%d" % reps] + models
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("SAMPLES "):
            f = line.split()
            samples.setdefault((f[1], f[2], int(f[3]), int(f[4])), []).append(
                [float(v) for v in f[5:]])


# ---- memory --------------------------------------------------------------------------------

def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return -1


def rss_torch(d, which):
    """Child mode: one PyTorch contender at batch 256, 2 threads; print its memory."""
    base = status_kb("VmRSS:")
    prog = load_program(d)
    model = torch_dense(prog) if which == "dense" else TorchSparse(prog)
    torch.set_num_threads(2)
    c, h, w = prog["input"]
    x = torch.randn(256, c, h, w)
    with torch.inference_mode():
        for _ in range(50):
            model(x)
    print("RSS %s torch_%s rss_kb=%d hwm_kb=%d before_kb=%d" % (prog["name"], which,
          status_kb("VmRSS:"), status_kb("VmHWM:"), base))


def memory(bench, models, dirs):
    res = {}
    for m, d in zip(models, dirs):
        lines = []
        for which in ("sparse", "dense"):
            lines += subprocess.run([bench, "--rss", which, m], check=True, capture_output=True,
                                    text=True).stdout.splitlines()
        for which in ("dense", "sparse"):
            lines += subprocess.run([sys.executable, __file__, "--rss-torch", which, d],
                                    check=True, capture_output=True, text=True).stdout.splitlines()
        for line in lines:
            f = line.split()
            if f and f[0] == "RSS":
                kv = dict(x.split("=") for x in f[3:])
                res[(f[1], f[2])] = kv
    return res


# ---- report ----------------------------------------------------------------------------------

def fmt_us(v):
    return "%.1f" % v if v < 100 else "%.0f" % v


def report(samples, models, threads, batches, mem, progs, sizes):
    impls = ("nest_sparse", "nest_dense", "torch_eager", "torch_script", "torch_sparse")
    print()
    print("| model | threads | batch | nest sparse | nest dense masked | PyTorch dense eager | "
          "PyTorch dense TorchScript | torch.sparse CSR | **vs PyTorch dense** | vs torch.sparse "
          "| vs nest dense |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in models:
        for t in threads:
            for n in batches:
                med, rng = {}, {}
                for k in impls:
                    rounds = samples.get((name, k, t, n), [])
                    if not rounds:
                        continue
                    med[k] = statistics.median([v for r in rounds for v in r])
                    rm = [statistics.median(r) for r in rounds]
                    rng[k] = (min(rm), max(rm))
                if "nest_sparse" not in med:
                    continue
                unit = "us" if n == 1 else "us"
                cells = []
                for k in impls:
                    if k in med:
                        cells.append("%s %s (%s–%s)" % (fmt_us(med[k]), unit, fmt_us(rng[k][0]),
                                                         fmt_us(rng[k][1])))
                    else:
                        cells.append("–")
                s = med["nest_sparse"]
                dense = min(med.get("torch_eager", 1e30), med.get("torch_script", 1e30))
                ratios = ["**%.1fx**" % (dense / s) if dense < 1e30 else "–"]
                ratios += ["%.1fx" % (med[k] / s) if k in med else "–"
                           for k in ("torch_sparse", "nest_dense")]
                print("| %s | %d | %d | %s | %s |" % (name, t, n, " | ".join(cells),
                                                      " | ".join(ratios)))
    print()
    print("Times per call: median over all rounds (range of the per-round medians). "
          "\"vs PyTorch dense\" divides the faster of eager and TorchScript by nest sparse.")
    for p in progs:
        st = p["stats"]
        print("%s: %d active weights in the model file, %d multiplied by the sparse program "
              "(%d units removed, %d folded), %.0f FLOPs per sample." %
              (p["name"], st["source_weights"], st["nnz"], st["units_removed"],
               st["units_folded"], st["flops"]))
        print("  bytes: model.h5 %d; nest sparse program %d; the same layers dense (float32) %d; "
              "nest's dense arrays (values + masks) %d; torch.sparse CSR (int64 indices) %d" %
              (p["file_bytes"], st["model_bytes"], st["dense_bytes"], st["source_bytes"],
               sizes[p["name"]]))
        for which in ("nest_sparse", "nest_dense", "torch_dense", "torch_sparse"):  # memory
            kv = mem.get((p["name"], which))
            if kv:
                print("  resident memory, %s alone at batch 256: %.1f MiB (peak %.1f MiB; %.1f "
                      "MiB before loading)" % (which, int(kv["rss_kb"]) / 1024,
                                               int(kv["hwm_kb"]) / 1024,
                                               int(kv["before_kb"]) / 1024))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--bench", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                    "build", "bench_infer"))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", default="400,40")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--rss-torch", nargs=2, metavar=("WHICH", "DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rss_torch:
        rss_torch(a.rss_torch[1], a.rss_torch[0])
        return 0
    if not a.models:
        ap.error("give at least one model file")
    threads = [int(v) for v in a.threads.split(",")]
    batches = [int(v) for v in a.batches.split(",")]
    reps = tuple(int(v) for v in a.reps.split(","))
    torch.manual_seed(1)
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp:
        subprocess.run([a.bench, "--quiet", "--export", tmp] + a.models, check=True)
        dirs = [os.path.join(tmp, str(i)) for i in range(len(a.models))]
        progs = [load_program(d) for d in dirs]
        models, ok, sizes = [], True, {}
        for p in progs:
            td, ts = torch_dense(p), TorchSparse(p)
            fns = (("torch_eager", td), ("torch_script", torch_script(td, p)),
                   ("torch_sparse", ts))
            ok &= check(p, fns)
            models.append((p, fns))
            sizes[p["name"]] = ts.csr_bytes
        if not ok:
            print("bench_infer.py: the contenders disagree; no timing", file=sys.stderr)
            return 1
        print("threads %s, batches %s, %d rounds of %d (batch 1) / %d calls per contender and "
              "case; torch %s, %d-core %s" % (threads, batches, a.rounds, reps[0], reps[1],
                                               torch.__version__, os.cpu_count(), cpu_model()))
        samples = {}
        for r in range(a.rounds):
            t0 = time.time()
            run_c(a.bench, a.models, threads, batches, reps, samples)
            time_torch(models, threads, batches, reps, samples)
            print("round %d/%d: %.0f s" % (r + 1, a.rounds, time.time() - t0), flush=True)
        mem = {} if a.no_memory else memory(a.bench, a.models, dirs)
        report(samples, [p["name"] for p in progs], threads, batches, mem, progs, sizes)
    return 0


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"Model name:\s*(.*)", out)
        return m.group(1).strip() if m else "?"
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
