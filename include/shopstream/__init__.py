"""shopstream: e-commerce behaviour events from Kafka to a warehouse, models, dashboards and an API."""
