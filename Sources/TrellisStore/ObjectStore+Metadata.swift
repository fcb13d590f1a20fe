import TrellisProtocol
import TrellisSystem

#if canImport(Glibc)
import Glibc
#endif

/// The result of `create_data`.
public struct CreatedObject: Sendable, Equatable {
    public var id: ObjectID
    public var signature: UInt64
    public var instanceID: UInt64
}

/// What a deletion did.
public struct Deletion: Sendable, Equatable {
    public var deletedObjects: [ObjectID] = []
    public var freedBlobs: [ObjectID] = []
    /// Freed blobs that were in the spill directory (their files go too).
    public var spilledBlobs: [ObjectID] = []
    /// Persistent objects that went away (for the cluster metadata to unpublish).
    public var unpublished: [ObjectID] = []
    public var droppedNames: [String] = []
}

extension ObjectStore {
    static let blobTypename = "vineyard::Blob"

    /// The deepest metadata tree the store accepts (levels of objects, blobs not counted).
    /// Trees are walked recursively (expanding for `get_data`, persisting, deep deletes,
    /// the JSON encoder and parser), so a client must not be able to chain objects without
    /// bound: `create_data` of a deeper tree — nested in one request or built from
    /// existing members — is refused with MetaTreeInvalid. Vineyard's own types nest a
    /// handful of levels; the limit keeps the expanded tree well inside the JSON parser's
    /// nesting limit (``JSONParser/defaultMaxDepth``).
    public static let maxMetadataDepth = 64

    // MARK: - Create

    /// Validates and stores a metadata tree (members that are new nested trees are
    /// created too), assigning a signature (unless given), an id and a timestamp.
    public func createData(_ content: JSON) throws(VineyardError) -> CreatedObject {
        let now = now()
        let created = try withState { (s) throws(VineyardError) -> CreatedObject in
            guard case .object(let tree) = content else {
                throw VineyardError(.metaTreeInvalid, "No 'typename' field in incoming metadata")
            }
            // Checked before anything is inserted, so a refused tree leaves nothing behind.
            let depth = try Self.depth(of: tree, nesting: 1, in: s)
            if depth > Self.maxMetadataDepth {
                throw VineyardError(
                    .metaTreeInvalid, "metadata tree is \(depth) levels deep, more than the limit of \(Self.maxMetadataDepth)")
            }
            return try insert(tree, into: &s, now: now)
        }
        wakeTouched()
        return created
    }

    /// The depth an incoming tree would have (see ``ObjectRecord/depth``); stops descending
    /// nested trees past the limit (the answer is then only known to be too deep).
    static func depth(of tree: [String: JSON], nesting: Int, in s: StoreState) throws(VineyardError) -> Int {
        if nesting > maxMetadataDepth { return nesting }
        var deepest = 0
        for (_, value) in tree {
            guard case .object(let m) = value else { continue }
            if let text = m["id"]?.stringValue, let mid = ObjectID(string: text) {
                if !mid.isBlob, let rec = s.objects[mid] { deepest = max(deepest, rec.depth) }
            } else if m["id"] == nil {
                deepest = max(deepest, try depth(of: m, nesting: nesting + 1, in: s))
            }
            if deepest >= maxMetadataDepth { break }
        }
        return 1 + deepest
    }

    private func insert(_ tree: [String: JSON], into s: inout StoreState, now: UInt64) throws(VineyardError) -> CreatedObject {
        guard let typename = tree["typename"]?.stringValue else {
            throw VineyardError(.metaTreeInvalid, "No 'typename' field in incoming metadata")
        }
        guard typename != Self.blobTypename else {
            throw VineyardError(.assertionFailed, "type != \"vineyard::Blob\": Blob has no metadata")
        }
        guard let declaredInstance = tree["instance_id"]?.uint64Value else {
            throw VineyardError(.assertionFailed, "tree.contains(\"instance_id\"): The instance_id filed must be presented")
        }
        let isGlobal = tree["global"]?.boolValue ?? false
        var fields: [String: JSON] = [:]
        var members: [String: ObjectID] = [:]
        var blobInstances: [ObjectID: UInt64] = [:]
        var memberInstances: [UInt64] = []
        var depth = 1
        for (key, value) in tree {
            guard case .object(let m) = value else {
                if key != "id" { fields[key] = value }
                continue
            }
            if let idValue = m["id"] {
                guard let idText = idValue.stringValue, let mid = ObjectID(string: idText) else {
                    throw VineyardError(.metaTreeInvalid, "member '\(key)' has an invalid id")
                }
                if mid.isBlob || m["typename"]?.stringValue == Self.blobTypename {
                    if m.count == 1 && mid != .emptyBlob {
                        throw VineyardError(.metaTreeInvalid, "blob \(mid) cannot be a placeholder member ('\(key)')")
                    }
                    let inst = m["instance_id"]?.uint64Value ?? instanceID
                    members[key] = mid
                    blobInstances[mid] = inst
                    if mid != .emptyBlob { memberInstances.append(inst) }
                } else {
                    guard let rec = s.objects[mid] else {
                        throw VineyardError(.objectNotExists, "member '\(key)' refers to a missing object \(mid)")
                    }
                    if isGlobal && (rec.fields["global"]?.boolValue ?? false) {
                        throw VineyardError(.globalObjectInvalid, "global objects cannot contain global members ('\(key)')")
                    }
                    members[key] = mid
                    memberInstances.append(rec.instanceID)
                    depth = max(depth, rec.depth + 1)
                }
            } else {
                let nested = try insert(m, into: &s, now: now)
                members[key] = nested.id
                memberInstances.append(nested.instanceID)
                depth = max(depth, (s.objects[nested.id]?.depth ?? 0) + 1)
            }
        }
        var instance = declaredInstance
        if isGlobal {
            if memberInstances.contains(where: { $0 != declaredInstance }) { instance = InstanceID.unspecified }
        } else if memberInstances.contains(where: { $0 != declaredInstance }) {
            throw VineyardError(.globalObjectInvalid, "Local object cannot refer remote objects")
        }
        let signature: UInt64
        if let given = fields["signature"]?.uint64Value {
            signature = given
        } else {
            signature = s.ids.next(blob: false, nowMillis: now).rawValue
        }
        let id = s.ids.next(blob: false, nowMillis: now)
        fields["signature"] = .number(signature)
        fields["__timestamp"] = .number(now)
        fields["instance_id"] = .number(instance)
        if fields["transient"] == nil { fields["transient"] = .bool(true) }
        if fields["global"] == nil { fields["global"] = .bool(false) }
        if fields["nbytes"] == nil { fields["nbytes"] = .int(0) }
        var record = ObjectRecord(fields: fields, members: members, blobInstances: blobInstances)
        record.depth = depth
        s.objects[id] = record
        s.waiters.touch(.object(id))
        for m in members.values where m != .emptyBlob {
            s.parents[m, default: []].insert(id)
        }
        return CreatedObject(id: id, signature: signature, instanceID: instance)
    }

    // MARK: - Cluster imports

    /// True when the object's metadata is in this store (created here or imported).
    public func hasLocalObject(_ id: ObjectID) -> Bool {
        (try? withState { (s) throws(VineyardError) -> Bool in s.objects[id] != nil }) ?? false
    }

    /// Stores another instance's persisted object as published (an expanded tree with
    /// ids), keeping its id, signature and members; members are imported too.
    public func importRemote(_ id: ObjectID, tree: JSON) {
        _ = try? withState { (s) throws(VineyardError) in importTree(id, tree, &s) }
        wakeTouched()
    }

    private func importTree(_ id: ObjectID, _ tree: JSON, _ s: inout StoreState, nesting: Int = 1) {
        // Another instance publishes only trees within the limit; anything deeper is not imported.
        guard nesting <= Self.maxMetadataDepth, s.objects[id] == nil, case .object(let o) = tree else { return }
        var depth = 1
        var fields: [String: JSON] = [:]
        var members: [String: ObjectID] = [:]
        var blobInstances: [ObjectID: UInt64] = [:]
        for (key, value) in o where key != "id" {
            guard case .object(let m) = value, let text = m["id"]?.stringValue, let mid = ObjectID(string: text) else {
                fields[key] = value
                continue
            }
            members[key] = mid
            if mid.isBlob || m["typename"]?.stringValue == Self.blobTypename {
                blobInstances[mid] = m["instance_id"]?.uint64Value ?? 0
            } else {
                importTree(mid, value, &s, nesting: nesting + 1)
                depth = max(depth, (s.objects[mid]?.depth ?? 0) + 1)
            }
        }
        if depth > Self.maxMetadataDepth { return }
        var rec = ObjectRecord(fields: fields, members: members, blobInstances: blobInstances)
        rec.imported = true
        rec.depth = depth
        s.objects[id] = rec
        s.waiters.touch(.object(id))
        for m in members.values where m != .emptyBlob { s.parents[m, default: []].insert(id) }
        if let name = fields["__name"]?.stringValue, s.names[name] == nil {
            s.names[name] = id
            s.waiters.touch(.name(name))
        }
    }

    /// The instance an object lives on, whether it is global, and whether it was imported
    /// from the cluster's metadata (another instance published it), if it is known here.
    public func placement(of id: ObjectID) -> (instance: UInt64, global: Bool, imported: Bool)? {
        try? withState { (s) throws(VineyardError) -> (UInt64, Bool, Bool)? in
            guard let rec = s.objects[id] else { return nil }
            return (rec.instanceID, rec.fields["global"]?.boolValue ?? false, rec.imported)
        }
    }

    // MARK: - Read

    static func blobStub(_ id: ObjectID, instance: UInt64, length: Int = 0) -> JSON {
        .object([
            "id": .string(id.description), "instance_id": .number(instance), "length": .number(length),
            "nbytes": .number(length), "transient": .bool(true), "typename": .string(blobTypename),
        ])
    }

    /// The expanded tree of an object (members recursively), cached until it changes.
    func expand(_ id: ObjectID, _ s: inout StoreState) -> JSON? {
        if let cached = s.treeCache[id] { return cached }
        guard let rec = s.objects[id] else { return nil }
        var o = rec.fields
        o["id"] = .string(id.description)
        for (key, m) in rec.members {
            if m.isBlob {
                o[key] = Self.blobStub(m, instance: rec.blobInstances[m] ?? instanceID)
            } else if let sub = expand(m, &s) {
                o[key] = sub
            } else {
                o[key] = .object(["id": .string(m.description)])
            }
        }
        let tree = JSON.object(o)
        s.treeCache[id] = tree
        return tree
    }

    private func readOne(_ id: ObjectID, _ s: inout StoreState) -> JSON? {
        if id == .invalid {
            // Upstream's placeholder blob spanning the arena (what `sync_meta` asks for).
            return Self.blobStub(id, instance: instanceID, length: s.allocator.capacity)
        }
        if id.isBlob {
            guard let b = s.blobs[id], b.sealed else { return nil }
            return Self.blobStub(id, instance: instanceID, length: b.size)
        }
        return expand(id, &s)
    }

    /// `get_data`: the trees of the ids that exist, keyed `"o…"`, or `.null` when none do.
    public func getData(_ ids: [ObjectID]) -> JSON {
        let content: [String: JSON] = (try? withState { (s) throws(VineyardError) -> [String: JSON] in
            var out: [String: JSON] = [:]
            for id in ids {
                if let t = readOne(id, &s) { out[id.description] = t }
            }
            return out
        }) ?? [:]
        return content.isEmpty ? .null : .object(content)
    }

    /// True when every id exists (used by `get_data` with `wait`).
    public func allExist(_ ids: [ObjectID]) -> Bool {
        (try? withState { (s) throws(VineyardError) -> Bool in
            ids.allSatisfy { id in id.isBlob ? (s.blobs[id]?.sealed ?? false) : s.objects[id] != nil }
        }) ?? false
    }

    public func exists(_ id: ObjectID) -> Bool {
        (try? withState { (s) throws(VineyardError) -> Bool in
            id.isBlob ? s.blobs[id] != nil : s.objects[id] != nil
        }) ?? false
    }

    /// `list_data`: objects whose typename matches (glob or full regex), in id order,
    /// then sealed blobs if the pattern glob-matches `vineyard::Blob`; at most `limit`.
    ///
    /// `remote` holds the trees other instances published (cluster mode): those not
    /// already here are listed too, so that the listing is the cluster's view as
    /// upstream's synced meta tree gives it.
    public func listData(pattern: String, regex: Bool, limit: Int, remote: [(ObjectID, JSON)] = []) -> JSON {
        // Matching runs outside the store's lock (a slow pattern must not stall other
        // clients): copy the typenames under it, match, then expand the matches under it.
        let matcher = PatternMatcher(pattern: pattern, regex: regex)
        let blobsMatch = PatternMatcher(pattern: pattern, regex: false).matches(Self.blobTypename)
        let (typenames, blobIDs) = (try? withState { (s) throws(VineyardError) -> ([(ObjectID, String)], [ObjectID]) in
            (s.objects.map { ($0.key, $0.value.typename) }, blobsMatch ? s.blobs.compactMap { $0.value.sealed ? $0.key : nil } : [])
        }) ?? ([], [])
        var matched: [ObjectID] = []
        for (id, typename) in typenames.sorted(by: { $0.0 < $1.0 }) {
            if matched.count >= limit { break }
            if matcher.matches(typename) { matched.append(id) }
        }
        let remoteMatches = remote.filter { (_, tree) in
            if case .string(let typename)? = tree["typename"] { return matcher.matches(typename) }
            return false
        }
        let content: [String: JSON] = (try? withState { (s) throws(VineyardError) -> [String: JSON] in
            var out: [String: JSON] = [:]
            for id in matched {
                if let t = expand(id, &s) { out[id.description] = t }
            }
            for id in blobIDs.sorted() {
                if out.count >= limit { break }
                if let b = s.blobs[id], b.sealed { out[id.description] = Self.blobStub(id, instance: instanceID, length: b.size) }
            }
            for (id, tree) in remoteMatches where out.count < limit && s.objects[id] == nil {
                out[id.description] = tree
            }
            return out
        }) ?? [:]
        return content.isEmpty ? .null : .object(content)
    }

    // MARK: - Persist, labels, copies

    /// Marks an object and its transient non-blob members persistent; returns those
    /// that changed, with their trees, so the cluster metadata can publish them.
    public func persist(_ id: ObjectID) throws(VineyardError) -> [PersistedObject] {
        try withState { (s) throws(VineyardError) -> [PersistedObject] in
            if id.isBlob { throw VineyardError(.assertionFailed, "!IsBlob(id): The blobs cannot be persisted") }
            guard s.objects[id] != nil else { throw VineyardError(.metaTreeSubtreeNotExists, "get subtree failed: \(id)") }
            var changed: [ObjectID] = []
            markPersistent(id, &s, &changed)
            for c in changed { invalidate(c, &s) }
            return changed.compactMap { c in expand(c, &s).map { PersistedObject(id: c, tree: $0) } }
        }
    }

    /// Undoes ``persist(_:)`` for objects whose publication failed: they are transient
    /// again, so that a retried persist publishes them.
    public func revertPersist(_ objects: [PersistedObject]) {
        try? withState { (s) throws(VineyardError) in
            for o in objects {
                guard var rec = s.objects[o.id] else { continue }
                rec.fields["transient"] = .bool(true)
                s.objects[o.id] = rec
                invalidate(o.id, &s)
            }
        }
    }

    private func markPersistent(_ id: ObjectID, _ s: inout StoreState, _ changed: inout [ObjectID]) {
        guard var rec = s.objects[id] else { return }
        for m in rec.members.values where !m.isBlob { markPersistent(m, &s, &changed) }
        if rec.isTransient {
            rec.fields["transient"] = .bool(false)
            s.objects[id] = rec
            changed.append(id)
        }
    }

    /// Drops cached trees of `id` and of everything that contains it.
    func invalidate(_ id: ObjectID, _ s: inout StoreState) {
        var stack = [id]
        while let x = stack.popLast() {
            if s.treeCache.removeValue(forKey: x) != nil || x == id {
                stack.append(contentsOf: s.parents[x] ?? [])
            }
        }
    }

    public func isPersistent(_ id: ObjectID) throws(VineyardError) -> Bool {
        try withState { (s) throws(VineyardError) -> Bool in
            if id.isBlob { return false }
            guard let rec = s.objects[id] else { throw VineyardError(.metaTreeSubtreeNotExists, "get subtree failed: \(id)") }
            return !rec.isTransient
        }
    }

    public func label(_ id: ObjectID, keys: [String], values: [String]) throws(VineyardError) {
        try withState { (s) throws(VineyardError) in
            guard var rec = s.objects[id] else { throw VineyardError(.objectNotExists, "failed to label: object \(id) doesn't exist") }
            var labels: [String: JSON] = [:]
            if let text = rec.fields["__labels"]?.stringValue, case .object(let o)? = try? JSONParser.parse(text) {
                labels = o
            }
            for (k, v) in zip(keys, values) { labels[k] = .string(v) }
            rec.fields["__labels"] = .string(JSON.object(labels).description)
            s.objects[id] = rec
            invalidate(id, &s)
        }
    }

    /// A new object with the same fields and members as `id`, plus `extra` fields.
    public func shallowCopy(_ id: ObjectID, extra: [String: JSON]) throws(VineyardError) -> ObjectID {
        let now = now()
        return try withState { (s) throws(VineyardError) -> ObjectID in
            if id.isBlob { throw VineyardError(.assertionFailed, "shallow copy of a blob is not supported: \(id)") }
            guard var rec = s.objects[id] else { throw VineyardError(.metaTreeSubtreeNotExists, "get subtree failed: \(id)") }
            for (k, v) in extra { rec.fields[k] = v }
            rec.fields["__name"] = nil
            rec.fields["__timestamp"] = .number(now)
            let copy = s.ids.next(blob: false, nowMillis: now)
            s.objects[copy] = rec
            for m in rec.members.values where m != .emptyBlob { s.parents[m, default: []].insert(copy) }
            return copy
        }
    }

    // MARK: - Delete

    /// `del_data` with upstream's dependency semantics: a referenced object stays
    /// unless `force` (which deletes its referrers too); blob members go with the last
    /// object that references them; other members go too with `deep` once unreferenced.
    ///
    /// A deleted blob's memory is reused (or trimmed) only once no connection other than
    /// `connection` (the one deleting) uses it; until then it stays allocated as retired.
    @discardableResult
    public func delete(
        _ ids: [ObjectID], force: Bool, deep: Bool, memoryTrim: Bool, connection: ConnectionID? = nil
    ) -> Deletion {
        var quarantined: [(start: Int, size: Int)] = []
        let result = (try? withState { (s) throws(VineyardError) -> Deletion in
            var d = Deletion()
            var freedOffsets: [Int] = []
            for id in ids {
                guard id != .emptyBlob else { continue }
                let exists = id.isBlob ? s.blobs[id] != nil : s.objects[id] != nil
                guard exists else { continue }
                let referrers = s.parents[id] ?? []
                if !referrers.isEmpty {
                    guard force else { continue }
                    for p in referrers { deleteObject(p, deep: deep, upwards: true, &s, &d, &freedOffsets, connection) }
                }
                if id.isBlob {
                    freeBlob(id, &s, &d, &freedOffsets, connection)
                } else {
                    deleteObject(id, deep: deep, upwards: false, &s, &d, &freedOffsets, connection)
                }
            }
            for off in freedOffsets {
                if memoryTrim {
                    if let block = s.allocator.freeIntoQuarantine(off) { quarantined.append(block) }
                } else {
                    s.allocator.free(off)
                }
            }
            return d
        }) ?? Deletion()
        trimAndReturn(quarantined)
        if let spill { for id in result.spilledBlobs { spill.remove(id) } }
        return result
    }

    private func freeBlob(
        _ id: ObjectID, _ s: inout StoreState, _ d: inout Deletion, _ offsets: inout [Int], _ deleter: ConnectionID?
    ) {
        switch s.removeBlob(id, by: deleter) {
        case nil: return
        case .spillFile: d.spilledBlobs.append(id)
        case .arena(let offset): offsets.append(offset)
        case .retired: break
        }
        d.freedBlobs.append(id)
        s.parents[id] = nil
    }

    private func deleteObject(
        _ id: ObjectID, deep: Bool, upwards: Bool, _ s: inout StoreState, _ d: inout Deletion, _ offsets: inout [Int],
        _ deleter: ConnectionID?
    ) {
        if upwards, let referrers = s.parents[id] {
            for p in referrers { deleteObject(p, deep: deep, upwards: true, &s, &d, &offsets, deleter) }
        }
        invalidate(id, &s)
        guard let rec = s.objects.removeValue(forKey: id) else { return }
        d.deletedObjects.append(id)
        if !rec.isTransient { d.unpublished.append(id) }
        if let name = rec.fields["__name"]?.stringValue, s.names[name] == id {
            s.names[name] = nil
            d.droppedNames.append(name)
        }
        s.parents[id] = nil
        for m in Set(rec.members.values) where m != .emptyBlob {
            s.parents[m]?.remove(id)
            guard s.parents[m]?.isEmpty ?? true else { continue }
            s.parents[m] = nil
            if m.isBlob {
                freeBlob(m, &s, &d, &offsets, deleter)
            } else if deep {
                deleteObject(m, deep: deep, upwards: false, &s, &d, &offsets, deleter)
            }
        }
    }

    /// Deletes every object and blob and returns all free pages to the OS. Names are dropped
    /// too. Blobs other connections still use stay allocated (retired) until they let go.
    public func clear(connection: ConnectionID? = nil) -> Deletion {
        let d = (try? withState { (s) throws(VineyardError) -> Deletion in
            var d = Deletion()
            d.deletedObjects = Array(s.objects.keys)
            d.unpublished = s.objects.filter { !$0.value.isTransient }.map(\.key)
            d.freedBlobs = Array(s.blobs.keys)
            d.droppedNames = Array(s.names.keys)
            for id in d.freedBlobs {
                switch s.removeBlob(id, by: connection) {
                case .spillFile: d.spilledBlobs.append(id)
                case .arena(let offset): s.allocator.free(offset)
                case .retired, nil: break
                }
            }
            // Fresh tables, not emptied ones: removing keeps a dictionary's capacity, and a
            // store that once held 100,000s of entries would keep megabytes of empty slots.
            s.blobs = [:]
            s.objects = [:]
            s.parents = [:]
            s.names = [:]
            s.treeCache = [:]
            if s.retired.isEmpty { s.retired = [:] }
            s.allocator.releaseSpareCapacity()
            return d
        }) ?? Deletion()
        if let spill { for id in d.spilledBlobs { spill.remove(id) } }
        trimFreeMemory()
        return d
    }

    // MARK: - Names

    public func putName(_ name: String, for id: ObjectID) throws(VineyardError) {
        try withState { (s) throws(VineyardError) in
            if id.isBlob { throw VineyardError(.invalid, "blobs cannot have name") }
            guard var rec = s.objects[id] else {
                throw VineyardError(.objectNotExists, "failed to put name: object \(id) doesn't exist")
            }
            guard !rec.isTransient else {
                throw VineyardError(.invalid, "transient objects cannot have name, please persist it first")
            }
            if let old = s.names[name], old != id, var oldRec = s.objects[old], oldRec.fields["__name"]?.stringValue == name {
                oldRec.fields["__name"] = nil
                s.objects[old] = oldRec
                invalidate(old, &s)
            }
            s.names[name] = id
            s.waiters.touch(.name(name))
            rec.fields["__name"] = .string(name)
            s.objects[id] = rec
            invalidate(id, &s)
        }
        wakeTouched()
    }

    public func getName(_ name: String) -> ObjectID? {
        try? withState { (s) throws(VineyardError) -> ObjectID? in s.names[name] }
    }

    public func dropName(_ name: String) {
        _ = try? withState { (s) throws(VineyardError) in
            guard let id = s.names.removeValue(forKey: name) else { return }
            if var rec = s.objects[id], rec.fields["__name"]?.stringValue == name {
                rec.fields["__name"] = nil
                s.objects[id] = rec
                invalidate(id, &s)
            }
        }
    }

    /// Names matching a glob or a full regex, at most `limit`, in name order.
    public func listNames(pattern: String, regex: Bool, limit: Int) -> [(String, ObjectID)] {
        let all = (try? withState { (s) throws(VineyardError) -> [(String, ObjectID)] in
            s.names.map { ($0.key, $0.value) }
        }) ?? []
        return Self.matchNames(all, pattern: pattern, regex: regex, limit: limit)
    }

    /// Filters `(name, id)` pairs by a glob or full regex, in name order, at most `limit`.
    public static func matchNames(_ names: [(String, ObjectID)], pattern: String, regex: Bool, limit: Int) -> [(String, ObjectID)] {
        let matcher = PatternMatcher(pattern: pattern, regex: regex)
        var out: [(String, ObjectID)] = []
        for (n, id) in names.sorted(by: { $0.0 < $1.0 }) where matcher.matches(n) {
            if out.count >= limit { break }
            out.append((n, id))
        }
        return out
    }

    /// This instance's own persistent objects (not imported ones) with their trees, and
    /// the names bound to them: what to publish again after the cluster metadata was lost.
    public func ownPersistentState() -> (objects: [PersistedObject], names: [(String, ObjectID)]) {
        (try? withState { (s) throws(VineyardError) -> ([PersistedObject], [(String, ObjectID)]) in
            let ids = s.objects.filter { !$0.value.imported && !$0.value.isTransient }.map(\.key)
            let objects = ids.compactMap { id in expand(id, &s).map { PersistedObject(id: id, tree: $0) } }
            let names = s.names.filter { s.objects[$0.value].map { !$0.imported } ?? false }.map { ($0.key, $0.value) }
            return (objects, names)
        }) ?? ([], [])
    }

    // MARK: - Waiting
    /// Parks the calling thread until `ready` gives a value (re-checked whenever one of
    /// `keys` is written) or the request is abandoned: the peer of `client` hangs up
    /// (noticed at once: the wait polls the client's socket with its wake-up), or
    /// `cancelled` says so (checked every `pollMilliseconds` when there is no socket to
    /// watch). Returns nil when abandoned.
    public func wait<T>(
        for keys: [WaitKey], watching client: Descriptor? = nil, pollMilliseconds: Int = 200, cancelled: () -> Bool,
        ready: () -> T?
    ) -> T? {
        guard let waiter = try? Waiter() else { return ready() }  // no eventfd to be had: no parking
        let token = (try? withState { (s) throws(VineyardError) -> UInt64 in s.waiters.add(waiter, for: keys) }) ?? 0
        defer { _ = try? withState { (s) throws(VineyardError) in s.waiters.remove(token, for: keys) } }
        let timeout: Duration? = client == nil ? .milliseconds(pollMilliseconds) : nil
        while true {
            if let v = ready() { return v }
            if cancelled() { return nil }
            if waiter.wait(watching: client, timeout: timeout) == .hangUp { return nil }
        }
    }

    /// Parked waiters (for tests and status).
    public var parkedWaiters: Int { (try? withState { (s) throws(VineyardError) -> Int in s.waiters.count }) ?? 0 }

    /// Wakes the waiters of the keys written since the last call (outside the lock).
    func wakeTouched() {
        let ws = (try? withState { (s) throws(VineyardError) -> [Waiter] in s.waiters.takeWoken() }) ?? []
        wake(ws)
    }
}

/// Glob (`fnmatch` syntax) or whole-string regex matching for list commands, without
/// backtracking (see ``Pattern``); an invalid or unsupported pattern matches nothing.
struct PatternMatcher: Sendable {
    let compiled: Pattern?
    let matchesEverything: Bool

    init(pattern: String, regex: Bool) {
        matchesEverything = !regex && pattern == "*"
        compiled = matchesEverything ? nil : Pattern(pattern, regex: regex)
    }

    func matches(_ text: String) -> Bool {
        if matchesEverything { return true }
        return compiled?.matches(text) ?? false
    }
}
