"""course_lib.training against references: F.cross_entropy, the paper's learning-rate formula, transformers'
cosine schedule, the decay formulas of Bengio et al., hand-computed guided-attention penalties, and a short
deterministic training run."""
import math
import re

import pytest
import torch
import torch.nn.functional as F

from course_lib.decoding import PointerGenerator, copy_batch, greedy_decode
from course_lib.masks import seq2seq_masks
from course_lib.tasks import copy_examples, make_batch
from course_lib.tokenization import BOS_ID, EOS_ID, PAD_ID, CharTokenizer
from course_lib.training import (
    History, accuracy_by_position, evaluate, exact_match, grad_norms, guided_attention_loss,
    guided_attention_weights, lr_multiplier, make_optimizer, make_scheduler, paper_learning_rate,
    scheduled_sampling_inputs, sequence_loss, teacher_forcing_probability, token_accuracy, train, train_step,
)
from course_lib.transformer import Transformer, TransformerConfig
from _helpers import rand


def _tiny(V, seed=0, layers=1, d_model=32, max_len=16, dropout=0.0):
    torch.manual_seed(seed)
    return Transformer(TransformerConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, d_model=d_model, n_heads=4,
                                              d_ff=2 * d_model, n_encoder_layers=layers, n_decoder_layers=layers,
                                              max_len=max_len, dropout=dropout))


COPY = copy_examples(1200, min_len=2, max_len=6, alphabet="abcdef", seed=0)
COPY_TOK = CharTokenizer.from_examples(COPY)


# --------------------------------------------------------------------------------------------------
# Loss and accuracy
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35])
def test_sequence_loss_equals_torch_cross_entropy(eps):
    logits = rand(3, 5, 7, seed=1)
    labels = torch.randint(1, 7, (3, 5), generator=torch.Generator().manual_seed(2))
    labels[0, 3:] = PAD_ID
    labels[2, 1:] = PAD_ID
    ref = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), ignore_index=PAD_ID, label_smoothing=eps)
    assert sequence_loss(logits, labels, PAD_ID, eps).item() == pytest.approx(ref.item(), abs=1e-12)
    ref_sum = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), ignore_index=PAD_ID, label_smoothing=eps,
                              reduction="sum")
    assert sequence_loss(logits, labels, PAD_ID, eps, reduction="sum").item() == pytest.approx(ref_sum.item())
    per_token = sequence_loss(logits, labels, PAD_ID, eps, reduction="none")
    assert per_token.shape == (3, 5) and (per_token[labels == PAD_ID] == 0).all()
    # the pads matter: averaging over them too gives another number
    assert F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), label_smoothing=eps).item() != \
        pytest.approx(ref.item())


def test_sequence_loss_errors():
    logits = rand(2, 3, 4)
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        sequence_loss(logits, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="label_smoothing"):
        sequence_loss(logits, torch.ones(2, 3, dtype=torch.long), label_smoothing=1.0)
    with pytest.raises(ValueError, match="padding"):
        sequence_loss(logits, torch.zeros(2, 3, dtype=torch.long))


def test_accuracies_by_hand():
    labels = torch.tensor([[5, 6, EOS_ID, PAD_ID], [7, EOS_ID, PAD_ID, PAD_ID]])
    pred = torch.tensor([[5, 6, EOS_ID], [7, 5, EOS_ID]])
    assert exact_match(pred, labels).tolist() == [True, False]
    # tokens after EOS do not count, left-padded labels work too
    assert exact_match(torch.tensor([[7, EOS_ID, 4]]), torch.tensor([[PAD_ID, 7, EOS_ID]])).tolist() == [True]
    acc = accuracy_by_position(pred, labels)
    assert acc[:2].tolist() == [1.0, 0.5] and acc[2].item() == 1.0 and math.isnan(acc[3].item())
    logits = F.one_hot(torch.tensor([[5, 6, 3, 0], [7, 2, 0, 0]]), 8).double()
    assert token_accuracy(logits, labels) == pytest.approx(4 / 5)


# --------------------------------------------------------------------------------------------------
# Learning-rate schedules
# --------------------------------------------------------------------------------------------------
def test_paper_learning_rate_is_equation_3():
    """lrate = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5) (Vaswani et al. 2017, section 5.3)."""
    d, w = 512, 4000
    assert paper_learning_rate(1, d, w) == pytest.approx(512 ** -0.5 * 4000 ** -1.5)
    assert paper_learning_rate(2000, d, w) == pytest.approx(512 ** -0.5 * 2000 * 4000 ** -1.5)
    assert paper_learning_rate(4000, d, w) == pytest.approx(6.987712429686844e-4)  # the peak, (512 * 4000)^-0.5
    assert paper_learning_rate(16000, d, w) == pytest.approx(512 ** -0.5 / math.sqrt(16000))
    with pytest.raises(ValueError, match="step >= 1"):
        paper_learning_rate(0, d, w)


@pytest.mark.parametrize("d_model, warmup", [(512, 40), (32, 7)])
def test_inverse_sqrt_scheduler_reproduces_the_paper(d_model, warmup):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=(d_model * warmup) ** -0.5)  # the peak
    sched = make_scheduler(opt, "inverse_sqrt", warmup)
    for step in range(1, 6 * warmup):
        assert opt.param_groups[0]["lr"] == pytest.approx(paper_learning_rate(step, d_model, warmup), rel=1e-12)
        opt.step()
        sched.step()


def test_cosine_linear_constant_schedules():
    w, total = 10, 50
    for s in range(1, total + 5):
        p = min(max((s - w) / (total - w), 0.0), 1.0)
        expected_cos = s / w if s <= w else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))
        assert lr_multiplier(s, "cosine", w, total, min_ratio=0.1) == pytest.approx(expected_cos)
        assert lr_multiplier(s, "linear", w, total) == pytest.approx(s / w if s <= w else 1 - p)
        assert lr_multiplier(s, "constant", w) == pytest.approx(min(s / w, 1.0))
    # transformers' cosine schedule counts from 0: ours at step s is theirs at s (lambda index s - 1 + 1)
    transformers = pytest.importorskip("transformers")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    hf = transformers.get_cosine_schedule_with_warmup(opt, num_warmup_steps=w, num_training_steps=total)
    for s in range(1, total):
        assert hf.lr_lambdas[0](s) == pytest.approx(lr_multiplier(s, "cosine", w, total), abs=1e-12)
    with pytest.raises(ValueError, match="total_steps"):
        lr_multiplier(3, "cosine", 10)
    with pytest.raises(ValueError, match="schedule"):
        lr_multiplier(3, "noam", 10)


def test_teacher_forcing_decays_are_bengio_et_al():
    assert teacher_forcing_probability(0, "inverse_sigmoid", k=10) == pytest.approx(10 / 11)
    assert teacher_forcing_probability(50, "inverse_sigmoid", k=10) == pytest.approx(10 / (10 + math.exp(5)))
    assert teacher_forcing_probability(3, "exponential", k=0.9) == pytest.approx(0.729)
    assert teacher_forcing_probability(30, "linear", k=1.0, c=0.01) == pytest.approx(0.7)
    assert teacher_forcing_probability(300, "linear", k=1.0, c=0.01, minimum=0.25) == 0.25
    ps = [teacher_forcing_probability(i, "inverse_sigmoid", k=20) for i in range(0, 400, 10)]
    assert all(a >= b for a, b in zip(ps, ps[1:]))
    with pytest.raises(ValueError, match="schedule"):
        teacher_forcing_probability(1, "cosine")


# --------------------------------------------------------------------------------------------------
# Scheduled sampling and guided attention
# --------------------------------------------------------------------------------------------------
def test_scheduled_sampling_inputs_mix_gold_and_first_pass_predictions():
    model = _tiny(len(COPY_TOK)).eval()
    batch = make_batch(COPY[:64], COPY_TOK, tgt_side="left")
    src, tgt_in = batch.src, batch.tgt_in
    assert torch.equal(scheduled_sampling_inputs(model, src, tgt_in, 1.0), tgt_in)
    m = seq2seq_masks(src, tgt_in, PAD_ID)
    with torch.no_grad():
        pred = model(src, tgt_in, m.src, m.tgt, m.cross).argmax(-1)  # first pass
    mixed = scheduled_sampling_inputs(model, src, tgt_in, 0.0)
    real = tgt_in != PAD_ID
    first = tgt_in == BOS_ID
    assert torch.equal(mixed[~real], tgt_in[~real]) and (mixed[first] == BOS_ID).all()
    shifted = torch.cat([tgt_in[:, :1], pred[:, :-1]], dim=1)  # prediction made one position earlier
    assert torch.equal(mixed[real & ~first], shifted[real & ~first])
    half = scheduled_sampling_inputs(model, src, tgt_in, 0.5, generator=torch.Generator().manual_seed(0))
    from_model = (real & ~first & (half != tgt_in)).sum() / (real & ~first & (shifted != tgt_in)).sum()
    assert 0.35 < from_model.item() < 0.65


def test_guided_attention_weights_by_hand():
    W = guided_attention_weights(S=4, T=2, sigma=0.2)
    assert W.shape == (2, 4)
    for t in range(2):
        for n in range(4):
            assert W[t, n].item() == pytest.approx(1 - math.exp(-((n / 4 - t / 2) ** 2) / (2 * 0.04)), abs=1e-6)
    assert W[0, 0] == 0 and W[1, 2] == 0  # on the diagonal n/S = t/T


def _espnet_style_loss(weights, src_lens, tgt_lens, sigma):
    """Per example: W on its own (T_b, S_b) grid, averaged with the others over every real (t, n) and head."""
    total, count = 0.0, 0
    for b, (S, T) in enumerate(zip(src_lens, tgt_lens)):
        W = guided_attention_weights(S, T, sigma, dtype=weights.dtype)
        total += float((weights[b, :, :T, :S] * W).sum())
        count += T * S * weights.shape[1]
    return total / count


def test_guided_attention_loss_is_padding_invariant_and_prefers_the_diagonal():
    src_lens, tgt_lens, H = [5, 3], [4, 2], 2
    right = torch.zeros(2, H, 4, 5, dtype=torch.float64)
    for b in range(2):
        right[b, :, :tgt_lens[b], :src_lens[b]] = rand(H, tgt_lens[b], src_lens[b], seed=b).softmax(-1)
    src_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    tgt_mask = torch.tensor([[True] * 4, [True] * 2 + [False] * 2])
    loss = guided_attention_loss(right, src_mask, tgt_mask)
    assert loss.item() == pytest.approx(_espnet_style_loss(right, src_lens, tgt_lens, 0.2), abs=1e-12)
    # the same weights left-padded (both sides shifted to the end) give the same loss
    left = torch.zeros_like(right)
    left[0] = right[0]
    left[1, :, 2:, 2:] = right[1, :, :2, :3]
    assert guided_attention_loss(left, src_mask.flip(-1), tgt_mask.flip(-1)).item() == pytest.approx(loss.item())
    # attention on the diagonal costs less than attention on the anti-diagonal
    eye = torch.eye(4, dtype=torch.float64)[None, None]
    one = torch.ones(1, 4, dtype=torch.bool)
    assert guided_attention_loss(eye, one, one) < guided_attention_loss(eye.flip(-1), one, one)
    with pytest.raises(ValueError, match="src_mask"):
        guided_attention_loss(right, src_mask[:, :4], tgt_mask)


# --------------------------------------------------------------------------------------------------
# One step, the loop, evaluation
# --------------------------------------------------------------------------------------------------
def test_train_step_measures_the_gradient_norm_before_clipping():
    model = _tiny(len(COPY_TOK))
    batch = make_batch(COPY[:32], COPY_TOK)
    opt = make_optimizer(model, lr=1e-3)
    # the reference norm: one backward of the same loss, read before any step
    m = seq2seq_masks(batch.src, batch.tgt_in, PAD_ID)
    model.train()
    sequence_loss(model(batch.src, batch.tgt_in, m.src, m.tgt, m.cross), batch.tgt_out).backward()
    ref = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters() if p.grad is not None))
    stats = train_step(model, batch, opt, max_grad_norm=0.05)
    assert stats["grad_norm"] == pytest.approx(ref, rel=1e-5)
    clipped = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters() if p.grad is not None))
    assert clipped == pytest.approx(0.05, rel=1e-4) and ref > 0.05
    assert set(stats) == {"loss", "guided_loss", "lr", "grad_norm", "token_accuracy"}


def test_cutting_cross_attention_leaves_the_encoder_without_gradient():
    model = _tiny(len(COPY_TOK), layers=2)
    with torch.no_grad():
        for block in model.decoder.layers:
            block.cross_attn.out_proj.weight.zero_()  # the decoder no longer reads the memory
    batch = make_batch(COPY[:16], COPY_TOK)
    train_step(model, batch, torch.optim.SGD(model.parameters(), lr=0.0))
    norms = grad_norms(model)
    enc = {k: v for k, v in norms.items() if k.startswith(("encoder", "src_embed"))}
    assert enc and all(v == 0.0 for v in enc.values())
    assert norms["decoder.layers.0"] > 0 and norms["tgt_embed.weight"] > 0


def test_training_on_a_copy_task_is_deterministic_and_reaches_95_percent():
    """Tiny model (D=32, one encoder and one decoder layer), 250 steps of 32 examples: held-out exact match
    by greedy decoding >= 0.95 (0.965 when written), and the same numbers twice."""
    runs = []
    for _ in range(2):
        model = _tiny(len(COPY_TOK))
        runs.append(train(model, COPY[:1000], COPY_TOK, steps=250, batch_size=32, lr=5e-3, warmup_steps=30,
                          eval_data=COPY[1000:], eval_every=125, progress=False, seed=0))
    a, b = runs
    assert a.measured() == b.measured()
    assert a.step == list(range(1, 251)) and len(a.loss) == len(a.lr) == len(a.token_accuracy) == 250
    assert a.eval_step == [125, 250] and a.eval_exact_match[-1] >= 0.95
    assert a.loss[-1] < 0.2 * a.loss[0]
    assert a.lr[29] == pytest.approx(5e-3) and a.lr[0] == pytest.approx(5e-3 / 30)  # warm-up, then decay
    assert a.lr[-1] == pytest.approx(5e-3 * math.sqrt(30 / 250))
    # evaluate() gives the history's last numbers
    r = evaluate(model, COPY[1000:], COPY_TOK)
    assert r["exact_match"] == pytest.approx(b.eval_exact_match[-1]) and r["n"] == 200
    assert r["loss"] == pytest.approx(b.eval_loss[-1])


def test_trainer_runs_on_the_device(device):
    """A few steps on --device with every option on: label smoothing, cosine, scheduled sampling, guided
    attention, dropout, a copy head."""
    base = _tiny(len(COPY_TOK), layers=2, dropout=0.1)
    model = PointerGenerator(base, n_oov=4)
    collate = lambda ex: copy_batch(ex, COPY_TOK, n_oov=4, tgt_side="left")  # noqa: E731
    hist = train(model, COPY[:200], steps=6, batch_size=16, lr=1e-3, warmup_steps=2, schedule="cosine",
                 label_smoothing=0.1, teacher_forcing=lambda i: teacher_forcing_probability(i, "exponential", k=0.8),
                 guided_attention=0.5, eval_data=COPY[200:240], collate=collate, device=device, progress=False)
    assert all(p.device.type == torch.device(device).type for p in model.parameters())
    assert len(hist.loss) == 6 and all(math.isfinite(x) for x in hist.loss + hist.guided_loss)
    assert hist.teacher_forcing[:2] == [1.0, 0.8] and all(g > 0 for g in hist.guided_loss)
    assert hist.eval_step == [6] and 0.0 <= hist.eval_exact_match[0] <= 1.0
    assert not model.training  # left in eval mode for inference
    out = greedy_decode(model, collate(COPY[200:204]).src.to(device), 7)
    assert out.device.type == torch.device(device).type


def test_guided_attention_pulls_cross_attention_towards_the_diagonal():
    model = _tiny(len(COPY_TOK))
    batch = make_batch(COPY[:64], COPY_TOK)
    opt = make_optimizer(model, lr=3e-3)
    first = train_step(model, batch, opt, guided_attention=10.0)["guided_loss"]
    for _ in range(15):
        last = train_step(model, batch, opt, guided_attention=10.0)["guided_loss"]
    assert last < 0.8 * first


def test_history_plot_and_dict():
    h = History(step=[1, 2, 3], loss=[3.0, 2.0, 1.0], lr=[1e-3] * 3, grad_norm=[1.0] * 3,
                token_accuracy=[0.1, 0.5, 0.9], teacher_forcing=[1.0] * 3, guided_loss=[0.0] * 3,
                eval_step=[3], eval_loss=[1.1], eval_token_accuracy=[0.8], eval_exact_match=[0.5])
    axes = h.plot(smooth=2)
    assert len(axes) == 2 and len(axes[0].lines) == 2
    assert h.measured()["loss"] == [3.0, 2.0, 1.0] and "train_seconds" in h.as_dict()
    import matplotlib.pyplot as plt

    plt.close("all")


def test_train_errors():
    model = _tiny(len(COPY_TOK))
    with pytest.raises(ValueError, match="steps"):
        train(model, COPY[:10], COPY_TOK, steps=0, progress=False)
    with pytest.raises(ValueError, match="tokenizer"):
        train(model, COPY[:10], steps=1, progress=False)
    with pytest.raises(ValueError, match="total_steps"):
        make_scheduler(make_optimizer(model), "linear", warmup_steps=5)


# --------------------------------------------------------------------------------------------------
