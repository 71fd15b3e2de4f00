"""A GGUF's tokenizer is converted once and then read from the cache folder."""

import os

import pytest

from amx_export import models
from amx_export.errors import UserError

TEXT = "Hello world! <|im_start|>user\nÜber café, 1234 naïve\t tabs  and spaces<|im_end|>"


def test_second_load_reads_the_cache_not_the_gguf(tmp_path, monkeypatch):
    from transformers.integrations import gguf

    monkeypatch.setenv("AMX_EXPORT_CACHE", str(tmp_path))
    conversions = []
    convert = gguf.get_gguf_tokenizer
    monkeypatch.setattr(gguf, "get_gguf_tokenizer", lambda *a: conversions.append(a) or convert(*a))
    first = models.load_tokenizer(models.SMOLLM2_ALIAS)
    assert len(conversions) == 1
    cached = models.tokenizer_cache(models.smollm2_dir() / models.SMOLLM2_GGUF)
    assert cached.parent == tmp_path / "tokenizers" and (cached / "tokenizer.json").is_file()
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no staging left

    def refuse(*_):
        raise AssertionError("the GGUF was converted again")

    monkeypatch.setattr(gguf, "get_gguf_tokenizer", refuse)
    second = models.load_tokenizer(models.SMOLLM2_ALIAS)
    ids = first(TEXT)["input_ids"]
    assert second(TEXT)["input_ids"] == ids
    assert ids[4] == first.bos_token_id == 1 and ids[-1] == first.eos_token_id == 2  # specials
    assert second.decode(ids) == TEXT
    for attribute in ("bos_token_id", "eos_token_id", "pad_token_id", "chat_template"):
        assert getattr(second, attribute) == getattr(first, attribute)
    assert len(second) == len(first) == 49152


def test_the_cache_key_follows_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AMX_EXPORT_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(8))
    key = models.tokenizer_cache(gguf)
    assert models.tokenizer_cache(gguf) == key
    os.utime(gguf, ns=(0, 10**18))
    assert models.tokenizer_cache(gguf) != key
    moved = gguf.rename(tmp_path / "n.gguf")
    assert models.tokenizer_cache(moved).name.startswith("n-")


def test_a_folder_without_a_model_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no tokenizer there"):
        models.load_tokenizer(tmp_path)
