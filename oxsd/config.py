"""oxenstored.conf: the one configuration object (port of config.ml + xenstored.ml parse_config).

`Settings` holds every key oxenstored 4.17 knows, named after the key with
'-' replaced by '_', with the built-in default (not Debian's file).  It is
built once at start-up from the file and the flags, and passed to whoever
needs it: there are no module-level mutable limits (unlike define.ml).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    merge_activate: bool = True
    conflict_burst_limit: float = 5.0
    conflict_max_history_seconds: float = 0.05
    conflict_rate_limit_is_aggregate: bool = True
    perms_activate: bool = True
    perms_watch_activate: bool = True
    quota_activate: bool = True
    quota_maxwatch: int = 100
    quota_transaction: int = 10
    quota_maxentity: int = 1000
    quota_maxsize: int = 2048
    quota_maxrequests: int = 1024
    quota_maxoutstanding: int = 1024
    quota_maxwatchevents: int = 1024
    quota_path_max: int = 2048
    gc_max_overhead: int = 120
    test_eagain: bool = False
    persistent: bool = False
    xenstored_log_file: str = "/var/log/xen/xenstored.log"
    xenstored_log_level: str = "warn"
    xenstored_log_nb_files: int = 10
    xenstored_log_nb_lines: int = 13215
    xenstored_log_nb_chars: int = -1
    access_log_file: str = "/var/log/xen/xenstored-access.log"
    access_log_nb_files: int = 20
    access_log_nb_lines: int = 13215
    access_log_nb_chars: int = 180
    access_log_read_ops: bool = False
    access_log_transactions_ops: bool = False
    access_log_special_ops: bool = False
    allow_debug: bool = False
    ring_scan_interval: int = 20
    pid_file: str = "/var/run/xen/xenstored.pid"
    xenstored_kva: str = ""
    xenstored_port: str = ""
