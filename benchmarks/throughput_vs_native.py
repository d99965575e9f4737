"""Inference throughput: `benchbox bench` vs each framework's own plain benchmark loop.

Native loops, as timm's benchmark.py and Keras users write them: PyTorch — torchvision/timm model in
eval mode under torch.inference_mode on a float 3-channel batch; Keras — keras.applications model,
predict_on_batch. Same network, batch size, input size and precision, alternating in one process.

    python benchmarks/throughput_vs_native.py --batch-sizes 1,32 --input 200x266
"""

from __future__ import annotations

import argparse

import numpy as np

from benchbox.execute.bench import Steps, bench_backbone, measure
from benchbox.plugins import load_registry


def native_torch(network, bs, h, w):
    import timm
    import torch
    import torchvision

    from benchbox_torch import NETS

    lib = NETS[network]
    model = (
        getattr(torchvision.models, lib.model)() if lib.library == "torchvision" else timm.create_model(lib.model)
    ).eval()
    x = torch.rand(bs, 3, h, w) * 2 - 1

    def step():
        with torch.inference_mode():
            model(x)

    return Steps(step=step)


def native_keras(network, bs, h, w):
    from benchbox_keras import APPS, engine

    keras = engine.import_keras()
    model = getattr(keras.applications, APPS[network].cls)(
        weights=None, include_top=False, input_shape=(h, w, 3), pooling="avg"
    )
    x = np.random.default_rng(0).uniform(-1, 1, (bs, h, w, 3)).astype("float32")
    return Steps(step=lambda: model.predict_on_batch(x))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default="torch/mobilenet_v2,keras/mobilenet_v2")
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--input", default="200x266")
    ap.add_argument("--min-seconds", type=float, default=3.0)
    args = ap.parse_args()
    h, w = (int(v) for v in args.input.split("x"))
    registry = load_registry()
    print(f"{'backbone':22s} {'batch':>5s} {'benchbox img/s':>15s} {'native img/s':>13s} {'ratio':>6s}")
    for name in args.backbones.split(","):
        b = registry.get("backbone", name)
        network = name.split("/")[1]
        for bs in (int(v) for v in args.batch_sizes.split(",")):
            ours = bench_backbone(
                b, {**b.defaults, "input_size": [h, w]}, [bs], 0, "cpu", False, False, min_seconds=args.min_seconds
            )[0]["infer_samples_per_sec"]
            steps = native_torch(network, bs, h, w) if b.framework == "torch" else native_keras(network, bs, h, w)
            native = measure(steps, bs, min_seconds=args.min_seconds)["samples_per_sec"]
            print(f"{name:22s} {bs:5d} {ours:15.1f} {native:13.1f} {ours / native:6.2f}", flush=True)


if __name__ == "__main__":
    main()
