"""The Fluid SDK model names notebooks use (``from fluid import models``).

Plain data classes with the SDK's field names, for the objects a DataFlow is made of: what
``make_processor_from_func`` returns (:class:`Processor` holding a :class:`ScriptProcessor`)
and the DataProcess operations a flow run consists of. Trellis builds its flow model from
them; nothing here talks to Kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["ScriptProcessor", "Processor", "TargetDatasetWithMountPath", "OperationRef", "DataProcessSpec",
           "DataProcess", "ObjectMeta"]


@dataclass
class ScriptProcessor:
    """A processor running ``command`` on ``source`` in ``image:image_tag``."""

    command: Optional[List[str]] = None
    source: Optional[str] = None
    image: Optional[str] = None
    image_tag: Optional[str] = None
    image_pull_policy: Optional[str] = None
    env: Optional[List[Any]] = None
    volumes: Optional[List[Any]] = None
    volume_mounts: Optional[List[Any]] = None
    resources: Optional[Any] = None
    restart_policy: Optional[str] = None


@dataclass
class Processor:
    """What a DataProcess runs: a :class:`ScriptProcessor` (``job`` is not supported locally)."""

    script: Optional[ScriptProcessor] = None
    job: Optional[Any] = None
    pod_metadata: Optional[Any] = None
    service_account_name: Optional[str] = None
    #: What Trellis runs for it (set by ``make_processor_from_func``).
    trellis_step: Optional[Any] = field(default=None, repr=False, compare=False)


@dataclass
class TargetDatasetWithMountPath:
    name: str
    namespace: str
    mount_path: str
    sub_path: Optional[str] = None


@dataclass
class OperationRef:
    kind: str
    name: str
    namespace: Optional[str] = None
    api_version: Optional[str] = None
    affinity_strategy: Optional[Any] = None


@dataclass
class ObjectMeta:
    name: str
    namespace: str
    labels: Dict[str, str] = field(default_factory=dict)


@dataclass
class DataProcessSpec:
    dataset: TargetDatasetWithMountPath
    processor: Processor
    run_after: Optional[OperationRef] = None
    ttl_seconds_after_finished: Optional[int] = None


@dataclass
class DataProcess:
    metadata: ObjectMeta
    spec: DataProcessSpec
    api_version: str = "data.fluid.io/v1alpha1"
    kind: str = "DataProcess"
