import Foundation

extension RunStore {
    /// A run's report page as `trellis flow report` writes it and the dashboard serves it:
    /// the record and the end (`lines` lines) of the logs of every step that ran. The
    /// reading is here; ``FlowReport`` itself does no I/O.
    public func reportHTML(for record: RunRecord, lines: Int = 40, now: Date = Date()) -> String {
        var tails: [String: FlowReport.LogTail] = [:]
        for s in record.steps where s.attempts > 0 {
            let t = logTail(run: record.runID, step: s.name, lines: lines)
            tails[s.name] = FlowReport.LogTail(stdout: t.stdout, stderr: t.stderr)
        }
        return FlowReport.html(for: record, logTails: tails, state: record.effectiveState, now: now)
    }
}
