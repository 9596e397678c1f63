"""Without the compiled extension DEEM still works, on the PyTorch twins, after one clear warning."""
import os
import subprocess
import sys

SCRIPT = r"""
import sys, warnings
sys.modules["deem._C"] = None  # make `from . import _C` fail as a missing build would
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import numpy as np
    from deem import DEEM, ops
    from deem.datasets import dawid_skene
    X, y = dawid_skene(n_samples=300, n_classifiers=6, n_classes=3, random_state=0)
    model = DEEM(epochs=2, cd_k=1, sampler_steps=2, random_state=0, device="cpu").fit(X)
    acc = float(np.mean(model.predict(X) == y))
ours = [w for w in caught if "deem._C" in str(w.message)]
print(ops.HAS_EXTENSION, len(ours), ours[0].category.__name__ if ours else None, acc > 0.6)
"""


def test_missing_extension_warns_once_and_falls_back():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "1", "RuntimeWarning", "True"]
