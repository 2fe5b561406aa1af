"""Validating an upstream's JSON against a pydantic model without echoing its values.

Error text names the field and what is wrong with it, never the value: a response can echo a
credential or a person's name, and these messages end up in the journal.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bridge.upstream.errors import UpstreamProtocolError

M = TypeVar("M", bound=BaseModel)


def parse_body(upstream: str, what: str, model: type[M], body: Any) -> M:
    if not isinstance(body, dict):
        raise UpstreamProtocolError(upstream, f"{what}: expected a JSON object, got {type(body).__name__}")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}" for err in e.errors(include_url=False, include_input=False)[:5]
        )
        raise UpstreamProtocolError(upstream, f"{what}: {problems}") from None
