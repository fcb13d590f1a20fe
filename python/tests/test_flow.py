"""Unit tests of trellis.flow (no Trellis needed): pytest python/tests, or python3 -m unittest discover -s python/tests -p test_flow.py."""

import json
import os
import tempfile
import unittest

from trellis.flow import Flow, Runtime, infer_names


def produce():
    import vineyard
    vineyard.put([1, 2], name="a", persist=True)
    client = vineyard.connect()
    client.put_name(client.put(3), "b")


def consume():
    import vineyard
    a = vineyard.get(name="a", fetch=True)
    b = vineyard.get(name="elsewhere")
    vineyard.put(a, name="c", persist=True)
    return b


def takes_args(x):
    return x


class InferNamesTest(unittest.TestCase):
    def test_literal_names(self):
        import inspect
        self.assertEqual(infer_names(inspect.getsource(produce)), ([], ["a", "b"]))
        self.assertEqual(infer_names(inspect.getsource(consume)), (["a", "elsewhere"], ["c"]))

    def test_dynamic_names_are_ignored(self):
        src = "def f():\n    import vineyard\n    n = 'x'\n    vineyard.put(1, name=n)\n    vineyard.get(name=n)\n"
        self.assertEqual(infer_names(src), ([], []))


class FlowTest(unittest.TestCase):
    def test_chain_and_spec(self):
        with tempfile.TemporaryDirectory() as d:
            flow = Flow(runtime=Runtime(replicas=2, size="2Gi"), name="t", max_parallel=3) \
                .process(produce) \
                .process(consume, env={"K": "v"}, retry_delay=0.5) \
                .process(command=["echo", "$HOME"], name="shell", after=[])
            path = flow.save(d)
            with open(path) as f:
                spec = json.load(f)
            self.assertEqual(spec["runtime"], {"replicas": 2, "size": "2Gi", "medium": "memory"})
            self.assertEqual(spec["max_parallel"], 3)
            steps = {s["name"]: s for s in spec["steps"]}
            self.assertEqual(steps["produce"]["outputs"], ["a", "b"])
            self.assertNotIn("after", steps["produce"])
            # 'elsewhere' is produced by no step: not an input.
            self.assertEqual(steps["consume"]["inputs"], ["a"])
            self.assertEqual(steps["consume"]["after"], ["produce"])
            self.assertEqual(steps["consume"]["env"], {"K": "v"})
            self.assertEqual(steps["consume"]["retry_delay"], 0.5)
            self.assertEqual(steps["shell"]["command"], ["echo", "$HOME"])
            self.assertNotIn("after", steps["shell"])
            src = steps["produce"]["python"]["file"]
            self.assertTrue(os.path.isabs(src))
            with open(src) as f:
                self.assertIn("def produce():", f.read())

    def test_rejects_bad_steps(self):
        flow = Flow()
        with self.assertRaises(ValueError):
            flow.process(takes_args)
        with self.assertRaises(ValueError):
            flow.process(lambda: None)
        with self.assertRaises(ValueError):
            flow.process(command=["true"])  # needs a name
        flow.process(produce)
        with self.assertRaises(ValueError):
            flow.process(produce)  # duplicate
        with self.assertRaises(ValueError):
            Runtime(medium="spill")

    def test_runtime_options_reach_the_spec(self):
        self.assertEqual(Runtime(replicas=2, size="4Gi").to_dict(), {"replicas": 2, "size": "4Gi", "medium": "memory"})
        hp = Runtime(size="1Gi", huge_pages=True).to_dict()
        self.assertTrue(hp["huge_pages"])
        spill = Runtime(medium="spill", spill_dir="/tmp/x").to_dict()
        self.assertEqual((spill["medium"], spill["spill_dir"]), ("spill", "/tmp/x"))

    def test_explicit_inputs_win(self):
        with tempfile.TemporaryDirectory() as d:
            flow = Flow().process(produce).process(consume, inputs=["b"], outputs=["z"])
            spec = flow.to_dict(d)
            self.assertEqual(spec["steps"][1]["inputs"], ["b"])
            self.assertEqual(spec["steps"][1]["outputs"], ["z"])


if __name__ == "__main__":
    unittest.main()
