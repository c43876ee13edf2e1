"""MNIST-SVHN-Text building blocks: the text codec, the SVHN .mat loader and the pairing of the paper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.io
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mopoe_lib.data import ChecksumError, MissingDataError
from mopoe_lib.data.svhn import load_svhn, pair_by_label
from mopoe_lib.data.text import (
    ALPHABET,
    DIGIT_WORDS,
    SEQUENCE_LENGTH,
    decode,
    digit_text_indices,
    digit_texts,
    encode,
    encode_indices,
    text_to_digit,
)

UNIQUE = sorted(set(ALPHABET))


def test_alphabet_has_the_papers_size():
    assert len(ALPHABET) == 71 and len(UNIQUE) == 70 and ALPHABET.count("-") == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=UNIQUE, max_size=SEQUENCE_LENGTH), min_size=1, max_size=8))
def test_codec_round_trip(texts):
    one_hot = encode(texts)
    assert one_hot.shape == (len(texts), SEQUENCE_LENGTH, 71)
    assert torch.equal(one_hot.sum(-1), torch.ones(len(texts), SEQUENCE_LENGTH))
    padded = [t.ljust(SEQUENCE_LENGTH) for t in texts]
    assert decode(one_hot) == padded
    assert decode(encode_indices(texts)) == padded
    assert decode(one_hot * 5.0 - 1.0) == padded  # logits decode by argmax


def test_codec_rejects_what_it_cannot_encode():
    with pytest.raises(ValueError, match="not in the alphabet"):
        encode(["Seven"])
    with pytest.raises(ValueError, match="longer than 8"):
        encode(["ninety-nine"])


def test_digit_texts_are_deterministic_and_name_the_digit():
    labels = torch.arange(10).repeat(50)
    a = digit_texts(labels, torch.Generator().manual_seed(3))
    b = digit_texts(labels, torch.Generator().manual_seed(3))
    c = digit_texts(labels, torch.Generator().manual_seed(4))
    assert a == b and a != c
    assert all(len(t) == SEQUENCE_LENGTH and t.endswith(" ") for t in a)
    assert torch.equal(text_to_digit(a), labels)
    for digit, word in enumerate(DIGIT_WORDS):  # every allowed offset occurs, and no other
        offsets = {t.index(word) for t, y in zip(a, labels.tolist(), strict=True) if y == digit}
        assert offsets == set(range(SEQUENCE_LENGTH - len(word)))
    assert torch.equal(digit_text_indices(labels, torch.Generator().manual_seed(3)), encode_indices(a))


def _write_mat(path, labels, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)
    scipy.io.savemat(str(path), {"X": x, "y": np.asarray(labels, dtype=np.uint8).reshape(-1, 1)})
    return x


def test_svhn_mat_loader_maps_label_10_to_0_and_checks_md5(tmp_path):
    labels = [10, 1, 2, 10, 9, 5]
    x = _write_mat(tmp_path / "train_32x32.mat", labels)
    images, y = load_svhn("train", root=tmp_path, md5=None)
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 32, 32)
    assert y.tolist() == [0, 1, 2, 0, 9, 5]
    assert np.array_equal(images[4].numpy(), np.transpose(x[:, :, :, 4], (2, 0, 1)))  # HWC -> CHW, sample last
    with pytest.raises(ChecksumError):
        load_svhn("train", root=tmp_path)  # the official checksum does not match a fixture
    with pytest.raises(MissingDataError, match="test_32x32.mat") as info:
        load_svhn("test", root=tmp_path)
    assert "ufldl.stanford.edu" in str(info.value)
    with pytest.raises(ValueError, match="choose one of"):
        load_svhn("extra", root=tmp_path)


def test_pairing_is_deterministic_label_consistent_and_sized_like_the_paper():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 10, (500,), generator=g), torch.randint(0, 10, (700,), generator=g)
    ia, ib = pair_by_label(a, b, multiplicity=20, seed=1)
    ja, jb = pair_by_label(a, b, multiplicity=20, seed=1)
    assert torch.equal(ia, ja) and torch.equal(ib, jb)
    assert not torch.equal(ia, pair_by_label(a, b, multiplicity=20, seed=2)[0])
    assert torch.equal(a[ia], b[ib])
    per_digit = [min(int((a == d).sum()), int((b == d).sum())) for d in range(10)]
    assert len(ia) == 20 * sum(per_digit)
    counts = torch.bincount(ia, minlength=500)  # the smaller side: every used item appears 20 times
    assert set(counts[counts > 0].tolist()) == {20}
    small = pair_by_label(a, b, multiplicity=1, max_per_digit=3, seed=0)[0]
    assert len(small) == 30


def test_street_digits_are_deterministic_varied_and_colour():
    from mopoe_lib.data.street_digits import FONT_FILES, generate_street_digits, glyph_atlas

    atlas = glyph_atlas()
    assert atlas.shape == (len(FONT_FILES), 10, 64, 64) and atlas.amax(dim=(2, 3)).min() > 0.9  # every glyph has ink
    x, y = generate_street_digits(400, seed=5)
    x2, y2 = generate_street_digits(400, seed=5)
    x3, _ = generate_street_digits(400, seed=6)
    assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(x, x3)
    assert x.shape == (400, 3, 32, 32) and x.dtype == torch.uint8 and set(y.tolist()) == set(range(10))
    colour = x.float().mean(dim=(2, 3))  # (N, 3) mean colour per image
    assert colour.std(dim=0).min() > 20  # backgrounds vary widely in every channel
    assert (x.float().amax(dim=(1, 2, 3)) - x.float().amin(dim=(1, 2, 3))).min() > 40  # every image has contrast


def test_street_digit_colours_do_not_depend_on_the_digit():
    """What chapter 6 explains: colours and polarity are drawn independently of the digit, so each digit's average
    image is nearly flat (a decoder that knows only the digit can paint nothing else), unlike single images."""
    from mopoe_lib.data.street_digits import generate_street_digits

    x, y = generate_street_digits(4000, seed=1)
    x = x.float() / 255
    averages = torch.stack([x[y == d].mean(0) for d in range(10)])
    single = x[:200].flatten(1).std(1).mean()
    assert single > 0.15
    assert averages.flatten(1).std(1).max() < 0.15 * single


def test_triples_share_the_label_and_the_three_objectives_run_unchanged(tmp_path):
    from mopoe_lib.data.mnist_svhn_text import load_mnist_svhn_text
    from mopoe_lib.data.text import decode, text_to_digit
    from mopoe_lib.likelihoods import Categorical, Laplace
    from mopoe_lib.model import MultimodalVAE
    from mopoe_lib.networks.mnist_svhn_text import (
        MNISTDecoder,
        MNISTEncoder,
        SVHNDecoder,
        SVHNEncoder,
        TextDecoder,
        TextEncoder,
    )
    from mopoe_lib.objectives import make_objective

    data = load_mnist_svhn_text("test", "fast", seed=0)
    again = load_mnist_svhn_text("test", "fast", seed=0)
    assert data.names == ("mnist", "svhn", "text") and len(data) == len(again) > 1000
    batch, batch2 = data.get_batch(torch.arange(300)), again.get_batch(torch.arange(300))
    assert all(torch.equal(a, b) for a, b in zip(batch.x, batch2.x, strict=True))
    assert batch.x[0].shape == (300, 1, 28, 28) and batch.x[1].shape == (300, 3, 32, 32)
    assert batch.x[2].dtype == torch.int64 and batch.x[2].shape == (300, 8)
    assert torch.equal(text_to_digit(decode(batch.x[2])), batch.label)  # the text names the label
    assert set(batch.label.tolist()) == set(range(10))  # shuffled: a prefix covers every digit
    mnist_rows, svhn_rows = data.index[0], data.index[1]
    assert len(set(mnist_rows.tolist())) <= 1000 and len(set(svhn_rows.tolist())) <= 2000
    small = data.subset(torch.arange(10))
    assert torch.equal(small.get_batch(torch.arange(10)).x[1], data.get_batch(torch.arange(10)).x[1])

    torch.manual_seed(0)
    encoders, decoders = [MNISTEncoder(), SVHNEncoder(), TextEncoder()], [MNISTDecoder(), SVHNDecoder(), TextDecoder()]
    model = MultimodalVAE(encoders, decoders, [Laplace(0.75), Laplace(0.75), Categorical()], latent_dim=20,
                          names=data.names,
                          recon_weights=[3072 / 784, 1.0, 3072 / 8])
    for name in ("mvae", "mmvae", "mopoe"):
        out = make_objective(name)(model, batch, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        assert torch.isfinite(out.loss) and out.recon.shape == (3,)
    generated = model.generate(batch.x, ["text"], generator=torch.Generator().manual_seed(0))
    assert generated[0].shape == (300, 1, 28, 28) and generated[2].shape == (300, 8, 71)


def test_text_reader_and_padded_classifiers():
    from mopoe_lib.data.text import encode, encode_indices
    from mopoe_lib.evaluation.mst import UNREADABLE, PerModalityClassifiers, TextReader

    texts = [" seven  ", "zero    ", "  sevxn ", "        "]
    reader = TextReader()
    assert reader(encode_indices(texts).float()).argmax(-1).tolist() == [7, 0, UNREADABLE, UNREADABLE]
    assert TextReader(exact=True)(encode(texts) * 3.0).argmax(-1).tolist() == [7, 0, UNREADABLE, UNREADABLE]
    # by likelihood, a misspelt word reads as the nearest digit word; scores are normalised over the alphabet
    assert reader(encode(texts[:3]) * 3.0).argmax(-1).tolist() == [7, 0, 7]

    class Always3(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((x.shape[0],), 3), 10).float()

    logits = PerModalityClassifiers([Always3(), reader])([torch.zeros(4, 1, 28, 28), encode_indices(texts)])
    assert logits.shape == (2, 4, 11) and logits[0].argmax(-1).tolist() == [3, 3, 3, 3]


def test_mst_classifiers_learn_round_trip_and_detect_corruption(tmp_path):
    from mopoe_lib.data.street_digits import generate_street_digits
    from mopoe_lib.evaluation.mst import (
        classifier_accuracy,
        load_mst_classifiers,
        save_mst_classifiers,
        train_digit_classifier,
    )

    x, y = generate_street_digits(600, seed=1)
    mnist_like = torch.nn.functional.one_hot(y, 10).float().repeat_interleave(79, dim=1)[:, :784].view(-1, 1, 28, 28)
    mnist = train_digit_classifier(mnist_like, y, epochs=3, progress=False)
    assert classifier_accuracy(mnist, mnist_like, y) > 0.9  # a trivially separable stand-in for MNIST
    svhn = train_digit_classifier(x, y, epochs=1, progress=False)
    state = {f"mnist.{k}": v for k, v in mnist.state_dict().items()}
    state.update({f"svhn.{k}": v for k, v in svhn.state_dict().items()})
    folder = save_mst_classifiers(state, tmp_path / "clf", {"test_accuracy": {}})
    loaded, meta = load_mst_classifiers(folder=folder)
    xs = [mnist_like[:50], x[:50].float() / 255, torch.zeros(50, 8, dtype=torch.long)]
    expected = torch.stack([mnist(xs[0]).argmax(-1), svhn(xs[1]).argmax(-1)])
    assert torch.equal(loaded(xs).argmax(-1)[:2], expected) and "sha256" in meta
    weights = folder / "classifiers.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(ChecksumError):
        load_mst_classifiers(folder=folder)
    with pytest.raises(MissingDataError, match="mopoe_lib.evaluation.mst train"):
        load_mst_classifiers(folder=tmp_path / "nothing")


def test_mst_configs_check_the_architecture_and_build_the_official_networks():
    from mopoe_lib.config import build_model, get_config

    config = get_config("mst-fast-mopoe")
    model = build_model(config)
    assert model.names == ("mnist", "svhn", "text") and model.latent_dim == 20
    assert [round(float(w), 3) for w in model.recon_weights] == [3.918, 1.0, 384.0]
    with pytest.raises(ValueError, match="choose one of mst"):
        get_config("mst-fast-mopoe", architecture="compact")
    with pytest.raises(ValueError, match="choose one of polymnist, mnist-svhn-text, celeba"):
        get_config("mst-fast-mopoe", dataset="cifar")


def test_text_reader_reads_every_digit_text_and_a_decoder_unsure_of_the_offset():
    from mopoe_lib.data.text import ALPHABET, SEQUENCE_LENGTH, decode, digit_texts, encode
    from mopoe_lib.evaluation.mst import UNREADABLE, TextReader

    labels = torch.arange(10).repeat(40)
    texts = digit_texts(labels, torch.Generator().manual_seed(0))
    reader = TextReader()
    assert torch.equal(reader(encode(texts)).argmax(-1), labels)  # the data's own texts, every digit and offset
    # a decoder that knows the word but not where it starts: the average of the word at each of its offsets
    for d, word in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")):
        at = [" " * o + word + " " * (SEQUENCE_LENGTH - o - len(word)) for o in range(SEQUENCE_LENGTH - len(word))]
        mixed = encode(at).mean(dim=0, keepdim=True)
        if len(at) > 2:  # the most likely character at each position then spells no word
            assert TextReader(exact=True)(mixed).argmax(-1).item() == UNREADABLE, decode(mixed)
        scores = reader(mixed)
        assert scores.argmax(-1).item() == d and scores[0, UNREADABLE] == float("-inf")
    # against a direct sum over words and offsets, on random distributions
    logits = torch.randn(3, SEQUENCE_LENGTH, len(ALPHABET), generator=torch.Generator().manual_seed(1))
    probs = torch.softmax(logits * 3, dim=-1)
    scores = reader(probs)
    for d, word in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")):
        for b in range(3):
            total = 0.0
            for o in range(SEQUENCE_LENGTH - len(word)):
                text = " " * o + word + " " * (SEQUENCE_LENGTH - o - len(word))
                total += math.prod(float(probs[b, i, ALPHABET.index(c)]) for i, c in enumerate(text))
            assert math.isclose(float(scores[b, d]), math.log(total), rel_tol=1e-4)
