"""NumPy twins of the Numba kernels: the reference semantics, and the fallback
when Numba is missing or ``NPVAE_BACKEND=numpy``.

Conventions shared by both backends
-----------------------------------
* ``im2col`` lays patches out as ``cols[(c*kh + i)*kw + j, (n*OH + oh)*OW + ow]``,
  i.e. shape ``(C*kh*kw, N*OH*OW)``, so a convolution is one GEMM
  ``W.reshape(O, C*kh*kw) @ cols``. (For one sample, the result is already its
  ``(O, OH*OW)`` output.)
* Activation codes (``ACT_*``) select the element-wise function fused with a bias.
  Their derivatives are written in terms of the *output* ``y``, so backward needs
  no copy of the pre-activation.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

ACT_IDENTITY, ACT_RELU, ACT_LEAKY_RELU, ACT_SIGMOID, ACT_TANH = 0, 1, 2, 3, 4


def conv_output_size(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def im2col(x, kh, kw, sh, sw, ph, pw, out=None):
    """Patches of ``x`` (N, C, H, W) as columns, shape (C*kh*kw, N*OH*OW) (into ``out`` if given)."""
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if (ph or pw) else x
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))  # (N, C, H', W', kh, kw)
    win = win[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw].transpose(1, 4, 5, 0, 2, 3)
    if out is None:
        return np.ascontiguousarray(win).reshape(c * kh * kw, n * oh * ow)
    out.reshape(c, kh, kw, n, oh, ow)[...] = win
    return out


def col2im(cols, x_shape, kh, kw, sh, sw, ph, pw, out=None):
    """Adjoint of :func:`im2col`: scatter-add (C*kh*kw, N*OH*OW) columns back into an
    (N, C, H, W) array (a new one, or ``out``, which is overwritten)."""
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    cols6 = cols.reshape(c, kh, kw, n, oh, ow)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] += cols6[:, i, j].transpose(1, 0, 2, 3)
    if out is None:
        return np.ascontiguousarray(xp[:, :, ph : ph + h, pw : pw + w])
    out[...] = xp[:, :, ph : ph + h, pw : pw + w]
    return out


def bias_act_forward(z, b, act, alpha):
    """In place: ``z <- act(z + b)`` for ``z`` (N, F) and ``b`` (F,). Returns ``z``."""
    z += b
    return _act_inplace(z, act, alpha)


def bias_act_channels(z, b, act, alpha):
    """In place: ``z[n, c] <- act(z[n, c] + b[c])`` for ``z`` (N, C, ...) C-contiguous and
    ``b`` (C,), or ``act(z)`` when ``b`` is None: a convolution's bias and activation in
    one pass over its output. Returns ``z``."""
    if not z.flags.c_contiguous:
        raise ValueError("bias_act_channels works in place on a C-contiguous array")
    if b is not None:
        z += b.reshape(-1, *(1,) * (z.ndim - 2))
    return _act_inplace(z, act, alpha)


def _act_inplace(z, act, alpha):
    if act == ACT_RELU:
        np.maximum(z, 0, out=z)
    elif act == ACT_LEAKY_RELU:
        np.multiply(z, np.where(z > 0, 1.0, alpha).astype(z.dtype), out=z)
    elif act == ACT_SIGMOID:
        _sigmoid_inplace(z)
    elif act == ACT_TANH:
        np.tanh(z, out=z)
    return z


def _sigmoid_inplace(z):
    # exp(-|z|) never overflows; the two branches are the same function.
    e = np.exp(-np.abs(z))
    np.divide(np.where(z >= 0, 1.0, e), 1.0 + e, out=z)


def act_forward(x, act, alpha=0.0):
    """``act(x)`` element-wise, any shape, as a new array."""
    if act == ACT_RELU:
        return np.maximum(x, 0)
    return _act_inplace(x.copy(), act, alpha)


def act_backward(dy, y, act, alpha, out=None):
    """Gradient through an activation, from its output ``y``: returns ``dz`` (a new array,
    or ``out``)."""
    if act == ACT_RELU:
        return np.multiply(dy, y > 0, out=out)
    if act == ACT_LEAKY_RELU:
        return np.multiply(dy, np.where(y > 0, 1.0, alpha).astype(dy.dtype), out=out)
    if act == ACT_SIGMOID:
        dz = np.multiply(dy, y, out=out)
        dz *= 1 - y
        return dz
    if act == ACT_TANH:
        return np.multiply(dy, 1 - y * y, out=out)
    if out is None:
        return dy.copy()
    out[...] = dy
    return out


def adam_update(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, weight_decay):
    """One Adam step in place on ``p``, ``m``, ``v`` (any shape, same shape as ``g``).

    ``bc1 = 1 - beta1**t`` and ``bc2 = 1 - beta2**t`` are the bias corrections;
    ``weight_decay`` is decoupled (AdamW): ``p <- p * (1 - lr * weight_decay)`` first.
    """
    if weight_decay:
        p *= 1.0 - lr * weight_decay
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * (g * g)
    denom = np.sqrt(v / bc2)
    denom += eps
    p -= (lr / bc1) * m / denom


def reparameterize(mu, logvar, eps):
    """``z = mu + exp(0.5 logvar) * eps``; returns ``(z, std)``."""
    std = np.exp(0.5 * logvar)
    return mu + std * eps, std


def kl_terms(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over all elements, and its gradients."""
    ev = np.exp(logvar)
    kl = -0.5 * float(np.sum(1.0 + logvar - mu * mu - ev, dtype=np.float64))
    return kl, mu.copy(), 0.5 * (ev - 1.0)


def bce_logits(logits, target, scale=1.0):
    """Binary cross-entropy from logits, summed; returns ``(sum, scale * (sigmoid(logits) - target))``.

    Stable form: ``max(l, 0) - l*t + log(1 + exp(-|l|))``.
    """
    loss = np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))
    p = logits.copy()
    _sigmoid_inplace(p)
    p -= target
    if scale != 1.0:
        p *= scale
    return float(np.sum(loss, dtype=np.float64)), p


def conv_direct_forward(x, w, b, sh, sw, ph, pw, out):
    """Cross-correlation ``out[n, o] = b[o] + sum_c w[o, c] * x[n, c]`` (stride, zero
    padding) for x (N, C, H, W), w (O, C, kh, kw), into ``out`` (N, O, OH, OW)."""
    n = x.shape[0]
    o, c, kh, kw = w.shape
    oh, ow = out.shape[2:]
    cols = im2col(x, kh, kw, sh, sw, ph, pw)                       # (C*kh*kw, N*OH*OW)
    y = w.reshape(o, -1) @ cols
    out[...] = y.reshape(o, n, oh, ow).transpose(1, 0, 2, 3) + b[:, None, None]
    return out


def conv_direct_backward(x, w, dy, sh, sw, ph, pw, dw, dx=None):
    """Gradients of :func:`conv_direct_forward`: ``dw`` (O, C, kh, kw) is overwritten with
    the weight gradient of this batch; ``dx`` (N, C, H, W), if given, with the input's."""
    n = x.shape[0]
    o, c, kh, kw = w.shape
    cols = im2col(x, kh, kw, sh, sw, ph, pw)
    d2 = dy.transpose(1, 0, 2, 3).reshape(o, -1)                   # (O, N*OH*OW)
    dw[...] = (d2 @ cols.T).reshape(dw.shape)
    if dx is not None:
        col2im(w.reshape(o, -1).T @ d2, x.shape, kh, kw, sh, sw, ph, pw, out=dx)


def conv_tiled_forward(x, w, b, sh, sw, ph, pw, out):
    """Cross-correlation ``out[n, o] = b[o] + sum_c w[o, c] * x[n, c]`` (stride, zero
    padding) for x (N, C, H, W), w (O, C, kh, kw), b (O,), into ``out`` (N, O, OH, OW),
    C-contiguous; returns ``out``. The register-tiled direct kernel: no columns, any
    stride, for layers with many output channels."""
    return conv_direct_forward(x, w, b, sh, sw, ph, pw, out)


def conv_tiled_weight_grad(x, dy, sh, sw, ph, pw, dw):
    """The weight gradient of :func:`conv_tiled_forward`: ``dw`` (O, C, kh, kw) is
    overwritten with ``sum_n`` of the correlation of ``dy[n]`` (N, O, OH, OW) with
    ``x[n]`` (N, C, H, W) (stride, zero padding); returns ``dw``."""
    o, c, kh, kw = dw.shape
    cols = im2col(x, kh, kw, sh, sw, ph, pw)
    dw[...] = (dy.transpose(1, 0, 2, 3).reshape(o, -1) @ cols.T).reshape(dw.shape)
    return dw



def conv_cin1_forward(x, w, b, sh, sw, ph, pw, out):
    """Cross-correlation ``out[n, o] = b[o] + w[o, 0] * x[n, 0]`` (stride, zero padding) of
    one input channel, x (N, 1, H, W), w (O, 1, kh, kw), b (O,), into ``out`` (N, O, OH,
    OW), C-contiguous; returns ``out``. The direct kernel for a network's first layer."""
    return conv_direct_forward(x, w, b, sh, sw, ph, pw, out)


def conv_cin1_weight_grad(x, dy, sh, sw, ph, pw, dw, db=None):
    """The gradients of :func:`conv_cin1_forward` from ``dy`` (N, O, OH, OW): ``dw`` (O, 1,
    kh, kw) is overwritten with the weight gradient, ``db`` (O,), if given, with the bias
    gradient ``sum(dy)`` over all axes but the channels; returns ``dw``."""
    conv_tiled_weight_grad(x, dy, sh, sw, ph, pw, dw)
    if db is not None:
        db[...] = np.sum(dy, axis=(0, 2, 3))
    return dw


def conv_cin1_input_grad(dy, w, sh, sw, ph, pw, dx):
    """The input gradient of :func:`conv_cin1_forward`: ``dx`` (N, 1, H, W) is overwritten
    with the adjoint of the convolution by ``w`` (O, 1, kh, kw) applied to ``dy`` (N, O,
    OH, OW); returns ``dx``."""
    o, _, kh, kw = w.shape
    d2 = dy.transpose(1, 0, 2, 3).reshape(o, -1)                   # (O, N*OH*OW)
    return col2im(w.reshape(o, -1).T @ d2, dx.shape, kh, kw, sh, sw, ph, pw, out=dx)

# -- Winograd F(m x m, 3x3) ------------------------------------------------------------------
#
# A 3x3 stride-1 convolution computed on input tiles of r = m + 2 pixels a side that
# overlap by 2, each giving an m x m output tile: ``Y = A^T [(G g G^T) * (B^T d B)] A``
# per tile and channel pair, the products summed over the input channels as r*r GEMMs
# (one per tile position), in the layer. m is 2 (F(2x2, 3x3), 16 positions) or 4
# (F(4x4, 3x3), 36). Tiles are numbered ``(n*TH + a)*TW + b`` for sample n, tile row a,
# tile column b, with ``TH = ceil(OH / m)``, ``TW = ceil(OW / m)``; the input is
# zero-padded on the right and at the bottom to whole tiles, and the output tiles are
# cropped to (OH, OW). Arrays of tiles are (r*r, channels, tiles): position ``i*r + j``
# of a tile, then channel, then tile.

WINOGRAD = {   # m -> (B^T, G, A^T), from Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks"
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64),
        np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=np.float64),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                 dtype=np.float64)),
}


def winograd_tiles(size: int, pad: int, m: int) -> int:
    """Output tiles of ``m`` along an axis of ``size`` inputs with ``pad`` zeros each side."""
    return -(-(size + 2 * pad - 2) // m)


def _tile_layout(t, n, th, tw):
    """(N, X, TH, TW, r, r) -> (r*r, X, N*TH*TW)."""
    r = t.shape[-1]
    return t.transpose(4, 5, 1, 0, 2, 3).reshape(r * r, t.shape[1], n * th * tw)


def _tile_array(v, n, th, tw):
    """(r*r, X, N*TH*TW) -> (N, X, TH, TW, r, r)."""
    r = int(round(np.sqrt(v.shape[0])))
    return v.reshape(r, r, v.shape[1], n, th, tw).transpose(3, 2, 4, 5, 0, 1)


def _into(value, out):
    if out is None:
        return np.ascontiguousarray(value)
    out[...] = value
    return out


def winograd_input_transform(x, m, ph, pw, out=None):
    """Input tiles ``B^T d B`` of ``x`` (N, C, H, W), zero-padded by (ph, pw), as
    (r*r, C, N*TH*TW), r = m + 2 (into ``out`` if given)."""
    n, c, h, w = x.shape
    th, tw = winograd_tiles(h, ph, m), winograd_tiles(w, pw, m)
    xp = np.zeros((n, c, m * th + 2, m * tw + 2), dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    d = sliding_window_view(xp, (m + 2, m + 2), axis=(2, 3))[:, :, ::m, ::m]   # (N, C, TH, TW, r, r)
    bt = WINOGRAD[m][0].astype(x.dtype)
    return _into(_tile_layout(bt @ d @ bt.T, n, th, tw), out)


def winograd_output_transform(t, m, b, out):
    """Output tiles ``A^T t A`` of ``t`` (r*r, O, N*TH*TW) plus the bias ``b`` (O,),
    cropped into ``out`` (N, O, OH, OW)."""
    n, o, oh, ow = out.shape
    th, tw = -(-oh // m), -(-ow // m)
    at = WINOGRAD[m][2].astype(t.dtype)
    y = at @ _tile_array(t, n, th, tw) @ at.T                               # (N, O, TH, TW, m, m)
    y = y.transpose(0, 1, 2, 4, 3, 5).reshape(n, o, m * th, m * tw)
    out[...] = y[:, :, :oh, :ow] + b[:, None, None]
    return out


def winograd_output_adjoint(dy, m, out=None):
    """Adjoint of :func:`winograd_output_transform` (bias aside): ``A dy A^T`` of the
    m x m tiles of ``dy`` (N, O, OH, OW), zero-padded to whole tiles, as (r*r, O, N*TH*TW)."""
    n, o, oh, ow = dy.shape
    th, tw = -(-oh // m), -(-ow // m)
    dp = np.zeros((n, o, m * th, m * tw), dtype=dy.dtype)
    dp[:, :, :oh, :ow] = dy
    at = WINOGRAD[m][2].astype(dy.dtype)
    t = dp.reshape(n, o, th, m, tw, m).transpose(0, 1, 2, 4, 3, 5)        # (N, O, TH, TW, m, m)
    return _into(_tile_layout(at.T @ t @ at, n, th, tw), out)


def winograd_input_adjoint(v, m, ph, pw, out):
    """Adjoint of :func:`winograd_input_transform`: ``B v B^T`` per tile, the overlapping
    tiles added up, the padding cropped, into ``out`` (N, C, H, W) (overwritten)."""
    n, c, h, w = out.shape
    th, tw = winograd_tiles(h, ph, m), winograd_tiles(w, pw, m)
    bt = WINOGRAD[m][0].astype(v.dtype)
    d = bt.T @ _tile_array(v, n, th, tw) @ bt                               # (N, C, TH, TW, r, r)
    xp = np.zeros((n, c, m * th + 2, m * tw + 2), dtype=v.dtype)
    for i in range(m + 2):
        for j in range(m + 2):
            xp[:, :, i:i + m * th:m, j:j + m * tw:m] += d[..., i, j]
    out[...] = xp[:, :, ph:ph + h, pw:pw + w]
    return out


# -- recurrent layers ------------------------------------------------------------------------
#
# One direction of one layer, time-major: ``(T, N, ...)`` arrays, C-contiguous, whose step
# ``t`` is the contiguous block ``a[t]``. The input projections of all steps are one GEMM
# in the layer; these loops add the recurrent GEMM of each step and the gates. ``reverse``
# runs a direction from the last step to the first. Zero initial state.

def _order(t_len, reverse, backward=False):
    """The steps of a direction in the order they are computed (``backward``: undone)."""
    forward = range(t_len - 1, -1, -1) if reverse else range(t_len)
    return forward[::-1] if backward else forward


def _prev(t, t_len, reverse):
    """The step before ``t`` in a direction's order, None at its first step."""
    p = t + 1 if reverse else t - 1
    return p if 0 <= p < t_len else None


def lstm_forward(gates, w_hh, reverse, h, c):
    """The step loop of one LSTM direction, in place.

    ``gates`` (T, N, 4H): on entry the input projections ``x_t W_ih^T + b_ih + b_hh`` of
    every step; on return the gate values ``i, f, g, o`` (sigmoid, sigmoid, tanh, sigmoid,
    PyTorch's order). ``w_hh`` (4H, H) is ``W_hh``. ``h`` and ``c`` (T, N, H) receive the
    hidden and cell state of every step: ``c_t = f c_{t-1} + i g``, ``h_t = o tanh(c_t)``.
    """
    t_len, n, hid = h.shape
    h_prev = c_prev = np.zeros((n, hid), gates.dtype)
    for t in _order(t_len, reverse):
        z = gates[t]
        z += (w_hh @ h_prev.T).T         # OpenBLAS runs W_hh h^T faster than h W_hh^T
        _sigmoid_inplace(z[:, :2 * hid])
        np.tanh(z[:, 2 * hid:3 * hid], out=z[:, 2 * hid:3 * hid])
        _sigmoid_inplace(z[:, 3 * hid:])
        np.multiply(z[:, hid:2 * hid], c_prev, out=c[t])
        c[t] += z[:, :hid] * z[:, 2 * hid:3 * hid]
        np.tanh(c[t], out=h[t])
        h[t] *= z[:, 3 * hid:]
        h_prev, c_prev = h[t], c[t]


def lstm_backward(dh, gates, c, w_hh, reverse, dz):
    """Backward through time of one LSTM direction: fills and returns ``dz`` (T, N, 4H),
    the gradient of the gates' pre-activations (of ``x_t W_ih^T + b`` and of
    ``h_{t-1} W_hh^T`` alike), from ``dh`` (T, N, H), the gradient of every step's
    output from above, and ``gates``, ``c`` as :func:`lstm_forward` left them.
    ``w_hh`` is (4H, H)."""
    t_len, n, hid = c.shape
    dh_next = dc_next = zero = np.zeros((n, hid), dh.dtype)
    for t in _order(t_len, reverse, backward=True):
        p = _prev(t, t_len, reverse)
        c_prev = zero if p is None else c[p]
        i, f, g, o = (gates[t, :, k * hid:(k + 1) * hid] for k in range(4))
        tc = np.tanh(c[t])
        dht = dh[t] + dh_next
        dct = dht * o * (1 - tc * tc) + dc_next
        d = dz[t]
        d[:, :hid] = dct * g * i * (1 - i)
        d[:, hid:2 * hid] = dct * c_prev * f * (1 - f)
        d[:, 2 * hid:3 * hid] = dct * i * (1 - g * g)
        d[:, 3 * hid:] = dht * tc * o * (1 - o)
        dc_next = dct * f
        dh_next = d @ w_hh
    return dz


def gru_forward(gates, w_hh_t, b_hh, reverse, h, hn):
    """The step loop of one GRU direction, in place.

    ``gates`` (T, N, 3H): on entry the input projections ``x_t W_ih^T + b_ih``; on return
    the gate values ``r, z, n`` (PyTorch's order). ``w_hh_t`` (H, 3H) is ``W_hh``
    transposed, C-contiguous, ``b_hh`` (3H,). ``h`` (T, N, H) receives every step's
    state ``h_t = (1 - z) n + z h_{t-1}``, ``hn`` (T, N, H) the recurrent part of the
    new gate, ``h_{t-1} W_hn^T + b_hn`` (``n = tanh(x W_in^T + b_in + r hn)``).
    """
    t_len, n, hid = h.shape
    h_prev = np.zeros((n, hid), gates.dtype)
    for t in _order(t_len, reverse):
        a = h_prev @ w_hh_t
        a += b_hh
        g = gates[t]
        g[:, :2 * hid] += a[:, :2 * hid]
        _sigmoid_inplace(g[:, :2 * hid])
        hn[t] = a[:, 2 * hid:]
        new = g[:, 2 * hid:]
        new += g[:, :hid] * hn[t]
        np.tanh(new, out=new)
        np.subtract(h_prev, new, out=h[t])
        h[t] *= g[:, hid:2 * hid]
        h[t] += new
        h_prev = h[t]


def gru_backward(dh, gates, hn, h, w_hh, reverse, dzx, dzh):
    """Backward through time of one GRU direction, from ``dh`` (T, N, H) and what
    :func:`gru_forward` left: fills ``dzx`` (T, N, 3H), the gradient of the input
    projections ``x_t W_ih^T + b_ih``, and ``dzh`` (T, N, 3H), that of the recurrent ones
    ``h_{t-1} W_hh^T + b_hh``. ``w_hh`` is (3H, H)."""
    t_len, n, hid = h.shape
    dh_next = zero = np.zeros((n, hid), dh.dtype)
    for t in _order(t_len, reverse, backward=True):
        p = _prev(t, t_len, reverse)
        h_prev = zero if p is None else h[p]
        r, u, new = (gates[t, :, k * hid:(k + 1) * hid] for k in range(3))
        dht = dh[t] + dh_next
        dn = dht * (1 - u) * (1 - new * new)
        dzx[t, :, :hid] = dn * hn[t] * r * (1 - r)
        dzx[t, :, hid:2 * hid] = dht * (h_prev - new) * u * (1 - u)
        dzx[t, :, 2 * hid:] = dn
        dzh[t, :, :2 * hid] = dzx[t, :, :2 * hid]
        dzh[t, :, 2 * hid:] = dn * r
        dh_next = dht * u + dzh[t] @ w_hh

# -- pooling ------------------------------------------------------------------------------------
#
# (N, C, H, W) -> (N, C, OH, OW), OH = (H + 2*ph - kh) // sh + 1. A window's kernel offsets
# are numbered ``i*kw + j``; max pooling keeps the offset of each window's maximum
# (``arg``, uint8 for kernels of up to 256 taps, else int32): the first maximum in
# row-major order, a NaN counting as the maximum (PyTorch's rule), padding as -inf.

def pool_arg_dtype(kh, kw):
    return np.uint8 if kh * kw <= 256 else np.int32


def pool_padded(x, ph, pw, fill):
    """``x`` (N, C, H, W) padded with ``fill`` (``x`` itself without padding)."""
    if not (ph or pw):
        return x
    xp = np.full(x.shape[:2] + (x.shape[2] + 2 * ph, x.shape[3] + 2 * pw), fill, dtype=x.dtype)
    xp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
    return xp


def pool_windows(xp, kh, kw, sh, sw, oh, ow):
    """``(offset, view (N, C, OH, OW) of the padded input at that kernel offset)`` for
    every offset: a pooling is one vectorised pass per offset, windows never copied."""
    for i in range(kh):
        for j in range(kw):
            yield i * kw + j, xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]


def pool_scatter(x_shape, dtype, kh, kw, sh, sw, ph, pw, oh, ow, part):
    """dx (N, C, H, W): the sum over kernel offsets of ``part(offset)`` (N, C, OH, OW)
    placed where that offset reads the input (the adjoint of :func:`pool_windows`)."""
    n, c, h, w = x_shape
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dtype)
    overlap = sh < kh or sw < kw
    for o, view in pool_windows(dxp, kh, kw, sh, sw, oh, ow):
        if overlap:
            view += part(o)
        else:
            view[...] = part(o)
    return dxp[:, :, ph:ph + h, pw:pw + w] if (ph or pw) else dxp


def avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw):
    """Average pooling of x (N, C, H, W) -> y (N, C, OH, OW): each window's values summed
    in kernel-offset order (zero padding included), times 1 / (kh * kw)."""
    oh, ow = conv_output_size(x.shape[2], kh, sh, ph), conv_output_size(x.shape[3], kw, sw, pw)
    y = None
    for _, v in pool_windows(pool_padded(x, ph, pw, 0), kh, kw, sh, sw, oh, ow):
        y = v.copy() if y is None else np.add(y, v, out=y)
    y *= x.dtype.type(1.0 / (kh * kw))
    return y


def avg_pool2d_backward(dy, x_shape, kh, kw, sh, sw, ph, pw):
    """dx (N, C, H, W) of :func:`avg_pool2d_forward`: ``dy / (kh * kw)`` added to every
    pixel of its window, overlapping windows in kernel-offset order."""
    g = dy * dy.dtype.type(1.0 / (kh * kw))
    return pool_scatter(x_shape, dy.dtype, kh, kw, sh, sw, ph, pw, *dy.shape[2:], lambda o: g)


def max_pool2d_forward(x, kh, kw, sh, sw, ph, pw):
    """Max pooling of x (N, C, H, W); returns ``(y (N, C, OH, OW), arg)``."""
    oh, ow = conv_output_size(x.shape[2], kh, sh, ph), conv_output_size(x.shape[3], kw, sw, pw)
    y = arg = better = None
    for o, v in pool_windows(pool_padded(x, ph, pw, -np.inf), kh, kw, sh, sw, oh, ow):
        if y is None:
            y, arg = v.copy(), np.zeros(v.shape, pool_arg_dtype(kh, kw))
            continue
        better = np.greater(v, y, out=better)
        better |= np.isnan(v)
        np.copyto(y, v, where=better)
        np.copyto(arg, o, where=better)
    return y, arg


def max_pool2d_backward(dy, arg, x_shape, kh, kw, sh, sw, ph, pw):
    """dx (N, C, H, W) of :func:`max_pool2d_forward`: each window's gradient to its maximum."""
    zero = dy.dtype.type(0)
    return pool_scatter(x_shape, dy.dtype, kh, kw, sh, sw, ph, pw, *dy.shape[2:],
                        lambda o: np.where(arg == o, dy, zero))


# -- per-channel normalisation (BatchNorm) on x viewed as (N, C, L) ---------------------------
# Sums are float64 over the batch; along each row of L values NumPy sums pairwise (sums)
# or through BLAS dot products (sums of products) in the array's dtype.

def row_dots(a, b):
    """``sum(a * b, axis=2)`` of (N, C, L) arrays, one BLAS dot per row: (N, C)."""
    return np.matmul(a[:, :, None, :], b[:, :, :, None])[:, :, 0, 0]


def channel_sums(x):
    """Per-channel sums of ``x`` (N, C, L): (C,) float64."""
    return x.sum(axis=2).sum(axis=0, dtype=np.float64)


def channel_sq_dev(x, mean):
    """Per-channel sums of squared deviations ``sum((x - mean[c])**2)`` of ``x`` (N, C, L),
    ``mean`` (C,) float64: (C,) float64."""
    xc = x - mean.astype(x.dtype)[:, None]
    return row_dots(xc, xc).sum(axis=0, dtype=np.float64)


def channel_dot_sums(dy, xhat):
    """``(sum(dy), sum(dy * xhat))`` per channel of (N, C, L) arrays: two (C,) float64."""
    return dy.sum(axis=2).sum(axis=0, dtype=np.float64), row_dots(dy, xhat).sum(axis=0, dtype=np.float64)


def batchnorm_normalise(x, mean, inv_std, gamma, beta, xhat, y):
    """``xhat = (x - mean[c]) * inv_std[c]`` and ``y = xhat * gamma[c] + beta[c]`` for ``x``
    (N, C, L), into ``xhat`` and ``y`` of its shape and dtype; ``mean``, ``inv_std`` (C,)
    float64. ``xhat`` None: only ``y``. Returns ``y``."""
    t = x.dtype.type
    h = np.subtract(x, mean.astype(t)[:, None], out=xhat if xhat is not None else y)
    h *= inv_std.astype(t)[:, None]
    if h is not y:
        np.multiply(h, gamma[:, None], out=y)
    else:
        y *= gamma[:, None]
    y += beta[:, None]
    return y


def channel_affine(x, scale, shift, out):
    """``out = x * scale[c] + shift[c]`` for ``x`` (N, C, L) (BatchNorm in eval mode). Returns ``out``."""
    np.multiply(x, scale[:, None], out=out)
    out += shift[:, None]
    return out


def batchnorm_input_grad(dy, xhat, mean_dy, mean_dyx, scale, dx):
    """``dx = (dy - mean_dy[c] - xhat * mean_dyx[c]) * scale[c]`` for (N, C, L) arrays,
    ``mean_dy``, ``mean_dyx``, ``scale`` (C,) float64. Returns ``dx``."""
    t = dy.dtype.type
    np.multiply(xhat, mean_dyx.astype(t)[:, None], out=dx)
    np.subtract(dy, dx, out=dx)
    dx -= mean_dy.astype(t)[:, None]
    dx *= scale.astype(t)[:, None]
    return dx


def batchnorm_backward(dy, xhat, scale, dx):
    """BatchNorm's backward in one process: ``(sum(dy), sum(dy * xhat))`` per channel of
    (N, C, L) arrays, returned as two (C,) float64, and ``dx`` of :func:`batchnorm_input_grad`
    with their means over the N * L values of a channel (``scale`` (C,) float64). Writes
    ``dx``."""
    sum_dy, sum_dyx = channel_dot_sums(dy, xhat)
    count = dy.shape[0] * dy.shape[2]
    batchnorm_input_grad(dy, xhat, sum_dy / count, sum_dyx / count, scale, dx)
    return sum_dy, sum_dyx


# -- per-sample group normalisation (GroupNorm) on x viewed as (N, C, L) ----------------------
# A group is C/G consecutive channels of one sample, C/G * L values. Backward takes x, its
# group means and 1/std, and recomputes xhat: the forward then writes y alone.

def groupnorm_forward(x, gamma, beta, groups, eps, y):
    """``y = (x - mean) * inv_std * gamma[c] + beta[c]`` for ``x`` (N, C, L), into ``y`` of
    its shape and dtype, with the mean and biased variance of each (sample, group) of
    ``C/groups`` consecutive channels (``inv_std = 1/sqrt(var + eps)``).
    Returns ``(mean, inv_std)``, (N, groups) float64 each."""
    n, c, l = x.shape
    t, count = x.dtype.type, (c // groups) * l
    xg, yg = x.reshape(n, groups, -1), y.reshape(n, groups, -1)
    mean = xg.sum(axis=2) / t(count)                       # pairwise along each group's row
    np.subtract(xg, mean[:, :, None], out=yg)
    inv_std = 1.0 / np.sqrt(row_dots(yg, yg).astype(np.float64) / count + eps)
    yg *= inv_std.astype(t)[:, :, None]
    y *= gamma[:, None]
    y += beta[:, None]
    return mean.astype(np.float64), inv_std


def _group_xhat(x, mean, inv_std):
    """``xhat = (x - mean) * inv_std`` of :func:`groupnorm_forward`, (N, C, L)."""
    n, groups, t = x.shape[0], mean.shape[1], x.dtype.type
    xhat = np.subtract(x.reshape(n, groups, -1), mean.astype(t)[:, :, None])
    xhat *= inv_std.astype(t)[:, :, None]
    return xhat.reshape(x.shape)


def groupnorm_backward(dy, x, mean, inv_std, gamma, dgamma, dbeta, dx):
    """Gradients of :func:`groupnorm_forward` for ``dy`` (N, C, L), given its input ``x``
    (N, C, L) and its ``mean``, ``inv_std`` (N, G) float64. With ``xhat = (x - mean) * inv_std``:
    ``dgamma[c] = sum(dy * xhat)`` and ``dbeta[c] = sum(dy)`` over samples and positions
    (written into the (C,) arrays), and ``dx = inv_std * (gamma[c] * dy - mean(gamma * dy)
    - xhat * mean(gamma * dy * xhat))``, the means over each (sample, group), into ``dx``.
    Returns ``dx``."""
    n, c, l = dy.shape
    groups = inv_std.shape[1]
    t, count = dy.dtype.type, (c // groups) * l
    xhat = _group_xhat(x, mean, inv_std)
    ones = np.ones(l, dy.dtype)      # row sums as BLAS products: sum(axis=2) is slow on short rows
    sum_dy = (dy @ ones).astype(np.float64)                                # (N, C)
    sum_dyx = (np.multiply(dy, xhat, out=dx) @ ones).astype(np.float64)    # dx as scratch
    dgamma[...] = sum_dyx.sum(axis=0)
    dbeta[...] = sum_dy.sum(axis=0)
    g64 = gamma.astype(np.float64)
    mean_d = (sum_dy * g64).reshape(n, groups, -1).sum(axis=2) / count          # (N, G)
    mean_dx = (sum_dyx * g64).reshape(n, groups, -1).sum(axis=2) / count

    def per_channel(a):         # (N, G) -> (N, C, 1) in dy's dtype
        return np.repeat(a, c // groups, axis=1)[:, :, None].astype(t)

    xhat *= per_channel(mean_dx)
    np.multiply(dy, gamma[:, None], out=dx)
    dx -= per_channel(mean_d)
    dx -= xhat
    dx *= per_channel(inv_std)
    return dx


# -- bilinear upsampling --------------------------------------------------------------------------
#
# Along each axis an output i reads inputs ``i0[i]`` and ``i1[i]`` with weights ``w0[i]``,
# ``w1[i]`` (``taps = (i0, i1, w0, w1)``, from the layer: PyTorch's align_corners=False
# rule). Here as one interpolation matrix per axis and two BLAS products.

def _taps_matrix(taps, n_in):
    i0, i1, w0, w1 = taps
    a = np.zeros((len(i0), n_in), dtype=w0.dtype)
    rows = np.arange(len(i0))
    np.add.at(a, (rows, i0), w0)
    np.add.at(a, (rows, i1), w1)
    return a


def bilinear_forward(x, taps_h, taps_w):
    """x (N, C, H, W) -> (N, C, OH, OW), OH = len(taps_h[0]), OW = len(taps_w[0])."""
    return np.matmul(_taps_matrix(taps_h, x.shape[2]), np.matmul(x, _taps_matrix(taps_w, x.shape[3]).T))


def bilinear_backward(dy, taps_h, taps_w, h, w):
    """dx (N, C, h, w) of :func:`bilinear_forward`."""
    return np.matmul(_taps_matrix(taps_h, h).T, np.matmul(dy, _taps_matrix(taps_w, w)))


# -- nearest upsampling ---------------------------------------------------------------------------
#
# Output row ``r`` copies input row ``ih[r]``, output column ``c`` input column ``iw[c]``
# (non-decreasing index arrays, from the layer: PyTorch's ``nearest`` rule). An integer
# factor repeats every pixel: one broadcast copy forward, one strided add per repeat back.

def nearest_repeats(ih, iw, h, w):
    """``(rh, rw)`` when ``ih``, ``iw`` repeat each of ``h`` rows and ``w`` columns an
    integer number of times (``ih == arange(OH) // rh``), else None."""
    rh, rw = len(ih) // h, len(iw) // w
    if len(ih) == rh * h and len(iw) == rw * w and np.array_equal(ih, np.arange(len(ih)) // rh) \
            and np.array_equal(iw, np.arange(len(iw)) // rw):
        return rh, rw
    return None


def nearest_forward(x, ih, iw):
    """x (N, C, H, W) -> y (N, C, OH, OW), ``y[:, :, r, c] = x[:, :, ih[r], iw[c]]``;
    ``ih`` (OH,), ``iw`` (OW,) non-decreasing int64 source indices."""
    n, c, h, w = x.shape
    rep = nearest_repeats(ih, iw, h, w)
    if rep is None:
        return x[:, :, ih[:, None], iw]
    rh, rw = rep
    return np.broadcast_to(x[:, :, :, None, :, None], (n, c, h, rh, w, rw)).reshape(n, c, h * rh, w * rw)


def _sum_into(dy, index, n_in, axis):
    """The transpose of ``take(x, index, axis)`` for a non-decreasing ``index``: each
    source gets the sum of the gradients of the outputs taken from it."""
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    sums = np.add.reduceat(dy, starts, axis=axis)
    shape = list(dy.shape)
    shape[axis] = n_in
    out = np.zeros(shape, dtype=dy.dtype)
    where = [slice(None)] * dy.ndim
    where[axis] = index[starts]
    out[tuple(where)] = sums
    return out


def nearest_backward(dy, ih, iw, h, w):
    """dx (N, C, h, w) of :func:`nearest_forward`: each input pixel gets the sum of the
    gradients of the outputs that copy it (integer factors: in row-major order of the
    outputs, as PyTorch adds them)."""
    rep = nearest_repeats(ih, iw, h, w)
    if rep is None:
        return _sum_into(_sum_into(dy, iw, w, 3), ih, h, 2)
    (rh, rw), dx = rep, None
    for i in range(rh):                  # one add per repeat offset (faster than a reshaped sum)
        for j in range(rw):
            v = dy[:, :, i::rh, j::rw]
            dx = v.copy() if dx is None else np.add(dx, v, out=dx)
    return dx


# -- dropout --------------------------------------------------------------------------------------

def dropout_apply(x, keep, scale):
    """``x * (scale if keep else 0)``: x (N, ...), ``keep`` bool of x's shape or
    (N, C, 1, ...) (a whole channel's fate), ``scale`` a float. Returns a new array of
    x's dtype (a dropped element is ``x * 0``: -0 for negative x, NaN for inf, as
    multiplying by a float mask gives)."""
    return np.multiply(x, np.multiply(keep, x.dtype.type(scale), dtype=x.dtype))
