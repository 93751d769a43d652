"""Event contract, synthetic generator with fault injection, batch validation and Kaggle replay."""

from shopstream.events.generator import EventStream, GeneratorConfig, Truth, generate, generate_all
from shopstream.events.kaggle import iter_kaggle_batches, read_kaggle, write_kaggle_csv, write_kaggle_parquet
from shopstream.events.schema import (
    EVENT_FIELDS,
    EVENT_SCHEMA,
    EVENT_TYPES,
    LANDED_SCHEMA,
    event_key,
    format_event_time,
    parse_event_time,
)
from shopstream.events.validation import (
    REASON_CODES,
    RawMessage,
    Reason,
    Rejection,
    ValidationResult,
    from_kafka,
    validate_batch,
)

__all__ = [
    "EVENT_FIELDS",
    "EVENT_SCHEMA",
    "EVENT_TYPES",
    "LANDED_SCHEMA",
    "REASON_CODES",
    "EventStream",
    "GeneratorConfig",
    "RawMessage",
    "Reason",
    "Rejection",
    "Truth",
    "ValidationResult",
    "event_key",
    "format_event_time",
    "from_kafka",
    "generate",
    "generate_all",
    "iter_kaggle_batches",
    "parse_event_time",
    "read_kaggle",
    "validate_batch",
    "write_kaggle_csv",
    "write_kaggle_parquet",
]
