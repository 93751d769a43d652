"""Landing: consume the raw topic, validate, write Parquet to the lake exactly once, dead-letter the rest."""
