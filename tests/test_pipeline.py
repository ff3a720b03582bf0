"""The served pipeline's own rules, without a server: what it refuses to serve, and how a request's
parameters reach the strategies."""

from __future__ import annotations

from typing import Any, cast

import pytest

from georag.config import Config, ExclusionConfig
from georag.encoder.preprocess import ProcessorSpec
from georag.errors import ConfigError
from georag.serving.errors import BadRequest
from georag.serving.params import RequestParams
from georag.serving.pipeline import Pipeline
from test_strategies import _country_store

SPEC = ProcessorSpec.for_siglip(16)
NO_STEPS = cast(Any, None)


def test_a_served_pipeline_refuses_exclusions_and_oversized_defaults() -> None:
    with pytest.raises(ConfigError, match="a served request does not carry"):
        Pipeline(Config(exclusion=ExclusionConfig(radius_km=25)), SPEC, NO_STEPS)
    with pytest.raises(ConfigError, match=r"\(--prior-samples\) is 20"):
        Pipeline(Config().with_values({"strategy.vpr.sampling.n": 20}), SPEC, NO_STEPS)
    with pytest.raises(ConfigError, match="at most 4 prompt variants"):
        Pipeline(Config().with_values({"strategy.rag.variants": "zero,zero,zero,zero,zero"}), SPEC, NO_STEPS)


def test_request_samples_set_the_rag_answers_and_leave_the_prior_alone() -> None:
    pipeline = Pipeline(Config(), SPEC, NO_STEPS, _country_store())
    assert pipeline.strategies == ("rag", "knn", "knn-medoid", "vpr-guided")
    params = RequestParams(strategy="vpr-guided", samples=3, temperature=0.2, seed=7)
    vpr = cast(Any, pipeline.strategy_for(params))
    assert vpr.config.sampling.n == 5 and vpr.rag.sampling.n == 3
    assert vpr.config.sampling.temperature == vpr.rag.sampling.temperature == 0.2
    assert vpr.config.sampling.seed == vpr.rag.sampling.seed == 7
    rag = cast(Any, pipeline.strategy_for(RequestParams(strategy="rag", samples=2)))
    assert rag.config.sampling.n == 2


def test_strategies_a_pipeline_cannot_answer_are_bad_requests() -> None:
    without_llm = Pipeline(Config(), SPEC, NO_STEPS, _country_store(), has_llm=False)
    assert without_llm.strategies == ("knn", "knn-medoid")
    with pytest.raises(BadRequest, match="not served here"):
        without_llm.strategy_for(RequestParams(strategy="rag"))
    no_store = Pipeline(Config(), SPEC, NO_STEPS)
    assert "vpr-guided" not in no_store.strategies
