"""Tests of one part in-process: pure functions, one module with its real collaborators (SQLite
files, MockFactory pins, httpx MockTransport). Marked `unit`."""
