"""PyTorch backbones: the study's five networks from torchvision (VGG19, MobileNet v2) and timm
(Inception v3, Xception, Inception-ResNet v2); and two backbone families (families.py): every
timm model as timm/<model>, and TorchXRayVision's chest-X-ray networks as txv/<weights>.

Keras cutoffs count Keras layers. Here a cutoff is mapped by counting *weight-carrying* layers:
the first ``cutoff`` Keras layers hold N convolutions / batch norms / dense layers (from
keras_layers.json), and the first N weight-carrying modules of the PyTorch network are frozen
(a timm SeparableConv2d counts as one, as Keras's SeparableConv2D does). The five networks have
exactly as many weight-carrying modules in both frameworks (16, 104, 188, 80, 448), so the
mapping is one to one; see docs/backbones.md.

Importing this module does not import PyTorch; engine.py does, when a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchbox import hookimpl
from benchbox.contracts import Availability
from benchbox_engine_common.networks import NetworkBackbone, keras_layers
from benchbox_torch.backbone import EngineBackbone

INSTALL = "pip install 'benchbox[torch]'  (torch, torchvision, timm)"


@dataclass(frozen=True)
class TorchNet:
    library: str  # "torchvision" | "timm"
    model: str  # constructor name in that library


NETS = {
    "vgg19": TorchNet("torchvision", "vgg19"),
    "mobilenet_v2": TorchNet("torchvision", "mobilenet_v2"),
    "inception_v3": TorchNet("timm", "inception_v3"),
    "xception": TorchNet("timm", "legacy_xception"),
    "inception_resnet_v2": TorchNet("timm", "inception_resnet_v2"),
}


def keras_weighted_layers(network: str, cutoff: int) -> int:
    """How many weight-carrying layers the first ``cutoff`` Keras layers hold."""
    return sum(flag for _, _, flag in keras_layers(network)[:cutoff])


class TorchBackbone(EngineBackbone, NetworkBackbone):
    framework = "torch"

    def __init__(self, network: str):
        self.network = network
        super().__init__()
        net = NETS[network]
        self.description = f"{net.library} {net.model}, Keras cutoff mapped by weight-carrying layers"

    def availability(self):
        modules = ("torch", "torchvision") + (("timm",) if NETS[self.network].library == "timm" else ())
        return Availability.needs_modules(*modules, install=INSTALL)

    def check_options(self, options):
        problems = super().check_options(options)
        depth = len(keras_layers(self.network))
        cutoff = options.get("cutoff")
        if isinstance(cutoff, int) and cutoff > depth:
            problems.append(f"cutoff: {cutoff} is beyond the depth of {self.network} ({depth} Keras layers)")
        if self.network == "mobilenet_v2" and options.get("alpha", 1.0) != 1.0:
            problems.append(
                "alpha: torchvision's MobileNet v2 takes width_mult; only 1.0 has ImageNet weights "
                "and only 1.0 is supported here (use keras/mobilenet_v2 for alpha 0.35)"
            )
        return problems

    def prepare(self, options):
        from benchbox_torch import engine

        engine.ensure_weights(self.network, options)

    def spec(self, options):
        from benchbox_torch import engine

        return engine.as_spec(self.network, options)

    def embed_identity(self, options):
        from benchbox_torch import embed

        return embed.identity(f"torch/{self.network}", options)

    def bench_steps(self, options, batch_size, device, amp, channels_last, train):
        from benchbox_torch import engine

        return engine.bench_steps(self.network, options, batch_size, device, amp, channels_last, train)

    def describe(self, options, input_size):
        from benchbox_torch import engine

        return engine.describe(self.network, {**options, "input_size": list(input_size)})


@hookimpl
def benchbox_backbones():
    return [TorchBackbone(network) for network in NETS]


@hookimpl
def benchbox_backbone_families():
    """timm/<model> for every model timm lists, txv/<weights> for TorchXRayVision's (families.py);
    hf/<repo-or-dir> and open_clip/<name>, the foundation encoders (foundation.py)."""
    from benchbox_torch.families import TimmFamily, TxvFamily
    from benchbox_torch.foundation import HfFamily, OpenClipFamily

    return [TimmFamily(), TxvFamily(), HfFamily(), OpenClipFamily()]
