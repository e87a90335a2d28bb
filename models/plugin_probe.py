"""``python -m models.plugin_probe``: load every installed aelab entry point in this
(child) process and print, as the last line, what each is — its facts, or the one-line
error it fails with. The API reads it through ``models.plugins.described`` and so never
imports a plugin (nor the torch a plugin imports) itself.
"""

from __future__ import annotations

import json
from typing import Any

from models.catalog import describe_variant_plugin
from models.datasets import describe_dataset_plugin
from models.plugins import (
    DATASETS_GROUP,
    GROUPS,
    PROBE_MARKER,
    VARIANTS_GROUP,
    PluginUnavailable,
    installed,
    load,
    one_line,
)

DESCRIBERS = {VARIANTS_GROUP: describe_variant_plugin, DATASETS_GROUP: describe_dataset_plugin}


def probe() -> list[dict[str, Any]]:
    report = []
    for group in GROUPS:
        for entry in installed(group):
            row: dict[str, Any] = {"group": group, "name": entry.name, "target": entry.target}
            try:
                row["facts"] = DESCRIBERS[group](entry.name, load(entry))
            except PluginUnavailable as exc:  # the import failed: its own error, one line
                row["error"] = one_line(exc.__cause__ or exc)
            except Exception as exc:  # loaded, but not what the group asks for
                row["error"] = one_line(exc)
            report.append(row)
    return report


if __name__ == "__main__":
    print("\n" + PROBE_MARKER + json.dumps(probe()), flush=True)
