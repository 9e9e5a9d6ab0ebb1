"""InfoCNF flows: CNF, CCNF and InfoCNF models driven one ODE block at a time.

Pure torch + torchdiffeq. See ``build_model`` for the models, ``evaluate`` for test metrics
at tolerance 1e-5 and ``flows.data`` for the datasets.
"""

from flows.build import ARCHITECTURES, AUTHORS_RECIPE, FlowConfig, build_model
from flows.data import DATASETS, BatchStream, LabelledData, iterate_batches, load_dataset
from flows.evaluate import EVAL_TOL, evaluate
from flows.heads import HEADS
from flows.model import FlowModel, FlowOutput, Tolerance
from flows.ode import SOLVER_NAMES, BlockStats, SolverError
from flows.protocol import BlockModel, PassOutput
from flows.transforms import FlowState

__all__ = [
    "ARCHITECTURES", "AUTHORS_RECIPE", "BatchStream", "BlockModel", "BlockStats", "DATASETS", "EVAL_TOL",
    "FlowConfig", "FlowModel", "FlowOutput", "FlowState", "HEADS", "LabelledData", "PassOutput", "SOLVER_NAMES",
    "SolverError", "build_model", "Tolerance", "evaluate", "iterate_batches", "load_dataset",
]
