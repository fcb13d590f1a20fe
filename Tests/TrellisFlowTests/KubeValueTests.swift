import Foundation
import Testing
@testable import TrellisFlow

@Suite struct KubeValueTests {
    @Test func yamlKeepsOrderAndQuotesWhatWouldChangeType() throws {
        let v: KubeValue = [
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": ["name": "x", "labels": ["a": "true", "b": "3.10", "c": ""]],
            "data": ["script.py": "print(1)\nprint(2)\n", "n": 3, "flag": true],
        ]
        let text = try v.yaml()
        #expect(text.hasPrefix("apiVersion: v1\nkind: ConfigMap\nmetadata:\n"))
        #expect(text.contains("a: \"true\""))
        #expect(text.contains("b: \"3.10\""))
        #expect(text.contains("c: \"\""))
        #expect(text.contains("n: 3\n"))
        #expect(text.contains("flag: true\n"))
        #expect(try KubeValue.parse(yaml: text) == v)
    }

    @Test func nonASCIITextStaysALiteralBlock() throws {
        let code = "# l\u{2019}étape — 步骤\nprint(\"héllo\")\n"
        let v: KubeValue = ["data": ["step.py": .string(code), "name": "café"]]
        let text = try v.yaml()
        #expect(text.contains("step.py: |\n    # l\u{2019}étape — 步骤\n    print(\"héllo\")\n"), "\(text)")
        #expect(text.contains("name: café\n"))
        #expect(!text.contains("\\u"))
        #expect(try KubeValue.parse(yaml: text) == v)
    }

    @Test func jsonRoundTripsThroughTheParser() throws {
        let v: KubeValue = ["a": ["x\"y\n", 1, false, .null], "b": ["c": -2]]
        let json = v.json()
        #expect(json == #"{"a":["x\"y\n",1,false,null],"b":{"c":-2}}"#)
        #expect(try KubeValue.parse(json: Data(json.utf8)) == v)
    }

    @Test func setPathCreatesObjects() {
        var v: KubeValue = ["spec": ["template": [:]]]
        v.set(path: ["spec", "template", "spec", "nodeName"], "n1")
        #expect(v[path: "spec", "template", "spec", "nodeName"] == "n1")
    }

    @Test func documentsSplitAndJoin() throws {
        let docs: [KubeValue] = [["kind": "A"], ["kind": "B"]]
        let text = try KubeValue.yamlDocuments(docs)
        #expect(try KubeValue.parseDocuments(yaml: text) == docs)
    }
}
