"""rjobs — a Redis-native job queue and job-state store.

Every state change is one Lua script checked against the queue's state machine stored in Redis.
"""

from rjobs import machines
from rjobs.about import VERSION
from rjobs.client.partitioned import PartitionedQueue
from rjobs.client.queue import Queue
from rjobs.client.schedules import Cron, Schedule
from rjobs.client.sync_partitioned import SyncPartitionedQueue
from rjobs.client.sync_queue import SyncQueue
from rjobs.config import PRIORITIES, QueueConfig, Retention
from rjobs.errors import (
    DedupeConflict,
    DependencyError,
    HasDependents,
    InvalidTransition,
    JobExists,
    JobNotFound,
    JobRunning,
    LeaseLost,
    LeaseRequired,
    MachineConflict,
    MachineError,
    MachineNotDeclared,
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
from rjobs.models import (
    Actor,
    Asset,
    DependencyResults,
    EnqueueOutcome,
    Event,
    Job,
    JobError,
    JobOutcome,
    JobRequest,
    MetricsBucket,
    Progress,
    QueueTotals,
)
from rjobs.statemachine import StateMachine
from rjobs.worker.context import JobContext
from rjobs.worker.functions import Fail, JobFunction, Partial, Retry, job
from rjobs.worker.hooks import Outcome, StartupFailed, WorkerState
from rjobs.worker.loop import Worker
from rjobs.worker.retry import RetryPolicy
from rjobs.worker.stats import WorkerStats

__version__ = VERSION

__all__ = [
    "PRIORITIES",
    "Actor",
    "Asset",
    "Cron",
    "DedupeConflict",
    "DependencyError",
    "DependencyResults",
    "EnqueueOutcome",
    "Event",
    "Fail",
    "HasDependents",
    "InvalidTransition",
    "Job",
    "JobContext",
    "JobError",
    "JobExists",
    "JobFunction",
    "JobNotFound",
    "JobOutcome",
    "JobRequest",
    "JobRunning",
    "LeaseLost",
    "LeaseRequired",
    "MachineConflict",
    "MachineError",
    "MachineNotDeclared",
    "MetricsBucket",
    "OutOfMemory",
    "Outcome",
    "Partial",
    "PartitionedQueue",
    "PermissionDenied",
    "Progress",
    "Queue",
    "QueueConfig",
    "QueueTotals",
    "ReadOnly",
    "Retention",
    "Retry",
    "RetryPolicy",
    "RjobsError",
    "Schedule",
    "ScriptError",
    "ServerBusy",
    "ServerRefused",
    "StartupFailed",
    "StateConflict",
    "StateMachine",
    "SyncPartitionedQueue",
    "SyncQueue",
    "Unauthorized",
    "ValidationError",
    "WaitTimeout",
    "Worker",
    "WorkerState",
    "WorkerStats",
    "job",
    "machines",
]
