"""Background exchanges with the central: bundle sync, audit replication, heartbeats and the
offline-decision webhook hand-back."""
