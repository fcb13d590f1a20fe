"""``make_processor_from_func``: a Python function as a DataFlow processor.

As in Fluid's SDK the function's source is taken with :func:`inspect.getsource`, so it must
be self-contained (imports inside it) and defined in a file or a notebook cell. Trellis
writes that source to a file the step runs; it never passes through a shell.
"""

from __future__ import annotations

import ast
import inspect
import logging
import os
import sys
import textwrap
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from ... import flow as _flow
from .. import _packages, _volumes, models

__all__ = ["make_processor_from_func", "FunctionStep"]

logger = logging.getLogger("fluidsdk")

ENTRY = "_trellis_fluid_entry"


@dataclass
class FunctionStep:
    """What a processor made from a function runs as a Trellis step."""

    function_name: str
    entry: str                        # the function the step calls (the function, or ENTRY with params)
    file_text: str                    # the step's Python file
    inputs: List[str]                 # object names its source reads (string literals)
    outputs: List[str]                # object names its source writes
    mounts: List[Dict[str, Any]]      # described volume mounts (see _volumes.describe_volumes)
    env: Dict[str, str] = field(default_factory=dict)
    debug: bool = False
    interpreter: str = sys.executable
    # What the step's pod gets on a Kubernetes target (see StepPod in the flow model).
    image: str = "python:3.10"
    packages: List[str] = field(default_factory=list)
    pip_index_url: Optional[str] = None
    pod_volumes: List[Dict[str, Any]] = field(default_factory=list)
    pod_volume_mounts: List[Dict[str, Any]] = field(default_factory=list)

    def kubernetes(self) -> Dict[str, Any]:
        """The step's ``kubernetes:`` additions in the flow model's shape."""
        out: Dict[str, Any] = {"image": self.image}
        if self.packages:
            out["packages"] = list(self.packages)
            if self.pip_index_url:
                out["pip_index_url"] = self.pip_index_url
        if self.pod_volumes:
            out["volumes"] = self.pod_volumes
        if self.pod_volume_mounts:
            out["volume_mounts"] = self.pod_volume_mounts
        return out


def _function_source(func: Callable[..., Any]) -> str:
    if not callable(func):
        raise ValueError("make_processor_from_func needs a function, not %r" % (func,))
    name = getattr(func, "__name__", None)
    if name == "<lambda>":
        raise ValueError("a processor needs a function defined with def: a lambda has no source of its own to ship "
                         "to the step")
    if inspect.isbuiltin(func) or not inspect.isfunction(func):
        raise ValueError("a processor needs a Python function defined with def, not %r (%s): the step runs the "
                         "function's source" % (func, type(func).__name__))
    if func.__code__.co_freevars:
        raise ValueError("function %s uses variables of an enclosing function (%s); a step runs its source alone: "
                         "pass them with process_func_params or define it at module level"
                         % (name, ", ".join(func.__code__.co_freevars)))
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError) as e:
        raise ValueError("cannot read the source of function %s (%s): define it in a file or a notebook cell"
                         % (name, e)) from None
    return textwrap.dedent(source)


def _params_call(func: Callable[..., Any], name: str, params: Optional[Dict[str, Any]]) -> Optional[str]:
    """Source of a no-argument entry calling ``name(**params)``; None when no params are needed."""
    sig = inspect.signature(func)
    required = [p.name for p in sig.parameters.values()
                if p.default is inspect.Parameter.empty
                and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if params is None:
        if required:
            raise ValueError("function %s takes %s: pass process_func_params={...}" % (name, ", ".join(required)))
        return None
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ValueError("process_func_params must be a dict of argument names to values")
    try:
        sig.bind(**params)
    except TypeError as e:
        raise ValueError("process_func_params do not fit %s%s: %s" % (name, sig, e)) from None
    literal = repr(params)
    try:
        same = ast.literal_eval(literal) == params
    except (ValueError, SyntaxError):
        same = False
    if not same:
        raise ValueError("process_func_params must be Python literals (numbers, strings, lists, dicts, ...): "
                         "the step receives them as source text")
    return "\n\ndef %s():\n    return %s(**%s)\n" % (ENTRY, name, literal)


def _kubernetes_target() -> bool:
    """Whether ``$TRELLIS_TARGET`` sends steps to a cluster (ClientConfig's default target)."""
    return os.environ.get("TRELLIS_TARGET", "").lower() in ("kubernetes", "k8s", "cluster")


def _env(env: Optional[Sequence[Any]]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for e in env or []:
        get = (lambda k, e=e: e.get(k)) if isinstance(e, dict) else (lambda k, e=e: getattr(e, k, None))
        name = get("name")
        if get("value_from") is not None or get("valueFrom") is not None:
            raise ValueError("env %r: value_from is not supported locally; give a value" % name)
        if not name:
            raise ValueError("an env entry has no name: %r" % (e,))
        out[str(name)] = "" if get("value") is None else str(get("value"))
    return out


def _split_image(image: str) -> "tuple[str, Optional[str]]":
    head, sep, tag = image.rpartition(":")
    if sep and "/" not in tag:
        return head, tag
    return image, None


_SCRIPT_FIELDS = ("volumes", "volume_mounts", "env", "resources", "restart_policy", "image_pull_policy")


def make_processor_from_func(process_func: Callable[..., Any], process_func_params: Optional[Dict[str, Any]] = None,
                             packages_to_install: Optional[Sequence[str]] = None,
                             pip_index_url: str = "https://pypi.org/simple", base_image: str = "python:3.10",
                             debug_mode: bool = False, **kwargs: Any) -> models.Processor:
    """A processor running ``process_func`` (with ``process_func_params``) as a step.

    ``packages_to_install`` is checked against the step's Python environment (this
    interpreter's): a package that is missing raises :class:`PackageNotInstalled` naming
    it; one installed in another version warns (:class:`PackageVersionWarning`). Nothing is
    installed, so ``pip_index_url`` is not used. ``volumes``/``volume_mounts``
    (``kubernetes.client.models`` objects or dicts) are mounted for the step as a pod would
    mount them; ``env`` (``V1EnvVar``) is its environment; ``base_image``, ``resources``,
    ``restart_policy`` and ``image_pull_policy`` are kept on the model for a cluster target.
    """
    unknown = sorted(set(kwargs) - set(_SCRIPT_FIELDS))
    if unknown:
        raise TypeError("make_processor_from_func() got unexpected keyword argument(s) %s (script processor fields: "
                        "%s)" % (", ".join(unknown), ", ".join(_SCRIPT_FIELDS)))
    source = _function_source(process_func)
    name = process_func.__name__
    wrapper = _params_call(process_func, name, process_func_params)
    mounts = _volumes.describe_volumes(kwargs.get("volumes"), kwargs.get("volume_mounts"))
    env = _env(kwargs.get("env"))
    if isinstance(packages_to_install, str):
        raise ValueError("packages_to_install must be a list of requirements, not a string")
    # On a Kubernetes target the step's pod installs them; only a local step needs them here.
    if packages_to_install is not None and not _kubernetes_target():
        reqs = [_packages.parse_requirement(r) for r in packages_to_install]
        versions_by_key = _packages.installed_versions([r.name for r in reqs], sys.executable)
        errors, warns = _packages.check_requirements(
            list(packages_to_install), versions_by_key, "the step environment (%s)" % sys.executable)
        if errors:
            raise _packages.PackageNotInstalled("processor %s: %s" % (name, "; ".join(errors)))
        for w in warns:
            warnings.warn("processor %s: %s" % (name, w), _packages.PackageVersionWarning, stacklevel=2)
        logger.debug("processor %s: packages_to_install found in %s (pip_index_url %s is not used: steps run in "
                     "the environment set up beforehand)", name, sys.executable, pip_index_url)
    inputs, outputs = _flow.infer_names(source)
    file_text = "# processor %s, generated by trellis.fluid from %s\n\n%s%s" % (
        name, inspect.getsourcefile(process_func), source, wrapper or "")
    image, tag = _split_image(base_image)
    script = models.ScriptProcessor(
        command=["python3"], source=file_text, image=image, image_tag=tag,
        image_pull_policy=kwargs.get("image_pull_policy"), env=kwargs.get("env"), volumes=kwargs.get("volumes"),
        volume_mounts=kwargs.get("volume_mounts"), resources=kwargs.get("resources"),
        restart_policy=kwargs.get("restart_policy"))
    step = FunctionStep(function_name=name, entry=ENTRY if wrapper else name, file_text=file_text, inputs=inputs,
                        outputs=outputs, mounts=mounts, env=env, debug=bool(debug_mode), image=base_image,
                        packages=[str(p) for p in packages_to_install or []], pip_index_url=pip_index_url,
                        pod_volumes=_volumes.pod_objects(kwargs.get("volumes")),
                        pod_volume_mounts=_volumes.pod_objects(kwargs.get("volume_mounts")))
    return models.Processor(script=script, trellis_step=step)
