"""Reads a Trellis run record into the numbers the example prints and the benchmark compares."""

import json
import os


def load_record(home, run_id):
    with open(os.path.join(home, "runs", run_id, "record.json")) as f:
        return json.load(f)


def mse_from(record):
    """The MSE the test step printed (its stdout log)."""
    for s in record["steps"]:
        if s["name"] == "test":
            try:
                with open(s["stdoutPath"]) as f:
                    for line in f:
                        if line.startswith("MSE: "):
                            return float(line.split()[1])
            except OSError:
                return None
    return None


def affinity_violations(record):
    """Steps that ran away from their data: some replica held all their inputs and the step
    ran on one that did not (target: none)."""
    bad = []
    for s in record["steps"]:
        inputs = s.get("inputs", [])
        if not inputs or s.get("replica") is None or not any(i.get("bytes", 0) for i in inputs):
            continue
        common = set(inputs[0].get("residentReplicas", []))
        for i in inputs[1:]:
            common &= set(i.get("residentReplicas", []))
        if common and s["replica"] not in common:
            bad.append(s["name"])
    return bad


def summarize(record):
    """Per-step placement, handoff and overhead, plus totals."""
    steps = []
    for s in record["steps"]:
        m = s.get("metrics", {})
        moves = sum(i.get("moveSeconds", 0.0) for i in s.get("inputs", []))
        steps.append({
            "name": s["name"], "replica": s.get("replica"), "reason": s.get("placementReason"),
            "state": s["state"], "seconds": s.get("duration") or 0.0,
            "put_seconds": m.get("put_seconds", 0.0), "get_seconds": m.get("get_seconds", 0.0),
            "move_seconds": moves,
            "local_bytes": sum(i.get("localBytes", 0) for i in s.get("inputs", [])),
            "moved_bytes": sum(i.get("movedBytes", 0) for i in s.get("inputs", [])),
            "out_bytes": sum(o.get("bytes", 0) for o in s.get("outputs", [])),
            "overhead_seconds": s.get("overhead") or 0.0,
            "data_plane_seconds": s.get("dataPlaneSeconds") or 0.0,
        })
    started = record.get("startedAt")
    return {
        "mode": "trellis", "run_id": record["runID"], "state": record["state"],
        "wall_seconds": _duration(record),
        "handoff_seconds": sum(s["put_seconds"] + s["get_seconds"] + s["move_seconds"] for s in steps),
        "put_seconds": sum(s["put_seconds"] for s in steps),
        "get_seconds": sum(s["get_seconds"] for s in steps),
        "move_seconds": sum(s["move_seconds"] for s in steps),
        "max_overhead_seconds": max((s["overhead_seconds"] for s in steps), default=0.0),
        "affinity_violations": affinity_violations(record),
        "mse": mse_from(record), "steps": steps, "started": started,
        "freed_early": record.get("freedEarly") or [],
    }


def _duration(record):
    from datetime import datetime
    try:
        a = datetime.fromisoformat(record["startedAt"].replace("Z", "+00:00"))
        b = datetime.fromisoformat(record["finishedAt"].replace("Z", "+00:00"))
        return (b - a).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def mib(n):
    return "%.1f MiB" % (n / 1048576.0)


def print_summary(summary, out=print):
    out("MSE: %s" % ("%.6f" % summary["mse"] if summary["mse"] is not None else "?"))
    out("placement and handoff:")
    for s in summary["steps"]:
        out("  %-10s r%s %-14s %6.2fs  put %.3fs  get %.3fs  moved %s in %.3fs  (local in %s, out %s, "
            "runner %.1f ms, data plane %.1f ms)"
            % (s["name"], s["replica"], s["reason"] or "-", s["seconds"], s["put_seconds"], s["get_seconds"],
               mib(s["moved_bytes"]), s["move_seconds"], mib(s["local_bytes"]), mib(s["out_bytes"]),
               s["overhead_seconds"] * 1000, s["data_plane_seconds"] * 1000))
    out("total %.2fs; handoff %.3fs (put %.3fs, get %.3fs, moves %.3fs); steps off their inputs' replica: %s"
        % (summary["wall_seconds"] or 0.0, summary["handoff_seconds"], summary["put_seconds"],
           summary["get_seconds"], summary["move_seconds"], ", ".join(summary["affinity_violations"]) or "none"))
    if summary.get("freed_early"):
        out("freed as soon as their last consumer finished: %s" % ", ".join(summary["freed_early"]))
