import Testing
import TrellisProtocol
@testable import TrellisStore

@Suite("Patterns without backtracking")
struct PatternTests {
    func regex(_ p: String, _ text: String) -> Bool { Pattern(p, regex: true)?.matches(text) ?? false }
    func glob(_ p: String, _ text: String) -> Bool { Pattern(p, regex: false)?.matches(text) ?? false }

    @Test("regex: whole-string ECMAScript matching of typenames")
    func regexSemantics() {
        #expect(regex("vineyard::Tensor<.*>", "vineyard::Tensor<int64>"))
        #expect(!regex("Tensor", "vineyard::Tensor<int64>"))  // whole string, not a search
        #expect(regex(".*Tensor.*", "vineyard::Tensor<int64>"))
        #expect(regex("vineyard::(Tensor|DataFrame).*", "vineyard::DataFrame"))
        #expect(regex("vineyard::Tensor<(int|double)>", "vineyard::Tensor<double>"))
        #expect(!regex("vineyard::Tensor<(int|double)>", "vineyard::Tensor<int64>"))
        #expect(regex("a{2,3}", "aaa") && !regex("a{2,3}", "aaaa") && !regex("a{2,3}", "a"))
        #expect(regex("a{2}", "aa") && regex("a{2,}", "aaaaa") && !regex("a{2,}", "a"))
        #expect(regex("x{", "x{"))  // a '{' that is no quantifier is a literal
        #expect(regex("[a-c]+\\d?", "abcab7") && !regex("[^a-c]", "b"))
        #expect(regex("\\w+::\\w+", "vineyard::Blob") && regex("\\s*x", "  x") && regex("\\.", "."))
        #expect(regex("^ab$", "ab") && regex("(?:ab)+", "ababab") && regex("a+?b", "aab"))
        #expect(regex("", "") && !regex("", "a") && regex("a|", "") && regex("(a*)*", "aaaa"))
        #expect(regex("\\x41\\u0042", "AB") && regex("[\\d.]+", "1.5"))
        #expect(!regex(".", "\n"))
    }

    @Test("regex: invalid or backtracking-only syntax is refused (matches nothing)")
    func regexInvalid() {
        for p in ["([", "(", ")", "a**", "*a", "a{3,2}", "(a)\\1", "(?=a)a", "(?!a)b", "\\bword", "[b-a]", "\\", "a{2}{3}"] {
            #expect(Pattern(p, regex: true) == nil, "\(p) was accepted")
        }
        // Nesting and the compiled program are bounded.
        #expect(Pattern(String(repeating: "(", count: 100) + "a" + String(repeating: ")", count: 100), regex: true) == nil)
        #expect(Pattern("((a{100}){100}){100}", regex: true) == nil)
        #expect(Pattern(String(repeating: "a", count: 5000), regex: true) == nil)
    }

    @Test("glob: fnmatch syntax without flags")
    func globSemantics() {
        #expect(glob("*", "anything/at::all") && glob("vineyard::Tensor*", "vineyard::Tensor<int64>"))
        #expect(glob("x?z", "xyz") && !glob("x?z", "xz"))
        #expect(glob("[a-c]x", "bx") && !glob("[!a-c]x", "bx") && glob("[^a-c]x", "dx"))
        #expect(glob("[]]", "]") && glob("[", "[") && glob("a\\*", "a*") && !glob("a\\*", "ab"))
        #expect(glob("*a*b*c*", "xxaxxbxxcxx") && !glob("*a*b*c*", "xxaxxcxxbxx"))
    }

    @Test("pathological patterns finish: linear in the text, whatever the pattern", .timeLimit(.minutes(1)))
    func noCatastrophicBacktracking() {
        let text = String(repeating: "a", count: 5000)
        #expect(!regex("(a*)*b", text))
        #expect(!regex("(a|a)*b", text))
        #expect(!regex("(a|aa)+$b", text))
        #expect(regex("(a?){30}a{30}", String(repeating: "a", count: 30)))
        #expect(!glob(String(repeating: "*a", count: 200) + "b", text))
        #expect(regex("(.*a){20}", text))
    }

    @Test("list_data and list_name match with it", .timeLimit(.minutes(1)))
    func listsUseIt() throws {
        let store = try ObjectStore(capacity: 1 << 20)
        let long = "hostile::" + String(repeating: "a", count: 3000)
        let id = try store.createData(["typename": .string(long), "instance_id": 0]).id
        #expect(store.listData(pattern: "hostile::(a*)*b", regex: true, limit: 10) == .null)
        #expect(store.listData(pattern: "hostile::(a*)*", regex: true, limit: 10).objectValue?.keys.first == id.description)
        #expect(ObjectStore.matchNames([(long, id)], pattern: "hostile::(a|a)*b", regex: true, limit: 10).isEmpty)
    }
}
