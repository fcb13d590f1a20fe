import Synchronization
import TrellisMeta
import TrellisProtocol
import TrellisStore
import TrellisSystem

/// The daemon's view of cluster metadata (`--meta etcd`): a blocking bridge from
/// connection threads (which are dedicated OS threads, never the cooperative pool)
/// to the async ``MetaCore``, plus the mapping of cluster operations onto the store.
final class Cluster: Sendable {
    let backend: MetaCore
    let instanceID: UInt64
    /// Upper bound for one metadata call made on behalf of a request.
    let callTimeout: Duration

    init(backend: MetaCore, instanceID: UInt64, callTimeout: Duration = .seconds(30)) {
        self.backend = backend
        self.instanceID = instanceID
        self.callTimeout = callTimeout
    }

    /// Runs `body` to completion and returns its result, blocking this thread (through
    /// ``Blocking/wait(timeout:_:)``, the one sync→async bridge). Failures become
    /// EtcdError (35) replies.
    func call<T: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> T) throws(VineyardError) -> T {
        guard let result = Blocking.wait(timeout: callTimeout, body) else {
            throw VineyardError(.etcdError, "metadata service: \(what) did not finish within \(callTimeout)")
        }
        switch result {
        case .success(let v): return v
        case .failure(let e): throw VineyardError(.etcdError, "metadata service: \(what) failed: \(e)")
        }
    }

    // MARK: Objects

    /// Publishes newly persisted objects (their full trees) under this instance, and with
    /// `naming` binds that name to that object in the same write (after the records).
    func publish(_ objects: [TrellisStore.PersistedObject], naming: (String, ObjectID)? = nil) throws(VineyardError) {
        guard !objects.isEmpty || naming != nil else { return }
        let items = objects.map { (objectID: $0.id.rawValue, metadata: $0.tree.description) }
        let name = naming.map { (name: $0.0, objectID: $0.1.rawValue) }
        let backend = self.backend
        // A DataFrame persists ~50 objects at once: one etcd transaction (per 128) for all.
        try call("publish") { try await backend.publishObjects(items, naming: name) }
    }

    /// Best effort: removes what a failed ``publish(_:)`` may have written.
    func retract(_ objects: [TrellisStore.PersistedObject]) {
        let ids = objects.map(\.id.rawValue)
        let backend = self.backend
        _ = try? call("retract") { try await backend.removeObjects(ids) }
    }

    /// Removes the records of deleted persistent objects and the names bound to them —
    /// here or anywhere in the cluster (a name put through another instance, or by an
    /// owner that is gone, would otherwise point at nothing).
    func unpublish(_ d: Deletion) {
        let ids = d.unpublished.map(\.rawValue)
        let names = d.droppedNames
        guard !ids.isEmpty || !names.isEmpty else { return }
        let backend = self.backend
        _ = try? call("unpublish") {
            try await backend.removeObjects(ids)
            for n in names { try await backend.dropName(n) }
            guard !ids.isEmpty else { return }
            let gone = Set(ids)
            for (name, id) in try await backend.names() where gone.contains(id) && !names.contains(name) {
                try await backend.dropName(name)
            }
        }
    }

    /// Brings published trees of ids unknown here into the store (transitively their
    /// members), so that reads see the cluster's persisted objects. Objects imported
    /// earlier are looked up again: those deleted by their owner, or gone with it
    /// (lease expired), are dropped from the store instead of being served stale.
    func sync(_ ids: [ObjectID], into store: ObjectStore) throws(VineyardError) {
        var unknown: [ObjectID] = []
        var imported: [ObjectID] = []
        for id in ids where !id.isBlob && id != .invalid {
            guard let p = store.placement(of: id) else {
                unknown.append(id)
                continue
            }
            // Imports are re-checked: their owner may have deleted them (global objects too).
            if p.imported { imported.append(id) }
        }
        guard !unknown.isEmpty || !imported.isEmpty else { return }
        let backend = self.backend
        let wanted = unknown + imported
        let found: [UInt64: String]
        do throws(VineyardError) {
            found = try call("read objects") {
                var out: [UInt64: String] = [:]
                for id in wanted {
                    if let o = try await backend.object(id.rawValue) { out[o.objectID] = o.metadata }
                }
                return out
            }
        } catch {
            // Only re-checks failed: keep serving what was imported (e.g. etcd restarting).
            if unknown.isEmpty { return }
            throw error
        }
        for id in unknown {
            guard let text = found[id.rawValue], let tree = try? JSONParser.parse(text) else { continue }
            store.importRemote(id, tree: tree)
        }
        let gone = imported.filter { found[$0.rawValue] == nil }
        if !gone.isEmpty {
            // Shallow: members may be shared with other objects (or be this instance's own).
            _ = store.delete(gone, force: false, deep: false, memoryTrim: false)
        }
    }

    /// Published objects that refer to one of `ids` as a member.
    func referrers(of ids: [ObjectID]) throws(VineyardError) -> [ObjectID] {
        guard !ids.isEmpty else { return [] }
        let raw = ids.map(\.rawValue)
        let backend = self.backend
        return try call("find referrers") { try await backend.referrers(of: raw) }.map(ObjectID.init(rawValue:))
    }

    /// Up to `count` published objects whose type name `matches` and whose metadata is not
    /// in `store`, in id order (the cluster's part of `list_data`). One small request to the
    /// metadata service makes the mirrored listing current (read-your-writes across
    /// instances); the walk then stops as soon as `count` are found.
    func listObjects(
        count: Int, matching matches: (String) -> Bool, notHeldIn store: ObjectStore
    ) throws(VineyardError) -> [(ObjectID, JSON)] {
        guard count > 0 else { return [] }
        let backend = self.backend
        let wait = callTimeout * 0.8
        try call("list objects") { try await backend.syncObjects(timeout: wait) }
        var out: [(ObjectID, JSON)] = []
        var after: UInt64?
        let pageSize = min(max(count, 64), 4096)
        while out.count < count {
            let (page, more) = backend.objectPage(after: after, count: pageSize)
            let candidates = page.filter { matches($0.typename) }.map { ObjectID(rawValue: $0.id) }
            for (id, text) in backend.objectMetadata(store.notHeld(candidates).map(\.rawValue)) where out.count < count {
                if let tree = try? JSONParser.parse(text) { out.append((ObjectID(rawValue: id), tree)) }
            }
            guard more, let last = page.last else { break }
            after = last.id
        }
        return out
    }

    // MARK: Names

    func putName(_ name: String, _ id: ObjectID) throws(VineyardError) {
        let backend = self.backend
        try call("put name") { try await backend.putName(name, objectID: id.rawValue) }
    }

    func objectID(forName name: String) throws(VineyardError) -> ObjectID? {
        let backend = self.backend
        return try call("get name") { try await backend.objectID(forName: name) }.map(ObjectID.init(rawValue:))
    }

    func dropName(_ name: String) throws(VineyardError) {
        let backend = self.backend
        _ = try call("drop name") { try await backend.dropName(name) }
    }

    func names() throws(VineyardError) -> [String: UInt64] {
        let backend = self.backend
        return try call("list names") { try await backend.names() }
    }

    /// Waits for `name` to be bound anywhere in the cluster; gives up (nil) when the
    /// requester leaves: its socket is watched with the wake-up (`cancelled` is checked
    /// every 200 ms only when there is no socket).
    func waitForName(_ name: String, watching client: Descriptor? = nil, cancelled: () -> Bool) -> ObjectID? {
        guard let wakeup = try? Wakeup() else { return nil }
        let result = Mutex<UInt64?>(nil)
        let backend = self.backend
        let task = Task {
            if let id = try? await backend.waitForName(name) { result.withLock { $0 = id } }
            wakeup.signal()
        }
        while true {
            if cancelled() {
                task.cancel()
                return nil
            }
            switch wakeup.wait(watching: client, timeout: client == nil ? .milliseconds(200) : nil) {
            case .signalled: return result.withLock { $0 }.map(ObjectID.init(rawValue:))
            case .hangUp:
                task.cancel()
                return nil
            case .timedOut: continue
            }
        }
    }

    // MARK: Instances

    func instances() throws(VineyardError) -> [InstanceInfo] {
        let backend = self.backend
        return try call("list instances") { try await backend.instances() }
    }
}

#if canImport(Glibc)
import Glibc
#endif
