"""The Config service: the effective configuration, stored settings, validation and reload.

The stored layer lives in the data store (``config/stored.py``: 0x50 | key -> JSON); this
service reads and writes it through the control child's ``DirectoryBackend`` loop, keeps the
master's mirror ``<run_dir>/stored-settings.json`` in step, and reloads through the master
(SIGHUP, as ``Server.Reload``), answering FAILED_PRECONDITION with every error when the
master refuses the new configuration (it then keeps the running one).
"""
from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import grpc

from stalwart_mp.config import stored
from stalwart_mp.config.loader import Config, ConfigInvalid
from stalwart_mp.config.schema import SCHEMA, ConfigError
from stalwart_mp.control.auth import audit
from stalwart_mp.control.gen.stalwart_mp.v1 import config_pb2, config_pb2_grpc, server_pb2
from stalwart_mp.control.principals_service import DirectoryBackend, on_data_store

log = logging.getLogger("stalwart_mp.control")

REDACTED = "********"
_REDACTED_JSON = json.dumps(REDACTED)


def is_secret(key: str) -> bool:
    setting = SCHEMA.match(tuple(key.split(".")))
    return bool(setting and setting.secret)


def _shown(key: str, value: Any) -> str:
    return _REDACTED_JSON if is_secret(key) else json.dumps(value, default=str)


def error_info(error: ConfigError) -> config_pb2.ConfigErrorInfo:
    return config_pb2.ConfigErrorInfo(key=error.key, reason=error.message, message=str(error))


def sync_overlay(backend: DirectoryBackend, run_dir: Path, master_pid: int | None) -> None:
    """At the control child's start: rewrite the master's mirror of the stored settings
    from the data store; if it changed (a new run folder, another node's change) and a
    master is given, SIGHUP it so that they take effect. Failures are logged, never fatal."""
    async def job(services: Any) -> bool:
        return stored.write_overlay(run_dir, await stored.read_stored(services.data))

    try:
        changed = backend.run_services(job)
    except Exception as exc:  # noqa: BLE001 - best effort at start: log and serve
        log.error("control: cannot mirror the stored settings",
                  extra={"fields": {"error": repr(exc)}})
        return
    if changed and master_pid:
        log.info("stored settings changed since the master loaded them: reloading",
                 extra={"fields": {"master_pid": master_pid}})
        try:
            os.kill(master_pid, signal.SIGHUP)
        except OSError as exc:
            log.error("control: cannot signal the master",
                      extra={"fields": {"error": str(exc)}})


class ConfigServicer(config_pb2_grpc.ConfigServicer):
    """Config.* for the server whose configuration file is ``config_path``.

    ``backend`` reaches the data store (None: no configuration; the calls are UNAVAILABLE);
    ``reloader`` is the Server servicer whose Reload signals the master and waits.
    """

    def __init__(self, backend: DirectoryBackend | None, config_path: Path | None,
                 run_dir: Path, reloader: Any):
        self.backend = backend
        self.config_path = Path(config_path) if config_path else None
        self.run_dir = Path(run_dir)
        self.reloader = reloader

    # --- helpers ----------------------------------------------------------------------

    def _stored(self, context: grpc.ServicerContext) -> dict[str, Any]:
        return self._data(context, stored.read_stored)

    def _data(self, context: grpc.ServicerContext, call: Any) -> Any:
        return on_data_store(self.backend if self.config_path is not None else None,
                             context, call)

    def _file_data(self, context: grpc.ServicerContext) -> dict:
        assert self.config_path is not None
        try:
            return stored.read_toml(self.config_path)
        except ConfigInvalid as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "\n".join(str(e) for e in exc.errors))
        raise AssertionError("unreachable: abort raises")

    def _proposed(self, request: config_pb2.ConfigChange, current: dict[str, Any]
                  ) -> tuple[dict[str, Any], dict[str, Any], list[ConfigError]]:
        """(the new stored settings, the decoded values to set, errors of the request)."""
        errors: list[ConfigError] = []
        values: dict[str, Any] = {}
        for key, text in sorted(request.set.items()):
            try:
                values[key] = json.loads(text)
            except json.JSONDecodeError as exc:
                errors.append(ConfigError(key, f"the value is not JSON ({exc.msg}): write a "
                                               'string in quotes ("text"), a number, true/'
                                               "false or a list"))
        for key in request.unset:
            if key in request.set:
                errors.append(ConfigError(key, "both set and unset in one change"))
            elif key not in current:
                errors.append(ConfigError(key, "has no stored value to remove"))
        proposed = {k: v for k, v in current.items() if k not in request.unset}
        proposed.update(values)
        return proposed, values, errors

    def _validate(self, context: grpc.ServicerContext, request: config_pb2.ConfigChange
                  ) -> tuple[dict[str, Any], list[ConfigError]]:
        current = self._stored(context)
        proposed, values, errors = self._proposed(request, current)
        file_data = self._file_data(context)
        try:
            stored.load_merged(self.config_path, file_data, proposed)
        except ConfigInvalid as exc:
            errors += exc.errors
        return values, errors

    # --- the RPCs -----------------------------------------------------------------------

    def GetConfig(  # gRPC method name
        self, request: config_pb2.GetConfigRequest, context: grpc.ServicerContext
    ) -> config_pb2.ConfigSnapshot:
        settings = self._stored(context)
        file_data = self._file_data(context)
        errors: list[ConfigError] = []
        try:
            cfg: Config = stored.load_merged(self.config_path, file_data, settings)
            in_force = settings
        except ConfigInvalid as exc:  # show the file's config and why the pair is refused
            errors = exc.errors
            try:
                cfg = stored.load_merged(self.config_path, file_data, {})
            except ConfigInvalid as file_errors:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              "\n".join(str(e) for e in file_errors.errors))
            in_force = {}
        sources = stored.sources(cfg, file_data, in_force)
        rows = []
        for path in sorted(cfg.values, key=lambda p: ".".join(p)):
            key = ".".join(path)
            if not key.startswith(request.prefix):
                continue
            rows.append(config_pb2.EffectiveSetting(
                key=key, value=_shown(key, cfg.values[path]), source=sources[key],
                secret=is_secret(key)))
        return config_pb2.ConfigSnapshot(
            settings=rows,
            stored=[config_pb2.StoredSetting(key=k, value=_shown(k, v))
                    for k, v in sorted(settings.items()) if k.startswith(request.prefix)],
            config_path=str(self.config_path),
            errors=[error_info(e) for e in errors],
            bootstrap=list(stored.BOOTSTRAP),
        )

    def ValidateConfig(  # gRPC method name
        self, request: config_pb2.ConfigChange, context: grpc.ServicerContext
    ) -> config_pb2.ValidationResult:
        _, errors = self._validate(context, request)
        return config_pb2.ValidationResult(valid=not errors,
                                           errors=[error_info(e) for e in errors])

    def UpdateConfig(  # gRPC method name
        self, request: config_pb2.ConfigChange, context: grpc.ServicerContext
    ) -> config_pb2.UpdateConfigResponse:
        if not request.set and not request.unset:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "set: nothing to change (give settings to set or keys to unset)")
        values, errors = self._validate(context, request)
        if errors:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "\n".join(str(e) for e in errors))
        unset = list(request.unset)

        async def write(data: Any) -> dict[str, Any]:
            await stored.write_stored(data, values, unset)
            now_stored = await stored.read_stored(data)
            stored.write_overlay(self.run_dir, now_stored)
            return now_stored

        now_stored = self._data(context, write)
        audit("config.update", set={k: (REDACTED if is_secret(k) else v)
                                    for k, v in values.items()}, unset=unset)
        return config_pb2.UpdateConfigResponse(stored=[
            config_pb2.StoredSetting(key=k, value=_shown(k, v))
            for k, v in sorted(now_stored.items())])

    def ReloadConfig(  # gRPC method name
        self, request: config_pb2.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> config_pb2.ReloadConfigResponse:
        # the mirror may be behind the store (a change made by another node): refresh it
        def refresh(data: Any) -> Any:
            async def job() -> bool:
                return stored.write_overlay(self.run_dir, await stored.read_stored(data))
            return job()

        self._data(context, refresh)
        result = self.reloader.Reload(server_pb2.ReloadRequest(), context)
        audit("config.reload", applied=result.applied, generation=result.generation)
        if not result.applied:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the master refused the configuration and keeps generation "
                f"{result.generation} in force:\n" + "\n".join(result.errors),
            )
        return config_pb2.ReloadConfigResponse(generation=result.generation,
                                               finished_at=result.finished_at)
