"""A third party's benchbox plugin: a tiny PyTorch CNN backbone, and one backbone whose framework
is not installed (to show that it is listed as unavailable without breaking the others)."""

import time

import numpy as np

from benchbox import hookimpl
from benchbox.contracts import Availability, Backbone, FoldOutput


class TinyCNN(Backbone):
    name = "example/tiny_cnn"
    framework = "torch"
    description = "two conv layers and a linear head (example plugin)"
    defaults = {"input_size": [32, 32], "weights": "none", "channels": 8}

    def availability(self):
        return Availability.needs_modules("torch", install="pip install torch")

    def check_options(self, options):
        return [] if options["channels"] > 0 else ["channels: must be positive"]

    def fit_predict(self, job):
        import torch
        from torch import nn

        torch.manual_seed(job.seed)
        c = job.options["channels"]
        net = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(c, job.num_classes))
        x = torch.from_numpy(job.x_train).float().unsqueeze(1) / 255
        y = torch.from_numpy(job.y_train)
        opt = torch.optim.Adam(net.parameters(), lr=job.training.learning_rate)
        g = torch.Generator().manual_seed(job.seed)
        t0 = time.perf_counter()
        for _ in range(job.training.epochs):
            for idx in torch.randperm(len(x), generator=g).split(job.training.batch_size):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
                opt.step()
        t1 = time.perf_counter()
        with torch.no_grad():
            probs = torch.softmax(net(torch.from_numpy(job.x_test).float().unsqueeze(1) / 255).double(), 1)
        n = sum(p.numel() for p in net.parameters())
        return FoldOutput(probabilities=probs.numpy(), train_seconds=t1 - t0, predict_seconds=time.perf_counter() - t1,
                          info={"params_total": n, "params_trainable": n, "params_frozen": 0})


class Flaky(TinyCNN):
    """Raises on any fold whose test set holds ``fail_on_id``; counts its attempts in a file."""

    name = "example/flaky"
    defaults = {**TinyCNN.defaults, "fail_on_id": "", "attempts_file": ""}

    def fit_predict(self, job):
        if job.options["attempts_file"]:
            with open(job.options["attempts_file"], "a") as f:
                f.write(",".join(job.test_ids or []) + "\n")
        if job.options["fail_on_id"] in (job.test_ids or []):
            raise RuntimeError(f"planted failure on {job.options['fail_on_id']}")
        return super().fit_predict(job)


class PixelLogReg(Backbone):
    """Logistic regression on raw pixels: a linear probe that finds any fixed-position signal."""

    name = "example/pixel_logreg"
    framework = "sklearn"
    description = "logistic regression on raw pixels (example plugin, a shortcut detector)"
    defaults = {"input_size": [32, 40], "weights": "none", "C": 1.0}

    def fit_predict(self, job):
        from sklearn.linear_model import LogisticRegression

        t0 = time.perf_counter()
        clf = LogisticRegression(max_iter=3000, C=job.options["C"])
        clf.fit(job.x_train.reshape(len(job.x_train), -1) / 255.0, job.y_train)
        t1 = time.perf_counter()
        probs = np.zeros((len(job.x_test), job.num_classes))
        probs[:, clf.classes_] = clf.predict_proba(job.x_test.reshape(len(job.x_test), -1) / 255.0)
        return FoldOutput(probabilities=probs, train_seconds=t1 - t0, predict_seconds=time.perf_counter() - t1)


class NeedsJax(Backbone):
    name = "example/needs_jax"
    framework = "jax"
    description = "needs a framework that is not installed"
    defaults = {"input_size": [32, 32], "weights": "none"}

    def availability(self):
        return Availability.needs_modules("jax_is_not_installed_here", install="pip install benchbox-example-plugin[jax]")


@hookimpl
def benchbox_backbones():
    return [TinyCNN(), Flaky(), PixelLogReg(), NeedsJax()]
