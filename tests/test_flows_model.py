"""Contract tests of every flow (head x architecture) and of the block loop.

Each model runs through the same checks (zuko/nflows style): output shapes, a gradient for
every parameter, inverse(forward(z)) = z, NFE accounting, the heads of Section 2.2 / Eq. 3-5,
Appendix G's marginal, and the start/features/advance/finish loop.
"""

from __future__ import annotations

import math

import pytest
import torch
from flowkit import perturb
from torch import nn
from torchdiffeq import odeint

from flows import EVAL_TOL, BlockStats, FlowState, build_model, evaluate, iterate_batches, load_dataset
from flows.divergence import sample_noise
from flows.heads import standard_normal_logprob

HEADS = ("cnf", "ccnf", "infocnf")
ARCHS = {
    "multiscale": ((1, 8, 8), dict(num_scales=2, flows_per_scale=1, hidden=8)),
    "mlp": ((4,), dict(num_blocks=2, hidden=8, num_layers=2)),
}
BLOCK_INPUTS = {"multiscale": [(1, 8, 8), (4, 4, 4), (2, 4, 4)], "mlp": [(4,), (4,)]}
K = 10
FAST = 1e-3




def make(head: str, arch: str, num_classes: int | None = K, **config: object):
    shape, defaults = ARCHS[arch]
    cfg = dict(defaults)
    cfg.update(config)
    return build_model(head, shape, num_classes if head != "cnf" else None, arch=arch, **cfg)


def batch(model, n: int = 6, seed: int = 0, num_classes: int = K):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *model.data_shape), generator=g) * 0.9 + 0.05
    y = torch.randint(0, num_classes, (n,), generator=g)
    return x, y


def perturb_head(model, std: float = 0.5, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.head.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- contract


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("head", HEADS)
def test_shapes_loss_and_every_parameter_gets_a_gradient(head, arch):
    torch.manual_seed(0)
    model = make(head, arch)
    x, y = batch(model)
    out = model(x, y, tol=FAST, generator=gen())
    n, d = x.shape[0], model.dim
    assert out.z.shape == (n, d)
    assert out.logpx.shape == out.marginal_logpx.shape == (n,)
    assert out.regularization.shape == (n, 2)
    assert out.loss.shape == out.bits_per_dim.shape == ()
    assert len(out.stats) == model.num_blocks == len(BLOCK_INPUTS[arch])
    assert all(isinstance(s, BlockStats) and s.nfe > 0 and s.tol == FAST for s in out.stats)
    assert out.nfe_forward == sum(s.nfe for s in out.stats)
    torch.testing.assert_close(out.bits_per_dim, model.bits_per_dim(out.logpx).mean())
    if head == "cnf":
        assert out.logits is None and out.xent is None and out.y is None
        torch.testing.assert_close(out.loss, out.bits_per_dim)
        assert set(out.metrics()) == {"bits_per_dim"}
    else:
        assert out.logits.shape == (n, K) and out.xent.shape == ()
        torch.testing.assert_close(out.loss, out.bits_per_dim + out.xent)
        assert set(out.metrics()) == {"bits_per_dim", "xent", "error"}
        assert torch.equal(out.y, y)
    assert torch.isfinite(out.loss)

    out.loss.backward()
    params = dict(model.named_parameters())
    if head != "cnf":
        # q_phi and q_theta are zero-initialised (Section 4.1) but must still learn.
        assert {"head.condition.weight", "head.classifier.weight"} <= set(params)
    for name, p in params.items():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("head", HEADS)
def test_sample_then_encode_returns_the_latent(float64, head, arch):
    torch.manual_seed(0)
    model = make(head, arch, divergence="exact" if arch == "mlp" else "hutchinson")
    if head != "cnf":
        perturb_head(model)
    model.eval()
    n = 4
    y = None if head == "cnf" else torch.tensor([0, 3, 7, 9])
    z = model.head.sample_latent(y, n, torch.device("cpu"), gen(5))
    x = model.decode(z, tol=1e-7)
    assert x.shape == (n, *model.data_shape)
    if arch == "multiscale":
        assert ((x > 0) & (x < 1)).all(), "the logit transform's inverse maps into (0, 1)"
    with torch.no_grad():
        out = model(x, y, tol=1e-7, generator=gen())
    torch.testing.assert_close(out.z, z, atol=1e-5, rtol=1e-5)
    # model.sample draws the same latent from the same generator state and decodes it.
    torch.testing.assert_close(model.sample(y, num=n, tol=1e-7, generator=gen(5)), x)
    # And the other way round: decode(encode(x)) = x.
    x2, _ = batch(model, n, seed=3)
    with torch.no_grad():
        z2 = model(x2, y, tol=1e-7, generator=gen()).z
    torch.testing.assert_close(model.decode(z2, tol=1e-7), x2, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch,std", [("mlp", 0.5), ("multiscale", 0.15)])
def test_nfe_grows_as_the_tolerance_tightens(arch, std):
    torch.manual_seed(0)
    model = make("cnf", arch)
    perturb(model.ops, std)
    x, _ = batch(model)
    nfe = {}
    for tol in (1e-2, 1e-5, 1e-8):
        with torch.no_grad():
            out = model(x, tol=tol, generator=gen())
        nfe[tol] = sum(s.nfe for s in out.stats)
        assert all(s.tol == tol for s in out.stats)
    assert nfe[1e-2] <= nfe[1e-5] <= nfe[1e-8]
    assert nfe[1e-8] > nfe[1e-2]


# ---------------------------------------------------------------------------- heads


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("head", ["ccnf", "infocnf"])
def test_zero_initialised_heads_are_uniform_with_a_standard_prior(head, arch):
    model = make(head, arch)
    x, y = batch(model)
    with torch.no_grad():
        out = model(x, y, tol=FAST, generator=gen())
    torch.testing.assert_close(out.xent, torch.tensor(math.log(K)))
    assert torch.equal(out.logits, torch.zeros_like(out.logits))
    torch.testing.assert_close(out.logits.softmax(1), torch.full((x.shape[0], K), 1 / K))
    # At init p(z | y) = N(0, I) for every y, so p(x | y) = p(x).
    torch.testing.assert_close(model.head.log_prior(out.z, y), standard_normal_logprob(out.z))
    torch.testing.assert_close(out.marginal_logpx, out.logpx)


def test_infocnf_classifier_sees_only_z_y_and_z_u_is_standard_normal(float64):
    torch.manual_seed(0)
    model = make("infocnf", "mlp")
    perturb_head(model, 1.0)
    head = model.head.eval()
    sup = head.sup_dim
    assert sup == 2 and head.dim == 4
    z = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 3, 4])
    other_u = z.clone()
    other_u[:, sup:] = torch.randn(5, 4 - sup) * 3
    other_y = z.clone()
    other_y[:, :sup] = torch.randn(5, sup) * 3
    assert torch.equal(head.logits(z), head.logits(other_u))
    assert not torch.allclose(head.logits(z), head.logits(other_y))
    # z_u enters the prior only through N(0, I), whatever the class.
    for label in (y, y.flip(0)):
        torch.testing.assert_close(
            head.log_prior(other_u, label) - head.log_prior(z, label),
            standard_normal_logprob(other_u[:, sup:]) - standard_normal_logprob(z[:, sup:]),
        )
    # Sampling agrees with the density: z_y ~ N(mu(y), sigma(y)^2), z_u ~ N(0, I).
    draws = 20000
    label = torch.full((draws,), 3)
    samples = head.sample_latent(label, draws, torch.device("cpu"), gen(2))
    mean, log_std = head.prior_params(label[:1])
    assert log_std.abs().max() > 0.2 and mean.abs().max() > 0.2
    torch.testing.assert_close(samples[:, :sup].mean(0), mean[0], atol=0.05, rtol=0.05)
    torch.testing.assert_close(samples[:, :sup].std(0), log_std[0].exp(), atol=0.05, rtol=0.05)
    torch.testing.assert_close(samples[:, sup:].mean(0), torch.zeros(4 - sup), atol=0.05, rtol=0)
    torch.testing.assert_close(samples[:, sup:].std(0), torch.ones(4 - sup), atol=0.05, rtol=0)


def test_classifier_dropout_is_inverted_and_seeded(float64):
    model = make("ccnf", "mlp", dropout=0.5)
    perturb_head(model, 1.0)
    head = model.head
    z = torch.randn(1, 4).expand(20000, 4)
    head.train()
    a, b = head.logits(z, gen(3)), head.logits(z, gen(3))
    assert torch.equal(a, b)
    assert a.std(0).min() > 0, "each row must get its own dropout mask"
    # E[mask / (1 - p)] = 1, so the mean training logit is the evaluation logit.
    eval_logits = head.eval().logits(z[:1])
    torch.testing.assert_close(a.mean(0), eval_logits[0], atol=0.05, rtol=0.02)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("head", ["ccnf", "infocnf"])
def test_marginal_is_logsumexp_of_the_class_conditionals(head, arch):
    torch.manual_seed(0)
    model = make(head, arch, num_classes=3)
    perturb_head(model, 0.5)
    model.eval()
    x, _ = batch(model, n=5, num_classes=3)
    with torch.no_grad():
        outs = [model(x, torch.full((5,), k), tol=FAST, generator=gen(1)) for k in range(3)]
    conditionals = torch.stack([o.logpx for o in outs], dim=1)
    assert (conditionals.max(1).values - conditionals.min(1).values).min() > 1e-3
    expected = torch.logsumexp(conditionals, dim=1) - math.log(3)
    for o in outs:
        torch.testing.assert_close(o.marginal_logpx, expected)
    marginal = outs[0].marginal_logpx
    assert (marginal <= conditionals.max(1).values).all() and (marginal >= conditionals.min(1).values).all()


def test_cnf_marginal_is_its_logpx():
    model = make("cnf", "mlp")
    x, _ = batch(model)
    with torch.no_grad():
        out = model(x, tol=FAST, generator=gen())
    assert torch.equal(out.marginal_logpx, out.logpx)


# ---------------------------------------------------------------------------- NFE and adjoint


@pytest.mark.parametrize("adjoint", [False, True])
def test_backward_nfe_is_counted(adjoint):
    """Each block's backward NFE equals a count kept apart from the library's counters, by hooks on
    the block's dynamics network during ``loss.backward()``: with the adjoint method its calls
    (the adjoint solve's evaluations), with direct back-propagation its backward hook firing (the
    recorded calls the gradient flows through). tests/test_nfe_counts.py establishes both counts
    call by call (rejected steps, warm starts, the LatentODE, the env's totals)."""
    torch.manual_seed(0)
    model = make("infocnf", "mlp", adjoint=adjoint)
    for block in model.blocks:  # stiff dynamics: the solver rejects steps, whose evaluations get no gradient
        perturb(block.net, 2.0)
    in_backward = False
    calls = [0] * model.num_blocks
    backward_hooks = [0] * model.num_blocks

    def count(counts: list[int], k: int):
        def hook(*_):
            counts[k] += in_backward
        return hook

    for k, block in enumerate(model.blocks):
        block.net.register_forward_hook(count(calls, k))
        block.net.register_full_backward_hook(count(backward_hooks, k))
    x, y = batch(model)
    out = model(x, y, tol=FAST, generator=gen())
    assert out.nfe_backward == 0 and all(s.nfe_backward == 0 for s in out.stats)
    forward = out.nfe_forward
    in_backward = True
    out.loss.backward()
    in_backward = False
    expected = calls if adjoint else backward_hooks
    assert [s.nfe_backward for s in out.stats] == expected and min(expected) > 0
    if not adjoint:
        assert sum(calls) == 0, "direct back-propagation evaluates nothing during backward"
        assert out.nfe_backward < out.nfe_forward  # the rejected steps' evaluations
    assert out.nfe_backward == sum(s.nfe_backward for s in out.stats)
    assert out.nfe_forward == forward, "the backward pass must not be counted as forward NFE"


def test_adjoint_gradients_match_direct_backpropagation(float64):
    torch.manual_seed(0)
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(0)
        model = make("infocnf", "mlp", adjoint=adjoint, num_blocks=1, num_classes=3)
        perturb_head(model, 0.5)
        model.eval()
        x, y = batch(model, num_classes=3)
        model(x, y, tol=1e-8, generator=gen()).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-4, msg=name)


# ---------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("head", HEADS)
def test_evaluate_reports_finite_documented_metrics(head):
    torch.manual_seed(0)
    model = make(head, "mlp")
    loader = [batch(model, n=5, seed=s) for s in range(2)]
    model.train()
    metrics = evaluate(model, loader, tol=1e-3)
    assert model.training, "evaluate() must restore the training mode"
    assert set(metrics) == {"bits_per_dim", "marginal_bits_per_dim", "error", "nfe", "num_samples"}
    assert metrics["num_samples"] == 10
    assert metrics["nfe"] > 0
    for key in ("bits_per_dim", "marginal_bits_per_dim", "nfe"):
        assert math.isfinite(metrics[key]), key
    if head == "cnf":
        assert math.isnan(metrics["error"])
        assert metrics["marginal_bits_per_dim"] == metrics["bits_per_dim"]
    else:
        assert 0.0 <= metrics["error"] <= 1.0
    again = evaluate(model, loader, tol=1e-3)
    assert again.keys() == metrics.keys()
    for key, value in metrics.items():
        assert again[key] == value or (math.isnan(value) and math.isnan(again[key])), f"{key} is not deterministic"
    # One batch: the same number as the model itself in eval mode with evaluate's seed.
    single = evaluate(model, loader[:1], tol=1e-3, seed=7)
    model.eval()
    with torch.no_grad():
        out = model(*loader[0], tol=1e-3, generator=gen(7))
    assert single["bits_per_dim"] == pytest.approx(float(out.bits_per_dim), rel=1e-6)


def test_evaluate_on_digits_with_the_multiscale_flow():
    data = load_dataset("digits", "test")
    model = build_model("infocnf", data.shape, data.num_classes, arch="multiscale", num_scales=2,
                        flows_per_scale=1, hidden=8, num_levels=data.num_levels)
    metrics = evaluate(model, iterate_batches(data, 50, max_batches=2), tol=EVAL_TOL)
    assert metrics["num_samples"] == 100
    assert all(math.isfinite(v) for v in metrics.values())
    assert 0.0 <= metrics["error"] <= 1.0
    # Zero-initialised head: uniform classifier, prior N(0, I), so marginal = conditional.
    assert metrics["marginal_bits_per_dim"] == pytest.approx(metrics["bits_per_dim"], rel=1e-6)


# ---------------------------------------------------------------------------- block loop


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("head", ["cnf", "infocnf"])
def test_block_loop_by_hand_equals_forward(head, arch):
    torch.manual_seed(0)
    model = make(head, arch)
    if head != "cnf":
        perturb_head(model)  # with the zero-initialised classifier dropout would change nothing
    model.train()  # dropout draws from the generator too
    x, y = batch(model)
    reference = model(x, y, tol=FAST, generator=gen(11))

    state = model.start(x, y, generator=gen(11))
    assert isinstance(state, FlowState)
    for i in range(model.num_blocks):
        assert model.block_index(state) == i
        feats = model.features(state)
        assert feats.shape == (x.shape[0], *BLOCK_INPUTS[arch][i])
        state, stats = model.advance(state, tol=FAST)
        assert stats is state.stats[-1]
    with pytest.raises(RuntimeError):
        model.features(state)
    with pytest.raises(RuntimeError):
        model.advance(state, tol=FAST)
    out = model.finish(state)
    assert model.block_input_shapes() == BLOCK_INPUTS[arch]
    assert torch.equal(out.loss, reference.loss)
    assert torch.equal(out.z, reference.z)
    assert [s.nfe for s in out.stats] == [s.nfe for s in reference.stats]


def test_finish_before_the_last_block_raises():
    model = make("cnf", "mlp")
    x, _ = batch(model)
    state = model.start(x)
    state, _ = model.advance(state, tol=FAST)
    with pytest.raises(RuntimeError, match="1 of 2 blocks"):
        model.finish(state)


def test_per_block_tolerances_are_used():
    model = make("cnf", "multiscale")
    perturb(model.ops, 0.15)
    x, _ = batch(model)
    tols = [1e-2, 1e-8, 1e-2]
    state = model.start(x, generator=gen())
    with torch.no_grad():
        for tol in tols:
            state, _ = model.advance(state, tol)
        out = model.finish(state)
    assert [s.tol for s in out.stats] == tols
    assert out.stats[1].nfe > max(out.stats[0].nfe, out.stats[2].nfe)


# ---------------------------------------------------------------------------- options


def _set_sqrt_end_time(model, value: float) -> None:
    with torch.no_grad():
        model.blocks[0].sqrt_end_time.fill_(value)


@pytest.mark.parametrize("adjoint", [False, True])
def test_train_time_gives_the_end_time_a_correct_gradient(float64, adjoint):
    torch.manual_seed(0)
    model = make("cnf", "mlp", train_time=True, time_length=0.8, num_blocks=1, divergence="exact",
                 logit_alpha=None, num_levels=None, adjoint=adjoint)
    perturb(model.ops, 0.5)
    block = model.blocks[0]
    assert isinstance(block.sqrt_end_time, nn.Parameter)
    torch.testing.assert_close(block.end_time, torch.tensor(0.8))
    x = torch.randn(4, 4)
    model(x, tol=1e-9).loss.backward()
    grad = block.sqrt_end_time.grad
    assert grad is not None and grad.abs() > 1e-4
    s0, h = float(block.sqrt_end_time.detach()), 1e-4
    losses = []
    for s in (s0 + h, s0 - h):
        _set_sqrt_end_time(model, s)
        with torch.no_grad():
            losses.append(model(x, tol=1e-9).loss)
    torch.testing.assert_close(grad, (losses[0] - losses[1]) / (2 * h), atol=1e-6, rtol=1e-4)


def test_fixed_time_is_not_a_parameter():
    model = make("cnf", "mlp", time_length=0.5)
    assert all("sqrt_end_time" not in n for n, _ in model.named_parameters())
    torch.testing.assert_close(model.blocks[0].end_time, torch.tensor(0.5))


def test_regularization_terms_are_the_integrals_and_enter_the_loss(float64):
    torch.manual_seed(0)
    weights = (0.3, 0.2)
    kwargs = dict(num_blocks=1, logit_alpha=None, num_levels=None, num_classes=3)
    plain = make("ccnf", "mlp", **kwargs)
    perturb(plain.ops, 0.5)
    reg = make("ccnf", "mlp", kinetic_weight=weights[0], jacobian_weight=weights[1], **kwargs)
    reg.load_state_dict(plain.state_dict())
    x, y = torch.randn(1, 4), torch.tensor([1])
    copies = 2000
    xs, ys = x.expand(copies, 4), y.expand(copies)
    with torch.no_grad():  # training mode: the regularizers are training-loss terms
        out_reg = reg(xs, ys, tol=1e-7, generator=gen(2))
        out_plain = plain(xs, ys, tol=1e-7, generator=gen(2))
        reg.eval()
        assert torch.equal(reg(xs[:4], ys[:4], tol=1e-7, generator=gen(2)).regularization, torch.zeros(4, 2))
        reg.train()
    # The integrals ride along outside the error control: the solve takes the same steps.
    assert [s.nfe for s in out_reg.stats] == [s.nfe for s in out_plain.stats]
    terms = out_reg.regularization
    assert (terms > 0).all()
    assert torch.equal(out_plain.regularization, torch.zeros(copies, 2))
    penalty = weights[0] * terms[:, 0].mean() + weights[1] * terms[:, 1].mean()
    torch.testing.assert_close(out_reg.loss, out_reg.bits_per_dim + out_reg.xent + penalty)
    torch.testing.assert_close(out_reg.bits_per_dim, out_plain.bits_per_dim, atol=1e-5, rtol=1e-5)
    assert out_reg.loss - out_plain.loss > 0.01

    # Brute force along the trajectory: kinetic = int ||f||^2 dt, Jacobian = E_e int ||e^T J||^2 dt
    # = int ||J||_F^2 dt (Finlay et al. 2020).
    net = reg.blocks[0].net
    times = torch.linspace(0.0, 1.0, 201)
    with torch.no_grad():
        path = odeint(net, x, times, rtol=1e-10, atol=1e-10)[:, 0]
    speed2 = torch.stack([net(t, p[None]).pow(2).sum() for t, p in zip(times, path, strict=True)])
    frob2 = torch.stack([
        torch.autograd.functional.jacobian(lambda v, t=t: net(t, v[None])[0], p).pow(2).sum()
        for t, p in zip(times, path, strict=True)
    ])
    kinetic = torch.trapezoid(speed2, times)
    jacobian = torch.trapezoid(frob2, times)
    torch.testing.assert_close(terms[:, 0], kinetic.expand(copies), atol=1e-5, rtol=1e-4)
    std = terms[:, 1].std()
    assert std > 1e-3
    assert abs(terms[:, 1].mean() - jacobian) < 5 * std / math.sqrt(copies) + 1e-4


def test_hutchinson_noise_comes_from_the_generator():
    model = make("cnf", "mlp")
    x, _ = batch(model)
    with torch.no_grad():
        a = model(x, tol=FAST, generator=gen(4)).logpx
        b = model(x, tol=FAST, generator=gen(4)).logpx
        c = model(x, tol=FAST, generator=gen(5)).logpx
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert sample_noise(x, "rademacher", gen(1)).abs().eq(1).all()


@pytest.mark.parametrize("head", HEADS)
def test_sample_follows_the_model_dtype_not_the_default(head):
    # A model converted with .double() must sample in float64 under a float32 default dtype.
    torch.manual_seed(0)
    model = make(head, "mlp").double().eval()
    y = None if head == "cnf" else torch.tensor([1, 2])
    x = model.sample(y, num=2, tol=FAST)
    assert x.dtype == torch.float64 and torch.isfinite(x).all()
