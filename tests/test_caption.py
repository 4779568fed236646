"""Captioner: beam search on toy decoders with known answers, the model's shapes and attention, corpus
BLEU against hand-computed values, the Flickr8k loader (both layouts), the CLI and the tab."""
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import gradio as gr
import pytest
import torch
from PIL import Image

import weights
from demos import caption as tab
from models.caption import BOS, EOS, Captioner, CaptionConfig, beam_search, length_norm, tokenize
from training.caption import (CaptionBatches, augment, build_vocab, caption_loss, corpus_bleu, make_optimizer,
                              read_flickr8k)

ROOT = Path(__file__).resolve().parent.parent
FLICKR = ROOT.parent / "shared" / "datasets" / "flickr8k"
A, B, C = 3, 4, 5  # toy words (0..2: pad, bos, eos)


def markov(table: dict[int, dict[int, float]], vocab: int = 6):
    """A toy decoder: next-word probabilities depend only on the last token."""
    def step(prefix: torch.Tensor) -> torch.Tensor:
        out = torch.full((len(prefix), vocab), -math.inf)
        for r, last in enumerate(prefix[:, -1].tolist()):
            for w, p in table[last].items():
                out[r, w] = math.log(p)
        return out
    return step


# after <bos>: A is likelier than B, but A's continuations are flat while B is almost surely followed by
# <eos>. Greedy: [A] with p = 0.6 * 0.45 = 0.27; best: [B] with p = 0.4 * 0.9 = 0.36.
TRAP = {BOS: {A: 0.6, B: 0.4}, A: {EOS: 0.45, A: 0.3, B: 0.25}, B: {EOS: 0.9, A: 0.05, B: 0.05}}


def test_beam_finds_the_known_best_sequence_that_greedy_misses():
    greedy = beam_search(markov(TRAP), BOS, EOS, beam_size=1, max_steps=10)
    best = beam_search(markov(TRAP), BOS, EOS, beam_size=2, max_steps=10)
    assert greedy[0].tokens == [A] and greedy[0].logprob == pytest.approx(math.log(0.27))
    assert best[0].tokens == [B] and best[0].logprob == pytest.approx(math.log(0.36))
    assert best[1].tokens == [A] and best[0].finished


def test_beam_one_is_greedy_whatever_the_length_penalty():
    """A length penalty rewards long hypotheses, but beam 1 (the tab's 'greedy') must still stop at the first
    <eos> that is the most likely next token, as greedy decoding does."""
    for alpha in (0.0, 1.0, 3.0):
        greedy = beam_search(markov(TRAP), BOS, EOS, beam_size=1, max_steps=10, length_penalty=alpha)
        assert [h.tokens for h in greedy] == [[A]] and greedy[0].finished


def test_wide_beam_equals_exhaustive_search():
    g = torch.Generator().manual_seed(0)
    words = [A, B, C]
    table = {}
    for prev in [BOS, *words]:
        p = torch.rand(4, generator=g) + 0.05
        p = (p / p.sum()).tolist()
        table[prev] = dict(zip([EOS, *words], p))
    max_steps = 4
    exhaustive = {}  # every finished sequence of up to max_steps tokens (words + <eos>)
    for n in range(max_steps):
        for seq in itertools.product(words, repeat=n):
            lp, last = 0.0, BOS
            for w in (*seq, EOS):
                lp += math.log(table[last][w])
                last = w
            exhaustive[seq] = lp
    truth = sorted(exhaustive.items(), key=lambda kv: -kv[1])[:3]
    found = beam_search(markov(table), BOS, EOS, beam_size=3 ** max_steps, max_steps=max_steps)
    assert [tuple(h.tokens) for h in found[:3]] == [seq for seq, _ in truth]
    assert [h.logprob for h in found[:3]] == pytest.approx([lp for _, lp in truth])


def test_length_penalty_rescoring_and_order():
    # a length-blind ranking prefers the 1-word caption; a strong length penalty the longer one
    table = {BOS: {A: 0.6, B: 0.4}, A: {EOS: 0.5, C: 0.5}, B: {C: 1.0}, C: {EOS: 0.5, C: 0.5}}
    short = beam_search(markov(table), BOS, EOS, 4, 6, length_penalty=0.0)
    long = beam_search(markov(table), BOS, EOS, 4, 6, length_penalty=3.0)
    assert short[0].tokens == [A]
    assert len(long[0].tokens) > 1
    for hyps, alpha in ((short, 0.0), (long, 3.0)):
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:
            assert h.score == pytest.approx(h.logprob / length_norm(len(h.tokens) + 1, alpha))


def test_no_repeat_ngram():
    loop = {BOS: {A: 1.0}, A: {B: 0.9, EOS: 0.1}, B: {A: 0.8, C: 0.1, EOS: 0.1}, C: {EOS: 1.0}}
    plain = beam_search(markov(loop), BOS, EOS, 1, 12)[0].tokens
    assert plain == [A, B] * 6  # greedy loops
    for n in (1, 2, 3):
        for h in beam_search(markov(loop), BOS, EOS, 2, 12, no_repeat_ngram=n):
            grams = [tuple(h.tokens[i:i + n]) for i in range(len(h.tokens) - n + 1)]
            assert len(grams) == len(set(grams))


def test_max_steps_returns_unfinished_hypotheses():
    forever = {BOS: {A: 1.0}, A: {A: 1.0}}
    hyps = beam_search(markov(forever), BOS, EOS, 2, 5)
    assert hyps[0].tokens == [A] * 5 and not hyps[0].finished


# --------------------------------------------------------------------------- the model

def tiny(vocab=None) -> Captioner:
    torch.manual_seed(0)
    vocab = vocab or build_vocab(["a dog runs", "a dog jumps", "a cat sits"], min_count=1)
    return Captioner(CaptionConfig(vocab=vocab, widths=[8, 16, 16], image_size=48, dim=32, layers=2, heads=4,
                                   ffn=64, max_len=10)).eval()


def test_shapes_greedy_equals_beam_one_and_attention_maps():
    model = tiny()
    x = torch.rand(2, 3, 48, 48)
    feats = model.features(x)
    assert model.grid == 5 and feats.shape == (2, 25, 16)
    tokens = torch.tensor([model.encode_text("a dog runs")] * 2)
    assert model(x, tokens).shape == (2, tokens.shape[1], len(model.vocab))
    greedy = model.greedy(feats)
    for i in range(2):
        assert model.beam(feats[i], beam_size=1)[0].tokens == greedy[i]
        maps = model.cross_attention(feats[i], greedy[i])
        assert maps.shape == (len(greedy[i]) + 1, 5, 5)
        assert torch.allclose(maps.sum((1, 2)), torch.ones(len(maps)), atol=1e-5)  # a distribution per word
    assert model.words(model.encode_text("A Dog, runs!")) == ["a", "dog", "runs"]
    assert model.words(model.encode_text("a zebra")) == ["a", "<unk>"]


def test_decoding_never_writes_unk(monkeypatch):
    """<unk> stands for every rare word: the shipped model predicted it (13 of 300 greedy test captions ended
    in a literal "<unk>"); greedy and beam search choose among real words instead."""
    from models.caption import UNK
    model = tiny()
    real_decode = model.decode

    def unk_first(*args, **kwargs):  # a model whose favourite next word is always <unk>
        logits = real_decode(*args, **kwargs).clone()
        logits[..., UNK] = logits.max() + 10
        return logits
    monkeypatch.setattr(model, "decode", unk_first)
    feats = model.features(torch.rand(2, 3, 48, 48))
    assert not any(UNK in ids for ids in model.greedy(feats))
    assert not any(UNK in hyp.tokens for hyp in model.beam(feats[0], beam_size=3))


def test_caption_rows_share_their_image_grid():
    model = tiny()
    feats = model.features(torch.rand(2, 3, 48, 48))
    batch = CaptionBatches(feats, [[model.encode_text("a dog runs"), model.encode_text("a cat")],
                                   [model.encode_text("a dog")]]).collate([0, 1])
    f, tokens, index = batch
    assert tokens.shape == (3, 5) and index.tolist() == [0, 0, 1]
    logits = model.decode(model.memory(f), tokens, index)
    alone = model.decode(model.memory(f[1:]), tokens[2:, :4])  # the padded row, without padding
    assert torch.allclose(logits[2, :4], alone[0], atol=1e-5)
    assert torch.isfinite(caption_loss(model, batch, 0.1))


def test_augment_shifts_and_flips_within_the_image():
    images = torch.randint(0, 256, (64, 3, 12, 12), dtype=torch.uint8)
    out = augment(images, torch.Generator().manual_seed(0), shift=2)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images)
    same = augment(images, torch.Generator().manual_seed(0), shift=2)
    assert torch.equal(out, same)  # seeded
    flat = torch.full((4, 3, 12, 12), 7, dtype=torch.uint8)  # reflect padding: a flat image stays flat
    assert torch.equal(augment(flat, torch.Generator().manual_seed(1), shift=4), flat)
    only_flip = augment(images, torch.Generator().manual_seed(0), shift=0)
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(only_flip, images))


def test_encoder_fine_tuning_batches_reach_the_encoder_at_its_own_rate():
    from training.loop import TrainConfig
    model = tiny().train()
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    batches = CaptionBatches(images, [[model.encode_text("a dog runs")], [model.encode_text("a cat")]],
                             augment_seed=0)
    batch = batches.collate([0, 1])
    assert batch[0].dtype == torch.uint8 and batch[0].shape == images.shape
    caption_loss(model, batch, 0.1).backward()
    assert all(p.grad.abs().sum() > 0 for p in model.encoder.parameters() if p.requires_grad and p.ndim > 1)
    opt = make_optimizer(model, TrainConfig(lr=1e-3, weight_decay=0.05), encoder_lr_scale=0.1)
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    for group in opt.param_groups:
        in_encoder = {id(p) in encoder_ids for p in group["params"]}
        assert len(in_encoder) == 1  # a group is all encoder or all decoder
        assert group["lr"] == pytest.approx(1e-4 if in_encoder == {True} else 1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(p.requires_grad for p in model.parameters())


def test_save_and_load_keep_the_vocabulary(tmp_path):
    model = tiny()
    weights.save(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["vocab"] == model.vocab
    back = Captioner.from_pretrained(str(tmp_path / "m")).eval()
    feats = model.features(torch.rand(1, 3, 48, 48))
    assert back.vocab == model.vocab
    assert torch.allclose(back.decode(back.memory(feats), torch.tensor([[BOS]])),
                          model.decode(model.memory(feats), torch.tensor([[BOS]])), atol=2e-2)  # fp16 file


# --------------------------------------------------------------------------- BLEU

def test_corpus_bleu_hand_computed():
    # one sentence: p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0, same length
    s = corpus_bleu(["a b c d"], [["a b c e"]])
    assert s["bleu1"] == pytest.approx(0.75) and s["bleu2"] == pytest.approx(math.sqrt(0.5))
    assert s["bleu3"] == pytest.approx((0.75 * 2 / 3 * 0.5) ** (1 / 3)) and s["bleu4"] == 0
    # brevity penalty exp(1 - 4/2)
    assert corpus_bleu(["a b"], [["a b c d"]])["bleu1"] == pytest.approx(math.exp(-1))
    # clipping by the most any one reference has, and the closest reference length
    assert corpus_bleu(["the the the"], [["the cat", "the the dog"]])["bleu1"] == pytest.approx(2 / 3)
    # corpus BLEU pools the n-gram counts (p = 6/8, 4/6, 2/4, 1/2); the mean of sentence BLEUs would be 0.5
    pooled = corpus_bleu(["a b c d", "a b x y"], [["a b c d"], ["a b c d"]])["bleu4"]
    assert pooled == pytest.approx((0.75 * 4 / 6 * 0.5 * 0.5) ** 0.25)


def test_tokenize():
    assert tokenize("A dog, running; in the SNOW .") == ["a", "dog", "running", "in", "the", "snow"]


# --------------------------------------------------------------------------- data

def write_official_layout(root: Path) -> None:
    """A 3-image Flickr8k in the official release's layout (Flicker8k_Dataset/, Flickr8k.token.txt)."""
    (root / "Flicker8k_Dataset").mkdir(parents=True)
    (root / "Flickr8k_text").mkdir()
    lines = []
    for i, name in enumerate(["a.jpg", "b.jpg", "c.jpg"]):
        Image.new("RGB", (50 + i, 40), (i * 80, 100, 50)).save(root / "Flicker8k_Dataset" / name)
        lines += [f"{name}#{k}\tA dog number {i} runs , caption {k} ." for k in range(5)]
    (root / "Flickr8k_text" / "Flickr8k.token.txt").write_text("\n".join(lines))
    for split, name in (("train", "a.jpg"), ("dev", "b.jpg"), ("test", "c.jpg")):
        (root / "Flickr8k_text" / f"Flickr_8k.{split}Images.txt").write_text(name + "\n")


def test_official_layout_is_read(tmp_path):
    write_official_layout(tmp_path)
    data = read_flickr8k(tmp_path)
    assert data.splits == {"train": ["a.jpg"], "val": ["b.jpg"], "test": ["c.jpg"]}
    assert len(data.captions["a.jpg"]) == 5 and data.images == tmp_path / "Flicker8k_Dataset"


@pytest.mark.skipif(not (FLICKR / "captions.txt").is_file(), reason="Flickr8k not in ../shared")
def test_shared_flickr8k_splits():
    data = read_flickr8k(FLICKR)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 6000, "val": 1000, "test": 1000}
    assert all(len(data.captions[n]) == 5 for n in data.splits["test"])
    assert not set(data.splits["train"]) & set(data.splits["test"])


def test_evaluate_cli_on_a_tiny_dataset(tmp_path):
    write_official_layout(tmp_path / "data")
    tiny().save_pretrained(tmp_path / "w")
    out = subprocess.run([sys.executable, "-m", "training.caption", "evaluate", "--weights", str(tmp_path / "w"),
                          "--data", str(tmp_path / "data"), "--beam-size", "2", "--threads", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["beam_size"] == 2 and result["n_images"] == 1
    assert all(0 <= result[f"bleu{n}"] <= 1 for n in range(1, 5))
    bad = subprocess.run([sys.executable, "-m", "training.caption", "evaluate", "--weights", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not a weights folder" in bad.stderr and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- the tab

needs_weights = pytest.mark.skipif(not weights.available(tab.NAME), reason="captioner not trained yet")


@needs_weights
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_tab_captions_any_mode_and_size(tmp_path, mode):
    path = tmp_path / "x.png"
    Image.open(tab.example_paths()[0]).convert(mode).resize((211, 97)).save(path)
    text, beams, word, heat, gallery = tab.caption(str(path), beam_size=3)
    assert text and text.endswith(".") and len(beams) >= 1
    assert text.lower().startswith(beams[0][1].rstrip(" …"))
    assert beams[0][2] <= 0 and heat.size[0] == tab.VIEW  # log-prob; wide image keeps its aspect
    assert len(gallery) == len(text.split()) + 1 and word["choices"][0].startswith("1. ")
    assert tab.pick([(g[0], g[1]) for g in gallery], word["choices"][-1]) is gallery[-1][0]


@needs_weights
def test_tab_beam_sizes_and_bad_input(tmp_path):
    example = tab.example_paths()[0]
    model, calls = weights.load(tab.NAME), []
    real = model.beam
    with pytest.MonkeyPatch.context() as m:  # the settings reach the decoder
        m.setattr(model, "beam", lambda feats, *settings: (calls.append(settings), real(feats, *settings))[1])
        assert len(tab.caption(example, beam_size=5, length_penalty=0.7, no_repeat_ngram=2)[1]) <= 5
    assert calls == [(5, 0.7, 2)]
    # a changed setting re-captions the photo shown; a removed photo clears every output
    assert tab.on_change(example, 2)[:2] == tab.caption(example, 2)[:2]
    text, beams, word, heat, gallery = tab.on_change(None, 2)
    assert (text, beams, heat, gallery) == ("", [], None, []) and word["choices"] == []
    with pytest.raises(gr.Error, match="Beam size"):
        tab.caption(example, beam_size=0)
    with pytest.raises(gr.Error, match="must be numbers"):  # int(inf) raises OverflowError, not ValueError
        tab.caption(example, beam_size=float("inf"))
    with pytest.raises(gr.Error):
        tab.caption(None)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(gr.Error):
        tab.caption(str(junk))


def test_resnet_encoder_shape_for_pretrained_starts():
    # the --pretrained architecture (torchvision ResNet-18 trunk, stride 32); its ImageNet weights need internet
    model = Captioner(CaptionConfig(vocab=["<pad>", "<bos>", "<eos>", "<unk>", "dog"], encoder="resnet18",
                                    image_size=64, dim=32, layers=1, heads=4, ffn=64)).eval()
    assert model.grid == 2 and model.features(torch.rand(1, 3, 64, 64)).shape == (1, 4, 512)


# --------------------------------------------------------------------------- found surviving mutations

def test_length_penalty_search_keeps_going_while_a_longer_caption_can_still_win():
    """With alpha > 0 a live prefix's bound must use the most favourable length it can still reach (max_steps):
    bounding it at its current length stops early and loses the long, better-normalized A B A B... caption."""
    table = {BOS: {EOS: 0.157, A: 0.409, B: 0.135, C: 0.3}, A: {EOS: 0.593, A: 0.197, B: 0.189, C: 0.021},
             B: {EOS: 0.675, A: 0.244, B: 0.012, C: 0.068}, C: {EOS: 0.076, A: 0.851, B: 0.037, C: 0.036}}
    hyps = beam_search(markov(table), BOS, EOS, 2, 10, length_penalty=3.0)
    assert [h.tokens for h in hyps] == [[C, A], [C, A, B, A, B, A, B, A, B]] and all(h.finished for h in hyps)
    short = math.log(0.409 * 0.593) / length_norm(2, 3.0)  # [A], what an early stop keeps instead
    assert hyps[1].score > short


def test_no_repeat_ngram_steers_greedy_off_its_loop():
    # greedy loops A B A B ...; banning a repeated n-gram forces the next-best word at the first repeat
    loop = {BOS: {A: 1.0}, A: {B: 0.9, EOS: 0.1}, B: {A: 0.8, C: 0.12, EOS: 0.08}, C: {EOS: 1.0}}
    assert beam_search(markov(loop), BOS, EOS, 1, 12)[0].tokens == [A, B] * 6
    assert beam_search(markov(loop), BOS, EOS, 1, 12, no_repeat_ngram=1)[0].tokens == [A, B, C]
    assert beam_search(markov(loop), BOS, EOS, 1, 12, no_repeat_ngram=2)[0].tokens == [A, B, A]
    assert beam_search(markov(loop), BOS, EOS, 1, 12, no_repeat_ngram=3)[0].tokens == [A, B, A, B, C]


def test_generate_passes_every_beam_setting_to_the_model(monkeypatch):
    from test_caption import tiny
    from training.caption import generate
    model = tiny()
    calls, real = [], model.beam
    monkeypatch.setattr(model, "beam", lambda f, *settings: (calls.append(settings), real(f, *settings))[1])
    feats = model.features(torch.rand(2, 3, 48, 48))
    generate(model, feats, beam_size=3, length_penalty=0.7, no_repeat_ngram=2)
    assert calls == [(3, 0.7, 2)] * 2
    calls.clear()
    generate(model, feats, beam_size=1, no_repeat_ngram=3)  # greedy with a no-repeat rule goes through beam
    assert calls == [(1, 0.0, 3)] * 2
