import Foundation
import Yams

/// A flow file that could not be read or decoded.
public struct FlowSpecError: Error, CustomStringConvertible, Equatable {
    /// What went wrong, naming the file and, where known, the step.
    public var message: String
    /// Creates an error.
    public init(_ message: String) { self.message = message }
    /// The message.
    public var description: String { message }
}

extension FlowSpec {
    /// Parses a flow from YAML text (the `trellis flow run flow.yaml` front door).
    ///
    /// ```yaml
    /// name: house-prices
    /// runtime: {replicas: 2, size: 2Gi, medium: memory}
    /// steps:
    ///   - name: preprocess
    ///     python: {file: steps.py, function: preprocess}
    ///     outputs: [x_train, y_train]
    ///   - name: train
    ///     command: python3 train.py --alpha 0.1
    ///     inputs: [x_train, y_train]
    ///     retries: 2
    ///     timeout: 10m
    /// ```
    ///
    /// - Parameter baseDirectory: the directory relative paths are resolved against, normally the
    ///   file's directory; a `base_dir` in the YAML wins when it is absolute.
    /// - Throws: ``FlowSpecError`` with a readable message. The result is not yet validated.
    public static func load(yaml text: String, baseDirectory: String? = nil) throws -> FlowSpec {
        var spec: FlowSpec
        do {
            spec = try YAMLDecoder().decode(FlowSpec.self, from: text)
        } catch let error as DecodingError {
            throw FlowSpecError(describe(error))
        } catch {
            throw FlowSpecError("invalid YAML: \(error)")
        }
        if let base = baseDirectory {
            if let own = spec.baseDirectory, !own.hasPrefix("/") {
                spec.baseDirectory = (base as NSString).appendingPathComponent(own)
            } else if spec.baseDirectory == nil {
                spec.baseDirectory = base
            }
        }
        return spec
    }

    /// Reads and parses a flow file; relative paths in it are resolved against its directory.
    public static func load(file path: String) throws -> FlowSpec {
        let url = URL(fileURLWithPath: path)
        guard let data = FileManager.default.contents(atPath: url.path),
            let text = String(data: data, encoding: .utf8)
        else { throw FlowSpecError("cannot read flow file \(path)") }
        do {
            return try load(yaml: text, baseDirectory: url.deletingLastPathComponent().standardizedFileURL.path)
        } catch let e as FlowSpecError {
            throw FlowSpecError("\(path): \(e.message)")
        }
    }

    /// The flow as YAML, in the shape ``load(yaml:baseDirectory:)`` reads.
    public func yaml() throws -> String {
        try YAMLEncoder().encode(self)
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ p: [any CodingKey]) -> String {
            p.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        }
        switch error {
        case .dataCorrupted(let c):
            return c.codingPath.isEmpty ? c.debugDescription : "\(path(c.codingPath)): \(c.debugDescription)"
        case .keyNotFound(let key, let c):
            return "\(path(c.codingPath)): missing '\(key.stringValue)'"
        case .typeMismatch(let type, let c):
            return "\(path(c.codingPath)): expected \(type)"
        case .valueNotFound(let type, let c):
            return "\(path(c.codingPath)): expected a \(type) value"
        @unknown default:
            return "\(error)"
        }
    }
}
