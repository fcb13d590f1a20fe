extension StepPod {
    /// Environment the step bootstrap reads to pip install ``packages`` before the step runs.
    public static let pipInstallVariable = "TRELLIS_PIP_INSTALL"
    /// The index for it.
    public static let pipIndexVariable = "TRELLIS_PIP_INDEX_URL"

    /// Adds these to a step's pod spec (the one step container is the first): the image, the
    /// packages' environment, the volume mounts and the volumes. The renderers and the
    /// launcher's Job builder all go through here.
    public func apply(to pod: inout KubeValue) {
        var containers = pod["containers"]?.array ?? []
        if var c = containers.first {
            if let image { c.set("image", .string(image)) }
            if !packages.isEmpty {
                var env = c["env"]?.array ?? []
                env.append(["name": .string(Self.pipInstallVariable), "value": .string(packages.joined(separator: "\n"))])
                if let pipIndexURL { env.append(["name": .string(Self.pipIndexVariable), "value": .string(pipIndexURL)]) }
                c.set("env", .array(env))
            }
            if !volumeMounts.isEmpty { c.set("volumeMounts", .array((c["volumeMounts"]?.array ?? []) + volumeMounts)) }
            containers[0] = c
            pod.set("containers", .array(containers))
        }
        if !volumes.isEmpty { pod.set("volumes", .array((pod["volumes"]?.array ?? []) + volumes)) }
    }
}
