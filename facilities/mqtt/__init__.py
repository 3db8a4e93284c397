"""MQTT adapter: topics, the broker session, ingest."""
