"""The installed environment: dapr and dapr-ext-fastapi must be a matched pair.

dapr 1.19 on PyPI ships its own `dapr.ext.fastapi`, which clashes with dapr-ext-fastapi 1.18.x;
pyproject.toml pins the pair, and this proves the extension imports after a clean install.
"""

from importlib.metadata import version


def test_dapr_and_its_fastapi_extension_are_a_matched_pair() -> None:
    assert version("dapr") == version("dapr-ext-fastapi")


def test_dapr_ext_fastapi_imports() -> None:
    from dapr.ext.fastapi import DaprApp

    assert callable(DaprApp.subscribe)
