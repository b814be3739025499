"""Frozen configuration dataclasses for the model and its training, validated on construction.

Defaults run on a 2-core laptop and are meant to be good without tuning: early stopping picks the
number of epochs, and the loss switches from a full-catalogue softmax to a sampled softmax by itself
when the catalogue is large.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from crossrec_core.errors import ConfigError

CONFIG_VERSION = 1


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class ItemEncoderConfig:
    """How an item becomes a vector: a sum of switchable parts (so each part's value can be measured)."""

    dim: int = 64
    use_id: bool = True
    use_category: bool = True
    # Where the category embedding goes: "both" (history items and the items scored) or "input" (history
    # items only). Why "input" exists: a category term on the scored side gives every item of a category
    # a shared score that follows the categories already in the history, which narrows lists to them.
    category_side: Literal["both", "input"] = "both"
    use_attributes: bool = True
    use_text: bool = True
    use_vectors: bool = True
    # Share of the catalogue whose ID embedding is dropped in a training step (text + category then
    # carry those items). Off by default: measured on six logs (bench/RESULTS.md "Where crossrec
    # trailed SASRec"), 0.25 made the model stop learning after a few epochs on logs where item-to-item
    # order carries the signal (dense-a NDCG@10 0.039 -> 0.043 without it, complement chains 0.279 ->
    # 0.301) and gained nothing on the sparse ones (hm 0.038 either way). Cold items are still carried
    # by text + category: their ID row is masked to zero.
    id_dropout: float = 0.0
    # The ID part of an item with n training events is used in a training step with probability
    # n / (n + id_shrinkage) and weighted by that probability when scoring (0 = every seen item's ID row
    # always, at full weight): an ID row fitted on one or two events is mostly noise, and dropping it
    # makes title text + category learn to carry such items; well-known items keep theirs (bench/RESULTS.md,
    # session 12).
    id_shrinkage: float = 0.0
    attr_max_tokens: int = 16
    attr_vocab_max: int = 20000
    attr_kernel: int = 3
    # "bag": mean of the attribute-token embeddings; "cnn": a 1-D conv + max-pool over them. The bag is
    # the default: every training step re-encodes the whole catalogue, and the CNN made that the
    # slowest part of a step (attribute tokens carry no order worth a convolution).
    attr_encoder: Literal["bag", "cnn"] = "bag"
    text_model_dir: str | None = None  # None = the bundled all-MiniLM-L6-v2
    text_max_seq_length: int = 32  # titles are short (median well under 32 tokens); 32 keeps CPU encoding fast
    text_batch_size: int = 128

    def __post_init__(self) -> None:
        _check(_is_int(self.dim) and 8 <= self.dim <= 1024, f"item dim must be an integer between 8 and 1024, got {self.dim!r}.")
        for name in ("use_id", "use_category", "use_attributes", "use_text", "use_vectors"):
            _check(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}.")
        _check(
            self.use_id or self.use_category or self.use_attributes or self.use_text or self.use_vectors,
            "The item encoder needs at least one part: enable use_id, use_category, use_attributes, use_text or use_vectors.",
        )
        _check(self.category_side in ("both", "input"), f"category_side must be 'both' or 'input', got {self.category_side!r}.")
        _check(_is_num(self.id_dropout) and 0.0 <= self.id_dropout < 1.0, f"id_dropout must be in [0, 1), got {self.id_dropout!r}.")
        _check(_is_num(self.id_shrinkage) and 0.0 <= self.id_shrinkage <= 1000.0, f"id_shrinkage must be in [0, 1000], got {self.id_shrinkage!r}.")
        _check(_is_int(self.attr_max_tokens) and 1 <= self.attr_max_tokens <= 256, f"attr_max_tokens must be 1..256, got {self.attr_max_tokens!r}.")
        _check(_is_int(self.attr_vocab_max) and self.attr_vocab_max >= 2, f"attr_vocab_max must be an integer >= 2, got {self.attr_vocab_max!r}.")
        _check(self.attr_encoder in ("bag", "cnn"), f"attr_encoder must be 'bag' or 'cnn', got {self.attr_encoder!r}.")
        _check(_is_int(self.attr_kernel) and 1 <= self.attr_kernel <= 9, f"attr_kernel must be 1..9, got {self.attr_kernel!r}.")
        _check(
            self.text_model_dir is None or (isinstance(self.text_model_dir, str) and self.text_model_dir.strip() != ""),
            f"text_model_dir must be a folder path or empty, got {self.text_model_dir!r}.",
        )
        _check(_is_int(self.text_max_seq_length) and 8 <= self.text_max_seq_length <= 512, f"text_max_seq_length must be 8..512, got {self.text_max_seq_length!r}.")
        _check(_is_int(self.text_batch_size) and 1 <= self.text_batch_size <= 4096, f"text_batch_size must be 1..4096, got {self.text_batch_size!r}.")


@dataclass(frozen=True)
class UserEncoderConfig:
    """The user-interest encoder over the time-ordered history."""

    kind: Literal["transformer", "gru", "lstm"] = "transformer"
    dim: int = 64
    max_len: int = 50  # longer histories rarely change the top-10
    n_layers: int = 2
    n_heads: int = 1
    # Transformer blocks: "pre" normalises before each sub-layer (stable at any depth); "post" is SASRec's
    # layout (LayerNorm of the summed input embeddings, then after each residual).
    block: Literal["pre", "post"] = "pre"
    ff_mult: int = 2  # feed-forward width as a multiple of dim (SASRec: 4)
    # Transformer positions: "first" counts from the window's first real event (SASRec's), so a history
    # prefix carries the same positions in training as when it is the whole input at serving time;
    # "recent" counts back from the window's last column (models saved before the option existed).
    positions: Literal["first", "recent"] = "recent"
    dropout: float = 0.2
    use_events: bool = True
    use_time_gaps: bool = True
    n_time_buckets: int = 18  # log-scale (natural log) buckets of seconds: covers a few months

    def __post_init__(self) -> None:
        _check(self.kind in ("transformer", "gru", "lstm"), f"encoder kind must be 'transformer', 'gru' or 'lstm', got {self.kind!r}.")
        _check(_is_int(self.dim) and 8 <= self.dim <= 1024, f"user dim must be an integer between 8 and 1024, got {self.dim!r}.")
        _check(_is_int(self.max_len) and 2 <= self.max_len <= 1000, f"max_len must be 2..1000, got {self.max_len!r}.")
        _check(_is_int(self.n_layers) and 1 <= self.n_layers <= 8, f"n_layers must be 1..8, got {self.n_layers!r}.")
        _check(_is_int(self.n_heads) and 1 <= self.n_heads <= 16, f"n_heads must be 1..16, got {self.n_heads!r}.")
        _check(self.dim % self.n_heads == 0, f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads}).")
        _check(self.block in ("pre", "post"), f"block must be 'pre' or 'post', got {self.block!r}.")
        _check(_is_int(self.ff_mult) and 1 <= self.ff_mult <= 8, f"ff_mult must be 1..8, got {self.ff_mult!r}.")
        _check(self.positions in ("first", "recent"), f"positions must be 'first' or 'recent', got {self.positions!r}.")
        _check(_is_num(self.dropout) and 0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout!r}.")
        _check(isinstance(self.use_events, bool) and isinstance(self.use_time_gaps, bool), "use_events / use_time_gaps must be true or false.")
        _check(_is_int(self.n_time_buckets) and 2 <= self.n_time_buckets <= 64, f"n_time_buckets must be 2..64, got {self.n_time_buckets!r}.")


@dataclass(frozen=True)
class TrainConfig:
    """The fit loop: loss, optimiser, early stopping, fusion head, device."""

    epochs: int = 100  # a cap: early stopping on validation NDCG@10 normally ends far earlier
    # Epochs without a better validation NDCG@10 before stopping. Why 10 (RecBole's stopping_step): the
    # validation curve of a sparse or order-driven log is flat and noisy for several epochs before it
    # rises again; with 3, crossrec stopped at epoch 3-7 on logs where it was still learning (dense-c
    # 0.029 -> 0.032, complement chains best epoch 21 -> 39; bench/RESULTS.md). The best epoch's
    # weights are kept, so the extra epochs cost time, not quality.
    patience: int = 10
    batch_size: int = 128  # sequences per step (each holds up to max_len positions)
    lr: float = 2e-3
    weight_decay: float = 0.0
    # "auto": full-catalogue softmax CE when n_items <= full_softmax_max_items, else sampled softmax.
    # "bce": SASRec's original one-negative BCE (kept as the reference the benchmark compares to).
    loss: Literal["auto", "ce", "sampled", "bce"] = "auto"
    full_softmax_max_items: int = 12000
    n_negatives: int = 1024  # shared uniform negatives per batch for the sampled softmax
    # Catalogues of at least this many items (with the sampled softmax or BCE, no weight decay, not
    # under DDP) give the item-ID table a sparse gradient and a lazy Adam: a step then moves only the
    # rows its batch touched, and its cost stops growing with the catalogue (500k items: ~1.2 s ->
    # ~0.06 s a step). Why not always: lazy Adam moves rarely seen rows less than Adam does, and
    # it cost accuracy on 27k-55k-item logs (amazon NDCG@10 0.039 -> 0.033, bench/RESULTS.md).
    sparse_id_min_items: int = 200_000
    # Targets the user already had earlier can never be recommended (seen items are excluded):
    # their loss weight. 1 = keep as is, 0 = drop them.
    seen_target_weight: float = 0.0
    # Weight of the next-CATEGORY cross-entropy added to the next-item loss at every position (0 = no
    # category head). With a head, the user state also predicts the category of the next event, and
    # its log P(category | history) replaces the first-order transition table in the category term
    # of retrieval (models/prior.py), whose weight is still chosen on validation.
    category_loss_weight: float = 0.0
    # P(next category | history) in the category term of retrieval: the recent flow mixed with the last
    # two categories and the shopper's habit, mixture weights fitted on validation (models/category_history.py).
    # False = the recent flow alone (what models trained before session 8 use).
    category_mix: bool = True
    # Choose on validation which shoppers get the cold-start list (category flow, popularity, similarity to
    # their items) instead of the encoders' one: those with at most 2, 1 or 0 known events, by NDCG@10 with
    # novel-category targets weighing fusion_novel_weight (ties keep 2, the fixed rule before). Why: the
    # fixed rule was right on hm (most of its novel-category shoppers have 1-2 events and the cold list
    # serves them better) and wrong on chain-a, where the encoders serve 1-2 event shoppers far better
    # (bench/RESULTS.md, session 9). False = the fixed rule.
    cold_choice: bool = True
    # The pool the fusion scorer re-ranks (and the probability is normalised over). Why 100, not 50:
    # the test target is in the top 100 far more often (demo 0.67 against 0.59, dense-b 0.28 against
    # 0.18), and with the scorer refit on the same models NDCG@10 rose on all five logs measured
    # (significantly on the demo store and chain-a), at twice the scorer's cost per list
    # (bench/RESULTS.md, session 7).
    fusion_candidates: int = 100
    # Of those candidates, this many are the most popular unseen items of categories the shopper has
    # never touched (the rest: the best by retrieval). Why: retrieval ranks a shopper's own categories
    # first, so the items a first step into a new category lands on often never reach the fusion
    # scorer, whose cat_new / popularity features could lift them (bench/RESULTS.md). 0 = retrieval only.
    fusion_novel_candidates: int = 20
    fusion_epochs: int = 20  # passes over the held-out candidates (small: one target per user)
    fusion_max_positions: int = 20000
    # Weight of a held-out target in a category new to the user in the fusion scorer's listwise loss
    # (and in its early stopping). Why 2, with 10 novel candidates: measured on four logs (seed 42,
    # bench/RESULTS.md, session 6), weight 1 with retrieval-only candidates left novel-category shoppers
    # below plain popularity on dense-b (0.017); 2 with the novel slots lifted them there (0.042) and
    # on the demo store, hm and chain-a for at most 0.003 NDCG@10 on all shoppers; 4 traded all shoppers
    # for novel ones until the re-rank lost on validation and switched itself off.
    fusion_novel_weight: float = 2.0
    seed: int = 42
    device: str = "auto"
    eval_batch_size: int = 512
    # early stopping on a seeded sample of this many validation users (cheap, and stable enough)
    valid_max_users: int = 2000
    # after training, blend a log-prior (popularity + category flow) into retrieval with weights chosen
    # on validation; stays off when it does not help (models/prior.py)
    prior_blend: bool = True
    progress_every: int = 10  # steps between progress callbacks
    # Batches of windows of similar length (less padding to encode) or drawn at random. A step averages the
    # loss over its targets, so in a batch of short windows each target weighs more than in one of long ones:
    # bucketing gives short histories (and the last, partial window of a long one) more weight per target
    # than random batches, as RecBole's SASRec draws them, do.
    length_buckets: bool = True
    # On a CPU that multiplies bfloat16 natively (AVX512-BF16 or AMX), the softmax's matrix products (full catalogue,
    # and since session 26 the sampled one's) run in bfloat16 (training/softmax.py: log-sum-exp, gradients' sums and the
    # weights stay float32). Why: those products are up to half of a step on a CPU, and run ~2.5x faster in bfloat16
    # (bench/RESULTS.md, sessions 22 and 26). Ignored
    # on other CPUs (oneDNN emulates bfloat16 there, slower than float32) and on a GPU (autocast, TrainConfig.device).
    cpu_bf16: bool = True
    # Train twice, with length buckets and with random batches, and keep the run with the better validation
    # figure (training/batch_race.py batch_runs: which weighting suits a log differs; twice the epochs' time).
    batch_choice: bool = True
    # The two runs take turns, an epoch each; one whose best validation figure trails the other's by more than one
    # standard error (paired over shoppers) this many rounds in a row is dropped (0 = never: both run to their
    # own early stopping). Why: a log that clearly wants one weighting then pays for the other only a few epochs.
    batch_drop_after: int = 3
    # Each window's targets weigh 1 / its number of targets, so every window counts the same in a step
    # whatever its length (what length buckets do, approximately, by averaging over similar windows).
    window_weights: bool = False
    # With window_weights, a window of n targets weighs n ** (1 - window_weight_power) in all: 1 makes every
    # window count the same, 0 every target (random batches' weighting), between the two a compromise.
    window_weight_power: float = 1.0
    # What window_weights weighs alike: each "window", or each "shopper" (all of a shopper's windows together,
    # as the test counts each shopper once; a long history's short first window then weighs no more per target)
    weight_unit: Literal["window", "shopper"] = "window"
    # A step's loss: the weighted mean over its own targets ("batch"), or their weighted sum over the mean
    # weight a batch holds ("target"): then every target weighs the same whatever batch it falls in, even
    # when length buckets put short windows together.
    step_mean: Literal["batch", "target"] = "batch"
    # Each shopper's targets together weigh at most this quantile of the shoppers' target counts (0 = off): a
    # shopper of n targets counts as min(n, c) of them, so the few longest histories cannot carry the fit (hm: a
    # tenth of the shoppers hold half the targets) while shoppers up to c keep every target alike. Measured at 0.9 as
    # one run of random batches in place of the batch race (bench/RESULTS.md, session 25): level or better on hm, the
    # demo store, dense-c and chain-a in half the time, +14 % on drift-s's novel-category shoppers, but -3 % (drift-s)
    # and -11 % (drift-b) on all shoppers of the drift logs, so not the default.
    shopper_cap_quantile: float = 0.0
    # Add an item-kNN (co-occurrence) term to retrieval with a weight chosen on validation NDCG@10
    # (0 when it does not help): sparse catalogues reward item-to-item co-occurrence.
    knn_blend: bool = True
    # Which neighbour table the item-kNN term uses: co-occurrence ("bought together") or next-item rules
    # ("bought next": the items that follow an item, models/item_knn.py), each with its weight chosen on
    # validation, the better kept (ties keep co-occurrence). Why: on a shop whose shoppers buy a kit piece
    # by piece, the next purchase follows the last one, which co-occurrence cannot tell from the one before
    # (bench/RESULTS.md, session 11). False = co-occurrence only (models trained before session 11).
    knn_choice: bool = True
    # Early stopping on the validation NDCG@10 of the encoders plus the item-neighbour term (each table at a
    # few weights, the best counts; training/stopping.py), not of the encoders alone. Why: where the term
    # carries the next item, the encoders' late epochs change little of what ships (bench/RESULTS.md,
    # session 12). False = the encoders alone (models trained before session 12).
    stop_on_retrieval: bool = True
    # Validate (and ship) an exponential moving average of the weights instead of the last step's, with this
    # half-life in epochs (0 = off: the last step's weights). The steps are unchanged; only the weights that
    # validation judges and the best epoch keeps are the average (training/epochs.py WeightAverage). Why 1:
    # measured against off (bench/RESULTS.md, session 17), drift-b +3.6 % over three seeds, the demo store
    # +0.5 % over three, hm, chain-a and dense-c level; half-lives of 0.5 and 2 epochs did no better on drift-b.
    ema_half_life: float = 1.0
    # Differentially private training (training/private.py): None = off; else DP-SGD with one shopper's
    # whole history as the privacy unit, noise set so dp_epochs passes stay within this epsilon at
    # dp_delta (None = 1 / number of shoppers); each shopper's gradient is clipped to dp_max_grad_norm.
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    dp_max_grad_norm: float = 1.0
    dp_epochs: int = 15

    def __post_init__(self) -> None:
        _check(_is_int(self.epochs) and 1 <= self.epochs <= 1000, f"epochs must be 1..1000, got {self.epochs!r}.")
        _check(_is_int(self.patience) and 1 <= self.patience <= 100, f"patience must be 1..100, got {self.patience!r}.")
        _check(_is_int(self.batch_size) and 1 <= self.batch_size <= 65536, f"batch_size must be 1..65536, got {self.batch_size!r}.")
        _check(_is_num(self.lr) and 0.0 < self.lr <= 1.0, f"lr must be in (0, 1], got {self.lr!r}.")
        _check(_is_num(self.weight_decay) and 0.0 <= self.weight_decay < 1.0, f"weight_decay must be in [0, 1), got {self.weight_decay!r}.")
        _check(self.loss in ("auto", "ce", "sampled", "bce"), f"loss must be auto, ce, sampled or bce, got {self.loss!r}.")
        _check(_is_int(self.full_softmax_max_items) and self.full_softmax_max_items >= 1, f"full_softmax_max_items must be >= 1, got {self.full_softmax_max_items!r}.")
        _check(_is_int(self.n_negatives) and 1 <= self.n_negatives <= 1_000_000, f"n_negatives must be 1..1000000, got {self.n_negatives!r}.")
        _check(_is_num(self.seen_target_weight) and 0.0 <= self.seen_target_weight <= 1.0, f"seen_target_weight must be in [0, 1], got {self.seen_target_weight!r}.")
        _check(_is_num(self.ema_half_life) and 0.0 <= self.ema_half_life <= 100.0, f"ema_half_life must be in [0, 100] epochs, got {self.ema_half_life!r}.")
        _check(_is_num(self.category_loss_weight) and 0.0 <= self.category_loss_weight <= 10.0, f"category_loss_weight must be in [0, 10], got {self.category_loss_weight!r}.")
        _check(isinstance(self.category_mix, bool), f"category_mix must be true or false, got {self.category_mix!r}.")
        _check(isinstance(self.cold_choice, bool), f"cold_choice must be true or false, got {self.cold_choice!r}.")
        _check(_is_int(self.fusion_candidates) and 2 <= self.fusion_candidates <= 10000, f"fusion_candidates must be 2..10000, got {self.fusion_candidates!r}.")
        _check(_is_int(self.fusion_novel_candidates) and 0 <= self.fusion_novel_candidates <= self.fusion_candidates // 2,
               f"fusion_novel_candidates must be 0..fusion_candidates / 2 ({self.fusion_candidates // 2}), got {self.fusion_novel_candidates!r}.")
        _check(_is_int(self.fusion_epochs) and 0 <= self.fusion_epochs <= 100, f"fusion_epochs must be 0..100, got {self.fusion_epochs!r}.")
        _check(_is_int(self.fusion_max_positions) and self.fusion_max_positions >= 1, f"fusion_max_positions must be >= 1, got {self.fusion_max_positions!r}.")
        _check(_is_num(self.fusion_novel_weight) and 0.0 < self.fusion_novel_weight <= 100.0, f"fusion_novel_weight must be in (0, 100], got {self.fusion_novel_weight!r}.")
        _check(_is_int(self.seed) and 0 <= self.seed < 2**63, f"seed must be a non-negative integer, got {self.seed!r}.")
        _check(
            isinstance(self.device, str) and (self.device in ("auto", "cpu") or self.device.startswith("cuda")),
            f"device must be auto, cpu or cuda, got {self.device!r}.",
        )
        _check(_is_int(self.eval_batch_size) and self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size!r}.")
        _check(_is_int(self.valid_max_users) and self.valid_max_users >= 1, f"valid_max_users must be >= 1, got {self.valid_max_users!r}.")
        _check(_is_int(self.sparse_id_min_items) and self.sparse_id_min_items >= 0, f"sparse_id_min_items must be an integer >= 0, got {self.sparse_id_min_items!r}.")
        _check(isinstance(self.prior_blend, bool), f"prior_blend must be true or false, got {self.prior_blend!r}.")
        _check(isinstance(self.knn_blend, bool), f"knn_blend must be true or false, got {self.knn_blend!r}.")
        _check(isinstance(self.knn_choice, bool), f"knn_choice must be true or false, got {self.knn_choice!r}.")
        _check(isinstance(self.stop_on_retrieval, bool), f"stop_on_retrieval must be true or false, got {self.stop_on_retrieval!r}.")
        _check(_is_int(self.progress_every) and self.progress_every >= 1, f"progress_every must be >= 1, got {self.progress_every!r}.")
        _check(isinstance(self.batch_choice, bool), f"batch_choice must be true or false, got {self.batch_choice!r}.")
        _check(_is_int(self.batch_drop_after) and 0 <= self.batch_drop_after <= 1000, f"batch_drop_after must be 0..1000, got {self.batch_drop_after!r}.")
        _check(isinstance(self.cpu_bf16, bool), f"cpu_bf16 must be true or false, got {self.cpu_bf16!r}.")
        _check(isinstance(self.length_buckets, bool), f"length_buckets must be true or false, got {self.length_buckets!r}.")
        _check(isinstance(self.window_weights, bool), f"window_weights must be true or false, got {self.window_weights!r}.")
        _check(self.weight_unit in ("window", "shopper"), f"weight_unit must be 'window' or 'shopper', got {self.weight_unit!r}.")
        _check(_is_num(self.shopper_cap_quantile) and 0.0 <= self.shopper_cap_quantile <= 1.0,
               f"shopper_cap_quantile must be in [0, 1], got {self.shopper_cap_quantile!r}.")
        _check(self.step_mean in ("batch", "target"), f"step_mean must be 'batch' or 'target', got {self.step_mean!r}.")
        _check(_is_num(self.window_weight_power) and 0.0 <= self.window_weight_power <= 1.0,
               f"window_weight_power must be in [0, 1], got {self.window_weight_power!r}.")
        _check(self.dp_epsilon is None or (_is_num(self.dp_epsilon) and 0.0 < self.dp_epsilon <= 100.0),
               f"The privacy budget epsilon must be a number above 0 and at most 100 (for example 1, 4 or 8), got {self.dp_epsilon!r}.")
        _check(self.dp_delta is None or (_is_num(self.dp_delta) and 0.0 < self.dp_delta < 1.0), f"dp_delta must be in (0, 1), got {self.dp_delta!r}.")
        _check(_is_num(self.dp_max_grad_norm) and 0.0 < self.dp_max_grad_norm <= 1e6, f"dp_max_grad_norm must be above 0, got {self.dp_max_grad_norm!r}.")
        _check(_is_int(self.dp_epochs) and 1 <= self.dp_epochs <= 1000, f"dp_epochs must be 1..1000, got {self.dp_epochs!r}.")


@dataclass(frozen=True)
class ModelConfig:
    """The whole model: item encoder + user encoder + training. Derive variants with dataclasses.replace."""

    item: ItemEncoderConfig = field(default_factory=ItemEncoderConfig)
    user: UserEncoderConfig = field(default_factory=UserEncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check(isinstance(self.item, ItemEncoderConfig), "item must be an ItemEncoderConfig.")
        _check(isinstance(self.user, UserEncoderConfig), "user must be a UserEncoderConfig.")
        _check(isinstance(self.train, TrainConfig), "train must be a TrainConfig.")
        _check(
            self.item.dim == self.user.dim,
            f"item dim ({self.item.dim}) and user dim ({self.user.dim}) must be equal: retrieval is their dot product.",
        )

    @property
    def dim(self) -> int:
        return self.user.dim

    def to_dict(self) -> dict:
        """Return a JSON-ready dict of the whole config (with a version)."""
        return {"version": CONFIG_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Return the config stored by to_dict; unknown keys raise ConfigError (so typos are not ignored)."""
        if not isinstance(d, dict):
            raise ConfigError("The model configuration must be a JSON object.")
        d = {k: v for k, v in d.items() if k != "version"}
        parts = {"item": ItemEncoderConfig, "user": UserEncoderConfig, "train": TrainConfig}
        unknown = set(d) - set(parts)
        if unknown:
            raise ConfigError(f"Unknown configuration section(s): {', '.join(sorted(unknown))}. Expected item, user, train.")
        kwargs = {}
        for key, klass in parts.items():
            sub = dict(d.get(key, {}) or {})
            if key == "item" and isinstance(d.get(key), dict):
                sub.setdefault("attr_encoder", "cnn")  # configs saved before the bag existed used the CNN
            if key == "train" and isinstance(d.get(key), dict):
                sub.setdefault("fusion_novel_candidates", 0)  # models saved before it: retrieval-only candidates
            if key == "user" and isinstance(d.get(key), dict):
                sub.setdefault("positions", "recent")  # models saved before it counted back from the last column
            names = {f.name for f in fields(klass)}
            bad = set(sub) - names
            if bad:
                raise ConfigError(f"Unknown setting(s) in '{key}': {', '.join(sorted(bad))}.")
            kwargs[key] = klass(**sub)
        return cls(**kwargs)


def changed_config(changes: str, base: ModelConfig | None = None) -> ModelConfig:
    """Return ``base`` (the defaults when None) with ``changes``: "section.field:value,..." (sections item, user, train;
    each value parsed as JSON, else kept as text), what the benchmarks' variants are written as."""
    cfg = ModelConfig() if base is None else base
    for change in filter(None, changes.split(",")):
        key, _, raw = change.partition(":")
        section, _, name = key.strip().partition(".")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{name: value})})
    return cfg


def default_config(
    *, encoder: str | None = None, epochs: int | None = None, seed: int | None = None, device: str | None = None
) -> ModelConfig:
    """Return the default ModelConfig with the few settings the CLI exposes replaced."""
    cfg = ModelConfig()
    user = cfg.user if encoder is None else dataclasses.replace(cfg.user, kind=encoder)
    train = cfg.train
    changes = {k: v for k, v in (("epochs", epochs), ("seed", seed), ("device", device)) if v is not None}
    if changes:
        train = dataclasses.replace(train, **changes)
    return ModelConfig(item=cfg.item, user=user, train=train)
