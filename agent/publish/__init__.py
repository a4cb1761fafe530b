"""MQTT publishing: the client wrapper, the store-and-forward outbox, messages and remote commands."""
