"""Score the own-words readers of :mod:`bot.answers` on a YAML set of cases, per category.

    python -m tests.answers.evaluate tests/answers/own_words.yaml [tests/answers/own_words_holdout.yaml] [--failures]

The file format is the one of tests/answers/own_words.yaml (categories numbers, yes_no, callup, minutes,
dates, townships). A call-up case counts as right when the answer, the ETA (if given) and whether it is
recorded or asked back all match; a township case when the name and, if given, ``sure`` match."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from bot import answers as A


@dataclass
class Score:
    right: int = 0
    total: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, ok: bool, what: str) -> None:
        self.total += 1
        self.right += ok
        if not ok:
            self.failures.append(what)


def _as_date(v: Any) -> date | None:
    return None if v is None else (v if isinstance(v, date) else date.fromisoformat(str(v)))


def check(category: str, case: Any, context: dict[str, Any]) -> tuple[bool, str]:
    """(right?, a line describing the case and what came back)."""
    if category == "numbers":
        text, want = case
        got = A.parse_number(str(text))
        value = None if got is None else got.value
        return (value == want if want is not None else got is None), f"{text!r}: want {want}, got {value}"
    if category == "yes_no":
        text, want = case
        want = {True: "yes", False: "no"}.get(want, want)  # YAML 1.1 reads a bare yes/no as a boolean
        got = A.parse_yes_no(str(text))
        word = {True: "yes", False: "no", None: None}[got]
        return word == want, f"{text!r}: want {want}, got {word}"
    if category == "minutes":
        text, want = case
        got = A.parse_minutes(str(text))
        return got == want, f"{text!r}: want {want}, got {got}"
    if category == "callup":
        text, want = str(case["text"]), case.get("answer")
        want = {True: "yes", False: "no"}.get(want, want)
        r = A.parse_callup_answer(text)
        if want is None:
            ok = r is None or r.confidence < A.CONFIRM
            return ok, f"{text!r}: want no answer, got {r}"
        ok = r is not None and r.answer == want and r.confidence >= A.CONFIRM
        if ok and "eta" in case:
            ok = r.eta_min == case["eta"]
        if ok:
            ok = r.recordable == case.get("record", True)
        return bool(ok), f"{text!r}: want {want} eta={case.get('eta')} record={case.get('record', True)}, got {r}"
    if category == "dates":
        text, want = case
        got = A.parse_end_date(str(text), context["today"])
        return got == _as_date(want), f"{text!r}: want {want}, got {got}"
    if category == "date_phrases":
        text, want = str(case["text"]), _as_date(case.get("day"))
        p = A.parse_date_phrase(text, context["today"])
        ok = (p is None) if want is None else (p is not None and p.day == want
                                               and (case.get("days") is None or p.days == case["days"]))
        return ok, f"{text!r} ({case.get('kind')}): want {want} days={case.get('days')}, got {p}"
    if category == "townships":
        text, want = str(case["text"]), case.get("expect")
        m = A.match_township(text, context["names"])
        if want is None:  # nothing to store: no match, or a tie the bot asks about
            return m is None or bool(m.alternatives), f"{text!r}: want none, got {m}"
        ok = m is not None and m.name == want and ("sure" not in case or m.sure == case["sure"])
        return ok, f"{text!r}: want {want} sure={case.get('sure')}, got {m}"
    raise ValueError(f"unknown category {category!r}")


def _from_holdout(doc: dict[str, Any]) -> dict[str, Any]:
    """The held-out file's layout (branch nludata: reference / callup_answers / yes_no / dates with the
    day the words name / townships with list + mentions) in this file's terms. Its dates name the day the
    words point at (三天 = reference + 3, 到X / X以后 / X之前 = X), which is :class:`bot.answers.DatePhrase`'s
    ``day``, so they are scored as category ``date_phrases``."""
    today = _as_date(doc["reference"]["date"])
    out: dict[str, Any] = {}
    out["callup"] = [{"text": c["text"], "answer": c.get("meaning"),
                      **({"eta": c.get("eta_min")} if c.get("meaning") == "late" else {})}
                     for c in doc.get("callup_answers") or []]
    out["yes_no"] = [[c["text"], c.get("meaning")] for c in doc.get("yes_no") or []]
    out["date_phrases"] = {"today": today, "cases": [{"text": c["text"], "day": c.get("date"), "days": c.get("days"),
                                                       "kind": c.get("kind")} for c in doc.get("dates") or []]}
    towns = doc.get("townships") or {}
    out["townships"] = {"names": towns.get("list") or [], "cases": [
        {"text": c["text"], "expect": c.get("township"),
         **({"sure": not c.get("confirm", False)} if c.get("township") else {})}
        for c in towns.get("mentions") or []]}
    return out


def cases_of(doc: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(category, case, context) for every case of a loaded file (either layout)."""
    if "reference" in doc:
        doc = _from_holdout(doc)
    out: list[tuple[str, Any, dict[str, Any]]] = []
    for category, body in doc.items():
        if category in ("dates", "date_phrases"):
            ctx = {"today": _as_date(body["today"])}
            out += [(category, c, ctx) for c in body["cases"]]
        elif category == "townships":
            ctx = {"names": list(body["names"])}
            out += [(category, c, ctx) for c in body["cases"]]
        elif isinstance(body, list):
            out += [(category, c, {}) for c in body]
    return out


def evaluate(path: Path) -> dict[str, Score]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    scores: dict[str, Score] = {}
    for category, case, ctx in cases_of(doc):
        ok, what = check(category, case, ctx)
        scores.setdefault(category, Score()).add(ok, what)
    return scores


def main(argv: list[str]) -> int:
    show = "--failures" in argv
    for arg in [a for a in argv if not a.startswith("--")]:
        scores = evaluate(Path(arg))
        print(f"\n{arg}")
        print(f"{'category':<12}{'right':>7}{'total':>7}{'accuracy':>10}")
        right = total = 0
        for cat, s in scores.items():
            print(f"{cat:<12}{s.right:>7}{s.total:>7}{s.right / s.total:>10.1%}")
            right, total = right + s.right, total + s.total
            if show:
                for f in s.failures:
                    print(f"    ✗ {f}")
        print(f"{'all':<12}{right:>7}{total:>7}{right / max(total, 1):>10.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
