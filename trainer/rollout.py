"""The rollout state of a served model, kept in its ``config.pbtxt`` (docs/rollout.md; written by
tools/rollout.py, kept by the exporter).

Three parameters say which version is live, which one shadows it and which one a rollback returns to
(stream/shadow.py reads them through Triton); the version policy ``specific`` loads exactly those versions.
Writing a changed config makes Triton's poller reload the model, which it does without losing availability
(the loaded versions serve until the reload is done), and every version named stays loaded throughout, so
a worker that has not yet read the new state still gets answers from the version it asks for.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from contracts.rollout import LIVE_PARAM, PREVIOUS_PARAM, SHADOW_PARAM, Rollout, rollout_from_config

_PARAMS = {"live": LIVE_PARAM, "shadow": SHADOW_PARAM, "previous": PREVIOUS_PARAM}


def apply_rollout(config: model_config_pb2.ModelConfig, rollout: Rollout, extra_versions: int = 0) -> None:
    """Set ``config``'s rollout parameters and load exactly the versions they name (``extra_versions``
    more below each, for a plan model whose front may still call them)."""
    for field, key in _PARAMS.items():
        value = getattr(rollout, field)
        if value:
            config.parameters[key].string_value = value
        elif key in config.parameters:
            del config.parameters[key]
    named = {int(v) for v in (rollout.live, rollout.shadow, rollout.previous) if v}
    config.ClearField("version_policy")
    if named:
        config.version_policy.specific.versions.extend(sorted(named))
    else:
        config.version_policy.latest.num_versions = 1 + extra_versions


def rollout_of(config: model_config_pb2.ModelConfig) -> Rollout:
    """The rollout state a parsed model config holds (all "" when it is not under rollout control);
    ValueError when a parameter is not a version number."""
    params = {k: {"string_value": v.string_value} for k, v in config.parameters.items()}
    return rollout_from_config({"parameters": params})


def keep_rollout(model_dir: Path, text: str) -> str:
    """``text`` (a freshly built config) with the rollout state of ``model_dir``'s current config, if it is
    under rollout control: exporting a new version then adds a candidate instead of making it live."""
    path = model_dir / "config.pbtxt"
    if not path.is_file():
        return text
    try:
        rollout = rollout_of(text_format.Parse(path.read_text(), model_config_pb2.ModelConfig()))
    except (text_format.ParseError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not rollout.live:
        return text
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    apply_rollout(config, rollout)
    return text_format.MessageToString(config)
