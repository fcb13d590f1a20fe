"""The Fluid Python SDK's DataFlow calls, running on Trellis.

A notebook written for Fluid's SDK (``import fluid``) runs on a laptop against Trellis with
the import changed to ``from trellis import fluid`` (and ``from fluid.X import`` to
``from trellis.fluid.X import``)::

    from trellis import fluid
    from trellis.fluid import constants

    client = fluid.FluidClient(fluid.ClientConfig())
    client.create_dataset(dataset_name="vineyard")
    dataset = client.get_dataset(dataset_name="vineyard")
    dataset.bind_runtime(runtime_type=constants.VINEYARD_RUNTIME_KIND, replicas=2,
                         cache_capacity_GiB=30, cache_medium="MEM", wait=True)
    flow = dataset.process(processor=p1, dataset_mountpath="/var/run") \\
                  .process(processor=p2, dataset_mountpath="/var/run")
    run = flow.run(run_id="my-run")
    run.wait()
    dataset.clean_up(wait=True)

Underneath it builds the same flow model as the YAML, Swift and :mod:`trellis.flow` front
doors and runs it with ``trellis flow run``: steps are placed on the replica holding their
inputs, and ``vineyard.put``/``vineyard.get`` in a step reach that replica (through
``VINEYARD_IPC_SOCKET`` and the ``vineyard-config.yaml`` under the dataset's mount path).
"""

from . import constants, models, utils
from ._client import ClientConfig, FlowHandle, FluidClient, FluidDataFlow, FluidDataset
from ._packages import PackageNotInstalled, PackageVersionWarning
from ._volumes import VolumeError

__all__ = ["ClientConfig", "FluidClient", "FluidDataset", "FluidDataFlow", "FlowHandle", "constants", "models",
           "utils", "PackageNotInstalled", "PackageVersionWarning", "VolumeError"]
