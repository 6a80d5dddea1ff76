"""Tests for lstm_mt.data.config: custom test sets as the command line names them, and a wrong key in one."""

from __future__ import annotations

import pytest
from conftest import compose_train

from lstm_mt.config import TrainJobConfig
from lstm_mt.configuring import typed_config
from lstm_mt.data import DataConfig, FilePair, resolve_test_splits
from lstm_mt.errors import LstmMtError

pytestmark = pytest.mark.usefixtures("offline")  # no test here may use the network or $LSTM_MT_DATA_MIRROR


def compose_custom(*overrides: str) -> DataConfig:
    """``data`` as `lstm-mt train data=custom <overrides>` composes and types it."""
    return typed_config(TrainJobConfig, compose_train("data=custom", *overrides), "config").data


@pytest.mark.parametrize("plus", ["", "+", "++"])
def test_custom_test_sets_are_named_on_the_command_line_as_documented(plus):
    data = compose_custom(
        f"{plus}data.custom.test.news.src=news.de",
        f"{plus}data.custom.test.news.tgt=news.en",
        f"{plus}data.custom.test.web={{src: web.de, tgt: web.en}}",
    )
    assert data.custom.test == {"news": FilePair("news.de", "news.en"), "web": FilePair("web.de", "web.en")}
    assert resolve_test_splits(data) == ["news", "web"]


def test_custom_test_set_with_a_wrong_key_is_one_line_naming_it():
    with pytest.raises(
        LstmMtError, match=r"^data\.custom\.test\.news: a test set has a src and a tgt file \(unknown key\(s\) scr\)$"
    ):
        compose_custom("data.custom.test.news.scr=news.de")
