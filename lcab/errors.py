"""Every user mistake as ONE line, `lcab: <what is wrong>`, and the command's exit status.

Hydra prints its own errors over several lines (a traceback for anything that is not one of
its "compact" errors, then "Set the environment variable HYDRA_FULL_ERROR=1 ..."). The entry
point sets HYDRA_FULL_ERROR so that Hydra hands the exception on, and `one_line()` says it in
one line. A user who set HYDRA_FULL_ERROR=1 gets Hydra's full traceback as before.

Exit status: 2 for a config error (override grammar, unknown key or option, bad type or
value, interpolation), 1 for anything else, 130 for Ctrl-C (128 + SIGINT, as a shell says).
This module imports nothing heavy: it is imported first, before torch and Hydra. It also
holds lcab's exception types, so that every layer (config, kernels, strategies, the cell
pipeline, the record) raises and classifies the same ones.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

CONFIG_ERROR = 2
FAILED = 1
INTERRUPTED = 130  # 128 + SIGINT
FULL_ERROR = "HYDRA_FULL_ERROR"
SCHEMA_SUFFIX = "_schema"  # lcab.config's schema names: never listed as options


class ConfigError(ValueError):
    """A user-facing constraint violation: its message is one line that names the constraint."""


class Unsupported(Exception):
    """A kernel or strategy cannot express this mask / shape / dtype; the message says why."""


class Unavailable(Exception):
    """A package or device support is missing on this machine; the message says what."""


def say(line: str) -> None:
    print(f"lcab: {line}", file=sys.stderr, flush=True)


def _first(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def omegaconf_line(exc: BaseException) -> str:
    """An OmegaConf error (missing key, interpolation, type) as `key: message`."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ConfigError):  # raised by one of lcab's resolvers (lcab_per_gpu)
        msg = str(cause)
    else:
        msg = _first(getattr(exc, "msg", None) or str(exc))
        msg = msg.removeprefix("ConfigError raised while resolving interpolation: ")
    key = getattr(exc, "full_key", None)
    if type(exc).__name__ == "ConfigAttributeError" and key:
        return f"config key '{key}' is missing (removed with ~{key}?): {msg}"
    return f"{key}: {msg}" if key and not msg.startswith(str(key)) else msg


def as_config_error(exc: Exception) -> Exception:
    """An OmegaConf error met while reading the config, as lcab's one-line ConfigError."""
    from omegaconf.errors import OmegaConfBaseException

    return ConfigError(omegaconf_line(exc)) if isinstance(exc, OmegaConfBaseException) else exc


def _missing_config_line(exc: BaseException) -> str:
    missing = getattr(exc, "missing_cfg_file", None) or ""
    options = [o for o in (getattr(exc, "options", None) or []) if not o.endswith(SCHEMA_SUFFIX)]
    if missing and "/" in missing and options:
        group, name = missing.rsplit("/", 1)
        return f"{group}={name} is not an option; {group} is one of {', '.join(options)}"
    return _first(str(exc))


def one_line(exc: BaseException, overrides: list[str] | None = None) -> tuple[str, int]:
    """(the line, the exit status) for an exception that reached the command line;
    overrides: the command line's, to name the one a message from Hydra does not."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, ConfigError):
        return _first(str(exc)), CONFIG_ERROR
    if isinstance(exc, MissingConfigException):
        return _missing_config_line(exc), CONFIG_ERROR
    if isinstance(exc, OverrideParseException):
        return f"cannot parse the override '{exc.override}': {_first(str(exc))}", CONFIG_ERROR
    if isinstance(exc, OmegaConfBaseException):
        return omegaconf_line(exc), CONFIG_ERROR
    if isinstance(exc, HydraException):
        cause = exc.__cause__
        if isinstance(cause, OmegaConfBaseException):  # "Could not override 'x'." + why
            why = _first(getattr(cause, "msg", None) or str(cause))
            return f"{_first(str(exc)).rstrip('.')}: {why}", CONFIG_ERROR
        return _first(str(exc)), CONFIG_ERROR
    if _from_hydra(exc.__traceback__):  # e.g. `bench=42`: ValueError from Hydra's defaults list
        culprit = _group_value_override(overrides or [])
        return (f"{culprit}: " if culprit else "") + _first(str(exc)), CONFIG_ERROR
    if type(exc).__name__ == "UncompletedJobError":
        return _job_line(str(exc)), FAILED
    return f"{type(exc).__name__}: {_first(str(exc))}{_where(exc)} ({FULL_ERROR}=1 for the traceback)", FAILED


def _job_line(text: str) -> str:
    """submitit's failed-job message: which job and task, its Slurm state (on its second line),
    and srun's own words about the task that died (from the log excerpt it appends)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    said = [ln for ln in lines[2:] if ln.startswith("srun:") and ("error" in ln or "Killed" in ln)]
    return " ".join([*lines[:2], *said[:2]])


def _group_value_override(overrides: list[str]) -> str:
    """The override that gives a config group a number or a mapping instead of an option name."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lcab.config import GROUPS

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:  # one by one: flags (-m, --cfg job) are on the same command line
        try:
            parsed += parser.parse_overrides([text])
        except Exception:
            continue
    for o in parsed:
        values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
        if o.key_or_group in (*GROUPS, "experiment") and not all(isinstance(v, (str, list)) for v in values):
            return f"{o.input_line} (a config group takes an option name)"
    return ""


def _from_hydra(tb: TracebackType | None) -> bool:
    """Whether the exception was raised inside Hydra or OmegaConf (composing, not running)."""
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return False
    path = last.tb_frame.f_code.co_filename.replace(os.sep, "/")
    return "/hydra/" in path or "/omegaconf/" in path


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return ""
    return f" at {os.path.basename(last.tb_frame.f_code.co_filename)}:{last.tb_lineno}"


def _short_usage_errors() -> None:
    """argparse prints Hydra's whole usage (8 lines) before a flag error (`--cfg nope`): one line."""
    import importlib

    hydra_main = importlib.import_module("hydra.main")  # the module; `hydra.main` is the decorator
    make_parser = hydra_main.get_args_parser
    if getattr(make_parser, "lcab_short", False):
        return

    def get_args_parser() -> argparse.ArgumentParser:
        parser = make_parser()

        def error(message: str) -> None:
            say(f"{message} (see --help)")
            sys.exit(CONFIG_ERROR)

        parser.error = error  # type: ignore[method-assign]
        return parser

    get_args_parser.lcab_short = True  # type: ignore[attr-defined]
    hydra_main.get_args_parser = get_args_parser


@contextmanager
def reported() -> Iterator[None]:
    """Around the Hydra app: an exception becomes one line and its exit status."""
    full = os.environ.get(FULL_ERROR, "") not in ("", "0")
    os.environ[FULL_ERROR] = "1"  # Hydra raises instead of printing its multi-line report
    _short_usage_errors()
    try:
        yield
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(INTERRUPTED)
    except Exception as exc:
        if full:
            raise
        line, status = one_line(exc, sys.argv[1:])
        say(line)
        sys.exit(status)


_PREVIOUS_HOOK = sys.excepthook


def _interrupt_hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        say("interrupted while starting")
        os._exit(INTERRUPTED)  # nothing has started yet that would need cleaning up
    _PREVIOUS_HOOK(kind, value, tb)


def quiet_interrupt_while_starting() -> None:
    """Ctrl-C while torch and Hydra import (seconds): one line and exit 130, not a traceback."""
    if sys.excepthook is not _interrupt_hook:
        sys.excepthook = _interrupt_hook
