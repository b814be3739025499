"""Config dataclasses: defaults are valid, every bad value raises ConfigError, JSON round trip."""

from __future__ import annotations

import dataclasses

import pytest

from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig, default_config
from crossrec_core.errors import ConfigError


def test_defaults_are_valid_and_consistent():
    cfg = ModelConfig()
    assert cfg.item.dim == cfg.user.dim == cfg.dim == 64
    assert cfg.user.kind == "transformer" and cfg.user.max_len == 50
    assert cfg.train.patience == 10 and cfg.train.loss == "auto"


@pytest.mark.parametrize(
    "klass, field, value",
    [
        (ItemEncoderConfig, "dim", 4),
        (ItemEncoderConfig, "dim", 64.0),
        (ItemEncoderConfig, "use_text", "yes"),
        (ItemEncoderConfig, "id_dropout", 1.0),
        (ItemEncoderConfig, "id_dropout", -0.1),
        (ItemEncoderConfig, "attr_max_tokens", 0),
        (ItemEncoderConfig, "attr_vocab_max", 1),
        (ItemEncoderConfig, "attr_kernel", 10),
        (ItemEncoderConfig, "text_model_dir", "  "),
        (ItemEncoderConfig, "text_max_seq_length", 4),
        (ItemEncoderConfig, "text_batch_size", 0),
        (UserEncoderConfig, "kind", "rnn"),
        (UserEncoderConfig, "dim", 2000),
        (UserEncoderConfig, "max_len", 1),
        (UserEncoderConfig, "n_layers", 0),
        (UserEncoderConfig, "n_heads", 3),  # 64 not divisible by 3
        (UserEncoderConfig, "dropout", 1.5),
        (UserEncoderConfig, "use_events", 1),
        (UserEncoderConfig, "n_time_buckets", 1),
        (TrainConfig, "epochs", 0),
        (TrainConfig, "patience", 0),
        (TrainConfig, "batch_size", 0),
        (TrainConfig, "lr", 0.0),
        (TrainConfig, "weight_decay", -1.0),
        (TrainConfig, "loss", "hinge"),
        (TrainConfig, "full_softmax_max_items", 0),
        (TrainConfig, "n_negatives", 0),
        (TrainConfig, "seen_target_weight", 2.0),
        (TrainConfig, "fusion_candidates", 1),
        (TrainConfig, "fusion_epochs", -1),
        (TrainConfig, "fusion_max_positions", 0),
        (TrainConfig, "seed", -1),
        (TrainConfig, "device", "tpu"),
        (TrainConfig, "eval_batch_size", 0),
        (TrainConfig, "progress_every", 0),
    ],
)
def test_each_bad_value_raises_config_error(klass, field, value):
    with pytest.raises(ConfigError):
        klass(**{field: value})


@pytest.mark.parametrize("kind", ["transformer", "gru", "lstm"])
def test_every_encoder_kind_round_trips(kind):
    cfg = default_config(encoder=kind)
    assert cfg.user.kind == kind and ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_a_bad_encoder_kind_names_the_good_ones():
    with pytest.raises(ConfigError, match="'transformer', 'gru' or 'lstm', got 'rnn'"):
        UserEncoderConfig(kind="rnn")


def test_item_encoder_needs_one_part():
    with pytest.raises(ConfigError, match="at least one part"):
        ItemEncoderConfig(use_id=False, use_category=False, use_attributes=False, use_text=False, use_vectors=False)


def test_item_and_user_dims_must_match():
    with pytest.raises(ConfigError, match="must be equal"):
        ModelConfig(item=ItemEncoderConfig(dim=32), user=UserEncoderConfig(dim=64))


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3  # type: ignore[misc]


def test_json_round_trip_and_unknown_keys():
    cfg = default_config(encoder="gru", epochs=5, seed=7, device="cpu")
    assert (cfg.user.kind, cfg.train.epochs, cfg.train.seed, cfg.train.device) == ("gru", 5, 7, "cpu")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    bad = cfg.to_dict()
    bad["train"]["epochz"] = 3
    with pytest.raises(ConfigError, match="epochz"):
        ModelConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="section"):
        ModelConfig.from_dict({"optim": {}})


def test_attr_encoder_defaults_to_bag_but_old_saved_configs_keep_the_cnn():
    from crossrec_core.config import ModelConfig

    assert ModelConfig().item.attr_encoder == "bag"
    assert ModelConfig.from_dict(ModelConfig().to_dict()).item.attr_encoder == "bag"
    old = ModelConfig().to_dict()
    del old["item"]["attr_encoder"]  # a config.json written before the bag existed
    assert ModelConfig.from_dict(old).item.attr_encoder == "cnn"


def test_changed_config_applies_each_change_parsed_as_json_else_text():
    from crossrec_core.config import changed_config

    cfg = changed_config('train.patience:5,user.kind:gru,train.cpu_bf16:false,item.text_model_dir:/models/x,train.lr:1e-3')
    assert cfg.train.patience == 5 and cfg.user.kind == "gru" and cfg.train.cpu_bf16 is False and cfg.train.lr == 1e-3
    assert cfg.item.text_model_dir == "/models/x"  # not JSON: kept as text
    assert changed_config("") == ModelConfig() and changed_config("train.seed:7", cfg).user.kind == "gru"
