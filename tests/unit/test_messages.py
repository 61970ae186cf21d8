"""The submit path's hand-built Celery messages are the ones Celery itself would send."""

import base64

import orjson

from unilingo.messages import _protocol, task_message


def test_a_message_matches_celerys_own_protocol_2_message():
    raw = orjson.loads(task_message("unilingo.pdf", "pdf", ["job-1"], task_id="job-1"))
    headers, properties, body, _ = _protocol().amqp.as_task_v2("job-1", "unilingo.pdf", args=["job-1"], kwargs={})
    assert raw["headers"] == {**headers, "origin": raw["headers"]["origin"]}
    assert raw["properties"]["correlation_id"] == properties["correlation_id"] == "job-1"
    assert raw["properties"]["delivery_info"] == {"exchange": "pdf", "routing_key": "pdf"}
    assert orjson.loads(base64.b64decode(raw["body"])) == [list(body[0]), body[1], body[2]]


def test_each_message_has_its_own_ids():
    first = orjson.loads(task_message("unilingo.ocr", "ocr", ["a"]))
    second = orjson.loads(task_message("unilingo.ocr", "ocr", ["b"]))
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]
    assert first["headers"]["argsrepr"] == "['a']"
