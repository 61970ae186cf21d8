"""Plausible model answers derived from the prompt: plain text, or JSON fitting a schema.

No language model here: the answer is assembled from the prompt's own words. Key terms
become flashcard fronts and vocabulary, sentences of the source text that mention a term
become its definition or example, "write exactly 10 flashcards" makes an array of ten.
Property names steer what goes where (``front``/``term`` get a term, ``back``/
``definition`` an explanation, ``title`` a title...). Everything is deterministic for a
given prompt and seed, so a test can rely on the answer.

The answer is in the language the prompt asks for ("in language 'de'", "in German"): the
material's own words are that language's already, and the sentences the sandbox adds
around them (a question, an objective, a hint) come from a phrase book for the languages
the app teaches (``PHRASES``; English where it has none). Translations are not made: a
"translation" is the term marked as one, in the answer's language.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field

STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each either etc few for from
    further had has have having he her here hers herself him himself his how however i if in into is
    it its itself just let like may me might more most much must my myself no nor not now of off on
    once only or other our ours ourselves out over own per same she should so some such than that the
    their theirs them themselves then there these they this those through thus to too under until up
    upon us very via was we were what when where which while who whom whose why will with within without
    would yet you your yours yourself yourselves one two three four five six seven eight nine ten
    use used using uses make makes made many often well way ways include includes including
    write generate create produce give return list provide answer answers question questions
    exactly following text content study flashcard flashcards card cards json language format
    based each item items must should please front back lesson lessons exercise exercises word words
    term terms example examples sentence sentences response respond output object array field fields
    outline level levels objective objectives section sections vocabulary translation translate topic title
    quiz summary summarize summarise explain describe student students learner learners beginner
    intermediate advanced key using outline design designs source material
    """.split()
)
# The function words of the app's other main languages: never a key term.
FOREIGN_STOPWORDS = frozenset(
    """
    der die das den dem des ein eine einer eines einem einen und oder aber nicht ist sind war waren wird werden
    mit von zu zum zur im in am an auf aus bei für über unter nach vor durch als auch noch nur sehr wie was wer
    ich du er sie es wir ihr mein dein sein ihre unser euer man sich dass wenn dann hat haben kann können
    el la los las un una unos unas y o pero no es son era fue con de del al en por para como que qué muy más
    yo tú él ella nosotros ellos su sus mi mis se lo le les este esta estos estas ese esa hay está están
    le la les un une des et ou mais ne pas est sont était avec de du au aux en dans par pour comme que qui très
    plus je tu il elle nous vous ils elles son sa ses mon ma mes ce cette ces se sur
    il lo gli uno una e o ma non è sono era con di da del della nel nella per come che molto più io lui lei noi
    voi loro suo sua mio mia questo questa quello quella
    os um uma e ou mas não é são era com de do da dos das no na em por para como que muito mais eu ele ela nós
    eles seu sua meu minha este esta esse essa
    het een en of maar niet zijn was met van te op voor als ook nog dat wat wie ik jij hij zij wij
    """.split()
)

# A sentence opening with one of these is the prompt's instruction, not material to draw on.
IMPERATIVES = frozenset(
    "write create generate list give make produce return provide answer explain describe translate "
    "summarize summarise respond use include output please extract build".split()
)

ASPECTS = ("definition", "key idea", "example", "in context", "common mistake", "related term", "usage", "origin")

WORD = re.compile(r"[^\W\d_][\w'’-]*")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
COUNT_PHRASE = re.compile(r"\b(\d{1,3})\s+((?:[^\W\d_][\w-]*\s+){0,2}[^\W\d_][\w-]*)")
SUBJECT_PHRASE = re.compile(
    r"\b(?:about|on the topic of|topic:|subject:)\s+([^.,;:\n()'\"]{3,60}?)(?=\s+in\s+language|[.,;:\n()'\"]|$)", re.I
)


def estimate_tokens(text: str) -> int:
    """OpenAI's rule of thumb, and what its rate limiter charges: about 4 characters a token."""
    return -(-len(text) // 4)


@dataclass
class Topic:
    """What the prompt is about, as the generators need it."""

    subject: str
    terms: list[str]
    sentences: list[str]
    counts: list[tuple[int, str]]  # ("10", "flashcards") pairs from "write 10 flashcards"
    source_chars: int
    language: str = "en"  # the answer's language, a bare code

    @property
    def phrases(self) -> dict:
        return PHRASES.get(self.language, PHRASES["en"])

    def say(self, key: str, **values: str) -> str:
        return self.phrases.get(key, PHRASES["en"][key]).format(subject=self.subject, **values)

    @classmethod
    def from_prompt(cls, instructions: str, request: str) -> Topic:
        """``instructions``: system/developer messages; ``request``: the user's messages."""
        source = _source_text(request)
        terms = _key_terms(source) or _key_terms(instructions) or ["general knowledge"]
        subject_match = SUBJECT_PHRASE.search(instructions) or SUBJECT_PHRASE.search(request)
        subject = subject_match.group(1).strip() if subject_match else terms[0]
        sentences = [
            sentence.strip()
            for sentence in SENTENCE_END.split(source)
            if 20 <= len(sentence.strip()) <= 300 and sentence.split()[0].lower() not in IMPERATIVES
        ]
        counts = [
            (int(number), phrase.lower()) for number, phrase in COUNT_PHRASE.findall(request) if 1 <= int(number) <= 500
        ]
        return cls(subject, terms, sentences, counts, len(source), answer_language(instructions, request))

    def term(self, index: int) -> str:
        """The index-th key term; past the prompt's own terms, distinct variations of them.

        Index -1 stands for the whole topic (the root of an answer).
        """
        if index < 0:
            return self.subject
        base = self.terms[index % len(self.terms)]
        lap = index // len(self.terms)
        aspects = self.phrases.get("aspects", ASPECTS)
        return base if lap == 0 else f"{base} ({aspects[(lap - 1) % len(aspects)]})"

    def explanation(self, index: int) -> str:
        if index < 0:
            return self.sentences[0] if self.sentences else self.say("overview")
        term = self.term(index)
        bare = self.terms[index % len(self.terms)].lower()
        # The sentence that brings the term up earliest is most likely about it.
        positions = [(sentence.lower().find(bare), order) for order, sentence in enumerate(self.sentences)]
        mentioned = [(position, order) for position, order in positions if position >= 0]
        if mentioned:
            return self.sentences[min(mentioned)[1]]
        return self.say("key_idea", term=_capitalize(term))

    def example(self, index: int) -> str:
        """A sentence of the material using the term; another than its explanation if there is one."""
        index = max(index, 0)
        bare = self.terms[index % len(self.terms)].lower()
        matches = [sentence for sentence in self.sentences if bare in sentence.lower()]
        others = [sentence for sentence in matches if sentence != self.explanation(index)]
        if others or matches:
            return (others or matches)[0]
        return self.say("example", term=self.term(index))

    def title(self) -> str:
        return (
            _capitalize(self.subject)
            if self.subject != self.terms[0]
            else self.phrases.get("and", " and ").join(_capitalize(term) for term in self.terms[:2])
        )

    def default_count(self) -> int:
        # Unilingo v1's example: 5,000 characters of content gave 40 flashcards.
        return max(3, min(40, self.source_chars // 125))


def _source_text(request: str) -> str:
    """The material to draw on: a pasted block dominates the instruction around it."""
    blocks = [block.strip() for block in re.split(r"\n\s*\n", request) if block.strip()]
    longest = max(blocks, key=len, default="")
    return longest if len(longest) >= 0.4 * len(request) else request


def _key_terms(text: str, limit: int = 200) -> list[str]:
    words = WORD.findall(text)
    counts: Counter[str] = Counter()
    spelling: dict[str, str] = {}
    for word in words:
        key = word.lower().strip("'’-")
        if len(key) < 3 or key in STOPWORDS or key in FOREIGN_STOPWORDS:
            continue
        counts[key] += 1
        spelling.setdefault(key, word.strip("'’-"))
    first_seen = {key: position for position, key in enumerate(spelling)}

    # Frequent words matter, and longer ones tend to be the subject's own terms rather than
    # everyday verbs: "photosynthesis" before "makes".
    def weight(key: str) -> float:
        return counts[key] * (1 + min(len(key), 14) / 7)

    ranked = sorted(counts, key=lambda key: (-weight(key), first_seen[key]))
    return [spelling[key] for key in ranked[:limit]]


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _name_tokens(name: str | None) -> list[str]:
    if not name:
        return []
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return [token for token in re.split(r"[\s_\-.]+", spaced.lower()) if token]


# What a string property holds, judged by the words of its name. Kinds are tried in this
# order, so "question_text" is a question and "front_text" a term, not an explanation.
STRING_KINDS: dict[str, tuple[str, ...]] = {
    "question": ("question", "prompt", "quiz"),
    "translation": ("translation", "translated"),
    "term": (
        "front", "term", "word", "vocab", "keyword", "phrase", "concept", "name", "label", "lemma",
        "option", "choice", "tag", "distractor", "synonym",
    ),
    "example": ("example", "sentence", "usage"),
    "title": ("title", "heading", "topic", "subject", "section"),
    "objective": ("objective", "goal", "outcome"),
    "hint": ("hint", "tip"),
    "language": ("language", "lang", "locale"),
    "level": ("level", "difficulty", "cefr"),
    "id": ("id", "uuid"),
    "url": ("url", "uri", "link"),
    "email": ("email",),
    "explanation": (
        "back", "definition", "meaning", "answer", "explanation", "description", "summary", "content", "text", "body",
    ),
}  # fmt: skip


def _string_kind(name: str | None) -> str:
    tokens = _name_tokens(name)
    for kind, words in STRING_KINDS.items():
        if any(token == word or (len(word) > 3 and token.startswith(word)) for word in words for token in tokens):
            return kind
    return "explanation"


@dataclass
class _Generation:
    topic: Topic
    rng: random.Random
    root: dict
    defs: dict
    next_term: int = 0
    depth_budget: int = 12
    visiting: list[str] = field(default_factory=list)

    def allocate_term(self) -> int:
        index = self.next_term
        self.next_term += 1
        return index


def instance_for_schema(schema: dict, topic: Topic, seed: int) -> object:
    """A value that validates against ``schema`` (the subset OpenAI's structured outputs use)."""
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    generation = _Generation(topic, random.Random(seed), schema, defs)
    return _value(schema, generation, name=None, term=-1, depth=0)


def _resolve(schema: dict, generation: _Generation) -> dict:
    ref = schema.get("$ref")
    if not ref:
        return schema
    if not ref.startswith("#/"):
        return {}
    if ref == "#":
        return generation.root
    name = ref.rsplit("/", 1)[-1]
    target = generation.defs.get(name, {})
    extra = {key: value for key, value in schema.items() if key != "$ref"}
    return {**target, **extra}


class _Recursion(Exception):
    """A self-referencing schema ran out of depth: the caller ends the branch."""


def _value(schema: dict, generation: _Generation, name: str | None, term: int, depth: int) -> object:
    if depth > generation.depth_budget:
        raise _Recursion
    schema = _resolve(schema, generation)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][generation.rng.randrange(len(schema["enum"]))]
    for combinator in ("anyOf", "oneOf"):
        if schema.get(combinator):
            # Prefer a branch that carries content over a bare null.
            branches = sorted(schema[combinator], key=lambda branch: _resolve(branch, generation).get("type") == "null")
            for branch in branches:
                try:
                    return _value(branch, generation, name, term, depth + 1)
                except _Recursion:
                    continue
            return None
    if schema.get("allOf"):
        merged: dict = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part, generation))
        return _value(merged, generation, name, term, depth + 1)

    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        return _object(schema, generation, term, depth)
    if kind == "array":
        return _array(schema, generation, name, depth)
    if kind == "string":
        return _string(schema, generation, name, term)
    if kind == "integer":
        return int(_number(schema, generation, name, term, integer=True))
    if kind == "number":
        return _number(schema, generation, name, term, integer=False)
    if kind == "boolean":
        return generation.rng.random() < 0.5
    return None


def _object(schema: dict, generation: _Generation, term: int, depth: int) -> dict:
    result = {}
    required = set(schema.get("required", []))
    for key, subschema in schema.get("properties", {}).items():
        try:
            result[key] = _value(subschema, generation, key, term, depth + 1)
        except _Recursion:
            if key in required:
                raise
    return result


def _array(schema: dict, generation: _Generation, name: str | None, depth: int) -> list:
    count = _array_length(schema, generation.topic, name, depth)
    items = schema.get("items", {})
    prefix = schema.get("prefixItems", [])
    singular = (name or "").rstrip("s") or None
    values = []
    for position in range(count):
        item_schema = prefix[position] if position < len(prefix) else items if isinstance(items, dict) else {}
        try:
            values.append(_value(item_schema, generation, singular, generation.allocate_term(), depth + 1))
        except _Recursion:
            if len(values) < int(schema.get("minItems", 0)):
                raise
            break
    return values


def _array_length(schema: dict, topic: Topic, name: str | None, depth: int) -> int:
    low = int(schema.get("minItems", 0))
    high = int(schema.get("maxItems", 10_000))
    # Top-level collections (the cards, the items) follow the prompt or scale with the
    # material; nested lists (a card's examples) stay short unless the prompt names them.
    top_level = depth <= 2
    wanted = _requested_count(topic, name, top_level)
    if wanted is None:
        wanted = topic.default_count() if top_level else 2
    return max(low, min(high, wanted))


def _requested_count(topic: Topic, name: str | None, top_level: bool) -> int | None:
    stems = [token.rstrip("s") for token in _name_tokens(name) if len(token) >= 3]
    for number, phrase in topic.counts:
        words = [word.rstrip("s") for word in phrase.split()]
        if any(stem in word or word in stem for stem in stems for word in words if len(word) >= 3):
            return number
    return topic.counts[0][0] if top_level and len(topic.counts) == 1 else None


def _string(schema: dict, generation: _Generation, name: str | None, term: int) -> str:
    topic = generation.topic
    text_format = schema.get("format")
    if text_format == "date-time":
        text = "2025-01-15T09:30:00Z"
    elif text_format == "date":
        text = "2025-01-15"
    elif text_format == "time":
        text = "09:30:00"
    elif text_format == "email":
        text = "learner@example.com"
    elif text_format in ("uri", "url"):
        text = f"https://example.com/{_slug(topic.term(term))}"
    elif text_format == "uuid":
        text = str(uuid.UUID(int=generation.rng.getrandbits(128), version=4))
    else:
        text = _string_by_kind(_string_kind(name), topic, term, generation.rng)
    return _fit_length(text, schema, topic)


def _string_by_kind(kind: str, topic: Topic, term: int, rng: random.Random) -> str:
    if kind == "term":
        return _capitalize(topic.term(term))
    if kind == "question":
        return topic.say("question", term=topic.term(term))
    if kind == "translation":
        return topic.say("translation", term=topic.term(term))
    if kind == "example":
        return topic.example(term)
    if kind == "title":
        return topic.title() if term < 0 else _capitalize(topic.term(term))
    if kind == "objective":
        objectives = topic.phrases.get("objectives", PHRASES["en"]["objectives"])
        return objectives[term % len(objectives)].format(term=topic.term(term))
    if kind == "hint":
        return topic.say("hint", term=topic.term(term))
    if kind == "language":
        return topic.language
    if kind == "level":
        return topic.phrases.get("levels", PHRASES["en"]["levels"])[term % 3]
    if kind == "id":
        return f"{_slug(topic.term(term))}-{term}"
    if kind == "url":
        return f"https://example.com/{_slug(topic.term(term))}"
    if kind == "email":
        return "learner@example.com"
    return topic.explanation(term)


def _fit_length(text: str, schema: dict, topic: Topic) -> str:
    low = int(schema.get("minLength", 0))
    high = schema.get("maxLength")
    while len(text) < low:
        text = f"{text} {topic.explanation(len(text))}"
    if high is not None and len(text) > int(high):
        cut = text[: int(high)]
        text = cut.rsplit(" ", 1)[0] if " " in cut and len(cut.rsplit(" ", 1)[0]) >= low else cut
    return text


def _number(schema: dict, generation: _Generation, name: str | None, term: int, integer: bool) -> float:
    tokens = _name_tokens(name)
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    step = schema.get("multipleOf") or (1 if integer else None)
    if any(token in ("id", "index", "order", "position", "number", "rank", "step") for token in tokens):
        value = float(term)
    elif any(token.startswith(("confidence", "probability", "ratio")) for token in tokens):
        value = round(generation.rng.uniform(0.6, 0.99), 2)
    elif any(token.startswith(("score", "rating", "percent")) for token in tokens):
        value = float(generation.rng.randint(60, 98))
    else:
        value = float(generation.rng.randint(1, 10))
    lo = float(low) if low is not None else -1e12
    hi = float(high) if high is not None else 1e12
    if "exclusiveMinimum" in schema and "minimum" not in schema:
        lo += step or 1e-6
    if "exclusiveMaximum" in schema and "maximum" not in schema:
        hi -= step or 1e-6
    value = min(hi, max(lo, value))
    if step:
        value = round(value / step) * step
        if value < lo:
            value += step
        if value > hi:
            value -= step
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "item"


def schema_of_example(example: object) -> dict:
    """A schema in the shape of a JSON example found in a prompt (for ``json_object`` mode)."""
    if isinstance(example, dict):
        return {"type": "object", "properties": {key: schema_of_example(value) for key, value in example.items()}}
    if isinstance(example, list):
        return {"type": "array", "items": schema_of_example(example[0]) if example else {"type": "string"}}
    if isinstance(example, bool):
        return {"type": "boolean"}
    if isinstance(example, int):
        return {"type": "integer"}
    if isinstance(example, float):
        return {"type": "number"}
    return {"type": "string"}


def json_example_in(text: str) -> dict | None:
    """The largest JSON object written out in ``text``, if any ("answer like {...}")."""
    decoder = json.JSONDecoder()
    best: dict | None = None
    best_length = 0
    for match in re.finditer(r"\{", text):
        try:
            value, end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict) and end - match.start() > best_length:
            best, best_length = value, end - match.start()
    return best


def json_object_answer(topic: Topic, request: str, seed: int) -> dict:
    """``response_format: json_object``: the prompt's own example shape, else a summary."""
    example = json_example_in(request)
    if example:
        return instance_for_schema(schema_of_example(example), topic, seed)  # type: ignore[return-value]
    count = topic.counts[0][0] if topic.counts else min(5, len(topic.terms))
    return {
        "topic": topic.title(),
        "summary": topic.explanation(0),
        "key_points": [topic.explanation(index) for index in range(count)],
    }


def text_answer(topic: Topic) -> str:
    """A plain-text answer: a short overview built from the prompt's terms."""
    count = topic.counts[0][0] if topic.counts else min(5, len(topic.terms))
    lines = [topic.say("text_intro"), ""]
    for index in range(count):
        lines.append(f"{index + 1}. {_capitalize(topic.term(index))}: {topic.explanation(index)}")
    return "\n".join(lines)


# The sentences the sandbox adds around the material's words, per answer language.
PHRASES: dict[str, dict] = {
    "en": {
        "overview": "An overview of {subject}.",
        "key_idea": "{term} is a key idea in {subject}.",
        "example": "For example, “{term}” often comes up when studying {subject}.",
        "question": "What does “{term}” mean in {subject}?",
        "translation": "{term} (translated)",
        "hint": "Think about how {term} relates to {subject}.",
        "text_intro": "Here is an overview of {subject}.",
        "objectives": ("Explain {term}", "Describe {term}", "Use {term}", "Recognise {term}", "Compare {term}"),
        "levels": ("beginner", "intermediate", "advanced"),
        "and": " and ",
    },
    "de": {
        "overview": "Ein Überblick über {subject}.",
        "key_idea": "{term} ist ein wichtiger Begriff zum Thema {subject}.",
        "example": "Zum Beispiel kommt „{term}“ oft vor, wenn man {subject} lernt.",
        "question": "Was bedeutet „{term}“ beim Thema {subject}?",
        "translation": "{term} (Übersetzung)",
        "hint": "Überlege, wie {term} mit {subject} zusammenhängt.",
        "text_intro": "Hier ist ein Überblick über {subject}.",
        "objectives": (
            "{term} erklären",
            "{term} beschreiben",
            "{term} benutzen",
            "{term} erkennen",
            "{term} vergleichen",
        ),
        "levels": ("Anfänger", "Mittelstufe", "Fortgeschrittene"),
        "and": " und ",
        "aspects": (
            "Definition",
            "Kernidee",
            "Beispiel",
            "im Kontext",
            "häufiger Fehler",
            "verwandter Begriff",
            "Gebrauch",
            "Herkunft",
        ),
    },
    "es": {
        "overview": "Una introducción a {subject}.",
        "key_idea": "{term} es una idea clave sobre {subject}.",
        "example": "Por ejemplo, «{term}» aparece a menudo cuando se estudia {subject}.",
        "question": "¿Qué significa «{term}» en {subject}?",
        "translation": "{term} (traducción)",
        "hint": "Piensa en la relación entre {term} y {subject}.",
        "text_intro": "Esta es una introducción a {subject}.",
        "objectives": ("Explicar {term}", "Describir {term}", "Usar {term}", "Reconocer {term}", "Comparar {term}"),
        "levels": ("principiante", "intermedio", "avanzado"),
        "and": " y ",
        "aspects": (
            "definición",
            "idea clave",
            "ejemplo",
            "en contexto",
            "error común",
            "término relacionado",
            "uso",
            "origen",
        ),
    },
    "fr": {
        "overview": "Un aperçu de {subject}.",
        "key_idea": "{term} est une notion clé de {subject}.",
        "example": "Par exemple, « {term} » revient souvent quand on étudie {subject}.",
        "question": "Que signifie « {term} » dans {subject} ?",
        "translation": "{term} (traduction)",
        "hint": "Réfléchis au lien entre {term} et {subject}.",
        "text_intro": "Voici un aperçu de {subject}.",
        "objectives": (
            "Expliquer {term}",
            "Décrire {term}",
            "Utiliser {term}",
            "Reconnaître {term}",
            "Comparer {term}",
        ),
        "levels": ("débutant", "intermédiaire", "avancé"),
        "and": " et ",
        "aspects": (
            "définition",
            "idée clé",
            "exemple",
            "en contexte",
            "erreur fréquente",
            "terme voisin",
            "usage",
            "origine",
        ),
    },
    "it": {
        "overview": "Una panoramica di {subject}.",
        "key_idea": "{term} è un concetto chiave di {subject}.",
        "example": "Per esempio, «{term}» compare spesso quando si studia {subject}.",
        "question": "Che cosa significa «{term}» in {subject}?",
        "translation": "{term} (traduzione)",
        "hint": "Pensa a come {term} si collega a {subject}.",
        "text_intro": "Ecco una panoramica di {subject}.",
        "objectives": (
            "Spiegare {term}",
            "Descrivere {term}",
            "Usare {term}",
            "Riconoscere {term}",
            "Confrontare {term}",
        ),
        "levels": ("principiante", "intermedio", "avanzato"),
        "and": " e ",
        "aspects": (
            "definizione",
            "idea chiave",
            "esempio",
            "nel contesto",
            "errore comune",
            "termine collegato",
            "uso",
            "origine",
        ),
    },
    "pt": {
        "overview": "Uma visão geral de {subject}.",
        "key_idea": "{term} é uma ideia-chave de {subject}.",
        "example": "Por exemplo, «{term}» aparece muitas vezes quando se estuda {subject}.",
        "question": "O que significa «{term}» em {subject}?",
        "translation": "{term} (tradução)",
        "hint": "Pense em como {term} se relaciona com {subject}.",
        "text_intro": "Aqui está uma visão geral de {subject}.",
        "objectives": ("Explicar {term}", "Descrever {term}", "Usar {term}", "Reconhecer {term}", "Comparar {term}"),
        "levels": ("iniciante", "intermediário", "avançado"),
        "and": " e ",
        "aspects": (
            "definição",
            "ideia-chave",
            "exemplo",
            "em contexto",
            "erro comum",
            "termo relacionado",
            "uso",
            "origem",
        ),
    },
    "nl": {
        "overview": "Een overzicht van {subject}.",
        "key_idea": "{term} is een kernbegrip van {subject}.",
        "example": "Bijvoorbeeld: „{term}” komt vaak voor als je {subject} leert.",
        "question": "Wat betekent „{term}” bij {subject}?",
        "translation": "{term} (vertaling)",
        "hint": "Denk na over hoe {term} samenhangt met {subject}.",
        "text_intro": "Hier is een overzicht van {subject}.",
        "objectives": (
            "{term} uitleggen",
            "{term} beschrijven",
            "{term} gebruiken",
            "{term} herkennen",
            "{term} vergelijken",
        ),
        "levels": ("beginner", "gevorderd", "expert"),
        "and": " en ",
        "aspects": (
            "definitie",
            "kernidee",
            "voorbeeld",
            "in context",
            "veelgemaakte fout",
            "verwant begrip",
            "gebruik",
            "herkomst",
        ),
    },
}

# Language names a prompt may use instead of a code.
LANGUAGE_NAMES = {
    "english": "en", "german": "de", "deutsch": "de", "spanish": "es", "español": "es", "french": "fr",
    "français": "fr", "italian": "it", "italiano": "it", "portuguese": "pt", "português": "pt", "dutch": "nl",
    "nederlands": "nl",
}  # fmt: skip
LANGUAGE_CODE = re.compile(r"\bin (?:the )?language\s*[:'\"“]?\s*([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{2,8})*\b", re.I)
LANGUAGE_NAME = re.compile(r"\b(?:in|auf|en|in lingua|em)\s+(" + "|".join(LANGUAGE_NAMES) + r")\b", re.I)


def answer_language(instructions: str, request: str) -> str:
    """The answer's language as a bare code: what the prompt asks for, else English."""
    for text in (instructions, request):
        match = LANGUAGE_CODE.search(text)
        if match:
            return match.group(1).lower()
        match = LANGUAGE_NAME.search(text)
        if match:
            return LANGUAGE_NAMES[match.group(1).lower()]
    return "en"
