import Foundation

extension FlowCLI {
    /// `trellis flow render FILE --target fluid|argo [--namespace NS] [--image REF]
    /// [--step-image REF] [--etcd-image REF] [--run-id ID] [--out DIR]`.
    ///
    /// Prints every document as one multi-document YAML stream, or writes one file per
    /// document (`NN-kind-name.yaml`) into `out`. Exit 2 for an invalid flow or options,
    /// 1 when the code cannot be read or the files cannot be written.
    ///
    /// With `step`, prints only that step's object as a launcher submits it, with `affinity`:
    /// its DataProcess (fluid, no `runAfter`) or its `batch/v1` Job using the Trellis
    /// DaemonSet's socket (argo's cluster layout).
    public static func render(
        file: String, target: KubeTarget, options: KubeRenderOptions, out: String?, step: String? = nil,
        affinity: StepAffinity = .none
    ) -> Int32 {
        let spec: FlowSpec
        do {
            spec = try FlowSpec.load(file: file)
            try spec.validate()
        } catch {
            printErr("trellis flow render: \(error)")
            return 2
        }
        let docs: [KubeValue]
        do {
            if let step {
                guard let s = spec.step(named: step) else {
                    printErr("trellis flow render: no step '\(step)' in \(file)")
                    return 2
                }
                let runID = options.runID ?? KubeRender.defaultRunID(flow: spec, target: .fluid)
                switch target {
                case .fluid:
                    docs = [
                        try KubeRender.stepDataProcess(
                            flow: spec, step: s, runID: runID, namespace: options.namespace, image: options.stepImage,
                            affinity: affinity)
                    ]
                case .argo:
                    docs = [
                        try KubeRender.stepJob(
                            flow: spec, step: s, runID: runID, namespace: options.namespace, image: options.stepImage,
                            affinity: affinity)
                    ]
                }
            } else {
                docs = try KubeRender.render(flow: spec, target: target, options: options)
            }
        } catch let e as KubeRenderError {
            printErr("trellis flow render: \(e)")
            return e.description.hasPrefix("cannot read") ? 1 : 2
        } catch {
            printErr("trellis flow render: \(error)")
            return 2
        }
        do {
            guard let out else {
                FileHandle.standardOutput.write(Data(try KubeValue.yamlDocuments(docs).utf8))
                return 0
            }
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            for (doc, name) in zip(docs, KubeRender.fileNames(docs)) {
                let path = (out as NSString).appendingPathComponent(name)
                try Data(try doc.yaml().utf8).write(to: URL(fileURLWithPath: path))
            }
            printErr("trellis flow render: wrote \(docs.count) file(s) to \(out)")
            return 0
        } catch {
            printErr("trellis flow render: \(error)")
            return 1
        }
    }
}
