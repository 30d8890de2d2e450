"""One name -> implementation registry pattern for formats, cache policies, export targets and tasks.

In the style of transformers' `GeneralInterface` (`AttentionInterface`, `ExpertsInterface`): a subclass
holds the built-in implementations in a class-level `_global_mapping`, `register` adds one for every user,
an instance may override a name locally, and the mapping reads like a dict (`name in R`, `list(R)`, `R[name]`).
Each subclass words its own "unknown name" line (`unknown`), so a typo is one clear `UserError` that lists
the valid names. Standard library only: any layer may import it.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, ClassVar

from advisor.errors import UserError


class Registry(MutableMapping):
    """Names -> implementations. Subclasses set `_global_mapping` and `unknown` (a format string with
    `{name}`, `{name!r}` and `{names}`, the comma-separated valid names)."""

    _global_mapping: ClassVar[dict[str, Any]] = {}
    unknown: ClassVar[str] = "unknown name {name!r}; choose one of: {names}"

    def __init__(self) -> None:
        self._local_mapping: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self._local_mapping:
            return self._local_mapping[key]
        return self._global_mapping[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._local_mapping[key] = value  # this instance only; `register` is for everyone

    def __delitem__(self, key: str) -> None:
        del self._local_mapping[key]

    def __iter__(self) -> Iterator[str]:
        return iter({**self._global_mapping, **self._local_mapping})

    def __len__(self) -> int:
        return len(self._global_mapping.keys() | self._local_mapping.keys())

    @classmethod
    def register(cls, key: str, value: Any) -> None:
        cls._global_mapping[key] = value

    def get_or_raise(self, name: str, shown: str | None = None) -> Any:
        """The implementation of `name`, or the subclass's one-line `UserError` listing the valid names
        (quoting `shown`, what the user typed, when `name` is a normalised form of it)."""
        if name not in self:
            raise UserError(self.unknown.format(name=name if shown is None else shown, names=", ".join(self)))
        return self[name]
