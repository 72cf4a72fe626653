"""Trusted grading spec for ex07 (masks): probes compute an answer's outputs on fixed inputs.

Each probe mirrors the visible and hidden tests of the graded cell it is named after (right and left padding,
T != S, rows that are all padding, a batch of one, another pad id). The grader runs it on the student's
namespace inside the sandbox and on the solution's namespace outside, and compares the outputs.
"""
import torch

ANSWERS = ["padding_mask", "causal_mask", "seq2seq_masks", "masked_softmax"]
FORBIDDEN = ["course_lib", "generate_square_subsequent_mask", "scaled_dot_product_attention", "MultiheadAttention",
             "multi_head_attention_forward"]
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}

PAD = 0
_RIGHT = ([[5, 6, 7, PAD], [8, PAD, PAD, PAD]], PAD)
_LEFT = ([[PAD, PAD, 5, 6], [PAD, 7, 8, 9], [1, 2, 3, 4]], PAD)
_EMPTY_ROW = ([[PAD, PAD, PAD], [4, PAD, PAD]], PAD)
_BATCH_OF_ONE = ([[3, 4, PAD, PAD, PAD]], PAD)
_OTHER_PAD = ([[7, 7, 1, 2], [1, 7, 7, 7]], 7)

# (src, tgt, pad_id) cases of the seq2seq cells
_S2S = {
    "visible_right": ([[4, 5, 6, 7, 8], [4, 5, PAD, PAD, PAD]], [[1, 9, 9], [1, 9, PAD]], PAD),
    "left_t_ne_s": ([[PAD, PAD, 4, 5, 6, 7], [4, 5, 6, 7, 8, 9], [PAD, PAD, PAD, PAD, PAD, 4]],
                    [[PAD, PAD, 1, 9], [1, 9, 9, 9], [PAD, PAD, PAD, 1]], PAD),
    "fully_padded_rows": ([[PAD, PAD, PAD], [4, 5, PAD]], [[PAD] * 5, [1, 9, 9, PAD, PAD]], PAD),
    "batch_of_one_t_gt_s": ([[4, 5, PAD]], [[1, 9, 9, 9, 9, PAD, PAD]], PAD),
    "batch_of_one_s_gt_t": ([[3, 4, 5, 6, 7, 8]], [[1, 2]], PAD),
    "s_is_one": ([[3], [PAD]], [[1] * 7, [1] * 7], PAD),
    "pad_id_3": ([[4, 3, 3]], [[1, 9, 3, 3]], 3),
}


def _ids(rows):
    return torch.tensor(rows, dtype=torch.long)


def probe_test_padding_mask(ns):
    f = ns["padding_mask"]
    cases = {"right": _RIGHT, "left": _LEFT, "empty_row": _EMPTY_ROW, "batch_of_one": _BATCH_OF_ONE,
             "pad_id_7": _OTHER_PAD}
    return {name: f(_ids(rows), pad) for name, (rows, pad) in cases.items()}


def probe_test_causal_mask(ns):
    f = ns["causal_mask"]
    return {"4": f(4), "1": f(1), "7": f(7), "2_5": f(2, 5), "1_6": f(1, 6), "3_3": f(3, 3)}


def probe_test_seq2seq_shapes(ns):
    f = ns["seq2seq_masks"]
    out = {}
    for name, (src, tgt, pad) in _S2S.items():
        masks = f(_ids(src), _ids(tgt), pad)
        out[name] = {"n": len(masks), "shapes": [list(m.shape) for m in masks], "dtypes": [str(m.dtype) for m in masks]}
    return out


def probe_test_seq2seq_values(ns):
    f = ns["seq2seq_masks"]
    out = {}
    for name, (src, tgt, pad) in _S2S.items():
        src_mask, tgt_mask, cross_mask = f(_ids(src), _ids(tgt), pad)
        out[name] = {"src_mask": src_mask, "tgt_mask": tgt_mask, "cross_mask": cross_mask}
    return out


def probe_test_masked_softmax(ns):
    f, g = ns["masked_softmax"], torch.Generator().manual_seed(70)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    pad = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)[:, None, None, :]
    empty_rows = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    out = {
        "causal": f(torch.randn(4, 4, generator=g), causal),
        "padding_broadcast": f(torch.randn(2, 3, 4, 5, generator=g), pad),
        "large_float64": f(torch.randn(3, 6, generator=g, dtype=torch.float64) * 100,
                           torch.ones(3, 6, dtype=torch.bool).tril(diagonal=3)),
    }
    with torch.enable_grad():
        scores = torch.randn(4, 4, generator=g, requires_grad=True)
        w = f(scores, empty_rows)
        (w * torch.arange(4.0)).sum().backward()
    out["fully_masked_rows"] = w.detach()
    out["fully_masked_rows_grad"] = scores.grad
    return out


PROBES = {
    "test_padding_mask": probe_test_padding_mask,
    "test_causal_mask": probe_test_causal_mask,
    "test_seq2seq_shapes": probe_test_seq2seq_shapes,
    "test_seq2seq_values": probe_test_seq2seq_values,
    "test_masked_softmax": probe_test_masked_softmax,
}
