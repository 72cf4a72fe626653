"""Trusted grading spec for ex03 (multi-head attention): probes compute an answer's outputs on fixed inputs.

Each probe mirrors the visible and hidden tests of the graded cell it is named after: the same shapes, head counts,
masks (course convention, True = may attend) and self- or cross-attention. The grader runs it on the student's
namespace inside the sandbox and on the solution's namespace outside, and compares the outputs. Layers get their
weights from fixed generators here, so the result does not depend on the order in which an answer creates them.
"""
import torch

ANSWERS = ["split_heads", "merge_heads", "MultiHeadAttention", "load_torch_weights"]
# The answers call the notebook's own scaled_dot_product_attention (the name of PyTorch's function and course_lib's):
# the grader counts a bare name the notebook defines itself (def/class) as its own, so only PyTorch's (reached as an
# attribute or imported) is forbidden; torch._C and torch.ops (the kernels underneath) are forbidden too.
FORBIDDEN = ["scaled_dot_product_attention", "_C", "ops", "MultiheadAttention", "multi_head_attention_forward",
             "course_lib"]
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}


def _randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def probe_test_split_heads(ns):
    split, g = ns["split_heads"], torch.Generator().manual_seed(20)
    x = _randn(g, 3, 7, 8)
    return {
        "basic": split(_randn(g, 2, 5, 12), 3),
        "two_heads": split(x, 2),
        "one_head": split(x, 1),
        "dh_1": split(x, 8),
        "one_position": split(_randn(g, 2, 1, 6), 3),
    }


def probe_test_merge_heads(ns):
    merge, g = ns["merge_heads"], torch.Generator().manual_seed(21)
    return {
        "basic": merge(_randn(g, 2, 3, 5, 4)),
        "b3_h2": merge(_randn(g, 3, 2, 7, 4)),
        "non_contiguous": merge(_randn(g, 2, 6, 4, 3).transpose(1, 2)),
        "one_head": merge(_randn(g, 2, 1, 5, 6)),
        "one_position": merge(_randn(g, 1, 4, 1, 2)),
    }


def _layer(ns, d_model, n_heads, seed, bias=True):
    """The answer's layer in float64 with weights (and biases) drawn from a fixed generator."""
    layer = ns["MultiHeadAttention"](d_model, n_heads, bias=bias).double()
    g = torch.Generator().manual_seed(seed)
    for lin in (layer.q_proj, layer.k_proj, layer.v_proj, layer.out_proj):
        lin.weight.copy_(_randn(g, d_model, d_model) / d_model**0.5)
        if bias:
            lin.bias.copy_(_randn(g, d_model) * 0.1)
    return layer


def probe_test_mha_self(ns):
    g = torch.Generator().manual_seed(22)
    out = {}
    for D, H in ((8, 2), (12, 3), (8, 4), (6, 1)):
        out[f"D{D}_H{H}"] = _layer(ns, D, H, seed=D + H)(_randn(g, 3, 6, D))
    no_bias = _layer(ns, 8, 2, seed=5, bias=False)
    out["no_bias_batch_of_one"] = no_bias(_randn(g, 1, 4, 8))
    out["one_position"] = no_bias(_randn(g, 2, 1, 8))
    return out


def probe_test_mha_cross(ns):
    g = torch.Generator().manual_seed(23)
    small = _layer(ns, 8, 2, seed=2)
    layer = _layer(ns, 12, 3, seed=12)
    q, k, v = _randn(g, 2, 4, 12), _randn(g, 2, 7, 12), _randn(g, 2, 7, 12)
    return {
        "t3_s5": small(_randn(g, 2, 3, 8), *([_randn(g, 2, 5, 8)] * 2)),
        "key_ne_value": layer(q, k, v),
        "value_defaults_to_key": layer(q, k),
        "one_query": layer(_randn(g, 2, 1, 12), k, v),
    }


def probe_test_mha_masks(ns):
    g = torch.Generator().manual_seed(24)
    layer = _layer(ns, 8, 2, seed=13)
    x = _randn(g, 3, 5, 8)
    pad = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)  # (B, S)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    per_head = torch.rand(3, 2, 5, 5, generator=torch.Generator().manual_seed(0)) > 0.4
    per_head[..., 0] = True
    return {
        "causal": layer(x, mask=causal),
        "padding_and_causal": layer(x, mask=pad[:, None, None, :] & causal),
        "cross_padding": layer(_randn(g, 3, 2, 8), x, x, mask=pad[:, None, None, :]),
        "per_head": layer(x, mask=per_head),
    }


def _torch_mha(D, H, bias, seed):
    """A torch.nn.MultiheadAttention with weights and biases from a fixed generator."""
    mha = torch.nn.MultiheadAttention(D, H, bias=bias, batch_first=True, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    mha.in_proj_weight.copy_(_randn(g, 3 * D, D))
    mha.out_proj.weight.copy_(_randn(g, D, D))
    if bias:
        mha.in_proj_bias.copy_(_randn(g, 3 * D))
        mha.out_proj.bias.copy_(_randn(g, D))
    return mha


def _loaded(ns, D, H, bias, seed):
    layer = ns["MultiHeadAttention"](D, H, bias=bias).double()
    ns["load_torch_weights"](layer, _torch_mha(D, H, bias, seed))
    lins = (layer.q_proj, layer.k_proj, layer.v_proj, layer.out_proj)
    out = {"weights": [lin.weight.detach().clone() for lin in lins]}
    if bias:
        out["biases"] = [lin.bias.detach().clone() for lin in lins]
    return out


def probe_test_load_weights(ns):
    return {
        "d8_h2": _loaded(ns, 8, 2, True, seed=30),
        "d12_h3": _loaded(ns, 12, 3, True, seed=31),
        "no_bias_one_head": _loaded(ns, 8, 1, False, seed=32),
    }


PROBES = {
    "test_split_heads": probe_test_split_heads,
    "test_merge_heads": probe_test_merge_heads,
    "test_mha_self": probe_test_mha_self,
    "test_mha_cross": probe_test_mha_cross,
    "test_mha_masks": probe_test_mha_masks,
    "test_load_weights": probe_test_load_weights,
}
