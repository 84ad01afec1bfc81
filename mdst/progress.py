"""Progress bars (tqdm) on stderr for the slow steps of loading a model: downloads and weight uploads.

`progress=None` shows them only when stderr is a terminal, so logs and pipes stay clean; True and False
force them on or off. Lower layers never draw: they call a `(done, total)` callback.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator

from tqdm.auto import tqdm


def check(progress: object) -> None:
    """TypeError unless `progress` is None, a bool or a callable."""
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"progress must be None, a bool or a callable (done, total), got {progress!r}")


def shown(progress: bool | None) -> bool:
    """Whether bars are drawn: `progress` if it is a bool, else whether stderr is a terminal."""
    check(progress)
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return bool(progress)


class ByteBar:
    """A tqdm bar of bytes, fed `(done, total)` as a loading callback; it closes once done reaches total."""

    def __init__(self, desc: str):
        self.desc = desc
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = tqdm(total=total, desc=self.desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        """Erase the bar (also when loading stopped part way)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextlib.contextmanager
def loading(progress: bool | None | Callable[[int, int], None],
            desc: str) -> Iterator[Callable[[int, int], None] | None]:
    """The `(done, total)` callback for `progress` while the block runs: the caller's own, a `ByteBar` (erased
    when the block ends, also on an error), or None when nothing is drawn."""
    if callable(progress):
        yield progress
        return
    bar = ByteBar(desc) if shown(progress) else None
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


def download_bar(progress: bool | None) -> type:
    """A tqdm class for huggingface_hub's download bars that draws only when `shown(progress)` (a callable, which
    follows weight uploads only, leaves them to the terminal test)."""
    draw = shown(None if callable(progress) else progress)

    class DownloadBar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any):
            kwargs["disable"] = not draw or kwargs.get("disable") is True   # None would mean: only on a terminal
            super().__init__(*args, **kwargs)

    return DownloadBar
