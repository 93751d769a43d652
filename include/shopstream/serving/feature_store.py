"""The online feature store: per-session and per-user state in Redis, kept by the same code as the gold table.

The gold job replays each user's silver events through :func:`shopstream.features.update` and takes
:func:`shopstream.features.features_for` at every cart-add (:func:`shopstream.features.user_feature_rows`).
Online, :func:`apply_events` applies the validated event stream to the same :class:`~shopstream.features.SessionState`
and :class:`~shopstream.features.UserState`, stored in Redis, with the same ``update``; at prediction time
:func:`features_for_event` reads them back and calls the same ``features_for``. Nothing here computes a
feature itself.

Key layout (``<p>`` = ``SHOPSTREAM_REDIS__KEY_PREFIX``; a session is keyed with its user because gold keeps
sessions per user):

=============================  =========================================================================
``<p>s:<user>:<session>``      hash: ``start`` (epoch s), ``events``, ``views``, ``carts``, ``purchases``,
                               ``pv:<product>`` (views of that product); TTL ``session_ttl_s``
``<p>sp:<user>:<session>``     set: products the session touched; TTL ``session_ttl_s``
``<p>u:<user>``                hash: ``carts``, ``purchases`` (all sessions); TTL ``user_ttl_s``
``<p>us:<user>``               set: the user's session ids; TTL ``user_ttl_s``
``<p>seen:<event_key>``        an applied event (re-sends are dropped); TTL ``dedupe_ttl_s``
``<p>cf:<event_key>``          JSON features of an applied cart-add, as of that event; TTL ``feature_log_ttl_s``
``<p>offsets:<group>:<topic>`` hash: partition -> next offset to read (written with the state it covers)
``<p>clocks:<group>:<topic>`` hash: partition -> its event-time clock at that offset (epoch us, events.lateness)
=============================  =========================================================================

Order and exactness. Gold orders a user's events by ``(event_time, event_key)``. :func:`apply_events` sorts
each batch the same way; the consumer only hands it events that no event still to come can precede (see
:mod:`shopstream.serving.consumer`). A cart-add's features are those of the state BEFORE it:

- when the consumer has not applied the cart-add yet (the usual case when a shop asks at cart-add time),
  the current state is that state;
- when it has, the state already counts it (and maybe later events), so the consumer's record of the
  features it computed just before applying it (``cf:<event_key>``) is served instead.

One transaction (MULTI/EXEC under WATCH) writes a batch's state, its dedupe keys, its feature records and
its offsets, and one transaction reads what a lookup needs, so a lookup never sees half a batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from shopstream.events.schema import event_key as make_event_key
from shopstream.events.schema import from_micros, parse_event_time, to_micros
from shopstream.features import SessionState, UserState, features_for, update
from shopstream.settings import Settings

SESSION_COUNTERS = ("events", "views", "carts", "purchases")
USER_COUNTERS = ("carts", "purchases")
PV = "pv:"
_CENT = Decimal("0.01")


class FeatureStoreError(RuntimeError):
    """The feature store cannot do what was asked; the message says why and what to do."""


# ------------------------------------------------------------------------------------------ events
def silver_price(price: float) -> float:
    """The price as silver types it (``decimal(12,2)``, half up) and gold reads it back (``float``)."""
    return float(Decimal(repr(float(price))).quantize(_CENT, rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class Event:
    """One validated event, as the feature store needs it (event time in epoch microseconds, UTC)."""

    event_key: str
    t_us: int
    event_type: str
    product_id: int
    user_id: int
    user_session: str
    price: float = 0.0
    category_code: str | None = None
    brand: str | None = None

    @property
    def event_time(self) -> datetime:
        return from_micros(self.t_us)

    @property
    def t_s(self) -> float:
        """Epoch seconds as gold computes them (``datetime.timestamp()`` of the microsecond time)."""
        return self.t_us / 1_000_000

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> Event:
        """From event-schema fields: ``event_time`` as a wire string, an aware datetime or epoch microseconds."""
        t = d["event_time"]
        if isinstance(t, datetime):
            t_us = to_micros(t)
        elif isinstance(t, int):
            t_us = t
        else:
            parsed = parse_event_time(t)
            if parsed is None:
                raise ValueError(f"event_time {t!r} is not 'YYYY-MM-DD HH:MM:SS UTC' or ISO-8601 with Z/offset")
            t_us = parsed
        etype = d.get("event_type") or "cart"
        key = d.get("event_key") or make_event_key(t_us, etype, d["product_id"], d["user_id"], d["user_session"])
        return cls(key, t_us, etype, int(d["product_id"]), int(d["user_id"]), str(d["user_session"]),
                   float(d.get("price") or 0.0), d.get("category_code") or None, d.get("brand") or None)


def events_from_table(table) -> list[Event]:
    """Events of a table in :data:`~shopstream.events.schema.LANDED_SCHEMA` (what ``validate_batch`` gives)."""
    import pyarrow as pa

    cols = {name: table.column(name) for name in (
        "event_key", "event_type", "product_id", "user_id", "user_session", "price", "category_code", "brand")}
    t_us = table.column("event_time").cast(pa.int64()).to_pylist()
    return [Event(*row) for row in zip(
        cols["event_key"].to_pylist(), t_us, cols["event_type"].to_pylist(), cols["product_id"].to_pylist(),
        cols["user_id"].to_pylist(), cols["user_session"].to_pylist(), cols["price"].to_pylist(),
        cols["category_code"].to_pylist(), cols["brand"].to_pylist(), strict=True)]


# ------------------------------------------------------------------------------------------ keys, state codec
@dataclass(frozen=True)
class Keys:
    """Key names of the layout (see the module docstring)."""

    prefix: str = "ss:"

    def session(self, user_id: int, session: str) -> str:
        return f"{self.prefix}s:{user_id}:{session}"

    def session_products(self, user_id: int, session: str) -> str:
        return f"{self.prefix}sp:{user_id}:{session}"

    def user(self, user_id: int) -> str:
        return f"{self.prefix}u:{user_id}"

    def user_sessions(self, user_id: int) -> str:
        return f"{self.prefix}us:{user_id}"

    def seen(self, event_key: str) -> str:
        return f"{self.prefix}seen:{event_key}"

    def logged(self, event_key: str) -> str:
        return f"{self.prefix}cf:{event_key}"

    def offsets(self, group: str, topic: str) -> str:
        return f"{self.prefix}offsets:{group}:{topic}"

    def clocks(self, group: str, topic: str) -> str:
        return f"{self.prefix}clocks:{group}:{topic}"


@dataclass(frozen=True)
class Ttls:
    session_s: int = 2 * 86400
    user_s: int = 90 * 86400
    dedupe_s: int = 86400
    feature_log_s: int = 3600

    @classmethod
    def of(cls, settings: Settings) -> Ttls:
        s = settings.serving
        return cls(s.session_ttl_s, s.user_ttl_s, s.dedupe_ttl_s, s.feature_log_ttl_s)


def session_state(fields: Mapping[str, str], products: Iterable[str]) -> SessionState:
    """A :class:`SessionState` from its hash and product set (both empty: a fresh session)."""
    start = fields.get("start")
    return SessionState(
        start_s=float(start) if start is not None else None,
        events=int(fields.get("events", 0)),
        views=int(fields.get("views", 0)),
        carts=int(fields.get("carts", 0)),
        purchases=int(fields.get("purchases", 0)),
        products={int(p) for p in products},
        product_views={int(k[len(PV):]): int(v) for k, v in fields.items() if k.startswith(PV)},
    )


def session_fields(s: SessionState) -> dict[str, str]:
    """The hash of a :class:`SessionState` (its products go to the set)."""
    out = {name: str(getattr(s, name)) for name in SESSION_COUNTERS}
    if s.start_s is not None:
        out["start"] = repr(s.start_s)
    out.update({f"{PV}{pid}": str(n) for pid, n in s.product_views.items()})
    return out


def user_state(fields: Mapping[str, str], sessions: Iterable[str]) -> UserState:
    """A :class:`UserState` from its hash and session set."""
    return UserState(sessions=set(sessions), carts=int(fields.get("carts", 0)),
                     purchases=int(fields.get("purchases", 0)))


def user_fields(u: UserState) -> dict[str, str]:
    return {name: str(getattr(u, name)) for name in USER_COUNTERS}


def cart_features(user: UserState, session: SessionState, e: Event) -> dict[str, Any]:
    """:func:`shopstream.features.features_for` of cart-add ``e`` on the given states."""
    return features_for(user, session, e.user_session, e.product_id, silver_price(e.price), e.event_time,
                        e.category_code, e.brand)


# ------------------------------------------------------------------------------------------ apply
@dataclass
class ApplyResult:
    """What one :func:`apply_events` call did."""

    applied: int = 0
    duplicates: int = 0
    carts_logged: int = 0
    sessions: int = 0
    users: int = 0
    retries: int = 0


def apply_events(client, events: Sequence[Event], keys: Keys | None = None, ttls: Ttls | None = None,
                 offsets: tuple[str, Mapping[int, int]] | None = None, max_retries: int = 20,
                 clocks: tuple[str, Mapping[int, int]] | None = None) -> ApplyResult:
    """Apply events (deduplicated by event key) to the state in Redis, in ``(event_time, event_key)`` order.

    ``offsets`` is ``(key, {partition: next_offset})`` to record in the same transaction (and ``clocks``,
    ``(key, {partition: clock})``, the partitions' lateness clocks at those offsets). Re-sends (an event
    key applied before, or twice in ``events``) are skipped. Before each cart-add is applied, its features
    are recorded (``cf:<event_key>``). Concurrent writers are detected with WATCH and the batch is retried.
    """
    import redis

    keys = keys or Keys()
    ttls = ttls or Ttls()
    unique: dict[str, Event] = {}
    for e in events:
        unique.setdefault(e.event_key, e)
    batch = sorted(unique.values(), key=lambda e: (e.t_us, e.event_key))
    result = ApplyResult(duplicates=len(events) - len(batch))
    if not batch:
        if offsets or clocks:
            with client.pipeline(transaction=True) as tx:
                if offsets:
                    tx.hset(offsets[0], mapping={str(p): str(o) for p, o in offsets[1].items()})
                if clocks and clocks[1]:
                    tx.hset(clocks[0], mapping={str(p): str(c) for p, c in clocks[1].items()})
                tx.execute()
        return result
    sessions = sorted({(e.user_id, e.user_session) for e in batch})
    users = sorted({e.user_id for e in batch})
    seen_keys = [keys.seen(e.event_key) for e in batch]
    watched = [*seen_keys, *(keys.session(u, s) for u, s in sessions),
               *(keys.session_products(u, s) for u, s in sessions),
               *(keys.user(u) for u in users), *(keys.user_sessions(u) for u in users)]
    for attempt in range(max_retries + 1):
        with client.pipeline(transaction=True) as tx:
            try:
                tx.watch(*watched)
                reads = client.pipeline(transaction=False)
                reads.mget(seen_keys)
                for u, s in sessions:
                    reads.hgetall(keys.session(u, s))
                    reads.smembers(keys.session_products(u, s))
                for u in users:
                    reads.hgetall(keys.user(u))
                    reads.smembers(keys.user_sessions(u))
                replies = reads.execute()
                seen = replies[0]
                i = 1
                s_before: dict[tuple[int, str], tuple[dict, set]] = {}
                s_state: dict[tuple[int, str], SessionState] = {}
                for sk in sessions:
                    h, members = replies[i], replies[i + 1]
                    i += 2
                    s_before[sk] = (h, set(members))
                    s_state[sk] = session_state(h, members)
                u_before: dict[int, tuple[dict, set]] = {}
                u_state: dict[int, UserState] = {}
                for u in users:
                    h, members = replies[i], replies[i + 1]
                    i += 2
                    u_before[u] = (h, set(members))
                    u_state[u] = user_state(h, members)

                fresh = [e for e, flag in zip(batch, seen, strict=True) if flag is None]
                logged: dict[str, dict[str, Any]] = {}
                for e in fresh:
                    user, session = u_state[e.user_id], s_state[(e.user_id, e.user_session)]
                    if e.event_type == "cart":
                        logged[e.event_key] = cart_features(user, session, e)
                    update(user, session, e.user_session, e.event_type, e.product_id, e.t_s)

                touched_s = {(e.user_id, e.user_session) for e in fresh}
                touched_u = {e.user_id for e in fresh}
                tx.multi()
                for e in fresh:
                    tx.set(keys.seen(e.event_key), 1, ex=ttls.dedupe_s)
                for sk in touched_s:
                    h, members = s_before[sk]
                    st = s_state[sk]
                    changed = {k: v for k, v in session_fields(st).items() if h.get(k) != v}
                    if changed:
                        tx.hset(keys.session(*sk), mapping=changed)
                    new_products = [str(p) for p in st.products if str(p) not in members]
                    if new_products:
                        tx.sadd(keys.session_products(*sk), *new_products)
                    tx.expire(keys.session(*sk), ttls.session_s)
                    tx.expire(keys.session_products(*sk), ttls.session_s)
                for u in touched_u:
                    h, members = u_before[u]
                    st = u_state[u]
                    changed = {k: v for k, v in user_fields(st).items() if h.get(k) != v}
                    if changed:
                        tx.hset(keys.user(u), mapping=changed)
                    new_sessions = [s for s in st.sessions if s not in members]
                    if new_sessions:
                        tx.sadd(keys.user_sessions(u), *new_sessions)
                    tx.expire(keys.user(u), ttls.user_s)
                    tx.expire(keys.user_sessions(u), ttls.user_s)
                for k, feats in logged.items():
                    tx.set(keys.logged(k), json.dumps(feats), ex=ttls.feature_log_s)
                if offsets:
                    tx.hset(offsets[0], mapping={str(p): str(o) for p, o in offsets[1].items()})
                if clocks and clocks[1]:
                    tx.hset(clocks[0], mapping={str(p): str(c) for p, c in clocks[1].items()})
                tx.execute()
            except redis.WatchError:
                result.retries += 1
                time.sleep(min(0.5, 0.005 * 2 ** attempt))
                continue
        result.applied = len(fresh)
        result.duplicates += len(batch) - len(fresh)
        result.carts_logged = len(logged)
        result.sessions = len(touched_s)
        result.users = len(touched_u)
        return result
    raise FeatureStoreError(
        f"another writer kept changing the same sessions/users: gave up after {max_retries} retries "
        "(run one feature-store consumer per consumer group and topic)"
    )


# ------------------------------------------------------------------------------------------ lookup
@dataclass
class Lookup:
    """Features of one cart-add and where they came from."""

    features: dict[str, Any]
    source: str                     # feature_log | live_state
    session_found: bool
    user_found: bool
    event: Event = field(repr=False, default=None)  # type: ignore[assignment]


def queue_lookup(pipe, keys: Keys, e: Event) -> None:
    """Queue the reads of one lookup on a pipeline (sync or asyncio; 5 replies)."""
    pipe.get(keys.logged(e.event_key))
    pipe.hgetall(keys.session(e.user_id, e.user_session))
    pipe.smembers(keys.session_products(e.user_id, e.user_session))
    pipe.hgetall(keys.user(e.user_id))
    pipe.smembers(keys.user_sessions(e.user_id))


LOOKUP_REPLIES = 5


def lookups_from_replies(replies: Sequence[Any], events: Sequence[Event]) -> list[Lookup]:
    """The features of cart-adds from the replies of :func:`queue_lookup` (5 per event, in event order).

    Several cart-adds of one user in one request are answered in ``(event_time, event_key)`` order as if each
    earlier one (not yet applied by the consumer) had been applied, as gold would count them; the same
    event key twice gets the same answer.
    """
    out: list[Lookup | None] = [None] * len(events)
    users: dict[int, UserState] = {}
    sessions: dict[tuple[int, str], SessionState] = {}
    found: dict[tuple[int, str], tuple[bool, bool]] = {}
    done: dict[str, Lookup] = {}
    for i in sorted(range(len(events)), key=lambda i: (events[i].t_us, events[i].event_key)):
        e = events[i]
        if e.event_key in done:
            out[i] = done[e.event_key]
            continue
        logged, s_hash, s_products, u_hash, u_sessions = replies[LOOKUP_REPLIES * i:LOOKUP_REPLIES * (i + 1)]
        if logged is not None:
            out[i] = done[e.event_key] = Lookup(json.loads(logged), "feature_log", True, True, e)
            continue
        sk = (e.user_id, e.user_session)
        if e.user_id not in users:
            users[e.user_id] = user_state(u_hash, u_sessions)
        if sk not in sessions:
            sessions[sk] = session_state(s_hash, s_products)
            found[sk] = (bool(s_hash), bool(u_hash or u_sessions))
        user, session = users[e.user_id], sessions[sk]
        out[i] = done[e.event_key] = Lookup(cart_features(user, session, e), "live_state", *found[sk], e)
        update(user, session, e.user_session, e.event_type, e.product_id, e.t_s)
    return out  # type: ignore[return-value]


def lookup_many(client, events: Sequence[Event], keys: Keys | None = None) -> list[Lookup]:
    """One consistent read (MULTI/EXEC) of what the cart-adds' features need, and those features."""
    keys = keys or Keys()
    with client.pipeline(transaction=True) as pipe:
        for e in events:
            queue_lookup(pipe, keys, e)
        return lookups_from_replies(pipe.execute(), events)


def lookup(client, e: Event, keys: Keys | None = None) -> Lookup:
    """:func:`lookup_many` of one cart-add."""
    return lookup_many(client, [e], keys)[0]


def features_for_event(client, cart_event: Mapping[str, Any] | Event, keys: Keys | None = None) -> dict[str, Any]:
    """The model features of a cart-add (event-schema fields) from the online state in Redis.

    Reconstructs the session's and user's :class:`SessionState`/:class:`UserState` and calls
    :func:`shopstream.features.features_for`; a cart-add the consumer has already applied is answered from
    the record it made just before applying it. A session or user without state gets the defaults of a
    fresh one, as in gold.
    """
    e = cart_event if isinstance(cart_event, Event) else Event.from_mapping(cart_event)
    return lookup(client, e, keys).features


def connect(settings: Settings, **kwargs: Any):
    """A Redis client on the feature-store database (strings decoded)."""
    import redis

    return redis.Redis.from_url(settings.redis.url(), decode_responses=True, **kwargs)


def connect_async(settings: Settings, **kwargs: Any):
    import redis.asyncio as aredis

    return aredis.Redis.from_url(settings.redis.url(), decode_responses=True, **kwargs)


def utc_now_us() -> int:
    return to_micros(datetime.now(UTC))
