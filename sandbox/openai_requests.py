"""OpenAI's chat completion requests: validated as OpenAI validates them.

Errors carry OpenAI's own messages, ``param`` and ``code`` (``missing_required_parameter``,
``invalid_type``, ``context_length_exceeded``, ``model_not_found``, strict structured-output
schema rules...), so a client's handling of a 400 can be tested against the sandbox.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sandbox.content import estimate_tokens
from sandbox.profiles import ChatModel, find_chat_model

ROLES = ("system", "assistant", "user", "function", "tool", "developer")
INSTRUCTION_ROLES = ("system", "developer")
IMAGE_PART_TOKENS = 85  # what OpenAI charges for a low-detail image


class InvalidRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


@dataclass
class ChatRequest:
    model_id: str
    model: ChatModel
    messages: list[dict]
    instructions: str  # system and developer messages
    request_text: str  # everything else the model reads
    max_tokens: int | None
    n: int
    response_format: dict | None
    forced_tool: dict | None  # a tool the caller requires the model to call
    stream: bool
    include_usage: bool
    seed: int | None
    image_tokens: int = 0

    @property
    def prompt_estimate(self) -> int:
        return estimate_tokens(self.instructions) + estimate_tokens(self.request_text) + self.image_tokens

    @property
    def quota_cost(self) -> int:
        """What OpenAI's rate limiter charges up front: the prompt plus every choice's cap."""
        return self.prompt_estimate + (self.max_tokens or 0) * self.n


def _type_phrase(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _expect(value: object, param: str, expected: type | tuple[type, ...], phrase: str) -> None:
    # bool is an int in Python but not in JSON.
    if isinstance(value, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,)):
        raise InvalidRequest(
            f"Invalid type for '{param}': expected {phrase}, but got a boolean instead.", param, "invalid_type"
        )
    if not isinstance(value, expected):
        raise InvalidRequest(
            f"Invalid type for '{param}': expected {phrase}, but got {_type_phrase(value)} instead.",
            param,
            "invalid_type",
        )


def _expect_range(value: float, param: str, low: float | None, high: float | None, integer: bool) -> None:
    kind = "integer" if integer else "decimal"
    if low is not None and value < low:
        raise InvalidRequest(
            f"Invalid '{param}': {kind} below minimum value. Expected a value >= {low:g}, but got {value:g} instead.",
            param,
            f"{kind}_below_min_value",
        )
    if high is not None and value > high:
        raise InvalidRequest(
            f"Invalid '{param}': {kind} above maximum value. Expected a value <= {high:g}, but got {value:g} instead.",
            param,
            f"{kind}_above_max_value",
        )


def parse_chat_request(body: object) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"Invalid type for request body: expected an object, but got {_type_phrase(body)} instead."
        )
    for required in ("messages", "model"):
        if required not in body:
            raise InvalidRequest(f"Missing required parameter: '{required}'.", required, "missing_required_parameter")
    _expect(body["model"], "model", str, "a string")
    model = find_chat_model(body["model"])
    if model is None:
        raise InvalidRequest(
            f"The model `{body['model']}` does not exist or you do not have access to it.",
            code="model_not_found",
            status=404,
        )
    messages = body["messages"]
    _expect(messages, "messages", list, "an array")
    if not messages:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
            "empty_array",
        )
    instructions, request_parts, image_tokens = [], [], 0
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        _expect(message, where, dict, "an object")
        if "role" not in message:
            raise InvalidRequest(
                f"Missing required parameter: '{where}.role'.", f"{where}.role", "missing_required_parameter"
            )
        if message["role"] not in ROLES:
            supported = ", ".join(f"'{role}'" for role in ROLES[:-1]) + f", and '{ROLES[-1]}'"
            raise InvalidRequest(
                f"Invalid value: '{message['role']}'. Supported values are: {supported}.",
                f"{where}.role",
                "invalid_value",
            )
        text, images = _message_text(message, where)
        image_tokens += images * IMAGE_PART_TOKENS
        (instructions if message["role"] in INSTRUCTION_ROLES else request_parts).append(text)

    max_tokens = None
    for param in ("max_completion_tokens", "max_tokens"):
        if body.get(param) is not None:
            _expect(body[param], param, int, "an integer")
            _expect_range(body[param], param, 1, None, integer=True)
            if body[param] > model.max_output_tokens:
                raise InvalidRequest(
                    f"{param} is too large: {body[param]}. This model supports at most {model.max_output_tokens} "
                    f"completion tokens, whereas you provided {body[param]}.",
                    param,
                    "invalid_value",
                )
            max_tokens = max_tokens or body[param]
    n = body.get("n") if body.get("n") is not None else 1
    _expect(n, "n", int, "an integer")
    _expect_range(n, "n", 1, 128, integer=True)
    for param, low, high in (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("presence_penalty", -2, 2),
        ("frequency_penalty", -2, 2),
    ):
        if body.get(param) is not None:
            _expect(body[param], param, (int, float), "a number")
            _expect_range(body[param], param, low, high, integer=False)
    seed = body.get("seed")
    if seed is not None:
        _expect(seed, "seed", int, "an integer")
    stream = body.get("stream") or False
    _expect(stream, "stream", bool, "a boolean")
    stream_options = body.get("stream_options") or {}
    _expect(stream_options, "stream_options", dict, "an object")

    request = ChatRequest(
        model_id=body["model"],
        model=model,
        messages=messages,
        instructions="\n\n".join(instructions),
        request_text="\n\n".join(request_parts),
        max_tokens=max_tokens,
        n=n,
        response_format=_response_format(body.get("response_format"), messages),
        forced_tool=_forced_tool(body.get("tools"), body.get("tool_choice")),
        stream=stream,
        include_usage=bool(stream_options.get("include_usage")),
        seed=seed,
        image_tokens=image_tokens,
    )
    total = request.prompt_estimate + (max_tokens or 0)
    if total > model.context_window:
        detail = (
            f"your messages resulted in {request.prompt_estimate} tokens"
            if not max_tokens
            else f"you requested {total} tokens ({request.prompt_estimate} in the messages, "
            f"{max_tokens} in the completion)"
        )
        raise InvalidRequest(
            f"This model's maximum context length is {model.context_window} tokens. However, {detail}. "
            "Please reduce the length of the messages or completion.",
            "messages",
            "context_length_exceeded",
        )
    return request


def _message_text(message: dict, where: str) -> tuple[str, int]:
    """The text a message contributes to the prompt, and how many images it carries."""
    content = message.get("content")
    if content is None:
        if message["role"] == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return json.dumps(message.get("tool_calls") or message.get("function_call")), 0
        raise InvalidRequest(
            f"Invalid value for '{where}.content': expected a string, got null.", f"{where}.content", "invalid_type"
        )
    if isinstance(content, str):
        return content, 0
    _expect(content, f"{where}.content", list, "a string or an array")
    texts, images = [], 0
    for index, part in enumerate(content):
        part_where = f"{where}.content[{index}]"
        _expect(part, part_where, dict, "an object")
        if part.get("type") == "text":
            _expect(part.get("text"), f"{part_where}.text", str, "a string")
            texts.append(part["text"])
        elif part.get("type") in ("image_url", "input_audio", "file"):
            images += 1
        else:
            raise InvalidRequest(
                f"Invalid value: '{part.get('type')}'. Supported values are: "
                "'text', 'image_url', 'input_audio', and 'file'.",
                f"{part_where}.type",
                "invalid_value",
            )
    return "\n".join(texts), images


def _response_format(value: object, messages: list[dict]) -> dict | None:
    if value is None:
        return None
    _expect(value, "response_format", dict, "an object")
    kind = value.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise InvalidRequest(
            f"Invalid value: '{kind}'. Supported values are: 'json_object', 'json_schema', and 'text'.",
            "response_format.type",
            "invalid_value",
        )
    if kind == "text":
        return None
    if kind == "json_object":
        if not any("json" in json.dumps(message.get("content")).lower() for message in messages):
            raise InvalidRequest(
                "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                "messages",
            )
        return value
    spec = value.get("json_schema")
    if spec is None:
        raise InvalidRequest(
            "Missing required parameter: 'response_format.json_schema'.",
            "response_format.json_schema",
            "missing_required_parameter",
        )
    _expect(spec, "response_format.json_schema", dict, "an object")
    if "name" not in spec:
        raise InvalidRequest(
            "Missing required parameter: 'response_format.json_schema.name'.",
            "response_format.json_schema.name",
            "missing_required_parameter",
        )
    schema = spec.get("schema") or {"type": "object", "properties": {}, "additionalProperties": False, "required": []}
    _expect(schema, "response_format.json_schema.schema", dict, "an object")
    if spec.get("strict"):
        problem = strict_schema_problem(schema)
        if problem:
            raise InvalidRequest(
                f"Invalid schema for response_format '{spec['name']}': {problem}",
                "response_format",
                "invalid_json_schema",
            )
    return {**value, "json_schema": {**spec, "schema": schema}}


def strict_schema_problem(schema: dict) -> str | None:
    """What OpenAI's strict structured outputs would reject in ``schema``, if anything."""
    root_type = schema.get("type")
    if root_type != "object":
        return f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{root_type}\"'."

    def visit(node: object, context: tuple) -> str | None:
        if isinstance(node, list):
            for index, item in enumerate(node):
                problem = visit(item, (*context, index))
                if problem:
                    return problem
            return None
        if not isinstance(node, dict):
            return None
        types = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
        if "object" in types:
            if node.get("additionalProperties") is not False:
                return f"In context={context}, 'additionalProperties' is required to be supplied and to be false."
            missing = [key for key in node.get("properties", {}) if key not in node.get("required", [])]
            if missing:
                return (
                    f"In context={context}, 'required' is required to be supplied and to be an array including "
                    f"every key in properties. Missing '{missing[0]}'."
                )
        for key in ("properties", "$defs", "definitions"):
            for name, child in (node.get(key) or {}).items():
                problem = visit(child, (*context, key, name))
                if problem:
                    return problem
        for key in ("items", "anyOf", "allOf", "oneOf", "prefixItems"):
            if key in node:
                problem = visit(node[key], (*context, key))
                if problem:
                    return problem
        return None

    return visit(schema, ())


def _forced_tool(tools: object, tool_choice: object) -> dict | None:
    if tools is None:
        return None
    _expect(tools, "tools", list, "an array")
    functions = {}
    for index, tool in enumerate(tools):
        _expect(tool, f"tools[{index}]", dict, "an object")
        function = tool.get("function") or {}
        if "name" not in function:
            raise InvalidRequest(
                f"Missing required parameter: 'tools[{index}].function.name'.",
                f"tools[{index}].function.name",
                "missing_required_parameter",
            )
        functions[function["name"]] = function
    if tool_choice == "required" and functions:
        return next(iter(functions.values()))
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if name not in functions:
            raise InvalidRequest(
                f"Invalid value for 'tool_choice': tool '{name}' is not among the given tools.",
                "tool_choice",
                "invalid_value",
            )
        return functions[name]
    return None  # "auto" or "none": this sandbox answers in text
