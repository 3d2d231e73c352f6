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

This follows the published algorithm (NAB's `context_ose` detector, AGPL) without its code, and gives its
scores exactly, including two details that are accidents of its code rather than of the idea:
- ties among equally activated contexts go as CAD OSE breaks them, by the CPython 2 hash of the left, then
  right, facts (over CAD OSE's own fact values), and generalised contexts are numbered in the iteration
  order of CPython 2's dict (`agent.detectors.cpython2_order`); the numbers become neuron facts, so both
  shape all later learning;
- on a step that observed no new transition, context 0 (the first one stored) is not reviewed: CAD OSE
  marks "no new context" with False, and False == 0.
Checked on NAB: a scratch transcription of CAD OSE that reproduces NAB's published contextOSE results
gives the same per-row scores as this module on all 58 series (57 at the default cap of `context`,
which art_noisy reaches; docs/benchmarks.md, NAB).

The memory only grows. `max_contexts` caps it: a full memory keeps everything it has and goes on updating
it, but stores no new context; a transition or generalisation it cannot store still counts as new in the
score, so it keeps scoring novelty as an unbounded memory would, and only forgets to learn it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agent.detectors.cpython2_order import SlotOrder, tuple_hash

Facts = tuple[int, ...]  # sorted, no repeats

KNOWN = -1  # `_store`: the context was already in the memory
UNSTORED = -2  # `_store`: a new context, but the memory is full: judged new, not kept
NEURON_BASE = 1 << 30  # neuron facts are NEURON_BASE + context number; sensor facts stay below it
# CAD OSE's own fact values, which its tie-breaks hash: sensor facts from 65536, neuron facts from 2^31
REFERENCE_SENSOR_BASE = 1 << 16
REFERENCE_NEURON_BASE = 1 << 31


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
        self._right_order: list[SlotOrder] = []  # per left number: its right numbers in CAD OSE's order
        self._left_hash: list[int] = []  # per semi-context: CAD OSE's hash of its facts (tie-breaks)
        self._right_hash: list[int] = []
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
        observed = KNOWN  # the zero-level context stored just now, if it is new
        if self.left_group and sensor:
            pair = (self.left_group, sensor)
            candidates.add(pair)
            observed = self._store(pair, zero_level=True)
        right_present = _cross(self._right_by_fact, sensor)
        selected, active, general = self._review(right_present, observed)
        known = len(active) / selected if selected else 0.0
        neurons = self._neurons(active)
        # a set: a full memory stores nothing, so a repeated candidate must not count twice
        added = {pair for pair in general if self._store(pair, zero_level=False) != KNOWN} - candidates
        candidates.update(general)
        new = (len(added) + 1) / len(candidates) if observed != KNOWN else 0.0
        self.left_group = tuple(sorted({*sensor, *(NEURON_BASE + c for c in neurons)}))
        self._cross_left()
        self.predicted = self._predict()
        return (1.0 - known + new) / 2.0 if surprised else 0.0

    # -- the steps ------------------------------------------------------------------------------------

    def _review(
        self, right_present: dict[int, Facts], observed: int
    ) -> tuple[int, list[tuple[int, int, int, int]], list[tuple[Facts, Facts]]]:
        """Score last step's predictions: (selected count, active contexts as (activations, left hash,
        right hash, context), candidate generalisations).

        `observed` is the zero-level context just added (KNOWN: the transition was known; UNSTORED: new
        but not kept, the memory being full). Candidates are only
        made on a step that observed a new transition: the parts of a zero-level context's left and right
        sides that are present now."""
        learning = observed != KNOWN
        # CAD OSE leaves out the context just observed; on a step that observed none it leaves out context 0
        # (its "no context" marker is False, and False == 0): the first transition is never reviewed then.
        left_out = 0 if observed == KNOWN else observed
        selected = 0
        active: list[tuple[int, int, int, int]] = []
        general: list[tuple[Facts, Facts]] = []
        # Off a learning step only the wholly present left sides count (partial ones make candidates).
        lefts = self.crossed_left.items() if learning else ((w, self.left_facts[w]) for w in self.whole_left)
        for left, left_present in lefts:
            whole_left = len(left_present) == len(self.left_facts[left])
            short = len(left_present) <= self.max_left_facts
            contexts = self.contexts_of_left[left]
            for right in self._right_order[left]:  # the order candidates are made in numbers them
                context = contexts[right]
                if context == left_out:
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
                        active.append(
                            (
                                self.activations[context],
                                self._left_hash[left],
                                self._right_hash[right],
                                context,
                            )
                        )
                        continue
                if right_now and learning and short and self.zero_level[context]:
                    general.append((left_present, right_now))
        return selected, active, general

    def _cross_left(self) -> None:
        self.crossed_left = _cross(self._left_by_fact, self.left_group)
        self.whole_left = [
            left for left, present in self.crossed_left.items() if len(present) == len(self.left_facts[left])
        ]

    def _neurons(self, active: list[tuple[int, int, int, int]]) -> list[int]:
        """The most activated active contexts; ties go as in CAD OSE, by the hashes of their sides."""
        ranked = sorted(active, key=lambda entry: entry[:3])
        return [entry[3] for entry in ranked[-self.max_active :]] if self.max_active else []

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
        """Find or add the context `pair`: its number if it was added, KNOWN if it was there, UNSTORED if it
        is new but the memory is full."""
        left, right = self._left_number.get(pair[0]), self._right_number.get(pair[1])
        existing = None if left is None or right is None else self.contexts_of_left[left].get(right)
        if existing is not None:
            if zero_level:
                self.zero_level[existing] = True
            return KNOWN
        if self.size >= self.max_contexts:
            return UNSTORED
        left = self._left_semi(pair[0])
        right = self._right_semi(pair[1])
        number = self.size
        self.contexts_of_left[left][right] = number
        self._right_order[left].add(right)
        self.expected.append(0)
        self.hits.append(0)
        self.activations.append(0)
        self.zero_level.append(zero_level)
        return number

    def _left_semi(self, facts: Facts) -> int:
        number = self._left_number.get(facts)
        if number is None:
            number = _add_semi(facts, self.left_facts, self._left_number, self._left_by_fact)
            self._left_hash.append(_reference_hash(facts))
            self.contexts_of_left.append({})
            self._right_order.append(SlotOrder())
        return number

    def _right_semi(self, facts: Facts) -> int:
        number = self._right_number.get(facts)
        if number is None:
            number = _add_semi(facts, self.right_facts, self._right_number, self._right_by_fact)
            self._right_hash.append(_reference_hash(facts))
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
            memory._left_semi(_facts(facts))
        for facts in data["right"]:
            memory._right_semi(_facts(facts))
        number_of = {(int(left), int(right)): int(number) for left, right, number in data["contexts"]}
        if len(data["order"]) != len(memory.left_facts):
            raise ValueError("context tables of different lengths")
        for left, order in enumerate(data["order"]):
            for right in order:
                memory.contexts_of_left[left][int(right)] = number_of[(left, int(right))]
                memory._right_order[left].add(int(right))
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


def _add_semi(
    facts: Facts, table: list[Facts], numbers: dict[Facts, int], by_fact: dict[int, list[int]]
) -> int:
    number = numbers[facts] = len(table)
    table.append(facts)
    for fact in facts:
        by_fact.setdefault(fact, []).append(number)
    return number


def _reference_hash(facts: Facts) -> int:
    """CAD OSE's hash of a fact tuple, over its own fact values (same order: sensor facts first)."""
    return tuple_hash(
        REFERENCE_NEURON_BASE + fact - NEURON_BASE if fact >= NEURON_BASE else REFERENCE_SENSOR_BASE + fact
        for fact in facts
    )


def _cross(by_fact: Mapping[int, list[int]], facts: Facts) -> dict[int, Facts]:
    """Semi-contexts sharing a fact with `facts` -> the shared facts (sorted), by semi-context number."""
    present: dict[int, list[int]] = {}
    for fact in facts:
        for number in by_fact.get(fact, ()):
            present.setdefault(number, []).append(fact)
    return {number: tuple(present[number]) for number in sorted(present)}


def _facts(values: Iterable[Any]) -> Facts:
    return tuple(int(v) for v in values)
