"""The constant names of the Fluid SDK that notebooks use (``from fluid import constants``).

Trellis provides one runtime kind, :data:`VINEYARD_RUNTIME_KIND`; the other kinds are named
so that code mentioning them imports, and ``bind_runtime`` rejects them with a clear error.
"""

from typing import Dict

DEFAULT_API_REQUEST_TIMEOUT = 300
DEFAULT_POLL_TIMEOUT = 600
DEFAULT_POLL_INTERVAL = 3
DEFAULT_DATAFLOW_TIME_TO_LIVE = 3 * 24 * 3600

GROUP = "data.fluid.io"
VERSION = "v1alpha1"
API_VERSION = GROUP + "/" + VERSION

DATASET_KIND = "Dataset"
DATASET_PLURAL = "datasets"
DATA_LOAD_KIND = "DataLoad"
DATA_MIGRATE_KIND = "DataMigrate"
DATA_PROCESS_KIND = "DataProcess"

ALLUXIO_RUNTIME_KIND = "AlluxioRuntime"
JINDO_RUNTIME_KIND = "JindoRuntime"
JUICEFS_RUNTIME_KIND = "JuiceFSRuntime"
EFC_RUNTIME_KIND = "EFCRuntime"
THIN_RUNTIME_KIND = "ThinRuntime"
VINEYARD_RUNTIME_KIND = "VineyardRuntime"
VINEYARD_RUNTIME_PLURAL = "vineyardruntimes"

#: Lower-case spellings accepted for a runtime kind (``"vineyard"``, ``"vineyardruntime"``).
RUNTIME_KIND_ALIASES: Dict[str, str] = {
    kind.lower(): kind
    for kind in (ALLUXIO_RUNTIME_KIND, JINDO_RUNTIME_KIND, JUICEFS_RUNTIME_KIND, EFC_RUNTIME_KIND,
                 THIN_RUNTIME_KIND, VINEYARD_RUNTIME_KIND)
}
RUNTIME_KIND_ALIASES.update({kind.lower()[: -len("runtime")]: kind for kind in list(RUNTIME_KIND_ALIASES.values())})

#: The dataflow label Fluid puts on every operation of a run.
DATAFLOW_LABEL = "fluid.io/dataflow"
