"""The embedded verification core: pure decisions, no hardware, no network, clock injected."""
