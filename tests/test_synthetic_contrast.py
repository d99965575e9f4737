"""The synthetic set's ``lesion_contrast`` option: brighter lesions when asked, the default set unchanged."""

import numpy as np

from plugins.benchbox_synthetic import SyntheticXrays


def _sample(**extra):
    ds = SyntheticXrays()
    return ds.samples({**ds.defaults, "images": 12, "patients": 6, **extra}, 7, None)


def test_default_contrast_keeps_pixels_and_fingerprint():
    plain, explicit = _sample(), _sample(lesion_contrast=1.0)
    assert "lesion_contrast" not in plain.fingerprint
    assert plain.fingerprint == explicit.fingerprint
    assert np.array_equal(plain.load(plain.table, (32, 40)), explicit.load(explicit.table, (32, 40)))


def test_higher_contrast_brightens_only_the_diseased_lungs():
    plain, bright = _sample(), _sample(lesion_contrast=3.0)
    assert "lesion_contrast=3" in bright.fingerprint and bright.fingerprint != plain.fingerprint
    a, b = plain.load(plain.table, (64, 80)).astype(float), bright.load(bright.table, (64, 80)).astype(float)
    labels = np.array(plain.table["label"].tolist())
    gain = (b - a).mean(axis=(1, 2))
    assert np.all(gain[labels == "normal"] == 0)
    assert np.all(gain[labels != "normal"] > 1.0)  # grey levels, averaged over the whole image


def test_contrast_out_of_range_is_reported():
    ds = SyntheticXrays()
    problems = ds.check_options({**ds.defaults, "lesion_contrast": 0})
    assert any("lesion_contrast" in p for p in problems)
