"""Every reader type is built the same way: `create(cfg, context)`; the registry has no special case."""

from __future__ import annotations

import importlib
import inspect

import pytest

from bridge.inputs.base import InputContext
from bridge.inputs.registry import MODULES, create_input
from bridge.config.readers import ConsoleReader


@pytest.mark.parametrize("reader_type", sorted(MODULES))
def test_each_reader_module_creates_from_its_section_and_the_shared_context(reader_type: str) -> None:
    create = importlib.import_module(MODULES[reader_type]).create
    params = list(inspect.signature(create).parameters.values())
    assert [p.name for p in params] == ["cfg", "context"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)


def test_the_registry_hands_the_context_through() -> None:
    reader = create_input(ConsoleReader(type="console", id="qr1"), InputContext())
    assert reader.reader_id == "qr1"
