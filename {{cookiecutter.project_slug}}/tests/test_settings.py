import pytest

from {{ cookiecutter.package_name }}.settings import (
    SERVICE_NAME,
    ServerSettings,
    Settings,
    SettingsError,
    exit_on_bad_settings,
    load_settings,
)

from .conftest import PROJECT_DIR, capture_log_records, documented_variables


def test_defaults_come_from_the_template_answers():
    settings = load_settings()
    assert settings.app_env == "production"
    assert settings.log_format == "{{ cookiecutter.log_format }}"
    assert settings.log_rotation == "{{ cookiecutter.log_rotation }}"
    assert settings.log_retention == "{{ cookiecutter.log_retention_days }} days"


def test_env_example_documents_every_setting_with_its_default():
    example = PROJECT_DIR / ".env.example"
    assert Settings(_env_file=example) == Settings(_env_file=None)
    assert {name.upper() for name in Settings.model_fields} <= documented_variables()


def test_values_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LOG_FILE", "")
    monkeypatch.setenv("WEB_CONCURRENCY", "5")
    settings = load_settings()
    assert settings.log_level == "DEBUG"
    assert settings.log_file is None
    assert settings.web_concurrency == 5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOG_LEVEL", "LOUD"),
        ("LOG_FORMAT", "xml"),
        ("LOG_ROTATION", "whenever"),
        ("LOG_RETENTION", "forever"),
        ("LOG_COMPRESSION", "rar"),
        ("PORT", "70000"),
        ("WEB_CONCURRENCY", "many"),
        ("APP_ENV", "prod-ish"),
    ],
)
def test_a_bad_value_is_named_in_one_line(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert f"{variable}={value!r}" in message
    assert "\n" not in message


def test_every_bad_value_is_named_in_the_same_line(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    monkeypatch.setenv("PORT", "70000")
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith("invalid setting ")
    assert "\n" not in message
    problems = message.removeprefix("invalid setting ").split("; ")
    assert sorted(problem.split(": ")[0] for problem in problems) == [
        "LOG_LEVEL='LOUD'",
        "PORT='70000'",
    ]


def test_entry_points_exit_with_the_message_instead_of_a_traceback(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(SystemExit) as exit_info, exit_on_bad_settings():
        load_settings()
    assert str(exit_info.value).startswith(f"{SERVICE_NAME}: invalid setting LOG_LEVEL")


@pytest.mark.parametrize("rotation", ["10 MB", "500 KB", "1 day", "12 hours", "00:00", "1 week"])
def test_documented_rotation_forms_are_accepted(monkeypatch, rotation):
    monkeypatch.setenv("LOG_ROTATION", rotation)
    assert load_settings().log_rotation == rotation


def test_the_server_exits_on_bad_settings_at_start_but_keeps_its_settings_on_reload(
    monkeypatch, capsys
):
    log_records = capture_log_records(capsys)
    server = ServerSettings()
    applied = []
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(SystemExit, match="LOG_LEVEL"):
        server.load(apply=applied.append)
    assert applied == []

    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    started = server.load(apply=applied.append)
    assert server.in_use is started

    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    reloaded = server.load(apply=applied.append)
    assert reloaded is started
    assert [settings.log_level for settings in applied] == ["WARNING", "WARNING"]
    [refused] = [record for record in log_records() if record["log.level"] == "error"]
    assert refused["message"].startswith(
        "reload refused, the settings in use stay: invalid setting LOG_LEVEL='LOUD': "
    )
