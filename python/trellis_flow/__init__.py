"""Trellis flows from Python, in the seed's chaining style.

    from trellis_flow import Flow, Runtime

    def preprocess():
        import vineyard
        ...
        vineyard.put(X_train, name="x_train", persist=True)

    def train():
        import vineyard
        x = vineyard.get(name="x_train", fetch=True)
        ...

    run = Flow(runtime=Runtime(replicas=2, size="30Gi")) \\
        .process(preprocess).process(train) \\
        .run(run_id="linear-regression")
    run.wait()

Each function becomes a step: its source is written to a file and run by the Trellis
runner (never pasted into a shell), so imports go inside the function, as in the seed.
The objects a step reads and writes are found in its source (string-literal ``name=`` of
``put``/``get`` calls) so placement can put a step next to its inputs; pass ``inputs=`` /
``outputs=`` to ``process`` to state them yourself.
"""

from .flow import Flow, FlowFailed, Run, Runtime, infer_names

__all__ = ["Flow", "FlowFailed", "Run", "Runtime", "infer_names"]
