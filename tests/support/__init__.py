"""What tests and bench/ share: builders, the in-process harness, service helpers for daemon processes,
the fake centrals, and the emulators (NFC tag, OSDP PD, MQTT broker)."""
