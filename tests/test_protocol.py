"""Every model satisfies ``flows.BlockModel`` and every task ``infocnf_env.tasks.Task``.

The protocol check is structural (method names); the loop below checks the behaviour the
environment relies on: ``block_index`` counts the solved blocks, ``features`` has the shape
``block_input_shapes`` announces, and ``finish`` returns a ``PassOutput`` whose NFE totals
equal the sum of the per-block stats.
"""

from __future__ import annotations

import pytest
import torch

from flows import BlockModel, PassOutput
from infocnf_env import TASKS, DataConfig, FlowTask
from infocnf_env.tasks import ShardableTask, Task

TASK_CASES = {
    "digits flow": (FlowTask, "infocnf", "multiscale", DataConfig(dataset="digits", batch_size=4),
                    dict(hidden=4, num_scales=2, flows_per_scale=1)),
    "toy1d mlp flow": (FlowTask, "ccnf", "mlp", DataConfig(dataset="toy1d", batch_size=4),
                       dict(hidden=4, num_blocks=2, divergence="exact")),
    "spirals latent ODE": (TASKS["spirals"], "infocnf", "latent_ode", DataConfig(dataset="spirals", batch_size=4),
                           dict(num_train=8, num_test=4, length=60, window=12, extrap=6, rnn_hidden=4, dyn_hidden=4,
                                dec_hidden=4)),
}


@pytest.fixture(params=sorted(TASK_CASES), scope="module")
def task(request) -> Task:
    cls, head, arch, data, options = TASK_CASES[request.param]
    return cls(head, arch, data, options, seed=0)


def test_task_and_model_satisfy_the_protocols(task):
    assert isinstance(task, Task)
    assert isinstance(task.model, BlockModel)


def test_block_loop_contract(task):
    model = task.model
    x, y = task.next_batch()
    state = model.start(x, y, generator=torch.Generator().manual_seed(0))
    shapes = model.block_input_shapes()
    assert len(shapes) == model.num_blocks >= 2
    nfe = []
    for block in range(model.num_blocks):
        assert model.block_index(state) == block
        assert tuple(model.features(state).shape[1:]) == tuple(shapes[block])
        state, stats = model.advance(state, 1e-3)
        nfe.append(stats.nfe)
    out = model.finish(state)
    assert isinstance(out, PassOutput)
    assert out.nfe_forward == sum(nfe) and all(n > 0 for n in nfe)
    assert out.nfe_backward == 0  # nothing back-propagated yet
    out.loss.backward()
    assert out.nfe_backward == sum(s.nfe_backward for s in out.stats) > 0
    assert all(isinstance(v, float) for v in out.metrics().values())


def test_only_flow_tasks_can_be_sharded():
    flow = TASK_CASES["toy1d mlp flow"]
    spirals = TASK_CASES["spirals latent ODE"]
    assert isinstance(flow[0](*flow[1:4], flow[4]), ShardableTask)
    assert not isinstance(spirals[0](*spirals[1:4], spirals[4]), ShardableTask)
