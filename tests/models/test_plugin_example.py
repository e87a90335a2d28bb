"""The plugin example follows its own advice: the README's ``tiny_ae.py`` and the test
package it documents keep torch out of the module's top level (the plugin probe describes
them without loading torch) and build the same 19,139-parameter model. No install needed:
each module is imported from its file in a child process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils import REPO

FIXTURE = REPO / "tests" / "models" / "plugins" / "tiny_ae" / "tiny_ae.py"


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    found = re.search(r"```python\n# tiny_ae\.py\n(.*?)```", text, re.S)
    assert found is not None, "the README's tiny_ae.py example"
    return found.group(1)


PROBE = """
import sys
sys.path.insert(0, {folder!r})
import tiny_ae
print("torch at import:", "torch" in sys.modules)
import torch
model = tiny_ae.build(16)
x = torch.rand(2, 3, 32, 32)
z = model.encode(x)
print("params:", sum(p.numel() for p in model.parameters()), tuple(z.shape),
      tuple(model.decode(z).shape), tiny_ae.build.default_latent_dim)
"""


@pytest.mark.parametrize("source", ["readme", "fixture"])
def test_the_example_plugin_keeps_torch_out_of_its_top_level(source: str,
                                                              tmp_path: Path) -> None:
    code = _readme_example() if source == "readme" else FIXTURE.read_text()
    (tmp_path / "tiny_ae.py").write_text(code)
    done = subprocess.run([sys.executable, "-c", PROBE.format(folder=str(tmp_path))],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "torch at import: False", "params: 19139 (2, 16) (2, 3, 32, 32) 16"]
