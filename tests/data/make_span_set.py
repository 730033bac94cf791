"""Writes labeler/data/example/spans: customer messages with the people, products, places and dates they
name marked as character spans (a spans example written for this project). Deterministic: run it again
and nothing changes.

Messages are put together from hand-written sentences with slots, filled from name lists where some
names are both a person and a place (Jordan, Florence, Victoria...) and only the sentence tells which;
with decoys the guideline rules out (a product's plain noun, "Black Friday", "next week"), so a tagger
that matches capitals is wrong where one that reads context is right.

    python tests/data/make_span_set.py
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "labeler" / "data" / "example" / "spans"
LABELS = ["person", "product", "place", "date"]

BOTH = ["Jordan", "Florence", "Victoria", "Austin", "Sydney", "Georgia", "Chelsea", "Adelaide", "Charlotte", "Regina",
        "Paris", "Lincoln", "Orlando", "Marion"]
FIRST = ["Maria", "Tom", "Priya", "Lena", "Yuki", "Sam", "Ines", "Oliver", "Fatima", "Hugo", "Ana", "Kofi", "Ravi",
         "Elsa", "Marco", "Chen", "Nadia", "Pavel", "Grace", "Luis", "Amara", "Jonas", "Mei", "Omar", "Zoe", "Ivan",
         "Leila", "Dmitri", "Rosa", "Tariq", "May", "Bo", "Kai", "Eva", "Noor", "Felix", "Hana", "Joao", "Ada", "Rui"]
LAST = ["Lopez", "Shah", "Okafor", "Brandt", "Tanaka", "Grant", "Martin", "Mensah", "Novak", "Berg", "Kim",
        "Wei", "Haddad", "Silva", "Kowalski", "Dubois", "Rossi", "Nguyen", "Park", "Moreau", "Olsen", "Costa",
        "Fischer", "Ibrahim", "Walsh", "Petrov", "Sato", "Ortega", "Baker", "Young"]
TITLES = ["Dr.", "Mr.", "Ms.", "Mrs.", "Prof."]
BRANDS = ["Nimbus", "Orbit", "AirLite", "Breeze", "Quill", "Halo", "Terra", "Pulse", "Vela", "Corto", "Lumen",
          "Aria", "Stride", "Kappa", "Nova", "Drift", "Ember", "Glide", "Polar", "Zephyr", "Sol", "Mako"]
MODELS = ["Kettle", "Lamp 2", "Pro", "X3 fan", "tablet", "Buds", "Blender 500", "Watch", "chair", "Grinder",
          "4K projector", "Speaker", "Runner shoes", "Drill", "Phone 12", "Backpack", "Toaster", "Mouse", "Cooler",
          "Heater", "Max", "Mini", "S", "One"]
CITIES = ["Lisbon", "Leeds", "Toronto", "Munich", "Osaka", "Cork", "Denver", "Lyon", "Porto", "Bergen", "Gdansk",
          "Nairobi", "Perth", "Seville", "Utrecht", "Quebec", "San Diego", "Den Haag", "St. Albans", "New Delhi",
          "Cape Town", "Bilbao", "Turin", "Graz", "Malmo", "Tartu", "Accra", "Hobart", "Split", "Nice", "Bath",
          "Reading"]
DATES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"] + [
    f"{d} {m}" for d in (1, 3, 9, 12, 14, 21, 28, 30) for m in ("March", "June", "October", "May", "December", "July")] + [
    f"{m} {d}" for d in (2, 5, 11, 19, 24) for m in ("February", "April", "May", "August", "November")] + [
    "the 14th", "the 3rd", "2024-05-17", "11/06"]


def person(rng: random.Random) -> str:
    form = rng.random()
    if form < 0.15:
        return rng.choice(BOTH)
    if form < 0.5:
        return rng.choice(FIRST)
    if form < 0.85:
        return f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    return f"{rng.choice(TITLES)} {rng.choice(LAST)}"


NAMES = {
    "person": person,
    "product": lambda rng: f"{rng.choice(BRANDS)} {rng.choice(MODELS)}",
    "place": lambda rng: rng.choice(BOTH) if rng.random() < 0.15 else rng.choice(CITIES),
    "date": lambda rng: rng.choice(DATES),
}

# {type} slots become spans; {other:...} text stays plain. Each sentence, with the types it names.
SENTENCES = [
    "My name is {person} and I ordered the {product} on {date}.",
    "The {product} arrived in {place} completely broken.",
    "{person} from our office in {place} placed the order.",
    "I was promised delivery by {date}, but nothing has come.",
    "Can you send a replacement {product} to our store in {place}?",
    "Please ask {person} to call me back before {date}.",
    "We moved from {place} to {place} last month, so update the address.",
    "The courier in {place} says the parcel left on {date}.",
    "Your colleague {person} told me the {product} would be refunded.",
    "I bought two of the {product} for my daughter {person}.",
    "The {product} stopped working on {date}.",
    "I live in {place} and the shop there had no stock.",
    "Thanks, {person}, the new {product} works fine.",
    "Is the {product} sold in {place} as well?",
    "On {date} I spoke to {person} about this.",
    "Send it to {person}, care of the depot in {place}.",
    "The warranty for my {product} ends on {date}.",
    "{place} store, {date}: bought a {product}, it broke.",
    "{person} here again about the {product}.",
    "may I ask why my order to {place} was cancelled?",
    "I told {person} on the phone that {person} would collect it.",
    "It was delivered to {place} instead of {place}.",
    "Do you have the {product} or the {product} in stock?",
    "We are based in {place}; {person} handles returns.",
]
DECOYS = [  # what the guideline says is not a span
    "The kettle itself is fine, it is the lid.",
    "I bought it in the Black Friday sale.",
    "Next week would suit me better.",
    "Please reply as soon as you can.",
    "The box was damaged and the fan inside too.",
    "My phone number has changed.",
    "I have been a customer for years.",
    "Customer service was helpful last time.",
    "May I ask for an update?",
    "I will be away in May.",
    "Reading the manual did not help.",
    "A nice surprise, at least the box was fine.",
    "The Pro version would have been better.",
]
OPENERS = ["Hello,", "Hi team,", "Dear support,", "Good morning.", ""]


def sentence(rng: random.Random) -> tuple[str, list[tuple[int, int, str]]]:
    template = rng.choice(SENTENCES)
    text, spans, rest = "", [], template
    while "{" in rest:
        before, _, after = rest.partition("{")
        kind, _, rest = after.partition("}")
        text += before
        value = NAMES[kind](rng)
        spans.append((len(text), len(text) + len(value), kind))
        text += value
    return text + rest, spans


def message(rng: random.Random) -> tuple[str, list[tuple[int, int, str]]]:
    parts: list[tuple[str, list]] = []
    opener = rng.choice(OPENERS)
    if opener:
        parts.append((opener, []))
    for _ in range(rng.choice([1, 1, 2, 2, 3])):
        parts.append(sentence(rng) if rng.random() < 0.8 else (rng.choice(DECOYS), []))
    if rng.random() < 0.3:
        parts.append((rng.choice(DECOYS), []))
    text, spans = "", []
    for part, found in parts:
        if text:
            text += " "
        spans += [(s + len(text), e + len(text), kind) for s, e, kind in found]
        text += part
    if rng.random() < 0.15:  # typed in a hurry: all lower case (the spans keep their offsets)
        text = text.lower()
    return text, spans


def as_json(spans) -> list[dict]:
    return [{"start": s, "end": e, "label": kind} for s, e, kind in spans]


def main(n: int = 500, seed: int = 11) -> None:
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        text, spans = message(rng)
        if text not in seen:
            seen.add(text)
            rows.append((f"m{len(rows) + 1:03d}", text, spans))
    OUT.mkdir(parents=True, exist_ok=True)
    splits = ["examples"] * 20 + ["calibration"] * 250 + ["honeypot"] * 30  # then 200 new items, in answers.jsonl
    with (OUT / "items.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("id", "text"), *[(i, t) for i, t, _ in rows]])
    with (OUT / "gold.jsonl").open("w") as f:
        for (i, _, spans), split in zip(rows, splits):
            f.write(json.dumps({"id": i, "spans": as_json(spans), "split": split}) + "\n")
    with (OUT / "answers.jsonl").open("w") as f:
        for i, _, spans in rows[len(splits):]:
            f.write(json.dumps({"id": i, "spans": as_json(spans)}) + "\n")


if __name__ == "__main__":
    main()
