"""rjobs — a Redis-native job queue and job-state store.

Every state change is one Lua script checked against the queue's state machine stored in Redis.
"""

from rjobs import machines
from rjobs.config import PRIORITIES, QueueConfig, Retention
from rjobs.context import JobContext
from rjobs.errors import (
    DedupeConflict,
    DependencyError,
    InvalidTransition,
    JobExists,
    JobNotFound,
    LeaseLost,
    LeaseRequired,
    MachineConflict,
    MachineError,
    OutOfMemory,
    PermissionDenied,
    ReadOnly,
    RjobsError,
    ScriptError,
    ServerBusy,
    ServerRefused,
    StateConflict,
    Unauthorized,
    ValidationError,
    WaitTimeout,
)
from rjobs.machine import StateMachine
from rjobs.models import Asset, EnqueueOutcome, Event, Job, JobError, JobOutcome, JobRequest, Progress
from rjobs.outcomes import Fail, JobFunction, Partial, Retry, job
from rjobs.queue import Queue
from rjobs.retry import RetryPolicy
from rjobs.sync import SyncQueue
from rjobs.worker import Worker, WorkerStats

__version__ = "0.1.0"

__all__ = [
    "PRIORITIES",
    "Asset",
    "DedupeConflict",
    "DependencyError",
    "EnqueueOutcome",
    "Event",
    "Fail",
    "InvalidTransition",
    "Job",
    "JobContext",
    "JobError",
    "JobExists",
    "JobFunction",
    "JobNotFound",
    "JobOutcome",
    "JobRequest",
    "LeaseLost",
    "LeaseRequired",
    "MachineConflict",
    "MachineError",
    "OutOfMemory",
    "Partial",
    "PermissionDenied",
    "Progress",
    "Queue",
    "QueueConfig",
    "ReadOnly",
    "Retention",
    "Retry",
    "RetryPolicy",
    "RjobsError",
    "ScriptError",
    "ServerBusy",
    "ServerRefused",
    "StateConflict",
    "StateMachine",
    "SyncQueue",
    "Unauthorized",
    "ValidationError",
    "WaitTimeout",
    "Worker",
    "WorkerStats",
    "job",
    "machines",
]
