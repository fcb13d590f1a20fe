"""The house-prices pipeline written against Fluid's Python SDK, run on Trellis.

A notebook-style script (cells marked ``# %%``): the calls and their arguments are the
Fluid SDK's, and the only Trellis-specific line is the import (``from trellis import fluid``
where a Fluid notebook has ``import fluid``). It runs the full-size pipeline (600,000 rows;
``--rows N`` for fewer) on a local 2-replica runtime:

    bash scripts/setup.sh                       # .venv with the trellis package; the binary
    export TRELLIS_BIN=$PWD/.build/release/trellis
    .venv/bin/python examples/house-prices/fluid_notebook.py [--rows N]

generate -> preprocess -> train -> evaluate hand their data over through the replicas'
shared memory (``vineyard.put``/``vineyard.get``); evaluate writes the MSE into a
PersistentVolumeClaim, which locally is the directory ``$TRELLIS_HOME/volumes/<claim>``.
"""

# %% Arguments (not part of a notebook)
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # pipeline.py: the generate/preprocess/train steps

ap = argparse.ArgumentParser(description="house-prices through trellis.fluid")
ap.add_argument("--rows", type=int, default=600000)
ap.add_argument("--run-id", default="house-prices-fluid")
args = ap.parse_args()
os.environ["HOUSE_ROWS"] = str(args.rows)  # steps inherit the notebook's environment

# %% The fluidsdk logger, as a Fluid notebook sets it up
import logging

log = logging.getLogger("fluidsdk")
handler = logging.StreamHandler(sys.stdout)
handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
log.addHandler(handler)
log.setLevel(logging.DEBUG)

# %% A dataset and its runtime: 2 replicas of 2 GiB of shared memory
from trellis import fluid  # a Fluid notebook: import fluid
from trellis.fluid import constants

client = fluid.FluidClient(fluid.ClientConfig())
client.create_dataset(dataset_name="house-prices")
dataset = client.get_dataset(dataset_name="house-prices")
dataset.bind_runtime(runtime_type=constants.VINEYARD_RUNTIME_KIND, replicas=2, cache_capacity_GiB=2,
                     cache_medium="MEM", wait=True)

# %% The results volume: a PersistentVolumeClaim, locally a directory under the Trellis home
from kubernetes.client import models as k8s

CLAIM = "house-prices-results"
results_dir = os.path.join(client.config.home, "volumes", CLAIM)
os.makedirs(results_dir, exist_ok=True)
results = k8s.V1Volume(name="results", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=CLAIM))
results_mount = k8s.V1VolumeMount(name="results", mount_path="/results")


# %% The steps: pipeline.py's generate, preprocess and train, and an evaluation writing the MSE
def evaluate():
    from sklearn.metrics import mean_squared_error

    import vineyard

    features = vineyard.get(name="x_test", fetch=True)
    prices = vineyard.get(name="y_test", fetch=True)
    model = vineyard.get(name="model", fetch=True)
    with open("/results/mse.txt", "w") as out:
        out.write("%.6f\n" % mean_squared_error(prices, model.predict(features)))


from pipeline import generate, preprocess, train  # noqa: E402
from trellis.fluid.utils import processor as processor_utils  # a Fluid notebook: from fluid.utils import ...

needs = ["numpy", "pandas", "pyarrow", "vineyard", "scikit-learn"]
processors = [
    processor_utils.make_processor_from_func(step, packages_to_install=needs, volumes=[results],
                                             volume_mounts=[results_mount])
    for step in (generate, preprocess, train, evaluate)
]

# %% The flow: each step after the previous one, each placed next to the objects it reads
flow = dataset.process(processor=processors[0], dataset_mountpath="/var/run")
for p in processors[1:]:
    flow = flow.process(processor=p, dataset_mountpath="/var/run")
run = flow.run(run_id=args.run_id)
try:
    run.wait()
    # %% What happened
    with open(os.path.join(results_dir, "mse.txt")) as f:
        print("MSE: %s" % f.read().strip())
    for step in run.get_current_status():
        for name, status in step.items():
            print("%-28s %-9s replica %s (%s), %.2fs" % (name, status["phase"], status["replica"],
                                                        status["placement_reason"], status["duration"] or 0))
finally:
    # %% Clean up: the runtime stops and its memory (every object of the run) is freed
    dataset.clean_up(wait=True)
