"""The built-in synthetic world: a seeded, MovieLens-like catalogue whose ground truth is known.

This module makes the catalogue, the users' demographics and their latent
tastes (genre affinities shaped by demographics, plus latent factors); the
behaviour models of :mod:`starec_env.behaviour` do the rest. Tastes determine
every user's utility for every item *exactly* (an embedding user model); the
interaction log is produced by letting every user choose, one item after the
other, through the multinomial-logit choice model the simulator uses
(sequential choice without replacement over the catalogue, weighted by item
exposure), and rate what they chose through its ordinal rating model.
Histories therefore reflect tastes, and the simulator can later judge agents
against the very preferences that generated the data (``Dataset.truth``).
The behaviour module sits below the data layer, so the generator samples
from it without importing the simulator.

Text carries signal: titles are built from genre word lists, descriptions
name the genres and "theme" words that spell out the item's strongest latent
factors, and years mirror the first latent factor (classic vs. recent).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from starec_env.behaviour import (
    EmbeddingUserModel,
    MultinomialLogit,
    SyntheticTruth,
    calibrate_thresholds,
    ordinal_ratings,
    zipf_log_exposure,
)
from starec_env.data.model import Dataset, build_dataset

#: MovieLens genre vocabulary, sorted so that column j of the truth's genre
#: block is ``Dataset.genre_names[j]`` when every genre occurs.
GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)
#: Relative frequency of each genre in the catalogue (roughly MovieLens-1M's).
GENRE_PREVALENCE = np.array(
    [0.13, 0.07, 0.03, 0.06, 0.31, 0.05, 0.03, 0.40, 0.02, 0.01, 0.09, 0.03, 0.03, 0.12, 0.06,
     0.12, 0.04, 0.02]
)
# ML-1M rating histogram (share of 1..5 stars): mean ~3.58, mode 4.
MOVIELENS_RATING_HIST = (0.056, 0.108, 0.261, 0.349, 0.226)
AGE_GROUPS = (1, 18, 25, 35, 45, 50, 56)
AGE_SHARE = (0.04, 0.18, 0.35, 0.20, 0.09, 0.08, 0.06)
OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)

# Genre word lists: (adjectives, nouns, places, subjects).
_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "Action": (("Lethal", "Maximum", "Hard", "Rapid", "Iron", "Explosive", "Final"),
               ("Strike", "Force", "Impact", "Vengeance", "Fury", "Showdown", "Target"),
               ("the Highway", "the Tower", "the Border", "Sector Nine"),
               ("a lone commando racing against time", "an ex-cop taking on a crime syndicate")),
    "Adventure": (("Lost", "Golden", "Wild", "Hidden", "Forgotten", "Distant", "Great"),
                  ("Expedition", "Treasure", "Voyage", "Quest", "Island", "Jungle", "Map"),
                  ("the Amazon", "the Seven Seas", "the Lost Temple", "the Frozen North"),
                  ("explorers chasing a legendary treasure", "a crew stranded on an uncharted island")),
    "Animation": (("Little", "Magic", "Dancing", "Tiny", "Bouncing", "Painted", "Happy"),
                  ("Toys", "Critters", "Bunny", "Robot", "Dragon", "Penguins", "Balloon"),
                  ("Cartoon Town", "the Toy Box", "Candy Valley", "the Paper Kingdom"),
                  ("talking animals on a colourful journey", "a toy that comes to life")),
    "Children's": (("Best", "Brave", "Silly", "Friendly", "Clever", "Lucky", "Little"),
                   ("Puppy", "Pals", "Kids", "Adventure Club", "Teddy", "Pony", "Treehouse"),
                   ("the Playground", "Grandma's Farm", "Summer Camp", "the Schoolyard"),
                   ("kids who save their summer camp", "a family and their mischievous dog")),
    "Comedy": (("Crazy", "Wacky", "Dumb", "Accidental", "Awkward", "Big", "Hilarious"),
               ("Wedding", "Roommates", "Vacation", "Neighbors", "Mix-Up", "Weekend", "Party"),
               ("Las Vegas", "the Office", "the Suburbs", "Aunt Edna's House"),
               ("a hapless groom whose plans go hilariously wrong", "two mismatched roommates")),
    "Crime": (("Dirty", "Cold", "Hot", "Stolen", "Crooked", "Silent", "Dead"),
              ("Heist", "Money", "Connection", "Contract", "Racket", "Alibi", "Mob"),
              ("the Docks", "Little Italy", "the Underworld", "the Back Alley"),
              ("gangsters planning one last heist", "a detective hunting a clever thief")),
    "Documentary": (("True", "Inside", "Real", "Untold", "Living", "Secret", "Human"),
                    ("Story", "Lives", "Record", "Journey", "Archive", "Chronicle", "Witness"),
                    ("the Rainforest", "the Factory", "the Front Line", "the Archives"),
                    ("real people filmed over a decade", "the hidden history of an industry")),
    "Drama": (("Quiet", "Broken", "Long", "Bitter", "Tender", "Fragile", "Distant"),
              ("Promise", "Years", "Letters", "Silence", "Homecoming", "Inheritance", "Tears"),
              ("a Small Town", "the Old House", "the Hospital", "the Harbor"),
              ("a family torn apart by a secret", "a widow rebuilding her life")),
    "Fantasy": (("Enchanted", "Mystic", "Ancient", "Elven", "Crystal", "Sorcerer's", "Eternal"),
                ("Kingdom", "Sword", "Spell", "Crown", "Realm", "Prophecy", "Unicorn"),
                ("the Misty Mountains", "the Fairy Realm", "the Dragon Isles", "the Wizard's Keep"),
                ("a young wizard fulfilling an ancient prophecy", "a knight questing for a magic sword")),
    "Film-Noir": (("Dark", "Naked", "Fatal", "Smoky", "Black", "Sinister", "Lonely"),
                  ("City", "Street", "Dame", "Double Cross", "Detour", "Shadow", "Rain"),
                  ("the Waterfront", "the Nightclub", "Rainy Avenue", "the Cheap Hotel"),
                  ("a cynical private eye and a femme fatale", "a drifter framed for murder")),
    "Horror": (("Haunted", "Bloody", "Cursed", "Midnight", "Undead", "Screaming", "Evil"),
               ("Manor", "Shadows", "Curse", "Nightmare", "Possession", "Graveyard", "Ritual"),
               ("the Haunted Manor", "Camp Crystal", "the Crypt", "the Dead Woods"),
               ("teenagers trapped with a masked killer", "a family haunted by a vengeful spirit")),
    "Musical": (("Singing", "Swinging", "Golden", "Starry", "Rhythm", "Melody", "Jazz"),
                ("Broadway", "Serenade", "Ballroom", "Chorus", "Song", "Showtime", "Tune"),
                ("Broadway", "the Music Hall", "the Jazz Club", "Old Vienna"),
                ("a chorus girl dreaming of stardom", "a troupe staging one last show")),
    "Mystery": (("Missing", "Secret", "Strange", "Vanishing", "Unknown", "Hidden", "Twelfth"),
                ("Clue", "Riddle", "Key", "Witness", "Puzzle", "Disappearance", "Portrait"),
                ("Blackwood Manor", "the Orient Express", "the Old Abbey", "Foggy Lane"),
                ("an amateur sleuth unravelling a locked-room puzzle", "a missing heiress")),
    "Romance": (("Sweet", "Forever", "First", "Sleepless", "Summer", "Endless", "Beloved"),
                ("Love", "Kiss", "Heart", "Affair", "Valentine", "Romance", "Embrace"),
                ("Paris", "Venice", "the Seaside", "Notting Hill"),
                ("two strangers who fall in love in a single night", "a bride torn between two men")),
    "Sci-Fi": (("Galactic", "Quantum", "Alien", "Cyber", "Stellar", "Orbital", "Android"),
               ("Planet", "Invasion", "Starship", "Matrix", "Colony", "Odyssey", "Protocol"),
               ("Mars", "the Outer Rim", "Space Station Zeta", "the Year 3000"),
               ("astronauts facing an alien intelligence", "a hacker who discovers reality is simulated")),
    "Thriller": (("Deadly", "Hidden", "Fatal", "Double", "Silent", "Desperate", "Breaking"),
                 ("Conspiracy", "Pursuit", "Ransom", "Obsession", "Hostage", "Deception", "Trap"),
                 ("the Embassy", "the Safe House", "Flight 207", "the Dark Suburb"),
                 ("an innocent man hunted by a conspiracy", "a stalker who knows every move")),
    "War": (("Bloody", "Last", "Brave", "Fallen", "Glorious", "Steel", "Iron"),
            ("Battalion", "Battle", "Front", "Platoon", "Siege", "Regiment", "Bridge"),
            ("Normandy", "the Pacific", "Stalingrad", "Hill 203"),
            ("a platoon behind enemy lines", "soldiers surviving a brutal siege")),
    "Western": (("Wild", "Dusty", "Lonesome", "Outlaw", "High", "Rawhide", "Desperado"),
                ("Frontier", "Gunfighter", "Saddle", "Sheriff", "Canyon", "Posse", "Stagecoach"),
                ("Tombstone", "the Rio Grande", "Dodge City", "the Badlands"),
                ("a gunslinger defending a frontier town", "outlaws on the run from a sheriff")),
}
# Words that spell out latent factors: (positive pole, negative pole) per dimension.
# Dimension 0 is tied to the release year (recent vs. classic).
_THEMES = (
    ("modern", "classic"), ("heartwarming", "bleak"), ("epic", "intimate"), ("witty", "earnest"),
    ("fast-paced", "slow-burning"), ("family-friendly", "gritty"), ("cerebral", "crowd-pleasing"),
    ("stylish", "low-key"), ("uplifting", "melancholic"), ("quirky", "conventional"),
)
# Demographic shifts of genre affinity, so profiles carry readable signal.
_DEMOGRAPHIC_TASTE = {
    "young": {"Animation": 0.9, "Children's": 1.0, "Comedy": 0.3, "Documentary": -0.5, "Film-Noir": -0.6},
    "adult": {"Action": 0.4, "Sci-Fi": 0.4, "Horror": 0.3, "Comedy": 0.2, "Thriller": 0.2},
    "senior": {"Drama": 0.5, "War": 0.5, "Western": 0.5, "Film-Noir": 0.5, "Horror": -0.5, "Animation": -0.4},
    "F": {"Romance": 0.6, "Drama": 0.3, "Musical": 0.4, "War": -0.4, "Action": -0.2},
    "M": {"Action": 0.3, "Sci-Fi": 0.3, "War": 0.3, "Western": 0.2, "Romance": -0.3},
    "programmer": {"Sci-Fi": 0.5, "Documentary": 0.2},
    "scientist": {"Sci-Fi": 0.4, "Documentary": 0.5},
    "technician/engineer": {"Sci-Fi": 0.4, "Action": 0.2},
    "artist": {"Drama": 0.3, "Film-Noir": 0.4, "Musical": 0.3},
    "writer": {"Drama": 0.4, "Film-Noir": 0.4, "Mystery": 0.3},
    "K-12 student": {"Animation": 0.4, "Children's": 0.4},
    "retired": {"Western": 0.4, "War": 0.3, "Musical": 0.3},
}


@dataclass
class SyntheticConfig:
    """Size and shape of the synthetic world (all defaults MovieLens-like)."""

    n_users: int = 1000
    n_items: int = 1000
    latent_dim: int = 8
    #: Std of the individual part of genre affinities (on top of demographics).
    genre_taste_std: float = 0.8
    #: Std of the latent-factor part of the utility.
    latent_std: float = 0.7
    quality_std: float = 0.3
    #: Zipf exponent of item exposure (long-tailed popularity).
    popularity_alpha: float = 1.0
    #: Weight of log-exposure in the choice logit (awareness of an item).
    popularity_weight: float = 1.0
    #: MNL temperature of the choice model.
    temperature: float = 1.0
    #: Std of the noise on the latent rating score.
    rating_noise: float = 0.6
    #: Target share of 1..5 star ratings (the ordinal thresholds are calibrated to it).
    rating_hist: tuple[float, ...] = MOVIELENS_RATING_HIST
    min_history: int = 10
    #: Median of the long-tailed (log-normal) part of history lengths.
    median_extra_history: float = 30.0
    history_sigma: float = 0.9
    max_history: int | None = None
    year_range: tuple[int, int] = (1930, 2000)
    start_time: int = 956_703_932  # April 2000, like ML-1M
    chunk_users: int = 2048

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 2:
            raise ValueError(f"SyntheticConfig: need n_users >= 1 and n_items >= 2, got {self.n_users}, {self.n_items}")
        if len(self.rating_hist) != 5 or min(self.rating_hist) < 0 or sum(self.rating_hist) <= 0:
            raise ValueError(f"SyntheticConfig.rating_hist: expected 5 non-negative shares, got {self.rating_hist}")
        if self.min_history >= self.n_items:
            raise ValueError(f"SyntheticConfig.min_history ({self.min_history}) must be < n_items ({self.n_items})")
        for name in ("temperature", "median_extra_history", "chunk_users", "max_history"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"SyntheticConfig.{name}: expected a positive value, got {getattr(self, name)!r}")
        if len(self.year_range) != 2 or self.year_range[0] > self.year_range[1]:
            raise ValueError(f"SyntheticConfig.year_range: expected (first, last) with first <= last, got {self.year_range!r}")


def generate_world(cfg: SyntheticConfig | None = None, seed: int = 0) -> Dataset:
    """Generate the synthetic world; ``Dataset.truth`` is its :class:`SyntheticTruth`."""
    cfg = cfg or SyntheticConfig()
    rng = np.random.default_rng([seed, 0x57A8EC])
    items, item_genre01, item_factors, quality, log_exposure = _make_items(cfg, rng)
    users, user_genre, user_factors = _make_users(cfg, rng)
    taste = EmbeddingUserModel.from_parts(user_genre, user_factors, item_genre01, item_factors, quality)
    user_emb, item_emb = taste.user_emb, taste.item_emb

    extra = rng.lognormal(np.log(cfg.median_extra_history), cfg.history_sigma, cfg.n_users)
    max_len = cfg.max_history or max(cfg.min_history, cfg.n_items // 2)
    lengths = np.clip(cfg.min_history + np.floor(extra).astype(np.int64), cfg.min_history, max_len)
    choice = MultinomialLogit(taste, cfg.temperature, (cfg.popularity_weight * log_exposure).astype(np.float32))
    rows, chosen = choice.sequences(np.arange(cfg.n_users), lengths, rng, cfg.chunk_users)
    util = np.einsum("nd,nd->n", user_emb[rows], item_emb[chosen])
    latent = util + cfg.rating_noise * rng.standard_normal(len(util)).astype(np.float32)
    thresholds = calibrate_thresholds(latent, cfg.rating_hist)
    ratings = ordinal_ratings(latent, thresholds)

    counts = np.bincount(rows, minlength=cfg.n_users)
    start = cfg.start_time + rng.integers(0, 3 * 365 * 86400, cfg.n_users)
    gaps = rng.exponential(3600.0, len(rows)).astype(np.int64) + 1
    offsets = np.concatenate([[0], np.cumsum(counts)])
    csum = np.cumsum(gaps)
    within = csum - np.repeat(csum[offsets[:-1]] - gaps[offsets[:-1]], counts)
    timestamps = np.repeat(start, counts) + within

    inter = pd.DataFrame({
        "user_id": users["user_id"].to_numpy()[rows],
        "item_id": items["item_id"].to_numpy()[chosen],
        "rating": ratings,
        "timestamp": timestamps,
    })
    truth = SyntheticTruth(
        user_emb, item_emb, len(GENRES), log_exposure.astype(np.float32), thresholds,
        float(cfg.rating_noise), float(cfg.temperature), float(cfg.popularity_weight), GENRES,
    )
    ds = build_dataset("synthetic", items, users, inter, {"synthetic_config": cfg, "seed": seed})
    # build_dataset drops items nobody chose and sorts ids numerically;
    # realign the truth with the final indices.
    item_pos = ds.items["item_id"].astype(np.int64).to_numpy() - 1
    user_pos = ds.users["user_id"].astype(np.int64).to_numpy() - 1
    if len(item_pos) != cfg.n_items or len(user_pos) != cfg.n_users:
        truth = truth.subset(user_pos, item_pos)
    return replace(ds, truth=truth)


def _make_items(cfg: SyntheticConfig, rng: np.random.Generator):
    n, d = cfg.n_items, cfg.latent_dim
    prev = GENRE_PREVALENCE / GENRE_PREVALENCE.sum()
    n_genres = np.minimum(1 + rng.binomial(2, 0.35, n), 3)
    genre01 = np.zeros((n, len(GENRES)), np.float32)
    for i in range(n):
        genre01[i, rng.choice(len(GENRES), n_genres[i], replace=False, p=prev)] = 1.0
    lo, hi = cfg.year_range
    # Skewed towards recent years, as in MovieLens.
    years = (hi - (hi - lo) * rng.beta(1.0, 3.0, n)).round().astype(np.int64)
    factors = rng.standard_normal((n, d)).astype(np.float32)
    if d:
        factors[:, 0] = (years - years.mean()) / max(years.std(), 1.0)
    quality = (cfg.quality_std * rng.standard_normal(n)).astype(np.float32)
    # Exposure rank follows quality loosely: good items tend to be popular.
    order = np.argsort(-(quality / max(cfg.quality_std, 1e-6) + rng.standard_normal(n)))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    log_exposure = zipf_log_exposure(rank, cfg.popularity_alpha)

    titles, descriptions, seen = [], [], {}
    for i in range(n):
        gs = [GENRES[j] for j in np.flatnonzero(genre01[i])]
        title = _title(gs[0], rng)
        seen[title] = seen.get(title, 0) + 1
        if seen[title] > 1:
            title = f"{title} {_roman(seen[title])}"
        titles.append(title)
        descriptions.append(_description(gs, factors[i], rng))
    frame = pd.DataFrame({
        "item_id": [str(i + 1) for i in range(n)],
        "title": titles,
        "genres": [tuple(GENRES[j] for j in np.flatnonzero(genre01[i])) for i in range(n)],
        "year": years,
        "description": descriptions,
    })
    return frame, genre01, factors, quality, log_exposure


def _make_users(cfg: SyntheticConfig, rng: np.random.Generator):
    n, d = cfg.n_users, cfg.latent_dim
    ages = np.array(AGE_GROUPS)[rng.choice(len(AGE_GROUPS), n, p=AGE_SHARE)]
    genders = np.where(rng.random(n) < 0.72, "M", "F")
    occupations = np.array(OCCUPATIONS)[rng.integers(0, len(OCCUPATIONS), n)]
    gidx = {g: j for j, g in enumerate(GENRES)}
    shifts = {key: np.zeros(len(GENRES), np.float32) for key in _DEMOGRAPHIC_TASTE}
    for key, table in _DEMOGRAPHIC_TASTE.items():
        for g, v in table.items():
            shifts[key][gidx[g]] = v
    base = np.zeros((n, len(GENRES)), np.float32)
    age_key = np.where(ages < 18, "young", np.where(ages < 45, "adult", "senior"))
    for keys in (age_key, genders, occupations):
        for key in np.unique(keys):
            if key in shifts:
                base[keys == key] += shifts[key]
    genre_aff = base + cfg.genre_taste_std * rng.standard_normal((n, len(GENRES))).astype(np.float32)
    factors = (cfg.latent_std / np.sqrt(max(d, 1))) * rng.standard_normal((n, d)).astype(np.float32)
    if d:
        # Older users lean towards classics (negative pole of the year factor).
        factors[:, 0] -= 0.02 * (ages - 30) * cfg.latent_std / np.sqrt(d)
    frame = pd.DataFrame({
        "user_id": [str(u + 1) for u in range(n)],
        "age": ages.astype(np.int64),
        "gender": genders,
        "occupation": occupations,
    })
    return frame, genre_aff, factors.astype(np.float32)


def _title(genre: str, rng: np.random.Generator) -> str:
    adjs, nouns, places, _ = _WORDS[genre]
    adj, noun, place = adjs[rng.integers(len(adjs))], nouns[rng.integers(len(nouns))], places[rng.integers(len(places))]
    form = rng.integers(4)
    if form == 0:
        return f"{adj} {noun}"
    if form == 1:
        return f"The {noun} of {place}"
    if form == 2:
        return f"{adj} {noun} in {place}"
    adj2 = adjs[rng.integers(len(adjs))]
    return f"{adj} {noun} of the {adj2} {nouns[rng.integers(len(nouns))]}"


def _description(genres: list[str], factors: np.ndarray, rng: np.random.Generator) -> str:
    """One line naming the genres and the words of the two strongest latent factors."""
    dims = sorted(range(min(len(factors), len(_THEMES))), key=lambda k: -abs(factors[k]))[:2]
    words = [_THEMES[k][0] if factors[k] > 0 else _THEMES[k][1] for k in dims if abs(factors[k]) > 0.6]
    subject = _WORDS[genres[0]][3][rng.integers(len(_WORDS[genres[0]][3]))]
    lead = ", ".join(words) + " " if words else ""
    kind = "/".join(g.lower() for g in genres)
    article = "An" if (lead or kind)[:1].lower() in "aeiou" else "A"
    return f"{article} {lead}{kind} film about {subject}."


def _roman(k: int) -> str:
    numerals = ((10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))
    out = ""
    for value, sym in numerals:
        while k >= value:
            out, k = out + sym, k - value
    return out
