"""Checks of the alarm hierarchy: the `superseded_by` key of `[[alarms]]` rules.

A rule superseded by other conditions cannot start on a stream while one of theirs is pending there and
starts nothing while one is active (`agent.pipeline.stream`). That only means something between rules
on the same stream name, so a name must be the condition of another rule whose detector watches the
same stream as this rule's (the condition may have rules on other streams too); and the relation must
have no cycle (rules that each wait for the other to be closed). Each problem names the key
(`alarms[i].superseded_by[j]`, or `alarms[i].superseded_by` for a cycle). `superseding_conditions` closes
the relation transitively, once, for the alarm books built from a checked configuration.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.config.reader import describe
from agent.config.schema import AlarmRuleConfig, DetectorConfig
from agent.errors import ConfigError


def hierarchy_problems(
    alarms: Sequence[AlarmRuleConfig], detectors: Sequence[DetectorConfig]
) -> list[ConfigError]:
    """Every problem of the rules' `superseded_by` names (none when no rule has the key)."""
    if not any(rule.superseded_by for rule in alarms):
        return []
    stream_of = {d.id: d.stream for d in detectors if isinstance(d.id, str)}
    rules_of: dict[str, list[int]] = {}
    for k, rule in enumerate(alarms):
        if isinstance(rule.condition, str):
            rules_of.setdefault(rule.condition, []).append(k)
    problems: list[ConfigError] = []
    outranks: dict[str, set[str]] = {}  # condition -> the conditions that supersede it (checked ones)
    for i, rule in enumerate(alarms):
        if not isinstance(rule.superseded_by, tuple):  # a wrong type is already a problem
            continue
        for j, name in enumerate(rule.superseded_by):
            where = f"alarms[{i}].superseded_by[{j}]"
            problem = _name_problem(i, rule, name, alarms, rules_of, stream_of)
            if problem is not None:
                problems.append(ConfigError(where, problem))
            else:
                outranks.setdefault(rule.condition, set()).add(name)
    for cycle in _cycles(outranks):
        first = min(k for k in rules_of[cycle[0]] if alarms[k].superseded_by)
        shown = " -> ".join([*cycle, cycle[0]])
        problems.append(
            ConfigError(
                f"alarms[{first}].superseded_by",
                f"a cycle ({shown}: each supersedes the next): its rules would keep each other from"
                " starting; a hierarchy must have a top",
            )
        )
    return problems


def superseding_conditions(
    alarms: Sequence[AlarmRuleConfig], detectors: Sequence[DetectorConfig]
) -> list[tuple[str, ...]]:
    """Per rule (in `alarms`' order), every condition above it in the alarm hierarchy of its stream: its
    own `superseded_by` first, in order, then theirs and so on, sorted. The closure makes a chain hold:
    with elevated < extreme < critical, critical holds elevated back too, or elevated would be free (and
    start) while critical holds extreme back. A condition's rules on other streams do not count (a rule
    can only be superseded on its own stream), so it is closed per stream name, over the union of the
    `superseded_by` of that stream's rules of each condition. For a checked configuration (no cycle)."""
    stream_of = {d.id: d.stream for d in detectors}
    above: dict[tuple[str, str], set[str]] = {}  # (stream, condition) -> the conditions above it there
    for rule in alarms:
        above.setdefault((stream_of[rule.detector], rule.condition), set()).update(rule.superseded_by)
    changed = True
    while changed:  # to a fixed point; a few rounds (no cycles)
        changed = False
        for (stream, _), names in above.items():
            wider = names.union(*(above.get((stream, name), set()) for name in names))
            if wider != names:
                names |= wider
                changed = True
    closed = []
    for rule in alarms:
        direct = rule.superseded_by
        rest = above[(stream_of[rule.detector], rule.condition)].difference(direct)
        closed.append(direct + tuple(sorted(rest)))
    return closed


def _name_problem(
    i: int,
    rule: AlarmRuleConfig,
    name: str,
    alarms: Sequence[AlarmRuleConfig],
    rules_of: dict[str, list[int]],
    stream_of: dict[str, str],
) -> str | None:
    if name == rule.condition:
        return f"{describe(name)} is this rule's own condition: a rule cannot supersede itself"
    if name not in rules_of:
        known = ", ".join(sorted(c for c in rules_of if c != rule.condition)) or "none"
        return f"no alarm rule with condition {describe(name)} (known: {known})"
    own = stream_of.get(rule.detector) if isinstance(rule.detector, str) else None
    if own is None:  # this rule's detector is unknown: reported as alarms[i].detector
        return None
    # A condition may have rules on several streams (tachycardia from a strap's hr and from the ECG's
    # beats): one on this rule's stream is enough (an unknown detector is reported elsewhere).
    elsewhere: list[int] = []
    for k in rules_of[name]:
        other = alarms[k]
        theirs = stream_of.get(other.detector) if isinstance(other.detector, str) else None
        if theirs is None or theirs == own:
            return None
        elsewhere.append(k)
    k = elsewhere[0]
    other = alarms[k]
    return (
        f"rule {describe(name)} (alarms[{k}]) judges detector {describe(other.detector)} on stream"
        f" {describe(stream_of[other.detector])}, this rule's detector {describe(rule.detector)} is on"
        f" stream {describe(own)}: a rule can only be superseded by rules of its own stream"
    )


def _cycles(outranks: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle of the relation once (depth-first; a cycle is reported from the first condition of
    it that the search reaches)."""
    cycles: list[list[str]] = []
    done: set[str] = set()
    for start in sorted(outranks):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, list[str]]] = [(start, sorted(outranks.get(start, ())))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            nxt = todo.pop(0)
            if nxt in on_path:
                cycles.append(path[path.index(nxt) :])
            elif nxt not in done:
                stack.append((nxt, sorted(outranks.get(nxt, ()))))
                path.append(nxt)
                on_path.add(nxt)
    return cycles
