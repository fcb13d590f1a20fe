"""Kubernetes volumes of a processor, honoured locally as a pod would honour them.

A ``persistentVolumeClaim`` volume is a local directory: ``$TRELLIS_HOME/volumes/<claim>``
by default, or the one ``TRELLIS_VOLUMES=claim=dir,...`` names. A ``hostPath`` volume is
that path; an ``emptyDir`` a fresh directory per step. Each volume mount is bind-mounted at
its ``mount_path`` in the step's own mount namespace (see ``_step.py``).

Pure code: reads no files except the existence checks of :func:`resolve_mounts`.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = ["describe_volumes", "parse_volume_map", "resolve_mounts", "VolumeError"]


class VolumeError(ValueError):
    """A volume or volume mount that cannot be honoured."""


def _field(obj: Any, snake: str, camel: Optional[str] = None) -> Any:
    """A field of a kubernetes.client model object or of its dict (API or snake_case) form."""
    if isinstance(obj, Mapping):
        if snake in obj:
            return obj[snake]
        return obj.get(camel) if camel else None
    return getattr(obj, snake, None)


_SUPPORTED = ("persistent_volume_claim", "host_path", "empty_dir")
_OTHER_KINDS = ("config_map", "secret", "nfs", "csi", "projected", "downward_api", "ephemeral", "iscsi",
                "aws_elastic_block_store", "gce_persistent_disk", "azure_disk", "azure_file", "cephfs", "rbd",
                "glusterfs", "fc", "flex_volume", "flocker", "git_repo", "image", "photon_persistent_disk",
                "portworx_volume", "quobyte", "scale_io", "storageos", "vsphere_volume", "cinder")


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def describe_volumes(volumes: Optional[Sequence[Any]], volume_mounts: Optional[Sequence[Any]]) -> List[Dict[str, Any]]:
    """Checks ``volumes``/``volume_mounts`` (``kubernetes.client.models`` objects or dicts) and
    returns one plain dict per mount: ``volume``, ``kind``, ``claim``/``path``, ``mount_path``,
    ``sub_path``, ``read_only``. Raises :class:`VolumeError` for what a pod would reject or
    what Trellis cannot provide."""
    by_name: Dict[str, Dict[str, Any]] = {}
    for v in volumes or []:
        name = _field(v, "name")
        if not name or not isinstance(name, str):
            raise VolumeError("a volume has no name: %r" % (v,))
        if name in by_name:
            raise VolumeError("two volumes are named %r" % name)
        kinds = [k for k in _SUPPORTED if _field(v, k, _camel(k)) is not None]
        others = [k for k in _OTHER_KINDS if _field(v, k, _camel(k)) is not None]
        if others:
            raise VolumeError("volume %r is a %s volume; Trellis runs PersistentVolumeClaim, hostPath and emptyDir "
                              "volumes locally" % (name, _camel(others[0])))
        if len(kinds) != 1:
            raise VolumeError("volume %r must have exactly one of persistentVolumeClaim, hostPath, emptyDir" % name)
        kind = kinds[0]
        src = _field(v, kind, _camel(kind))
        d: Dict[str, Any] = {"volume": name, "kind": _camel(kind)}
        if kind == "persistent_volume_claim":
            claim = _field(src, "claim_name", "claimName")
            if not claim:
                raise VolumeError("volume %r: persistentVolumeClaim needs claim_name" % name)
            d["claim"] = str(claim)
            d["read_only"] = bool(_field(src, "read_only", "readOnly") or False)
        elif kind == "host_path":
            path = _field(src, "path")
            if not path or not posixpath.isabs(path):
                raise VolumeError("volume %r: hostPath needs an absolute path" % name)
            d["path"] = posixpath.normpath(path)
            d["read_only"] = False
        else:
            d["read_only"] = False
        by_name[name] = d
    out: List[Dict[str, Any]] = []
    targets = set()
    for m in volume_mounts or []:
        name = _field(m, "name")
        mount_path = _field(m, "mount_path", "mountPath")
        if not name or name not in by_name:
            raise VolumeError("volume mount %r names no volume of the processor (volumes: %s)"
                              % (name, ", ".join(sorted(by_name)) or "none"))
        if not mount_path or not isinstance(mount_path, str) or not posixpath.isabs(mount_path):
            raise VolumeError("volume mount of %r: mount_path must be an absolute path, not %r" % (name, mount_path))
        target = posixpath.normpath(mount_path)
        if target == "/":
            raise VolumeError("volume mount of %r: cannot mount over /" % name)
        if target in targets:
            raise VolumeError("two volume mounts at %s" % target)
        targets.add(target)
        sub_path = _field(m, "sub_path", "subPath") or ""
        if sub_path and (posixpath.isabs(sub_path) or ".." in sub_path.split("/")):
            raise VolumeError("volume mount of %r: sub_path %r must be relative, without '..'" % (name, sub_path))
        read_only = bool(_field(m, "read_only", "readOnly") or False) or by_name[name]["read_only"]
        out.append(dict(by_name[name], mount_path=target, sub_path=sub_path, read_only=read_only))
    return out


def parse_volume_map(text: Optional[str]) -> Dict[str, str]:
    """``TRELLIS_VOLUMES="claim=/dir,other=/dir2"`` -> ``{"claim": "/dir", ...}``."""
    out: Dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        claim, sep, directory = part.partition("=")
        if not sep or not claim.strip() or not directory.strip():
            raise VolumeError("TRELLIS_VOLUMES: %r is not claim=directory" % part)
        out[claim.strip()] = os.path.abspath(os.path.expanduser(directory.strip()))
    return out


def resolve_mounts(mounts: Sequence[Mapping[str, Any]], home: str, volume_map: Mapping[str, str],
                   empty_dir: str) -> List[Dict[str, Any]]:
    """The host directory behind each described mount: ``[{"source", "target", "read_only",
    "volume"}]``. Raises :class:`VolumeError` when a claim's or host path's directory does
    not exist (a pod would not start either). ``empty_dir`` is the step's directory for
    emptyDir volumes (created here)."""
    out: List[Dict[str, Any]] = []
    for m in mounts:
        if m["kind"] == "persistentVolumeClaim":
            claim = m["claim"]
            if claim in volume_map:
                base, how = volume_map[claim], "TRELLIS_VOLUMES maps it to"
            else:
                base, how = os.path.join(home, "volumes", claim), "its directory would be"
            if not os.path.isdir(base):
                raise VolumeError(
                    "PersistentVolumeClaim %r (volume %r) has no directory: %s %s, which does not exist; create it "
                    "or map the claim with TRELLIS_VOLUMES=%s=/some/dir" % (claim, m["volume"], how, base, claim))
        elif m["kind"] == "hostPath":
            base = m["path"]
            if not os.path.exists(base):
                raise VolumeError("hostPath %s (volume %r) does not exist" % (base, m["volume"]))
        else:
            base = os.path.join(empty_dir, m["volume"])
            os.makedirs(base, exist_ok=True)
        source = os.path.join(base, m["sub_path"]) if m.get("sub_path") else base
        if m.get("sub_path"):
            os.makedirs(source, exist_ok=True)  # as the kubelet does for a missing subPath
        out.append({"source": os.path.realpath(source), "target": m["mount_path"],
                    "read_only": bool(m["read_only"]), "volume": m["volume"]})
    return out


def pod_objects(items: Optional[Sequence[Any]]) -> List[Dict[str, Any]]:
    """``volumes`` or ``volume_mounts`` as a pod spec writes them (camelCase dicts):
    ``kubernetes.client.models`` objects through the client's own serializer; dicts with
    snake_case keys (as the models' ``to_dict()`` gives) camel-cased, recursively."""
    out: List[Dict[str, Any]] = []
    for item in items or []:
        if isinstance(item, dict):
            out.append(_camel_keys(item))
            continue
        try:
            from kubernetes.client import ApiClient  # type: ignore[import-not-found]
        except ImportError:
            raise VolumeError("%r is not a dict and the kubernetes package is not installed" % (item,)) from None
        out.append(ApiClient().sanitize_for_serialization(item))
    return out


def _camel_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel(k) if isinstance(k, str) else k: _camel_keys(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    return value
