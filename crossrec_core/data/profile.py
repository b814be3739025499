"""profile_dataset: the numbers a merchandiser looks at before training (sizes, skew, category flows)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from crossrec_core.data.dataset import InteractionDataset

OTHERS = "others"


@dataclass(frozen=True)
class Summary:
    """min / median / mean / max of a count distribution."""

    min: int
    median: float
    mean: float
    max: int

    @classmethod
    def of(cls, values: np.ndarray) -> "Summary":
        if len(values) == 0:
            return cls(0, 0.0, 0.0, 0)
        return cls(int(values.min()), float(np.median(values)), float(values.mean()), int(values.max()))


@dataclass(frozen=True)
class DatasetProfile:
    """What a dataset looks like: sizes, per-user/per-item skew, categories and category-to-category flows."""

    name: str
    n_users: int
    n_items: int
    n_categories: int
    n_events: int
    sparsity: float  # 1 - distinct (user, item) pairs / (n_users * n_items)
    events_per_user: Summary
    events_per_item: Summary
    user_lengths: np.ndarray = field(repr=False)  # int64 (n_users,) events per user, ready for a histogram
    item_counts: np.ndarray = field(repr=False)  # int64 (n_items,) events per item
    category_counts: pd.Series = field(repr=False)  # events per category name, descending
    event_counts: pd.Series = field(repr=False)  # events per event type, descending
    transitions: pd.DataFrame = field(repr=False)  # top categories (+ "others") x same: consecutive-event counts
    cross_category_user_share: float  # share of users whose history spans 2+ categories
    cross_category_transition_share: float  # share of consecutive pairs that change category
    time_min: int | None
    time_max: int | None
    has_timestamps: bool
    n_warnings: int = 0

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (no arrays; the top 30 categories and the transition table as nested dicts)."""
        return {
            "name": self.name,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_categories": self.n_categories,
            "n_events": self.n_events,
            "sparsity": self.sparsity,
            "events_per_user": vars(self.events_per_user),
            "events_per_item": vars(self.events_per_item),
            "category_counts": {str(k): int(v) for k, v in self.category_counts.head(30).items()},
            "event_counts": {str(k): int(v) for k, v in self.event_counts.items()},
            "transitions": {str(r): {str(c): int(v) for c, v in row.items()} for r, row in self.transitions.iterrows()},
            "cross_category_user_share": self.cross_category_user_share,
            "cross_category_transition_share": self.cross_category_transition_share,
            "time_min": self.time_min,
            "time_max": self.time_max,
            "has_timestamps": self.has_timestamps,
            "n_warnings": self.n_warnings,
        }

    def to_text(self, top: int = 8) -> str:
        """Return a compact, readable table for the terminal."""
        u, i = self.events_per_user, self.events_per_item
        lines = [
            f"Dataset {self.name}",
            f"  users        {self.n_users:>12,}",
            f"  items        {self.n_items:>12,}",
            f"  categories   {self.n_categories:>12,}",
            f"  events       {self.n_events:>12,}",
            f"  sparsity     {self.sparsity:>12.4%}",
            f"  events/user  min {u.min:,}  median {u.median:,.0f}  mean {u.mean:,.1f}  max {u.max:,}",
            f"  events/item  min {i.min:,}  median {i.median:,.0f}  mean {i.mean:,.1f}  max {i.max:,}",
            f"  users spanning 2+ categories  {self.cross_category_user_share:.1%}",
            f"  consecutive events that change category  {self.cross_category_transition_share:.1%}",
        ]
        if self.has_timestamps and self.time_min is not None:
            t0 = pd.Timestamp(self.time_min, unit="s").strftime("%Y-%m-%d %H:%M")
            t1 = pd.Timestamp(self.time_max, unit="s").strftime("%Y-%m-%d %H:%M")
            lines.append(f"  time range   {t0} .. {t1} UTC")
        else:
            lines.append("  time range   none (events ordered by position)")
        lines.append("  event types  " + ", ".join(f"{k} {v:,}" for k, v in self.event_counts.items()))
        lines.append("  top categories (events):")
        total = max(self.n_events, 1)
        for name, count in self.category_counts.head(top).items():
            lines.append(f"    {str(name)[:32]:<32} {count:>10,}  {count / total:6.1%}")
        if len(self.category_counts) > top:
            lines.append(f"    ... and {len(self.category_counts) - top:,} more")
        flows = _top_flows(self.transitions, 5)
        if flows:
            lines.append("  strongest cross-category flows (next event):")
            lines.extend(f"    {a[:24]} -> {b[:24]}: {n:,}" for a, b, n in flows)
        return "\n".join(lines)


def profile_dataset(ds: InteractionDataset, *, top_categories: int = 30) -> DatasetProfile:
    """Return the DatasetProfile of ``ds``.

    Args:
        top_categories: the transition matrix keeps the most frequent categories and folds the rest into an
            "others" row and column (2,911 taobao leaf categories would not fit on a screen).
    """
    seqs = ds.seqs
    lengths = seqs.lengths.astype(np.int64)
    item_counts = np.bincount(seqs.items, minlength=ds.n_items).astype(np.int64)
    ev_cat = ds.item_category[seqs.items].astype(np.int64)  # (n_events,)
    cat_counts = np.bincount(ev_cat, minlength=ds.n_categories)
    category_counts = pd.Series(cat_counts, index=pd.Index(ds.category_names, name="category"), name="events")
    category_counts = category_counts.sort_values(ascending=False, kind="stable")
    ev_counts = np.bincount(seqs.events.astype(np.int64), minlength=len(ds.event_names))
    event_counts = pd.Series(ev_counts, index=pd.Index(ds.event_names, name="event"), name="events")
    event_counts = event_counts.sort_values(ascending=False, kind="stable")

    # consecutive pairs inside a user: position p and p+1 where p+1 is not a user's first event
    n = seqs.n_events
    same_user = np.ones(max(n - 1, 0), dtype=bool)
    starts = seqs.offsets[1:-1]
    starts = starts[(starts > 0) & (starts < n)]
    same_user[starts - 1] = False
    a, b = ev_cat[:-1][same_user], ev_cat[1:][same_user]
    cross_share = float((a != b).mean()) if len(a) else 0.0

    k = min(top_categories, ds.n_categories)
    top_idx = np.argsort(-cat_counts, kind="stable")[:k]
    slot = np.full(ds.n_categories, k, dtype=np.int64)  # k = the "others" bucket
    slot[top_idx] = np.arange(k)
    size = k + 1 if ds.n_categories > k else k
    flat = np.bincount(slot[a] * size + slot[b], minlength=size * size).reshape(size, size) if size else np.zeros((0, 0), np.int64)
    labels = [str(c) for c in ds.category_names[top_idx]] + ([OTHERS] if size > k else [])
    transitions = pd.DataFrame(flat, index=pd.Index(labels, name="from"), columns=pd.Index(labels, name="to"))

    # users spanning 2+ categories: first category of a user vs any different one
    users = seqs.user_of_event()
    first_cat = ev_cat[seqs.offsets[:-1][lengths > 0]] if n else np.zeros(0, np.int64)
    first_full = np.full(ds.n_users, -1, dtype=np.int64)
    first_full[lengths > 0] = first_cat
    differs = ev_cat != first_full[users] if n else np.zeros(0, bool)
    multi = np.bincount(users[differs], minlength=ds.n_users) > 0 if n else np.zeros(ds.n_users, bool)

    # distinct (user, item) pairs; a sort beats numpy's hash-based unique by far on 10M events
    pairs = np.sort(users.astype(np.int64) * max(ds.n_items, 1) + seqs.items)
    n_pairs = int((pairs[1:] != pairs[:-1]).sum()) + 1 if n else 0
    denom = max(ds.n_users * ds.n_items, 1)
    return DatasetProfile(
        name=ds.name,
        n_users=ds.n_users,
        n_items=ds.n_items,
        n_categories=ds.n_categories,
        n_events=n,
        sparsity=1.0 - n_pairs / denom,
        events_per_user=Summary.of(lengths),
        events_per_item=Summary.of(item_counts),
        user_lengths=lengths,
        item_counts=item_counts,
        category_counts=category_counts,
        event_counts=event_counts,
        transitions=transitions,
        cross_category_user_share=float(multi.mean()) if ds.n_users else 0.0,
        cross_category_transition_share=cross_share,
        time_min=int(seqs.times.min()) if n else None,
        time_max=int(seqs.times.max()) if n else None,
        has_timestamps=ds.has_timestamps,
        n_warnings=len(ds.report.warnings),
    )


def _top_flows(transitions: pd.DataFrame, n: int) -> list[tuple[str, str, int]]:
    """Return the n largest off-diagonal (from, to, count) cells, ignoring the "others" bucket."""
    if transitions.empty:
        return []
    m = transitions.to_numpy().copy()
    np.fill_diagonal(m, 0)
    labels = list(transitions.index)
    if labels and labels[-1] == OTHERS:
        m[-1, :] = 0
        m[:, -1] = 0
    flat = np.argsort(-m, axis=None, kind="stable")[:n]
    out = []
    for f in flat:
        r, c = divmod(int(f), m.shape[1])
        if m[r, c] > 0:
            out.append((labels[r], labels[c], int(m[r, c])))
    return out
