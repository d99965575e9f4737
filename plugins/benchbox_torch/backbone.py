"""What every PyTorch backbone does the same way once it knows its network (a ``NetSpec``): hand the
fold to the engine, predict, synchronise the GPU, report, explain and embed. The study's networks
(``TorchBackbone``) and the family members (``timm/``, ``txv/``) differ only in ``spec`` and ``prepare``."""

from __future__ import annotations

from benchbox.contracts import Backbone


class EngineBackbone(Backbone):
    framework = "torch"

    def spec(self, options):
        """The engine's description of the network these options build (``benchbox_torch.engine.NetSpec``)."""
        raise NotImplementedError

    def fit(self, job):
        from benchbox_torch import engine

        return engine.fit(self.spec(job.options), job)

    def predict(self, model, images, ids=None):
        from benchbox_torch import engine

        return engine.predict_images(model, images, ids)

    def synchronize(self, model):
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def info(self, model):
        return dict(model.info)

    def explain(self, model, images, target_classes, layer="auto"):
        from benchbox_torch import gradcam  # the whole net, even when a suffix trained on cached activations

        return gradcam.explain(model.net, images, target_classes, layer, model.batch_size)

    def feature_maps(self, options):
        from benchbox_torch import gradcam

        return gradcam.feature_maps(self.spec(options), options)

    def embed(self, images, options, training=None):
        from benchbox_torch import embed

        return embed.embed(self.spec(options), options, images, training)
