/// The Python side of a step: a small module the runner writes to `<run>/lib/trellis_step.py`
/// and puts on every step's `PYTHONPATH`.
///
/// - `python3 trellis_step.py --file F --function FN` — imports `F` (its directory first on
///   `sys.path`) and calls `FN()`; the function's source is read from the file, never passed
///   through a shell (the seed's heredoc shipping expanded `$` and backticks).
/// - `python3 trellis_step.py --file F` — runs `F` as `__main__`.
/// - `python3 -m trellis_step script.py ARGS…` — the same for command steps.
///
/// Before the step's code runs it applies the run's object-name prefix
/// (`TRELLIS_NAME_PREFIX`, see ``ObjectNaming``) to the upstream vineyard client, and it times
/// `Client.put`/`Client.get` (the handoff) into `$TRELLIS_METRICS`.
public enum PythonBootstrap {
    /// File name of the module.
    public static let fileName = "trellis_step.py"

    /// The module's source.
    public static let source = pythonSource(PackageResources.trellis_step_py)
}

/// The text of a Python file under Sources/TrellisFlow/Python, embedded in the binary at
/// build time (`.embedInCode`: no resource bundle to ship beside `trellis`), without the
/// file's final newline. The files are Python first: tests/python_sources compiles and
/// lints them with pyflakes.
func pythonSource(_ bytes: [UInt8]) -> String {
    var text = String(decoding: bytes, as: UTF8.self)
    if text.hasSuffix("\n") { text.removeLast() }
    return text
}
