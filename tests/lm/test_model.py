"""The language model over every registered layer: pieces, token by token and whole agree."""

from __future__ import annotations

import pytest
import torch

from fwp.errors import UserError
from fwp.layers import LAYERS
from fwp.lm.generate import filter_logits, generate, sample_next
from fwp.lm.model import FwpLM, LMSpec, parse_layers, split_layer_options


def small_lm(layers: list[str], vocab: int = 11, dtype: torch.dtype = torch.float64,
             options: dict | None = None) -> FwpLM:
    model = FwpLM(LMSpec(vocab, layers, d_model=12, n_heads=2, d_ff=16,
                         layer_options=options or {}))
    return model.to(dtype).eval()


@pytest.mark.parametrize("name", [*sorted(LAYERS), "transformer+rope"])
def test_whole_pieces_and_token_by_token_agree(name):
    """float64: one text read whole, in uneven pieces, and one token at a time gives the same
    logits; every registered layer carries its state (none needs an exception)."""
    options = {"transformer": {"rope": True}} if name == "transformer+rope" else None
    name = name.removesuffix("+rope")
    model = small_lm([name, name], options=options)
    tokens = torch.randint(0, 11, (2, 13))
    with torch.no_grad():
        whole, _ = model(tokens)
        parts, state = [], None
        for piece in tokens.split([5, 1, 4, 3], dim=1):
            logits, state = model(piece, state)
            parts.append(logits)
        steps, state = [], None
        for t in range(tokens.shape[1]):
            logits, state = model(tokens[:, t : t + 1], state)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(torch.cat(steps, 1), whole, rtol=1e-9, atol=1e-9)


def test_hybrid_stack_and_generation_reuse_the_state():
    model = small_lm(["deltanet", "transformer", "srwm"])
    prompt = torch.randint(0, 11, (3, 4))
    out, _ = generate(model, prompt, 6, temperature=0)
    assert out.shape == (3, 10) and torch.equal(out[:, :4], prompt)
    with torch.no_grad():  # greedy continuation = argmax of the logits of the whole text
        logits, _ = model(out[:, :-1])
    torch.testing.assert_close(out[:, 4:], logits[:, 3:].argmax(-1))


def test_sampling_filters():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True,
                                                                     True]]
    p = logits.softmax(-1)[0]
    kept = ~torch.isinf(filter_logits(logits, top_p=float(p[0] + 0.01)))
    assert kept.tolist() == [[True, True, False, False, False]]
    assert (~torch.isinf(filter_logits(logits, top_p=1e-6))).sum() == 1
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, 1.0, top_k=2, generator=g) for _ in range(200)])
    assert set(draws.flatten().tolist()) == {0, 1}
    assert sample_next(logits, 0.0).item() == 0


def test_trim_cache_keeps_the_last_keys_only_for_softmax_layers():
    model = small_lm(["transformer", "deltanet"])
    _, state = model(torch.randint(0, 11, (1, 9)))
    trimmed = model.trim_cache(state, 4)
    assert trimmed[0][0].shape[-2] == 4 and trimmed[1] is state[1]
    assert model.has_cache() and not small_lm(["deltanet"]).has_cache()


def test_layer_lists_and_options_parse():
    assert parse_layers("deltanet*2,transformer") == ["deltanet", "deltanet", "transformer"]
    assert split_layer_options({"srwm.n_beta": 4}) == {"srwm": {"n_beta": 4}}
    with pytest.raises(UserError, match="LAYER.OPTION"):
        split_layer_options({"n_beta": 4})
    with pytest.raises(UserError, match="unknown layer"):
        FwpLM(LMSpec(10, ["nope"]))
    with pytest.raises(UserError, match="not among --layers"):
        FwpLM(LMSpec(10, ["deltanet"], layer_options={"srwm": {"n_beta": 4}}))
    with pytest.raises(UserError, match="at least one token"):
        generate(small_lm(["lstm"]), torch.zeros(1, 0, dtype=torch.long), 3)
