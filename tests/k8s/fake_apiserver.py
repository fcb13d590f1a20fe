"""A fake Kubernetes API server for the launcher's lifecycle tests (stdlib only).

It stands in for the API server *and* the cluster behind it, and nothing else: the launcher
talking to it (`trellis flow run --on kubernetes`) is the real binary. On 127.0.0.1, plain
HTTP with a bearer token, or HTTPS requiring a client certificate.

What it does with what the launcher sends:
- Server-side apply (PATCH application/apply-patch+yaml): stores the object.
- Job create (POST): "schedules" its one pod at once. Required node affinity to a node that
  has no room for this step (`no_room`: step name -> node) leaves the pod Pending with
  PodScheduled=False reason=Unschedulable; preferred affinity takes the node if it has room,
  else the first other node; no affinity round-robins. A scheduled pod of a step runs to the
  exit code `exit_codes[step][n-1]` for its n-th pod that runs (default 0) unless the step is in `hang`; on exit 0
  it publishes the step's outputs (TRELLIS_OUTPUTS, prefixed by TRELLIS_NAME_PREFIX) in the
  real etcd the test started, as the daemon on that node would: a name, and an object whose
  blob lives on that node's instance (`sizes[output]` bytes, default 1000). A cleanup Job
  (TRELLIS_DELETE) removes those names and objects.
- Pod list by `job-name`, pod log, events (FailedScheduling), Job delete and delete-collection,
  ConfigMap delete: answered and recorded.
- `/api/v1/namespaces/<ns>/services/<svc>/proxy/v3/...`: forwarded to the real etcd.
"""

import base64
import json
import ssl
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


def b64(s):
    return base64.b64encode(s.encode()).decode()


class Etcd:
    """The bits of the etcd v3 JSON gateway the fake needs."""

    def __init__(self, endpoint, prefix="/vineyard"):
        self.endpoint = endpoint
        self.prefix = prefix

    def call(self, path, body):
        req = urllib.request.Request(self.endpoint + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def put(self, key, value):
        self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    def get(self, key):
        kvs = self.call("/v3/kv/range", {"key": b64(key)}).get("kvs", [])
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    def delete(self, key):
        self.call("/v3/kv/deleterange", {"key": b64(key)})

    def keys(self, prefix):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        kvs = self.call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(end), "keys_only": True}).get("kvs", [])
        return [base64.b64decode(kv["key"]).decode() for kv in kvs]

    def register(self, instance_id, node):
        self.put(
            "%s/instances/%d" % (self.prefix, instance_id),
            json.dumps({
                "instance_id": instance_id, "hostname": "10.0.0.%d" % instance_id, "nodename": node,
                "rpc_endpoint": "10.0.0.%d:9600" % instance_id, "ipc_socket": "/var/run/vineyard/vineyard-worker.sock",
                "hostid": instance_id, "timestamp": 1,
            }))

    def publish(self, name, object_id, instance_id, size):
        blob_id = "o8%015x" % object_id
        meta = {
            "id": "o%016x" % object_id, "typename": "vineyard::Tensor<double>", "instance_id": instance_id,
            "buffer_": {"id": blob_id, "typename": "vineyard::Blob", "instance_id": instance_id,
                        "length": size, "nbytes": size, "transient": True},
        }
        self.put("%s/objects/%016x" % (self.prefix, object_id),
                 json.dumps({"meta": json.dumps(meta), "owner": instance_id}))
        self.put("%s/names/%s" % (self.prefix, name), str(object_id))

    def unpublish(self, name):
        value = self.get("%s/names/%s" % (self.prefix, name))
        if value is None:
            return False
        self.delete("%s/objects/%016x" % (self.prefix, int(value)))
        self.delete("%s/names/%s" % (self.prefix, name))
        return True


class FakeCluster:
    def __init__(self, etcd, nodes, token="secret-token", namespace="flows"):
        self.etcd = etcd
        self.nodes = nodes  # node name -> instance id
        self.token = token
        self.namespace = namespace
        self.lock = threading.Lock()
        self.exit_codes = {}  # step -> [exit code of its 1st, 2nd, ... pod that runs]
        self.runs = {}
        self.hang = set()
        self.no_room = {}  # step -> node that has no room for it
        self.sizes = {}
        self.jobs = {}  # name -> {"body", "pod", "step", "node", ...}
        self.log = []  # (method, path, detail) of every request
        self.created = []  # Job bodies in creation order
        self.applied = []  # applied objects
        self.deleted_jobs = []
        self.deleted_collections = []
        self.deleted_configmaps = []
        self.deleted_custom = []  # (plural, name) of Fluid objects deleted
        self.cleanups = []  # (node, [names]) of cleanup Jobs that ran
        self.next_object = 0x100
        self.rr = 0

    # -- scheduling and "running" -------------------------------------------------------

    @staticmethod
    def env_of(job):
        c = job["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in c.get("env", []) if "value" in e}

    @staticmethod
    def affinity_of(job):
        na = job["spec"]["template"]["spec"].get("affinity", {}).get("nodeAffinity", {})
        req = na.get("requiredDuringSchedulingIgnoredDuringExecution", {})
        for term in req.get("nodeSelectorTerms", []):
            for mf in term.get("matchFields", []):  # (a matchExpressions term, e.g. Fluid's worker label, always holds here)
                return "required", mf["values"][0]
        pref = na.get("preferredDuringSchedulingIgnoredDuringExecution")
        if pref:
            return "preferred", pref[0]["preference"]["matchFields"][0]["values"][0]
        return "none", None

    def schedule(self, name, job):
        env = self.env_of(job)
        step = env.get("TRELLIS_STEP")
        kind, node = self.affinity_of(job)
        full = self.no_room.get(step)
        pod = {"metadata": {"name": name + "-x7k2p", "creationTimestamp": "2026-12-03T08:00:00Z"},
               "spec": {}, "status": {"phase": "Pending"}}
        rec = {"body": job, "pod": pod, "step": step, "affinity": (kind, node), "node": None}
        if kind == "required" and node == full:
            pod["status"]["conditions"] = [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/%d nodes are available: 1 Insufficient memory" % len(self.nodes)}]
            return rec
        if kind in ("required", "preferred") and node != full:
            chosen = node
        else:
            others = [n for n in sorted(self.nodes) if n != full]
            chosen = others[self.rr % len(others)]
            self.rr += 1
        rec["node"] = chosen
        pod["spec"]["nodeName"] = chosen
        if "TRELLIS_DELETE" in env:
            names = [n for n in env["TRELLIS_DELETE"].split("\n") if n]
            for n in names:
                self.etcd.unpublish(n)
            self.cleanups.append((chosen, names))
            code = 0
        elif step in self.hang:
            pod["status"] = {"phase": "Running", "containerStatuses": [
                {"name": "step", "state": {"running": {"startedAt": "2026-12-03T08:00:01Z"}}}]}
            rec["logtext"] = "step %s running on %s\n" % (step, chosen)
            return rec
        else:
            # The n-th pod of this step that runs (resubmissions after Unschedulable do not count;
            # TRELLIS_ATTEMPT restarts at 1 on resume).
            attempt = self.runs[step] = self.runs.get(step, 0) + 1
            codes = self.exit_codes.get(step, [])
            code = codes[attempt - 1] if attempt - 1 < len(codes) else (codes[-1] if codes else 0)
            if code == 0:
                prefix = env.get("TRELLIS_NAME_PREFIX", "")
                for out in [o for o in env.get("TRELLIS_OUTPUTS", "").split(",") if o]:
                    self.next_object += 1
                    self.etcd.publish(prefix + out, self.next_object, self.nodes[chosen], self.sizes.get(out, 1000))
        rec["logtext"] = "step %s attempt %s on %s exit %d\n" % (step, env.get("TRELLIS_ATTEMPT"), chosen, code)
        pod["status"] = {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
            {"name": "step", "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}}]}
        return rec

    # -- queries for the tests --------------------------------------------------------------

    def step_jobs(self):
        """(step, affinity kind, node asked, node it ran on) of each step Job, in creation order."""
        out = []
        for body in self.created:
            env = self.env_of(body)
            if "TRELLIS_STEP" in env:
                rec = self.jobs_all[body["metadata"]["name"]]
                out.append((env["TRELLIS_STEP"], rec["affinity"][0], rec["affinity"][1], rec["node"]))
        return out

    # -- HTTP ---------------------------------------------------------------------------------

    def handle(self, method, raw_path, headers, body):
        url = urlparse(raw_path)
        path = unquote(url.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with self.lock:
            self.log.append((method, path, query, headers.get("Content-Type")))
        if self.token is not None and headers.get("Authorization") != "Bearer " + self.token:
            return 401, {"kind": "Status", "code": 401, "reason": "Unauthorized", "message": "Unauthorized"}
        ns = "/namespaces/%s/" % self.namespace
        proxy = "/api/v1" + ns + "services/"
        if path.startswith(proxy) and "/proxy/" in path:
            rest = path.split("/proxy", 1)[1]
            req = urllib.request.Request(self.etcd.endpoint + rest, data=body, method=method)
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        with self.lock:
            if method == "PATCH":
                if headers.get("Content-Type") != "application/apply-patch+yaml" or query.get("fieldManager") != "trellis":
                    return 415, {"kind": "Status", "code": 415, "reason": "UnsupportedMediaType", "message": "apply only"}
                obj = json.loads(body)
                self.applied.append(obj)
                return 200, obj
            if method == "POST" and path == "/apis/batch/v1" + ns + "jobs":
                job = json.loads(body)
                name = job["metadata"]["name"]
                if name in self.jobs:
                    return 409, {"kind": "Status", "code": 409, "reason": "AlreadyExists", "message": "exists"}
                rec = self.schedule(name, job)
                self.jobs[name] = rec
                self.jobs_all[name] = rec
                self.created.append(job)
                return 201, job
            if method == "GET" and path == "/api/v1" + ns + "pods":
                sel = query.get("labelSelector", "")
                name = sel[len("job-name="):] if sel.startswith("job-name=") else None
                rec = self.jobs.get(name)
                return 200, {"kind": "PodList", "items": [rec["pod"]] if rec else []}
            if method == "GET" and path.startswith("/api/v1" + ns + "pods/") and path.endswith("/log"):
                pod = path.split("/")[-2]
                for rec in self.jobs_all.values():
                    if rec["pod"]["metadata"]["name"] == pod:
                        return 200, rec.get("logtext", "")
                return 404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": "no pod"}
            if method == "GET" and path == "/api/v1" + ns + "events":
                pod = query.get("fieldSelector", "").split("involvedObject.name=")[-1]
                return 200, {"items": [{"reason": "FailedScheduling", "message": "0/2 nodes are available: 1 Insufficient memory (pod %s)" % pod}]}
            if method == "DELETE" and path.startswith("/apis/batch/v1" + ns + "jobs/"):
                name = path.rsplit("/", 1)[1]
                policy = json.loads(body or b"{}").get("propagationPolicy")
                self.deleted_jobs.append((name, policy))
                if self.jobs.pop(name, None) is None:
                    return 404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": "no job"}
                return 200, {"kind": "Status", "status": "Success"}
            if method == "DELETE" and path == "/apis/batch/v1" + ns + "jobs":
                sel = query.get("labelSelector", "")
                key, _, value = sel.partition("=")
                self.deleted_collections.append(sel)
                for name in [n for n, r in self.jobs.items()
                             if r["body"]["metadata"].get("labels", {}).get(key) == value]:
                    del self.jobs[name]
                return 200, {"kind": "JobList", "items": []}
            fluid = "/apis/data.fluid.io/v1alpha1" + ns
            if method == "DELETE" and path.startswith(fluid):
                plural, _, name = path[len(fluid):].partition("/")
                known = any(o.get("kind", "").lower() + "s" == plural and o["metadata"]["name"] == name
                            for o in self.applied)
                self.deleted_custom.append((plural, name))
                if not known:
                    return 404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": "no %s %s" % (plural, name)}
                return 200, {"kind": "Status", "status": "Success"}
            if method == "DELETE" and path.startswith("/api/v1" + ns + "configmaps/"):
                self.deleted_configmaps.append(path.rsplit("/", 1)[1])
                return 200, {"kind": "Status", "status": "Success"}
        return 404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": "fake: no route %s %s" % (method, path)}


class FakeAPIServer:
    """Serves a FakeCluster on 127.0.0.1 (HTTPS with client certificates when `tls` is given:
    (server cert file, server key file, CA file that signs client certs))."""

    def __init__(self, cluster, tls=None):
        self.cluster = cluster
        cluster.jobs_all = {}
        fake = cluster

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                try:
                    status, payload = fake.handle(self.command, self.path, self.headers, body)
                except Exception as e:  # a bug in the fake: answer 500 with the reason
                    status, payload = 500, {"kind": "Status", "code": 500, "reason": "InternalError", "message": repr(e)}
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls:
            cert, key, client_ca = tls
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.httpd.server_address[1])

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
