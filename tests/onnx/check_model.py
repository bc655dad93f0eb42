"""check_model.py — validate an ONNX file with python3-onnx's checker (full check, with shape
inference) and print what the export tests assert on: opset, IR version, input / output shapes and
the metadata, then a line LABELS <nest.labels decoded, as ASCII JSON>. Run with Debian's interpreter: /usr/bin/python3 tests/onnx/check_model.py MODEL.onnx
Exit 0: valid (prints the summary); 1: invalid (the checker's message); 77: python3-onnx missing.
"""
import json
import sys

try:
    import onnx
except ImportError as e:  # the test skips with this message
    print(f"SKIP: python3-onnx is not installed ({e}); apt-get install python3-onnx", file=sys.stderr)
    sys.exit(77)


def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def main(path):
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # noqa: BLE001 - any checker failure is the result
        print(f"{path}: invalid: {e}", file=sys.stderr)
        return 1
    g = model.graph
    out = {
        "ir_version": model.ir_version,
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}",
        "inputs": {v.name: dims(v) for v in g.input},
        "outputs": {v.name: dims(v) for v in g.output},
        "ops": [n.op_type for n in g.node],
        "metadata": {p.key: p.value for p in model.metadata_props},
    }
    print(json.dumps(out, sort_keys=True))
    labels = json.loads(out["metadata"].get("nest.labels", "null"))
    print("LABELS " + json.dumps(labels, ensure_ascii=True))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: check_model.py MODEL.onnx", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
