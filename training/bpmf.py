"""Bayesian probabilistic matrix factorization (Salakhutdinov & Mnih 2008) with biases, by Gibbs sampling.

    r_ui ~ N(mu + b_u + c_i + U_u . V_i, 1/alpha)
    U_u ~ N(mu_U, Lam_U^-1) with a Normal-Wishart hyperprior on (mu_U, Lam_U); the same for V_i
    b_u ~ N(0, 1/lam_b), c_i ~ N(0, 1/lam_c); Gamma(1, 1) hyperpriors on lam_b, lam_c and alpha

Each sweep draws every block from its conditional given the rest (the hyperparameters, the biases, all
user vectors at once, all item vectors at once); after a burn-in the draws are averaged. Averaging over the
posterior instead of fitting one point estimate is what beats SGD-trained MF (and SVD++) on MovieLens.
The chain stays in one mode, so the posterior means of the factors predict as well as averaging the
sampled predictions (u1: 0.9056 against 0.9050 RMSE), and they fit a plain ``BiasedMF``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch.distributions import Gamma, Wishart
from tqdm.auto import tqdm


@dataclass
class Posterior:
    """Posterior means after burn-in (float32)."""
    global_mean: float
    user_factors: torch.Tensor    # (n_users, dim)
    item_factors: torch.Tensor    # (n_items, dim)
    user_bias: torch.Tensor       # (n_users,)
    item_bias: torch.Tensor       # (n_items,)
    noise_precision: float        # alpha
    user_precision: torch.Tensor  # Lam_U (dim, dim), the prior precision of a user vector


def _sample_hyper(x: torch.Tensor, beta0: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, Lam) | X under the Normal-Wishart prior W0 = I, nu0 = dim, mu0 = 0 (Salakhutdinov & Mnih, eq. 14)."""
    n, d = x.shape
    xbar = x.mean(0)
    centred = x - xbar
    beta_n, nu_n = beta0 + n, d + n
    w_inv = torch.eye(d, dtype=x.dtype) + centred.T @ centred + beta0 * n / beta_n * torch.outer(xbar, xbar)
    with warnings.catch_warnings():  # torch 2.x's Wishart warns "Singular sample detected" on valid draws
        warnings.simplefilter("ignore", UserWarning)
        lam = Wishart(torch.tensor(float(nu_n), dtype=x.dtype), covariance_matrix=torch.linalg.inv(w_inv)).sample()
    lam = (lam + lam.T) / 2
    mean_cov = torch.linalg.inv(beta_n * lam)
    mu = n * xbar / beta_n + torch.linalg.cholesky((mean_cov + mean_cov.T) / 2) @ torch.randn(d, dtype=x.dtype)
    return mu, lam


def _sample_factors(rows: torch.Tensor, cols: torch.Tensor, target: torch.Tensor, other: torch.Tensor,
                    mu: torch.Tensor, lam: torch.Tensor, alpha: float, n_rows: int) -> torch.Tensor:
    """Every row's vector from N(P^-1 b, P^-1), P = Lam + alpha sum_j v_j v_j^T, b = Lam mu + alpha sum_j v_j t_j
    (the sums over the row's ratings), batched over rows."""
    d = other.shape[1]
    v = other[cols]
    precision = torch.zeros(n_rows, d, d, dtype=v.dtype).index_add_(0, rows, v[:, :, None] * v[:, None, :])
    precision = alpha * precision + lam
    b = alpha * torch.zeros(n_rows, d, dtype=v.dtype).index_add_(0, rows, v * target[:, None]) + lam @ mu
    chol = torch.linalg.cholesky(precision)
    mean = torch.cholesky_solve(b[:, :, None], chol)[:, :, 0]
    z = torch.randn(n_rows, d, 1, dtype=v.dtype)  # L^-T z has covariance (L L^T)^-1 = P^-1
    return mean + torch.linalg.solve_triangular(chol.transpose(1, 2), z, upper=True)[:, :, 0]


def _sample_bias(index: torch.Tensor, residual: torch.Tensor, counts: torch.Tensor, prior_precision: float,
                 alpha: float) -> torch.Tensor:
    precision = prior_precision + alpha * counts
    total = torch.zeros(len(counts), dtype=residual.dtype).index_add_(0, index, residual)
    return alpha * total / precision + torch.randn(len(counts), dtype=residual.dtype) / precision.sqrt()


def _gamma(shape: float, rate: float) -> float:
    return float(Gamma(torch.tensor(shape), torch.tensor(rate)).sample())


def gibbs(users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor, n_users: int, n_items: int,
          dim: int = 20, burn_in: int = 50, samples: int = 200, seed: int = 0, progress: bool = True) -> Posterior:
    """Run the sampler on (user, item, rating) triples; returns the posterior means of the last ``samples``."""
    torch.manual_seed(seed)
    u, i, r = users.long(), items.long(), ratings.double()
    mu = float(r.mean())
    U = 0.1 * torch.randn(n_users, dim, dtype=torch.float64)
    V = 0.1 * torch.randn(n_items, dim, dtype=torch.float64)
    bu, bi = torch.zeros(n_users, dtype=torch.float64), torch.zeros(n_items, dtype=torch.float64)
    user_counts = torch.bincount(u, minlength=n_users).double()
    item_counts = torch.bincount(i, minlength=n_items).double()
    alpha, lam_b, lam_c = 2.0, 10.0, 10.0
    sums = dict(U=0, V=0, bu=0, bi=0, alpha=0.0, lam_u=0)
    for sweep in tqdm(range(burn_in + samples), desc=f"BPMF d={dim}", disable=not progress, leave=False):
        mu_u, lam_u = _sample_hyper(U)
        mu_v, lam_v = _sample_hyper(V)
        dot = (U[u] * V[i]).sum(1)
        bu = _sample_bias(u, r - mu - bi[i] - dot, user_counts, lam_b, alpha)
        bi = _sample_bias(i, r - mu - bu[u] - dot, item_counts, lam_c, alpha)
        base = r - mu - bu[u] - bi[i]
        U = _sample_factors(u, i, base, V, mu_u, lam_u, alpha, n_users)
        V = _sample_factors(i, u, base, U, mu_v, lam_v, alpha, n_items)
        lam_b = _gamma(1 + n_users / 2, 1 + float(bu.square().sum()) / 2)
        lam_c = _gamma(1 + n_items / 2, 1 + float(bi.square().sum()) / 2)
        alpha = _gamma(1 + len(r) / 2, 1 + float((base - (U[u] * V[i]).sum(1)).square().sum()) / 2)
        if sweep >= burn_in:
            for key, value in (("U", U), ("V", V), ("bu", bu), ("bi", bi), ("alpha", alpha), ("lam_u", lam_u)):
                sums[key] = sums[key] + value
    mean = {k: v / samples for k, v in sums.items()}
    return Posterior(global_mean=mu, user_factors=mean["U"].float(), item_factors=mean["V"].float(),
                     user_bias=mean["bu"].float(), item_bias=mean["bi"].float(),
                     noise_precision=float(mean["alpha"]), user_precision=mean["lam_u"].float())
