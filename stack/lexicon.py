"""Word-list heuristics behind the offline judge (`stack.judge_server`).

Everything here is a deterministic stand-in so the evaluation pipeline can run without a
language model. The numbers it produces are counts of surface features (listed words,
exclamation marks, emoji, question marks, digits and units, sentences that open with an
imperative verb). They are not judgments of tone or quality.

Two functions matter:

- `tone_scores(text)` gives one score per tone label; `rank_tones` sorts the labels by score,
  breaking ties by the order of `TONES`.
- `joy_score(text)` gives a 0-10 "engaging and fun" score with the signals that made it.

Tone scores, per label (each listed word or phrase counts once per occurrence):

- joyful: 1.0 per joy word, 0.5 per playful word, 1.0 per exclamation mark (at most 4),
  1.5 per emoji.
- friendly: 1.0 per friendly word or phrase, 0.6 per question mark (at most 3), 0.5 per emoji.
- optimistic: 1.0 per optimistic word or phrase.
- urgent: 1.2 per urgent word or phrase, 1.5 per sentence that opens with an imperative verb,
  0.5 per exclamation mark when the text has at least two urgent words or phrases.
- analytical: 1.0 per analytical word, 0.7 per number (at most 6), 0.8 per unit.
- confident: 1.0 per confident word, 0.4 per declarative sentence without a hedge word,
  0.5 per imperative sentence, minus 0.8 per hedge word.
- respectful: 1.2 per respectful word or phrase.
- neutral: 0.5, plus 0.4 per sentence in which no other label scored.

Word lists match plurals too ("tickles" matches "tickle", "mysteries" matches "mystery").

The joy score starts at 2.0 for non-empty text and adds 1.0 per exclamation mark (at most
4), 1.0 per emoji (at most 3), 0.8 per joy or playful word (at most 6), 0.6 per question
mark (at most 2), 0.8 per analogy marker such as "like a" or "imagine" (at most 3) and 0.3
when the reader is addressed as "you". It subtracts 0.25 per number or unit (at most 2.0),
0.6 per urgent word (at most 3.0) and 1.0 for text under five words. The result is clamped
to [0, 10]. Empty or whitespace-only text scores 0.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

TONES: tuple[str, ...] = (
    "neutral",
    "confident",
    "joyful",
    "optimistic",
    "friendly",
    "urgent",
    "analytical",
    "respectful",
)

JOY_WORDS: frozenset[str] = frozenset(
    [
        "amazing",
        "awesome",
        "brilliant",
        "cheer",
        "cheerful",
        "cool",
        "dazzling",
        "delight",
        "delightful",
        "excited",
        "exciting",
        "fantastic",
        "fun",
        "funny",
        "giggle",
        "glee",
        "glow",
        "glowing",
        "hooray",
        "incredible",
        "joy",
        "joyful",
        "love",
        "lovely",
        "magic",
        "magical",
        "marvel",
        "marvelous",
        "marvellous",
        "party",
        "playful",
        "sparkle",
        "sparkly",
        "spectacular",
        "splendid",
        "stunning",
        "superb",
        "thrilling",
        "tickle",
        "whee",
        "whoa",
        "wonderful",
        "wondrous",
        "wow",
        "yay",
        "yum",
        "epic",
        "dance",
        "dancing",
        "bounce",
        "bouncy",
        "zoom",
        "zooming",
        "twirl",
        "fizz",
        "fizzy",
        "wild",
        "disco",
        "cozy",
        "coziest",
        "sweet",
        "gorgeous",
        "beautiful",
        "favourite",
        "favorite",
        "treat",
        "fireworks",
        "show",
        "champion",
        "enchanting",
        "dazzle",
        "celebrate",
        "celebrating",
        "bang",
        "boom",
        "gymnastics",
        "fluffy",
        "rainbow",
        "twinkle",
        "wonder",
        "wonders",
        "fabulous",
    ]
)

PLAYFUL_WORDS: frozenset[str] = frozenset(
    [
        "adventure",
        "buddy",
        "cosmic",
        "goofy",
        "jiggle",
        "party",
        "pop",
        "rollercoaster",
        "secret",
        "sneaky",
        "superpower",
        "surprise",
        "tiny",
        "treasure",
        "wiggle",
        "wobble",
        "zany",
        "bonus",
        "birthday",
        "drumroll",
        "hunting",
        "rescue",
    ]
)

FRIENDLY_WORDS: frozenset[str] = frozenset(
    [
        "hi",
        "hello",
        "hey",
        "friend",
        "friends",
        "buddy",
        "pal",
        "glad",
        "welcome",
        "together",
        "let's",
        "lets",
        "enjoy",
    ]
)
FRIENDLY_PHRASES: tuple[str, ...] = (
    "great question",
    "good question",
    "happy to",
    "feel free",
    "you and me",
    "you'll",
    "you're",
)

OPTIMISTIC_WORDS: frozenset[str] = frozenset(
    [
        "hope",
        "hopeful",
        "bright",
        "brighter",
        "future",
        "better",
        "improve",
        "improving",
        "improves",
        "progress",
        "promising",
        "possible",
        "opportunity",
        "opportunities",
        "forward",
        "positive",
        "recover",
        "recovery",
        "heal",
        "healing",
        "solve",
        "solved",
        "solution",
        "soon",
        "grow",
        "growing",
        "thrive",
        "breakthrough",
        "encouraging",
    ]
)
OPTIMISTIC_PHRASES: tuple[str, ...] = ("good news", "look forward", "on the way", "can do")

URGENT_WORDS: frozenset[str] = frozenset(
    [
        "now",
        "immediately",
        "urgent",
        "urgently",
        "emergency",
        "danger",
        "dangerous",
        "warning",
        "hazard",
        "hazardous",
        "poison",
        "poisonous",
        "toxic",
        "evacuate",
        "asap",
        "critical",
        "fatal",
        "deadly",
        "severe",
        "stop",
        "unsafe",
    ]
)
URGENT_PHRASES: tuple[str, ...] = (
    "right away",
    "right now",
    "do not",
    "don't",
    "never",
    "as soon as possible",
    "call 911",
    "call 112",
    "emergency line",
    "seek medical",
    "get out",
)

IMPERATIVE_VERBS: frozenset[str] = frozenset(
    [
        "stop",
        "call",
        "leave",
        "turn",
        "open",
        "get",
        "go",
        "move",
        "unplug",
        "keep",
        "avoid",
        "evacuate",
        "seek",
        "wash",
        "rinse",
        "check",
        "switch",
        "shut",
        "put",
        "remove",
        "never",
        "don't",
        "do",
        "cover",
        "drop",
        "hold",
        "tell",
        "wear",
    ]
)

ANALYTICAL_WORDS: frozenset[str] = frozenset(
    [
        "therefore",
        "thus",
        "hence",
        "because",
        "consequently",
        "measured",
        "measurement",
        "measure",
        "rate",
        "rates",
        "ratio",
        "data",
        "evidence",
        "approximately",
        "estimate",
        "estimated",
        "average",
        "mean",
        "median",
        "percent",
        "percentage",
        "hypothesis",
        "variable",
        "correlation",
        "mass",
        "energy",
        "frequency",
        "equation",
        "wavelength",
        "probability",
        "statistically",
        "statistical",
        "sample",
        "samples",
        "coefficient",
        "function",
        "derivative",
        "proportional",
        "density",
        "velocity",
        "acceleration",
        "quantity",
        "quantities",
        "magnitude",
        "factor",
    ]
)

UNIT_WORDS: frozenset[str] = frozenset(
    [
        "km",
        "m",
        "cm",
        "mm",
        "nm",
        "kg",
        "g",
        "mg",
        "s",
        "ms",
        "hz",
        "khz",
        "mhz",
        "ghz",
        "j",
        "kj",
        "kwh",
        "w",
        "kw",
        "mw",
        "v",
        "a",
        "k",
        "c",
        "f",
        "pa",
        "kpa",
        "atm",
        "mol",
        "degrees",
        "kelvin",
        "celsius",
        "fahrenheit",
        "meters",
        "metres",
        "meter",
        "metre",
        "kilometers",
        "kilometres",
        "grams",
        "kilograms",
        "seconds",
        "minutes",
        "hours",
        "years",
        "days",
        "joules",
        "watts",
        "volts",
        "newtons",
        "pascals",
        "percent",
        "ppm",
        "au",
        "ly",
        "lightyears",
        "light-years",
    ]
)

CONFIDENT_WORDS: frozenset[str] = frozenset(
    [
        "definitely",
        "certainly",
        "clearly",
        "always",
        "proven",
        "exactly",
        "precisely",
        "sure",
        "must",
        "fact",
        "facts",
        "indeed",
        "absolutely",
        "guaranteed",
        "undoubtedly",
        "simply",
        "established",
        "known",
    ]
)

HEDGE_WORDS: frozenset[str] = frozenset(
    [
        "maybe",
        "perhaps",
        "might",
        "possibly",
        "could",
        "unsure",
        "uncertain",
        "seems",
        "seem",
        "probably",
        "guess",
        "arguably",
        "somewhat",
    ]
)

RESPECTFUL_WORDS: frozenset[str] = frozenset(
    [
        "thank",
        "thanks",
        "please",
        "understand",
        "understandable",
        "sorry",
        "appreciate",
        "respect",
        "kindly",
        "gently",
        "valid",
        "feelings",
        "care",
        "apologize",
        "apologise",
        "concern",
        "concerns",
        "support",
        "worrying",
        "difficult",
    ]
)
RESPECTFUL_PHRASES: tuple[str, ...] = (
    "if you'd like",
    "take your time",
    "it's okay",
    "that's okay",
    "you are not alone",
    "your doctor",
)

ANALOGY_MARKERS: tuple[str, ...] = (
    "like a",
    "like an",
    "like the",
    "as if",
    "imagine",
    "picture this",
    "think of",
    "kind of like",
)

_WORD_RE = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")
_NUMBER_RE = re.compile(r"(?<![a-z])\d+(?:[.,]\d+)*")
_SENTENCE_RE = re.compile(r"[^.!?\n]+[.!?]*")
_EMOJI_RE = re.compile(
    "[\U0001f300-\U0001faff\U00002600-\U000027bf\U0001f1e6-\U0001f1ff\U00002b50\U00002b55]"
)


@dataclass
class Signals:
    """Surface features counted in a text.

    Attributes:
        words: Lower-case words in order.
        exclamations: Number of "!" characters.
        questions: Number of "?" characters.
        emoji: Number of emoji characters.
        numbers: Number of numerals.
        units: Number of unit words.
        sentences: Sentences, lower-cased and stripped.
    """

    words: list[str] = field(default_factory=list)
    exclamations: int = 0
    questions: int = 0
    emoji: int = 0
    numbers: int = 0
    units: int = 0
    sentences: list[str] = field(default_factory=list)


def _count_units(words: Sequence[str]) -> int:
    """Count unit words; units of one or two letters count only right after a numeral."""
    count = 0
    for index, word in enumerate(words):
        if word not in UNIT_WORDS:
            continue
        if len(word) > 2 or (index > 0 and words[index - 1][:1].isdigit()):
            count += 1
    return count


def count_signals(text: str) -> Signals:
    """Count the surface features of a text.

    Args:
        text: Any text; None-like input should be passed as "".

    Returns:
        The counted signals.
    """
    lowered = text.lower().replace("\u2019", "'")
    words = _WORD_RE.findall(lowered)
    sentences = [s.strip() for s in _SENTENCE_RE.findall(lowered) if s.strip()]
    return Signals(
        words=words,
        exclamations=lowered.count("!"),
        questions=lowered.count("?"),
        emoji=len(_EMOJI_RE.findall(text)),
        numbers=len(_NUMBER_RE.findall(lowered)),
        units=_count_units(words) + lowered.count("%") + lowered.count("\u00b0"),
        sentences=sentences,
    )


def _in_vocabulary(word: str, vocabulary: frozenset[str]) -> bool:
    """Match a word or its plural ("-s", "-es", "-ies") against a word list."""
    if word in vocabulary:
        return True
    if word.endswith("ies") and word[:-3] + "y" in vocabulary:
        return True
    if word.endswith("es") and word[:-2] in vocabulary:
        return True
    return word.endswith("s") and word[:-1] in vocabulary


def _count_words(words: Iterable[str], vocabulary: frozenset[str]) -> int:
    return sum(1 for word in words if _in_vocabulary(word, vocabulary))


def _count_phrases(text: str, phrases: Sequence[str]) -> int:
    return sum(len(re.findall(r"(?<![a-z])" + re.escape(p) + r"(?![a-z])", text)) for p in phrases)


def _imperative_sentences(sentences: Sequence[str]) -> int:
    count = 0
    for sentence in sentences:
        match = _WORD_RE.search(sentence)
        if match and match.group(0) in IMPERATIVE_VERBS:
            count += 1
    return count


def _sentence_has_signal(sentence: str) -> bool:
    words = _WORD_RE.findall(sentence)
    vocabularies = (
        JOY_WORDS,
        FRIENDLY_WORDS,
        OPTIMISTIC_WORDS,
        URGENT_WORDS,
        ANALYTICAL_WORDS,
        CONFIDENT_WORDS,
        RESPECTFUL_WORDS,
    )
    if any(_count_words(words, vocabulary) for vocabulary in vocabularies):
        return True
    if "!" in sentence or "?" in sentence or _NUMBER_RE.search(sentence):
        return True
    return bool(_EMOJI_RE.search(sentence))


def tone_scores(text: str) -> dict[str, float]:
    """Score every tone label of `TONES` for a text.

    Args:
        text: The text to score.

    Returns:
        A score per label; higher means more of that label's listed signals.
    """
    signals = count_signals(text)
    lowered = " ".join(signals.sentences)
    words = signals.words
    hedges = _count_words(words, HEDGE_WORDS)
    imperatives = _imperative_sentences(signals.sentences)
    urgent_hits = _count_words(words, URGENT_WORDS) + _count_phrases(lowered, URGENT_PHRASES)
    declaratives = sum(
        1
        for sentence in signals.sentences
        if sentence.endswith(".") and not any(w in HEDGE_WORDS for w in _WORD_RE.findall(sentence))
    )
    plain_sentences = sum(1 for s in signals.sentences if not _sentence_has_signal(s))
    scores = {
        "joyful": _count_words(words, JOY_WORDS)
        + 0.5 * _count_words(words, PLAYFUL_WORDS - JOY_WORDS)
        + 1.0 * min(signals.exclamations, 4)
        + 1.5 * signals.emoji,
        "friendly": _count_words(words, FRIENDLY_WORDS)
        + _count_phrases(lowered, FRIENDLY_PHRASES)
        + 0.6 * min(signals.questions, 3)
        + 0.5 * signals.emoji,
        "optimistic": _count_words(words, OPTIMISTIC_WORDS)
        + _count_phrases(lowered, OPTIMISTIC_PHRASES),
        "urgent": 1.2 * urgent_hits
        + 1.5 * imperatives
        + (0.5 * signals.exclamations if urgent_hits >= 2 else 0.0),
        "analytical": _count_words(words, ANALYTICAL_WORDS)
        + 0.7 * min(signals.numbers, 6)
        + 0.8 * signals.units,
        "confident": _count_words(words, CONFIDENT_WORDS)
        + 0.4 * declaratives
        + 0.5 * imperatives
        - 0.8 * hedges,
        "respectful": 1.2
        * (_count_words(words, RESPECTFUL_WORDS) + _count_phrases(lowered, RESPECTFUL_PHRASES)),
        "neutral": 0.5 + 0.4 * plain_sentences,
    }
    return {tone: round(float(scores[tone]), 4) for tone in TONES}


def rank_tones(text: str, allowed: Sequence[str] | None = None, count: int = 3) -> list[str]:
    """Return the `count` highest-scoring distinct labels for a text.

    Labels outside `TONES` get score 0. Ties keep the order of `TONES`, then the order of
    `allowed` for unknown labels.

    Args:
        text: The text to classify.
        allowed: Labels to choose from; `TONES` when None or empty.
        count: How many labels to return.

    Returns:
        Distinct labels, highest score first.
    """
    labels = list(dict.fromkeys(allowed or TONES))
    scores = tone_scores(text)
    order = {tone: index for index, tone in enumerate(TONES)}

    def key(item: tuple[int, str]) -> tuple[float, int, int]:
        position, label = item
        return (-scores.get(label, 0.0), order.get(label, len(TONES)), position)

    ranked = [label for _, label in sorted(enumerate(labels), key=key)]
    return ranked[:count]


@dataclass
class JoyResult:
    """A joy score and the signals behind it.

    Attributes:
        value: Continuous score in [0, 10].
        signals: Counted signals by name, only those that were present.
    """

    value: float
    signals: dict[str, int]

    @property
    def integer(self) -> int:
        """The score rounded half up to an integer in 0-10."""
        return max(0, min(10, int(self.value + 0.5)))


def joy_score(text: str) -> JoyResult:
    """Score how engaging and fun a text looks by its surface features.

    Args:
        text: The text to score.

    Returns:
        The continuous score and the signals counted.
    """
    if not text or not text.strip():
        return JoyResult(value=0.0, signals={})
    signals = count_signals(text)
    lowered = " ".join(signals.sentences)
    words = signals.words
    joy_words = _count_words(words, JOY_WORDS) + _count_words(words, PLAYFUL_WORDS - JOY_WORDS)
    analogies = _count_phrases(lowered, ANALOGY_MARKERS)
    urgent = _count_words(words, URGENT_WORDS) + _count_phrases(lowered, URGENT_PHRASES)
    addresses_reader = "you" in words or "your" in words
    dry = signals.numbers + signals.units
    value = 2.0
    value += 1.0 * min(signals.exclamations, 4)
    value += 1.0 * min(signals.emoji, 3)
    value += 0.8 * min(joy_words, 6)
    value += 0.6 * min(signals.questions, 2)
    value += 0.8 * min(analogies, 3)
    value += 0.3 if addresses_reader else 0.0
    value -= min(0.25 * dry, 2.0)
    value -= min(0.6 * urgent, 3.0)
    if len(words) < 5:
        value -= 1.0
    counted = {
        "exclamation marks": signals.exclamations,
        "emoji": signals.emoji,
        "playful words": joy_words,
        "questions": signals.questions,
        "analogies": analogies,
        "numbers or units": dry,
        "urgent words": urgent,
    }
    return JoyResult(
        value=round(max(0.0, min(10.0, value)), 4),
        signals={name: n for name, n in counted.items() if n},
    )
