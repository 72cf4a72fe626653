"""course_lib.efficient: sliding-window and linear attention against dense references built by hand."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from course_lib.attention import scaled_dot_product_attention
from course_lib.efficient import (
    blocked_sliding_window_attention,
    elu_feature_map,
    linear_attention,
    linear_attention_weights,
    sliding_window_attention,
    sliding_window_mask,
)
from course_lib.masks import causal_mask
from _helpers import rand as _rand

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def _band_by_hand(T, S, window, causal):
    """The band mask written with two loops: query i sits at position S - T + i."""
    mask = torch.zeros(T, S, dtype=torch.bool)
    for i in range(T):
        p = S - T + i
        for j in range(S):
            mask[i, j] = (0 <= p - j <= window) if causal else (abs(p - j) <= window)
    return mask


def _dense_attention_by_hand(q, k, v, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


def _linear_by_hand(q, k, v, causal, eps=1e-6):
    """O(T * S) reference: out_i = sum_j sim(i, j) v_j / (sum_j sim(i, j) + eps), sim = phi(q_i) . phi(k_j)."""
    phi = lambda x: F.elu(x) + 1  # noqa: E731
    T, S = q.shape[-2], k.shape[-2]
    out = torch.zeros(*torch.broadcast_shapes(q.shape[:-2], v.shape[:-2]), T, v.shape[-1], dtype=q.dtype)
    for i in range(T):
        last = S - T + i if causal else S - 1
        sim = (phi(q[..., i:i + 1, :]) * phi(k[..., : last + 1, :])).sum(-1)  # (..., last + 1)
        num = (sim.unsqueeze(-1) * v[..., : last + 1, :]).sum(-2)  # (..., Dv)
        out[..., i, :] = num / (sim.sum(-1, keepdim=True) + eps)
    return out


# --- sliding-window mask -------------------------------------------------------------------------


@SETTINGS
@given(T=st.integers(0, 7), extra=st.integers(0, 4), window=st.integers(0, 9), causal=st.booleans())
def test_sliding_window_mask_matches_loops(T, extra, window, causal):
    S = T + extra
    mask = sliding_window_mask(T, window, causal=causal, S=S)
    assert mask.dtype == torch.bool and mask.shape == (T, S)
    assert torch.equal(mask, _band_by_hand(T, S, window, causal))


def test_sliding_window_mask_limits():
    T = 6
    assert torch.equal(sliding_window_mask(T, 0), torch.eye(T, dtype=torch.bool))
    assert torch.equal(sliding_window_mask(T, 0, causal=False), torch.eye(T, dtype=torch.bool))
    assert torch.equal(sliding_window_mask(T, T), causal_mask(T))
    assert torch.equal(sliding_window_mask(T, 100, causal=False), torch.ones(T, T, dtype=torch.bool))
    assert torch.equal(sliding_window_mask(2, 100, S=5), causal_mask(2, 5))  # lower-right, like causal_mask
    # each query of a causal window-w mask sees min(i, w) + 1 keys
    assert sliding_window_mask(T, 2).sum(-1).tolist() == [1, 2, 3, 3, 3, 3]
    assert sliding_window_mask(T, 2, causal=False).sum(-1).tolist() == [3, 4, 5, 5, 4, 3]


def test_sliding_window_mask_errors():
    with pytest.raises(ValueError, match="window"):
        sliding_window_mask(4, -1)
    with pytest.raises(ValueError, match="window"):
        sliding_window_mask(4, 1.5)
    with pytest.raises(ValueError, match="S >= T"):
        sliding_window_mask(4, 1, S=3)


# --- sliding-window attention ----------------------------------------------------------------------


@SETTINGS
@given(
    B=st.integers(1, 2), H=st.integers(1, 3), T=st.integers(1, 9), extra=st.integers(0, 3),
    window=st.integers(0, 10), causal=st.booleans(), seed=st.integers(0, 10_000),
)
def test_sliding_window_attention_equals_dense_with_band_mask(B, H, T, extra, window, causal, seed):
    S = T + extra
    q, k, v = _rand(B, H, T, 4, seed=seed), _rand(B, H, S, 4, seed=seed + 1), _rand(B, H, S, 3, seed=seed + 2)
    band = _band_by_hand(T, S, window, causal)
    ours, w = sliding_window_attention(q, k, v, window, causal=causal, return_weights=True)
    torch.testing.assert_close(ours, _dense_attention_by_hand(q, k, v, band))
    torch.testing.assert_close(ours, scaled_dot_product_attention(q, k, v, mask=band))
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=band))
    assert torch.all(w[..., ~band] == 0)


@SETTINGS
@given(
    batch=st.sampled_from([(), (2,), (2, 3)]), T=st.integers(1, 40), window=st.integers(0, 12),
    block=st.one_of(st.none(), st.integers(1, 9)), causal=st.booleans(), seed=st.integers(0, 10_000),
)
def test_blocked_equals_dense_masked(batch, T, window, block, causal, seed):
    q, k, v = _rand(*batch, T, 5, seed=seed), _rand(*batch, T, 5, seed=seed + 1), _rand(*batch, T, 2, seed=seed + 2)
    dense = sliding_window_attention(q, k, v, window, causal=causal)
    blocked = blocked_sliding_window_attention(q, k, v, window, causal=causal, block_size=block)
    assert blocked.shape == (*batch, T, 2)
    torch.testing.assert_close(blocked, dense)


def test_blocked_broadcasts_batch_dims_and_float32():
    q, k, v = _rand(2, 1, 11, 4).float(), _rand(1, 3, 11, 4, seed=1).float(), _rand(2, 3, 11, 6, seed=2).float()
    torch.testing.assert_close(
        blocked_sliding_window_attention(q, k, v, 3, block_size=4), sliding_window_attention(q, k, v, 3)
    )


@pytest.mark.parametrize("causal", [True, False])
def test_blocked_receptive_field_is_the_window(causal):
    """Gradients: output t depends on exactly the inputs the band lets it see, no more."""
    T, window = 20, 3
    x = _rand(1, T, 4).requires_grad_()
    out = blocked_sliding_window_attention(x, x, x, window, causal=causal, block_size=5)
    t = 12
    out[0, t].sum().backward()
    seen = (x.grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist()
    assert seen == (list(range(t - window, t + 1)) if causal else list(range(t - window, t + window + 1)))


def test_sliding_window_attention_errors():
    q = _rand(1, 5, 4)
    with pytest.raises(ValueError, match="Dh"):
        sliding_window_attention(q, _rand(1, 5, 3), _rand(1, 5, 3), 2)
    with pytest.raises(ValueError, match="S >= T"):
        sliding_window_attention(q, _rand(1, 3, 4), _rand(1, 3, 4), 2)
    with pytest.raises(ValueError, match="S == T"):
        blocked_sliding_window_attention(q, _rand(1, 7, 4), _rand(1, 7, 4), 2)
    with pytest.raises(ValueError, match="block_size"):
        blocked_sliding_window_attention(q, q, q, 2, block_size=0)
    with pytest.raises(ValueError, match="window"):
        blocked_sliding_window_attention(q, q, q, -1)
    with pytest.raises(ValueError, match="number of keys"):
        blocked_sliding_window_attention(q, q, _rand(1, 4, 4), 1)
    with pytest.raises(ValueError, match="at least 2 dims"):
        sliding_window_attention(_rand(4), q, q, 1)


# --- linear attention ------------------------------------------------------------------------------


@SETTINGS
@given(
    B=st.integers(1, 2), H=st.integers(1, 3), T=st.integers(1, 8), extra=st.integers(0, 4),
    Dh=st.integers(1, 6), Dv=st.integers(1, 4), causal=st.booleans(), chunk=st.integers(1, 9),
    seed=st.integers(0, 10_000),
)
def test_linear_attention_equals_dense_reference(B, H, T, extra, Dh, Dv, causal, chunk, seed):
    S = T + extra
    q, k, v = _rand(B, H, T, Dh, seed=seed), _rand(B, H, S, Dh, seed=seed + 1), _rand(B, H, S, Dv, seed=seed + 2)
    ours = linear_attention(q, k, v, causal=causal, chunk_size=chunk)
    assert ours.shape == (B, H, T, Dv)
    torch.testing.assert_close(ours, _linear_by_hand(q, k, v, causal))
    w = linear_attention_weights(q, k, causal=causal)
    torch.testing.assert_close(w @ v, ours)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, H, T, dtype=w.dtype), atol=1e-5, rtol=0)  # eps


def test_linear_attention_non_causal_any_lengths_and_broadcast():
    q, k, v = _rand(2, 1, 9, 4), _rand(1, 3, 5, 4, seed=1), _rand(2, 3, 5, 2, seed=2)  # T > S is fine
    torch.testing.assert_close(linear_attention(q, k, v), _linear_by_hand(q, k, v, causal=False))


def test_causal_linear_attention_is_an_rnn():
    """The causal form equals a loop that keeps a (Dh, Dv) state: s_t = s_{t-1} + phi(k_t) v_t^T."""
    T, Dh, Dv = 10, 4, 3
    q, k, v = _rand(T, Dh), _rand(T, Dh, seed=1), _rand(T, Dv, seed=2)
    s, z, outs = torch.zeros(Dh, Dv, dtype=q.dtype), torch.zeros(Dh, dtype=q.dtype), []
    for t in range(T):
        fk, fq = elu_feature_map(k[t]), elu_feature_map(q[t])
        s, z = s + torch.outer(fk, v[t]), z + fk
        outs.append(fq @ s / (fq @ z + 1e-6))
    torch.testing.assert_close(linear_attention(q, k, v, causal=True, chunk_size=3), torch.stack(outs))


def test_causal_linear_attention_ignores_the_future():
    q, k, v = _rand(2, 12, 4), _rand(2, 12, 4, seed=1), _rand(2, 12, 4, seed=2)
    k2, v2 = k.clone(), v.clone()
    k2[:, 7:] += 5.0
    v2[:, 7:] -= 3.0
    a, b = linear_attention(q, k, v, causal=True, chunk_size=4), linear_attention(q, k2, v2, causal=True, chunk_size=4)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])  # the test can fail: later outputs do change


def test_linear_attention_is_not_softmax_attention():
    q, k, v = _rand(1, 6, 4), _rand(1, 6, 4, seed=1), _rand(1, 6, 4, seed=2)
    assert not torch.allclose(linear_attention(q, k, v), scaled_dot_product_attention(q, k, v), atol=1e-3)


def test_linear_attention_errors():
    q = _rand(1, 5, 4)
    with pytest.raises(ValueError, match="Dh"):
        linear_attention(q, _rand(1, 5, 3), _rand(1, 5, 3))
    with pytest.raises(ValueError, match="S >= T"):
        linear_attention(q, _rand(1, 3, 4), _rand(1, 3, 4), causal=True)
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention(q, q, q, causal=True, chunk_size=0)
    with pytest.raises(ValueError, match="number of keys"):
        linear_attention(q, q, _rand(1, 4, 4))
