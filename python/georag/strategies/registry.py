"""The one registry of strategies: a name -> the code of its route, built from the config."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from georag.config import STRATEGY_NAMES, StrategyConfig
from georag.errors import ConfigError
from georag.strategies.knn import Knn
from georag.strategies.rag import Rag
from georag.strategies.route import Strategy
from georag.strategies.vpr_guided import VPR, SubmapSource, VprGuided

if TYPE_CHECKING:
    Factory = Callable[[StrategyConfig, SubmapSource | None], Strategy]


def _vpr(config: StrategyConfig, store: SubmapSource | None) -> Strategy:
    if store is None:
        raise ConfigError("the vpr-guided strategy needs the store (its submap partition)")
    return VprGuided(config.vpr, config.rag, store)


STRATEGIES: dict[str, Factory] = {
    "rag": lambda config, store: Rag(config.rag),
    "knn": lambda config, store: Knn("knn", config.knn_k),
    "knn-medoid": lambda config, store: Knn("knn-medoid", config.knn_k),
    VPR: _vpr,
}
"""Every strategy by name (the names of `georag.config.STRATEGY_NAMES`)."""
assert tuple(STRATEGIES) == STRATEGY_NAMES


def make_strategy(config: StrategyConfig, store: SubmapSource | None = None) -> Strategy:
    """The strategy ``config.name`` set up with its settings (and the store's partition, for vpr-guided)."""
    factory = STRATEGIES.get(config.name)
    if factory is None:
        raise ConfigError(f"unknown strategy {config.name!r}; known: {', '.join(STRATEGIES)}")
    return factory(config, store)
