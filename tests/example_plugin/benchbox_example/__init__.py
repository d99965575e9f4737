"""A third party's benchbox plugin: a tiny PyTorch CNN backbone, one backbone whose framework is not
installed (listed as unavailable without breaking the others), a logistic-regression probe, a
backbone that sleeps in predict (the harness must time it), an evaluator that adds a metric
(balanced accuracy) the core has never heard of, and (strategies.py) a split strategy, an output
format and a tracker."""

import time

import numpy as np

from benchbox import hookimpl
from benchbox.contracts import Availability, Backbone, Evaluator, MetricSpec
from benchbox_example.strategies import JsonLines, LeaveOneSourceOut, Yaml


class TinyCNN(Backbone):
    name = "example/tiny_cnn"
    framework = "torch"
    description = "two conv layers and a linear head (example plugin)"
    defaults = {"input_size": [32, 32], "weights": "none", "channels": 8}

    def availability(self):
        return Availability.needs_modules("torch", install="pip install torch")

    def check_options(self, options):
        return [] if options["channels"] > 0 else ["channels: must be positive"]

    def fit(self, job):
        import torch
        from torch import nn

        torch.manual_seed(job.seed)
        c = job.options["channels"]
        net = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c, c, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c, job.num_classes),
        )
        x = torch.from_numpy(job.x_train).float().unsqueeze(1) / 255
        y = torch.from_numpy(job.y_train)
        opt = torch.optim.Adam(net.parameters(), lr=job.training.learning_rate)
        g = torch.Generator().manual_seed(job.seed)
        for _ in range(job.training.epochs):
            for idx in torch.randperm(len(x), generator=g).split(job.training.batch_size):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
                opt.step()
        return net

    def predict(self, model, images, ids=None):
        import torch

        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(images).float().unsqueeze(1) / 255).double(), 1).numpy()

    def info(self, model):
        n = sum(p.numel() for p in model.parameters())
        return {"params_total": n, "params_trainable": n, "params_frozen": 0}


class Flaky(TinyCNN):
    """Raises on any fold whose test set holds ``fail_on_id``; counts its attempts in a file."""

    name = "example/flaky"
    defaults = {**TinyCNN.defaults, "fail_on_id": "", "attempts_file": ""}

    def fit(self, job):
        if job.options["attempts_file"]:
            with open(job.options["attempts_file"], "a") as f:
                f.write(",".join(job.test_ids or []) + "\n")
        if job.options["fail_on_id"] and any(i.endswith(job.options["fail_on_id"]) for i in job.test_ids or []):
            raise RuntimeError(f"planted failure on {job.options['fail_on_id']}")
        return super().fit(job)


class PixelLogReg(Backbone):
    """Logistic regression on raw pixels: a linear probe that finds any fixed-position signal."""

    name = "example/pixel_logreg"
    framework = "sklearn"
    description = "logistic regression on raw pixels (example plugin, a shortcut detector)"
    defaults = {"input_size": [32, 40], "weights": "none", "C": 1.0}

    def fit(self, job):
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(max_iter=3000, C=job.options["C"])
        clf.fit(job.x_train.reshape(len(job.x_train), -1) / 255.0, job.y_train)
        return clf, job.num_classes

    def predict(self, model, images, ids=None):
        clf, num_classes = model
        probs = np.zeros((len(images), num_classes))
        probs[:, clf.classes_] = clf.predict_proba(images.reshape(len(images), -1) / 255.0)
        return probs


class Sleepy(PixelLogReg):
    """Sleeps ``predict_sleep`` seconds per predict call and claims to be fast: the harness's
    throughput must show the sleep."""

    name = "example/sleepy"
    defaults = {**PixelLogReg.defaults, "predict_sleep": 0.2}

    def predict(self, model, images, ids=None):
        time.sleep(self.defaults["predict_sleep"] if not hasattr(self, "_sleep") else self._sleep)
        return super().predict(model, images, ids)

    def fit(self, job):
        self._sleep = job.options["predict_sleep"]
        return super().fit(job)

    def info(self, model):
        return {"claimed_images_per_sec": 1e9}


class NeedsJax(Backbone):
    name = "example/needs_jax"
    framework = "jax"
    description = "needs a framework that is not installed"
    defaults = {"input_size": [32, 32], "weights": "none"}

    def availability(self):
        return Availability.needs_modules(
            "jax_is_not_installed_here", install="pip install benchbox-example-plugin[jax]"
        )


class BalancedAccuracy(Evaluator):
    """A metric the core does not know: mean recall over the classes present, pooled and per fold."""

    name = "example-balanced"
    description = "balanced accuracy (example plugin)"
    metrics = (MetricSpec("balanced_accuracy", "Balanced accuracy", scale=100, unit="%", plot=True),)

    @staticmethod
    def _score(y, p):
        recalls = [np.mean(p[y == c] == c) for c in np.unique(y)]
        return float(np.mean(recalls))

    def evaluate(self, records, classes, positive_class):
        y = np.concatenate([r.y_true for r in records])
        p = np.concatenate([r.predicted for r in records])
        folds = [self._score(r.y_true, r.predicted) for r in records]
        return {
            "balanced_accuracy": self._score(y, p),
            "balanced_accuracy_folds": folds,
            "balanced_accuracy_fold_std": float(np.std(folds, ddof=1)) if len(folds) > 1 else float("nan"),
        }


@hookimpl
def benchbox_backbones():
    return [TinyCNN(), Flaky(), PixelLogReg(), Sleepy(), NeedsJax()]


@hookimpl
def benchbox_evaluators():
    return [BalancedAccuracy()]


@hookimpl
def benchbox_split_strategies():
    return [LeaveOneSourceOut()]


@hookimpl
def benchbox_output_formats():
    return [Yaml()]


@hookimpl
def benchbox_trackers():
    return [JsonLines()]
