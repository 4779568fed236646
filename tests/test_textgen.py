"""Sampling math, the KV cache, tokenizer and the text-generation tab's functions."""
import math

import gradio as gr
import pytest
import torch

import weights
from demos import textgen
from models.gpt import GPT, CharLSTM, CharTokenizer, GPTConfig, LSTMConfig
from models.sampling import sample_next, top_k_filter, top_p_filter

VOCAB = "\n abcdefghijklmnopqrstuvwxyz.,"


def tiny_gpt(block: int = 16) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab=VOCAB, block_size=block, n_layer=2, n_head=2, n_embd=16, dropout=0.0)).eval()


def tiny_lstm() -> CharLSTM:
    torch.manual_seed(0)
    return CharLSTM(LSTMConfig(vocab=VOCAB, n_embd=8, hidden=16, n_layer=2, dropout=0.0)).eval()


# --------------------------------------------------------------------------- sampling math

def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([1.0, 4.0, 3.0, 2.0])
    out = top_k_filter(logits, 2)
    assert torch.isinf(out[[0, 3]]).all() and out[1] == 4.0 and out[2] == 3.0
    assert torch.equal(top_k_filter(logits, 0), logits)  # 0 = off
    assert torch.equal(top_k_filter(logits, 10), logits)  # k >= vocab = off


def test_top_p_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    # 0.5 < 0.7, 0.5 + 0.3 = 0.8 >= 0.7: the set is the first two tokens.
    kept = ~torch.isinf(top_p_filter(logits, 0.7))
    assert kept.tolist() == [True, True, False, False]
    # p exactly at a boundary: 0.5 + 0.3 reaches 0.8, the third is not needed.
    assert (~torch.isinf(top_p_filter(logits, 0.8))).tolist() == [True, True, False, False]
    assert (~torch.isinf(top_p_filter(logits, 0.81))).tolist() == [True, True, True, False]
    # The most likely token always survives, even for a tiny p; order of the input does not matter.
    shuffled = logits[[2, 0, 3, 1]]
    assert (~torch.isinf(top_p_filter(shuffled, 0.01))).tolist() == [False, True, False, False]
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_top_p_keeps_a_set_that_reaches_p_exactly():
    kept = ~torch.isinf(top_p_filter(torch.zeros(4), 0.5))  # four tokens of 0.25, exact in binary
    assert int(kept.sum()) == 2


def test_top_p_applies_after_top_k():
    logits = torch.tensor([0.4, 0.3, 0.2, 0.1]).log().expand(5000, 4)
    draws = sample_next(logits, 1.0, top_k=2, top_p=0.5, generator=torch.Generator().manual_seed(0))
    assert (draws == 0).all()  # after top-k: [4/7, 3/7], and 4/7 alone reaches 0.5


def test_temperature_zero_is_greedy_and_ignores_generator():
    logits = torch.tensor([0.1, 2.0, 1.9])
    assert all(int(sample_next(logits, 0.0, generator=torch.Generator().manual_seed(s))) == 1 for s in range(5))


def test_temperature_scales_distribution():
    logits = torch.tensor([0.0, math.log(3.0)])  # p = [0.25, 0.75] at T=1
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits.expand(20000, 2), 1.0, generator=g)]).float()
    assert abs(draws.mean().item() - 0.75) < 0.02
    # T = 2 flattens: p1 = sqrt(3) / (1 + sqrt(3)) = 0.634
    draws = sample_next(logits.expand(20000, 2), 2.0, generator=g).float()
    assert abs(draws.mean().item() - math.sqrt(3) / (1 + math.sqrt(3))) < 0.02


def test_sampling_is_reproducible_for_a_seed_and_respects_top_k():
    logits = torch.randn(1000, 30)
    a = sample_next(logits, 1.0, top_k=3, generator=torch.Generator().manual_seed(1))
    b = sample_next(logits, 1.0, top_k=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    top3 = logits.topk(3, -1).indices
    assert (top3 == a[:, None]).any(-1).all()


# --------------------------------------------------------------------------- model

def test_tokenizer_roundtrip_and_unknown_characters():
    tok = CharTokenizer(VOCAB)
    assert tok.decode(tok.encode("hello, world.")) == "hello, world."
    with pytest.raises(ValueError, match="'Q'"):
        tok.encode("Quote")
    assert tok.unknown("aQb!") == ["!", "Q"]


@pytest.mark.parametrize("make", [tiny_gpt, tiny_lstm])
def test_cache_gives_the_same_tokens_as_recomputation(make):
    model = make()
    ids = model.tokenizer.encode("the ")
    for temperature, top_k, top_p in [(0.0, 0, 1.0), (1.0, 0, 1.0), (0.8, 5, 0.9)]:
        with_cache = list(model.generate(ids, 12, temperature, top_k, top_p,
                                         torch.Generator().manual_seed(3), use_cache=True))
        without = list(model.generate(ids, 12, temperature, top_k, top_p,
                                      torch.Generator().manual_seed(3), use_cache=False))
        assert with_cache == without and len(with_cache) == 12  # 4 + 12 = 16 fits block_size 16


def test_gpt_cache_keeps_generating_past_the_context_length():
    model = tiny_gpt(block=8)
    out = list(model.generate(model.tokenizer.encode("abc"), 30, 1.0, generator=torch.Generator().manual_seed(0)))
    assert len(out) == 30 and all(0 <= t < len(VOCAB) for t in out)


def test_gpt_cached_logits_match_full_forward():
    model = tiny_gpt()
    x = torch.randint(0, len(VOCAB), (1, 10))
    full, _ = model(x)
    _, cache = model(x[:, :6])
    step, _ = model(x[:, 6:], cache)  # a multi-token prefill on top of a cache
    assert torch.allclose(full[:, 6:], step, atol=1e-5)


def test_log_probs_match_direct_computation_and_window():
    model = tiny_gpt(block=8)
    ids = model.tokenizer.encode("hello there")  # 11 > block: sliding windows
    lp = model.log_probs(ids)
    assert lp.shape == (len(ids) - 1,)
    direct, _ = model(torch.tensor([ids[:8]]))
    expected = direct[0].log_softmax(-1)[:-1].gather(-1, torch.tensor(ids[1:8])[:, None])[:, 0]
    assert torch.allclose(lp[:7], expected, atol=1e-5)
    # Position 10 is scored with the window starting at 4 (stride block/2).
    window, _ = model(torch.tensor([ids[4:12]]))
    assert torch.allclose(lp[9], window[0, 5].log_softmax(-1)[ids[10]], atol=1e-5)


def test_a_context_of_one_token_is_refused():
    # With block_size 1 every scoring window would be empty and log_probs would loop for ever.
    with pytest.raises(ValueError, match="block_size must be at least 2"):
        GPTConfig(vocab=VOCAB, block_size=1)
    assert tiny_gpt(block=2).log_probs([1, 2, 3, 4]).shape == (3,)


# --------------------------------------------------------------------------- tab functions

@pytest.fixture
def tiny_models(monkeypatch):
    models = {"gpt-shakespeare": tiny_gpt(), "lstm-shakespeare": tiny_lstm()}
    monkeypatch.setattr(textgen, "load_model", lambda name: models[name])
    return models


def test_generate_streams_growing_text(tiny_models, monkeypatch):
    monkeypatch.setattr(textgen, "STREAM_INTERVAL", 0.0)  # an update per character
    chunks = list(textgen.generate("the", 0.8, 0, 0.95, 10, 1, "GPT"))
    assert len(chunks) == 10 and all(c.startswith("the") for c in chunks)
    assert [len(c) for c in chunks] == list(range(4, 14))
    calls, real = [], tiny_models["gpt-shakespeare"].generate
    monkeypatch.setattr(tiny_models["gpt-shakespeare"], "generate", lambda *a: (calls.append(a[1:5]), real(*a))[1])
    list(textgen.generate("the", 0.7, 5, 0.9, 4, 1, "GPT"))
    assert calls == [(4, 0.7, 5, 0.9)]  # the user's settings reach the sampler
    monkeypatch.setattr(tiny_models["gpt-shakespeare"], "generate", real)
    again = list(textgen.generate("the", 0.8, 0, 0.95, 10, 1, "GPT"))
    assert again == chunks  # same seed, same text
    assert list(textgen.generate("", 0.0, 0, 1.0, 3, 0, "LSTM"))[-1] != ""  # empty prompt: from "\n"
    # updates at most every STREAM_INTERVAL seconds (each resends the whole text), the full text always last
    monkeypatch.setattr(textgen, "STREAM_INTERVAL", 3600.0)
    assert list(textgen.generate("the", 0.8, 0, 0.95, 10, 1, "GPT")) == [chunks[0], chunks[-1]]


def test_generate_rejects_unknown_characters_and_models(tiny_models):
    with pytest.raises(gr.Error, match="not in the model's vocabulary"):
        next(textgen.generate("HELLO", 1.0, 0, 1.0, 5, 0, "GPT"))
    with pytest.raises(gr.Error, match="Unknown model"):
        next(textgen.generate("a", 1.0, 0, 1.0, 5, 0, "BERT"))
    for seed in (-5, 2**31, 1.5, float("nan"), None, "x"):  # the Diffusion and Generative tabs' range
        with pytest.raises(gr.Error, match="Seed must be a whole number from 0 to 2147483647"):
            next(textgen.generate("a", 1.0, 0, 1.0, 5, seed, "GPT"))
    assert next(textgen.generate("a", 1.0, 0, 1.0, 5, 2**31 - 1, "GPT")).startswith("a")


def test_settings_are_clamped_and_reported():
    t, k, p, n, notes = textgen.clamp_settings(99, -5, 0, 10**9)
    assert (t, k, p, n) == (3.0, 0, 0.01, 2000) and len(notes) == 4
    with pytest.raises(gr.Error):
        textgen.clamp_settings(float("nan"), 0, 1, 10)
    assert textgen.clamp_settings(0.7, 5, 0.9, 100)[4] == []


def test_surprisal_matches_model_log_probs(tiny_models):
    text = "to be or not"
    highlighted, summary = textgen.surprisal(text, "GPT")
    assert "".join(c for c, _ in highlighted) == text
    assert all(0.0 <= s <= 1.0 for _, s in highlighted)
    gpt = tiny_models["gpt-shakespeare"]
    nats = -gpt.log_probs(gpt.tokenizer.encode(text)).mean()
    assert f"Perplexity {math.exp(nats):.2f}** under the GPT" in summary
    bits = -gpt.log_probs(gpt.tokenizer.encode(text)) / math.log(2)
    assert [s for _, s in highlighted[1:]] == pytest.approx([min(b / 8, 1) for b in bits.tolist()])  # 8 bits: full
    with pytest.raises(gr.Error):
        textgen.surprisal("a", "GPT")


@pytest.mark.parametrize("label", list(textgen.MODELS))
def test_shipped_model_prefers_shakespeare_to_noise(label):
    name = textgen.MODELS[label]
    if not weights.available(name):
        pytest.skip(f"{name} not trained yet")
    model = weights.load(name)
    real = model.log_probs(model.tokenizer.encode("ROMEO:\nWhat light through yonder window breaks?")).mean()
    noise = model.log_probs(model.tokenizer.encode("qzx vbk wqj xzz kqv jjq zxw qkz vvb xqj wzk")).mean()
    assert real > noise + 1.0
    text = list(textgen.generate("ROMEO:\n", 0.8, 0, 0.95, 50, 0, label))[-1]
    assert len(text) == len("ROMEO:\n") + 50
