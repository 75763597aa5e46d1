"""Patch a module when it is imported, not before: the fixes in llm_bridge.verl_fixes, llm_bridge.gpu_support and
llm_bridge.phase_profile load into every process of a run, and most of those processes never import most of what
they patch."""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_PENDING: dict[str, list] = {}  # module name -> patches waiting for its import, in the order they were asked for


def when_imported(name: str, patch) -> None:
    """Run patch(module) once module `name` is imported (at once if it already is): the module is not imported
    here, where most verl processes (SFT ranks, rollout and reward workers) never need it."""
    if name in sys.modules:
        patch(sys.modules[name])
        return
    if name in _PENDING:
        _PENDING[name].append(patch)
        return
    _PENDING[name] = [patch]

    class PatchOnImport(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            if spec is None or spec.loader is None:
                return None  # not installed (or another version without it): the import fails as it would have
            exec_module = spec.loader.exec_module

            def exec_and_patch(module):
                exec_module(module)
                for each in _PENDING.pop(fullname):
                    each(module)

            spec.loader.exec_module = exec_and_patch
            return spec

    sys.meta_path.insert(0, PatchOnImport())
