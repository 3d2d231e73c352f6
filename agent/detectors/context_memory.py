"""The context memory of the Contextual Anomaly Detector (CAD OSE, M. Smirnov 2016), re-implemented.

One stream's learned transitions between sets of "facts" (small integers). Each step the stream's current
value arrives as a set of sensor facts (its quantised level, bit by bit); the previous step's facts, plus
"neuron" facts naming the contexts that fired then, form the left side. A context is a pair
(left facts, right facts) meaning "after left came right"; pairs are stored as semi-contexts (distinct left
and right fact sets) so many contexts share them.

Per step:
1. The observed transition (previous left group, current sensor facts) is stored as a zero-level context;
   whether it was new is the novelty signal.
2. Every context whose left side was wholly present last step was "selected": it predicted its right side.
   It is active when its right side is wholly present now; the share of selected contexts that are active is
   how well the memory knew this moment. Partial overlaps of a new zero-level context with older ones become
   candidate new (more general) contexts, which are stored.
3. The most often activated active contexts (at most `max_active`) become this step's neuron facts, and the
   contexts whose left side is wholly present now, with the best hit rate, predict the next sensor facts.

Raw anomaly score (0 when every sensor fact was predicted, else)
    (1 - active / selected + new contexts / candidate contexts) / 2.

This follows the published algorithm (NAB's `context_ose` detector, AGPL) without its code; differences
that do not change the idea: ties among equally activated contexts go to the newest (CAD OSE: by hash),
and the first stored context is not skipped (CAD OSE skips context 0 on steps without a new zero-level
context, a side effect of `False == 0`). The memory only grows; `max_contexts` caps it (then no new
contexts are stored and the memory stops learning new transitions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Facts = tuple[int, ...]  # sorted, no repeats

NEURON_BASE = 1 << 30  # neuron facts are NEURON_BASE + context number; sensor facts stay below it


class ContextMemory:
    def __init__(self, max_left_facts: int = 7, max_active: int = 15, max_contexts: int = 1_000_000) -> None:
        self.max_left_facts = max_left_facts  # longest left side a generalised context may have
        self.max_active = max_active  # most active contexts that become neuron facts
        self.max_contexts = max_contexts
        # semi-contexts: facts, their number by facts, and the semi-contexts each fact belongs to
        self.left_facts: list[Facts] = []
        self.right_facts: list[Facts] = []
        self._left_number: dict[Facts, int] = {}
        self._right_number: dict[Facts, int] = {}
        self._left_by_fact: dict[int, list[int]] = {}
        self._right_by_fact: dict[int, list[int]] = {}
        self.contexts_of_left: list[dict[int, int]] = []  # left number -> {right number: context number}
        # contexts, one entry each
        self.expected: list[int] = []  # right facts it predicted, summed over the steps it was selected
        self.hits: list[int] = []  # of those, how many came true
        self.activations: list[int] = []  # steps its whole right side came true
        self.zero_level: list[bool] = []  # it was once an observed transition (not only a generalisation)
        # carried from the previous step
        self.left_group: Facts = ()
        self.crossed_left: dict[int, Facts] = {}  # left number -> its facts present in `left_group`
        self.whole_left: list[int] = []  # the left numbers wholly present in `left_group`
        self.predicted: frozenset[int] = frozenset()

    @property
    def size(self) -> int:
        return len(self.expected)

    def step(self, sensor: Facts) -> float:
        """Learn from this step's sensor facts; the raw anomaly score in [0, 1]."""
        surprised = any(f not in self.predicted for f in sensor)
        candidates: set[tuple[Facts, Facts]] = set()
        observed = -1  # the zero-level context stored just now, if it is new
        if self.left_group and sensor:
            pair = (self.left_group, sensor)
            candidates.add(pair)
            observed = self._store(pair, zero_level=True)
        right_present = _cross(self._right_by_fact, sensor)
        selected, active, general = self._review(right_present, observed)
        known = len(active) / selected if selected else 0.0
        neurons = self._neurons(active)
        added = sum(self._store(pair, zero_level=False) >= 0 for pair in general)
        candidates.update(general)
        new = (added + 1) / len(candidates) if observed >= 0 else 0.0
        self.left_group = tuple(sorted({*sensor, *(NEURON_BASE + c for c in neurons)}))
        self._cross_left()
        self.predicted = self._predict()
        return (1.0 - known + new) / 2.0 if surprised else 0.0

    # -- the steps ------------------------------------------------------------------------------------

    def _review(
        self, right_present: dict[int, Facts], observed: int
    ) -> tuple[int, list[int], list[tuple[Facts, Facts]]]:
        """Score last step's predictions: (selected count, active contexts, candidate generalisations).

        `observed` is the zero-level context just added (-1: the transition was known). Candidates are only
        made on a step that observed a new transition: the parts of a zero-level context's left and right
        sides that are present now."""
        learning = observed >= 0
        selected = 0
        active: list[int] = []
        general: list[tuple[Facts, Facts]] = []
        # Off a learning step only the wholly present left sides count (partial ones make candidates).
        lefts = self.crossed_left.items() if learning else ((w, self.left_facts[w]) for w in self.whole_left)
        for left, left_present in lefts:
            whole_left = len(left_present) == len(self.left_facts[left])
            short = len(left_present) <= self.max_left_facts
            for right, context in self.contexts_of_left[left].items():
                if context == observed:
                    continue
                right_now = right_present.get(right, ())
                if whole_left:
                    selected += 1
                    self.expected[context] += len(self.right_facts[right])
                    if not right_now:
                        continue
                    self.hits[context] += len(right_now)
                    if len(right_now) == len(self.right_facts[right]):
                        self.activations[context] += 1
                        active.append(context)
                        continue
                if right_now and learning and short and self.zero_level[context]:
                    general.append((left_present, right_now))
        return selected, active, general

    def _cross_left(self) -> None:
        self.crossed_left = _cross(self._left_by_fact, self.left_group)
        self.whole_left = [
            left for left, present in self.crossed_left.items() if len(present) == len(self.left_facts[left])
        ]

    def _neurons(self, active: list[int]) -> list[int]:
        ranked = sorted(active, key=lambda c: (self.activations[c], c))
        return ranked[-self.max_active :] if self.max_active else []

    def _predict(self) -> frozenset[int]:
        """Right facts of the contexts, among those whose left side is wholly present, with the best hit
        rate (all of them when none has hit yet)."""
        best = 0.0
        chosen: list[int] = []
        for left in self.whole_left:
            for right, context in self.contexts_of_left[left].items():
                rate = self.hits[context] / self.expected[context] if self.expected[context] else 0.0
                if rate > best:
                    best, chosen = rate, [right]
                elif rate == best:
                    chosen.append(right)
        return frozenset(f for right in chosen for f in self.right_facts[right])

    def _store(self, pair: tuple[Facts, Facts], zero_level: bool) -> int:
        """Find or add the context `pair`; its number if it was added, else -1 (known, or memory full)."""
        left, right = self._left_number.get(pair[0]), self._right_number.get(pair[1])
        existing = None if left is None or right is None else self.contexts_of_left[left].get(right)
        if existing is not None:
            if zero_level:
                self.zero_level[existing] = True
            return -1
        if self.size >= self.max_contexts:
            return -1
        left = self._semi(pair[0], self.left_facts, self._left_number, self._left_by_fact)
        if left == len(self.contexts_of_left):
            self.contexts_of_left.append({})
        right = self._semi(pair[1], self.right_facts, self._right_number, self._right_by_fact)
        number = self.size
        self.contexts_of_left[left][right] = number
        self.expected.append(0)
        self.hits.append(0)
        self.activations.append(0)
        self.zero_level.append(zero_level)
        return number

    @staticmethod
    def _semi(
        facts: Facts, table: list[Facts], numbers: dict[Facts, int], by_fact: dict[int, list[int]]
    ) -> int:
        number = numbers.get(facts)
        if number is None:
            number = numbers[facts] = len(table)
            table.append(facts)
            for fact in facts:
                by_fact.setdefault(fact, []).append(number)
        return number

    # -- persistence ----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        contexts = [
            [left, right, number]
            for left, table in enumerate(self.contexts_of_left)
            for right, number in table.items()
        ]
        return {
            "left": [list(f) for f in self.left_facts],
            "right": [list(f) for f in self.right_facts],
            "contexts": sorted(contexts, key=lambda row: row[2]),
            "order": [list(table) for table in self.contexts_of_left],  # right numbers in insertion order
            "expected": self.expected,
            "hits": self.hits,
            "activations": self.activations,
            "zero_level": self.zero_level,
            "left_group": list(self.left_group),
            "crossed_left": [[left, list(f)] for left, f in self.crossed_left.items()],
            "predicted": sorted(self.predicted),
        }

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], max_left_facts: int, max_active: int, max_contexts: int
    ) -> ContextMemory:
        """Inverse of `to_json`; KeyError / TypeError / ValueError when the data is not such a dump."""
        memory = cls(max_left_facts, max_active, max_contexts)
        for facts in data["left"]:
            cls._semi(_facts(facts), memory.left_facts, memory._left_number, memory._left_by_fact)
        for facts in data["right"]:
            cls._semi(_facts(facts), memory.right_facts, memory._right_number, memory._right_by_fact)
        number_of = {(int(left), int(right)): int(number) for left, right, number in data["contexts"]}
        memory.contexts_of_left = [
            {int(right): number_of[(left, int(right))] for right in order}
            for left, order in enumerate(data["order"])
        ]
        memory.expected = [int(v) for v in data["expected"]]
        memory.hits = [int(v) for v in data["hits"]]
        memory.activations = [int(v) for v in data["activations"]]
        memory.zero_level = [bool(v) for v in data["zero_level"]]
        lengths = {len(memory.expected), len(memory.hits), len(memory.activations), len(memory.zero_level)}
        if lengths != {len(number_of)} or len(memory.contexts_of_left) != len(memory.left_facts):
            raise ValueError("context tables of different lengths")
        memory.left_group = _facts(data["left_group"])
        memory.crossed_left = {int(left): _facts(f) for left, f in data["crossed_left"]}
        memory.whole_left = [
            left
            for left, present in memory.crossed_left.items()
            if len(present) == len(memory.left_facts[left])
        ]
        memory.predicted = frozenset(int(f) for f in data["predicted"])
        return memory


def _cross(by_fact: Mapping[int, list[int]], facts: Facts) -> dict[int, Facts]:
    """Semi-contexts sharing a fact with `facts` -> the shared facts (sorted), by semi-context number."""
    present: dict[int, list[int]] = {}
    for fact in facts:
        for number in by_fact.get(fact, ()):
            present.setdefault(number, []).append(fact)
    return {number: tuple(present[number]) for number in sorted(present)}


def _facts(values: Iterable[Any]) -> Facts:
    return tuple(int(v) for v in values)
