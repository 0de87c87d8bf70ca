"""Write general_tasks.jsonl: a few hundred multiple-choice items of general knowledge and language, written by peftlab.

`peftlab compare --general-tasks` scores every run on them, the lm-evaluation-harness way (each
choice's log-likelihood after the question; the most likely choice is the answer), and reports
the change in accuracy against the base model: forgetting as users know it. The items are facts
and word forms (no copyrighted text), drawn deterministically; rerun with
`python -m peftlab.compare.make_general_tasks`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("general_tasks.jsonl")
SOURCE = "written for peftlab (python -m peftlab.compare.make_general_tasks)"

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon", "Japan": "Tokyo",
    "China": "Beijing", "India": "New Delhi", "Russia": "Moscow", "Canada": "Ottawa", "Australia": "Canberra",
    "Brazil": "Brasilia", "Argentina": "Buenos Aires", "Egypt": "Cairo", "Kenya": "Nairobi", "Mexico": "Mexico City",
    "Peru": "Lima", "Chile": "Santiago", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Denmark": "Copenhagen", "Poland": "Warsaw", "Greece": "Athens", "Turkey": "Ankara", "Ireland": "Dublin",
    "Austria": "Vienna", "Hungary": "Budapest", "the Czech Republic": "Prague", "the Netherlands": "Amsterdam",
    "Belgium": "Brussels", "Switzerland": "Bern", "South Korea": "Seoul", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "Indonesia": "Jakarta", "the Philippines": "Manila", "Iran": "Tehran", "Iraq": "Baghdad", "Saudi Arabia": "Riyadh",
    "Nigeria": "Abuja", "Ghana": "Accra", "Ethiopia": "Addis Ababa", "Morocco": "Rabat", "Cuba": "Havana",
    "Colombia": "Bogota", "Venezuela": "Caracas", "New Zealand": "Wellington", "Ukraine": "Kyiv", "Romania": "Bucharest",
    "Bulgaria": "Sofia", "Serbia": "Belgrade", "Croatia": "Zagreb", "Iceland": "Reykjavik", "Pakistan": "Islamabad",
    "Bangladesh": "Dhaka", "Nepal": "Kathmandu", "Afghanistan": "Kabul", "Syria": "Damascus", "Lebanon": "Beirut",
}
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad", "open": "closed", "early": "late",
    "rich": "poor", "strong": "weak", "full": "empty", "hard": "soft", "high": "low", "long": "short", "young": "old",
    "wet": "dry", "loud": "quiet", "thick": "thin", "clean": "dirty", "easy": "difficult", "cheap": "expensive",
    "near": "far", "first": "last", "inside": "outside", "push": "pull", "win": "lose", "buy": "sell", "arrive": "leave",
    "remember": "forget", "true": "false", "love": "hate", "day": "night", "north": "south", "east": "west",
    "friend": "enemy", "begin": "end", "question": "answer", "above": "below", "before": "after", "always": "never",
    "safe": "dangerous", "awake": "asleep", "alive": "dead", "front": "back", "left": "right", "top": "bottom",
    "more": "less", "heavy": "light", "wide": "narrow", "sweet": "sour", "accept": "refuse",
}
PLURALS = {
    "child": "children", "mouse": "mice", "foot": "feet", "tooth": "teeth", "man": "men", "woman": "women",
    "goose": "geese", "person": "people", "cat": "cats", "box": "boxes", "city": "cities", "knife": "knives",
    "leaf": "leaves", "wolf": "wolves", "baby": "babies", "bus": "buses", "dish": "dishes", "potato": "potatoes",
    "hero": "heroes", "sheep": "sheep", "fish": "fish", "deer": "deer", "ox": "oxen", "cactus": "cacti",
    "analysis": "analyses", "crisis": "crises", "wife": "wives", "life": "lives", "toy": "toys", "key": "keys",
}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def item(task: str, question: str, answer: str, distractors: list[str], rng: random.Random) -> dict:
    distractors = [d for d in dict.fromkeys(distractors) if d != answer]
    assert len(distractors) >= 3, (question, distractors)
    choices = [answer, *distractors[:3]]
    rng.shuffle(choices)
    return {"task": task, "question": question, "choices": choices, "answer": choices.index(answer), "source": SOURCE}


def others(pool: list[str], answer: str, rng: random.Random, count: int = 3) -> list[str]:
    return rng.sample([value for value in pool if value != answer], count)


def near(value: int, rng: random.Random, offsets: tuple[int, ...] = (-10, -2, -1, 1, 2, 10, 3, -3)) -> list[str]:
    """Wrong answers close to the right one (never negative), in a random order."""
    return [str(value + d) for d in rng.sample(offsets, len(offsets)) if value + d >= 0]


def arithmetic(rng: random.Random) -> list[dict]:
    items = []
    for _ in range(30):
        a, b = rng.randint(11, 89), rng.randint(11, 89)
        items.append(item("arithmetic", f"What is {a} plus {b}?", str(a + b), near(a + b, rng), rng))
    for _ in range(25):
        a, b = sorted((rng.randint(11, 99), rng.randint(11, 99)), reverse=True)
        items.append(item("arithmetic", f"What is {a} minus {b}?", str(a - b), near(a - b, rng), rng))
    for _ in range(25):
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        items.append(item("arithmetic", f"What is {a} times {b}?", str(a * b), near(a * b, rng, (-a, a, -b, b, 1, -1, 2, -2)), rng))
    return items


def sequences() -> list[tuple[str, str, list[str]]]:
    found = []
    for names, kind in ((DAYS, "day of the week"), (MONTHS, "month")):
        for i, name in enumerate(names):
            found.append((f"Which {kind} comes after {name}?", names[(i + 1) % len(names)], names))
            found.append((f"Which {kind} comes before {name}?", names[i - 1], names))
    return found


def wrong_plurals(word: str, right: str) -> list[str]:
    forms = [word + "s", word + "es", word[:-1] + "ies", right + "s", word + "en", word]
    return list(dict.fromkeys(form for form in forms if form != right))


def build() -> list[dict]:
    rng = random.Random(20261207)
    items = arithmetic(rng)
    countries, cities = list(CAPITALS), list(CAPITALS.values())
    items += [item("capitals", f"What is the capital of {country}?", CAPITALS[country], others(cities, CAPITALS[country], rng), rng)
              for country in countries]
    words = list(OPPOSITES.values())
    items += [item("opposites", f"What is the opposite of \"{word}\"?", OPPOSITES[word], others(words, OPPOSITES[word], rng), rng)
              for word in OPPOSITES]
    items += [item("sequences", question, answer, others(pool, answer, rng), rng) for question, answer, pool in sequences()]
    items += [item("plurals", f"What is the plural of \"{word}\"?", right, rng.sample(wrong_plurals(word, right), 3), rng)
              for word, right in PLURALS.items()]
    return items


def main() -> None:
    items = build()
    OUT.write_text("".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in items), encoding="utf-8")
    print(f"{len(items)} items -> {OUT}")


if __name__ == "__main__":
    main()
