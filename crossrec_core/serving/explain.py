"""Why an item was recommended: the history items that pulled it in, and one plain sentence.

Explanations are plain text (titles are never turned into HTML; the app renders them as text).
Warm users: each history item contributes the cosine similarity between its vector and the recommended
item's vector, weighted by recency (a recent purchase counts more than an old view). Cold users: the
sentence names the popularity fallback and the category flow that led to it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from crossrec_core.data.dataset import DEFAULT_EVENT_WEIGHTS

# below this cosine a history item is not named as a reason ("because of" must be believable)
MIN_CONTRIBUTION = 0.05
# a cold user's item is also called "similar to" one of their items from this cosine on
COLD_SIMILAR_COSINE = 0.5


@dataclass(frozen=True)
class Explanation:
    """One recommendation's reason.

    Attributes:
        sentence: plain text, e.g. "Because of Trail Tent 2P (Camping) and Hiking Socks (Footwear)".
        because_item_ids: history item ids that contributed most, strongest first.
        because_titles: their display labels (title, or the id when the title is empty).
        contributions: their recency-weighted cosine similarities, same order.
        cold_start: True when the popularity / category-flow fallback produced the item.
    """

    sentence: str
    because_item_ids: tuple[str, ...] = ()
    because_titles: tuple[str, ...] = ()
    contributions: tuple[float, ...] = ()
    cold_start: bool = False


def display_title(title: object, item_id: object) -> str:
    """Return the item's title as plain text, or its id when the log has no title for it."""
    text = "" if title is None else str(title).strip()
    if text in ("", "nan", "None"):
        return str(item_id)
    return " ".join(text.split())  # newlines or tabs in a title must not break a one-line sentence


def item_label(title: object, item_id: object, category: object) -> str:
    """Return "Title (Category)" as plain text."""
    return f"{display_title(title, item_id)} ({category})"


def recency_weights(n: int, event_names: np.ndarray | None = None, half_life: float = 5.0) -> np.ndarray:
    """Return float32 (n,) weights of a time-ordered history: halves every ``half_life`` events back,
    times the event's weight (purchase 5, cart 3, view 1; see DEFAULT_EVENT_WEIGHTS), max 1."""
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    age = np.arange(n - 1, -1, -1, dtype=np.float64)  # 0 for the latest event
    w = 0.5 ** (age / max(half_life, 1e-6))
    if event_names is not None and len(event_names) == n:
        ev = np.array([DEFAULT_EVENT_WEIGHTS.get(str(e), 1.0) for e in event_names], dtype=np.float64)
        w = w * ev
    return (w / w.max()).astype(np.float32)


def contributions(hist_vecs: np.ndarray, weights: np.ndarray, rec_vecs: np.ndarray) -> np.ndarray:
    """Return float32 (K, H) recency-weighted cosine similarity of each recommended item (K, d) to each
    history item (H, d)."""
    def _unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)

    if len(hist_vecs) == 0:
        return np.zeros((len(rec_vecs), 0), dtype=np.float32)
    cos = _unit(rec_vecs) @ _unit(hist_vecs).T  # (K, H)
    return (cos * weights[None, :]).astype(np.float32)


def explain_warm(
    contrib: np.ndarray,
    hist_item_idx: np.ndarray,
    item_ids: np.ndarray,
    item_titles: np.ndarray,
    item_category: np.ndarray,
    category_names: np.ndarray,
    top: int = 2,
) -> list[Explanation]:
    """Return one Explanation per recommended item (rows of ``contrib`` (K, H)), naming the ``top``
    history items with the largest contribution (a repeated history item counts once, at its best)."""
    out: list[Explanation] = []
    hist_item_idx = np.asarray(hist_item_idx, dtype=np.int64)
    uniq, inverse = np.unique(hist_item_idx, return_inverse=True)
    for row in contrib:  # K is the list length (tens), not a per-event path
        best = np.full(len(uniq), -np.inf, dtype=np.float32)
        np.maximum.at(best, inverse, row)
        order = np.argsort(-best, kind="stable")[:top]
        order = order[best[order] >= MIN_CONTRIBUTION]
        ids = tuple(str(item_ids[uniq[j]]) for j in order)
        labels = tuple(
            item_label(item_titles[uniq[j]], item_ids[uniq[j]], category_names[item_category[uniq[j]]]) for j in order
        )
        if labels:
            sentence = "Because of " + " and ".join(labels)
        else:
            sentence = "Matches the overall taste of this history"
        out.append(Explanation(sentence, ids, labels, tuple(float(best[j]) for j in order), False))
    return out


def with_category_step(
    expls: list[Explanation],
    rec_item_idx: np.ndarray,
    hist_item_idx: np.ndarray,
    item_category: np.ndarray,
    category_names: np.ndarray,
    category_transitions: np.ndarray,
) -> list[Explanation]:
    """Return warm explanations with the category step named where a product's category is new to the shopper
    ("...; Footwear is new to this shopper, and shoppers often move there after Camping"): the cross-category
    reason, and what tells apart the sentences of a list that the same history items pull in."""
    hist_cats = np.unique(item_category[np.asarray(hist_item_idx, dtype=np.int64)])
    if len(hist_cats) == 0:
        return expls
    out = []
    for e, item in zip(expls, np.asarray(rec_item_idx, dtype=np.int64)):
        cat = int(item_category[item])
        if cat in hist_cats:
            out.append(e)
            continue
        step = f"{category_names[cat]} is new to this shopper"
        if (src := flow_source(hist_cats, cat, category_transitions)) is not None:
            step += f", and shoppers often move there after {category_names[src]}"
        out.append(replace(e, sentence=f"{e.sentence}; {step}"))
    return out


def flow_source(hist_cats: np.ndarray, cat: int, category_transitions: np.ndarray) -> int | None:
    """Return the category of the history that shoppers most often leave for ``cat``, or None when none does."""
    flow = category_transitions[hist_cats, cat]
    return int(hist_cats[int(np.argmax(flow))]) if len(flow) and flow.max() > 0 else None


def explain_cold(
    rec_item_idx: np.ndarray,
    hist_item_idx: np.ndarray,
    item_vectors: np.ndarray,
    item_ids: np.ndarray,
    item_titles: np.ndarray,
    item_category: np.ndarray,
    category_names: np.ndarray,
    category_transitions: np.ndarray,
) -> list[Explanation]:
    """Return one Explanation per recommended item of a cold user (0 to the cold threshold of known events): popular in its
    category, the category flow from the user's categories that leads there, and a similar history item."""
    rec_item_idx = np.asarray(rec_item_idx, dtype=np.int64)
    hist_item_idx = np.asarray(hist_item_idx, dtype=np.int64)
    hist_cats = np.unique(item_category[hist_item_idx]) if len(hist_item_idx) else np.zeros(0, dtype=np.int64)
    sims = contributions(item_vectors[hist_item_idx], np.ones(len(hist_item_idx), np.float32), item_vectors[rec_item_idx])
    out: list[Explanation] = []
    for k, item in enumerate(rec_item_idx):
        cat = int(item_category[item])
        cat_name = category_names[cat]
        if len(hist_cats) == 0:
            sentence = f"Popular in {cat_name} with all shoppers (no history yet)"
        elif cat in hist_cats:
            sentence = f"Popular in {cat_name}, a category this shopper already buys from"
        elif (src := flow_source(hist_cats, cat, category_transitions)) is not None:
            sentence = f"Popular in {cat_name}, a category shoppers often move to after {category_names[src]}"
        else:
            sentence = f"Popular in {cat_name}"
        ids: tuple[str, ...] = ()
        labels: tuple[str, ...] = ()
        contrib: tuple[float, ...] = ()
        if sims.shape[1]:
            j = int(np.argmax(sims[k]))
            if sims[k, j] >= COLD_SIMILAR_COSINE:
                h = int(hist_item_idx[j])
                label = item_label(item_titles[h], item_ids[h], category_names[item_category[h]])
                sentence += f"; similar to {label}"
                ids, labels, contrib = (str(item_ids[h]),), (label,), (float(sims[k, j]),)
        out.append(Explanation(sentence, ids, labels, contrib, True))
    return out
