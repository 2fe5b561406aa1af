"""Tests of parts together: a daemon in-process or as a process, loopback centrals, ptys, a real MQTT
broker and journald, subprocesses killed with SIGKILL. Marked `integration`."""
