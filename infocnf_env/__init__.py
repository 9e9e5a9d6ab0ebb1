"""Gymnasium environments in which an agent picks the ODE-solver tolerance of each model block.

Importing this package registers the ids below; ``gymnasium.make("infocnf_env:InfoCNF-Digits-v0")``
imports it on demand. Each id is an :class:`EnvConfig` (``ENV_IDS``); keyword arguments of
``gymnasium.make`` override any of its fields by plain name (``batch_size=32``, ``hidden=8``).
"""

from gymnasium.envs.registration import register

from flows.build import AUTHORS_RECIPE
from flows.train import Plateau
from infocnf_env.benchmark import BenchmarkEnv, BenchmarkReward, PoolConfig
from infocnf_env.config import (
    DEFAULT_TOL_BOUNDS,
    DataConfig,
    EnvConfig,
    OptimConfig,
    RewardConfig,
    SpaceConfig,
)
from infocnf_env.frozen import FrozenConfig, FrozenFlowEnv
from infocnf_env.ode_env import ODEConfig, ODETaskEnv
from infocnf_env.spiral_task import SpiralTask
from infocnf_env.tasks import FlowTask, Task
from infocnf_env.threads import single_thread_after_fork, torch_default_threads
from infocnf_env.training_env import TASKS, TrainingStepEnv

TASKS["spirals"] = SpiralTask
#: make_vec(..., vectorization_mode="async") forks workers: torch runs on one thread in each
#: (infocnf_env.threads), so every id registered here can be vectorised asynchronously.
single_thread_after_fork()

_ENTRY = "infocnf_env.training_env:TrainingStepEnv"

#: Paper Section 4.1: Adam, batch 900, lr 1e-3 then 1e-4 after epoch 250 (of 400 epochs);
#: Appendix B: 64-filter conv dynamics, 2 flows before and after each squeeze. With the
#: authors' recipe (``flows.AUTHORS_RECIPE``, their ``--dims 64,64,64 --weight_y 0.5
#: --train_T True`` and Glow's LinearZeros heads): c -> 64 -> 64 -> 64 -> c dynamics
#: (num_layers=4), LinearZeros q_phi / q_theta, beta 0.5, a learned end time per block.
#: runs/gpu_recipes.md lists each choice with the flag it mirrors.
PAPER_SMALL_BATCH = EnvConfig.from_kwargs(batch_size=900, lr=1e-3, lr_milestones=((250, 1e-4),), hidden=64,
                                          flows_per_scale=2, adjoint=True, **AUTHORS_RECIPE)
#: Section 4.1 large-batch training: batch 8,000, lr 0.01 then 0.001 at epoch 120.
PAPER_LARGE_BATCH = PAPER_SMALL_BATCH.replace(batch_size=8000, lr=1e-2, lr_milestones=((120, 1e-3),))
#: Sized for 2 CPU cores: 3 narrow blocks (2 scales x 1 flow), direct back-propagation; the
#: FlowConfig defaults otherwise (c -> h -> h -> c dynamics, plain zero-initialised heads,
#: beta 1, fixed end time), as the committed digits studies ran. The authors' recipe is an
#: option: ``DIGITS.replace(**flows.AUTHORS_RECIPE)`` or ``gym.make(id, **AUTHORS_RECIPE)``.
DIGITS = EnvConfig.from_kwargs(dataset="digits", batch_size=128, lr=2e-3, hidden=24, num_scales=2, flows_per_scale=1)

ENV_IDS: dict[str, EnvConfig] = {}
for _head, _name in (("infocnf", "InfoCNF"), ("ccnf", "CCNF"), ("cnf", "CNF")):
    ENV_IDS[f"{_name}-CIFAR10-v0"] = PAPER_SMALL_BATCH.replace(dataset="cifar10", head=_head)
    ENV_IDS[f"{_name}-MNIST-v0"] = PAPER_SMALL_BATCH.replace(dataset="mnist", head=_head)
    ENV_IDS[f"{_name}-Digits-v0"] = DIGITS.replace(head=_head)
    if _head != "cnf":
        ENV_IDS[f"{_name}-CIFAR10-LargeBatch-v0"] = PAPER_LARGE_BATCH.replace(dataset="cifar10", head=_head)
#: Appendix C: the 1-D mixture of three Gaussians; exact divergence in one dimension.
ENV_IDS["InfoCNF-Toy1D-v0"] = EnvConfig.from_kwargs(dataset="toy1d", head="infocnf", arch="mlp", batch_size=256,
                                                    lr=3e-3, hidden=32, num_blocks=2, divergence="exact")
#: Sec. 4.6: the LatentODE on bi-directional spirals, baseline ("cnf") and partitioned latent code
#: ("infocnf"); the trajectory solve is cut into 2 time segments, one step each. The CPU-sized
#: settings: 5,000 spirals, batches of 100, Adam lr 1e-2 (runs/studies/spirals.py trains at Appendix
#: E.3's lr 1e-3 for 24 epochs instead).
SPIRALS = EnvConfig.from_kwargs(dataset="spirals", arch="latent_ode", batch_size=100, lr=1e-2, segments=2)
ENV_IDS["LatentODE-Spirals-v0"] = SPIRALS.replace(head="cnf")
ENV_IDS["LatentODE-Partitioned-Spirals-v0"] = SPIRALS.replace(head="infocnf")

for _id, _config in ENV_IDS.items():
    register(id=_id, entry_point=_ENTRY, kwargs={"config": _config})
#: The ids of the paper's sizes (CIFAR10, MNIST): CNN gates by default (``agents.reinforce``),
#: torch's own thread count (``infocnf_env.threads``).
PAPER_SIZED_IDS = frozenset(i for i, c in ENV_IDS.items() if c.data.dataset in ("cifar10", "mnist"))


def default_threads(env_id: str) -> int:
    """The thread rule (``infocnf_env.threads``): 1 for the bundled ids, torch's default (one per
    core) for the CIFAR10 and MNIST ids; an id of no dataset counts as bundled."""
    return torch_default_threads() if env_id in PAPER_SIZED_IDS else 1

#: The frozen-flow benchmark (infocnf_env.frozen): tolerance learning in isolation on FFJORD's
#: 2-D toy densities, each flow trained to convergence on first use and cached.
FROZEN_IDS: dict[str, FrozenConfig] = {
    f"CNF-Frozen-{_title}-v0": FrozenConfig(densities=(_density,))
    for _density, _title in (("checkerboard", "Checkerboard"), ("pinwheel", "Pinwheel"), ("rings", "Rings"),
                             ("2spirals", "2Spirals"), ("8gaussians", "8Gaussians"))
}
#: The CNF task with room: episodes from all five densities' flows (a density one-hot in the
#: observation), two stacked blocks (two decisions per episode, as the paper's gates make them),
#: small episodes of 8 points (per-point difficulty is not averaged away), and flows trained
#: until their loss plateaus (flows.train.Plateau: 5 windows of 200 iterations without a 0.01
#: fall of the windowed mean loss; at most 3000 iterations). The stiffness this training gives
#: the flows is what leaves the solver room: flows trained for a first use of a few minutes are
#: solved in a step or two per block at any tolerance. The first use trains them once, with
#: progress on stderr, resumable after an interrupt.
FROZEN_IDS["CNF-Frozen-Mixed-v0"] = FrozenConfig(
    densities=("checkerboard", "pinwheel", "rings", "2spirals", "8gaussians"), hidden=32, num_blocks=2,
    train_iterations=3000, plateau=Plateau(), batch_size=8,
    pools=PoolConfig(train_pool_size=64, test_pool_size=64))
for _id, _frozen in FROZEN_IDS.items():
    register(id=_id, entry_point="infocnf_env.frozen:FrozenFlowEnv",
             vector_entry_point="infocnf_env.vector:FrozenVectorEnv", kwargs={"config": _frozen})

#: Classical ODE tasks (infocnf_env.ode_env): tolerance learning in isolation on standard test
#: problems whose difficulty varies between episodes, one family each and all mixed (solved by
#: torchode, batched across episodes: make_vec gives infocnf_env.vector's native vector env).
ODE_IDS: dict[str, ODEConfig] = {
    f"ODE-{_title}-v0": ODEConfig(families=_families)
    for _title, _families in (("Kepler", ("kepler",)), ("VanDerPol", ("vdp",)), ("Arenstorf", ("arenstorf",)),
                              ("Lorenz", ("lorenz",)), ("Mixed", ("kepler", "vdp", "arenstorf", "lorenz")))
}
for _id, _ode in ODE_IDS.items():
    register(id=_id, entry_point="infocnf_env.ode_env:ODETaskEnv",
             vector_entry_point="infocnf_env.vector:ODEVectorEnv", kwargs={"config": _ode})

__all__ = [
    "BenchmarkEnv", "BenchmarkReward", "DEFAULT_TOL_BOUNDS", "DataConfig", "ODEConfig", "ODETaskEnv", "ODE_IDS",
    "PAPER_SIZED_IDS", "PoolConfig", "ENV_IDS", "EnvConfig", "FROZEN_IDS", "FlowTask", "FrozenConfig",
    "FrozenFlowEnv", "OptimConfig", "RewardConfig", "SpaceConfig", "SpiralTask", "TASKS", "Task", "TrainingStepEnv",
    "default_threads",
]
