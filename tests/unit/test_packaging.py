"""The installed environment: dapr and dapr-ext-fastapi must be a matched pair; uvicorn runs
the functions on uvloop and httptools.

dapr 1.19 on PyPI ships its own `dapr.ext.fastapi`, which clashes with dapr-ext-fastapi 1.18.x;
pyproject.toml pins the pair, and this proves the extension imports after a clean install.
"""

from importlib.metadata import version


def test_dapr_and_its_fastapi_extension_are_a_matched_pair() -> None:
    assert version("dapr") == version("dapr-ext-fastapi")


def test_dapr_ext_fastapi_imports() -> None:
    from dapr.ext.fastapi import DaprApp

    assert callable(DaprApp.subscribe)


def test_uvicorn_serves_on_uvloop_and_httptools() -> None:
    """uvicorn's default ("auto") picks them when installed; without them every function falls
    back to asyncio's pure-Python transports and h11, a fifth more CPU per order (the benchmark)."""
    import uvloop
    from uvicorn.loops.auto import auto_loop_factory
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    loop = auto_loop_factory()()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    assert AutoHTTPProtocol is HttpToolsProtocol
