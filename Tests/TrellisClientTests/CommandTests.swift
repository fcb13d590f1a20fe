import Testing
import TrellisProtocol

@testable import TrellisClient

#if canImport(Glibc)
import Glibc
import TrellisTestSupport
#endif

/// Runs `trellis ARGS…` and returns what it printed.
func trellis(_ args: [String]) throws -> ProcessResult {
    try Subprocess.run([Paths.trellis] + args)
}

/// The object commands (`trellis ls/meta/get/put/rm/names/status`) against a daemon.
@Suite("trellis object commands", .serialized, .onBlockingPool)
struct CommandTests {
    @Test("without a daemon: one clear line on stderr and exit status 1")
    func noDaemon() throws {
        for args in [["ls"], ["status"], ["names"], ["meta", "x"], ["get", "x", "--to", "/tmp/x.npy"], ["rm", "x"]] {
            let r = try trellis(args + ["--socket", "/tmp/trellis-no-daemon.sock"])
            #expect(r.status == 1, "\(args)")
            #expect(r.stdout.isEmpty)
            let lines = r.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(args): \(r.stderr)")
            #expect(r.stderr.contains("cannot connect to the daemon at /tmp/trellis-no-daemon.sock"), "\(r.stderr)")
        }
    }

    @Test("ls, meta, names, status, rm — tables by default, JSON with --json; missing objects fail clearly")
    func lifecycle() throws {
        try DaemonProcess.with { d in
            let s = ["--socket", d.socketPath]
            let c = try d.connect()
            defer { c.close() }
            let t = try c.putTensor([1, 2, 3, 4] as [Int64], shape: [2, 2])
            try c.publish(t.id, as: "four")
            let frame = try c.createDataFrame(columns: [(name: "a", values: try c.putTensor([1.5, 2.5]).base)])

            let ls = try trellis(["ls"] + s)
            #expect(ls.status == 0)
            #expect(ls.stdout.hasPrefix("ID"))
            #expect(ls.stdout.contains(t.id.description) && ls.stdout.contains("four") && ls.stdout.contains("persistent"))
            #expect(ls.stdout.contains("vineyard::DataFrame"))
            #expect(!ls.stdout.contains("vineyard::Blob"))
            let lsBlobs = try trellis(["ls", "--blobs"] + s)
            #expect(lsBlobs.stdout.contains("vineyard::Blob"))

            let lsJSON = try JSONParser.parse(try trellis(["ls", "--json", "--pattern", "vineyard::Tensor*"] + s).stdout)
            let tensors = try #require(lsJSON.arrayValue)
            #expect(tensors.count == 3)  // the named tensor, the frame's column and its index labels
            let named = try #require(tensors.first { $0["id"]?.stringValue == t.id.description })
            #expect(named["names"] == ["four"])
            #expect(named["nbytes"] == 32)
            #expect(named["persistent"] == true)

            let meta = try trellis(["meta", "four"] + s)
            #expect(meta.status == 0)
            #expect(meta.stdout.contains("vineyard::Tensor<int64>") && meta.stdout.contains("\"shape_\": \"[2, 2]\""))
            #expect(meta.stdout.contains("1 (32 B)"))
            let metaJSON = try JSONParser.parse(try trellis(["meta", "--json", frame.id.description] + s).stdout)
            #expect(metaJSON["typename"] == "vineyard::DataFrame")
            #expect(metaJSON["columns_"] == "[\"a\"]")

            let names = try trellis(["names"] + s)
            #expect(names.stdout.contains("four") && names.stdout.contains("vineyard::Tensor<int64>"))
            let namesJSON = try JSONParser.parse(try trellis(["names", "--json"] + s).stdout)
            #expect(namesJSON == [["name": "four", "id": .string(t.id.description), "typename": "vineyard::Tensor<int64>"]])

            let status = try trellis(["status"] + s)
            #expect(status.status == 0)
            for field in ["arena size", "256.0 MiB", "used", "free", "fragmentation", "largest free block", "objects", "blobs", "clients"] {
                #expect(status.stdout.contains(field), "status lacks \(field)")
            }
            let statusJSON = try JSONParser.parse(try trellis(["status", "--json"] + s).stdout)
            for key in ["memory_usage", "memory_limit", "free_bytes", "largest_free_block", "fragmentation", "objects", "blobs", "names", "ipc_connections"] {
                #expect(statusJSON[key] != nil, "status --json lacks \(key)")
            }
            #expect(statusJSON["memory_limit"] == .int(256 << 20))

            // A member cannot go while its frame uses it, unless forced.
            let column = try #require(frame.columns.first?.values.id)
            let kept = try trellis(["rm", column.description] + s)
            #expect(kept.status == 1 && kept.stderr.contains("--force"))
            #expect(try c.exists(column))
            let forced = try trellis(["rm", "--force", column.description] + s)
            #expect(forced.status == 0)
            #expect(try !c.exists(frame.id))

            let rm = try trellis(["rm", "four"] + s)
            #expect(rm.status == 0 && rm.stdout.contains("deleted \(t.id)") && rm.stdout.contains("four"))
            #expect(try !c.exists(t.id))
            #expect(try c.listNames(limit: 10).isEmpty)

            for args in [["meta", "four"], ["rm", "four"], ["get", "four", "--to", d.directory + "/x.npy"], ["meta", "o0000000000000001"]] {
                let r = try trellis(args + s)
                #expect(r.status == 1, "\(args)")
                #expect(r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("no object or name"), "\(args): \(r.stderr)")
            }
        }
    }

    @Test("get and put: .npy and CSV files round-trip with numpy/pandas through both clients",
          .enabled(if: Paths.hasPython, "the Python venv (.venv/bin/python with vineyard 0.24.2) is missing"), .onBlockingPool)
    func files() throws {
        try DaemonProcess.with { d in
            let s = ["--socket", d.socketPath]
            let dir = d.directory
            let peer = Paths.interop + "/cli_peer.py"
            let make = try Subprocess.run([Paths.python, peer, "make", dir])
            try #require(make.status == 0, "\(make.stderr)")

            for (file, name, extra) in [
                ("grid.npy", "cli_grid", [String]()), ("fortran.npy", "cli_fortran", []), ("frame.csv", "cli_frame", []),
                ("indexed.csv", "cli_indexed", []), ("frame.csv", "cli_table", ["--as", "table"]),
            ] {
                let r = try trellis(["put", dir + "/" + file, "--name", name] + extra + s)
                #expect(r.status == 0, "put \(file): \(r.stderr)")
                #expect(ObjectID(string: r.stdout.split(separator: "\n").first.map(String.init) ?? "") != nil)
            }
            let put = try Subprocess.run([Paths.python, peer, "put", d.socketPath])
            try #require(put.status == 0, "\(put.stderr)")
            for (name, file) in [
                ("py_cli_grid", "out_grid.npy"), ("py_cli_frame", "out_frame.csv"), ("py_cli_indexed", "out_indexed.csv"),
                ("py_cli_series", "out_series.csv"), ("py_cli_table", "out_table.csv"),
            ] {
                let r = try trellis(["get", name, "--to", dir + "/" + file] + s)
                #expect(r.status == 0, "get \(name): \(r.stderr)")
            }
            let check = try Subprocess.run([Paths.python, peer, "check", d.socketPath, dir])
            #expect(check.status == 0, "\(check.stdout)\n\(check.stderr)")
            #expect(check.stdout.split(separator: "\n").count { $0.hasPrefix("ok ") } == 10, "\(check.stdout)")

            // Wrong file kinds are refused with one line.
            let wrong = try trellis(["get", "py_cli_grid", "--to", dir + "/grid.csv"] + s)
            #expect(wrong.status == 1 && wrong.stderr.contains(".npy"))
            let text = try trellis(["put", dir + "/out_table.csv", "--name", "x"] + s)
            #expect(text.status == 1 && text.stderr.contains("as a table"), "\(text.stderr)")
            for f in ["grid.npy", "fortran.npy", "frame.csv", "indexed.csv", "out_grid.npy", "out_frame.csv", "out_indexed.csv",
                "out_series.csv", "out_table.csv", "grid.csv"]
            {
                unlink(dir + "/" + f)
            }
        }
    }
}

@Suite("File formats")
struct FormatTests {
    @Test(".npy headers: as numpy.save writes them, and parsed back")
    func npyHeader() throws {
        let h = NPY.header(dtype: .int64, shape: [16])
        #expect(h.count % 64 == 0)
        let text = String(decoding: h[10...], as: UTF8.self)
        #expect(text.hasPrefix("{'descr': '<i8', 'fortran_order': False, 'shape': (16,), }"))
        #expect(text.hasSuffix(" \n"))
        let parsed = try NPY.parseHeader(h)
        #expect(parsed == NPY.Header(dtype: .int64, shape: [16], fortranOrder: false, dataOffset: h.count))
        #expect(try NPY.parseHeader(NPY.header(dtype: .bool, shape: [])).shape == [])
        #expect(try NPY.parseHeader(NPY.header(dtype: .float32, shape: [3, 4, 5], fortranOrder: true)).fortranOrder)
        #expect(failure { () throws(ClientError) in _ = try NPY.parseHeader(Array("not numpy".utf8)) }?.kind == .invalidArgument)
    }

    @Test("Fortran-order elements are rearranged into C order")
    func fortran() {
        // A 2×3 matrix [[0,1,2],[3,4,5]] in Fortran order is 0,3,1,4,2,5.
        let f: [Int32] = [0, 3, 1, 4, 2, 5]
        var c = [Int32](repeating: -1, count: 6)
        f.withUnsafeBytes { src in c.withUnsafeMutableBytes { NPY.fortranToC(src, into: $0, shape: [2, 3], elementSize: 4) } }
        #expect(c == [0, 1, 2, 3, 4, 5])
    }

    @Test("CSV: quoting, type inference, blank lines, errors")
    func csv() throws {
        let text = "a,b,c,d,e\n1,1.5,True,\"x,y\",\n-2,,false,\"say \"\"hi\"\"\",z\n\n"
        let table = try CSV.read(Array(text.utf8))
        #expect(table.names == ["a", "b", "c", "d", "e"])
        #expect(table.columns[0] == .int64([1, -2]))
        guard case .float64(let reals) = table.columns[1] else {
            Issue.record("b is not float64")
            return
        }
        #expect(reals[0] == 1.5 && reals[1].isNaN)
        #expect(table.columns[2] == .bool([true, false]))
        #expect(table.columns[3] == .string(["x,y", "say \"hi\""]))
        #expect(table.columns[4] == .string([nil, "z"]))
        let ragged = failure { () throws(ClientError) in
            _ = try CSV.read(Array("a,b\n1\n".utf8))
        }
        #expect(ragged?.message.contains("row 2") == true)
        var out: [UInt8] = []
        CSV.appendText("plain", to: &out)
        CSV.appendText("a,\"b\"", to: &out)
        #expect(String(decoding: out, as: UTF8.self) == "plain\"a,\"\"b\"\"\"")
    }
}
