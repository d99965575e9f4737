"""Print the Keras vs PyTorch side-by-side table of docs/backbones.md (study cutoffs, 200x266).

python tools/backbone_table.py > /tmp/table.md
"""

from benchbox.plugins import load_registry
from benchbox_engine_common.networks import STUDY

registry = load_registry()
print("| network | framework | depth | cutoff | last frozen layer | params total | frozen | trainable | GMACs |")
print("|---|---|---|---|---|---|---|---|---|")
for network in STUDY:
    for fw in ("keras", "torch"):
        b = registry.get("backbone", f"{fw}/{network}")
        d = b.describe(b.defaults, (200, 266))
        print(
            f"| {network} | {fw} | {d['depth']} | {d['cutoff']} | `{d['last_frozen_layer']}` | "
            f"{d['params_total']:,} | {d['params_frozen']:,} | {d['params_trainable']:,} | {d['gmacs']} |",
            flush=True,
        )
