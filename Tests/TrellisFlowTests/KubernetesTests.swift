import Foundation
import Synchronization
import Testing
@testable import TrellisFlow
import TrellisTestSupport

// MARK: - A recording transport that answers from a script

/// Records every request and answers from a handler (no sockets).
final class RecordingTransport: KubeTransport {
    let requests = Mutex<[KubeRequest]>([])
    let handler: @Sendable (KubeRequest) -> KubeResponse

    init(_ handler: @escaping @Sendable (KubeRequest) -> KubeResponse) { self.handler = handler }

    func send(_ request: KubeRequest) async throws -> KubeResponse {
        requests.withLock { $0.append(request) }
        return handler(request)
    }

    var sent: [KubeRequest] { requests.withLock { $0 } }

    static func json(_ v: KubeValue, status: Int = 200) -> KubeResponse { KubeResponse(status: status, body: Data(v.json().utf8)) }
}

private func launch(
    step: StepSpec, node: String? = "node-b", attempt: Int = 1, timeout: Double? = nil, dir: String = NSTemporaryDirectory()
) -> StepLaunch {
    StepLaunch(
        runID: "house-prices-20261203-0830-ab12", step: step, attempt: attempt,
        replica: Replica(index: 1, socket: "/var/run/vineyard-worker.sock", rpcPort: 9600, host: "10.0.0.2", node: node),
        command: ["python3", "x"],
        environment: [
            "TRELLIS_RUN_ID": "house-prices-20261203-0830-ab12", "TRELLIS_STEP": step.name, "TRELLIS_REPLICA": "1",
            "TRELLIS_ATTEMPT": String(attempt), "TRELLIS_NAME_PREFIX": "house-prices-20261203-0830-ab12/",
            "TRELLIS_INPUTS": step.inputs.joined(separator: ","), "TRELLIS_OUTPUTS": step.outputs.joined(separator: ","),
            "TRELLIS_METRICS": "/home/me/.trellis/x.jsonl", "HOME": "/home/me", "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        ],
        workingDirectory: "/home/me/flow", stdoutPath: dir + "/out.log", stderrPath: dir + "/err.log", timeout: timeout,
        killGrace: 3)
}

private let trainStep = StepSpec(
    name: "train", action: .python(PythonTarget(file: "pipeline.py", function: "train")), inputs: ["x_train", "y_train"],
    outputs: ["model"])

private func tempDir() -> String {
    let d = NSTemporaryDirectory() + "kube-tests-" + UUID().uuidString
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

// MARK: - kubeconfig

@Suite struct KubeConfigTests {
    static let kubeconfig = """
        apiVersion: v1
        kind: Config
        current-context: dev
        clusters:
        - name: c1
          cluster:
            server: https://10.1.2.3:6443/
            certificate-authority-data: \(Data("CA-PEM\n".utf8).base64EncodedString())
        - name: c2
          cluster:
            server: https://example:443
            certificate-authority: certs/ca.crt
            insecure-skip-tls-verify: true
        users:
        - name: u1
          user:
            client-certificate-data: \(Data("CERT-PEM".utf8).base64EncodedString())
            client-key-data: \(Data("KEY-PEM".utf8).base64EncodedString())
        - name: u2
          user:
            tokenFile: /tokens/t
        - name: u3
          user:
            exec: {command: aws, apiVersion: client.authentication.k8s.io/v1}
        - name: u4
          user:
            auth-provider: {name: gcp}
        - name: u5
          user:
            token: abc
        contexts:
        - name: dev
          context: {cluster: c1, user: u1, namespace: flows}
        - name: other
          context: {cluster: c2, user: u2}
        - name: eks
          context: {cluster: c1, user: u3}
        - name: gke
          context: {cluster: c1, user: u4}
        - name: keyless
          context: {cluster: c2, user: u5}
        """

    static func reader(_ files: [String: String]) -> (String) throws -> Data {
        { path in
            guard let text = files[path] else { throw KubeConfigError("no file \(path)") }
            return Data(text.utf8)
        }
    }

    @Test func currentContextWithInlineData() throws {
        let c = try KubeConfig.connection(yaml: Self.kubeconfig, readFile: Self.reader([:]))
        #expect(c.server == "https://10.1.2.3:6443")
        #expect(c.certificateAuthorityPEM == "CA-PEM\n")
        #expect(c.clientCertificatePEM == "CERT-PEM")
        #expect(c.clientKeyPEM == "KEY-PEM")
        #expect(c.token == nil)
        #expect(c.namespace == "flows")
        #expect(!c.insecureSkipTLSVerify)
    }

    @Test func explicitContextFilesRelativeToTheKubeconfigAndNamespaceFlag() throws {
        let c = try KubeConfig.connection(
            yaml: Self.kubeconfig, context: "other", namespace: "ns2", directory: "/home/me/.kube",
            readFile: Self.reader(["/home/me/.kube/certs/ca.crt": "CA2", "/tokens/t": "tok\n"]))
        #expect(c.server == "https://example:443")
        #expect(c.certificateAuthorityPEM == "CA2")
        #expect(c.token == "tok")
        #expect(c.insecureSkipTLSVerify)
        #expect(c.namespace == "ns2")
        let k = try KubeConfig.connection(yaml: Self.kubeconfig, context: "keyless", readFile: Self.reader(["./certs/ca.crt": "C"]))
        #expect(k.namespace == "default")
        #expect(k.token == "abc")
        #expect(k.certificateAuthorityPEM == "C")
    }

    @Test func pluginsAndUnknownNamesAreClearErrors() {
        #expect(throws: KubeConfigError.self) { try KubeConfig.connection(yaml: Self.kubeconfig, context: "eks") }
        do {
            _ = try KubeConfig.connection(yaml: Self.kubeconfig, context: "eks")
        } catch {
            #expect("\(error)".contains("exec credential plugin, which is not supported"))
        }
        do {
            _ = try KubeConfig.connection(yaml: Self.kubeconfig, context: "gke")
        } catch {
            #expect("\(error)".contains("auth-provider plugin, which is not supported"))
        }
        do {
            _ = try KubeConfig.connection(yaml: Self.kubeconfig, context: "nope")
            Issue.record("no error")
        } catch {
            #expect("\(error)".contains("no context named 'nope'"))
            #expect("\(error)".contains("dev"))
        }
        #expect(throws: KubeConfigError.self) { try KubeConfig.connection(yaml: "- a\n- b\n") }
        #expect(throws: KubeConfigError.self) { try KubeConfig.connection(yaml: "kind: Config\n") }
    }

    @Test func inClusterCredentials() throws {
        let dir = "/sa"
        let c = try KubeConfig.inCluster(
            environment: ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"], directory: dir,
            readFile: Self.reader(["/sa/token": "eyJ\n", "/sa/ca.crt": "CA", "/sa/namespace": "jobs\n"]))
        #expect(c.server == "https://10.96.0.1:443")
        #expect(c.token == "eyJ")
        #expect(c.certificateAuthorityPEM == "CA")
        #expect(c.namespace == "jobs")
        let v6 = try KubeConfig.inCluster(
            environment: ["KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"], directory: dir,
            readFile: Self.reader(["/sa/token": "t", "/sa/ca.crt": "CA"]))
        #expect(v6.server == "https://[fd00::1]:443")
        #expect(v6.namespace == "default")
        #expect(throws: KubeConfigError.self) { try KubeConfig.inCluster(environment: [:]) }
    }

    @Test func tlsConfigurationRejectsBadPEM() {
        let c = KubeConnection(server: "https://x", certificateAuthorityPEM: "not a pem")
        #expect(throws: KubeConfigError.self) { try HTTPKubeTransport.tlsConfiguration(c) }
    }
}

// MARK: - Pure decisions

@Suite struct KubeDecisionTests {
    static func isDNSLabel(_ s: String) -> Bool {
        s.count <= 63 && !s.isEmpty && s.range(of: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", options: .regularExpression) != nil
    }

    @Test func jobNamesAreStableDNSLabelsAndDistinct() {
        let a = KubeNaming.jobName(runID: "house-prices-20261203-083000-x1y2", step: "preprocess", attempt: 1)
        #expect(a == KubeNaming.jobName(runID: "house-prices-20261203-083000-x1y2", step: "preprocess", attempt: 1))
        #expect(Self.isDNSLabel(a))
        #expect(a.hasPrefix("house-prices"))
        #expect(a.hasSuffix("-1"))
        let long = String(repeating: "Very_Long.Run ", count: 10)
        for (run, step) in [(long, long), ("_", "_"), ("9run", "Step With Spaces"), (long, "a"), ("r", long)] {
            for attempt in [1, 12] {
                for fb in [false, true] {
                    let n = KubeNaming.jobName(runID: run, step: step, attempt: attempt, fallback: fb)
                    #expect(Self.isDNSLabel(n), "\(n)")
                    #expect(n.hasSuffix(fb ? "p" : String(attempt)))
                }
            }
        }
        // Cut readable parts still give distinct names.
        #expect(
            KubeNaming.jobName(runID: long, step: long + "a", attempt: 1) != KubeNaming.jobName(runID: long, step: long + "b", attempt: 1))
        #expect(KubeNaming.jobName(runID: "r", step: "s", attempt: 1) != KubeNaming.jobName(runID: "r", step: "s", attempt: 2))
        #expect(Self.isDNSLabel(KubeNaming.runObjectName(runID: long, suffix: "code")))
        #expect(KubeNaming.labelValue("-a/b c-") == "a_b_c")
        #expect(KubeNaming.labelValue(long).count <= 63)
    }

    @Test func affinityRequiredAndPreferredShapes() {
        let req = NodeAffinity.required(node: "node-b").podAffinity!
        let term = req[path: "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms"]?.array?.first
        let field = term?["matchFields"]?.array?.first
        #expect(field?["key"] == "metadata.name")
        #expect(field?["operator"] == "In")
        #expect(field?["values"] == ["node-b"])
        #expect(term?["matchExpressions"] == nil)
        #expect(NodeAffinity.required(node: "node-b").fallback == .preferred(node: "node-b"))
        #expect(NodeAffinity.preferred(node: "n").fallback == nil)
        let pref = NodeAffinity.preferred(node: "node-b").podAffinity!
        let p = pref[path: "nodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution"]?.array?.first
        #expect(p?["weight"] == 100)
        #expect(p?[path: "preference", "matchFields"]?.array?.first?["values"] == ["node-b"])
        #expect(pref[path: "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"] == nil)
        #expect(NodeAffinity.none.podAffinity == nil)
    }

    static func pod(_ status: KubeValue) -> KubeValue { ["metadata": ["name": "p"], "status": status] }

    @Test func podClassification() {
        #expect(PodCondition.of(pod: Self.pod(["phase": "Pending"])) == .pending)
        #expect(
            PodCondition.of(
                pod: Self.pod([
                    "phase": "Pending",
                    "conditions": [
                        [
                            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/3 nodes are available: 1 Insufficient memory.",
                        ]
                    ],
                ])) == .unschedulable(message: "0/3 nodes are available: 1 Insufficient memory."))
        #expect(
            PodCondition.of(pod: Self.pod(["phase": "Pending", "conditions": [["type": "PodScheduled", "status": "True"]]]))
                == .pending)
        #expect(PodCondition.of(pod: Self.pod(["phase": "Running"])) == .running)
        func term(_ t: KubeValue) -> KubeValue {
            Self.pod(["phase": "Failed", "containerStatuses": [["name": "step", "state": ["terminated": t]]]])
        }
        #expect(PodCondition.of(pod: term(["exitCode": 0, "reason": "Completed"])) == .succeeded)
        #expect(PodCondition.of(pod: term(["exitCode": 3, "reason": "Error"])) == .failed(ExitStatus(code: 3, signal: nil), reason: "Error"))
        #expect(PodCondition.of(pod: term(["exitCode": 137, "reason": "OOMKilled"])) == .failed(ExitStatus(code: nil, signal: 9), reason: "OOMKilled"))
        #expect(PodCondition.of(pod: term(["exitCode": 143, "reason": "Error"])) == .failed(ExitStatus(code: nil, signal: 15), reason: "Error"))
        #expect(PodCondition.of(pod: term(["exitCode": 255])) == .failed(ExitStatus(code: 255, signal: nil), reason: nil))
        #expect(
            PodCondition.of(
                pod: Self.pod([
                    "phase": "Pending",
                    "containerStatuses": [["name": "step", "state": ["waiting": ["reason": "ImagePullBackOff", "message": "no such image"]]]],
                ])) == .failed(ExitStatus(code: nil, signal: nil), reason: "ImagePullBackOff: no such image"))
        #expect(
            PodCondition.of(
                pod: Self.pod(["phase": "Pending", "containerStatuses": [["name": "step", "state": ["waiting": ["reason": "ErrImagePull"]]]]]))
                == .pending)
    }

    @Test func residencyFromAMetadataTree() {
        let tree = """
            {"id":"o01","typename":"vineyard::DataFrame","instance_id":1,
             "__values_-0":{"typename":"vineyard::Tensor","buffer_":{"id":"o8001","typename":"vineyard::Blob","instance_id":1,"length":100,"nbytes":100}},
             "__values_-1":{"typename":"vineyard::Tensor","buffer_":{"id":"o8002","typename":"vineyard::Blob","instance_id":2,"length":30,"nbytes":30}},
             "__values_-2":{"typename":"vineyard::Tensor","buffer_":{"id":"o8001","typename":"vineyard::Blob","instance_id":1,"length":100,"nbytes":100}}}
            """
        #expect(MetadataResidency.bytes(ofTree: tree, on: 1) == 100)
        #expect(MetadataResidency.bytes(ofTree: tree, on: 2) == 30)
        #expect(MetadataResidency.bytes(ofTree: tree, on: 3) == 0)
        #expect(MetadataResidency.bytes(ofTree: "nope", on: 1) == nil)
        // As daemons publish trees (vineyardd's way): blob members with length 0, the size in
        // the object holding them.
        let published = """
            {"typename":"vineyard::DataFrame","nbytes":900,
             "__values_-0":{"typename":"vineyard::Tensor<double>","nbytes":800,"buffer_":{"id":"o8003","typename":"vineyard::Blob","instance_id":4,"length":0,"nbytes":0}},
             "__values_-1":{"typename":"vineyard::Tensor<int64>","nbytes":100,"buffer_":{"id":"o8004","typename":"vineyard::Blob","instance_id":5,"length":0,"nbytes":0}},
             "empty_":{"typename":"vineyard::Tensor<int64>","nbytes":0,"buffer_":{"id":"o8000000000000000","typename":"vineyard::Blob","instance_id":4,"length":0,"nbytes":0}}}
            """
        #expect(MetadataResidency.bytes(ofTree: published, on: 4) == 800)
        #expect(MetadataResidency.bytes(ofTree: published, on: 5) == 100)
        #expect(MetadataResidency.objectKey(0x1f, prefix: "/vineyard") == "/vineyard/objects/000000000000001f")
        let inst = MetadataInstance(json: #"{"instance_id":7,"hostname":"10.0.0.5","nodename":"node-c","rpc_endpoint":"10.0.0.5:9600"}"#)
        #expect(inst == MetadataInstance(id: 7, nodename: "node-c", hostname: "10.0.0.5", rpcEndpoint: "10.0.0.5:9600"))
        #expect(
            inst?.replica(index: 2, podSocket: "/var/run/vineyard-worker.sock")
                == Replica(index: 2, socket: "/var/run/vineyard-worker.sock", rpcPort: 9600, host: "10.0.0.5", node: "node-c"))
        #expect(MetadataInstance(json: #"{"hostname":"h"}"#) == nil)
        #expect(MetadataInstance(json: #"{"instance_id":1,"hostname":"h"}"#)?.nodename == "h")
    }
}

// MARK: - Request shapes

@Suite struct KubeRequestShapeTests {
    @Test func paths() {
        #expect(KubeRequests.resourcePath(apiVersion: "batch/v1", kind: "Job", namespace: "ns") == "/apis/batch/v1/namespaces/ns/jobs")
        #expect(
            KubeRequests.resourcePath(apiVersion: "v1", kind: "ConfigMap", namespace: "ns", name: "c")
                == "/api/v1/namespaces/ns/configmaps/c")
        #expect(
            KubeRequests.resourcePath(apiVersion: "data.fluid.io/v1alpha1", kind: "DataProcess", namespace: "ns", name: "d")
                == "/apis/data.fluid.io/v1alpha1/namespaces/ns/dataprocesses/d")
        #expect(KubeRequests.plural("VineyardRuntime") == "vineyardruntimes")
        #expect(KubeRequests.plural("Dataset") == "datasets")
        #expect(KubeRequests.plural("Policy") == "policies")
    }

    @Test func createApplyDeleteListLogEvents() throws {
        let job: KubeValue = ["apiVersion": "batch/v1", "kind": "Job", "metadata": ["name": "j1"], "spec": [:]]
        let c = try KubeRequests.create(job, namespace: "ns")
        #expect(c == KubeRequest(method: "POST", path: "/apis/batch/v1/namespaces/ns/jobs", contentType: "application/json", body: job.json()))
        let a = try KubeRequests.apply(job, namespace: "ns")
        #expect(a.method == "PATCH")
        #expect(a.path == "/apis/batch/v1/namespaces/ns/jobs/j1")
        #expect(a.contentType == "application/apply-patch+yaml")
        #expect(a.queryValue("fieldManager") == "trellis")
        #expect(a.queryValue("force") == "true")
        #expect(try KubeValue.parse(yaml: a.body!) == job)
        let d = KubeRequests.delete(apiVersion: "batch/v1", kind: "Job", name: "j1", namespace: "ns")
        #expect(d.method == "DELETE")
        #expect(d.path == "/apis/batch/v1/namespaces/ns/jobs/j1")
        #expect(try KubeValue.parse(json: Data(d.body!.utf8))["propagationPolicy"] == "Background")
        #expect(try KubeValue.parse(json: Data(d.body!.utf8))["kind"] == "DeleteOptions")
        let dc = KubeRequests.deleteCollection(apiVersion: "batch/v1", kind: "Job", namespace: "ns", labelSelector: "trellis.io/run=r1")
        #expect(dc.method == "DELETE" && dc.path == "/apis/batch/v1/namespaces/ns/jobs")
        #expect(dc.target == "/apis/batch/v1/namespaces/ns/jobs?labelSelector=trellis.io%2Frun%3Dr1")
        let l = KubeRequests.listPods(ofJob: "j1", namespace: "ns")
        #expect(l.method == "GET" && l.path == "/api/v1/namespaces/ns/pods" && l.queryValue("labelSelector") == "job-name=j1")
        let log = KubeRequests.podLog(pod: "j1-abc", container: "step", namespace: "ns")
        #expect(log.path == "/api/v1/namespaces/ns/pods/j1-abc/log" && log.queryValue("container") == "step" && log.body == nil)
        let e = KubeRequests.podEvents(pod: "p", namespace: "ns")
        #expect(e.path == "/api/v1/namespaces/ns/events")
        #expect(e.queryValue("fieldSelector") == "involvedObject.kind=Pod,involvedObject.name=p")
        #expect(throws: KubeAPIError.self) { try KubeRequests.create(["kind": "Job"], namespace: "ns") }
    }

    @Test func etcdRangeRequests() throws {
        let r = EtcdGateway.rangeRequest(
            key: "/vineyard/instances/", prefix: true, pathPrefix: EtcdGateway.proxyPath(namespace: "ns", service: "v-master:2379"))
        #expect(r.method == "POST")
        #expect(r.path == "/api/v1/namespaces/ns/services/v-master:2379/proxy/v3/kv/range")
        let body = try KubeValue.parse(json: Data(r.body!.utf8))
        #expect(body["key"]?.string == Data("/vineyard/instances/".utf8).base64EncodedString())
        #expect(body["range_end"]?.string == Data("/vineyard/instances0".utf8).base64EncodedString())
        let one = EtcdGateway.rangeRequest(key: "/vineyard/names/a", prefix: false, pathPrefix: "")
        #expect(one.path == "/v3/kv/range")
        #expect(try KubeValue.parse(json: Data(one.body!.utf8))["range_end"] == nil)
    }

    @Test func stepJobBody() throws {
        let settings = KubeRunSettings(image: "reg/trellis-step:1", dataset: "house-prices")
        let l = launch(step: trainStep)
        let job = KubeStepObjects.job(for: l, affinity: .required(node: "node-b"), settings: settings)
        #expect(job["apiVersion"] == "batch/v1" && job["kind"] == "Job")
        #expect(job[path: "spec", "backoffLimit"] == 0)
        let pod = job[path: "spec", "template", "spec"]!
        #expect(pod["restartPolicy"] == "Never")
        #expect(pod[path: "affinity"] == NodeAffinity.required(node: "node-b").podAffinity)
        let c = pod["containers"]!.array![0]
        #expect(c["name"] == "step" && c["image"] == "reg/trellis-step:1")
        #expect(c["command"] == ["python3", "/trellis/trellis_step.py", "--file", "/trellis/code/pipeline.py", "--function", "train"])
        let env = Dictionary(uniqueKeysWithValues: c["env"]!.array!.compactMap { e in e["value"]?.string.map { (e["name"]!.string!, $0) } })
        #expect(env["VINEYARD_IPC_SOCKET"] == "/var/run/vineyard-worker.sock")
        #expect(env["TRELLIS_NAME_PREFIX"] == "house-prices-20261203-0830-ab12/")
        #expect(env["TRELLIS_FETCH"] == "1")
        #expect(env["TRELLIS_OUTPUTS"] == "model")
        #expect(env["HOME"] == nil && env["AWS_SECRET_ACCESS_KEY"] == nil && env["TRELLIS_METRICS"] == nil)
        #expect(c["env"]!.array!.contains { $0["name"] == "MY_NODE_NAME" && $0[path: "valueFrom", "fieldRef", "fieldPath"] == "spec.nodeName" })
        let vols = pod["volumes"]!.array!
        #expect(vols[0][path: "persistentVolumeClaim", "claimName"] == "house-prices")
        #expect(c["volumeMounts"]!.array![0]["mountPath"] == "/var/run")
        #expect(vols[1][path: "configMap", "name"]?.string == KubeNaming.runObjectName(runID: l.runID, suffix: "code"))
        let items = vols[1][path: "configMap", "items"]!.array!
        #expect(items.contains { $0["path"] == "code/pipeline.py" && $0["key"]?.string == KubeStepObjects.codeKey("pipeline.py") })
        let labels = job[path: "spec", "template", "metadata", "labels"]
        #expect(labels?["trellis.io/run"] == "house-prices-20261203-0830-ab12")
        #expect(labels?["trellis.io/step"] == "train")
        // The executor names it per attempt and fallback.
        let ex = KubernetesExecutor(
            client: KubeClient(transport: RecordingTransport { _ in KubeResponse(status: 200, body: Data()) }, namespace: "ns"),
            jobFactory: { KubeStepObjects.job(for: $0, affinity: $1, settings: settings) })
        #expect(ex.jobBody(l, affinity: .preferred(node: "node-b"), fallback: true)[path: "metadata", "name"]?.string
            == KubeNaming.jobName(runID: l.runID, step: "train", attempt: 1, fallback: true))
    }

    @Test func renderedStepJobAdaptedForTheLauncher() throws {
        let spec = try FlowSpec.load(
            yaml: """
                name: hp
                steps:
                  - {name: train, python: {file: pipeline.py, function: train}, inputs: [x_train, y_train], outputs: [model], retries: 2, timeout: 60}
                """, baseDirectory: "/flows")
        var l = launch(step: spec.steps[0], attempt: 2)
        l.runID = "hp-1"
        let settings = KubeRunSettings(image: "reg/step:1", dataset: "hp")
        for (a, kind) in [(NodeAffinity.required(node: "node-b"), "required"), (.preferred(node: "node-b"), "preferred")] {
            let job = try KubeLaunchObjects.job(flow: spec, launch: l, affinity: a, namespace: "ns", settings: settings)
            #expect(job[path: "spec", "backoffLimit"] == 0)  // the runner retries, not the Job
            let pod = job[path: "spec", "template", "spec"]!
            #expect(pod["activeDeadlineSeconds"] == nil)
            #expect(pod["restartPolicy"] == "Never")
            let na = pod[path: "affinity", "nodeAffinity"]!
            if kind == "required" {
                let fields = na["requiredDuringSchedulingIgnoredDuringExecution"]?["nodeSelectorTerms"]?.array?.first?["matchFields"]
                #expect(fields == KubeAffinity.nodeNameTerm("node-b")["matchFields"])
                #expect(na["preferredDuringSchedulingIgnoredDuringExecution"] == nil)
            } else {
                #expect(
                    na["preferredDuringSchedulingIgnoredDuringExecution"]?.array?.first?["preference"] == KubeAffinity.nodeNameTerm("node-b"))
            }
            let env = pod["containers"]!.array![0]["env"]!.array!
            func value(_ k: String) -> String? { env.first { $0["name"]?.string == k }?["value"]?.string }
            #expect(value("TRELLIS_ATTEMPT") == "2")
            #expect(value("TRELLIS_REPLICA") == "1")
            #expect(value("TRELLIS_FETCH") == "1")
            #expect(value("TRELLIS_STEP") == "train")
            #expect(env.contains { $0["name"] == "MY_NODE_NAME" })
            #expect(job[path: "spec", "template", "metadata", "labels", "trellis.io/run"] == "hp-1")
            #expect(pod["volumes"]!.array!.contains { $0[path: "persistentVolumeClaim", "claimName"] == "hp" })
        }
    }

    @Test func codeConfigMapAndCleanupJob() throws {
        let spec = try FlowSpec.load(
            yaml: """
                name: f
                steps:
                  - {name: a, python: {file: sub/p.py, function: a}, outputs: [x]}
                  - {name: b, python: {file: sub/p.py, function: b}, inputs: [x]}
                """, baseDirectory: "/flows")
        let cm = try KubeStepObjects.codeConfigMap(runID: "r1", spec: spec) { path in
            #expect(path == "/flows/sub/p.py")
            return "def a(): pass\n"
        }
        #expect(cm["kind"] == "ConfigMap")
        #expect(cm[path: "data", KubeStepObjects.codeKey("sub/p.py")] == "def a(): pass\n")
        #expect(cm[path: "data", "trellis_step.py"]?.string == PythonBootstrap.source)
        #expect(KubeStepObjects.codeKey("sub/p.py").range(of: "^[-._a-zA-Z0-9]+$", options: .regularExpression) != nil)
        let settings = KubeRunSettings(dataset: "ds")
        let rm = KubeStepObjects.cleanupJob(runID: "r1", node: "node-a", names: ["r1/x", "r1/x@r0"], settings: settings)
        let pod = rm[path: "spec", "template", "spec"]!
        #expect(pod["affinity"] == NodeAffinity.required(node: "node-a").podAffinity)
        let env = pod["containers"]!.array![0]["env"]!.array!
        #expect(env.contains { $0["name"] == "TRELLIS_DELETE" && $0["value"] == "r1/x\nr1/x@r0" })
        #expect(rm[path: "metadata", "labels", "trellis.io/run"] == "r1")
    }
}

// MARK: - The executor against a scripted API server

/// A tiny in-memory API server: Jobs → one pod each, whose fate a script decides.
final class ScriptedCluster: Sendable {
    enum Fate: Sendable { case unschedulableIfRequired, exit(Int), hang, evicted }
    final class State: Sendable {
        let s = Mutex<(jobs: [String: KubeValue], deleted: [String], polls: Int)>(([:], [], 0))
        func withLock<T>(_ body: (inout (jobs: [String: KubeValue], deleted: [String], polls: Int)) -> T) -> T {
            s.withLock { body(&$0) }
        }
    }
    let state = State()
    let transport: RecordingTransport

    init(fate: @escaping @Sendable (String) -> Fate) {
        let state = self.state
        transport = RecordingTransport { r in Self.answer(r, state: state, fate: fate) }
    }

    static func answer(_ r: KubeRequest, state: State, fate: @Sendable (String) -> Fate) -> KubeResponse {
        if r.method == "POST", r.path.hasSuffix("/jobs") {
            let job = try! KubeValue.parse(json: Data(r.body!.utf8))
            let name = job[path: "metadata", "name"]!.string!
            return state.withLock { s in
                if s.jobs[name] != nil { return RecordingTransport.json(["kind": "Status", "reason": "AlreadyExists", "code": 409], status: 409) }
                s.jobs[name] = job
                return RecordingTransport.json(job, status: 201)
            }
        }
        if r.method == "DELETE", r.path.contains("/jobs/") {
            let name = String(r.path.split(separator: "/").last!)
            state.withLock { s in
                s.jobs[name] = nil
                s.deleted.append(name)
            }
            return RecordingTransport.json(["kind": "Status", "status": "Success"])
        }
        if r.method == "GET", r.path.hasSuffix("/pods"), let sel = r.queryValue("labelSelector") {
            let name = String(sel.dropFirst("job-name=".count))
            guard let (job, polls) = state.withLock({ s -> (KubeValue, Int)? in
                s.polls += 1
                return s.jobs[name].map { ($0, s.polls) }
            }) else {
                return RecordingTransport.json(["items": []])
            }
            let required = job[path: "spec", "template", "spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"] != nil
            let status: KubeValue
            switch fate(name) {
            case .unschedulableIfRequired where required:
                status = ["phase": "Pending", "conditions": [["type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes are available"]]]
            case .unschedulableIfRequired: status = ["phase": "Succeeded", "containerStatuses": [["name": "step", "state": ["terminated": ["exitCode": 0]]]]]
            case .exit(let code):
                status = ["phase": code == 0 ? "Succeeded" : "Failed", "containerStatuses": [["name": "step", "state": ["terminated": ["exitCode": .int(code)]]]]]
            case .hang: status = ["phase": "Running"]
            case .evicted:
                if polls > 1 { return RecordingTransport.json(["items": []]) }
                status = ["phase": "Running"]
            }
            return RecordingTransport.json(["items": [["metadata": ["name": .string(name + "-pod")], "spec": ["nodeName": "node-a"], "status": status]]])
        }
        if r.method == "GET", r.path.contains("/jobs/") {
            let name = String(r.path.split(separator: "/").last!)
            guard var job = state.withLock({ $0.jobs[name] }) else {
                return RecordingTransport.json(["kind": "Status", "reason": "NotFound", "code": 404], status: 404)
            }
            job.set("status", ["conditions": [["type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "pod evicted"]]])
            return RecordingTransport.json(job)
        }
        if r.path.hasSuffix("/log") { return KubeResponse(status: 200, body: Data("hello from \(r.path)\n".utf8)) }
        if r.path.hasSuffix("/events") {
            return RecordingTransport.json(["items": [["reason": "FailedScheduling", "message": "0/2 nodes are available: 1 Insufficient memory"]]])
        }
        return RecordingTransport.json(["kind": "Status", "reason": "NotFound", "code": 404], status: 404)
    }

    func executor() -> KubernetesExecutor {
        KubernetesExecutor(
            client: KubeClient(transport: transport, namespace: "ns"),
            jobFactory: { KubeStepObjects.job(for: $0, affinity: $1, settings: KubeRunSettings(dataset: "ds")) },
            pollInterval: (0.01, 0.05))
    }
}

@Suite(.onBlockingPool) struct KubernetesExecutorTests {
    @Test func successCopiesTheLogAndDeletesTheJob() async throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cluster = ScriptedCluster { _ in .exit(0) }
        let exit = try await cluster.executor().run(launch(step: trainStep, dir: dir))
        #expect(exit.status == ExitStatus(code: 0, signal: nil))
        #expect(!exit.timedOut && !exit.cancelled && exit.message == nil)
        let name = KubeNaming.jobName(runID: "house-prices-20261203-0830-ab12", step: "train", attempt: 1)
        let sent = cluster.transport.sent
        #expect(sent.first?.method == "POST")
        let body = try KubeValue.parse(json: Data(sent.first!.body!.utf8))
        #expect(body[path: "metadata", "name"]?.string == name)
        #expect(body[path: "spec", "template", "spec", "affinity"] == NodeAffinity.required(node: "node-b").podAffinity)
        #expect(sent.contains { $0.path.hasSuffix("/pods/\(name)-pod/log") })
        #expect(cluster.state.withLock { $0.deleted } == [name])
        #expect(try String(contentsOfFile: dir + "/out.log", encoding: .utf8).contains("hello from"))
    }

    @Test func failureMapsTheExitCode() async throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let exit = try await ScriptedCluster { _ in .exit(3) }.executor().run(launch(step: trainStep, dir: dir))
        #expect(exit.status == ExitStatus(code: 3, signal: nil))
    }

    @Test func unschedulableFallsBackToPreferredOnce() async throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cluster = ScriptedCluster { _ in .unschedulableIfRequired }
        let exit = try await cluster.executor().run(launch(step: trainStep, dir: dir))
        #expect(exit.status.succeeded)
        #expect(exit.message?.contains("required affinity to node node-b was unschedulable") == true)
        #expect(exit.message?.contains("Insufficient memory") == true)
        #expect(exit.message?.contains("ran on node node-a") == true)
        let creates = cluster.transport.sent.filter { $0.method == "POST" }.map { try! KubeValue.parse(json: Data($0.body!.utf8)) }
        #expect(creates.count == 2)
        #expect(creates[0][path: "spec", "template", "spec", "affinity"] == NodeAffinity.required(node: "node-b").podAffinity)
        #expect(creates[1][path: "spec", "template", "spec", "affinity"] == NodeAffinity.preferred(node: "node-b").podAffinity)
        #expect(creates[1][path: "metadata", "name"]?.string?.hasSuffix("-1p") == true)
        let deleted = cluster.state.withLock { $0.deleted }
        #expect(deleted.count == 2)  // the required one, then the finished preferred one
        #expect(try String(contentsOfFile: dir + "/err.log", encoding: .utf8).contains("resubmitted with preferred affinity"))
    }

    @Test func timeoutDeletesTheJob() async throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cluster = ScriptedCluster { _ in .hang }
        let exit = try await cluster.executor().run(launch(step: trainStep, timeout: 0.3, dir: dir))
        #expect(exit.timedOut)
        #expect(cluster.state.withLock { $0.deleted }.count == 1)
    }

    @Test func cancellationDeletesTheJob() async throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cluster = ScriptedCluster { _ in .hang }
        let ex = cluster.executor()
        let l = launch(step: trainStep, dir: dir)
        let task = Task.onBlockingPool { try await ex.run(l) }
        // Wait (bounded) until the executor has read the pod at least once, then cancel.
        for _ in 0..<2000 where cluster.state.withLock({ $0.polls }) == 0 { try await Task.sleep(for: .milliseconds(5)) }
        task.cancel()
        let exit = try await task.value
        #expect(exit.cancelled)
        #expect(cluster.state.withLock { $0.deleted } == [KubeNaming.jobName(runID: l.runID, step: "train", attempt: 1)])
        let deletes = cluster.transport.sent.filter { $0.method == "DELETE" }
        #expect(deletes.count == 1)
        #expect(try KubeValue.parse(json: Data(deletes[0].body!.utf8))["propagationPolicy"] == "Background")
    }

    @Test func aVanishedPodEndsTheAttemptWithTheJobsReason() async throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cluster = ScriptedCluster { _ in .evicted }
        let exit = try await cluster.executor().run(launch(step: trainStep, dir: dir))
        #expect(!exit.status.succeeded)
        #expect(exit.message?.contains("BackoffLimitExceeded") == true)
    }

    @Test func resumeInvocationsGetTheirOwnJobNames() {
        let a = KubeNaming.jobName(runID: "r", step: "s", attempt: 1)
        #expect(KubeNaming.jobName(runID: "r", step: "s", attempt: 1, invocation: 1) != a)
        #expect(KubeNaming.jobName(runID: "r", step: "s", attempt: 1, invocation: 1) != KubeNaming.jobName(runID: "r", step: "s", attempt: 1, invocation: 2))
    }

    @Test func noNodeMeansNoAffinity() async throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cluster = ScriptedCluster { _ in .exit(0) }
        _ = try await cluster.executor().run(launch(step: trainStep, node: nil, dir: dir))
        let body = try KubeValue.parse(json: Data(cluster.transport.sent[0].body!.utf8))
        #expect(body[path: "spec", "template", "spec", "affinity"] == nil)
    }
}
