"""course_lib.kv_cache against transformers' DynamicCache, and cached decoding against the uncached pass."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from course_lib.kv_cache import KVCache
from course_lib.masks import causal_mask, combine_masks, padding_mask
from course_lib.transformer import Transformer, TransformerConfig
from _helpers import rand as _rand

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True)
PAD = 0


# --------------------------------------------------------------------------------------------------
# The cache itself
# --------------------------------------------------------------------------------------------------
@SETTINGS
@given(steps=st.lists(st.integers(1, 3), min_size=1, max_size=4), L=st.integers(1, 3), seed=st.integers(0, 999))
def test_update_length_and_reorder_match_transformers_dynamic_cache(steps, L, seed):
    from transformers import DynamicCache

    ours, theirs = KVCache(), DynamicCache()
    for i, n in enumerate(steps):
        for layer in range(L):
            k, v = _rand(3, 2, n, 4, seed=seed + 10 * i + layer), _rand(3, 2, n, 5, seed=seed + 100 + 10 * i + layer)
            a, b = ours.update(layer, k, v), theirs.update(k, v, layer)
            torch.testing.assert_close(a[0], b[0])
            torch.testing.assert_close(a[1], b[1])
    assert ours.length == theirs.get_seq_length() == sum(steps) and len(ours) == L
    beam_idx = torch.tensor([2, 0, 0])
    ours.reorder(beam_idx)
    theirs.reorder_cache(beam_idx)
    for layer in range(L):
        torch.testing.assert_close(ours[layer][0], theirs.layers[layer].keys)
        torch.testing.assert_close(ours[layer][1], theirs.layers[layer].values)


def test_past_key_values_format_of_gpt2():
    """A KVCache takes and gives GPT-2's past_key_values: one (k, v) pair (B, H, S, Dh) per layer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99, n_positions=64, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()
    out = model(torch.randint(0, 99, (2, 5)), use_cache=True)
    past = getattr(out, "cache", None) or out.past_key_values
    legacy = tuple((layer.keys, layer.values) for layer in past.layers)
    cache = KVCache.from_legacy(legacy)
    assert len(cache) == 2 and cache.length == past.get_seq_length() == 5
    for (k, v), (k_ref, v_ref) in zip(cache, legacy):
        assert k is k_ref and v is v_ref and k.shape == (2, 4, 5, 8)
    assert all(a is c and b is d for (a, b), (c, d) in zip(cache.to_legacy(), legacy))
    assert KVCache.from_legacy(None).length == 0


def test_cross_entries_are_stored_once_and_reordered():
    cache = KVCache()
    k, v = _rand(2, 2, 7, 4), _rand(2, 2, 7, 4, seed=1)
    assert cache.get_cross(0) is None
    cache.set_cross(1, k, v)
    assert cache.get_cross(0) is None and cache.get_cross(1)[0] is k and cache.length == 0 and len(cache) == 0
    cache.update(0, _rand(2, 2, 1, 4), _rand(2, 2, 1, 4))
    cache.reorder(torch.tensor([1, 1, 0]))  # beam search may also grow the batch
    assert torch.equal(cache.get_cross(1)[0], k[[1, 1, 0]]) and cache[0][0].shape[0] == 3


def test_cache_errors():
    cache = KVCache()
    with pytest.raises(ValueError, match=r"k \(B, H, S_new, Dh\).*received k \(2, 3, 4\)"):
        cache.update(0, torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
    cache.update(0, torch.zeros(2, 2, 3, 4), torch.zeros(2, 2, 3, 4))
    with pytest.raises(ValueError, match=r"layer 0 holds keys \(2, 2, 3, 4\)"):
        cache.update(0, torch.zeros(2, 4, 1, 4), torch.zeros(2, 4, 1, 4))
    with pytest.raises(ValueError, match="1-D tensor"):
        cache.reorder(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(IndexError):
        KVCache()[0]
    assert "length=3" in repr(cache)


# --------------------------------------------------------------------------------------------------
# Transformer.decode with a cache equals the uncached pass on the whole prefix
# --------------------------------------------------------------------------------------------------
def _model(norm_first=False, **kw):
    torch.manual_seed(0)
    return Transformer(TransformerConfig.tiny(norm_first=norm_first, **kw)).eval()


@pytest.mark.parametrize("chunks", [[1] * 6, [2, 3, 1], [4, 2], [6]])
@pytest.mark.parametrize("norm_first", [False, True])
def test_cached_decode_equals_uncached_float32(chunks, norm_first, device):
    model = _model(norm_first).to(device)
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(1, 20, (3, 7), generator=g), torch.randint(1, 20, (3, 6), generator=g)
    src[1, 5:] = PAD
    src, tgt = src.to(device), tgt.to(device)
    src_mask = padding_mask(src, PAD)
    with torch.no_grad():
        memory = model.encode(src, src_mask)
        full = model.decode(tgt, memory, causal_mask(6, device=device), src_mask)  # (B, T, V)
        cache, outs, t = KVCache(), [], 0
        for n in chunks:  # T_new = n new tokens per call; the causal mask is lower-right aligned
            outs.append(model.decode(tgt[:, t:t + n], memory, causal_mask(n, t + n, device=device), src_mask,
                                     cache=cache))
            t += n
            assert cache.length == t and len(cache) == 2
    assert (torch.cat(outs, 1) - full).abs().max().item() < 1e-5


@pytest.mark.parametrize("norm_first", [False, True])
def test_cached_decode_with_left_padded_prompt_equals_unpadded(norm_first):
    """Cached and uncached, a left-padded target gives its real tokens the unpadded outputs."""
    model = _model(norm_first).double()
    src = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    prompts = [torch.tensor([[1, 9, 10]]), torch.tensor([[1]])]
    tgt = torch.tensor([[1, 9, 10], [0, 0, 1]])  # left-padded prompts
    src_mask = padding_mask(src, PAD)
    memory = model.encode(src, src_mask)
    keys_real = tgt != PAD  # (B, S_self)
    # uncached, whole prompt
    tgt_mask = combine_masks(padding_mask(tgt, PAD), causal_mask(3))
    full = model.decode(tgt, memory, tgt_mask, src_mask)
    # cached, one token at a time, then two generated tokens
    cache, outs = KVCache(), []
    for j in range(3):
        self_mask = keys_real[:, None, None, : j + 1]  # (B, 1, 1, j + 1): which cached keys are real
        outs.append(model.decode(tgt[:, j:j + 1], memory, self_mask, src_mask, cache=cache))
    cached = torch.cat(outs, 1)
    torch.testing.assert_close(cached[:, -1], full[:, -1])
    for b, p in enumerate(prompts):
        alone = model.decode(p, memory[b:b + 1], causal_mask(p.shape[1]), src_mask[b:b + 1])
        n = p.shape[1]
        torch.testing.assert_close(full[b:b + 1, 3 - n:], alone)
        torch.testing.assert_close(cached[b:b + 1, 3 - n:], alone)
    # generation continues at positions 3 and 1 (per row), as the unpadded rows would
    token = torch.tensor([[11], [12]])
    keys_real = torch.cat([keys_real, torch.ones(2, 1, dtype=torch.bool)], 1)
    step = model.decode(token, memory, keys_real[:, None, None, :], src_mask, cache=cache)
    for b, p in enumerate(prompts):
        alone = model.decode(torch.cat([p, token[b:b + 1]], 1), memory[b:b + 1], causal_mask(p.shape[1] + 1),
                             src_mask[b:b + 1])
        torch.testing.assert_close(step[b:b + 1, -1], alone[:, -1])


def test_cross_attention_keys_are_computed_once_per_layer():
    model = _model()
    calls = []
    for block in model.decoder.layers:
        block.cross_attn.k_proj.register_forward_hook(lambda *a: calls.append(1))
    src, tgt = torch.randint(1, 20, (2, 5)), torch.randint(1, 20, (2, 4))
    memory = model.encode(src)
    cache = KVCache()
    with torch.no_grad():
        for t in range(4):
            model.decode(tgt[:, t:t + 1], memory, cache=cache)
    assert len(calls) == 2  # once per decoder layer, not once per step
    assert cache.get_cross(0)[0].shape == (2, 4, 5, 8)


def test_reorder_for_beam_search_equals_decoding_the_reordered_batch():
    model = _model().double()
    src, tgt = torch.randint(1, 20, (2, 5), generator=torch.Generator().manual_seed(3)), torch.randint(1, 20, (4, 4))
    memory = model.encode(src)
    beams = torch.tensor([0, 0, 1, 1])  # two beams per source sentence
    cache = KVCache()
    model.decode(tgt[:2, :2], memory, causal_mask(2), cache=cache)
    cache.reorder(beams)  # every cached tensor now has 4 rows
    out = model.decode(tgt[:, 2:3], memory[beams], cache=cache)
    ref = model.decode(torch.cat([tgt[:2, :2][beams], tgt[:, 2:3]], 1), memory[beams], causal_mask(3))
    torch.testing.assert_close(out[:, -1], ref[:, -1])
    index = torch.tensor([3, 1, 2, 0])
    cache.reorder(index)
    out2 = model.decode(tgt[:, 3:4], memory[beams][index], cache=cache)
    prefix = torch.cat([tgt[:2, :2][beams], tgt[:, 2:3]], 1)[index]
    ref2 = model.decode(torch.cat([prefix, tgt[:, 3:4]], 1), memory[beams][index], causal_mask(4))
    torch.testing.assert_close(out2[:, -1], ref2[:, -1])


def test_decode_checks_the_mask_covers_the_cache():
    model = _model()
    memory = model.encode(torch.randint(1, 20, (1, 4)))
    cache = KVCache()
    model.decode(torch.tensor([[1, 2]]), memory, causal_mask(2), cache=cache)
    with pytest.raises(ValueError, match=r"\(B, H, T, 3\)"):
        model.decode(torch.tensor([[3]]), memory, torch.ones(1, 1, 1, 2, dtype=torch.bool), cache=cache)
