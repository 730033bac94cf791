"""Writes labeler/data/example/support: customer-support messages tagged with every topic they raise
(a multi_label example written for this project). Deterministic: run it again and nothing changes.

Messages are put together from hand-written sentences per topic, in varied order, with openers and
closers, and with decoys: a sentence that names a topic's words without raising it ("the invoice was
fine, but..."), so a model that matches words is wrong where one that reads is right.

    python tests/data/make_support_tickets.py
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "labeler" / "data" / "example" / "support"
LABELS = ["billing", "shipping", "defect", "account", "returns"]

SAY = {
    "billing": [
        "I was charged twice for the same order.", "My card was billed {n} dollars more than the price shown.",
        "The invoice lists an item I never bought.", "Why did my subscription renew at a higher price?",
        "I see a charge from you that I don't recognise.", "The discount code was not applied at checkout, so I paid full price.",
        "Please send me a corrected invoice for my company.", "The payment went through but the order says unpaid.",
        "You took the money before the item was even in stock.", "My bank shows a pending charge from last week that never cleared.",
        "I was billed in euros although I live in Canada.", "The tax on my receipt looks wrong.",
        "Can you split the payment over two cards?", "Your site charged me a fee nobody mentioned.",
    ],
    "shipping": [
        "My parcel has not arrived after {n} days.", "Tracking has said 'in transit' for a week.",
        "The courier left the box at the wrong address.", "Delivery was promised for Monday and it is now Friday.",
        "The package came with only half of my order.", "Can you ship to a post office box?",
        "The driver never rang, and the note says nobody was home.", "How much longer will delivery to Norway take?",
        "The tracking number you sent does not work.", "My order is stuck at customs.",
        "The box arrived soaked through from the rain.", "I paid for express shipping and it came by normal post.",
        "Could you change the delivery address before it leaves?", "The parcel was marked delivered but it is not here.",
    ],
    "defect": [
        "The kettle stopped heating after {n} uses.", "The zipper broke the first time I closed it.",
        "The screen flickers and then goes black.", "One of the legs was cracked straight out of the box.",
        "The charger gets very hot and the phone does not charge.", "The left earbud makes no sound at all.",
        "The seams of the jacket are coming apart already.", "The blender smells of burning plastic when it runs.",
        "The app keeps crashing on the device you sold me.", "The paint is peeling off the frame.",
        "The lid does not seal, so the bottle leaks.", "The battery lasts ten minutes instead of ten hours.",
        "The drawer rails are bent and the drawer will not close.", "Half of the buttons on the remote do nothing.",
    ],
    "account": [
        "I cannot log in: the password reset email never comes.", "Please delete my account and my data.",
        "Someone changed the email address on my account.", "My account is locked after too many attempts.",
        "How do I change the name on my profile?", "I have two accounts and want to merge them.",
        "The two-factor code is not accepted.", "Your site keeps logging me out every few minutes.",
        "I want to stop receiving your newsletter.", "My saved addresses disappeared from my profile.",
        "I never signed up, but I keep getting your account emails.", "How do I update my phone number on the account?",
    ],
    "returns": [
        "I would like to return the shoes, they are too small.", "How do I send this back for an exchange?",
        "I returned the lamp {n} days ago and have no refund yet.", "Can I exchange the blue one for the grey one?",
        "Please send me a return label.", "The return window closed while I was in hospital; can I still return it?",
        "I sent the parcel back; when will the refund reach my card?", "Is the return shipping free?",
        "I want my money back for the coat.", "The shop refused my return although I have the receipt.",
        "Can I return a gift without the giver knowing?", "I'd like to swap the size M for an L.",
    ],
}
# Sentences that use a topic's words without raising it.
DECOY = {
    "billing": ["The payment itself went fine.", "The invoice was correct, by the way.", "Price was fair."],
    "shipping": ["Delivery was quick, no complaints there.", "It arrived on time.", "The courier was friendly."],
    "defect": ["The product itself works well.", "Quality is fine.", "Nothing is broken."],
    "account": ["I'm logged in without trouble.", "My account is fine.", "I used my usual login."],
    "returns": ["I don't want to return it.", "No need for a refund.", "I'm keeping it."],
}
NONE = [
    "What are your opening hours on Sundays?", "Do you sell gift cards?", "Just wanted to say thanks, great service!",
    "Will the red version be back in stock?", "Do you have a shop in Lyon?", "Is this model compatible with the older one?",
    "Can you recommend a kettle for a small kitchen?", "Love the new catalogue.", "Are you hiring for the summer?",
    "Do you offer student discounts?", "Which size should I pick if I am usually between M and L?",
    "Is the wood treated or raw?", "How loud is the blender compared to the last model?",
]
OPEN = ["", "", "Hello,", "Hi there.", "Good morning,", "Dear support,", "Hey.", "Hi, order {o} here."]
CLOSE = ["", "", "Thanks.", "Please help.", "Thank you in advance.", "Regards, {name}.", "This is really annoying.",
         "Hoping to hear back soon."]
NAMES = ["Ana", "Ben", "Chloe", "Dev", "Emma", "Femi", "Gus", "Hana", "Ivo", "Jia", "Kai", "Lena"]


def ticket(rng: random.Random) -> tuple[str, list[str]]:
    size = rng.choices([0, 1, 2, 3], weights=[12, 50, 30, 8])[0]
    topics = sorted(rng.sample(LABELS, size), key=LABELS.index)
    parts = [rng.choice(SAY[t]) for t in topics] or [rng.choice(NONE)]
    if rng.random() < 0.2:
        decoy = rng.choice([t for t in LABELS if t not in topics])
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(DECOY[decoy]))
    rng.shuffle(parts)
    fill = {"n": rng.choice([3, 5, 9, 12, 20]), "o": f"#{rng.randrange(10000, 99999)}", "name": rng.choice(NAMES)}
    text = " ".join(p for p in [rng.choice(OPEN), *parts, rng.choice(CLOSE)] if p).format(**fill)
    return text, topics


def main(n: int = 400, seed: int = 7) -> None:
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        text, topics = ticket(rng)
        if text not in seen:
            seen.add(text)
            rows.append((f"t{len(rows) + 1:03d}", text, "|".join(topics)))
    OUT.mkdir(parents=True, exist_ok=True)
    splits = ["examples"] * 20 + ["calibration"] * 200 + ["honeypot"] * 30  # then 150 new items, answered in answers.csv
    with (OUT / "items.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("id", "text"), *[(i, t) for i, t, _ in rows]])
    with (OUT / "gold.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("id", "labels", "split"), *[(i, lab, sp) for (i, _, lab), sp in zip(rows, splits)]])
    with (OUT / "answers.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("id", "labels"), *[(i, lab) for i, _, lab in rows[len(splits):]]])


if __name__ == "__main__":
    main()
