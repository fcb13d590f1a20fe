import Foundation

/// Building blocks of the dashboard's pages: escaping and links. Every string that comes
/// from a run, a flow file, a log or a daemon goes through ``escape(_:)`` (text and
/// attribute values alike) or ``pathSegment(_:)`` (inside a URL).
public enum HTML {
    /// `s` with `&`, `<`, `>`, `"` and `'` replaced by entities: safe as element text and
    /// as a quoted attribute value.
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// `s` percent-encoded as one path segment (unreserved characters stay).
    public static func pathSegment(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)...Unicode.Scalar(127)))
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }

    /// `/runs/<id>`.
    public static func runURL(_ runID: String) -> String { "/runs/" + pathSegment(runID) }

    /// `/runs/<id>/steps/<step>`: the step's log page.
    public static func stepURL(_ runID: String, _ step: String) -> String {
        runURL(runID) + "/steps/" + pathSegment(step)
    }

    /// `/api/runs/<id>/steps/<step>/<stdout|stderr>`: one log as plain text.
    public static func logURL(_ runID: String, _ step: String, _ stream: String) -> String {
        "/api" + stepURL(runID, step) + "/" + stream
    }

    /// `<a href="url">text</a>`, both escaped.
    public static func link(_ url: String, _ text: String, attributes: String = "") -> String {
        "<a href=\"\(escape(url))\"\(attributes.isEmpty ? "" : " " + attributes)>\(escape(text))</a>"
    }
}
