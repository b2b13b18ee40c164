"""A synthetic story corpus from a template grammar, every target token tagged with the pattern it serves.

Stories are strings of sentences drawn from templates such as

    Once upon@opener a@opener time@opener , there was a {kid} named {name} .

A word `w@tag` is a token whose prediction belongs to pattern `tag`; `{slot}` is filled per story
(the protagonist's name, pronouns) or drawn from a word list. Untagged tokens belong to no pattern.
The tokenizer is word level over the grammar's own vocabulary: no hub tokenizer is needed.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

NONE = "none"

GIRLS = ["Lily", "Sue", "Mia", "Anna", "Emma", "Lucy", "Amy", "Sara"]
BOYS = ["Tom", "Ben", "Max", "Sam", "Tim", "Jack", "Leo", "Bob"]
WORDS = {
    "place": ["park", "store", "beach", "forest", "zoo", "lake", "garden", "farm"],
    "color": ["red", "blue", "green", "yellow", "pink", "purple"],
    "toy": ["ball", "kite", "car", "doll", "boat", "drum"],
    "feeling": ["happy", "sad", "scared", "tired", "excited", "angry"],
    "age": ["three", "four", "five", "six", "seven"],
    "animal": ["dog", "cat", "bird", "frog", "bunny", "duck"],
    "utterance": ["let us play", "look at this", "I like it", "can I help", "come with me", "I am sorry"],
}

# (pattern, template): the pattern names the kind of prediction the tagged tokens need.
OPENERS = [
    "Once upon@opener a@opener time@opener ,@opener there@opener was@opener a {kid} named@named {name}@named .",
    "One day@one_day , a {kid} named@named {name}@named went to the@went_to {place}@went_to .",
]
BODY = [
    "{name} had a big@color {color}@color {toy} .",
    "{Pronoun}@pronoun was {age} years@years_old old@years_old .",
    "{name} and@name_pair {friend}@name_pair played with the {toy} .",
    "{name} went to@went_to the@went_to {place}@went_to with {his}@pronoun mom .",
    "{Pronoun}@pronoun shook {his}@pronoun head@shook_head and said no .",
    "{name} said@dialogue ,@dialogue \"@dialogue {utterance} ! \"@quote_close",
    "\"@quote_open {utterance} , \"@quote_close said@said_name {name}@said_name .",
    "{name} felt@feeling very@feeling {feeling}@feeling .",
    "{name} saw a little@animal {animal}@animal . The {animal}@animal_repeat was {feeling} .",
    "{name} said thank@thank_you you@thank_you to {friend} .",
    "Then {name}@name_repeat smiled and hugged {friend}@friend_repeat .",
    ("{name} wanted to@play_with play@play_with with@play_with {friend} , "
     "but {friend}@friend_repeat was busy@play_with ."),
]
ENDINGS = [
    "They lived@ever_after happily@ever_after ever@ever_after after@ever_after .",
    "The end@the_end .",
]
EOS = "<eos>"


def _templates() -> list[str]:
    return OPENERS + BODY + ENDINGS


def patterns() -> list[str]:
    """Every pattern name of the grammar, `none` first (index 0)."""
    found: list[str] = []
    for template in _templates():
        for word in template.split():
            if "@" in word:
                tag = word.rsplit("@", 1)[1]
                if tag not in found:
                    found.append(tag)
    return [NONE] + found


def vocabulary() -> list[str]:
    """Every token the grammar can produce, in a fixed order (`<eos>` first)."""
    words = {EOS, "girl", "boy", "He", "She", "he", "she", "his", "her", "His", "Her", *GIRLS, *BOYS}
    for values in WORDS.values():
        for value in values:
            words.update(value.split())
    for template in _templates():
        for word in template.split():
            word = word.rsplit("@", 1)[0]
            if not word.startswith("{"):
                words.add(word)
    return [EOS] + sorted(words - {EOS})


class Tokenizer:
    """Word-level tokenizer over the grammar's vocabulary (text is split on spaces)."""

    def __init__(self, vocab: list[str] | None = None):
        self.vocab = vocab or vocabulary()
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        unknown = [w for w in text.split() if w not in self.index]
        if unknown:
            raise ValueError(f"words {unknown[:5]} are not in the story grammar's vocabulary")
        return [self.index[w] for w in text.split()]

    def decode(self, ids) -> str:
        return " ".join(self.vocab[int(i)] for i in ids)


def story(rng: random.Random, n_body: int = 4) -> list[tuple[str, str]]:
    """One story as (token, pattern) pairs."""
    girl = rng.random() < 0.5
    name = rng.choice(GIRLS if girl else BOYS)
    friend = rng.choice([n for n in GIRLS + BOYS if n != name])
    slots = {
        "name": name, "friend": friend, "kid": "girl" if girl else "boy",
        "Pronoun": "She" if girl else "He", "his": "her" if girl else "his",
    }
    templates = [rng.choice(OPENERS)] + rng.sample(BODY, n_body) + [rng.choice(ENDINGS)]
    out: list[tuple[str, str]] = []
    for template in templates:
        story_slots = dict(slots)  # slots drawn from word lists stay fixed within a sentence
        for word in template.split():
            word, _, tag = word.partition("@")
            tag = tag or NONE
            prefix, slot, suffix = "", None, ""
            if "{" in word:
                prefix, rest = word.split("{", 1)
                slot, suffix = rest.split("}", 1)
                if slot not in story_slots:
                    story_slots[slot] = rng.choice(WORDS[slot])
                word = story_slots[slot]
            for piece in (prefix, *word.split(), suffix):
                if piece:
                    out.append((piece, tag))
    out.append((EOS, NONE))
    return out


@dataclass
class Corpus:
    """Texts of `length` tokens with the pattern of every next-token target.

    tokens: (N, length + 1) token ids; the model reads tokens[:, :-1] and predicts tokens[:, 1:].
    tags:   (N, length) pattern index (into `patterns`) of each target tokens[:, 1:].
    """

    tokens: Tensor
    tags: Tensor
    patterns: list[str]
    tokenizer: Tokenizer

    @property
    def inputs(self) -> Tensor:
        return self.tokens[:, :-1]

    @property
    def targets(self) -> Tensor:
        return self.tokens[:, 1:]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def context(self, text: int, position: int, width: int = 10) -> str:
        """The tokens leading up to `position` of text `text`, then the target token in [brackets]."""
        return marked_context(self.tokens, text, position, self.tokenizer.decode, width)


def marked_context(tokens: Tensor, text: int, position: int, decode: Callable[[list[int]], str],
                   width: int = 10) -> str:
    """`width` tokens of text `text` up to `position`, then the next (target) token in [brackets].

    tokens: (N, length + 1) token ids; decode maps ids to text (any tokenizer's decode).
    """
    ids = tokens[text, max(0, position + 1 - width):position + 1].tolist()
    return f"{decode(ids)} [{decode([int(tokens[text, position + 1])]).strip()}]"


def story_corpus(n_texts: int, length: int = 16, seed: int = 0) -> Corpus:
    """`n_texts` windows of `length` + 1 tokens cut at random offsets from a stream of generated stories.

    Deterministic given `seed`.
    """
    if n_texts < 1 or length < 2:
        raise ValueError(f"need n_texts >= 1 and length >= 2, got n_texts={n_texts}, length={length}")
    rng = random.Random(seed)
    tokenizer = Tokenizer()
    names = patterns()
    tag_index = {t: i for i, t in enumerate(names)}
    tokens, tags = [], []
    stream: list[tuple[str, str]] = []
    while len(tokens) < n_texts:
        while len(stream) < length + 1:
            stream += story(rng)
        window = stream[:length + 1]
        stream = stream[rng.randint(length // 2, length):]  # windows overlap a little, start anywhere
        tokens.append([tokenizer.index[w] for w, _ in window])
        tags.append([tag_index[t] for _, t in window[1:]])
    return Corpus(torch.tensor(tokens), torch.tensor(tags), names, tokenizer)
