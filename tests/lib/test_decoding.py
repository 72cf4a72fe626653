"""course_lib.decoding against references: exhaustive search, greedy, the uncached pass, each source alone,
hand-computed nuclei and empirical frequencies."""
import itertools
import math

import pytest
import torch
from torch import nn

from course_lib.decoding import (
    CopyMemory, PointerGenerator, beam_search, copy_batch, decode_extended, filter_logits, generate_text,
    gnmt_length_penalty, greedy_decode, record_decoder, sample, sequence_log_probs,
)
from course_lib.masks import causal_mask, padding_mask
from course_lib.tokenization import BOS_ID, EOS_ID, PAD_ID, UNK_ID, CharTokenizer, pad_batch
from course_lib.transformer import Transformer, TransformerConfig

V, L_MAX = 5, 4  # tokens 0 PAD, 1 BOS, 2 EOS, 3 UNK, 4: every output of up to 4 tokens can be enumerated


def _model(seed=1, scale=2.5, V=V, layers=(1, 2), max_len=32) -> Transformer:
    """A random float64 model whose next-token distributions are neither flat nor peaked."""
    torch.manual_seed(seed)
    cfg = TransformerConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, d_model=16, n_heads=2, d_ff=32,
                                 n_encoder_layers=layers[0], n_decoder_layers=layers[1], max_len=max_len)
    model = Transformer(cfg).double().eval()
    with torch.no_grad():
        model.out_proj.weight.mul_(scale)
    return model


# three sources of different lengths: 4, 2 and 3 real tokens
SOURCES = [[3, 4, 4, 3], [4, 3], [4, 4, 3]]


def _padded(side):
    return pad_batch(SOURCES, PAD_ID, side=side)  # (3, 4)


def _all_outputs(V=V, L=L_MAX):
    """Every possible output: up to L tokens ending at the first EOS, or L tokens without EOS (PAD is never
    generated)."""
    others = [v for v in range(V) if v not in (EOS_ID, PAD_ID)]
    outs = [list(p) + [EOS_ID] for n in range(L) for p in itertools.product(others, repeat=n)]
    return outs + [list(p) for p in itertools.product(others, repeat=L)]


def _reference_log_probs(model, src_row, seqs):
    """log p(seq | src) of each seq, from plain teacher-forced forward passes (no cache, no decoding code)."""
    out = []
    for n in sorted({len(s) for s in seqs}):  # one pass per length, all sequences of that length at once
        group = [s for s in seqs if len(s) == n]
        src = torch.tensor([src_row] * len(group))
        tgt_in = torch.tensor([[BOS_ID] + s[:-1] for s in group])  # (N, n)
        m = padding_mask(src, PAD_ID)
        with torch.no_grad():
            logp = torch.log_softmax(model(src, tgt_in, m, causal_mask(n), m), -1)  # (N, n, V)
        lp = logp.gather(-1, torch.tensor(group)[..., None])[..., 0].sum(-1)  # (N,)
        out += list(zip(map(tuple, group), lp.tolist()))
    table = dict(out)
    return [table[tuple(s)] for s in seqs]


def _reference_log_prob(model, src_row, seq):
    return _reference_log_probs(model, src_row, [seq])[0]


def _strip(row):
    """A decoder output row as a list, trailing PAD removed."""
    row = list(row)
    while row and row[-1] == PAD_ID:
        row.pop()
    return row


# --------------------------------------------------------------------------------------------------
# Beam search against exhaustive search
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 0.6, -0.5])
def test_beam_as_wide_as_all_outputs_is_exhaustive_search(alpha):
    """With K = the number of possible outputs nothing is pruned: the K hypotheses are all outputs, in the
    order of their recomputed scores log p / ((5 + len) / 6) ** alpha, and the scores equal them."""
    model = _model()
    outs = _all_outputs()
    K = len(outs)  # 341
    res = beam_search(model, _padded("right"), K, L_MAX, BOS_ID, EOS_ID, length_penalty=alpha)
    assert res.sequences.shape == (3, K, L_MAX) and res.scores.shape == (3, K)
    for b, src_row in enumerate(SOURCES):
        lps = _reference_log_probs(model, src_row, outs)
        ref = sorted(((lp / ((5 + len(o)) / 6) ** alpha, lp, o) for lp, o in zip(lps, outs)), key=lambda x: -x[0])
        got = [row.tolist()[:int(n)] for row, n in zip(res.sequences[b], res.lengths[b])]
        assert got == [o for _, _, o in ref]
        assert torch.allclose(res.scores[b], torch.tensor([s for s, _, _ in ref], dtype=torch.float64), atol=1e-10)
        assert torch.allclose(res.log_probs[b], torch.tensor([lp for _, lp, _ in ref], dtype=torch.float64),
                              atol=1e-10)
        # after each hypothesis' last token only PAD
        for row, n in zip(res.sequences[b], res.lengths[b]):
            assert (row[int(n):] == PAD_ID).all()


def test_exhaustive_case_is_not_trivial_and_the_penalty_matters():
    """For the model above greedy decoding misses the most probable output, and a length penalty of 1 changes
    the winner (long outputs stop losing to short ones): the exhaustive test is not a trivial one."""
    model = _model()
    K = len(_all_outputs())
    greedy = greedy_decode(model, _padded("right"), L_MAX, BOS_ID, EOS_ID)
    best = beam_search(model, _padded("right"), K, L_MAX, BOS_ID, EOS_ID)
    misses = [_strip(g) != _strip(s) for g, s in zip(greedy.tolist(), best.sequences[:, 0].tolist())]
    assert any(misses)
    for b in range(3):
        assert best.scores[b, 0] > _reference_log_prob(model, SOURCES[b], _strip(greedy[b].tolist())) - 1e-12
    long = beam_search(model, _padded("right"), K, L_MAX, BOS_ID, EOS_ID, length_penalty=1.0)
    assert (long.lengths[:, 0] >= best.lengths[:, 0]).all() and (long.lengths[:, 0] > best.lengths[:, 0]).any()


def test_narrow_beam_scores_are_the_log_probabilities_of_its_sequences():
    model = _model()
    for alpha in (0.0, 1.0):
        res = beam_search(model, _padded("right"), 3, 6, BOS_ID, EOS_ID, length_penalty=alpha)
        for b, src_row in enumerate(SOURCES):
            assert (res.scores[b, :-1] >= res.scores[b, 1:]).all()  # best first
            for k in range(3):
                seq = res.sequences[b, k].tolist()[:int(res.lengths[b, k])]
                lp = _reference_log_prob(model, src_row, seq)
                assert res.log_probs[b, k].item() == pytest.approx(lp, abs=1e-10)
                assert res.scores[b, k].item() == pytest.approx(lp / gnmt_length_penalty(len(seq), alpha), abs=1e-10)


def test_gnmt_length_penalty_formula():
    assert gnmt_length_penalty(1, 0.6) == 1.0
    assert gnmt_length_penalty(10, 1.0) == pytest.approx(15 / 6)
    assert gnmt_length_penalty(7, 0.5) == pytest.approx(math.sqrt(2))
    assert gnmt_length_penalty(30, 0.0) == 1.0


# --------------------------------------------------------------------------------------------------
# Greedy == beam 1, cached == uncached, batched == alone
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["right", "left"])
def test_greedy_equals_beam_size_one(side):
    model = _model(seed=3, scale=1.0, V=9)
    src = pad_batch([[4, 5, 6, 7, 8], [8, 4], [5, 5, 6]], side=side)
    greedy = greedy_decode(model, src, 10, BOS_ID, EOS_ID)
    beam = beam_search(model, src, 1, 10, BOS_ID, EOS_ID)
    assert torch.equal(beam.sequences[:, 0], greedy)
    lp = sequence_log_probs(model, src, greedy, BOS_ID, EOS_ID).detach()
    assert torch.allclose(beam.scores[:, 0], lp, atol=1e-10)


def test_cached_equals_uncached():
    model = _model(seed=3, scale=1.0, V=9)
    src = pad_batch([[4, 5, 6, 7, 8], [8, 4], [5, 5, 6]], side="left")
    assert torch.equal(greedy_decode(model, src, 9, use_cache=True), greedy_decode(model, src, 9, use_cache=False))
    a = beam_search(model, src, 3, 9, length_penalty=0.6, use_cache=True)
    b = beam_search(model, src, 3, 9, length_penalty=0.6, use_cache=False)
    assert torch.equal(a.sequences, b.sequences) and torch.allclose(a.scores, b.scores, atol=1e-12)
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    assert torch.equal(sample(model, src, 9, generator=gen(), top_p=0.9, use_cache=True),
                       sample(model, src, 9, generator=gen(), top_p=0.9, use_cache=False))


@pytest.mark.parametrize("side", ["right", "left"])
def test_every_decoder_in_a_batch_gives_what_it_gives_alone(side):
    """Sources of 5, 2 and 3 tokens padded into one batch: each row equals the source decoded alone."""
    model = _model(seed=3, scale=1.0, V=9)
    rows = [[4, 5, 6, 7, 8], [8, 4], [5, 5, 6]]
    src = pad_batch(rows, side=side)
    greedy = greedy_decode(model, src, 8)
    beam = beam_search(model, src, 3, 8, length_penalty=0.6)
    gens = [torch.Generator().manual_seed(10 + b) for b in range(3)]
    sampled = sample(model, src, 8, temperature=1.3, top_k=6, generator=gens)
    for b, row in enumerate(rows):
        one = torch.tensor([row])
        assert _strip(greedy[b].tolist()) == _strip(greedy_decode(model, one, 8)[0].tolist())
        alone = beam_search(model, one, 3, 8, length_penalty=0.6)
        assert [_strip(s) for s in beam.sequences[b].tolist()] == [_strip(s) for s in alone.sequences[0].tolist()]
        assert torch.allclose(beam.scores[b], alone.scores[0], atol=1e-10)
        g = [torch.Generator().manual_seed(10 + b)]
        assert _strip(sampled[b].tolist()) == _strip(sample(model, one, 8, temperature=1.3, top_k=6,
                                                            generator=g)[0].tolist())


def test_output_conventions():
    model = _model(seed=3, scale=1.0, V=9)
    src = _padded("right").clamp_max(8)
    out = greedy_decode(model, src, 7)
    assert out.dtype == torch.long and out.shape[0] == 3 and out.shape[1] <= 7
    for row in out.tolist():  # no BOS at the start; only PAD after the first EOS
        if EOS_ID in row:
            assert all(t == PAD_ID for t in row[row.index(EOS_ID) + 1:])
    # a row that never ends has max_len tokens; BOS is never the first output unless predicted
    long = greedy_decode(model, src, 2)
    assert long.shape == (3, 2)


def test_errors_name_what_was_expected():
    model = _model()
    src = _padded("right")
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        greedy_decode(model, src[0], 3)
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(model, src, 0)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, src, 0, 3)
    with pytest.raises(ValueError, match="src_mask"):
        greedy_decode(model, src, 3, src_mask=torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="temperature"):
        sample(model, src, 3, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        sample(model, src, 3, top_p=0.0)
    with pytest.raises(ValueError, match="one generator per source"):
        sample(model, src, 3, generator=[torch.Generator()])
    with pytest.raises(ValueError, match="max_len"):  # positions past the model's table
        greedy_decode(_model(max_len=4), src, 10)


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------
def test_sampling_with_top_k_1_is_greedy_and_seeds_reproduce():
    model = _model(seed=3, scale=1.0, V=9)
    src = pad_batch([[4, 5, 6, 7, 8], [8, 4], [5, 5, 6]], side="right")
    assert torch.equal(sample(model, src, 8, top_k=1, generator=torch.Generator().manual_seed(0)),
                       greedy_decode(model, src, 8))
    a = sample(model, src.repeat(4, 1), 8, generator=torch.Generator().manual_seed(1))
    b = sample(model, src.repeat(4, 1), 8, generator=torch.Generator().manual_seed(1))
    c = sample(model, src.repeat(4, 1), 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_filter_logits_against_hand_computed_top_k_and_nucleus():
    probs = torch.tensor([0.10, 0.50, 0.05, 0.20, 0.15], dtype=torch.float64)
    logits = probs.log()
    # nucleus p = 0.75: 0.50 (mass before 0), 0.20 (0.50), 0.15 (0.70) are kept; 0.10 (0.85) and 0.05 are not
    kept = torch.isfinite(filter_logits(logits, top_p=0.75))
    assert kept.tolist() == [False, True, False, True, True]
    assert torch.isfinite(filter_logits(logits, top_p=0.45)).tolist() == [False, True, False, False, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.55)).tolist() == [False, True, False, True, False]
    assert torch.isfinite(filter_logits(logits, top_p=1.0)).all()
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [False, True, False, True, False]
    # temperature divides the logits
    assert torch.allclose(filter_logits(logits, temperature=2.0), logits / 2)
    # top-k first, then top-p of the renormalised k tokens: {0.5, 0.2}/0.7 -> 0.714 covers 0.6 alone
    assert torch.isfinite(filter_logits(logits, top_k=2, top_p=0.6)).tolist() == [False, True, False, False, False]


class _FixedLogits(nn.Module):
    """A 'model' whose next-token logits are always the same: isolates the sampler."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.cfg = TransformerConfig.tiny(max_len=8)

    def encode(self, src_ids, src_mask=None):
        return torch.zeros(src_ids.shape[0], src_ids.shape[1], 1, dtype=self.logits.dtype)

    def decode(self, tgt_ids, memory, self_mask=None, cross_mask=None, cache=None, positions=None):
        return self.logits.expand(tgt_ids.shape[0], tgt_ids.shape[1], -1)


def test_sample_frequencies_follow_the_filtered_distribution():
    probs = torch.tensor([0.0, 0.10, 0.50, 0.05, 0.20, 0.15], dtype=torch.float64)  # token 0 is PAD
    model = _FixedLogits(probs.log())
    n = 20000
    src = torch.full((n, 1), 4)
    for kwargs, expected in [
        (dict(top_p=0.75), torch.tensor([0, 0, 0.50, 0, 0.20, 0.15]) / 0.85),
        (dict(top_k=2), torch.tensor([0, 0, 0.50, 0, 0.20, 0]) / 0.70),
        (dict(temperature=0.5), probs ** 2 / (probs ** 2).sum()),
    ]:
        first = sample(model, src, 1, eos_id=99, generator=torch.Generator().manual_seed(0), **kwargs)[:, 0]
        freq = torch.bincount(first, minlength=6).double() / n
        assert torch.allclose(freq, expected.double(), atol=0.012), (kwargs, freq, expected)
        assert (freq[expected == 0] == 0).all()


# --------------------------------------------------------------------------------------------------
# Log-probabilities, text, the decoder record
# --------------------------------------------------------------------------------------------------
def test_sequence_log_probs_counts_up_to_the_first_eos():
    model = _model()
    src = torch.tensor([SOURCES[0]])
    seq = [4, 0, EOS_ID]
    ref = _reference_log_prob(model, SOURCES[0], seq)
    got = sequence_log_probs(model, src, torch.tensor([seq + [4, 4]]), BOS_ID, EOS_ID)
    assert got.item() == pytest.approx(ref, abs=1e-12)
    assert got.requires_grad  # REINFORCE differentiates it


def test_generate_text_round_trip():
    tok = CharTokenizer.from_texts(["abc"])
    model = _model(V=len(tok), seed=0)
    out = generate_text(model, tok, ["ab", "c"], max_len=5)
    ids = greedy_decode(model, pad_batch([tok.encode("ab"), tok.encode("c")]), 5)
    assert out == [tok.decode(r.tolist(), stop_at_eos=True) for r in ids]
    assert generate_text(model, tok, ["ab", "c"], max_len=5, method="beam", beam_size=1) == out
    with pytest.raises(ValueError, match="method"):
        generate_text(model, tok, ["ab"], max_len=3, method="viterbi")


def test_record_decoder_gives_the_weights_of_each_step():
    model = _model(seed=3, scale=1.0, V=9)
    src = pad_batch([[4, 5, 6, 7, 8], [8, 4]], side="right")
    mask = padding_mask(src, PAD_ID)
    with record_decoder(model) as rec:
        out = greedy_decode(model, src, 6)
    steps = rec.cross_weights[1]
    assert len(rec.cross_weights) == 2 and len(steps) == out.shape[1] and len(rec.states) == out.shape[1]
    assert steps[0].shape == (2, 2, 1, 5) and rec.states[0].shape == (2, 1, 16)
    w = torch.cat(steps, dim=2)  # (B, H, L, S)
    assert torch.allclose(w.sum(-1), torch.ones(()).double()) and (w[1, :, :, 2:] == 0).all()  # pads get nothing
    # the same weights as one uncached teacher-forced pass over the greedy prefix
    tgt_in = torch.cat([torch.full((2, 1), BOS_ID), out[:, :-1]], dim=1)
    with record_decoder(model, layers=[-1]) as full:
        model(src, tgt_in, mask, causal_mask(tgt_in.shape[1]), mask)
    assert list(full.cross_weights) == [1]
    n = int((out[1] != PAD_ID).sum())  # row 1's real steps (later ones read PAD inputs)
    assert torch.allclose(full.cross_weights[1][0][:, :, :n], w[:, :, :n], atol=1e-12)
    # restored on leaving; records nest
    assert all("attend" not in blk.cross_attn.__dict__ for blk in model.decoder.layers)
    with record_decoder(model) as outer:
        with record_decoder(model, layers=[0]) as inner:
            model(src, tgt_in, mask, causal_mask(tgt_in.shape[1]), mask)
        model(src, tgt_in, mask, causal_mask(tgt_in.shape[1]), mask)
    assert len(inner.cross_weights[0]) == 1 and len(outer.cross_weights[0]) == 2
    assert all("attend" not in blk.cross_attn.__dict__ for blk in model.decoder.layers)
    with pytest.raises(ValueError, match="decoder layers"):
        with record_decoder(model, layers=[5]):
            pass


# --------------------------------------------------------------------------------------------------
# The pointer-generator copy head
# --------------------------------------------------------------------------------------------------
def _pointer(seed=0, n_oov=3):
    base = _model(seed=seed, scale=1.0, V=9)
    torch.manual_seed(seed)
    return PointerGenerator(base, n_oov=n_oov).double().eval()


def test_copy_batch_extended_ids_by_hand():
    tok = CharTokenizer.from_texts(["abc"])  # ids: a 4, b 5, c 6; V = 7
    batch = copy_batch([{"src": "axbyx", "tgt": "xaz"}, {"src": "ab", "tgt": "b"}], tok, n_oov=2)
    assert batch.src.tolist() == [[4, 7, 5, 8, 7], [4, 5, 0, 0, 0]]
    assert batch.oovs == (("x", "y"), ())
    assert batch.tgt_out.tolist() == [[7, 4, UNK_ID, EOS_ID], [5, EOS_ID, 0, 0]]  # z is in no source: UNK
    assert batch.tgt_in.tolist() == [[BOS_ID, 7, 4, UNK_ID], [BOS_ID, 5, 0, 0]]
    assert decode_extended(tok, [7, 4, 8, EOS_ID, 5], ("x", "y")) == "xay"
    one = copy_batch([{"src": "xyz", "tgt": "z"}], tok, n_oov=2)  # beyond n_oov: UNK
    assert one.src.tolist() == [[7, 8, UNK_ID]] and one.tgt_out.tolist() == [[UNK_ID, EOS_ID]]


def test_pointer_generator_mixes_the_vocabulary_and_the_attention():
    """P = p_gen * softmax(base logits) + (1 - p_gen) * attention summed per source id: checked at p_gen = 1
    (the base model), p_gen = 0 (the copy distribution from the recorded attention) and in between."""
    pg = _pointer()
    src = torch.tensor([[4, 9, 5, 10, 9], [6, 4, 0, 0, 0]])  # ids 9, 10 are out of vocabulary (V = 9)
    tgt_in = torch.tensor([[BOS_ID, 9, 4], [BOS_ID, 6, 4]])
    mask = padding_mask(src, PAD_ID)
    logp = pg(src, tgt_in, mask, causal_mask(3), mask)
    assert logp.shape == (2, 3, 9 + 3)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(()).double())
    in_vocab = src.masked_fill(src >= 9, UNK_ID)
    base_in = tgt_in.masked_fill(tgt_in >= 9, UNK_ID)
    with record_decoder(pg.base, layers=[-1]) as rec:
        base_logits = pg.base(in_vocab, base_in, mask, causal_mask(3), mask)
    attn = rec.cross_weights[1][0].mean(1)  # (B, T, S)
    copy = torch.zeros(2, 3, 12, dtype=torch.float64)
    for b in range(2):
        for i in range(5):
            copy[b, :, src[b, i]] += attn[b, :, i]
    vocab = torch.cat([base_logits.softmax(-1), torch.zeros(2, 3, 3, dtype=torch.float64)], -1)
    with torch.no_grad():
        pg.p_gen.weight.zero_()
        pg.p_gen.bias.fill_(50.0)  # p_gen = 1
        assert torch.allclose(pg(src, tgt_in, mask, causal_mask(3), mask).exp(), vocab, atol=1e-12)
        pg.p_gen.bias.fill_(-50.0)  # p_gen = 0: only copying
        assert torch.allclose(pg(src, tgt_in, mask, causal_mask(3), mask).exp(), copy, atol=1e-12)
        pg.p_gen.bias.fill_(0.0)  # p_gen = 1/2
        assert torch.allclose(pg(src, tgt_in, mask, causal_mask(3), mask).exp(), (vocab + copy) / 2, atol=1e-12)


def test_pointer_generator_with_every_decoder():
    pg = _pointer(seed=1)
    with torch.no_grad():
        pg.p_gen.bias.fill_(-1.0)  # lean towards copying
    rows = [[4, 9, 5, 10, 9], [6, 9]]
    src = pad_batch(rows, side="left")
    greedy = greedy_decode(pg, src, 6)
    assert torch.equal(greedy, greedy_decode(pg, src, 6, use_cache=False))
    assert (greedy >= 9).any()  # it does copy out-of-vocabulary ids
    assert torch.equal(beam_search(pg, src, 1, 6).sequences[:, 0], greedy)
    beam = beam_search(pg, src, 3, 6)
    for b, row in enumerate(rows):
        alone = beam_search(pg, torch.tensor([row]), 3, 6)
        assert [_strip(s) for s in beam.sequences[b].tolist()] == [_strip(s) for s in alone.sequences[0].tolist()]
        assert torch.allclose(beam.scores[b], alone.scores[0], atol=1e-10)
    lp = sequence_log_probs(pg, src, beam.sequences[:, 0])
    assert torch.allclose(lp.detach(), beam.log_probs[:, 0], atol=1e-10)
    assert isinstance(pg.encode(src, padding_mask(src, PAD_ID)), CopyMemory)
    with pytest.raises(ValueError, match="one vocabulary"):
        PointerGenerator(Transformer(TransformerConfig.tiny(src_vocab_size=7, tgt_vocab_size=9)))


def test_pointer_generator_learns_to_copy_characters_it_has_never_seen():
    """Trained 160 steps on copying strings over a-i with a vocabulary of a-f only (g, h, i are out of
    vocabulary, so only copying can produce them), it copies strings containing u-z, which it never saw
    (182 of the 200 test strings have one): every test string comes out right (1.0 when written; >= 0.95)."""
    from course_lib.tasks import copy_examples
    from course_lib.training import train

    tok = CharTokenizer.from_texts(["abcdef"])
    train_ex = copy_examples(1000, 2, 6, alphabet="abcdefghi", seed=0)
    test_ex = copy_examples(200, 2, 6, alphabet="abcdefuvwxyz", seed=1)
    torch.manual_seed(0)
    base = Transformer(TransformerConfig.tiny(src_vocab_size=len(tok), tgt_vocab_size=len(tok), d_model=32,
                                              n_heads=4, d_ff=64, n_encoder_layers=1, n_decoder_layers=1, max_len=16))
    model = PointerGenerator(base, n_oov=6)
    collate = lambda ex: copy_batch(ex, tok, n_oov=6)  # noqa: E731
    train(model, train_ex, steps=160, batch_size=32, lr=5e-3, warmup_steps=30, collate=collate, progress=False)
    batch = collate(test_ex)
    assert sum(any(c in "uvwxyz" for c in s) for s in batch.src_text) == 182
    out = greedy_decode(model, batch.src, 7)
    texts = [decode_extended(tok, row, oovs) for row, oovs in zip(out, batch.oovs)]
    assert sum(t == s for t, s in zip(texts, batch.tgt_text)) / len(texts) >= 0.95
