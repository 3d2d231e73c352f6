"""Alarm episodes from detector scores: the state machine table and the per-rule book of episodes."""

from agent.alarms.book import AlarmBook, StreamRef
from agent.alarms.machine import TABLE, AlarmState

__all__ = ["TABLE", "AlarmBook", "AlarmState", "StreamRef"]
