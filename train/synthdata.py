"""Deterministic synthetic data for the shipped small model: two task families our users run.

* labeling: a support message (ticket e-mail or chat line) -> {"category", "priority", "sentiment"},
  all enums.
  Each label is carried by one cue sentence drawn from a per-label bank, so the answer is fully determined
  by the text.
* extraction: a customer message about an order -> {"name", "city", "order_id", "product", "quantity",
  "status"}: strings and the order id are copied, the quantity is derived (digits or a number word) and the
  status is derived from a phrase bank.

Entities (first/last names, cities, product brands) are made from syllables and assigned to a split by a hash
of the value, so held-out examples only ever contain entity values unseen in training. Held-out examples
draw from a fixed pool; training examples make a fresh value each time (rejecting held-out-hashed ones), so
the model cannot memorise a finite list of names and must learn to copy from the text, which is the skill the
held-out set measures. Every example is a pure function of (split, seed, index): the trainer streams examples
by step and resumes exactly.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass, field
from functools import cache

FAMILIES = ("labeling", "extraction")
SPLITS = ("train", "heldout")

CATEGORIES = ("billing", "technical", "account", "shipping", "product")
PRIORITIES = ("low", "medium", "high", "urgent")
SENTIMENTS = ("positive", "neutral", "negative")
STATUSES = ("delivered", "in_transit", "delayed", "cancelled", "returned")

# JSON Schemas; property order is the order the answers are written in (constrained decoding follows it).
LABELING_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": list(CATEGORIES)},
        "priority": {"type": "string", "enum": list(PRIORITIES)},
        "sentiment": {"type": "string", "enum": list(SENTIMENTS)},
    },
    "required": ["category", "priority", "sentiment"],
    "additionalProperties": False,
}
EXTRACTION_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "city": {"type": "string", "maxLength": 30},
        "order_id": {"type": "integer", "minimum": 10000, "maximum": 99999},
        "product": {"type": "string", "maxLength": 40},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 12},
        "status": {"type": "string", "enum": list(STATUSES)},
    },
    "required": ["name", "city", "order_id", "product", "quantity", "status"],
    "additionalProperties": False,
}
SCHEMAS = {"labeling": LABELING_SCHEMA, "extraction": EXTRACTION_SCHEMA}

INSTRUCTIONS = {
    "labeling": "Label the support message. Answer with JSON: category, priority, sentiment.",
    "extraction": "Extract the order details as JSON: name, city, order_id, product, quantity, status.",
}

# Seeds are disjoint ranges per split so no (split, index) pair ever shares a random stream.
SPLIT_SEED = {"train": 1_000_003, "heldout": 7_000_001}


@dataclass(frozen=True)
class Example:
    """One chat turn: `prompt` is the user content, `answer` the exact model reply (compact JSON)."""

    family: str
    prompt: str
    target: dict = field(hash=False)

    @property
    def answer(self) -> str:
        return json.dumps(self.target)


# --- entity pools -------------------------------------------------------------------------------------
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
           "br", "ch", "dr", "gr", "kl", "pr", "sh", "st", "tr", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "th", "x", "nd", "rk")
_CITY_SUFFIX = ("ton", "ville", "burg", "field", "port", "ford", "haven", "dale", " Falls", " City")
_ITEMS = ("desk lamp", "kettle", "backpack", "headphones", "blender", "office chair", "water bottle",
          "keyboard", "monitor stand", "yoga mat", "coffee grinder", "phone case", "toaster", "rain jacket",
          "tent", "camera bag", "wall clock", "bike helmet", "notebook", "travel mug")


def _is_heldout(value: str) -> bool:
    # crc32 is stable across runs and Python versions (unlike hash()).
    return zlib.crc32(value.lower().encode()) % 8 == 0


def _word(rng: random.Random, n_syll: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n_syll)]
    return "".join(parts).capitalize()


@cache
def entity_pools(split: str) -> dict[str, tuple[str, ...]]:
    """Name/city/brand pools for a split; train and held-out pools never share a value."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    rng = random.Random(424242)  # one universe of candidates, then a hash split
    cand = {
        "first": {_word(rng, rng.choice((1, 2, 2))) for _ in range(4000)},
        "last": {_word(rng, rng.choice((1, 2, 2))) for _ in range(4000)},
        "city": {_word(rng, rng.choice((1, 2))) + rng.choice(_CITY_SUFFIX) for _ in range(3000)},
        "brand": {_word(rng, 2) for _ in range(3000)},
    }
    # A first name may not also be a last name or a brand, so "unseen" holds across fields too.
    cand["last"] -= cand["first"]
    cand["brand"] -= cand["first"] | cand["last"]
    want = split == "heldout"
    return {k: tuple(sorted(v for v in vals if _is_heldout(v) == want)) for k, vals in cand.items()}


# --- labeling -----------------------------------------------------------------------------------------
_CATEGORY_CUES = {
    "billing": ("I was charged twice for my {product} order.", "My invoice shows the wrong amount.",
                "The payment for the {product} went through two times.", "Why did my card get billed again?",
                "The price on my bill does not match the {product} I bought.",
                "I need a corrected invoice for last month."),
    "technical": ("The app crashes every time I open it.",
                  "I get an error when I try to log the {product} in.",
                  "The website keeps timing out on the checkout page.", "Your software stopped syncing.",
                  "The {product} firmware update failed halfway.", "Nothing loads after the latest update."),
    "account": ("I cannot reset my password.", "Please change the email address on my account.",
                "My account was locked after two login attempts.", "I want to delete my profile.",
                "How do I add a second user to my account?", "My username was changed without my consent."),
    "shipping": ("My {product} package never arrived.", "The courier left my parcel at the wrong address.",
                 "Tracking has not updated in a week.", "Can I change the delivery address for my order?",
                 "The box with my {product} arrived crushed.", "Delivery was promised for Monday."),
    "product": ("The {product} stopped working after two days.", "One part of the {product} is missing.",
                "The {product} is smaller than described.", "The color of the {product} is not as shown.",
                "The {product} makes a loud noise.", "Does the {product} come with a warranty?"),
}
_PRIORITY_CUES = {
    "low": ("No rush on this one.", "Just a minor thing.", "Whenever convenient is fine.",
            "This is only a small cosmetic issue.", "It can wait until next month."),
    "medium": ("A reply this week would be appreciated.", "It is annoying but I have a workaround.",
               "Please check it in the next few days.", "It is not blocking me yet."),
    "high": ("Please look into this today.", "This is affecting several of my customers.",
             "I need this resolved soon.", "It is turning into a serious problem."),
    "urgent": ("This is an emergency.", "We are completely blocked right now.",
               "Please treat this as urgent.", "Everything is down for our whole team."),
}
_SENTIMENT_CUES = {
    "positive": ("Thanks so much for the great support!", "I really love your service otherwise.",
                 "Your team has always been wonderful.", "Happy with everything else, great job."),
    "neutral": ("Let me know what you need from me.", "Here are the details.",
                "I am writing to report this.", "Please advise on next steps."),
    "negative": ("I am really frustrated.", "This is unacceptable.", "I am very disappointed.",
                 "Honestly this is the worst experience I have had."),
}
_GREETINGS = ("Hello,", "Hi team,", "Dear support,", "Hey,", "Good morning,", "")
_SIGNOFFS = ("Regards, {name}", "Thanks, {name}", "- {name}", "Best, {name} from {city}", "{name}",
             "Cheers, {name}")


_FRESH_SYLLABLES = {"first": (1, 2, 2), "last": (1, 2, 2), "city": (1, 2), "brand": (2,)}


def _entity(rng: random.Random, pools: dict[str, tuple[str, ...]] | None, kind: str) -> str:
    """A `kind` value: from the held-out pool, or (pools=None, training) a fresh train-hashed value."""
    if pools is not None:
        return rng.choice(pools[kind])
    while True:
        value = _word(rng, rng.choice(_FRESH_SYLLABLES[kind]))
        if kind == "city":
            value += rng.choice(_CITY_SUFFIX)
        if not _is_heldout(value):
            return value


def _product(rng: random.Random, pools: dict[str, tuple[str, ...]] | None) -> str:
    return f"{_entity(rng, pools, 'brand')} {rng.choice(_ITEMS)}"


def _person(rng: random.Random, pools: dict[str, tuple[str, ...]] | None) -> str:
    return f"{_entity(rng, pools, 'first')} {_entity(rng, pools, 'last')}"


def _labeling(rng: random.Random, pools: dict[str, tuple[str, ...]] | None) -> Example:
    target = {"category": rng.choice(CATEGORIES), "priority": rng.choice(PRIORITIES),
              "sentiment": rng.choice(SENTIMENTS)}
    fill = {"product": _product(rng, pools), "name": _person(rng, pools), "city": _entity(rng, pools, "city")}
    body = [rng.choice(_CATEGORY_CUES[target["category"]]), rng.choice(_PRIORITY_CUES[target["priority"]]),
            rng.choice(_SENTIMENT_CUES[target["sentiment"]])]
    # The category sentence comes first; the other two cues appear in either order.
    if rng.random() < 0.5:
        body[1], body[2] = body[2], body[1]
    text = " ".join(body).format(**fill)
    if rng.random() < 0.5:  # e-mail style with a subject and greeting, else a chat one-liner
        subject = rng.choice(("Subject: help needed", "Subject: question", "Subject: issue with order",
                              f"Subject: {fill['product']}"))
        text = "\n".join(p for p in (subject, rng.choice(_GREETINGS), text) if p)
    text += "\n" + rng.choice(_SIGNOFFS).format(**fill)
    return Example("labeling", f"{INSTRUCTIONS['labeling']}\n\n{text}", target)


# --- extraction ---------------------------------------------------------------------------------------
_NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                 "twelve")
_STATUS_CUES = {
    "delivered": ("it arrived today", "it was delivered on time", "the parcel reached me yesterday"),
    "in_transit": ("it is still on its way", "tracking shows it in transit", "it has shipped and is moving"),
    "delayed": ("the delivery is late", "it is running behind schedule", "the shipment was delayed"),
    "cancelled": ("I cancelled it yesterday", "the order was cancelled", "it got cancelled by the shop"),
    "returned": ("I sent it back last week", "I already returned it", "the return was dropped off"),
}
_ID_FORMS = ("order #{oid}", "order {oid}", "order number {oid}", "order ID {oid}")
_EXTRACTION_TEMPLATES = (
    "Hi, this is {name} from {city}. I ordered {qty} {product} ({idf}) and {status}.",
    "{name} here, writing from {city}. About {idf}: {qty} {product}, {status}.",
    "Hello! My {idf} for {qty} {product} - {status}. Name: {name}, city: {city}.",
    "Regarding {idf}: {status}. It was {qty} {product}. {name}, {city}",
    "From: {name} ({city})\n{idf}, quantity {qty}, item {product}. Update: {status}.",
)


def _extraction(rng: random.Random, pools: dict[str, tuple[str, ...]] | None) -> Example:
    quantity = rng.randint(1, 12)
    target = {"name": _person(rng, pools), "city": _entity(rng, pools, "city"),
              "order_id": rng.randint(10000, 99999), "product": _product(rng, pools),
              "quantity": quantity, "status": rng.choice(STATUSES)}
    qty = _NUMBER_WORDS[quantity - 1] if rng.random() < 0.5 else str(quantity)
    status = rng.choice(_STATUS_CUES[target["status"]])
    text = rng.choice(_EXTRACTION_TEMPLATES).format(
        name=target["name"], city=target["city"], product=target["product"], qty=qty, status=status,
        idf=rng.choice(_ID_FORMS).format(oid=target["order_id"]))
    return Example("extraction", f"{INSTRUCTIONS['extraction']}\n\n{text}", target)


# --- public API ---------------------------------------------------------------------------------------
def example(split: str, index: int, family: str | None = None, seed: int = 0) -> Example:
    """The `index`-th example of `split` (a pure function). `family=None` alternates the two families."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    pools = entity_pools(split) if split == "heldout" else None  # training makes fresh values
    rng = random.Random(SPLIT_SEED[split] + 1_000_000 * seed + index)
    fam = family or FAMILIES[index % 2]
    if fam == "labeling":
        return _labeling(rng, pools)
    if fam == "extraction":
        return _extraction(rng, pools)
    raise ValueError(f"unknown family {fam!r}; expected one of {FAMILIES}")


def dataset(split: str, n: int, family: str | None = None, seed: int = 0, start: int = 0) -> list[Example]:
    """`n` consecutive examples of a split, deterministic in (split, seed, start)."""
    return [example(split, start + i, family, seed) for i in range(n)]


def tokenizer_corpus(n: int = 6000) -> list[str]:
    """Training-split texts (prompts and answers) for fitting the tokenizer; never touches held-out pools."""
    out: list[str] = []
    for ex in dataset("train", n, seed=99):
        out += [ex.prompt, ex.answer]
    return out


if __name__ == "__main__":
    for ex in dataset("train", 4) + dataset("heldout", 2):
        print(ex.family, "|", ex.prompt.replace("\n", " / "), "->", ex.answer)
