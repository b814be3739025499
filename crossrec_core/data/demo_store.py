"""The demo store: a seeded simulator of a 12-category shop with planted cross-category journeys.

Users have a home category, browse in time-ordered sessions of views, carts and purchases over 90 days, and
a share of them follow one of 8 planted journeys (tent -> hiking boots -> camp stove, espresso machine ->
coffee beans -> mug, ...). The journeys are kept as ground truth so the app and the evaluation can show how
many of them a model recovers. Titles are real English text, so the text encoder has something to read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from crossrec_core.data.dataset import InteractionDataset
from crossrec_core.data.load import load_log
from crossrec_core.errors import ConfigError

DEMO_NAME = "demo-store"
START = 1704067200  # 2024-01-01 00:00 UTC
DAYS = 90

# category -> (brands, {product noun: adjectives}, variants, base price in EUR)
CATALOG: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]], tuple[str, ...]]] = {
    "Camping": (
        ("Trailpeak", "Northwild", "Campfox", "Alpenhorn"),
        {
            "tent": ("2-Person Dome", "Ultralight Backpacking", "Family Tunnel", "Waterproof Pop-Up"),
            "sleeping bag": ("Mummy", "Three-Season", "Down", "Compact Synthetic"),
            "hiking backpack": ("40L Trekking", "Daypack", "Ventilated 55L", "Rolltop"),
            "camping chair": ("Folding", "Lightweight", "High-Back", "Padded"),
            "trekking poles": ("Carbon", "Telescopic", "Foldable Aluminium", "Cork Grip"),
        },
        ("Olive", "Sand", "Slate Grey", "Forest Green", "Orange"),
    ),
    "Footwear": (
        ("Stridewell", "Rockhopper", "Urbanstep", "Meadowsole"),
        {
            "hiking boots": ("Waterproof Leather", "Mid-Cut Trail", "Gore-Tex", "Lightweight Approach"),
            "running shoes": ("Cushioned Road", "Trail", "Lightweight Racing", "Stability"),
            "garden clogs": ("Rubber", "Slip-On", "Lined", "Classic"),
            "sneakers": ("Canvas", "Retro Leather", "Knit", "Low-Top"),
            "sandals": ("Sport", "Cork Footbed", "Hiking", "Slide"),
        },
        ("Size 38", "Size 40", "Size 42", "Size 44", "Size 46"),
    ),
    "Outdoor Cooking": (
        ("Flamecraft", "Embertrail", "Grillmeister", "Campchef"),
        {
            "camp stove": ("Compact Gas", "Two-Burner", "Wood-Burning", "Backpacking"),
            "charcoal grill": ("Kettle", "Portable", "Barrel", "Kamado"),
            "camping cook set": ("Titanium", "Nesting Aluminium", "Non-Stick", "Solo"),
            "grill tools": ("Stainless", "Three-Piece", "Long-Handled", "Bamboo"),
            "cool box": ("Rotomolded", "Electric", "Soft-Sided", "Wheeled"),
        },
        ("Black", "Red", "Steel", "Green"),
    ),
    "Coffee Machines": (
        ("Baristo", "Caffelux", "Brewmaster", "Moka & Co"),
        {
            "espresso machine": ("Semi-Automatic", "Bean-to-Cup", "Manual Lever", "Compact"),
            "drip coffee maker": ("Programmable", "Thermal Carafe", "Pour-Over Style", "12-Cup"),
            "milk frother": ("Electric", "Handheld", "Induction", "Steam"),
            "coffee grinder": ("Burr", "Conical Burr", "Hand", "Blade"),
            "capsule machine": ("Single-Serve", "Compact", "Milk", "Retro"),
        },
        ("Chrome", "Matte Black", "Cream", "Red"),
    ),
    "Coffee": (
        ("Roastery Lane", "Altiplano", "Bean Republic", "Casa Verde"),
        {
            "coffee beans": ("Single-Origin Ethiopian", "Dark Roast Italian", "Organic Colombian", "Espresso Blend"),
            "ground coffee": ("Medium Roast", "Filter", "Decaf", "French Roast"),
            "coffee capsules": ("Intense", "Lungo", "Ristretto", "Vanilla"),
            "loose leaf tea": ("Earl Grey", "Sencha Green", "Rooibos", "Masala Chai"),
            "cold brew concentrate": ("Unsweetened", "Caramel", "Oat Milk", "Classic"),
        },
        ("250 g", "500 g", "1 kg", "Pack of 3"),
    ),
    "Kitchenware": (
        ("Hearthware", "Stoneleaf", "Kitchenly", "Nordform"),
        {
            "mug": ("Stoneware", "Double-Wall Glass", "Enamel", "Ceramic"),
            "teapot": ("Cast Iron", "Glass", "Porcelain", "Stoneware"),
            "chef's knife": ("Japanese Steel", "Forged", "Damascus", "Santoku"),
            "cutting board": ("End-Grain Oak", "Bamboo", "Olive Wood", "Large Walnut"),
            "frying pan": ("Cast Iron", "Non-Stick", "Carbon Steel", "Stainless"),
        },
        ("White", "Charcoal", "Sage", "Blue", "Set of 2"),
    ),
    "Baby": (
        ("Littlenest", "Cuddlebug", "Tinysteps", "Babyloom"),
        {
            "crib": ("Convertible", "Solid Wood", "Travel", "Bedside"),
            "stroller": ("Jogging", "Compact Travel", "All-Terrain", "Lightweight"),
            "baby carrier": ("Ergonomic", "Wrap", "Hip Seat", "Mesh"),
            "changing mat": ("Waterproof", "Foldable", "Contoured", "Padded"),
            "baby bottle set": ("Anti-Colic", "Glass", "Wide-Neck", "Newborn"),
        },
        ("Natural", "Grey", "White", "Mint"),
    ),
    "Toys": (
        ("Playwell", "Toyburrow", "Brightblock", "Funforge"),
        {
            "plush toy": ("Soft Bunny", "Teddy Bear", "Sleepy Elephant", "Cuddly Fox"),
            "building blocks": ("Wooden", "Magnetic", "Classic 500-Piece", "Starter"),
            "board game": ("Family Strategy", "Cooperative", "Party", "Classic"),
            "jigsaw puzzle": ("1000-Piece", "Kids 100-Piece", "Panorama", "3D"),
            "toy car": ("Remote-Control", "Die-Cast", "Pull-Back", "Wooden"),
        },
        ("Small", "Large", "Set", "Deluxe"),
    ),
    "Books": (
        ("Penwright Press", "Oakleaf Books", "Harbor House", "Quillstone"),
        {
            "novel": ("Bestselling Mystery", "Historical", "Sci-Fi", "Literary"),
            "barbecue cookbook": ("Smoke and Fire", "Weekend Grilling", "Live-Fire", "Backyard"),
            "gardening book": ("Vegetable", "Small Garden", "Organic", "Seasonal"),
            "picture book": ("Bedtime", "Animal", "First Words", "Adventure"),
            "travel guide": ("Alps Hiking", "City Break", "National Parks", "Coastal"),
        },
        ("Hardcover", "Paperback", "Illustrated Edition", "Gift Edition"),
    ),
    "Electronics": (
        ("Voltix", "Nexon", "Auralis", "Pixelon"),
        {
            "smartphone": ("5G", "Compact", "Flagship", "Budget"),
            "baby monitor": ("Video", "Wi-Fi", "Audio", "Split-Screen"),
            "fitness tracker": ("GPS", "Heart-Rate", "Slim", "Solar"),
            "e-reader": ("Glare-Free", "Waterproof", "Colour", "Large-Screen"),
            "wireless headphones": ("Noise-Cancelling", "Over-Ear", "Sport", "Studio"),
        },
        ("64 GB", "128 GB", "Black", "Silver"),
    ),
    "Phone Accessories": (
        ("Gripcase", "Chargely", "Shieldon", "Mountix"),
        {
            "phone case": ("Clear Silicone", "Rugged", "Leather Wallet", "Slim MagSafe"),
            "charger": ("65W USB-C", "Fast Wireless", "Dual-Port", "Travel"),
            "screen protector": ("Tempered Glass", "Privacy", "Matte", "Full-Cover"),
            "power bank": ("20000mAh", "Slim 10000mAh", "Solar", "MagSafe"),
            "car mount": ("Magnetic", "Vent", "Dashboard", "Wireless Charging"),
        },
        ("Black", "Blue", "Pink", "Clear"),
    ),
    "Home & Garden": (
        ("Greenhaven", "Homebright", "Terrace & Co", "Rootwise"),
        {
            "smart plug": ("Wi-Fi", "Energy-Monitoring", "Outdoor", "Mini"),
            "raised garden bed": ("Cedar", "Galvanised Steel", "Elevated", "Modular"),
            "garden hose": ("Expandable", "Reinforced", "Coiled", "Lightweight"),
            "plant pot": ("Terracotta", "Self-Watering", "Ceramic", "Hanging"),
            "string lights": ("Solar", "LED Festoon", "Fairy", "Outdoor"),
        },
        ("Small", "Medium", "Large", "Set of 3"),
    ),
}

# the planted journeys: three (category, product noun) steps each
JOURNEYS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("Camping", "tent"), ("Footwear", "hiking boots"), ("Outdoor Cooking", "camp stove")),
    (("Coffee Machines", "espresso machine"), ("Coffee", "coffee beans"), ("Kitchenware", "mug")),
    (("Baby", "crib"), ("Electronics", "baby monitor"), ("Toys", "plush toy")),
    (("Electronics", "smartphone"), ("Phone Accessories", "phone case"), ("Home & Garden", "smart plug")),
    (("Books", "barbecue cookbook"), ("Outdoor Cooking", "charcoal grill"), ("Kitchenware", "cutting board")),
    (("Home & Garden", "raised garden bed"), ("Footwear", "garden clogs"), ("Books", "gardening book")),
    (("Baby", "stroller"), ("Footwear", "running shoes"), ("Electronics", "fitness tracker")),
    (("Electronics", "e-reader"), ("Books", "novel"), ("Coffee", "loose leaf tea")),
)

PRICE_BANDS = ("budget", "mid-range", "premium")


@dataclass
class DemoStore:
    """The simulated shop: its event log, its catalogue and the planted journeys (ground truth)."""

    interactions: pd.DataFrame  # user_id, item_id, timestamp (epoch s), event (view / cart / purchase)
    items: pd.DataFrame  # item_id, category, title, brand, price_band, product
    journeys: pd.DataFrame  # journey_id, name, step, category, product, item_ids (list of str), n_users


def make_demo_store(
    seed: int = 0, n_users: int = 5000, n_items: int = 2000, journey_share: float = 0.4
) -> DemoStore:
    """Return a seeded DemoStore (about 14 events per user: ~70k events for 5,000 users).

    Args:
        seed: the only source of randomness; the same seed gives the same store.
        n_users: shoppers to simulate.
        n_items: catalogue size, spread over the 12 categories (at least 4 items per product noun).
        journey_share: share of users who follow one of the planted journeys.
    """
    n_groups = sum(len(v[1]) for v in CATALOG.values())
    if n_users < 1 or n_items < 4 * n_groups:
        raise ConfigError(f"The demo store needs at least 1 user and {4 * n_groups} items (got {n_users}, {n_items}).")
    if not 0.0 <= journey_share <= 1.0:
        raise ConfigError(f"journey_share must be between 0 and 1, got {journey_share}.")
    rng = np.random.default_rng(seed)
    items, group_of, cat_of, groups = _catalogue(rng, n_items)
    cats = list(CATALOG)
    n_cats = len(cats)
    group_index = {(c, g): k for k, (c, g) in enumerate(groups)}

    # Zipf-like popularity inside each category and inside each product group (a random rank order)
    pop = np.empty(len(items))
    for c in range(n_cats):
        idx = np.flatnonzero(cat_of == c)
        pop[idx] = 1.0 / np.arange(1, len(idx) + 1) ** 1.05
        pop[idx] = pop[idx][rng.permutation(len(idx))]
    cat_cdf = _segment_cdf(pop, cat_of, n_cats)
    group_cdf = _segment_cdf(pop, group_of, len(groups))

    # users: a home category (some categories are busier), and maybe a journey
    cat_weight = 1.0 / np.arange(1, n_cats + 1) ** 0.5
    cat_weight = cat_weight[rng.permutation(n_cats)]
    cat_weight /= cat_weight.sum()
    follows = rng.random(n_users) < journey_share
    journey = np.where(follows, rng.integers(0, len(JOURNEYS), n_users), -1)
    j_first_cat = np.array([cats.index(j[0][0]) for j in JOURNEYS])
    home = rng.choice(n_cats, size=n_users, p=cat_weight)
    home = np.where(follows & (rng.random(n_users) < 0.6), j_first_cat[np.maximum(journey, 0)], home)

    # sessions: background browsing sessions plus, for journey users, 3 consecutive journey sessions
    n_bg = 1 + rng.poisson(2.5, n_users)
    n_sess = n_bg + np.where(follows, 3, 0)
    s_user = np.repeat(np.arange(n_users), n_sess)
    s_pos = np.arange(len(s_user)) - np.repeat(np.cumsum(n_sess) - n_sess, n_sess)  # 0.. within user
    # journey starts after a random number of background sessions (often at the end, so it is the next thing)
    j_at = np.where(rng.random(n_users) < 0.5, n_bg, rng.integers(0, n_bg + 1))
    rel = s_pos - j_at[s_user]
    is_j = follows[s_user] & (rel >= 0) & (rel < 3)
    j_step = np.where(is_j, rel, -1)
    s_cat = np.where(rng.random(len(s_user)) < 0.7, home[s_user], rng.choice(n_cats, size=len(s_user), p=cat_weight))
    s_group = np.full(len(s_user), -1)
    jg = np.array([[group_index[s] for s in j] for j in JOURNEYS])  # (8, 3) group per step
    s_group[is_j] = jg[journey[s_user[is_j]], j_step[is_j]]
    s_cat[is_j] = np.array([cats.index(groups[g][0]) for g in s_group[is_j]], dtype=s_cat.dtype)
    s_len = np.where(is_j, 1 + rng.poisson(1.2, len(s_user)), 1 + rng.poisson(2.3, len(s_user)))

    # session start times (days): gaps between sessions; journey steps follow each other within hours or days.
    # The 0.05-day floor keeps sessions from overlapping, so a user's events stay in session order.
    gap = 0.05 + np.where(is_j & (j_step > 0), rng.exponential(0.8, len(s_user)), rng.exponential(8.0, len(s_user)))
    first = np.cumsum(n_sess) - n_sess
    cum = np.cumsum(gap)
    cum = cum - np.repeat(cum[first] - gap[first], n_sess)  # per-user running sum, starting at the first gap
    span = np.repeat(cum[np.cumsum(n_sess) - 1], n_sess)  # the user's last session
    scale = np.minimum(1.0, (DAYS - 1) / span)
    slack = np.maximum(DAYS - 1 - span * scale, 0.0)
    day = cum * scale + rng.random(n_users)[s_user] * slack
    s_start = START + (day * 86400).astype(np.int64)

    # events
    e_sess = np.repeat(np.arange(len(s_user)), s_len)
    e_pos = np.arange(len(e_sess)) - np.repeat(np.cumsum(s_len) - s_len, s_len)
    e_last = e_pos == s_len[e_sess] - 1
    u = rng.random(len(e_sess))
    in_group = s_group[e_sess] >= 0
    item = np.empty(len(e_sess), dtype=np.int64)
    item[~in_group] = np.searchsorted(cat_cdf, s_cat[e_sess[~in_group]] + u[~in_group], side="right")
    item[in_group] = np.searchsorted(group_cdf, s_group[e_sess[in_group]] + u[in_group], side="right")
    r = rng.random(len(e_sess))
    event = np.where(r < 0.06, "purchase", np.where(r < 0.16, "cart", "view")).astype(object)
    j_event = is_j[e_sess]
    event[j_event & e_last] = np.where(rng.random(int((j_event & e_last).sum())) < 0.75, "purchase", "cart")
    step = np.where(e_pos > 0, rng.integers(20, 300, len(e_sess)), 0)  # seconds between clicks in a session
    run = np.cumsum(step)
    e_time = s_start[e_sess] + run - run[(np.cumsum(s_len) - s_len)[e_sess]]

    interactions = pd.DataFrame(
        {
            "user_id": pd.Series([f"U{k:05d}" for k in range(n_users)], dtype="str").to_numpy()[s_user[e_sess]],
            "item_id": items["item_id"].to_numpy()[item],
            "timestamp": e_time.astype(np.int64),
            "event": event,
        }
    )
    interactions = interactions.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)

    users_per_journey = np.bincount(journey[follows], minlength=len(JOURNEYS))
    rows = []
    for j, steps in enumerate(JOURNEYS):
        name = " -> ".join(g for _, g in steps)
        for k, (c, g) in enumerate(steps):
            ids = items["item_id"].to_numpy()[group_of == group_index[(c, g)]]
            rows.append((j, name, k + 1, c, g, [str(x) for x in ids], int(users_per_journey[j])))
    journeys = pd.DataFrame(rows, columns=["journey_id", "name", "step", "category", "product", "item_ids", "n_users"])
    return DemoStore(interactions=interactions, items=items, journeys=journeys)


def build_demo_dataset(seed: int = 0) -> tuple[InteractionDataset, pd.DataFrame]:
    """Return the demo store as an InteractionDataset named "demo-store", and its journeys DataFrame."""
    store = make_demo_store(seed=seed)
    ds = load_log(store.interactions, store.items, name=DEMO_NAME, interactions_name="demo interactions",
                  items_name="demo items")
    return ds, store.journeys


def _catalogue(rng: np.random.Generator, n_items: int):
    """Return (items frame, group index per item, category index per item, [(category, noun)])."""
    groups = [(c, g) for c, (_, nouns, _) in CATALOG.items() for g in nouns]
    per_group = np.full(len(groups), n_items // len(groups))
    per_group[: n_items % len(groups)] += 1
    cats = list(CATALOG)
    rows = []
    group_of, cat_of = [], []
    for k, ((c, g), n) in enumerate(zip(groups, per_group)):
        brands, nouns, variants = CATALOG[c]
        adjs = nouns[g]
        combos = [(b, a, v) for b in brands for a in adjs for v in variants]
        order = rng.permutation(len(combos))
        band_of_brand = {b: PRICE_BANDS[i % 3] for i, b in enumerate(rng.permutation(brands))}
        for m in range(n):
            b, a, v = combos[order[m % len(combos)]]
            edition = f" ({m // len(combos) + 1})" if m >= len(combos) else ""
            rows.append((c, f"{b} {a} {_capwords(g)}, {v}{edition}", b, band_of_brand[b], g))
            group_of.append(k)
            cat_of.append(cats.index(c))
    items = pd.DataFrame(rows, columns=["category", "title", "brand", "price_band", "product"])
    items.insert(0, "item_id", [f"P{k:05d}" for k in range(len(items))])
    return items, np.asarray(group_of), np.asarray(cat_of), groups


def _segment_cdf(weights: np.ndarray, segment: np.ndarray, n_segments: int) -> np.ndarray:
    """Return a global CDF where segment s occupies (s, s+1]: searchsorted(cdf, s + u) samples inside segment s.

    Items must be contiguous per segment (they are: the catalogue is built category by category, group by group).
    """
    totals = np.bincount(segment, weights=weights, minlength=n_segments)
    within = np.cumsum(weights) - np.repeat(np.cumsum(totals) - totals, np.bincount(segment, minlength=n_segments))
    cdf = segment + within / totals[segment]
    cdf[np.r_[segment[1:] != segment[:-1], True]] = segment[np.r_[segment[1:] != segment[:-1], True]] + 1.0
    return cdf - 1e-12


def _capwords(text: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in text.split())
