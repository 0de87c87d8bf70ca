"""Serve refuses a damaged adapter: at start-up in one line, and on /v1/load_lora_adapter with a 400 naming the folder
and the fault, the served models unchanged. Before the check, an empty or renamed weights file loaded with 200 and
the adapter answered as the base."""

from __future__ import annotations

import json

import pytest

from peftlab.errors import PeftlabError
from tests.damaged import DAMAGES, damaged_copy
from tests.serve.conftest import post_raw
from tests.serve.test_adapter_routes import answer_of, models


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_loading_a_damaged_adapter_is_a_400_and_changes_nothing(damage, base_server, lora_b, tmp_path):
    port = base_server.port
    before = answer_of(port, "tiny")[1]["choices"]
    adapter = damaged_copy(lora_b, tmp_path / "adapter", damage)
    status, _, body, _ = post_raw(port, "/v1/load_lora_adapter", json.dumps({"lora_name": "hurt", "lora_path": adapter}).encode())
    error = json.loads(body)["error"]
    assert status == 400 and error["param"] == "lora_path", body
    assert adapter in error["message"] and DAMAGES[damage] in error["message"], error
    assert models(port) == ["tiny"] and answer_of(port, "hurt")[0] == 404
    assert answer_of(port, "tiny")[1]["choices"] == before


@pytest.mark.parametrize("damage", ["empty", "nan"])
def test_a_damaged_adapter_stops_the_server_before_it_starts(damage, tiny_llama, lora_b, ia3_c, tmp_path):
    from peftlab.serve.launch import load_engine

    for name, folder in (("lora", lora_b), ("ia3", ia3_c)):  # one mixed-batch adapter, one served on its own
        adapter = damaged_copy(folder, tmp_path / name, damage)
        with pytest.raises(PeftlabError, match=DAMAGES[damage]):
            load_engine(tiny_llama, [(name, adapter)], "fp32", "tiny")


def test_a_damaged_adapter_in_adapter_dir_is_a_400_for_the_request_naming_it(tiny_llama, lora_b, tmp_path):
    from peftlab.serve.http import start, stop
    from peftlab.serve.launch import load_engine
    from tests.serve.conftest import API_KEY

    damaged_copy(lora_b, tmp_path / "hurt", "empty")
    server = start(load_engine(tiny_llama, [], "fp32", "tiny"), "127.0.0.1", 0, API_KEY, adapter_dir=str(tmp_path))
    try:
        status, answer = answer_of(server.port, "hurt")
        assert status == 400 and str(tmp_path / "hurt") in answer["error"]["message"], answer
        assert DAMAGES["empty"] in answer["error"]["message"] and models(server.port) == ["tiny"]
    finally:
        stop(server)
