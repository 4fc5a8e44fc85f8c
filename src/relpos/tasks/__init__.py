"""Synthetic tasks, generated in code (no downloads), and the protocol for a user's own task."""

from .base import TASKS, Example, Task, TaskData, available_tasks, get_task, register_task

__all__ = ["TASKS", "Example", "Task", "TaskData", "available_tasks", "get_task", "register_task"]
