"""Credential inputs. Each turns a device's raw bytes into `Scan`s; none knows about doors."""
