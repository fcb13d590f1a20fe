import TrellisProtocol

/// What a store operation leaves to be done once the lock is released: the state
/// machine's methods return it, ``ObjectStore`` runs it (``ObjectStore/run(_:)``).
struct StoreEffects {
    /// Blocks taken out of the free lists whose pages go back to the OS, then return.
    var trim: [(start: Int, size: Int)] = []
    /// Spill files of blobs that went away.
    var removeSpillFiles: [ObjectID] = []
    /// Return every free page to the OS (after `clear`).
    var trimAllFree = false
    /// Parked requests whose keys were written.
    var wake: [Waiter] = []
    /// The state's tables shrank: return freed heap memory to the OS.
    var trimHeap = false
}

// The store's decisions about metadata: create, read, persist, labels and copies,
// delete, names, cluster imports — mutating methods on the state, no arena, no I/O.
extension StoreState {
    // MARK: - Create

    /// `create_data`: validates and stores a tree (nested new members too); a refused tree
    /// leaves nothing behind.
    mutating func createData(_ content: JSON, now: UInt64) throws(VineyardError) -> (CreatedObject, StoreEffects) {
        guard case .object(let tree) = content else {
            throw VineyardError(.metaTreeInvalid, "No 'typename' field in incoming metadata")
        }
        let depth = try depth(of: tree, nesting: 1)
        if depth > ObjectStore.maxMetadataDepth {
            throw VineyardError(
                .metaTreeInvalid, "metadata tree is \(depth) levels deep, more than the limit of \(ObjectStore.maxMetadataDepth)")
        }
        // before anything is inserted (a nested tree is all or nothing)
        try checkBlobMembers(of: tree)
        let created = try insert(tree, now: now)
        return (created, StoreEffects(wake: waiters.takeWoken()))
    }

    /// Every blob member of this instance that `tree` (and its nested trees) refers to by id
    /// must be a blob here: allocated, not deleted or retired (a retired blob's memory is
    /// only kept for the connections that still map it, and goes back to the arena when
    /// they let go). The empty blob is always valid; another instance's blobs are that
    /// instance's business. Called after the depth check, so the walk is bounded.
    func checkBlobMembers(of tree: [String: JSON]) throws(VineyardError) {
        for (key, value) in tree {
            guard case .object(let m) = value else { continue }
            guard let idValue = m["id"] else {
                try checkBlobMembers(of: m)
                continue
            }
            guard let text = idValue.stringValue, let mid = ObjectID(string: text),
                mid.isBlob || m["typename"]?.stringValue == ObjectStore.blobTypename,
                mid != .emptyBlob, m.count > 1,  // (a bare id: `insert` refuses it as a placeholder)
                (m["instance_id"]?.uint64Value ?? instanceID) == instanceID
            else { continue }
            if blobs[mid] == nil {
                throw VineyardError(.objectNotExists, "member '\(key)' refers to a missing blob \(mid)")
            }
        }
    }

    // MARK: - Cluster imports

    mutating func importRemote(_ id: ObjectID, tree: JSON) -> StoreEffects {
        importTree(id, tree)
        return StoreEffects(wake: waiters.takeWoken())
    }

    func placement(of id: ObjectID) -> (instance: UInt64, global: Bool, imported: Bool)? {
        guard let rec = objects[id] else { return nil }
        return (rec.instanceID, rec.fields["global"]?.boolValue ?? false, rec.imported)
    }

    // MARK: - Read

    mutating func getData(_ ids: [ObjectID]) -> [String: JSON] {
        var out: [String: JSON] = [:]
        for id in ids {
            if let t = readOne(id) { out[id.description] = t }
        }
        return out
    }

    func allExist(_ ids: [ObjectID]) -> Bool {
        ids.allSatisfy { id in id.isBlob ? (blobs[id]?.sealed ?? false) : objects[id] != nil }
    }

    func exists(_ id: ObjectID) -> Bool { id.isBlob ? blobs[id] != nil : objects[id] != nil }

    /// What `list_data` matches against, a page at a time in id order (after `after`), copied
    /// out so that matching runs outside the lock: objects with their typenames, and whether
    /// there are more.
    func objectPage(after: ObjectID?, count: Int) -> (page: [(ObjectID, String)], more: Bool) {
        let (ids, more) = objectOrder.page(after: after, count: count) { objects[$0] != nil }
        return (ids.map { ($0, objects[$0]?.typename ?? "") }, more)
    }

    /// The first `count` sealed blobs in id order.
    func sealedBlobs(count: Int) -> [ObjectID] {
        var out: [ObjectID] = []
        var after: ObjectID?
        while out.count < count {
            let (ids, more) = blobOrder.page(after: after, count: count - out.count) { blobs[$0]?.sealed ?? false }
            out += ids
            guard more, let last = ids.last else { break }
            after = last
        }
        return out
    }

    /// The listing of matched objects and blobs, then remote trees not held here, at most `limit`.
    mutating func listing(
        matched: [ObjectID], blobsToo: Bool, remote: [(ObjectID, JSON)], limit: Int
    ) -> [String: JSON] {
        var out: [String: JSON] = [:]
        for id in matched {
            if let t = expand(id) { out[id.description] = t }
        }
        for id in blobsToo && out.count < limit ? sealedBlobs(count: limit - out.count) : [] {
            if let b = blobs[id] { out[id.description] = ObjectStore.blobStub(id, instance: instanceID, length: b.size) }
        }
        for (id, tree) in remote where out.count < limit && objects[id] == nil {
            out[id.description] = tree
        }
        return out
    }

    // MARK: - Persist, labels, copies

    mutating func persist(_ id: ObjectID, trees: Bool = true) throws(VineyardError) -> [PersistedObject] {
        if id.isBlob { throw VineyardError(.assertionFailed, "!IsBlob(id): The blobs cannot be persisted") }
        guard objects[id] != nil else { throw VineyardError(.metaTreeSubtreeNotExists, "get subtree failed: \(id)") }
        var changed: [ObjectID] = []
        markPersistent(id, &changed)
        for c in changed { invalidate(c) }
        if !trees { return changed.map { PersistedObject(id: $0, tree: .null) } }
        return changed.compactMap { c in expand(c).map { PersistedObject(id: c, tree: $0) } }
    }

    mutating func revertPersist(_ persisted: [PersistedObject]) {
        for o in persisted {
            guard var rec = objects[o.id] else { continue }
            rec.fields["transient"] = .bool(true)
            objects[o.id] = rec
            invalidate(o.id)
        }
    }

    func isPersistent(_ id: ObjectID) throws(VineyardError) -> Bool {
        if id.isBlob { return false }
        guard let rec = objects[id] else { throw VineyardError(.metaTreeSubtreeNotExists, "get subtree failed: \(id)") }
        return !rec.isTransient
    }

    mutating func label(_ id: ObjectID, keys: [String], values: [String]) throws(VineyardError) {
        guard var rec = objects[id] else { throw VineyardError(.objectNotExists, "failed to label: object \(id) doesn't exist") }
        var labels: [String: JSON] = [:]
        if let text = rec.fields["__labels"]?.stringValue, case .object(let o)? = try? JSONParser.parse(text) {
            labels = o
        }
        for (k, v) in zip(keys, values) { labels[k] = .string(v) }
        rec.fields["__labels"] = .string(JSON.object(labels).description)
        objects[id] = rec
        invalidate(id)
    }

    mutating func shallowCopy(_ id: ObjectID, extra: [String: JSON], now: UInt64) throws(VineyardError) -> ObjectID {
        if id.isBlob { throw VineyardError(.assertionFailed, "shallow copy of a blob is not supported: \(id)") }
        guard var rec = objects[id] else { throw VineyardError(.metaTreeSubtreeNotExists, "get subtree failed: \(id)") }
        for (k, v) in extra { rec.fields[k] = v }
        rec.fields["__name"] = nil
        rec.fields["__timestamp"] = .number(now)
        let copy = ids.next(blob: false, nowMillis: now)
        addObject(copy, rec)
        for m in rec.members.values where m != .emptyBlob { parents[m, default: []].insert(copy) }
        return copy
    }

    // MARK: - Delete

    /// `del_data` (see ``ObjectStore/delete(_:force:deep:memoryTrim:connection:)``).
    mutating func delete(
        _ ids: [ObjectID], force: Bool, deep: Bool, memoryTrim: Bool, connection: ConnectionID?
    ) -> (Deletion, StoreEffects) {
        var d = Deletion()
        var effects = StoreEffects()
        var freedOffsets: [Int] = []
        for id in ids {
            guard id != .emptyBlob else { continue }
            let exists = id.isBlob ? blobs[id] != nil : objects[id] != nil
            guard exists else { continue }
            let referrers = parents[id] ?? []
            if !referrers.isEmpty {
                guard force else { continue }
                for p in referrers { deleteObject(p, deep: false, upwards: true, &d, &freedOffsets, connection) }
            }
            if id.isBlob {
                freeBlob(id, &d, &freedOffsets, connection)
            } else {
                deleteObject(id, deep: deep, upwards: false, &d, &freedOffsets, connection)
            }
        }
        for off in freedOffsets {
            if memoryTrim {
                if let block = allocator.freeIntoQuarantine(off) { effects.trim.append(block) }
            } else {
                allocator.free(off)
            }
        }
        effects.removeSpillFiles = d.spilledBlobs
        effects.trimHeap = shrinkTablesIfSparse()
        return (d, effects)
    }

    /// Deletes everything (names too); blobs other connections use stay retired.
    mutating func clear(connection: ConnectionID?) -> (Deletion, StoreEffects) {
        var d = Deletion()
        d.deletedObjects = Array(objects.keys)
        d.unpublished = objects.filter { !$0.value.isTransient }.map(\.key)
        d.freedBlobs = Array(blobs.keys)
        d.droppedNames = Array(names.keys)
        for id in d.freedBlobs {
            switch removeBlob(id, by: connection) {
            case .spillFile: d.spilledBlobs.append(id)
            case .arena(let offset): allocator.free(offset)
            case .retired, nil: break
            }
        }
        // Fresh tables, not emptied ones: removing keeps a dictionary's capacity, and a
        // store that once held 100,000s of entries would keep megabytes of empty slots.
        blobs = [:]
        objects = [:]
        parents = [:]
        names = [:]
        treeCache = [:]
        objectOrder.removeAll()
        blobOrder.removeAll()
        // what connections still hold now is the retired blobs they use
        held = [:]
        for (id, r) in retired { for u in r.users { hold(id, u) } }
        if retired.isEmpty { retired = [:] }
        allocator.releaseSpareCapacity()
        return (d, StoreEffects(removeSpillFiles: d.spilledBlobs, trimAllFree: true))
    }

    // MARK: - Names

    mutating func putName(_ name: String, for id: ObjectID) throws(VineyardError) -> StoreEffects {
        if id.isBlob { throw VineyardError(.invalid, "blobs cannot have name") }
        guard var rec = objects[id] else {
            throw VineyardError(.objectNotExists, "failed to put name: object \(id) doesn't exist")
        }
        guard !rec.isTransient else {
            throw VineyardError(.invalid, "transient objects cannot have name, please persist it first")
        }
        if let old = names[name], old != id, var oldRec = objects[old], oldRec.fields["__name"]?.stringValue == name {
            oldRec.fields["__name"] = nil
            objects[old] = oldRec
            invalidate(old)
        }
        names[name] = id
        waiters.touch(.name(name))
        rec.fields["__name"] = .string(name)
        objects[id] = rec
        invalidate(id)
        return StoreEffects(wake: waiters.takeWoken())
    }

    mutating func dropName(_ name: String) {
        guard let id = names.removeValue(forKey: name) else { return }
        if var rec = objects[id], rec.fields["__name"]?.stringValue == name {
            rec.fields["__name"] = nil
            objects[id] = rec
            invalidate(id)
        }
    }

    /// This instance's own persistent objects (not imported ones) with their trees, and
    /// the names bound to them.
    mutating func ownPersistentState() -> (objects: [PersistedObject], names: [(String, ObjectID)]) {
        let ids = objects.filter { !$0.value.imported && !$0.value.isTransient }.map(\.key)
        let persisted = ids.compactMap { id in expand(id).map { PersistedObject(id: id, tree: $0) } }
        let own = names.filter { objects[$0.value].map { !$0.imported } ?? false }.map { ($0.key, $0.value) }
        return (persisted, own)
    }

    // MARK: - The walks

    func depth(of tree: [String: JSON], nesting: Int) throws(VineyardError) -> Int {
        if nesting > ObjectStore.maxMetadataDepth { return nesting }
        var deepest = 0
        for (_, value) in tree {
            guard case .object(let m) = value else { continue }
            if let text = m["id"]?.stringValue, let mid = ObjectID(string: text) {
                if !mid.isBlob, let rec = objects[mid] { deepest = max(deepest, rec.depth) }
            } else if m["id"] == nil {
                deepest = max(deepest, try depth(of: m, nesting: nesting + 1))
            }
            if deepest >= ObjectStore.maxMetadataDepth { break }
        }
        return 1 + deepest
    }

    mutating func insert(_ tree: [String: JSON], now: UInt64) throws(VineyardError) -> CreatedObject {
        guard let typename = tree["typename"]?.stringValue else {
            throw VineyardError(.metaTreeInvalid, "No 'typename' field in incoming metadata")
        }
        guard typename != ObjectStore.blobTypename else {
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
                if mid.isBlob || m["typename"]?.stringValue == ObjectStore.blobTypename {
                    if m.count == 1 && mid != .emptyBlob {
                        throw VineyardError(.metaTreeInvalid, "blob \(mid) cannot be a placeholder member ('\(key)')")
                    }
                    let inst = m["instance_id"]?.uint64Value ?? instanceID
                    members[key] = mid
                    blobInstances[mid] = inst
                    if mid != .emptyBlob { memberInstances.append(inst) }
                } else {
                    guard let rec = objects[mid] else {
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
                let nested = try insert(m, now: now)
                members[key] = nested.id
                memberInstances.append(nested.instanceID)
                depth = max(depth, (objects[nested.id]?.depth ?? 0) + 1)
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
            signature = ids.next(blob: false, nowMillis: now).rawValue
        }
        let id = ids.next(blob: false, nowMillis: now)
        fields["signature"] = .number(signature)
        fields["__timestamp"] = .number(now)
        fields["instance_id"] = .number(instance)
        if fields["transient"] == nil { fields["transient"] = .bool(true) }
        if fields["global"] == nil { fields["global"] = .bool(false) }
        if fields["nbytes"] == nil { fields["nbytes"] = .int(0) }
        var record = ObjectRecord(fields: fields, members: members, blobInstances: blobInstances)
        record.depth = depth
        addObject(id, record)
        waiters.touch(.object(id))
        for m in members.values where m != .emptyBlob {
            parents[m, default: []].insert(id)
        }
        return CreatedObject(id: id, signature: signature, instanceID: instance)
    }

    mutating func importTree(_ id: ObjectID, _ tree: JSON, nesting: Int = 1) {
        // Another instance publishes only trees within the limit; anything deeper is not imported.
        guard nesting <= ObjectStore.maxMetadataDepth, objects[id] == nil, case .object(let o) = tree else { return }
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
            if mid.isBlob || m["typename"]?.stringValue == ObjectStore.blobTypename {
                blobInstances[mid] = m["instance_id"]?.uint64Value ?? 0
            } else {
                importTree(mid, value, nesting: nesting + 1)
                depth = max(depth, (objects[mid]?.depth ?? 0) + 1)
            }
        }
        if depth > ObjectStore.maxMetadataDepth { return }
        var rec = ObjectRecord(fields: fields, members: members, blobInstances: blobInstances)
        rec.imported = true
        rec.depth = depth
        addObject(id, rec)
        waiters.touch(.object(id))
        for m in members.values where m != .emptyBlob { parents[m, default: []].insert(id) }
        if let name = fields["__name"]?.stringValue, names[name] == nil {
            names[name] = id
            waiters.touch(.name(name))
        }
    }

    mutating func expand(_ id: ObjectID) -> JSON? {
        if let cached = treeCache[id] { return cached }
        guard let rec = objects[id] else { return nil }
        var o = rec.fields
        o["id"] = .string(id.description)
        for (key, m) in rec.members {
            if m.isBlob {
                o[key] = ObjectStore.blobStub(m, instance: rec.blobInstances[m] ?? instanceID)
            } else if let sub = expand(m) {
                o[key] = sub
            } else {
                o[key] = .object(["id": .string(m.description)])
            }
        }
        let tree = JSON.object(o)
        treeCache[id] = tree
        return tree
    }

    func localBlobs(of ids: [ObjectID]) -> [ObjectID] {
        var out: Set<ObjectID> = []
        var seen: Set<ObjectID> = []
        var stack = ids
        while let id = stack.popLast() {
            if id.isBlob {
                if id != .emptyBlob, blobs[id] != nil { out.insert(id) }
                continue
            }
            guard seen.insert(id).inserted, let rec = objects[id] else { continue }
            for m in rec.members.values {
                if m.isBlob {
                    if m != .emptyBlob, (rec.blobInstances[m] ?? instanceID) == instanceID, blobs[m] != nil { out.insert(m) }
                } else {
                    stack.append(m)
                }
            }
        }
        return out.sorted { $0.rawValue < $1.rawValue }
    }

    mutating func readOne(_ id: ObjectID) -> JSON? {
        if id == .invalid {
            // Upstream's placeholder blob spanning the arena (what `sync_meta` asks for).
            return ObjectStore.blobStub(id, instance: instanceID, length: allocator.capacity)
        }
        if id.isBlob {
            guard let b = blobs[id], b.sealed else { return nil }
            return ObjectStore.blobStub(id, instance: instanceID, length: b.size)
        }
        return expand(id)
    }

    mutating func markPersistent(_ id: ObjectID, _ changed: inout [ObjectID]) {
        guard var rec = objects[id] else { return }
        for m in rec.members.values where !m.isBlob { markPersistent(m, &changed) }
        if rec.isTransient {
            rec.fields["transient"] = .bool(false)
            objects[id] = rec
            changed.append(id)
        }
    }

    mutating func invalidate(_ id: ObjectID) {
        var stack = [id]
        while let x = stack.popLast() {
            if treeCache.removeValue(forKey: x) != nil || x == id {
                stack.append(contentsOf: parents[x] ?? [])
            }
        }
    }

    mutating func freeBlob(_ id: ObjectID, _ d: inout Deletion, _ offsets: inout [Int], _ deleter: ConnectionID?) {
        switch removeBlob(id, by: deleter) {
        case nil: return
        case .spillFile: d.spilledBlobs.append(id)
        case .arena(let offset): offsets.append(offset)
        case .retired: break
        }
        d.freedBlobs.append(id)
        parents[id] = nil
    }

    mutating func deleteObject(
        _ id: ObjectID, deep: Bool, upwards: Bool, _ d: inout Deletion, _ offsets: inout [Int], _ deleter: ConnectionID?
    ) {
        if upwards, let referrers = parents[id] {
            for p in referrers { deleteObject(p, deep: deep, upwards: true, &d, &offsets, deleter) }
        }
        invalidate(id)
        guard let rec = objects.removeValue(forKey: id) else { return }
        objectOrder.remove(id) { objects[$0] != nil }
        d.deletedObjects.append(id)
        if !rec.isTransient { d.unpublished.append(id) }
        if let name = rec.fields["__name"]?.stringValue, names[name] == id {
            names[name] = nil
            d.droppedNames.append(name)
        }
        parents[id] = nil
        for m in Set(rec.members.values) where m != .emptyBlob {
            parents[m]?.remove(id)
            guard parents[m]?.isEmpty ?? true else { continue }
            parents[m] = nil
            if m.isBlob {
                freeBlob(m, &d, &offsets, deleter)
            } else if deep {
                deleteObject(m, deep: deep, upwards: false, &d, &offsets, deleter)
            }
        }
    }
}
