// TrellisFlow: pipelines whose steps hand data to each other through the Trellis object store.
//
// Layout:
//   Model/       FlowSpec (Codable value types), YAML front door, validation, the DAG
//   Scheduling/  pure decisions: data-affinity placement and the run state machine
//   DataPlane/   what the runner needs from the store (protocol), an in-memory fake, naming
//   Execution/   the thin effectful executor: processes, timers, run records, logs
//   Runtime/     local replica daemons (+ private etcd) started for flows
