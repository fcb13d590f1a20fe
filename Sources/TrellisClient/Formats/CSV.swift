import TrellisProtocol

/// CSV for data frames and Arrow tables, in the conventions of pandas' `to_csv` /
/// `read_csv`: a header row, `True`/`False` for booleans, shortest round-trip floats,
/// an empty field for NaN and null, RFC 4180 quoting.
public enum CSV {
    /// A column parsed from CSV, with the type inferred from its fields.
    public enum Column: Sendable, Equatable {
        /// Every field is an integer that fits in 64 bits.
        case int64([Int64])
        /// Every field is a number, `nan`/`inf`, or empty (NaN).
        case float64([Double])
        /// Every field is `True`/`False` (any case).
        case bool([Bool])
        /// Anything else; empty fields are nulls.
        case string([String?])

        /// The number of rows.
        public var count: Int {
            switch self {
            case .int64(let v): return v.count
            case .float64(let v): return v.count
            case .bool(let v): return v.count
            case .string(let v): return v.count
            }
        }
    }

    /// A parsed CSV file: column names and typed columns.
    public struct Table: Sendable, Equatable {
        /// The header row.
        public var names: [String]
        /// One column per name.
        public var columns: [Column]
    }

    // MARK: Reading

    /// Parses CSV text with a header row and infers each column's type.
    public static func read(_ bytes: UnsafeRawBufferPointer) throws(ClientError) -> Table {
        var rows = try records(bytes)
        guard !rows.isEmpty else { throw ClientError(.invalidArgument, "empty CSV: no header row") }
        let names = rows.removeFirst()
        var fields = [[String]](repeating: [], count: names.count)
        for (n, row) in rows.enumerated() {
            if row.count == 1 && row[0].isEmpty && names.count > 1 { continue }  // blank line
            guard row.count == names.count else {
                throw ClientError(.invalidArgument, "CSV row \(n + 2) has \(row.count) fields, the header \(names.count)")
            }
            for (i, f) in row.enumerated() { fields[i].append(f) }
        }
        return Table(names: names, columns: fields.map(infer))
    }

    /// Parses CSV bytes; see ``read(_:)-(UnsafeRawBufferPointer)``.
    public static func read(_ bytes: [UInt8]) throws(ClientError) -> Table {
        var result: Result<Table, ClientError> = .failure(ClientError(.invalidArgument, "empty CSV"))
        bytes.withUnsafeBytes { b in result = Result { () throws(ClientError) in try read(b) } }
        return try result.get()
    }

    /// Splits CSV text into records of unquoted fields.
    static func records(_ bytes: UnsafeRawBufferPointer) throws(ClientError) -> [[String]] {
        var out: [[String]] = []
        var row: [String] = []
        var field: [UInt8] = []
        var quoted = false
        var i = 0
        let n = bytes.count
        while i < n {
            let c = bytes[i]
            if quoted {
                if c == UInt8(ascii: "\"") {
                    if i + 1 < n && bytes[i + 1] == UInt8(ascii: "\"") {
                        field.append(c)
                        i += 1
                    } else {
                        quoted = false
                    }
                } else {
                    field.append(c)
                }
            } else if c == UInt8(ascii: "\"") && field.isEmpty {
                quoted = true
            } else if c == UInt8(ascii: ",") {
                row.append(String(decoding: field, as: UTF8.self))
                field.removeAll(keepingCapacity: true)
            } else if c == UInt8(ascii: "\n") || c == UInt8(ascii: "\r") {
                if c == UInt8(ascii: "\r") && i + 1 < n && bytes[i + 1] == UInt8(ascii: "\n") { i += 1 }
                row.append(String(decoding: field, as: UTF8.self))
                field.removeAll(keepingCapacity: true)
                out.append(row)
                row = []
            } else {
                field.append(c)
            }
            i += 1
        }
        if quoted { throw ClientError(.invalidArgument, "CSV ends inside a quoted field") }
        if !field.isEmpty || !row.isEmpty {
            row.append(String(decoding: field, as: UTF8.self))
            out.append(row)
        }
        return out
    }

    static func infer(_ fields: [String]) -> Column {
        var ints: [Int64] = []
        ints.reserveCapacity(fields.count)
        for f in fields {
            guard let v = Int64(f) else { break }
            ints.append(v)
        }
        if ints.count == fields.count { return .int64(ints) }
        var reals: [Double] = []
        reals.reserveCapacity(fields.count)
        for f in fields {
            guard let v = parseFloat(f) else { break }
            reals.append(v)
        }
        if reals.count == fields.count && fields.contains(where: { !$0.isEmpty }) { return .float64(reals) }
        let bools = fields.compactMap { f -> Bool? in
            switch f.lowercased() {
            case "true": return true
            case "false": return false
            default: return nil
            }
        }
        if bools.count == fields.count && !fields.isEmpty { return .bool(bools) }
        return .string(fields.map { $0.isEmpty ? nil : $0 })
    }

    static func parseFloat(_ f: String) -> Double? {
        switch f {
        case "", "nan", "NaN", "NAN": return .nan
        case "inf", "Inf", "+inf": return .infinity
        case "-inf", "-Inf": return -.infinity
        default: return Double(f)
        }
    }

    // MARK: Writing

    /// Streams `frame` as CSV into `sink`, in chunks of about 1 MiB. The index is written
    /// as a first column (headed by its name, or empty) unless it is the default range.
    public static func write(
        _ frame: DataFrame, to sink: (UnsafeRawBufferPointer) throws(ClientError) -> Void
    ) throws(ClientError) {
        var columns: [(String, Cells)] = []
        if let index = frame.index, !index.isDefaultRange {
            columns.append((title(index.name, unnamed: ""), Cells(index.values)))
        }
        for c in frame.columns { columns.append((c.title, Cells(c.values))) }
        try withExtendedLifetime(frame) { () throws(ClientError) in
            try emit(columns, rows: frame.rowCount, to: sink)
        }
    }

    /// Streams `series` as CSV into `sink`: its index (unless the default range) and its
    /// values, headed by the series' name (`0` when unnamed, as pandas writes it).
    public static func write(
        _ series: Series, to sink: (UnsafeRawBufferPointer) throws(ClientError) -> Void
    ) throws(ClientError) {
        var columns: [(String, Cells)] = []
        if !series.index.isDefaultRange {
            columns.append((title(series.index.name, unnamed: ""), Cells(series.index.values)))
        }
        columns.append((title(series.name, unnamed: "0"), Cells(series.values)))
        try withExtendedLifetime(series) { () throws(ClientError) in
            try emit(columns, rows: series.values.shape.first ?? 0, to: sink)
        }
    }

    /// Streams `table` as CSV into `sink`: the batches one after another under one header.
    public static func write(
        _ table: ArrowTable, to sink: (UnsafeRawBufferPointer) throws(ClientError) -> Void
    ) throws(ClientError) {
        var out = Output()
        out.header(table.schema.fields.map(\.name))
        for batch in table.batches {
            let cells = batch.columns.map(Cells.init)
            for r in 0..<batch.rowCount {
                for (i, c) in cells.enumerated() {
                    if i > 0 { out.bytes.append(UInt8(ascii: ",")) }
                    c.append(row: r, to: &out.bytes)
                }
                out.bytes.append(UInt8(ascii: "\n"))
                try out.flushIfFull(sink)
            }
        }
        try withExtendedLifetime(table) { () throws(ClientError) in try out.flush(sink) }
    }

    /// A header for a pandas label: strings as they are, `unnamed` for null, else its JSON.
    private static func title(_ name: JSON, unnamed: String) -> String {
        name.isNull ? unnamed : (name.stringValue ?? PythonJSON.dumps(name))
    }

    private static func emit(
        _ columns: [(String, Cells)], rows: Int, to sink: (UnsafeRawBufferPointer) throws(ClientError) -> Void
    ) throws(ClientError) {
        var out = Output()
        out.header(columns.map(\.0))
        for r in 0..<rows {
            for (i, c) in columns.enumerated() {
                if i > 0 { out.bytes.append(UInt8(ascii: ",")) }
                c.1.append(row: r, to: &out.bytes)
            }
            out.bytes.append(UInt8(ascii: "\n"))
            try out.flushIfFull(sink)
        }
        try out.flush(sink)
    }

    private struct Output {
        var bytes: [UInt8] = []

        init() {
            bytes.reserveCapacity(1 << 20 + 4096)
        }

        mutating func header(_ names: [String]) {
            for (i, n) in names.enumerated() {
                if i > 0 { bytes.append(UInt8(ascii: ",")) }
                CSV.appendText(n, to: &bytes)
            }
            bytes.append(UInt8(ascii: "\n"))
        }

        mutating func flushIfFull(_ sink: (UnsafeRawBufferPointer) throws(ClientError) -> Void) throws(ClientError) {
            if bytes.count >= 1 << 20 { try flush(sink) }
        }

        mutating func flush(_ sink: (UnsafeRawBufferPointer) throws(ClientError) -> Void) throws(ClientError) {
            var failure: ClientError?
            bytes.withUnsafeBytes { b in
                do throws(ClientError) { try sink(b) } catch { failure = error }
            }
            if let failure { throw failure }
            bytes.removeAll(keepingCapacity: true)
        }
    }

    /// Reads the cells of one column straight from its blob.
    private struct Cells {
        enum Kind {
            case numeric(DType)
            case bitmap
            case text
        }
        let kind: Kind
        let base: UnsafeRawPointer?
        let offset: Int
        let validity: UnsafeRawPointer?
        let offsets: UnsafeRawPointer?
        // The values stay mapped while the frame or table they came from is alive;
        // `write` holds it for the whole call.

        init(_ tensor: AnyTensor) {
            kind = .numeric(tensor.dtype)
            base = tensor.blob.rawAddress
            offset = 0
            validity = nil
            offsets = nil
        }

        init(_ array: ArrowArray) {
            switch array.type {
            case .numeric(let d): kind = .numeric(d)
            case .bool: kind = .bitmap
            default: kind = .text
            }
            base = array.values.rawAddress
            offset = array.offset
            validity = array.validity?.rawAddress
            offsets = array.valueOffsets?.rawAddress
        }

        func append(row: Int, to out: inout [UInt8]) {
            let i = offset + row
            if let validity, validity.load(fromByteOffset: i >> 3, as: UInt8.self) & (1 << UInt8(i & 7)) == 0 { return }
            guard let base else { return }
            switch kind {
            case .bitmap:
                let set = base.load(fromByteOffset: i >> 3, as: UInt8.self) & (1 << UInt8(i & 7)) != 0
                out.append(contentsOf: set ? Array("True".utf8) : Array("False".utf8))
            case .text:
                guard let offsets else { return }
                let start = Int(offsets.load(fromByteOffset: i * 8, as: Int64.self))
                let end = Int(offsets.load(fromByteOffset: (i + 1) * 8, as: Int64.self))
                let s = String(decoding: UnsafeRawBufferPointer(start: base + start, count: end - start), as: UTF8.self)
                CSV.appendText(s, to: &out)
            case .numeric(let d):
                let p = base + i * d.size
                switch d {
                case .bool: out.append(contentsOf: p.load(as: UInt8.self) != 0 ? Array("True".utf8) : Array("False".utf8))
                case .int8: CSV.appendInteger(Int64(p.load(as: Int8.self)), to: &out)
                case .int16: CSV.appendInteger(Int64(p.loadUnaligned(as: Int16.self)), to: &out)
                case .int32: CSV.appendInteger(Int64(p.loadUnaligned(as: Int32.self)), to: &out)
                case .int64: CSV.appendInteger(p.loadUnaligned(as: Int64.self), to: &out)
                case .uint8: CSV.appendUnsigned(UInt64(p.load(as: UInt8.self)), to: &out)
                case .uint16: CSV.appendUnsigned(UInt64(p.loadUnaligned(as: UInt16.self)), to: &out)
                case .uint32: CSV.appendUnsigned(UInt64(p.loadUnaligned(as: UInt32.self)), to: &out)
                case .uint64: CSV.appendUnsigned(p.loadUnaligned(as: UInt64.self), to: &out)
                case .float16: CSV.appendReal(Double(p.loadUnaligned(as: Float16.self)), text: "\(p.loadUnaligned(as: Float16.self))", to: &out)
                case .float32: CSV.appendReal(Double(p.loadUnaligned(as: Float.self)), text: "\(p.loadUnaligned(as: Float.self))", to: &out)
                case .float64:
                    let v = p.loadUnaligned(as: Double.self)
                    CSV.appendReal(v, text: nil, to: &out)
                }
            }
        }
    }

    static func appendInteger(_ v: Int64, to out: inout [UInt8]) {
        if v < 0 {
            out.append(UInt8(ascii: "-"))
            appendUnsigned(v.magnitude, to: &out)
        } else {
            appendUnsigned(UInt64(v), to: &out)
        }
    }

    static func appendUnsigned(_ v: UInt64, to out: inout [UInt8]) {
        if v < 10 {
            out.append(UInt8(ascii: "0") + UInt8(v))
            return
        }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { buf in
            var x = v
            var i = buf.count
            while x > 0 {
                i -= 1
                buf[i] = UInt8(ascii: "0") + UInt8(x % 10)
                x /= 10
            }
            out.append(contentsOf: buf[i...])
        }
    }

    static func appendReal(_ v: Double, text: String?, to out: inout [UInt8]) {
        if v.isNaN { return }
        if v.isInfinite {
            out.append(contentsOf: (v < 0 ? "-inf" : "inf").utf8)
            return
        }
        out.append(contentsOf: (text ?? PythonJSON.float(v)).utf8)
    }

    static func appendText(_ s: String, to out: inout [UInt8]) {
        let needsQuotes = s.utf8.contains { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 10 || $0 == 13 }
            || (s.first?.isWhitespace ?? false) || (s.last?.isWhitespace ?? false)
        if !needsQuotes {
            out.append(contentsOf: s.utf8)
            return
        }
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            if b == UInt8(ascii: "\"") { out.append(b) }
            out.append(b)
        }
        out.append(UInt8(ascii: "\""))
    }
}

extension Blob {
    /// The first byte's address, for readers that hold the blob alive themselves.
    var rawAddress: UnsafeRawPointer? {
        region.map { UnsafeRawPointer($0.base + offset) }
    }
}

// MARK: - Storing parsed CSV

extension Client {
    /// Stores parsed CSV as a data frame: numeric and boolean columns become tensors. A
    /// first column with an empty name (how pandas writes the index) becomes the index.
    ///
    /// - Throws: ``ClientError/Kind/invalidArgument`` for text columns (store the CSV as a
    ///   table instead, ``createTable(csv:)``).
    public func createDataFrame(csv: CSV.Table) throws(ClientError) -> DataFrame {
        var columns: [(name: JSON, values: AnyTensor)] = []
        var index: PandasIndex?
        for (i, (name, column)) in zip(csv.names, csv.columns).enumerated() {
            let tensor: AnyTensor
            switch column {
            case .int64(let v): tensor = try putTensor(v).base
            case .float64(let v): tensor = try putTensor(v).base
            case .bool(let v): tensor = try putTensor(v).base
            case .string:
                throw ClientError(.invalidArgument, "column \"\(name)\" holds text, which a tensor cannot; store the CSV as a table")
            }
            if i == 0 && name.isEmpty {
                index = try createIndex(tensor)
            } else {
                columns.append((name: .string(name), values: tensor))
            }
        }
        return try createDataFrame(columns: columns, index: index)
    }

    /// Stores parsed CSV as a one-batch Arrow table (int64, double, bool and large_string columns).
    public func createTable(csv: CSV.Table) throws(ClientError) -> ArrowTable {
        var columns: [(name: String, array: ArrowArray)] = []
        for (name, column) in zip(csv.names, csv.columns) {
            let array: ArrowArray
            switch column {
            case .int64(let v): array = try createArrowArray(v)
            case .float64(let v): array = try createArrowArray(v)
            case .bool(let v): array = try createArrowArray(v)
            case .string(let v): array = try createStringArray(v)
            }
            columns.append((name: name, array: array))
        }
        return try createTable(columns: columns)
    }
}
