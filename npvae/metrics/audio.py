"""Audio separation metrics: BSS Eval v3 (SDR, SIR, SAR), SI-SDR, NSDR and GNSDR.

BSS Eval (Vincent, Gribonval & Fevotte 2006) splits an estimate ``e`` of source
``j`` into the part explained by time-invariant FIR filtering of the reference
``s_j`` (filter length ``L``, 512 taps as in mir_eval), the part explained by
filtering the other references (interference), and the rest (artifacts)::

    P_j   = least-squares projection of e on {s_j(t - d) : 0 <= d < L}
    P_all = least-squares projection of e on {s_i(t - d) : every i, 0 <= d < L}
    SDR = 10 log10(|P_j|^2 / |e - P_j|^2)
    SIR = 10 log10(|P_j|^2 / |P_all - P_j|^2)
    SAR = 10 log10(|P_all|^2 / |e - P_all|^2)

The normal equations need the correlations of every reference with every
other (and with the estimate) at lags 0..L-1; one FFT per signal gives them all,
and the Gram matrix is shared by every estimate, so a clip costs a handful of
FFTs plus one (n_src * L)-square Cholesky factorisation.
All values are in dB. Non-finite samples and silent (all-zero) references,
estimates or mixtures are refused (:mod:`npvae.metrics.checks`).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.fft import irfft, next_fast_len, rfft
from scipy.optimize import linear_sum_assignment

from .checks import finite, not_nan, not_silent

FILTER_LENGTH = 512


def _db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """10 log10(num / den): den == 0 gives +inf (a perfect estimate), but num == 0 gives
    -inf whatever den is (a silent estimate is never perfect, even with nothing left over)."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    out = np.where(num > 0, np.inf, -np.inf)
    ok = (den > 0) & (num > 0)
    with np.errstate(divide="ignore"):
        out[ok] = 10.0 * np.log10(num[ok] / den[ok])
    return out


def _as_sources(x, name: str, metric: str) -> np.ndarray:
    """``x`` as float64 (n_sources, n_samples), finite and with energy in every row."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{metric}: {name} must have shape (n_sources, n_samples), got {np.shape(x)}")
    if x.shape[0] > x.shape[1]:
        raise ValueError(f"{metric}: {name} has shape {x.shape}: more sources than samples, so it is "
                         "probably (n_samples, n_sources); pass its transpose (x.T), shape "
                         "(n_sources, n_samples)")
    return not_silent(finite(x, metric, name), metric, name)


def _solve_spd(G: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Solve G C = D for a symmetric positive (semi)definite G; least squares if singular."""
    try:
        return scipy.linalg.solve(G, D, assume_a="pos", check_finite=False)
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        return np.linalg.lstsq(G, D, rcond=None)[0]


class _Projector:
    """Least-squares projections onto delayed copies of fixed references.

    references : (n_src, n) float64. Everything that depends only on them (their
    spectra and the Gram matrix of their delayed copies) is computed once.
    """

    def __init__(self, references: np.ndarray, filter_length: int = FILTER_LENGTH):
        n_src, n = references.shape
        L = int(filter_length)
        if L < 1:
            raise ValueError(f"filter_length must be >= 1, got {filter_length}")
        self.n_src, self.n, self.L = n_src, n, L
        # Lags up to L-1 wrap around unless the FFT is at least n + L - 1 long.
        self.n_fft = next_fast_len(n + L - 1, real=True)
        self.R = rfft(references, self.n_fft, axis=1)                  # (n_src, K)
        # xc[i, j, k] = sum_u s_i(u + k) s_j(u), circular lags k in [0, n_fft)
        xc = irfft(self.R[:, None, :] * np.conj(self.R[None, :, :]), self.n_fft, axis=-1)
        a = np.arange(L)
        lag = (a[None, :] - a[:, None]) % self.n_fft                     # lag[a, b] = b - a
        # <s_i(t - a), s_j(t - b)> = xc[i, j, b - a]; blocks (i, j) of size L x L
        G = xc[:, :, lag].transpose(0, 2, 1, 3).reshape(n_src * L, n_src * L)
        self.G = 0.5 * (G + G.T)  # exact symmetry for the Cholesky solver

    def _corr(self, E: np.ndarray) -> np.ndarray:
        """<s_i(t - d), e_m(t)> for d < L: (n_est, n_src, L) from estimate spectra (n_est, K)."""
        y = irfft(E[:, None, :] * np.conj(self.R[None, :, :]), self.n_fft, axis=-1)
        return y[..., : self.L]

    def _filter(self, C: np.ndarray, sources: np.ndarray | slice) -> np.ndarray:
        """sum_i (C[..., i, :] * s_i)(t) for t < n + L - 1; C is (..., n_sel, L)."""
        Y = np.sum(rfft(C, self.n_fft, axis=-1) * self.R[sources], axis=-2)
        return irfft(Y, self.n_fft, axis=-1)[..., : self.n + self.L - 1]

    def decompose(self, estimates: np.ndarray, pairs: str = "diagonal"):
        """Energies of BSS Eval's components.

        estimates : (n_est, n). With ``pairs="diagonal"`` estimate m is scored against
        reference m only; with ``"all"`` against every reference.
        Returns (energy of P_j, energy of e - P_j, energy of P_all - P_j) with shape
        (n_est,) or (n_est, n_src), and (energy of P_all, energy of e - P_all), (n_est,).
        """
        n_est, L = estimates.shape[0], self.L
        E = rfft(estimates, self.n_fft, axis=1)
        D = self._corr(E)                                                 # (n_est, n_src, L)
        e_pad = np.zeros((n_est, self.n + L - 1))
        e_pad[:, : self.n] = estimates

        C_all = _solve_spd(self.G, D.reshape(n_est, -1).T).T.reshape(n_est, self.n_src, L)
        P_all = self._filter(C_all, slice(None))                          # (n_est, n + L - 1)

        refs = range(n_est) if pairs == "diagonal" else range(self.n_src)
        P_j = np.empty((n_est, len(refs), self.n + L - 1))
        for col, j in enumerate(refs):
            Gjj = self.G[j * L:(j + 1) * L, j * L:(j + 1) * L]
            rows = [col] if pairs == "diagonal" else slice(None)
            Cj = _solve_spd(Gjj, D[rows, j, :].T).T                       # (n_rows, L)
            P_j[rows, col] = self._filter(Cj[:, None, :], [j])
        if pairs == "diagonal":
            P_j = P_j[np.arange(n_est), np.arange(n_est)][:, None, :]
        target = np.sum(P_j ** 2, axis=-1)
        distortion = np.sum((e_pad[:, None, :] - P_j) ** 2, axis=-1)
        interference = np.sum((P_all[:, None, :] - P_j) ** 2, axis=-1)
        if pairs == "diagonal":
            target, distortion, interference = target[:, 0], distortion[:, 0], interference[:, 0]
        return (target, distortion, interference,
                np.sum(P_all ** 2, axis=-1), np.sum((e_pad - P_all) ** 2, axis=-1))


def bss_eval_sources(reference_sources, estimated_sources, compute_permutation: bool = False,
                     filter_length: int = FILTER_LENGTH):
    """BSS Eval v3 source metrics, like ``mir_eval.separation.bss_eval_sources``.

    Parameters
    ----------
    reference_sources : ndarray (n_src, n_samples) or (n_samples,), the true sources.
    estimated_sources : ndarray of the same shape, the estimates.
    compute_permutation : if False, estimate j is scored against reference j. If True,
        the estimate-to-reference matching with the highest mean SIR is used (found
        by the Hungarian algorithm on the n_src x n_src SIR table).
    filter_length : taps of the allowed distortion filter (512 in BSS Eval v3).

    Returns
    -------
    sdr, sir, sar : float64 ndarrays (n_src,) in dB, in reference order.
    perm : int ndarray (n_src,); ``estimated_sources[perm[j]]`` was matched to reference j.
    """
    refs = _as_sources(reference_sources, "reference_sources", "bss_eval_sources")
    ests = _as_sources(estimated_sources, "estimated_sources", "bss_eval_sources")
    if refs.shape != ests.shape:
        raise ValueError(f"bss_eval_sources: reference_sources {refs.shape} and estimated_sources {ests.shape} "
                         "must have the same shape (n_sources, n_samples)")
    proj = _Projector(refs, filter_length)
    n_src = refs.shape[0]
    if not compute_permutation:
        tgt, dist, intf, p_all, artif = proj.decompose(ests, "diagonal")
        return _db(tgt, dist), _db(tgt, intf), _db(p_all, artif), np.arange(n_src)
    tgt, dist, intf, p_all, artif = proj.decompose(ests, "all")        # (n_est, n_src)
    sdr, sir = _db(tgt, dist), _db(tgt, intf)
    sar = np.broadcast_to(_db(p_all, artif)[:, None], sdr.shape)
    score = np.nan_to_num(sir, posinf=1e6, neginf=-1e6)
    est_idx, ref_idx = linear_sum_assignment(-score.T)                   # rows: references
    perm = np.empty(n_src, dtype=int)
    perm[ref_idx] = est_idx
    j = np.arange(n_src)
    return sdr[perm, j], sir[perm, j], np.array(sar[perm, j]), perm


def si_sdr(reference, estimate, zero_mean: bool = False) -> np.ndarray | float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019).

    reference, estimate : ndarrays (n_samples,) or (n_src, n_samples).
    The reference is scaled by ``a = <e, s> / <s, s>``; SI-SDR =
    ``10 log10(|a s|^2 / |e - a s|^2)``. With ``zero_mean`` both are centred first.
    Returns a float for 1-D input, else (n_src,). A silent reference or estimate (also
    a constant one with ``zero_mean``) is refused: its SI-SDR is undefined.
    """
    s = _as_sources(reference, "reference", "si_sdr")
    e = _as_sources(estimate, "estimate", "si_sdr")
    if s.shape != e.shape:
        raise ValueError(f"si_sdr: reference {s.shape} and estimate {e.shape} differ in shape")
    if zero_mean:
        s = not_silent(s - s.mean(axis=1, keepdims=True), "si_sdr", "reference (without its mean)")
        e = not_silent(e - e.mean(axis=1, keepdims=True), "si_sdr", "estimate (without its mean)")
    ss = np.sum(s * s, axis=1)
    target = (np.sum(e * s, axis=1) / ss)[:, None] * s
    out = _db(np.sum(target ** 2, axis=1), np.sum((e - target) ** 2, axis=1))
    return float(out[0]) if np.ndim(reference) == 1 else out


def separation_scores(reference_sources, estimated_sources, mixture,
                      filter_length: int = FILTER_LENGTH) -> dict[str, np.ndarray]:
    """SDR, SIR, SAR of the estimates, SDR of the mixture, and NSDR, per source.

    reference_sources, estimated_sources : (n_src, n_samples); mixture : (n_samples,).
    Returns a dict of (n_src,) arrays in dB: "sdr", "sir", "sar", "mixture_sdr",
    "nsdr" (= sdr - mixture_sdr). Sources are taken in the given order. The
    reference Gram matrix is built once for both evaluations.
    """
    return _separation_scores(reference_sources, estimated_sources, mixture, filter_length, "separation_scores")


def _separation_scores(reference_sources, estimated_sources, mixture, filter_length: int,
                       metric: str) -> dict[str, np.ndarray]:
    refs = _as_sources(reference_sources, "reference_sources", metric)
    ests = _as_sources(estimated_sources, "estimated_sources", metric)
    mix = _as_sources(mixture, "mixture", metric)
    if refs.shape != ests.shape or mix.shape != (1, refs.shape[1]):
        raise ValueError(f"{metric}: shapes disagree: references {refs.shape}, estimates {ests.shape}, "
                         f"mixture {mix.shape[1:]} (want (n_src, n), (n_src, n), (n,))")
    proj = _Projector(refs, filter_length)
    tgt, dist, intf, p_all, artif = proj.decompose(ests, "diagonal")
    m_tgt, m_dist, *_ = proj.decompose(np.repeat(mix, refs.shape[0], axis=0), "diagonal")
    sdr, mix_sdr = _db(tgt, dist), _db(m_tgt, m_dist)
    return {"sdr": sdr, "sir": _db(tgt, intf), "sar": _db(p_all, artif),
            "mixture_sdr": mix_sdr, "nsdr": sdr - mix_sdr}


def nsdr(reference_sources, estimated_sources, mixture,
         filter_length: int = FILTER_LENGTH) -> np.ndarray:
    """Normalised SDR in dB, ``SDR(estimate, s) - SDR(mixture, s)`` per source, shape (n_src,).

    The improvement a separator brings over doing nothing (returning the mixture).
    """
    return _separation_scores(reference_sources, estimated_sources, mixture, filter_length, "nsdr")["nsdr"]


def weighted_mean(values, lengths) -> np.ndarray | float:
    """Length-weighted mean over clips: ``sum_k w_k v_k / sum_k w_k``.

    values : (n_clips,) or (n_clips, n_src); lengths : (n_clips,) clip lengths
    (samples or seconds; only the ratios matter). Returns a float or (n_src,).
    """
    return _weighted_mean(values, lengths, "weighted_mean", "values")


def _weighted_mean(values, lengths, metric: str, arg: str) -> np.ndarray | float:
    v = not_nan(np.asarray(values, dtype=np.float64), metric, arg)
    w = np.asarray(lengths, dtype=np.float64)
    if v.shape[:1] != w.shape or w.ndim != 1 or w.size == 0:
        raise ValueError(f"{metric}: need one length per clip: {arg} {v.shape}, lengths {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"{metric}: clip lengths must be finite, non-negative and not all zero")
    out = np.tensordot(w, v, axes=(0, 0)) / w.sum()
    return float(out) if v.ndim == 1 else out


def gnsdr(nsdrs, lengths) -> np.ndarray | float:
    """Global NSDR in dB: NSDR of each clip averaged with the clips' lengths as weights.

    nsdrs : (n_clips,) or (n_clips, n_src) from :func:`nsdr`; lengths : (n_clips,).
    The same weighting of SIR and SAR gives the GSIR and GSAR of the MIR-1K
    literature (use :func:`weighted_mean`).
    """
    return _weighted_mean(nsdrs, lengths, "gnsdr", "nsdrs")
