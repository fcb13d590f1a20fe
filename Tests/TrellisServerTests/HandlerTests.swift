import Testing
import TrellisProtocol
import TrellisStore
import TrellisSystem
@testable import TrellisServer

/// The request handler without sockets: typed requests in, typed outcomes out, over a
/// real store. (The connection loop's framing and fd passing are ServerTests' business.)
@Suite("Request handler, no sockets")
struct HandlerTests {
    let store: ObjectStore
    let handler: RequestHandler

    init() throws {
        store = try ObjectStore(capacity: 4 << 20)
        handler = RequestHandler(store: store, config: ServerConfig(socketPath: "/nonexistent/handler.sock"))
    }

    func reply(_ r: Request, _ conn: inout ConnectionState) throws -> Reply {
        switch try handler.handle(r, &conn, cancelled: { true }) {
        case .reply(let reply, _), .replyWithBlobBytes(let reply, _), .receiveBlobBytes(let reply, _, _), .replyThenClose(let reply): return reply
        case .close, .none: return .done(.seal)  // never asked for here
        }
    }

    @Test("put an object and find it by name: the replies and the arena descriptor once")
    func putAndName() throws {
        var conn = ConnectionState(id: 1, isRPC: false)
        guard case .register(let reg) = try reply(.register(), &conn) else { Issue.record("no register_reply"); return }
        #expect(reg.storeMatch && conn.registered)
        guard case .reply(.createBuffer(let p, let fd), let sendFD) = try handler.handle(.createBuffer(size: 64), &conn, cancelled: { true })
        else { Issue.record("no create_buffer_reply"); return }
        #expect(sendFD && fd == store.arena.fd.raw)
        guard case .reply(.createBuffer(_, let again), let sendAgain) = try handler.handle(.createBuffer(size: 64), &conn, cancelled: { true })
        else { Issue.record("no create_buffer_reply"); return }
        #expect(!sendAgain && again == -1, "the descriptor goes once per connection")
        #expect(try reply(.seal(p.objectID), &conn) == .done(.seal))
        let tree: JSON = [
            "typename": "vineyard::Tensor<int64>", "instance_id": 0, "nbytes": 64,
            "buffer_": ["id": .string(p.objectID.description), "typename": "vineyard::Blob", "instance_id": 0],
        ]
        guard case .createData(let created) = try reply(.createData(tree), &conn) else { Issue.record("no create_data_reply"); return }
        #expect(try reply(.persist(created.id), &conn) == .done(.persist))
        #expect(try reply(.putName(created.id, name: "x"), &conn) == .done(.putName))
        #expect(try reply(.getName("x", wait: false), &conn) == .getName(created.id))
        #expect(try reply(.listName(pattern: "*", regex: false, limit: 5), &conn) == .listName(["x": created.id]))
        #expect(try reply(.delete([created.id], force: false, deep: true, memoryTrim: false), &conn) == .done(.delData))
        #expect(try reply(.exists(created.id), &conn) == .exists(false))
    }

    @Test("refusals are VineyardErrors with upstream's codes")
    func refusals() throws {
        var rpc = ConnectionState(id: 2, isRPC: true)
        #expect(throws: VineyardError(.invalid, "create_buffer_request needs an IPC connection (it passes a file descriptor)")) {
            try handler.handle(.createBuffer(size: 8), &rpc, cancelled: { true })
        }
        var conn = ConnectionState(id: 3, isRPC: false)
        #expect(throws: VineyardError(.objectNotExists, "failed to find name: nope")) {
            try handler.handle(.getName("nope", wait: false), &conn, cancelled: { true })
        }
        // A wait whose client is already gone gives up instead of parking.
        #expect(throws: VineyardError.self) { try handler.handle(.getName("never", wait: true), &conn, cancelled: { true }) }
        #expect(store.parkedWaiters == 0)
    }
}
