import Testing
@testable import TrellisFlow

@Suite struct ModelTests {
    let sample = """
        name: demo
        runtime: {replicas: 2, size: 512Mi, medium: spill, spill_dir: /tmp/spill}
        max_parallel: 3
        steps:
          - name: gen
            python: {file: steps.py, function: generate}
            outputs: [df]
          - name: prep
            command: python3 prep.py --note "a b" '$HOME'
            inputs: [df]
            outputs: [x, y]
            env: {MODE: fast}
            retries: 2
            retry_delay: 500ms
            timeout: 5m
          - name: train
            swift: {executable: .build/release/train, arguments: [--epochs, "3"]}
            inputs: [x, y]
            after: [gen]
        """

    @Test func loadsEveryField() throws {
        let spec = try FlowSpec.load(yaml: sample, baseDirectory: "/work/flows")
        #expect(spec.name == "demo")
        #expect(spec.runtime == RuntimeSpec(replicas: 2, size: "512Mi", medium: .spill, spillDirectory: "/tmp/spill"))
        #expect(spec.runtime.sizeInBytes == 512 << 20)
        #expect(spec.maxParallel == 3)
        #expect(spec.baseDirectory == "/work/flows")
        #expect(spec.steps.count == 3)
        #expect(spec.steps[0].action == .python(PythonTarget(file: "steps.py", function: "generate")))
        // Split like a shell, never expanded.
        #expect(spec.steps[1].action == .command(["python3", "prep.py", "--note", "a b", "$HOME"]))
        #expect(spec.steps[1].env == ["MODE": "fast"])
        #expect(spec.steps[1].retries == 2)
        #expect(spec.steps[1].retryDelay == 0.5)
        #expect(spec.steps[1].timeout == 300)
        #expect(spec.steps[2].action == .swift(SwiftTarget(executable: ".build/release/train", arguments: ["--epochs", "3"])))
        #expect(spec.steps[2].after == ["gen"])
        #expect(spec.issues().isEmpty)
    }

    @Test func yamlRoundTrips() throws {
        let spec = try FlowSpec.load(yaml: sample, baseDirectory: "/work/flows")
        let again = try FlowSpec.load(yaml: try spec.yaml())
        #expect(again == spec)
    }

    @Test func commandListAndNumbers() throws {
        let spec = try FlowSpec.load(yaml: """
            runtime: {size: 1048576}
            steps:
              - {name: a, command: [echo, "$x"], timeout: 2.5}
            """)
        #expect(spec.name == "flow")
        #expect(spec.runtime.size == "1048576")
        #expect(spec.steps[0].action == .command(["echo", "$x"]))
        #expect(spec.steps[0].timeout == 2.5)
    }

    @Test func unknownKeysAreRejected() {
        #expect {
            _ = try FlowSpec.load(yaml: "steps:\n  - {name: a, command: ls, ouputs: [x]}\n")
        } throws: { error in
            "\(error)".contains("step 'a'") && "\(error)".contains("unknown key 'ouputs'")
        }
        #expect(throws: FlowSpecError.self) { _ = try FlowSpec.load(yaml: "stepz: []\n") }
    }

    @Test func stepPodAdditionsLoadRoundTripAndValidate() throws {
        let yaml = """
            steps:
              - name: a
                command: ls
                kubernetes:
                  image: python:3.11
                  packages: [numpy]
                  volumes: [{name: data, persistentVolumeClaim: {claimName: pvc, readOnly: true}}]
                  volume_mounts: [{name: data, mountPath: /data}]
            """
        let spec = try FlowSpec.load(yaml: yaml)
        let pod = try #require(spec.steps[0].kubernetes)
        #expect(pod.image == "python:3.11" && pod.packages == ["numpy"])
        #expect(pod.volumes == [["name": "data", "persistentVolumeClaim": ["claimName": "pvc", "readOnly": true]]])
        #expect(pod.volumeMounts == [["mountPath": "/data", "name": "data"]])  // keys sorted
        #expect(try FlowSpec.load(yaml: try spec.yaml()) == spec)
        #expect(spec.issues().isEmpty)

        var broken = spec
        broken.steps[0].kubernetes?.volumes.append(["name": "trellis-code", "emptyDir": [:]])
        broken.steps[0].kubernetes?.volumeMounts.append(["name": "ghost", "mountPath": "/trellis"])
        let kinds = broken.issues().map(\.kind)
        #expect(kinds == [.invalidKubernetes, .invalidKubernetes, .invalidKubernetes])
        #expect(throws: FlowSpecError.self) {
            _ = try FlowSpec.load(yaml: "steps:\n  - {name: a, command: ls, kubernetes: {volume: []}}\n")
        }
    }

    @Test func twoActionsNameTheStep() {
        #expect {
            _ = try FlowSpec.load(yaml: "steps:\n  - {name: both, command: ls, python: {file: a.py}}\n")
        } throws: { error in
            "\(error)".contains("step 'both'") && "\(error)".contains("exactly one")
        }
    }

    @Test func badDurationAndQuote() {
        #expect(throws: FlowSpecError.self) {
            _ = try FlowSpec.load(yaml: "steps:\n  - {name: a, command: ls, timeout: soon}\n")
        }
        #expect(throws: FlowSpecError.self) {
            _ = try FlowSpec.load(yaml: "steps:\n  - {name: a, command: \"echo 'oops\"}\n")
        }
    }

    @Test func sizesAndDurations() {
        #expect(ByteSize.parse("30Gi") == 30 << 30)
        #expect(ByteSize.parse("2G") == 2 << 30)
        #expect(ByteSize.parse("1.5k") == 1536)
        #expect(ByteSize.parse("4096") == 4096)
        #expect(ByteSize.parse("0") == nil)
        #expect(ByteSize.parse("lots") == nil)
        #expect(ByteSize.format(1536) == "1.5 KiB")
        #expect(ByteSize.format(12) == "12 B")
        #expect(DurationText.parse("250ms") == 0.25)
        #expect(DurationText.parse("2m") == 120)
        #expect(DurationText.parse("1h") == 3600)
        #expect(DurationText.parse("7") == 7)
        #expect(DurationText.parse("x") == nil)
    }

    @Test func commandSplitting() throws {
        #expect(try CommandLineSplitter.split(#"a "b c" d\ e 'f"g' "h\"i" `x` $y"#) == ["a", "b c", "d e", #"f"g"#, #"h"i"#, "`x`", "$y"])
        #expect(try CommandLineSplitter.split("  ") == [])
        #expect(try CommandLineSplitter.split("''") == [""])
    }
}

@Suite struct ValidationTests {
    func kinds(_ spec: FlowSpec) -> [FlowIssue.Kind] { spec.issues().map(\.kind) }

    @Test func validFlowHasNoIssues() throws {
        let spec = FlowSpec(steps: [
            .command("a", ["true"], outputs: ["x"]),
            .command("b", ["true"], inputs: ["x"], outputs: ["y"]),
            .command("c", ["true"], inputs: ["x", "y"], after: ["a"]),
        ])
        try spec.validate()
    }

    @Test func emptyFlow() {
        #expect(kinds(FlowSpec(steps: [])) == [.noSteps])
    }

    @Test func missingCommandNamesTheStep() {
        let spec = FlowSpec(steps: [StepSpec(name: "lonely", action: nil), .command("e", [])])
        let issues = spec.issues()
        #expect(issues.map(\.kind) == [.missingCommand, .emptyCommand])
        #expect(issues[0].step == "lonely")
        #expect(issues[0].message.contains("'lonely'"))
        #expect(issues[1].step == "e")
    }

    @Test func unknownInput() {
        let spec = FlowSpec(steps: [.command("train", ["true"], inputs: ["x_trian"])])
        let issue = spec.issues().first
        #expect(issue?.kind == .unknownInput)
        #expect(issue?.step == "train")
        #expect(issue?.message.contains("'x_trian'") == true)
    }

    @Test func twoProducers() {
        let spec = FlowSpec(steps: [
            .command("a", ["true"], outputs: ["x"]),
            .command("b", ["true"], outputs: ["x"]),
        ])
        let issue = spec.issues().first
        #expect(issue?.kind == .duplicateOutput)
        #expect(issue?.step == "b")
        #expect(issue?.message == "steps 'a' and 'b' both produce 'x'")
    }

    @Test func cycleThroughObjectsAndAfter() {
        let spec = FlowSpec(steps: [
            .command("a", ["true"], inputs: ["z"], outputs: ["x"]),
            .command("b", ["true"], inputs: ["x"], outputs: ["y"]),
            .command("c", ["true"], outputs: ["z"], after: ["b"]),
            .command("d", ["true"]),
        ])
        let issues = spec.issues()
        #expect(issues.map(\.kind) == [.cycle])
        #expect(issues[0].step == "a")
        #expect(issues[0].message == "steps form a cycle: 'a' -> 'b' -> 'c' -> 'a'")
    }

    @Test func selfAndUnknownAfterAndDuplicates() {
        let spec = FlowSpec(steps: [
            .command("a", ["true"], inputs: ["x"], outputs: ["x"]),
            .command("b", ["true"], after: ["b", "nope"]),
            .command("b", ["true"]),
            .command("bad name", ["true"]),
        ])
        let k = kinds(spec)
        #expect(k.contains(.selfDependency))
        #expect(k.contains(.unknownAfter))
        #expect(k.contains(.duplicateStep))
        #expect(k.contains(.invalidStepName))
    }

    @Test func runtimeAndLimits() {
        var spec = FlowSpec(
            runtime: RuntimeSpec(replicas: 0, size: "huge", medium: .spill), maxParallel: 0,
            steps: [.command("a", ["true"], retries: -1, timeout: 0)])
        let k = kinds(spec)
        #expect(k.filter { $0 == .invalidRuntime }.count == 3)
        #expect(k.contains(.invalidParallelism))
        #expect(k.contains(.invalidRetries))
        #expect(k.contains(.invalidTimeout))
        spec.steps[0].action = .python(PythonTarget(file: "a.py", function: "not-ident"))
        #expect(kinds(spec).contains(.emptyCommand))
    }

    @Test func errorListsEveryIssue() {
        let spec = FlowSpec(steps: [StepSpec(name: "a", action: nil), .command("b", ["true"], inputs: ["q"])])
        #expect {
            try spec.validate()
        } throws: { error in
            guard let e = error as? FlowValidationError else { return false }
            return e.issues.count == 2 && e.description.contains("'a'") && e.description.contains("'q'")
        }
    }
}

@Suite struct GraphTests {
    @Test func dependenciesAndOrder() throws {
        let spec = FlowSpec(steps: [
            .command("test", ["true"], inputs: ["model", "x_test"]),
            .command("train", ["true"], inputs: ["x_train"], outputs: ["model"]),
            .command("prep", ["true"], inputs: ["df"], outputs: ["x_train", "x_test"]),
            .command("gen", ["true"], outputs: ["df"]),
            .command("report", ["true"], after: ["test"]),
        ])
        let g = try FlowGraph(spec)
        #expect(g.dependencies["test"] == ["train", "prep"])
        #expect(g.topologicalOrder == ["gen", "prep", "train", "test", "report"])
        #expect(g.downstream(of: ["prep"]) == ["train", "test", "report"])
        #expect(g.upstream(of: "train") == ["prep", "gen"])
        #expect(g.producer["model"] == "train")
    }
}
