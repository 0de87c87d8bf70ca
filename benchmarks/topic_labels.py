"""DialogSum's topics as a label task: each free-text topic mapped to one of seven coarse classes by keyword rules.

DialogSum's `topic` is nearly unique per dialogue (455 distinct topics in the 500 training rows; the most common,
"job interview", has 11), so as labels it cannot be learned or scored. These rules group it, deterministically:
the first class (in the order below) with a keyword that starts a word of the topic wins; a topic that matches
no keyword is `everyday` (small talk, family, hobbies, weather, news). Writes `train.jsonl` (`dialogue`, `label`,
`topic`) from the training rows' `topic` and `test.jsonl` from the test rows' `topic1`, and prints the class counts.

    python benchmarks/topic_labels.py [--data ../shared/data/dialogsum] [--output /work/runs/topics/data]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum"

# class -> keywords; a keyword matches at the start of a word of the lower-cased topic ("shop" matches "shopping"),
# a keyword ending in "$" only as a whole word ("car$" does not match "career" or "card")
CLASSES: dict[str, tuple[str, ...]] = {
    "health": ("doctor", "sick", "ill$", "illness", "hospital", "medic", "blood", "patient", "pain", "toothache", "stomach",
               "cancer", "allerg", "cold$", "exercise", "fit$", "smoking", "diet", "health", "injur", "hurt", "x-ray", "pregnan",
               "chicken pox", "weight", "ambulance", "prescription", "running", "tired", "disease", "dentist", "drug"),
    "food": ("food", "restaurant", "restuarant", "dinner", "breakfast", "lunch", "meal", "dish", "soup", "dessert", "drink",
             "beer", "tea$", "coffee", "espresso", "hotpot", "snack", "catering", "picnic", "steak", "cook", "menu", "wine"),
    "work": ("job", "interview", "work", "office", "boss", "salary", "career", "business", "company", "colleague", "meeting",
             "promotion", "position", "employ", "negotiat", "contract", "agreement", "shipment", "timesheet", "presentation",
             "plant visit", "resign", "staff", "trademark", "sole agency", "trial order", "auditing", "accountant"),
    "travel": ("trip", "travel", "vacation", "holiday", "hotel", "flight", "plane", "airplane", "airport", "train", "bus$",
               "taxi", "car$", "cars$", "driving", "traffic", "transport", "direction", "the way", "stop$", "luggage", "bags",
               "passport", "tour", "room reservation", "book a room", "reserve a room", "check in", "journey", "getaway",
               "commuting", "lift", "parking", "bike", "scooter", "beach", "camping", "visit london", "enter a country",
               "rush", "vehicle", "ride"),
    "shopping": ("shop", "buy", "purchase", "bargain", "haggl", "price", "bill", "bank", "money", "account", "deposit", "loan",
                 "pay", "credit card", "receipt", "rent", "market", "store", "supermarket", "warranty", "after-sales", "cash",
                 "withdraw", "gift", "present$", "dress", "shoes", "clothes", "laptop", "camera", "order a delivery",
                 "delivery", "subscription", "refrigerator", "furniture", "apartment", "flat", "house$"),
    "school": ("school", "class", "course", "exam", "study", "learn", "teacher", "teach", "university", "major", "subject",
               "lesson", "library", "graduat", "homework", "enrol", "registration", "student", "campus", "cheating", "books$"),
}
OTHER = "everyday"
LABELS = (*CLASSES, OTHER)
PATTERNS = {label: [re.compile(r"\b" + (k[:-1] + r"\b" if k.endswith("$") else re.escape(k))) for k in keywords]
            for label, keywords in CLASSES.items()}


def coarse_label(topic: str) -> str:
    text = " ".join(topic.lower().split())
    return next((label for label, patterns in PATTERNS.items() if any(p.search(text) for p in patterns)), OTHER)


def write_split(source: Path, target: Path, topic_column: str) -> Counter:
    counts: Counter = Counter()
    with source.open() as rows, target.open("w") as out:
        for line in rows:
            row = json.loads(line)
            label = coarse_label(row[topic_column])
            counts[label] += 1
            out.write(json.dumps({"dialogue": row["dialogue"], "label": label, "topic": row[topic_column]}) + "\n")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DIALOGSUM), help="the DialogSum folder (train.jsonl, test.jsonl)")
    parser.add_argument("--output", default=str(ROOT / "runs" / "topics" / "data"), help="where the label files go (runs/ is not tracked)")
    parser.add_argument("--show", type=int, default=0, help="also print N topics of each class")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "train.jsonl").is_file() or not (data / "test.jsonl").is_file():
        print(f"skipped: DialogSum not found at {data} (train.jsonl and test.jsonl; it lives in ../shared/data/dialogsum beside the repository)")
        return 0
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for split, column in (("train", "topic"), ("test", "topic1")):
        counts = write_split(data / f"{split}.jsonl", out / f"{split}.jsonl", column)
        total = sum(counts.values())
        print(f"{split} ({column}, {total} rows): " + ", ".join(f"{label} {counts[label]} ({100 * counts[label] / total:.0f}%)" for label in LABELS))
    if args.show:
        topics = [json.loads(line)["topic"] for line in (data / "train.jsonl").open()]
        for label in LABELS:
            print(f"{label}: " + "; ".join([t for t in topics if coarse_label(t) == label][:args.show]))
    print(f"wrote {out / 'train.jsonl'} and {out / 'test.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
