#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` on the contents of every file named in argv.
func replayFiles(_ body: (UnsafeBufferPointer<UInt8>) -> Void) {
    for path in CommandLine.arguments.dropFirst() {
        guard let f = fopen(path, "rb") else {
            print("cannot open \(path)")
            exit(2)
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, f)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        fclose(f)
        bytes.withUnsafeBufferPointer(body)
        print("ok \(path) (\(bytes.count) bytes)")
    }
}
