"""course_lib.embedding: lookup == one-hot @ W == nn.Embedding, any shape, padding_idx."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

from course_lib.embedding import Embedding, embedding_lookup, embedding_one_hot, one_hot


def test_one_hot_equals_torch():
    ids = torch.tensor([[0, 3, 1], [2, 2, 4]])
    assert torch.equal(one_hot(ids, 5), F.one_hot(ids, 5).float())
    assert one_hot(ids, 5, torch.float64).dtype == torch.float64


@settings(max_examples=25, deadline=None, derandomize=True)
@given(shape=st.lists(st.integers(0, 4), min_size=0, max_size=3), V=st.integers(1, 9), D=st.integers(1, 6))
def test_three_ways_agree_for_any_shape(shape, V, D):
    g = torch.Generator().manual_seed(len(shape) * 100 + V * 10 + D)
    ids = torch.randint(0, V, shape, generator=g)
    emb = nn.Embedding(V, D)
    w = emb.weight.detach().double()
    expected = emb(ids).double()
    assert expected.shape == (*shape, D)
    torch.testing.assert_close(embedding_lookup(ids, w), expected)
    torch.testing.assert_close(embedding_one_hot(ids, w), expected)
    torch.testing.assert_close(Embedding.from_torch(emb)(ids).double(), expected)


@pytest.mark.parametrize("S", [1, 8, 100])
def test_any_sequence_length(S):
    """Q34: the table is (V, D) and does not know S; (1, S) -> (1, S, D) for every S."""
    emb = Embedding(50, 16)
    assert emb(torch.randint(0, 50, (1, S))).shape == (1, S, 16)
    assert sum(p.numel() for p in emb.parameters()) == 50 * 16


@pytest.mark.parametrize("padding_idx", [0, 3, -1])
def test_padding_idx_forward_and_gradient_match_torch(padding_idx):
    """Q35: pad row starts at zero and receives zero gradient, exactly as nn.Embedding."""
    torch.manual_seed(0)
    ref = nn.Embedding(6, 4, padding_idx=padding_idx)
    ours = Embedding.from_torch(ref)
    pad = ref.padding_idx
    assert ours.padding_idx == pad
    assert torch.equal(Embedding(6, 4, padding_idx=padding_idx).weight[pad], torch.zeros(4))
    ids = torch.tensor([[1, pad, 2, pad], [pad, 5, 5, 0]])
    out_ref, out_ours = ref(ids), ours(ids)
    torch.testing.assert_close(out_ours, out_ref)
    assert torch.equal(out_ours[ids == pad], torch.zeros(int((ids == pad).sum()), 4))
    target = torch.randn(2, 4, 4)
    ((out_ref - target) ** 2).sum().backward()
    ((out_ours - target) ** 2).sum().backward()
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    assert torch.equal(ours.weight.grad[pad], torch.zeros(4))
    assert ours.weight.grad[1].abs().sum() > 0  # a real token learns


def test_padding_idx_does_not_force_zero_output():
    """padding_idx only initialises the row to zero and blocks its gradient; an overwritten row is returned."""
    ref, ours = nn.Embedding(4, 3, padding_idx=0), Embedding(4, 3, padding_idx=0)
    with torch.no_grad():
        ref.weight[0] = 1.0
        ours.weight[0] = 1.0
    ids = torch.tensor([0, 0])
    assert torch.equal(ref(ids), torch.ones(2, 3)) and torch.equal(ours(ids), torch.ones(2, 3))


def test_without_padding_idx_the_pad_row_learns():
    emb = Embedding(4, 3)
    emb(torch.tensor([0, 1])).sum().backward()
    assert torch.equal(emb.weight.grad[0], torch.ones(3))


def test_one_hot_gradient_equals_lookup_gradient():
    torch.manual_seed(1)
    w1 = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    ids = torch.tensor([[4, 4, 1], [0, 2, 4]])
    embedding_lookup(ids, w1).pow(2).sum().backward()
    embedding_one_hot(ids, w2).pow(2).sum().backward()
    torch.testing.assert_close(w1.grad, w2.grad)


def test_bad_inputs_raise_value_error():
    emb = Embedding(5, 2)
    with pytest.raises(ValueError, match=r"\[0, 5\).*7"):
        emb(torch.tensor([1, 7]))
    with pytest.raises(ValueError, match="integer"):
        emb(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"\(V, D\).*\(5,\)"):
        embedding_lookup(torch.tensor([1]), torch.zeros(5))
    with pytest.raises(ValueError, match="padding_idx"):
        Embedding(5, 2, padding_idx=5)


def test_empty_ids():
    assert Embedding(5, 2)(torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0, 2)


def test_uint8_ids_are_ids_not_a_mask():
    w = torch.arange(10.0).reshape(5, 2)
    ids = torch.tensor([1, 0, 1], dtype=torch.uint8)
    torch.testing.assert_close(embedding_lookup(ids, w), w[[1, 0, 1]])
