"""Grad-CAM of a fold's PyTorch model through the `grad-cam` package (pytorch_grad_cam).

The whole network (``TrainedModel.net``: the trained weights, whether the engine trained the
suffix on cached prefix activations or not — the suffix shares its modules with ``net.base``) is
explained for the given classes. The target layer is ``net.base`` by default ("auto"): its
output is the backbone's last feature map, the one the head pools; for a timm network whose last map
is under 7x7 at the input size, "auto" takes the deepest stage that is 7x7 or more (``auto_layer``). Maps are returned at that
feature map's resolution, ReLU'd and divided by their maximum (no min subtraction, unlike the
package's display scaling, so the share of heat in a region is not skewed); benchbox upsamples
them only to draw.
"""

from __future__ import annotations

import numpy as np
import torch

from benchbox.errors import BenchboxError

INSTALL = "pip install 'benchbox[explain]'  (grad-cam)"


def _gradcam_class():
    try:
        from pytorch_grad_cam import GradCAM
    except ImportError:
        raise NotImplementedError(f"the grad-cam package is not installed: {INSTALL}") from None

    class FeatureMapGradCAM(GradCAM):
        """The package's Grad-CAM (channel weights = spatial mean of the gradients), kept at the
        target layer's resolution."""

        def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
            acts = [a.cpu().data.numpy() for a in self.activations_and_grads.activations]
            grads = [g.cpu().data.numpy() for g in self.activations_and_grads.gradients]
            if not acts or not grads:
                raise BenchboxError("Grad-CAM: the target layer produced no activation or gradient")
            cam = self.get_cam_image(input_tensor, self.target_layers[0], targets, acts[0], grads[0], eigen_smooth)
            return [np.maximum(cam, 0)[:, None]]

        def aggregate_multi_layers(self, cam_per_target_layer):
            return np.concatenate(cam_per_target_layer, axis=1).mean(axis=1)

    return FeatureMapGradCAM


#: the smallest map side "auto" looks for: a 2x3 map says little about where the heat falls
MIN_MAP_SIDE = 7


def auto_layer(net: torch.nn.Module, size: tuple[int, int]) -> tuple[str, torch.nn.Module]:
    """The layer "auto" explains: the backbone's last feature map (``net.base``), unless it is smaller than
    7x7 at this input size and the network lists stages (timm's ``feature_info``: module and stride), then
    the deepest stage whose map is 7x7 or more. (name, module)."""
    model = getattr(net.base, "model", None)
    stages = [s for s in getattr(model, "feature_info", None) or [] if isinstance(s, dict) and "reduction" in s]
    side = min(size)
    if not stages or -(-side // stages[-1]["reduction"]) >= MIN_MAP_SIDE:
        return "base", net.base
    fine = [s for s in stages if -(-side // s["reduction"]) >= MIN_MAP_SIDE]
    if not fine:
        return "base", net.base
    return f"base.model.{fine[-1]['module']}", model.get_submodule(fine[-1]["module"])


def stage_maps(net: torch.nn.Module, size: tuple[int, int]) -> list[str]:
    """ "module (h x w)" for each stage a timm network lists, at this input size: what [explain] layer may name."""
    model = getattr(net.base, "model", None)
    h, w = size
    return [
        f"base.model.{s['module']} ({-(-h // s['reduction'])}x{-(-w // s['reduction'])})"
        for s in getattr(model, "feature_info", None) or []
        if isinstance(s, dict) and "reduction" in s and "module" in s
    ]


def feature_maps(spec, options) -> list[tuple[str, tuple[int, int]]]:
    """Every module of the network ``spec`` and ``options`` build whose output is a feature map (N, C, h, w) at
    ``options["input_size"]``, as (name, (h, w)) in the order a forward pass finishes them: the names
    [explain] layer may give (``Backbone.feature_maps``). Random weights; the global RNG is left as it was."""
    from benchbox_torch.engine import build_model, images_tensor

    h, w = (int(v) for v in options["input_size"])
    with torch.random.fork_rng(devices=[]):
        net, _ = build_model(spec, {**options, "weights": "none"}, num_classes=3, seed=0)
    seen: dict[str, tuple[int, int]] = {}

    def hook(name):
        def record(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                seen.setdefault(name, (int(output.shape[-2]), int(output.shape[-1])))

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in net.named_modules() if name]
    try:
        with torch.no_grad():
            net.eval()(images_tensor(np.zeros((1, h, w), dtype=np.uint8)))
    finally:
        for handle in handles:
            handle.remove()
    return list(seen.items())


def target_layer(net: torch.nn.Module, layer: str, size: tuple[int, int] = (224, 224)) -> torch.nn.Module:
    if layer == "auto":
        return auto_layer(net, size)[1]
    try:
        return net.get_submodule(layer)
    except AttributeError:
        names = [n for n, m in net.named_modules() if n and isinstance(m, torch.nn.Conv2d)][-5:]
        raise BenchboxError(
            f'[explain] layer = {layer!r}: no such module in this network; use "auto" or a module name '
            f"such as {', '.join(names)}"
        ) from None


def explain(net: torch.nn.Module, images: np.ndarray, target_classes, layer: str = "auto", batch_size: int = 16):
    """Heat maps (N, h, w) in [0, 1] of ``net`` for uint8 images (N, H, W) or (N, H, W, 3), one per
    image for its class."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from benchbox_torch.engine import images_tensor

    cls = _gradcam_class()
    was_training = net.training
    out = []
    cam = cls(model=net, target_layers=[target_layer(net, layer, tuple(images.shape[1:3]))])
    # the gradient must reach the feature map even when the whole base is frozen
    cam.compute_input_gradient = True
    try:  # not `with cam`: the package's __exit__ prints and swallows an IndexError
        for start in range(0, len(images), batch_size):
            x = images_tensor(images[start : start + batch_size]).float()
            targets = [ClassifierOutputTarget(int(c)) for c in target_classes[start : start + batch_size]]
            out.append(np.asarray(cam(input_tensor=x, targets=targets), dtype=np.float64))
    finally:
        cam.activations_and_grads.release()
        net.zero_grad(set_to_none=True)
        net.train(was_training)
    maps = np.concatenate(out) if out else np.zeros((0, 1, 1))
    peak = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)
