"""Build hook: generate csi_linstor/_gen from proto/csi.proto for every wheel and editable build."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class ProtoBuildHook(BuildHookInterface):
    PLUGIN_NAME = "csi-proto"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        spec = importlib.util.spec_from_file_location("gen_proto", root / "tools" / "gen_proto.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for path in module.generate(root):
            build_data["artifacts"].append(str(path.relative_to(root)))
