"""The PyTorch engine: build backbone + cutoff + head, train on a fold, predict the other.

Model: input (N, 1, H, W) in 0..255 -> repeat to 3 channels (colour input, from a data set with
``color = "rgb"``: (N, 3, H, W) as it is; ``images_tensor``) -> the network's own ImageNet
normalisation per channel -> feature extractor (first N weight-carrying modules frozen, their BatchNorm kept
in eval mode even while training) -> global pooling -> hidden Linear+ReLU layers (Dropout between
them when there are two or more) -> Linear to the classes; softmax for probabilities.
Adam uses eps=1e-7, Keras's default, so both frameworks train with the same optimiser; its fused
kernel (about 3x faster than the per-tensor loop on the CPU) matters once the frozen prefix is cached
and only the suffix trains.

Device and precision (``training.device``, ``training.precision``): "auto" trains on CUDA when
PyTorch sees a GPU, else on the CPU. On CUDA the network and its inputs use the channels-last
memory format, host arrays are pinned and copied without blocking; "mixed" autocasts to float16
with a GradScaler on CUDA, to bfloat16 on the CPU. Probabilities come back as float64 on the host.
On the CPU in fp32 nothing moves and the numbers are those of the plain CPU code.

No per-fold rebuild: a cell's model (and its fx split for the prefix cache) is built once and, for
each fold, reset to exactly the state a fresh build with that fold's seed would have (``MODELS``).
``BENCHBOX_REBUILD_EACH_FOLD=1`` builds every fold afresh instead (benchmarks/fold_overhead.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchbox.contracts import FoldJob, balanced_class_weights
from benchbox.errors import BenchboxError, WeightsError
from benchbox_engine_common.fold_engine import FoldEngine, FoldInputs, ModelCache, TrainedModel, options_fingerprint
from benchbox_engine_common.freeze import frozen_count
from benchbox_engine_common.networks import BN_MOMENTUM, check_weights_file, weights_kind
from benchbox_engine_common.prefix_cache import CACHE, cache_key, fallback_reason, job_ids
from benchbox_torch import NETS, keras_layers, keras_weighted_layers

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_BN = nn.modules.batchnorm._BatchNorm


# --- device and precision ------------------------------------------------------------------
def resolve_device(device: str, who: str = "torch") -> torch.device:
    """training.device as a torch device: "auto" is CUDA when PyTorch sees a GPU, else the CPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise BenchboxError(f'{who}: training.device = {device!r}; use "auto", "cpu" or "cuda"')
    if device == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise BenchboxError(
            f'{who}: training.device = "cuda", but PyTorch sees no CUDA device (torch {torch.__version__}, '
            f'{build}). Set training.device = "auto" (a GPU where there is one) or "cpu" in the suite, or '
            "install a CUDA build of PyTorch on a machine with an NVIDIA GPU"
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class Runtime:
    """Where and how a fold computes: the device, mixed precision or not, the memory format."""

    device: torch.device
    mixed: bool = False

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def channels_last(self) -> bool:
        return self.cuda

    @property
    def precision(self) -> str:
        return "mixed" if self.mixed else "fp32"

    @property
    def amp_dtype(self) -> torch.dtype:
        return torch.float16 if self.cuda else torch.bfloat16

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.mixed else nullcontext()

    def put(self, t: torch.Tensor) -> torch.Tensor:
        """A host tensor on the device: pinned and copied without blocking; 4-d ones channels-last."""
        if not self.cuda:
            return t
        if t.device.type == "cpu":
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t

    def prepare_net(self, net: nn.Module) -> nn.Module:
        if not self.cuda:
            return net
        return net.to(self.device, memory_format=torch.channels_last)

    def scope(self):
        """Nothing to enter: tensors and modules are placed explicitly (``put``, ``prepare_net``)."""
        return nullcontext()

    def info(self) -> dict:
        return {
            "device": str(self.device) if not self.cuda else f"cuda:{self.device.index or 0}",
            "precision": self.precision,
            "autocast_dtype": str(self.amp_dtype).removeprefix("torch.") if self.mixed else None,
            "channels_last": self.channels_last,
            "gpu": torch.cuda.get_device_name(self.device) if self.cuda else None,
        }


CPU_FP32 = Runtime(torch.device("cpu"))


def runtime(training, who: str = "torch") -> Runtime:
    precision = getattr(training, "precision", "fp32")
    if precision not in ("fp32", "mixed"):
        raise BenchboxError(f'{who}: training.precision = {precision!r}; use "fp32" or "mixed"')
    return Runtime(resolve_device(getattr(training, "device", "auto"), who), precision == "mixed")


def weight_units(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Weight-carrying modules in definition order; a SeparableConv2d counts as one."""
    out = []

    def walk(mod, prefix):
        if type(mod).__name__ == "SeparableConv2d" or any(True for _ in mod.parameters(recurse=False)):
            out.append((prefix, mod))
            if type(mod).__name__ == "SeparableConv2d":
                return
        for name, child in mod.named_children():
            walk(child, f"{prefix}.{name}" if prefix else name)

    walk(module, "")
    return out


class TimmFeatures(nn.Module):
    """A timm model used up to its last feature map."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_features(x)


def images_tensor(x: np.ndarray) -> torch.Tensor:
    """uint8 images as the network's input tensor: grayscale (N, H, W) -> (N, 1, H, W), colour
    (N, H, W, 3) -> (N, 3, H, W) (contiguous; channels-last on CUDA is ``Runtime.put``'s job)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2).contiguous()


#: ITU-R 601 luma, as Pillow's convert("L"): colour input to a 1-channel network (TorchXRayVision)
LUMA = (0.299, 0.587, 0.114)


class BenchboxNet(nn.Module):
    """Input (N, 1, H, W) uint8 -> ``channels`` copies -> /255 -> (x - mean) / std -> base -> head.
    Colour input (N, 3, H, W) goes in as it is (each channel with its own mean and std); to a
    1-channel network (TorchXRayVision's) as its luma, rounded as the grayscale loader's."""

    def __init__(self, base: nn.Module, head: nn.Module, mean, std, frozen_bn: list[nn.Module]):
        super().__init__()
        self.base, self.head = base, head
        self.channels = len(mean)  # 3 for ImageNet networks, 1 for TorchXRayVision's
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, self.channels, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, self.channels, 1, 1))
        self._frozen_bn = frozen_bn

    def normalize(self, x):
        if x.shape[1] == 3 and self.channels == 1:
            luma = torch.tensor(LUMA, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
            x = (x.float() * luma).sum(dim=1, keepdim=True).round()
        x = x.float().expand(-1, self.channels, -1, -1) / 255.0
        return (x - self.mean) / self.std

    def features(self, x):
        return self.base(self.normalize(x))

    def forward(self, x):
        return self.head(self.features(x))

    def train(self, mode: bool = True):
        super().train(mode)
        for bn in self._frozen_bn:  # frozen BatchNorm keeps its ImageNet statistics
            bn.eval()
        return self


# --- weights ----------------------------------------------------------------------------
def _torchvision_weights(network):
    import torchvision

    return torchvision.models.get_model_weights(NETS[network].model).IMAGENET1K_V1


def _timm_hub_id(network):
    import timm

    cfg = timm.models.get_pretrained_cfg(NETS[network].model)
    return cfg.hf_hub_id or f"timm/{NETS[network].model}"


def imagenet_location(network) -> tuple[str, str]:
    """(where the framework caches the file, where it downloads it from)."""
    if NETS[network].library == "torchvision":
        url = _torchvision_weights(network).url
        return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url)), url
    hub_id = _timm_hub_id(network)
    from huggingface_hub import constants

    return (
        os.path.join(constants.HF_HUB_CACHE, "models--" + hub_id.replace("/", "--")),
        f"https://huggingface.co/{hub_id}",
    )


def ensure_weights(network: str, options) -> None:
    kind = weights_kind(options["weights"])
    if kind == "none":
        return
    if kind == "file":
        check_weights_file(f"torch/{network}", options["weights"], lambda: build_model(network, options, 2, 0))
        return
    cached, url = imagenet_location(network)
    try:
        if NETS[network].library == "torchvision":
            if not os.path.exists(cached):
                torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True)
        else:
            import timm

            timm.create_model(NETS[network].model, pretrained=True)
    except Exception as exc:
        raise WeightsError(
            f"torch/{network}: ImageNet weights are not in the cache and could not be downloaded "
            f"({type(exc).__name__}: {str(exc)[:200]}).\n"
            f"    {NETS[network].library} looks in: {cached}\n"
            f"    It downloads from: {url}\n"
            f"    To fix: on a machine with a network run `benchbox weights fetch torch/{network}` and copy the "
            f'cache over; or, in the suite\'s [backbones.*] table, set weights = "none" (random '
            f'initialisation) or weights = "/path/to/weights.safetensors" (or a .pth state dict).'
        ) from None


def load_state_dict_file(path: str) -> dict:
    """A state dict from .safetensors or a torch file, never executing code (weights_only)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd) if isinstance(sd, dict) else sd


def _load_error(exc: Exception) -> str:
    """What is wrong with a weights file, without torch.load's advice to load it unsafely."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        rest = [line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines() if line.strip()]
        detail = rest[0] if rest else ""
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        detail = lines[0] if lines and "weights_only" not in lines[0] else ""
    return "not a PyTorch state dict or .safetensors file" + (f" ({detail})" if detail else f" ({type(exc).__name__})")


def load_weights_file(network: str | NetSpec, net: BenchboxNet, path: str) -> None:
    """A whole benchbox model's state dict, or the original network's (classifier ignored)."""
    spec = network if isinstance(network, NetSpec) else None
    name = spec.name if spec else f"torch/{network}"
    try:
        sd = load_state_dict_file(path)
    except Exception as exc:
        raise WeightsError(
            f"{name}: cannot read weights file {path}: {_load_error(exc)}. Give a "
            ".safetensors file or a state dict saved with torch.save (files that would run code when loaded "
            "are refused)"
        ) from None
    if not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd):
        raise WeightsError(
            f"{name}: weights file {path} holds a {type(sd).__name__}, not a state dict "
            "(a mapping of tensor names to tensors)"
        )
    if any(k.startswith("head.") for k in sd) and any(k.startswith("base.") for k in sd):
        try:
            net.load_state_dict(sd, strict=True)
            return
        except RuntimeError as exc:
            raise WeightsError(f"{name}: {path} is a benchbox model of another configuration: {exc}") from None
    base_sd = net.base.state_dict()
    prefixes = spec.key_prefixes if spec else ("features.",) if NETS[network].library == "torchvision" else ("model.",)
    mapped = {}
    for key, value in sd.items():
        for candidate in (key, key.removeprefix("features."), *(prefix + key for prefix in prefixes)):
            if candidate in base_sd:
                mapped[candidate] = value
                break
    missing = [k for k in base_sd if k not in mapped]
    if missing:
        raise WeightsError(
            f"{name}: {path} does not fit the network: {len(missing)} of "
            f"{len(base_sd)} tensors missing (e.g. {missing[:3]})"
        )
    net.base.load_state_dict(mapped, strict=True)


def save_weights(net: BenchboxNet, path) -> None:
    """Save a whole benchbox model (load again with weights = PATH)."""
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    else:
        torch.save(net.state_dict(), path)


# --- building ---------------------------------------------------------------------------
@dataclass
class NetSpec:
    """How to build one network as a benchbox model: the study's five (``study_spec``) and every
    family member (``benchbox_torch.family_nets``) go through the same ``build_model``."""

    name: str  # "torch/vgg19", "timm/resnet18": named in messages
    #: pretrained? -> (feature extractor mapping (N, C, H, W) to a feature map, mean, std); mean and
    #: std are per input channel, applied after scaling to [0, 1] (their length is the channel count)
    make_base: Callable[[bool], tuple[nn.Module, tuple, tuple]]
    #: names of the weight-carrying modules, input first (as ``unit_names`` shows them) -> how many to freeze
    frozen_count: Callable[[list[str]], int]
    #: everything the frozen prefix's output depends on, given the number of frozen units and the seed
    cache_key: Callable[[int, int], tuple]
    #: why prefix caching cannot apply, given the number of frozen units and the training settings
    fallback: Callable[[int, object], str | None]
    weights_kind: Callable[[str], str] = weights_kind  # "none", "file" or a kind of downloadable weights
    strip: str = ""  # a wrapper's prefix removed from module names shown to users ("model.")
    key_prefixes: tuple[str, ...] = ()  # where a plain network's state-dict keys sit inside ``base``

    def unit_names(self, units) -> list[str]:
        return [name.removeprefix(self.strip) for name, _ in units]


def study_spec(network: str, options) -> NetSpec:
    """One of the study's five networks: the Keras cutoff mapped by weight-carrying layers."""
    cutoff = int(options["cutoff"])
    depth = len(keras_layers(network))
    if cutoff > depth:
        raise BenchboxError(
            f"torch/{network}: cutoff {cutoff} is beyond the network's depth of {depth} "
            f"Keras layers; choose cutoff <= {depth}"
        )
    torchvision_net = NETS[network].library == "torchvision"
    return NetSpec(
        name=f"torch/{network}",
        make_base=lambda pretrained: _base(network, options, pretrained),
        frozen_count=lambda units: keras_weighted_layers(network, cutoff),
        cache_key=lambda n_frozen, seed: cache_key("torch", network, options, seed),
        fallback=lambda n_frozen, training: fallback_reason(options, training),
        key_prefixes=("features.",) if torchvision_net else ("model.",),
    )


def as_spec(network: str | NetSpec, options) -> NetSpec:
    return network if isinstance(network, NetSpec) else study_spec(network, options)


def _base(network: str, options, pretrained: bool):
    net = NETS[network]
    if net.library == "torchvision":
        import torchvision

        kwargs = {"weights": _torchvision_weights(network) if pretrained else None}
        if network == "mobilenet_v2":
            kwargs["width_mult"] = float(options.get("alpha", 1.0))
        model = getattr(torchvision.models, net.model)(**kwargs)
        return model.features, IMAGENET_MEAN, IMAGENET_STD
    import timm

    model = timm.create_model(net.model, pretrained=pretrained, num_classes=0, global_pool="")
    return TimmFeatures(model), tuple(model.pretrained_cfg["mean"]), tuple(model.pretrained_cfg["std"])


def freeze_units(units, n_frozen: int) -> list[nn.Module]:
    """Stop the gradients of the first ``n_frozen`` units; return the BatchNorm layers among them.

    A unit's own parameters freeze (a SeparableConv2d's all), not those of modules inside it that
    are units themselves (e.g. a timm VisionTransformer holds pos_embed and, further down, every block)."""
    frozen_bn = []
    for _, mod in units[:n_frozen]:
        whole = type(mod).__name__ == "SeparableConv2d"
        for p in mod.parameters(recurse=whole):
            p.requires_grad_(False)
        frozen_bn += [m for m in (mod.modules() if whole else [mod]) if isinstance(m, _BN)]
    return frozen_bn


def _construct(spec: NetSpec, options, num_classes: int, seed: int, channels: int | None = None):
    """The seeded steps of a build, in a fixed order (the global RNG ends where a build leaves it):
    (net, units, frozen count, feature channels). ``channels`` known: no probe forward."""
    torch.manual_seed(seed)
    kind = spec.weights_kind(options["weights"])
    base, mean, std = spec.make_base(kind not in ("none", "file"))
    units = weight_units(base)
    n_frozen = spec.frozen_count(spec.unit_names(units))
    frozen_bn = freeze_units(units, n_frozen)
    for m in base.modules():  # the same running-average speed as the Keras engine (BN_MOMENTUM)
        if isinstance(m, _BN):
            m.momentum = BN_MOMENTUM
    if channels is None:
        h, w = (int(v) for v in options["input_size"])
        with torch.no_grad():
            base.eval()
            channels = base(torch.zeros(1, len(mean), h, w)).shape[1]
    layers = [nn.AdaptiveAvgPool2d(1) if options["pooling"] == "avg" else nn.AdaptiveMaxPool2d(1), nn.Flatten()]
    head = list(options["head"])
    width = channels
    for i, units_ in enumerate(head):
        layers += [nn.Linear(width, units_), nn.ReLU()]
        if len(head) >= 2 and i < len(head) - 1:
            layers.append(nn.Dropout(float(options["dropout"])))
        width = units_
    layers.append(nn.Linear(width, num_classes))
    net = BenchboxNet(base, nn.Sequential(*layers), mean, std, frozen_bn)
    if kind == "file":
        load_weights_file(spec, net, os.path.expanduser(options["weights"]))
    return net, units, n_frozen, channels


def build_model(network: str | NetSpec, options, num_classes: int, seed: int) -> tuple[BenchboxNet, dict]:
    """A study network by name (its cutoff from ``options``) or any network a NetSpec describes."""
    spec = as_spec(network, options)
    net, units, n_frozen, _ = _construct(spec, options, num_classes, seed)
    names = spec.unit_names(units)
    info = {
        "frozen_units": n_frozen,
        "units": len(units),
        "last_frozen_layer": names[n_frozen - 1] if n_frozen else "(none)",
        **parameter_counts(net),
    }
    return net, info


def parameter_counts(net: nn.Module) -> dict:
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return {"params_total": int(total), "params_trainable": int(trainable), "params_frozen": int(total - trainable)}


# --- frozen-prefix caching ---------------------------------------------------------------
class _Tracer(torch.fx.Tracer):
    """Keeps weight-carrying modules (and every BatchNorm, whatever its class) as leaves, so
    their training/eval behaviour is decided at run time, not frozen into the traced graph."""

    def is_leaf_module(self, m, qualname):
        return (
            super().is_leaf_module(m, qualname)
            or isinstance(m, _BN)
            or type(m).__name__ == "SeparableConv2d"
            or getattr(m, "fx_leaf", False)  # a foundation encoder (foundation_nets.Encoder): one module
            or any(True for _ in m.parameters(recurse=False))
        )


def split_prefix(base: nn.Module):
    """(prefix, suffix) GraphModules sharing base's modules: the prefix computes everything that
    needs no trainable module; the suffix takes its boundary tensors. None when nothing is frozen."""
    tracer = _Tracer()
    graph = tracer.trace(base)
    gm = torch.fx.GraphModule(tracer.root, graph)

    def trainable(node):
        if node.op == "call_module":
            return any(p.requires_grad for p in gm.get_submodule(node.target).parameters())
        if node.op == "get_attr":
            value = getattr(gm, node.target, None) if "." not in node.target else gm.get_parameter(node.target)
            return isinstance(value, nn.Parameter) and value.requires_grad
        return False

    prefix = set()
    for node in graph.nodes:
        if node.op == "output":
            continue
        if node.op == "placeholder" or (not trainable(node) and all(a in prefix for a in node.all_input_nodes)):
            prefix.add(node)
    boundary = [n for n in graph.nodes if n in prefix and any(u not in prefix for u in n.users)]
    if not boundary or all(n.op == "placeholder" for n in boundary):
        return None
    pg, env = torch.fx.Graph(), {}
    for node in graph.nodes:
        if node in prefix:
            env[node] = pg.node_copy(node, lambda n: env[n])
    pg.output(tuple(env[n] for n in boundary))
    sg, env = torch.fx.Graph(), {}
    for i, node in enumerate(boundary):
        env[node] = sg.placeholder(f"boundary_{i}")
    for node in graph.nodes:
        if node not in prefix:
            env[node] = sg.node_copy(node, lambda n: env[n])
    return torch.fx.GraphModule(gm, pg), torch.fx.GraphModule(gm, sg)


class SuffixNet(nn.Module):
    """The trainable part of a BenchboxNet, fed with cached prefix activations."""

    def __init__(self, suffix: nn.Module, net: BenchboxNet):
        super().__init__()
        self.suffix, self.head, self._frozen_bn = suffix, net.head, net._frozen_bn

    def forward(self, *boundary):
        return self.head(self.suffix(*boundary))

    def train(self, mode: bool = True):
        super().train(mode)
        for bn in self._frozen_bn:
            bn.eval()
        return self


@torch.no_grad()
def prefix_activations(
    net: BenchboxNet, prefix: nn.Module, x: np.ndarray, batch_size: int, rt: Runtime = CPU_FP32
) -> list[np.ndarray]:
    """The prefix's boundary tensors for uint8 images, computed on the fold's device (autocast when
    mixed), as float32: numpy arrays on the CPU; on a GPU they stay there, channels-last (a host
    round trip of a large early boundary, e.g. MobileNet v2's 32x100x133 per image, cost more than
    the whole training of a fold)."""
    prefix.eval()
    xs = images_tensor(x)
    parts = []
    for i in range(0, len(xs), batch_size):
        with rt.autocast():
            outs = prefix(net.normalize(rt.put(xs[i : i + batch_size])))
        parts.append([t.float() for t in outs])
    if not rt.cuda:
        return [np.concatenate([p[k].numpy() for p in parts]) for k in range(len(parts[0]))]
    return [rt.put(torch.cat([p[k] for p in parts])) for k in range(len(parts[0]))]


def cached_inputs(spec: NetSpec, net, job, n_frozen: int, split=None, rt: Runtime = CPU_FP32):
    """The trainable suffix and the cached prefix activations of the fold's train and test images, or
    the reason why not (a string). ``split``: the model's (prefix, suffix), when already made."""
    if split is None:
        split = make_split(net)
    if isinstance(split, str):
        return split
    prefix, suffix = split
    train_ids, test_ids = job_ids(job)
    key = (*spec.cache_key(n_frozen, job.seed), rt.device.type, rt.precision)
    if job.channels == 3:  # the same image ids may be loaded gray or RGB (color option): other activations
        key += ("rgb",)
    t0 = time.perf_counter()
    ids = train_ids + test_ids
    cached = CACHE.get(key, ids)
    status = "hit"
    if cached is None:
        cached = prefix_activations(net, prefix, np.concatenate([job.x_train, job.x_test]), job.training.batch_size, rt)
        CACHE.put(key, ids, cached)
        status = "computed"
    n = len(train_ids)
    as_tensor = (lambda a: a) if rt.cuda else (lambda a: torch.from_numpy(np.ascontiguousarray(a)))  # noqa: E731
    train_inputs = [rt.put(as_tensor(a[:n])) for a in cached]
    test_inputs = [rt.put(as_tensor(a[n:])) for a in cached]
    info = {
        "prefix_cache": status,
        "prefix_seconds": time.perf_counter() - t0,
        "prefix_boundary": [list(a.shape[1:]) for a in cached],
    }
    return FoldInputs(SuffixNet(suffix, net), train_inputs, test_inputs, info)


def make_split(net: BenchboxNet):
    """split_prefix of the net's base, or why there is none (a string)."""
    try:
        split = split_prefix(net.base)
    except Exception as exc:  # e.g. data-dependent control flow torch.fx cannot trace (some timm models)
        return f"torch.fx cannot trace the network ({type(exc).__name__})"
    return "no frozen module precedes the trainable ones" if split is None else split


# --- training ---------------------------------------------------------------------------
def augment_batch(xb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 5% (zero fill), per image."""
    n, _, h, w = xb.shape
    flip = torch.rand(n, generator=generator) < 0.5
    xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
    out = torch.zeros_like(xb)
    dy = torch.randint(-(h // 20), h // 20 + 1, (n,), generator=generator)
    dx = torch.randint(-(w // 20), w // 20 + 1, (n,), generator=generator)
    for i in range(n):
        sy, sx = int(dy[i]), int(dx[i])
        out[i, :, max(sy, 0) : h + min(sy, 0), max(sx, 0) : w + min(sx, 0)] = xb[
            i, :, max(-sy, 0) : h + min(-sy, 0), max(-sx, 0) : w + min(-sx, 0)
        ]
    return out


def _num_outputs(net: nn.Module) -> int:
    return [m for m in net.head.modules() if isinstance(m, nn.Linear)][-1].out_features


def adam(params, learning_rate: float) -> torch.optim.Adam:
    """Adam with Keras's epsilon; the fused kernel where the parameters' device supports it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=learning_rate, eps=1e-7, fused=True)
    except RuntimeError:  # a device or dtype without a fused kernel
        return torch.optim.Adam(params, lr=learning_rate, eps=1e-7)


def train(net: nn.Module, inputs, y: np.ndarray, training, seed: int, progress=None, rt: Runtime = CPU_FP32) -> float:
    """Adam on the trainable parameters; ``inputs`` is the uint8 image array, or a list of
    tensors (cached prefix activations) fed to ``net`` as positional arguments. The data sit on
    the fold's device for the whole loop, except with augmentation on a GPU: batches are then
    augmented on the host (the same random stream as on the CPU) and copied over one by one.
    Returns the seconds spent in the training steps (the device synchronised at the end)."""
    if isinstance(inputs, np.ndarray):
        inputs = [images_tensor(inputs)]
    augment_on_host = training.augment and rt.cuda
    if not augment_on_host:
        inputs = [rt.put(t) for t in inputs]
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = adam(params, training.learning_rate)
    ys = rt.put(torch.from_numpy(np.array(y, dtype=np.int64)))  # a copy: y may be a read-only view
    weight = None
    if getattr(training, "class_weight", "none") == "balanced":
        k = _num_outputs(net)
        weight = rt.put(torch.tensor(balanced_class_weights(y, k), dtype=torch.float32))
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    scaler = torch.amp.GradScaler("cuda") if rt.mixed and rt.cuda else None  # float16 needs loss scaling
    generator = torch.Generator().manual_seed(seed)
    bs = training.batch_size
    net.train()
    t0 = time.perf_counter()
    for epoch in range(training.epochs):
        order = torch.randperm(len(ys), generator=generator)
        device_order = order.to(rt.device, non_blocking=True) if rt.cuda else order
        for start in range(0, len(ys), bs):
            idx = device_order[start : start + bs]
            if augment_on_host:
                batch = [rt.put(augment_batch(inputs[0][order[start : start + bs]], generator))]
            else:
                batch = [t[idx] for t in inputs]
                if training.augment:
                    batch = [augment_batch(batch[0], generator)]
            optimizer.zero_grad(set_to_none=True)
            with rt.autocast():
                loss = loss_fn(net(*batch), ys[idx])
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
        if progress:
            progress(epoch + 1, training.epochs)
    if rt.cuda:
        torch.cuda.synchronize(rt.device)
    return time.perf_counter() - t0


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.double(), dim=1)


@torch.no_grad()
def predict_from(trainer: nn.Module, inputs: list, batch_size: int, rt: Runtime = CPU_FP32) -> np.ndarray:
    """Class probabilities from cached prefix activations (on the fold's device)."""
    trainer.eval()
    n = len(inputs[0])
    out = []
    for i in range(0, n, batch_size):
        with rt.autocast():
            logits = trainer(*[t[i : i + batch_size] for t in inputs])
        out.append(_probabilities(logits))
    return torch.cat(out).cpu().numpy()


@torch.no_grad()
def predict(net: BenchboxNet, x: np.ndarray, batch_size: int, rt: Runtime = CPU_FP32) -> np.ndarray:
    net.eval()
    xs = rt.put(images_tensor(x))
    out = []
    for i in range(0, len(xs), batch_size):
        with rt.autocast():
            logits = net(xs[i : i + batch_size])
        out.append(_probabilities(logits))
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, net.head[-1].out_features))


# --- the fold lifecycle's PyTorch steps (the lifecycle itself: benchbox_engine_common.fold_engine) ------
@dataclass
class _Built:
    """A cell's model, built once: the network on its device, its fx split, what a build reports."""

    net: BenchboxNet
    info: dict
    channels: int
    split: object = None  # (prefix, suffix), or why there is none (str); None until asked for
    generation: int = 0  # folds trained so far; a TrainedModel of an earlier fold is stale


def _num_features(net: BenchboxNet) -> int:
    return [m for m in net.head.modules() if isinstance(m, nn.Linear)][0].in_features


#: one per process, like the prefix cache; two models (a new cell's model replaces the one before last)
MODELS = ModelCache(size=2)


def count_gmacs(net: BenchboxNet, h: int, w: int) -> float | None:
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 1, h, w))
    return round(counter.get_total_flops() / 2 / 1e9, 3)


class TorchEngine(FoldEngine):
    """A fold through PyTorch: the target is a ``NetSpec`` (a study network's name becomes one)."""

    name = "torch"

    def models(self) -> ModelCache:
        return MODELS

    def runtime(self, spec: NetSpec, job: FoldJob) -> Runtime:
        return runtime(job.training, spec.name)

    def cache_key(self, spec: NetSpec, job: FoldJob, rt: Runtime) -> tuple:
        """The name, options, class count and device (augmentation and learning rate live in ``train``)."""
        text, stamp = options_fingerprint(job.options, spec.weights_kind)
        return (spec.name, text, stamp, int(job.num_classes), str(rt.device), rt.channels_last)

    def build(self, spec: NetSpec, job: FoldJob, rt: Runtime) -> _Built:
        net, info = build_model(spec, job.options, job.num_classes, job.seed)
        return _Built(rt.prepare_net(net), info, _num_features(net))

    def reset(self, built: _Built, spec: NetSpec, job: FoldJob, rt: Runtime) -> bool:
        """The same seeded construction as a build, without its probe forward; its state replaces the model's."""
        fresh, _, _, _ = _construct(spec, job.options, job.num_classes, job.seed, channels=built.channels)
        built.net.load_state_dict(fresh.state_dict())
        for p in built.net.parameters():
            p.grad = None
        return True

    def cached_inputs(self, spec: NetSpec, built: _Built, job: FoldJob, rt: Runtime) -> FoldInputs | str:
        n_frozen = built.info["frozen_units"]
        reason = spec.fallback(n_frozen, job.training)
        if reason is not None:
            return reason
        if built.split is None:
            built.split = make_split(built.net)
        return cached_inputs(spec, built.net, job, n_frozen, built.split, rt)

    def whole_inputs(self, built: _Built, job: FoldJob) -> FoldInputs:
        return FoldInputs(built.net, job.x_train)

    def train(self, trainer, inputs, job: FoldJob, rt: Runtime) -> dict:
        return {"train_loop_seconds": train(trainer, inputs, job.y_train, job.training, job.seed, job.progress, rt)}

    def whole_net(self, built: _Built) -> BenchboxNet:
        return built.net

    def predict(self, model: TrainedModel, images: np.ndarray, cached: bool) -> tuple[np.ndarray, dict]:
        """Cached activations give the same numbers as the whole network (tests/test_speed.py)."""
        t0 = time.perf_counter()
        if cached:
            out = predict_from(model.trainer, model.test_inputs, model.batch_size, model.rt)
        else:
            out = predict(model.net, images, model.batch_size, model.rt)
        return out, {"predict_loop_seconds": time.perf_counter() - t0}

    def network_facts(self, network: str, options) -> dict:
        net, info = build_model(network, {**options, "weights": "none"}, num_classes=3, seed=0)
        h, w = (int(v) for v in options["input_size"])
        lib = NETS[network]
        return {
            "model": f"{lib.library} {lib.model}",
            "depth": f"{info['units']} weight-carrying modules ({len(keras_layers(network))} Keras layers)",
            "cutoff": int(options["cutoff"]),
            "last_frozen_layer": info["last_frozen_layer"],
            "frozen_modules": f"{info['frozen_units']} of {info['units']}",
            **parameter_counts(net),
            "input_size": [h, w],
            "preprocessing": "grayscale x3 (RGB as is), /255, "
            f"mean {tuple(round(float(v), 3) for v in net.mean.flatten())}, "
            f"std {tuple(round(float(v), 3) for v in net.std.flatten())}",
            "gmacs": count_gmacs(net, h, w),
        }

    def gpu_problem(self) -> str | None:
        return None if torch.cuda.is_available() else "torch: --device cuda, but no CUDA device is visible"

    def bench_model(self, network, options, batch_size, device, amp, channels_last, train):
        """Inference (inference_mode) or training (forward, backward, Adam step); CUDA synchronised
        before every clock read; AMP autocasts to float16 (CUDA) or bfloat16."""
        net, info = build_model(network, options, 3, seed=0)
        h, w = (int(v) for v in options["input_size"])
        gmacs = count_gmacs(net, h, w)
        net = net.to(device)
        x = torch.randint(0, 255, (batch_size, 1, h, w), dtype=torch.uint8, device=device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.arange(batch_size, device=device) % 3
        dtype = torch.float16 if device == "cuda" else torch.bfloat16
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        if train:
            optimizer = adam([p for p in net.parameters() if p.requires_grad], 1e-3)
            scaler = torch.amp.GradScaler(device, enabled=amp and device == "cuda")
            net.train()

            def step():
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device, dtype=dtype, enabled=amp):
                    loss = nn.functional.cross_entropy(net(x), y)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
        else:
            net.eval()

            def step():
                with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=amp):
                    net(x)

        return step, sync, info["params_total"], gmacs


ENGINE = TorchEngine()
check_current, predict_images, bench_steps = ENGINE.check_current, ENGINE.predict_images, ENGINE.bench_steps


def fit(network: str | NetSpec, job: FoldJob) -> TrainedModel:
    """A fold of a study network (by name) or of any network a NetSpec describes."""
    return ENGINE.fit(as_spec(network, job.options), job)


def describe(network: str, options) -> dict:
    """What `benchbox backbones describe` shows for a study network."""
    return ENGINE.describe(network, options)


def prefix_cache_fallback(options):
    """Why a family network's frozen prefix is not cached (None: it is), for ``NetSpec.fallback``."""

    def fallback(n_frozen, training):
        if not options.get("cache_prefix", True):
            return "cache_prefix = false in the suite"
        if getattr(training, "augment", False):
            return "augmentation changes the prefix's input every epoch"
        return None if n_frozen else 'freeze = "none": nothing is frozen'

    return fallback


def family_spec(
    name: str,
    options,
    freeze,
    kind_of: Callable[[str], str],
    make_base: Callable[[bool], tuple[nn.Module, tuple, tuple]],
    weights_identity: Callable[[], object],
    strip: str = "model.",
    key_prefixes: tuple[str, ...] = ("model.",),
) -> NetSpec:
    """The NetSpec of a family network (timm, txv, hf, open_clip): frozen by its parsed ``freeze`` setting,
    its frozen prefix cached under the network, freeze setting, frozen units, ``weights_identity()`` (read
    when the key is made: a weights file may change) and input size, and the seed too for random weights."""
    h, w = (int(v) for v in options["input_size"])

    def cache_key(n_frozen, seed):
        key = ("torch", name, f"freeze={freeze}", n_frozen, weights_identity(), (h, w))
        return key + (seed,) if kind_of(options["weights"]) == "none" else key

    return NetSpec(
        name=name,
        make_base=make_base,
        frozen_count=lambda units: frozen_count(freeze, units, name),
        cache_key=cache_key,
        fallback=prefix_cache_fallback(options),
        weights_kind=kind_of,
        strip=strip,
        key_prefixes=key_prefixes,
    )
