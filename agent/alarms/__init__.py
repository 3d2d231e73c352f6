"""Alarm episodes from detector scores: the state machine table and the per-rule book of episodes."""

from agent.alarms.book import AlarmBook, BookSnapshot, StreamRef, merged_state
from agent.alarms.machine import TABLE, AlarmState

__all__ = ["TABLE", "AlarmBook", "AlarmState", "BookSnapshot", "StreamRef", "merged_state"]
