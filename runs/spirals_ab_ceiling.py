"""How well can (a, b) be read off a noisy spiral window at all? A ceiling for the spirals head.

    python -m runs.spirals_ab_ceiling            # writes runs/results/spirals_ab_ceiling.json

The partitioned LatentODE (Sec. 4.6) predicts each spiral's parameters (a, b) from z_y. Its
errors equal those of always predicting the prior means (``runs/results/spirals.json``). This
script asks what the best possible estimator achieves on the same test windows: the MAP
estimate of (a, b) under their Gaussian prior (Appendix E.1), given the generating family of
Eq. 8-9, the noise level and even the **true direction**, maximised over the unknown window
start. Given the start, the positions are linear in (a, b), so the posterior is Gaussian and
exact; the start is chosen by the largest posterior density. Every choice favours the
estimator, so its errors bound from below what any model can reach from one window.

Writes mean absolute errors of a and b for the prior mean and for the MAP estimate, and how
often the MAP start is within 5 grid steps of the true one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agents.cli import command_parser
from flows.spirals import A_MEAN, A_STD, B_MEAN, B_STD, CENTRE_X, T_SPAN, T_START, make_spirals, spiral_angle


def map_estimates(obs: np.ndarray, direction: int, noise_std: float, length: int, extrap: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MAP ``(a, b)`` and start of windows ``obs`` ``(N, W, 2)`` that all turn ``direction``."""
    n, window, _ = obs.shape
    grid = np.linspace(T_START, T_START + T_SPAN, length)
    starts = np.arange(length - window - extrap + 1)
    t = spiral_angle(grid[starts[:, None] + np.arange(window)[None, :]], np.full(1, direction))  # (K, W)
    unit = np.stack([np.cos(t), np.sin(t)], axis=-1)  # (K, W, 2)
    scale = t if direction == 1 else 50.0 / t  # R = a + b * scale
    columns = np.stack([unit, unit * scale[..., None]], axis=-1)  # (K, W, 2, 2): d position / d (a, b)
    residual = obs - np.array([CENTRE_X[direction], 0.0])  # (N, W, 2)
    prior_precision = np.diag([1 / A_STD**2, 1 / B_STD**2])
    prior_mean = np.array([A_MEAN, B_MEAN])
    precision = np.einsum("kwci,kwcj->kij", columns, columns) / noise_std**2 + prior_precision  # (K, 2, 2)
    rhs = np.einsum("kwci,nwc->nki", columns, residual) / noise_std**2 + prior_precision @ prior_mean  # (N, K, 2)
    theta = np.linalg.solve(precision[None], rhs[..., None])[..., 0]  # (N, K, 2)
    fit = np.einsum("kwci,nki->nkwc", columns, theta)
    sq = ((residual[:, None] - fit) ** 2).sum(axis=(2, 3)) / noise_std**2
    prior_term = np.einsum("nki,ij,nkj->nk", theta - prior_mean, prior_precision, theta - prior_mean)
    # log posterior of the start, (a, b) integrated out (Laplace is exact: Gaussian in (a, b))
    log_post = -0.5 * (sq + prior_term) - 0.5 * np.linalg.slogdet(precision)[1][None]
    best = log_post.argmax(axis=1)
    picked = theta[np.arange(n), best]
    return picked[:, 0], picked[:, 1], starts[best]


def main(argv: list[str] | None = None) -> dict:
    parser = command_parser("runs.spirals_ab_ceiling", __doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=400, help="test spirals (default 400)")
    parser.add_argument("--json", type=Path, default=Path("runs/results/spirals_ab_ceiling.json"))
    args = parser.parse_args(argv)
    length, window, extrap, noise = 1000, 200, 100, 0.3  # the spirals study's data (runs/spirals.py)
    data = make_spirals(args.num, length, window, noise, seed=0, extrap=extrap, split="test")
    params = data.params.double().numpy()
    obs = data.obs.double().numpy()
    starts = data.starts.numpy()
    a_hat, b_hat, start_hat = np.zeros(args.num), np.zeros(args.num), np.zeros(args.num, dtype=np.int64)
    for direction in (0, 1):
        idx = np.nonzero(params[:, 2] == direction)[0]
        for chunk in np.array_split(idx, max(1, len(idx) // 25)):
            a_hat[chunk], b_hat[chunk], start_hat[chunk] = map_estimates(obs[chunk], direction, noise, length, extrap)
    a, b = params[:, 0], params[:, 1]
    result = {
        "num_spirals": args.num, "noise_std": noise, "window": window,
        "a_prior_mean_error": float(np.abs(a - A_MEAN).mean()), "b_prior_mean_error": float(np.abs(b - B_MEAN).mean()),
        "a_map_error": float(np.abs(a - a_hat).mean()), "b_map_error": float(np.abs(b - b_hat).mean()),
        "start_within_5_steps": float((np.abs(start_hat - starts) <= 5).mean()),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
