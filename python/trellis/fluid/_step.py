#!/usr/bin/env python3
"""A trellis.fluid step: gives the processor its volumes and the dataset as a pod would see
them, then runs its function.

    python3 trellis_fluid_step.py STEP.json

trellis.fluid writes this file (standard library only) next to a run's flow and makes every
step of the run a command step running it. In order:

1. The dataset directory of the step is written: ``vineyard-config.yaml`` naming the step's
   replica (``IPCSocket: vineyard.sock``, a link to ``$VINEYARD_IPC_SOCKET``, and the
   replicas' ``RPCEndpoint``), as Fluid's VineyardRuntime publishes it into the dataset's
   volume.
2. The step enters its own mount namespace through ``unshare(1)``: ``--mount`` when root,
   ``--user --map-root-user --mount`` (unprivileged) otherwise.
3. Inside, a new root is built on a private tmpfs: every top-level entry of ``/`` is bound
   back (recursively), except along the mount paths, where directories are recreated and
   each volume (and the dataset directory at ``dataset_mountpath``) is bind-mounted at its
   path. The step chroots into it, so ``/data/df.pkl`` is the claim's directory's file and
   nothing on the host changes.
4. The Python bootstrap of the run (``trellis_step``, on ``PYTHONPATH``) runs the function
   from its file: the run's object names apply to the vineyard client.

Without volumes and when no namespace can be made, the step runs without the dataset mount
(the client reaches the replica through ``VINEYARD_IPC_SOCKET``) and says so. With volumes, a
step that cannot get its mounts fails with the reason.
"""

import ctypes
import ctypes.util
import json
import os
import posixpath
import shutil
import subprocess
import sys

IN_NAMESPACE = "TRELLIS_FLUID_IN_NAMESPACE"

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_RELATIME = 1 << 21

ST_NOSUID = 2
ST_NODEV = 4
ST_NOEXEC = 8
ST_NOATIME = 1024
ST_NODIRATIME = 2048
ST_RELATIME = 4096


def log(message):
    sys.stderr.write("trellis-fluid: %s\n" % message)
    sys.stderr.flush()


def namespace_flags(euid):
    """unshare(1) options for a private mount namespace: a user namespace too when not root."""
    if euid == 0:
        return ["--mount", "--propagation", "private"]
    return ["--user", "--map-root-user", "--mount", "--propagation", "private"]


def vineyard_config(socket_name, rpc_endpoints):
    """The vineyard client's config file (the format of vineyard-config.yaml)."""
    lines = ["Vineyard:", "  IPCSocket: %s" % json.dumps(socket_name)]
    if rpc_endpoints:
        lines.append("  RPCEndpoint: %s" % json.dumps(",".join(rpc_endpoints)))
    return "\n".join(lines) + "\n"


def own_replica_first(endpoints, replica):
    """The replicas' RPC endpoints with the step's own first (the client's RPC connection
    goes to the first that answers)."""
    try:
        i = int(replica)
    except (TypeError, ValueError):
        return list(endpoints)
    if not 0 <= i < len(endpoints):
        return list(endpoints)
    return [endpoints[i]] + [e for j, e in enumerate(endpoints) if j != i]


def depth(path):
    return len([p for p in path.split("/") if p])


def ancestors(targets):
    """Proper ancestors (other than /) of the mount targets: directories to recreate."""
    out = set()
    for t in targets:
        parts = [p for p in t.split("/") if p]
        for i in range(1, len(parts)):
            out.add("/" + "/".join(parts[:i]))
    return out


def remount_flags(statvfs_flags):
    """Flags to make a bind mount read-only, keeping the flags a user namespace locks."""
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    for st, ms in ((ST_NOSUID, MS_NOSUID), (ST_NODEV, MS_NODEV), (ST_NOEXEC, MS_NOEXEC),
                   (ST_NOATIME, MS_NOATIME), (ST_NODIRATIME, MS_NODIRATIME), (ST_RELATIME, MS_RELATIME)):
        if statvfs_flags & st:
            flags |= ms
    return flags


class Mounter:
    """mount(2) through libc."""

    def __init__(self):
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                                    ctypes.c_char_p]

    def _mount(self, source, target, fstype, flags, data, what):
        enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
        if self.libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "%s: %s" % (what, os.strerror(err)))

    def tmpfs(self, target):
        self._mount("trellis-step-root", target, "tmpfs", 0, "mode=0755", "tmpfs at %s" % target)

    def bind(self, source, target, recursive=True):
        self._mount(source, target, None, MS_BIND | (MS_REC if recursive else 0), None,
                    "bind %s at %s" % (source, target))

    def read_only(self, target):
        self._mount(None, target, None, remount_flags(os.statvfs(target).f_flag), None,
                    "read-only remount of %s" % target)


def _populate(new_dir, host_dir, view_dir, targets, prefixes, mounter):
    for entry in sorted(os.listdir(host_dir)):
        host = os.path.join(host_dir, entry)
        view = posixpath.join(view_dir, entry)
        new = os.path.join(new_dir, entry)
        if view in targets:
            continue  # a mount point: created and mounted afterwards
        if view in prefixes:
            if os.path.isdir(host):  # recreated as a directory, even where the host has a link
                os.mkdir(new)
                _populate(new, os.path.realpath(host), view, targets, prefixes, mounter)
            continue
        if os.path.islink(host):
            os.symlink(os.readlink(host), new)
        elif os.path.isdir(host):
            os.mkdir(new)
            mounter.bind(host, new, recursive=True)
        else:
            with open(new, "w"):
                pass
            mounter.bind(host, new, recursive=False)


def build_root(root, mounts, mounter, host="/"):
    """Makes ``root`` a tmpfs holding ``host``'s tree (bound back) with each mount of
    ``mounts`` (``source``, ``target``, ``read_only``) at its target."""
    mounter.tmpfs(root)
    targets = set(m["target"] for m in mounts)
    _populate(root, host, "/", targets, ancestors(targets), mounter)
    for m in sorted(mounts, key=lambda m: depth(m["target"])):
        destination = root + m["target"]
        os.makedirs(destination, exist_ok=True)
        mounter.bind(m["source"], destination, recursive=True)
        if m["read_only"]:
            mounter.read_only(destination)


def dataset_mount(spec):
    """The mount of the step's dataset directory at ``dataset_mountpath`` (or None)."""
    ds = spec.get("dataset") or {}
    if not ds.get("mount_path"):
        return None
    source = os.path.join(ds["dir"], ds["sub_path"]) if ds.get("sub_path") else ds["dir"]
    return {"source": source, "target": posixpath.normpath(ds["mount_path"]), "read_only": False,
            "volume": "dataset"}


def prepare_dataset(spec, environ):
    """Writes the step's dataset directory; returns its mount (or None)."""
    ds = spec.get("dataset") or {}
    mount = dataset_mount(spec)
    if mount is None:
        return None
    directory = ds["dir"]
    os.makedirs(directory, exist_ok=True)
    socket = environ.get("VINEYARD_IPC_SOCKET")
    link = os.path.join(directory, "vineyard.sock")
    if os.path.lexists(link):
        os.unlink(link)
    if socket:
        os.symlink(socket, link)
    tmp = os.path.join(directory, ".vineyard-config.yaml.tmp")
    with open(tmp, "w") as f:
        f.write(vineyard_config("vineyard.sock", own_replica_first(spec.get("rpc_endpoints") or [],
                                                                   environ.get("TRELLIS_REPLICA"))))
    os.replace(tmp, os.path.join(directory, "vineyard-config.yaml"))
    os.makedirs(mount["source"], exist_ok=True)
    return mount


def run_function(spec):
    """Execs the run's Python bootstrap on the step's function file."""
    env = dict(os.environ)
    env.pop(IN_NAMESPACE, None)
    argv = [sys.executable, "-m", "trellis_step", "--file", spec["function_file"], "--function", spec["function"]]
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)


def main(argv):
    if len(argv) != 1:
        log("usage: trellis_fluid_step.py STEP.json")
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    volumes = list(spec.get("mounts") or [])
    debug = bool(spec.get("debug"))
    if os.environ.get(IN_NAMESPACE) != "1":
        dataset = prepare_dataset(spec, os.environ)
        mounts = volumes + ([dataset] if dataset else [])
        if not mounts:
            run_function(spec)
        unshare = shutil.which("unshare")
        flags = namespace_flags(os.geteuid())
        problem = None
        if unshare is None:
            problem = "unshare(1) is not installed (Debian: apt-get install util-linux)"
        else:
            probe = subprocess.run([unshare] + flags + ["true"], capture_output=True, text=True)
            if probe.returncode != 0:
                problem = "`unshare %s` failed: %s" % (" ".join(flags), probe.stderr.strip() or probe.returncode)
        if problem:
            return no_namespace(spec, volumes, problem)
        if debug:
            log("step %s: own mount namespace (%s)" % (spec.get("step"), " ".join(["unshare"] + flags)))
        env = dict(os.environ)
        env[IN_NAMESPACE] = "1"
        sys.stderr.flush()
        os.execve(unshare, [unshare] + flags + [sys.executable, os.path.abspath(__file__), argv[0]], env)
    dataset = dataset_mount(spec)
    mounts = volumes + ([dataset] if dataset else [])
    cwd = os.getcwd()
    root = spec["root_dir"]
    try:
        os.makedirs(root, exist_ok=True)
        build_root(root, mounts, Mounter())
        os.chroot(root)
        os.chdir(cwd if os.path.isdir(cwd) else "/")
    except OSError as e:
        return no_namespace(spec, volumes, "cannot build the step's mounts: %s" % e)
    if debug:
        for m in sorted(mounts, key=lambda m: depth(m["target"])):
            log("mounted %s at %s%s" % (m["source"], m["target"], " (read-only)" if m["read_only"] else ""))
    run_function(spec)
    return 0


def no_namespace(spec, volumes, problem):
    if volumes:
        log("step %s needs its volumes mounted (%s), which takes a mount namespace of its own, and %s. Run as root, "
            "or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu also "
            "kernel.apparmor_restrict_unprivileged_userns=0)"
            % (spec.get("step"), ", ".join("%s at %s" % (v["volume"], v["target"]) for v in volumes), problem))
        return 2
    log("the dataset is not mounted at %s (%s); vineyard reaches the step's replica through VINEYARD_IPC_SOCKET"
        % ((spec.get("dataset") or {}).get("mount_path"), problem))
    run_function(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
