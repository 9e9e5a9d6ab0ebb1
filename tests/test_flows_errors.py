"""Bad input fails early with a ValueError that says what would have been valid."""

from __future__ import annotations

import pytest
import torch

from flows import HEADS, SOLVER_NAMES, SolverError, build_model, evaluate, load_dataset
from flows.data import BatchStream, iterate_batches

MLP = dict(arch="mlp", hidden=8, num_layers=2, num_blocks=1)
BAD_TOLS = [0, 0.0, -1, -1e-5, float("nan"), float("inf"), "abc", None]



def _names_all(message: str, choices) -> bool:
    return all(c in message for c in choices)


@pytest.fixture(scope="module")
def cnf():
    return build_model("cnf", (4,), **MLP)


@pytest.fixture(scope="module")
def infocnf():
    return build_model("infocnf", (4,), 3, **MLP)


# ---------------------------------------------------------------------------- names


def test_unknown_head():
    with pytest.raises(ValueError, match="unknown head 'bogus'") as err:
        build_model("bogus", (4,), 3, **MLP)
    assert _names_all(str(err.value), HEADS)


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown arch 'conv'") as err:
        build_model("cnf", (4,), arch="conv")
    assert _names_all(str(err.value), ("multiscale", "mlp"))


def test_unknown_solver():
    with pytest.raises(ValueError, match="unknown solver 'rk99'") as err:
        build_model("cnf", (4,), solver="rk99", **MLP)
    assert _names_all(str(err.value), SOLVER_NAMES)
    assert "dopri5" in str(err.value)


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'") as err:
        load_dataset("imagenet")
    assert _names_all(str(err.value), ("cifar10", "mnist", "digits", "toy1d", "toy2d"))
    with pytest.raises(ValueError, match="unknown split 'val'") as err:
        load_dataset("digits", "val")
    assert _names_all(str(err.value), ("train", "test"))


def test_unknown_divergence_and_noise():
    with pytest.raises(ValueError, match="unknown divergence 'trace'") as err:
        build_model("cnf", (4,), divergence="trace", **MLP)
    assert _names_all(str(err.value), ("hutchinson", "exact"))
    with pytest.raises(ValueError, match="unknown noise 'uniform'") as err:
        build_model("cnf", (4,), noise="uniform", **MLP)
    assert _names_all(str(err.value), ("rademacher", "gaussian"))


def test_unknown_layer_type():
    with pytest.raises(ValueError, match="unknown layer_type 'dense'") as err:
        build_model("cnf", (4,), layer_type="dense", **MLP)
    assert _names_all(str(err.value), ("concatsquash", "concat"))


def test_unknown_config_key():
    with pytest.raises(ValueError, match=r"unknown flow option\(s\) \['hiden'\]") as err:
        build_model("cnf", (4,), hiden=8, arch="mlp")
    assert _names_all(str(err.value), ("hidden", "num_blocks", "solver", "sup_ratio", "kinetic_weight"))


# ---------------------------------------------------------------------------- shapes and labels


def test_bad_data_shape_at_build():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_model("cnf", (8, 8), arch="multiscale")
    with pytest.raises(ValueError, match=r"flat \(D,\)"):
        build_model("cnf", (1, 8, 8), **MLP)
    with pytest.raises(ValueError, match="positive"):
        build_model("cnf", (0,), **MLP)
    with pytest.raises(ValueError, match=r"num_scales must be in \[1, 2\]"):
        build_model("cnf", (1, 8, 8), arch="multiscale", num_scales=3, hidden=8)


@pytest.mark.parametrize("shape", [(2, 5), (2, 4, 1), (4,)])
def test_wrong_data_shape_passed_to_start(cnf, shape):
    with pytest.raises(ValueError, match=r"wrong data shape: expected \(batch, 4\)"):
        cnf.start(torch.rand(shape))
    with pytest.raises(ValueError, match="wrong data shape"):
        cnf(torch.rand(shape))


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0], [5, 1]])
def test_labels_out_of_range(infocnf, labels):
    x = torch.rand(2, 4)
    with pytest.raises(ValueError, match=r"labels out of range.*valid range is \[0, 2\]"):
        infocnf.start(x, torch.tensor(labels))
    with pytest.raises(ValueError, match=r"valid range is \[0, 2\]"):
        infocnf.sample(torch.tensor(labels))


def test_bad_label_dtype_and_shape(infocnf):
    x = torch.rand(2, 4)
    with pytest.raises(ValueError, match="labels must be integers"):
        infocnf.start(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        infocnf.start(x, torch.tensor([0, 1, 2]))


def test_conditional_head_without_labels(infocnf):
    with pytest.raises(ValueError, match="needs labels"):
        infocnf.start(torch.rand(2, 4))
    with pytest.raises(ValueError, match="needs labels"):
        infocnf(torch.rand(2, 4))
    with pytest.raises(ValueError, match="needs labels"):
        infocnf.sample(num=2)


# ---------------------------------------------------------------------------- tolerances


@pytest.mark.parametrize("tol", BAD_TOLS)
def test_bad_tolerance_everywhere(cnf, tol):
    x = torch.rand(2, 4)
    match = "tolerance must be a positive finite number"
    with pytest.raises(ValueError, match=match):
        cnf(x, tol=tol)
    state = cnf.start(x)
    with pytest.raises(ValueError, match=match):
        cnf.advance(state, tol)
    with pytest.raises(ValueError, match=match):
        cnf.decode(torch.randn(2, 4), tol=tol)
    with pytest.raises(ValueError, match=match):
        cnf.sample(num=2, tol=tol)
    with pytest.raises(ValueError, match=match):
        evaluate(cnf, [(x, torch.zeros(2, dtype=torch.long))], tol=tol)


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize("ratio", [0, 0.0, 1.5, -0.5])
def test_sup_ratio_out_of_range(ratio):
    with pytest.raises(ValueError, match=r"sup_ratio must be in \(0, 1\]"):
        build_model("infocnf", (4,), 3, sup_ratio=ratio, **MLP)


@pytest.mark.parametrize("head", ["ccnf", "infocnf"])
@pytest.mark.parametrize("num_classes", [None, 1])
def test_conditional_head_needs_num_classes(head, num_classes):
    with pytest.raises(ValueError, match=f"head '{head}' needs num_classes >= 2"):
        build_model(head, (4,), num_classes, **MLP)


def test_other_bad_options():
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        build_model("ccnf", (4,), 3, dropout=1.0, **MLP)
    with pytest.raises(ValueError, match=r"logit alpha must be in \[0, 0.5\)"):
        build_model("cnf", (4,), logit_alpha=0.5, **MLP)
    with pytest.raises(ValueError, match="time_length must be positive"):
        build_model("cnf", (4,), time_length=0.0, **MLP)


def test_empty_loader_and_batch_sizes(cnf):
    with pytest.raises(ValueError, match="empty loader"):
        evaluate(cnf, [])
    data = load_dataset("toy1d", "test")
    with pytest.raises(ValueError, match="batch_size must be positive"):
        BatchStream(data, 0)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        next(iterate_batches(data, -1))


# ---------------------------------------------------------------------------- solver failure


@pytest.mark.parametrize("adjoint", [False, True])
def test_step_cap_raises_solver_error_and_leaves_the_model_alone(adjoint):
    torch.manual_seed(0)
    model = build_model("infocnf", (4,), 3, max_num_steps=1, adjoint=adjoint, **MLP)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(3, 4), torch.tensor([0, 1, 2])
    assert issubclass(SolverError, RuntimeError)
    with pytest.raises(SolverError, match="max_num_steps"):
        model(x, y, tol=1e-10)
    state = model.start(x, y)
    with pytest.raises(SolverError):
        model.advance(state, tol=1e-10)
    with pytest.raises(SolverError):
        model.decode(torch.randn(3, 4), tol=1e-10)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    # Without the cap the same call succeeds: the failure left no state behind.
    free = build_model("infocnf", (4,), 3, adjoint=adjoint, **MLP)
    free.load_state_dict(model.state_dict())
    assert torch.isfinite(free(x, y, tol=1e-10).loss)
