"""Attention: masking, normalization, and each kind against a hand computation."""

import math

import pytest
import torch

from lstm_mt.attention import (
    AdditiveScores,
    BahdanauAttention,
    DotAttention,
    GeneralAttention,
    build_attention,
    masked_softmax,
)

torch.set_num_threads(1)

KINDS = ("bahdanau", "dot", "general")


def attend(attention, query, memory, mask):
    return attention(query, attention.project_memory(memory), memory, mask)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_gets_zero_weight_and_cannot_change_the_context(kind):
    torch.manual_seed(0)
    attention = build_attention(kind, query_size=6, memory_size=6, hidden_size=5).double()
    query = torch.randn(3, 6, dtype=torch.float64)
    memory = torch.randn(3, 4, 6, dtype=torch.float64)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False], [True, False, False, False]])

    context, weights = attend(attention, query, memory, mask)

    assert torch.equal(weights[~mask], torch.zeros(int((~mask).sum()), dtype=torch.float64))
    assert torch.all(weights[mask] > 0)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)

    garbage = torch.where(mask.unsqueeze(2), memory, 1e3 * torch.randn_like(memory))
    context_garbage, weights_garbage = attend(attention, query, garbage, mask)
    assert torch.equal(weights_garbage, weights)
    assert torch.equal(context_garbage, context)


def test_masked_softmax_matches_softmax_over_the_real_positions_only():
    scores = torch.tensor([[0.3, -1.0, 2.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])
    expected = torch.softmax(scores[:, :3], dim=1)
    weights = masked_softmax(scores, mask)
    torch.testing.assert_close(weights[:, :3], expected)
    assert weights[0, 3].item() == 0.0


# The hand computations below use a single sentence of three source positions, the last
# one padding, with values chosen so every term can be followed on paper.
MEMORY = [[1.0, 0.0], [0.0, 1.0], [9.0, -9.0]]
MASK = [True, True, False]
QUERY = [1.0, 2.0]


def expected_from_scores(scores):
    """Softmax of the two real scores and the weighted sum of the two real memory vectors."""
    exps = [math.exp(s) for s in scores]
    weights = [e / sum(exps) for e in exps] + [0.0]
    context = [sum(weights[j] * MEMORY[j][m] for j in range(2)) for m in range(2)]
    return context, weights


def run_on_example(attention):
    memory = torch.tensor([MEMORY], dtype=torch.float64)
    mask = torch.tensor([MASK])
    query = torch.tensor([QUERY], dtype=torch.float64)
    context, weights = attend(attention, query, memory, mask)
    return context[0].tolist(), weights[0].tolist()


def test_dot_attention_by_hand():
    # q·k_0 = 1, q·k_1 = 2
    context, weights = run_on_example(DotAttention(2, 2).double())
    expected_context, expected_weights = expected_from_scores([1.0, 2.0])
    assert weights == pytest.approx(expected_weights, abs=1e-12)
    assert context == pytest.approx(expected_context, abs=1e-12)
    assert weights[0] == pytest.approx(1 / (1 + math.e))


def test_general_attention_by_hand():
    attention = GeneralAttention(2, 2).double()
    with torch.no_grad():
        attention.memory_projection.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, -1.0]], dtype=torch.float64))
    # W_a·k_0 = [2, 0], W_a·k_1 = [0, -1]; with q = [1, 2]: scores 2 and -2
    context, weights = run_on_example(attention)
    expected_context, expected_weights = expected_from_scores([2.0, -2.0])
    assert weights == pytest.approx(expected_weights, abs=1e-12)
    assert context == pytest.approx(expected_context, abs=1e-12)


def test_bahdanau_attention_by_hand():
    W_q = [[0.5, -1.0], [1.0, 0.25]]
    W_k = [[1.0, 0.0], [-0.5, 2.0]]
    b = [0.1, -0.2]
    v = [1.5, -0.7]
    attention = BahdanauAttention(query_size=2, memory_size=2, hidden_size=2).double()
    with torch.no_grad():
        attention.query_projection.weight.copy_(torch.tensor(W_q, dtype=torch.float64))
        attention.memory_projection.weight.copy_(torch.tensor(W_k, dtype=torch.float64))
        attention.memory_projection.bias.copy_(torch.tensor(b, dtype=torch.float64))
        attention.v.weight.copy_(torch.tensor([v], dtype=torch.float64))

    def score(key):
        return sum(
            v[a]
            * math.tanh(sum(W_q[a][i] * QUERY[i] for i in range(2)) + sum(W_k[a][m] * key[m] for m in range(2)) + b[a])
            for a in range(2)
        )

    context, weights = run_on_example(attention)
    expected_context, expected_weights = expected_from_scores([score(MEMORY[0]), score(MEMORY[1])])
    assert weights == pytest.approx(expected_weights, abs=1e-12)
    assert context == pytest.approx(expected_context, abs=1e-12)


def test_projected_keys_are_what_is_precomputed():
    torch.manual_seed(0)
    memory = torch.randn(2, 5, 4)
    bahdanau = BahdanauAttention(3, 4, 6)
    assert bahdanau.project_memory(memory).shape == (2, 5, 6)
    general = GeneralAttention(3, 4)
    assert general.project_memory(memory).shape == (2, 5, 3)
    assert DotAttention(4, 4).project_memory(memory) is memory


def test_factory_rejects_unknown_kinds_and_mismatched_dot_sizes():
    with pytest.raises(ValueError, match="unknown attention 'concat'"):
        build_attention("concat", 4, 4, 4)
    with pytest.raises(ValueError, match="equal query and memory sizes"):
        build_attention("dot", 4, 6, 4)
    assert isinstance(build_attention("general", 4, 6, 4), GeneralAttention)


def test_additive_scores_gradients_recomputed_in_backward_are_autograds():
    """`AdditiveScores` keeps no [B, S, A] tanh for backward; its gradients (float64) are autograd's of the formula."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(3, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    keys = torch.randn(3, 4, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    v = torch.randn(5, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(AdditiveScores.apply, (query, keys, v))
    weights = torch.randn(3, 4, dtype=torch.float64, generator=generator)
    ours = torch.autograd.grad((AdditiveScores.apply(query, keys, v) * weights).sum(), [query, keys, v])
    reference = torch.autograd.grad((((query.unsqueeze(1) + keys).tanh() @ v) * weights).sum(), [query, keys, v])
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_additive_scores_under_bf16_autocast_stay_near_float32():
    """Under autocast the float32 ``v`` meets bf16 queries and keys: scores and gradients within bf16 rounding."""
    torch.manual_seed(0)
    attention = BahdanauAttention(6, 8, 16)
    query, memory = torch.randn(2, 6), torch.randn(2, 5, 8)
    results = []
    for bf16 in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            scores = attention.score(query, attention.project_memory(memory))
        grads = torch.autograd.grad(scores.float().sum(), list(attention.parameters()))
        assert all(g.dtype == torch.float32 for g in grads)
        results.append([scores.float(), *grads])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-2)


def test_a_bahdanau_step_keeps_no_new_batch_by_source_by_hidden_tensor_for_backward():
    """What a step saves for the backward pass: the keys themselves (shared by every step), never a new
    [B, S, A] tensor such as autograd's tanh output would be."""
    attention = BahdanauAttention(6, 8, 16)
    query, memory = torch.randn(2, 6, requires_grad=True), torch.randn(2, 5, 8)
    keys = attention.project_memory(memory)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        attention.score(query, keys)
    large = [t for t in saved if t.shape == keys.shape]
    assert large and all(t.data_ptr() == keys.data_ptr() for t in large)
    with torch.no_grad():  # without gradients the formula runs as is (int8 decoding quantizes v): same scores
        torch.testing.assert_close(
            attention.score(query, keys),
            AdditiveScores.apply(query @ attention.query_projection.weight.t(), keys, attention.v.weight[0]),
        )
