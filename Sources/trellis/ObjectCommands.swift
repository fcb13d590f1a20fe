import ArgumentParser
import TrellisClient
import TrellisProtocol

/// The object commands, in the order `trellis --help` lists them.
let objectCommands: [any ParsableCommand.Type] = [
    ListObjects.self, ShowMeta.self, GetObject.self, PutObject.self, RemoveObject.self, ListNames.self, ShowStatus.self,
    BenchClient.self,
]

// MARK: - ls

struct ListObjects: ObjectCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls", abstract: "List objects (id, type, size, persistence, name).")

    @OptionGroup var options: ObjectCommandOptions

    @Option(name: .long, help: "Only objects whose typename matches this glob, e.g. 'vineyard::Tensor*'.")
    var pattern = "*"

    @Flag(name: .long, help: "Treat --pattern as a regular expression.")
    var regex = false

    @Flag(name: .long, help: "Include blobs.")
    var blobs = false

    @Option(name: .long, help: "List at most this many objects.")
    var limit = 100_000

    @Flag(name: .long, help: "List the persisted objects of every instance of the cluster, with the instance that holds each.")
    var cluster = false

    func run(with client: Client) throws(ClientError) {
        // The daemon lists the cluster's persisted objects too; without --cluster only this instance's.
        let objects = try client.listMetadata(pattern: pattern, regex: regex, limit: limit).filter {
            (blobs || !$0.isBlob) && (cluster || $0.instanceID == nil || $0.instanceID == client.instanceID)
        }.sorted { ($0.instanceID ?? 0, $0.id?.rawValue ?? 0) < ($1.instanceID ?? 0, $1.id?.rawValue ?? 0) }
        var endpoints: [UInt64: String] = [:]
        if cluster {
            for i in try client.clusterMeta() { endpoints[i.instanceID] = i.rpcEndpoint ?? i.hostname ?? "" }
        }
        var names: [ObjectID: [String]] = [:]
        for n in try client.listNames(limit: Int(Int32.max)) { names[n.id, default: []].append(n.name) }
        if options.json {
            let list: [JSON] = objects.map { m in
                let id = m.id ?? .invalid
                return [
                    "id": .string(id.description), "typename": .string(m.typename), "nbytes": .number(m.nbytes),
                    "persistent": .bool(!m.isTransient), "names": .array((names[id] ?? []).map(JSON.string)),
                    "instance_id": m.instanceID.map { .number($0) } ?? .null,
                    "local": .bool(m.instanceID == nil || m.instanceID == client.instanceID),
                ]
            }
            printOut(JSON.array(list).description)
            return
        }
        if objects.isEmpty {
            printOut("no objects")
            return
        }
        let rows = objects.map { m -> [String] in
            let id = m.id ?? .invalid
            var row = [
                id.description, m.typename, m.isBlob || m.nbytes > 0 ? humanBytes(m.nbytes) : "-",
                m.isTransient ? "transient" : "persistent", (names[id] ?? []).joined(separator: ","),
            ]
            if cluster { row.append(instanceLabel(m.instanceID, endpoints, local: client.instanceID)) }
            return row
        }
        let header = ["ID", "TYPE", "NBYTES", "LIFETIME", "NAME"] + (cluster ? ["INSTANCE"] : [])
        printOut(renderTable(header, rows))
    }

    /// `i1 127.0.0.1:9601 (here)`, `global`, or the bare id of an instance that left.
    private func instanceLabel(_ id: UInt64?, _ endpoints: [UInt64: String], local: UInt64) -> String {
        guard let id else { return "i\(local) (here)" }
        if id == UInt64.max { return "global" }
        let endpoint = endpoints[id].map { " " + $0 } ?? " (gone)"
        return "i\(id)" + endpoint + (id == local ? " (here)" : "")
    }
}

// MARK: - meta

struct ShowMeta: ObjectCommand {
    static let configuration = CommandConfiguration(
        commandName: "meta", abstract: "Show an object's metadata tree.")

    @OptionGroup var options: ObjectCommandOptions

    @Argument(help: "Object id (o…) or name.")
    var target: String

    func run(with client: Client) throws(ClientError) {
        let object = try client.getObject(try resolve(target, client))
        if options.json {
            printOut(object.meta.json.description)
            return
        }
        let m = object.meta
        let blobBytes = object.blobs.values.reduce(0) { $0 + $1.count }
        var summary = [
            ["id", object.id.description],
            ["typename", m.typename],
            ["lifetime", m.isTransient ? "transient" : "persistent"],
            ["instance", m.instanceID.map(String.init) ?? "-"],
            ["blobs", "\(object.blobs.count) (\(humanBytes(blobBytes)))"],
        ]
        if let name = m.name { summary.insert(["name", name], at: 1) }
        printOut(renderTable(["FIELD", "VALUE"], summary))
        printOut("")
        printOut(prettyJSON(m.json))
    }
}

// MARK: - get

struct GetObject: ObjectCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Write an object to a file: .npy for tensors, CSV for data frames, series and tables.")

    @OptionGroup var options: ObjectCommandOptions

    @Argument(help: "Object id (o…) or name.")
    var target: String

    @Option(name: .long, help: "The file to write ('-' for standard output).")
    var to: String

    func run(with client: Client) throws(ClientError) {
        // An object another instance holds is migrated here first (Python's fetch=True).
        let object = try client.getObject(try resolve(target, client), fetch: true)
        let file = try OutputFile(path: to)
        let sink = { (bytes: UnsafeRawBufferPointer) throws(ClientError) in try file.write(bytes) }
        let typename = object.typename
        let written: String
        if typename.hasPrefix("vineyard::Tensor<") {
            guard to == "-" || to.hasSuffix(".npy") else {
                throw ClientError(.invalidArgument, "\(typename) is written as .npy; name the file *.npy")
            }
            let tensor = try AnyTensor(object)
            try file.write(NPY.header(dtype: tensor.dtype, shape: tensor.shape))
            // Straight from the shared-memory mapping to the file: no copy in between.
            try tensor.withUnsafeBytes { (b) throws(ClientError) in try sink(b) }
            written = "\(tensor.dtype) tensor of shape \(tensor.shape)"
        } else if typename == "vineyard::DataFrame" {
            let frame = try DataFrame(object)
            try CSV.write(frame, to: sink)
            written = "data frame of \(frame.rowCount) rows × \(frame.columns.count) columns"
        } else if typename == "vineyard::Series" {
            let series = try Series(object)
            try CSV.write(series, to: sink)
            written = "series of \(series.values.count) values"
        } else if typename == "vineyard::Table" {
            let table = try ArrowTable(object)
            try CSV.write(table, to: sink)
            written = "table of \(table.rowCount) rows × \(table.schema.fields.count) columns"
        } else if typename == "vineyard::RecordBatch" {
            let batch = try RecordBatch(object)
            let table = try ArrowTable(StoredObject(meta: Self.tableMeta(wrapping: batch), blobs: object.blobs))
            try CSV.write(table, to: sink)
            written = "record batch of \(batch.rowCount) rows"
        } else {
            throw ClientError(.invalidArgument, "cannot write a \(typename) to a file (tensors, data frames, series and tables can)")
        }
        if to != "-" && !options.json { printError("wrote \(written) to \(to)") }
    }

    /// A one-batch table tree around a record batch, so that batches print like tables.
    static func tableMeta(wrapping batch: RecordBatch) -> ObjectMeta {
        var meta = ObjectMeta(typename: "vineyard::Table")
        meta["batch_num_"] = 1
        meta["num_rows_"] = .number(batch.rowCount)
        meta.addMember("partitions_-0", batch.meta)
        if let schema = batch.meta.member("schema_") { meta.addMember("schema_", schema) }
        return meta
    }
}

// MARK: - put

struct PutObject: ObjectCommand {
    static let configuration = CommandConfiguration(
        commandName: "put",
        abstract: "Store a .npy file as a tensor, or a CSV file as a data frame (or table), with the layouts Python reads.")

    enum Layout: String, ExpressibleByArgument {
        case dataframe, table
    }

    @OptionGroup var options: ObjectCommandOptions

    @Argument(help: "A .npy or .csv file.")
    var file: String

    @Option(name: .long, help: "Persist the object and give it this name.")
    var name: String?

    @Option(name: .customLong("as"), help: "For CSV: store a data frame (numeric and boolean columns) or an Arrow table.")
    var layout: Layout = .dataframe

    func run(with client: Client) throws(ClientError) {
        let input = try InputFile(path: file)
        let meta: ObjectMeta
        if file.hasSuffix(".npy") {
            meta = try Self.putNPY(input, client).meta
        } else if file.hasSuffix(".csv") || file.hasSuffix(".CSV") {
            var bytes = [UInt8](repeating: 0, count: input.size)
            if input.size > 0 {
                var failure: ClientError?
                bytes.withUnsafeMutableBytes { b in
                    do throws(ClientError) { try input.read(into: b.baseAddress!, count: input.size, at: 0) } catch { failure = error }
                }
                if let failure { throw failure }
            }
            let csv = try CSV.read(bytes)
            meta = layout == .table ? try client.createTable(csv: csv).meta : try client.createDataFrame(csv: csv).meta
        } else {
            throw ClientError(.invalidArgument, "\(file): put takes .npy or .csv files")
        }
        let id = meta.id ?? .invalid
        if let name { try client.publish(id, as: name) }
        if options.json {
            printOut(JSON.object(["id": .string(id.description), "typename": .string(meta.typename), "name": name.map(JSON.string) ?? .null]).description)
        } else {
            printOut(id.description)
        }
    }

    /// Reads the elements straight into a new blob (through a scratch buffer only for Fortran order).
    static func putNPY(_ input: borrowing InputFile, _ client: Client) throws(ClientError) -> AnyTensor {
        let header = try NPY.parseHeader(try input.prefix(1 << 16))
        guard input.size >= header.dataOffset + header.byteCount else {
            throw ClientError(.invalidArgument, "\(input.path) holds fewer bytes than its shape \(header.shape) needs")
        }
        let writer = try client.createBlob(size: header.byteCount)
        try writer.withUnsafeMutableBytes { (dst: UnsafeMutableRawBufferPointer) throws(ClientError) in
            guard header.byteCount > 0, let base = dst.baseAddress else { return }
            if header.fortranOrder && header.shape.count > 1 {
                let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: header.byteCount, alignment: 64)
                defer { scratch.deallocate() }
                try input.read(into: scratch.baseAddress!, count: header.byteCount, at: header.dataOffset)
                NPY.fortranToC(UnsafeRawBufferPointer(scratch), into: dst, shape: header.shape, elementSize: header.dtype.size)
            } else {
                try input.read(into: base, count: header.byteCount, at: header.dataOffset)
            }
        }
        let blob = try client.seal(writer)
        return try client.createTensor(
            dtype: header.dtype, shape: header.shape, order: header.fortranOrder && header.shape.count > 1 ? .fortran : .c,
            blob: blob)
    }
}

// MARK: - rm

struct RemoveObject: ObjectCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm", abstract: "Delete an object (its blobs go with it) and the names that point at it.")

    @OptionGroup var options: ObjectCommandOptions

    @Argument(help: "Object id (o…) or name.")
    var target: String

    @Flag(name: .long, help: "Also delete members that no other object uses.")
    var deep = false

    @Flag(name: .long, help: "Also delete the objects that use this one.")
    var force = false

    func run(with client: Client) throws(ClientError) {
        let id = try resolve(target, client)
        let names = try client.listNames(limit: Int(Int32.max)).filter { $0.id == id }.map(\.name)
        try client.delete(id, force: force, deep: deep)
        if try client.exists(id) {
            throw ClientError(
                .invalidArgument, code: .objectExists, "\(id) is kept: other objects use it (--force deletes them too)")
        }
        // Upstream leaves names dangling; a name for a deleted object helps nobody.
        for name in names { try client.dropName(name) }
        if options.json {
            printOut(JSON.object(["deleted": .string(id.description), "names": .array(names.map(JSON.string))]).description)
        } else {
            printOut("deleted \(id)" + (names.isEmpty ? "" : " (names: \(names.joined(separator: ", ")))"))
        }
    }
}

// MARK: - names

struct ListNames: ObjectCommand {
    static let configuration = CommandConfiguration(commandName: "names", abstract: "List names and the objects they refer to.")

    @OptionGroup var options: ObjectCommandOptions

    @Option(name: .long, help: "Only names matching this glob.")
    var pattern = "*"

    func run(with client: Client) throws(ClientError) {
        let names = try client.listNames(pattern: pattern, limit: Int(Int32.max))
        let metas = try client.getMetadata(names.map(\.id), syncRemote: false)
        var types: [ObjectID: String] = [:]
        for m in metas { if let id = m.id { types[id] = m.typename } }
        if options.json {
            printOut(
                JSON.array(
                    names.map {
                        ["name": .string($0.name), "id": .string($0.id.description), "typename": types[$0.id].map(JSON.string) ?? .null]
                    }
                ).description)
            return
        }
        if names.isEmpty {
            printOut("no names")
            return
        }
        printOut(renderTable(["NAME", "ID", "TYPE"], names.map { [$0.name, $0.id.description, types[$0.id] ?? "(missing)"] }))
    }
}

// MARK: - status

struct ShowStatus: ObjectCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show the daemon's arena (size, used, free, fragmentation), objects and clients.")

    @OptionGroup var options: ObjectCommandOptions

    func run(with client: Client) throws(ClientError) {
        let s = try client.instanceStatus()
        if options.json {
            printOut(s.json(server: client.server).description)
            return
        }
        func opt(_ v: Int?) -> String { v.map(String.init) ?? "-" }
        let free = s.freeBytes ?? max(0, s.memoryLimit - s.memoryUsage)
        var rows: [[String]] = [
            ["socket", client.server.ipcSocket],
            ["instance", "\(s.instanceID) (\(s.deployment))"],
            ["arena size", humanBytes(s.memoryLimit) + (s.pages.map { " (\(Self.pagesDescription($0)))" } ?? "")],
            ["used", "\(humanBytes(s.memoryUsage)) (\(percent(s.memoryUsage, of: s.memoryLimit)))"],
            ["free", humanBytes(free)],
        ]
        if let largest = s.largestFreeBlock { rows.append(["largest free block", humanBytes(largest)]) }
        if let f = s.fragmentation { rows.append(["fragmentation", "\(((f * 1000).rounded() / 10))%"]) }
        if let spilled = s.spilledBytes, spilled > 0 { rows.append(["spilled to disk", humanBytes(spilled)]) }
        rows += [
            ["objects", opt(s.objects)],
            ["blobs", opt(s.blobs)],
            ["names", opt(s.names)],
            ["clients", "\(s.ipcConnections) ipc, \(s.rpcConnections) rpc"],
        ]
        printOut(renderTable(["FIELD", "VALUE"], rows))
    }

    static func pagesDescription(_ pages: String) -> String {
        switch pages {
        case "thp": "2 MiB transparent huge pages"
        case "hugetlb": "2 MiB hugetlb pages"
        case "4KiB": "4 KiB pages"
        default: pages
        }
    }

    private func percent(_ part: Int, of whole: Int) -> String {
        guard whole > 0 else { return "-" }
        return "\((Double(part) * 1000 / Double(whole)).rounded() / 10)%"
    }
}
