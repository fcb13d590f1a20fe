/// Whole-string pattern matching for `list_data` / `list_name` that cannot backtrack.
///
/// Upstream matches typenames and names with `std::regex` (ECMAScript) or `fnmatch`; both
/// backtrack, so one pathological pattern (`(a*)*b` against `aaaa…`) can hold a CPU for
/// seconds. Here both syntaxes compile to the same Thompson NFA, which is simulated one
/// input character at a time over the set of live states: time is O(text × pattern),
/// whatever the pattern. What a backtracking engine alone can do — backreferences and
/// lookaround — is not supported: such a pattern is invalid, and an invalid pattern
/// matches nothing (as upstream's daemon treats a regex it cannot compile).
///
/// Supported regex syntax (ECMAScript subset): literals, `.`, `[...]`/`[^...]` with ranges
/// and `\d \w \s` (and negations) inside, `( )`, `(?: )`, `|`, `* + ? {n} {n,} {n,m}`
/// (lazy `?` suffix accepted: it does not change whether a string matches), `^`, `$`,
/// escapes `\d \D \w \W \s \S \t \n \r \f \v \0 \xHH \uHHHH` and escaped punctuation.
/// Glob syntax (`fnmatch` without flags): `*`, `?`, `[...]`/`[!...]`/`[^...]`, `\x`.
public struct Pattern: Sendable {
    /// Compiled programs are bounded: counted repetition is expanded, and a pattern whose
    /// program would exceed this many instructions is invalid.
    public static let maxProgramSize = 20_000
    /// Longer patterns are invalid (the request size bounds them anyway).
    public static let maxPatternLength = 4096

    enum Instruction: Sendable {
        case char(CharSet)
        case split(Int, Int)
        case jump(Int)
        case atStart
        case atEnd
        case match
    }

    let program: [Instruction]

    /// A glob (`regex: false`) or an ECMAScript-style regex; nil when invalid or unsupported.
    public init?(_ pattern: String, regex: Bool) {
        let scalars = Array(pattern.unicodeScalars)
        guard scalars.count <= Self.maxPatternLength else { return nil }
        let node: Node
        if regex {
            var parser = RegexParser(scalars)
            guard let n = parser.parse() else { return nil }
            node = n
        } else {
            node = Self.glob(scalars)
        }
        var compiler = Compiler()
        guard compiler.emit(node) else { return nil }
        compiler.program.append(.match)
        guard compiler.program.count <= Self.maxProgramSize else { return nil }
        program = compiler.program
    }

    /// True when the whole of `text` matches.
    public func matches(_ text: String) -> Bool {
        let input = Array(text.unicodeScalars)
        var current = StateSet(count: program.count)
        var next = StateSet(count: program.count)
        add(0, at: 0, length: input.count, to: &current)
        for (i, c) in input.enumerated() {
            if current.isEmpty { return false }
            next.clear()
            for pc in current.members {
                if case .char(let set) = program[pc], set.contains(c) {
                    add(pc + 1, at: i + 1, length: input.count, to: &next)
                }
            }
            swap(&current, &next)
        }
        return current.members.contains { if case .match = program[$0] { true } else { false } }
    }

    /// Adds `pc` and everything reachable from it without consuming input (iteratively).
    private func add(_ pc: Int, at position: Int, length: Int, to set: inout StateSet) {
        var stack = [pc]
        while let pc = stack.popLast() {
            guard set.insert(pc) else { continue }
            switch program[pc] {
            case .split(let a, let b):
                stack.append(b)
                stack.append(a)
            case .jump(let a):
                stack.append(a)
            case .atStart:
                if position == 0 { stack.append(pc + 1) }
            case .atEnd:
                if position == length { stack.append(pc + 1) }
            case .char, .match:
                break
            }
        }
    }

    // MARK: - Syntax tree

    indirect enum Node {
        case empty
        case char(CharSet)
        case concat([Node])
        case alternate([Node])
        case repeated(Node, min: Int, max: Int?)
        case atStart
        case atEnd
    }

    static func glob(_ p: [Unicode.Scalar]) -> Node {
        var items: [Node] = []
        var i = 0
        while i < p.count {
            let c = p[i]
            switch c {
            case "*":
                items.append(.repeated(.char(.any), min: 0, max: nil))
                i += 1
            case "?":
                items.append(.char(.any))
                i += 1
            case "[":
                if let (set, end) = globClass(p, from: i + 1) {
                    items.append(.char(set))
                    i = end
                } else {
                    items.append(.char(.single(c)))  // no closing ']': a literal '['
                    i += 1
                }
            case "\\" where i + 1 < p.count:
                items.append(.char(.single(p[i + 1])))
                i += 2
            default:
                items.append(.char(.single(c)))
                i += 1
            }
        }
        return .concat(items)
    }

    /// A bracket expression starting after '['; returns the set and the index after ']'.
    static func globClass(_ p: [Unicode.Scalar], from start: Int) -> (CharSet, Int)? {
        var i = start
        var negated = false
        if i < p.count && (p[i] == "!" || p[i] == "^") {
            negated = true
            i += 1
        }
        var ranges: [ClosedRange<UInt32>] = []
        var first = true
        while i < p.count {
            var c = p[i]
            if c == "]" && !first { return (CharSet(ranges: ranges, classes: [], negated: negated), i + 1) }
            first = false
            if c == "\\" && i + 1 < p.count {
                i += 1
                c = p[i]
            }
            if i + 2 < p.count && p[i + 1] == "-" && p[i + 2] != "]" {
                var hi = p[i + 2]
                var step = 3
                if hi == "\\" && i + 3 < p.count {
                    hi = p[i + 3]
                    step = 4
                }
                if c.value <= hi.value { ranges.append(c.value...hi.value) }
                i += step
            } else {
                ranges.append(c.value...c.value)
                i += 1
            }
        }
        return nil
    }

    struct Compiler {
        var program: [Instruction] = []

        /// Appends the instructions for `node`; false once the program is too large.
        mutating func emit(_ node: Node) -> Bool {
            if program.count > Pattern.maxProgramSize { return false }
            switch node {
            case .empty:
                return true
            case .char(let set):
                program.append(.char(set))
            case .atStart:
                program.append(.atStart)
            case .atEnd:
                program.append(.atEnd)
            case .concat(let items):
                for item in items where !emit(item) { return false }
            case .alternate(let options):
                // split L1, next; L1: a; jump end; next: split L2, … ; last option plain
                var jumps: [Int] = []
                for (k, option) in options.enumerated() {
                    if k < options.count - 1 {
                        let split = program.count
                        program.append(.split(split + 1, -1))
                        if !emit(option) { return false }
                        jumps.append(program.count)
                        program.append(.jump(-1))
                        program[split] = .split(split + 1, program.count)
                    } else if !emit(option) {
                        return false
                    }
                }
                for j in jumps { program[j] = .jump(program.count) }
            case .repeated(let sub, let min, let max):
                for _ in 0..<min where !emit(sub) { return false }
                if let max {
                    // (sub (sub (…)?)?)? : each optional copy may end the repetition
                    var splits: [Int] = []
                    for _ in min..<max {
                        splits.append(program.count)
                        program.append(.split(program.count + 1, -1))
                        if !emit(sub) { return false }
                    }
                    for s in splits { program[s] = .split(s + 1, program.count) }
                } else {
                    let loop = program.count
                    program.append(.split(loop + 1, -1))
                    if !emit(sub) { return false }
                    program.append(.jump(loop))
                    program[loop] = .split(loop + 1, program.count)
                }
            }
            return program.count <= Pattern.maxProgramSize
        }
    }
}

/// A set of characters: ranges and classes, possibly negated.
struct CharSet: Sendable {
    enum Class: Sendable { case digit, word, space, notDigit, notWord, notSpace }
    var ranges: [ClosedRange<UInt32>]
    var classes: [Class]
    var negated: Bool
    var matchesAll = false

    static let any = CharSet(ranges: [], classes: [], negated: false, matchesAll: true)
    static func single(_ c: Unicode.Scalar) -> CharSet { CharSet(ranges: [c.value...c.value], classes: [], negated: false) }
    static func of(_ c: Class) -> CharSet { CharSet(ranges: [], classes: [c], negated: false) }

    func contains(_ c: Unicode.Scalar) -> Bool {
        if matchesAll { return true }
        var inside = ranges.contains { $0.contains(c.value) }
        if !inside {
            inside = classes.contains { k in
                switch k {
                case .digit: Self.isDigit(c)
                case .word: Self.isWord(c)
                case .space: Self.isSpace(c)
                case .notDigit: !Self.isDigit(c)
                case .notWord: !Self.isWord(c)
                case .notSpace: !Self.isSpace(c)
                }
            }
        }
        return inside != negated
    }

    static func isDigit(_ c: Unicode.Scalar) -> Bool { ("0"..."9").contains(c) }
    static func isWord(_ c: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(c) || ("A"..."Z").contains(c) || isDigit(c) || c == "_"
    }
    static func isSpace(_ c: Unicode.Scalar) -> Bool {
        [" ", "\t", "\n", "\r", "\u{0B}", "\u{0C}", "\u{A0}", "\u{FEFF}", "\u{2028}", "\u{2029}"].contains(c)
    }
}

/// The set of live NFA states: a dense list plus a generation-stamped membership array,
/// so clearing is O(1) and iteration follows insertion order.
struct StateSet {
    private var stamp: [UInt32]
    private var generation: UInt32 = 1
    private(set) var members: [Int] = []

    init(count: Int) { stamp = Array(repeating: 0, count: count) }

    var isEmpty: Bool { members.isEmpty }

    /// True when newly inserted.
    mutating func insert(_ pc: Int) -> Bool {
        if stamp[pc] == generation { return false }
        stamp[pc] = generation
        members.append(pc)
        return true
    }

    mutating func clear() {
        members.removeAll(keepingCapacity: true)
        generation &+= 1
        if generation == 0 {
            for i in stamp.indices { stamp[i] = 0 }
            generation = 1
        }
    }
}

/// Recursive-descent parser for the regex subset; nesting is bounded like JSON's.
struct RegexParser {
    static let maxNesting = 64
    let p: [Unicode.Scalar]
    var i = 0
    var nesting = 0
    /// A `{m,n}` with n < m was seen: the pattern is invalid.
    var outOfOrder = false

    init(_ p: [Unicode.Scalar]) { self.p = p }

    mutating func parse() -> Pattern.Node? {
        guard let node = alternation(), i == p.count, !outOfOrder else { return nil }
        return node
    }

    private mutating func alternation() -> Pattern.Node? {
        var options: [Pattern.Node] = []
        while true {
            guard let c = concatenation() else { return nil }
            options.append(c)
            if i < p.count && p[i] == "|" {
                i += 1
                continue
            }
            return options.count == 1 ? options[0] : .alternate(options)
        }
    }

    private mutating func concatenation() -> Pattern.Node? {
        var items: [Pattern.Node] = []
        while i < p.count && p[i] != "|" && p[i] != ")" {
            guard var atom = atom() else { return nil }
            if i < p.count, let (lo, hi) = quantifier() {
                if case .atStart = atom { return nil }
                if case .atEnd = atom { return nil }
                if i < p.count && p[i] == "?" { i += 1 }  // lazy: same set of matches
                atom = .repeated(atom, min: lo, max: hi)
                // ECMAScript: a quantifier cannot be quantified ("nothing to repeat")
                if i < p.count && (p[i] == "*" || p[i] == "+" || p[i] == "?") { return nil }
                if i < p.count && p[i] == "{" {
                    let here = i
                    if quantifier() != nil { return nil }
                    i = here
                }
            }
            items.append(atom)
        }
        return items.isEmpty ? .empty : .concat(items)
    }

    /// `* + ? {n} {n,} {n,m}` at `i`, consumed; nil (nothing consumed) when there is none.
    private mutating func quantifier() -> (Int, Int?)? {
        switch p[i] {
        case "*": i += 1; return (0, nil)
        case "+": i += 1; return (1, nil)
        case "?": i += 1; return (0, 1)
        case "{":
            var j = i + 1
            func number(_ j: inout Int) -> Int? {
                var v = 0
                let start = j
                while j < p.count, ("0"..."9").contains(p[j]) {
                    v = min(v * 10 + Int(p[j].value - 48), 100_000)
                    j += 1
                }
                return j > start ? v : nil
            }
            guard let lo = number(&j) else { return nil }  // a literal '{' in ECMAScript's annex B
            var hi: Int? = lo
            if j < p.count && p[j] == "," {
                j += 1
                hi = number(&j)
            }
            guard j < p.count && p[j] == "}" else { return nil }
            if let h = hi, h < lo {
                outOfOrder = true  // ECMAScript: "numbers out of order in {} quantifier"
                return nil
            }
            i = j + 1
            return (lo, hi)
        default:
            return nil
        }
    }

    private mutating func atom() -> Pattern.Node? {
        let c = p[i]
        switch c {
        case "(":
            i += 1
            if i < p.count && p[i] == "?" {
                // only non-capturing groups; lookaround needs backtracking semantics
                guard i + 1 < p.count && p[i + 1] == ":" else { return nil }
                i += 2
            }
            nesting += 1
            defer { nesting -= 1 }
            guard nesting <= Self.maxNesting, let inner = alternation(), i < p.count, p[i] == ")" else { return nil }
            i += 1
            return inner
        case "[":
            i += 1
            return bracket()
        case ".":
            i += 1
            // ECMAScript's '.' excludes line terminators
            return .char(CharSet(ranges: [0x0A...0x0A, 0x0D...0x0D, 0x2028...0x2029], classes: [], negated: true))
        case "^":
            i += 1
            return .atStart
        case "$":
            i += 1
            return .atEnd
        case "\\":
            i += 1
            guard let set = escape(inClass: false) else { return nil }
            return .char(set)
        case "*", "+", "?", ")":
            return nil  // nothing to repeat / unbalanced
        case "{":
            if quantifier() != nil { return nil }
            i += 1
            return .char(.single(c))
        default:
            i += 1
            return .char(.single(c))
        }
    }

    /// After '['.
    private mutating func bracket() -> Pattern.Node? {
        var set = CharSet(ranges: [], classes: [], negated: false)
        if i < p.count && p[i] == "^" {
            set.negated = true
            i += 1
        }
        while i < p.count && p[i] != "]" {
            guard let lo = classAtom() else { return nil }
            if i + 1 < p.count && p[i] == "-" && p[i + 1] != "]" {
                i += 1
                guard let hi = classAtom() else { return nil }
                guard case .single(let a) = lo, case .single(let b) = hi, a.value <= b.value else { return nil }
                set.ranges.append(a.value...b.value)
            } else {
                switch lo {
                case .single(let a): set.ranges.append(a.value...a.value)
                case .set(let s):
                    set.ranges += s.ranges
                    set.classes += s.classes
                }
            }
        }
        guard i < p.count else { return nil }
        i += 1
        return .char(set)
    }

    enum ClassAtom {
        case single(Unicode.Scalar)
        case set(CharSet)
    }

    private mutating func classAtom() -> ClassAtom? {
        let c = p[i]
        i += 1
        guard c == "\\" else { return .single(c) }
        guard let set = escape(inClass: true) else { return nil }
        if set.classes.isEmpty, !set.negated, set.ranges.count == 1, set.ranges[0].count == 1,
            let s = Unicode.Scalar(set.ranges[0].lowerBound)
        {
            return .single(s)
        }
        return .set(set)
    }

    /// After '\'.
    private mutating func escape(inClass: Bool) -> CharSet? {
        guard i < p.count else { return nil }
        let c = p[i]
        i += 1
        switch c {
        case "d": return .of(.digit)
        case "D": return .of(.notDigit)
        case "w": return .of(.word)
        case "W": return .of(.notWord)
        case "s": return .of(.space)
        case "S": return .of(.notSpace)
        case "t": return .single("\t")
        case "n": return .single("\n")
        case "r": return .single("\r")
        case "f": return .single("\u{0C}")
        case "v": return .single("\u{0B}")
        case "0": return .single("\u{0}")
        case "b" where inClass: return .single("\u{08}")
        case "x": return hex(2)
        case "u": return hex(4)
        default:
            // backreferences (\1…), word boundaries and unknown letter escapes are unsupported
            if c.properties.isAlphabetic || ("1"..."9").contains(c) { return nil }
            return .single(c)
        }
    }

    private mutating func hex(_ digits: Int) -> CharSet? {
        guard i + digits <= p.count else { return nil }
        var v: UInt32 = 0
        for _ in 0..<digits {
            guard let d = p[i].properties.isASCIIHexDigit ? UInt32(String(p[i]), radix: 16) : nil else { return nil }
            v = v << 4 | d
            i += 1
        }
        guard let s = Unicode.Scalar(v) else { return nil }
        return .single(s)
    }
}
