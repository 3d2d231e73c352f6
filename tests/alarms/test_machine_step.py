"""`machine.step` (a precomputed look-up) against the transition table applied row by row."""

from __future__ import annotations

import numpy as np

from agent.alarms.machine import GUARDS, TABLE, Action, AlarmState, Inputs, step


def row_by_row(states: np.ndarray, inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """The table's rule written out: the first row whose source and guards match wins, else stay."""
    next_states = states.copy()
    actions = np.zeros_like(states)
    pending = np.ones(states.shape, dtype=bool)
    for row in TABLE:
        match = pending & (states == row.source)
        for guard in row.guards:
            match &= getattr(inputs, guard)
        next_states[match] = row.target
        actions[match] = row.action
        pending &= ~match
    return next_states, actions


def every_combination() -> tuple[np.ndarray, Inputs]:
    """One stream per (state, guard values) combination: 4 x 2^(guards)."""
    combos = np.arange(len(AlarmState) << len(GUARDS))
    states = (combos % len(AlarmState)).astype(np.int64)
    guards = {name: (combos >> (2 + bit)) & 1 == 1 for bit, name in enumerate(GUARDS)}
    return states, Inputs(**guards)


def test_step_agrees_with_the_table_for_every_state_and_guard_combination() -> None:
    states, inputs = every_combination()
    got_states, got_actions = step(states, inputs)
    want_states, want_actions = row_by_row(states, inputs)
    np.testing.assert_array_equal(got_states, want_states)
    np.testing.assert_array_equal(got_actions, want_actions)
    # every row of the table is reached by some combination, and so is "no row matches"
    assert set(got_actions.tolist()) == {int(a) for a in Action}
    assert got_states.dtype == states.dtype == np.int64


def test_step_on_random_streams_in_any_order() -> None:
    rng = np.random.default_rng(7)
    n = 3_000
    states = rng.integers(0, len(AlarmState), n).astype(np.int64)
    inputs = Inputs(**{name: rng.random(n) < 0.5 for name in GUARDS})
    before = states.copy()
    got_states, got_actions = step(states, inputs)
    want_states, want_actions = row_by_row(states, inputs)
    np.testing.assert_array_equal(got_states, want_states)
    np.testing.assert_array_equal(got_actions, want_actions)
    np.testing.assert_array_equal(states, before)  # the caller's states are not written


def test_step_of_no_streams() -> None:
    states, inputs = every_combination()
    empty = Inputs(**{name: getattr(inputs, name)[:0] for name in GUARDS})
    got_states, got_actions = step(states[:0], empty)
    assert got_states.shape == got_actions.shape == (0,)
