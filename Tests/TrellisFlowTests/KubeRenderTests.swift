import Foundation
import Testing
@testable import TrellisFlow

@Suite struct KubeRenderTests {
    static func py(_ name: String, inputs: [String] = [], outputs: [String] = [], env: [String: String] = [:])
        -> StepSpec
    {
        StepSpec(
            name: name, action: .python(PythonTarget(file: "steps.py", function: name)), env: env, inputs: inputs,
            outputs: outputs)
    }

    /// source → (square, cube) → join → report(+source)
    static let fanIn = FlowSpec(
        name: "fan-in", runtime: RuntimeSpec(replicas: 2, size: "512Mi"),
        steps: [
            py("source", outputs: ["numbers"]),
            py("square", inputs: ["numbers"], outputs: ["squares"]),
            py("cube", inputs: ["numbers"], outputs: ["cubes"]),
            py("join", inputs: ["squares", "cubes"], outputs: ["total"]),
            py("report", inputs: ["total", "numbers"]),
        ])

    static let chain = FlowSpec(
        name: "hp", steps: [
            py("generate", outputs: ["df"]),
            py("preprocess", inputs: ["df"], outputs: ["x", "y"]),
            py("train", inputs: ["x"], outputs: ["model"]),
            py("test", inputs: ["y", "model"]),
        ])

    // MARK: names

    @Test func validNamesAreKeptOthersGetAStableHashSuffix() {
        #expect(KubeNames.dnsLabel("house-prices") == "house-prices")
        let a = KubeNames.dnsLabel("My_Step.v2")
        #expect(KubeNames.isDNSLabel(a))
        #expect(a.hasPrefix("my-step-v2-"))
        #expect(a == KubeNames.dnsLabel("My_Step.v2"))  // stable
        #expect(a != KubeNames.dnsLabel("my-step-v2"))  // sanitising never merges two names
        #expect(KubeNames.dnsLabel("my-step-v2") == "my-step-v2")
        #expect(KubeNames.hash8("abc") == KubeNames.hash8("abc"))
        #expect(KubeNames.hash8("abc").count == 8)
        #expect(KubeNames.hash8("") == "cbf29ce4")  // FNV-1a offset basis: the hash is fixed, not per-process
        let long = String(repeating: "step", count: 20)
        let short = KubeNames.dnsLabel(long, maxLength: 43)
        #expect(short.count <= 43 && KubeNames.isDNSLabel(short, maxLength: 43))
        #expect(short.hasSuffix("-" + KubeNames.hash8(long)))
        #expect(KubeNames.dnsLabel("___").hasPrefix("x-"))
    }

    @Test func dataProcessNamesFitFluidsLimit() {
        let n = KubeRender.dataProcessName(runID: "linear-regression-with-vineyard", step: "preprocess")
        #expect(n.count <= KubeNames.maxDataProcess)
        #expect(KubeNames.isDNSLabel(n))
        #expect(KubeRender.dataProcessName(runID: "hp", step: "train") == "hp-train")
        #expect(
            KubeRender.dataProcessName(runID: "linear-regression-with-vineyard", step: "preprocess")
                != KubeRender.dataProcessName(runID: "linear-regression-with-vineyard", step: "preprocesS"))
    }

    @Test func labelValuesKeepCaseAndDotsButNotLeadingSymbols() {
        #expect(KubeNames.labelValue("Train_v1.2") == "Train_v1.2")
        let v = KubeNames.labelValue("-x-")
        #expect(KubeNames.isLabelValue(v) && v.hasPrefix("x-"))
        let long = KubeNames.labelValue(String(repeating: "a", count: 70))
        #expect(long.count <= 63 && KubeNames.isLabelValue(long))
        #expect(KubeNames.configMapKey("pipeline.py") == "pipeline.py")
        let k = KubeNames.configMapKey("sub dir/x.py")
        #expect(k.hasPrefix("sub_dir_x.py-"))
    }

    @Test func quantitiesAndImages() {
        #expect(KubeRender.quantity(bytes: 2 << 30) == "2Gi")
        #expect(KubeRender.quantity(bytes: 1536 << 20) == "1536Mi")
        #expect(KubeRender.quantity(bytes: 1000) == "1000")
        #expect(KubeRender.workerMemory(sizeBytes: 30 << 30) == "31220Mi")  // Fluid's 30Gi → 31220Mi
        #expect(KubeRender.splitImage("trellis") == ("trellis", "latest"))
        #expect(KubeRender.splitImage("reg:5000/ml/trellis:1.2") == ("reg:5000/ml/trellis", "1.2"))
        #expect(KubeRender.splitImage("reg:5000/ml/trellis") == ("reg:5000/ml/trellis", "latest"))
    }

    // MARK: affinity

    @Test func affinityShapes() {
        #expect(KubeAffinity.podAffinity(.none) == nil)
        let term: KubeValue = ["matchFields": [["key": "metadata.name", "operator": "In", "values": ["n1"]]]]
        #expect(
            KubeAffinity.podAffinity(.requiredNode("n1"))
                == ["nodeAffinity": ["requiredDuringSchedulingIgnoredDuringExecution": ["nodeSelectorTerms": [term]]]])
        #expect(
            KubeAffinity.podAffinity(.preferredNode("n1"))
                == ["nodeAffinity": ["preferredDuringSchedulingIgnoredDuringExecution": [["weight": 100, "preference": term]]]])
        // A worker-label requirement is ANDed into the same term as the node.
        let both = KubeAffinity.podAffinity(.requiredNode("n1"), requiredLabel: ("fluid.io/s-ns-d", "true"))
        let terms = both?[path: "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms"]?.array
        #expect(terms?.count == 1)
        #expect(terms?.first?["matchFields"] == term["matchFields"])
        #expect(terms?.first?["matchExpressions"] == [["key": "fluid.io/s-ns-d", "operator": "In", "values": ["true"]]])
        // Preferred node plus label: the label stays required, the node preferred.
        let soft = KubeAffinity.podAffinity(.preferredNode("n1"), requiredLabel: ("k", "true"))
        #expect(soft?[path: "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"] != nil)
        #expect(soft?[path: "nodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution"] != nil)
    }

    // MARK: DAG

    @Test func fluidOrderKeepsCoveredFanInAndChainsTrueFanIn() throws {
        let hp = KubeRender.fluidOrder(graph: try FlowGraph(Self.chain))
        #expect(!hp.chained)
        #expect(hp.runAfter == ["preprocess": "generate", "train": "preprocess", "test": "train"])
        let fan = KubeRender.fluidOrder(graph: try FlowGraph(Self.fanIn))
        #expect(fan.chained && fan.chainedBecauseOf == "join")
        #expect(fan.runAfter == ["square": "source", "cube": "square", "join": "cube", "report": "join"])
        // Pure fan-out keeps its parallelism.
        let out = FlowSpec(steps: [
            Self.py("a", outputs: ["x"]), Self.py("b", inputs: ["x"]), Self.py("c", inputs: ["x"]),
        ])
        let o = KubeRender.fluidOrder(graph: try FlowGraph(out))
        #expect(!o.chained && o.runAfter == ["b": "a", "c": "a"])
    }

    @Test func argoDependenciesAndPlacementFollowTheGraph() throws {
        let g = try FlowGraph(Self.fanIn)
        let wf = try KubeRender.argoWorkflow(
            flow: Self.fanIn, graph: g, namespace: "ns", stepImage: "img", runID: "{{workflow.name}}")
        let tasks = wf[path: "spec", "templates"]?.array?.first?[path: "dag", "tasks"]?.array ?? []
        var deps: [String: [String]] = [:]
        for t in tasks { deps[t["name"]!.string!] = t["dependencies"]?.array?.compactMap(\.string) ?? [] }
        #expect(deps == ["source": [], "square": ["source"], "cube": ["source"], "join": ["square", "cube"], "report": ["source", "join"]])
        func placement(_ s: String) -> KubeRender.ArgoPlacement? {
            KubeRender.argoPlacement(step: Self.fanIn.step(named: s)!, graph: g)
        }
        #expect(placement("source") == nil)
        #expect(placement("square") == .init(producer: "source", required: true))
        #expect(placement("join") == .init(producer: "cube", required: false))
        let join = tasks.first { $0["name"] == "join" }
        #expect(join?[path: "arguments", "parameters"] == [["name": "node", "value": "{{tasks.cube.hostNodeName}}"]])
    }

    // MARK: env and container

    @Test func stepEnvSetsTheRunsNamesAndKeepsTheStepsOwn() {
        let step = Self.py("train", inputs: ["x"], outputs: ["model"], env: ["B": "2", "A": "1", "TRELLIS_RUN_ID": "mine", "PYTHONPATH": "/opt/lib"])
        let env = KubeRender.stepEnv(step: step, runID: "run-1", socket: "/s.sock")
        #expect(env.map(\.name) == [
            "A", "B", "VINEYARD_IPC_SOCKET", "TRELLIS_RUN_ID", "TRELLIS_STEP", "TRELLIS_NAME_PREFIX", "TRELLIS_INPUTS",
            "TRELLIS_OUTPUTS", "TRELLIS_LOCAL_COPIES", "PYTHONPATH", "PYTHONUNBUFFERED",
        ])
        let d = Dictionary(uniqueKeysWithValues: env.map { ($0.name, $0.value) })
        #expect(d["TRELLIS_RUN_ID"] == "run-1")
        #expect(d["TRELLIS_LOCAL_COPIES"] == "[]")  // nothing moves a copy: no local lookups
        #expect(d["TRELLIS_NAME_PREFIX"] == ObjectNaming.prefix(runID: "run-1"))
        #expect(d["PYTHONPATH"] == "/trellis/lib:/opt/lib")
        #expect(d["VINEYARD_IPC_SOCKET"] == "/s.sock")
    }

    @Test func commandsNeverGoThroughAShell() throws {
        var s = Self.py("a")
        s.workdir = "sub"
        #expect(try KubeRender.stepCommand(step: s) == [
            "python3", "/trellis/lib/trellis_step.py", "--file", "/trellis/code/sub/steps.py", "--function", "a",
        ])
        #expect(try KubeRender.stepWorkingDirectory(step: s) == "/trellis/code/sub")
        // A relative interpreter names a file of this machine: python3 in the image instead.
        s.action = .python(PythonTarget(file: "../x.py", interpreter: ".venv/bin/python"))
        #expect(try KubeRender.stepCommand(step: s) == ["python3", "/trellis/lib/trellis_step.py", "--file", "/trellis/code/x.py"])
        s.action = .python(PythonTarget(file: "../../x.py"))
        #expect(throws: KubeRenderError.self) { try KubeRender.stepCommand(step: s) }
        s.workdir = nil
        s.action = .python(PythonTarget(file: "/opt/app/x.py", interpreter: "python3.11"))
        #expect(try KubeRender.stepCommand(step: s) == ["python3.11", "/trellis/lib/trellis_step.py", "--file", "/opt/app/x.py"])
        s.action = .command(["sh", "-c", "echo $HOME"])
        #expect(try KubeRender.stepCommand(step: s) == ["sh", "-c", "echo $HOME"])
        s.action = .swift(SwiftTarget(executable: "train", arguments: ["--fast"]))
        #expect(try KubeRender.stepCommand(step: s) == ["train", "--fast"])
        let entries = try KubeRender.codeEntries(flow: FlowSpec(steps: [s, Self.py("b")]))
        #expect(entries.map(\.key) == ["trellis-bootstrap.py", "steps.py"])
        #expect(entries.map(\.path) == ["lib/trellis_step.py", "code/steps.py"])
    }

    @Test func stepJobIsARunToCompletionPodWithTheSocketAndRetries() throws {
        var step = Self.fanIn.step(named: "join")!
        step.retries = 2
        step.timeout = 90.5
        let job = try KubeRender.stepJob(
            flow: Self.fanIn, step: step, runID: "r1", namespace: "ml", image: "img", affinity: .requiredNode("n3"))
        #expect(job["kind"] == "Job" && job[path: "metadata", "name"] == "r1-join")
        #expect(job[path: "spec", "backoffLimit"] == 2)
        let pod = job[path: "spec", "template", "spec"]
        #expect(pod?["restartPolicy"] == "Never")
        #expect(pod?["activeDeadlineSeconds"] == 91)
        #expect(pod?["affinity"] == KubeAffinity.podAffinity(.requiredNode("n3")))
        let env = pod?["containers"]?.array?.first?["env"]?.array ?? []
        #expect(env.contains(["name": "VINEYARD_IPC_SOCKET", "value": "/var/run/trellis/vineyard-worker.sock"]))
        #expect(pod?["volumes"]?.array?.contains { $0["name"] == "trellis-socket" } == true)
        // On a Fluid cluster the Job mounts the Dataset's PVC at /var/run instead.
        let fluid = try KubeRender.stepJob(
            flow: Self.fanIn, step: step, runID: "r1", namespace: "ml", image: "img", data: .fluidDataset("fan-in"))
        let vols = fluid[path: "spec", "template", "spec", "volumes"]?.array ?? []
        #expect(vols.contains(["name": "fluid-dataset-vol", "persistentVolumeClaim": ["claimName": "fan-in"]]))
    }

    @Test func dataProcessCarriesRunAfterAndNoScriptProcessor() throws {
        let dp = try KubeRender.stepDataProcess(
            flow: Self.fanIn, step: Self.fanIn.step(named: "square")!, runID: "r1", namespace: "ml", image: "img",
            affinity: .preferredNode("n1"), runAfter: "r1-source")
        #expect(dp[path: "spec", "runAfter"] == ["kind": "DataProcess", "name": "r1-source", "namespace": "ml"])
        #expect(dp[path: "spec", "processor", "script"] == nil)
        #expect(dp[path: "spec", "dataset"] == ["name": "fan-in", "namespace": "ml", "mountPath": "/var/run"])
        #expect(dp[path: "metadata", "labels", "fluid.io/dataflow"] == "r1")
        let pod = dp[path: "spec", "processor", "job", "podSpec"]
        #expect(pod?[path: "affinity", "nodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution"] != nil)
        // No mount of ours at the dataset's path (Fluid adds that one).
        let mounts = pod?["containers"]?.array?.first?["volumeMounts"]?.array ?? []
        #expect(!mounts.contains { $0["mountPath"] == "/var/run" })
    }
}
