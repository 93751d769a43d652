"""Seeded, realistic synthetic event stream with fault injection and an exact ground truth.

The simulation builds a product catalogue (category hierarchies, brands, log-normal prices), users with
1..n sessions spread over ``days`` with diurnal and weekday patterns, and per session a browse path of
views, cart-adds, removals and purchases. Whether a cart-add is purchased is drawn from a logistic model
of learnable features: price (cheaper converts more), category, brand, session activity before the cart
(views, distinct products), UTC hour and weekend, and the user's earlier purchases (returning buyers
convert more), plus an unobserved per-user propensity. About a third of cart-adds convert.

Faults are then injected in production order: invalid messages (one of every validation reason), exact
re-sends of recently produced valid messages (identical key and value bytes) and late events (valid
events held back ``late_hours`` of stream time). :class:`Truth` is accumulated as messages are produced
and is exact: invalid messages are never counted as valid, and every number is defined on what was
actually produced (see :class:`Truth`).

Counts are fixed, not random: ``round(n_events * invalid_rate)`` invalid messages,
``round(n_events * duplicate_rate)`` re-sends and up to ``round(n_events * late_rate)`` late events
(fewer only when the time span is too short to hold that many back); the rest are in-order originals.
Simulation and fault injection use separate random streams, so changing a fault rate keeps the
simulated behaviour of the same seed. Same config -> byte-identical output.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import orjson

from shopstream.events.lateness import partition_for
from shopstream.events.schema import EVENT_TYPES, REQUIRED_FIELDS
from shopstream.events.validation import REASON_CODES, Reason

LATE_THRESHOLD_S = 3600  # the truth counts an original as late when its partition is > 1 h ahead of it
#: the reasons the generator injects (the others are hostile inputs of other producers, see the tests)
GENERATED_REASONS: tuple[Reason, ...] = (
    Reason.MALFORMED_JSON, Reason.NOT_AN_OBJECT, Reason.MISSING_FIELD, Reason.WRONG_TYPE,
    Reason.UNKNOWN_EVENT_TYPE, Reason.NEGATIVE_PRICE, Reason.BAD_TIMESTAMP,
)


class Category(NamedTuple):
    """A leaf category; ``code`` None models the data set's category ids without a code."""

    code: str | None
    weight: float  # share of session interest
    median_price: float
    price_sigma: float  # log-normal sigma around the median
    brands: tuple[str, ...]
    purchase_effect: float  # added to the purchase logit of a cart-add


CATEGORIES: tuple[Category, ...] = (
    Category(
        "electronics.smartphone",
        0.20,
        260.0,
        0.65,
        ("samsung", "apple", "xiaomi", "huawei", "oppo", "vivo", "meizu", "honor"),
        0.35,
    ),
    Category(
        "electronics.audio.headphone",
        0.05,
        55.0,
        0.8,
        ("sony", "jbl", "apple", "samsung", "xiaomi", "sennheiser"),
        0.15,
    ),
    Category(
        "electronics.video.tv", 0.05, 420.0, 0.55, ("samsung", "lg", "sony", "philips", "hisense"), -0.15
    ),
    Category("electronics.clocks", 0.03, 140.0, 0.8, ("casio", "garmin", "apple", "samsung", "xiaomi"), 0.0),
    Category("electronics.tablet", 0.02, 310.0, 0.55, ("apple", "samsung", "lenovo", "huawei"), -0.05),
    Category(
        "computers.notebook",
        0.06,
        680.0,
        0.45,
        ("lenovo", "hp", "asus", "acer", "apple", "dell", "msi"),
        -0.25,
    ),
    Category("computers.desktop", 0.02, 590.0, 0.55, ("hp", "lenovo", "dell", "acer"), -0.3),
    Category(
        "computers.peripherals.mouse", 0.02, 22.0, 0.7, ("logitech", "a4tech", "defender", "razer"), 0.3
    ),
    Category(
        "appliances.kitchen.refrigerators",
        0.04,
        520.0,
        0.45,
        ("samsung", "lg", "bosch", "beko", "indesit", "atlant"),
        -0.3,
    ),
    Category(
        "appliances.kitchen.washer",
        0.04,
        370.0,
        0.45,
        ("samsung", "lg", "bosch", "indesit", "beko", "haier"),
        -0.2,
    ),
    Category(
        "appliances.kitchen.kettle", 0.02, 28.0, 0.6, ("tefal", "bosch", "philips", "polaris", "redmond"), 0.3
    ),
    Category(
        "appliances.environment.vacuum",
        0.03,
        150.0,
        0.7,
        ("samsung", "dyson", "xiaomi", "philips", "lg", "bosch"),
        0.05,
    ),
    Category(
        "appliances.personal.hair_cutter",
        0.02,
        35.0,
        0.6,
        ("philips", "braun", "panasonic", "remington"),
        0.2,
    ),
    Category(
        "apparel.shoes", 0.04, 75.0, 0.6, ("nike", "adidas", "puma", "reebok", "asics", "newbalance"), 0.2
    ),
    Category("apparel.shirt", 0.02, 30.0, 0.6, ("adidas", "nike", "tommyhilfiger", "lacoste"), 0.1),
    Category("furniture.living_room.sofa", 0.02, 410.0, 0.55, ("ikea", "hoff", "askona"), -0.4),
    Category("furniture.bedroom.bed", 0.01, 330.0, 0.55, ("ikea", "askona", "ormatek"), -0.35),
    Category("auto.accessories.player", 0.02, 85.0, 0.6, ("pioneer", "kenwood", "jvc", "alpine"), 0.0),
    Category("construction.tools.drill", 0.02, 90.0, 0.7, ("bosch", "makita", "dewalt", "metabo"), 0.1),
    Category("kids.toys", 0.02, 24.0, 0.8, ("lego", "hasbro", "mattel"), 0.2),
    Category("sport.bicycle", 0.01, 290.0, 0.55, ("stels", "forward", "merida", "giant"), -0.1),
    Category("accessories.bag", 0.02, 38.0, 0.7, ("samsonite", "xiaomi", "wenger"), 0.1),
    Category(None, 0.06, 45.0, 1.0, ("lucente", "ritmix", "vitek", "maxwell", "scarlett"), -0.1),
    Category(None, 0.04, 120.0, 1.0, ("redmond", "polaris", "tefal", "elenberg"), -0.05),
    Category(None, 0.03, 12.0, 0.9, ("defender", "perfeo", "cactus"), 0.15),
)
#: Session-start weight per UTC hour (the store's customers are mostly in UTC+3).
HOUR_WEIGHTS: tuple[float, ...] = (
    0.35,
    0.25,
    0.2,
    0.25,
    0.45,
    0.7,
    0.9,
    1.0,
    1.05,
    1.1,
    1.1,
    1.1,
    1.15,
    1.2,
    1.3,
    1.35,
    1.35,
    1.3,
    1.15,
    0.95,
    0.75,
    0.6,
    0.5,
    0.4,
)
WEEKDAY_WEIGHTS: tuple[float, ...] = (1.0, 0.98, 1.0, 1.02, 1.05, 1.12, 1.1)  # Monday first
#: Purchase-logit effect of the cart-add's UTC hour (evenings convert, nights do not) and of weekends.
HOUR_EFFECT: tuple[float, ...] = tuple(
    -0.35 if h >= 22 or h < 5 else 0.3 if 15 <= h < 20 else 0.0 for h in range(24)
)
WEEKEND_EFFECT = 0.25
PURCHASE_INTERCEPT = -1.35
PRICE_EFFECT = -0.6  # per unit of ln(price / 100)
NO_BRAND_EFFECT = -0.35
EMPTY_BRAND_RATE = 0.125


@dataclass(frozen=True)
class GeneratorConfig:
    """Generator settings; ``n_events`` is the exact number of messages produced (all kinds)."""

    n_events: int = 100_000
    seed: int = 0
    start: datetime = datetime(2019, 10, 1, tzinfo=UTC)
    days: float = 7.0
    n_products: int | None = None  # default: n_events // 100, clamped to [300, 20000]
    invalid_rate: float = 0.10
    duplicate_rate: float = 0.02
    late_rate: float = 0.02
    late_hours: tuple[float, float] = (1.0, 6.0)
    duplicate_max_lag: int = 50  # a re-send repeats one of the last this-many in-order originals
    partitions: int = 4  # of the topic: the truth follows each event to its partition (lateness is per partition)

    def __post_init__(self) -> None:
        problems = []
        if self.n_events < 1:
            problems.append("n_events must be >= 1")
        if self.start.tzinfo is None:
            problems.append("start must be timezone-aware")
        if self.days <= 0:
            problems.append("days must be > 0")
        for name in ("invalid_rate", "duplicate_rate", "late_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1)")
        if self.invalid_rate + self.duplicate_rate + self.late_rate >= 0.9:
            problems.append("invalid_rate + duplicate_rate + late_rate must be < 0.9")
        lo, hi = self.late_hours
        if not 1.0 <= lo < hi:
            problems.append("late_hours must be (lo, hi) with 1 <= lo < hi")
        if self.duplicate_max_lag < 1:
            problems.append("duplicate_max_lag must be >= 1")
        if self.partitions < 1:
            problems.append("partitions must be >= 1")
        if problems:
            raise ValueError("invalid GeneratorConfig: " + "; ".join(problems))


@dataclass
class Truth:
    """Exact summary of a produced stream; later stages reconcile to it.

    Definitions: a *valid* message passes :func:`~shopstream.events.validation.validate_batch`; *unique*
    events are valid messages deduplicated by ``event_key`` and ``duplicates = valid_messages -
    unique_events``. Lateness is :mod:`shopstream.events.lateness`'s: a unique event's lateness is how far
    the largest event time of the valid messages produced before it *to the same partition* (Kafka's
    default partitioner on its key, ``config.partitions`` partitions) is ahead of its own. It is *late*
    when that is more than 1 hour; ``late_histogram`` maps ``h`` to the number of events with lateness in
    ``(h, h + 1]`` hours (see :meth:`set_aside`). Per-day figures use the UTC date of ``event_time`` over
    unique events; revenue is the sum of purchase prices in exact cents, as a ``"1234.56"`` string. A
    cart-add *converted* when a unique purchase event with the same ``user_session`` and ``product_id``
    has an ``event_time`` >= the cart-add's.
    """

    seed: int = 0
    total_messages: int = 0
    valid_messages: int = 0
    unique_events: int = 0
    duplicates: int = 0
    invalid: int = 0
    invalid_by_reason: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASON_CODES, 0))
    unique_events_by_type: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_TYPES, 0))
    unique_events_by_day: dict[str, int] = field(default_factory=dict)
    late_events: int = 0
    late_histogram: dict[int, int] = field(default_factory=dict)
    purchases: int = 0
    revenue: str = "0.00"
    purchases_by_day: dict[str, int] = field(default_factory=dict)
    revenue_by_day: dict[str, str] = field(default_factory=dict)
    cart_adds: int = 0
    cart_adds_converted: int = 0
    unique_users: int = 0
    unique_sessions: int = 0
    unique_products: int = 0
    first_event_time: str | None = None
    last_event_time: str | None = None

    def set_aside(self, bound_s: int) -> int:
        """Unique events later than a lateness bound of whole hours: those silver sets aside."""
        if bound_s % 3600 or bound_s < LATE_THRESHOLD_S:
            raise ValueError(f"the histogram answers for whole-hour bounds >= 1 h, not {bound_s} s")
        return sum(n for h, n in self.late_histogram.items() if h >= bound_s // 3600)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (histogram keys become strings)."""
        d = asdict(self)
        d["late_histogram"] = {str(k): v for k, v in sorted(self.late_histogram.items())}
        return d

    def to_json(self) -> bytes:
        """Indented JSON bytes of :meth:`to_dict`."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Truth:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["late_histogram"] = {int(k): v for k, v in data.get("late_histogram", {}).items()}
        return cls(**data)


def _cents_str(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    q, r = divmod(abs(cents), 100)
    return f"{sign}{q}.{r:02d}"


class _Catalog:
    """Products as parallel lists plus per-category sampling tables."""

    def __init__(self, rng: random.Random, n_products: int) -> None:
        total_w = sum(c.weight for c in CATEGORIES)
        brand_effect: dict[str, float] = {}
        self.rows: list[tuple[int, int, str | None, str | None, float]] = []  # pid, cid, code, brand, price
        self.logit: list[float] = []  # price + category + brand part of the purchase logit
        self.cart_p: list[float] = []
        self.cents: list[int] = []
        self.by_cat: list[tuple[list[int], list[float]]] = []  # product indices, cumulative popularity
        next_pid = 1_000_000
        for ci, cat in enumerate(CATEGORIES):
            cids = [2_053_013_552_226_107_603 + rng.randrange(10**15) for _ in range(1 + ci % 2)]
            premium = {b: math.exp(rng.gauss(0.0, 0.25)) for b in cat.brands}
            for b in cat.brands:
                brand_effect.setdefault(b, rng.gauss(0.0, 0.3))
            members: list[int] = []
            cum: list[float] = []
            acc = 0.0
            # Skewed popularity; brand-less products are spread evenly over the popularity ranks so
            # their share of events stays near EMPTY_BRAND_RATE even in small catalogues.
            popularity = [
                math.exp(rng.gauss(0.0, 1.0)) for _ in range(max(3, round(n_products * cat.weight / total_w)))
            ]
            rank = {i: r for r, i in enumerate(sorted(range(len(popularity)), key=popularity.__getitem__))}
            every, phase = round(1 / EMPTY_BRAND_RATE), rng.randrange(round(1 / EMPTY_BRAND_RATE))
            for j, pop in enumerate(popularity):
                brand = None if rank[j] % every == phase else rng.choice(cat.brands)
                price = cat.median_price * (premium[brand] if brand else 0.8)
                price = round(max(0.5, price * math.exp(rng.gauss(0.0, cat.price_sigma))), 2)
                next_pid += rng.randrange(1, 2000)
                members.append(len(self.rows))
                self.rows.append((next_pid, rng.choice(cids), cat.code, brand, price))
                self.cents.append(round(price * 100))
                b_eff = brand_effect[brand] if brand else NO_BRAND_EFFECT
                self.logit.append(cat.purchase_effect + b_eff + PRICE_EFFECT * math.log(price / 100.0))
                self.cart_p.append(0.13 if price < 50 else 0.10 if price < 300 else 0.075)
                acc += pop
                cum.append(acc)
            self.by_cat.append((members, cum))
        self.cat_cum = list(np.cumsum([c.weight for c in CATEGORIES]))


class _Sim(NamedTuple):
    t: list[int]  # event time, epoch seconds, production (time) order
    etype: list[int]
    prod: list[int]
    user: list[int]
    sess: list[int]
    sessions: list[str]
    user_ids: list[int]
    logit: np.ndarray  # purchase logit of each cart-add (NaN for other events), as drawn
    user_effect: np.ndarray  # the unobserved per-user part of that logit (NaN for other events)


def _simulate(cfg: GeneratorConfig, n_base: int, catalog: _Catalog, rng: random.Random) -> _Sim:
    """Simulate users until ``n_base`` events exist; return them sorted by event time (stable)."""
    rand, expo, gauss, randrange = rng.random, rng.expovariate, rng.gauss, rng.randrange
    choices, choice = rng.choices, rng.choice
    start_s = int(cfg.start.timestamp())
    end_s = start_s + max(1, int(cfg.days * 86400))
    midnight0 = start_s - start_s % 86400
    n_days = -(-(end_s - midnight0) // 86400)
    day_cum = list(np.cumsum([WEEKDAY_WEIGHTS[((midnight0 // 86400) + d + 3) % 7] for d in range(n_days)]))
    hour_cum = list(np.cumsum(HOUR_WEIGHTS))
    days_idx, hours_idx = range(n_days), range(24)
    cat_idx, cat_cum, by_cat = range(len(CATEGORIES)), catalog.cat_cum, catalog.by_cat
    plogit, cart_p = catalog.logit, catalog.cart_p
    T, E, P, U, S = array("q"), array("b"), array("i"), array("i"), array("i")
    CI, CZ, CL = array("q"), array("d"), array("d")  # cart-adds: event index, purchase logit, user effect
    sessions: list[str] = []
    user_ids: list[int] = []

    def add(t: int, e: int, p: int, u: int, sid: int) -> None:
        T.append(t)
        E.append(e)
        P.append(p)
        U.append(u)
        S.append(sid)

    def session_start() -> int:
        while True:
            d = choices(days_idx, cum_weights=day_cum)[0]
            h = choices(hours_idx, cum_weights=hour_cum)[0]
            s = midnight0 + d * 86400 + h * 3600 + randrange(3600)
            if start_s <= s < end_s:
                return s

    def pick(ci: int) -> int:
        members, cum = by_cat[ci]
        return choices(members, cum_weights=cum)[0]

    while len(T) < n_base:
        u = len(user_ids)
        user_ids.append(512_000_000 + u * 41 + randrange(41))
        latent = gauss(0.0, 0.5)
        prefs = choices(cat_idx, cum_weights=cat_cum, k=2)
        prior = 0
        for s0 in sorted(session_start() for _ in range(1 + min(int(expo(0.6)), 30))):
            sid = len(sessions)
            h = f"{rng.getrandbits(128):032x}"
            sessions.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}")
            t = s0
            ci = prefs[0] if rand() < 0.75 else choices(cat_idx, cum_weights=cat_cum)[0]
            viewed: list[int] = []
            seen: set[int] = set()
            cart: dict[int, bool] = {}
            bought: set[int] = set()
            for step in range(1 + min(int(expo(0.18)), 60)):
                if step:
                    t += 1 + int(expo(1 / 35))
                    if rand() < 0.12:
                        ci = prefs[1] if rand() < 0.5 else choices(cat_idx, cum_weights=cat_cum)[0]
                p = choice(viewed) if viewed and rand() < 0.25 else pick(ci)
                add(t, 0, p, u, sid)
                viewed.append(p)
                seen.add(p)
                if p not in cart and p not in bought and rand() < cart_p[p]:
                    t += 1 + int(expo(1 / 20))
                    add(t, 1, p, u, sid)
                    hour, wd = (t % 86400) // 3600, (t // 86400 + 3) % 7
                    z = (
                        PURCHASE_INTERCEPT
                        + plogit[p]
                        + 0.3 * math.log1p(len(viewed))
                        - 0.1 * max(0, len(seen) - 4)
                        + HOUR_EFFECT[hour]
                        + (WEEKEND_EFFECT if wd >= 5 else 0.0)
                        + latent
                        + (0.8 + 0.15 * min(prior, 4) if prior else 0.0)
                    )
                    CI.append(len(T) - 1)
                    CZ.append(z)
                    CL.append(latent)
                    cart[p] = rand() < 1.0 / (1.0 + math.exp(-z))
                elif p not in bought and rand() < 0.004:  # occasional buy-now without a cart-add
                    t += 1 + int(expo(1 / 40))
                    add(t, 3, p, u, sid)
                    bought.add(p)
            for p, buy in cart.items():
                if not buy and rand() < 0.45:
                    t += 1 + int(expo(1 / 30))
                    add(t, 2, p, u, sid)
            for p, buy in cart.items():
                if buy:
                    t += 5 + int(expo(1 / 60))
                    add(t, 3, p, u, sid)
                    bought.add(p)
            prior += len(bought)
    cols = [np.frombuffer(a, dtype=a.typecode)[:n_base] for a in (T, E, P, U, S)]
    order = np.argsort(cols[0], kind="stable")
    t_s, e, p, u, s = (c[order].tolist() for c in cols)
    ci = np.frombuffer(CI, dtype=np.int64)
    keep = ci < n_base
    logit, effect = np.full(n_base, np.nan), np.full(n_base, np.nan)
    logit[ci[keep]] = np.frombuffer(CZ, dtype=np.float64)[keep]
    effect[ci[keep]] = np.frombuffer(CL, dtype=np.float64)[keep]
    return _Sim(t_s, e, p, u, s, sessions, user_ids, logit[order], effect[order])


_BAD_TIMES: tuple[Any, ...] = (
    "2019-13-01 10:00:00 UTC",
    "2019-02-30 10:00:00 UTC",
    "2019-10-01 25:61:00 UTC",
    "01/10/2019 10:00:00",
    "yesterday",
    "",
    "2019-10-01T10:00:00",
    "2019-10-01",
    "2019-10-01 10:00:00 MSK",
    1569924000,
    1.5e9,
)
_UNKNOWN_TYPES = ("click", "wishlist", "VIEW", "Purchase", "add_to_cart", "", "checkout", "view ")
_GARBAGE = (b'{"event_type": "view",}', b"{event_time: 2019-10-01}", b"{'event_type': 'view'}", b"not json at all",
            b"{}}", b"[1, 2")
_NON_OBJECTS = (b"[1, 2, 3]", b"42", b'"view"', b"null", b"true", b"[]")


def _invalid_value(rng: random.Random, reason: Reason, d: dict[str, Any]) -> bytes:
    """A message failing with exactly ``reason``, built from a valid event dict ``d`` (mutated)."""
    rand, choice = rng.random, rng.choice
    if reason is Reason.MALFORMED_JSON:
        if rand() < 0.6:
            full = orjson.dumps(d)
            return full[: rng.randrange(1, len(full) - 1)]  # an unclosed object never parses
        return choice(_GARBAGE)
    if reason is Reason.NOT_AN_OBJECT:
        if rand() < 0.3:
            return orjson.dumps({"schema": {"type": "struct"}, "payload": [d["event_type"], d["product_id"]]})
        if rand() < 0.3:
            return orjson.dumps(list(d.values()))
        return choice(_NON_OBJECTS)
    if reason is Reason.MISSING_FIELD:
        name = choice(REQUIRED_FIELDS)
        r = rand()
        if r < 0.6:
            del d[name]
        elif r < 0.9 or name != "user_session":
            d[name] = None
        else:
            d[name] = ""
    elif reason is Reason.WRONG_TYPE:
        name = choice(
            (
                "product_id",
                "category_id",
                "user_id",
                "price",
                "event_type",
                "user_session",
                "brand",
                "category_code",
            )
        )
        v = d[name]
        if name == "price":
            d[name] = choice(("abc", str(v), True, [v], {"amount": v}))
        elif name.endswith("_id"):
            d[name] = choice(("x", str(v), v + 0.5, float(v), [v], True))
        elif name == "event_type":
            d[name] = choice((42, [v], {"type": v}, True))
        else:
            d[name] = choice((12345, [v or "x"], 1.5, False))
    elif reason is Reason.UNKNOWN_EVENT_TYPE:
        d["event_type"] = choice(_UNKNOWN_TYPES)
    elif reason is Reason.NEGATIVE_PRICE:
        d["price"] = -max(0.01, round(d["price"] * rand(), 2))
    else:
        d["event_time"] = choice(_BAD_TIMES)
    return orjson.dumps(d)


def _simulation(cfg: GeneratorConfig, n_base: int) -> tuple[_Sim, _Catalog]:
    """The simulated (fault-free, unique) events of a config: the same for the stream and :func:`simulate`."""
    n_products = cfg.n_products or min(20_000, max(300, cfg.n_events // 100))
    catalog = _Catalog(random.Random(cfg.seed * 7919 + 4), n_products)
    return _simulate(cfg, n_base, catalog, random.Random(cfg.seed * 7919 + 1)), catalog


@dataclass(frozen=True)
class SimulatedEvents:
    """The unique valid events of a stream (what silver holds once re-sends are dropped), in event-time order.

    Columns are parallel numpy arrays; ``product``, ``user`` and ``session`` index :attr:`products`,
    :attr:`user_ids` and :attr:`sessions`; ``event_type`` indexes :data:`EVENT_TYPES`. ``logit`` is the purchase
    logit the simulation drew each cart-add's outcome from (P(purchase) = sigmoid(logit)) and ``user_effect``
    the unobserved per-user part of it; both NaN for other events.
    """

    t_s: np.ndarray
    event_type: np.ndarray
    product: np.ndarray
    user: np.ndarray
    session: np.ndarray
    logit: np.ndarray
    user_effect: np.ndarray
    products: list[tuple[int, int, str | None, str | None, float]]  # product_id, category_id, code, brand, price
    user_ids: list[int]
    sessions: list[str]


def simulate(config: GeneratorConfig) -> SimulatedEvents:
    """The unique valid events the stream of ``config`` produces, without serialising or injecting faults.

    Much faster than iterating :func:`generate` when only the behaviour matters (benchmarks, training data):
    the same seed gives the same events as the stream's deduplicated valid messages.
    """
    n = config.n_events
    n_base = n - round(n * config.invalid_rate) - round(n * config.duplicate_rate)
    if n_base < 1:
        raise ValueError(f"n_events={n} leaves no valid events at these fault rates")
    sim, catalog = _simulation(config, n_base)
    return _simulated_events(sim, catalog)


def _simulated_events(sim: _Sim, catalog: _Catalog) -> SimulatedEvents:
    return SimulatedEvents(
        np.asarray(sim.t, dtype=np.int64), np.asarray(sim.etype, dtype=np.int8), np.asarray(sim.prod, dtype=np.int64),
        np.asarray(sim.user, dtype=np.int64), np.asarray(sim.sess, dtype=np.int64), sim.logit, sim.user_effect,
        catalog.rows, sim.user_ids, sim.sessions,
    )


def cart_add_truth(events: SimulatedEvents, index: np.ndarray | None = None) -> Any:
    """Per cart-add of ``events`` (or of the rows ``index``): the purchase probability the simulation used.

    A pandas DataFrame with ``event_key`` (as the validator keys the event), ``event_time``, ``user_id``,
    ``user_session``, ``product_id``, ``purchase_probability`` (sigmoid of the logit), ``purchase_logit`` and
    ``user_effect`` (the part of the logit no event shows: ``purchase_logit - user_effect`` is what the
    observable behaviour explains).
    """
    import pandas as pd

    from shopstream.events.schema import event_key

    idx = np.flatnonzero(events.event_type == 1) if index is None else np.asarray(index, dtype=np.int64)
    t = events.t_s[idx]
    pids = [events.products[i][0] for i in events.product[idx].tolist()]
    users = [events.user_ids[i] for i in events.user[idx].tolist()]
    sessions = [events.sessions[i] for i in events.session[idx].tolist()]
    logit = events.logit[idx]
    return pd.DataFrame({
        "event_key": [event_key(ts * 1_000_000, "cart", p, u, s)
                      for ts, p, u, s in zip(t.tolist(), pids, users, sessions, strict=True)],
        "event_time": pd.to_datetime(t, unit="s", utc=True),
        "user_id": users,
        "user_session": sessions,
        "product_id": pids,
        "purchase_probability": 1.0 / (1.0 + np.exp(-logit)),
        "purchase_logit": logit,
        "user_effect": events.user_effect[idx],
    })


class EventStream:
    """Iterable of ``(key, value)`` messages in production order, with :attr:`truth` kept up to date.

    ``key`` is the UTF-8 ``user_session`` (for an invalid message, that of the event it was made from) and
    ``value`` the Kaggle-style JSON bytes. Each iteration regenerates the same bytes from the seed and
    restarts the truth; :attr:`truth` is complete once an iteration is exhausted.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self._truth = _TruthBuilder(config.seed)

    @property
    def truth(self) -> Truth:
        """The truth of the messages produced so far by the current (or last) iteration."""
        return self._truth.build()

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return ((key, value) for key, value, _ in self.timed())

    def cart_add_truth(self) -> Any:
        """The true purchase probability of every unique cart-add produced so far (see :func:`cart_add_truth`).

        Part of the truth, never of the events: a model must not see it. One row per cart-add in production
        order; complete once an iteration is exhausted.
        """
        tb = self._truth
        if tb.sim is None or tb.catalog is None:
            return cart_add_truth(SimulatedEvents(*(np.zeros(0, dtype=np.int64),) * 7, [], [], []), np.zeros(0))
        return cart_add_truth(_simulated_events(tb.sim, tb.catalog), np.asarray(tb.cart_events, dtype=np.int64))

    def timed(self) -> Iterator[tuple[bytes, bytes, int]]:
        """Like iteration, with each message's arrival time (epoch ms) as a third element.

        Arrival is the largest event time produced so far (or the event's own if later), as a live stream
        would stamp it; a producer sets it as the Kafka message timestamp. The pipeline does not need it:
        lateness is measured in event time per partition (:mod:`shopstream.events.lateness`), so a producer
        that sets no timestamp gets the same result.
        """
        self._truth = tb = _TruthBuilder(self.config.seed)
        return _produce(self.config, tb)


def generate(
    n_events: int | None = None,
    seed: int | None = None,
    start: datetime | None = None,
    *,
    config: GeneratorConfig | None = None,
    **options: Any,
) -> EventStream:
    """Stream of generated messages; arguments override ``config`` (a :class:`GeneratorConfig`).

    Example: ``stream = generate(100_000, seed=7, days=3, invalid_rate=0.05)``; iterate it for
    ``(key, value)`` byte pairs, then read ``stream.truth``.
    """
    given = {k: v for k, v in (("n_events", n_events), ("seed", seed), ("start", start)) if v is not None}
    return EventStream(replace(config or GeneratorConfig(), **given, **options))


def generate_all(*args: Any, **kwargs: Any) -> tuple[list[tuple[bytes, bytes]], Truth]:
    """Materialise :func:`generate`: (all messages, truth)."""
    stream = generate(*args, **kwargs)
    messages = list(stream)
    return messages, stream.truth


class _TruthBuilder:
    """Accumulates :class:`Truth` as messages are produced."""

    def __init__(self, seed: int) -> None:
        self.t = Truth(seed=seed)
        self.by_type = dict.fromkeys(range(len(EVENT_TYPES)), 0)
        self.cents_by_day: dict[str, int] = {}
        self.users: set[int] = set()
        self.sessions: set[int] = set()
        self.products: set[int] = set()
        self.carts: list[tuple[int, int, int]] = []  # session, product, time
        self.last_purchase: dict[tuple[int, int], int] = {}
        self.cart_events: list[int] = []  # simulation index of each unique cart-add, in production order
        self.sim: _Sim | None = None
        self.catalog: _Catalog | None = None

    def build(self) -> Truth:
        t = replace(
            self.t,
            invalid_by_reason=dict(self.t.invalid_by_reason),
            unique_events_by_day=dict(sorted(self.t.unique_events_by_day.items())),
            late_histogram=dict(sorted(self.t.late_histogram.items())),
            purchases_by_day=dict(sorted(self.t.purchases_by_day.items())),
        )
        t.unique_events_by_type = {name: self.by_type[i] for i, name in enumerate(EVENT_TYPES)}
        t.revenue_by_day = {day: _cents_str(c) for day, c in sorted(self.cents_by_day.items())}
        t.revenue = _cents_str(sum(self.cents_by_day.values()))
        t.purchases = sum(t.purchases_by_day.values())
        t.cart_adds = len(self.carts)
        lp = self.last_purchase
        t.cart_adds_converted = sum(1 for s, p, ts in self.carts if lp.get((s, p), -1) >= ts)
        t.unique_users, t.unique_sessions, t.unique_products = (
            len(self.users),
            len(self.sessions),
            len(self.products),
        )
        t.unique_events = t.valid_messages - t.duplicates
        return t


def _produce(cfg: GeneratorConfig, tb: _TruthBuilder) -> Iterator[tuple[bytes, bytes, int]]:
    n = cfg.n_events
    n_inv, n_dup = round(n * cfg.invalid_rate), round(n * cfg.duplicate_rate)
    n_base = n - n_inv - n_dup
    if n_base < 1:
        raise ValueError(f"n_events={n} leaves no valid events at these fault rates")
    fault_rng = random.Random(cfg.seed * 7919 + 2)
    np_rng = np.random.default_rng([cfg.seed, 3])
    sim, catalog = _simulation(cfg, n_base)
    tb.sim, tb.catalog = sim, catalog
    t_arr = np.asarray(sim.t, dtype=np.int64)

    # Late originals: held back until the in-order stream has passed event_time + delay.
    lo, hi = (int(h * 3600) for h in cfg.late_hours)
    delay = np_rng.integers(lo, hi, size=n_base)
    eligible = np.flatnonzero(t_arr + delay <= t_arr[-1])
    n_late = min(round(n * cfg.late_rate), len(eligible))
    late = np.zeros(n_base, dtype=bool)
    late[np_rng.choice(eligible, size=n_late, replace=False)] = True
    in_pos = np.flatnonzero(~late)
    late_pos = np.flatnonzero(late)
    due = t_arr[late_pos] + delay[late_pos]
    release = np.searchsorted(t_arr[in_pos], due, side="left")  # emitted right after in-order #release
    seq_major = np.concatenate([np.arange(len(in_pos)), release])
    seq_minor = np.concatenate([np.zeros(len(in_pos), dtype=np.int64), due])
    valid_seq = np.concatenate([in_pos, late_pos])[np.lexsort((seq_minor, seq_major))].tolist()

    # Slot kinds: 0 original, 1 invalid, 2 re-send; the first re-send must follow an original.
    kinds = np.zeros(n, dtype=np.int8)
    perm = np_rng.permutation(n)
    kinds[perm[:n_inv]] = 1
    kinds[perm[n_inv : n_inv + n_dup]] = 2
    if n_dup:
        first_orig, first_dup = int(np.argmax(kinds == 0)), int(np.argmax(kinds == 2))
        if first_dup < first_orig:
            kinds[first_dup], kinds[first_orig] = 0, 2

    rows, cents, sessions, user_ids = catalog.rows, catalog.cents, sim.sessions, sim.user_ids
    s_t, s_e, s_p, s_u, s_s = sim.t, sim.etype, sim.prod, sim.user, sim.sess
    late_flags = late.tolist()
    dumps = orjson.dumps
    reasons = list(GENERATED_REASONS)
    day_cache: dict[int, str] = {}
    truth = tb.t
    by_day, by_type, cents_by_day = truth.unique_events_by_day, tb.by_type, tb.cents_by_day
    purchases_by_day, hist, invalid_by_reason = (
        truth.purchases_by_day,
        truth.late_histogram,
        truth.invalid_by_reason,
    )
    users, sess_seen, products = tb.users, tb.sessions, tb.products
    carts, last_purchase = tb.carts, tb.last_purchase
    recent: list[tuple[bytes, bytes]] = []
    max_lag = cfg.duplicate_max_lag
    watermark = -(2**62)
    partition_max: dict[int, int] = {}  # partition -> largest event time produced to it
    partition_of: dict[int, int] = {}  # session -> partition
    first = last = None
    vi = 0

    def as_dict(b: int) -> dict[str, Any]:
        ts = s_t[b]
        day_n, sod = divmod(ts, 86400)
        day = day_cache.get(day_n)
        if day is None:
            day = day_cache[day_n] = (datetime(1970, 1, 1) + timedelta(days=day_n)).strftime("%Y-%m-%d")
        pid, cid, code, brand, price = rows[s_p[b]]
        hh, rem = divmod(sod, 3600)
        return {
            "event_time": f"{day} {hh:02d}:{rem // 60:02d}:{rem % 60:02d} UTC",
            "event_type": EVENT_TYPES[s_e[b]],
            "product_id": pid,
            "category_id": cid,
            "category_code": code,
            "brand": brand,
            "price": price,
            "user_id": user_ids[s_u[b]],
            "user_session": sessions[s_s[b]],
        }

    for kind in kinds.tolist():
        truth.total_messages += 1
        if kind == 0:
            b = valid_seq[vi]
            vi += 1
            d = as_dict(b)
            key, value = d["user_session"].encode(), dumps(d)
            ts, et, p, s = s_t[b], s_e[b], s_p[b], s_s[b]
            day = d["event_time"][:10]
            truth.valid_messages += 1
            by_type[et] += 1
            by_day[day] = by_day.get(day, 0) + 1
            users.add(s_u[b])
            sess_seen.add(s)
            products.add(p)
            if first is None or ts < first:
                first = ts
                truth.first_event_time = d["event_time"]
            if last is None or ts > last:
                last = ts
                truth.last_event_time = d["event_time"]
            part = partition_of.get(s)
            if part is None:
                part = partition_of[s] = partition_for(key, cfg.partitions)
            lateness = partition_max.get(part, ts) - ts
            if lateness > LATE_THRESHOLD_S:
                truth.late_events += 1
                hist[(lateness - 1) // 3600] = hist.get((lateness - 1) // 3600, 0) + 1
            if ts > partition_max.get(part, ts - 1):
                partition_max[part] = ts
            if ts > watermark:
                watermark = ts
            if et == 3:
                purchases_by_day[day] = purchases_by_day.get(day, 0) + 1
                cents_by_day[day] = cents_by_day.get(day, 0) + cents[p]
                if last_purchase.get((s, p), -1) < ts:
                    last_purchase[(s, p)] = ts
            elif et == 1:
                carts.append((s, p, ts))
                tb.cart_events.append(b)
            if not late_flags[b]:
                recent.append((key, value))
                if len(recent) > 2 * max_lag:
                    del recent[:max_lag]
            yield key, value, watermark * 1000
        elif kind == 2:
            key, value = recent[fault_rng.randrange(max(0, len(recent) - max_lag), len(recent))]
            truth.valid_messages += 1
            truth.duplicates += 1
            yield key, value, watermark * 1000
        else:
            reason = reasons[fault_rng.randrange(len(reasons))]
            d = as_dict(fault_rng.randrange(n_base))
            truth.invalid += 1
            invalid_by_reason[reason.value] += 1
            yield d["user_session"].encode(), _invalid_value(fault_rng, reason, d), max(watermark, 0) * 1000
