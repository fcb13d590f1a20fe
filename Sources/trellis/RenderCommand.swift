import ArgumentParser
import TrellisFlow

extension FlowCommand {
    struct Render: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a flow as Kubernetes manifests (Fluid DataProcesses, or an Argo Workflow with Trellis as a DaemonSet).")
        @Argument(help: "The flow's YAML file.") var file: String
        @Option(help: "fluid or argo.") var target: String
        @Option(help: "Namespace of every object.") var namespace = "default"
        @Option(help: "The Trellis image (repo[:tag]).") var image = "trellis:latest"
        @Option(name: .customLong("step-image"), help: "The image steps run in (python3 + vineyard client).")
        var stepImage = "trellis-step:latest"
        @Option(name: .customLong("etcd-image"), help: "etcd image for the argo target.")
        var etcdImage = KubeRenderOptions().etcdImage
        @Option(name: .customLong("run-id"), help: "Run id (default: the flow's name for fluid, {{workflow.name}} for argo).")
        var runID: String?
        @Option(help: "Write one file per document into this directory instead of stdout.") var out: String?
        @Option(help: "Only this step's object, as `flow run --on kubernetes` submits it (fluid: its DataProcess; argo: a batch/v1 Job).")
        var step: String?
        @Option(help: "With --step: the node to place it on.") var node: String?
        @Flag(help: "With --node: prefer the node instead of requiring it.") var prefer = false

        func run() throws {
            guard let t = KubeTarget(rawValue: target) else { throw ValidationError("--target must be fluid or argo") }
            let options = KubeRenderOptions(
                namespace: namespace, image: image, stepImage: stepImage, etcdImage: etcdImage, runID: runID)
            if node != nil && step == nil { throw ValidationError("--node needs --step") }
            let affinity: StepAffinity = node.map { prefer ? .preferredNode($0) : .requiredNode($0) } ?? .none
            let s = FlowCLI.render(file: file, target: t, options: options, out: out, step: step, affinity: affinity)
            if s != 0 { throw ExitCode(s) }
        }
    }
}
