"""Synthetic tasks, generated in code (no downloads), and the protocol for a user's own task.

Importing this package registers every task: ``reverse``, ``duplicate`` (Ontañón et al. 2022)
and ``copy`` on their lengths, ``copy-kz``, ``reverse-kz`` (Kazemnejad et al. 2023), ``scan``
(Lake & Baroni 2018), ``addition`` (integer addition on digit strings, Ontañón et al. 2022's
lengths) and ``tsv`` / ``"file:PATH"`` (a user's file).
``get_task(name, **options).generate(seed)`` gives a :class:`TaskData`.
"""

from .arithmetic import AdditionTask
from .base import (
    FILE_PREFIX,
    TASKS,
    Example,
    Task,
    TaskData,
    available_tasks,
    check_seed,
    get_task,
    hold_out,
    register_task,
    task_options,
)
from .files import TsvTask, read_tsv
from .scan import ScanTask, interpret, scan_commands
from .strings import StringTask, apply_operation

__all__ = [
    "FILE_PREFIX",
    "TASKS",
    "Example",
    "Task",
    "TaskData",
    "available_tasks",
    "check_seed",
    "get_task",
    "hold_out",
    "register_task",
    "task_options",
    "TsvTask",
    "read_tsv",
    "ScanTask",
    "interpret",
    "scan_commands",
    "StringTask",
    "apply_operation",
    "AdditionTask",
]
