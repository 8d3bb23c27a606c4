import pytest

from stream.settings import ENV_VARS, Settings, SettingsError


def test_environment_then_overrides():
    s = Settings.from_env(
        {"DARKROOM_KAFKA_BOOTSTRAP": "k1:9092,k2:9092", "DARKROOM_BATCH_SIZE": "8"}, batch_size=4
    )
    assert s.kafka_bootstrap == "k1:9092,k2:9092" and s.batch_size == 4


def test_bad_values_name_the_variable():
    with pytest.raises(SettingsError, match="DARKROOM_BATCH_SIZE"):
        Settings.from_env({"DARKROOM_BATCH_SIZE": "many"})
    with pytest.raises(SettingsError, match="DARKROOM_DECODE_THREADS"):
        Settings.from_env({"DARKROOM_DECODE_THREADS": "0"})


def test_to_env_round_trips_through_every_variable():
    s = Settings(group_id="g", file_roots="/a:/b")
    assert set(s.to_env()) == ENV_VARS
    assert Settings.from_env(s.to_env()) == s
    assert s.allowed_roots == ("/a", "/b")


def test_rebalance_grace_must_leave_room_within_the_rebalance_timeout():
    with pytest.raises(SettingsError, match="DARKROOM_REBALANCE_GRACE_S"):
        Settings.from_env({"DARKROOM_REBALANCE_GRACE_S": "58", "DARKROOM_REBALANCE_TIMEOUT_S": "60"})
    with pytest.raises(SettingsError, match="DARKROOM_MODEL_ERROR_ATTEMPTS"):
        Settings.from_env({"DARKROOM_MODEL_ERROR_ATTEMPTS": "0"})
    assert Settings.from_env({"DARKROOM_REBALANCE_GRACE_S": "10"}).rebalance_grace_s == 10
