"""Trusted grading spec for ex08 (training with teacher forcing): probes compute an answer's outputs on fixed inputs.

Each probe mirrors the visible and hidden tests of the graded cell it is named after: right and left padding, a
target that is all padding, other PAD / BOS / EOS ids (PyTorch's -100 for the loss), a batch of one, label
smoothing, float64, gradients at the pads; for the training step also no clipping, dropout with a model handed over
in eval mode, an empty source, stale gradients and several steps. The models are course_lib Transformers built here
from fixed seeds (they are inputs, not answers); nothing here computes the expected answer.
"""
import torch

from course_lib.transformer import Transformer, TransformerConfig

ANSWERS = ["shift_targets", "sequence_loss", "train_step"]
# The answers are called like course_lib.training's; the notebook's own functions may be called by their bare names.
# The loss must be written out: PyTorch's cross-entropy, negative log-likelihood, KL divergence and log-softmax (as a
# function, a tensor method or a module) are refused. seq2seq_masks (imported by a read-only cell) is allowed.
FORBIDDEN = ["course_lib", "cross_entropy", "CrossEntropyLoss", "nll_loss", "NLLLoss", "log_softmax", "LogSoftmax",
             "kl_div", "KLDivLoss"]
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}

PAD, BOS, EOS = 0, 1, 2


def _ids(rows):
    return torch.tensor(rows, dtype=torch.long)


# --- Part 1: the shift -------------------------------------------------------------------------------------------
_SHIFT = {
    "right": ([[5, 6, 7, PAD], [8, 9, PAD, PAD], [4, PAD, PAD, PAD]], BOS, EOS, PAD),
    "left": ([[PAD, PAD, 5, 6], [PAD, 7, 8, 9], [4, 5, 6, 7]], BOS, EOS, PAD),
    "empty_row": ([[PAD, PAD, PAD], [4, PAD, PAD]], BOS, EOS, PAD),
    "batch_of_one_full": ([[3, 4, 5]], BOS, EOS, PAD),
    "batch_of_one_padded": ([[6, PAD, PAD, PAD, PAD]], BOS, EOS, PAD),
    "length_one": ([[7], [PAD]], BOS, EOS, PAD),
    "other_ids": ([[4, 0, 9, 9], [1, 2, 3, 9]], 10, 11, 9),
    "other_ids_left": ([[9, 9, 0, 4], [9, 9, 9, 9], [1, 2, 3, 5]], 10, 11, 9),
}


def probe_test_shift_targets(ns):
    f = ns["shift_targets"]
    out = {}
    for name, (rows, bos, eos, pad) in _SHIFT.items():
        tgt_in, tgt_out = f(_ids(rows), bos, eos, pad)
        out[name] = {"tgt_in": tgt_in, "tgt_out": tgt_out}
    return out


# --- Part 2: the loss --------------------------------------------------------------------------------------------
def _loss_cases(g):
    right = torch.tensor([[3, 4, 5, 2, PAD], [6, 2, PAD, PAD, PAD]])
    left = torch.tensor([[PAD, PAD, 3, 4, 2], [PAD, 5, 6, 1, 2], [3, 3, 3, 3, 2]])
    minus_100 = torch.tensor([[3, -100, -100, -100], [-100, 4, 5, 2]])
    pad_7 = torch.tensor([[7, 7, 1, 8, 2], [3, 4, 7, 7, 7]])  # 7 is a valid class here, and the padding
    all_pad_row = torch.tensor([[PAD, PAD, PAD, PAD], [4, 1, 2, PAD], [3, 2, PAD, PAD]])
    return {
        "right": (torch.randn(2, 5, 7, generator=g), right, PAD),
        "left": (torch.randn(3, 5, 7, generator=g), left, PAD),
        "pad_minus_100": (torch.randn(2, 4, 6, generator=g), minus_100, -100),
        "pad_7": (torch.randn(2, 5, 9, generator=g), pad_7, 7),
        "batch_of_one": (torch.randn(1, 4, 6, generator=g) * 3, torch.tensor([[5, 1, 4, 2]]), PAD),
        "all_pad_row": (torch.randn(3, 4, 5, generator=g), all_pad_row, PAD),
        "float64": (torch.randn(2, 5, 7, generator=g, dtype=torch.float64) * 10, right, PAD),
    }


def _loss_outputs(f, cases, eps, grad_case):
    out = {}
    for name, (logits, labels, pad) in cases.items():
        loss = f(logits, labels, pad, label_smoothing=eps) if eps else f(logits, labels, pad)
        out[name] = loss
    out["float64_dtype"] = str(out["float64"].dtype)
    logits, labels, pad = cases[grad_case]
    with torch.enable_grad():
        x = logits.clone().requires_grad_(True)
        loss = f(x, labels, pad, label_smoothing=eps) if eps else f(x, labels, pad)
        loss.backward()
    out["grad"] = x.grad
    return out


def probe_test_sequence_loss(ns):
    return _loss_outputs(ns["sequence_loss"], _loss_cases(torch.Generator().manual_seed(80)), 0.0, "right")


def probe_test_label_smoothing(ns):
    f = ns["sequence_loss"]
    cases = _loss_cases(torch.Generator().manual_seed(81))
    out = _loss_outputs(f, cases, 0.1, "right")
    logits, labels, pad = cases["pad_minus_100"]
    out["eps_0.3_minus_100"] = f(logits, labels, pad, label_smoothing=0.3)
    logits, labels, pad = cases["left"]
    out["eps_0.5_left"] = f(logits, labels, pad, label_smoothing=0.5)
    return out


# --- Part 3: one training step, and several ------------------------------------------------------------------------
def _model(V, seed, dtype=torch.float32, dropout=0.0):
    torch.manual_seed(seed)
    cfg = TransformerConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, d_model=16, n_heads=2, d_ff=32,
                                 n_encoder_layers=1, n_decoder_layers=1, dropout=dropout)
    return Transformer(cfg).to(dtype)


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


_RIGHT_SRC = [[3, 4, 5, 6, 7], [8, 9, 10, PAD, PAD], [11, PAD, PAD, PAD, PAD]]
_RIGHT_TGT = [[7, 6, 5, 4, 3], [10, 9, 8, PAD, PAD], [11, PAD, PAD, PAD, PAD]]
_LEFT_SRC = [[PAD, PAD, 3, 4, 5], [6, 7, 8, 9, 10], [PAD, PAD, PAD, PAD, 11]]
_LEFT_TGT = [[PAD, PAD, 5, 4, 3], [10, 9, 8, 7, 6], [PAD, PAD, PAD, PAD, 11]]
_OTHER_SRC = [[6, 0, 8, 5], [9, 1, 5, 5]]  # pad 5, bos 3, eos 4; 0, 1, 2 are ordinary tokens here
_OTHER_TGT = [[8, 0, 6, 5], [1, 9, 5, 5]]

# name: (src, tgt, ids (bos, eos, pad), keyword arguments, model (seed, dtype, dropout))
_STEP = {
    "right": (_RIGHT_SRC, _RIGHT_TGT, (BOS, EOS, PAD), {}, (0, torch.float32, 0.0)),
    "left": (_LEFT_SRC, _LEFT_TGT, (BOS, EOS, PAD), {}, (1, torch.float32, 0.0)),
    "other_ids": (_OTHER_SRC, _OTHER_TGT, (3, 4, 5), {}, (2, torch.float32, 0.0)),
    "batch_of_one": ([[3, 4, 5]], [[5, 4, 3, 9]], (BOS, EOS, PAD), {}, (3, torch.float32, 0.0)),
    "empty_rows": ([[3, 4, 5], [PAD, PAD, PAD]], [[6, 7], [PAD, PAD]], (BOS, EOS, PAD), {}, (4, torch.float32, 0.0)),
    "label_smoothing": (_RIGHT_SRC, _RIGHT_TGT, (BOS, EOS, PAD), {"label_smoothing": 0.1}, (5, torch.float32, 0.0)),
    "no_clipping": (_RIGHT_SRC, _RIGHT_TGT, (BOS, EOS, PAD), {"max_grad_norm": None}, (6, torch.float32, 0.0)),
    "clip_0.25": (_LEFT_SRC, _LEFT_TGT, (BOS, EOS, PAD), {"max_grad_norm": 0.25}, (7, torch.float32, 0.0)),
    "float64": (_RIGHT_SRC, _RIGHT_TGT, (BOS, EOS, PAD), {}, (8, torch.float64, 0.0)),
    "dropout_from_eval_mode": (_RIGHT_SRC, _RIGHT_TGT, (BOS, EOS, PAD), {}, (9, torch.float32, 0.2)),
}
V_STEP = 12


def _steps(f, case, n_steps, lr=0.5, stale=False):
    src, tgt, (bos, eos, pad), kwargs, (seed, dtype, dropout) = case
    model = _model(V_STEP, seed, dtype, dropout)
    model.eval()  # the step itself must switch to training mode
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with torch.enable_grad():
        if stale:  # gradients left over from an earlier computation
            sum((p * p).sum() for p in model.parameters()).backward()
        losses = []
        for i in range(n_steps):
            torch.manual_seed(100 + i)  # dropout draws
            losses.append(float(f(model, _ids(src), _ids(tgt), opt, bos_id=bos, eos_id=eos, pad_id=pad, **kwargs)))
    return {"losses": losses, "params": _flat(model)}


def probe_test_train_step(ns):
    f = ns["train_step"]
    return {name: _steps(f, case, 1) for name, case in _STEP.items()}


def probe_test_training_loop(ns):
    f = ns["train_step"]
    out = {
        "sgd_5_steps": _steps(f, _STEP["right"], 5),
        "stale_gradients": _steps(f, _STEP["left"], 3, stale=True),
        "other_ids_smoothing": _steps(f, (_OTHER_SRC, _OTHER_TGT, (3, 4, 5), {"label_smoothing": 0.2},
                                          (10, torch.float32, 0.0)), 4),
    }
    # Adam, as training really runs (course_lib.training.make_optimizer's settings), in float64
    model = _model(V_STEP, 11, torch.float64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)
    with torch.enable_grad():
        losses = [float(f(model, _ids(_RIGHT_SRC), _ids(_RIGHT_TGT), opt, bos_id=BOS, eos_id=EOS, pad_id=PAD))
                  for _ in range(20)]
    out["adam_float64"] = {"losses": losses, "params": _flat(model), "decreased": losses[-1] < 0.5 * losses[0]}
    return out


PROBES = {
    "test_shift_targets": probe_test_shift_targets,
    "test_sequence_loss": probe_test_sequence_loss,
    "test_label_smoothing": probe_test_label_smoothing,
    "test_train_step": probe_test_train_step,
    "test_training_loop": probe_test_training_loop,
}
