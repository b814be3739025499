"""Item / user encoders and fusion scorer: shapes, dtypes, causality, cold items, overfit one batch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from crossrec_core.config import ItemEncoderConfig, ModelConfig, UserEncoderConfig
from crossrec_core.data.dataset import Sequences
from crossrec_core.models.fusion import CrossRecNet, FusionScorer
from crossrec_core.models.item_encoder import ItemEncoder, attribute_token_matrix, build_attribute_vocab
from crossrec_core.data.dataset import time_gap_buckets
from crossrec_core.models.user_encoder import UserEncoder


def _item_encoder(**kw) -> ItemEncoder:
    torch.manual_seed(0)
    enc = ItemEncoder(ItemEncoderConfig(dim=16, **kw), n_items=6, n_categories=3, attr_vocab_size=5, text_dim=8, n_vector_columns=2)
    with torch.no_grad():
        enc.item_category.copy_(torch.tensor([0, 0, 1, 1, 2, 2]))
        enc.attr_tokens.copy_(torch.tensor([[2, 3] + [0] * 14] * 3 + [[4] + [0] * 15] * 2 + [[0] * 16]))
        enc.text_vecs.copy_(torch.randn(6, 8))
        enc.extra_vecs.copy_(torch.randn(6, 2))
    return enc


def test_item_encoder_shape_dtype_all_and_subset():
    enc = _item_encoder().eval()
    all_vecs = enc()
    assert all_vecs.shape == (6, 16) and all_vecs.dtype == torch.float32
    sub = enc(torch.tensor([[4, 1], [0, 0]]))
    assert sub.shape == (2, 2, 16)
    torch.testing.assert_close(sub[0, 0], all_vecs[4])


def test_cold_item_is_carried_by_text_and_category():
    enc = _item_encoder().eval()
    with torch.no_grad():
        enc.id_emb.weight.normal_()  # pretend item 5 got a (noisy) ID vector
        enc.id_mask[5] = 0.0  # ...but it has no training interactions
    no_id = _item_encoder(use_id=False).eval()
    no_id.load_state_dict({k: v for k, v in enc.state_dict().items() if not k.startswith("id_emb")})
    torch.testing.assert_close(enc(torch.tensor([5])), no_id(torch.tensor([5])))
    assert not torch.allclose(enc(torch.tensor([4])), no_id(torch.tensor([4])))


def test_cold_item_id_is_masked_in_training_too():
    enc = _item_encoder().train()
    with torch.no_grad():
        enc.id_mask.zero_()
    no_id = _item_encoder(use_id=False).train()
    no_id.load_state_dict({k: v for k, v in enc.state_dict().items() if not k.startswith("id_emb")})
    torch.testing.assert_close(enc(), no_id())


def test_attribute_vocab_and_tokens_exact():
    items = pd.DataFrame({"brand": ["Acme", "acme", "Zed", ""], "tags": ["red, blue", "blue", "", "red"]})
    vocab = build_attribute_vocab(items, ("brand", "tags"), 100)
    assert vocab == ["<pad>", "<unk>", "brand=acme", "tags=blue", "tags=red", "brand=zed"]
    tok = attribute_token_matrix(items, ("brand", "tags"), vocab, 3)
    assert tok.tolist() == [[2, 4, 3], [2, 3, 0], [5, 0, 0], [4, 0, 0]]


def test_time_gap_buckets_exact():
    b = time_gap_buckets(np.array([[0, 0, 1, 3, 100000]]), 8)
    # gaps: -, 0, 1, 2, 99997 -> 1 + floor(ln(1+gap)) capped at 7
    assert b.tolist() == [[0, 1, 1, 2, 7]]


def test_history_windows_left_padded_exact():
    seqs = Sequences(np.array([0, 3, 3, 5]), np.array([5, 6, 7, 8, 9], np.int32), np.arange(5, dtype=np.int64), np.array([0, 1, 0, 0, 1], np.int16))
    w = seqs.windows(np.array([0, 1, 2, 0]), np.array([3, 3, 5, 2]), width=2, n_time_buckets=4)
    assert w["items"].tolist() == [[6, 7], [-1, -1], [8, 9], [5, 6]]
    assert w["events"].tolist() == [[2, 1], [0, 0], [1, 2], [1, 2]]
    assert w["valid"].tolist() == [[True, True], [False, False], [True, True], [True, True]]
    assert w["gaps"].tolist() == [[0, 1], [0, 0], [0, 1], [0, 1]]


# "transformer-post": SASRec's post-LN block layout with its 4x feed-forward (UserEncoderConfig.block)
KINDS = ["transformer", "transformer-post", "transformer-first", "gru", "lstm"]


def _user_cfg(kind: str, **kw) -> UserEncoderConfig:
    if kind == "transformer-post":
        return UserEncoderConfig(kind="transformer", block="post", ff_mult=4, **kw)
    if kind == "transformer-first":
        return UserEncoderConfig(kind="transformer", positions="first", **kw)
    return UserEncoderConfig(kind=kind, **kw)


def test_post_block_is_sasrecs_layout_and_pre_stays_the_default():
    post = UserEncoder(_user_cfg("transformer-post", dim=16, max_len=4), n_event_types=1)
    pre = UserEncoder(UserEncoderConfig(dim=16, max_len=4), n_event_types=1)
    assert post.in_norm is not None and pre.in_norm is None
    assert post.blocks[0].ff[0].out_features == 64 and pre.blocks[0].ff[0].out_features == 32
    assert post.blocks[0].post_norm and not pre.blocks[0].post_norm
    # post-LN: every block's output is a LayerNorm output (zero mean, unit variance per position)
    x = torch.randn(2, 3, 16)
    y = post.blocks[0](x, torch.ones(1, 1, 3, 3, dtype=torch.bool).tril())
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_user_encoder_shape_and_causality(kind):
    torch.manual_seed(0)
    enc = UserEncoder(_user_cfg(kind, dim=16, max_len=6, dropout=0.0), n_event_types=3).eval()
    x = torch.randn(2, 5, 16)
    ev = torch.ones(2, 5, dtype=torch.long)
    gaps = torch.zeros(2, 5, dtype=torch.long)
    valid = torch.tensor([[False, True, True, True, True], [True] * 5])
    h = enc(x, ev, gaps, valid)
    assert h.shape == (2, 5, 16) and h.dtype == torch.float32 and torch.isfinite(h).all()
    x2 = x.clone()
    x2[:, 4] = torch.randn(2, 16)  # change the most recent event only
    h2 = enc(x2, ev, gaps, valid)
    torch.testing.assert_close(h[:, :4], h2[:, :4])  # earlier states never see the future
    assert not torch.allclose(h[:, 4], h2[:, 4])


def _history(n: int, T: int, d: int = 16) -> tuple[torch.Tensor, ...]:
    """Return one left-padded window (1, T) with n real events; the padding holds noise, as real windows may."""
    x = torch.randn(1, T, d)
    ev = torch.randint(1, 4, (1, T))
    gaps = torch.randint(0, 8, (1, T))
    valid = torch.arange(T).unsqueeze(0) >= T - n
    return x, ev.where(valid, 0), gaps.where(valid, 0), valid


def _alone(enc: UserEncoder, row: tuple[torch.Tensor, ...], n: int) -> torch.Tensor:
    """Encode the last n columns of a one-row window by themselves, without any padding."""
    return enc(*(t[:, -n:] for t in row))


@pytest.mark.parametrize("kind", KINDS)
def test_a_state_does_not_depend_on_the_other_histories_in_the_batch(kind):
    torch.manual_seed(0)
    enc = UserEncoder(_user_cfg(kind, dim=16, max_len=12, n_layers=2, dropout=0.0), n_event_types=3).eval()
    T = 10
    short, long_, empty = _history(3, T), _history(T, T), _history(0, T)
    batch = tuple(torch.cat(parts) for parts in zip(short, long_, empty))
    with torch.no_grad():
        h = enc(*batch)
        # the short row gets 7 columns of left padding from the long one; its last state must not see them
        torch.testing.assert_close(h[0, -1], _alone(enc, short, 3)[0, -1])
        torch.testing.assert_close(h[1, -1], _alone(enc, long_, T)[0, -1])
    assert torch.isfinite(h).all()  # a row without events neither crashes nor poisons the batch


@pytest.mark.parametrize("kind", KINDS)
def test_the_last_column_alone_is_the_full_passs_last_state(kind):
    """last_only (what recommending asks for) computes one query row in the Transformer's last block: the states
    must be the full pass's last column, padded rows and an empty history included."""
    torch.manual_seed(0)
    enc = UserEncoder(_user_cfg(kind, dim=16, max_len=12, n_layers=2, n_heads=2, dropout=0.0), n_event_types=3).eval()
    T = 10
    batch = tuple(torch.cat(parts) for parts in zip(*(_history(n, T) for n in (T, 1, 3, 0, 7))))
    with torch.no_grad():
        full, last = enc(*batch), enc(*batch, last_only=True)
    assert last.shape == (5, 16)
    torch.testing.assert_close(last, full[:, -1], atol=1e-5, rtol=1e-5)
    assert not torch.equal(last[0], last[2])  # not one state for all


@pytest.mark.parametrize("kind", ["gru", "lstm", "transformer-first"])
def test_every_real_column_of_a_padded_row_is_the_state_of_its_prefix_alone(kind):
    """What a training step fits at each column is what serving computes for that prefix as a whole history."""
    torch.manual_seed(1)
    enc = UserEncoder(_user_cfg(kind, dim=16, max_len=12, n_layers=2, dropout=0.0), n_event_types=3).eval()
    T, n = 8, 5
    row = _history(n, T)
    with torch.no_grad():
        h = enc(*row)
        for k in range(1, n + 1):  # the prefix of the first k events ends in column T - n + k - 1
            prefix = tuple(t[:, : T - n + k] for t in row)
            torch.testing.assert_close(h[0, T - n + k - 1], _alone(enc, prefix, k)[0, -1])


def test_positions_counted_back_from_the_last_column_give_a_prefix_other_positions_than_serving_does():
    """Why "first" exists: with "recent" the state a training step fits for a prefix is not the one serving computes."""
    torch.manual_seed(1)
    enc = UserEncoder(UserEncoderConfig(dim=16, max_len=12, dropout=0.0, positions="recent"), n_event_types=3).eval()
    T, n = 8, 5
    row = _history(n, T)
    with torch.no_grad():
        h = enc(*row)
        prefix = tuple(t[:, : T - 2] for t in row)  # the first 3 events
        assert not torch.allclose(h[0, T - 3], _alone(enc, prefix, 3)[0, -1], atol=1e-4)
        torch.testing.assert_close(h[0, -1], _alone(enc, row, n)[0, -1])  # the whole history agrees


def test_models_saved_before_positions_existed_load_with_the_positions_they_were_trained_with():
    d = ModelConfig().to_dict()
    del d["user"]["positions"]
    assert ModelConfig.from_dict(d).user.positions == "recent"
    d["user"]["positions"] = "first"
    assert ModelConfig.from_dict(d).user.positions == "first"
    with pytest.raises(Exception, match="positions"):
        UserEncoderConfig(positions="middle")


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_recurrent_weights_keep_their_saved_names(kind):
    """Saved GRU models hold user_encoder.gru.* weights; renaming the module would stop them loading."""
    cfg = ModelConfig(item=ItemEncoderConfig(dim=16, use_text=False), user=UserEncoderConfig(kind=kind, dim=16, max_len=4))
    net = CrossRecNet(cfg, n_items=4, n_categories=1, n_event_types=1, attr_vocab_size=2, text_dim=0, n_vector_columns=0)
    rnn_keys = {k.split(".")[1] for k in net.state_dict() if k.startswith("user_encoder.") and "weight_ih_l0" in k}
    assert rnn_keys == {kind}


def test_empty_history_gives_finite_state():
    enc = UserEncoder(UserEncoderConfig(dim=16, max_len=4), n_event_types=1).eval()
    h = enc(torch.zeros(1, 1, 16), torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.bool))
    assert torch.isfinite(h).all()


@pytest.mark.parametrize("kind", KINDS)
def test_overfit_one_batch(kind):
    torch.manual_seed(0)
    cfg = ModelConfig(item=ItemEncoderConfig(dim=16, use_text=False, id_dropout=0.0), user=_user_cfg(kind, dim=16, max_len=4, dropout=0.0))
    net = CrossRecNet(cfg, n_items=8, n_categories=2, n_event_types=1, attr_vocab_size=2, text_dim=0, n_vector_columns=0)
    items = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [7, 6, 5, 4]])
    targets = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0], [6, 5, 4, 3]])
    ev = torch.ones_like(items)
    gaps = torch.zeros_like(items)
    valid = torch.ones_like(items, dtype=torch.bool)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(100):
        h = net.user_states(items, ev, gaps, valid)
        logits = h @ net.item_encoder().T
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 8), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    pred = (net.user_states(items, ev, gaps, valid) @ net.item_encoder().T).argmax(-1)
    assert (pred == targets).float().mean() == 1.0


def test_fusion_scorer_shape_standardises_inputs_and_resets_from_a_seed():
    from crossrec_core.models.features import N_FEATURES

    f = FusionScorer()
    x = torch.randn(3, 5, N_FEATURES) * 7 + 3
    f.set_normalisation(x.reshape(-1, N_FEATURES).numpy())
    torch.testing.assert_close(f.mean, x.reshape(-1, N_FEATURES).mean(0))
    out = f(x)
    assert out.shape == (3, 5) and out.dtype == torch.float32
    # the same seed gives the same scorer; another seed another one (hidden layers; base_weight 0 shows them)
    f.base_weight.fill_(0.0)
    f.reset_parameters(1)
    a = f(x).detach().clone()
    f.reset_parameters(1)
    torch.testing.assert_close(f(x), a)
    f.reset_parameters(2)
    assert not torch.allclose(f(x), a)


def test_residual_fusion_scorer_starts_exactly_at_the_retrieval_score_and_moves_from_there():
    from crossrec_core.models.features import FEATURES, N_FEATURES

    f = FusionScorer()
    x = torch.randn(4, 6, N_FEATURES) * 3
    f.set_normalisation(x.reshape(-1, N_FEATURES).numpy())
    for seed in (0, 1):
        f.reset_parameters(seed)
        torch.testing.assert_close(f(x), x[..., FEATURES.index("retrieval")])
    # one gradient step on a listwise loss moves it off retrieval (the residual layers learn)
    opt = torch.optim.Adam(f.parameters(), lr=1e-2)
    loss = -torch.log_softmax(f(x), dim=1)[:, 0].mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    assert not torch.allclose(f(x), x[..., FEATURES.index("retrieval")])


def test_attribute_bag_is_the_mean_of_real_token_embeddings():
    import torch

    from crossrec_core.config import ItemEncoderConfig
    from crossrec_core.models.item_encoder import ItemEncoder

    cfg = ItemEncoderConfig(dim=8, use_id=False, use_category=False, use_text=False, attr_max_tokens=3, attr_encoder="bag")
    enc = ItemEncoder(cfg, n_items=2, n_categories=1, attr_vocab_size=5, text_dim=0, n_vector_columns=0).eval()
    enc.attr_tokens.copy_(torch.tensor([[2, 3, 0], [0, 0, 0]]))
    with torch.no_grad():
        out = enc()
        w = enc.attr_emb.weight
        torch.testing.assert_close(out[0], (w[2] + w[3]) / 2)
        torch.testing.assert_close(out[1], torch.zeros(8))  # no attributes: no contribution
