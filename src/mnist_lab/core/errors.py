"""The one exception type users see: a message that names the input and the fix."""


class MnistLabError(Exception):
    """An error caused by the user's input or environment, reported as one clear message (exit code 2)."""


class SettingsError(MnistLabError):
    """params.yaml (or another settings source) is invalid."""


class DataError(MnistLabError):
    """Input data is missing, corrupt or inconsistent."""


class TrainingDiverged(SettingsError):
    """A model's training ran away (a loss or weights not finite) before any epoch could be kept: its
    settings (a learning rate too high) are the cause. The message names the setting; the stage names the
    model."""
